import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import { ROOT, TEST_AUDIT_KEY, testEnv, type TestEnv } from '../helpers.js';
import { freePort } from '../process.js';
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
