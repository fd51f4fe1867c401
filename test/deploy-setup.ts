import fs from 'node:fs';
import path from 'node:path';
import { consolidate } from '../src/engine/consolidate/run.js';
import { createBundle } from '../src/engine/deploy/bundle.js';
import { applyDecision } from '../src/engine/review/decide.js';
import { transition } from '../src/engine/kernel/lifecycle.js';
import { loadRelease } from '../src/engine/load/load.js';
import { promoteRelease } from '../src/engine/promote/promote.js';
import { tagRelease } from '../src/engine/gate/tag.js';
import { insertAccounts, insertTransactions, insertUsers, ROOT, testEnv, type TestEnv } from './helpers.js';

/** Environments of the deployment tests: two ST envs, staging, master and production (schema prod). */
export const DEPLOY_ENVS = {
  'ST-1': { role: 'source', precedence: 1, schema: 'st1' },
  'ST-2': { role: 'source', precedence: 2, schema: 'st2' },
  staging: { role: 'staging', schema: 'staging' },
  master: { role: 'master', schema: 'master' },
  production: { role: 'production', schema: 'prod' },
};

/** R2 through the real chain (tagged, consolidated, decided, validated, loaded, tier 1, promoted next to R1, approved). */
export async function approvedRelease(extra: Record<string, unknown> = {}): Promise<TestEnv> {
  const e = await testEnv(2, { environments: DEPLOY_ENVS, ...extra });
  const by = { actor: 'cli:test' };
  await insertUsers(e, 'st1', [
    { id: 1, email: 'dana@x', role: 'Manager', feature: 'FEAT-C' },
    { id: 2, email: 'eve@x', phone: null },
    { id: 1500, email: 'new@x', feature: 'FEAT-L', city: "O'Hare \\ \t tab" },
    { id: 20, email: 'gus@x', role: 'Admin', feature: 'FEAT-C' },
  ]);
  await insertUsers(e, 'st2', [{ id: 21, email: 'gus@x', role: 'Customer' }]);
  await insertAccounts(e, 'st1', [
    { id: 10, number: 'AC-DANA', user_id: 1, balance: '12.30' },
    { id: 11, number: 'AC-NEW', user_id: 1500 },
  ]);
  await insertTransactions(e, 'st1', [{ id: 7, account_id: 10, amount: '12.50' }]);
  await e.sql(`insert into master.users (id, email, username, name, role, release, feature, created_by, created_at) values (100, 'old@x', 'old', 'Old', 'Customer', 'R1', 'FEAT-OLD', 'qa-r1', '2023-06-01T10:00:00Z')`);
  await tagRelease(e.ctx, 'R2', by);
  await consolidate(e.ctx, 'R2', by);
  await applyDecision(e.ctx, 'R2', 'C-001', { action: 'keep', version: 1 }, { actor: 'U0ALICE', rationale: 'checked' });
  await transition(e.db.control, 'R2', 'validate');
  await loadRelease(e.ctx, 'R2', by);
  await transition(e.db.control, 'R2', 'tier1');
  await promoteRelease(e.ctx, 'R2', by);
  await transition(e.db.control, 'R2', 'approve');
  return e;
}

/** Production as earlier deployments left it: R1's rows and an older R2 row. */
export async function seedProduction(e: TestEnv): Promise<void> {
  await e.sql(`create schema prod;
    create table prod.users (id int primary key, email text, username text, name text, role text, phone text, city text, updated_at timestamptz,
      release text, feature text, created_by text, created_at timestamptz);
    create table prod.accounts (id int primary key, number text, user_id int, currency text, balance numeric(12,2),
      release text, feature text, created_by text, created_at timestamptz);
    insert into prod.users values
      (100, 'old@x', 'old', 'Old', 'Customer', '+1', 'Rome', '2023-06-01 10:00:00.123456+00', 'R1', 'FEAT-OLD', 'qa-r1', '2023-06-01 10:00:00+00'),
      (101, 'older@x', 'older', 'Older', null, null, E'line\\nbreak', null, 'R1', 'FEAT-OLD', 'qa-r1', '2023-06-02 10:00:00+00'),
      (2, 'eve-old@x', 'eve', 'Eve (old R2)', 'Customer', '+1', 'Oslo', now(), 'R2', 'FEAT-M', 'qa', '2024-01-01 00:00:00+00');
    insert into prod.accounts values (200, 'AC-OLD', 100, 'EUR', 5.10, 'R1', 'FEAT-OLD', 'qa-r1', '2023-06-01 10:00:00+00'),
      (201, 'AC-EVE-OLD', 2, 'USD', 1.00, 'R2', 'FEAT-M', 'qa', '2024-01-01 00:00:00+00');`);
}

/** deploy.commands driving test/fixtures/fake-deployer.mjs on an app directory. */
export function fakeDeployer(app: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  fs.mkdirSync(app, { recursive: true });
  const tool = `node ${path.join(ROOT, 'test/fixtures/fake-deployer.mjs')} ${app}`;
  return {
    commands: {
      current: `${tool} current`,
      deploy: `${tool} deploy {version}`,
      rollback: `${tool} rollback {version}`,
      restart: `${tool} restart`,
      health: `${tool} health`,
      migrateUp: `${tool} migrate up`,
      migrateDown: `${tool} migrate down`,
      maintenanceOn: `${tool} maintenance on`,
      maintenanceOff: `${tool} maintenance off`,
    },
    timeoutSeconds: 20,
    smoke: false,
    ...extra,
  };
}

/** Every row of the production tables, in key order: byte-level comparison before and after. */
export async function dumpProduction(e: TestEnv): Promise<string> {
  const out: string[] = [];
  for (const t of ['users', 'accounts', 'transactions']) {
    const exists = (await e.sql(`select to_regclass('prod.${t}') is not null as ok`)).rows[0].ok;
    if (!exists) continue;
    out.push(JSON.stringify((await e.sql(`select t::text as row from prod.${t} t order by 1`)).rows.map((r) => r.row)));
  }
  return out.join('\n');
}

/**
 * R2 approved and ready to deploy: production as earlier deployments left it, the app in `app` running
 * v1 (its `current` link), and (unless `bundle` is false) R2's bundle with code v2.
 */
export async function readyToDeploy(app: string, extra: Record<string, unknown> = {}, opts: { deploy?: Record<string, unknown>; bundle?: boolean } = {}): Promise<TestEnv> {
  const e = await approvedRelease({ deploy: fakeDeployer(app, opts.deploy), ...extra });
  await seedProduction(e);
  fs.mkdirSync(path.join(app, 'releases', 'v1'), { recursive: true });
  fs.symlinkSync(path.join(app, 'releases', 'v1'), path.join(app, 'current'));
  if (opts.bundle !== false) await createBundle(e.ctx, 'R2', { code: 'v2', actor: 'U0RM1' });
  return e;
}
