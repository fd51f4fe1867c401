import { beforeEach, describe, expect, it, vi } from 'vitest';
import { applyDecision } from '../../src/engine/review/decide.js';
import { undoDecision } from '../../src/engine/review/undo.js';
import { getConflict, listConflicts, showConflict } from '../../src/engine/review/queue.js';
import { messageAbout, messagesAbout } from '../../src/slack/messages.js';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import type { Bot } from '../../src/slack/app.js';
import { BLOCKS, OPTIONS } from '../../src/slack/ids.js';
import { finalRows, insertAccounts, insertTransactions, insertUsers, testEnv, type TestEnv } from '../helpers.js';
import { actionBody, type FakeSlack, signedPost, slashBody, suggestionBody, TEST_SIGNING_SECRET, viewSubmissionBody } from './fake-slack.js';
import { slackScaffold } from './scaffold.js';

/**
 * Reference conflicts decided from Slack (the reference in both forms, the parent offered by the bot, a
 * warning when it contradicts the child), and cards that stay current when a decision is taken elsewhere.
 */
let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;

type Block = { type: string; block_id?: string; elements?: { action_id: string; value: string; text: { text: string } }[]; text?: { text: string }; element?: { type: string; action_id: string } };
type View = { private_metadata: string; callback_id: string; blocks: Block[] };

const send = (body: string) => signedPost(url, body, TEST_SIGNING_SECRET);

const suggestion = (user: string, view: View, value: string) => suggestionBody(user, view, BLOCKS.repointTo, OPTIONS.repointTargets, value);

const rationale = (text: string) => ({ [BLOCKS.rationale]: { value: { type: 'plain_text_input', value: text } } });
const parent = (key: string) => ({ [BLOCKS.repointTo]: { [OPTIONS.repointTargets]: { type: 'external_select', selected_option: { text: { type: 'plain_text', text: key }, value: key } } } });
const confirm = { [BLOCKS.repointConfirm]: { value: { type: 'checkboxes', selected_options: [{ text: { type: 'plain_text', text: 'x' }, value: 'confirm' }] } } };

async function seed(e: TestEnv): Promise<void> {
  await insertUsers(e, 'st1', [{ id: 1, email: 'dana@x', role: 'Administrator', feature: 'FEAT-C' }]);
  await insertUsers(e, 'st2', [{ id: 2, email: 'dana@x', role: 'Customer', feature: 'FEAT-M' }]);
  // account 50 is two different accounts in ST-1 and ST-2 (one is re-keyed); ST-3 has none: the
  // transaction of ST-3 that points at 50 is a dangling (ambiguous) reference
  await insertAccounts(e, 'st1', [{ id: 50, number: 'AC-1', user_id: null, currency: 'USD' }]);
  await insertAccounts(e, 'st2', [{ id: 50, number: 'AC-2', user_id: null, currency: 'EUR' }]);
  await insertAccounts(e, 'st2', [{ id: 51, number: 'AC-5', user_id: null, currency: 'EUR' }]);
  await insertAccounts(e, 'st3', [{ id: 60, number: 'AC-3', user_id: null, currency: 'USD' }]);
  // plenty of parents: more than a select may show
  await insertAccounts(e, 'st1', Array.from({ length: 120 }, (_, i) => ({ id: 100 + i, number: `AC-M${i}`, user_id: null })));
  await insertTransactions(e, 'st3', [{ id: 40, account_id: 50, currency: 'USD' }]);
  // two core conflicts (dana's role; erin's role), decided elsewhere while their cards are out
  await insertUsers(e, 'st1', [{ id: 7, email: 'erin@x', role: 'Administrator', feature: 'FEAT-C' }]);
  await insertUsers(e, 'st3', [{ id: 8, email: 'erin@x', role: 'Support', feature: 'FEAT-C' }]);
  await tagRelease(e.ctx, 'R2', { actor: 'cli:test' });
  await consolidate(e.ctx, 'R2', { actor: 'cli:test' });
}

