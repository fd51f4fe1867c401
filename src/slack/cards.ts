import type { WebClient } from '@slack/web-api';
import PQueue from 'p-queue';
import type { Ctx } from '../engine/kernel/context.js';
import { getConflict, listConflicts, listPatterns, queueSummary, showConflict, type ConflictRow, decisionOf } from '../engine/review/index.js';
import { currentRunId } from '../engine/kernel/workArea.js';
import { conflictCard, decidedCard, queueSummaryMessage } from '../views/blocks.js';
import type { Message } from '../views/limits.js';
import { forgetMessage, messageAbout, messagesAbout, postedIn, recordMessage } from './messages.js';
import { slackError } from './slackErrors.js';
import { logger, redact } from '../log.js';

/**
 * Posting and refreshing conflict cards and queue summaries. Posts are paced under Slack's
 * rate limit with one queue per channel (chat.postMessage allows about one message per second per
 * channel); where each card went is stored, so a decision taken anywhere updates it in place.
 */
/** How long, and how many times, Slack accepts a response_url (an ephemeral card is updated through it). */
const RESPONSE_URL_MS = 30 * 60_000;
const RESPONSE_URL_USES = 5;

/** The audit events that change a conflict's card: a decision, and its undoing (from any adapter). */
const CARD_EVENTS = ['decision', 'decision.undone'];

export class CardService {
  private readonly queues = new Map<string, PQueue>();
  /** Ephemeral cards (seen on a click), by `release/code`: updated through their response_url while it is valid. */
  private readonly ephemeral = new Map<string, { url: string; until: number; uses: number }[]>();
  /** The newest audit event each refreshed card already shows (`release/code` → audit id). */
  private readonly shown = new Map<string, number>();
  private followed = 0;
  private timer?: NodeJS.Timeout;
  private following?: Promise<void>;

  constructor(
    private readonly ctx: Ctx,
    private readonly client: WebClient,
    private readonly intervalMs = 1100,
  ) {}

  private queue(channel: string): PQueue {
    let q = this.queues.get(channel);
    if (!q) {
      q = new PQueue({ concurrency: 1, interval: this.intervalMs, intervalCap: 1 });
      this.queues.set(channel, q);
    }
    return q;
  }

  async post(channel: string, m: Message): Promise<{ channel: string; ts: string }> {
    const res = await this.queue(channel).add(() => this.client.chat.postMessage({ channel, text: m.text, blocks: m.blocks }));
    return { channel: String(res!.channel ?? channel), ts: String(res!.ts) };
  }

  async update(channel: string, ts: string, m: Message): Promise<void> {
    await this.queue(channel).add(() => this.client.chat.update({ channel, ts, text: m.text, blocks: m.blocks }));
  }

  /** Renders a conflict's card as it is now: open with buttons, or decided without them. */
  async render(c: ConflictRow): Promise<Message> {
    if (c.status === 'decided') {
      const d = await decisionOf(this.ctx, c.id);
      if (d) return decidedCard(c, { decision: d.decision, by: d.by, at: d.at, rationale: d.rationale, blast: d.blast });
    }
    return conflictCard(c);
  }

  /** Posts the open conflicts of the release's current run that have no card in the channel yet, P1 first. */
  async postCards(release: string, channel: string, onPosted?: (n: number, of: number) => void | Promise<void>): Promise<number> {
    // a release not consolidated yet is refused before anything is posted
    await currentRunId(this.ctx, release);
    // the open conflicts: the consolidation's, and an open promotion's (cross-release conflicts)
    const open = await listConflicts(this.ctx, release, { status: 'open' });
    const posted = await postedIn(this.ctx.db.control, 'conflict', open.map((c) => c.id), channel);
    const todo = open.filter((c) => !posted.has(c.id));
    let n = 0;
    for (const c of todo) {
      const full = await showConflict(this.ctx, release, c.code);
      const where = await this.post(channel, await this.render(full));
      await recordMessage(this.ctx.db.control, 'conflict', c.id, where);
      n += 1;
      await onPosted?.(n, todo.length);
    }
    await this.postOrUpdateSummary(release, channel);
    return n;
  }

  async postOrUpdateSummary(release: string, channel: string): Promise<void> {
    const runId = await currentRunId(this.ctx, release);
    const m = await this.summary(release);
    const existing = await messageAbout(this.ctx.db.control, 'summary', runId, channel);
    if (existing) {
      try {
        return await this.update(existing.channel, existing.ts, m);
      } catch (err) {
        // someone deleted the summary in Slack: it is posted anew (and stored) instead of failing the review
        if (slackError(err) !== 'message_not_found') throw err;
        await forgetMessage(this.ctx.db.control, 'summary', runId, existing.channel);
      }
    }
    const where = await this.post(channel, m);
    await recordMessage(this.ctx.db.control, 'summary', runId, where);
  }

