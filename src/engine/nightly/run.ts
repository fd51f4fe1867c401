import { envByRole } from '../../config/load.js';
import type { NightlyRunsRow, PromotionsRow } from '../../db/rows.js';
import { firstRow, must } from '../kernel/must.js';
import { TributaryError } from '../../errors.js';
import { logger, redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { failpoint } from '../kernel/failpoints.js';
import { holdSessionLock, processName } from '../kernel/sessionLock.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { closeAbandonedTestRuns, runTests } from '../tiers/index.js';
import { coverageGrowth, type Coverage } from './coverage.js';
import { nextWallTime } from '../kernel/schedule.js';
import { nightlySummary, previousNights, type NightlySummary } from './summary.js';

/**
 * One nightly run, exactly once per slot: a process takes the nightly advisory lock (session-level, on
 * its own connection, so a crashed process releases it and runs never overlap), then claims the slot
 * with an insert that the unique key (kind, slot) lets only one process make. A slot whose row says
 * `running` while this process holds the lock was left by a process that died: it is run again once.
 * The run is the tier-2 runners against master with every non-deprecated test (runTests, tier
 * `nightly`), then the summary; posting (by the bot) is claimed separately, also once.
 */
export type SlotKind = 'nightly' | 'prune-digest';
export type Trigger = 'schedule' | 'catch-up' | 'manual';

export const NIGHTLY_LOCK = 'tributary:nightly';

/** A `nightly_runs` row (src/db/rows.ts), its text and json columns narrowed to what the engine writes. */
export type SlotRow = Omit<NightlyRunsRow, 'kind' | 'trigger' | 'status' | 'summary'> & {
  kind: SlotKind;
  trigger: Trigger;
  status: 'running' | 'done' | 'failed';
  summary: NightlySummary | Record<string, unknown> | null;
};

export interface NightlyOutcome {
  row: SlotRow;
  summary?: NightlySummary;
  coverage?: Coverage;
}

export const me = processName;

/** The release whose plan splits new features from regression in a nightly run: the newest one in master. */
export async function newestMasterRelease(ctx: Ctx): Promise<string> {
  const rows: Pick<PromotionsRow, 'release'>[] = await ctx.db
    .control<PromotionsRow>('promotions')
    .groupBy('release')
    .select('release')
    .max('promoted_at as at')
    .orderBy('at', 'desc');
  const promoted = rows.find((r) => ctx.config.releases.has(r.release));
  if (promoted) return promoted.release;
  const plan = [...ctx.config.releases.keys()];
  return must(plan.at(-1), `a release in ${ctx.config.file} (releases)`);
}

/**
 * Runs `fn` holding the nightly lock (on a dedicated connection); `busy` when another process holds it.
 */
export async function withNightlyLock<T>(
  ctx: Ctx,
  fn: (lost: AbortSignal) => Promise<T>,
): Promise<{ busy: true } | { busy: false; value: T }> {
  const lock = await holdSessionLock(ctx.db.controlParams, NIGHTLY_LOCK, 'the nightly run');
  if (!lock) return { busy: true };
  try {
    return { busy: false, value: await fn(lock.lost) };
  } finally {
    await lock.release();
  }
}


/** Claims a slot for this process; null when another process has (or had) it. Call holding the lock. */
export async function claimSlot(ctx: Ctx, kind: SlotKind, slot: { key: string; at: Date }, trigger: Trigger): Promise<SlotRow | null> {
  const db = ctx.db.control;
  const [row] = (await db('nightly_runs')
    .insert({ kind, slot: slot.key, scheduled_for: slot.at, trigger, claimed_by: me() })
    .onConflict(['kind', 'slot'])
    .ignore()
    .returning('*')) as SlotRow[];
  if (row) {
    await closeInterrupted(ctx, row);
    return row;
  }
  const existing = (await db('nightly_runs').where({ kind, slot: slot.key }).first()) as SlotRow;
  if (existing.status !== 'running') return null;
  // we hold the lock: whoever marked it running is gone
  if (existing.attempts >= 2) {
    const [closed] = (await db('nightly_runs')
      .where({ id: existing.id, status: 'running', attempts: existing.attempts })
      .update({ status: 'failed', finished_at: db.fn.now(), error: `interrupted twice (last by ${existing.claimed_by})` })
      .returning('*')) as SlotRow[];
    // its dead test run is closed too, as on every other path
    if (closed) await closeInterrupted(ctx, closed);
    return null;
  }
  logger().warn({ slot: slot.key, kind, was: existing.claimed_by }, 'a slot was left running by a process that stopped: running it again');
  const [again] = (await db('nightly_runs')
    .where({ id: existing.id, status: 'running' })
    .update({ attempts: existing.attempts + 1, claimed_by: me(), trigger, started_at: db.fn.now() })
    .returning('*')) as SlotRow[];
  if (again) await closeInterrupted(ctx, again);
  return again ?? null;
}

/**
 * Holding the lock, nothing else runs: every other slot still `running` was left by a process that died
 * (an older night is not caught up: failed, superseded by this one), and so was every nightly test run
 * still `running` (nightly test runs only ever run under this lock): errored.
 */
async function closeInterrupted(ctx: Ctx, claimed: SlotRow): Promise<void> {
  const db = ctx.db.control;
  await db('nightly_runs')
    .where({ kind: claimed.kind, status: 'running' })
    .whereNot({ id: claimed.id })
    .update({
      status: 'failed',
      finished_at: db.fn.now(),
      error: `interrupted: the process running it stopped; superseded by ${claimed.slot}`,
    });
  if (claimed.kind !== 'nightly') return;
  // a process that lost the nightly lock but lives stops its test run (its shards killed): waited for,
  // so no two nightly runs ever test master at once
  const why = `interrupted: the process running it stopped (found by ${me()} running nightly ${claimed.slot})`;
  await closeAbandonedTestRuns(ctx, why, { tier: 'nightly', waitMs: OWNER_STOP_MS });
}

/** How long a process that lost the nightly lock is given to stop its test run before a new run is refused. */
const OWNER_STOP_MS = 30_000;

/** The slot's row, if a process ever claimed it. */
export async function slotRow(ctx: Ctx, kind: SlotKind, key: string): Promise<Pick<SlotRow, 'id' | 'status'> | undefined> {
  const row: Pick<SlotRow, 'id' | 'status'> | undefined = await ctx.db
    .control('nightly_runs')
    .where({ kind, slot: key })
    .first('id', 'status');
  return row;
}

/**
 * Whether a live process holds the nightly lock (it runs a slot): the session advisory lock of
 * withNightlyLock, seen in pg_locks (a 64-bit key is classid = its high half, objid = its low half).
 */
export async function nightlyLockHeld(ctx: Ctx): Promise<boolean> {
  const res = await ctx.db.control.raw<{ rows: { held: boolean }[] }>(
    `select exists (
       select 1 from pg_locks l
        where l.locktype = 'advisory' and l.granted and l.objsubid = 1
          and l.database = (select oid from pg_database where datname = current_database())
          and l.classid::bigint = ((hashtext(?)::bigint >> 32) & 4294967295)
          and l.objid::bigint = (hashtext(?)::bigint & 4294967295)
     ) as held`,
    [NIGHTLY_LOCK, NIGHTLY_LOCK],
  );
  return firstRow(res.rows, 'whether the nightly lock is held').held;
}

/** When the post of a run that falls due at `at` may go out: null = at once. */
export function postDueOf(ctx: Ctx, at: Date, now = new Date()): Date | null {
  const n = ctx.config.nightly;
  if (!n?.postAt) return null;
  const due = nextWallTime(n.postAt, n.timezone, at);
  return due.getTime() > now.getTime() ? due : null;
}

/** The slot remembers its test run as soon as it starts: a slot run again after a crash resumes from it. */
async function recordTestRun(ctx: Ctx, row: SlotRow, testRunId: number): Promise<void> {
  await ctx.db
    .control<NightlyRunsRow>('nightly_runs')
    .where({ id: row.id, claimed_by: row.claimed_by, attempts: row.attempts })
    .update({ test_run_id: testRunId });
}

/** The test run of a slot whose process died after its tests had finished (passed or failed): not run twice. */
async function finishedTestRun(ctx: Ctx, row: SlotRow): Promise<{ runId: number } | null> {
  if (!row.test_run_id) return null;
  const run = await ctx.db.control('test_runs').where({ id: row.test_run_id }).whereIn('status', ['passed', 'failed']).first('id');
  return run ? { runId: run.id as number } : null;
}

function lostSlot(row: SlotRow): TributaryError {
  return new TributaryError('gate_busy', `nightly slot ${row.slot} was taken over by another process (this one lost its lock)`);
}

/** Runs the nightly regression in a claimed slot, recording the outcome (done or failed) in the slot's row. */
export async function executeNightly(ctx: Ctx, row: SlotRow, actor: Actor, lost?: AbortSignal): Promise<NightlyOutcome> {
  const db = ctx.db.control;
  // every update of the slot is conditioned on this claim: a process that took the slot over (after this
  // one lost its lock) is never overwritten by it
  const mine = () => db('nightly_runs').where({ id: row.id, claimed_by: row.claimed_by, attempts: row.attempts });
  try {
    const release = await newestMasterRelease(ctx);
    await mine().update({ release });
    // compared with the previous scheduled night (a manual run never is one): the run's classes and its summary agree
    const env = envByRole(ctx.config, 'master');
    const [previous] = env ? await previousNights(db, env.name, null, 1) : [];
    await failpoint('nightly.after-claim');
    const testOpts = { tier: 'nightly' as const, actor, baselineRunId: previous?.id ?? null, ...(lost ? { signal: lost } : {}) };
    const onRun = (id: number) => recordTestRun(ctx, row, id);
    const report = (await finishedTestRun(ctx, row)) ?? (await runTests(ctx, release, { ...testOpts, onRun }));
    await failpoint('nightly.after-tests');
    lost?.throwIfAborted();
    const summary = await nightlySummary(db, ctx.config, report.runId);
    let coverage: Coverage | undefined;
    try {
      coverage = await coverageGrowth(ctx);
    } catch (err) {
      logger().warn({ err: redact((err as Error).message) }, 'nightly: coverage growth could not be computed');
    }
    const postDue = row.trigger === 'manual' ? null : postDueOf(ctx, new Date(row.scheduled_for));
    const [done] = (await mine()
      .update({ status: 'done', test_run_id: report.runId, summary: JSON.stringify(summary), finished_at: db.fn.now(), post_due: postDue })
      .returning('*')) as SlotRow[];
    if (!done) throw lostSlot(row);
    await recordAudit(db, {
      actor,
      action: 'nightly.finish',
      release,
      subject: `nightly ${row.slot}`,
      details: {
        trigger: row.trigger,
        testRunId: report.runId,
        passRate: summary.totals.passRate,
        total: summary.totals.total,
        newRegressions: summary.newRegressions.count,
        fixed: summary.fixed.count,
      },
    });
    return { row: done, summary, ...(coverage ? { coverage } : {}) };
  } catch (err) {
    const message = redact(err instanceof Error ? err.message : String(err));
    const [failed] = (await mine().update({ status: 'failed', error: message, finished_at: db.fn.now() }).returning('*')) as SlotRow[];
    if (!failed) {
      logger().error({ slot: row.slot }, 'nightly: the slot was taken over by another process: this run records nothing');
      return { row: { ...row, status: 'failed', error: message } };
    }
    const details = { trigger: row.trigger, error: message };
    await recordAudit(db, { actor, action: 'nightly.failed', subject: `nightly ${row.slot}`, details });
    return { row: failed };
  }
}

/** `tributary nightly --now`: one run at once, refused while another nightly run is in progress. */
export async function runNightlyNow(ctx: Ctx, actor: Actor): Promise<NightlyOutcome> {
  const now = new Date();
  const r = await withNightlyLock(ctx, async (lost) => {
    // a manual run whose process died after its tests finished is taken up, not run again
    const interrupted = (await ctx.db
      .control('nightly_runs')
      .where({ kind: 'nightly', trigger: 'manual', status: 'running' })
      .whereNotNull('test_run_id')
      .orderBy('id', 'desc')
      .first()) as SlotRow | undefined;
    const resume = interrupted && (await finishedTestRun(ctx, interrupted)) ? interrupted : undefined;
    const slot = resume
      ? { key: resume.slot, at: new Date(resume.scheduled_for) }
      : { key: `manual:${now.toISOString()}:${me()}`, at: now };
    const row = await claimSlot(ctx, 'nightly', slot, 'manual');
    if (!row) throw new TributaryError('gate_busy', 'a nightly run was already started at this instant');
    return executeNightly(ctx, row, actor, lost);
  });
  if (r.busy) {
    const running: Pick<NightlyRunsRow, 'slot' | 'claimed_by' | 'started_at'> | undefined = await ctx.db
      .control<NightlyRunsRow>('nightly_runs')
      .where({ status: 'running' })
      .orderBy('id', 'desc')
      .first('slot', 'claimed_by', 'started_at');
    const who = running ? ` (${running.slot}, by ${running.claimed_by} since ${new Date(running.started_at).toISOString()})` : '';
    throw new TributaryError('gate_busy', `a nightly run is in progress${who}: runs never overlap; try again when it is done`);
  }
  return r.value;
}

/** Claims the post of a finished run (once, whichever process gets there first); null when not due or taken. */
export async function claimPost(ctx: Ctx, id: number): Promise<SlotRow | null> {
  const db = ctx.db.control;
  const [row] = (await db('nightly_runs')
    .where({ id })
    .whereNull('posted_at')
    .whereIn('status', ['done', 'failed'])
    .where((q) => q.whereNull('post_due').orWhere('post_due', '<=', db.fn.now()))
    .update({ posted_at: db.fn.now() })
    .returning('*')) as SlotRow[];
  return row ?? null;
}

export async function unclaimPost(ctx: Ctx, id: number): Promise<void> {
  await ctx.db.control('nightly_runs').where({ id }).update({ posted_at: null });
}

/** Runs whose post has not gone out (scheduled ones finished in the last two days). */
export async function unposted(ctx: Ctx): Promise<SlotRow[]> {
  return (await ctx.db.control('nightly_runs')
    .whereNull('posted_at')
    .whereIn('status', ['done', 'failed'])
    .whereNot({ trigger: 'manual' })
    .where('finished_at', '>', ctx.db.control.raw("now() - interval '2 days'"))
    .orderBy('id')) as SlotRow[];
}

/**
 * The last nights, newest first (App Home). A night still `running` is `interrupted` when no live process
 * holds the nightly lock (its process died; the next scheduler tick or bot start runs it again).
 */
export async function recentNights(ctx: Ctx, n = 7): Promise<(SlotRow & { interrupted: boolean })[]> {
  const rows = (await ctx.db.control('nightly_runs').where({ kind: 'nightly' }).orderBy('id', 'desc').limit(n)) as SlotRow[];
  const live = rows.some((r) => r.status === 'running') ? await nightlyLockHeld(ctx) : false;
  return rows.map((r) => ({ ...r, interrupted: r.status === 'running' && !live }));
}

/** Where a night's coverage chart was written (the morning post and `tributary nightly --now` record it). */
export async function setChartPath(ctx: Ctx, id: number, file: string): Promise<void> {
  await ctx.db.control('nightly_runs').where({ id }).update({ chart_path: file });
}
