import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../../src/config/load.js';
import { openDatabase } from '../../../src/db/connect.js';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import type { Ctx } from '../../../src/engine/kernel/context.js';
import { installTagging, tagRelease, type TagResult } from '../../../src/engine/gate/tag.js';
import { TributaryError } from '../../../src/errors.js';
import { configDoc, insertAccounts, insertTransactions, insertUsers, TEST_AUDIT_KEY, testEnv, urlFor, type TestEnv } from '../../helpers.js';

const ACTOR = 'cli:test';

/** A small, fully tagged release: a few users, accounts and transactions in each ST env. */
async function seedClean(env: TestEnv): Promise<void> {
  for (const [i, schema] of ['st1', 'st2', 'st3'].entries()) {
    const base = (i + 1) * 100;
    await insertUsers(env, schema, [
      { id: base + 1, email: `a${base}@x.example`, feature: 'FEAT-C' },
      { id: base + 2, email: `b${base}@x.example`, feature: 'FEAT-M' },
    ]);
    await insertAccounts(env, schema, [{ id: base + 1, number: `AC-${base}`, user_id: base + 1 }]);
    await insertTransactions(env, schema, [{ id: base + 1, account_id: base + 1 }]);
  }
}

/** Expects the promise to reject with a TributaryError and returns it. */
async function refusal(p: Promise<unknown>): Promise<TributaryError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TributaryError);
  return err as TributaryError;
}

async function runsOf(env: TestEnv): Promise<{ id: number; status: string; error: string | null }[]> {
  return env.db.control('runs').where({ release: 'R2' }).orderBy('id').select('id', 'status', 'error');
}

async function workTablesOf(env: TestEnv, runId: number): Promise<string[]> {
  const res = await env.sql(`select tablename from pg_tables where schemaname = 'work' and tablename like $1`, [`r${runId}\\_%`]);
  return res.rows.map((r: { tablename: string }) => r.tablename);
}

/** Row count and content hash of every test table of a schema, to prove it was not touched. */
async function snapshot(env: TestEnv, schema: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const table of ['users', 'accounts', 'transactions']) {
    const res = await env.sql(`select count(*)::int as n, coalesce(md5(string_agg(t::text, '|' order by t.id)), '') as h from ${schema}.${table} t`);
    out[table] = `${res.rows[0].n}:${res.rows[0].h}`;
  }
  return out;
}

