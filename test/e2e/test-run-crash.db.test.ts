import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { advisoryLockHolder, ROOT, testEnv, type TestEnv } from '../helpers.js';
import { cli, output, processAlive, startCli } from '../process.js';

/**
 * A test run belongs to the process running it (`tributary test`, a real CLI), which holds the run's lock:
 * killed with SIGKILL, its shards die with it and the next run closes the dead one (errored, with its
 * shards); its lock, or the nightly lock it runs under, lost while it lives, it kills its shards at once
 * and records no result.
 */
let env: TestEnv;
let hang: string;

beforeAll(async () => {
  env = await testEnv(1, {});
  hang = path.join(env.dir, 'hang');
  const behaviour = path.join(env.dir, 'behaviour.json');
  fs.writeFileSync(behaviour, JSON.stringify({ suite: ['service answers @smoke', 'login works @smoke'], hangWhile: hang }));
  const config = fs.readFileSync(env.configFile, 'utf8');
  fs.writeFileSync(env.configFile, `${config}\ntesting:\n  command: node ${path.join(ROOT, 'test/fixtures/fake-runner.mjs')} {tests} {junit} ${behaviour}\n  agents: 1\n  shards: 1\n  timeoutSeconds: 120\n  reportDir: reports\n`);
});

afterAll(async () => {
  await env?.close();
});

/** Starts `tributary test R2 --smoke` with its shard hanging; returns the CLI, its run and the shard's pid. */
async function hangingRun() {
  fs.rmSync(`${hang}.pid`, { force: true });
  fs.writeFileSync(hang, '');
  const run = startCli(['--config', env.configFile, 'test', 'R2', '--smoke']);
  await vi.waitFor(() => expect(fs.existsSync(`${hang}.pid`)).toBe(true), { timeout: 60_000, interval: 50 });
  const shard = Number(fs.readFileSync(`${hang}.pid`, 'utf8'));
  const row = await env.db.control('test_runs').where({ status: 'running' }).orderBy('id', 'desc').first();
  expect(row).toBeDefined();
  return { run, shard, id: row.id as number };
}

describe('a test run whose process is gone', () => {
  it('killed with SIGKILL: its shard dies with it, and the next run closes the dead one', async () => {
    const { run, shard, id } = await hangingRun();
    run.child.kill('SIGKILL');
    expect((await run.done).signal).toBe('SIGKILL');
    // the shard's process group ends with the CLI that ran it
    await vi.waitFor(() => expect(processAlive(shard)).toBe(false), { timeout: 60_000, interval: 50 });
    expect((await env.db.control('test_runs').where({ id }).first()).status).toBe('running');

    fs.rmSync(hang);
    const next = await cli(['--config', env.configFile, 'test', 'R2', '--smoke']);
    expect(next.code, output(next)).toBe(0);
    const dead = await env.db.control('test_runs').where({ id }).first();
    expect(dead.status).toBe('errored');
    expect(dead.error).toMatch(/^interrupted: the process running it stopped/);
    expect(dead.finished_at).not.toBeNull();
    expect((await env.db.control('test_shards').where({ run_id: id })).map((s) => s.status)).toEqual(['errored']);
    expect(await env.db.control('test_results').where({ run_id: id })).toHaveLength(0);
    expect((await env.db.control('test_runs').where('id', '>', id).first()).status).toBe('passed');
  });

  it('its lock lost while the CLI lives (pg_terminate_backend): the shard is killed at once and nothing of it is recorded', async () => {
    const { run, shard, id } = await hangingRun();
    const session = await advisoryLockHolder(env.db.control, `tributary:test-run:${id}`);
    expect(session).toBeDefined();
    const ended = await env.db.control.raw<{ rows: { ok: boolean }[] }>('select pg_terminate_backend(?, 60000) as ok', [session!]);
    expect(ended.rows[0]!.ok).toBe(true);
    // the hang file is still there: only the lost lock ends the shard
    await vi.waitFor(() => expect(processAlive(shard)).toBe(false), { timeout: 60_000, interval: 50 });
    const r = await run.done;
    expect(r.code, output(r)).not.toBe(0);
    expect(r.stderr).toContain(`test run #${id} lost its lock`);
    const dead = await env.db.control('test_runs').where({ id }).first();
    expect(dead.status).toBe('errored');
    expect((await env.db.control('test_shards').where({ run_id: id })).map((s) => s.status)).toEqual(['errored']);
    expect(await env.db.control('test_results').where({ run_id: id })).toHaveLength(0);
    fs.rmSync(hang);
  });

  it('its nightly lock lost while the CLI lives: the nightly stops its tests at once, records nothing as run, and the next nightly runs', async () => {
    fs.rmSync(`${hang}.pid`, { force: true });
    fs.writeFileSync(hang, '');
    const run = startCli(['--config', env.configFile, 'nightly', '--now']);
    await vi.waitFor(() => expect(fs.existsSync(`${hang}.pid`)).toBe(true), { timeout: 60_000, interval: 50 });
    const shard = Number(fs.readFileSync(`${hang}.pid`, 'utf8'));
    const slot = await env.db.control('nightly_runs').where({ status: 'running' }).first();
    expect(slot.test_run_id).not.toBeNull();
    const session = await advisoryLockHolder(env.db.control, 'tributary:nightly');
    expect(session).toBeDefined();
    const ended = await env.db.control.raw<{ rows: { ok: boolean }[] }>('select pg_terminate_backend(?, 60000) as ok', [session!]);
    expect(ended.rows[0]!.ok).toBe(true);
    // the hang file is still there: only the lost lock ends the shard, long before the tests would
    await vi.waitFor(() => expect(processAlive(shard)).toBe(false), { timeout: 60_000, interval: 50 });
    const r = await run.done;
    expect(r.code, output(r)).not.toBe(0);
    expect(r.stderr).toContain('the nightly run lost its lock');
    expect((await env.db.control('test_runs').where({ id: slot.test_run_id }).first()).status).toBe('errored');
    expect(await env.db.control('test_results').where({ run_id: slot.test_run_id })).toHaveLength(0);
    expect((await env.db.control('nightly_runs').where({ id: slot.id }).first()).status).toBe('failed');
    expect(await env.db.control('audit_events').where({ action: 'nightly.finish' })).toHaveLength(0);

    fs.rmSync(hang);
    const next = await cli(['--config', env.configFile, 'nightly', '--now']);
    expect(next.code, output(next)).toBe(0);
    expect(await env.db.control('audit_events').where({ action: 'nightly.finish' })).toHaveLength(1);
  });
});
