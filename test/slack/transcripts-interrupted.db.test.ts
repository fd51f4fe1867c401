import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { decideGo, getDeployment } from '../../src/engine/deploy/deployment.js';
import type { Bot } from '../../src/slack/app.js';
import { DeployWatcher } from '../../src/slack/deploy.js';
import { ACTIONS } from '../../src/slack/ids.js';
import { readyToDeploy } from '../deploy-setup.js';
import type { TestEnv } from '../helpers.js';
import type { FakeSlack } from './fake-slack.js';
import { slackScaffold } from './scaffold.js';
import { Transcript } from './transcript.js';

/**
 * A deployment left in flight by a dead process, as the bot reports it when it starts again, rendered
 * into a committed transcript (test/slack/transcripts/deploy-interrupted.txt; issue 18: docs/slack.md
 * shows every card kind) and asserted: the card says where it stopped (its time a Slack date) and offers
 * Resume and Roll back; Resume needs the release_manager role; a release manager's Resume runs it to the
 * end, and the card is updated in place to say so, without its buttons; a second Resume on the old card
 * (a stale client still showing the button) answers its presser that there is nothing to resume.
 */
let env: TestEnv;
let fake: FakeSlack;
let bot: Bot;
let url: string;

slackScaffold(
  {
    env: () => {
      const app = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-transcripts-interrupted-'));
      return readyToDeploy(app, { roles: { reviewer: [], qa_lead: ['U0LEAD'], release_manager: ['U0RM1', 'U0RM2'] }, slack: { releaseChannel: 'C_REL' } });
    },
    bot: { progressIntervalMs: 3_600_000, scheduler: false },
  },
  (s) => ({ env, fake, bot, url } = s),
);

type Blocks = { type: string; elements?: { action_id: string }[] }[];
const actions = (m: { blocks?: unknown }) => ((m.blocks ?? []) as Blocks).filter((b) => b.type === 'actions').flatMap((b) => b.elements ?? []).map((e) => e.action_id);

describe('interrupted deployment transcript', () => {
  it('deploy interrupted: reported at start-up with Resume and Roll back; Resume needs release_manager, runs it to the end, and a second Resume changes nothing', async () => {
    // asked for in Slack, approved in the CLI; the process that was to run it dies before it starts
    const t = new Transcript('deploy-interrupted', fake, bot, url, 'a deployment left in flight by a dead process, resumed from its card');
    await t.slash('U0RM1', 'deploy R2', 'C_REL');
    const goCard = t.message('C_REL', 'Go / no-go');
    const { id } = (await env.db.control('deployments').where({ release: 'R2', status: 'awaiting-go' }).first()) as { id: number };
    expect((await decideGo(env.ctx, id, { actor: 'U0RM2', decision: 'go', rationale: 'go ahead' })).ready).toBe(true);
    t.note('(U0RM2 says Go in the CLI, and the process that was to run the deployment dies before it starts; the bot starts again)');
    const watcher = new DeployWatcher(bot.deps);
    await watcher.start();
    watcher.stop();
    await t.settle();
    const card = t.message('C_REL', `Deployment #${id} of R2 was interrupted`);
    // the time it was approved shows as a Slack date (each reader's own time zone), its ISO time the fallback
    const approvedAt = (await getDeployment(env.db.control, id)).approved_at!;
    const unix = Math.floor(new Date(approvedAt).getTime() / 1000);
    expect(JSON.stringify(card.call.blocks)).toContain(`approved at <!date^${unix}^{date_short_pretty} {time}|${new Date(approvedAt).toISOString()}> but never started (the process that was to run it died): nothing was done`);
    expect(Transcript.text(card.call)).toContain('approved at {slack date} but never started');
    expect(actions(card.call)).toEqual([ACTIONS.deployResume, ACTIONS.deployRollback]);
    // the card as posted, its buttons still there (a copy not yet refreshed on someone's screen)
    const stale = { ...card, call: { ...card.call } };

    await t.press('U0LEAD', card, ACTIONS.deployResume);
    expect(Transcript.text(t.toldTo('U0LEAD').at(-1)!)).toContain('deploy needs the release_manager role');
    expect((await getDeployment(env.db.control, id)).status).toBe('approved');

    await t.press('U0RM1', card, ACTIONS.deployResume);
    expect((await getDeployment(env.db.control, id)).status).toBe('succeeded');
    const progress = t.posted('C_REL').filter((m) => m.n > card.n).map((m) => Transcript.text(m.call)).join('\n');
    expect(progress).toContain(`*Deployment #${id} of R2 to production*: succeeded`);
    // the go/no-go card follows: the deployment succeeded
    expect(Transcript.text(t.posted('C_REL').find((m) => m.n === goCard.n)!.call)).toContain(`Deployment #${id}: *succeeded*`);
    // the interrupted card follows too: updated in place, it says who resumed it and how it ended, without its buttons
    const closed = t.posted('C_REL').find((m) => m.n === card.n)!.call;
    expect(Transcript.text(closed)).toContain(`*then resumed* by @U0RM1: succeeded`);
    expect(actions(closed)).toEqual([]);

    t.note("(U0RM2's screen still shows the card as it was first posted, with its buttons)");
    await t.press('U0RM2', stale, ACTIONS.deployResume);
    expect(Transcript.text(t.toldTo('U0RM2').at(-1)!)).toContain(`deployment #${id} is succeeded: nothing to resume`);
    expect((await getDeployment(env.db.control, id)).status).toBe('succeeded');
    t.check();
  });
});
