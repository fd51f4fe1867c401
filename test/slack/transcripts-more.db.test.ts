import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { transition } from '../../src/engine/kernel/lifecycle.js';
import { loadRelease } from '../../src/engine/load/load.js';
import type { Bot } from '../../src/slack/app.js';
import { insertUsers, ROOT, testEnv, type TestEnv } from '../helpers.js';
import { FakeSlack, startTestBot } from './fake-slack.js';
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
  it('promotion: the progress message ends as the promotion card, in the release channel', async () => {
    const t = new Transcript('promotion', fake, bot, url, 'a release promoted into master from Slack');
    await t.slash('U0REV', 'promote R2');
    expect(String(t.toldTo('U0REV').at(-1)!.text)).toContain('promote needs the qa_lead role');
    const before = t.of('chat.postMessage').length;
    await t.slash('U0LEAD', 'promote R2');
    // no card of its own: the progress message is updated into the promotion card
    expect(t.of('chat.postMessage').slice(before).filter((m) => m.channel === 'C_RELEASE')).toHaveLength(1);
    const card = t.message('C_RELEASE', 'Promotion of R2');
    const text = Transcript.text(card.call);
    expect(text).toContain('*R2 promoted into master*');
    expect(text).toMatch(/`users` 2 rows · checksum `\{checksum\}`/);
    expect((await env.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('promoted');
    t.check();
  });

});
