import type { Knex } from 'knex';
import { releaseOrThrow } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import type { Ctx } from '../kernel/context.js';
import { firstRow } from '../kernel/must.js';
import { currentRunId, runTables } from '../kernel/workArea.js';
import type { ConflictRow, Decision, VersionView } from './types.js';

/**
 * The automatic resolutions of a release's current consolidation (A-001…, recorded by the run:
 * consolidate/autoResolutions.ts): listed and shown like conflicts, vouched for by a digest in the
 * run's audit event, and overruled by re-opening one as a conflict of the same code (then decided like
 * any conflict: decide.ts). The recorded rows never change: an overrule is the conflict and its decision.
 */

export const AUTO_CODE = /^A-\d+$/i;

export function isAutoCode(code: string): boolean {
  return AUTO_CODE.test(code);
}

export interface AutoResolutionDetail {
  /** What the rule kept: the survivor version (rule groups), its env and source key, and its final key. */
  kept: { version?: number; env: string; pk: string; key: string; envs?: string[]; pks?: string[] };
  differing?: string[];
  versions: (VersionView & { key?: string })[];
  /** complementary-merge: attribute ← the env whose value filled it. */
  merged?: Record<string, string> | null;
  /** re-key: each record that moved (env, old key → new key) and the child rows whose reference followed. */
  rekeyed?: { env: string; old: string; new: string; children: { entity: string; pk: string }[] }[];
}

export interface Overrule {
  /** open: re-opened, not decided yet; decided: overruled. */
  status: 'open' | 'decided';
  decidedBy: string | null;
  decidedAt: Date | null;
  decision: Decision | null;
  rationale: string | null;
}

export interface AutoResolution {
  code: string;
  release: string;
  runId: number;
  entity: string;
  identity: string;
  keyLabel: string;
  rule: string;
  reason: string;
  detail: AutoResolutionDetail;
  overrule: Overrule | null;
}

export interface AutoFilter {
  rule?: string;
  entity?: string;
}

interface Row {
  code: string;
  release: string;
  run_id: number;
  entity: string;
  identity: string;
  key_label: string;
  rule: string;
  reason: string;
  detail: AutoResolutionDetail;
  c_status: 'open' | 'decided' | null;
  decided_by: string | null;
  decided_at: Date | null;
  params: Decision | null;
  rationale: string | null;
}

const toView = (r: Row): AutoResolution => ({
  code: r.code,
  release: r.release,
  runId: r.run_id,
  entity: r.entity,
  identity: r.identity,
  keyLabel: r.key_label,
  rule: r.rule,
  reason: r.reason,
  detail: r.detail,
  overrule: r.c_status
    ? { status: r.c_status, decidedBy: r.decided_by, decidedAt: r.decided_at, decision: r.params, rationale: r.rationale }
    : null,
});

function query(db: Knex | Knex.Transaction, runId: number): Knex.QueryBuilder {
  return db('auto_resolutions as a')
    .leftJoin('conflicts as c', (j) => j.on('c.run_id', 'a.run_id').andOn('c.code', 'a.code'))
    .leftJoin('decisions as d', 'd.conflict_id', 'c.id')
    .where('a.run_id', runId)
    .select('a.code', 'a.release', 'a.run_id', 'a.entity', 'a.identity', 'a.key_label', 'a.rule', 'a.reason', 'a.detail')
    .select('c.status as c_status', 'c.decided_by', 'c.decided_at', 'd.params', 'd.rationale');
}

function unknownAuto(release: string, code: string): TributaryError {
  const message =
    `no automatic resolution ${code} in release ${release}'s current consolidation ` +
    `(tributary conflicts ${release} --status auto-resolved lists them)`;
  return new TributaryError('unknown_conflict', message, { code });
}

function checkFilter(ctx: Ctx, f: AutoFilter): void {
  if (f.entity && !ctx.config.entities.some((e) => e.name === f.entity)) {
    const known = ctx.config.entities.map((e) => e.name).join(', ');
    throw new TributaryError('usage', `unknown entity "${f.entity}" (dataset: ${known})`, { field: 'entity' });
  }
  const rules = ['re-key', ...ctx.config.policy.rules];
  if (f.rule && !rules.includes(f.rule)) {
    throw new TributaryError('usage', `unknown rule "${f.rule}" (rules: ${rules.join(', ')})`, { field: 'rule' });
  }
}

/**
 * The automatic resolutions of the release's current consolidation, in code order, streamed: read in
 * pages by code (the table's key), so memory holds one page whatever the count.
 */
export async function* listAutoResolutions(
  ctx: Ctx,
  release: string,
  filter: AutoFilter = {},
  pageSize = 500,
): AsyncGenerator<AutoResolution> {
  releaseOrThrow(ctx.config, release);
  checkFilter(ctx, filter);
  const runId = await currentRunId(ctx, release);
  let after = '';
  for (;;) {
    const q = query(ctx.db.control, runId).where('a.code', '>', after).orderBy('a.code').limit(pageSize);
    if (filter.rule) q.where('a.rule', filter.rule);
    if (filter.entity) q.where('a.entity', filter.entity);
    const rows = (await q) as Row[];
    for (const r of rows) yield toView(r);
    const last = rows[rows.length - 1];
    if (rows.length < pageSize || !last) return;
    after = last.code;
  }
}

export async function showAutoResolution(ctx: Ctx, release: string, code: string): Promise<AutoResolution> {
  releaseOrThrow(ctx.config, release);
  const runId = await currentRunId(ctx, release);
  const row = (await query(ctx.db.control, runId).where('a.code', code.toUpperCase()).first()) as Row | undefined;
  if (!row) throw unknownAuto(release, code);
  return toView(row);
}

