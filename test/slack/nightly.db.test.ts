import fs from 'node:fs';
import path from 'node:path';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { nightlyHooks } from '../../src/slack/nightly.js';
import { proposePruning } from '../../src/engine/nightly/prune.js';
import { runNightlyNow } from '../../src/engine/nightly/run.js';
import type { Bot } from '../../src/slack/app.js';
import { ACTIONS } from '../../src/slack/ids.js';
import { messageAbout } from '../../src/slack/messages.js';
import { ROOT, testEnv, type TestEnv } from '../helpers.js';
import { actionBody, type FakeSlack, signedPost, slashBody, TEST_SIGNING_SECRET } from './fake-slack.js';
import { slackScaffold } from './scaffold.js';

/**
 * The nightly regression in Slack, over signed requests and a local fake Web API: the morning post with
 * the coverage chart as a PNG file, `/release coverage`, smoke tests on production on demand, the
 * pruning proposal whose buttons only the feature's owner may use, and the App Home's last nights.
 */
const SUITE = ['login works @FEAT-C', 'service answers @smoke', 'health page @smoke', 'R1 statements @FEAT-OLD', 'fax @FEAT-GONE'];
let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;
let behaviour: string;

slackScaffold(
  {
    env: () => {
      behaviour = path.join(fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'tributary-slack-nightly-')), 'behaviour.json');
      fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE }));
      return testEnv(1, {
        environments: {
          'ST-1': { role: 'source', precedence: 1, schema: 'st1' },
          staging: { role: 'staging', schema: 'staging' },
          master: { role: 'master', schema: 'master' },
          production: { role: 'production', schema: 'prod' },
        },
        releases: {
          R1: { features: { 'FEAT-OLD': { priority: 'high', owner: 'U0ZOE' }, 'FEAT-GONE': { priority: 'low', owner: 'U0FAX', deprecated: true } } },
          R2: { features: { 'FEAT-C': { priority: 'critical', owner: 'U0ALICE' } } },
        },
        roles: { reviewer: ['U0REV'], qa_lead: ['U0LEAD'], release_manager: ['U0RM'] },
        slack: { releaseChannel: 'C_RELEASE' },
        nightly: { schedule: '0 2 * * *', timezone: 'UTC', channel: 'C_NIGHT' },
        testing: { command: `node ${path.join(ROOT, 'test/fixtures/fake-runner.mjs')} {tests} {junit} ${behaviour}`, agents: 2, shards: 2, timeoutSeconds: 30, reportDir: 'reports' },
      });
    },
    bot: { scheduler: false },
  },
  (s) => ({ env, fake, bot, url } = s),
);

beforeEach(() => fake.reset());

const send = (body: string) => signedPost(url, body, TEST_SIGNING_SECRET);
type Blocks = { type: string; elements?: { action_id: string; value: string }[] }[];

/** The bytes of the uploaded files, as the fake API saw them (a PNG's bytes decoded as text). */
const uploads = () => fake.of('file_upload').map((f) => String(f.body));

describe('selective runs', () => {
  it('/release test R2 --smoke --env production runs the smoke tests on production, with the same card', async () => {
    await send(slashBody(fake, 'test R2 --smoke --env production'));
    await vi.waitFor(() => expect(fake.of('chat.postMessage').some((p) => String(p.text).startsWith('R2 smoke:'))).toBe(true), { timeout: 120_000 });
    const card = fake.of('chat.postMessage').find((p) => String(p.text).startsWith('R2 smoke:'))!;
    expect(card.channel).toBe('C_RELEASE');
    expect(JSON.stringify(card.blocks)).toContain('smoke on production');
    const run = await env.db.control('test_runs').orderBy('id', 'desc').first();
    expect(run).toMatchObject({ tier: 'smoke', env: 'production', release: 'R2' });
    const names = (await env.db.control('test_results').where({ run_id: run.id }).orderBy('name').pluck('name')) as string[];
    expect(names).toEqual(['health page @smoke', 'service answers @smoke']);
    await vi.waitFor(() => expect(fake.of('files.completeUploadExternal')).toHaveLength(2), { timeout: 120_000 });
  });
});

