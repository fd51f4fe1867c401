import type { Knex } from 'knex';

/**
 * Release bundles and data backups of synchronized deployment.
 *
 * A bundle is immutable: one (release, version) names one code version, one data package (files of the
 * release's master rows, with their counts and checksums in the manifest) and one migration step.
 * A change of any part is a new version; the table refuses UPDATE.
 *
 * A data backup records, per production table a data package touches, where its rows were copied to
 * before the deploy (a table in the production database's `tributary_backup` schema) with the row count
 * and checksum of the table before the deploy; a restore must give those figures back.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('bundles', (t) => {
    t.increments('id').primary();
    t.text('release').notNullable();
    /** 1, 2, … per release. */
    t.integer('version').notNullable();
    t.text('code_version').notNullable();
    /** sha256 over the tables' (entity, table, rows, checksum). */
    t.text('data_fingerprint').notNullable();
    /** Per table: entity, table, rows, checksum, file (and columns, primaryKey, bytes, sha256). */
    t.jsonb('manifest').notNullable();
    /** The schema migration step (deploy.migration), if any. */
    t.text('migration');
    /** Absolute directory of the data files. */
    t.text('dir').notNullable();
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.unique(['release', 'version']);
  });
  await knex.raw(`
    create function bundles_immutable() returns trigger language plpgsql as $$
    begin
      raise exception 'bundles are immutable (% refused): a change makes a new bundle version', tg_op;
    end $$;
    create trigger bundles_no_update before update on bundles
      for each row execute function bundles_immutable();
  `);
  await knex.schema.createTable('data_backups', (t) => {
    t.increments('id').primary();
    /** The deployment it was taken for (deployments are the deployment state machine's). */
    t.integer('deployment_id');
    t.integer('bundle_id').references('bundles.id');
    t.text('env').notNullable();
    t.text('release').notNullable();
    /** Per table: entity, table, backup (schema-qualified backup table), existed, rows, checksum before the deploy. */
    t.jsonb('tables').notNullable();
    t.text('created_by').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('restored_at', { useTz: true });
    t.index(['release', 'id']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('data_backups');
  await knex.raw('drop table if exists bundles');
  await knex.raw('drop function if exists bundles_immutable()');
}
