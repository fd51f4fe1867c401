import type { Knex } from 'knex';
import * as control from '../../migrations/20261125120000_control.js';

/**
 * A static migration source: knex loading `.ts` migrations by directory fails inside vitest on Node 20
 * (STACK.md), and a static list also works from any working directory.
 */
const migrations: Record<string, Knex.Migration> = {
  '20261125120000_control': control,
};

export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => Object.keys(migrations).sort(),
  getMigrationName: (name) => name,
  getMigration: async (name) => migrations[name]!,
};
