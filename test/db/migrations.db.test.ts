import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Knex } from 'knex';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config/load.js';
import { makeKnex, openDatabase, paramsFromUrl } from '../../src/db/connect.js';
import { migrationSource } from '../../src/db/migrations.js';
import { configDoc, createDatabase, dropDatabase, TEST_AUDIT_KEY, urlFor } from '../helpers.js';

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
  expect(await tables()).toEqual(['approvals', 'archives', 'audit_chain_origin', 'audit_events', 'auto_resolutions', 'bundles', 'conflicts', 'data_backups', 'decisions', 'deploy_decisions', 'deployments', 'env_locks', 'findings', 'imported_audit_events', 'loads', 'locks', 'nightly_runs', 'pattern_decisions', 'promotions', 'prune_proposals', 'pruned_tests', 'release_states', 'runs', 'slack_messages', 'test_catalog', 'test_results', 'test_runs', 'test_shards', 'transfer_packages']);
  const work = await knex.raw(`select 1 from pg_namespace where nspname = 'work'`);
  expect(work.rowCount).toBe(1);
  await knex.migrate.rollback({ migrationSource }, true);
  expect(await tables()).toEqual([]);
  await knex.migrate.latest({ migrationSource });
  expect(await tables()).toHaveLength(29);
});

it('the audit trail refuses updates and deletes', async () => {
  await knex('audit_events').insert({ actor: 'cli:test', action: 'test' });
  await expect(knex('audit_events').update({ actor: 'someone else' })).rejects.toThrow(/append-only/);
  await expect(knex('audit_events').delete()).rejects.toThrow(/append-only/);
  expect(await knex('audit_events').count('* as n').first()).toEqual({ n: 1 });
});

it('opening the database applies what is pending, writes nothing when all is applied, and refuses a migration it does not know', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-migrations-'));
  try {
    const file = path.join(dir, 'tributary.yml');
    fs.writeFileSync(file, stringify(configDoc(database, 1)));
    const open = async () => (await openDatabase(loadConfig({ file, env: { TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } }))).close();
    const names = await migrationSource.getMigrations([]);
    const last = names[names.length - 1]!;
    await knex.migrate.latest({ migrationSource });
    await knex.migrate.down({ migrationSource });
    expect((await knex('knex_migrations').pluck('name')).includes(last)).toBe(false);
    await open();
    expect(await knex('knex_migrations').pluck('name')).toContain(last);
    // all applied: not even knex's migration lock is taken (its row keeps the version an update would replace)
    const lockRow = async () => (await knex.raw(`select xmin::text as v from knex_migrations_lock`)).rows[0].v as string;
    const before = await lockRow();
    await open();
    expect(await lockRow()).toBe(before);
    await knex('knex_migrations').insert({ name: '29991231000000_from_a_newer_version', batch: 99, migration_time: new Date() });
    await expect(open()).rejects.toThrow(/29991231000000_from_a_newer_version/);
    await knex('knex_migrations').where({ name: '29991231000000_from_a_newer_version' }).delete();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
