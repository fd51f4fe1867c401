import type { Knex } from 'knex';

/** Two-tier testing: the test catalog learnt from JUnit XML, runs, their shards and results, approvals. */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('test_catalog', (t) => {
    t.text('test_id').primary();
    t.text('name').notNullable();
    t.text('classname').notNullable().defaultTo('');
    t.text('file');
    t.jsonb('features').notNullable().defaultTo('[]');
    t.boolean('smoke').notNullable().defaultTo(false);
    /** The last observed duration: the history that shards are balanced by. */
    t.integer('duration_ms');
    t.timestamp('first_seen', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('last_seen', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable('test_runs', (t) => {
    t.increments('id').primary();
    t.text('release').notNullable();
    /** 1, 2, feature, smoke, nightly */
    t.text('tier').notNullable();
    t.text('env').notNullable();
    t.text('status').notNullable().defaultTo('running');
    /** The loaded (tier 1) or promoted (tier 2) data the run tested: a hash of the tables' counts and checksums. */
    t.text('data_fingerprint');
    t.jsonb('selection').notNullable().defaultTo('{}');
    t.jsonb('totals').notNullable().defaultTo('{}');
    t.jsonb('gate').notNullable().defaultTo('{}');
    t.integer('baseline_run_id');
    t.text('dispatch').notNullable().defaultTo('local');
    t.text('started_by').notNullable();
    t.timestamp('started_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('finished_at', { useTz: true });
    t.text('error');
    t.index(['release', 'tier', 'id']);
  });

  await knex.schema.createTable('test_shards', (t) => {
    t.increments('id').primary();
    t.integer('run_id').notNullable().references('test_runs.id').onDelete('CASCADE');
    t.integer('idx').notNullable();
    t.jsonb('tests').notNullable();
    t.integer('expected_ms');
    /** pending, running, done, errored */
    t.text('status').notNullable().defaultTo('pending');
    t.integer('attempts').notNullable().defaultTo(0);
    t.text('agent');
    t.timestamp('started_at', { useTz: true });
    t.timestamp('finished_at', { useTz: true });
    t.integer('duration_ms');
    t.text('error');
    t.unique(['run_id', 'idx']);
  });

  await knex.schema.createTable('test_results', (t) => {
    t.integer('run_id').notNullable().references('test_runs.id').onDelete('CASCADE');
    t.text('test_id').notNullable();
    t.text('name').notNullable();
    t.integer('shard').notNullable();
    /** passed, failed, errored, skipped */
    t.text('status').notNullable();
    t.integer('duration_ms').notNullable().defaultTo(0);
    t.text('message');
    t.jsonb('features').notNullable().defaultTo('[]');
    t.boolean('smoke').notNullable().defaultTo(false);
    /** Passed only on a retry. */
    t.boolean('retried').notNullable().defaultTo(false);
    /** Against the baseline: new-regression, known-failure, fixed, flaky, new-test, passing */
    t.text('class');
    t.primary(['run_id', 'test_id']);
    t.index(['test_id', 'run_id']);
  });

  await knex.schema.createTable('approvals', (t) => {
    t.increments('id').primary();
    t.text('release').notNullable();
    t.integer('test_run_id').notNullable().references('test_runs.id');
    t.text('approved_by').notNullable();
    t.text('rationale').notNullable();
    t.boolean('override').notNullable().defaultTo(false);
    t.timestamp('approved_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('approvals');
  await knex.schema.dropTableIfExists('test_results');
  await knex.schema.dropTableIfExists('test_shards');
  await knex.schema.dropTableIfExists('test_runs');
  await knex.schema.dropTableIfExists('test_catalog');
}
