import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { getDeployment } from '../../src/engine/deploy/deployment.js';
import { ACTIONS } from '../../src/slack/ids.js';
import { dumpProduction, readyToDeploy } from '../deploy-setup.js';
import type { TestEnv } from '../helpers.js';
import { cli, freePort, output, processAlive, startBot, startCli } from '../process.js';
import { actionBody, FakeSlack, signedPost } from '../slack/fake-slack.js';

/**
 * Real processes end to end: `tributary deploy go` (the Go that completes the quorum runs the deployment
 * in the foreground) is killed with SIGKILL mid-deployment; then the bot (`node src/start.ts`) starts,
 * posts the interrupted card where it stopped, and its Resume button finishes the deployment.
 */
const SECRET = 'proc-deploy-secret';
let env: TestEnv;
let fake: FakeSlack;
let app: string;

beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
  app = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-proc-app-'));
  env = await readyToDeploy(app, {
    roles: { reviewer: [], qa_lead: ['U0LEAD'], release_manager: ['U0RM1', 'U0RM2'] },
    slack: { releaseChannel: 'C_REL' },
  });
});
afterAll(async () => {
  await env?.close();
  await fake?.stop();
});

type Blocks = { type: string; elements?: { action_id: string; value: string }[] }[];

it('the CLI running a deployment is killed; a new bot process reports it with Resume, and Resume finishes it', async () => {
  const dataBefore = await dumpProduction(env);
  const asked = await cli(['--config', env.configFile, '--as', 'U0RM1', 'deploy', 'R2']);
  expect(asked.code, output(asked)).toBe(0);
  const id = Number(/Deployment #(\d+) of R2/.exec(asked.stdout)![1]);

  fs.writeFileSync(path.join(app, 'hang'), 'migrate-up');
  const go = startCli(['--config', env.configFile, '--as', 'U0RM2', 'deploy', 'go', String(id), '--rationale', 'tier 2 is green']);
  await vi.waitFor(() => expect(fs.existsSync(path.join(app, 'hanging'))).toBe(true), { timeout: 120_000, interval: 50 });
  go.child.kill('SIGKILL');
  expect((await go.done).signal).toBe('SIGKILL');
  const [, pid] = fs.readFileSync(path.join(app, 'hanging'), 'utf8').split(' ');
  // the team's hanging command ends with the process that ran it (its guard kills its group)
  await vi.waitFor(() => expect(processAlive(Number(pid))).toBe(false), { timeout: 60_000, interval: 50 });
  fs.rmSync(path.join(app, 'hang'));
  expect((await getDeployment(env.db.control, id)).status).toBe('running');
  // killed after deploying the code, before the data: code and data differ, and the card must say so
  expect(path.basename(fs.readlinkSync(path.join(app, 'current')))).toBe('v2');
  expect(await dumpProduction(env)).toBe(dataBefore);

  const port = await freePort();
  const bot = startBot({ configFile: env.configFile, apiUrl: fake.apiUrl(), port, botToken: 'xoxb-proc-deploy', signingSecret: SECRET });
  try {
    await vi.waitFor(() => expect(bot.out()).toContain('listening on /slack/events'), { timeout: 120_000 });
    await vi.waitFor(() => expect(fake.of('chat.postMessage').some((m) => String(m.text).includes(`Deployment #${id} of R2 was interrupted`))).toBe(true), { timeout: 120_000 });
    const card = fake.of('chat.postMessage').find((m) => String(m.text).includes('was interrupted'))!;
    expect(card.channel).toBe('C_REL');
    expect(JSON.stringify(card.blocks)).toContain('stopped at migrate-up: code at v2, data as before');
    const resume = (card.blocks as Blocks).flatMap((b) => b.elements ?? []).find((e) => e.action_id === ACTIONS.deployResume)!;
    expect((card.blocks as Blocks).flatMap((b) => b.elements ?? []).map((e) => e.action_id)).toEqual([ACTIONS.deployResume, ACTIONS.deployRollback]);

    const res = await signedPost(`http://127.0.0.1:${port}/slack/events`, actionBody(fake, 'U0RM2', ACTIONS.deployResume, resume.value, { channel: 'C_REL', ts: String(card.ts ?? '1') }), SECRET);
    expect(res.status).toBe(200);
    await vi.waitFor(async () => expect((await getDeployment(env.db.control, id)).status).toBe('succeeded'), { timeout: 120_000, interval: 200 });
    await vi.waitFor(() => expect(fake.of('chat.update').some((u) => String(u.text) === `Deployment #${id} of R2: succeeded`)).toBe(true), { timeout: 120_000 });
    const done = await getDeployment(env.db.control, id);
    // the step in flight ran again; the ones done before the crash were not repeated
    expect(done.steps.map((s) => `${s.name}:${s.status}`)).toContain('migrate-up:done');
    expect(path.basename(fs.readlinkSync(path.join(app, 'current')))).toBe('v2');
    expect((await env.sql(`select count(*)::int as n from prod.users where release = 'R2'`)).rows[0].n).toBeGreaterThan(1);
    expect(fs.readFileSync(path.join(app, 'calls'), 'utf8').split('\n').filter((c) => c === 'deploy v2')).toHaveLength(1);
  } finally {
    bot.child.kill('SIGTERM');
    expect(await bot.exited).toEqual([0, null]);
  }
  expect(bot.out()).not.toContain('xoxb-proc-deploy');
}, 120_000);
