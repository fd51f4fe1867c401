import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseline, copyWorld, dropWorlds, expectEqualWorlds, faultCase, killAt, snapshot, type World } from './harness.js';
import { seedStage } from './worlds.js';

/**
 * promote and bundle killed with SIGKILL at each failpoint, then run again: master's tables, the bundle
 * records and the audit trail equal an uninterrupted run's.
 */
let tier1: World;
let approved: World;

beforeAll(async () => {
  [tier1, approved] = await Promise.all([seedStage('tier1'), seedStage('approved')]);
});

afterAll(async () => {
  await dropWorlds(tier1, approved);
});

const FILE = 'release.faults.test.ts';

describe('promote and bundle killed with SIGKILL, then run again', () => {
  for (const point of ['promote.copy', 'promote.before-commit', 'promote.after-master-commit']) {
    it(`tributary promote R2 at ${point}`, async () => {
      await faultCase(point, FILE, { world: () => tier1, args: ['promote', 'R2'] });
    });
  }

  for (const point of ['bundle.copy', 'bundle.table-exported', 'bundle.before-commit']) {
    it(`tributary bundle R2 --code v2 at ${point}`, async () => {
      await faultCase(point, FILE, { world: () => approved, args: ['bundle', 'R2', '--code', 'v2'] });
    });
  }

  it('the comparison sees a step left unfinished: promote killed after master committed, and not run again', async () => {
    const c = { world: () => tier1, args: ['promote', 'R2'] };
    const base = await baseline(c);
    const copy = await copyWorld(tier1);
    await killAt(copy, 'promote.after-master-commit', c.args);
    const left = await snapshot(copy, [tier1.dir]);
    expect(() => expectEqualWorlds(left, base.snap)).toThrow();
  });
});
