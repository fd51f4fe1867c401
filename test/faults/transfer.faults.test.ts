import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, output } from '../process.js';
import { copyWorld, dropWorlds, faultCase, seedWorld, type World } from './harness.js';
import { seedStage } from './worlds.js';

/**
 * The on-premises import killed with SIGKILL once staging committed (the control database not yet), then
 * run again: the world equals an uninterrupted import's (staging's tables, the release's state, the audit
 * trail), and the package is recorded once.
 */
let cloud: World;
let onprem: World;
let work: string;
let pkg: string;

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-transfer-fault-'));
  pkg = path.join(work, 'R2-package');
  const keys = await cli(['keys', 'generate', '--out', work, '--name', 'cloud']);
  expect(keys.code, output(keys)).toBe(0);
  cloud = await seedStage('validated');
  const copy = await copyWorld(cloud);
  const ex = await copy.cli(['export', 'R2', '--out', pkg, '--key', path.join(work, 'cloud.key')]);
  expect(ex.code, output(ex)).toBe(0);
  onprem = await seedWorld(0, { transfer: { publicKeys: [path.join(work, 'cloud.pub')] } }, async () => undefined);
});

afterAll(async () => {
  await dropWorlds(cloud, onprem);
  fs.rmSync(work, { recursive: true, force: true });
});

const FILE = 'transfer.faults.test.ts';

describe('the import killed with SIGKILL, then run again', () => {
  it('tributary load R2 --from <package> at import.after-staging-commit', async () => {
    await faultCase('import.after-staging-commit', FILE, { world: () => onprem, args: ['load', 'R2', '--from', pkg] });
  });
});
