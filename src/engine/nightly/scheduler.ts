import type { ScheduledTask } from 'node-cron';
import { nodeCron } from '../../config/cron.js';
import { logger, redact } from '../../log.js';
import type { Ctx } from '../kernel/context.js';
import { proposePruning, type PruneProposal } from './prune.js';
import {
  claimPost,
  claimSlot,
  executeNightly,
  slotRow,
  unclaimPost,
  unposted,
  withNightlyLock,
  type NightlyOutcome,
  type SlotKind,
  type SlotRow,
  type Trigger,
} from './run.js';
import { latestSlot, makeSchedule, nextSlot, type Schedule } from '../kernel/schedule.js';

/**
 * The bot's scheduler: node-cron fires the nightly schedule (and the weekly pruning digest) in the
 * configured time zone; each firing runs the newest slot due, once across every bot process on the
 * control database (the nightly lock and the slot's unique key, see ./run.ts). At start the newest slot
 * due is caught up once, if it was missed (not once per missed night; not on the very first start, when
 * no slot was ever recorded). A slot in a daylight-saving gap, which node-cron never fires, gets a timer.
 * A run is posted when done, or at `postAt`; posting is claimed once too.
 */
export interface SchedulerHooks {
  /** Posts a finished (or failed) nightly run to the channel. */
  postNightly(row: SlotRow): Promise<void>;
  /** Posts the pruning proposals of a digest to their owners. */
  postDigest(proposals: PruneProposal[]): Promise<void>;
}

export interface SchedulerOptions {
  /** Retry delay when another process's run holds the lock (default 30 s). */
  retryMs?: number;
}

const ACTOR = 'scheduler';

