import type { Knex } from 'knex';
import { type Config, type EnvSpec, envByRole } from '../config/load.js';
import { ensureDatabase, type Db } from '../db/connect.js';
import { installTagging } from '../engine/gate/index.js';
import { ident, qualified } from '../engine/kernel/sql.js';

/**
 * The demo team: five ST databases (schemas of one demo database) with users, accounts and
 * transactions across the eight features of R2, about 400 records, with the classic conflicts of this
 * practice planted among ordinary rows. Deterministic, so every run shows the same queue.
 */
type Row = Record<string, unknown>;
interface EnvRows {
  users: Row[];
  accounts: Row[];
  transactions: Row[];
}

const FEATURES = ['FEAT-101', 'FEAT-102', 'FEAT-103', 'FEAT-104', 'FEAT-105', 'FEAT-106', 'FEAT-107', 'FEAT-108'];
const FIRST = ['Ada', 'Ben', 'Cleo', 'Dev', 'Eva', 'Finn', 'Gus', 'Hana', 'Ines', 'Jon', 'Kai', 'Lina', 'Max', 'Nora', 'Otto', 'Pia', 'Quin', 'Rosa', 'Sam', 'Tess', 'Uma', 'Vic'];
const CITIES = ['Lisbon', 'Oslo', 'Turin', 'Ghent', 'Porto', 'Bergen', 'Lyon', 'Graz'];

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const at = (day: number, hour = 9) => new Date(Date.UTC(2024, 0, day, hour, 0, 0));

function user(id: number, email: string, username: string, name: string, feature: string, env: number, extra: Row = {}): Row {
  // people planted in several envs share their phone and city, so only what the story says differs
  const seed = id >= 1500 && id % 1000 >= 500 ? email.length : id;
  return {
    id, email, username, full_name: name, role: 'Customer', permissions: 'read', phone: `+351 21 ${String(seed).padStart(6, '0')}`,
    city: CITIES[seed % CITIES.length], updated_at: at(20), release: 'R2', feature, created_by: `qa-st${env}`, created_at: at(3 + (id % 20), 9 + (id % 8)), ...extra,
  };
}

function account(id: number, number: string, userId: number, feature: string, env: number, extra: Row = {}): Row {
  return { id, account_number: number, user_id: userId, currency: 'USD', balance: (100 + (id % 97) * 13.5).toFixed(2), status: 'active', release: 'R2', feature, created_by: `qa-st${env}`, created_at: at(5 + (id % 15)), ...extra };
}

function txn(id: number, reference: string, accountId: number, feature: string, env: number, extra: Row = {}): Row {
  return { id, reference, account_id: accountId, amount: (5 + (id % 50) * 2.25).toFixed(2), currency: 'USD', kind: id % 3 === 0 ? 'refund' : 'payment', release: 'R2', feature, created_by: `qa-st${env}`, created_at: at(8 + (id % 12)), ...extra };
}

