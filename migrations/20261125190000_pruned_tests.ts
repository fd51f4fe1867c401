import type { Knex } from 'knex';

/**
 * Tests pruned from the catalog on their owner's confirmation. The runners keep reporting them (a team
 * rarely deletes them from its suite at once), and the catalog learns every test reported: this record
 * keeps a pruned test out of the catalog, hence out of every selection and of every later digest.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('pruned_tests', (t) => {
    t.text('test_id').primary();
    t.text('name').notNullable();
    /** The deprecated feature whose proposal pruned it. */
    t.text('feature').notNullable();
    t.integer('proposal_id').references('prune_proposals.id').onDelete('SET NULL');
    t.text('pruned_by').notNullable();
    t.timestamp('pruned_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('pruned_tests');
}