describe('tag & lock and the consolidation gates', () => {
  let env: TestEnv;
  let ctx: Ctx;

  beforeEach(async () => {
    env = await testEnv(3);
    ctx = env.ctx;
  });

  afterEach(async () => {
    await env.close();
  });

  it('lists every offender (env, table, key, what is missing) and locks nothing', async () => {
    await seedClean(env);
    await insertUsers(env, 'st2', [
      { id: 210, email: 'nofeature@x.example' },
      { id: 211, email: 'offplan@x.example', feature: 'FEAT-X' },
    ]);
    await env.sql(`update st2.users set feature = null where id = 210`);
    await insertUsers(env, 'st3', [{ id: 320, email: 'norelease@x.example', feature: 'FEAT-C', release: null }]);
    await insertAccounts(env, 'st1', [{ id: 130, number: 'AC-130', user_id: 101 }]);
    await env.sql(`update st1.accounts set created_by = null, created_at = null where id = 130`);

    const err = await refusal(tagRelease(ctx, 'R2', { actor: ACTOR }));
    expect(err.code).toBe('gate_untagged');
    const result = err.details.result as TagResult;
    expect(result.offenderCount).toBe(4);
    expect(result.locks).toEqual([]);
    const byKey = (envName: string, table: string, key: string) => result.offenders.find((o) => o.env === envName && o.table === table && o.key === key);
    expect(byKey('ST-2', 'users', '210')?.missing).toEqual(['feature tag']);
    expect(byKey('ST-2', 'users', '211')?.missing).toEqual(["a feature of R2's plan (has FEAT-X)"]);
    expect(byKey('ST-3', 'users', '320')?.missing).toEqual(['release tag']);
    expect(byKey('ST-1', 'accounts', '130')?.missing).toEqual(['created_by tag', 'created_at tag']);
    expect(result.offenders).toHaveLength(4);

    expect(await env.db.control('locks').count<{ count: number }[]>('* as count')).toEqual([{ count: 0 }]);
    expect(await env.db.control('release_states').where({ release: 'R2' }).first()).toBeUndefined();
    const audit = await env.db.control('audit_events').where({ release: 'R2' }).pluck('action');
    expect(audit).toEqual(['gate.tag.refused']);
  });

  it('locks every env and table with counts and checksums when the tags are complete', async () => {
    await seedClean(env);
    const r = await tagRelease(ctx, 'R2', { actor: ACTOR });
    expect(r.offenderCount).toBe(0);
    expect(r.envs).toEqual(['ST-1', 'ST-2', 'ST-3']);
    expect(r.locks).toHaveLength(9);
    const locks = await env.db.control('locks').where({ release: 'R2' }).orderBy(['env', 'entity']);
    expect(locks.map((l) => `${l.env}/${l.entity}/${l.row_count}`)).toEqual([
      'ST-1/accounts/1', 'ST-1/transactions/1', 'ST-1/users/2',
      'ST-2/accounts/1', 'ST-2/transactions/1', 'ST-2/users/2',
      'ST-3/accounts/1', 'ST-3/transactions/1', 'ST-3/users/2',
    ]);
    for (const l of locks) expect(l.checksum).toMatch(/^\d+$/);
    expect((await env.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('locked');
  });

  it('refuses to consolidate a release that is not locked', async () => {
    await seedClean(env);
    const err = await refusal(consolidate(ctx, 'R2', { actor: ACTOR }));
    expect(err.code).toBe('gate_not_locked');
    expect(err.message).toContain('tributary tag R2');
    expect(await runsOf(env)).toEqual([]);

    // partly locked: the envs still missing are named
    await tagRelease(ctx, 'R2', { env: 'ST-1', actor: ACTOR });
    const partial = await refusal(consolidate(ctx, 'R2', { actor: ACTOR }));
    expect(partial.code).toBe('gate_not_locked');
    expect(partial.message).toContain('ST-2 (users)');
    expect(partial.message).toContain('ST-3 (transactions)');
    expect(partial.message).not.toContain('ST-1 (');
    expect(await runsOf(env)).toEqual([]);
  });

  it('refuses drift after the lock, naming env and table, until that env is re-locked', async () => {
    await seedClean(env);
    await tagRelease(ctx, 'R2', { actor: ACTOR });
    await env.sql(`update st2.accounts set balance = 999.99 where id = 201`);

    const err = await refusal(consolidate(ctx, 'R2', { actor: ACTOR }));
    expect(err.code).toBe('gate_drift');
    expect(err.details).toMatchObject({ env: 'ST-2', table: 'accounts' });
    expect(err.message).toContain('ST-2');
    expect(err.message).toContain('accounts');
    expect(err.message).toContain('tributary tag R2 --env ST-2');
    const failed = await runsOf(env);
    expect(failed.map((r) => r.status)).toEqual(['failed']);
    expect(await workTablesOf(env, failed[0]!.id)).toEqual([]);

    // a new row is drift too
    await insertUsers(env, 'st3', [{ id: 399, email: 'late@x.example' }]);
    await tagRelease(ctx, 'R2', { env: 'ST-2', actor: ACTOR });
    const again = await refusal(consolidate(ctx, 'R2', { actor: ACTOR }));
    expect(again.code).toBe('gate_drift');
    expect(again.details).toMatchObject({ env: 'ST-3', table: 'users' });

    await tagRelease(ctx, 'R2', { env: 'ST-3', actor: ACTOR });
    const ok = await consolidate(ctx, 'R2', { actor: ACTOR });
    expect(ok.counts.collected).toBe(13);
    const runs = await runsOf(env);
    expect(runs.map((r) => r.status)).toEqual(['failed', 'failed', 'succeeded']);
    const relocks = await env.db.control('audit_events').where({ release: 'R2', action: 'gate.relock' }).pluck('details');
    expect(relocks.map((d: { envs: string[] }) => d.envs)).toEqual([['ST-2'], ['ST-3']]);
  });

  it('reports rows locked and deleted since as drift, not as a release with no rows', async () => {
    await seedClean(env);
    await tagRelease(ctx, 'R2', { actor: ACTOR });
    for (const schema of ['st1', 'st2', 'st3']) {
      for (const table of ['transactions', 'accounts', 'users']) await env.sql(`delete from ${schema}.${table}`);
    }
    const err = await refusal(consolidate(ctx, 'R2', { actor: ACTOR }));
    expect(err.code).toBe('gate_drift');
    expect(err.message).toContain('tributary tag R2 --env ST-1');
    const failed = await runsOf(env);
    expect(failed.map((r) => r.status)).toEqual(['failed']);
    expect(await workTablesOf(env, failed[0]!.id)).toEqual([]);
  });

  it('names an unknown release', async () => {
    const tag = await refusal(tagRelease(ctx, 'R9', { actor: ACTOR }));
    expect(tag.code).toBe('unknown_release');
    expect(tag.message).toContain('R9');
    expect(tag.message).toContain('R2');
    const cons = await refusal(consolidate(ctx, 'R9', { actor: ACTOR }));
    expect(cons.code).toBe('unknown_release');
    expect(await env.db.control('runs').select('id')).toEqual([]);
  });

  it('refuses a release with no rows and leaves no running run and no work tables', async () => {
    await tagRelease(ctx, 'R2', { actor: ACTOR });
    const err = await refusal(consolidate(ctx, 'R2', { actor: ACTOR }));
    expect(err.code).toBe('no_rows');
    expect(err.message).toContain('R2');
    const runs = await runsOf(env);
    expect(runs).toHaveLength(1);
    expect(runs[0]!.status).toBe('failed');
    expect(runs[0]!.error).toContain('no rows');
    expect(await workTablesOf(env, runs[0]!.id)).toEqual([]);
    expect(await env.db.control('conflicts').select('id')).toEqual([]);
    expect((await env.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('locked');
  });

  it('names an unreachable ST env, leaves no half-finished run and touches no other env', async () => {
    await seedClean(env);
    const dead = 'postgres://postgres@127.0.0.1:1/x';

    // tagging with a dead env: refused, nothing locked
    const deadDoc = configDoc(env.database, 2);
    (deadDoc.environments as Record<string, unknown>)['ST-3'] = { role: 'source', precedence: 3, url: dead, schema: 'st3' };
    const deadFile = path.join(env.dir, 'dead.yml');
    fs.writeFileSync(deadFile, stringify(deadDoc));
    const deadConfig = loadConfig({ file: deadFile, env: { TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } });
    const deadDb = await openDatabase(deadConfig);
    const deadCtx: Ctx = { config: deadConfig, db: deadDb };
    try {
      const tag = await refusal(tagRelease(deadCtx, 'R2', { actor: ACTOR }));
      expect(tag.code).toBe('env_unreachable');
      expect(tag.message).toContain('ST-3');
      expect(tag.message).not.toContain('ST-1');
      expect(await env.db.control('locks').select('env')).toEqual([]);

      // locked while ST-3 answered (over its own url), then ST-3 goes away
      const liveDoc = configDoc(env.database, 2);
      (liveDoc.environments as Record<string, unknown>)['ST-3'] = { role: 'source', precedence: 3, url: urlFor(env.database), schema: 'st3' };
      const liveFile = path.join(env.dir, 'live.yml');
      fs.writeFileSync(liveFile, stringify(liveDoc));
      const liveConfig = loadConfig({ file: liveFile, env: { TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } });
      const liveDb = await openDatabase(liveConfig);
      try {
        await tagRelease({ config: liveConfig, db: liveDb }, 'R2', { actor: ACTOR });
      } finally {
        await liveDb.close();
      }
      const locksBefore = await env.db.control('locks').where({ release: 'R2' }).orderBy(['env', 'entity']);
      expect(locksBefore).toHaveLength(9);
      const before = { st1: await snapshot(env, 'st1'), st2: await snapshot(env, 'st2'), st3: await snapshot(env, 'st3') };

      const err = await refusal(consolidate(deadCtx, 'R2', { actor: ACTOR }));
      expect(err.code).toBe('env_unreachable');
      expect(err.details).toMatchObject({ env: 'ST-3' });
      expect(err.message).toContain('env ST-3');
      expect(err.message).toContain('127.0.0.1:1');

      expect((await runsOf(env)).filter((r) => r.status === 'running')).toEqual([]);
      const tables = await env.sql(`select count(*)::int as n from pg_tables where schemaname = 'work'`);
      expect(tables.rows[0].n).toBe(0);
      expect({ st1: await snapshot(env, 'st1'), st2: await snapshot(env, 'st2'), st3: await snapshot(env, 'st3') }).toEqual(before);
      expect(await env.db.control('locks').where({ release: 'R2' }).orderBy(['env', 'entity'])).toEqual(locksBefore);
      expect((await env.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('locked');
    } finally {
      await deadDb.close();
    }
  });

  it('installTagging adds the tag columns and a trigger that tags rows from the transaction settings', async () => {
    await env.sql(`drop table st1.users, st1.accounts, st1.transactions`);
    await env.sql(`create table st1.users (id int primary key, email text, username text, role text)`);
    await env.sql(`create table st1.accounts (id int primary key, number text, user_id int, currency text)`);
    await env.sql(`create table st1.transactions (id int primary key, account_id int, amount numeric(12,2), currency text)`);

    const r = await installTagging(ctx, 'ST-1', ACTOR);
    expect(r).toEqual({ env: 'ST-1', tables: ['users', 'accounts', 'transactions'] });
    for (const table of ['users', 'accounts', 'transactions']) {
      const cols = await env.sql(
        `select column_name, data_type from information_schema.columns where table_schema = 'st1' and table_name = $1 order by ordinal_position`,
        [table],
      );
      expect(cols.rows.slice(-4)).toEqual([
        { column_name: 'release', data_type: 'text' },
        { column_name: 'feature', data_type: 'text' },
        { column_name: 'created_by', data_type: 'text' },
        { column_name: 'created_at', data_type: 'timestamp with time zone' },
      ]);
      const trg = await env.sql(`select tgname from pg_trigger where tgrelid = $1::regclass and not tgisinternal`, [`st1.${table}`]);
      expect(trg.rows).toEqual([{ tgname: 'tributary_tags' }]);
    }

    await env.sql('begin');
    await env.sql(`select set_config('tributary.release', 'R2', true), set_config('tributary.feature', 'FEAT-C', true), set_config('tributary.created_by', 'alice', true)`);
    await env.sql(`insert into st1.users (id, email, username, role) values (1, 'a@x.example', 'a', 'Customer')`);
    await env.sql(`insert into st1.accounts (id, number, user_id, currency) values (1, 'AC-1', 1, 'USD')`);
    await env.sql('commit');
    // the settings were local to that transaction: the next one is not tagged with them
    await env.sql(`insert into st1.users (id, email, username, role) values (2, 'b@x.example', 'b', 'Customer')`);
    // explicit values win over the settings
    await env.sql('begin');
    await env.sql(`select set_config('tributary.release', 'R2', true), set_config('tributary.feature', 'FEAT-C', true)`);
    await env.sql(`insert into st1.users (id, email, username, role, feature) values (3, 'c@x.example', 'c', 'Customer', 'FEAT-M')`);
    await env.sql('commit');

    const users = await env.sql(`select id, release, feature, created_by, created_at is not null as stamped from st1.users order by id`);
    const me = (await env.sql('select current_user as u')).rows[0].u as string;
    expect(users.rows).toEqual([
      { id: 1, release: 'R2', feature: 'FEAT-C', created_by: 'alice', stamped: true },
      { id: 2, release: null, feature: null, created_by: me, stamped: true },
      { id: 3, release: 'R2', feature: 'FEAT-M', created_by: me, stamped: true },
    ]);
    const acc = await env.sql(`select release, feature, created_by from st1.accounts`);
    expect(acc.rows).toEqual([{ release: 'R2', feature: 'FEAT-C', created_by: 'alice' }]);

    // installing twice is harmless
    await installTagging(ctx, 'ST-1', ACTOR);
    const trg = await env.sql(`select count(*)::int as n from pg_trigger where tgrelid = 'st1.users'::regclass and not tgisinternal`);
    expect(trg.rows[0].n).toBe(1);
    expect(await env.db.control('audit_events').where({ action: 'tag.install', subject: 'ST-1' }).count<{ count: number }[]>('* as count')).toEqual([{ count: 2 }]);

    const notSource = await refusal(installTagging(ctx, 'master', ACTOR));
    expect(notSource.code).toBe('usage');
  });

  it('keeps the audit trail append-only: updates and deletes fail', async () => {
    await seedClean(env);
    await tagRelease(ctx, 'R2', { actor: ACTOR });
    const before = await env.sql(`select id, actor, action from audit_events order by id`);
    expect(before.rows.length).toBeGreaterThan(0);
    await expect(env.sql(`update audit_events set actor = 'mallory'`)).rejects.toThrow(/append-only/);
    await expect(env.sql(`delete from audit_events`)).rejects.toThrow(/append-only/);
    await expect(env.db.control('audit_events').where({ action: 'gate.lock' }).update({ details: '{}' })).rejects.toThrow(/append-only/);
    const after = await env.sql(`select id, actor, action from audit_events order by id`);
    expect(after.rows).toEqual(before.rows);
  });
});
