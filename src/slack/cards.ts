import type { WebClient } from '@slack/web-api';
import PQueue from 'p-queue';
import type { Ctx } from '../engine/kernel/context.js';
import { getConflict, listConflicts, listPatterns, queueSummary, showConflict, type ConflictRow, decisionOf } from '../engine/review/index.js';
import { currentRunId } from '../engine/kernel/workArea.js';
import { conflictCard, decidedCard, queueSummaryMessage } from '../views/blocks.js';
import type { Message } from '../views/limits.js';
import { forgetMessage, messageAbout, messagesAbout, postedIn, recordMessage } from './messages.js';
import { slackError } from './slackErrors.js';

/**
 * Posting and refreshing conflict cards and queue summaries. Posts are paced under Slack's
 * rate limit with one queue per channel (chat.postMessage allows about one message per second per
 * channel); where each card went is stored, so a decision taken anywhere updates it in place.
 */
export class CardService {
  private readonly queues = new Map<string, PQueue>();

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

  /** Updates every card of a conflict, and the release's queue summaries, to the current state. */
  async refresh(release: string, code: string): Promise<void> {
    const c = await getConflict(this.ctx, release, code);
    const cards = await messagesAbout(this.ctx.db.control, 'conflict', c.id);
    if (cards.length > 0) {
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
    }
    const summaries = await messagesAbout(this.ctx.db.control, 'summary', await currentRunId(this.ctx, release));
    // a summary deleted in Slack is posted anew
    for (const channel of new Set(summaries.map((s) => s.channel))) await this.postOrUpdateSummary(release, channel);
  }

  private async summary(release: string) {
    return queueSummaryMessage(await queueSummary(this.ctx, release), await listPatterns(this.ctx, release));
  }

  async idle(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.onIdle()));
  }
}
