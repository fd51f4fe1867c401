import type { Knex } from 'knex';

/**
 * The automatic resolutions of each consolidation run (A-001…): one row per group a rule resolved, with
 * the rule, its reason and what was kept, merged or re-keyed. Written once with the run (its audit event
 * carries a digest of them) and never changed: an overrule is a conflict of the same code and its decision.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('auto_resolutions', (t) => {
    t.bigIncrements('id').primary();
    t.text('release').notNullable();
    t.integer('run_id').notNullable().references('runs.id').onDelete('CASCADE');
    t.text('code').notNullable();
    t.text('entity').notNullable();
    t.text('identity').notNullable();
    t.text('key_label').notNullable();
    t.text('rule').notNullable();
    t.text('reason').notNullable();
    t.jsonb('detail').notNullable();
    t.unique(['run_id', 'code']);
    t.index(['run_id', 'entity', 'identity']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('auto_resolutions');
}
