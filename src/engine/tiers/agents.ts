import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type PgBoss from 'pg-boss';
import type { ConnectionParams } from '../../db/connect.js';
import { TributaryError } from '../../errors.js';
import { lazy } from '../../lazy.js';
import { logger, redact } from '../../log.js';
import type { TestShardsRow } from '../../db/rows.js';
import type { Ctx } from '../kernel/context.js';
import { must } from '../kernel/must.js';
import { loadMapping, type FeatureMapping } from './junit.js';
import { recordShardOutcome } from './results.js';
import { databaseUrl, runShard, withoutPassword } from './runner.js';
import type { ShardOutcome, ShardSpec } from './types.js';
import { teamConnection } from '../kernel/shell.js';

/**
 * Distributed shards: `testing.dispatch: pgboss`. The run's process queues one pg-boss job per shard in
 * the control database and follows test_shards; `tributary agent` processes (any machine that reaches the
 * control database and sees the same test suite at the same path) fetch the jobs, run them with the
 * command runner and record the outcome themselves.
 *
 * Nothing is lost: a job whose agent dies stays `active` until its expiry (the shard's timeout for every
 * attempt plus a margin), then pg-boss's maintenance puts it back to `retry` and another agent takes it
 * (up to JOB_RETRY_LIMIT times). Nothing counts twice: recordShardOutcome records a shard once, so a slow
 * agent whose job was retried elsewhere only finds its result dropped. The dispatcher errors a shard
 * whose job failed on every attempt, and the shards no agent takes within testing.agentWaitSeconds.
 */
export const SHARD_QUEUE = 'tributary-shards';
export const BOSS_SCHEMA = 'pgboss';
/** Attempts after the first: a shard runs at most 3 times. */
export const JOB_RETRY_LIMIT = 2;
/** Seconds before a failed job can be fetched again. */
const RETRY_DELAY_SECONDS = 1;
/** pg-boss refuses expirations of 24 hours or more. */
const MAX_EXPIRY_SECONDS = 23 * 3600;
const POLL_MS = 250;
const JOB_CHECK_MS = 1000;
const AGENT_POLL_MS = 1000;
/** A job completed while its shard is still open (should not happen): how long before the shard is errored. */
const COMPLETED_GRACE_MS = 10_000;

/**
 * The job's expiry: the command and each re-run of failing tests may take the timeout, then up to 2 s
 * for the runner to kill the process group, plus parsing and recording. Past it, pg-boss retries the
 * job on another agent.
 */
export function jobExpirySeconds(spec: Pick<ShardSpec, 'timeoutMs' | 'retries'>): number {
  const attempts = 1 + spec.retries;
  const work = (spec.timeoutMs / 1000) * attempts;
  return Math.min(MAX_EXPIRY_SECONDS, Math.ceil(work + 3 + 2 * attempts + work * 0.05));
}

/** How often the dispatcher runs pg-boss maintenance (which expires the jobs of dead agents). */
export function maintenanceSeconds(expirySeconds: number): number {
  return Math.max(1, Math.min(60, Math.floor(expirySeconds / 10)));
}

export function shardJobKey(runId: number, index: number): string {
  return `run-${runId}-shard-${index}`;
}

const loadPgBoss = lazy<typeof PgBoss>('pg-boss');

function newBoss(p: ConnectionParams, opts: Partial<PgBoss.ConstructorOptions>): PgBoss {
  const boss = new (loadPgBoss())({
    host: p.host,
    port: p.port,
    user: p.user,
    ...(p.password ? { password: p.password } : {}),
    database: p.database,
    ...(p.ssl ? { ssl: p.ssl } : {}),
    schema: BOSS_SCHEMA,
    // no cron schedules here: no timekeeper queries
    schedule: false,
    max: 4,
    ...opts,
  });
  boss.on('error', (err: Error) => logger().warn({ err: redact(err.message) }, 'pg-boss error'));
  return boss;
}

/**
 * Starts pg-boss and creates the queue. Serialised over every Tributary process on the database: two
 * processes installing pg-boss's schema at once can leave one of them with a broken connection.
 */
