import fs from 'node:fs';
import path from 'node:path';
import { envByRole, envOrThrow, releaseOrThrow, type EnvSpec, type TestingSpec } from '../../config/load.js';
import type { ApprovalsRow, PrunedTestsRow, TestCatalogRow, TestResultsRow, TestRunsRow, TestShardsRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import { recordAudit } from '../kernel/audit.js';
import { failpoint } from '../kernel/failpoints.js';
import { firstRow, must } from '../kernel/must.js';
import { requireRationale } from '../kernel/rationale.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { nextState, passGate, releaseState, transition } from '../kernel/lifecycle.js';
import { promotedFingerprint, promoteRelease } from '../promote/index.js';
import { catalogTests, balanceShards, learnTests, selectTests, type Tier } from './catalog.js';
import { loadMapping, writeJUnit, type FeatureMapping } from './junit.js';
import {
  applyGate,
  baselineRun,
  classifyRun,
  loadedFingerprint,
  recordShardOutcome,
  runTotals,
  type GateResult,
  type ResultClass,
  type RunTotals,
  type Totals,
} from './results.js';
import { databaseUrl, runShard } from './runner.js';
import type { CatalogTest, ShardOutcome, ShardSpec, TestCaseResult } from './types.js';
import { teamConnection } from '../kernel/shell.js';
import { holdSessionLock, processName, sessionLockHeld, waitSessionLockFree } from '../kernel/sessionLock.js';
import { logger } from '../../log.js';
import type { Knex } from 'knex';

/**
 * The tiers: tier 1 runs the release's feature tests plus smoke against staging; tier 2 runs every
 * non-deprecated test against the cumulative master (promoting first when needed) and is refused unless
 * tier 1 passed on the same loaded data. Selective runs (one feature, smoke on an env) and the nightly
 * run use the same runners. Every run is persisted: shards, results, classes against the baseline, gate.
 */
export interface TestRequest {
  tier: Tier;
  feature?: string;
  /** Target env for smoke/feature runs (default: staging). */
  env?: string;
  actor: Actor;
  progress?: (p: TestProgress) => void;
  /**
   * The run to compare with, when the caller knows it (a nightly run: the previous scheduled night);
   * default baselineRun.
   */
  baselineRunId?: number | null;
  /** Told the test run's id as soon as it exists (a nightly slot records it, to resume after a crash). */
  onRun?: (runId: number) => Promise<void>;
  /**
   * The work this run belongs to was abandoned (its process lost its lock): the shards are killed, nothing
   * more is recorded.
   */
  signal?: AbortSignal;
}

export interface TestProgress {
  step: 'promote' | 'select' | 'shards' | 'classify' | 'done';
  runId?: number;
  shards: number;
  shardsDone: number;
  passed: number;
  failed: number;
  elapsedMs: number;
  note?: string;
}

export interface FailureView {
  testId: string;
  name: string;
  status: string;
  class: ResultClass | null;
  message: string | null;
  features: string[];
}

export interface TestRunReport {
  runId: number;
  release: string;
  tier: Tier;
  env: string;
  status: 'passed' | 'failed';
  totals: RunTotals;
  gate: GateResult;
  selection: { description: string; tests: number; deprecated: number; note: string; discovery: boolean };
  baselineRunId: number | null;
  failures: FailureView[];
  newRegressions: FailureView[];
  flaky: FailureView[];
  erroredShards: { index: number; error: string }[];
  reports: { junit: string; markdown: string };
  ms: number;
}

export function testingOf(ctx: Ctx): TestingSpec {
  const t = ctx.config.testing;
  if (!t) {
    throw new TributaryError(
      'config_invalid',
      `${ctx.config.file}: testing: not configured; add testing.command (the team's test command writing JUnit XML to {junit}); ` +
        'see docs/configuration.md, "Testing"',
    );
  }
  return t;
}

export function knownFeatures(ctx: Ctx): Set<string> {
  const out = new Set<string>();
  for (const r of ctx.config.releases.values()) for (const f of r.features.keys()) out.add(f);
  return out;
}

function targetEnv(ctx: Ctx, req: TestRequest): EnvSpec {
  if (req.env) return envOrThrow(ctx.config, req.env);
  const role = req.tier === '2' || req.tier === 'nightly' ? 'master' : 'staging';
  const env = envByRole(ctx.config, role);
  if (!env) {
    const tested = req.tier === '1' ? 'tier 1' : 'this run';
    throw new TributaryError('config_invalid', `${ctx.config.file}: environments: no env has role: ${role}, which ${tested} tests against`);
  }
  return env;
}

/** Tier 2 needs tier 1 passed on the data loaded now; the error says what to do first. */
async function tier2Gate(ctx: Ctx, release: string, actor: Actor): Promise<void> {
  const loaded = await loadedFingerprint(ctx.db.control, release);
  const t1 = await ctx.db
    .control<TestRunsRow>('test_runs')
    .where({ release, tier: '1' })
    .whereNot({ status: 'running' })
    .orderBy('id', 'desc')
    .first();
  const why = tier2Refusal(release, loaded, t1);
  if (why) {
    await recordAudit(ctx.db.control, { actor, action: 'gate.tier2.refused', release, details: { reason: why } });
    throw new TributaryError('gate_tests', `tier 2 refused: ${why}`, { release });
  }
}

/** Why tier 2 may not run on the data loaded now (`t1`: the latest finished tier 1 run), or null. */
function tier2Refusal(
  release: string,
  loaded: { fingerprint: string | null; loadedAt: Date | null },
  t1: TestRunsRow | undefined,
): string | null {
  if (!loaded.fingerprint) {
    return `${release} has not been loaded into staging: tributary load ${release}, then tributary test ${release} --tier 1`;
  }
  if (!t1) return `tier 1 has not run for ${release}: run tributary test ${release} --tier 1 first`;
  if (t1.data_fingerprint !== loaded.fingerprint) {
    return (
      `tier 1 run #${t1.id} tested other data than what is loaded now (loaded ${loaded.loadedAt?.toISOString()}): ` +
      `run tributary test ${release} --tier 1 again`
    );
  }
  if (t1.status !== 'passed') {
    const reasons = ((t1.gate as GateResult).reasons ?? []).join('; ');
    return `tier 1 run #${t1.id} failed (${reasons}): fix it and run tributary test ${release} --tier 1 again`;
  }
  return null;
}

function asCatalog(c: TestCaseResult): CatalogTest {
  return { id: c.id, name: c.name, classname: c.classname, features: c.features, smoke: c.smoke, durationMs: c.durationMs };
}

/** The session advisory lock the process running a test run holds for as long as it runs. */
export const TEST_RUN_LOCK = (id: number) => `tributary:test-run:${id}`;

/** Closes a test run still running as errored, with its unfinished shards; false when it was closed already. */
async function closeTestRun(db: Knex, id: number, error: string): Promise<boolean> {
  return db.transaction(async (trx) => {
    const n = await trx<TestRunsRow>('test_runs')
      .where({ id, status: 'running' })
      .update({ status: 'errored', finished_at: trx.fn.now(), error });
    if (!n) return false;
    await trx<TestShardsRow>('test_shards')
      .where({ run_id: id })
      .whereIn('status', ['pending', 'running'])
      .update({ status: 'errored', finished_at: trx.fn.now(), error });
    return true;
  });
}

/**
 * Test runs left `running` whose process is gone (no live session holds their lock: killed, or it lost
 * the lock and stopped) are closed as errored, with their unfinished shards; `only`: those of one tier.
 * With `waitMs`, a run whose process still lives is waited for (it stops when the work it belongs to was
 * abandoned) and refused when it still runs then. Returns the runs closed.
 */
export async function closeAbandonedTestRuns(ctx: Ctx, why: string, opts: { tier?: Tier; waitMs?: number } = {}): Promise<number[]> {
  const db = ctx.db.control;
  const running: number[] = await db<TestRunsRow>('test_runs')
    .where({ status: 'running', ...(opts.tier ? { tier: opts.tier } : {}) })
    .orderBy('id')
    .pluck('id');
  const closed: number[] = [];
  for (const id of running) {
    const free = opts.waitMs
      ? await waitSessionLockFree(ctx.db.controlParams, TEST_RUN_LOCK(id), opts.waitMs)
      : !(await sessionLockHeld(ctx.db.controlParams, TEST_RUN_LOCK(id)));
    if (!free) {
      if (opts.waitMs) {
        const waited = Math.round(opts.waitMs / 1000);
        throw new TributaryError('gate_busy', `test run #${id} is still being run by a live process (waited ${waited} s for it to stop)`);
      }
      continue;
    }
    if (await closeTestRun(db, id, why)) closed.push(id);
  }
  if (closed.length) logger().warn({ runs: closed }, 'test runs left running by a process that stopped were closed as errored');
  return closed;
}

/**
 * A test run: the tier's gate, the selection and its shards, then the run itself under its lock (recorded,
 * sharded, classified, gated; recordedRun).
 */
export async function runTests(ctx: Ctx, release: string, req: TestRequest): Promise<TestRunReport> {
  releaseOrThrow(ctx.config, release);
  const testing = testingOf(ctx);
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  const progress = (p: Omit<TestProgress, 'elapsedMs'>) => req.progress?.({ ...p, elapsedMs: elapsed() });
  const env = targetEnv(ctx, req);
  const dataFingerprint = await passTierGate(ctx, release, req, env, progress);
  const selection = await selectAndShard(ctx, release, req, testing);
  const { discovery, sel, plan } = selection;
  const note = discovery ? plan.note : `${sel.description}; ${plan.note}`;
  progress({ step: 'select', shards: plan.shards.length, shardsDone: 0, passed: 0, failed: 0, note });

  // runs left running by a process that died are closed before this one starts
  await closeAbandonedTestRuns(ctx, `interrupted: the process running it stopped (found by ${processName()} starting a ${req.tier} run)`);
  // the run's id, and its lock taken before its row exists: a running row whose lock is free was abandoned
  const runId = await nextTestRunId(ctx.db.control);
  const lock = await holdSessionLock(ctx.db.controlParams, TEST_RUN_LOCK(runId), `test run #${runId}`);
  if (!lock) throw new TributaryError('internal', `test run #${runId}: its lock is held by another session`);
  try {
    const lost = req.signal ? AbortSignal.any([lock.lost, req.signal]) : lock.lost;
    return await recordedRun(ctx, release, req, { runId, lost, env, dataFingerprint, ...selection, progress, elapsed });
  } finally {
    await lock.release();
  }
}

/**
 * The tier's gate (tier 1: the release is loaded; tier 2: tier 1 passed on the loaded data, promoting
 * first when needed); returns the fingerprint of the data the run tests (null for the other tiers).
 */
async function passTierGate(
  ctx: Ctx,
  release: string,
  req: TestRequest,
  env: EnvSpec,
  progress: (p: Omit<TestProgress, 'elapsedMs'>) => void,
): Promise<string | null> {
  const db = ctx.db.control;
  const { state } = await releaseState(db, release);
  if (req.tier === '1') {
    await passGate(db, release, 'tier1', req.actor);
    return (await loadedFingerprint(db, release)).fingerprint;
  }
  if (req.tier !== '2') return null;
  await tier2Gate(ctx, release, req.actor);
  if (state === 'tier1-passed') {
    progress({ step: 'promote', shards: 0, shardsDone: 0, passed: 0, failed: 0, note: `promoting ${release} into ${env.name} first` });
    await promoteRelease(ctx, release, { actor: req.actor });
  } else {
    nextState(release, state, 'tier2');
  }
  return promotedFingerprint(ctx, release);
}

/** What a run tests and how it is sharded. */
interface RunSelection {
  mapping: FeatureMapping | undefined;
  features: Set<string>;
  /** The catalog is empty: the whole suite runs once, in one shard, and the catalog learns it. */
  discovery: boolean;
  sel: ReturnType<typeof selectTests>;
  plan: ReturnType<typeof balanceShards>;
}

/** Selection from the catalog; an empty catalog runs the whole suite once in one shard and learns it. */
async function selectAndShard(ctx: Ctx, release: string, req: TestRequest, testing: TestingSpec): Promise<RunSelection> {
  const mapping: FeatureMapping | undefined = testing.mapping ? loadMapping(testing.mapping) : undefined;
  const features = knownFeatures(ctx);
  const catalog = await catalogTests(ctx.db.control);
  const discovery = catalog.length === 0;
  const sel = selectTests(ctx.config, catalog, { tier: req.tier, release, ...(req.feature ? { feature: req.feature } : {}) });
  if (!discovery && sel.tests.length === 0) {
    throw new TributaryError('no_rows', `no test selected: ${sel.description}`, { release, tier: req.tier });
  }
  const plan = discovery
    ? {
        shards: [[]] as CatalogTest[][],
        expectedMs: [0],
        byHistory: false,
        note: 'the test catalog is empty: the whole suite runs once, in one shard, and the catalog learns it (later runs select and shard)',
      }
    : balanceShards(sel.tests, testing.shards);
  return { mapping, features, discovery, sel, plan };
}

/** The next test run id, taken from the table's sequence before its row exists. */
async function nextTestRunId(db: Knex): Promise<number> {
  const res = await db.raw<{ rows: { id: string }[] }>(`select nextval(pg_get_serial_sequence('test_runs', 'id')) as id`);
  return Number(firstRow(res.rows, "the next value of test_runs' id sequence").id);
}

interface RunSetup extends RunSelection {
  runId: number;
  /** Aborted when the run is abandoned: its lock lost, or the work it belongs to. */
  lost: AbortSignal;
  env: EnvSpec;
  dataFingerprint: string | null;
  progress: (p: Omit<TestProgress, 'elapsedMs'>) => void;
  elapsed: () => number;
}

/** Shards done, and tests passed and failed so far (a shard that errored counts all its tests failed). */
interface Tally {
  done: number;
  passed: number;
  failed: number;
}

/**
 * The run itself, holding its lock: recorded, its shards run, classified, gated; every write of it
 * conditioned on its still running.
 */
async function recordedRun(ctx: Ctx, release: string, req: TestRequest, setup: RunSetup): Promise<TestRunReport> {
  const { runId, progress } = setup;
  await recordRunStart(ctx, release, req, setup);
  await failpoint('test.after-start');
  const specs = shardSpecs(ctx, setup);
  const tally = await runShards(ctx, release, req, setup, specs);
  await failpoint('test.after-shards');
  progress({ step: 'classify', runId, shards: specs.length, shardsDone: tally.done, passed: tally.passed, failed: tally.failed });
  await classifyAndFinish(ctx, release, req, setup);
  progress({ step: 'done', runId, shards: specs.length, shardsDone: tally.done, passed: tally.passed, failed: tally.failed });
  return must(await reportOfRun(ctx, release, runId), `the report of test run #${runId}, just finished`);
}

/** The run's row, its shards' rows and its test.start event. */
async function recordRunStart(ctx: Ctx, release: string, req: TestRequest, setup: RunSetup): Promise<void> {
  const { runId, env, dataFingerprint, discovery, sel, plan } = setup;
  const testing = testingOf(ctx);
  const db = ctx.db.control;
  const feature = req.feature ? { feature: req.feature } : {};
  await db<TestRunsRow>('test_runs').insert({
    id: runId,
    release,
    tier: req.tier,
    env: env.name,
    data_fingerprint: dataFingerprint,
    dispatch: testing.dispatch,
    started_by: req.actor,
    selection: JSON.stringify({
      description: sel.description,
      tests: sel.tests.length,
      deprecated: sel.deprecated.length,
      features: sel.features,
      note: plan.note,
      discovery,
      ...feature,
    }),
  });
  await req.onRun?.(runId);
  await db<TestShardsRow>('test_shards').insert(
    plan.shards.map((tests, i) => ({
      run_id: runId,
      idx: i + 1,
      tests: JSON.stringify(tests.map((t) => ({ id: t.id, name: t.name, features: t.features, smoke: t.smoke }))),
      expected_ms: Math.round(plan.expectedMs[i] ?? 0),
    })),
  );
  await recordAudit(db, {
    actor: req.actor,
    action: 'test.start',
    release,
    subject: `test run #${runId}`,
    details: { tier: req.tier, env: env.name, tests: sel.tests.length, shards: plan.shards.length, ...feature },
  });
}

/** What each shard runs, and where. */
function shardSpecs(ctx: Ctx, setup: RunSetup): ShardSpec[] {
  const { runId, env, plan } = setup;
  const testing = testingOf(ctx);
  const workDir = path.join(testing.reportDir, 'runs', String(runId));
  return plan.shards.map((tests, i) => ({
    runId,
    index: i + 1,
    count: plan.shards.length,
    tests: tests.map((t) => ({ id: t.id, name: t.name })),
    command: testing.command,
    cwd: testing.cwd,
    env: env.name,
    databaseUrl: databaseUrl(teamConnection(ctx, env), env.schema),
    timeoutMs: testing.timeoutMs,
    workDir,
    retries: testing.retries,
  }));
}

/**
 * Runs the shards (on agents through pg-boss, or as local processes) and follows them; a failure, or the
 * run abandoned, closes the run as errored (unless whoever found it abandoned closed it already).
 */
async function runShards(ctx: Ctx, release: string, req: TestRequest, setup: RunSetup, specs: ShardSpec[]): Promise<Tally> {
  const { runId, lost, discovery, progress } = setup;
  const db = ctx.db.control;
  const tally: Tally = { done: 0, passed: 0, failed: 0 };
  const report = () =>
    progress({ step: 'shards', runId, shards: specs.length, shardsDone: tally.done, passed: tally.passed, failed: tally.failed });
  try {
    if (testingOf(ctx).dispatch === 'pgboss' && !discovery) await followAgents(ctx, runId, specs, tally, report);
    else await runLocalShards(ctx, release, req, setup, specs, tally, report);
    lost.throwIfAborted();
  } catch (err) {
    const error = (err as Error).message;
    // closed here unless whoever found it abandoned closed it already
    if (await closeTestRun(db, runId, error)) {
      await recordAudit(db, { actor: req.actor, action: 'test.failed', release, subject: `test run #${runId}`, details: { error } });
    }
    throw err;
  }
  return tally;
}

const TALLY_SQL =
  "count(*) filter (where status = 'passed')::int as passed, " + "count(*) filter (where status in ('failed', 'errored'))::int as failed";

/** Agents record their shards' outcomes themselves; here we only follow them. */
async function followAgents(ctx: Ctx, runId: number, specs: ShardSpec[], tally: Tally, report: () => void): Promise<void> {
  const db = ctx.db.control;
  const { dispatchToAgents } = await import('./agents.js');
  await dispatchToAgents(ctx, runId, specs, async () => {
    const c = await db('test_results').where({ run_id: runId }).select(db.raw(TALLY_SQL)).first();
    tally.done++;
    tally.passed = Number(c?.passed ?? 0);
    tally.failed = Number(c?.failed ?? 0);
    report();
  });
}

/** The shards as local processes, `testing.agents` at a time. */
async function runLocalShards(
  ctx: Ctx,
  release: string,
  req: TestRequest,
  setup: RunSetup,
  specs: ShardSpec[],
  tally: Tally,
  report: () => void,
): Promise<void> {
  const { runId, lost, mapping, features } = setup;
  const db = ctx.db.control;
  const { default: PQueue } = await import('p-queue');
  const queue = new PQueue({ concurrency: testingOf(ctx).agents });
  const run1 = runShard;
  await Promise.all(
    specs.map((spec) =>
      queue.add(async () => {
        lost.throwIfAborted();
        await db<TestShardsRow>('test_shards')
          .where({ run_id: runId, idx: spec.index })
          .update({ status: 'running', started_at: db.fn.now(), attempts: db.raw('attempts + 1') });
        const outcome = await run1(spec, { knownFeatures: features, signal: lost, ...(mapping ? { mapping } : {}) });
        // an abandoned run's shard was killed: its outcome is not the tests'
        lost.throwIfAborted();
        if (await recordLocalOutcome(ctx, release, req, setup, specs, outcome, tally)) report();
      }),
    ),
  );
}

/** Records a local shard's outcome once (counted into `tally`; false when it was recorded already). */
async function recordLocalOutcome(
  ctx: Ctx,
  release: string,
  req: TestRequest,
  setup: RunSetup,
  specs: ShardSpec[],
  o: ShardOutcome,
  tally: Tally,
): Promise<boolean> {
  const { runId, discovery } = setup;
  const outcome = discovery && o.status === 'done' ? await discoveredOutcome(ctx, release, req, o) : o;
  if (!(await recordShardOutcome(ctx.db.control, runId, outcome))) return false;
  tally.done++;
  tally.passed += outcome.cases.filter((c) => c.status === 'passed').length;
  tally.failed +=
    outcome.status === 'errored'
      ? must(specs[o.index - 1], `shard ${o.index} of test run #${runId}`).tests.length
      : outcome.cases.filter((c) => c.status === 'failed' || c.status === 'errored').length;
  return true;
}

/** A discovery run's shard: the catalog learns its tests, and only those the tier selects are kept. */
async function discoveredOutcome(ctx: Ctx, release: string, req: TestRequest, o: ShardOutcome): Promise<ShardOutcome> {
  const db = ctx.db.control;
  await learnTests(db, o.cases);
  // tests pruned on their owner's confirmation stay out, even of a run that rediscovers the suite
  const caseIds = o.cases.map((c) => c.id);
  const ids: string[] = await db<PrunedTestsRow>('pruned_tests').whereIn('test_id', caseIds).pluck('test_id');
  const pruned = new Set(ids);
  const candidates = o.cases.filter((c) => !pruned.has(c.id)).map(asCatalog);
  const selected = selectTests(ctx.config, candidates, { tier: req.tier, release, ...(req.feature ? { feature: req.feature } : {}) });
  const keep = new Set(selected.tests.map((t) => t.id));
  return { ...o, cases: o.cases.filter((c) => keep.has(c.id)) };
}

/** Classifies the results against the baseline, applies the gate, writes the reports and records the run's end. */
async function classifyAndFinish(ctx: Ctx, release: string, req: TestRequest, setup: RunSetup): Promise<void> {
  const { runId, lost, env, elapsed } = setup;
  const db = ctx.db.control;
  const baselineId =
    req.baselineRunId !== undefined ? req.baselineRunId : await baselineRun(db, { id: runId, release, tier: req.tier, env: env.name });
  await classifyRun(db, runId, baselineId);
  const totals = await runTotals(db, ctx.config, runId, release);
  const gate = applyGate(totals, testingOf(ctx).passRate);

  lost.throwIfAborted();
  const { failures, newRegressions, flaky } = await failureViews(ctx, runId);
  await writeReports(ctx, runId, release, req.tier, env.name, totals, gate, failures, newRegressions, flaky);
  const ms = elapsed();
  await recordRunFinish(ctx, release, req, setup, { totals, gate, baselineId, ms, newRegressions });
}

/**
 * The run's end, in one transaction: its status (only while it still runs: a run closed as abandoned
 * records nothing), the release's transition when the gate passed, and its test.finish event.
 */
async function recordRunFinish(
  ctx: Ctx,
  release: string,
  req: TestRequest,
  setup: RunSetup,
  r: { totals: RunTotals; gate: GateResult; baselineId: number | null; ms: number; newRegressions: FailureView[] },
): Promise<void> {
  const { runId, lost, env } = setup;
  const { totals, gate, ms } = r;
  const status = gate.passed ? 'passed' : 'failed';
  await ctx.db.control.transaction(async (trx) => {
    lost.throwIfAborted();
    const mine = await trx<TestRunsRow>('test_runs')
      .where({ id: runId, status: 'running' })
      .update({
        status,
        finished_at: trx.fn.now(),
        totals: JSON.stringify(totals),
        gate: JSON.stringify(gate),
        baseline_run_id: r.baselineId,
      });
    if (!mine) {
      throw new TributaryError(
        'gate_busy',
        `test run #${runId} was closed as abandoned while it ran (its process lost its lock): ` +
          'nothing of it is recorded as passed or failed; run the tests again',
        { release },
      );
    }
    if (gate.passed && req.tier === '1') await transition(trx, release, 'tier1');
    if (gate.passed && req.tier === '2') await transition(trx, release, 'tier2');
    await recordAudit(trx, {
      actor: req.actor,
      action: 'test.finish',
      release,
      subject: `test run #${runId}`,
      details: {
        tier: req.tier,
        env: env.name,
        status,
        gate,
        ms,
        total: totals.total,
        passed: totals.passed,
        failed: totals.failed + totals.errored,
        skipped: totals.skipped,
        passRate: totals.passRate,
        newRegressions: r.newRegressions.map((x) => x.name),
      },
    });
  });
}

async function failureViews(
  ctx: Ctx,
  runId: number,
): Promise<{ failures: FailureView[]; newRegressions: FailureView[]; flaky: FailureView[] }> {
  const db = ctx.db.control;
  const view = (r: TestResultsRow): FailureView => ({
    testId: r.test_id,
    name: r.name,
    status: r.status,
    class: (r.class as ResultClass | null) ?? null,
    message: r.message ?? null,
    features: (r.features as string[] | null) ?? [],
  });
  const results = () => db<TestResultsRow>('test_results');
  const failures = (
    await results()
      .where({ run_id: runId })
      .whereIn('status', ['failed', 'errored'])
      .orderByRaw("case class when 'new-regression' then 0 when 'new-test' then 1 else 2 end, name")
      .limit(20)
  ).map(view);
  const newRegressions = (await results().where({ run_id: runId, class: 'new-regression' }).orderBy('name')).map(view);
  const flaky = (await results().where({ run_id: runId, class: 'flaky' }).orderBy('name')).map(view);
  return { failures, newRegressions, flaky };
}

function reportBase(ctx: Ctx, release: string, tier: string, runId: number): string {
  return path.join(testingOf(ctx).reportDir, `${release}-tier${tier}-run${runId}`);
}

/** What a test run records in its `selection` (jsonb). */
interface RecordedSelection {
  description: string;
  tests: number;
  deprecated: number;
  note: string;
  discovery: boolean;
}

/** A finished run's report, read back from the control database. */
export async function reportOfRun(ctx: Ctx, release: string, runId: number): Promise<TestRunReport | undefined> {
  const run = await ctx.db.control<TestRunsRow>('test_runs').where({ id: runId, release }).first();
  if (!run || run.status === 'running') return undefined;
  const sel = run.selection as RecordedSelection;
  const totals = run.totals as RunTotals;
  const shards: Pick<TestShardsRow, 'idx' | 'error'>[] = await ctx.db
    .control<TestShardsRow>('test_shards')
    .where({ run_id: runId, status: 'errored' })
    .orderBy('idx')
    .select('idx', 'error');
  const erroredShards = shards.map((s) => ({ index: s.idx, error: s.error as string }));
  const base = reportBase(ctx, release, run.tier, runId);
  return {
    runId,
    release,
    tier: run.tier as Tier,
    env: run.env,
    status: run.status === 'passed' ? 'passed' : 'failed',
    totals,
    gate: run.gate as GateResult,
    selection: {
      description: sel.description,
      tests: sel.discovery ? totals.total : sel.tests,
      deprecated: sel.deprecated,
      note: sel.note,
      discovery: sel.discovery,
    },
    baselineRunId: run.baseline_run_id ?? null,
    ...(await failureViews(ctx, runId)),
    erroredShards,
    reports: { junit: `${base}.xml`, markdown: `${base}.md` },
    ms: run.finished_at ? new Date(run.finished_at).getTime() - new Date(run.started_at).getTime() : 0,
  };
}

function pct(n: number, of: number): string {
  return of === 0 ? '0%' : `${Math.round((n / of) * 1000) / 10}%`;
}

export function renderMarkdown(
  r: Pick<TestRunReport, 'runId' | 'release' | 'tier' | 'env' | 'totals' | 'gate' | 'failures' | 'newRegressions' | 'flaky'>,
): string {
  const t = r.totals;
  const failed = t.failed + t.errored;
  const reasons = r.gate.reasons.length ? `: ${r.gate.reasons.join('; ')}` : '';
  const part = (name: string, x: Totals) =>
    `| ${name} | ${x.total} | ${x.passed} | ${x.failed + x.errored} | ${x.skipped} | ${x.passRate}% |`;
  const lines = [
    `# ${r.release}: tier ${r.tier} on ${r.env} (test run #${r.runId})`,
    '',
    `**Gate: ${r.gate.passed ? 'PASSED' : 'FAILED'}** (pass rate ≥ ${r.gate.threshold}%, no new regression)${reasons}`,
    '',
    '| | total | passed | failed | skipped | pass rate |',
    '|---|---:|---:|---:|---:|---:|',
    `| all | ${t.total} | ${t.passed} (${pct(t.passed, t.total)}) | ${failed} (${pct(failed, t.total)}) | ` +
      `${t.skipped} (${pct(t.skipped, t.total)}) | ${t.passRate}% |`,
    part('new features', t.newFeatures),
    part('regression of earlier releases', t.regression),
    '',
    '## Per feature',
    '',
    '| feature | total | passed | failed |',
    '|---|---:|---:|---:|',
    ...Object.entries(t.perFeature)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([f, x]) => `| ${f} | ${x.total} | ${x.passed} | ${x.failed + x.errored} |`),
    '',
    `## New regressions (${r.newRegressions.length})`,
    '',
    ...(r.newRegressions.length ? r.newRegressions.map((f) => `- ${f.name}: ${f.message ?? ''}`) : ['none']),
    '',
    `## Failures (${t.failed + t.errored})`,
    '',
    ...(r.failures.length ? r.failures.map((f) => `- [${f.class ?? f.status}] ${f.name}: ${f.message ?? ''}`) : ['none']),
    '',
    `## Flaky (${r.flaky.length})`,
    '',
    ...(r.flaky.length ? r.flaky.map((f) => `- ${f.name}`) : ['none']),
    '',
  ];
  return lines.join('\n');
}

