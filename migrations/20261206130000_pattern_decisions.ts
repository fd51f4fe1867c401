import type { Knex } from 'knex';

/**
 * Review at scale: a pattern decision (one choice for every open conflict of one signature) and the
 * decisions it made, each naming it; and the function that keeps a decision's undo log (the rows of a
 * run's work tables as they were before the decision changed them), so a decision can be undone.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('pattern_decisions', (t) => {
    t.increments('id').primary();
    t.text('release').notNullable();
    t.integer('run_id').notNullable();
    /** { entity, kind, attributes, envs } */
    t.jsonb('signature').notNullable();
    t.jsonb('choice').notNullable();
    t.jsonb('blast').notNullable().defaultTo('{}');
    t.integer('conflicts').notNullable();
    t.text('rationale').notNullable();
    t.text('decided_by').notNullable();
    t.timestamp('decided_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.text('undone_by');
    t.timestamp('undone_at', { useTz: true });
    t.index(['release', 'run_id']);
  });
  await knex.schema.alterTable('decisions', (t) => {
    t.integer('pattern_decision_id').references('pattern_decisions.id');
    t.index(['pattern_decision_id']);
  });
  // A row trigger on a run's result and key map (installed by the first decision of the run): while a
  // decision applies (tributary.undo set to its conflict's id, for its transaction only), each row it
  // inserts, updates or deletes is logged with its key and its image before.
  await knex.raw(`create function work.undo_log() returns trigger language plpgsql as $$
    declare
      conflict text := current_setting('tributary.undo', true);
      img jsonb;
      k text;
    begin
      if conflict is null or conflict = '' then return null; end if;
      if tg_op = 'INSERT' then img := to_jsonb(new); else img := to_jsonb(old); end if;
      select string_agg(img ->> c, chr(31) order by o) into k from unnest(tg_argv[2:]) with ordinality as a(c, o);
      execute format('insert into %s (conflict_id, tbl, op, row_key, old) values ($1, $2, $3, $4, $5)', tg_argv[0])
        using conflict::int, tg_argv[1], left(tg_op, 1), k, case when tg_op = 'INSERT' then null else img end;
      return null;
    end $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw('drop function if exists work.undo_log() cascade');
  await knex.schema.alterTable('decisions', (t) => {
    t.dropColumn('pattern_decision_id');
  });
  await knex.schema.dropTableIfExists('pattern_decisions');
}
