import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ROOT } from '../helpers.js';
import { startCli } from '../process.js';
import { alive, copyWorld, dropWorlds, faultCase, type World } from './harness.js';
import { seedStage } from './worlds.js';

/**
 * tributary nightly --now killed with SIGKILL at each failpoint, then run again: the interrupted slot
 * is closed by the next run, and the world (master, audit trail) equals an uninterrupted run's.
 */
let approved: World;
let scratch: string;
let behaviour: string;
const SUITE = ['login works @FEAT-C', 'profile edit @FEAT-M', 'service answers @smoke'];

beforeAll(async () => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-nightly-faults-'));
  behaviour = path.join(scratch, 'behaviour.json');
  fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE }));
  approved = await seedStage('approved', {
    nightly: { schedule: '0 2 * * *', timezone: 'Europe/Berlin', channel: 'C_NIGHT', nights: 5 },
    testing: { command: `node ${path.join(ROOT, 'test/fixtures/fake-runner.mjs')} {tests} {junit} ${behaviour}`, agents: 2, shards: 2, timeoutSeconds: 60, reportDir: 'reports' },
  });
});

afterAll(async () => {
  await dropWorlds(approved);
  fs.rmSync(scratch, { recursive: true, force: true });
});

const FILE = 'nightly.faults.test.ts';

describe('tributary nightly --now killed with SIGKILL, then run again', () => {
  for (const point of ['nightly.after-claim', 'nightly.after-tests']) {
    it(`at ${point}`, async () => {
      await faultCase(point, FILE, { world: () => approved, args: ['nightly', '--now'] });
    });
  }

  it('a shard (its own process group) ends with the CLI killed with SIGKILL: nothing tests master for a dead run', async () => {
    const hang = path.join(scratch, 'hang');
    fs.writeFileSync(hang, '');
    fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE, hangWhile: hang }));
    try {
      const copy = await copyWorld(approved);
      const p = startCli(['--config', copy.configFile, 'nightly', '--now']);
      // the runner writes its pid once it hangs
      await vi.waitFor(() => expect(fs.existsSync(`${hang}.pid`)).toBe(true), { timeout: 120_000, interval: 50 });
      const runner = Number(fs.readFileSync(`${hang}.pid`, 'utf8'));
      expect(alive(runner)).toBe(true);
      p.child.kill('SIGKILL');
      await p.done;
      await vi.waitFor(() => expect(alive(runner)).toBe(false), { timeout: 30_000, interval: 50 });
    } finally {
      fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE }));
      fs.rmSync(hang, { force: true });
      fs.rmSync(`${hang}.pid`, { force: true });
    }
  });
});
