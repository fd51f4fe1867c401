import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import PgBoss from 'pg-boss';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Ctx } from '../../../src/engine/kernel/context.js';
import { dispatchToAgents, jobExpirySeconds, shardJobKey, SHARD_QUEUE } from '../../../src/engine/tiers/agents.js';
import { databaseUrl } from '../../../src/engine/tiers/runner.js';
import type { ShardSpec } from '../../../src/engine/tiers/types.js';
import { startCli, type CliProcess, type CliResult } from '../../process.js';
import { testEnv, type TestEnv } from '../../helpers.js';

/**
 * The pg-boss runner with real `tributary agent` processes on the suite's PostgreSQL: shards spread over
 * two agents; a missing command is errored, not passed; an agent killed with SIGKILL mid-shard has its
 * shard retried by the other agent (nothing lost, nothing counted twice); SIGTERM stops an agent
 * gracefully (exit 0), handing a running shard back to the queue.
 */
const TIMEOUT_SECONDS = 5;

/** A team's test command: runs the tests listed in {tests} (sleeping each test's planned time) and writes JUnit XML. */
const RUNNER = `import fs from 'node:fs';
const [testsFile, junit, planFile] = process.argv.slice(2);
fs.writeFileSync(junit + '.started', String(process.pid));
const plan = JSON.parse(fs.readFileSync(planFile, 'utf8'));
const names = fs.readFileSync(testsFile, 'utf8').split('\\n').filter(Boolean);
const cases = [];
for (const name of names) {
  const ms = plan[name] ?? 20;
  await new Promise((resolve) => setTimeout(resolve, ms));
  cases.push('<testcase name="' + name + '" time="' + ms / 1000 + '"/>');
}
fs.writeFileSync(junit, '<?xml version="1.0" encoding="UTF-8"?>\\n<testsuites><testsuite name="agents" tests="' + cases.length + '">' + cases.join('') + '</testsuite></testsuites>\\n');
`;

let env: TestEnv;
let dir: string;
const plan: Record<string, number> = {};
const agents: Agent[] = [];

interface Agent {
  proc: CliProcess;
  pid: number;
  stderr(): string;
  /** The agent's pino log lines. */
  logs(): Record<string, unknown>[];
  exited: Promise<CliResult>;
}

function startAgent(args: string[] = []): Agent {
  const proc = startCli(['-c', env.configFile, 'agent', ...args]);
  let err = '';
  proc.child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const agent: Agent = {
    proc,
    pid: proc.child.pid!,
    stderr: () => err,
    logs: () =>
      err
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>),
    exited: proc.done,
  };
  agents.push(agent);
  return agent;
}

async function ready(a: Agent): Promise<void> {
  await vi.waitFor(() => expect(a.logs().some((l) => l.msg === 'agent started: waiting for shards'), a.stderr()).toBe(true), { timeout: 120_000, interval: 100 });
}

/** Running (a zombie left for a reaper counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** A run with its shard rows (what runTests inserts) and the specs to dispatch. */
async function newRun(shards: { tests: [string, number][]; command?: string }[]): Promise<{ runId: number; specs: ShardSpec[] }> {
  const db = env.db.control;
  const testing = env.config.testing!;
  for (const s of shards) for (const [name, ms] of s.tests) plan[name] = ms;
  fs.writeFileSync(path.join(dir, 'plan.json'), JSON.stringify(plan));
  const [run] = await db('test_runs').insert({ release: 'R2', tier: '1', env: 'staging', dispatch: 'pgboss', started_by: 'cli:test' }).returning('id');
  const runId = (run as { id: number }).id;
  await db('test_shards').insert(shards.map((s, i) => ({ run_id: runId, idx: i + 1, tests: JSON.stringify(s.tests.map(([n]) => ({ id: n, name: n, features: [], smoke: false }))) })));
  const staging = env.config.envs.get('staging')!;
  const specs = shards.map((s, i) => ({
    runId,
    index: i + 1,
    count: shards.length,
    tests: s.tests.map(([n]) => ({ id: n, name: n })),
    command: s.command ?? testing.command,
    cwd: testing.cwd,
    env: 'staging',
    databaseUrl: databaseUrl(env.db.envParams(staging), staging.schema),
    timeoutMs: testing.timeoutMs,
    workDir: path.join(dir, 'runs', String(runId)),
    retries: 0,
  }));
  return { runId, specs };
}