describe('the nightly post and coverage', () => {
  it('posts the summary card and uploads the coverage chart as a PNG to the nightly channel', async () => {
    const outcome = await runNightlyNow(env.ctx, 'scheduler');
    expect(outcome.row.status).toBe('done');
    await nightlyHooks(bot.deps).postNightly(outcome.row);
    const post = fake.of('chat.postMessage')[0]!;
    expect(post.channel).toBe('C_NIGHT');
    expect(String(post.text)).toMatch(/^Nightly regression: pass rate 100%, 0 new regression\(s\), 0 fixed/);
    expect(JSON.stringify(post.blocks)).toContain('Per release');
    const upload = fake.of('files.getUploadURLExternal')[0]!;
    expect(String(upload.filename)).toMatch(/^nightly-\d+-coverage\.png$/);
    expect(Number(upload.length)).toBeGreaterThan(5000);
    const bytes = uploads()[0]!;
    expect(bytes.indexOf('PNG\r\n')).toBeGreaterThan(0);
    expect(bytes.indexOf('IHDR')).toBeGreaterThan(bytes.indexOf('PNG\r\n'));
    expect(fake.of('files.completeUploadExternal')[0]!.channel_id).toBe('C_NIGHT');
    const row = await env.db.control('nightly_runs').where({ id: outcome.row.id }).first();
    expect(fs.existsSync(row.chart_path)).toBe(true);
  });

  it('/release coverage posts the table and the chart', async () => {
    await send(slashBody(fake, 'coverage', 'U0REV', 'C_ASK'));
    await vi.waitFor(() => expect(fake.of('files.completeUploadExternal')).toHaveLength(1), { timeout: 120_000 });
    const post = fake.of('chat.postMessage')[0]!;
    expect(post.channel).toBe('C_ASK');
    expect(JSON.stringify(post.blocks)).toMatch(/\*R1\*: 2 tests \(2 cumulative\).*\*R2\*: 1 tests \(3 cumulative\)/);
    expect(uploads()[0]!).toContain('IHDR');
  });

  it('the App Home shows the last nights', async () => {
    const body = JSON.stringify({
      token: 'x',
      team_id: 'T1',
      api_app_id: 'A1',
      type: 'event_callback',
      event_id: 'EvN',
      event_time: Math.floor(Date.now() / 1000),
      event: { type: 'app_home_opened', user: 'U0LEAD', channel: 'D1', tab: 'home', event_ts: '1.3' },
    });
    expect((await signedPost(url, body, TEST_SIGNING_SECRET, { contentType: 'application/json' })).status).toBe(200);
    await vi.waitFor(() => expect(fake.of('views.publish')).toHaveLength(1), { timeout: 60_000 });
    const view = JSON.stringify(fake.of('views.publish')[0]!.view);
    expect(view).toContain('Last nights');
    expect(view).toMatch(/pass rate \*100%\* · 0 new regression/);
  });
});

describe('pruning proposals in Slack', () => {
  it('only the owner prunes, by the button; anyone else is refused and nothing changes', async () => {
    const proposals = await proposePruning(env.ctx, { actor: 'scheduler' });
    await nightlyHooks(bot.deps).postDigest(proposals);
    const card = fake.of('chat.postMessage')[0]!;
    expect(card.channel).toBe('C_NIGHT');
    expect(JSON.stringify(card.blocks)).toContain('<@U0FAX>');
    // where the proposal went is recorded (the Slack adapter's one record of its messages)
    expect(await messageAbout(env.db.control, 'prune', proposals[0]!.id)).toEqual({ channel: 'C_NIGHT', ts: expect.stringMatching(/^\d+\.000100$/) });
    const prune = (card.blocks as Blocks).flatMap((b) => b.elements ?? []).find((e) => e.action_id === ACTIONS.prune)!;
    const inCatalog = async () => (await env.db.control('test_catalog').where('name', 'like', '%FEAT-GONE%')).length;
    expect(await inCatalog()).toBe(1);

    fake.reset();
    await send(actionBody(fake, 'U0LEAD', ACTIONS.prune, prune.value, { channel: 'C_NIGHT', ts: '1700000005.000100' }));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(JSON.stringify(fake.of('response_url')[0])).toContain('only the owner of FEAT-GONE');
    expect(fake.of('chat.update')).toHaveLength(0);
    expect(await inCatalog()).toBe(1);

    await send(actionBody(fake, 'U0FAX', ACTIONS.prune, prune.value, { channel: 'C_NIGHT', ts: '1700000005.000100' }));
    await vi.waitFor(() => expect(fake.of('chat.update')).toHaveLength(1), { timeout: 60_000 });
    const updated = fake.of('chat.update')[0]!;
    expect(updated.ts).toBe('1700000005.000100');
    expect(JSON.stringify(updated.blocks)).toContain('Pruned* 1 test(s) by <@U0FAX>');
    expect(JSON.stringify(updated.blocks)).not.toContain(ACTIONS.prune);
    expect(await inCatalog()).toBe(0);
  });
});
