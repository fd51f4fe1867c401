import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { DeployWatcher } from '../../src/slack/deploy.js';
import { decideGo, getDeployment, rollbackInterruptedDeployment } from '../../src/engine/deploy/deployment.js';
import { createBot, type Bot } from '../../src/slack/app.js';
import { ACTIONS, BLOCKS, VIEWS } from '../../src/slack/ids.js';
import { messageAbout, recordMessage } from '../../src/slack/messages.js';
import { dumpProduction, readyToDeploy } from '../deploy-setup.js';
import type { TestEnv } from '../helpers.js';
import { actionBody, type FakeSlack, signedPost, slashBody, TEST_SIGNING_SECRET, viewSubmissionBody } from './fake-slack.js';
import { slackScaffold } from './scaffold.js';

/** Deployment from Slack: the go/no-go card, confirmation modals, progress, /rollback, Unlock. */
let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;
let app: string;

slackScaffold(
  {
    env: () => {
      app = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-slack-app-'));
      return readyToDeploy(app, {
        roles: { reviewer: [], qa_lead: ['U0LEAD'], release_manager: ['U0RM1', 'U0RM2'] },
        slack: { releaseChannel: 'C_REL' },
      });
    },
    bot: { scheduler: false },
  },
  (s) => ({ env, fake, bot, url } = s),
);

beforeEach(() => fake.reset());

const send = (body: string) => signedPost(url, body, TEST_SIGNING_SECRET);
type Blocks = { type: string; elements?: { action_id: string; value: string }[] }[];
const rationale = (text: string) => ({ [BLOCKS.deployRationale]: { value: { type: 'plain_text_input', value: text } } });

async function clickAndConfirm(user: string, actionId: string, value: string, why: string): Promise<string> {
  fake.reset();
  await send(actionBody(fake, user, actionId, value, { channel: 'C_REL', ts: '1700000001.000100' }));
  await vi.waitFor(() => expect(fake.of('views.open')).toHaveLength(1), { timeout: 60_000 });
  const view = fake.of('views.open')[0]!.view as { private_metadata: string; callback_id: string };
  expect(view.callback_id).toBe(VIEWS.deployDecide);
  return (await send(viewSubmissionBody(user, view, rationale(why)))).body;
}