slackScaffold(
  {
    env: () => testEnv(3, { slack: { reviewChannel: 'C_REVIEW' }, roles: { reviewer: ['U0REV', 'U0REV2'], qa_lead: ['U0LEAD'], release_manager: [] } }),
    prepare: seed,
  },
  (s) => ({ env, fake, bot, url } = s),
);

beforeEach(() => fake.reset());

const conflictOf = async (key: string) => must((await listConflicts(env.ctx, 'R2', { status: 'all' })).find((c) => c.key_label === key), `the conflict on ${key}`);
const dangling = async () => must((await listConflicts(env.ctx, 'R2', { status: 'all' })).find((c) => c.kind === 'dangling-reference'), 'the dangling reference');

function must<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new Error(`expected ${what}`);
  return v;
}

/** Where the bot posted a conflict's card (the Slack adapter's record of it), with the conflict's run. */
async function cardOf(code: string): Promise<{ channel: string; ts: string; run_id: number }> {
  const c = await getConflict(env.ctx, 'R2', code);
  const at = await messageAbout(env.db.control, 'conflict', c.id);
  if (!at) throw new Error(`the card of ${code} was not recorded`);
  return { ...at, run_id: c.run_id };
}

async function openRepoint(user: string): Promise<View> {
  const c = await dangling();
  const card = await cardOf(c.code);
  const before = fake.of('views.open').length;
  await send(actionBody(fake, user, 'review:repoint', JSON.stringify({ release: 'R2', code: c.code, runId: c.run_id }), card));
  await vi.waitFor(() => expect(fake.of('views.open').length).toBe(before + 1), { timeout: 60_000 });
  return fake.of('views.open').at(-1)?.view as View;
}

