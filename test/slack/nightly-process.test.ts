import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { configDoc, ROOT, TEST_AUDIT_KEY, testEnv, type TestEnv } from '../helpers.js';
import { FakeSlack } from './fake-slack.js';

/**
 * The nightly schedule with real bot processes (`npm start`'s src/start.ts) on one control database:
 * two bots make one run per slot, never two and never overlapping, each posted once; a bot started after
 * missing several nights catches up once, and a second start does not catch up again.
 */
let env: TestEnv;
let fake: FakeSlack;
let behaviour: string;
const bots: Bot[] = [];

interface Bot {
  child: ChildProcess;
  out(): string;
  exited: Promise<number | null>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function writeConfig(nightly: Record<string, unknown>): void {
  const doc = configDoc(env.database, 1, {
    releases: { R1: { features: { 'FEAT-OLD': { priority: 'high', owner: 'U0ZOE' } } }, R2: { features: { 'FEAT-C': { priority: 'critical', owner: 'U0ALICE' } } } },
    testing: { command: `node ${path.join(ROOT, 'test/fixtures/fake-runner.mjs')} {tests} {junit} ${behaviour}`, agents: 1, shards: 1, timeoutSeconds: 30, reportDir: 'reports' },
    nightly,
  });
  fs.writeFileSync(env.configFile, stringify(doc));
}

async function startBot(): Promise<Bot> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/start.ts')], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, TRIBUTARY_CONFIG: env.configFile, TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY, SLACK_BOT_TOKEN: 'xoxb-proc-test', SLACK_SIGNING_SECRET: 'proc-secret', SLACK_API_URL: fake.apiUrl(), PORT: String(port) },
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const bot: Bot = { child, out: () => out, exited: new Promise((r) => child.on('exit', (code) => r(code))) };
  bots.push(bot);
  await vi.waitFor(() => expect(out).toContain('nightly regression scheduled'), { timeout: 30_000, interval: 100 });
  return bot;
}

async function stop(bot: Bot): Promise<void> {
  bot.child.kill('SIGTERM');
  expect(await bot.exited, bot.out()).toBe(0);
}

const nightlyPosts = () => fake.of('chat.postMessage').filter((p) => String(p.text).startsWith('Nightly regression'));

beforeAll(async () => {
  fake = new FakeSlack();
  await fake.start();
  env = await testEnv(1);
  behaviour = path.join(env.dir, 'behaviour.json');
  fs.writeFileSync(behaviour, JSON.stringify({ suite: ['login works @FEAT-C', 'R1 statements @FEAT-OLD', 'service answers @smoke'] }));
});

afterAll(async () => {
  for (const b of bots) if (b.child.exitCode === null && b.child.signalCode === null) b.child.kill('SIGKILL');
  await env?.close();
  await fake?.stop();
});

describe('the nightly schedule across bot processes', () => {
  it('two bots on one control database run each slot once, never overlapping, and post it once', async () => {
    writeConfig({ schedule: '*/3 * * * * *', timezone: 'Europe/Berlin', channel: 'C_NIGHT' });
    const [a, b] = await Promise.all([startBot(), startBot()]);
    const db = env.db.control;
    await vi.waitFor(async () => expect((await db('nightly_runs').where({ kind: 'nightly', status: 'done' })).length).toBeGreaterThanOrEqual(3), { timeout: 40_000, interval: 200 });
    await Promise.all([stop(a), stop(b)]);

    const rows = await db('nightly_runs').where({ kind: 'nightly' }).orderBy('id');
    const runs = await db('test_runs').where({ tier: 'nightly' }).orderBy('id');
    // one row per slot (the key is unique) and one test run per row: no slot ran twice
    expect(new Set(rows.map((r) => r.slot)).size).toBe(rows.length);
    const finished = rows.filter((r) => r.status === 'done');
    expect(runs.map((r) => r.id).sort()).toEqual(rows.filter((r) => r.test_run_id).map((r) => r.test_run_id).sort());
    expect(finished.length).toBeGreaterThanOrEqual(3);
    for (const r of rows) expect(r.slot).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:(00|03|06|09|12|15|18|21|24|27|30|33|36|39|42|45|48|51|54|57)\[Europe\/Berlin\]$/);
    // runs never overlap
    for (let i = 1; i < runs.length; i++) expect(new Date(runs[i]!.started_at).getTime()).toBeGreaterThanOrEqual(new Date(runs[i - 1]!.finished_at).getTime());
    // both processes scheduled, and each finished run was posted exactly once
    const pids = new Set([a.child.pid, b.child.pid].map(String));
    expect(rows.every((r) => pids.has(String(r.claimed_by).split(':').pop() ?? ''))).toBe(true);
    expect(nightlyPosts()).toHaveLength(finished.filter((r) => r.posted_at).length);
    expect(finished.filter((r) => !r.posted_at).length).toBeLessThanOrEqual(1);
    expect(a.out() + b.out()).not.toContain('xoxb-proc-test');
  }, 90_000);

  it('catches up a missed night once at start, not once per missed night, and not again at the next start', async () => {
    const db = env.db.control;
    await db('nightly_runs').delete();
    fake.reset();
    writeConfig({ schedule: '0 3 * * *', timezone: 'UTC', channel: 'C_NIGHT' });
    // the bot last ran a slot three nights ago; it was down since
    const old = new Date(Date.now() - 3 * 86_400_000);
    const oldKey = `${old.toISOString().slice(0, 10)}T03:00:00[UTC]`;
    await db('nightly_runs').insert({ kind: 'nightly', slot: oldKey, scheduled_for: new Date(`${old.toISOString().slice(0, 10)}T03:00:00Z`), trigger: 'schedule', status: 'done', claimed_by: 'gone:1', finished_at: old, posted_at: old });

    const bot = await startBot();
    await vi.waitFor(async () => expect(await db('nightly_runs').where({ trigger: 'catch-up' }).whereNotNull('posted_at')).toHaveLength(1), { timeout: 30_000, interval: 200 });
    await stop(bot);
    const now = new Date();
    const today = `${now.toISOString().slice(0, 10)}T03:00:00[UTC]`;
    const yesterday = `${new Date(now.getTime() - 86_400_000).toISOString().slice(0, 10)}T03:00:00[UTC]`;
    const caught = await db('nightly_runs').where({ trigger: 'catch-up' });
    expect(caught.map((r) => r.slot)).toEqual([now.getUTCHours() >= 3 ? today : yesterday]);
    expect(caught[0].status).toBe('done');
    expect(await db('nightly_runs').where({ kind: 'nightly' })).toHaveLength(2);
    expect(nightlyPosts()).toHaveLength(1);

    const again = await startBot();
    await new Promise((r) => setTimeout(r, 1500));
    await stop(again);
    expect(await db('nightly_runs').where({ kind: 'nightly' })).toHaveLength(2);
    expect(nightlyPosts()).toHaveLength(1);
  }, 90_000);
});