export function demoRows(): Map<number, EnvRows> {
  const envs = new Map<number, EnvRows>();
  for (let k = 1; k <= 5; k++) {
    const rand = rng(k * 7919);
    const rows: EnvRows = { users: [], accounts: [], transactions: [] };
    for (let i = 0; i < 22; i++) {
      const f = FEATURES[(i + k) % FEATURES.length]!;
      const uid = k * 1000 + i;
      rows.users.push(user(uid, `${FIRST[i]!.toLowerCase()}.${k}${i}@st${k}.example`, `${FIRST[i]!.toLowerCase()}${k}${i}`, `${FIRST[i]} St${k}`, f, k));
      rows.accounts.push(account(k * 1000 + 500 + i, `AC-${k}-${String(i).padStart(3, '0')}`, uid, f, k));
    }
    for (let i = 0; i < 26; i++) {
      const acc = rows.accounts[Math.floor(rand() * rows.accounts.length)]!;
      rows.transactions.push(txn(k * 1000 + 800 + i, `TX-${k}-${String(i).padStart(3, '0')}`, acc.id as number, acc.feature as string, k));
    }
    envs.set(k, rows);
  }
  const e = (k: number) => envs.get(k)!;

  // 1. Dana is Administrator in ST-1 (critical FEAT-101) and Customer in ST-3: core-conflict, P1.
  e(1).users.push(user(1901, 'dana@corp.example', 'dana', 'Dana Reyes', 'FEAT-101', 1, { role: 'Administrator', permissions: 'admin' }));
  e(3).users.push(user(3901, 'dana@corp.example', 'dana', 'Dana Reyes', 'FEAT-103', 3));
  e(1).accounts.push(account(1951, 'AC-DANA', 1901, 'FEAT-101', 1));
  e(3).accounts.push(account(3951, 'AC-DANA-3', 3901, 'FEAT-103', 3));
  e(3).transactions.push(txn(3951, 'TX-DANA-1', 3951, 'FEAT-103', 3), txn(3952, 'TX-DANA-2', 3951, 'FEAT-103', 3));
  // 2. Omar has three roles in three envs, none critical: core-conflict, P2, three versions.
  e(2).users.push(user(2904, 'omar@corp.example', 'omar', 'Omar Haddad', 'FEAT-103', 2, { role: 'Support', permissions: 'support' }));
  e(4).users.push(user(4904, 'omar@corp.example', 'omar', 'Omar Haddad', 'FEAT-105', 4));
  e(5).users.push(user(5904, 'omar@corp.example', 'omar', 'Omar Haddad', 'FEAT-107', 5, { role: 'Manager', permissions: 'manage' }));
  // 3. Ivan is identical in ST-1 and ST-4 but for his timestamp: newest-wins.
  e(1).users.push(user(1902, 'ivan@corp.example', 'ivan', 'Ivan Petrov', 'FEAT-103', 1, { created_at: at(10), created_by: 'qa-ivan' }));
  e(4).users.push(user(4902, 'ivan@corp.example', 'ivan', 'Ivan Petrov', 'FEAT-103', 4, { created_at: at(12), created_by: 'qa-ivan' }));
  // 4. Merchant M-1001 has different balances for two high-priority features in ST-2 and ST-5: equal-priority, P3.
  e(2).users.push(user(2950, 'merchant.m1001@corp.example', 'm1001', 'Merchant 1001', 'FEAT-102', 2));
  e(5).users.push(user(5950, 'merchant.m1001@corp.example', 'm1001', 'Merchant 1001', 'FEAT-102', 5, { created_at: e(2).users.at(-1)!.created_at }));
  e(2).accounts.push(account(2960, 'M-1001', 2950, 'FEAT-102', 2, { balance: '1500.00' }));
  e(5).accounts.push(account(5960, 'M-1001', 5950, 'FEAT-104', 5, { balance: '2750.00' }));
  e(5).transactions.push(txn(5961, 'TX-M1001-1', 5960, 'FEAT-104', 5));
  // 5. Exact duplicates: Judy in ST-2 and ST-3, Kim in ST-1, ST-3 and ST-5.
  const judy = { created_at: at(4), created_by: 'qa-shared', city: 'Porto', phone: '+351 21 555000', updated_at: at(20) };
  e(2).users.push(user(2903, 'judy@corp.example', 'judy', 'Judy Alves', 'FEAT-105', 2, judy));
  e(3).users.push(user(3903, 'judy@corp.example', 'judy', 'Judy Alves', 'FEAT-105', 3, judy));
  const kim = { created_at: at(6), created_by: 'qa-shared', city: 'Oslo', phone: '+47 22 000000', updated_at: at(20) };
  for (const k of [1, 3, 5]) e(k).users.push(user(k * 1000 + 905, 'kim@corp.example', 'kim', 'Kim Berg', 'FEAT-107', k, kim));
  // 6. Leo's phone is only in ST-5 and his city only in ST-4: complementary-merge.
  const leo = { created_at: at(7), created_by: 'qa-leo' };
  e(4).users.push(user(4906, 'leo@corp.example', 'leo', 'Leo Martin', 'FEAT-103', 4, { ...leo, phone: null, city: 'Lyon' }));
  e(5).users.push(user(5906, 'leo@corp.example', 'leo', 'Leo Martin', 'FEAT-103', 5, { ...leo, phone: '+33 4 7000 0000', city: null }));
  // 7. The same id 1500 for two different people in ST-1 and ST-2: re-key; Nick's account follows.
  e(1).users.push(user(1500, 'mia@corp.example', 'mia', 'Mia Costa', 'FEAT-101', 1));
  // Nick is a Customer with admin permissions: validation's permissions_match_role test finds him.
  e(2).users.push(user(1500, 'nick@corp.example', 'nick', 'Nick Young', 'FEAT-104', 2, { permissions: 'admin' }));
  e(2).accounts.push(account(2970, 'AC-NICK', 1500, 'FEAT-104', 2));
  // 8. A transaction pointing at an account that is not there: dangling-reference.
  e(3).transactions.push(txn(3990, 'TX-ORPHAN-1', 3999, 'FEAT-104', 3));
  // 9. A critical feature and a medium one disagree on a balance: feature-priority.
  e(3).accounts.push(account(3980, 'AC-FRAUD-1', 3000, 'FEAT-106', 3, { balance: '100.00' }));
  e(4).accounts.push(account(4980, 'AC-FRAUD-1', 4000, 'FEAT-107', 4, { balance: '120.00' }));
  // 10. Same feature, different currency: env-precedence keeps ST-1's USD; ST-2's EUR transaction relies on EUR: mismatched-parent.
  e(1).accounts.push(account(1985, 'AC-FX-1', 1001, 'FEAT-108', 1, { currency: 'USD' }));
  e(2).accounts.push(account(2985, 'AC-FX-1', 2001, 'FEAT-108', 2, { currency: 'EUR' }));
  e(2).transactions.push(txn(2986, 'TX-FX-1', 2985, 'FEAT-108', 2, { currency: 'EUR' }));
  // 11. Email says one person, username another: inconsistent-identity.
  e(1).users.push(user(1907, 'pat@corp.example', 'pat', 'Pat Quinn', 'FEAT-101', 1));
  e(2).users.push(user(2907, 'pat.smith@corp.example', 'pat', 'Pat Smith', 'FEAT-102', 2));
  // 12. A transaction on an account of release R1, which lives in master: resolves there.
  e(4).transactions.push(txn(4991, 'TX-R1-1', 105, 'FEAT-104', 4));
  return envs;
}

