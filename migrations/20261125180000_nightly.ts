import type { Knex } from 'knex';

/**
 * The nightly cumulative regression and keeping master lean: one row per scheduled slot (the unique key
 * makes two bot processes run a slot once), the pruning proposals of the weekly digest (nothing is
 * pruned without the owner's confirmation), and the release partitions archived to cold storage.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('nightly_runs', (t) => {
    t.increments('id').primary();
    /** nightly (the regression) or prune-digest (the weekly digest). */
    t.text('kind').notNullable();
    /** The slot: wall-clock time and zone (`2026-03-29T02:30:00[Europe/Berlin]`), or `manual:<time>`. */
    t.text('slot').notNullable();
    /** When the slot fell due. */
    t.timestamp('scheduled_for', { useTz: true }).notNullable();
    /** schedule, catch-up or manual */
    t.text('trigger').notNullable();
    /** running, done, failed */
    t.text('status').notNullable().defaultTo('running');
    t.integer('attempts').notNullable().defaultTo(1);
    /** host:pid of the process that claimed it. */
    t.text('claimed_by').notNullable();
    t.integer('test_run_id').references('test_runs.id').onDelete('SET NULL');
    t.text('release');
    t.jsonb('summary');
    t.text('chart_path');
    t.text('error');
    t.timestamp('started_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('finished_at', { useTz: true });
    /** Not before this instant (postAt); null: when done. */
    t.timestamp('post_due', { useTz: true });
    t.timestamp('posted_at', { useTz: true });
    t.unique(['kind', 'slot']);
    t.index(['kind', 'id']);
  });

  await knex.schema.createTable('prune_proposals', (t) => {
    t.increments('id').primary();
    t.integer('digest_id').references('nightly_runs.id').onDelete('SET NULL');
    t.text('feature').notNullable();
    t.text('release').notNullable();
    t.text('owner').notNullable();
    /** The test ids proposed (all of whose features are deprecated). */
    t.jsonb('tests').notNullable();
    /** proposed, pruned, kept, superseded */
    t.text('status').notNullable().defaultTo('proposed');
    t.text('channel');
    t.text('ts');
    t.timestamp('proposed_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.text('decided_by');
    t.timestamp('decided_at', { useTz: true });
    t.index(['feature', 'status']);
  });

  await knex.schema.createTable('archives', (t) => {
    t.increments('id').primary();
    t.text('release').notNullable();
    t.text('env').notNullable();
    /** The manifest file (JSON: tables, row counts, checksums, files). */
    t.text('manifest').notNullable();
    t.bigInteger('row_count').notNullable();
    t.jsonb('tables').notNullable();
    t.text('archived_by').notNullable();
    t.timestamp('archived_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.text('restored_by');
    t.timestamp('restored_at', { useTz: true });
    t.index(['release', 'archived_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('archives');
  await knex.schema.dropTableIfExists('prune_proposals');
  await knex.schema.dropTableIfExists('nightly_runs');
}
