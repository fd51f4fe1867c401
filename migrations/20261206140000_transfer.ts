import type { Knex } from 'knex';

/**
 * Signed transfer packages imported from the cloud side (src/engine/transfer): each package's manifest and
 * signature as they arrived, and the audit events that travelled in it, stored verbatim as a chain of their
 * own (keyed by the cloud's audit key, which never travels: vouched for by the signed manifest). Both are
 * append-only, like the audit trail.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('transfer_packages', (t) => {
    t.increments('id').primary();
    t.text('release').notNullable();
    /** SHA-256 of manifest.json, as it arrived. */
    t.text('digest').notNullable();
    t.text('key_id').notNullable();
    /** The cloud's consolidation run the package holds. */
    t.integer('source_run_id').notNullable();
    /** The run created here for it (its work area holds the lineage). */
    t.integer('run_id').notNullable().references('runs.id');
    t.text('manifest').notNullable();
    t.text('signature').notNullable();
    t.text('imported_by').notNullable();
    t.timestamp('imported_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['release', 'id']);
  });
  await knex.schema.createTable('imported_audit_events', (t) => {
    t.integer('package_id').notNullable().references('transfer_packages.id');
    t.bigInteger('seq').notNullable();
    t.bigInteger('source_id').notNullable();
    /** ISO 8601 UTC with microseconds, as the cloud's chain hashed it. */
    t.text('at').notNullable();
    t.text('actor').notNullable();
    t.text('action').notNullable();
    t.text('release');
    t.text('subject');
    t.jsonb('details').notNullable();
    t.text('prev_hash');
    t.text('hash').notNullable();
    t.primary(['package_id', 'seq']);
  });
  await knex.raw(`
    create trigger transfer_packages_no_update before update or delete on transfer_packages
      for each row execute function audit_events_append_only();
    create trigger imported_audit_events_no_update before update or delete on imported_audit_events
      for each row execute function audit_events_append_only();
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('imported_audit_events');
  await knex.schema.dropTableIfExists('transfer_packages');
}
