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
  for (const point of ['import.lineage', 'import.copy', 'import.after-staging-commit']) {
    it(`tributary load R2 --from <package> at ${point}`, async () => {
      await faultCase(point, FILE, { world: () => onprem, args: ['load', 'R2', '--from', pkg] });
    });
  }
});

describe('the export killed with SIGKILL, then run again', () => {
  it('tributary export R2 --out <dir> at export.copy', async () => {
    // the package folder lies outside the world (a database and its config): it is cleared whenever the
    // harness takes the world, so the baseline's, the killed run's and the re-run's each start from none
    const out = path.join(work, 'again');
    const world = () => {
      fs.rmSync(out, { recursive: true, force: true });
      return cloud;
    };
    await faultCase('export.copy', FILE, { world, args: ['export', 'R2', '--out', out, '--key', path.join(work, 'cloud.key')] });
    expect(fs.readdirSync(work).filter((f) => f.startsWith('again.partial-')).length).toBeLessThanOrEqual(1);
  });
});
