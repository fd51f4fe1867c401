import crypto from 'node:crypto';
import type { Knex } from 'knex';
import type { Config } from '../../config/load.js';
import type { LoadsRow, TestCatalogRow, TestResultsRow, TestRunsRow, TestShardsRow } from '../../db/rows.js';
import { must } from '../kernel/must.js';
import { learnTests } from './catalog.js';
import type { ShardOutcome, TestCaseResult } from './types.js';

/**
 * Test results in the control database: a shard's outcome is recorded once (the shard row is locked and
 * must still be open), so a shard retried after its agent died is never counted twice; then each result
 * is classified against the baseline, totals are computed and the gate is applied.
 */
export type ResultClass = 'new-regression' | 'known-failure' | 'fixed' | 'flaky' | 'new-test' | 'passing' | 'skipped';

export interface Totals {
  total: number;
  passed: number;
  failed: number;
  errored: number;
  skipped: number;
  /** Percent of the tests that ran (not skipped) that passed. */
  passRate: number;
}

export interface RunTotals extends Totals {
  /** Tests of the release's own features. */
  newFeatures: Totals;
  /** Every other test: the regression of earlier releases. */
  regression: Totals;
  perFeature: Record<string, Totals>;
  classes: Record<ResultClass, number>;
  erroredShards: number;
  shards: number;
}

export interface GateResult {
  passed: boolean;
  threshold: number;
  reasons: string[];
}

/** Records one shard's outcome exactly once; returns false when the shard was already recorded, or its run closed. */
export async function recordShardOutcome(db: Knex, runId: number, o: ShardOutcome): Promise<boolean> {
  const recorded = await db.transaction(async (trx) => {
    // a run closed as abandoned (its process gone, or it lost its lock) takes no more results
    const run = await trx<TestRunsRow>('test_runs').where({ id: runId }).forShare().first('status');
    if (run?.status !== 'running') return false;
    const shard = await trx<TestShardsRow>('test_shards').where({ run_id: runId, idx: o.index }).forUpdate().first();
    if (!shard || shard.status === 'done' || shard.status === 'errored') return false;
    const planned = (shard.tests as { id: string; name: string; features?: string[]; smoke?: boolean }[]) ?? [];
    let cases: TestCaseResult[] = o.cases;
    if (o.status === 'errored') {
      // an errored shard's tests count as errored, never passed
      cases = planned.map((t) => ({
        id: t.id,
        name: t.name,
        classname: '',
        status: 'errored',
        durationMs: 0,
        message: o.error ?? 'shard errored',
        features: t.features ?? [],
        smoke: t.smoke ?? false,
        properties: {},
      }));
    }
    if (cases.length > 0) {
      await insertResults(trx, runId, o, cases);
      if (o.status === 'done') await learnTests(trx, cases);
    }

    await trx<TestShardsRow>('test_shards')
      .where({ id: shard.id })
      .update({ status: o.status, agent: o.agent, finished_at: trx.fn.now(), duration_ms: o.durationMs, error: o.error ?? null });
    return true;
  });
  if (recorded && o.status === 'done' && o.seen) {
    // tests the command reported without running them (not selected): new ones enter the catalog
    const ran = new Set(o.cases.map((c) => c.id));
    const seenIds = o.seen.map((c) => c.id);
    const known = new Set<string>(await db<TestCatalogRow>('test_catalog').whereIn('test_id', seenIds).pluck('test_id'));
    const fresh = o.seen.filter((c) => !ran.has(c.id) && !known.has(c.id));
    if (fresh.length > 0) await learnTests(db, fresh.map((c) => ({ ...c, status: 'skipped' as const })));
  }
  return recorded;
}