const DDL = {
  users: (t: string, tags: boolean) => `create table ${t} (id int primary key, email text, username text, full_name text, role text, permissions text,
      phone text, city text, updated_at timestamptz${tags ? ', release text, feature text, created_by text, created_at timestamptz' : ''})`,
  accounts: (t: string, tags: boolean) => `create table ${t} (id int primary key, account_number text, user_id int, currency text, balance numeric(12,2),
      status text${tags ? ', release text, feature text, created_by text, created_at timestamptz' : ''})`,
  transactions: (t: string, tags: boolean) => `create table ${t} (id int primary key, reference text, account_id int, amount numeric(12,2), currency text,
      kind text${tags ? ', release text, feature text, created_by text, created_at timestamptz' : ''})`,
};

async function insertRows(k: Knex | Knex.Transaction, schema: string, table: string, rows: Row[]): Promise<void> {
  if (rows.length > 0) await k.withSchema(schema).table(table).insert(rows);
}

/** Creates (or re-creates) the demo databases. ST-5 is tagged by the installed trigger, the way a team's test code would. */
export async function seedDemo(config: Config, db: Db): Promise<{ records: number }> {
  const envs = config.sources;
  const database = envs[0]!.database;
  if (database && !envs[0]!.url) await ensureDatabase(db.controlParams, database);
  const master = envByRole(config, 'master');
  const staging = envByRole(config, 'staging');
  const production = envByRole(config, 'production');
  const all = [...envs, ...(master ? [master] : []), ...(staging ? [staging] : []), ...(production ? [production] : [])];
  for (const env of all) {
    const k = db.env(env);
    await k.raw(`drop schema if exists ${ident(env.schema!)} cascade`);
    await k.raw(`create schema ${ident(env.schema!)}`);
  }
  const rows = demoRows();
  let records = 0;
  for (const [i, env] of envs.entries()) {
    const data = rows.get(i + 1)!;
    const k = db.env(env);
    const auto = i === envs.length - 1;
    for (const table of ['users', 'accounts', 'transactions'] as const) await k.raw(DDL[table](qualified(env.schema, table), !auto));
    if (!auto) {
      for (const table of ['users', 'accounts', 'transactions'] as const) await insertRows(k, env.schema!, table, data[table]);
    } else {
      await installTagging({ config, db }, env.name, 'demo');
      await insertTagged(k, env, data);
    }
    records += data.users.length + data.accounts.length + data.transactions.length;
  }
  if (master) await seedMaster(db.env(master), master);
  // the tiny production runs R1 (data and code) until R2 is deployed
  if (production) await seedMaster(db.env(production), production);
  return { records };
}

