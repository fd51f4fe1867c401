import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Knex } from 'knex';
import { makeKnex, paramsFromUrl } from '../../src/db/connect.js';
import { migrationSource } from '../../src/db/migrations.js';
import { createDatabase, dropDatabase, urlFor } from '../helpers.js';

let database: string;
let knex: Knex;

beforeAll(async () => {
  database = await createDatabase();
  knex = makeKnex(paramsFromUrl(urlFor(database)));
});
afterAll(async () => {
  await knex.destroy();
  await dropDatabase(database);
});

const tables = async () =>
  (await knex.raw(`select table_name from information_schema.tables where table_schema = 'public' and table_name not like 'knex%' order by 1`)).rows.map(
    (r: { table_name: string }) => r.table_name,
  );

it('migrates up and down, and up again', async () => {
  await knex.migrate.latest({ migrationSource });
  expect(await tables()).toEqual(['approvals', 'archives', 'audit_chain_origin', 'audit_events', 'auto_resolutions', 'bundles', 'conflicts', 'data_backups', 'decisions', 'deploy_decisions', 'deployments', 'env_locks', 'findings', 'loads', 'locks', 'nightly_runs', 'pattern_decisions', 'promotions', 'prune_proposals', 'pruned_tests', 'release_states', 'runs', 'slack_messages', 'test_catalog', 'test_results', 'test_runs', 'test_shards']);
  const work = await knex.raw(`select 1 from pg_namespace where nspname = 'work'`);
  expect(work.rowCount).toBe(1);
  await knex.migrate.rollback({ migrationSource }, true);
  expect(await tables()).toEqual([]);
  await knex.migrate.latest({ migrationSource });
  expect(await tables()).toHaveLength(27);
});

it('the audit trail refuses updates and deletes', async () => {
  await knex('audit_events').insert({ actor: 'cli:test', action: 'test' });
  await expect(knex('audit_events').update({ actor: 'someone else' })).rejects.toThrow(/append-only/);
  await expect(knex('audit_events').delete()).rejects.toThrow(/append-only/);
  expect(await knex('audit_events').count('* as n').first()).toEqual({ n: 1 });
});
