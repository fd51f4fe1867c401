import type { Knex } from 'knex';

/**
 * What was promoted into the cumulative master, per release and table: the rows of the release's
 * partition with their count and checksum (verified against staging before commit), the staging rows
 * not promoted (exact duplicates of earlier releases, decisions), and what was auto-resolved.
 * The rows of one promotion share `promoted_at` (one transaction).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('promotions', (t) => {
    t.increments('id').primary();
    t.text('release').notNullable();
    /** The promote run whose cross-release conflicts were decided for it (null: there were none). */
    t.integer('run_id');
    t.text('env').notNullable();
    t.text('entity').notNullable();
    t.text('table_name').notNullable();
    t.text('partition_name').notNullable();
    t.bigInteger('row_count').notNullable();
    t.text('checksum').notNullable();
    /** Staging rows of the release not promoted: auto-resolved duplicates and decisions (keep 1, delete both). */
    t.integer('skipped').notNullable().defaultTo(0);
    t.integer('auto_resolved_count').notNullable().defaultTo(0);
    /** The auto-resolved rows (the first 100): entity, key, pk, the earlier release, rule. */
    t.jsonb('auto_resolved').notNullable().defaultTo('[]');
    /** Decisions on cross-release conflicts applied to this table. */
    t.jsonb('decisions').notNullable().defaultTo('[]');
    t.text('promoted_by').notNullable();
    t.timestamp('promoted_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['release', 'promoted_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('promotions');
}
