import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Bot } from '../../src/slack/app.js';
import { ACTIONS, BLOCKS, VIEWS } from '../../src/slack/ids.js';
import { readyToDeploy } from '../deploy-setup.js';
import { ROOT, type TestEnv } from '../helpers.js';
import type { FakeSlack } from './fake-slack.js';
import { slackScaffold } from './scaffold.js';
import { Transcript } from './transcript.js';

/**
 * A deployment as release managers live it in Slack, each flow rendered into a committed transcript
 * (test/slack/transcripts/deploy-quorum.txt, rollback.txt, unlock.txt) and asserted point by point (issue 20).
 */
let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;
let app: string;

slackScaffold(
  {
    env: () => {
      app = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-transcripts-app-'));
      const suite = path.join(ROOT, 'test/fixtures/deploy-smoke.test.mjs');
      return readyToDeploy(
        app,
        {
          roles: { reviewer: [], qa_lead: ['U0LEAD'], release_manager: ['U0RM1', 'U0RM2', 'U0RM3'] },
          slack: { releaseChannel: 'C_REL' },
          testing: { command: `SMOKE_APP=${app} node --test --test-reporter=junit --test-reporter-destination={junit} ${suite}`, agents: 1, shards: 1, timeoutSeconds: 60, reportDir: 'reports' },
        },
        { deploy: { smoke: true, quorum: 2 } },
      );
    },
    bot: { progressIntervalMs: 3_600_000, scheduler: false },
  },
  (s) => ({ env, fake, bot, url } = s),
);

const rationale = (text: string) => ({ [BLOCKS.deployRationale]: text });

