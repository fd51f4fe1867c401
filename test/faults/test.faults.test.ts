import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { ROOT } from '../helpers.js';
import { dropWorlds, faultCase, type World } from './harness.js';
import { seedStage } from './worlds.js';

/**
 * tributary test R2 --tier 1 killed with SIGKILL at each failpoint, then run again: the dead run is closed
 * (errored) by the next one, and the world (the release's state, the audit trail) equals an
 * uninterrupted run's.
 */
let loaded: World;
let scratch: string;

beforeAll(async () => {
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-test-faults-'));
  const behaviour = path.join(scratch, 'behaviour.json');
  fs.writeFileSync(behaviour, JSON.stringify({ suite: ['login works @FEAT-C', 'profile edit @FEAT-M', 'service answers @smoke'] }));
  loaded = await seedStage('loaded', {
    testing: { command: `node ${path.join(ROOT, 'test/fixtures/fake-runner.mjs')} {tests} {junit} ${behaviour}`, agents: 2, shards: 2, timeoutSeconds: 60, reportDir: 'reports' },
  });
});

afterAll(async () => {
  await dropWorlds(loaded);
  fs.rmSync(scratch, { recursive: true, force: true });
});

const FILE = 'test.faults.test.ts';

describe('tributary test --tier 1 killed with SIGKILL, then run again', () => {
  for (const point of ['test.after-start', 'test.after-shards']) {
    it(`at ${point}`, async () => {
      await faultCase(point, FILE, { world: () => loaded, args: ['test', 'R2', '--tier', '1'] });
    });
  }
});
