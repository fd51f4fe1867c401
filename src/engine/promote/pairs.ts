import { cellsObjectSql } from '../kernel/copy.js';
import { identityKeys } from '../kernel/entities.js';
import { must } from '../kernel/must.js';
import { ident } from '../kernel/sql.js';
import type { CrossReleaseInfo } from '../review/index.js';
import type { Column, Pair, Query, Session, Work } from './types.js';

/**
 * Cross-release pairs: the release's rows (its new partition) and master's rows of every other release
 * that share the primary key or a natural key (PostgreSQL cannot enforce uniqueness across partitions),
 * with a hash of each row's compared columns.
 */

/**
 * The hashes that tell whether two rows are the same record (and whether a decided pair is unchanged): the
 * compared columns' texts in their own types (kernel/copy.ts cellsObjectSql, under the transaction's text
 * settings), so equal exactly when docs/policy.md says two values are equal (a json keeps its whitespace,
 * key order and duplicate keys, -0 is not 0; a jsonb normalises). Marked `text:`, to tell them from the
 * hashes decisions recorded before (LEGACY_HASH_SQL).
 */
const TEXT_FORM = 'text:';

function payloadHashSql(alias: string, payload: readonly Column[]): string {
  return `'${TEXT_FORM}' || md5(${cellsObjectSql(alias, payload)}::text)`;
}

const isTextForm = (hash: string) => hash.startsWith(TEXT_FORM);

/**
 * The hash cross-release decisions recorded before promotion compared texts: md5 of the row's to_jsonb
 * without the columns left out of the comparison (`$1`). A decision that carries it still applies while
 * both rows give the same hash in that form (as it did before), so no decision is lost.
 */
const LEGACY_HASH_SQL = (alias: string) => `md5((to_jsonb(${alias}.*) - $1::text[])::text)`;

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Every pair of the entity, by the release row's key (in key order, then master's release and key). */
export async function findPairs(s: Session, w: Work, payload: Column[]): Promise<Map<string, Pair[]>> {
  const pk = ident(w.e.primaryKey);
  const rel = ident(s.rel);
  const pairs = new Map<string, Pair>();
  for (const key of identityKeys(w.e)) {
    const on = key.columns.map((c) => `m.${ident(c)} = n.${ident(c)}`).join(' and ');
    const res = await s.m(
      `select n.${pk}::text as spk, m.${pk}::text as mpk, m.${rel}::text as mrel,
                  ${payloadHashSql('n', payload)} as shash, ${payloadHashSql('m', payload)} as mhash
             from ${w.partQ} n join ${w.parent} m on ${on} and m.${rel} <> $1`,
      [s.release],
    );
    for (const r of res.rows as Omit<Pair, 'keys'>[]) {
      const id = `${r.spk}|${r.mrel}|${r.mpk}`;
      const p = pairs.get(id) ?? { ...r, keys: [] };
      p.keys.push(key.label);
      pairs.set(id, p);
    }
  }
  const bySpk = new Map<string, Pair[]>();
  for (const p of [...pairs.values()].sort((a, b) => cmp(a.spk, b.spk) || cmp(a.mrel, b.mrel) || cmp(a.mpk, b.mpk))) {
    const list = bySpk.get(p.spk) ?? [];
    list.push(p);
    bySpk.set(p.spk, list);
  }
  return bySpk;
}

/**
 * The rows of the pairs that differ (for the cards, and renames), as their cells' texts: the release's by
 * key, master's by `release|key`. A release row with an identical master row needs none.
 */
export async function differingRows(
  s: Session,
  w: Work,
  bySpk: Map<string, Pair[]>,
): Promise<{ sdata: Map<string, Record<string, unknown>>; mdata: Map<string, Record<string, unknown>> }> {
  const differing = [...bySpk.values()].filter((list) => !list.some((q) => q.shash === q.mhash)).flat();
  const sdata = new Map<string, Record<string, unknown>>();
  const mdata = new Map<string, Record<string, unknown>>();
  if (differing.length === 0) return { sdata, mdata };
  const pk = ident(w.e.primaryKey);
  const st = await s.m(
    `select ${pk}::text as pk, ${cellsObjectSql('n', w.columns)} as data from ${w.partQ} n where ${pk}::text = any($1::text[])`,
    [[...new Set(differing.map((p) => p.spk))]],
  );
  for (const r of st.rows as { pk: string; data: Record<string, unknown> }[]) sdata.set(r.pk, r.data);
  const mt = await s.m(
    `select m.${pk}::text as pk, m.${ident(s.rel)}::text as rel, ${cellsObjectSql('m', w.columns)} as data
             from ${w.parent} m join unnest($1::text[], $2::text[]) as u(pk, rel)
                  on m.${pk}::text = u.pk and m.${ident(s.rel)}::text = u.rel`,
    [differing.map((p) => p.mpk), differing.map((p) => p.mrel)],
  );
  for (const r of mt.rows as { pk: string; rel: string; data: Record<string, unknown> }[]) mdata.set(`${r.rel}|${r.pk}`, r.data);
  return { sdata, mdata };
}

/** One release row as its cells' texts (an exact duplicate's label). */
export async function rowTexts(s: Session, w: Work, spk: string): Promise<Record<string, unknown>> {
  const res = await s.m(
    `select ${cellsObjectSql('n', w.columns)} as data from ${w.partQ} n where ${ident(w.e.primaryKey)}::text = $1`,
    [spk],
  );
  return must((res.rows as { data: Record<string, unknown> }[])[0], `${w.e.name} ${spk} in ${w.partQ}`).data;
}

/**
 * Whether a decided pair's rows are those its decision was taken on: their hashes now equal those it
 * recorded, in the form it recorded them (text form; else the earlier to_jsonb form, computed here).
 */
export async function sameRows(m: Query, w: Work, excl: string[], rel: string, p: Pair, x: CrossReleaseInfo | undefined): Promise<boolean> {
  if (!x) return false;
  if (isTextForm(x.stagingHash)) return x.stagingHash === p.shash && x.masterHash === p.mhash;
  const pk = ident(w.e.primaryKey);
  const res = await m(
    `select (select ${LEGACY_HASH_SQL('n')} from ${w.partQ} n where n.${pk}::text = $2) as shash,
            (select ${LEGACY_HASH_SQL('m')} from ${w.parent} m where m.${pk}::text = $3 and m.${ident(rel)}::text = $4) as mhash`,
    [excl, p.spk, p.mpk, p.mrel],
  );
  const legacy = res.rows[0] as { shash: string | null; mhash: string | null } | undefined;
  return legacy !== undefined && x.stagingHash === legacy.shash && x.masterHash === legacy.mhash;
}

/**
 * Release rows by key whose hash equals the one recorded (`stored`, in its form): the rows a standing
 * delete-both still keeps out. The earlier form is computed only for the rows whose decision carries it.
 */
export async function unchangedRows(
  s: Session,
  w: Work,
  excl: string[],
  payload: Column[],
  stored: Map<string, string>,
): Promise<string[]> {
  const pk = ident(w.e.primaryKey);
  const legacy = [...stored].filter(([, hash]) => !isTextForm(hash)).map(([key]) => key);
  const res = await s.m(
    `select ${pk}::text as pk,
            case when ${pk}::text = any($3::text[]) then ${LEGACY_HASH_SQL('n')} else ${payloadHashSql('n', payload)} end as h
       from ${w.partQ} n where ${pk}::text = any($2::text[])`,
    [excl, [...stored.keys()], legacy],
  );
  return (res.rows as { pk: string; h: string }[]).filter((r) => r.h === stored.get(r.pk)).map((r) => r.pk);
}
