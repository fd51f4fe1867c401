// The demo team's own test suite: node:test, run by Tributary's command runner against staging (tier 1)
// or the cumulative master (tier 2). Each test names its feature with a tag (@FEAT-101) or @smoke.
// The database comes from TRIBUTARY_DATABASE_URL (the runner sets it; its search_path is the env's schema).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';

const url = process.env.TRIBUTARY_DATABASE_URL;
let client;

before(async () => {
  assert.ok(url, 'TRIBUTARY_DATABASE_URL is not set: run these tests through tributary test');
  client = new pg.Client({ connectionString: url });
  await client.connect();
});
after(async () => {
  await client?.end();
});

const one = async (sql, params = []) => (await client.query(sql, params)).rows[0];

test('smoke: users, accounts and transactions answer @smoke', async () => {
  for (const t of ['users', 'accounts', 'transactions']) {
    const r = await one(`select count(*)::int as n from ${t}`);
    assert.ok(r.n > 0, `${t} is empty`);
  }
});

test('roles: Dana is an Administrator with admin permissions @FEAT-101', async () => {
  const r = await one("select role, permissions from users where email = 'dana@corp.example'");
  assert.deepEqual(r, { role: 'Administrator', permissions: 'admin' });
});

test('onboarding: merchant M-1001 has exactly one account @FEAT-102', async () => {
  const r = await one("select count(*)::int as n from accounts where account_number = 'M-1001'");
  assert.equal(r.n, 1);
});

test('profiles: Leo has both his phone and his city @FEAT-103', async () => {
  const r = await one("select phone, city from users where email = 'leo@corp.example'");
  assert.ok(r.phone && r.city, `Leo is ${JSON.stringify(r)}`);
});

test('payments: every transaction has a positive amount @FEAT-104', async () => {
  const r = await one('select count(*)::int as n from transactions where amount <= 0 or amount is null');
  assert.equal(r.n, 0);
});

test('notifications: Judy is stored once @FEAT-105', async () => {
  const r = await one("select count(*)::int as n from users where email = 'judy@corp.example'");
  assert.equal(r.n, 1);
});

test('fraud: AC-FRAUD-1 keeps the critical feature balance @FEAT-106', async () => {
  const r = await one("select balance::text as b from accounts where account_number = 'AC-FRAUD-1'");
  assert.equal(r.b, '100.00');
});

test('statements: Kim is stored once @FEAT-107', async () => {
  const r = await one("select count(*)::int as n from users where email = 'kim@corp.example'");
  assert.equal(r.n, 1);
});

test('multi-currency: account AC-FX-1 is stored once @FEAT-108', async () => {
  const r = await one("select count(*)::int as n from accounts where account_number = 'AC-FX-1'");
  assert.equal(r.n, 1);
});

test('R1 users: the ten R1 users are there @FEAT-001', async () => {
  const r = await one("select count(*)::int as n from users where email like 'r1.user%@corp.example'");
  assert.equal(r.n, 10);
});

// R1's statement test expects account AC-R1-5 to have no transactions. R2's test data adds TX-R1-1 on it
// (seed scenario 12): once R2 is promoted into master this test fails, a regression of an earlier release.
test('R1 statements: account AC-R1-5 has no transactions yet @FEAT-001', async () => {
  const r = await one("select count(*)::int as n from transactions t join accounts a on a.id = t.account_id where a.account_number = 'AC-R1-5'");
  assert.equal(r.n, 0);
});

// Production only: the running code (the demo app's current release) and the data must agree. The
// code's version.json lists the columns it reads; each must exist, and its release's rows must be there.
test('app: the running code and the data agree @smoke', async (t) => {
  if (process.env.TRIBUTARY_ENV !== 'production') {
    t.skip('production only');
    return;
  }
  const root = path.resolve(process.env.TRIBUTARY_DEMO_APP ?? '.tributary/demo-app');
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'current', 'version.json'), 'utf8'));
  for (const col of manifest.requires) {
    const [table, column] = col.split('.');
    const r = await one('select count(*)::int as n from information_schema.columns where table_schema = current_schema() and table_name = $1 and column_name = $2', [table, column]);
    assert.equal(r.n, 1, `code ${manifest.version} reads ${col}, which the data does not have`);
  }
  if (manifest.release) {
    const r = await one('select count(*)::int as n from users where release = $1', [manifest.release]);
    assert.ok(r.n > 0, `code ${manifest.version} is for ${manifest.release}, but production has no ${manifest.release} users`);
  }
});