async function writeReports(
  ctx: Ctx,
  runId: number,
  release: string,
  tier: Tier,
  env: string,
  totals: RunTotals,
  gate: GateResult,
  failures: FailureView[],
  newRegressions: FailureView[],
  flaky: FailureView[],
): Promise<{ junit: string; markdown: string }> {
  const dir = testingOf(ctx).reportDir;
  fs.mkdirSync(dir, { recursive: true });
  const rows: (TestResultsRow & Pick<TestCatalogRow, 'classname' | 'file'>)[] = await ctx.db
    .control('test_results as r')
    .leftJoin('test_catalog as c', 'c.test_id', 'r.test_id')
    .where({ 'r.run_id': runId })
    .orderBy('r.test_id')
    .select('r.*', 'c.classname', 'c.file');
  const cases: TestCaseResult[] = rows.map((r) => ({
    id: r.test_id,
    name: r.name,
    classname: r.classname ?? '',
    ...(r.file ? { file: r.file } : {}),
    status: r.status as TestCaseResult['status'],
    durationMs: r.duration_ms,
    ...(r.message ? { message: r.message } : {}),
    features: (r.features as string[] | null) ?? [],
    smoke: r.smoke,
    properties: {},
  }));
  const base = reportBase(ctx, release, tier, runId);
  fs.writeFileSync(`${base}.xml`, writeJUnit(cases, `${release} tier ${tier} (${env})`));
  fs.writeFileSync(`${base}.md`, renderMarkdown({ runId, release, tier, env, totals, gate, failures, newRegressions, flaky }));
  return { junit: `${base}.xml`, markdown: `${base}.md` };
}

