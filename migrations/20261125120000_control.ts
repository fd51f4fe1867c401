import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('runs', (t) => {
    t.increments('id').primary();
    t.text('release').notNullable();
    t.text('kind').notNullable();
    t.text('status').notNullable();
    t.text('started_by').notNullable();
    t.integer('pid');
    t.text('host');
    t.text('env_filter');
    t.timestamp('started_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('finished_at', { useTz: true });
    t.jsonb('steps').notNullable().defaultTo('{}');
    t.jsonb('counts').notNullable().defaultTo('{}');
    t.text('error');
    t.index(['release', 'kind', 'status']);
  });

  await knex.schema.createTable('release_states', (t) => {
    t.text('release').primary();
    t.text('state').notNullable();
    t.integer('current_run_id').references('runs.id');
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable('locks', (t) => {
    t.text('release').notNullable();
    t.text('env').notNullable();
    t.text('entity').notNullable();
    t.text('table_name').notNullable();
    t.bigInteger('row_count').notNullable();
    t.text('checksum').notNullable();
    t.text('locked_by').notNullable();
    t.timestamp('locked_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.primary(['release', 'env', 'entity']);
  });

  await knex.schema.createTable('conflicts', (t) => {
    t.increments('id').primary();
    t.text('release').notNullable();
    t.integer('run_id').notNullable().references('runs.id').onDelete('CASCADE');
    t.text('code').notNullable();
    t.text('entity').notNullable();
    t.text('identity').notNullable();
    t.text('key_label').notNullable();
    t.text('kind').notNullable();
    t.text('priority').notNullable();
    t.text('status').notNullable().defaultTo('open');
    t.jsonb('detail').notNullable();
    t.text('assigned_to');
    t.timestamp('assigned_at', { useTz: true });
    t.text('decided_by');
    t.timestamp('decided_at', { useTz: true });
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.unique(['run_id', 'code']);
    t.index(['release', 'status', 'priority']);
  });

  await knex.schema.createTable('decisions', (t) => {
    t.increments('id').primary();
    t.integer('conflict_id').notNullable().unique().references('conflicts.id').onDelete('CASCADE');
    t.text('release').notNullable();
    t.integer('run_id').notNullable();
    t.text('action').notNullable();
    t.jsonb('params').notNullable().defaultTo('{}');
    t.jsonb('blast').notNullable().defaultTo('{}');
    t.text('rationale').notNullable();
    t.text('decided_by').notNullable();
    t.timestamp('decided_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable('audit_events', (t) => {
    t.bigIncrements('id').primary();
    t.timestamp('at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.text('actor').notNullable();
    t.text('action').notNullable();
    t.text('release');
    t.text('subject');
    t.jsonb('details').notNullable().defaultTo('{}');
    t.index(['release', 'id']);
  });
  // The audit trail is append-only: updates and deletes are refused by the database itself.
  await knex.raw(`
    create function audit_events_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'audit_events is append-only (% refused)', tg_op;
    end $$;
    create trigger audit_events_no_update before update or delete on audit_events
      for each row execute function audit_events_append_only();
  `);
  await knex.raw('create schema if not exists work');
  // A key as a JSON value of the same type as the original one (numbers stay numbers).
  await knex.raw(`create function work.key_value(sample jsonb, k text) returns jsonb immutable language sql as $$
    select case when k is null then null when jsonb_typeof(sample) = 'number' then to_jsonb(k::numeric) else to_jsonb(k) end $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop schema if exists work cascade');
  await knex.raw('drop table if exists audit_events');
  await knex.raw('drop function if exists audit_events_append_only()');
  await knex.schema.dropTableIfExists('decisions');
  await knex.schema.dropTableIfExists('conflicts');
  await knex.schema.dropTableIfExists('locks');
  await knex.schema.dropTableIfExists('release_states');
  await knex.schema.dropTableIfExists('runs');
}
