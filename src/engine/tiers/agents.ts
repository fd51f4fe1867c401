import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type PgBoss from 'pg-boss';
import type { ConnectionParams } from '../../db/connect.js';
import { TributaryError } from '../../errors.js';
import { lazy } from '../../lazy.js';
import { logger, redact } from '../../log.js';
import type { Ctx } from '../kernel/context.js';
import { loadMapping } from './junit.js';
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
    await boss.createQueue(SHARD_QUEUE, { name: SHARD_QUEUE, policy: 'standard', retryLimit: JOB_RETRY_LIMIT, retryDelay: RETRY_DELAY_SECONDS });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function failureText(output: unknown, expirySeconds: number): string {
  const o = output as { message?: unknown; value?: { message?: unknown } } | null | undefined;
  const msg = typeof o?.message === 'string' ? o.message : typeof o?.value?.message === 'string' ? o.value.message : output ? JSON.stringify(output) : 'no reason given';
  if (/failed by timeout/.test(msg)) return `the agent running it died or hung (no result within the job's expiry of ${expirySeconds} s)`;
  return redact(msg);
}

/**
 * Queues one job per shard and follows the run until every shard is done or errored; calls
 * onShardRecorded once per shard as it is recorded. The shards' rows must exist in test_shards.
 */
export async function dispatchToAgents(ctx: Ctx, runId: number, specs: ShardSpec[], onShardRecorded: (index: number) => Promise<void> | void): Promise<void> {
  const db = ctx.db.control;
  const log = logger().child({ runId });
  const waitMs = ctx.config.testing?.agentWaitMs ?? 600_000;
  if (specs.length === 0) return;
  const rows = await db('test_shards').where({ run_id: runId }).select('idx');
  const known = new Set(rows.map((r) => r.idx as number));
  const missing = specs.filter((s) => !known.has(s.index)).map((s) => s.index);
  if (missing.length > 0) throw new TributaryError('internal', `test run #${runId}: no test_shards row for shard(s) ${missing.join(', ')}`);

  const expiry = new Map(specs.map((s) => [s.index, jobExpirySeconds(s)]));
  const boss = newBoss(ctx.db.controlParams, { application_name: 'tributary-dispatch', maintenanceIntervalSeconds: maintenanceSeconds(Math.min(...expiry.values())) });
  const jobs = new Map<number, string>();
  const reported = new Set<number>();
  let finished = false;
  try {
    await startBoss(ctx, boss);
    for (const spec of specs) {
      // the env's password stays out of the queue: agents take it from their own config
      const id = await boss.send(SHARD_QUEUE, { ...spec, databaseUrl: withoutPassword(spec.databaseUrl) }, {
        retryLimit: JOB_RETRY_LIMIT,
        retryDelay: RETRY_DELAY_SECONDS,
        expireInSeconds: expiry.get(spec.index)!,
        singletonKey: shardJobKey(runId, spec.index),
      });
      if (!id) throw new TributaryError('runner_failed', `test run #${runId}: pg-boss did not accept the job of shard ${spec.index}`);
      jobs.set(spec.index, id);
    }
    log.info({ shards: specs.length, queue: SHARD_QUEUE }, 'shards queued for tributary agents');

    const errorShard = async (index: number, message: string) => {
      const row = await db('test_shards').where({ run_id: runId, idx: index }).first('agent');
      const outcome: ShardOutcome = { index, status: 'errored', cases: [], retriedPassed: [], error: message, exitCode: null, durationMs: 0, outputTail: '', agent: (row?.agent as string | null) ?? '(none)' };
      if (await recordShardOutcome(db, runId, outcome)) log.warn({ shard: index }, message);
    };

    let lastActivity = Date.now();
    let lastAttempts = -1;
    let lastJobCheck = 0;
    const completedSince = new Map<number, number>();
    for (;;) {
      const shards = await db('test_shards').where({ run_id: runId }).select('idx', 'status', 'attempts', 'agent');
      let attempts = 0;
      const agentOf = new Map<number, string | null>();
      for (const r of shards) {
        const idx = r.idx as number;
        if (!expiry.has(idx)) continue;
        attempts += r.attempts as number;
        agentOf.set(idx, r.agent as string | null);
        if ((r.status === 'done' || r.status === 'errored') && !reported.has(idx)) {
          reported.add(idx);
          lastActivity = Date.now();
          await onShardRecorded(idx);
        }
      }
      if (reported.size >= specs.length) break;
      if (attempts !== lastAttempts) {
        // an agent took a shard (or took one again)
        lastAttempts = attempts;
        lastActivity = Date.now();
      }

      if (Date.now() - lastJobCheck >= JOB_CHECK_MS) {
        lastJobCheck = Date.now();
        const open = specs.filter((s) => !reported.has(s.index));
        const states = await Promise.all(open.map(async (s) => ({ index: s.index, job: await boss.getJobById<ShardSpec>(SHARD_QUEUE, jobs.get(s.index)!, { includeArchive: true }) })));
        const now = Date.now();
        if (states.some((s) => s.job?.state === 'active')) lastActivity = now;
        for (const { index, job } of states) {
          if (!job) {
            await errorShard(index, `shard ${index}: its job disappeared from the pg-boss queue ${SHARD_QUEUE} (purged or deleted?)`);
          } else if (job.state === 'failed') {
            await errorShard(index, `shard ${index} failed on every attempt (${job.retryCount + 1}): ${failureText(job.output, expiry.get(index)!)}`);
          } else if (job.state === 'cancelled') {
            await errorShard(index, `shard ${index}: its job was cancelled in the pg-boss queue ${SHARD_QUEUE}`);
          } else if (job.state === 'completed') {
            const since = completedSince.get(index) ?? now;
            completedSince.set(index, since);
            if (now - since > COMPLETED_GRACE_MS) await errorShard(index, `shard ${index}: its job completed but no result was recorded`);
          }
        }
        const waiting = states.filter((s) => s.job && (s.job.state === 'created' || s.job.state === 'retry'));
        if (waiting.length > 0 && now - lastActivity > waitMs) {
          for (const { index, job } of waiting) {
            // an agent may take the job right now: only a job still waiting is cancelled and errored
            const res = (await boss.cancel(SHARD_QUEUE, job!.id)) as unknown as { affected?: number } | undefined;
            if (res && res.affected === 0) continue;
            const last = agentOf.get(index);
            await errorShard(
              index,
              `no agent picked shard ${index} within ${Math.round(waitMs / 1000)} s${last ? ` after its agent ${last} stopped answering` : ''}: is a \`tributary agent\` running against this control database? (testing.agentWaitSeconds)`,
            );
          }
        }
      }
      await sleep(POLL_MS);
    }
    finished = true;
    log.info({ shards: specs.length }, 'every shard recorded');
  } finally {
    if (!finished) {
      // the run is abandoned: agents must not pick up its shards later
      const open = specs.filter((s) => !reported.has(s.index) && jobs.has(s.index)).map((s) => jobs.get(s.index)!);
      if (open.length > 0) await boss.cancel(SHARD_QUEUE, open).catch((err: Error) => log.warn({ err: redact(err.message) }, 'could not cancel the open jobs'));
    }
    await boss.stop({ graceful: false, close: true }).catch((err: Error) => log.warn({ err: redact(err.message) }, 'pg-boss did not stop cleanly'));
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

/** Works the shard queue until stopped. Uses ctx.db.control; the caller closes the databases. */
export async function runAgent(ctx: Ctx, opts: AgentOptions = {}): Promise<AgentHandle> {
  const name = opts.name ?? `${os.hostname()}:${process.pid}`;
  const concurrency = Math.max(1, Math.floor(opts.concurrency ?? 1));
  const graceMs = opts.graceMs ?? 30_000;
  const log = logger().child({ agent: name });
  const db = ctx.db.control;
  const mappingFile = ctx.config.testing?.mapping;
  const mapping = mappingFile ? loadMapping(mappingFile) : undefined;
  const features = knownFeatures(ctx);
  const boss = newBoss(ctx.db.controlParams, { application_name: 'tributary-agent', max: concurrency + 2 });
  await startBoss(ctx, boss);

  let stopping = false;
  const sleepers = new Set<() => void>();
  const idle = (ms: number) =>
    new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      sleepers.add(done);
    });
  const inFlight = new Map<string, InFlight>();

  /** The env's URL from this agent's config (which holds the password); the job's URL has none. */
  const urlFor = (spec: ShardSpec): string => {
    const env = ctx.config.envs.get(spec.env);
    return env ? databaseUrl(teamConnection(ctx, env), env.schema) : spec.databaseUrl;
  };

  const handle = async (job: PgBoss.JobWithMetadata<ShardSpec>): Promise<void> => {
    const spec = job.data;
    const at = { runId: spec.runId, shard: spec.index, job: job.id };
    try {
      const claimed = (await db('test_shards')
        .where({ run_id: spec.runId, idx: spec.index })
        .whereNotIn('status', ['done', 'errored'])
        .update({ status: 'running', agent: name, started_at: db.fn.now(), attempts: db.raw('attempts + 1') })
        .returning(['attempts'])) as { attempts: number }[];
      if (claimed.length === 0) {
        await boss.complete(SHARD_QUEUE, job.id, { skipped: 'shard recorded already' });
        log.info(at, 'shard recorded already: job completed without running it');
        return;
      }
      const attempt = claimed[0]!.attempts;
      const entry: InFlight = { spec, released: false };
      inFlight.set(job.id, entry);
      log.info({ ...at, attempt, tests: spec.tests.length }, 'took shard');
      let outcome: ShardOutcome;
      try {
        // each attempt in its own directory: a dead agent's command may still be writing its JUnit XML
        outcome = await runShard(
          { ...spec, databaseUrl: urlFor(spec), workDir: path.join(spec.workDir, `attempt-${attempt}`) },
          { knownFeatures: features, ...(mapping ? { mapping } : {}), agent: name },
        );
      } catch (err) {
        outcome = { index: spec.index, status: 'errored', cases: [], retriedPassed: [], error: `shard ${spec.index}: the agent ${name} could not run it: ${redact((err as Error).message)}`, exitCode: null, durationMs: 0, outputTail: '', agent: name };
      } finally {
        inFlight.delete(job.id);
      }
      if (entry.released) return;
      const recorded = await recordShardOutcome(db, spec.runId, outcome);
      await boss.complete(SHARD_QUEUE, job.id, { status: outcome.status, recorded });
      const counts = { passed: outcome.cases.filter((c) => c.status === 'passed').length, failed: outcome.cases.filter((c) => c.status === 'failed' || c.status === 'errored').length };
      if (recorded) log.info({ ...at, attempt, status: outcome.status, ...counts, ms: outcome.durationMs, ...(outcome.error ? { error: outcome.error } : {}) }, 'finished shard');
      else log.warn({ ...at, attempt, status: outcome.status }, 'finished shard, but it was recorded already (retried elsewhere): this result is dropped');
    } catch (err) {
      // the job goes back to the queue (pg-boss retries it, elsewhere or here)
      log.error({ ...at, err: redact((err as Error).message) }, 'shard failed on this agent: handed back to the queue');
      await boss.fail(SHARD_QUEUE, job.id, { message: `agent ${name}: ${redact((err as Error).message)}` }).catch(() => undefined);
    }
  };

  const slot = async (): Promise<void> => {
    while (!stopping) {
      let job: PgBoss.JobWithMetadata<ShardSpec> | undefined;
      try {
        [job] = await boss.fetch<ShardSpec>(SHARD_QUEUE, { batchSize: 1, includeMetadata: true });
      } catch (err) {
        log.warn({ err: redact((err as Error).message) }, 'could not fetch from the queue');
      }
      if (!job) {
        await idle(AGENT_POLL_MS);
        continue;
      }
      await handle(job);
    }
  };
  const slots = Promise.all(Array.from({ length: concurrency }, () => slot()));
  log.info({ concurrency, queue: SHARD_QUEUE }, 'agent started: waiting for shards');

  const stopAll = async (): Promise<void> => {
    stopping = true;
    for (const wake of [...sleepers]) wake();
    if (inFlight.size > 0) log.info({ shards: [...inFlight.values()].map((e) => `${e.spec.runId}/${e.spec.index}`), graceMs }, 'stopping: letting the running shards finish');
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([slots.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), graceMs)))]);
    clearTimeout(timer);
    if (!done) {
      for (const [id, e] of inFlight) {
        e.released = true;
        await boss.fail(SHARD_QUEUE, id, { message: `released: agent ${name} stopped before the shard finished` }).catch(() => undefined);
        await db('test_shards').where({ run_id: e.spec.runId, idx: e.spec.index, agent: name, status: 'running' }).update({ status: 'pending' });
        log.warn({ runId: e.spec.runId, shard: e.spec.index }, 'released shard: another agent runs it');
      }
      for (const pgid of commandGroups()) {
        killGroup(pgid, 'SIGTERM');
        setTimeout(() => killGroup(pgid, 'SIGKILL'), 2000).unref();
      }
      await slots;
    }
    await boss.stop({ graceful: false, close: true });
    log.info('agent stopped');
  };
  let stopped: Promise<void> | undefined;
  return { name, stop: () => (stopped ??= stopAll()) };
}
