import { describe, expect, it } from 'vitest';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { applyDecision } from '../../src/engine/review/decide.js';
import { listConflicts } from '../../src/engine/review/queue.js';
import type { ConflictRow } from '../../src/engine/review/index.js';
import type { Bot } from '../../src/slack/app.js';
import { ACTIONS, BLOCKS, OPTIONS } from '../../src/slack/ids.js';
import { messagesAbout } from '../../src/slack/messages.js';
import { finalRows, insertAccounts, insertTransactions, insertUsers, testEnv, type TestEnv } from '../helpers.js';
import type { FakeSlack } from './fake-slack.js';
import { slackScaffold } from './scaffold.js';
import { Transcript, type Posted } from './transcript.js';

/**
 * A reference conflict decided from Slack (issue 20, point 5) and cards that follow a decision taken
 * elsewhere (point 7), each rendered into a committed transcript (test/slack/transcripts/repoint.txt,
 * cards-follow.txt) and asserted point by point. Its own world: a transaction whose account was re-keyed,
 * whose currency differs from one candidate account's.
 */
let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;

type Blocks = { type: string; elements?: { action_id: string }[] }[];

slackScaffold(
  {
    env: () => testEnv(3, { slack: { reviewChannel: 'C_REVIEW' }, roles: { reviewer: ['U0REV', 'U0REV2'], qa_lead: ['U0LEAD'], release_manager: ['U0RM'] } }),
    prepare: async (e) => {
      // account 50 is two different accounts in ST-1 and ST-2 (one is re-keyed); ST-3 has none: the
      // transaction of ST-3 that points at 50 is a dangling reference
      await insertAccounts(e, 'st1', [{ id: 50, number: 'AC-1', user_id: null, currency: 'USD' }]);
      await insertAccounts(e, 'st2', [{ id: 50, number: 'AC-2', user_id: null, currency: 'EUR' }, { id: 51, number: 'AC-5', user_id: null, currency: 'EUR' }]);
      await insertAccounts(e, 'st3', [{ id: 60, number: 'AC-3', user_id: null, currency: 'USD' }]);
      await insertTransactions(e, 'st3', [{ id: 40, account_id: 50, currency: 'USD' }]);
      // a core conflict (dana's role), decided in the CLI while its cards are out
      await insertUsers(e, 'st1', [{ id: 1, email: 'dana@x', role: 'Administrator', feature: 'FEAT-C' }]);
      await insertUsers(e, 'st2', [{ id: 2, email: 'dana@x', role: 'Customer', feature: 'FEAT-M' }]);
      await tagRelease(e.ctx, 'R2', { actor: 'cli:test' });
      await consolidate(e.ctx, 'R2', { actor: 'cli:test' });
    },
    bot: { progressIntervalMs: 3_600_000 },
  },
  (s) => ({ env, fake, bot, url } = s),
);

const conflictOf = async (kind: string): Promise<ConflictRow> => {
  const c = (await listConflicts(env.ctx, 'R2', { status: 'all' })).find((x) => x.kind === kind);
  if (!c) throw new Error(`expected a ${kind} conflict`);
  return c;
};
const actions = (m: { blocks?: unknown }) => ((m.blocks ?? []) as Blocks).filter((b) => b.type === 'actions').flatMap((b) => b.elements ?? []);
const picked = (key: string) => ({ action_id: OPTIONS.repointTargets, type: 'external_select', selected_option: { text: { type: 'plain_text', text: key }, value: key } });
const ticked = { type: 'checkboxes', selected_options: [{ text: { type: 'plain_text', text: 'Re-point even if …' }, value: 'confirm' }] };