describe('deployment transcripts', () => {
  it('deploy with quorum: a Go that does not complete the quorum tells its presser who else must say Go; the second Go runs it, smoke included', async () => {
    const t = new Transcript('deploy-quorum', fake, bot, url, 'a deployment asked for, two Goes, the run with its smoke tests');
    // point 8: the refusal names the role and where it is granted
    await t.slash('U0LEAD', 'deploy R2', 'C_REL');
    expect(String(t.toldTo('U0LEAD').at(-1)!.text)).toContain('deploy needs the release_manager role; whoever runs the Tributary bot grants it by adding you to roles.release_manager in its config');

    await t.slash('U0RM1', 'deploy R2', 'C_REL');
    const card = t.message('C_REL', 'Go / no-go');
    // point 3 and 8: who asked is a mention, the deadline a Slack date
    expect(JSON.stringify(card.call.blocks)).toContain('Asked by* <@U0RM1>');
    expect(JSON.stringify(card.call.blocks)).toMatch(/answer by\* <!date\^\d+\^/);

    await t.press('U0RM2', card, ACTIONS.deployGo);
    expect(t.modalOf('U0RM2').callback_id).toBe(VIEWS.deployDecide);
    expect(await t.submit('U0RM2', rationale('reviewed the tier 2 report'), '"reviewed the tier 2 report"')).toBe('');
    // point 6: a Go that does not complete the quorum tells its presser, only them, who else must say Go
    const told = t.toldTo('U0RM2').at(-1)!;
    expect(JSON.stringify(told.blocks)).toContain('Your Go on deployment #1 of R2 is recorded (1 of 2); nothing runs yet. 1 more Go needed, from: <@U0RM1>, <@U0RM3>.');
    expect(told.response_type ?? 'ephemeral').toBe('ephemeral');
    expect((await env.db.control('deployments').first()).status).toBe('awaiting-go');

    await t.press('U0RM3', card, ACTIONS.deployGo);
    expect(await t.submit('U0RM3', rationale('go, the window is quiet'), '"go, the window is quiet"')).toBe('');
    expect((await env.db.control('deployments').first()).status).toBe('succeeded');
    // point 2: the progress message ends with the success icon
    const progress = t.message('C_REL', 'Deployment #');
    expect(Transcript.text(progress.call)).toMatch(/^:white_check_mark: \*Deployment #\d+/);
    // point 8: smoke tests run on demand on production: the card shows what ran, no "New features 0 tests · pass rate 0%"
    await t.slash('U0LEAD', 'test R2 --smoke --env production', 'C_REL');
    const smoke = t.message('C_REL', 'R2 smoke:');
    expect(JSON.stringify(smoke.call.blocks)).not.toContain('New features');
    expect(JSON.stringify(smoke.call.blocks)).not.toMatch(/\b0 tests\b/);
    expect(Transcript.text(smoke.call)).toMatch(/\*All\*\n[1-9]\d* tests? · /);
    t.check();
  });

  it('rollback: /rollback asks why in a modal, restores code and data, locks production and offers Unlock', async () => {
    const t = new Transcript('rollback', fake, bot, url, '/rollback after a deployment');
    await t.slash('U0RM2', 'R2', 'C_REL', '/rollback');
    expect(JSON.stringify(t.modalOf('U0RM2').blocks)).toContain('stays locked afterwards');
    // point 4: an empty rationale is explained in the modal
    expect(JSON.parse(await t.submit('U0RM2', rationale(''), 'an empty rationale')).errors[BLOCKS.deployRationale]).toMatch(/^Say why/);
    expect(await t.submit('U0RM2', rationale('customers report wrong balances'), '"customers report wrong balances"')).toBe('');
    const card = t.message('C_REL', 'R2 on production: rolled-back');
    expect(t.posted('C_REL').some((m) => String(m.call.text).includes('Post-mortem timeline'))).toBe(true);
    // point 2: a rollback is a partial outcome (production is locked), not a success
    expect(Transcript.text(t.message('C_REL', 'Deployment #1 of R2: rolled-back').call).split('\n')[0]).toMatch(/^:warning: /);
    expect(JSON.stringify(card.call.blocks)).toContain(ACTIONS.deployUnlock);
    // point 3 and 8: the cause names who asked for the rollback as a mention, not a raw id
    expect(JSON.stringify(card.call.blocks)).toContain('rollback requested by <@U0RM2>: customers report wrong balances');

    // point 8: a new request while locked names who holds the lock, as a mention, and since when, as a Slack date
    await t.slash('U0RM1', 'deploy R2', 'C_REL');
    const refused = t.toldTo('U0RM1').at(-1)!;
    expect(refused.response_type).toBe('ephemeral');
    expect(JSON.stringify(refused.blocks)).toMatch(/held by <@U0RM2> since <!date\^\d+\^\{date_short_pretty\} \{time\}\|/);
    expect(JSON.stringify(refused.blocks)).not.toMatch(/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?!\.\d+Z>)/);
    t.check();
  });

  it('unlock: refused without the role, done by a release manager for the channel, a second press answered to its presser only', async () => {
    const t = new Transcript('unlock', fake, bot, url, 'Unlock pressed on the rollback card');
    const card = t.message('C_REL', 'R2 on production: rolled-back');
    await t.press('U0LEAD', card, ACTIONS.deployUnlock);
    expect(String(t.toldTo('U0LEAD').at(-1)!.text)).toContain('unlock needs the release_manager role');
    await t.press('U0RM1', card, ACTIONS.deployUnlock);
    const unlocked = t.of('response_url').filter((m) => m.response_type === 'in_channel').at(-1)!;
    // point 3: the mentions render
    expect(JSON.stringify(unlocked.blocks)).toContain('unlocked by <@U0RM1> (it was held by <@U0RM2>)');
    expect(await env.db.control('env_locks')).toHaveLength(0);
    // point 6: a second press changed nothing: only the presser hears it
    const before = t.of('response_url').filter((m) => m.response_type === 'in_channel').length;
    await t.press('U0RM2', card, ACTIONS.deployUnlock);
    expect(String(t.toldTo('U0RM2').at(-1)!.text)).toBe('production was not locked.');
    expect(t.of('response_url').filter((m) => m.response_type === 'in_channel')).toHaveLength(before);
    t.check();
  });
});