/** The shard's results (a result recorded already is kept). */
async function insertResults(trx: Knex.Transaction, runId: number, o: ShardOutcome, cases: TestCaseResult[]): Promise<void> {
  const retried = new Set(o.retriedPassed);
  await trx.raw(
    `insert into test_results (run_id, test_id, name, shard, status, duration_ms, message, features, smoke, retried)
     select ?, x.id, x.name, ?, x.status, x.ms, x.message, x.features::jsonb, x.smoke, x.retried
       from unnest(?::text[], ?::text[], ?::text[], ?::int[], ?::text[], ?::text[], ?::boolean[], ?::boolean[])
            as x(id, name, status, ms, message, features, smoke, retried)
     on conflict (run_id, test_id) do nothing`,
    [
      runId,
      o.index,
      cases.map((c) => c.id),
      cases.map((c) => c.name),
      cases.map((c) => c.status),
      cases.map((c) => Math.round(c.durationMs)),
      cases.map((c) => c.message ?? null) as string[],
      cases.map((c) => JSON.stringify(c.features)),
      cases.map((c) => c.smoke),
      cases.map((c) => retried.has(c.id)),
    ],
  );
}

function emptyTotals(): Totals {
  return { total: 0, passed: 0, failed: 0, errored: 0, skipped: 0, passRate: 0 };
}

function add(t: Totals, status: string): void {
  t.total++;
  if (status === 'passed') t.passed++;
  else if (status === 'failed') t.failed++;
  else if (status === 'errored') t.errored++;
  else t.skipped++;
}

function rate(t: Totals): Totals {
  const ran = t.total - t.skipped;
  t.passRate = ran === 0 ? 0 : Math.floor((t.passed / ran) * 10000) / 100;
  return t;
}

/** The run the results are compared with: the previous finished run of the same kind on the same env. */
export async function baselineRun(db: Knex, run: { id: number; release: string; tier: string; env: string }): Promise<number | null> {
  const q = db<TestRunsRow>('test_runs')
    .whereIn('status', ['passed', 'failed'])
    .where('id', '<', run.id)
    .where({ env: run.env })
    .orderBy('id', 'desc')
    .first('id');
  if (run.tier === '2' || run.tier === 'nightly') q.whereIn('tier', ['2', 'nightly']);
  else q.where({ tier: run.tier, release: run.release });
  const row = await q;
  return row ? row.id : null;
}

/**
 * Classifies every result of the run against the baseline and the recent history (flips). A test's
 * baseline is its last real outcome (passed or failed) up to the baseline run, in runs of the same kind
 * on the same env: an errored or skipped result there (a shard that timed out, an infra failure) says
 * nothing about the test, so it never turns a regression into a "known failure".
 */
export async function classifyRun(db: Knex, runId: number, baselineId: number | null): Promise<void> {
  const found: Pick<TestRunsRow, 'env' | 'tier' | 'release'> | undefined = await db<TestRunsRow>('test_runs')
    .where({ id: runId })
    .first('env', 'tier', 'release');
  const run = must(found, `test run #${runId}'s row`);
  const wide = run.tier === '2' || run.tier === 'nightly';
  const sameKind = wide ? `tr.tier in ('2', 'nightly')` : `tr.tier = ? and tr.release = ?`;
  const kindArgs = wide ? [] : [run.tier, run.release];
  await db.raw(
    `with hist as (
       select r.test_id,
              count(*) filter (where h.prev is not null and (h.ok <> h.prev)) as flips
         from test_results r
         join lateral (
           select (x.status = 'passed') as ok, lag(x.status = 'passed') over (order by x.run_id) as prev
             from test_results x join test_runs tr on tr.id = x.run_id
            where x.test_id = r.test_id and x.run_id <= r.run_id and x.status in ('passed', 'failed') and tr.env = ?
            order by x.run_id desc limit 6
         ) h on true
        where r.run_id = ?
        group by r.test_id
     )
     , cur as (
       select t2.test_id, t2.status, t2.retried, coalesce(hist.flips, 0) as flips, b.status as base
         from test_results t2
         left join hist on hist.test_id = t2.test_id
         left join lateral (
           select x.status from test_results x join test_runs tr on tr.id = x.run_id
            where x.test_id = t2.test_id and x.run_id <= ? and x.status in ('passed', 'failed') and tr.env = ? and ${sameKind}
            order by x.run_id desc limit 1
         ) b on true
        where t2.run_id = ?
     )
     update test_results t set class = case
         when cur.status = 'skipped' then 'skipped'
         when cur.retried then 'flaky'
         when cur.flips >= 3 then 'flaky'
         when cur.base is null then case when cur.status = 'passed' then 'passing' else 'new-test' end
         when cur.status = 'passed' and cur.base = 'failed' then 'fixed'
         when cur.status = 'passed' then 'passing'
         when cur.base = 'passed' then 'new-regression'
         else 'known-failure' end
       from cur
      where t.run_id = ? and t.test_id = cur.test_id`,
    [run.env, runId, baselineId ?? -1, run.env, ...kindArgs, runId, runId],
  );
}

