import type { Knex } from 'knex';
import { envByRole, type ReferenceSpec } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { tableExists } from '../kernel/checksum.js';
import { onEnv, type Ctx } from '../kernel/context.js';
import { must } from '../kernel/must.js';
import { ident, literal, qualified } from '../kernel/sql.js';
import { runTables } from '../kernel/workArea.js';
import type { ConflictRow, ReferenceForms } from './types.js';

/**
 * Re-pointing a reference (dangling-reference and mismatched-parent conflicts, findings): the parents it
 * may point at, the nearest first, and what a chosen parent contradicts in the child (the columns the
 * child relies on, e.g. a transaction's currency against its account's).
 */

/** At most this many targets are offered (a Slack select shows at most 100 options). */
export const TARGET_LIMIT = 100;
/** Candidates read from the consolidated parent before they are ranked (same env first, near keys first). */
const CANDIDATE_CAP = 2000;

export interface RepointTarget {
  key: string;
  /** The env the parent comes from (its representative record's), or `master`. */
  env: string;
  /** The columns the child relies on, as the parent has them. */
  columns: Record<string, unknown>;
}

const INTEGER = /^-?\d{1,15}$/;

/** How far key `a` is from key `b`: their difference for two integers, else their edit distance. */
export function keyDistance(a: string, b: string): number {
  if (INTEGER.test(a) && INTEGER.test(b)) return Math.abs(Number(a) - Number(b));
  return editDistance(a, b);
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row.push(Math.min(must(prev[j], 'the previous row') + 1, must(row[j - 1], 'this row') + 1, must(prev[j - 1], 'the diagonal') + cost));
    }
    prev = row;
  }
  return must(prev[b.length], 'the edit distance');
}