  /** An ephemeral card of a conflict, seen on a click: refreshed through its response_url while Slack accepts it. */
  rememberEphemeral(release: string, code: string, url: string): void {
    const key = `${release}/${code}`;
    const live = (this.ephemeral.get(key) ?? []).filter((e) => e.url !== url && e.until > Date.now());
    live.push({ url, until: Date.now() + RESPONSE_URL_MS, uses: 0 });
    this.ephemeral.set(key, live);
  }

  /** Replaces the conflict's ephemeral cards whose response_url is still valid; the others are forgotten. */
  private async updateEphemeral(key: string, m: Message): Promise<void> {
    const live = (this.ephemeral.get(key) ?? []).filter((e) => e.until > Date.now() && e.uses < RESPONSE_URL_USES);
    for (const e of live) {
      e.uses += 1;
      const res = await fetch(e.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ replace_original: true, text: m.text, blocks: m.blocks }),
      }).catch(() => undefined);
      if (!res?.ok) e.uses = RESPONSE_URL_USES;
    }
    const keep = live.filter((e) => e.uses < RESPONSE_URL_USES);
    if (keep.length > 0) this.ephemeral.set(key, keep);
    else this.ephemeral.delete(key);
  }

  /** Updates every card of a conflict (in channels, and ephemeral ones still reachable) and the release's queue summaries. */
  async refresh(release: string, code: string): Promise<void> {
    const key = `${release}/${code}`;
    // what happened up to now is shown by this refresh: the audit follower need not refresh it again
    this.shown.set(key, await this.newestAuditId());
    const c = await getConflict(this.ctx, release, code);
    const cards = await messagesAbout(this.ctx.db.control, 'conflict', c.id);
    if (cards.length > 0 || this.ephemeral.has(key)) {
      const m = await this.render(await showConflict(this.ctx, release, code));
      for (const card of cards) {
        try {
          await this.update(card.channel, card.ts, m);
        } catch (err) {
          // a card deleted in Slack is forgotten (the next /release review posts an open one anew); the others, and the summary, still follow
          if (slackError(err) !== 'message_not_found') throw err;
          await forgetMessage(this.ctx.db.control, 'conflict', c.id, card.channel);
        }
      }
      await this.updateEphemeral(key, m);
    }
    const summaries = await messagesAbout(this.ctx.db.control, 'summary', await currentRunId(this.ctx, release));
    // a summary deleted in Slack is posted anew
    for (const channel of new Set(summaries.map((s) => s.channel))) await this.postOrUpdateSummary(release, channel);
  }

  private async summary(release: string) {
    return queueSummaryMessage(await queueSummary(this.ctx, release), await listPatterns(this.ctx, release));
  }

  private async newestAuditId(): Promise<number> {
    const row = await this.ctx.db.control('audit_events').max<{ id: number | null }>('id as id').first();
    return Number(row?.id ?? 0);
  }

  /**
   * Follows the audit trail: a decision taken or undone anywhere (the CLI, another bot, a pattern) brings
   * the conflict's cards and the queue summaries up to date within `intervalMs`. Changes this service
   * already refreshed are not refreshed twice.
   */
  async follow(intervalMs: number): Promise<void> {
    this.followed = await this.newestAuditId();
    this.timer = setInterval(() => void this.catchUp(), intervalMs);
    this.timer.unref();
  }

  /** One pass of the follower (also called by tests): refreshes the cards of the decisions recorded since the last. */
  catchUp(): Promise<void> {
    this.following ??= this.readTrail().finally(() => (this.following = undefined));
    return this.following;
  }

  private async readTrail(): Promise<void> {
    try {
      const events = await this.ctx.db.control('audit_events')
        .where('id', '>', this.followed)
        .whereIn('action', CARD_EVENTS)
        .whereNotNull('release')
        .orderBy('id')
        .select('id', 'release', 'subject');
      for (const e of events as { id: number; release: string; subject: string | null }[]) {
        this.followed = Math.max(this.followed, Number(e.id));
        const key = `${e.release}/${e.subject ?? ''}`;
        if (!e.subject || (this.shown.get(key) ?? 0) >= Number(e.id)) continue;
        await this.refresh(e.release, e.subject).catch((err: unknown) => logger().info({ err: redact((err as Error).message), code: e.subject }, 'a followed decision has no card to refresh'));
      }
    } catch (err) {
      logger().warn({ err: redact((err as Error).message) }, 'could not follow the audit trail for card updates');
    }
  }

  /** Stops following the audit trail (the bot stops), after the pass in flight. */
  async unfollow(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.following;
  }

  async idle(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.onIdle()));
  }
}
