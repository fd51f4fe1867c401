import type { Knex } from 'knex';

/** Where the bot posted what, so cards and summaries are updated in place (and re-rendered after a restart). */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('slack_messages', (t) => {
    t.increments('id').primary();
    t.text('kind').notNullable();
    t.text('release').notNullable();
    t.integer('run_id').notNullable();
    t.text('code').notNullable().defaultTo('');
    t.text('channel').notNullable();
    t.text('ts').notNullable();
    t.timestamp('posted_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.unique(['kind', 'release', 'run_id', 'code', 'channel']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('slack_messages');
}