describe('a reference conflict decided from Slack', () => {
  it('the card shows the reference as the record holds it and as its env key map reads it, after re-keying', async () => {
    // the re-keying happened: one of the two accounts 50 holds another key now
    const accounts = await finalRows(env, 'accounts');
    expect(accounts.filter((a) => ['AC-1', 'AC-2'].includes(String((a.data as { number: string }).number))).map((a) => a.pk).sort()).not.toEqual(['50', '50']);
    await send(slashBody(fake, 'review R2', 'U0LEAD'));
    const c = await dangling();
    await vi.waitFor(async () => expect(await messageAbout(env.db.control, 'conflict', c.id)).toBeDefined(), { timeout: 120_000 });
    const card = must(fake.of('chat.postMessage').find((p) => String(p.text).startsWith(`${c.code} `)), 'the card');
    const text = JSON.stringify(card.blocks);
    expect(text).toContain("the record holds account_id = 50; collected as 50 in ST-3, ST-3's key map has no accounts 50");
    const shown = await showConflict(env.ctx, 'R2', c.code);
    expect(shown.detail.reference).toEqual({ column: 'account_id', env: 'ST-3', collected: '50', held: '50', mapped: null });
  });

  it('the modal offers the parents through the bot: at most 100, same env first, then by closeness of key', async () => {
    const view = await openRepoint('U0REV');
    const select = must(view.blocks.find((b) => b.block_id === BLOCKS.repointTo), 'the parent input');
    expect(select.element).toMatchObject({ type: 'external_select', action_id: OPTIONS.repointTargets });
    expect(JSON.stringify(view.blocks)).toContain('collected as 50 in ST-3');
    const res = await send(suggestion('U0REV', view, ''));
    expect(res.status).toBe(200);
    expect(res.ms).toBeLessThan(3000);
    const options = (JSON.parse(res.body) as { options: { value: string; text: { text: string } }[] }).options;
    expect(options).toHaveLength(100);
    // ST-3's own account first, then the nearest keys to 50
    expect(options[0]?.value).toBe('60');
    expect(options[0]?.text.text).toContain('ST-3');
    const rest = options.slice(1).map((o) => Number(o.value));
    expect(rest.slice(0, 3)).toEqual([50, 51, 100]);
    for (let i = 1; i < rest.length; i++) expect(Math.abs(must(rest[i], 'a key') - 50)).toBeGreaterThanOrEqual(Math.abs(must(rest[i - 1], 'a key') - 50));
    // typing narrows the list to the keys that contain it
    const typed = JSON.parse((await send(suggestion('U0REV', view, '21'))).body) as { options: { value: string }[] };
    expect(typed.options.map((o) => o.value)).toEqual(['121', '210', '211', '212', '213', '214', '215', '216', '217', '218', '219']);
  });

  it('warns before recording a parent that contradicts the columns the child relies on, and records it once confirmed', async () => {
    const c = await dangling();
    const view = await openRepoint('U0REV');
    expect(view.blocks.some((b) => b.block_id === BLOCKS.repointConfirm)).toBe(true);
    const warned = JSON.parse((await send(viewSubmissionBody('U0REV', view, { ...parent('51'), ...rationale('the EUR account is meant') }))).body) as { response_action: string; errors: Record<string, string> };
    expect(warned.response_action).toBe('errors');
    expect(warned.errors[BLOCKS.repointTo]).toContain('transactions 40 has currency "USD", but accounts 51 has currency "EUR"');
    expect(await env.db.control('decisions').where({ conflict_id: c.id })).toHaveLength(0);
    const done = await send(viewSubmissionBody('U0REV', view, { ...parent('51'), ...confirm, ...rationale('the EUR account is meant') }));
    expect(done.body).toBe('');
    const d = await env.db.control('decisions').where({ conflict_id: c.id }).first();
    expect([d.action, d.params, d.decided_by]).toEqual(['repoint', { action: 'repoint', to: '51' }, 'U0REV']);
    const tx = must((await finalRows(env, 'transactions')).find((t) => t.pk === '40'), 'transaction 40');
    expect(String((tx.data as { account_id: unknown }).account_id)).toBe('51');
    // the card is updated in place: decided, no buttons
    const card = await cardOf(c.code);
    await vi.waitFor(() => expect(fake.of('chat.update').some((u) => u.ts === card.ts && JSON.stringify(u.blocks).includes('re-pointed account_id to 51'))).toBe(true), { timeout: 60_000 });
  });
});

/** A click on a card shown ephemerally (Review next): Slack marks its container so. */
function ephemeralActionBody(user: string, actionId: string, value: string): string {
  const body = new URLSearchParams(actionBody(fake, user, actionId, value, { channel: 'C_REVIEW', ts: '1700000999.000100' }));
  const payload = JSON.parse(must(body.get('payload') ?? undefined, 'the payload')) as { container: Record<string, unknown>; message?: unknown };
  payload.container = { type: 'message', channel_id: 'C_REVIEW', message_ts: '1700000999.000100', is_ephemeral: true };
  delete payload.message;
  return new URLSearchParams({ payload: JSON.stringify(payload) }).toString();
}

