/**
 * The benchmarks' data: a PostgreSQL server (BENCH_DATABASE_URL, or an embedded one in a temporary
 * directory), and K ST envs (schemas st1…stK of one bench database) of users and accounts of release R2,
 * generated set-based in SQL with a few % colliding in every way the conflict policy knows.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { paramsFromUrl } from '../src/db/connect.js';
import { ensureEmbeddedServer, type EmbeddedHandle } from '../src/db/embedded.js';
import { redact } from '../src/log.js';

export const RELEASE = 'R2';

export interface DataOptions {
  rows: number;
  envs: number;
  /** No colliding rows and no broken references: a release whose consolidation has nothing to review. */
  clean?: boolean;
}

export interface Server {
  /** URL of a database to run CREATE/DROP DATABASE from. */
  adminUrl: string;
  label: string;
  stop(): Promise<void>;
}

export async function startServer(): Promise<Server> {
  const url = process.env.BENCH_DATABASE_URL;
  if (url) {
    const p = paramsFromUrl(url);
    return { adminUrl: url, label: `${p.host}:${p.port} (BENCH_DATABASE_URL)`, stop: async () => undefined };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-bench-'));
  // the server runs as the postgres system user when we are root: it must reach its data directory
  fs.chmodSync(dir, 0o755);
  let handle: EmbeddedHandle;
  try {
    handle = await ensureEmbeddedServer(path.join(dir, 'pg'));
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const { host, port, user, password } = handle.info;
  return {
    adminUrl: `postgres://${user}:${encodeURIComponent(password)}@${host}:${port}/postgres`,
    label: `embedded PostgreSQL on ${host}:${port} (data in ${dir})`,
    stop: async () => {
      // a Ctrl-C in a terminal reaches the server too, and stop() waits for ever on a server already gone
      await Promise.race([handle.stop().catch(() => undefined), sleep(10_000, undefined, { ref: false })]);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export async function onAdmin<T>(server: Server, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ ...paramsFromUrl(server.adminUrl), connectionTimeoutMillis: 5000 });
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

export function configDoc(url: string, envs: number): Record<string, unknown> {
  const environments: Record<string, unknown> = {};
  for (let i = 1; i <= envs; i++) environments[`ST-${i}`] = { role: 'source', precedence: i, schema: `st${i}` };
  environments.master = { role: 'master', schema: 'master' };
  return {
    database: { url },
    releases: {
      [RELEASE]: {
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
      },
    },
  };
}

// ---------------------------------------------------------------- data

const TABLES = `
  create table SCHEMA.users (id int primary key, email text, username text, name text, role text, phone text, city text, updated_at timestamptz,
    release text, feature text, created_by text, created_at timestamptz);
  create table SCHEMA.accounts (id int primary key, number text, user_id int, currency text, balance numeric(12,2),
    release text, feature text, created_by text, created_at timestamptz);`;

export interface Plan {
  users: number[];
  accounts: number[];
  /** Id ranges: env i's rows have ids i*stride + 1 …, so envs never share a key unless a row says so. */
  userStride: number;
  accountStride: number;
  clean: boolean;
}

function split(total: number, envs: number): number[] {
  const base = Math.floor(total / envs);
  return Array.from({ length: envs }, (_, i) => base + (i < total % envs ? 1 : 0));
}

export function plan(opts: DataOptions): Plan {
  const usersTotal = Math.round(opts.rows * 0.6);
  const users = split(usersTotal, opts.envs);
  const accounts = split(opts.rows - usersTotal, opts.envs);
  const stride = (n: number) => 10 ** String(n).length;
  const p = { users, accounts, userStride: stride(users[0]!), accountStride: stride(accounts[0]!), clean: !!opts.clean };
  if ((opts.envs + 1) * Math.max(p.userStride, p.accountStride) >= 2 ** 31) throw new Error('too many rows per env for int ids: add envs or lower --rows');
  return p;
}

/**
 * Users of env i, row g. Rows of ST-2…K with g ≤ ST-1's count fall in a category by g % 100 (c = 0: a
 * row of their own); categories 1–6 and 11 share ST-1 row g's natural keys:
 *   1 identical (exact-duplicate)        2 other city, same feature (env-precedence)
 *   3 renamed, critical feature (feature-priority)   11 renamed, FEAT-H2 vs FEAT-H1 (equal-priority)
 *   4 other role (core-conflict; P1 in even envs)       5 no phone (complementary-merge)
 *   6 created later, same payload (newest-wins)         7 ST-1 row g's id, own keys (re-key)
 *   8 (g % 1000 = 8 only) ST-1 row g's username with its own email (inconsistent-identity)
 */
function usersSql(i: number, p: Plan): string {
  const n1 = p.users[0]!;
  const su = p.userStride;
  return `
    insert into st${i}.users (id, email, username, name, role, phone, city, updated_at, release, feature, created_by, created_at)
    select case when c = 7 then ${su} + g else ${i * su} + g end,
           case when c in (1, 2, 3, 4, 5, 6, 11) then 'u1_' || g else 'u${i}_' || g end || '@bench.test',
           case when c in (1, 2, 3, 4, 5, 6, 11) or c = 8 and g % 1000 = 8 then 'u1_' || g else 'u${i}_' || g end,
           'User ' || g || case when c in (3, 11) then ' (renamed)' else '' end,
           case when c = 4 then 'Auditor' else (array['Customer', 'Merchant', 'Admin'])[g % 3 + 1] end,
           case when c = 5 then null else '+1 555 ' || lpad(g::text, 7, '0') end,
           case when c = 2 then 'City ${i}' else (array['Oslo', 'Lyon', 'Porto', 'Turku'])[g % 4 + 1] end,
           timestamptz '2024-01-10 09:00Z' + g * interval '1 second' + ${i} * interval '1 minute',
           '${RELEASE}',
           case when c = 3 then 'FEAT-C' when c = 11 then 'FEAT-H2' when c = 4 and ${i % 2} = 0 then 'FEAT-C'
                else (array['FEAT-C', 'FEAT-H1', 'FEAT-H2', 'FEAT-M', 'FEAT-L'])[g % 5 + 1] end,
           'qa${i}',
           timestamptz '2024-01-10 09:00Z' + (g % 1440) * interval '1 minute' + case when c = 6 then ${i} * interval '1 hour' else interval '0' end
      from (select g, case when ${!p.clean} and ${i} > 1 and g <= ${n1} then g % 100 else 0 end as c from generate_series(1, ${p.users[i - 1]}) g) s`;
}

/**
 * Accounts of env i, row h: 9 in 10 reference user row h (cycling) of their env, which for the
 * colliding categories is the matching colliding user, so a duplicate account's reference resolves to
 * the same user identity as ST-1's. Categories (ST-2…K, h ≤ ST-1's count, h % 100): 1 identical, 2 other
 * balance (env-precedence), 3 other currency and feature (feature-priority), 7 ST-1 row h's id (re-key).
 * In every env, h % 2000 = 1999 references no user (dangling-reference).
 */
function accountsSql(i: number, p: Plan): string {
  const m1 = p.accounts[0]!;
  const n1 = p.users[0]!;
  const ni = p.users[i - 1]!;
  const su = p.userStride;
  const sa = p.accountStride;
  const userId = (g: string) => `case when ${!p.clean} and ${i} > 1 and ${g} <= ${n1} and ${g} % 100 = 7 then ${su} + ${g} else ${i * su} + ${g} end`;
  return `
    insert into st${i}.accounts (id, number, user_id, currency, balance, release, feature, created_by, created_at)
    select case when c = 7 then ${sa} + h else ${i * sa} + h end,
           case when c in (1, 2, 3) then 'A1-' || h else 'A${i}-' || h end,
           case when h % 10 = 0 then null when ${!p.clean} and h % 2000 = 1999 then -h else ${userId(`((h - 1) % ${ni} + 1)`)} end,
           case when c = 3 then 'GBP' else (array['USD', 'EUR', 'NOK'])[h % 3 + 1] end,
           (h % 10000) + 0.5 + case when c = 2 then ${i} else 0 end,
           '${RELEASE}',
           case when c = 3 then 'FEAT-H1' else (array['FEAT-C', 'FEAT-H1', 'FEAT-H2', 'FEAT-M', 'FEAT-L'])[h % 5 + 1] end,
           'qa${i}',
           timestamptz '2024-01-10 09:00Z' + (h % 1440) * interval '1 minute'
      from (select h, case when ${!p.clean} and ${i} > 1 and h <= ${m1} then h % 100 else 0 end as c from generate_series(1, ${p.accounts[i - 1]}) h) s`;
}

export async function generate(url: string, opts: DataOptions, p: Plan): Promise<void> {
  const c = new pg.Client({ ...paramsFromUrl(url) });
  c.on('error', () => undefined);
  await c.connect();
  try {
    for (const schema of [...Array.from({ length: opts.envs }, (_, i) => `st${i + 1}`), 'master']) {
      await c.query(`create schema ${schema}`);
      await c.query(TABLES.replaceAll('SCHEMA', schema));
    }
    for (let i = 1; i <= opts.envs; i++) {
      await c.query(usersSql(i, p));
      await c.query(accountsSql(i, p));
    }
    // hint bits, visibility map and statistics now, so neither measured phase pays for them
    await c.query('vacuum analyze');
    await c.query('checkpoint').catch(() => undefined);
  } finally {
    await c.end().catch(() => undefined);
  }
}


export interface Scratch {
  server: Server;
  /** URL of the scratch database. */
  url: string;
  /** A temporary directory (config files, reports). */
  dir: string;
  /** Cleans up `fn` at the end, before the database, the directory and the server (last in, first out). */
  defer(fn: () => Promise<unknown>): void;
}

/**
 * A benchmark's scratch database on the bench server, and a temporary directory: both are removed at
 * the end, on failure, or on Ctrl-C (and the embedded server, if one was started, stopped).
 */
export async function withScratch(name: string, fn: (s: Scratch) => Promise<void>): Promise<void> {
  const server = await startServer();
  const database = `bench_${name}_${crypto.randomBytes(4).toString('hex')}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tributary-bench-${name}-`));
  const cleanup: (() => Promise<unknown>)[] = [() => server.stop(), async () => fs.rmSync(dir, { recursive: true, force: true })];
  const finish = async () => {
    while (cleanup.length > 0) await cleanup.pop()!().catch((err) => console.error(`cleanup: ${redact(String(err))}`));
  };
  process.removeAllListeners('SIGINT');
  process.once('SIGINT', () => void finish().then(() => process.exit(130)));
  try {
    await onAdmin(server, (c) => c.query(`create database ${database}`));
    cleanup.push(() => onAdmin(server, (c) => c.query(`drop database if exists ${database} with (force)`)));
    await fn({ server, url: withDatabase(server.adminUrl, database), dir, defer: (f) => cleanup.push(f) });
  } finally {
    await finish();
  }
}

/** Runs a benchmark: exit 0, or 1 with the error (secrets redacted). */
export function runBench(name: string, main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(`bench:${name} failed: ${redact(err instanceof Error ? (err.stack ?? err.message) : String(err))}`);
      process.exit(1);
    },
  );
}
