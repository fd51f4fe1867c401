import { afterAll, beforeAll, describe, it } from 'vitest';
import { dropWorlds, faultCase, type World } from './harness.js';
import { seedStage } from './worlds.js';

/**
 * decide, validate and load killed with SIGKILL at each failpoint, then run again: the world equals an
 * uninterrupted run's (queue, decisions, findings, dataset, staging's tables, audit trail).
 */
let consolidated: World;
let decided: World;
let validated: World;

beforeAll(async () => {
  [consolidated, decided, validated] = await Promise.all([seedStage('consolidated'), seedStage('decided'), seedStage('validated')]);
});

afterAll(async () => {
  await dropWorlds(consolidated, decided, validated);
});

const FILE = 'review.faults.test.ts';

describe('decide, validate and load killed with SIGKILL, then run again', () => {
  it('tributary decide C-001 at decide.before-commit', async () => {
    await faultCase('decide.before-commit', FILE, { world: () => consolidated, args: ['decide', 'C-001', '--keep', '1', '--rationale', 'checked'] });
  });

  for (const point of ['validate.after-start', 'validate.before-commit']) {
    it(`tributary validate R2 at ${point}`, async () => {
      await faultCase(point, FILE, { world: () => decided, args: ['validate', 'R2'] });
    });
  }

  for (const point of ['load.copy', 'load.table-copied', 'load.after-staging-commit']) {
    it(`tributary load R2 at ${point}`, async () => {
      await faultCase(point, FILE, { world: () => validated, args: ['load', 'R2'] });
    });
  }
});
