import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { listFindings } from '../../src/engine/validate/index.js';
import { validateRelease } from '../../src/engine/validate/validate.js';
import type { Bot } from '../../src/slack/app.js';
import { BLOCKS, VIEWS } from '../../src/slack/ids.js';
import { insertAccounts, insertUsers, testEnv, type TestEnv } from '../helpers.js';
import { FakeSlack, startTestBot } from './fake-slack.js';
import { Transcript } from './transcript.js';

/**
 * `/release decide F-… --delete` without a rationale (issue 18): the finding's decision modal, which is not
 * the waiver's (findings.txt shows that one), rendered into test/slack/transcripts/finding-decision.txt.
 * Its own world: an account whose user is deleted from the consolidation's result, so it dangles.
 */
let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;

beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
  env = await testEnv(1, { roles: { reviewer: ['U0REV'], qa_lead: ['U0LEAD'], release_manager: ['U0RM'] } });
  await insertUsers(env, 'st1', [{ id: 1, email: 'dana@x', feature: 'FEAT-C' }, { id: 2, email: 'eve@x', feature: 'FEAT-C' }]);
  await insertAccounts(env, 'st1', [{ id: 201, number: 'AC-1', user_id: 1 }, { id: 202, number: 'AC-2', user_id: 2 }]);
  await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
  await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
  const s = await env.db.control('release_states').where({ release: 'R2' }).first();
  await env.db.control.raw(`update work."r${s.current_run_id}_result" set status = 'deleted' where entity = 'users' and pk = '1'`);
  await validateRelease(env.ctx, 'R2', { actor: 'cli:test' });
  ({ bot, url } = await startTestBot(env.ctx, fake, { progressIntervalMs: 3_600_000 }));
});

afterAll(async () => {
  await bot?.stop();
  await env?.close();
  await fake?.stop();
});

describe('finding decision transcript', () => {
  it('/release decide F-… --delete: the decision modal shows the plan, asks for a rationale, and records the decision', async () => {
    const t = new Transcript('finding-decision', fake, bot, url, 'a validation finding decided from /release decide, in its modal');
    t.note('(user 1 is deleted from the result of R2, so its account dangles; R2 was validated: one finding)');
    const [finding] = await listFindings(env.ctx, 'R2');
    expect(finding).toMatchObject({ code: 'F-001', status: 'open' });
    await t.slash('U0LEAD', 'decide F-001 --release R2 --delete');
    const modal = t.modalOf('U0LEAD');
    expect(modal.callback_id).toBe(VIEWS.decideFinding);
    expect(modal.callback_id).not.toBe(VIEWS.waiveFinding);
    expect(Transcript.text({ text: '', blocks: modal.blocks })).toContain('F-001: plan for delete (not applied)');
    // nothing is decided before the modal is submitted
    expect((await listFindings(env.ctx, 'R2', { status: 'all' }))[0]!.status).toBe('open');
    await t.submit('U0LEAD', { [BLOCKS.findingRationale]: 'the account of a deleted user is not migrated' }, '"the account of a deleted user is not migrated"');
    const after = (await listFindings(env.ctx, 'R2', { status: 'all' }))[0]!;
    expect(after.status).not.toBe('open');
    expect(JSON.stringify(after)).toContain('U0LEAD');
    // the decision is announced in the channel the command came from, naming who and why
    expect(Transcript.text(t.message('C_OPS', 'F-001').call)).toBe('F-001 of R2 closed by <@U0LEAD> (delete): the account of a deleted user is not migrated. Validate again: /release validate R2');
    t.check();
  });
});
