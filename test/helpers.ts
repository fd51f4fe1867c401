import type { Knex } from 'knex';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { inject } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig, type Config } from '../src/config/load.js';
import { openDatabase, paramsFromUrl, type Db } from '../src/db/connect.js';
import type { Ctx } from '../src/engine/kernel/context.js';

/** The audit chain's key in tests (configs with database.url need one; see src/config/auditKey.ts). */
export const TEST_AUDIT_KEY = 'test-audit-key-7f3a9c1e5b';

/** The test server's URL with another database name. */
export function urlFor(database: string): string {
  const u = new URL(inject('pgUrl'));
  u.pathname = `/${database}`;
  return u.toString();
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ ...paramsFromUrl(urlFor('postgres')) });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export async function createDatabase(): Promise<string> {
  const name = `t_${crypto.randomBytes(6).toString('hex')}`;
  await admin((c) => c.query(`create database ${name}`));
  return name;
}

export async function dropDatabase(name: string): Promise<void> {
  await admin((c) => c.query(`drop database if exists ${name} with (force)`));
}

export interface EntityOverrides {
  users?: Record<string, unknown>;
  accounts?: Record<string, unknown>;
  transactions?: Record<string, unknown>;
}

/** A config document like the demo's: N source envs as schemas st1…stN of one test database, plus master. */
export function configDoc(database: string, sources: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const environments: Record<string, unknown> = {};
  for (let i = 1; i <= sources; i++) environments[`ST-${i}`] = { role: 'source', precedence: i, schema: `st${i}` };
  environments.master = { role: 'master', schema: 'master' };
  environments.staging = { role: 'staging', schema: 'staging' };
  return {
    database: { url: urlFor(database) },
    releases: {
      R2: {
        features: {
          'FEAT-C': { priority: 'critical', owner: 'alice' },
          'FEAT-H1': { priority: 'high', owner: 'bob' },
          'FEAT-H2': { priority: 'high', owner: 'carol' },
          'FEAT-M': { priority: 'medium', owner: 'dan' },
          'FEAT-L': { priority: 'low', owner: 'erin' },
        },
      },
    },
    environments,
    dataset: {
      entities: {
        users: { primaryKey: 'id', naturalKeys: ['email', 'username'], core: ['role'], ignore: ['updated_at'] },
        accounts: { primaryKey: 'id', naturalKeys: ['number'], references: [{ column: 'user_id', entity: 'users' }] },
        transactions: { primaryKey: 'id', references: [{ column: 'account_id', entity: 'accounts', columns: ['currency'] }] },
      },
    },
    ...extra,
  };
}

export interface TestEnv {
  database: string;
  dir: string;
  configFile: string;
  config: Config;
  db: Db;
  ctx: Ctx;
  /** A client on the test database (envs are schemas in it). */
  sql(text: string, params?: unknown[]): Promise<pg.QueryResult>;
  /** Closes its connections and keeps the database (e.g. to use it as a template). */
  disconnect(): Promise<void>;
  close(): Promise<void>;
}

const TABLES = `
  create table SCHEMA.users (id int primary key, email text, username text, name text, role text, phone text, city text, updated_at timestamptz,
    release text, feature text, created_by text, created_at timestamptz);
  create table SCHEMA.accounts (id int primary key, number text, user_id int, currency text, balance numeric(12,2),
    release text, feature text, created_by text, created_at timestamptz);
  create table SCHEMA.transactions (id int primary key, account_id int, amount numeric(12,2), currency text,
    release text, feature text, created_by text, created_at timestamptz);`;