/** Inserts rows without their tag values: the trigger fills them from the transaction's settings. */
async function insertTagged(k: Knex, env: EnvSpec, data: EnvRows): Promise<void> {
  for (const table of ['users', 'accounts', 'transactions'] as const) {
    for (const row of data[table]) {
      const { release, feature, created_by, ...rest } = row;
      await k.transaction(async (trx) => {
        await trx.raw(`select set_config('tributary.release', ?, true), set_config('tributary.feature', ?, true), set_config('tributary.created_by', ?, true)`, [
          String(release),
          String(feature),
          String(created_by),
        ]);
        await trx.withSchema(env.schema!).table(table).insert(rest);
      });
    }
  }
}

async function seedMaster(k: Knex, env: EnvSpec): Promise<void> {
  for (const table of ['users', 'accounts', 'transactions'] as const) await k.raw(DDL[table](qualified(env.schema, table), true));
  const users: Row[] = [];
  const accounts: Row[] = [];
  for (let i = 1; i <= 10; i++) {
    users.push({ ...user(i, `r1.user${i}@corp.example`, `r1user${i}`, `R1 User ${i}`, 'FEAT-001', 0), release: 'R1', created_by: 'qa-r1' });
    accounts.push({ ...account(100 + i, `AC-R1-${i}`, i, 'FEAT-001', 0), release: 'R1', created_by: 'qa-r1' });
  }
  await insertRows(k, env.schema!, 'users', users);
  await insertRows(k, env.schema!, 'accounts', accounts);
}

/**
 * Release R3 of the "review at scale" step: six people whose role differs between ST-1 and ST-2 (one
 * signature, so one pattern), for one feature of R3 (added to the demo's copy of the config).
 */
export const SCALE_RELEASE = 'R3';
export const SCALE_FEATURE = { id: 'FEAT-301', priority: 'medium', owner: 'ivan', description: 'Loyalty tiers' } as const;

export async function seedScaleDemo(config: Config, db: Db): Promise<number> {
  const [st1, st2] = config.sources;
  let n = 0;
  for (let i = 1; i <= 6; i++) {
    const email = `loyal${i}@corp.example`;
    // only the role differs: the rest of each person is the same in both envs
    const base = { release: SCALE_RELEASE, phone: `+351 21 90000${i}`, city: 'Lisbon' };
    await insertRows(db.env(st1!), st1!.schema!, 'users', [{ ...user(9000 + i, email, `loyal${i}`, `Loyal ${i}`, SCALE_FEATURE.id, 1), ...base, role: 'Customer' }]);
    await insertRows(db.env(st2!), st2!.schema!, 'users', [{ ...user(9100 + i, email, `loyal${i}`, `Loyal ${i}`, SCALE_FEATURE.id, 2), ...base, role: 'Manager' }]);
    n += 2;
  }
  return n;
}
