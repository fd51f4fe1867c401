import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { ACTIONS, BLOCKS, VIEWS } from '../../src/slack/ids.js';
import { readyToDeploy } from '../deploy-setup.js';
import { ROOT, type TestEnv } from '../helpers.js';
import { actionBody, type FakeSlack, signedPost, slashBody, TEST_SIGNING_SECRET, viewSubmissionBody } from './fake-slack.js';
import { slackScaffold } from './scaffold.js';

/**
 * A rollback whose code and data were restored and verified, but whose smoke tests fail on the restored
 * state too (the earlier release already fails them): Slack says "rolled back; smoke after rollback
 * failing", not "NOT fully rolled back", and the env stays locked with its Unlock button.
 */
let env: TestEnv;
let fake: FakeSlack;
let url: string;
let app: string;

slackScaffold(
  {
    env: () => {
      app = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-slack-smoke-app-'));
      const suite = path.join(ROOT, 'test/fixtures/deploy-smoke.test.mjs');
      return readyToDeploy(
        app,
        {
          roles: { reviewer: [], qa_lead: ['U0LEAD'], release_manager: ['U0RM1', 'U0RM2'] },
          slack: { releaseChannel: 'C_REL' },
          testing: { command: `SMOKE_APP=${app} node --test --test-reporter=junit --test-reporter-destination={junit} ${suite}`, agents: 1, shards: 1, timeoutSeconds: 60, reportDir: 'reports' },
        },
        { deploy: { smoke: true } },
      );
    },
    bot: { scheduler: false },
  },
  (s) => ({ env, fake, url } = s),
);

type Blocks = { type: string; elements?: { action_id: string; value: string }[] }[];

describe('smoke failing after the rollback, in Slack', () => {
  it('the progress message and the rollback card say "rolled back; smoke after rollback failing", with Unlock', async () => {
    fs.writeFileSync(path.join(app, 'bad-versions'), 'v2\nv1\n');
    await signedPost(url, slashBody(fake, 'deploy R2', 'U0RM1'), TEST_SIGNING_SECRET);
    await vi.waitFor(() => expect(fake.of('chat.postMessage')).toHaveLength(1));
    const go = (fake.of('chat.postMessage')[0]!.blocks as Blocks).flatMap((b) => b.elements ?? []).find((e) => e.action_id === ACTIONS.deployGo)!;
    fake.reset();
    await signedPost(url, actionBody(fake, 'U0RM2', ACTIONS.deployGo, go.value, { channel: 'C_REL', ts: '1700000001.000100' }), TEST_SIGNING_SECRET);
    await vi.waitFor(() => expect(fake.of('views.open')).toHaveLength(1));
    const view = fake.of('views.open')[0]!.view as { private_metadata: string; callback_id: string };
    expect(view.callback_id).toBe(VIEWS.deployDecide);
    await signedPost(url, viewSubmissionBody('U0RM2', view, { [BLOCKS.deployRationale]: { value: { type: 'plain_text_input', value: 'tier 2 is green' } } }), TEST_SIGNING_SECRET);

    await vi.waitFor(() => expect(fake.of('chat.postMessage').some((m) => String(m.text).startsWith('R2 on production: restored-smoke-failing'))).toBe(true), { timeout: 90_000, interval: 200 });
    const card = fake.of('chat.postMessage').find((m) => String(m.text).startsWith('R2 on production: restored-smoke-failing'))!;
    const blocks = JSON.stringify(card.blocks);
    expect(blocks).toContain('*R2 on production was rolled back; smoke after rollback failing (code and data restored and verified; the earlier release fails its smoke tests too)*');
    expect(blocks).not.toContain('NOT fully');
    expect(blocks).toContain(':x: smoke after rollback');
    expect((card.blocks as Blocks).flatMap((b) => b.elements ?? []).some((e) => e.action_id === ACTIONS.deployUnlock)).toBe(true);
    const progress = fake.of('chat.update').filter((u) => String(u.text).startsWith('Deployment #')).at(-1)!;
    expect(String(progress.text)).toMatch(/^Deployment #\d+ of R2: restored-smoke-failing$/);
    expect(JSON.stringify(progress.blocks)).toContain(':warning: *Deployment #');
    expect(JSON.stringify(progress.blocks)).toContain('restored-smoke-failing (rolled back; smoke after rollback failing');
    expect((await env.db.control('env_locks').first()).holder).toBe('U0RM1');
  }, 120_000);
});
