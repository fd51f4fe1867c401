import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Knex } from 'knex';
import { makeKnex, paramsFromUrl } from '../../src/db/connect.js';
import { migrationSource } from '../../src/db/migrations.js';
import { createDatabase, dropDatabase, urlFor } from '../helpers.js';

/**
 * The migration that keeps where each Slack message was posted in one record (slack_messages, keyed by
 * kind and subject) moves the rows of the three old records into it, and back on the way down.
 */
const MIGRATION = '20261207120000_slack_placement';

/** The migrations before this one: the schema as it was when the old records were written. */
const before: Knex.MigrationSource<string> = {
  getMigrations: async () => (await migrationSource.getMigrations([])).filter((n) => n < MIGRATION),
  getMigrationName: (n) => n,
  getMigration: (n) => migrationSource.getMigration(n),
};

let database: string;
let knex: Knex;
let ids: { run1: number; run2: number; c1: number; c2: number; d1: number; d2: number; d3: number; p1: number; p2: number };

beforeAll(async () => {
  database = await createDatabase();
  knex = makeKnex(paramsFromUrl(urlFor(database)));
});
afterAll(async () => {
  await knex.destroy();
  await dropDatabase(database);
});

const id = (rows: { id: number }[]) => Number(rows[0]?.id);

async function seedOldRecords(): Promise<void> {
  const run = (release: string) => knex('runs').insert({ release, kind: 'consolidate', status: 'succeeded', started_by: 'cli:test' }).returning('id');
  const run1 = id(await run('R2'));
  const run2 = id(await run('R3'));
  const conflict = (runId: number, release: string, code: string) =>
    knex('conflicts').insert({ release, run_id: runId, code, entity: 'users', identity: code, key_label: code, kind: 'update-update', priority: 'P2', detail: '{}' }).returning('id');
  const c1 = id(await conflict(run1, 'R2', 'C-001'));
  const c2 = id(await conflict(run2, 'R3', 'C-001'));
  await knex('slack_messages').insert([
    { kind: 'card', release: 'R2', run_id: run1, code: 'C-001', channel: 'C_REVIEW', ts: '1.1' },
    { kind: 'card', release: 'R2', run_id: run1, code: 'C-001', channel: 'C_OTHER', ts: '1.2' },
    { kind: 'card', release: 'R3', run_id: run2, code: 'C-001', channel: 'C_REVIEW', ts: '1.3' },
    // a card of a conflict that is gone: about nothing
    { kind: 'card', release: 'R2', run_id: run1, code: 'C-099', channel: 'C_REVIEW', ts: '1.4' },
    { kind: 'summary', release: 'R2', run_id: run1, code: '', channel: 'C_REVIEW', ts: '2.1' },
    { kind: 'summary', release: 'R3', run_id: run2, code: '', channel: 'C_REVIEW', ts: '2.2' },
  ]);
  const deployment = (status: string, slack: object) =>
    knex('deployments')
      .insert({ release: 'R2', bundle_id: 1, bundle_version: 1, code_version: 'v2', env: 'production', status, requested_by: 'U0RM1', expires_at: new Date(), slack: JSON.stringify(slack) })
      .returning('id');
  const d1 = id(await deployment('succeeded', { channel: 'C_REL', ts: '3.1' }));
  const d2 = id(await deployment('rejected', {}));
  // a channel without a message: Slack never confirmed the post
  const d3 = id(await deployment('expired', { channel: 'C_REL' }));
  const proposal = (feature: string, where: object) => knex('prune_proposals').insert({ feature, release: 'R2', owner: 'U0OWN', tests: '[]', ...where }).returning('id');
  const p1 = id(await proposal('FEAT-A', { channel: 'C_NIGHTLY', ts: '4.1' }));
  const p2 = id(await proposal('FEAT-B', {}));
  ids = { run1, run2, c1, c2, d1, d2, d3, p1, p2 };
}