/** Dispatches a run and collects the shards reported to onShardRecorded. */
function dispatch(specs: ShardSpec[], ctx: Ctx = env.ctx): { done: Promise<void>; recorded: number[] } {
  const recorded: number[] = [];
  const done = dispatchToAgents(ctx, specs[0]!.runId, specs, (i) => void recorded.push(i));
  return { done, recorded };
}

async function shardRows(runId: number): Promise<{ idx: number; status: string; attempts: number; agent: string | null; error: string | null }[]> {
  return env.db.control('test_shards').where({ run_id: runId }).orderBy('idx').select('idx', 'status', 'attempts', 'agent', 'error');
}

async function results(runId: number): Promise<{ test_id: string; status: string; shard: number }[]> {
  return env.db.control('test_results').where({ run_id: runId }).orderBy('test_id').select('test_id', 'status', 'shard');
}

async function job(runId: number, index: number): Promise<{ state: string; retry_count: number; output: unknown; data: ShardSpec }> {
  const r = await env.db.control.raw(`select state, retry_count, output, data from pgboss.job where name = ? and singleton_key = ?`, [SHARD_QUEUE, shardJobKey(runId, index)]);
  return r.rows[0];
}

const pidOf = (agentName: string | null) => Number(String(agentName).split(':').pop());

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-agents-'));
  fs.writeFileSync(path.join(dir, 'runner.mjs'), RUNNER);
  fs.writeFileSync(path.join(dir, 'plan.json'), '{}');
  env = await testEnv(1, {
    testing: { command: `node ${path.join(dir, 'runner.mjs')} {tests} {junit} ${path.join(dir, 'plan.json')}`, timeoutSeconds: TIMEOUT_SECONDS, dispatch: 'pgboss', agentWaitSeconds: 60, reportDir: 'reports' },
  });
});

afterAll(async () => {
  for (const a of agents) if (a.proc.child.exitCode === null && a.proc.child.signalCode === null) a.proc.child.kill('SIGKILL');
  await Promise.all(agents.map((a) => a.exited.catch(() => undefined)));
  // test commands orphaned by the killed agent
  for (const e of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(path.join(dir, 'runner.mjs'))) process.kill(Number(e), 'SIGKILL');
    } catch {
      // gone
    }
  }
  await env?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('without agents', () => {
  it('errors a shard no agent takes within testing.agentWaitSeconds, and cancels its job', async () => {
    const { runId, specs } = await newRun([{ tests: [['lonely @FEAT-C', 10]] }]);
    const ctx: Ctx = { ...env.ctx, config: { ...env.config, testing: { ...env.config.testing!, agentWaitMs: 2000 } } };
    const d = dispatch(specs, ctx);
    await d.done;
    expect(d.recorded).toEqual([1]);
    const [s] = await shardRows(runId);
    expect(s!.status).toBe('errored');
    expect(s!.attempts).toBe(0);
    expect(s!.error).toMatch(/^no agent picked shard 1 within 2 s: is a `tributary agent` running/);
    expect(await results(runId)).toEqual([{ test_id: 'lonely @FEAT-C', status: 'errored', shard: 1 }]);
    // agents started later never run it
    expect((await job(runId, 1)).state).toBe('cancelled');
  }, 240_000);

  it('errors a shard whose job fails on every attempt, with the reason', async () => {
    const { runId, specs } = await newRun([{ tests: [['unlucky @FEAT-C', 10]] }]);
    const d = dispatch(specs);
    await vi.waitFor(async () => expect(await job(runId, 1)).toBeDefined(), { timeout: 120_000, interval: 100 });
    // a worker that fails the job each time it takes it, as a crashing agent would
    const p = env.db.controlParams;
    const boss = new PgBoss({ host: p.host, port: p.port, user: p.user, ...(p.password ? { password: p.password } : {}), database: p.database, schema: 'pgboss', supervise: false, schedule: false, max: 2 });
    boss.on('error', () => undefined);
    await boss.start();
    try {
      for (let attempt = 1; attempt <= 3; attempt++) {
        const taken = await vi.waitFor(
          async () => {
            const [j] = await boss.fetch<ShardSpec>(SHARD_QUEUE);
            expect(j).toBeDefined();
            return j!;
          },
          { timeout: 120_000, interval: 200 },
        );
        expect(taken.data.index).toBe(1);
        await boss.fail(SHARD_QUEUE, taken.id, { message: `disk full on attempt ${attempt}` });
      }
    } finally {
      await boss.stop({ graceful: false });
    }
    await d.done;
    expect(d.recorded).toEqual([1]);
    const [s] = await shardRows(runId);
    expect(s!.status).toBe('errored');
    expect(s!.error).toBe('shard 1 failed on every attempt (3): disk full on attempt 3');
    expect(await results(runId)).toEqual([{ test_id: 'unlucky @FEAT-C', status: 'errored', shard: 1 }]);
  }, 240_000);
});

