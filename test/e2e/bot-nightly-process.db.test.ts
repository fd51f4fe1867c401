import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { recentNights } from '../../src/engine/nightly/run.js';
import { configDoc, ROOT, testEnv, type TestEnv } from '../helpers.js';
import { freePort, processAlive, startBot, type BotProcess } from '../process.js';
import { FakeSlack } from '../slack/fake-slack.js';

/**
 * The nightly schedule with real bot processes (`npm start`'s src/start.ts) on one control database:
 * two bots make one run per slot, never two and never overlapping, each posted once; a bot started after
 * missing several nights catches up once, and a second start does not catch up again; a slot whose bot
 * was killed mid-run (SIGKILL) is run again once by the next bot, and never a third time.
 */
let env: TestEnv;
let fake: FakeSlack;
let behaviour: string;
const bots: Bot[] = [];

type Bot = BotProcess;

function writeConfig(nightly: Record<string, unknown>): void {
  const doc = configDoc(env.database, 1, {
    releases: { R1: { features: { 'FEAT-OLD': { priority: 'high', owner: 'U0ZOE' } } }, R2: { features: { 'FEAT-C': { priority: 'critical', owner: 'U0ALICE' } } } },
    testing: { command: `node ${path.join(ROOT, 'test/fixtures/fake-runner.mjs')} {tests} {junit} ${behaviour}`, agents: 1, shards: 1, timeoutSeconds: 30, reportDir: 'reports' },
    nightly,
  });
  fs.writeFileSync(env.configFile, stringify(doc));
}

async function start(): Promise<Bot> {
  const bot = startBot({ configFile: env.configFile, apiUrl: fake.apiUrl(), port: await freePort(), botToken: 'xoxb-proc-test', signingSecret: 'proc-secret' });
  bots.push(bot);
  await vi.waitFor(() => expect(bot.out()).toContain('nightly regression scheduled'), { timeout: 120_000, interval: 100 });
  return bot;
}

