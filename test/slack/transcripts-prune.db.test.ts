import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { proposePruning } from '../../src/engine/nightly/prune.js';
import { runNightlyNow } from '../../src/engine/nightly/run.js';
import type { Bot } from '../../src/slack/app.js';
import { ACTIONS } from '../../src/slack/ids.js';
import { messageAbout } from '../../src/slack/messages.js';
import { nightlyHooks } from '../../src/slack/nightly.js';
import { ROOT, testEnv, type TestEnv } from '../helpers.js';
import type { FakeSlack } from './fake-slack.js';
import { slackScaffold } from './scaffold.js';
import { Transcript } from './transcript.js';

/**
 * The nightly pruning proposal in Slack, rendered into a committed transcript (test/slack/transcripts/
 * prune.txt; issue 18: docs/slack.md shows every card kind) and asserted: the tests of a deprecated
 * feature proposed for pruning, addressed to the feature's owner; anyone else's Prune refused with nothing
 * changed; the owner's Prune removes them and updates the card in place.
 */
const SUITE = ['login works @FEAT-C', 'service answers @smoke', 'fax @FEAT-GONE'];
let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;

slackScaffold(
  {
    env: () => {
      const behaviour = path.join(fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'tributary-transcript-prune-')), 'behaviour.json');
      fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE }));
      return testEnv(1, {
        environments: {
          'ST-1': { role: 'source', precedence: 1, schema: 'st1' },
          staging: { role: 'staging', schema: 'staging' },
          master: { role: 'master', schema: 'master' },
          production: { role: 'production', schema: 'prod' },
        },
        releases: {
          R1: { features: { 'FEAT-GONE': { priority: 'low', owner: 'U0FAX', deprecated: true } } },
          R2: { features: { 'FEAT-C': { priority: 'critical', owner: 'U0ALICE' } } },
        },
        roles: { reviewer: ['U0REV'], qa_lead: ['U0LEAD'], release_manager: ['U0RM'] },
        nightly: { schedule: '0 2 * * *', timezone: 'UTC', channel: 'C_NIGHT' },
        testing: { command: `node ${path.join(ROOT, 'test/fixtures/fake-runner.mjs')} {tests} {junit} ${behaviour}`, agents: 1, shards: 1, timeoutSeconds: 30, reportDir: 'reports' },
      });
    },
    bot: { scheduler: false },
  },
  (s) => ({ env, fake, bot, url } = s),
);

type Blocks = { type: string; elements?: { action_id: string }[] }[];
const actions = (m: { blocks?: unknown }) => ((m.blocks ?? []) as Blocks).filter((b) => b.type === 'actions').flatMap((b) => b.elements ?? []).map((e) => e.action_id);
const inCatalog = async () => (await env.db.control('test_catalog').where('name', 'like', '%FEAT-GONE%')).length;

describe('pruning transcript', () => {
  it('prune: the tests of a deprecated feature proposed to its owner; only the owner prunes them, the card updated in place', async () => {
    expect((await runNightlyNow(env.ctx, 'scheduler')).row.status).toBe('done');
    expect(await inCatalog()).toBe(1);
    const proposals = await proposePruning(env.ctx, { actor: 'scheduler' });
    expect(proposals).toHaveLength(1);

    const t = new Transcript('prune', fake, bot, url, 'the tests of a deprecated feature proposed for pruning');
    t.note('(a nightly run has seen the tests of FEAT-GONE, deprecated since; the scheduler posts its pruning digest)');
    await nightlyHooks(bot.deps).postDigest(proposals);
    await t.settle();
    const card = t.posted('C_NIGHT').at(-1)!;
    expect(card.n).toBe(1);
    expect(JSON.stringify(card.call.blocks)).toContain('<@U0FAX>');
    expect(Transcript.text(card.call)).toContain('FEAT-GONE');
    expect(actions(card.call)).toEqual([ACTIONS.prune, ACTIONS.pruneKeep]);
    expect(await messageAbout(env.db.control, 'prune', proposals[0]!.id)).toEqual({ channel: 'C_NIGHT', ts: card.ts });

    await t.press('U0LEAD', card, ACTIONS.prune);
    expect(Transcript.text(t.toldTo('U0LEAD').at(-1)!)).toContain('only the owner of FEAT-GONE');
    expect(t.of('chat.update')).toHaveLength(0);
    expect(await inCatalog()).toBe(1);

    await t.press('U0FAX', card, ACTIONS.prune);
    const updated = t.posted('C_NIGHT').find((m) => m.n === card.n)!;
    expect(JSON.stringify(updated.call.blocks)).toContain('Pruned* 1 test(s) by <@U0FAX>');
    expect(actions(updated.call)).toEqual([]);
    expect(await inCatalog()).toBe(0);
    t.check();
  });
});
