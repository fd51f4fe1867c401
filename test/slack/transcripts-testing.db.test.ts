import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runNightlyNow } from '../../src/engine/nightly/run.js';
import type { Bot } from '../../src/slack/app.js';
import { ACTIONS, BLOCKS, VIEWS } from '../../src/slack/ids.js';
import { nightlyHooks } from '../../src/slack/nightly.js';
import { ROOT, testEnv, type TestEnv } from '../helpers.js';
import type { FakeSlack } from './fake-slack.js';
import { loadedR2, slackScaffold } from './scaffold.js';
import { Transcript } from './transcript.js';

/**
 * Test runs as people see them in Slack, each flow rendered into a committed transcript
 * (test/slack/transcripts/tier-1-and-2.txt, nightly.txt, approve-again.txt) and asserted point by point (issue 20).
 */
let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;
let behaviour: string;

const SUITE = ['login works @FEAT-C', 'profile edit @FEAT-M', 'service answers @smoke', 'R1 statements @FEAT-OLD'];
type Blocks = { type: string; fields?: { text: string }[]; elements?: { action_id: string; text: { text: string }; style?: string }[] }[];

slackScaffold(
  {
    env: () => {
      behaviour = path.join(fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'tributary-transcripts-')), 'behaviour.json');
      fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE }));
      return testEnv(1, {
        releases: {
          R1: { features: { 'FEAT-OLD': { priority: 'high', owner: 'U0ZOE' } } },
          R2: { features: { 'FEAT-C': { priority: 'critical', owner: 'U0ALICE' }, 'FEAT-M': { priority: 'medium', owner: 'U0DAN' } } },
        },
        roles: { reviewer: ['U0REV'], qa_lead: ['U0LEAD'], release_manager: ['U0RM'] },
        slack: { releaseChannel: 'C_RELEASE' },
        nightly: { schedule: '0 2 * * *', timezone: 'UTC', channel: 'C_NIGHT' },
        testing: { command: `node ${path.join(ROOT, 'test/fixtures/fake-runner.mjs')} {tests} {junit} ${behaviour}`, agents: 2, shards: 2, timeoutSeconds: 30, reportDir: 'reports' },
      });
    },
    prepare: loadedR2,
    bot: { progressIntervalMs: 3_600_000, scheduler: false },
  },
  (s) => ({ env, fake, bot, url } = s),
);

const fields = (m: { blocks?: unknown }) => ((m.blocks ?? []) as Blocks).flatMap((b) => b.fields ?? []).map((f) => f.text);

