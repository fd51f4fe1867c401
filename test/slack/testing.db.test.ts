import fs from 'node:fs';
import path from 'node:path';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { ACTIONS, BLOCKS, VIEWS } from '../../src/slack/ids.js';
import { ROOT, testEnv, type TestEnv } from '../helpers.js';
import { actionBody, type FakeSlack, signedPost, slashBody, TEST_SIGNING_SECRET, viewSubmissionBody } from './fake-slack.js';
import { loadedR2, slackScaffold } from './scaffold.js';

/** Two-tier testing from Slack: signed slash commands, the progress message, the cards, the approval modal. */
let env: TestEnv;
let fake: FakeSlack;
let url: string;
let behaviour: string;

const SUITE = ['login works @FEAT-C', 'profile edit @FEAT-M', 'service answers @smoke', 'R1 statements @FEAT-OLD'];

slackScaffold(
  {
    env: () => {
      behaviour = path.join(fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'tributary-slack-tests-')), 'behaviour.json');
      fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE }));
      return testEnv(1, {
        releases: {
          R1: { features: { 'FEAT-OLD': { priority: 'high', owner: 'zoe' } } },
          R2: { features: { 'FEAT-C': { priority: 'critical', owner: 'alice' }, 'FEAT-M': { priority: 'medium', owner: 'dan' } } },
        },
        roles: { reviewer: ['U0REV'], qa_lead: ['U0LEAD'], release_manager: ['U0RM'] },
        slack: { releaseChannel: 'C_RELEASE' },
        testing: { command: `node ${path.join(ROOT, 'test/fixtures/fake-runner.mjs')} {tests} {junit} ${behaviour}`, agents: 2, shards: 2, timeoutSeconds: 30, reportDir: 'reports' },
      });
    },
    prepare: loadedR2,
  },
  (s) => ({ env, fake, url } = s),
);

beforeEach(() => fake.reset());

const send = (body: string) => signedPost(url, body, TEST_SIGNING_SECRET);
type Blocks = { type: string; elements?: { action_id: string; value: string; text: { text: string } }[] }[];

