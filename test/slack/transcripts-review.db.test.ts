import { describe, expect, it } from 'vitest';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { listConflicts } from '../../src/engine/review/queue.js';
import type { ConflictRow } from '../../src/engine/review/index.js';
import type { Bot } from '../../src/slack/app.js';
import { ACTIONS, BLOCKS } from '../../src/slack/ids.js';
import { insertAccounts, insertTransactions, insertUsers, testEnv, type TestEnv } from '../helpers.js';
import type { FakeSlack } from './fake-slack.js';
import { slackScaffold } from './scaffold.js';
import { Transcript, type Posted } from './transcript.js';

/**
 * The review flows as people live them in Slack, each rendered into a committed transcript
 * (test/slack/transcripts/review-*.txt) and asserted point by point (issue 20): the race of two
 * reviewers on one conflict, Review next, a waived reference conflict, and what Slack's refusals say.
 */
let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;

type Blocks = { type: string; elements?: { action_id: string; text: { text: string }; style?: string }[] }[];

slackScaffold(
  {
    env: () => testEnv(3, { slack: { reviewChannel: 'C_REVIEW' }, roles: { reviewer: ['U0REV', 'U0REV2'], qa_lead: ['U0LEAD'], release_manager: ['U0RM'] } }),
    prepare: async (e) => {
      await insertUsers(e, 'st1', [{ id: 1, email: 'dana@x', role: 'Administrator', feature: 'FEAT-C' }]);
      await insertUsers(e, 'st2', [{ id: 2, email: 'dana@x', role: 'Customer', feature: 'FEAT-M' }]);
      await insertAccounts(e, 'st1', [{ id: 11, number: 'AC-D1', user_id: 1 }]);
      await insertTransactions(e, 'st1', [{ id: 40, account_id: 999 }]);
      await insertAccounts(e, 'st1', [{ id: 50, number: 'M-1', user_id: null, balance: '1500.00', feature: 'FEAT-H1' }]);
      await insertAccounts(e, 'st2', [{ id: 50, number: 'M-1', user_id: null, balance: '2750.00', feature: 'FEAT-H2' }]);
      await tagRelease(e.ctx, 'R2', { actor: 'cli:test' });
      await consolidate(e.ctx, 'R2', { actor: 'cli:test' });
    },
    bot: { progressIntervalMs: 3_600_000 },
  },
  (s) => ({ env, fake, bot, url } = s),
);

const conflicts = async (): Promise<ConflictRow[]> => listConflicts(env.ctx, 'R2');
const buttons = (m: { blocks?: unknown }) => ((m.blocks ?? []) as Blocks).flatMap((b) => b.elements ?? []).filter((e) => e.action_id);

/** Point 1: the primary button, the "suggested" mark and the suggestion text agree, whatever the suggestion's kind. */
function expectSuggestionAgrees(card: { blocks?: unknown }, c: ConflictRow): void {
  const text = Transcript.text(card as Record<string, unknown>);
  const primary = buttons(card).filter((b) => b.style === 'primary').map((b) => b.text.text);
  const marked = [...text.matchAll(/\*Version (\d+) · ([^*]+)\* · _suggested_/g)].map((m) => m[2]);
  expect(text).toContain(`:bulb: *Suggested:* ${c.detail.reason}`);
  switch (c.detail.suggestion) {
    case 'keep': {
      const v = c.detail.versions!.find((x) => x.no === c.detail.suggested)!;
      expect(primary).toEqual([`Keep ${v.envs.join(', ')}`]);
      expect(marked).toEqual([v.envs.join(', ')]);
      expect(c.detail.reason).toContain(`keep ${v.envs.join(', ')}`);
      break;
    }
    case 'keep-both':
      expect(primary).toEqual(['Keep both (rename)']);
      expect(marked).toEqual([]);
      break;
    case 'delete':
      expect(primary).toEqual([c.detail.versions ? 'Delete both' : 'Delete']);
      expect(marked).toEqual([]);
      break;
    case 'waive':
      expect(primary).toEqual(['Waive']);
      break;
    default:
      // no suggestion: nothing is marked; a reference conflict highlights Re-point, a conflict of versions nothing
      expect(marked).toEqual([]);
      expect(primary).toEqual(c.detail.versions ? [] : ['Re-point']);
  }
}

