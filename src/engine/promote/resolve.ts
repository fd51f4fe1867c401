import { nonPayloadColumns } from '../kernel/entities.js';
import { must } from '../kernel/must.js';
import { ident } from '../kernel/sql.js';
import { countReferencing, repoint } from './children.js';
import { conflictFor, keyLabel } from './conflict.js';
import { applyDecisions } from './decisions.js';
import { differingRows, findPairs, rowTexts, sameRows, unchangedRows } from './pairs.js';
import type { Decided, KnownDecisions, Outcome, Pair, Scope, Session, Work } from './types.js';

/** The reported sample of exact duplicates per entity (and of rows replaced, in the audit). */
export const SAMPLE = 100;

/**
 * Step 2: parents first, each entity's release rows compared with master's rows of every other release:
 * an identical payload is an exact duplicate (not promoted, its children follow master's row); a differing
 * one is applied by its decision while both rows are unchanged, else it is a conflict that refuses the
 * promotion. Standing delete-both decisions keep their rows out.
 */
export async function resolveCrossRelease(s: Session, works: Work[], known: KnownDecisions): Promise<Outcome> {
  const out: Outcome = { byEntity: new Map(works.map((w) => [w.e.name, w])), blocking: [], issues: [], detected: new Set(), replaced: [] };
  for (const w of works) await resolveEntity(s, out, known, w);
  return out;
}

async function resolveEntity(s: Session, out: Outcome, known: KnownDecisions, w: Work): Promise<void> {
  const { e } = w;
  s.at.table = w.partQ;
  s.progress?.('detect', { entity: e.name });
  const excl = nonPayloadColumns(s.ctx.config, e);
  const payload = w.columns.filter((c) => !excl.includes(c.name));
  const bySpk = await findPairs(s, w, payload);
  const { sdata, mdata } = await differingRows(s, w, bySpk);
  const sc: Scope = { s, out, w, excl, payload, bySpk, sdata, mdata, mapping: new Map() };
  for (const [spk, list] of bySpk) await resolveRow(sc, known, spk, list);
  await applyStandingDeletes(sc, known);
  const pk = ident(e.primaryKey);
  if (w.skipped.size > 0) await s.m(`delete from ${w.partQ} where ${pk}::text = any($1::text[])`, [[...w.skipped]]);
  if (sc.mapping.size > 0) await repoint(s.m, s.ctx.config, out.byEntity, e, sc.mapping);
}

/** One release row and its pairs: an exact duplicate, or its decisions applied, or conflicts to decide. */
async function resolveRow(sc: Scope, known: KnownDecisions, spk: string, list: Pair[]): Promise<void> {
  const same = list.find((p) => p.shash === p.mhash);
  if (same) return skipDuplicate(sc, spk, same);
  const decided = await stillDecided(sc, known, list);
  if (decided) await applyDecisions(sc, spk, decided);
}

/** An identical payload (the key, tags and timestamp aside): master's row stays, the release's children follow it. */
async function skipDuplicate(sc: Scope, spk: string, same: Pair): Promise<void> {
  const { w } = sc;
  w.skipped.add(spk);
  if (same.mpk !== spk) sc.mapping.set(spk, same.mpk);
  w.autoCount += 1;
  if (w.autoResolved.length < SAMPLE) {
    const row = await rowTexts(sc.s, w, spk);
    w.autoResolved.push({ entity: w.e.name, key: keyLabel(w.e, same, row), pk: spk, release: same.mrel, rule: 'exact-duplicate' });
  }
}

/**
 * Each differing pair: a decision that still applies (its rows unchanged since), or a conflict to decide
 * (kept open, or opened anew saying the rows changed). The decisions, when every pair has one; else null.
 */
async function stillDecided(sc: Scope, known: KnownDecisions, list: Pair[]): Promise<Decided[] | null> {
  const { s, w, out } = sc;
  const decided: Decided[] = [];
  let blocked = false;
  for (const p of list) {
    const identity = `${p.spk}|${p.mrel}|${p.mpk}`;
    out.detected.add(`${w.e.name}\u0000${identity}`);
    const k = known.latest.get(`${w.e.name}\u0000${identity}`);
    const unchanged = k && (await sameRows(s.m, w, sc.excl, s.rel, p, k.detail.crossRelease));
    if (k && unchanged && k.status === 'decided' && k.params) decided.push({ p, k, d: k.params });
    else {
      blocked = true;
      if (k && k.status === 'open') out.blocking.push(await conflictFor(sc, p, undefined, k));
      else out.blocking.push(await conflictFor(sc, p, k ? `the rows changed since ${k.code} was decided` : undefined));
    }
  }
  return blocked ? null : decided;
}

/** Rows a delete-both decision keeps out although master's row is gone (while the row is unchanged). */
async function applyStandingDeletes(sc: Scope, known: KnownDecisions): Promise<void> {
  const { s, w, out } = sc;
  const e = w.e;
  const standing = new Map<string, { code: string; keyLabel: string; stagingHash: string; masterRelease: string }>();
  for (const k of known.standingDelete.values()) {
    const x = must(k.detail.crossRelease, `the rows of ${k.code}`);
    if (k.entity === e.name && !sc.bySpk.has(x.stagingPk)) {
      standing.set(x.stagingPk, { code: k.code, keyLabel: k.key_label, stagingHash: x.stagingHash, masterRelease: x.masterRelease });
    }
  }
  if (standing.size === 0) return;
  const hashes = new Map([...standing].map(([pk, k]) => [pk, k.stagingHash]));
  for (const pk of await unchangedRows(s, w, sc.excl, sc.payload, hashes)) {
    const k = must(standing.get(pk), `the delete-both decision on ${e.name} ${pk}`);
    const refs = await countReferencing(s.m, s.ctx.config, out.byEntity, e, pk, 'release');
    if (refs > 0) {
      out.issues.push(
        `${k.code} (delete both) keeps ${s.release}'s ${e.name} ${pk} out of master, ` +
          `but ${refs} row(s) of ${s.release} now reference it: ` +
          `fix the data in staging (tributary load ${s.release}) or consolidate again`,
      );
      continue;
    }
    w.skipped.add(pk);
    const effect = `not promoted (decided earlier; ${k.masterRelease}'s row is gone)`;
    w.decisions.push({ code: k.code, entity: e.name, key: k.keyLabel, action: 'delete-both', effect });
  }
}
