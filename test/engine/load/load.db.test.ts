import { afterEach, describe, expect, it } from 'vitest';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import { listConflicts } from '../../../src/engine/review/queue.js';
import { applyDecision } from '../../../src/engine/review/decide.js';
import { transition } from '../../../src/engine/kernel/lifecycle.js';
import { why } from '../../../src/engine/report/lineage.js';
import { loadRelease } from '../../../src/engine/load/load.js';
import { tagRelease } from '../../../src/engine/gate/tag.js';
import { cli, output } from '../../process.js';
import { insertAccounts, insertTransactions, insertUsers, testEnv, type TestEnv } from '../../helpers.js';

/** Loading into staging: one transaction, verified by counts and checksums, idempotent; and lineage. */
let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

const by = { actor: 'cli:test' };

async function ready(extra: Record<string, unknown> = {}): Promise<TestEnv> {
  const e = await testEnv(2, extra);
  env = e;
  await insertUsers(e, 'st1', [{ id: 1500, email: 'mia@x' }, { id: 1, email: 'dana@x', role: 'Administrator', feature: 'FEAT-C' }]);
  await insertUsers(e, 'st2', [{ id: 1500, email: 'nick@x' }, { id: 2, email: 'dana@x', role: 'Customer' }]);
  await insertAccounts(e, 'st2', [{ id: 10, number: 'AC-NICK', user_id: 1500 }, { id: 11, number: 'AC-DANA', user_id: 2 }]);
  await insertAccounts(e, 'st1', [{ id: 50, number: 'M-1', user_id: null, balance: '1500.00', feature: 'FEAT-H1' }]);
  await insertAccounts(e, 'st2', [{ id: 50, number: 'M-1', user_id: null, balance: '2750.00', feature: 'FEAT-H2' }]);
  await insertTransactions(e, 'st2', [{ id: 7, account_id: 10, amount: '12.50' }]);
  await tagRelease(e.ctx, 'R2', by);
  await consolidate(e.ctx, 'R2', by);
  for (const c of await listConflicts(e.ctx, 'R2')) {
    const d = c.kind === 'equal-priority' ? ({ action: 'keep-both' } as const) : ({ action: 'keep', version: 1 } as const);
    await applyDecision(e.ctx, 'R2', c.code, d, { actor: 'U0ALICE', rationale: 'reviewed' });
  }
  return e;
}

async function validated(e: TestEnv): Promise<void> {
  await transition(e.db.control, 'R2', 'validate');
}

const stagingCount = async (e: TestEnv, table: string) => (await e.sql(`select count(*)::int as n from staging.${table} where release = 'R2'`)).rows[0].n as number;

