import { afterAll, beforeAll, describe, it } from 'vitest';
import { archiveReleases } from '../../src/engine/nightly/archive.js';
import { dropWorlds, faultCase, type World } from './harness.js';
import { seedStage } from './worlds.js';

/**
 * archive and restore killed with SIGKILL at each failpoint, then run again: master's tables, the
 * archives records and the audit trail equal an uninterrupted run's (an archive or restore that
 * committed on master before its process died is recorded by the next run).
 */
let promoted: World;
let archived: World;

const ARCHIVE = { archive: { dir: 'cold' } };
// R2 promoted two days ago (R1, converted into partitions by the promotion, has no recorded promotion: kept)
const aged = (e: { db: { control: import('knex').Knex } }) => e.db.control('promotions').where({ release: 'R2' }).update({ promoted_at: e.db.control.raw(`now() - interval '2 days'`) });

beforeAll(async () => {
  [promoted, archived] = await Promise.all([
    seedStage('approved', ARCHIVE, async (e) => {
      await aged(e);
    }),
    seedStage('approved', ARCHIVE, async (e) => {
      await aged(e);
      await archiveReleases(e.ctx, { olderThan: '1d', actor: 'cli:test' });
    }),
  ]);
});

afterAll(async () => {
  await dropWorlds(promoted, archived);
});

const FILE = 'archive.faults.test.ts';

describe('archive and restore killed with SIGKILL, then run again', () => {
  for (const point of ['archive.copy', 'archive.table-exported', 'archive.before-commit', 'archive.after-master-commit']) {
    it(`tributary archive --older-than 1d --yes at ${point}`, async () => {
      await faultCase(point, FILE, { world: () => promoted, args: ['archive', '--older-than', '1d', '--yes'] });
    });
  }

  for (const point of ['restore.copy', 'restore.table-copied', 'restore.after-master-commit']) {
    it(`tributary restore R2 at ${point}`, async () => {
      await faultCase(point, FILE, { world: () => archived, args: ['restore', 'R2'] });
    });
  }
});
