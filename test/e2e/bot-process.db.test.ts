import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { ROOT, TEST_AUDIT_KEY, testEnv, type TestEnv } from '../helpers.js';
import { freePort, processState } from '../process.js';
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

it('serves over HTTP, then shuts down gracefully on SIGTERM', async () => {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/src/start.js')], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      TRIBUTARY_CONFIG: env.configFile,
      TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY,
      SLACK_BOT_TOKEN: 'xoxb-proc-test',
      SLACK_SIGNING_SECRET: 'proc-secret',
      SLACK_API_URL: fake.apiUrl(),
      PORT: String(port),
    },
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  await vi.waitFor(() => expect(out).toContain('listening on /slack/events'), { timeout: 120_000 });
  const res = await signedPost(`http://127.0.0.1:${port}/slack/events`, slashBody(fake, 'help'), 'proc-secret');
  expect(res.status).toBe(200);
  expect(res.body).toContain('/release status');
  child.kill('SIGTERM');
  expect(await exited).toBe(0);
  expect(out).toContain('"msg":"stopped"');
  expect(out).not.toContain('xoxb-proc-test');
}, 240_000);

it('a SIGTERM while the bot is still starting (scheduler up, listener not yet open) waits for the start, then stops in order', async () => {
  const port = await freePort();
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/src/start.js')], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      TRIBUTARY_CONFIG: env.configFile,
      TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY,
      TRIBUTARY_FAILPOINTS: 'bot.before-listen=stop',
      SLACK_BOT_TOKEN: 'xoxb-proc-test',
      SLACK_SIGNING_SECRET: 'proc-secret',
      SLACK_API_URL: fake.apiUrl(),
      PORT: String(port),
    },
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('exit', (code, signal) => r([code, signal])));
  await vi.waitFor(() => expect(out).toContain('failpoint bot.before-listen: stopped'), { timeout: 120_000 });
  await vi.waitFor(() => expect(processState(child.pid!)).toBe('T'), { timeout: 60_000, interval: 20 });
  // the signal waits while the process is stopped, and is handled as soon as it goes on
  child.kill('SIGTERM');
  child.kill('SIGCONT');
  expect(await exited, out).toEqual([0, null]);
  expect(out).toContain('"msg":"stopped"');
  expect(out.indexOf('listening on /slack/events')).toBeLessThan(out.indexOf('"msg":"stopped"'));
}, 240_000);
