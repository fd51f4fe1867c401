import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { applyDecision } from '../../src/engine/review/decide.js';
import { listConflicts, showConflict } from '../../src/engine/review/queue.js';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import type { Bot } from '../../src/slack/app.js';
import { BLOCKS, OPTIONS } from '../../src/slack/ids.js';
import { finalRows, insertAccounts, insertTransactions, insertUsers, testEnv, type TestEnv } from '../helpers.js';
import { actionBody, FakeSlack, signedPost, slashBody, startTestBot, TEST_SIGNING_SECRET, viewSubmissionBody } from './fake-slack.js';

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

/** A block_suggestion request as Slack sends it when the select opens or the person types. */
function suggestionBody(user: string, view: View, value: string): string {
  const payload = {
    type: 'block_suggestion',
    user: { id: user, name: user.toLowerCase(), team_id: 'T1' },
    team: { id: 'T1', domain: 'acme' },
    api_app_id: 'A1',
    token: 'x',
    container: { type: 'view', view_id: 'V1' },
    action_id: OPTIONS.repointTargets,
    block_id: BLOCKS.repointTo,
    value,
    view: { id: 'V1', type: 'modal', callback_id: view.callback_id, private_metadata: view.private_metadata, state: { values: {} }, hash: 'h' },
  };
  return new URLSearchParams({ payload: JSON.stringify(payload) }).toString();
}

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
  await tagRelease(e.ctx, 'R2', { actor: 'cli:test' });
  await consolidate(e.ctx, 'R2', { actor: 'cli:test' });
}

beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
  env = await testEnv(3, { slack: { reviewChannel: 'C_REVIEW' }, roles: { reviewer: ['U0REV', 'U0REV2'], qa_lead: ['U0LEAD'], release_manager: [] } });
  await seed(env);
  ({ bot, url } = await startTestBot(env.ctx, fake));
});

afterAll(async () => {
  await bot?.stop();
  await env?.close();
  await fake?.stop();
});

beforeEach(() => fake.reset());

const dangling = async () => must((await listConflicts(env.ctx, 'R2', { status: 'all' })).find((c) => c.kind === 'dangling-reference'), 'the dangling reference');

function must<T>(v: T | undefined, what: string): T {
  if (v === undefined) throw new Error(`expected ${what}`);
  return v;
}

async function cardOf(code: string): Promise<{ channel: string; ts: string; run_id: number }> {
  return (await env.db.control('slack_messages').where({ kind: 'card', code }).first()) as { channel: string; ts: string; run_id: number };
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
    await vi.waitFor(async () => expect(await cardOf(c.code)).toBeDefined(), { timeout: 120_000 });
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
    const res = await send(suggestionBody('U0REV', view, ''));
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
    const typed = JSON.parse((await send(suggestionBody('U0REV', view, '21'))).body) as { options: { value: string }[] };
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
