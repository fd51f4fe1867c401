import type { Knex } from 'knex';
import type { Config } from '../../config/load.js';
import type { TestRunsRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import type { RunTotals } from '../tiers/index.js';

/**
 * The nightly post, computed set-based from test_runs and test_results: totals and pass rate; the new
 * regressions and the fixed tests since the previous night; the flaky leaderboard over the last nights
 * (status flips between consecutive nights, and passes on a retry); a per-release breakdown (each test
 * counts for the releases whose plan has one of its features); the pass-rate trend over the last 7 and
 * 30 nights. A night is a scheduled slot (nightly_runs, one row per slot; its finished test run): a
 * manual `tributary nightly --now` run is never anyone's previous night nor a point of the trend (its own
 * summary compares it with the last scheduled night, and its trend ends with it). New regressions and
 * fixed tests are the run's own classes (results.ts classifyRun), whose baseline for a nightly run is the
 * previous scheduled night (executeNightly passes it): the post and the run's gate always agree. Flaky,
 * as in those classes: at least three flips over the window (pass, fail, pass is a regression then a fix),
 * or a pass on a retry (one change is a regression or a fix, not flakiness).
 */
export interface TestRef {
  testId: string;
  name: string;
  message: string | null;
  releases: string[];
}

export interface FlakyEntry {
  testId: string;
  name: string;
  flips: number;
  retried: number;
  failures: number;
  nights: number;
}

export interface ReleaseBreakdown {
  release: string;
  total: number;
  passed: number;
  failed: number;
  skipped: number;
  passRate: number;
  newRegressions: number;
}

export interface TrendPoint {
  runId: number;
  at: string;
  passRate: number;
  total: number;
}

export interface NightlySummary {
  runId: number;
  release: string;
  env: string;
  at: string;
  status: 'passed' | 'failed';
  totals: { total: number; passed: number; failed: number; errored: number; skipped: number; passRate: number };
  reasons: string[];
  previousRunId: number | null;
  newRegressions: { count: number; items: TestRef[] };
  fixed: { count: number; items: TestRef[] };
  flaky: { nights: number; items: FlakyEntry[] };
  perRelease: ReleaseBreakdown[];
  trend: { points: TrendPoint[]; avg7: number | null; avg30: number | null; nights7: number; nights30: number };
}

/** A test not in any release's plan (smoke, or features no plan lists) counts here. */
export const NO_RELEASE = '(no release)';
const LIST = 15;

const round2 = (n: number) => Math.round(n * 100) / 100;
const rate = (passed: number, ran: number) => (ran === 0 ? 0 : Math.floor((passed / ran) * 10000) / 100);

/** Feature → releases of the plan, as two parallel arrays for unnest. */
function featureReleases(config: Config): { features: string[]; releases: string[]; order: string[] } {
  const features: string[] = [];
  const releases: string[] = [];
  for (const r of config.releases.values()) {
    for (const f of r.features.keys()) {
      features.push(f);
      releases.push(r.name);
    }
  }
  return { features, releases, order: [...config.releases.keys()] };
}

type FeatureReleases = ReturnType<typeof featureReleases>;
type Night = { id: number; started_at: Date; totals: RunTotals };
type TestClass = 'new-regression' | 'fixed';

/** The run's tests of one class against its baseline (the previous scheduled night), with their releases. */
async function classRefs(db: Knex, map: FeatureReleases, runId: number, cls: TestClass): Promise<{ count: number; items: TestRef[] }> {
  const res = await db.raw<{ rows: { test_id: string; name: string; message: string | null; releases: string[] | null; n: number }[] }>(
    `with fr as (select * from unnest(?::text[], ?::text[]) as fr(feature, release)),
          hit as (select c.test_id, c.name, c.message, c.features from test_results c where c.run_id = ? and c.class = ?)
     select hit.test_id, hit.name, hit.message, count(*) over ()::int as n,
            array(select distinct fr.release from jsonb_array_elements_text(hit.features) f join fr on fr.feature = f
                   order by 1) as releases
       from hit order by hit.name limit ${LIST}`,
    [map.features, map.releases, runId, cls],
  );
  const items = res.rows.map((r) => ({ testId: r.test_id, name: r.name, message: r.message, releases: r.releases ?? [] }));
  return { count: res.rows[0]?.n ?? 0, items };
}

/** The flaky leaderboard over the window's runs. */
async function flakyTests(db: Knex, window: number[]): Promise<NightlySummary['flaky']['items']> {
  type Flaky = { test_id: string; name: string; flips: number; retried: number; failures: number; nights: number };
  const flakyRows = await db.raw<{ rows: Flaky[] }>(
    `with h as (
       select test_id, name, retried, (status = 'passed') as ok, lag(status = 'passed') over (partition by test_id order by run_id) as prev
         from test_results where run_id = any(?::int[]) and status <> 'skipped'
     )
     select * from (
       select test_id, max(name) as name,
              count(*) filter (where prev is not null and ok <> prev)::int as flips,
              count(*) filter (where retried)::int as retried,
              count(*) filter (where not ok)::int as failures,
              count(*)::int as nights
         from h group by test_id
     ) s where flips >= 3 or retried > 0
      order by flips + retried desc, failures desc, test_id
      limit 10`,
    [window],
  );
  return flakyRows.rows.map((r) => ({
    testId: r.test_id,
    name: r.name,
    flips: r.flips,
    retried: r.retried,
    failures: r.failures,
    nights: r.nights,
  }));
}

/** Each release's tests in the run (a test counts for the releases whose plan has one of its features), in plan order. */
async function perReleaseOf(db: Knex, map: FeatureReleases, runId: number): Promise<NightlySummary['perRelease']> {
  type Breakdown = { release: string; total: number; passed: number; failed: number; skipped: number; regressions: number };
  const breakdown = await db.raw<{ rows: Breakdown[] }>(
    `with fr as (select * from unnest(?::text[], ?::text[]) as fr(feature, release)),
          cur as (select c.test_id, c.status, c.features, c.class from test_results c where c.run_id = ?)
     select coalesce(x.release, ?) as release,
            count(*)::int as total,
            count(*) filter (where cur.status = 'passed')::int as passed,
            count(*) filter (where cur.status in ('failed', 'errored'))::int as failed,
            count(*) filter (where cur.status = 'skipped')::int as skipped,
            count(*) filter (where cur.class = 'new-regression')::int as regressions
       from cur left join lateral (
              select distinct fr.release from jsonb_array_elements_text(cur.features) f join fr on fr.feature = f
            ) x on true
      group by 1`,
    [map.features, map.releases, runId, NO_RELEASE],
  );
  const indexOf = (r: string) => map.order.indexOf(r);
  const position = (r: string) => (r === NO_RELEASE ? Number.MAX_SAFE_INTEGER : indexOf(r) < 0 ? Number.MAX_SAFE_INTEGER - 1 : indexOf(r));
  return breakdown.rows
    .map((r) => {
      const passRate = rate(r.passed, r.total - r.skipped);
      const { release, total, passed, failed, skipped } = r;
      return { release, total, passed, failed, skipped, passRate, newRegressions: r.regressions };
    })
    .sort((a, b) => position(a.release) - position(b.release) || a.release.localeCompare(b.release));
}

/** The pass-rate trend over the nights, oldest first, with its 7- and 30-night averages. */
function trendOf(runs: Night[]): NightlySummary['trend'] {
  const points = runs
    .map((r) => ({
      runId: r.id,
      at: new Date(r.started_at).toISOString(),
      passRate: Number(r.totals?.passRate ?? 0),
      total: Number(r.totals?.total ?? 0),
    }))
    .reverse();
  const avg = (n: number) => {
    const last = points.slice(-n);
    return last.length === 0 ? null : round2(last.reduce((a, p) => a + p.passRate, 0) / last.length);
  };
  return { points, avg7: avg(7), avg30: avg(30), nights7: Math.min(7, points.length), nights30: points.length };
}

export async function nightlySummary(db: Knex, config: Config, runId: number, opts: { nights?: number } = {}): Promise<NightlySummary> {
  const run = await db<TestRunsRow>('test_runs').where({ id: runId, tier: 'nightly' }).first();
  if (!run) throw new TributaryError('no_rows', `test run #${runId} is not a nightly run`, { runId });
  if (run.status === 'running') throw new TributaryError('gate_state', `nightly run #${runId} is still running`, { runId });
  const nights = opts.nights ?? config.nightly?.nights ?? 14;
  // this run, then the previous scheduled nights on the same env (newest first), 30 in all
  const previous = await previousNights(db, run.env, runId, 29);
  const t = run.totals as RunTotals;
  const runs: Night[] = [{ id: runId, started_at: run.started_at, totals: t }, ...previous];
  const map = featureReleases(config);
  // the run's classes against its baseline (the previous scheduled night)
  const newRegressions = await classRefs(db, map, runId, 'new-regression');
  const fixed = await classRefs(db, map, runId, 'fixed');
  const window = runs.slice(0, nights).map((r) => r.id);
  const flaky = { nights: window.length, items: await flakyTests(db, window) };
  const perRelease = await perReleaseOf(db, map, runId);
  return {
    runId,
    release: run.release,
    env: run.env,
    at: new Date(run.started_at).toISOString(),
    status: run.status === 'passed' ? 'passed' : 'failed',
    totals: { total: t.total, passed: t.passed, failed: t.failed, errored: t.errored, skipped: t.skipped, passRate: t.passRate },
    reasons: ((run.gate as { reasons?: string[] } | null)?.reasons as string[] | undefined) ?? [],
    previousRunId: previous[0]?.id ?? null,
    newRegressions,
    fixed,
    flaky,
    perRelease,
    trend: trendOf(runs),
  };
}

/**
 * The scheduled nights before a run (its test run id below `beforeRunId`), finished, on `env`, newest
 * first: one per slot (nightly_runs' unique key), never a manual run. The baseline of a nightly run and
 * the nights of its summary.
 */
export async function previousNights(db: Knex, env: string, beforeRunId: number | null, limit: number): Promise<Night[]> {
  const q = db('nightly_runs as n')
    .join('test_runs as tr', 'tr.id', 'n.test_run_id')
    .where({ 'n.kind': 'nightly', 'n.status': 'done', 'tr.env': env, 'tr.tier': 'nightly' })
    .whereNot('n.trigger', 'manual')
    .whereIn('tr.status', ['passed', 'failed'])
    .orderBy('tr.id', 'desc')
    .limit(limit)
    .select('tr.id', 'tr.started_at', 'tr.totals');
  if (beforeRunId !== null) q.where('tr.id', '<', beforeRunId);
  return (await q) as Night[];
}
