import type { Knex } from 'knex';

/** What was loaded into staging, per release and table: counts and checksums verified on both sides. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('loads', (t) => {
    t.increments('id').primary();
    t.text('release').notNullable();
    t.integer('run_id').notNullable();
    t.text('env').notNullable();
    t.text('entity').notNullable();
    t.text('table_name').notNullable();
    t.bigInteger('row_count').notNullable();
    t.text('checksum').notNullable();
    t.text('loaded_by').notNullable();
    t.timestamp('loaded_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.index(['release', 'loaded_at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('loads');
}