describe('/release test and approve', () => {
  it('shows the right usage for a malformed request, and refuses a user without the qa_lead role', async () => {
    await send(slashBody(fake, 'test R2'));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(JSON.stringify(fake.of('response_url')[0])).toContain('choose one of --tier 1, --tier 2');
    fake.reset();
    await send(slashBody(fake, 'test R2 --tier 1', 'U0REV'));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    // a refusal names the role needed and where it is granted (the config, by whoever runs the bot)
    expect(String(fake.of('response_url')[0]!.text)).toContain('test needs the qa_lead role; whoever runs the Tributary bot grants it by adding you to roles.qa_lead in its config');
    fake.reset();
    await send(slashBody(fake, 'review R2', 'U0RM'));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(String(fake.of('response_url')[0]!.text)).toContain('review needs the reviewer or qa_lead role; whoever runs the Tributary bot grants it by adding you to roles.reviewer in its config');
  });

  it('tier 1 reports in one progress message, posts the summary card and uploads the reports', async () => {
    const res = await send(slashBody(fake, 'test R2 --tier 1'));
    expect(res.status).toBe(200);
    await vi.waitFor(() => expect(fake.of('files.completeUploadExternal')).toHaveLength(2), { timeout: 120_000 });
    const posts = fake.of('chat.postMessage');
    expect(posts.every((p) => p.channel === 'C_RELEASE')).toBe(true);
    expect(posts).toHaveLength(2);
    const card = posts[1]!;
    expect(String(card.text)).toMatch(/^R2 tier 1: passed, pass rate 100%/);
    expect(JSON.stringify(card.blocks)).toContain('New features');
    const updates = fake.of('chat.update');
    expect(updates.length).toBeGreaterThan(0);
    expect(updates.every((u) => u.ts === updates[0]!.ts)).toBe(true);
    expect(JSON.stringify(updates.at(-1)!.blocks)).toContain(':white_check_mark: *R2 tier 1');
    const files = fake.of('file_upload').map((f) => String(f.body));
    expect(files.some((f) => f.includes('Gate: PASSED'))).toBe(true);
    expect(files.some((f) => f.includes('<testsuites'))).toBe(true);
    expect(files.join()).not.toContain('xoxb-test-token');
  });

  it('tier 2 posts a card whose Approve opens a modal; approving updates the card in place, once only', async () => {
    await env.db.control('release_states').where({ release: 'R2' }).update({ state: 'promoted' });
    fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE, results: { 'R1 statements @FEAT-OLD': 'fail' } }));
    await send(slashBody(fake, 'test R2 --tier 2'));
    await vi.waitFor(() => expect(fake.of('chat.postMessage').some((p) => String(p.text).startsWith('R2 tier 2:'))).toBe(true), { timeout: 120_000 });
    const card = fake.of('chat.postMessage').find((p) => String(p.text).startsWith('R2 tier 2:'))!;
    expect(String(card.text)).toContain('failed');
    // the progress message of a failed run ends with the failure's icon, never the success's
    const last = JSON.stringify(fake.of('chat.update').at(-1)!.blocks);
    expect(last).toMatch(/^\[\{"type":"section","text":\{"type":"mrkdwn","text":":x: \*R2 tier 2/);
    expect(last).not.toContain(':white_check_mark:');
    const button = (card.blocks as Blocks).flatMap((b) => b.elements ?? []).find((e) => e.action_id === ACTIONS.approve)!;
    expect(button.text.text).toBe('Approve with override…');

    fake.reset();
    await send(actionBody(fake, 'U0REV', ACTIONS.approve, button.value, { channel: 'C_RELEASE', ts: '1700000001.000100' }));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(String(fake.of('response_url')[0]!.text)).toContain('approve needs the qa_lead role');

    await send(actionBody(fake, 'U0LEAD', ACTIONS.approve, button.value, { channel: 'C_RELEASE', ts: '1700000001.000100' }));
    await vi.waitFor(() => expect(fake.of('views.open')).toHaveLength(1), { timeout: 60_000 });
    const view = fake.of('views.open')[0]!.view as { private_metadata: string; callback_id: string; blocks: unknown[] };
    expect(view.callback_id).toBe(VIEWS.approve);
    expect(JSON.stringify(view.blocks)).toContain('failed its gate');

    const empty = await send(viewSubmissionBody('U0LEAD', view, { [BLOCKS.approveRationale]: { value: { type: 'plain_text_input', value: ' ' } } }));
    expect(JSON.parse(empty.body).errors[BLOCKS.approveRationale]).toMatch(/Say why/);

    const ok = await send(viewSubmissionBody('U0LEAD', view, { [BLOCKS.approveRationale]: { value: { type: 'plain_text_input', value: 'R1 test is outdated, fixed in FEAT-OLD backlog' } } }));
    expect(ok.body).toBe('');
    await vi.waitFor(() => expect(fake.of('chat.update')).toHaveLength(1), { timeout: 60_000 });
    const updated = fake.of('chat.update')[0]!;
    expect(updated.ts).toBe('1700000001.000100');
    expect(JSON.stringify(updated.blocks)).toContain('Approved with an override');
    expect(JSON.stringify(updated.blocks)).not.toContain(ACTIONS.approve);
    const state = await env.db.control('release_states').where({ release: 'R2' }).first();
    expect(state.state).toBe('approved');

    const twice = await send(viewSubmissionBody('U0LEAD', view, { [BLOCKS.approveRationale]: { value: { type: 'plain_text_input', value: 'again' } } }));
    expect(JSON.parse(twice.body).errors[BLOCKS.approveRationale]).toMatch(/already approved by U0LEAD/);
    const events = await env.db.control('audit_events').where({ action: 'release.approved.override' });
    expect(events).toHaveLength(1);

    // Approve on the card of a run approved already (an old copy of the card, another channel): no modal
    // opens; the presser is told who approved it, and the card is redrawn as approved
    fake.reset();
    await send(actionBody(fake, 'U0LEAD', ACTIONS.approve, button.value, { channel: 'C_OTHER', ts: '1700000009.000100' }));
    await vi.waitFor(() => expect(fake.of('response_url')).toHaveLength(1), { timeout: 60_000 });
    expect(fake.of('response_url')[0]!.response_type).toBe('ephemeral');
    expect(String(fake.of('response_url')[0]!.text)).toMatch(/was already approved by <@U0LEAD>; the card is refreshed/);
    expect(fake.of('views.open')).toHaveLength(0);
    await vi.waitFor(() => expect(fake.of('chat.update').map((u) => u.ts)).toEqual(['1700000009.000100']), { timeout: 60_000 });
    expect(JSON.stringify(fake.of('chat.update')[0]!.blocks)).toContain('Approved with an override');
    expect(await env.db.control('approvals').where({ release: 'R2' })).toHaveLength(1);
  });
});