const oneRecord = async () => knex('slack_messages').orderBy(['kind', 'subject', 'channel']).select('kind', 'subject', 'channel', 'ts');
const oldMessages = async () => knex('slack_messages').orderBy(['kind', 'release', 'run_id', 'code', 'channel']).select('kind', 'release', 'run_id', 'code', 'channel', 'ts');
const columns = async (table: string) =>
  (await knex('information_schema.columns').where({ table_schema: 'public', table_name: table }).orderBy('column_name').pluck('column_name')) as string[];

function expectedOneRecord() {
  return [
    { kind: 'conflict', subject: ids.c1, channel: 'C_OTHER', ts: '1.2' },
    { kind: 'conflict', subject: ids.c1, channel: 'C_REVIEW', ts: '1.1' },
    { kind: 'conflict', subject: ids.c2, channel: 'C_REVIEW', ts: '1.3' },
    { kind: 'deployment', subject: ids.d1, channel: 'C_REL', ts: '3.1' },
    { kind: 'prune', subject: ids.p1, channel: 'C_NIGHTLY', ts: '4.1' },
    { kind: 'summary', subject: ids.run1, channel: 'C_REVIEW', ts: '2.1' },
    { kind: 'summary', subject: ids.run2, channel: 'C_REVIEW', ts: '2.2' },
  ].sort((a, b) => a.kind.localeCompare(b.kind) || a.subject - b.subject || a.channel.localeCompare(b.channel));
}

async function expectOneRecord(): Promise<void> {
  expect(await oneRecord()).toEqual(expectedOneRecord());
  expect(await columns('slack_messages')).toEqual(['channel', 'id', 'kind', 'posted_at', 'subject', 'ts']);
  expect(await columns('deployments')).not.toContain('slack');
  expect(await columns('prune_proposals')).not.toContain('channel');
  expect(await columns('prune_proposals')).not.toContain('ts');
  // one message per subject and channel
  await expect(knex('slack_messages').insert({ kind: 'conflict', subject: ids.c1, channel: 'C_REVIEW', ts: '9.9' })).rejects.toThrow(/unique/);
}

it('moves the three records into one, back on the way down, and again on the way up', async () => {
  await knex.migrate.latest({ migrationSource: before });
  await seedOldRecords();

  await knex.migrate.up({ migrationSource });
  expect(await knex('knex_migrations').pluck('name')).toContain(MIGRATION);
  await expectOneRecord();

  await knex.migrate.down({ migrationSource });
  expect(await knex('knex_migrations').pluck('name')).not.toContain(MIGRATION);
  expect(await oldMessages()).toEqual([
    { kind: 'card', release: 'R2', run_id: ids.run1, code: 'C-001', channel: 'C_OTHER', ts: '1.2' },
    { kind: 'card', release: 'R2', run_id: ids.run1, code: 'C-001', channel: 'C_REVIEW', ts: '1.1' },
    { kind: 'card', release: 'R3', run_id: ids.run2, code: 'C-001', channel: 'C_REVIEW', ts: '1.3' },
    { kind: 'summary', release: 'R2', run_id: ids.run1, code: '', channel: 'C_REVIEW', ts: '2.1' },
    { kind: 'summary', release: 'R3', run_id: ids.run2, code: '', channel: 'C_REVIEW', ts: '2.2' },
  ]);
  expect(await knex('deployments').orderBy('id').select('id', 'slack')).toEqual([
    { id: ids.d1, slack: { channel: 'C_REL', ts: '3.1' } },
    { id: ids.d2, slack: {} },
    { id: ids.d3, slack: {} },
  ]);
  expect(await knex('prune_proposals').orderBy('id').select('id', 'channel', 'ts')).toEqual([
    { id: ids.p1, channel: 'C_NIGHTLY', ts: '4.1' },
    { id: ids.p2, channel: null, ts: null },
  ]);
  // the old unique key is back
  await expect(knex('slack_messages').insert({ kind: 'summary', release: 'R2', run_id: ids.run1, code: '', channel: 'C_REVIEW', ts: '9.9' })).rejects.toThrow(/unique/);

  await knex.migrate.up({ migrationSource });
  await expectOneRecord();
  // and whatever came after it applies on top
  await knex.migrate.latest({ migrationSource });
  expect(await oneRecord()).toEqual(expectedOneRecord());
});