describe('/release deploy and /rollback', () => {
  it('go/no-go card, quorum without self-approval, the sequence in one message, then /rollback with Unlock and a post-mortem thread', async () => {
    const before = await dumpProduction(env);
    await send(slashBody(fake, 'deploy R2', 'U0LEAD'));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(String(fake.of('response_url')[0]!.text)).toContain('deploy needs the release_manager role');

    fake.reset();
    await send(slashBody(fake, 'deploy R2', 'U0RM1'));
    await vi.waitFor(() => expect(fake.of('chat.postMessage')).toHaveLength(1), { timeout: 60_000 });
    const card = fake.of('chat.postMessage')[0]!;
    expect(card.channel).toBe('C_REL');
    const cardText = JSON.stringify(card.blocks);
    expect(cardText).toContain('Bundle v1');
    expect(cardText).toContain('*Tests*: none');
    expect(cardText).toContain('Asked by* <@U0RM1>');
    const go = (card.blocks as Blocks).flatMap((b) => b.elements ?? []).find((e) => e.action_id === ACTIONS.deployGo)!;

    // the requester's own Go does not start it
    expect(await clickAndConfirm('U0RM1', ACTIONS.deployGo, go.value, 'I asked, and I say go')).toBe('');
    await vi.waitFor(() => expect(fake.of('chat.update').length).toBeGreaterThan(0), { timeout: 60_000 });
    expect(JSON.stringify(fake.of('chat.update').at(-1)!.blocks)).toContain('*Go* by <@U0RM1>');
    // the card is updated in place: where it was posted is recorded
    const placed = await messageAbout(env.db.control, 'deployment', Number((await env.db.control('deployments').first()).id));
    expect(placed).toEqual({ channel: 'C_REL', ts: expect.stringMatching(/^\d+\.000100$/) });
    expect(fake.of('chat.update').at(-1)!).toMatchObject({ channel: 'C_REL', ts: placed?.ts });
    expect((await env.db.control('deployments').first()).status).toBe('awaiting-go');
    // ... and the requester hears (only they) who else must say Go
    await vi.waitFor(() => expect(fake.of('chat.postEphemeral')).toHaveLength(1), { timeout: 60_000 });
    const told = fake.of('chat.postEphemeral')[0]!;
    expect(told.user).toBe('U0RM1');
    expect(JSON.stringify(told.blocks)).toContain('1 more Go needed, from a release_manager other than <@U0RM1> (who asked for it): <@U0RM2>.');

    expect(await clickAndConfirm('U0RM2', ACTIONS.deployGo, go.value, 'reviewed the tier 2 report')).toBe('');
    await vi.waitFor(async () => expect((await env.db.control('deployments').first()).status).toBe('succeeded'), { timeout: 120_000 });
    // the final update (with the chain head): a progress update of the last step may already read "succeeded"
    await vi.waitFor(() => expect(fake.of('chat.update').some((u) => String(u.text).endsWith(': succeeded') && JSON.stringify(u.blocks).includes('Audit chain head'))).toBe(true), { timeout: 60_000 });
    const progressTs = fake.of('chat.postMessage').find((m) => String(m.text).startsWith('Deployment #'))!;
    const updates = fake.of('chat.update').filter((u) => u.ts === `${String(progressTs.ts ?? '')}` || String(u.text).startsWith('Deployment #'));
    expect(updates.length).toBeGreaterThan(1);
    expect(JSON.stringify(updates.at(-1)!.blocks)).toMatch(/deploy-code \(\d+\.\d s\): code v2 deployed/);
    // the final message names the audit chain head (a witness outside the database)
    expect(JSON.stringify(updates.at(-1)!.blocks)).toMatch(/Audit chain head #\d+ `[0-9a-f]{64}`/);

    fake.reset();
    await send(slashBody(fake, 'R2', 'U0RM2').replace('command=%2Frelease', 'command=%2Frollback'));
    await vi.waitFor(() => expect(fake.of('views.open')).toHaveLength(1), { timeout: 60_000 });
    const view = fake.of('views.open')[0]!.view as { private_metadata: string; callback_id: string; blocks: unknown[] };
    expect(JSON.stringify(view.blocks)).toContain('stays locked afterwards');
    const empty = await send(viewSubmissionBody('U0RM2', view, rationale('')));
    expect(JSON.parse(empty.body).errors[BLOCKS.deployRationale]).toMatch(/Say why/);
    expect((await send(viewSubmissionBody('U0RM2', view, rationale('customers report wrong balances')))).body).toBe('');
    await vi.waitFor(() => expect(fake.of('chat.postMessage').some((m) => String(m.text).includes('rolled-back'))).toBe(true), { timeout: 120_000 });
    const rolled = fake.of('chat.postMessage').find((m) => String(m.text).includes('rolled-back'))!;
    const unlock = (rolled.blocks as Blocks).flatMap((b) => b.elements ?? []).find((e) => e.action_id === ACTIONS.deployUnlock)!;
    expect(unlock).toBeDefined();
    await vi.waitFor(() => expect(fake.of('chat.postMessage').some((m) => m.thread_ts && String(m.text).includes('Post-mortem timeline'))).toBe(true), { timeout: 60_000 });
    expect(await dumpProduction(env)).toBe(before);
    expect(path.basename(fs.readlinkSync(path.join(app, 'current')))).toBe('v1');

    // locked after the rollback: a new request is refused at once, in an ephemeral reply naming who holds the lock
    fake.reset();
    await send(slashBody(fake, 'deploy R2', 'U0RM1'));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1));
    expect(String(fake.of('response_url')[0]!.text)).toMatch(/production is locked by rollback of deployment #\d+ of R2 \(held by U0RM2 since [^)]+\): no deployment is requested until a release_manager unlocks it: tributary unlock production/);
    expect(fake.of('response_url')[0]!.response_type).toBe('ephemeral');
    expect(fake.of('chat.postMessage')).toHaveLength(0);

    fake.reset();
    await send(actionBody(fake, 'U0LEAD', ACTIONS.deployUnlock, unlock.value, { channel: 'C_REL', ts: String(rolled.ts ?? '1') }));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(String(fake.of('response_url')[0]!.text)).toContain('unlock needs the release_manager role');
    fake.reset();
    await send(actionBody(fake, 'U0RM1', ACTIONS.deployUnlock, unlock.value, { channel: 'C_REL', ts: String(rolled.ts ?? '1') }));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(String(fake.of('response_url')[0]!.text)).toContain('production unlocked by <@U0RM1>');
    // the bot's mentions render: not escaped into literal text
    expect(JSON.stringify(fake.of('response_url')[0]!.blocks)).toContain('unlocked by <@U0RM1> (it was held by <@U0RM2>)');
    expect(fake.of('response_url')[0]!.response_type).toBe('in_channel');
    expect(await env.db.control('env_locks')).toHaveLength(0);
    // a second press changed nothing: only the presser hears it
    fake.reset();
    await send(actionBody(fake, 'U0RM2', ACTIONS.deployUnlock, unlock.value, { channel: 'C_REL', ts: String(rolled.ts ?? '1') }));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(String(fake.of('response_url')[0]!.text)).toBe('production was not locked.');
    expect(fake.of('response_url')[0]!.response_type).toBe('ephemeral');
  });
});

