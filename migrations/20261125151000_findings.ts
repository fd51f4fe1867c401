import type { Knex } from 'knex';

/**
 * Validation findings, per release and consolidation run: one row per problem (fingerprint = rule, entity,
 * identity, column), open until it no longer occurs (closed), a decision removes it (closed) or a qa_lead
 * waives it with a rationale (waived). `seq` numbers a release's findings F-001… and keeps its number for
 * the same problem across runs.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('findings', (t) => {
    t.increments('id').primary();
    t.text('release').notNullable();
    t.integer('run_id').notNullable().references('runs.id').onDelete('CASCADE');
    t.integer('seq').notNullable();
    t.text('code').notNullable();
    t.text('fingerprint').notNullable();
    t.text('entity').notNullable();
    t.text('identity').notNullable();
    t.text('key');
    t.text('rule').notNullable();
    t.text('kind').notNullable();
    t.text('column');
    t.text('value');
    t.text('message').notNullable();
    t.jsonb('detail').notNullable().defaultTo('{}');
    t.text('status').notNullable().defaultTo('open');
    t.timestamp('first_seen_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('last_seen_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('closed_at', { useTz: true });
    t.text('closed_by');
    t.text('resolution');
    t.text('waived_by');
    t.timestamp('waived_at', { useTz: true });
    t.text('rationale');
    t.unique(['run_id', 'fingerprint']);
    t.unique(['run_id', 'seq']);
    t.index(['release', 'status']);
    t.index(['release', 'fingerprint']);
  });
  await knex.raw(`alter table findings add constraint findings_status check (status in ('open', 'closed', 'waived'))`);
  // Does a text value cast to a type? PostgreSQL 16+ answers with pg_input_is_valid; 15 needs a subtransaction.
  await knex.raw(`create function work.input_is_valid(v text, t text) returns boolean language plpgsql stable as $$
    begin
      execute format('select %L::%s', v, t);
      return true;
    exception when others then
      return false;
    end $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop function if exists work.input_is_valid(text, text)');
  await knex.schema.dropTableIfExists('findings');
}
