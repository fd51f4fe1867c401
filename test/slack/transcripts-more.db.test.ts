import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { transition } from '../../src/engine/kernel/lifecycle.js';
import { loadRelease } from '../../src/engine/load/load.js';
import { claimSlot, executeNightly } from '../../src/engine/nightly/run.js';
import type { Bot } from '../../src/slack/app.js';
import { TributaryError } from '../../src/errors.js';
import { nightlyHooks } from '../../src/slack/nightly.js';
import { insertUsers, ROOT, testEnv, type TestEnv } from '../helpers.js';
import { FakeSlack, signedPost, TEST_SIGNING_SECRET, startTestBot } from './fake-slack.js';
import { Transcript } from './transcript.js';

/**
 * The last card kinds in committed transcripts (issue 18), so docs/slack.md shows every kind: the promotion
 * into master (promotion.txt), a night with a new regression and a night that did not run to the end
 * (nightly-regression.txt), `/release coverage` (coverage.txt) and the App Home (app-home.txt). Its own
 * world: R2 tagged, consolidated without conflicts, loaded into staging and past tier 1.
 */
let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;
let behaviour: string;

const SUITE = ['login works @FEAT-C', 'profile edit @FEAT-M', 'service answers @smoke'];
const by = { actor: 'cli:test' };

beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
  behaviour = path.join(fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'tributary-transcripts-')), 'behaviour.json');
  fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE }));
  env = await testEnv(1, {
    releases: { R2: { features: { 'FEAT-C': { priority: 'critical', owner: 'U0ALICE' }, 'FEAT-M': { priority: 'medium', owner: 'U0DAN' } } } },
    roles: { reviewer: ['U0REV'], qa_lead: ['U0LEAD'], release_manager: ['U0RM'] },
    slack: { releaseChannel: 'C_RELEASE' },
    nightly: { schedule: '0 2 * * *', timezone: 'UTC', channel: 'C_NIGHT' },
    testing: { command: `node ${path.join(ROOT, 'test/fixtures/fake-runner.mjs')} {tests} {junit} ${behaviour}`, agents: 2, shards: 2, timeoutSeconds: 30, reportDir: 'reports' },
  });
  await insertUsers(env, 'st1', [
    { id: 1, email: 'dana@x', role: 'Manager', feature: 'FEAT-C' },
    { id: 2, email: 'eve@x', feature: 'FEAT-M' },
  ]);
  await tagRelease(env.ctx, 'R2', by);
  await consolidate(env.ctx, 'R2', by);
  await transition(env.db.control, 'R2', 'validate');
  await loadRelease(env.ctx, 'R2', by);
  await transition(env.db.control, 'R2', 'tier1');
  ({ bot, url } = await startTestBot(env.ctx, fake, { progressIntervalMs: 3_600_000, scheduler: false }));
});

afterAll(async () => {
  await bot?.stop();
  await env?.close();
  await fake?.stop();
});