describe('test-run transcripts', () => {
  it('tier 1 and 2 with approval: the cards count what ran, a failed gate shows failure, approval is an override asked for in a modal', async () => {
    const t = new Transcript('tier-1-and-2', fake, bot, url, 'tier 1, then a failing tier 2 approved with an override');
    // point 8: a refusal names the role and where it is granted
    await t.slash('U0REV', 'test R2 --tier 1');
    expect(String(t.toldTo('U0REV').at(-1)!.text)).toContain('test needs the qa_lead role; whoever runs the Tributary bot grants it by adding you to roles.qa_lead in its config');

    await t.slash('U0LEAD', 'test R2 --tier 1');
    const card1 = t.message('C_RELEASE', 'R2 tier 1:');
    // point 8: the first tier 1 card counts the tests that ran (not "0 tests"), and shows no empty group
    const ran = Number((await env.db.control('test_results').where({ run_id: (await env.db.control('test_runs').where({ tier: '1' }).first()).id }).count<{ count: string }[]>({ count: '*' }))[0]!.count);
    expect(ran).toBeGreaterThan(0);
    expect(fields(card1.call)[0]).toMatch(new RegExp(`^\\*All\\*\\n${ran} tests · `));
    expect(JSON.stringify(card1.call.blocks)).not.toMatch(/\b0 tests · .*pass rate \*0%\*/);
    expect(Transcript.text(card1.call)).toContain(`: ${ran} tests (the whole suite) · the test catalog is empty`);
    expect(Transcript.text(card1.call)).not.toMatch(/: 0 tests\b/);
    // point 2: the progress message of a passed run ends with the success icon
    const progress1 = t.message('C_RELEASE', 'R2 tier 1 ');
    expect(Transcript.text(progress1.call)).toMatch(/^:white_check_mark: \*R2 tier 1/);

    await env.db.control('release_states').where({ release: 'R2' }).update({ state: 'promoted' });
    fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE, results: { 'R1 statements @FEAT-OLD': 'fail' } }));
    await t.slash('U0LEAD', 'test R2 --tier 2');
    const card2 = t.message('C_RELEASE', 'R2 tier 2:');
    expect(String(card2.call.text)).toContain('failed');
    // point 2: a failed tier 2 ends with the failure's icon, never the success's
    const progress2 = t.message('C_RELEASE', 'R2 tier 2 ');
    expect(Transcript.text(progress2.call)).toMatch(/^:x: \*R2 tier 2/);
    expect(JSON.stringify(progress2.call.blocks)).not.toContain(':white_check_mark:');

    // point 8 again: the approve button's refusal names the role
    await t.press('U0REV', card2, ACTIONS.approve);
    expect(String(t.toldTo('U0REV').at(-1)!.text)).toContain('approve needs the qa_lead role');
    await t.press('U0LEAD', card2, ACTIONS.approve);
    expect(t.modalOf('U0LEAD').callback_id).toBe(VIEWS.approve);
    expect(JSON.stringify(t.modalOf('U0LEAD').blocks)).toContain('failed its gate');
    // point 4: an empty rationale is explained in the modal
    expect(JSON.parse(await t.submit('U0LEAD', { [BLOCKS.approveRationale]: ' ' }, 'an empty rationale')).errors[BLOCKS.approveRationale]).toMatch(/^Say why/);
    expect(await t.submit('U0LEAD', { [BLOCKS.approveRationale]: 'R1 test is outdated, fixed in the FEAT-OLD backlog' }, '"R1 test is outdated, fixed in the FEAT-OLD backlog"')).toBe('');
    const approved = t.message('C_RELEASE', 'R2 tier 2:');
    // point 3: who approved is a mention; the button is gone
    expect(JSON.stringify(approved.call.blocks)).toContain('Approved with an override of the failed gate* by <@U0LEAD>');
    expect(JSON.stringify(approved.call.blocks)).not.toContain(ACTIONS.approve);
    expect((await env.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('approved');
    t.check();
  });

  it('nightly post: the summary card and its coverage chart in the nightly channel', async () => {
    const t = new Transcript('nightly', fake, bot, url, 'the nightly regression posted in the morning');
    t.note('the scheduler runs the nightly regression (here: at once)');
    const outcome = await runNightlyNow(env.ctx, 'scheduler');
    await nightlyHooks(bot.deps).postNightly(outcome.row);
    await t.settle();
    const post = t.message('C_NIGHT', 'Nightly regression');
    expect(String(post.call.text)).toMatch(/^Nightly regression: pass rate \d+%, \d+ new regression\(s\), \d+ fixed/);
    expect(Transcript.text(post.call)).toContain('Per release');
    // point 2: a night with a failing test (R1's, failing since tier 2) does not end with the success icon
    expect(outcome.row.status).toBe('done');
    expect(Transcript.text(post.call)).toMatch(/^:warning: \*Nightly regression on master\*: pass rate \*75%\*/);
    expect(JSON.stringify(post.call.blocks)).not.toContain(':white_check_mark: *Nightly');
    expect(t.of('files.completeUploadExternal').at(-1)!.channel_id).toBe('C_NIGHT');
    t.check();
  });

  it('approve again: Approve on a copy of the card taken before the approval opens no modal, says who approved, changes nothing', async () => {
    const t = new Transcript('approve-again', fake, bot, url, 'Approve pressed on an old copy of an approved tier 2 card');
    const card = t.message('C_RELEASE', 'R2 tier 2:');
    // the card as it was posted, its Approve button still there (a copy not yet refreshed on someone's screen)
    const posted = fake.calls.find((c) => c.method === 'chat.postMessage' && c.args.channel === 'C_RELEASE' && String(c.args.text).startsWith('R2 tier 2:'))!;
    const stale = { ...card, call: { ...card.call, blocks: posted.args.blocks } };
    expect(JSON.stringify(stale.call.blocks)).toContain(ACTIONS.approve);
    const approvals = await env.db.control('approvals').count<{ count: string }[]>({ count: '*' });
    const opened = t.of('views.open').length;
    await t.press('U0LEAD', stale, ACTIONS.approve);
    // point 7: refused before a modal that cannot succeed opens; the presser is told who approved; the card is brought up to date
    expect(t.of('views.open')).toHaveLength(opened);
    expect(JSON.stringify(t.toldTo('U0LEAD').at(-1)!.blocks)).toMatch(/Tier 2 run #\d+ of R2 was already approved by <@U0LEAD>; the card is refreshed\./);
    const refreshed = t.message('C_RELEASE', 'R2 tier 2:');
    expect(JSON.stringify(refreshed.call.blocks)).toContain('Approved with an override of the failed gate* by <@U0LEAD>');
    expect(JSON.stringify(refreshed.call.blocks)).not.toContain(ACTIONS.approve);
    expect(await env.db.control('approvals').count<{ count: string }[]>({ count: '*' })).toEqual(approvals);
    expect((await env.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('approved');
    t.check();
  });
});