/** Keys in order: integers by value, anything else by text. */
function compareKeys(a: string, b: string): number {
  if (INTEGER.test(a) && INTEGER.test(b)) return Number(a) - Number(b);
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The targets in the order they are offered, at most `limit`: parents from the child's own env first,
 * then by closeness of key to the reference as collected (integers by difference, other keys by edit
 * distance), then by key.
 */
export function rankTargets<T extends { key: string; env: string }>(
  candidates: readonly T[],
  from: { env: string; value: string },
  limit = TARGET_LIMIT,
): T[] {
  const scored = candidates.map((c) => ({ c, same: c.env === from.env ? 0 : 1, distance: keyDistance(c.key, from.value) }));
  scored.sort((x, y) => x.same - y.same || x.distance - y.distance || compareKeys(x.c.key, y.c.key));
  return scored.slice(0, Math.max(0, limit)).map((s) => s.c);
}

/** The reference a record conflict is about: the child's entity spec for it. */
function referenceOf(ctx: Ctx, c: ConflictRow): ReferenceSpec {
  const column = c.detail.column;
  const parent = c.detail.parent;
  if (!column || !parent) {
    throw new TributaryError('decision_invalid', `${c.code} is a ${c.kind} conflict: it has no reference to re-point`, { code: c.code });
  }
  const e = must(ctx.config.entities.find((x) => x.name === c.entity), `entity ${c.entity} of ${c.code} in the config`);
  const ref = e.references.find((r) => r.column === column && r.entity === parent);
  return must(ref, `reference ${c.entity}.${column} → ${parent} in the config`);
}

function columnsSql(cols: string[], data: string): string {
  if (cols.length === 0) return `'{}'::jsonb`;
  return `jsonb_build_object(${cols.map((col) => `${literal(col)}, ${data}->${literal(col)}`).join(', ')})`;
}

/**
 * The parents a record conflict's reference may be re-pointed to: the consolidated parents (keys containing
 * `query` when one is typed), and a master key typed in full; ranked by rankTargets, at most `limit`.
 */
export async function repointTargets(ctx: Ctx, c: ConflictRow, opts: { query?: string; limit?: number } = {}): Promise<RepointTarget[]> {
  const ref = referenceOf(ctx, c);
  const t = runTables(c.run_id);
  const value = c.detail.value ?? '';
  const env = c.detail.env ?? c.detail.record?.env ?? '';
  const query = opts.query?.trim() ?? '';
  const res = await ctx.db.control.raw<{ rows: { key: string; env: string; columns: Record<string, unknown> }[] }>(
    `select p.pk as key, p.rep_env as env, ${columnsSql(ref.columns, 'p.data')} as columns
       from ${t.result} p
      where p.entity = ? and p.status = 'final' and (?::text = '' or strpos(lower(p.pk), lower(?::text)) > 0)
      order by (p.rep_env = ?) desc,
               case when p.pk ~ '^-{0,1}[0-9]{1,15}$' and ?::text ~ '^-{0,1}[0-9]{1,15}$'
                    then abs(p.pk::numeric - ?::numeric) end nulls last,
               p.pk
      limit ${CANDIDATE_CAP}`,
    [ref.entity, query, query, env, value, value],
  );
  const candidates: RepointTarget[] = res.rows;
  if (query !== '' && !candidates.some((x) => x.key === query)) {
    const master = await masterParent(ctx, ref, query);
    if (master) candidates.push({ key: query, env: 'master', columns: master });
  }
  return rankTargets(candidates, { env, value }, opts.limit ?? TARGET_LIMIT);
}

/** The relied-on columns of master's parent with this key, or undefined when master has none. */
async function masterParent(ctx: Ctx, ref: ReferenceSpec, key: string): Promise<Record<string, unknown> | undefined> {
  const master = envByRole(ctx.config, 'master');
  const parent = ctx.config.entities.find((x) => x.name === ref.entity);
  if (!master || !parent) return undefined;
  return onEnv(ctx, master, async () => {
    const k = ctx.db.env(master);
    if (!(await tableExists(k, master.schema, parent.table))) return undefined;
    const res = await k.raw<{ rows: { columns: Record<string, unknown> }[] }>(
      `select ${columnsSql(ref.columns, 'to_jsonb(m)')} as columns
         from ${qualified(master.schema, parent.table)} m where m.${ident(parent.primaryKey)}::text = ? limit 1`,
      [key],
    );
    return res.rows[0]?.columns;
  });
}

/** The parent's relied-on columns: the consolidated parent with that key, else master's. */
async function parentColumns(
  ctx: Ctx,
  k: Knex,
  c: ConflictRow,
  ref: ReferenceSpec,
  key: string,
): Promise<Record<string, unknown> | undefined> {
  const t = runTables(c.run_id);
  const res = await k.raw<{ rows: { columns: Record<string, unknown> }[] }>(
    `select ${columnsSql(ref.columns, 'p.data')} as columns
       from ${t.result} p where p.entity = ? and p.pk = ? and p.status = 'final' limit 1`,
    [ref.entity, key],
  );
  return res.rows[0]?.columns ?? (await masterParent(ctx, ref, key));
}

/**
 * What re-pointing the conflict's record to parent `to` contradicts: one sentence per column the child
 * relies on whose value the parent does not share ("transactions 40 has currency "USD", accounts 12 has
 * "EUR""). Empty when the parent agrees, or is unknown (the decision refuses an unknown parent itself).
 */
export async function parentContradictions(ctx: Ctx, c: ConflictRow, to: string, k: Knex = ctx.db.control): Promise<string[]> {
  if (c.detail.versions || !c.detail.column) return [];
  const ref = referenceOf(ctx, c);
  if (ref.columns.length === 0) return [];
  const t = runTables(c.run_id);
  const child = await k.raw<{ rows: { pk: string; columns: Record<string, unknown> }[] }>(
    `select r.pk, ${columnsSql(ref.columns, 'r.data')} as columns from ${t.result} r where r.entity = ? and r.identity = ? limit 1`,
    [c.entity, c.identity],
  );
  const mine = child.rows[0];
  const theirs = await parentColumns(ctx, k, c, ref, to);
  if (!mine || !theirs) return [];
  const out: string[] = [];
  for (const col of ref.columns) {
    const a = mine.columns[col] ?? null;
    const b = theirs[col] ?? null;
    if (JSON.stringify(a) === JSON.stringify(b)) continue;
    out.push(`${c.entity} ${mine.pk} has ${col} ${JSON.stringify(a)}, but ${ref.entity} ${to} has ${col} ${JSON.stringify(b)}`);
  }
  return out;
}

/** The two forms of a record conflict's reference (undefined for a version conflict, or a record gone). */
export async function referenceForms(ctx: Ctx, c: ConflictRow): Promise<ReferenceForms | undefined> {
  const { column, parent, value } = c.detail;
  if (c.detail.versions || !column || !parent || value === undefined) return undefined;
  const env = c.detail.env ?? c.detail.record?.env ?? '';
  const t = runTables(c.run_id);
  const res = await ctx.db.control.raw<{ rows: { held: string | null; mapped: string | null }[] }>(
    `select (select r.data->>${literal(column)} from ${t.result} r where r.entity = ? and r.identity = ? limit 1) as held,
            (select km.new_pk from ${t.keyMap} km where km.entity = ? and km.env = ? and km.old_pk = ?) as mapped`,
    [c.entity, c.identity, parent, env, value],
  );
  const row = res.rows[0];
  return { column, env, collected: value, held: row?.held ?? null, mapped: row?.mapped ?? null };
}
