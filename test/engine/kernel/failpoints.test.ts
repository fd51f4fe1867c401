import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import { ROOT } from '../../helpers.js';

const PROBE = path.join(ROOT, 'test/fixtures/failpoint-probe.ts');

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
