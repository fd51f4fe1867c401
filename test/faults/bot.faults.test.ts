import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { freePort, startBot } from '../process.js';
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

const bot = (copy: Copy, port: number, failpoints?: string) =>
  startBot({
    configFile: copy.configFile,
    apiUrl: fake.apiUrl(),
    port,
    botToken: 'xoxb-fault-test',
    signingSecret: 'fault-secret',
    env: failpoints ? { TRIBUTARY_FAILPOINTS: failpoints } : {},
  });

describe('the bot killed with SIGKILL while it starts, then started again', () => {
  it('at bot.before-listen', async () => {
    const verdict: Verdict = { point: 'bot.before-listen', file: FILE, paused: false, recovered: false };
    try {
      const copy = await copyWorld(world);
      const before = await snapshot(copy);
      const port = await freePort();
      const killed = bot(copy, port, 'bot.before-listen=pause');
      await vi.waitFor(() => expect(killed.out()).toContain('failpoint bot.before-listen: paused'), { timeout: 120_000, interval: 50 });
      verdict.paused = true;
      killed.child.kill('SIGKILL');
      expect(await killed.exited).toEqual([null, 'SIGKILL']);

      const again = bot(copy, port);
      await vi.waitFor(() => expect(again.out()).toContain('listening on /slack/events'), { timeout: 120_000, interval: 50 });
      const res = await signedPost(`http://127.0.0.1:${port}/slack/events`, slashBody(fake, 'status R2'), 'fault-secret');
      expect(res.status).toBe(200);
      again.child.kill('SIGTERM');
      expect(await again.exited, again.out()).toEqual([0, null]);
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
