import { beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { applyDecision } from '../../src/engine/review/decide.js';
import { listFindings } from '../../src/engine/validate/index.js';
import { getConflict, listConflicts } from '../../src/engine/review/queue.js';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { transition } from '../../src/engine/kernel/lifecycle.js';
import { currentRunId } from '../../src/engine/kernel/workArea.js';
import { BLOCKS } from '../../src/slack/ids.js';
import { messageAbout } from '../../src/slack/messages.js';
import { insertAccounts, insertTransactions, insertUsers, testEnv, type TestEnv } from '../helpers.js';
import { actionBody, type FakeSlack, signedPost, slashBody, TEST_SIGNING_SECRET, viewSubmissionBody } from './fake-slack.js';
import { slackScaffold } from './scaffold.js';

/** The bot as Slack talks to it: signed requests into the real HTTP receiver, Web API calls to a local fake. */
let env: TestEnv;
let fake: FakeSlack;
let url: string;

/** Where the bot posted a conflict's card (the Slack adapter's record of it), with the conflict's run. */
async function cardOf(code: string): Promise<{ channel: string; ts: string; run_id: number }> {
  const c = await getConflict(env.ctx, 'R2', code);
  const at = await messageAbout(env.db.control, 'conflict', c.id);
  if (!at) throw new Error(`the card of ${code} was not recorded`);
  return { ...at, run_id: c.run_id };
}

/** Where the bot posted the queue summary of R2's current run. */
const summaryOf = async () => messageAbout(env.db.control, 'summary', await currentRunId(env.ctx, 'R2'));

type Blocks = { type: string; elements?: { action_id: string; value: string; text: { text: string } }[]; text?: { text: string } }[];

async function seedAndConsolidate(e: TestEnv): Promise<void> {
  await insertUsers(e, 'st1', [{ id: 1, email: 'dana@x', role: 'Administrator', feature: 'FEAT-C' }]);
  await insertUsers(e, 'st2', [{ id: 2, email: 'dana@x', role: 'Customer', feature: 'FEAT-M' }]);
  await insertUsers(e, 'st3', [{ id: 3, email: 'dana@x', role: 'Support', feature: 'FEAT-M' }]);
  await insertAccounts(e, 'st1', [{ id: 11, number: 'AC-D1', user_id: 1 }]);
  await insertTransactions(e, 'st1', [{ id: 40, account_id: 999 }]);
  await insertAccounts(e, 'st1', [{ id: 50, number: 'M-1', user_id: null, balance: '1500.00', feature: 'FEAT-H1' }]);
  await insertAccounts(e, 'st2', [{ id: 50, number: 'M-1', user_id: null, balance: '2750.00', feature: 'FEAT-H2' }]);
  await insertAccounts(e, 'st2', [{ id: 60, number: 'AC-TAKEN', user_id: null }]);
  await tagRelease(e.ctx, 'R2', { actor: 'cli:test' });
  await consolidate(e.ctx, 'R2', { actor: 'cli:test' });
}

slackScaffold(
  {
    env: () => testEnv(3, { slack: { reviewChannel: 'C_REVIEW' }, roles: { reviewer: ['U0REV', 'S0QA'], qa_lead: ['U0LEAD'], release_manager: [] } }),
    prepare: async (e, f) => {
      f.groups = { S0QA: ['U0GROUPIE'] };
      await seedAndConsolidate(e);
    },
  },
  (s) => ({ env, fake, url } = s),
);

beforeEach(() => fake.reset());

const send = (body: string, opts: Parameters<typeof signedPost>[3] = {}) => signedPost(url, body, TEST_SIGNING_SECRET, opts);

describe('requests as Slack sends them', () => {
  it('refuses a bad signature and an old timestamp', async () => {
    expect((await send(slashBody(fake, 'help'), { signature: 'v0=deadbeef' })).status).toBe(401);
    expect((await send(slashBody(fake, 'help'), { timestamp: Math.floor(Date.now() / 1000) - 600 })).status).toBe(401);
  });

  it('/release help answers in the ack; unknown input gets the usage', async () => {
    const help = await send(slashBody(fake, 'help'));
    expect(help.status).toBe(200);
    expect(JSON.parse(help.body).response_type).toBe('ephemeral');
    expect(help.body).toContain('/release consolidate <release> [--env <env>]');
    const unknown = JSON.parse((await send(slashBody(fake, 'frobnicate R2'))).body);
    expect(unknown.text).toContain('Unknown command "frobnicate"');
    expect(JSON.stringify(unknown.blocks)).toContain('/release status [release]');
  });

  it('refuses what it does not understand, ephemerally and before doing anything: an unknown flag, an extra word, a typo in the release', async () => {
    fake.reset();
    const events = await env.db.control('audit_events').count<{ count: number }[]>({ count: '*' });
    const flag = JSON.parse((await send(slashBody(fake, 'deploy R2 --bundel 1', 'U0LEAD'))).body);
    expect(flag.response_type).toBe('ephemeral');
    expect(flag.text).toContain('unknown flag --bundel (did you mean --bundle?). Usage: /release deploy <release> [--at <time>] [--bundle <version>]');
    const extra = JSON.parse((await send(slashBody(fake, 'validate R2 now', 'U0LEAD'))).body);
    expect(extra.text).toContain('unexpected "now". Usage: /release validate <release>');
    const typo = JSON.parse((await send(slashBody(fake, 'consolidate r2', 'U0LEAD'))).body);
    expect(typo.response_type).toBe('ephemeral');
    expect(typo.text).toContain('unknown release "r2": did you mean R2?');
    const sub = JSON.parse((await send(slashBody(fake, 'stauts R2'))).body);
    expect(sub.text).toContain('Unknown command "stauts" (did you mean status?)');
    // nothing was posted, updated or started for any of them
    expect(fake.calls.filter((c) => c.method !== 'auth.test')).toEqual([]);
    expect(await env.db.control('audit_events').count<{ count: number }[]>({ count: '*' })).toEqual(events);
  });

  it('/release status replies ephemerally with the release state', async () => {
    const res = await send(slashBody(fake, 'status R2'));
    expect(res.status).toBe(200);
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    const reply = fake.of('response_url')[0]!;
    expect(reply.response_type).toBe('ephemeral');
    expect(JSON.stringify(reply.blocks)).toContain('*R2*: consolidated');
  });

  it('/release conflicts lists the open queue by priority', async () => {
    await send(slashBody(fake, 'conflicts R2 --priority P1', 'U0REV'));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    const text = JSON.stringify(fake.of('response_url')[0]!.blocks);
    expect(text).toContain('C-001');
    expect(text).toContain('C-002');
    expect(text).not.toContain('C-003');
  });
});

describe('roles', () => {
  it('a user without the qa_lead role cannot consolidate: ephemeral refusal naming the role, audited', async () => {
    await send(slashBody(fake, 'consolidate R2', 'U0NOBODY'));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(String(fake.of('response_url')[0]!.text)).toContain('consolidate needs the qa_lead role');
    expect(fake.of('chat.postMessage')).toHaveLength(0);
    const audit = await env.db.control('audit_events').where({ action: 'auth.refused', actor: 'U0NOBODY' });
    expect(audit).toHaveLength(1);
  });
});

describe('consolidation, cards and decisions', () => {
  it('/release consolidate acks at once and reports in one progress message updated in place', async () => {
    const res = await send(slashBody(fake, 'consolidate R2', 'U0LEAD'));
    expect(res.status).toBe(200);
    expect(res.body).toBe('');
    await vi.waitFor(() => expect(JSON.stringify(fake.of('chat.update').at(-1)?.blocks ?? '')).toContain(':white_check_mark:'), { timeout: 120_000 });
    expect(fake.of('chat.postMessage')).toHaveLength(1);
    const updates = fake.of('chat.update');
    expect(fake.of('chat.postMessage')[0]!.channel).toBe('C_OPS');
    expect(new Set(updates.map((u) => u.ts)).size).toBe(1);
    expect(JSON.stringify(updates.at(-1)!.blocks)).toContain('records collected');
    // the final message names the chain head: a witness of the audit trail outside the database
    const head = (await env.db.control('audit_events').whereNotNull('seq').orderBy('seq', 'desc').first('seq', 'hash')) as { seq: number; hash: string };
    expect(JSON.stringify(updates.at(-1)!.blocks)).toContain(`Audit chain head #${head.seq} \`${head.hash}\``);
  });

  it('/release review posts the cards to the review channel, highest priority first, then the queue summary', async () => {
    await send(slashBody(fake, 'review R2', 'U0LEAD'));
    await vi.waitFor(() => expect(fake.of('chat.postMessage')).toHaveLength(4), { timeout: 120_000 });
    const posts = fake.of('chat.postMessage');
    expect(posts.every((p) => p.channel === 'C_REVIEW')).toBe(true);
    expect(posts.map((p) => String(p.text).slice(0, 9))).toEqual(['C-001 P1 ', 'C-002 P1 ', 'C-003 P3 ', 'Review qu']);
    // the reply to the person links the channel (not the literal text "<#C_REVIEW>" escaped)
    const reply = fake.of('response_url').find((m) => String(m.text).startsWith('Posting'))!;
    expect(JSON.stringify(reply.blocks)).toContain('to <#C_REVIEW>, highest priority first');
    const card = posts[0]!.blocks as Blocks;
    const buttons = card.find((b) => b.type === 'actions')!.elements!.map((e) => e.text.text);
    expect(buttons).toEqual(['Keep ST-1', 'Keep ST-2', 'Keep ST-3', 'Keep both (rename)', 'Merge', 'Delete both']);
    expect(JSON.stringify(card)).toContain('1 child row(s)');
    // posting again adds no duplicate cards
    fake.reset();
    await send(slashBody(fake, 'review R2', 'U0LEAD'));
    await vi.waitFor(() => expect(fake.of('chat.update')).toHaveLength(1), { timeout: 60_000 });
    expect(fake.of('chat.postMessage')).toHaveLength(0);
  });

  it('/release review re-posts a queue summary deleted in Slack, and explains a channel the bot is not in, posting nothing', async () => {
    const before = await summaryOf();
    expect(before).toBeDefined();
    fake.failures.set('chat.update', 'message_not_found');
    try {
      await send(slashBody(fake, 'review R2', 'U0LEAD'));
      await vi.waitFor(() => expect(fake.of('chat.postMessage')).toHaveLength(1), { timeout: 60_000 });
      expect(String(fake.of('chat.postMessage')[0]!.text)).toMatch(/^Review qu/);
      await vi.waitFor(async () => expect((await summaryOf())?.ts).not.toBe(before?.ts), { timeout: 60_000 });
      expect(fake.of('response_url').some((m) => String(m.text).startsWith('Sorry'))).toBe(false);

      // the bot was never invited: the person is told to /invite it, in the review channel, and nothing is posted
      fake.reset();
      fake.failures.set('chat.postMessage', 'not_in_channel');
      await send(slashBody(fake, 'review R2', 'U0LEAD'));
      await vi.waitFor(() => expect(fake.of('response_url').some((m) => String(m.text).includes('/invite'))).toBe(true), { timeout: 60_000 });
      const told = fake.of('response_url').find((m) => String(m.text).includes('/invite'))!;
      expect(told.response_type).toBe('ephemeral');
      expect(JSON.stringify(told.blocks)).toContain('The bot is not in <#C_REVIEW>: type /invite @tributary there, then try again.');
      expect(JSON.stringify(fake.of('response_url'))).not.toContain('An API error occurred');
    } finally {
      fake.failures.clear();
    }
  });

  it('Keep opens a modal with the blast radius; submitting decides, updates the card in place and removes its buttons', async () => {
    const card = await cardOf('C-001');
    const value = JSON.stringify({ release: 'R2', code: 'C-001', runId: (await listConflicts(env.ctx, 'R2'))[0]!.run_id, version: 1 });
    await send(actionBody(fake, 'U0REV', 'review:keep:1', value, card));
    await vi.waitFor(() => expect(fake.of('views.open')).toHaveLength(1), { timeout: 60_000 });
    const view = fake.of('views.open')[0]!.view as { private_metadata: string; callback_id: string; blocks: Blocks };
    expect(JSON.stringify(view.blocks)).toContain('Blast radius');
    const submit = await send(viewSubmissionBody('U0REV', view, { [BLOCKS.rationale]: { value: { type: 'plain_text_input', value: 'Dana administers FEAT-C tests' } } }));
    expect(submit.status).toBe(200);
    expect(submit.body).toBe('');
    await vi.waitFor(() => expect(fake.of('chat.update').some((u) => u.ts === card.ts)).toBe(true), { timeout: 60_000 });
    const updated = fake.of('chat.update').find((u) => u.ts === card.ts)!;
    const blocks = updated.blocks as Blocks;
    expect(blocks.some((b) => b.type === 'actions')).toBe(false);
    expect(JSON.stringify(blocks)).toContain('Decided* by <@U0REV>');
    expect(JSON.stringify(blocks)).toContain('Dana administers FEAT-C tests');
    expect((await env.db.control('conflicts').where({ code: 'C-001' }).orderBy('id', 'desc').first()).decided_by).toBe('U0REV');
  });

  it('a card made stale by a decision elsewhere is refreshed when clicked', async () => {
    await applyDecision(env.ctx, 'R2', 'C-002', { action: 'waive' }, { actor: 'cli:alice', rationale: 'known test orphan' });
    const card = await cardOf('C-002');
    await send(actionBody(fake, 'U0REV', 'review:waive', JSON.stringify({ release: 'R2', code: 'C-002', runId: card.run_id }), card));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(String(fake.of('response_url')[0]!.text)).toContain('already decided by cli:alice');
    expect(fake.of('views.open')).toHaveLength(0);
    const refreshed = fake.of('chat.update').find((u) => u.ts === card.ts)!;
    expect(JSON.stringify(refreshed.blocks)).toContain('known test orphan');
  });

  it('keep-both checks the new natural keys on submit and shows the error in the modal', async () => {
    const card = await cardOf('C-003');
    await send(actionBody(fake, 'U0GROUPIE', 'review:keep-both', JSON.stringify({ release: 'R2', code: 'C-003', runId: card.run_id }), card));
    await vi.waitFor(() => expect(fake.of('views.open')).toHaveLength(1), { timeout: 60_000 });
    const view = fake.of('views.open')[0]!.view as { private_metadata: string; callback_id: string; blocks: Blocks };
    const renameBlock = `${BLOCKS.renamePrefix}2:number`;
    expect(JSON.stringify(view.blocks)).toContain('M-1-st-2');
    const bad = await send(
      viewSubmissionBody('U0GROUPIE', view, {
        [renameBlock]: { value: { type: 'plain_text_input', value: 'AC-TAKEN' } },
        [BLOCKS.rationale]: { value: { type: 'plain_text_input', value: 'both merchants are needed' } },
      }),
    );
    const ack = JSON.parse(bad.body);
    expect(ack.response_action).toBe('errors');
    expect(ack.errors[renameBlock]).toContain('already taken');
    const good = await send(
      viewSubmissionBody('U0GROUPIE', view, {
        [renameBlock]: { value: { type: 'plain_text_input', value: 'M-1-B' } },
        [BLOCKS.rationale]: { value: { type: 'plain_text_input', value: 'both merchants are needed' } },
      }),
    );
    expect(good.body).toBe('');
    const d = await env.db.control('decisions').orderBy('id', 'desc').first();
    expect([d.action, d.decided_by]).toEqual(['keep-both', 'U0GROUPIE']);
  });
});

describe('the double decision', () => {
  beforeAll(async () => {
    // changed records make a fresh consolidation re-open their conflicts (unchanged ones keep their decisions)
    await env.sql(`update st2.users set phone = '+1 777' where id = 2`);
    await env.sql(`update st1.transactions set amount = 2.00 where id = 40`);
    await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
    await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
  });

  it('two reviewers submitting at once: exactly one decision lands, the other is told who decided', async () => {
    const c = (await listConflicts(env.ctx, 'R2')).find((x) => x.kind === 'core-conflict')!;
    const meta = (version: number) => ({ callback_id: 'review:decide', private_metadata: JSON.stringify({ release: 'R2', code: c.code, runId: c.run_id, version, action: 'keep' }) });
    const rationale = { [BLOCKS.rationale]: { value: { type: 'plain_text_input', value: 'my call' } } };
    const [a, b] = await Promise.all([send(viewSubmissionBody('U0REV', meta(1), rationale)), send(viewSubmissionBody('U0LEAD', meta(2), rationale))]);
    const bodies = [a.body, b.body];
    expect(bodies.filter((x) => x === '')).toHaveLength(1);
    const refused = JSON.parse(bodies.find((x) => x !== '')!);
    expect(refused.errors[BLOCKS.rationale]).toMatch(/already decided by (U0REV|U0LEAD)/);
    expect(await env.db.control('decisions').where({ conflict_id: c.id })).toHaveLength(1);
  });

  it('a repeated submission by the same person (a retry) applies nothing twice', async () => {
    const c = (await listConflicts(env.ctx, 'R2')).find((x) => x.kind === 'dangling-reference')!;
    const view = { callback_id: 'review:decide', private_metadata: JSON.stringify({ release: 'R2', code: c.code, runId: c.run_id, action: 'waive' }) };
    const values = { [BLOCKS.rationale]: { value: { type: 'plain_text_input', value: 'fine as is' } } };
    const first = await send(viewSubmissionBody('U0REV', view, values));
    const retry = await send(viewSubmissionBody('U0REV', view, values), { headers: { 'x-slack-retry-num': '1', 'x-slack-retry-reason': 'http_timeout' } });
    expect([first.body, retry.body]).toEqual(['', '']);
    expect(await env.db.control('decisions').where({ conflict_id: c.id })).toHaveLength(1);
  });
});

describe('App Home', () => {
  it('publishes each release state and the viewer’s assignments; an Events API retry is not handled twice', async () => {
    const event = (retry?: string, user = 'U0REV') =>
      send(
        JSON.stringify({
          token: 'x',
          team_id: 'T1',
          api_app_id: 'A1',
          type: 'event_callback',
          event_id: user === 'U0REV' ? 'Ev1' : 'Ev2',
          event_time: Math.floor(Date.now() / 1000),
          event: { type: 'app_home_opened', user, channel: 'D1', tab: 'home', event_ts: '1.2' },
        }),
        { contentType: 'application/json', ...(retry ? { headers: { 'x-slack-retry-num': retry, 'x-slack-retry-reason': 'http_timeout' } } : {}) },
      );
    expect((await event()).status).toBe(200);
    await vi.waitFor(() => expect(fake.of('views.publish')).toHaveLength(1), { timeout: 60_000 });
    const home = fake.of('views.publish')[0]!;
    expect(home.user_id).toBe('U0REV');
    expect(JSON.stringify(home.view)).toContain('*R2* · consolidated');
    expect((await event('1')).status).toBe(200);
    // another viewer's event, sent after the retry, is published: the retry, handled before it, was not
    expect((await event(undefined, 'U0OTHER')).status).toBe(200);
    await vi.waitFor(() => expect(fake.of('views.publish').map((p) => p.user_id)).toContain('U0OTHER'), { timeout: 60_000 });
    expect(fake.of('views.publish').map((p) => p.user_id)).toEqual(['U0REV', 'U0OTHER']);
  });
});

describe('validate, load and audit from Slack', () => {
  it('validates, loads with counts and checksums, and posts the audit summary with the trail as a file', async () => {
    for (const c of await listConflicts(env.ctx, 'R2')) {
      await applyDecision(env.ctx, 'R2', c.code, c.detail.versions ? { action: 'keep', version: 1 } : { action: 'delete', cascade: true }, { actor: 'U0LEAD', rationale: 'cleared for staging' });
    }
    await send(slashBody(fake, 'validate R2', 'U0REV'));
    await vi.waitFor(() => expect(fake.of('chat.postMessage').some((m) => String(m.text).includes('open finding'))).toBe(true), { timeout: 120_000 });
    // the dangling transaction waived in Slack earlier is an orphan: validation finds it
    const first = fake.of('chat.postMessage').find((m) => String(m.text).includes('open finding'))!;
    expect(String(first.text)).toBe('R2: 1 open finding(s)');
    // its progress message ends as a partial outcome (open findings), not with the success's check mark
    const ended = fake.of('chat.update').filter((u) => String(u.text).includes('open finding(s)')).at(-1)!;
    expect(JSON.stringify(ended.blocks)).toContain(':warning: *Validation of R2');
    expect(JSON.stringify(ended.blocks)).not.toContain(':white_check_mark:');
    expect(JSON.stringify(first.blocks)).toContain('orphan');
    const finding = (await listFindings(env.ctx, 'R2', { status: 'open' }))[0]!;
    // the card's Waive button: qa_lead only, through a modal asking for the rationale
    const waive = (first.blocks as Blocks).flatMap((b) => b.elements ?? []).find((e) => e.action_id === `findings:waive:${finding.code}`)!;
    expect(waive.text.text).toBe(`Waive ${finding.code}…`);
    fake.reset();
    await send(actionBody(fake, 'U0REV', waive.action_id, waive.value, { channel: 'C_OPS', ts: '1700000002.000100' }));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(String(fake.of('response_url')[0]!.text)).toContain('waive needs the qa_lead role');
    await send(actionBody(fake, 'U0LEAD', waive.action_id, waive.value, { channel: 'C_OPS', ts: '1700000002.000100' }));
    await vi.waitFor(() => expect(fake.of('views.open')).toHaveLength(1), { timeout: 60_000 });
    const modal = fake.of('views.open')[0]!.view as { private_metadata: string; callback_id: string };
    const waived = await send(viewSubmissionBody('U0LEAD', modal, { [BLOCKS.waiveRationale]: { value: { type: 'plain_text_input', value: 'test data, known orphan' } } }));
    expect(waived.body).toBe('');
    expect((await listFindings(env.ctx, 'R2', { status: 'all' })).find((f) => f.code === finding.code)!.status).toBe('waived');
    await vi.waitFor(() => expect(fake.of('chat.postMessage').some((m) => String(m.text).startsWith(`${finding.code} of R2 waived by <@U0LEAD>`))).toBe(true), { timeout: 60_000 });
    const again = await send(viewSubmissionBody('U0LEAD', modal, { [BLOCKS.waiveRationale]: { value: { type: 'plain_text_input', value: 'again' } } }));
    expect(JSON.parse(again.body).errors[BLOCKS.waiveRationale]).toMatch(/already waived by U0LEAD/);
    fake.reset();
    await send(slashBody(fake, 'validate R2', 'U0REV'));
    await vi.waitFor(() => expect(fake.of('chat.postMessage').some((m) => String(m.text).includes('open finding'))).toBe(true), { timeout: 120_000 });
    const card = fake.of('chat.postMessage').find((m) => String(m.text).includes('open finding'))!;
    expect(String(card.text)).toBe('R2: 0 open finding(s)');
    expect(JSON.stringify(card.blocks)).toContain('is valid');

    fake.reset();
    await send(slashBody(fake, 'load R2', 'U0REV'));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(String(fake.of('response_url')[0]!.text)).toContain('load needs the qa_lead role');

    fake.reset();
    await send(slashBody(fake, 'load R2', 'U0LEAD'));
    await vi.waitFor(() => expect(fake.of('chat.postMessage').some((m) => String(m.text) === 'R2 loaded into staging')).toBe(true), { timeout: 120_000 });
    const loaded = JSON.stringify(fake.of('chat.postMessage').find((m) => String(m.text) === 'R2 loaded into staging')!.blocks);
    expect(loaded).toMatch(/`users` \d+ rows · checksum `\d+`/);

    fake.reset();
    await send(slashBody(fake, 'audit R2', 'U0REV'));
    await vi.waitFor(() => expect(fake.of('files.completeUploadExternal')).toHaveLength(1), { timeout: 120_000 });
    const summary = fake.of('chat.postMessage')[0]!;
    expect(JSON.stringify(summary.blocks)).toContain('Chain head');
    const upload = fake.of('file_upload')[0]!;
    expect(String(upload.body)).toContain('"action": "load.finish"');
    expect(String(upload.body)).not.toContain('xoxb-test-token');

    // past tier 1, a re-load says what it resets and waits for --confirm
    await transition(env.db.control, 'R2', 'tier1');
    fake.reset();
    await send(slashBody(fake, 'load R2', 'U0LEAD'));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1));
    expect(JSON.stringify(fake.of('response_url')[0])).toContain('release R2 is tier1-passed: loading it again sends it back to loaded');
    expect(JSON.stringify(fake.of('response_url')[0])).toContain('re-load with --confirm');
    expect(fake.of('chat.postMessage')).toHaveLength(0);
    expect((await env.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('tier1-passed');
    fake.reset();
    await send(slashBody(fake, 'load R2 --confirm', 'U0LEAD'));
    await vi.waitFor(() => expect(fake.of('chat.postMessage').some((m) => String(m.text) === 'R2 loaded into staging')).toBe(true), { timeout: 20_000 });
    expect((await env.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('loaded');
  });
});