describe('reference and card-follow transcripts', () => {
  it('re-point: the reference in both forms, the parents offered by the bot, a contradicting parent warned, then recorded', async () => {
    const t = new Transcript('repoint', fake, bot, url, 'a dangling reference re-pointed from its card, after re-keying');
    await t.slash('U0LEAD', 'review R2');
    const ref = await conflictOf('dangling-reference');
    const card: Posted = t.message('C_REVIEW', `${ref.code} `);
    // point 5: the reference as the record holds it and as the env's key map reads it (the account was re-keyed)
    expect(Transcript.text(card.call)).toContain("the record holds account_id = 50; collected as 50 in ST-3, ST-3's key map has no accounts 50");
    expect(actions(card.call).map((b) => b.action_id)).toContain(ACTIONS.repoint);

    await t.press('U0REV', card, ACTIONS.repoint);
    const modal = t.modalOf('U0REV');
    const select = (modal.blocks as { block_id?: string; element?: { type: string; action_id: string } }[]).find((b) => b.block_id === BLOCKS.repointTo);
    expect(select?.element).toMatchObject({ type: 'external_select', action_id: OPTIONS.repointTargets });
    expect(JSON.stringify(modal.blocks)).toContain('collected as 50 in ST-3');
    expect(modal.blocks?.some((b) => (b as { block_id?: string }).block_id === BLOCKS.repointConfirm)).toBe(true);

    // Slack asks the bot for the select's options: answered within its 3 s, ST-3's own account first
    const offered = await t.suggest('U0REV', BLOCKS.repointTo, OPTIONS.repointTargets, '');
    expect(offered.ms).toBeLessThan(3000);
    expect(offered.options.length).toBeGreaterThan(1);
    expect(offered.options.length).toBeLessThanOrEqual(100);
    expect(offered.options[0]!.value).toBe('60');
    expect(offered.options[0]!.text.text).toContain('ST-3');
    expect(offered.options.map((o) => o.value)).toContain('51');
    // typing narrows the list to the keys that contain it
    const typed = await t.suggest('U0REV', BLOCKS.repointTo, OPTIONS.repointTargets, '51');
    expect(typed.options.map((o) => o.value)).toEqual(['51']);

    // the EUR account contradicts the USD transaction: warned on the form, nothing recorded
    const warned = JSON.parse(await t.submit('U0REV', { [BLOCKS.repointTo]: picked('51'), [BLOCKS.rationale]: 'the EUR account is meant' }, 'account 51, "the EUR account is meant"')) as { response_action: string; errors: Record<string, string> };
    expect(warned.response_action).toBe('errors');
    expect(warned.errors[BLOCKS.repointTo]).toContain('transactions 40 has currency "USD", but accounts 51 has currency "EUR"');
    expect(await env.db.control('decisions').where({ conflict_id: ref.id })).toHaveLength(0);
    expect(actions(t.message('C_REVIEW', `${ref.code} `).call).length).toBeGreaterThan(0);

    // confirmed: recorded, and the card shows it decided, its buttons gone
    expect(await t.submit('U0REV', { [BLOCKS.repointTo]: picked('51'), [BLOCKS.repointConfirm]: ticked, [BLOCKS.rationale]: 'the EUR account is meant' }, 'account 51 again, "Re-point even if …" ticked')).toBe('');
    const d = await env.db.control('decisions').where({ conflict_id: ref.id }).first();
    expect([d.action, d.params, d.decided_by]).toEqual(['repoint', { action: 'repoint', to: '51' }, 'U0REV']);
    const tx = (await finalRows(env, 'transactions')).find((r) => r.pk === '40');
    expect(String((tx?.data as { account_id: unknown }).account_id)).toBe('51');
    const decided = t.message('C_REVIEW', `${ref.code} decided`);
    expect(decided.n).toBe(card.n);
    expect(Transcript.text(decided.call)).toContain('re-pointed account_id to 51');
    expect(JSON.stringify(decided.call.blocks)).toContain('*Decided* by <@U0REV>');
    expect(actions(decided.call)).toEqual([]);
    t.check();
  });

  it('cards follow: a decision taken in the CLI updates the card in every channel and the queue summary; a click on an old copy changes nothing', async () => {
    const t = new Transcript('cards-follow', fake, bot, url, 'a conflict decided in the CLI while its cards are out');
    const core = await conflictOf('core-conflict');
    t.note('(the cards of R2 are posted to a second channel too, #C_SECOND)');
    await bot.deps.cards.postCards('R2', 'C_SECOND');
    await t.settle();
    const cards = await messagesAbout(env.db.control, 'conflict', core.id);
    expect(cards.map((x) => x.channel).sort()).toEqual(['C_REVIEW', 'C_SECOND']);
    const before = t.message('C_REVIEW', `${core.code} `);
    const stale = { ...before, call: { ...before.call } };
    const summariesBefore = t.posted('C_REVIEW').filter((m) => String(m.call.text).startsWith('Review queue')).length + t.posted('C_SECOND').filter((m) => String(m.call.text).startsWith('Review queue')).length;

    t.note(`alice in a terminal: tributary decide ${core.code} --release R2 --keep 1 --rationale "the admin role is what FEAT-C tests" --as alice`);
    await applyDecision(env.ctx, 'R2', core.code, { action: 'keep', version: 1 }, { actor: 'cli:alice', rationale: 'the admin role is what FEAT-C tests' });
    t.note('(the bot follows the audit trail: one pass)');
    const from = fake.calls.length;
    await bot.deps.cards.catchUp();
    await t.settle();
    // point 7: the card in each channel is updated in place (decided, no buttons), and each queue summary
    const updates = t.of('chat.update', from);
    for (const channel of ['C_REVIEW', 'C_SECOND']) {
      const card = t.message(channel, `${core.code} `);
      expect(updates.some((u) => u.channel === channel && u.ts === card.ts)).toBe(true);
      expect(JSON.stringify(card.call.blocks)).toContain('*Decided* by cli:alice');
      expect(Transcript.text(card.call)).toContain('the admin role is what FEAT-C tests');
      expect(actions(card.call)).toEqual([]);
    }
    const summaries = await messagesAbout(env.db.control, 'summary', core.run_id);
    expect(summaries.length).toBeGreaterThan(0);
    expect(summaries.length).toBe(summariesBefore);
    for (const s of summaries) expect(updates.some((u) => u.channel === s.channel && u.ts === s.ts && String(u.text).startsWith('Review queue'))).toBe(true);
    expect(Transcript.text(t.message('C_REVIEW', 'Review queue').call)).toContain('decided 2 of 2');
    // a second pass finds nothing new
    const again = fake.calls.length;
    await bot.deps.cards.catchUp();
    await t.settle();
    expect(t.of('chat.update', again)).toHaveLength(0);

    // a click on a copy of the card taken before the update: the current state, nothing changed, no modal
    const decisions = await env.db.control('decisions').count<{ count: string }[]>({ count: '*' });
    const opened = t.of('views.open').length;
    await t.press('U0REV2', stale, `${ACTIONS.keepPrefix}2`);
    expect(t.of('views.open')).toHaveLength(opened);
    expect(JSON.stringify(t.toldTo('U0REV2').at(-1)!.blocks ?? t.toldTo('U0REV2').at(-1)!.text)).toContain(`${core.code} was already decided by cli:alice: kept version 1 (ST-1); the card is refreshed.`);
    expect(await env.db.control('decisions').count<{ count: string }[]>({ count: '*' })).toEqual(decisions);
    expect((await env.db.control('conflicts').where({ id: core.id }).first()).decided_by).toBe('cli:alice');
    t.check();
  });
});
