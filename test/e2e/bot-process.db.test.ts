import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { testEnv, type TestEnv } from '../helpers.js';
import { freePort, processState, startBot } from '../process.js';
import { FakeSlack, signedPost, slashBody } from '../slack/fake-slack.js';

/** `npm start` as a real process: it serves, and SIGTERM stops it cleanly after finishing its acks. */
let env: TestEnv;
let fake: FakeSlack;

beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
  env = await testEnv(2);
});
afterAll(async () => {
  await env?.close();
  await fake?.stop();
});

const bot = (port: number, failpoints?: string) =>
  startBot({
    configFile: env.configFile,
    apiUrl: fake.apiUrl(),
    port,
    botToken: 'xoxb-proc-test',
    signingSecret: 'proc-secret',
    env: failpoints ? { TRIBUTARY_FAILPOINTS: failpoints } : {},
  });

it('serves over HTTP, then shuts down gracefully on SIGTERM', async () => {
  const port = await freePort();
  const b = bot(port);
  await vi.waitFor(() => expect(b.out()).toContain('listening on /slack/events'), { timeout: 120_000 });
  const res = await signedPost(`http://127.0.0.1:${port}/slack/events`, slashBody(fake, 'help'), 'proc-secret');
  expect(res.status).toBe(200);
  expect(res.body).toContain('/release status');
  b.child.kill('SIGTERM');
  expect(await b.exited).toEqual([0, null]);
  expect(b.out()).toContain('"msg":"stopped"');
  expect(b.out()).not.toContain('xoxb-proc-test');
}, 240_000);

it('a SIGTERM while the bot is still starting (scheduler up, listener not yet open) waits for the start, then stops in order', async () => {
  const b = bot(await freePort(), 'bot.before-listen=stop');
  await vi.waitFor(() => expect(b.out()).toContain('failpoint bot.before-listen: stopped'), { timeout: 120_000 });
  await vi.waitFor(() => expect(processState(b.child.pid!)).toBe('T'), { timeout: 60_000, interval: 20 });
  // the signal waits while the process is stopped, and is handled as soon as it goes on
  b.child.kill('SIGTERM');
  b.child.kill('SIGCONT');
  expect(await b.exited, b.out()).toEqual([0, null]);
  expect(b.out()).toContain('"msg":"stopped"');
  expect(b.out().indexOf('listening on /slack/events')).toBeLessThan(b.out().indexOf('"msg":"stopped"'));
}, 240_000);
