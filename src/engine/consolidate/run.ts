import os from 'node:os';
import { envOrThrow, releaseOrThrow } from '../../config/load.js';
import { tableExists } from '../kernel/checksum.js';
import { TributaryError } from '../../errors.js';
import { logger, redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { failpoint } from '../kernel/failpoints.js';
import { holdSessionLock } from '../kernel/sessionLock.js';
import { collectRelease, startCollector, type Collected, type CollectedEnv, type Collector } from './collect.js';
import { keyLabelSql, workTable, runTables, sourcesSql } from '../kernel/workArea.js';
import { checkReachable, requireSources, type Actor, type Ctx } from '../kernel/context.js';
import { detectAndResolve, type DetectCounts, type ReferenceProblem } from './detect.js';
import { nextState, releaseState, transition } from '../kernel/lifecycle.js';
import { literal } from '../kernel/sql.js';
import { requireLocked, type LockRow } from '../gate/index.js';
import type { AutoResolutionsRow, RunsRow } from '../../db/rows.js';
import { type ConflictRow, applyDecision, autoResolutionDigest, type Decision, isAutoCode, reopenAutoResolution } from '../review/index.js';
import { recordAutoResolutions } from './autoResolutions.js';

export interface ConsolidateResult {
  runId: number;
  /** Decisions of the previous consolidation re-applied to unchanged conflicts, and conflicts re-opened. */
  carried: { carried: number; reopened: string[] };
  release: string;
  counts: DetectCounts;
  steps: Record<string, number>;
}

export type Progress = (step: string, info?: Record<string, unknown>) => void;
type Opts = { actor: Actor; progress?: Progress; env?: string };
type Only = { env: string; previousRunId: number };

/**
 * One consolidation of a release: gate (locked, no drift), collect, detect, resolve, queue.
 * Only one runs per release at a time (a session advisory lock held by this process: a second process
 * is refused, and a crashed one releases it). A failed run leaves nothing half-finished: its work
 * tables are dropped and the release keeps its previous result.
 */
export async function consolidate(ctx: Ctx, release: string, opts: Opts): Promise<ConsolidateResult> {
  releaseOrThrow(ctx.config, release);
  // the collection's process loads while the gate is checked and the run set up
  const collector = startCollector();
  try {
    return await consolidateWith(ctx, release, opts, collector);
  } finally {
    collector.dispose();
  }
}

/** One run of the consolidation, under the release's lock: what its steps need. */
interface RunPlan {
  release: string;
  runId: number;
  previousRunId: number | null;
  locks: Map<string, LockRow>;
  only: Only | undefined;
  collector: Collector;
  lost: AbortSignal;
  progress: Progress;
  actor: Actor;
}

async function consolidateWith(ctx: Ctx, release: string, opts: Opts, collector: Collector): Promise<ConsolidateResult> {
  const progress = opts.progress ?? (() => undefined);
  // the model (objection) loads with a consolidation, not with every CLI command (src/lazy.ts); before
  // the lock: loading holds the event loop, and the lock session's keep-alive with it
  const { Run } = await import('../../db/models.js');
  // the lock gate first: a release never locked is refused as not locked, naming what to lock
  const locks = await requireLocked(ctx, release, requireSources(ctx, release, 'consolidate'));
  const { state, currentRunId: previousRunId } = await releaseState(ctx.db.control, release);
  nextState(release, state, 'consolidate');
  const only = await onlyEnv(ctx, release, opts.env, previousRunId);
  await checkReachable(ctx, only ? ctx.config.sources.filter((e) => e.name === only.env) : ctx.config.sources);

  const lock = await holdSessionLock(ctx.db.controlParams, `tributary:consolidate:${release}`, `the consolidation of ${release}`);
  if (!lock) return refuseBusy(ctx, release, opts.actor);
  // a lost lock stops the collection at once (its child process killed); each step checks it on return
  const stopCollection = () => collector.dispose();
  lock.lost.addEventListener('abort', stopCollection);
  try {
    await closeAbandonedRuns(ctx, release);
    const run = await Run.query(ctx.db.control).insert({
      release,
      kind: 'consolidate',
      status: 'running',
      started_by: opts.actor,
      pid: process.pid,
      host: os.hostname(),
    });
    const runId = run.id;
    await recordAudit(ctx.db.control, { actor: opts.actor, action: 'consolidate.start', release, subject: `run #${runId}` });
    await failpoint('consolidate.after-start');
    const plan: RunPlan = { release, runId, previousRunId, locks, only, collector, lost: lock.lost, progress, actor: opts.actor };
    try {
      return await runSteps(ctx, plan);
    } catch (err) {
      await failRun(ctx, plan, err);
      throw err;
    }
  } finally {
    lock.lost.removeEventListener('abort', stopCollection);
    await lock.release();
  }
}

/** `--env`: the one source env to collect again, on top of the release's previous run (which must exist). */
async function onlyEnv(ctx: Ctx, release: string, envName: string | undefined, previousRunId: number | null): Promise<Only | undefined> {
  if (!envName) return undefined;
  const env = envOrThrow(ctx.config, envName);
  if (env.role !== 'source') {
    throw new TributaryError('usage', `env ${envName} is a ${env.role} env; --env re-collects one source (ST) env`);
  }
  if (!previousRunId || !(await tableExists(ctx.db.control, 'work', `r${previousRunId}_records`))) {
    const message =
      `release ${release} has no earlier consolidation to build on: ` + `run tributary consolidate ${release} without --env first`;
    throw new TributaryError('gate_state', message, { release });
  }
  return { env: env.name, previousRunId };
}

/** Another process holds the release's lock: audited and refused, naming the run in progress. */
async function refuseBusy(ctx: Ctx, release: string, actor: Actor): Promise<never> {
  const running: Pick<RunsRow, 'id' | 'started_by' | 'started_at'> | undefined = await ctx.db
    .control<RunsRow>('runs')
    .where({ release, kind: 'consolidate', status: 'running' })
    .orderBy('id', 'desc')
    .first();
  const details = { reason: 'busy', runningRun: running?.id };
  await recordAudit(ctx.db.control, { actor, action: 'gate.consolidate.refused', release, details });
  const which = running
    ? ` (run #${running.id}, started by ${running.started_by} at ${new Date(running.started_at).toISOString()})`
    : '';
  throw new TributaryError('gate_busy', `a consolidation of ${release} is already running${which}; wait for it to finish`, { release });
}

/** Runs left 'running' by a process that died hold no lock any more: closed like a failed run. */
async function closeAbandonedRuns(ctx: Ctx, release: string): Promise<void> {
  const abandoned: Pick<RunsRow, 'id'>[] = await ctx.db
    .control<RunsRow>('runs')
    .where({ release, kind: 'consolidate', status: 'running' })
    .update({ status: 'failed', finished_at: ctx.db.control.fn.now(), error: 'abandoned: the process running it stopped' })
    .returning('id');
  for (const a of abandoned) {
    // closed like a failed run: no work tables, nothing of it left in the review queue
    await dropWorkTables(ctx, a.id);
    await ctx.db.control('conflicts').where({ run_id: a.id }).delete();
    await ctx.db.control('auto_resolutions').where({ run_id: a.id }).delete();
  }
}

/** The run's steps: collect → detect and resolve → queue → record the automatic resolutions → finish. */
async function runSteps(ctx: Ctx, r: RunPlan): Promise<ConsolidateResult> {
  const { release, runId, progress } = r;
  const steps: Record<string, number> = {};
  const collected = await collectStep(ctx, r, steps);
  const total = collected.envs.reduce((n, c) => n + c.rows, 0);
  progress('detect', { rows: total });
  const outcome = await detectAndResolve(ctx, runId, release, collected);
  steps.detection = outcome.timings.detection;
  steps.resolution = outcome.timings.resolution;
  await failpoint('consolidate.after-detect');
  r.lost.throwIfAborted();
  progress('queue', { conflicts: outcome.counts.manual });
  let t = performance.now();
  await queueConflicts(ctx, runId, release, outcome.references);
  steps.queue = Math.round(performance.now() - t);
  t = performance.now();
  await recordAutoResolutions(ctx, runId, release, outcome.counts.autoResolved);
  steps.record = Math.round(performance.now() - t);
  await failpoint('consolidate.after-queue');
  const counts = { ...outcome.counts, perEnv: Object.fromEntries(collected.envs.map((c) => [c.env, c.rows])) };
  await failpoint('consolidate.before-finish');
  const carried = await finishRun(ctx, r, steps, counts);
  await failpoint('consolidate.after-finish');
  return { runId, release, counts: outcome.counts, steps, carried };
}

/** Collects the release's rows from every source env (or the one of `--env`); none at all is refused. */
async function collectStep(ctx: Ctx, r: RunPlan, steps: Record<string, number>): Promise<Collected> {
  const { release, runId, progress } = r;
  const t = performance.now();
  progress('collect', { envs: ctx.config.sources.length });
  const onEnv = (c: CollectedEnv) => progress('collect', { env: c.env, rows: c.rows });
  const collected = await collectRelease(ctx, runId, release, r.locks, onEnv, r.only, r.collector);
  steps.collection = Math.round(performance.now() - t);
  await failpoint('consolidate.after-collect');
  r.lost.throwIfAborted();
  const total = collected.envs.reduce((n, c) => n + c.rows, 0);
  if (total === 0) {
    // rows locked and gone since are drift, not an empty release
    await collected.verify();
    const envs = ctx.config.sources.map((s) => s.name).join(', ');
    const message = `release ${release} has no rows in any ST env (${envs}): tag rows with release = '${release}' first`;
    throw new TributaryError('no_rows', message, { release });
  }
  return collected;
}

/**
 * The run becomes current together with the earlier decisions carried into it and the older runs' work
 * tables gone: a crash before the commit leaves the previous run current with its decisions.
 */
async function finishRun(
  ctx: Ctx,
  r: RunPlan,
  steps: Record<string, number>,
  counts: Record<string, unknown>,
): Promise<ConsolidateResult['carried']> {
  const { release, runId, previousRunId, actor } = r;
  return ctx.db.control.transaction(async (trx) => {
    // still this run's: a process that lost its lock finds its run closed by the one that took it
    r.lost.throwIfAborted();
    const mine = await trx('runs')
      .where({ id: runId, status: 'running' })
      .update({ status: 'succeeded', finished_at: trx.fn.now(), steps: JSON.stringify(steps), counts: JSON.stringify(counts) });
    if (!mine) {
      const message = `run #${runId} of ${release} lost its lock: another consolidation closed it; consolidate ${release} again`;
      throw new TributaryError('gate_busy', message, { release });
    }
    await transition(trx, release, 'consolidate', { currentRunId: runId });
    await recordAudit(trx, { actor, action: 'consolidate.finish', release, subject: `run #${runId}`, details: { counts, steps } });
    // one event vouches for every automatic resolution of the run (audit verify recomputes the digest)
    const digest = { ...(await autoResolutionDigest(trx, runId)) };
    await recordAudit(trx, { actor, action: 'consolidate.auto-resolutions', release, subject: `run #${runId}`, details: digest });
    const inTrx: Ctx = { ...ctx, db: { ...ctx.db, control: trx } };
    const result = previousRunId ? await carryDecisions(inTrx, release, previousRunId, runId) : { carried: 0, reopened: [] };
    await dropOlderRuns(inTrx, release, runId);
    await failpoint('consolidate.finish.before-commit');
    return result;
  });
}

/** A failed run leaves nothing half-finished: its work tables and queue gone, the run failed and audited. */
async function failRun(ctx: Ctx, r: RunPlan, err: unknown): Promise<void> {
  const { release, runId, actor } = r;
  const message = redact(err instanceof Error ? err.message : String(err));
  await dropWorkTables(ctx, runId).catch((e) => logger().warn({ err: String(e) }, 'could not drop work tables'));
  await ctx.db.control('conflicts').where({ run_id: runId }).delete();
  await ctx.db.control('auto_resolutions').where({ run_id: runId }).delete();
  await ctx.db.control('runs').where({ id: runId }).update({ status: 'failed', finished_at: ctx.db.control.fn.now(), error: message });
  const details = { error: message };
  await recordAudit(ctx.db.control, { actor, action: 'consolidate.failed', release, subject: `run #${runId}`, details });
}

export async function dropWorkTables(ctx: Ctx, runId: number): Promise<void> {
  const res = await ctx.db.control.raw<{ rows: { name: string }[] }>(
    `select tablename as name from pg_tables where schemaname = 'work' and tablename like ?`,
    [`r${runId}\\_%`],
  );
  for (const r of res.rows) await ctx.db.control.raw(`drop table if exists work."${r.name}"`);
}

/** Keeps the current run's work area and drops the work tables of the release's earlier runs. */
async function dropOlderRuns(ctx: Ctx, release: string, keep: number): Promise<void> {
  const older: Pick<RunsRow, 'id'>[] = await ctx.db
    .control<RunsRow>('runs')
    .where({ release, kind: 'consolidate' })
    .whereNot({ id: keep })
    .whereNot({ status: 'running' })
    .select('id');
  for (const r of older) await dropWorkTables(ctx, r.id);
}

/** Puts the complex conflicts of a run in the review queue: P1 first, ids C-001… in queue order. */
async function queueConflicts(ctx: Ctx, runId: number, release: string, refs: ReferenceProblem[]): Promise<void> {
  const k = ctx.db.control;
  const t = runTables(runId);
  const entityOrder = ctx.config.entities.map((e, i) => `(${literal(e.name)}, ${i})`).join(', ');
  const refsTable = workTable(runId, 'refs');
  await k.raw(
    `create unlogged table ${refsTable} as
       select * from unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[])
         as p(entity, identity, kind, col, parent, value, env, detail)`,
    [
      refs.map((r) => r.entity),
      refs.map((r) => r.identity),
      refs.map((r) => r.kind),
      refs.map((r) => r.column),
      refs.map((r) => r.parentEntity),
      refs.map((r) => r.value),
      refs.map((r) => r.env),
      refs.map((r) => r.detail),
    ],
  );
  await k.raw(
    `insert into conflicts (release, run_id, code, entity, identity, key_label, kind, priority, detail)
     with q as (
       select s.entity, s.identity, s.rule as kind, s.priority,
              jsonb_build_object(
                'reason', s.reason, 'differing', to_jsonb(s.differing), 'suggested', s.survivor,
                'suggestion', case when s.rule in ('equal-priority', 'inconsistent-identity') then 'keep-both' else 'keep' end,
                'versions', (select jsonb_agg(jsonb_build_object('no', v.version_no, 'envs', to_jsonb(v.envs), 'pks', to_jsonb(v.pks),
                                 'feature', v.feature, 'features', to_jsonb(v.features),
                                 'created_by', v.created_by, 'created_at', v.created_at,
                                 'ts', v.ts, 'data', o.data) order by v.version_no)
                               from ${t.versions} v join ${t.records} o on o.entity = v.entity and o.env = v.rep_env and o.pk = v.rep_pk
                              where v.entity = s.entity and v.identity = s.identity)) as detail
         from ${t.idsum} s where s.priority is not null
       union all
       select p.entity, p.identity, p.kind, 'P1',
              jsonb_build_object('reason', p.detail, 'column', p.col, 'parent', p.parent, 'value', p.value, 'env', p.env,
                                 'suggestion', case when p.kind = 'dangling-reference' then 'delete' else 'waive' end,
                                 'record', jsonb_build_object('data', r.data, 'env', r.rep_env, 'pk', r.pk,
                                                              'sources', ${sourcesSql(t, 'r')}))
         from ${refsTable} p join ${t.result} r on r.entity = p.entity and r.identity = p.identity
     )
     -- lpad truncates: past 999 conflicts every code of the run gets the width of the largest, so they stay unique and sort in queue order
     select ?, ?, 'C-' || lpad((row_number() over (order by q.priority, eo.ord, q.identity))::text,
                               greatest(3, length((count(*) over ())::text)), '0'),
            q.entity, q.identity,
            case q.entity ${ctx.config.entities.map((e) => `when ${literal(e.name)} then ${keyLabelSql(e, 'q.identity')}`).join(' ')} end,
            q.kind, q.priority, q.detail
       from q join (values ${entityOrder}) as eo(entity, ord) on eo.entity = q.entity`,
    [release, runId],
  );
  await k.raw(
    `update ${t.result} r set conflict = c.code from conflicts c where c.run_id = ? and r.entity = c.entity and r.identity = c.identity`,
    [runId],
  );
}

/** What makes two conflicts the same: the same records, with the same values, in the same envs. */
function signature(c: ConflictRow): string {
  if (c.detail.versions) return JSON.stringify(c.detail.versions.map((v) => ({ envs: v.envs, pks: v.pks, data: v.data })));
  return JSON.stringify({ column: c.detail.column, value: c.detail.value, env: c.detail.env, data: c.detail.record?.data });
}

/**
 * A re-consolidation keeps the decisions that still apply: a conflict of the new run whose records are
 * unchanged since a decided conflict of the previous run gets that decision again (same decider and
 * rationale, noted as carried over); a decided conflict whose records changed is open again, for review.
 */
type DecidedConflict = ConflictRow & { params: Decision; rationale: string; by: string };
type Carried = { carried: number; reopened: string[] };

async function carryDecisions(ctx: Ctx, release: string, previousRunId: number, runId: number): Promise<Carried> {
  const decided = (await ctx.db.control('conflicts as c')
    .join('decisions as d', 'd.conflict_id', 'c.id')
    .where('c.run_id', previousRunId)
    .select('c.*', 'd.params', 'd.rationale', 'd.decided_by as by')) as DecidedConflict[];
  if (decided.length === 0) return { carried: 0, reopened: [] };
  // overrules of automatic resolutions (A-…) are carried to the new run's resolution of the same identity
  const overrules = await carryOverrules(ctx, release, previousRunId, runId, decided.filter((p) => isAutoCode(p.code)));
  const byKey = new Map(decided.filter((p) => !isAutoCode(p.code)).map((p) => [`${p.entity}\u0000${p.identity}\u0000${p.kind}`, p]));
  const open = (await ctx.db.control('conflicts').where({ run_id: runId, status: 'open' }).orderBy('code')) as ConflictRow[];
  let carried = 0;
  const reopened: string[] = [];
  for (const c of open) {
    const p = byKey.get(`${c.entity}\u0000${c.identity}\u0000${c.kind}`);
    if (!p) continue;
    if (signature(p) !== signature(c)) {
      reopened.push(c.code);
      const details = { previous: p.code, previousRun: previousRunId, reason: 'the records changed since the decision' };
      await recordAudit(ctx.db.control, { actor: 'tributary', action: 'decision.reopened', release, subject: c.code, details });
      continue;
    }
    try {
      await applyDecision(ctx, release, c.code, p.params, { actor: p.by, rationale: carriedRationale(p, previousRunId) });
      carried += 1;
      await failpoint('consolidate.carry');
    } catch (err) {
      reopened.push(c.code);
      const details = { previous: p.code, previousRun: previousRunId, reason: redact((err as Error).message) };
      await recordAudit(ctx.db.control, { actor: 'tributary', action: 'decision.reopened', release, subject: c.code, details });
    }
  }
  return { carried: carried + overrules.carried, reopened: [...overrules.reopened, ...reopened] };
}

/** A carried decision's rationale: the original's, noted as carried over. */
function carriedRationale(p: DecidedConflict, previousRunId: number): string {
  return `${p.rationale} (carried over from ${p.code} of run #${previousRunId}: the records are unchanged)`;
}

/**
 * An overruled automatic resolution stays overruled while its records are unchanged: the new run's
 * resolution of the same identity is re-opened under its own code and decided again (same decider and
 * rationale, noted as carried over). When the records changed it is re-opened and left for review; when
 * no rule resolves the identity any more (it is a conflict for review, or no conflict at all), the
 * overrule lapses. Each is audited.
 */
async function carryOverrules(
  ctx: Ctx,
  release: string,
  previousRunId: number,
  runId: number,
  decided: DecidedConflict[],
): Promise<Carried> {
  let carried = 0;
  const reopened: string[] = [];
  const reopen = async (code: string, previous: string, reason: string) => {
    const details = { previous, previousRun: previousRunId, reason };
    await recordAudit(ctx.db.control, { actor: 'tributary', action: 'decision.reopened', release, subject: code, details });
  };
  for (const p of decided) {
    const now = (await ctx.db
      .control<AutoResolutionsRow>('auto_resolutions')
      .where({ run_id: runId, entity: p.entity, identity: p.identity })
      .first()) as (Omit<AutoResolutionsRow, 'detail'> & { detail: ConflictRow['detail'] }) | undefined;
    if (!now) {
      const lapsed = `the overrule of ${p.code} lapsed: no rule resolves ${p.entity} ${p.key_label} any more (its records changed)`;
      await reopen(p.code, p.code, lapsed);
      continue;
    }
    if (now.rule !== p.kind || signature(p) !== signature({ detail: now.detail } as ConflictRow)) {
      await ctx.db.control.transaction((trx) => reopenAutoResolution(ctx, trx, release, now.code));
      reopened.push(now.code);
      await reopen(now.code, p.code, 'the records changed since the overrule');
      continue;
    }
    try {
      await applyDecision(ctx, release, now.code, p.params, { actor: p.by, rationale: carriedRationale(p, previousRunId) });
      carried += 1;
    } catch (err) {
      await ctx.db.control.transaction((trx) => reopenAutoResolution(ctx, trx, release, now.code));
      reopened.push(now.code);
      await reopen(now.code, p.code, redact((err as Error).message));
    }
  }
  return { carried, reopened };
}
