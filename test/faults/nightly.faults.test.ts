import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { ROOT } from '../helpers.js';
import { dropWorlds, faultCase, type World } from './harness.js';
import { seedStage } from './worlds.js';

/**
 * tributary nightly --now killed with SIGKILL at each failpoint, then run again: the interrupted slot
 * is closed by the next run, and the world (master, audit trail) equals an uninterrupted run's.
 */
let approved: World;
let scratch: string;

beforeAll(async () => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-nightly-faults-'));
  const behaviour = path.join(scratch, 'behaviour.json');
  fs.writeFileSync(behaviour, JSON.stringify({ suite: ['login works @FEAT-C', 'profile edit @FEAT-M', 'service answers @smoke'] }));
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
});
