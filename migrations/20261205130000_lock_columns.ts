import type { Knex } from 'knex';

/**
 * The shape of each locked table (its columns and their types, in name order): collection compares the
 * table it reads with it, so a table dropped or reshaped since the lock is refused, naming what changed.
 * Null for locks taken before (their tables are compared by checksum only).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('locks', (t) => {
    t.jsonb('columns');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.alterTable('locks', (t) => {
    t.dropColumn('columns');
  });
}
