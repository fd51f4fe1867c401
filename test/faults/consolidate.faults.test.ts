import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { output } from '../process.js';
import { alive, copyWorld, dropWorlds, faultCase, killAt, type World } from './harness.js';
import { seedStage } from './worlds.js';

/**
 * A re-consolidation of R2 (its earlier decisions carried into the new run) killed with SIGKILL at each
 * of its failpoints, then run again: the queue, decisions, dataset and audit trail equal an uninterrupted
 * re-consolidation's. The collection's child process dies with the CLI.
 */
let decided: World;

beforeAll(async () => {
  decided = await seedStage('decided');
});

afterAll(async () => {
  await dropWorlds(decided);
});

const FILE = 'consolidate.faults.test.ts';
const again = { world: () => decided, args: ['consolidate', 'R2'] };

describe('tributary consolidate R2 killed with SIGKILL, then run again', () => {
  for (const point of ['consolidate.after-start', 'consolidate.after-collect', 'consolidate.after-detect', 'consolidate.after-queue', 'consolidate.before-finish', 'consolidate.carry', 'consolidate.finish.before-commit']) {
    it(`at ${point}: nothing lost, the decisions carried once`, async () => {
      await faultCase(point, FILE, again);
    });
  }

  it('at consolidate.after-finish: the run is current with its decisions carried; nothing to redo', async () => {
    await faultCase('consolidate.after-finish', FILE, { ...again, recover: async () => undefined });
  });

  it('at consolidate.collect.copy (in the collection child): the child exits with the CLI, then the re-run is whole', async () => {
    await faultCase('consolidate.collect.copy', FILE, {
      ...again,
      afterKill: async (killed) => {
        // the pause was the child's: its stdin closed with the CLI, and it exits on its own
        await vi.waitFor(() => expect(alive(killed.pausedPid)).toBe(false), { timeout: 30_000, interval: 50 });
      },
    });
  });

  it('a crash between the run becoming current and its decisions being carried is impossible: they commit together', async () => {
    const copy = await copyWorld(decided);
    await killAt(copy, 'consolidate.carry', ['consolidate', 'R2']);
    const status = await copy.cli(['--json', 'conflicts', 'R2', '--status', 'decided']);
    expect(status.code, output(status)).toBe(0);
    // the previous run is still current, with every decision it had
    const decidedCodes = (JSON.parse(status.stdout) as { code: string }[]).map((c) => c.code);
    expect(decidedCodes.length).toBeGreaterThan(1);
  });
});