describe('a bot that starts after a crash', () => {
  it('reports the deployment left in flight, where it stopped, with Resume and Roll back, in the channel of its card', async () => {
    const [row] = await env.db.control('deployments').insert({
      release: 'R2', bundle_id: 1, bundle_version: 1, code_version: 'v2', env: 'production', status: 'running', requested_by: 'U0RM1',
      expires_at: new Date(Date.now() + 60_000), previous_code_version: 'v1',
      steps: JSON.stringify([{ name: 'lock', status: 'done', startedAt: new Date().toISOString() }, { name: 'deploy-code', status: 'done', startedAt: new Date().toISOString() }, { name: 'migrate-up', status: 'running', startedAt: new Date().toISOString() }]),
    }).returning('id');
    // its go/no-go card went to another channel than the configured one: the report follows the card
    await recordMessage(env.db.control, 'deployment', Number(row.id), { channel: 'C_DEPLOYS', ts: '1700000000.000001' });
    const second = createBot(env.ctx, { mode: 'http', botToken: 'xoxb-test-token', signingSecret: TEST_SIGNING_SECRET, port: 0, apiUrl: fake.apiUrl() }, { botId: 'BBOT', botUserId: 'UBOT', retries: 0 });
    await second.start();
    try {
      await vi.waitFor(() => expect(fake.of('chat.postMessage').some((m) => String(m.text).includes('was interrupted'))).toBe(true), { timeout: 60_000 });
      const card = fake.of('chat.postMessage').find((m) => String(m.text).includes('was interrupted'))!;
      expect(card.channel).toBe('C_DEPLOYS');
      const text = JSON.stringify(card.blocks);
      expect(text).toContain('stopped at migrate-up: code at v2, data as before');
      const ids = (card.blocks as Blocks).flatMap((b) => b.elements ?? []).map((e) => e.action_id);
      expect(ids).toEqual([ACTIONS.deployResume, ACTIONS.deployRollback]);
    } finally {
      await second.stop();
      await env.db.control('deployments').where({ status: 'running' }).update({ status: 'rolled-back' });
    }
  });

  it('Roll back on a deployment with nothing left to roll back answers the presser and opens no modal', async () => {
    const d = (await env.db.control('deployments').where({ status: 'rolled-back' }).orderBy('id', 'desc').first()) as { id: number };
    fake.reset();
    await send(actionBody(fake, 'U0RM1', ACTIONS.deployRollback, JSON.stringify({ id: d.id, release: 'R2' }), { channel: 'C_REL', ts: '1700000123.000100' }));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    const reply = fake.of('response_url')[0]!;
    expect(reply.response_type).toBe('ephemeral');
    expect(String(reply.text)).toContain(`Deployment #${d.id} is rolled-back: there is nothing to roll back.`);
    expect(fake.of('views.open')).toHaveLength(0);
  });
});