/** A fresh database with N ST schemas (and master) holding the test tables, a config file and an open Db. */
export async function testEnv(sources = 3, extra: Record<string, unknown> = {}, opts: { tables?: boolean } = {}): Promise<TestEnv> {
  const database = await createDatabase();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-cfg-'));
  const configFile = path.join(dir, 'tributary.yml');
  fs.writeFileSync(configFile, stringify(configDoc(database, sources, extra)));
  const client = new pg.Client(paramsFromUrl(urlFor(database)));
  await client.connect();
  if (opts.tables !== false) {
    for (const schema of [...Array.from({ length: sources }, (_, i) => `st${i + 1}`), 'master']) {
      await client.query(`create schema ${schema}`);
      await client.query(TABLES.replaceAll('SCHEMA', schema));
    }
  }
  const config = loadConfig({ file: configFile, env: { TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } });
  const db = await openDatabase(config);
  return {
    database,
    dir,
    configFile,
    config,
    db,
    ctx: { config, db },
    sql: (text, params) => client.query(text, params as unknown[]),
    async disconnect() {
      await db.close();
      await client.end();
    },
    async close() {
      await db.close();
      await client.end();
      await dropDatabase(database);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const T0 = '2024-01-10T09:00:00Z';

export interface UserRow {
  id: number;
  email: string;
  username?: string;
  name?: string;
  role?: string;
  phone?: string | null;
  city?: string | null;
  feature?: string;
  created_at?: string;
  created_by?: string;
  release?: string | null;
}

export async function insertUsers(env: TestEnv, schema: string, rows: UserRow[]): Promise<void> {
  for (const r of rows) {
    await env.sql(
      `insert into ${schema}.users (id, email, username, name, role, phone, city, updated_at, release, feature, created_by, created_at)
       values ($1, $2, $3, $4, $5, $6, $7, now(), $8, $9, $10, $11)`,
      [r.id, r.email, r.username ?? r.email.split('@')[0], r.name ?? 'Someone', r.role ?? 'Customer', r.phone === undefined ? '+1 555' : r.phone,
        r.city === undefined ? 'Oslo' : r.city, r.release === undefined ? 'R2' : r.release, r.feature ?? 'FEAT-M', r.created_by ?? 'qa', r.created_at ?? T0],
    );
  }
}

export interface AccountRow {
  id: number;
  number: string;
  user_id: number | null;
  currency?: string;
  balance?: string;
  feature?: string;
  created_at?: string;
}

export async function insertAccounts(env: TestEnv, schema: string, rows: AccountRow[]): Promise<void> {
  for (const r of rows) {
    await env.sql(
      `insert into ${schema}.accounts (id, number, user_id, currency, balance, release, feature, created_by, created_at) values ($1, $2, $3, $4, $5, 'R2', $6, 'qa', $7)`,
      [r.id, r.number, r.user_id, r.currency ?? 'USD', r.balance ?? '10.00', r.feature ?? 'FEAT-M', r.created_at ?? T0],
    );
  }
}

export async function insertTransactions(env: TestEnv, schema: string, rows: { id: number; account_id: number; currency?: string; amount?: string; feature?: string }[]): Promise<void> {
  for (const r of rows) {
    await env.sql(
      `insert into ${schema}.transactions (id, account_id, amount, currency, release, feature, created_by, created_at) values ($1, $2, $3, $4, 'R2', $5, 'qa', $6)`,
      [r.id, r.account_id, r.amount ?? '1.00', r.currency ?? 'USD', r.feature ?? 'FEAT-M', T0],
    );
  }
}

/** The final dataset of the release's current run: entity → rows (status final). */
export async function finalRows(env: TestEnv, entity: string): Promise<Record<string, unknown>[]> {
  const s = await env.db.control('release_states').where({ release: 'R2' }).first();
  const res = await env.db.control.raw(`select pk, data, rule, reason, sources, status from work."r${s.current_run_id}_result" where entity = ? order by pk`, [entity]);
  return res.rows;
}

export const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

/**
 * The pid of the session holding a session advisory lock taken as pg_advisory_lock(hashtext(key)), in this
 * database: advisory locks are per database, and other test files take the same keys in theirs.
 */
export async function advisoryLockHolder(db: Knex, key: string): Promise<number | undefined> {
  const res = await db.raw<{ rows: { pid: number }[] }>(
    `select pid from pg_locks where locktype = 'advisory' and granted and objsubid = 1
        and database = (select oid from pg_database where datname = current_database())
        and classid::bigint = ((hashtext(?)::bigint >> 32) & 4294967295) and objid::bigint = (hashtext(?)::bigint & 4294967295)`,
    [key, key],
  );
  return res.rows[0]?.pid;
}

/**
 * A strict server: new sessions of `database` end after `ms` idle (ALTER DATABASE … SET
 * idle_session_timeout, as an operator would set it). `elapsed()` resolves once the server has ended an
 * idle session opened after it (the timeout has passed, measured by the server itself: no sleep).
 * `reset()` takes the setting away.
 */
export async function strictIdleTimeout(database: string, ms: number): Promise<{ elapsed(): Promise<void>; reset(): Promise<void> }> {
  const admin = new pg.Client(paramsFromUrl(urlFor(database)));
  await admin.connect();
  await admin.query(`alter database ${database} set idle_session_timeout = '${ms}ms'`);
  return {
    async elapsed() {
      const sentinel = new pg.Client(paramsFromUrl(urlFor(database)));
      const ended = new Promise<void>((resolve) => {
        sentinel.on('error', () => resolve());
        sentinel.on('end', () => resolve());
      });
      await sentinel.connect();
      await ended;
    },
    async reset() {
      await admin.query(`alter database ${database} reset idle_session_timeout`);
      await admin.end();
    },
  };
}