async function stop(bot: Bot): Promise<void> {
  bot.child.kill('SIGTERM');
  expect(await bot.exited, bot.out()).toEqual([0, null]);
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
    const [a, b] = await Promise.all([start(), start()]);
    const db = env.db.control;
    await vi.waitFor(async () => expect((await db('nightly_runs').where({ kind: 'nightly', status: 'done' })).length).toBeGreaterThanOrEqual(3), { timeout: 120_000, interval: 200 });
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
  }, 240_000);

  it('catches up a missed night once at start, not once per missed night, and not again at the next start', async () => {
    const db = env.db.control;
    await db('nightly_runs').delete();
    fake.reset();
    writeConfig({ schedule: '0 3 * * *', timezone: 'UTC', channel: 'C_NIGHT' });
    // the bot last ran a slot three nights ago; it was down since
    const old = new Date(Date.now() - 3 * 86_400_000);
    const oldKey = `${old.toISOString().slice(0, 10)}T03:00:00[UTC]`;
    await db('nightly_runs').insert({ kind: 'nightly', slot: oldKey, scheduled_for: new Date(`${old.toISOString().slice(0, 10)}T03:00:00Z`), trigger: 'schedule', status: 'done', claimed_by: 'gone:1', finished_at: old, posted_at: old });

    const bot = await start();
    await vi.waitFor(async () => expect(await db('nightly_runs').where({ trigger: 'catch-up' }).whereNotNull('posted_at')).toHaveLength(1), { timeout: 120_000, interval: 200 });
    await stop(bot);
    const now = new Date();
    const today = `${now.toISOString().slice(0, 10)}T03:00:00[UTC]`;
    const yesterday = `${new Date(now.getTime() - 86_400_000).toISOString().slice(0, 10)}T03:00:00[UTC]`;
    const caught = await db('nightly_runs').where({ trigger: 'catch-up' });
    expect(caught.map((r) => r.slot)).toEqual([now.getUTCHours() >= 3 ? today : yesterday]);
    expect(caught[0].status).toBe('done');
    expect(await db('nightly_runs').where({ kind: 'nightly' })).toHaveLength(2);
    expect(nightlyPosts()).toHaveLength(1);

    // (a clean stop waits for its start's catch-up and post sweep to finish)
    const again = await start();
    await stop(again);
    expect(await db('nightly_runs').where({ kind: 'nightly' })).toHaveLength(2);
    expect(nightlyPosts()).toHaveLength(1);
  }, 240_000);

  it('a slot left running by a bot killed mid-run (SIGKILL) is run again exactly once by the next bot', async () => {
    const db = env.db.control;
    await db('nightly_runs').delete();
    fake.reset();
    const firstRun = Number((await db('test_runs').max('id as m').first())?.m ?? 0) + 1;
    const nightlyRuns = () => db('test_runs').where({ tier: 'nightly' }).where('id', '>=', firstRun).orderBy('id');
    const hang = path.join(env.dir, 'hang');
    fs.writeFileSync(hang, '');
    fs.writeFileSync(behaviour, JSON.stringify({ suite: ['login works @FEAT-C', 'R1 statements @FEAT-OLD', 'service answers @smoke'], hangWhile: hang }));
    writeConfig({ schedule: '0 3 * * *', timezone: 'UTC', channel: 'C_NIGHT' });
    const old = new Date(Date.now() - 2 * 86_400_000);
    const day = old.toISOString().slice(0, 10);
    await db('nightly_runs').insert({ kind: 'nightly', slot: `${day}T03:00:00[UTC]`, scheduled_for: new Date(`${day}T03:00:00Z`), trigger: 'schedule', status: 'done', claimed_by: 'gone:1', finished_at: old, posted_at: old });

    // bot A catches up the newest slot; its test command hangs; A is killed with SIGKILL mid-run
    const a = await start();
    await vi.waitFor(() => expect(fs.existsSync(`${hang}.pid`)).toBe(true), { timeout: 120_000, interval: 100 });
    const runnerPid = Number(fs.readFileSync(`${hang}.pid`, 'utf8'));
    const [slot] = await db('nightly_runs').where({ trigger: 'catch-up' });
    expect(slot).toMatchObject({ status: 'running', attempts: 1, claimed_by: expect.stringMatching(new RegExp(`:${a.child.pid}$`)) });
    // App Home: running while A lives
    expect((await recentNights(env.ctx)).find((n) => n.id === slot.id)).toMatchObject({ status: 'running', interrupted: false });
    a.child.kill('SIGKILL');
    await a.exited;
    // its test command (a process group of its own) ends with the bot that ran it
    await vi.waitFor(() => expect(processAlive(runnerPid)).toBe(false), { timeout: 60_000, interval: 50 });
    fs.rmSync(hang);
    // its lock went with its connection: the row still says running, but nobody runs it
    await vi.waitFor(async () => expect((await recentNights(env.ctx)).find((n) => n.id === slot.id)).toMatchObject({ status: 'running', interrupted: true }), { timeout: 120_000, interval: 100 });
    expect((await nightlyRuns()).map((r) => r.status)).toEqual(['running']);

    // bot B starts: the slot is run again, once, and posted once
    const b = await start();
    await vi.waitFor(async () => expect((await db('nightly_runs').where({ id: slot.id }).first()).posted_at).not.toBeNull(), { timeout: 120_000, interval: 200 });
    await stop(b);
    const again = await db('nightly_runs').where({ id: slot.id }).first();
    expect(again).toMatchObject({ status: 'done', attempts: 2, slot: slot.slot, claimed_by: expect.stringMatching(new RegExp(`:${b.child.pid}$`)) });
    expect(b.out()).toContain('a slot was left running by a process that stopped: running it again');
    // the killed attempt's test run is closed as errored; the second attempt's is the slot's
    const runs = await nightlyRuns();
    expect(runs.map((r) => r.status)).toEqual(['errored', expect.stringMatching(/^(passed|failed)$/)]);
    expect(runs[0].error).toMatch(/^interrupted: /);
    expect(again.test_run_id).toBe(runs[1].id);
    expect(await db('nightly_runs').where({ kind: 'nightly' })).toHaveLength(2);
    expect(nightlyPosts()).toHaveLength(1);

    // bot C: nothing to run again, nothing posted again
    // (a clean stop waits for its start's catch-up to finish)
    const c = await start();
    await stop(c);
    expect(await db('nightly_runs').where({ id: slot.id }).first()).toMatchObject({ status: 'done', attempts: 2 });
    expect(await nightlyRuns()).toHaveLength(2);
    expect(nightlyPosts()).toHaveLength(1);
  }, 120_000);
});