describe('cards that stay current', () => {
  it('a decision taken in the CLI updates every card of the conflict, in every channel, and the queue summaries', async () => {
    const c = await conflictOf('email=dana@x');
    // a second channel gets its own card of the same conflict
    await bot.deps.cards.postCards('R2', 'C_SECOND');
    const cards = await messagesAbout(env.db.control, 'conflict', c.id);
    expect(cards.map((x) => x.channel).sort()).toEqual(['C_REVIEW', 'C_SECOND']);
    // what earlier steps left in flight (a decision's refresh, a summary update queued) lands before the count starts
    await bot.idle();
    fake.reset();
    await applyDecision(env.ctx, 'R2', c.code, { action: 'keep', version: 1 }, { actor: 'cli:alice', rationale: 'the admin role is what FEAT-C tests' });
    // the bot reads the audit trail (every few seconds; here one pass) and updates both cards in place
    await bot.deps.cards.catchUp();
    await bot.deps.cards.idle();
    const updated = fake.of('chat.update').filter((u) => cards.some((x) => x.ts === u.ts));
    expect(updated.map((u) => u.channel).sort()).toEqual(['C_REVIEW', 'C_SECOND']);
    for (const u of updated) {
      expect(JSON.stringify(u.blocks)).toContain('Decided* by cli:alice');
      expect((u.blocks as Block[]).some((b) => b.type === 'actions')).toBe(false);
    }
    const summaries = await messagesAbout(env.db.control, 'summary', c.run_id);
    expect(summaries.length).toBeGreaterThan(0);
    expect(fake.of('chat.update').filter((u) => summaries.some((x) => x.ts === u.ts)).length).toBe(summaries.length);
    // a second pass finds nothing new: no update twice
    fake.reset();
    await bot.deps.cards.catchUp();
    await bot.deps.cards.idle();
    expect(fake.of('chat.update')).toHaveLength(0);
  });

  it('a click on a card decided in the CLI (not yet updated) answers with the current state and changes nothing', async () => {
    const c = await conflictOf('email=erin@x');
    const card = await cardOf(c.code);
    await applyDecision(env.ctx, 'R2', c.code, { action: 'keep', version: 2 }, { actor: 'cli:bob', rationale: 'support is what erin tests' });
    const decisions = await env.db.control('decisions').count<{ count: string }[]>({ count: '*' });
    fake.reset();
    await send(actionBody(fake, 'U0REV', 'review:keep:1', JSON.stringify({ release: 'R2', code: c.code, runId: c.run_id, version: 1 }), card));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    const reply = fake.of('response_url')[0]!;
    expect(reply.response_type).toBe('ephemeral');
    expect(String(reply.text)).toContain(`${c.code} was already decided by cli:bob: kept version 2 (ST-3); the card is refreshed.`);
    expect(fake.of('views.open')).toHaveLength(0);
    const refreshed = must(fake.of('chat.update').find((u) => u.ts === card.ts), 'the card updated');
    expect(JSON.stringify(refreshed.blocks)).toContain('support is what erin tests');
    expect(await env.db.control('decisions').count<{ count: string }[]>({ count: '*' })).toEqual(decisions);
    expect((await env.db.control('conflicts').where({ id: c.id }).first()).decided_by).toBe('cli:bob');
  });

  it('an ephemeral card is updated through its response_url after a decision elsewhere', async () => {
    const c = await conflictOf('email=erin@x');
    // erin's decision is undone in the CLI: the follower brings the card back with its buttons
    await undoDecision(env.ctx, c.code, { actor: 'cli:bob', rationale: 'asked the wrong team', release: 'R2' });
    fake.reset();
    await bot.deps.cards.catchUp();
    await bot.deps.cards.idle();
    const card = await cardOf(c.code);
    const reopened = must(fake.of('chat.update').find((u) => u.ts === card.ts), 'the card reopened');
    expect((reopened.blocks as Block[]).some((b) => b.type === 'actions')).toBe(true);
    fake.reset();
    const click = ephemeralActionBody('U0REV2', 'review:keep:1', JSON.stringify({ release: 'R2', code: c.code, runId: c.run_id, version: 1 }));
    await send(click);
    await vi.waitFor(() => expect(fake.of('views.open')).toHaveLength(1), { timeout: 60_000 });
    // someone else decides it (the CLI), and the bot follows the trail
    await applyDecision(env.ctx, 'R2', c.code, { action: 'keep', version: 1 }, { actor: 'cli:carol', rationale: 'the admin role after all' });
    await bot.deps.cards.catchUp();
    await vi.waitFor(() => expect(fake.of('response_url').some((r) => r.replace_original === true && JSON.stringify(r.blocks).includes('Decided* by cli:carol'))).toBe(true), { timeout: 60_000 });
  });
});