describe('load', () => {
  it('is refused before validation, saying what to do first', async () => {
    const e = await ready();
    await expect(loadRelease(e.ctx, 'R2', by)).rejects.toThrow(/validate it first/);
  });

  it('creates the staging tables like the ST tables, loads parents first, records counts and checksums; loading again replaces', async () => {
    const e = await ready();
    await validated(e);
    const first = await loadRelease(e.ctx, 'R2', by);
    expect(first.tables.map((t) => [t.table, t.rows])).toEqual([
      ['users', 3],
      ['accounts', 4],
      ['transactions', 1],
    ]);
    const cols = await e.sql(`select column_name, data_type from information_schema.columns where table_schema = 'staging' and table_name = 'accounts' order by ordinal_position`);
    expect(cols.rows.map((r) => `${r.column_name}:${r.data_type}`)).toContain('balance:numeric');
    const nick = await e.sql(`select a.user_id, u.email from staging.accounts a join staging.users u on u.id = a.user_id where a.number = 'AC-NICK'`);
    expect(nick.rows).toEqual([{ user_id: 1501, email: 'nick@x' }]);
    expect(await stagingCount(e, 'accounts')).toBe(4);
    const again = await loadRelease(e.ctx, 'R2', by);
    expect(again.tables).toEqual(first.tables);
    expect(await stagingCount(e, 'users')).toBe(3);
    expect(await e.db.control('loads').where({ release: 'R2' })).toHaveLength(6);
    expect((await e.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('loaded');
  });

  it('re-loading past tier 1 or approved says what it resets and needs confirm; a plain load from approved changes nothing', async () => {
    const e = await ready();
    await validated(e);
    await loadRelease(e.ctx, 'R2', by);
    // the release went through testing (runs as the tier runner records them) and was approved
    await e.db.control('test_runs').insert({ release: 'R2', tier: '1', env: 'staging', status: 'passed', started_by: 'U0LEAD' });
    const [t2] = await e.db.control('test_runs').insert({ release: 'R2', tier: '2', env: 'master', status: 'passed', started_by: 'U0LEAD' }).returning('id');
    for (const step of ['tier1', 'promote', 'tier2', 'approve'] as const) await transition(e.db.control, 'R2', step);
    await e.db.control('approvals').insert({ release: 'R2', test_run_id: (t2 as { id: number }).id, approved_by: 'U0LEAD', rationale: 'ok' });
    const loadsBefore = (await e.db.control('loads').where({ release: 'R2' })).length;

    const err = (await loadRelease(e.ctx, 'R2', by).catch((x: Error) => x)) as Error & { code?: string };
    expect(err.code).toBe('unconfirmed');
    expect(err.message).toMatch(/release R2 is approved: loading it again sends it back to loaded, and the approval by U0LEAD \(.+\), 1 passed tier 1 run\(s\), 1 passed tier 2 run\(s\), the promotion to master no longer count/);
    expect(err.message).toContain('Nothing was done: re-load with --confirm');
    expect((await e.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('approved');
    expect((await e.db.control('loads').where({ release: 'R2' })).length).toBe(loadsBefore);

    await loadRelease(e.ctx, 'R2', { ...by, confirm: true });
    expect((await e.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('loaded');
    // from loaded, a re-load resets nothing and needs no confirmation
    await loadRelease(e.ctx, 'R2', by);
  });

  it('leaves nothing half loaded when a table fails, names it, and a retry succeeds', async () => {
    const e = await ready();
    await validated(e);
    await e.sql('create schema staging');
    await e.sql(`create table staging.transactions (id int primary key, account_id int, amount numeric(12,2), currency text,
      release text, feature text, created_by text, created_at timestamptz, approved_by text not null)`);
    await expect(loadRelease(e.ctx, 'R2', by)).rejects.toThrow(/table "staging"\."transactions".*approved_by.*nothing was loaded/);
    expect(await e.sql(`select to_regclass('staging.users') as t`).then((r) => r.rows[0].t)).toBeNull();
    await e.sql('alter table staging.transactions drop column approved_by');
    const ok = await loadRelease(e.ctx, 'R2', by);
    expect(ok.tables.find((t) => t.table === 'transactions')!.rows).toBe(1);
  });

  it('detects a checksum mismatch (a staging trigger that changes rows) and loads nothing', async () => {
    const e = await ready();
    await validated(e);
    await e.sql('create schema staging');
    await e.sql(`create table staging.users (id int primary key, email text, username text, name text, role text, phone text, city text, updated_at timestamptz,
      release text, feature text, created_by text, created_at timestamptz)`);
    await e.sql(`create function staging.shout() returns trigger language plpgsql as $$ begin new.name := upper(new.name); return new; end $$`);
    await e.sql('create trigger shout before insert on staging.users for each row execute function staging.shout()');
    await expect(loadRelease(e.ctx, 'R2', by)).rejects.toThrow(/staging table "staging"\."users" \(users\): after the copy, 3 row\(s\) with checksum \d+, but the source's values give 3 with checksum \d+; nothing was written/);
    expect(await stagingCount(e, 'users')).toBe(0);
  });

  it('refuses a cell corrupted in flight (the real CLI, failpoint load.copy=corrupt): names the table, never says verified, loads nothing', async () => {
    const e = await ready();
    await validated(e);
    const r = await cli(['--config', e.configFile, 'load', 'R2'], { env: { TRIBUTARY_FAILPOINTS: 'load.copy=corrupt' } });
    expect(r.code, output(r)).not.toBe(0);
    expect(r.stderr).toMatch(/staging table "staging"\."users" \(users\): after the copy, 3 row\(s\) with checksum \d+, but the source's values give 3 with checksum \d+; nothing was written/);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/verified/i);
    expect((await e.sql(`select to_regclass('staging.users') as t`)).rows[0].t).toBeNull();
    expect((await e.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('validated');
    // the same load without the fault goes through
    const ok = await cli(['--config', e.configFile, 'load', 'R2']);
    expect(ok.code, output(ok)).toBe(0);
    expect(await stagingCount(e, 'users')).toBe(3);
  });

  it('names an unreachable staging env', async () => {
    const e = await ready({ environments: { 'ST-1': { role: 'source', precedence: 1, schema: 'st1' }, 'ST-2': { role: 'source', precedence: 2, schema: 'st2' }, staging: { role: 'staging', url: 'postgres://postgres:Sup3rSecret@127.0.0.1:1/x' } } });
    await validated(e);
    const err = (await loadRelease(e.ctx, 'R2', by).catch((x: Error) => x)) as Error;
    expect(err.message).toMatch(/env staging \(127\.0\.0\.1:1\/x\) is unreachable/);
    expect(err.message).not.toContain('Sup3rSecret');
  });
});

describe('lineage', () => {
  it('follows a record across a re-key and a keep-both rename', async () => {
    const e = await ready();
    const byOldKey = await why(e.ctx, 'users', '1500', 'R2');
    expect(byOldKey.map((l) => [l.pk, l.sources.map((s) => `${s.env}:${s.pk}`).join(','), l.rule])).toEqual([
      ['1500', 'ST-1:1500', null],
      ['1501', 'ST-2:1500', 're-key'],
    ]);
    expect(byOldKey[1]!.rekeyedFrom).toEqual([{ env: 'ST-2', oldPk: '1500' }]);
    const merchant = await why(e.ctx, 'accounts', '50', 'R2');
    expect(merchant).toHaveLength(2);
    const renamed = merchant.find((m) => m.pk !== '50')!;
    expect(renamed.reason).toContain('renamed: number → M-1-st-2');
    expect(renamed.conflict!.decision!.by).toBe('U0ALICE');
    const dana = await why(e.ctx, 'users', '2', 'R2');
    expect(dana[0]!.conflict!.kind).toBe('core-conflict');
    expect(dana[0]!.sources.map((s) => s.env)).toEqual(['ST-1', 'ST-2']);
  });
});