describe('scheduled and approved deployments that did not start', () => {
  it('a scheduled deployment whose window passed while the bot was down expires, and its card says so', async () => {
    fake.reset();
    const at = new Date(Date.now() + 3600_000).toISOString();
    await send(slashBody(fake, `deploy R2 --at ${at}`, 'U0RM1'));
    await vi.waitFor(() => expect(fake.of('chat.postMessage')).toHaveLength(1), { timeout: 60_000 });
    const d = (await env.db.control('deployments').where({ status: 'awaiting-go' }).first()) as { id: number };
    expect((await decideGo(env.ctx, d.id, { actor: 'U0RM2', decision: 'go', rationale: 'tonight' })).deployment.status).toBe('scheduled');
    await env.db.control('deployments').where({ id: d.id }).update({ window_at: new Date(Date.now() - 31 * 60_000) });
    fake.reset();
    await new DeployWatcher(bot.deps).tick();
    expect((await getDeployment(env.db.control, d.id)).status).toBe('expired');
    const update = fake.of('chat.update').find((u) => String(u.text).includes(`deployment #${d.id}): expired`))!;
    expect(update).toBeDefined();
    expect(JSON.stringify(update.blocks)).toContain('its window passed before it could start');
    // nothing was started
    expect(fake.of('chat.postMessage').filter((m) => String(m.text).startsWith('Deployment #'))).toHaveLength(0);
  });

  it('an approved deployment whose process died before it started is reported at start-up with Resume and Roll back', async () => {
    fake.reset();
    await send(slashBody(fake, 'deploy R2', 'U0RM1'));
    await vi.waitFor(() => expect(fake.of('chat.postMessage')).toHaveLength(1), { timeout: 60_000 });
    const d = (await env.db.control('deployments').where({ status: 'awaiting-go' }).first()) as { id: number };
    // Go reached outside this bot (the CLI), whose process then died before running it
    expect((await decideGo(env.ctx, d.id, { actor: 'U0RM2', decision: 'go', rationale: 'go ahead' })).ready).toBe(true);
    fake.reset();
    const second = createBot(env.ctx, { mode: 'http', botToken: 'xoxb-test-token', signingSecret: TEST_SIGNING_SECRET, port: 0, apiUrl: fake.apiUrl() }, { botId: 'BBOT', botUserId: 'UBOT', retries: 0 });
    await second.start();
    try {
      await vi.waitFor(() => expect(fake.of('chat.postMessage').some((m) => String(m.text).includes(`Deployment #${d.id} of R2 was interrupted`))).toBe(true), { timeout: 60_000 });
      const card = fake.of('chat.postMessage').find((m) => String(m.text).includes('was interrupted'))!;
      expect(JSON.stringify(card.blocks)).toMatch(/approved at <!date\^\d+\^\{date_short_pretty\} \{time\}\|[^>]+> but never started \(the process that was to run it died\): nothing was done/);
      expect((card.blocks as Blocks).flatMap((b) => b.elements ?? []).map((e) => e.action_id)).toEqual([ACTIONS.deployResume, ACTIONS.deployRollback]);
    } finally {
      await second.stop();
    }
    expect((await rollbackInterruptedDeployment(env.ctx, d.id, { actor: 'U0RM1', rationale: 'not tonight' })).status).toBe('cancelled');
  });
});
