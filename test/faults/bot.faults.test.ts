import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ROOT, TEST_AUDIT_KEY } from '../helpers.js';
import { freePort } from '../process.js';
import { FakeSlack, signedPost, slashBody } from '../slack/fake-slack.js';
import { copyWorld, dropWorlds, report, snapshot, type Copy, type Verdict, type World } from './harness.js';
import { seedStage } from './worlds.js';

/**
 * A bot (`npm start`) killed with SIGKILL while it starts (bot.before-listen: its start-up sweep done and
 * its scheduler up, its listener not yet open): the next bot starts, serves, and stops cleanly, and the
 * world is as it was (a start writes nothing a killed start could leave half done).
 */
let world: World;
let fake: FakeSlack;
const FILE = 'bot.faults.test.ts';

beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
  world = await seedStage('validated');
});

afterAll(async () => {
  await dropWorlds(world);
  await fake?.stop();
});

function startBot(copy: Copy, port: number, failpoints?: string) {
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/src/start.js')], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      TRIBUTARY_CONFIG: copy.configFile,
      TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY,
      ...(failpoints ? { TRIBUTARY_FAILPOINTS: failpoints } : {}),
      SLACK_BOT_TOKEN: 'xoxb-fault-test',
      SLACK_SIGNING_SECRET: 'fault-secret',
      SLACK_API_URL: fake.apiUrl(),
      PORT: String(port),
    },
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('exit', (code, signal) => r([code, signal])));
  return { child, out: () => out, exited };
}

describe('the bot killed with SIGKILL while it starts, then started again', () => {
  it('at bot.before-listen', async () => {
    const verdict: Verdict = { point: 'bot.before-listen', file: FILE, paused: false, recovered: false };
    try {
      const copy = await copyWorld(world);
      const before = await snapshot(copy);
      const port = await freePort();
      const killed = startBot(copy, port, 'bot.before-listen=pause');
      await vi.waitFor(() => expect(killed.out()).toContain('failpoint bot.before-listen: paused'), { timeout: 120_000, interval: 50 });
      verdict.paused = true;
      killed.child.kill('SIGKILL');
      expect(await killed.exited).toEqual([null, 'SIGKILL']);

      const bot = startBot(copy, port);
      await vi.waitFor(() => expect(bot.out()).toContain('listening on /slack/events'), { timeout: 120_000, interval: 50 });
      const res = await signedPost(`http://127.0.0.1:${port}/slack/events`, slashBody(fake, 'status R2'), 'fault-secret');
      expect(res.status).toBe(200);
      bot.child.kill('SIGTERM');
      expect(await bot.exited, bot.out()).toEqual([0, null]);
      expect(await snapshot(copy)).toEqual(before);
      verdict.recovered = true;
    } catch (err) {
      verdict.error = (err as Error).message.slice(0, 2000);
      throw err;
    } finally {
      report(verdict);
    }
  });
});