describe('with two agent processes', () => {
  let a: Agent;
  let b: Agent;

  it('runs the shards of a run across both agents', async () => {
    a = startAgent();
    b = startAgent(['--concurrency', '1']);
    await Promise.all([ready(a), ready(b)]);
    const { runId, specs } = await newRun([1, 2, 3, 4].map((i) => ({ tests: [[`dist ${i}a @FEAT-C`, 400], [`dist ${i}b @FEAT-M`, 400]] as [string, number][] })));
    const d = dispatch(specs);
    await d.done;
    expect([...d.recorded].sort()).toEqual([1, 2, 3, 4]);
    const shards = await shardRows(runId);
    expect(shards.map((s) => [s.status, s.attempts])).toEqual(Array(4).fill(['done', 1]));
    expect(new Set(shards.map((s) => pidOf(s.agent)))).toEqual(new Set([a.pid, b.pid]));
    const rows = await results(runId);
    expect(rows).toHaveLength(8);
    expect(rows.every((r) => r.status === 'passed')).toBe(true);
    for (const s of shards) {
      const ag = pidOf(s.agent) === a.pid ? a : b;
      expect(ag.logs().some((l) => l.msg === 'took shard' && l.runId === runId && l.shard === s.idx && l.attempt === 1)).toBe(true);
      // the agent logs it after recording the shard: the line may still be on its way from the process
      await vi.waitFor(
        () => expect(ag.logs().some((l) => l.msg === 'finished shard' && l.runId === runId && l.shard === s.idx && l.status === 'done' && l.passed === 2)).toBe(true),
        { timeout: 120_000, interval: 50 },
      );
    }
    const j = await job(runId, 1);
    expect(j.state).toBe('completed');
    // the env's password stays out of the queue: agents take it from their own config
    expect(j.data.env).toBe('staging');
    const password = env.db.controlParams.password;
    if (password) expect(JSON.stringify(j.data)).not.toContain(encodeURIComponent(password));
  }, 240_000);

  it('records a shard whose command does not exist as errored, not passed, and goes on', async () => {
    const { runId, specs } = await newRun([
      { tests: [['missing cmd 1 @FEAT-C', 10], ['missing cmd 2 @FEAT-C', 10]], command: `${path.join(dir, 'no-such-runner')} {tests} {junit}` },
      { tests: [['fine after missing @FEAT-M', 10]] },
    ]);
    const d = dispatch(specs);
    await d.done;
    const [bad, good] = await shardRows(runId);
    expect(bad!.status).toBe('errored');
    expect(bad!.error).toMatch(/^shard 1: the test command was not found \(exit 127\)/);
    expect(good!.status).toBe('done');
    expect(await results(runId)).toEqual([
      { test_id: 'fine after missing @FEAT-M', status: 'passed', shard: 2 },
      { test_id: 'missing cmd 1 @FEAT-C', status: 'errored', shard: 1 },
      { test_id: 'missing cmd 2 @FEAT-C', status: 'errored', shard: 1 },
    ]);
    // the job of the errored shard completed: it is not retried (a missing command fails the same everywhere)
    expect((await job(runId, 1)).state).toBe('completed');
    expect(a.proc.child.exitCode).toBeNull();
    expect(b.proc.child.exitCode).toBeNull();
  }, 240_000);

  it('retries on the other agent the shard of an agent killed with SIGKILL mid-shard: nothing lost, nothing counted twice', async () => {
    const { runId, specs } = await newRun([
      { tests: [['long 1 @FEAT-C', 1000], ['long 2 @FEAT-C', 1000], ['long 3 @FEAT-H1', 1000]] },
      { tests: [['short 1 @FEAT-M', 50]] },
    ]);
    const d = dispatch(specs);
    const started = path.join(dir, 'runs', String(runId), 'attempt-1', 'shard-1-run', 'junit.xml.started');
    await vi.waitFor(() => expect(fs.existsSync(started)).toBe(true), { timeout: 120_000, interval: 50 });
    const [s1] = await shardRows(runId);
    expect(s1!.status).toBe('running');
    const victim = [a, b].find((x) => x.pid === pidOf(s1!.agent))!;
    const survivor = victim === a ? b : a;
    expect(victim).toBeDefined();
    const orphan = Number(fs.readFileSync(started, 'utf8'));
    victim.proc.child.kill('SIGKILL');
    expect((await victim.exited).signal).toBe('SIGKILL');
    // the dead agent's command ends with it: its process group is killed when the agent's end of the pipe closes
    await vi.waitFor(() => expect(alive(orphan)).toBe(false), { timeout: 30_000, interval: 50 });

    const t0 = Date.now();
    await d.done;
    // the retry waits for the job's expiry (the shard's timeout plus a margin) and pg-boss's maintenance
    expect(Date.now() - t0).toBeLessThan((jobExpirySeconds(specs[0]!) + 15) * 1000);
    expect([...d.recorded].sort()).toEqual([1, 2]);
    const [r1, r2] = await shardRows(runId);
    expect(r1).toMatchObject({ status: 'done', attempts: 2, error: null });
    expect(pidOf(r1!.agent)).toBe(survivor.pid);
    expect(r2).toMatchObject({ status: 'done', attempts: 1 });
    expect(pidOf(r2!.agent)).toBe(survivor.pid);
    expect(survivor.logs().some((l) => l.msg === 'took shard' && l.runId === runId && l.shard === 1 && l.attempt === 2)).toBe(true);
    const j = await job(runId, 1);
    expect(j.state).toBe('completed');
    expect(j.retry_count).toBe(1);

    // the run's results: each test once, from the retry
    const rows = await results(runId);
    expect(rows.map((r) => r.test_id)).toEqual(['long 1 @FEAT-C', 'long 2 @FEAT-C', 'long 3 @FEAT-H1', 'short 1 @FEAT-M']);
    expect(rows.every((r) => r.status === 'passed')).toBe(true);
    expect(await shardRows(runId)).toEqual([r1, r2]);
    b = survivor;
  }, 120_000);

  it('stops on SIGTERM with exit 0; a shard still running after --grace goes back to the queue and runs on another agent', async () => {
    // an idle agent stops at once
    b.proc.child.kill('SIGTERM');
    const idle = await b.exited;
    expect(idle.code, idle.stderr).toBe(0);
    expect(b.logs().some((l) => l.msg === 'agent stopped')).toBe(true);

    const c = startAgent(['--name', 'agent-c', '--grace', '1']);
    await ready(c);
    const { runId, specs } = await newRun([
      { tests: [['graceful 1 @FEAT-C', 1500], ['graceful 2 @FEAT-C', 1500]] },
      { tests: [['queued 1 @FEAT-M', 1500], ['queued 2 @FEAT-M', 1500]] },
    ]);
    const d = dispatch(specs);
    const started = path.join(dir, 'runs', String(runId), 'attempt-1', 'shard-1-run', 'junit.xml.started');
    await vi.waitFor(() => expect(fs.existsSync(started)).toBe(true), { timeout: 120_000, interval: 50 });
    const command = Number(fs.readFileSync(started, 'utf8'));
    c.proc.child.kill('SIGTERM');
    const stopped = await c.exited;
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(c.logs().some((l) => l.msg === 'released shard: another agent runs it' && l.runId === runId && l.shard === 1)).toBe(true);
    // its test command was stopped with it, and the shard waits for another agent
    expect(alive(command)).toBe(false);
    expect(await shardRows(runId)).toEqual([
      expect.objectContaining({ idx: 1, status: 'pending', attempts: 1, agent: 'agent-c' }),
      expect.objectContaining({ idx: 2, status: 'pending', attempts: 0, agent: null }),
    ]);
    expect((await job(runId, 1)).state).toBe('retry');

    // an agent working two shards at once takes both
    const e = startAgent(['--name', 'agent-e', '--concurrency', '2']);
    await d.done;
    expect(await shardRows(runId)).toEqual([
      expect.objectContaining({ idx: 1, status: 'done', attempts: 2, agent: 'agent-e' }),
      expect.objectContaining({ idx: 2, status: 'done', attempts: 1, agent: 'agent-e' }),
    ]);
    const [w1, w2] = await env.db.control('test_shards').where({ run_id: runId }).orderBy('idx').select('started_at', 'finished_at');
    expect(w1.started_at < w2.finished_at && w2.started_at < w1.finished_at).toBe(true);
    expect((await results(runId)).map((r) => r.status)).toEqual(['passed', 'passed', 'passed', 'passed']);
    e.proc.child.kill('SIGTERM');
    expect((await e.exited).code).toBe(0);
  }, 120_000);
});