/** The latest finished run of a tier for a release. */
export async function latestRun(ctx: Ctx, release: string, tier: Tier): Promise<TestRunsRow | undefined> {
  return ctx.db.control<TestRunsRow>('test_runs').where({ release, tier }).whereNot({ status: 'running' }).orderBy('id', 'desc').first();
}

export interface ApprovalResult {
  release: string;
  runId: number;
  override: boolean;
  approvedBy: Actor;
}

/** The approval of a tier 2 run, if it has one (who, when, why): a second approval is refused before it is asked for. */
export async function approvalOfRun(
  ctx: Ctx,
  runId: number,
): Promise<Pick<ApprovalsRow, 'approved_by' | 'approved_at' | 'rationale' | 'override'> | undefined> {
  return ctx.db.control<ApprovalsRow>('approvals')
    .where({ test_run_id: runId })
    .first('approved_by', 'approved_at', 'rationale', 'override');
}

/** A qa_lead's approval of the latest tier 2 run: ready for production; past a failed gate only with override. */
export async function approveRelease(
  ctx: Ctx,
  release: string,
  opts: { actor: Actor; rationale: string; override?: boolean; runId?: number },
): Promise<ApprovalResult> {
  releaseOrThrow(ctx.config, release);
  const rationale = requireRationale(opts.rationale, 'an approval', 'why may the release go to production?', 'usage');
  const run = await approvableRun(ctx, release, opts);
  const gate = run.gate as GateResult;
  const passed = run.status === 'passed';
  return ctx.db.control.transaction(async (trx) => {
    // one approval per run: a double click or a second approver is told who approved it
    await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [`tributary:approve:${release}`]);
    const earlier = await trx<ApprovalsRow>('approvals').where({ release, test_run_id: run.id }).first();
    if (earlier) {
      throw new TributaryError(
        'already_decided',
        `tier 2 run #${String(run.id)} of ${release} was already approved by ${String(earlier.approved_by)} ` +
          `at ${new Date(earlier.approved_at).toISOString()}`,
        { release, decidedBy: earlier.approved_by },
      );
    }
    await trx<ApprovalsRow>('approvals').insert({ release, test_run_id: run.id, approved_by: opts.actor, rationale, override: !passed });
    await transition(trx, release, 'approve');
    await recordAudit(trx, {
      actor: opts.actor,
      action: passed ? 'release.approved' : 'release.approved.override',
      release,
      subject: `test run #${String(run.id)}`,
      details: { rationale, override: !passed, gate },
    });
    return { release, runId: run.id, override: !passed, approvedBy: opts.actor };
  });
}