describe('more card transcripts', () => {
  it('promotion: the progress message ends, then the promotion card follows in the release channel', async () => {
    const t = new Transcript('promotion', fake, bot, url, 'a release promoted into master from Slack');
    await t.slash('U0REV', 'promote R2');
    expect(String(t.toldTo('U0REV').at(-1)!.text)).toContain('promote needs the qa_lead role');
    const before = t.of('chat.postMessage').length;
    await t.slash('U0LEAD', 'promote R2');
    // the progress message, then the card: two posts in the release channel
    expect(t.of('chat.postMessage').slice(before).filter((m) => m.channel === 'C_RELEASE')).toHaveLength(2);
    const progress = Transcript.text(t.message('C_RELEASE', 'Promotion of R2').call);
    expect(progress).toContain('promoted and verified');
    // the card's own formatting renders: no code block around it (it read as raw markup there)
    const card = t.message('C_RELEASE', ':white_check_mark: *R2 promoted into master*');
    const text = Transcript.text(card.call);
    expect(text).not.toContain('```');
    expect(text).toMatch(/`users` 2 rows · checksum `\{checksum\}`/);
    expect((await env.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('promoted');
    t.check();
  });

  it('nightly: a night with a new regression, then a night that did not run to the end', async () => {
    const t = new Transcript('nightly-regression', fake, bot, url, 'a regression found by the nightly run, then a night that failed');
    const hooks = nightlyHooks(bot.deps);
    // scheduled nights (a night is compared with the previous scheduled one, never with a manual run)
    const night = async (day: number, lost?: AbortSignal) => {
      const row = await claimSlot(env.ctx, 'nightly', { key: `2026-11-0${day}T02:00:00[UTC]`, at: new Date(`2026-11-0${day}T02:00:00Z`) }, 'schedule');
      return executeNightly(env.ctx, row!, 'scheduler', lost);
    };
    t.note('the scheduler runs the nightly regression: every test passes');
    await hooks.postNightly((await night(1)).row);
    await t.settle();
    expect(Transcript.text(t.message('C_NIGHT', 'Nightly regression').call)).toMatch(/^:white_check_mark: \*Nightly regression on master\*: pass rate \*100%\*/);

    fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE, results: { 'profile edit @FEAT-M': 'fail' } }));
    t.note('the next night, "profile edit @FEAT-M" fails');
    const second = await night(2);
    await hooks.postNightly(second.row);
    await t.settle();
    const regression = t.message('C_NIGHT', 'Nightly regression');
    expect(String(regression.call.text)).toMatch(/^Nightly regression: pass rate 66.66%, 1 new regression\(s\), 0 fixed/);
    expect(Transcript.text(regression.call)).toMatch(/^:rotating_light: \*Nightly regression on master\*: pass rate \*66.66%\*/);
    expect(Transcript.text(regression.call)).toContain('profile edit @FEAT-M');

    fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE }));
    // the reason as src/engine/kernel/sessionLock.ts gives it when the lock's connection ends
    t.note('the next night, the process running it loses its hold on the nightly lock (its database session ends)');
    const third = await night(3, AbortSignal.abort(new TributaryError('gate_busy', 'the nightly run lost its lock (connection closed): another process may have taken over')));
    expect(third.row.status).toBe('failed');
    await hooks.postNightly(third.row);
    await t.settle();
    const failed = t.message('C_NIGHT', 'Nightly regression failed');
    expect(Transcript.text(failed.call)).toMatch(/^:warning: \*The nightly regression \(\{time\}\[UTC\]\) did not run to the end\*: the nightly run lost its lock/);
    t.check();
  });

  it('/release coverage: the table in the channel asked from, the chart shared with it', async () => {
    const t = new Transcript('coverage', fake, bot, url, 'coverage growth per release, asked for in a channel');
    await t.slash('U0REV', 'coverage', 'C_OPS');
    const table = t.message('C_OPS', 'Coverage:');
    expect(Transcript.text(table.call)).toMatch(/^:chart_with_upwards_trend: \*Coverage growth per release\* \(master\)\n• \*R2\*: \d+ tests \(\d+ cumulative\) · 2 records \(2 cumulative\)/);
    const upload = t.of('files.completeUploadExternal').at(-1)!;
    expect(upload.channel_id).toBe('C_OPS');
    expect(String(upload.initial_comment)).toBe('Coverage growth, requested by <@U0REV>');
    t.check();
  });

  it('App Home: the last nights, each release, and what is assigned to the viewer', async () => {
    const t = new Transcript('app-home', fake, bot, url, "the App Home, as its viewer sees it");
    t.note('U0LEAD opens the Home tab of the Tributary app');
    const body = JSON.stringify({
      token: 'x',
      team_id: 'T1',
      api_app_id: 'A1',
      type: 'event_callback',
      event_id: 'EvHome',
      event_time: Math.floor(Date.now() / 1000),
      event: { type: 'app_home_opened', user: 'U0LEAD', channel: 'D1', tab: 'home', event_ts: '1.3' },
    });
    expect((await signedPost(url, body, TEST_SIGNING_SECRET, { contentType: 'application/json' })).status).toBe(200);
    await t.settle();
    const published = t.of('views.publish').at(-1)!;
    expect(published.user_id).toBe('U0LEAD');
    const text = t.check();
    expect(text).toContain("U0LEAD's App Home is redrawn, and reads:");
    // the last nights, newest first: the failed one, the regression, the clean one; then the release and the viewer's queue
    expect(text).toMatch(/\*Last nights\*.*\n +:warning: \{time\} · did not finish: the nightly run lost its lock.*\n +:rotating_light: \{time\} · pass rate \*66\.66%\* · 1 new regression\(s\).*\n +:white_check_mark: \{time\} · pass rate \*100%\*/);
    expect(text).toContain('*R2* · promoted');
    expect(text).toContain('*Assigned to you* (0)');
  });
});