export async function runTotals(db: Knex, config: Config, runId: number, release: string): Promise<RunTotals> {
  const plan = new Set(config.releases.get(release)?.features.keys() ?? []);
  const rows: Pick<TestResultsRow, 'status' | 'features' | 'class'>[] = await db<TestResultsRow>('test_results')
    .where({ run_id: runId })
    .select('status', 'features', 'class');
  const shards: Pick<TestShardsRow, 'status'>[] = await db<TestShardsRow>('test_shards').where({ run_id: runId }).select('status');
  const out: RunTotals = {
    ...emptyTotals(),
    newFeatures: emptyTotals(),
    regression: emptyTotals(),
    perFeature: {},
    classes: { 'new-regression': 0, 'known-failure': 0, fixed: 0, flaky: 0, 'new-test': 0, passing: 0, skipped: 0 },
    erroredShards: shards.filter((s) => s.status === 'errored').length,
    shards: shards.length,
  };
  for (const r of rows) {
    const features = (r.features as string[] | null) ?? [];
    add(out, r.status);
    add(features.some((f) => plan.has(f)) ? out.newFeatures : out.regression, r.status);
    for (const f of features) add((out.perFeature[f] ??= emptyTotals()), r.status);
    if (r.class) out.classes[r.class as ResultClass]++;
  }
  rate(out);
  rate(out.newFeatures);
  rate(out.regression);
  for (const t of Object.values(out.perFeature)) rate(t);
  return out;
}

/** Pass rate at least the threshold, no new regression, no errored shard. */
export function applyGate(totals: RunTotals, threshold: number): GateResult {
  const reasons: string[] = [];
  if (totals.total - totals.skipped === 0) reasons.push('no test ran');
  if (totals.passRate < threshold) reasons.push(`pass rate ${totals.passRate}% is below ${threshold}%`);
  if (totals.classes['new-regression'] > 0) reasons.push(`${totals.classes['new-regression']} new regression(s)`);
  if (totals.erroredShards > 0) reasons.push(`${totals.erroredShards} shard(s) errored`);
  return { passed: reasons.length === 0, threshold, reasons };
}

/** A hash over per-table counts and checksums: the identity of the data a run tested. */
export function fingerprint(rows: { entity: string; rows: number | string; checksum: string }[]): string | null {
  if (rows.length === 0) return null;
  const text = rows.map((r) => `${r.entity}:${Number(r.rows)}:${r.checksum}`).sort().join('\n');
  return crypto.createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** The identity of the data loaded into staging for the release now (the latest load of each table). */
export async function loadedFingerprint(db: Knex, release: string): Promise<{ fingerprint: string | null; loadedAt: Date | null }> {
  const rows: (Pick<LoadsRow, 'entity' | 'checksum' | 'loaded_at'> & { rows: number })[] = await db('loads')
    .where({ release })
    .distinctOn('entity')
    .orderBy([{ column: 'entity' }, { column: 'loaded_at', order: 'desc' }, { column: 'id', order: 'desc' }])
    .select('entity', 'row_count as rows', 'checksum', 'loaded_at');
  const at = rows.reduce<Date | null>((m, r) => (!m || r.loaded_at > m ? r.loaded_at : m), null);
  return { fingerprint: fingerprint(rows), loadedAt: at };
}