describe('review transcripts', () => {
  it("slack refusals: a review channel the bot cannot post to is explained to the person, with the fix, and nothing is posted half-way", async () => {
    const t = new Transcript('slack-refusals', fake, bot, url, "Slack refuses the bot's posts: the person is told what to do");
    try {
      for (const [code, fix] of [
        ['not_in_channel', 'The bot is not in <#C_REVIEW>: type /invite @tributary there, then try again.'],
        ['is_archived', '<#C_REVIEW> is archived: unarchive it, or have whoever runs the bot point slack.reviewChannel'],
        ['missing_scope', 'The Slack app lacks a scope it needs (the manifest lists them): whoever runs the bot adds it to the app'],
      ] as const) {
        fake.failures.set('chat.postMessage', code);
        const from = fake.calls.length;
        await t.slash('U0LEAD', 'review R2');
        // point 4: only the explanation, to the person, ephemerally: no "Posting …", no raw API error, nothing in the channel
        const told = t.of('response_url', from);
        expect(told).toHaveLength(1);
        expect(told[0]!.response_type).toBe('ephemeral');
        expect(JSON.stringify(told[0]!.blocks)).toContain(fix);
        expect(JSON.stringify(told)).not.toContain('An API error occurred');
        expect(t.of('chat.postMessage', from).length).toBeLessThanOrEqual(1);
      }
    } finally {
      fake.failures.clear();
    }
    expect(await env.db.control('slack_messages')).toHaveLength(0);
    t.check();
  });

  it('review race: two reviewers open the same card; the first decision lands, the second is told who decided, the card follows', async () => {
    const t = new Transcript('review-race', fake, bot, url, 'two reviewers decide the same conflict');
    await t.slash('U0LEAD', 'review R2');
    const open = await conflicts();
    const cards = t.posted('C_REVIEW');
    expect(cards.map((c) => String(c.call.text).split(' ')[0])).toEqual([...open.map((c) => c.code), 'Review']);
    // point 1 on every card: one per suggestion kind the data has (keep, keep-both, a reference conflict)
    for (const c of open) expectSuggestionAgrees(cards.find((m) => String(m.call.text).startsWith(`${c.code} `))!.call, c);
    expect(new Set(open.map((c) => c.detail.suggestion)).size).toBeGreaterThan(1);
    // point 3: the reply links the channel the bot composed, not "<#C_REVIEW>" escaped into text
    const posting = t.toldTo('U0LEAD').filter((m) => String(m.text).startsWith('Posting'));
    expect(posting).toHaveLength(1);
    expect(JSON.stringify(posting[0]!.blocks)).toContain('to <#C_REVIEW>, highest priority first');

    const core = open.find((c) => c.kind === 'core-conflict')!;
    const card = t.message('C_REVIEW', `${core.code} `);
    await t.press('U0REV', card, `${ACTIONS.keepPrefix}1`);
    await t.press('U0REV2', card, `${ACTIONS.keepPrefix}2`);
    expect(t.modalOf('U0REV').blocks).toBeDefined();
    expect(JSON.stringify(t.modalOf('U0REV2').blocks)).toContain('Blast radius');
    expect(await t.submit('U0REV', { [BLOCKS.rationale]: 'Dana administers the FEAT-C tests' }, 'keep version 1, "Dana administers the FEAT-C tests"')).toBe('');
    const second = await t.submit('U0REV2', { [BLOCKS.rationale]: 'the customer profile is newer' }, 'keep version 2, "the customer profile is newer"');
    // the second reviewer is told, in the modal, who decided first; nothing else changed
    expect(JSON.parse(second).errors[BLOCKS.rationale]).toMatch(/already decided by U0REV at \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC: keep version 1/);
    expect(await env.db.control('decisions').where({ conflict_id: core.id })).toHaveLength(1);
    // the card shows the decision with its author as a mention (point 3), its buttons gone
    const decided = t.message('C_REVIEW', `${core.code} decided`);
    expect(JSON.stringify(decided.call.blocks)).toContain('*Decided* by <@U0REV> <!date^');
    expect(buttons(decided.call)).toEqual([]);
    // the queue summary follows
    expect(Transcript.text(t.message('C_REVIEW', 'Review queue').call)).toContain(`decided 1 of ${open.length}`);
    t.check();
  });

  it('review next: each reviewer is handed a different open conflict, for them only', async () => {
    const t = new Transcript('review-next', fake, bot, url, 'Review next hands each reviewer a different conflict');
    const summary = t.message('C_REVIEW', 'Review queue');
    await t.press('U0REV', summary, ACTIONS.next);
    await t.press('U0REV2', summary, ACTIONS.next);
    const first = t.toldTo('U0REV').at(-1)!;
    const second = t.toldTo('U0REV2').at(-1)!;
    const codes = [first, second].map((m) => String(m.text).split(' ')[0]);
    expect(codes[0]).toMatch(/^C-\d+$/);
    expect(codes[1]).toMatch(/^C-\d+$/);
    expect(codes[0]).not.toBe(codes[1]);
    // the handed card is a full card with its buttons, and (point 1) its suggestion agrees with them
    const open = await conflicts();
    for (const [m, code] of [[first, codes[0]], [second, codes[1]]] as const) expectSuggestionAgrees(m, open.find((c) => c.code === code)!);
    // a third press, when no unassigned conflict is left, says so to the presser only
    await t.press('U0LEAD', summary, ACTIONS.next);
    expect(String(t.toldTo('U0LEAD').at(-1)!.text)).toBe('No unassigned open conflicts left in R2.');
    // point 8: a role refusal names the role and where it is granted
    await t.press('U0RM', summary, ACTIONS.next);
    expect(String(t.toldTo('U0RM').at(-1)!.text)).toContain('needs the reviewer or qa_lead role; whoever runs the Tributary bot grants it by adding you to roles.reviewer in its config');
    t.check();
  });

  it('waive: a reference conflict waived from its card, through the modal; a second press is told it is decided', async () => {
    const t = new Transcript('waive', fake, bot, url, 'a dangling reference waived from its card');
    const ref = (await conflicts()).find((c) => c.kind === 'dangling-reference')!;
    const card: Posted = t.message('C_REVIEW', `${ref.code} `);
    await t.press('U0REV', card, ACTIONS.waive);
    expect(t.modalOf('U0REV').callback_id).toBe('review:decide');
    // a rationale too short is refused in the modal, with what to do (point 4)
    expect(JSON.parse(await t.submit('U0REV', { [BLOCKS.rationale]: 'ok' }, 'the rationale "ok"')).errors[BLOCKS.rationale]).toMatch(/^Say why/);
    expect(await t.submit('U0REV', { [BLOCKS.rationale]: 'a known orphan of the test data' }, 'the rationale "a known orphan of the test data"')).toBe('');
    const decided = t.message('C_REVIEW', `${ref.code} decided`);
    expect(JSON.stringify(decided.call.blocks)).toContain('*Decided* by <@U0REV>');
    expect(Transcript.text(decided.call)).toContain('a known orphan of the test data');
    // the same card pressed again (a stale copy): the presser is told who decided, as a mention (points 3, 7)
    await t.press('U0REV2', { ...card, call: { ...card.call, blocks: fake.calls.find((c) => c.method === 'chat.postMessage' && String(c.args.text).startsWith(`${ref.code} `))!.args.blocks } }, ACTIONS.waive);
    const told = t.toldTo('U0REV2').at(-1)!;
    expect(JSON.stringify(told.blocks)).toContain(`${ref.code} was already decided by <@U0REV>: waived; the card is refreshed.`);
    t.check();
  });

  it('deleted in Slack: a decision whose card and queue summary were deleted posts the summary anew, and so does /release review', async () => {
    const t = new Transcript('deleted-messages', fake, bot, url, 'the card and the queue summary deleted in Slack');
    const handed = t.toldTo('U0REV2').find((m) => String(m.text).startsWith('C-003 '))!;
    fake.failures.set('chat.update', 'message_not_found');
    try {
      await t.press('U0REV2', { channel: 'C_REVIEW', label: 'the card Review next handed them', blocks: handed.blocks }, `${ACTIONS.keepPrefix}1`);
      expect(await t.submit('U0REV2', { [BLOCKS.rationale]: 'the ST-1 merchant balance is the reference' }, '"the ST-1 merchant balance is the reference"')).toBe('');
      // point 4: the deleted summary is posted anew (and the deleted card forgotten), nobody is shown an error
      const summary = t.message('C_REVIEW', 'Review queue');
      expect(Transcript.text(summary.call)).toContain(':tada: every conflict is decided');
      expect(await env.db.control('slack_messages').where({ kind: 'conflict' }).whereIn('subject', env.db.control('conflicts').where({ release: 'R2', code: 'C-003' }).select('id'))).toHaveLength(0);
      const before = t.posted('C_REVIEW').length;
      await t.slash('U0LEAD', 'review R2');
      expect(t.posted('C_REVIEW')).toHaveLength(before + 1);
      expect(JSON.stringify(t.toldTo('U0LEAD'))).not.toContain('message_not_found');
    } finally {
      fake.failures.clear();
    }
    t.check();
  });
});