export class NightlyScheduler {
  private readonly tasks: ScheduledTask[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly schedules: Record<SlotKind, Schedule>;
  private stopped = false;
  private readonly gapTimers: Partial<Record<SlotKind, NodeJS.Timeout>> = {};

  constructor(
    private readonly ctx: Ctx,
    private readonly hooks: SchedulerHooks,
    private readonly opts: SchedulerOptions = {},
  ) {
    const n = ctx.config.nightly;
    if (!n) throw new Error('nightly is not configured');
    this.schedules = { nightly: makeSchedule(n.schedule, n.timezone), 'prune-digest': makeSchedule(n.pruneDigest, n.timezone) };
  }

  async start(): Promise<void> {
    const log = logger().child({ component: 'node-cron' });
    const cronLogger = {
      info: (m: string) => log.debug(m),
      warn: (m: string) => log.warn(m),
      error: (m: string | Error) => log.error(String(m)),
      debug: (m: string | Error) => log.debug(String(m)),
    };
    for (const kind of ['nightly', 'prune-digest'] as const) {
      const s = this.schedules[kind];
      const options = { name: `tributary:${kind}`, timezone: s.timezone, noOverlap: true, logger: cronLogger };
      const task = nodeCron().createTask(s.expression, () => this.track(this.tick(kind, 'schedule')), options);
      await task.start();
      this.tasks.push(task);
      this.armGap(kind);
    }
    const nightly = this.schedules.nightly;
    const next = nextSlot(nightly, new Date())?.key;
    logger().info({ schedule: nightly.expression, timezone: nightly.timezone, next }, 'nightly regression scheduled');
    // catch up what was missed while no bot ran, and posts that did not go out
    this.track(this.tick('nightly', 'catch-up'));
    this.track(this.tick('prune-digest', 'catch-up'));
    this.track(this.sweepPosts());
  }

  /**
   * Stops firing; waits up to `graceMs` for a run in progress (a slot left running is run again by the
   * next process that starts: its lock went with this process's connection).
   */
  async stop(graceMs = 25_000): Promise<void> {
    this.stopped = true;
    for (const t of this.tasks) await t.destroy();
    this.tasks.length = 0;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const deadline = Date.now() + graceMs;
    while (this.inflight.size > 0 && Date.now() < deadline) {
      await Promise.race([Promise.allSettled([...this.inflight]), new Promise((r) => setTimeout(r, 500))]);
    }
  }

  /** Resolves when nothing is running (tests). */
  async idle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  private track(p: Promise<unknown>): Promise<unknown> {
    this.inflight.add(p);
    void p
      .catch((err: unknown) => logger().error({ err: redact(String((err as Error)?.stack ?? err)) }, 'nightly scheduler error'))
      .finally(() => this.inflight.delete(p));
    return p;
  }

  private later(ms: number, fn: () => Promise<unknown>): NodeJS.Timeout | undefined {
    if (this.stopped) return undefined;
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.stopped) void this.track(fn());
    }, Math.max(0, Math.min(ms, 2 ** 31 - 1)));
    t.unref();
    this.timers.add(t);
    return t;
  }

  /** node-cron never fires for a slot in a daylight-saving gap: a timer does. */
  private armGap(kind: SlotKind): void {
    const old = this.gapTimers[kind];
    if (old) {
      clearTimeout(old);
      this.timers.delete(old);
    }
    const next = nextSlot(this.schedules[kind], new Date());
    this.gapTimers[kind] = next?.gap ? this.later(next.at.getTime() - Date.now(), () => this.tick(kind, 'schedule')) : undefined;
  }

  /** Runs the newest slot due, unless taken; returns what this process did. */
  async tick(kind: SlotKind, trigger: Exclude<Trigger, 'manual'>): Promise<'ran' | 'taken' | 'busy' | 'none'> {
    if (this.stopped) return 'none';
    const slot = latestSlot(this.schedules[kind], new Date());
    this.armGap(kind);
    if (!slot) return 'none';
    const existing = await slotRow(this.ctx, kind, slot.key);
    // done or failed: taken. Running: either a live process runs it (then the lock is busy, and we look
    // again later), or its process died (then we get the lock, and claimSlot runs it again, once)
    if (existing && existing.status !== 'running') return 'taken';
    if (!existing && trigger === 'catch-up') {
      // the very first start records no past slot: the schedule begins now
      const any = await this.ctx.db.control('nightly_runs').where({ kind }).whereNot({ trigger: 'manual' }).first('id');
      if (!any) return 'none';
    }
    const r = await withNightlyLock(this.ctx, async (lost) => {
      const row = await claimSlot(this.ctx, kind, slot, trigger);
      if (!row) return null;
      logger().info({ kind, slot: slot.key, trigger }, `${kind}: running slot`);
      if (kind === 'nightly') return executeNightly(this.ctx, row, ACTOR, lost);
      return this.digest(row);
    });
    if (r.busy) {
      // another process runs a slot: runs never overlap; look again later (the slot may be taken by then)
      this.later(this.opts.retryMs ?? 30_000, () => this.tick(kind, trigger));
      return 'busy';
    }
    if (!r.value) return 'taken';
    if (kind === 'nightly') await this.afterRun(r.value as NightlyOutcome);
    return 'ran';
  }

  private async digest(row: SlotRow): Promise<null> {
    const db = this.ctx.db.control;
    try {
      const proposals = await proposePruning(this.ctx, { digestId: row.id, actor: ACTOR });
      const summary = JSON.stringify({ proposals: proposals.map((p) => p.id) });
      await db('nightly_runs').where({ id: row.id }).update({ status: 'done', finished_at: db.fn.now(), summary, posted_at: db.fn.now() });
      if (proposals.length > 0) await this.hooks.postDigest(proposals);
    } catch (err) {
      const error = redact((err as Error).message);
      await db('nightly_runs').where({ id: row.id }).update({ status: 'failed', finished_at: db.fn.now(), error, posted_at: db.fn.now() });
      throw err;
    }
    return null;
  }

  private async afterRun(o: NightlyOutcome): Promise<void> {
    const postDue = o.row.post_due;
    const due = postDue ? new Date(postDue).getTime() - Date.now() : 0;
    if (postDue && due > 0) {
      logger().info({ slot: o.row.slot, postAt: new Date(postDue).toISOString() }, 'nightly: done; posting at the morning hour');
      this.later(due + 50, () => this.post(o.row.id));
      return;
    }
    await this.post(o.row.id);
  }

  private async post(id: number): Promise<void> {
    const row = await claimPost(this.ctx, id);
    if (!row) return;
    try {
      await this.hooks.postNightly(row);
    } catch (err) {
      await unclaimPost(this.ctx, id);
      const why = redact((err as Error).message);
      logger().error({ err: why, slot: row.slot }, 'nightly: the post failed; it is tried again at the next start');
    }
  }

  private async sweepPosts(): Promise<void> {
    for (const row of await unposted(this.ctx)) {
      if (row.kind !== 'nightly') continue;
      const due = row.post_due ? new Date(row.post_due).getTime() - Date.now() : 0;
      if (due > 0) this.later(due + 50, () => this.post(row.id));
      else await this.post(row.id);
    }
  }
}
