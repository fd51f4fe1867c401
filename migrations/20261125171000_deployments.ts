import type { Knex } from 'knex';

/**
 * Deployments as persisted state machines: the request and its go/no-go decisions, every step with
 * its timings, the production env's lock (one deployment at a time; it names its holder).
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('deployments', (t) => {
    t.increments('id').primary();
    t.text('release').notNullable();
    t.integer('bundle_id').notNullable();
    t.integer('bundle_version').notNullable();
    t.text('code_version').notNullable();
    t.text('env').notNullable();
    /** awaiting-go, scheduled, running, succeeded, rolling-back, rolled-back, rollback-failed, rejected, expired */
    t.text('status').notNullable();
    t.text('requested_by').notNullable();
    t.timestamp('requested_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('window_at', { useTz: true });
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.text('previous_code_version');
    t.integer('backup_id');
    t.jsonb('steps').notNullable().defaultTo('[]');
    t.jsonb('undo').notNullable().defaultTo('[]');
    t.text('cause');
    t.jsonb('slack').notNullable().defaultTo('{}');
    t.text('executor');
    t.timestamp('started_at', { useTz: true });
    t.timestamp('finished_at', { useTz: true });
    t.index(['release', 'id']);
    t.index(['status']);
  });
  await knex.schema.createTable('deploy_decisions', (t) => {
    t.increments('id').primary();
    t.integer('deployment_id').notNullable().references('deployments.id').onDelete('CASCADE');
    t.text('actor').notNullable();
    t.text('decision').notNullable();
    t.text('rationale').notNullable();
    t.timestamp('decided_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.unique(['deployment_id', 'actor']);
  });
  await knex.schema.createTable('env_locks', (t) => {
    t.text('env').primary();
    t.integer('deployment_id');
    t.text('holder').notNullable();
    t.text('reason').notNullable();
    t.timestamp('locked_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('env_locks');
  await knex.schema.dropTableIfExists('deploy_decisions');
  await knex.schema.dropTableIfExists('deployments');
}
