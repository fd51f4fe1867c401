import type { Knex } from 'knex';

/**
 * One open deployment per env, enforced by the database: requestDeployment's check then insert could
 * otherwise let two concurrent requests both in. Also the moment a deployment reached Go (approved_at),
 * so an approved deployment whose process died before running it can be told from one starting now.
 */
const OPEN_STATUSES = ['awaiting-go', 'scheduled', 'approved', 'running', 'rolling-back'] as const;
const OPEN_INDEX = 'deployments_one_open_per_env';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable('deployments', (t) => {
    t.timestamp('approved_at', { useTz: true });
  });
  await knex.raw(`create unique index ${OPEN_INDEX} on deployments (env) where status in (${OPEN_STATUSES.map((s) => `'${s}'`).join(', ')})`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`drop index if exists ${OPEN_INDEX}`);
  await knex.schema.alterTable('deployments', (t) => {
    t.dropColumn('approved_at');
  });
}