/**
 * The tier 2 run an approval is for: the latest, the one asked for, and passed (or failed, with an
 * override); a refusal is audited.
 */
async function approvableRun(ctx: Ctx, release: string, opts: { actor: Actor; override?: boolean; runId?: number }): Promise<TestRunsRow> {
  const run = await latestRun(ctx, release, '2');
  if (!run) {
    await recordAudit(ctx.db.control, { actor: opts.actor, action: 'gate.approve.refused', release, details: { reason: 'no tier 2 run' } });
    throw new TributaryError(
      'gate_tests',
      `${release} has no tier 2 run to approve: run tributary test ${release} --tier 2 first`,
      { release },
    );
  }
  if (opts.runId !== undefined && opts.runId !== run.id) {
    throw new TributaryError(
      'gate_state',
      `tier 2 run #${opts.runId} is no longer the latest of ${release} (#${String(run.id)}): approve the latest one`,
      { release },
    );
  }
  const gate = run.gate as GateResult;
  if (run.status !== 'passed' && !opts.override) {
    await recordAudit(ctx.db.control, {
      actor: opts.actor,
      action: 'gate.approve.refused',
      release,
      details: { runId: run.id, reasons: gate.reasons },
    });
    throw new TributaryError(
      'gate_tests',
      `tier 2 run #${String(run.id)} of ${release} failed its gate (${(gate.reasons ?? []).join('; ')}): ` +
        'approving it needs an explicit override with a rationale (--override)',
      { release },
    );
  }
  return run;
}

/** The release's latest finished tier 2 run (the one an approval is for), if any. */
export async function latestTier2Run(
  ctx: Ctx,
  release: string,
): Promise<{ id: number; gate: { passed: boolean; reasons: string[] }; status: string } | undefined> {
  const run: Pick<TestRunsRow, 'id' | 'gate' | 'status'> | undefined = await ctx.db
    .control<TestRunsRow>('test_runs')
    .where({ release, tier: '2' })
    .whereNot({ status: 'running' })
    .orderBy('id', 'desc')
    .first('id', 'gate', 'status');
  return run && { id: run.id, gate: run.gate as GateResult, status: run.status };
}