export interface AutoCounts {
  release: string;
  runId: number;
  total: number;
  byRule: Record<string, number>;
  overruled: number;
  reopened: number;
}

/** Counts per rule (and how many were overruled or re-opened) of the current consolidation. */
export async function autoResolutionCounts(ctx: Ctx, release: string, filter: AutoFilter = {}): Promise<AutoCounts> {
  checkFilter(ctx, filter);
  const runId = await currentRunId(ctx, release);
  const q = ctx.db.control('auto_resolutions as a')
    .leftJoin('conflicts as c', (j) => j.on('c.run_id', 'a.run_id').andOn('c.code', 'a.code'))
    .where('a.run_id', runId)
    .groupBy('a.rule')
    .select(
      'a.rule',
      ctx.db.control.raw('count(*)::int as n'),
      ctx.db.control.raw(`count(*) filter (where c.status = 'decided')::int as overruled`),
      ctx.db.control.raw(`count(*) filter (where c.status = 'open')::int as reopened`),
    );
  if (filter.rule) q.where('a.rule', filter.rule);
  if (filter.entity) q.where('a.entity', filter.entity);
  const rows = (await q) as { rule: string; n: number; overruled: number; reopened: number }[];
  const byRule: Record<string, number> = {};
  let total = 0;
  let overruled = 0;
  let reopened = 0;
  for (const r of rows) {
    byRule[r.rule] = r.n;
    total += r.n;
    overruled += r.overruled;
    reopened += r.reopened;
  }
  return { release, runId, total, byRule, overruled, reopened };
}

export interface AutoDigest {
  count: number;
  byRule: Record<string, number>;
  /** sha256 over every recorded resolution (code, entity, identity, rule, reason, detail), in code order. */
  digest: string;
}

/** The digest of a run's automatic resolutions: the run's audit event carries it, `audit verify` recomputes it. */
export async function autoResolutionDigest(db: Knex | Knex.Transaction, runId: number): Promise<AutoDigest> {
  const res = await db.raw<{ rows: { count: number; digest: string; by_rule: Record<string, number> | null }[] }>(
    `select count(*)::int as count,
            encode(sha256(convert_to(coalesce(string_agg(concat_ws(E'\\t', code, entity, identity, rule, reason, detail::text),
                                                         E'\\n' order by code), ''), 'UTF8')), 'hex') as digest,
            (select jsonb_object_agg(rule, n)
               from (select rule, count(*)::int as n from auto_resolutions where run_id = ? group by rule) r) as by_rule
       from auto_resolutions where run_id = ?`,
    [runId, runId],
  );
  const r = firstRow(res.rows, `the digest of run ${runId}'s automatic resolutions`);
  return { count: r.count, byRule: r.by_rule ?? {}, digest: r.digest };
}

/**
 * Re-opens an automatic resolution as a conflict of the same code in the current consolidation (inside
 * the caller's transaction): its versions, the rule's reason, and the rule's choice as the suggestion. Its
 * row in the result waits for review until it is decided.
 */
export async function reopenAutoResolution(ctx: Ctx, trx: Knex.Transaction, release: string, code: string): Promise<ConflictRow> {
  const runId = await currentRunId({ db: { control: trx as unknown as Knex } }, release);
  const row = (await query(trx, runId).where('a.code', code.toUpperCase()).first()) as Row | undefined;
  if (!row) throw unknownAuto(release, code);
  if (row.rule === 're-key') {
    const message =
      `${row.code} is a re-key: every record was kept, under keys of its own (${row.reason}); ` + 'there is no version to overrule';
    throw new TributaryError('decision_invalid', message, { code: row.code });
  }
  const t = runTables(runId);
  const held = await trx.raw<{ rows: { status: string; conflict: string | null }[] }>(
    `select status, conflict from ${t.result} where entity = ? and identity = ?`,
    [row.entity, row.identity],
  );
  const current = held.rows[0];
  if (current && current.status !== 'final') {
    const where = current.conflict ? ` (${current.conflict})` : '';
    const message = `${row.code}: ${row.entity} ${row.key_label} is ${current.status}${where}; decide that first`;
    throw new TributaryError('decision_invalid', message, { code: row.code });
  }
  const detail = {
    reason: `resolved by ${row.rule}: ${row.reason} — re-opened to overrule`,
    suggestion: 'keep',
    suggested: row.detail.kept.version,
    differing: row.detail.differing ?? [],
    versions: row.detail.versions,
    overrules: { code: row.code, rule: row.rule, reason: row.reason, kept: row.detail.kept },
  };
  const [inserted] = await trx('conflicts')
    .insert({
      release,
      run_id: runId,
      code: row.code,
      entity: row.entity,
      identity: row.identity,
      key_label: row.key_label,
      kind: row.rule,
      priority: 'P3',
      status: 'open',
      detail: JSON.stringify(detail),
    })
    .onConflict(['run_id', 'code'])
    .ignore()
    .returning('*');
  // another reviewer re-opened it first (and has committed): theirs, as it is now (decided, most likely)
  if (!inserted) return (await trx('conflicts').where({ run_id: runId, code: row.code }).forUpdate().first()) as ConflictRow;
  await trx.raw(`update ${t.result} set status = 'pending', conflict = ? where entity = ? and identity = ?`, [
    row.code,
    row.entity,
    row.identity,
  ]);
  return inserted as ConflictRow;
}
