import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import fs from 'node:fs';
import { expect, it, vi } from 'vitest';
import { ROOT } from '../../helpers.js';

const PROBE = path.join(ROOT, 'test/fixtures/failpoint-probe.ts');

/** A process's state letter from /proc (T: stopped). */
function processState(pid: number): string {
  return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0]!;
}

function run(failpoints?: string) {
  const env = { ...process.env, TRIBUTARY_FAILPOINTS: failpoints ?? '' };
  return spawnSync(process.execPath, ['--import', 'tsx', PROBE], { env, encoding: 'utf8', timeout: 30_000 });
}

it('does nothing when unset or when another point is named', () => {
  for (const fp of [undefined, 'other.point=crash']) {
    const r = run(fp);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('before\nafter\n');
  }
});

it('crash kills the process there, error throws there, a bad action is refused naming it', () => {
  const crash = run('probe.point=crash');
  expect(crash.signal).toBe('SIGKILL');
  expect(crash.stdout).toBe('before\n');
  const error = run('probe.point=error');
  expect(error.status).toBe(3);
  expect(error.stdout).toBe('before\nerror: failpoint probe.point: error injected\n');
  const bad = run('probe.point=explode');
  expect(bad.status).not.toBe(0);
  expect(bad.stderr).toContain('TRIBUTARY_FAILPOINTS: unknown action "explode" for probe.point');
});

it('pause says so on stderr and waits there until the process is killed', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', PROBE], { env: { ...process.env, TRIBUTARY_FAILPOINTS: 'probe.point=pause' } });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((resolve) => child.stderr.on('data', (d: Buffer) => ((err += d.toString()), err.includes('paused') && resolve())));
  expect(err).toBe(`failpoint probe.point: paused (pid ${child.pid})\n`);
  const exit = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  child.kill('SIGKILL');
  expect(await exit).toBe('SIGKILL');
  expect(out).toBe('before\n');
});

it('stop says so on stderr, stops the process there (SIGSTOP), and SIGCONT lets it go on', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', PROBE], { env: { ...process.env, TRIBUTARY_FAILPOINTS: 'probe.point=stop' } });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const stopped = new Promise<void>((resolve) => child.stderr.on('data', (d: Buffer) => ((err += d.toString()), err.includes('stopped') && resolve())));
  await stopped;
  expect(err).toBe(`failpoint probe.point: stopped (pid ${child.pid})\n`);
  // the line comes just before the stop itself: SIGCONT only once the process is stopped
  await vi.waitFor(() => expect(processState(child.pid!)).toBe('T'), { timeout: 60_000, interval: 20 });
  expect(out).toBe('before\n');
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  child.kill('SIGCONT');
  expect(await exit).toBe(0);
  expect(out).toBe('before\nafter\n');
});