async function startBoss(ctx: Ctx, boss: PgBoss): Promise<void> {
  await ctx.db.control.transaction(async (trx) => {
    await trx.raw('select pg_advisory_xact_lock(hashtext(?))', ['tributary.pgboss.start']);
    await boss.start();
    await boss.createQueue(SHARD_QUEUE, {
      name: SHARD_QUEUE,
      policy: 'standard',
      retryLimit: JOB_RETRY_LIMIT,
      retryDelay: RETRY_DELAY_SECONDS,
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function failureText(output: unknown, expirySeconds: number): string {
  const o = output as { message?: unknown; value?: { message?: unknown } } | null | undefined;
  const msg =
    typeof o?.message === 'string'
      ? o.message
      : typeof o?.value?.message === 'string'
        ? o.value.message
        : output
          ? JSON.stringify(output)
          : 'no reason given';
  if (/failed by timeout/.test(msg)) return `the agent running it died or hung (no result within the job's expiry of ${expirySeconds} s)`;
  return redact(msg);
}

/** A run's shards being dispatched: what the steps of dispatchToAgents share. */
interface Dispatch {
  ctx: Ctx;
  runId: number;
  specs: ShardSpec[];
  boss: PgBoss;
  log: ReturnType<typeof logger>;
  /** How long shards may wait for an agent (testing.agentWaitSeconds). */
  waitMs: number;
  /** Each shard's job expiry (seconds), by shard index. */
  expiry: Map<number, number>;
  /** Each shard's pg-boss job id, by shard index. */
  jobs: Map<number, string>;
  /** The shards seen recorded (done or errored) and reported to onShardRecorded. */
  reported: Set<number>;
  onShardRecorded: (index: number) => Promise<void> | void;
}

/** What following the shards remembers from one poll to the next. */
interface Follow {
  lastActivity: number;
  lastAttempts: number;
  lastJobCheck: number;
  /** When a job was first seen completed while its shard was still open, by shard index. */
  completedSince: Map<number, number>;
}

/**
 * Queues one job per shard and follows the run until every shard is done or errored; calls
 * onShardRecorded once per shard as it is recorded. The shards' rows must exist in test_shards.
 */
export async function dispatchToAgents(
  ctx: Ctx,
  runId: number,
  specs: ShardSpec[],
  onShardRecorded: (index: number) => Promise<void> | void,
): Promise<void> {
  const log = logger().child({ runId });
  const waitMs = ctx.config.testing?.agentWaitMs ?? 600_000;
  if (specs.length === 0) return;
  await requireShardRows(ctx, runId, specs);

  const expiry = new Map(specs.map((s) => [s.index, jobExpirySeconds(s)]));
  const boss = newBoss(ctx.db.controlParams, {
    application_name: 'tributary-dispatch',
    maintenanceIntervalSeconds: maintenanceSeconds(Math.min(...expiry.values())),
  });
  const d: Dispatch = { ctx, runId, specs, boss, log, waitMs, expiry, jobs: new Map(), reported: new Set(), onShardRecorded };
  let finished = false;
  try {
    await startBoss(ctx, boss);
    await queueShards(d);
    log.info({ shards: specs.length, queue: SHARD_QUEUE }, 'shards queued for tributary agents');
    await followShards(d);
    finished = true;
    log.info({ shards: specs.length }, 'every shard recorded');
  } finally {
    // the run is abandoned: agents must not pick up its shards later
    if (!finished) await cancelOpenJobs(d);
    await boss
      .stop({ graceful: false, close: true })
      .catch((err: Error) => log.warn({ err: redact(err.message) }, 'pg-boss did not stop cleanly'));
  }
}

async function requireShardRows(ctx: Ctx, runId: number, specs: ShardSpec[]): Promise<void> {
  const rows: Pick<TestShardsRow, 'idx'>[] = await ctx.db.control<TestShardsRow>('test_shards').where({ run_id: runId }).select('idx');
  const known = new Set(rows.map((r) => r.idx));
  const missing = specs.filter((s) => !known.has(s.index)).map((s) => s.index);
  if (missing.length > 0) throw new TributaryError('internal', `test run #${runId}: no test_shards row for shard(s) ${missing.join(', ')}`);
}

const expiryOf = (d: Dispatch, index: number): number =>
  must(d.expiry.get(index), `the job expiry of shard ${index} of test run #${d.runId}`);
const jobOf = (d: Dispatch, index: number): string => must(d.jobs.get(index), `the pg-boss job of shard ${index} of test run #${d.runId}`);

async function queueShards(d: Dispatch): Promise<void> {
  for (const spec of d.specs) {
    // the env's password stays out of the queue: agents take it from their own config
    const id = await d.boss.send(
      SHARD_QUEUE,
      { ...spec, databaseUrl: withoutPassword(spec.databaseUrl) },
      {
        retryLimit: JOB_RETRY_LIMIT,
        retryDelay: RETRY_DELAY_SECONDS,
        expireInSeconds: expiryOf(d, spec.index),
        singletonKey: shardJobKey(d.runId, spec.index),
      },
    );
    if (!id) throw new TributaryError('runner_failed', `test run #${d.runId}: pg-boss did not accept the job of shard ${spec.index}`);
    d.jobs.set(spec.index, id);
  }
}

/** Polls test_shards until every shard is recorded, checking the shards' jobs every JOB_CHECK_MS. */
async function followShards(d: Dispatch): Promise<void> {
  const f: Follow = { lastActivity: Date.now(), lastAttempts: -1, lastJobCheck: 0, completedSince: new Map() };
  for (;;) {
    const { attempts, agentOf } = await reportRecorded(d, f);
    if (d.reported.size >= d.specs.length) return;
    if (attempts !== f.lastAttempts) {
      // an agent took a shard (or took one again)
      f.lastAttempts = attempts;
      f.lastActivity = Date.now();
    }
    if (Date.now() - f.lastJobCheck >= JOB_CHECK_MS) {
      f.lastJobCheck = Date.now();
      await checkJobs(d, f, agentOf);
    }
    await sleep(POLL_MS);
  }
}

/** Reports the shards newly recorded; returns the attempts taken so far and each shard's last agent. */
async function reportRecorded(d: Dispatch, f: Follow): Promise<{ attempts: number; agentOf: Map<number, string | null> }> {
  const shards: Pick<TestShardsRow, 'idx' | 'status' | 'attempts' | 'agent'>[] = await d.ctx.db
    .control<TestShardsRow>('test_shards')
    .where({ run_id: d.runId })
    .select('idx', 'status', 'attempts', 'agent');
  let attempts = 0;
  const agentOf = new Map<number, string | null>();
  for (const r of shards) {
    const idx = r.idx;
    if (!d.expiry.has(idx)) continue;
    attempts += r.attempts;
    agentOf.set(idx, r.agent);
    if ((r.status === 'done' || r.status === 'errored') && !d.reported.has(idx)) {
      d.reported.add(idx);
      f.lastActivity = Date.now();
      await d.onShardRecorded(idx);
    }
  }
  return { attempts, agentOf };
}

/**
 * The open shards' jobs: a shard whose job is gone, failed on every attempt, cancelled or completed without
 * a result is errored; shards no agent took within waitMs are cancelled and errored.
 */
async function checkJobs(d: Dispatch, f: Follow, agentOf: Map<number, string | null>): Promise<void> {
  const open = d.specs.filter((s) => !d.reported.has(s.index));
  const states = await Promise.all(
    open.map(async (s) => ({
      index: s.index,
      job: await d.boss.getJobById<ShardSpec>(SHARD_QUEUE, jobOf(d, s.index), { includeArchive: true }),
    })),
  );
  const now = Date.now();
  if (states.some((s) => s.job?.state === 'active')) f.lastActivity = now;
  for (const { index, job } of states) await errorEndedJob(d, f, index, job, now);
  const waiting = states.flatMap(({ index, job }) => (job && (job.state === 'created' || job.state === 'retry') ? [{ index, job }] : []));
  if (waiting.length > 0 && now - f.lastActivity > d.waitMs) {
    for (const { index, job } of waiting) {
      // an agent may take the job right now: only a job still waiting is cancelled and errored
      const res = (await d.boss.cancel(SHARD_QUEUE, job.id)) as unknown as { affected?: number } | undefined;
      if (res && res.affected === 0) continue;
      const last = agentOf.get(index);
      await errorShard(
        d,
        index,
        `no agent picked shard ${index} within ${Math.round(d.waitMs / 1000)} s` +
          `${last ? ` after its agent ${last} stopped answering` : ''}: ` +
          'is a `tributary agent` running against this control database? (testing.agentWaitSeconds)',
      );
    }
  }
}

/** Errors an open shard whose job ended without its result: gone, failed, cancelled, or completed for too long. */
async function errorEndedJob(
  d: Dispatch,
  f: Follow,
  index: number,
  job: PgBoss.JobWithMetadata<ShardSpec> | null,
  now: number,
): Promise<void> {
  if (!job) {
    await errorShard(d, index, `shard ${index}: its job disappeared from the pg-boss queue ${SHARD_QUEUE} (purged or deleted?)`);
  } else if (job.state === 'failed') {
    const why = failureText(job.output, expiryOf(d, index));
    await errorShard(d, index, `shard ${index} failed on every attempt (${job.retryCount + 1}): ${why}`);
  } else if (job.state === 'cancelled') {
    await errorShard(d, index, `shard ${index}: its job was cancelled in the pg-boss queue ${SHARD_QUEUE}`);
  } else if (job.state === 'completed') {
    const since = f.completedSince.get(index) ?? now;
    f.completedSince.set(index, since);
    if (now - since > COMPLETED_GRACE_MS) await errorShard(d, index, `shard ${index}: its job completed but no result was recorded`);
  }
}

async function errorShard(d: Dispatch, index: number, message: string): Promise<void> {
  const db = d.ctx.db.control;
  const row = await db<TestShardsRow>('test_shards').where({ run_id: d.runId, idx: index }).first('agent');
  const outcome: ShardOutcome = {
    index,
    status: 'errored',
    cases: [],
    retriedPassed: [],
    error: message,
    exitCode: null,
    durationMs: 0,
    outputTail: '',
    agent: row?.agent ?? '(none)',
  };
  if (await recordShardOutcome(db, d.runId, outcome)) d.log.warn({ shard: index }, message);
}

/** An abandoned run's jobs still open are cancelled: agents must not pick up its shards later. */
async function cancelOpenJobs(d: Dispatch): Promise<void> {
  const open = d.specs.flatMap((s) => {
    const id = d.jobs.get(s.index);
    return id !== undefined && !d.reported.has(s.index) ? [id] : [];
  });
  if (open.length > 0) {
    await d.boss
      .cancel(SHARD_QUEUE, open)
      .catch((err: Error) => d.log.warn({ err: redact(err.message) }, 'could not cancel the open jobs'));
  }
}

/** Feature ids of the release plan (what JUnit tags are recognised as). */
function knownFeatures(ctx: Ctx): Set<string> {
  const out = new Set<string>();
  for (const r of ctx.config.releases.values()) for (const f of r.features.keys()) out.add(f);
  return out;
}

/** Process groups led by this process's children: the runner's test commands (spawned detached). */
function commandGroups(): number[] {
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const [, ppid, pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(ppid) === process.pid && Number(pgrp) === Number(e)) out.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}

export interface AgentOptions {
  /** Recorded on the shards it runs (test_shards.agent); default `${hostname}:${pid}`. */
  name?: string;
  /** Shards run at once (default 1). */
  concurrency?: number;
  /** On stop: how long running shards may finish before they are handed back to the queue (default 30 s). */
  graceMs?: number;
}

export interface AgentHandle {
  name: string;
  /** Stops taking shards, lets running ones finish (or hands them back after graceMs), stops pg-boss. */
  stop(): Promise<void>;
}

interface InFlight {
  spec: ShardSpec;
  released: boolean;
}

/** A running agent: what its slots, its job handler and its stop share. */
interface Agent {
  ctx: Ctx;
  name: string;
  boss: PgBoss;
  log: ReturnType<typeof logger>;
  mapping: FeatureMapping | undefined;
  features: Set<string>;
  /** The shards running here, by job id. */
  inFlight: Map<string, InFlight>;
  stopping: boolean;
  /** Wakes the slots idling between polls. */
  sleepers: Set<() => void>;
}

/** Works the shard queue until stopped. Uses ctx.db.control; the caller closes the databases. */
export async function runAgent(ctx: Ctx, opts: AgentOptions = {}): Promise<AgentHandle> {
  const name = opts.name ?? `${os.hostname()}:${process.pid}`;
  const concurrency = Math.max(1, Math.floor(opts.concurrency ?? 1));
  const graceMs = opts.graceMs ?? 30_000;
  const log = logger().child({ agent: name });
  const mappingFile = ctx.config.testing?.mapping;
  const mapping = mappingFile ? loadMapping(mappingFile) : undefined;
  const features = knownFeatures(ctx);
  const boss = newBoss(ctx.db.controlParams, { application_name: 'tributary-agent', max: concurrency + 2 });
  await startBoss(ctx, boss);

  const a: Agent = { ctx, name, boss, log, mapping, features, inFlight: new Map(), stopping: false, sleepers: new Set() };
  const slots = Promise.all(Array.from({ length: concurrency }, () => workSlot(a)));
  log.info({ concurrency, queue: SHARD_QUEUE }, 'agent started: waiting for shards');
  let stopped: Promise<void> | undefined;
  return { name, stop: () => (stopped ??= stopAgent(a, slots, graceMs)) };
}

/** Sleeps `ms`, or until the agent stops. */
function idle(a: Agent, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      a.sleepers.delete(done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    a.sleepers.add(done);
  });
}

/** One of the agent's slots: fetches a job and runs it, until the agent stops. */
async function workSlot(a: Agent): Promise<void> {
  while (!a.stopping) {
    let job: PgBoss.JobWithMetadata<ShardSpec> | undefined;
    try {
      [job] = await a.boss.fetch<ShardSpec>(SHARD_QUEUE, { batchSize: 1, includeMetadata: true });
    } catch (err) {
      a.log.warn({ err: redact((err as Error).message) }, 'could not fetch from the queue');
    }
    if (!job) {
      await idle(a, AGENT_POLL_MS);
      continue;
    }
    await handleJob(a, job);
  }
}

/** The env's URL from this agent's config (which holds the password); the job's URL has none. */
function urlFor(ctx: Ctx, spec: ShardSpec): string {
  const env = ctx.config.envs.get(spec.env);
  return env ? databaseUrl(teamConnection(ctx, env), env.schema) : spec.databaseUrl;
}

/** Runs a job's shard (unless it was recorded already) and records its outcome; a failure hands the job back. */
async function handleJob(a: Agent, job: PgBoss.JobWithMetadata<ShardSpec>): Promise<void> {
  const { boss, log, name } = a;
  const spec = job.data;
  const at = { runId: spec.runId, shard: spec.index, job: job.id };
  try {
    const attempt = await claimShard(a, spec);
    if (attempt === null) {
      await boss.complete(SHARD_QUEUE, job.id, { skipped: 'shard recorded already' });
      log.info(at, 'shard recorded already: job completed without running it');
      return;
    }
    const entry: InFlight = { spec, released: false };
    a.inFlight.set(job.id, entry);
    log.info({ ...at, attempt, tests: spec.tests.length }, 'took shard');
    let outcome: ShardOutcome;
    try {
      // each attempt in its own directory: a dead agent's command may still be writing its JUnit XML
      outcome = await runShard(
        { ...spec, databaseUrl: urlFor(a.ctx, spec), workDir: path.join(spec.workDir, `attempt-${attempt}`) },
        { knownFeatures: a.features, ...(a.mapping ? { mapping: a.mapping } : {}), agent: name },
      );
    } catch (err) {
      outcome = couldNotRun(spec, name, err);
    } finally {
      a.inFlight.delete(job.id);
    }
    if (entry.released) return;
    await recordAndComplete(a, job, outcome, { ...at, attempt });
  } catch (err) {
    // the job goes back to the queue (pg-boss retries it, elsewhere or here)
    log.error({ ...at, err: redact((err as Error).message) }, 'shard failed on this agent: handed back to the queue');
    await boss.fail(SHARD_QUEUE, job.id, { message: `agent ${name}: ${redact((err as Error).message)}` }).catch(() => undefined);
  }
}

/** Takes the shard for this agent: its attempt number, or null when it was recorded already. */
async function claimShard(a: Agent, spec: ShardSpec): Promise<number | null> {
  const db = a.ctx.db.control;
  const claimed = await db<TestShardsRow>('test_shards')
    .where({ run_id: spec.runId, idx: spec.index })
    .whereNotIn('status', ['done', 'errored'])
    .update({ status: 'running', agent: a.name, started_at: db.fn.now(), attempts: db.raw('attempts + 1') })
    .returning<Pick<TestShardsRow, 'attempts'>[]>(['attempts']);
  const [row] = claimed;
  return row ? row.attempts : null;
}

/** The outcome of a shard the agent could not run at all. */
function couldNotRun(spec: ShardSpec, name: string, err: unknown): ShardOutcome {
  return {
    index: spec.index,
    status: 'errored',
    cases: [],
    retriedPassed: [],
    error: `shard ${spec.index}: the agent ${name} could not run it: ${redact((err as Error).message)}`,
    exitCode: null,
    durationMs: 0,
    outputTail: '',
    agent: name,
  };
}

/** Records the outcome (once: a shard retried elsewhere may have been recorded) and completes the job. */
async function recordAndComplete(
  a: Agent,
  job: PgBoss.JobWithMetadata<ShardSpec>,
  outcome: ShardOutcome,
  at: { runId: number; shard: number; job: string; attempt: number },
): Promise<void> {
  const recorded = await recordShardOutcome(a.ctx.db.control, job.data.runId, outcome);
  await a.boss.complete(SHARD_QUEUE, job.id, { status: outcome.status, recorded });
  const counts = {
    passed: outcome.cases.filter((c) => c.status === 'passed').length,
    failed: outcome.cases.filter((c) => c.status === 'failed' || c.status === 'errored').length,
  };
  if (recorded) {
    const error = outcome.error ? { error: outcome.error } : {};
    a.log.info({ ...at, status: outcome.status, ...counts, ms: outcome.durationMs, ...error }, 'finished shard');
  } else {
    a.log.warn(
      { ...at, status: outcome.status },
      'finished shard, but it was recorded already (retried elsewhere): this result is dropped',
    );
  }
}

/**
 * Stops taking shards and lets the running ones finish; past graceMs, hands them back to the queue and
 * kills their commands. Then stops pg-boss.
 */
async function stopAgent(a: Agent, slots: Promise<unknown>, graceMs: number): Promise<void> {
  a.stopping = true;
  for (const wake of [...a.sleepers]) wake();
  if (a.inFlight.size > 0) {
    const shards = [...a.inFlight.values()].map((e) => `${e.spec.runId}/${e.spec.index}`);
    a.log.info({ shards, graceMs }, 'stopping: letting the running shards finish');
  }
  let timer: NodeJS.Timeout | undefined;
  const graceOver = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), graceMs)));
  const done = await Promise.race([slots.then(() => true), graceOver]);
  clearTimeout(timer);
  if (!done) {
    await releaseInFlight(a);
    for (const pgid of commandGroups()) {
      killGroup(pgid, 'SIGTERM');
      setTimeout(() => killGroup(pgid, 'SIGKILL'), 2000).unref();
    }
    await slots;
  }
  await a.boss.stop({ graceful: false, close: true });
  a.log.info('agent stopped');
}

/** The shards still running here go back to the queue (and to pending): another agent runs them. */
async function releaseInFlight(a: Agent): Promise<void> {
  for (const [id, e] of a.inFlight) {
    e.released = true;
    await a.boss.fail(SHARD_QUEUE, id, { message: `released: agent ${a.name} stopped before the shard finished` }).catch(() => undefined);
    await a.ctx.db
      .control<TestShardsRow>('test_shards')
      .where({ run_id: e.spec.runId, idx: e.spec.index, agent: a.name, status: 'running' })
      .update({ status: 'pending' });
    a.log.warn({ runId: e.spec.runId, shard: e.spec.index }, 'released shard: another agent runs it');
  }
}
