import { afterEach, describe, expect, it } from 'vitest';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import { getConflict, listConflicts, nextConflict, queueSummary, releaseOfCode, showConflict } from '../../../src/engine/review/queue.js';
import { applyDecision, planDecision } from '../../../src/engine/review/decide.js';
import { transition } from '../../../src/engine/kernel/lifecycle.js';
import { loadRelease } from '../../../src/engine/load/load.js';
import { promotedFingerprint, promoteRelease } from '../../../src/engine/promote/promote.js';
import { tagRelease } from '../../../src/engine/gate/tag.js';
import { exitCodeFor, TributaryError } from '../../../src/errors.js';
import { insertAccounts, insertTransactions, insertUsers, testEnv, type TestEnv, type UserRow } from '../../helpers.js';
import { cli, output } from '../../process.js';

/**
 * Promotion of staging into the cumulative master: a LIST partition per release, verified by counts and
 * checksums, replaced on a second promotion; cross-release detection against earlier releases (exact
 * duplicates auto-resolved, differing rows queued as cross-release conflicts that refuse the promotion
 * until decided, and each decision applied); a failure leaves master as it was.
 */
let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

const by = { actor: 'cli:test' };
const decider = { actor: 'U0ALICE', rationale: 'checked with the feature owners' };

/**
 * R2 tagged, consolidated (one core conflict, decided), validated, loaded into staging and past tier 1.
 * `setup` runs on the ST data before the tag.
 */
async function ready(setup?: (e: TestEnv) => Promise<void>): Promise<TestEnv> {
  const e = await testEnv(2);
  env = e;
  await insertUsers(e, 'st1', [
    { id: 1, email: 'dana@x', role: 'Manager', feature: 'FEAT-C' },
    { id: 2, email: 'eve@x' },
    { id: 3, email: 'fay@x', feature: 'FEAT-H1' },
    { id: 1500, email: 'new@x', feature: 'FEAT-L' },
    { id: 20, email: 'gus@x', role: 'Admin', feature: 'FEAT-C' },
  ]);
  await insertUsers(e, 'st2', [{ id: 21, email: 'gus@x', role: 'Customer' }]);
  await insertAccounts(e, 'st1', [
    { id: 10, number: 'AC-DANA', user_id: 1 },
    { id: 11, number: 'AC-NEW', user_id: 1500 },
  ]);
  await insertTransactions(e, 'st1', [{ id: 7, account_id: 10, amount: '12.50' }]);
  await setup?.(e);
  await tagRelease(e.ctx, 'R2', by);
  await consolidate(e.ctx, 'R2', by);
  const queue = await listConflicts(e.ctx, 'R2');
  expect(queue.map((c) => [c.code, c.kind])).toEqual([['C-001', 'core-conflict']]);
  await applyDecision(e.ctx, 'R2', 'C-001', { action: 'keep', version: 1 }, decider);
  await transition(e.db.control, 'R2', 'validate');
  await loadRelease(e.ctx, 'R2', by);
  await transition(e.db.control, 'R2', 'tier1');
  return e;
}

/** Rows of release R1 in master's (plain, pre-partitioning) tables, as an earlier release left them. */
async function r1Users(e: TestEnv, rows: UserRow[]): Promise<void> {
  await insertUsers(e, 'master', rows.map((r) => ({ feature: 'FEAT-OLD', created_by: 'qa-r1', created_at: '2023-06-01T10:00:00Z', ...r, release: 'R1' })));
}

async function r1Account(e: TestEnv, id: number, number: string, userId: number): Promise<void> {
  await e.sql(`insert into master.accounts (id, number, user_id, currency, balance, release, feature, created_by, created_at) values ($1, $2, $3, 'USD', 5.00, 'R1', 'FEAT-OLD', 'qa-r1', now())`, [id, number, userId]);
}

const rows = async (e: TestEnv, sql: string, params?: unknown[]) => (await e.sql(sql, params)).rows;
const stateOf = async (e: TestEnv) => (await e.db.control('release_states').where({ release: 'R2' }).first()).state as string;
const partitions = async (e: TestEnv, table: string) =>
  (await rows(e, `select c.relname as name, pg_get_expr(c.relpartbound, c.oid) as bound from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = $1::regclass order by 1`, [`master.${table}`])).map(
    (r) => `${r.name} ${r.bound}`,
  );

describe('promote', () => {
  it('is refused before tier 1 passed, saying what to do first', async () => {
    const e = await ready();
    await e.db.control('release_states').where({ release: 'R2' }).update({ state: 'loaded' });
    const err = (await promoteRelease(e.ctx, 'R2', by).catch((x: unknown) => x)) as TributaryError;
    expect(err.code).toBe('gate_state');
    expect(err.message).toMatch(/release R2 is loaded: cannot promote it; pass tier 1/);
  });

  it('refuses a cell corrupted in flight (the real CLI, failpoint promote.copy=corrupt): names the table, master unchanged', async () => {
    const e = await ready();
    const r = await cli(['--config', e.configFile, 'promote', 'R2'], { env: { TRIBUTARY_FAILPOINTS: 'promote.copy=corrupt' } });
    expect(r.code, output(r)).not.toBe(0);
    expect(r.stderr).toMatch(/master env master, table "master"\."users__r2": after promoting, 5 row\(s\) with checksum \d+, but R2's rows to promote from staging are 5 with checksum \d+; nothing was promoted/);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/verified/i);
    expect((await e.sql(`select count(*)::int as n from master.users`)).rows[0].n).toBe(0);
  });

  it('creates one LIST partition per release, verified by counts and checksums; promoting again replaces the partition', async () => {
    const e = await ready();
    await r1Users(e, [{ id: 100, email: 'old@x' }]);
    await r1Account(e, 200, 'AC-OLD', 100);
    const steps: string[] = [];
    const first = await promoteRelease(e.ctx, 'R2', { ...by, progress: (s, i) => steps.push(`${s}:${String(i?.table ?? i?.entity)}`) });
    expect(first.tables.map((t) => [t.table, t.partition, t.rows, t.skipped])).toEqual([
      ['users', 'users__r2', 5, 0],
      ['accounts', 'accounts__r2', 2, 0],
      ['transactions', 'transactions__r2', 1, 0],
    ]);
    expect(steps).toContain('verify:transactions');
    for (const table of ['users', 'accounts', 'transactions']) {
      const [p] = await rows(e, `select partstrat, (select array_agg(a.attname::text) from pg_attribute a where a.attrelid = partrelid and a.attnum = any(partattrs::int2[])) as keys from pg_partitioned_table where partrelid = $1::regclass`, [`master.${table}`]);
      expect(p).toEqual({ partstrat: 'l', keys: ['release'] });
      const pk = await rows(e, `select pg_get_constraintdef(oid) as def from pg_constraint where conrelid = $1::regclass and contype = 'p'`, [`master.${table}`]);
      expect(pk).toEqual([{ def: 'PRIMARY KEY (id, release)' }]);
    }
    // the plain table R1 left behind became R1's partition
    expect(await partitions(e, 'users')).toEqual([`users__r1 FOR VALUES IN ('R1')`, `users__r2 FOR VALUES IN ('R2')`]);
    expect(await partitions(e, 'transactions')).toEqual([`transactions__r2 FOR VALUES IN ('R2')`]);
    expect(await rows(e, 'select id, release from master.users__r1')).toEqual([{ id: 100, release: 'R1' }]);
    expect((await rows(e, `select count(*)::int as n from master.accounts where release = 'R1'`))[0].n).toBe(1);

    // counts and checksums recorded, equal to what load verified in staging (nothing was skipped)
    const promoted = await e.db.control('promotions').where({ release: 'R2' }).orderBy('id');
    expect(promoted.map((p) => [p.entity, p.partition_name, Number(p.row_count), p.checksum, p.skipped, p.promoted_by])).toEqual(
      first.tables.map((t) => [t.entity, t.partition, t.rows, t.checksum, 0, 'cli:test']),
    );
    const loads = await e.db.control('loads').where({ release: 'R2' });
    for (const t of first.tables) expect(t.checksum).toBe(loads.find((l) => l.entity === t.entity)!.checksum);
    expect(await stateOf(e)).toBe('promoted');
    const fingerprint = await promotedFingerprint(e.ctx, 'R2');
    expect(fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(await promotedFingerprint(e.ctx, 'R9')).toBeNull();

    // again: the old partition is detached and dropped, the new one holds the same rows once
    const oid = async () => (await rows(e, `select 'master.users__r2'::regclass::oid::int as oid`))[0].oid as number;
    const before = await oid();
    const again = await promoteRelease(e.ctx, 'R2', by);
    expect(again.tables.map((t) => [t.table, t.rows, t.checksum])).toEqual(first.tables.map((t) => [t.table, t.rows, t.checksum]));
    expect(await oid()).not.toBe(before);
    expect((await rows(e, `select count(*)::int as n, count(distinct id)::int as d from master.users where release = 'R2'`))[0]).toEqual({ n: 5, d: 5 });
    expect(await partitions(e, 'users')).toEqual([`users__r1 FOR VALUES IN ('R1')`, `users__r2 FOR VALUES IN ('R2')`]);
    expect(await e.db.control('promotions').where({ release: 'R2' })).toHaveLength(6);
    expect(await promotedFingerprint(e.ctx, 'R2')).toBe(fingerprint);
    const audit = await e.db.control('audit_events').where({ release: 'R2', action: 'promote.finish' });
    expect(audit).toHaveLength(2);

    // indexed for the bot's queries: each natural key and each reference column, on the parent and so on
    // every partition (the converted R1, the re-created R2); made once, however often R2 is promoted
    const indexed = async (table: string) =>
      (await rows(e, `select indexdef from pg_indexes where schemaname = 'master' and tablename = $1 and indexdef not like '%UNIQUE%' order by 1`, [table])).map((r) => /\((.*)\)$/.exec(r.indexdef as string)![1]).sort();
    for (const table of ['users', 'users__r1', 'users__r2']) expect(await indexed(table)).toEqual(['email', 'username']);
    for (const table of ['accounts', 'accounts__r1', 'accounts__r2']) expect(await indexed(table)).toEqual(['number', 'user_id']);
    for (const table of ['transactions', 'transactions__r2']) expect(await indexed(table)).toEqual(['account_id']);
    const parentIndexes = await rows(e, `select indexname from pg_indexes where schemaname = 'master' and tablename = 'users' order by 1`);
    expect(parentIndexes.map((r) => r.indexname)).toEqual(['users__email__idx', 'users__username__idx', 'users_pkey']);
  });

  it('auto-resolves an exact duplicate of an earlier release: promoted once, reported and audited', async () => {
    const e = await ready();
    // eve in R1 is the same record (other tags, another updated_at: both left out of the comparison)
    await r1Users(e, [{ id: 2, email: 'eve@x' }]);
    const r = await promoteRelease(e.ctx, 'R2', by);
    expect(r.tables.find((t) => t.entity === 'users')).toMatchObject({ rows: 4, skipped: 1, autoResolved: 1 });
    expect(r.autoResolved).toEqual({ total: 1, items: [{ entity: 'users', key: 'email=eve@x', pk: '2', release: 'R1', rule: 'exact-duplicate' }] });
    expect(await rows(e, `select id, release from master.users where email = 'eve@x'`)).toEqual([{ id: 2, release: 'R1' }]);
    const p = await e.db.control('promotions').where({ release: 'R2', entity: 'users' }).first();
    expect([p.skipped, p.auto_resolved_count, p.auto_resolved]).toEqual([1, 1, [{ entity: 'users', key: 'email=eve@x', pk: '2', release: 'R1', rule: 'exact-duplicate' }]]);
    const audit = await e.db.control('audit_events').where({ release: 'R2', action: 'promote.finish' }).first();
    expect(audit.details.autoResolved.total).toBe(1);
    expect(await listConflicts(e.ctx, 'R2')).toEqual([]);
  });

  it('an earlier release\'s row identical but for its primary key is the same record: not promoted again, the release\'s children follow its key', async () => {
    const e = await ready();
    // the payload the rules compare leaves the primary key out, at promotion as at consolidation
    await r1Users(e, [{ id: 77, email: 'new@x' }]);
    const r = await promoteRelease(e.ctx, 'R2', by);
    expect(r.autoResolved.items).toEqual([{ entity: 'users', key: 'email=new@x', pk: '1500', release: 'R1', rule: 'exact-duplicate' }]);
    expect(await rows(e, `select id, release from master.users where email = 'new@x'`)).toEqual([{ id: 77, release: 'R1' }]);
    expect(await rows(e, `select user_id, release from master.accounts where number = 'AC-NEW'`)).toEqual([{ user_id: 77, release: 'R2' }]);
    expect(await listConflicts(e.ctx, 'R2')).toEqual([]);
  });

  it('queues a differing row as a cross-release conflict and refuses; keep 2 then replaces master\'s earlier row', async () => {
    const e = await ready();
    await r1Users(e, [{ id: 1, email: 'dana@x', role: 'Customer' }]);
    await r1Account(e, 300, 'AC-R1', 1);
    const err = (await promoteRelease(e.ctx, 'R2', by).catch((x: unknown) => x)) as TributaryError;
    expect(err).toBeInstanceOf(TributaryError);
    expect(err.code).toBe('gate_conflicts');
    expect(exitCodeFor(err)).toBe(3);
    expect(err.message).toContain('C-X001 P1: users email=dana@x: R1 in master has role=Customer, R2 has role=Manager');
    expect(err.message).toContain('tributary conflicts R2');
    expect(err.message).toContain('tributary decide C-X001');
    // nothing changed in master: not even the conversion of the plain tables
    expect(await rows(e, `select relkind from pg_class where oid = 'master.users'::regclass`)).toEqual([{ relkind: 'r' }]);
    expect(await rows(e, `select to_regclass('master.users__r2') as t`)).toEqual([{ t: null }]);
    expect(await e.db.control('promotions')).toEqual([]);

    // the conflict is in the review queue next to the consolidation's
    const queue = await listConflicts(e.ctx, 'R2');
    expect(queue.map((c) => [c.code, c.kind, c.priority, c.entity, c.key_label, c.status])).toEqual([['C-X001', 'cross-release', 'P1', 'users', 'email=dana@x', 'open']]);
    expect((await listConflicts(e.ctx, 'R2', { status: 'all' })).map((c) => c.code)).toEqual(['C-001', 'C-X001']);
    const c = await showConflict(e.ctx, 'R2', 'c-x001');
    expect(c.detail.reason).toBe('users email=dana@x: R1 in master has role=Customer, R2 has role=Manager');
    expect(c.detail.differing).toEqual(['role']);
    expect(c.detail.suggestion).toBe('none');
    expect(c.detail.suggested).toBeUndefined();
    expect(c.detail.versions!.map((v) => [v.no, v.envs, v.pks, v.release, v.data.role, v.children])).toEqual([
      [1, ['master'], ['1'], 'R1', 'Customer', 1],
      [2, ['staging'], ['1'], 'R2', 'Manager', 1],
    ]);
    expect(await queueSummary(e.ctx, 'R2')).toMatchObject({ open: { P1: 1, P2: 0, P3: 0 }, decided: 1, total: 2 });
    expect(await releaseOfCode(e.ctx, 'C-X001')).toBe('R2');
    expect((await nextConflict(e.ctx, 'R2', 'U0BOB'))!.code).toBe('C-X001');
    expect(await e.db.control('runs').where({ release: 'R2', kind: 'promote' }).select('status')).toEqual([{ status: 'open' }]);

    // the CLI says the same, with exit code 3
    const res = await cli(['--config', e.configFile, 'promote', 'R2']);
    expect(res.code, output(res)).toBe(3);
    expect(res.stdout).toContain('C-X001  P1  users email=dana@x');
    expect(res.stdout).toContain('tributary decide C-X001 --keep 1');
    expect((await listConflicts(e.ctx, 'R2')).map((c) => c.code)).toEqual(['C-X001']);

    // a merge is not a choice here; keep 2 is, and changes nothing until promote applies it
    await expect(applyDecision(e.ctx, 'R2', 'C-X001', { action: 'merge', picks: { role: 2 } }, decider)).rejects.toThrow(/decide it with keep, keep-both, delete-both/);
    const plan = await planDecision(e.ctx, 'R2', 'C-X001', { action: 'keep', version: 2 });
    expect(plan.blast).toMatchObject({ removed: 1, dependentCount: 0 });
    const out = await applyDecision(e.ctx, 'R2', 'C-X001', { action: 'keep', version: 2 }, decider);
    expect(out.applied).toBe(true);
    expect((await getConflict(e.ctx, 'R2', 'C-X001')).status).toBe('decided');
    expect(await e.db.control('decisions').where({ release: 'R2', action: 'keep' })).toHaveLength(2);
    expect(await stateOf(e)).toBe('tier1-passed');
    expect(await e.db.control('audit_events').where({ release: 'R2', action: 'decision', subject: 'C-X001' })).toHaveLength(1);

    const r = await promoteRelease(e.ctx, 'R2', by);
    expect(r.decisions).toEqual([{ code: 'C-X001', entity: 'users', key: 'email=dana@x', action: 'keep', effect: "promoted; R1's row deleted from master" }]);
    expect(r.replaced).toEqual([{ entity: 'users', release: 'R1', pk: '1' }]);
    expect(await rows(e, `select id, release, role from master.users where email = 'dana@x'`)).toEqual([{ id: 1, release: 'R2', role: 'Manager' }]);
    // R1's account keeps resolving: to R2's row under the same key
    expect(await rows(e, `select u.release from master.accounts a join master.users u on u.id = a.user_id where a.id = 300`)).toEqual([{ release: 'R2' }]);
    expect(await e.db.control('runs').where({ release: 'R2', kind: 'promote' }).select('status')).toEqual([{ status: 'succeeded' }]);
    expect(await listConflicts(e.ctx, 'R2')).toEqual([]);
    expect((await e.db.control('promotions').where({ release: 'R2', entity: 'users' }).first()).decisions).toHaveLength(1);
    // and again: nothing left to decide
    expect((await promoteRelease(e.ctx, 'R2', by)).tables[0]!.rows).toBe(5);
  });

  it('keep both renames the release\'s row (a new key where the keys collide, its children follow); keep 1 points its children at master\'s row', async () => {
    const e = await ready();
    await r1Users(e, [
      { id: 900, email: 'fay@x', role: 'Admin' }, // same email and username as R2's fay (id 3)
      { id: 1500, email: 'other@x' }, // same key as R2's new@x
      { id: 901, email: 'dana@x', role: 'Customer' }, // R2's dana (id 1, with account 10) is another version of her
    ]);
    const err = (await promoteRelease(e.ctx, 'R2', by).catch((x: unknown) => x)) as TributaryError;
    expect(err.code).toBe('gate_conflicts');
    const queue = await listConflicts(e.ctx, 'R2');
    const code = (label: string) => queue.find((c) => c.key_label === label)!.code;
    // codes in detection order (users by key: 1, 1500, 3), the queue by priority: P1 only where a critical
    // feature is involved (dana's FEAT-C), else P2 whatever the features (fay's high FEAT-H1, new@x's low FEAT-L)
    expect(queue.map((c) => [c.code, c.priority, c.key_label, c.detail.differing])).toEqual([
      ['C-X001', 'P1', 'email=dana@x', ['role']],
      ['C-X002', 'P2', 'id=1500', ['email', 'username']],
      ['C-X003', 'P2', 'email=fay@x', ['role']],
    ]);

    // delete both would orphan R2's account of dana: refused, with the dependents named
    const del = await planDecision(e.ctx, 'R2', code('email=dana@x'), { action: 'delete-both' });
    expect(del.blast.dependents).toEqual([{ entity: 'accounts', pk: '10 (R2)' }]);
    await expect(applyDecision(e.ctx, 'R2', code('email=dana@x'), { action: 'delete-both' }, decider)).rejects.toThrow(/1 row\(s\) reference the two rows \(accounts 10 \(R2\)\)/);
    // keep both: the blast radius shows the new natural keys
    const fay = await planDecision(e.ctx, 'R2', code('email=fay@x'), { action: 'keep-both' });
    expect(fay.blast.renamed).toEqual([{ version: 2, values: { email: 'fay@x-r2', username: 'fay-r2' }, pk: '3' }]);
    await expect(applyDecision(e.ctx, 'R2', code('email=fay@x'), { action: 'keep-both', rename: { 2: { email: 'fay.r2@x', username: 'fay2' } } }, decider)).resolves.toMatchObject({ applied: true });
    await applyDecision(e.ctx, 'R2', code('id=1500'), { action: 'keep-both' }, decider);
    await applyDecision(e.ctx, 'R2', code('email=dana@x'), { action: 'keep', version: 1 }, decider);

    const r = await promoteRelease(e.ctx, 'R2', by);
    expect(r.tables.find((t) => t.entity === 'users')).toMatchObject({ rows: 4, skipped: 1 });
    expect(r.decisions.map((d) => [d.key, d.action, d.effect])).toEqual([
      ['email=dana@x', 'keep', "not promoted: R1's row stays; R2's children point at id 901"],
      ['id=1500', 'keep-both', 'promoted as id=1501'],
      ['email=fay@x', 'keep-both', 'promoted as email=fay.r2@x, username=fay2'],
    ]);
    const users = async () => rows(e, `select id, email, username, release from master.users order by release, id`);
    expect(await users()).toEqual([
      { id: 900, email: 'fay@x', username: 'fay', release: 'R1' },
      { id: 901, email: 'dana@x', username: 'dana', release: 'R1' },
      { id: 1500, email: 'other@x', username: 'other', release: 'R1' },
      { id: 2, email: 'eve@x', username: 'eve', release: 'R2' },
      { id: 3, email: 'fay.r2@x', username: 'fay2', release: 'R2' },
      { id: 20, email: 'gus@x', username: 'gus', release: 'R2' },
      { id: 1501, email: 'new@x', username: 'new', release: 'R2' },
    ]);
    // no child is orphaned: dana's account points at R1's dana, new@x's follows its new key
    expect(await rows(e, `select a.id, a.user_id, u.email, u.release from master.accounts a join master.users u on u.id = a.user_id order by a.id`)).toEqual([
      { id: 10, user_id: 901, email: 'dana@x', release: 'R1' },
      { id: 11, user_id: 1501, email: 'new@x', release: 'R2' },
    ]);
    // staging keeps the release as loaded; promoting again applies the same decisions, to the same rows
    expect(await rows(e, `select user_id from staging.accounts where id = 11`)).toEqual([{ user_id: 1500 }]);
    const before = await users();
    const again = await promoteRelease(e.ctx, 'R2', by);
    expect(again.tables.map((t) => t.checksum)).toEqual(r.tables.map((t) => t.checksum));
    expect(await users()).toEqual(before);
  });

  it('compares values by their text forms: a json\'s whitespace or duplicate keys, or a -0, is a cross-release difference; a jsonb\'s key order is not', async () => {
    // users hold a json, a jsonb and a float column in every env (the standard world has none)
    const e = await ready(async (x) => {
      for (const s of ['st1', 'st2', 'master']) await x.sql(`alter table ${s}.users add column prefs json, add column doc jsonb, add column score float8`);
      await x.sql(`update st1.users set score = '-0' where id = 1`);
      await x.sql(`update st1.users set prefs = '{"a": 1}' where id = 2`);
      await x.sql(`update st1.users set prefs = '{"a": 1, "a": 2}' where id = 3`);
      await x.sql(`update st1.users set prefs = '{"k": [1, 2]}', doc = '{"b": 1, "a": [true, null]}' where id = 1500`);
      await x.sql(`update st1.users set prefs = '{"z": "\\u0000"}' where id = 20`);
    });
    // R1's versions in master: each differs from R2's only in how one value is written
    await r1Users(e, [
      { id: 1, email: 'dana@x', role: 'Manager' },
      { id: 2, email: 'eve@x' },
      { id: 3, email: 'fay@x' },
      { id: 1500, email: 'new@x' },
      { id: 20, email: 'gus@x', role: 'Admin' },
    ]);
    await e.sql(`update master.users set score = '0' where id = 1`); // -0 is not 0
    await e.sql(`update master.users set prefs = '{"a":1}' where id = 2`); // json whitespace counts
    await e.sql(`update master.users set prefs = '{"a": 2}' where id = 3`); // so does a json's duplicate key
    // the same json text, and a jsonb in another key order (jsonb normalises): the same record
    await e.sql(`update master.users set prefs = '{"k": [1, 2]}', doc = '{"a": [true, null], "b": 1}' where id = 1500`);
    // a json holding \u0000 (which no jsonb can): compared as its text, the same
    await e.sql(`update master.users set prefs = '{"z": "\\u0000"}' where id = 20`);

    const err = (await promoteRelease(e.ctx, 'R2', by).catch((x: unknown) => x)) as TributaryError;
    expect(err.code, String(err)).toBe('gate_conflicts');
    const queue = await listConflicts(e.ctx, 'R2');
    expect(queue.map((c) => [c.key_label, c.detail.differing])).toEqual([
      ['email=dana@x', ['score']],
      ['email=eve@x', ['prefs']],
      ['email=fay@x', ['prefs']],
    ]);
    // the cards show each value as its column's text, as written
    const shown = (label: string, column: string) => queue.find((c) => c.key_label === label)!.detail.versions!.map((v) => [v.release, v.data[column]]);
    expect(shown('email=dana@x', 'score')).toEqual([['R1', '0'], ['R2', '-0']]);
    expect(shown('email=eve@x', 'prefs')).toEqual([['R1', '{"a":1}'], ['R2', '{"a": 1}']]);
    expect(shown('email=fay@x', 'prefs')).toEqual([['R1', '{"a": 2}'], ['R2', '{"a": 1, "a": 2}']]);
    expect(queue.find((c) => c.key_label === 'email=eve@x')!.detail.reason).toBe('users email=eve@x: R1 in master has prefs={"a":1}, R2 has prefs={"a": 1}');

    for (const c of queue) await applyDecision(e.ctx, 'R2', c.code, { action: 'keep', version: 2 }, decider);
    const r = await promoteRelease(e.ctx, 'R2', by);
    expect(r.autoResolved.items).toEqual([
      { entity: 'users', key: 'email=new@x', pk: '1500', release: 'R1', rule: 'exact-duplicate' },
      { entity: 'users', key: 'email=gus@x', pk: '20', release: 'R1', rule: 'exact-duplicate' },
    ]);
    expect(r.decisions.map((d) => [d.key, d.effect])).toEqual([
      ['email=dana@x', "promoted; R1's row deleted from master"],
      ['email=eve@x', "promoted; R1's row deleted from master"],
      ['email=fay@x', "promoted; R1's row deleted from master"],
    ]);
    expect(await rows(e, `select id, release, prefs::text, score::text from master.users where id in (1, 2, 3) order by id`)).toEqual([
      { id: 1, release: 'R2', prefs: null, score: '-0' },
      { id: 2, release: 'R2', prefs: '{"a": 1}', score: null },
      { id: 3, release: 'R2', prefs: '{"a": 1, "a": 2}', score: null },
    ]);
  });

  it('a decision recorded with the earlier (jsonb) hashes still applies while its rows give them; rows changed since, it is opened again', async () => {
    const e = await ready();
    await r1Users(e, [
      { id: 1, email: 'dana@x', role: 'Customer' },
      { id: 2, email: 'eve@x', name: 'Eve of R1' },
    ]);
    await expect(promoteRelease(e.ctx, 'R2', by)).rejects.toMatchObject({ code: 'gate_conflicts' });
    const queue = await listConflicts(e.ctx, 'R2');
    expect(queue.map((c) => [c.code, c.key_label])).toEqual([['C-X001', 'email=dana@x'], ['C-X002', 'email=eve@x']]);
    for (const c of queue) {
      expect(c.detail.crossRelease!.stagingHash).toMatch(/^text:[0-9a-f]{32}$/);
      await applyDecision(e.ctx, 'R2', c.code, { action: 'keep', version: 2 }, decider);
    }
    // as a decision taken before promotion compared texts recorded them: md5 of each row's to_jsonb, the
    // columns left out of the comparison removed
    const legacy = async (table: string, id: number, release: string) =>
      (await rows(e, `select md5((to_jsonb(u.*) - array['id', 'release', 'feature', 'created_by', 'created_at', 'updated_at'])::text) as h
                        from ${table} u where id = $1 and release = $2`, [id, release]))[0]!.h as string;
    for (const [code, id] of [['C-X001', 1], ['C-X002', 2]] as const) {
      await e.db.control.raw(
        `update conflicts set detail = jsonb_set(jsonb_set(detail, '{crossRelease,stagingHash}', to_jsonb(?::text)), '{crossRelease,masterHash}', to_jsonb(?::text))
          where release = 'R2' and code = ?`,
        [await legacy('staging.users', id, 'R2'), await legacy('master.users', id, 'R1'), code],
      );
    }
    // eve's row changes in staging: her decision no longer applies, dana's does
    await e.sql(`update staging.users set name = 'Eve, renamed' where id = 2`);
    const err = (await promoteRelease(e.ctx, 'R2', by).catch((x: unknown) => x)) as TributaryError;
    expect(err.code, String(err)).toBe('gate_conflicts');
    const reopened = await listConflicts(e.ctx, 'R2');
    expect(reopened.map((c) => [c.code, c.key_label, c.detail.reason])).toEqual([
      ['C-X003', 'email=eve@x', "users email=eve@x: R1 in master has name=Eve of R1, R2 has name=Eve, renamed (the rows changed since C-X002 was decided)"],
    ]);
    await applyDecision(e.ctx, 'R2', 'C-X003', { action: 'keep', version: 2 }, decider);
    const r = await promoteRelease(e.ctx, 'R2', by);
    expect(r.decisions.map((d) => [d.code, d.key, d.effect])).toEqual([
      ['C-X001', 'email=dana@x', "promoted; R1's row deleted from master"],
      ['C-X003', 'email=eve@x', "promoted; R1's row deleted from master"],
    ]);
    expect(await rows(e, `select id, release, role, name from master.users order by id`)).toEqual([
      { id: 1, release: 'R2', role: 'Manager', name: 'Someone' },
      { id: 2, release: 'R2', role: 'Customer', name: 'Eve, renamed' },
      { id: 3, release: 'R2', role: 'Customer', name: 'Someone' },
      { id: 20, release: 'R2', role: 'Admin', name: 'Someone' },
      { id: 1500, release: 'R2', role: 'Customer', name: 'Someone' },
    ]);
  });

  it('delete both keeps the release\'s row out and deletes master\'s; it keeps standing while the row is unchanged (earlier jsonb hashes too)', async () => {
    const e = await ready();
    await r1Users(e, [{ id: 2, email: 'eve@x', name: 'Eve of R1' }]);
    await expect(promoteRelease(e.ctx, 'R2', by)).rejects.toMatchObject({ code: 'gate_conflicts' });
    await applyDecision(e.ctx, 'R2', 'C-X001', { action: 'delete-both' }, decider);
    const eve = async () => rows(e, `select id, release from master.users where email = 'eve@x'`);
    const r = await promoteRelease(e.ctx, 'R2', by);
    expect(r.decisions.map((d) => [d.code, d.action, d.effect])).toEqual([['C-X001', 'delete-both', "neither kept: R1's row deleted, R2's not promoted"]]);
    expect(r.replaced).toEqual([{ entity: 'users', release: 'R1', pk: '2' }]);
    expect(r.tables.find((t) => t.entity === 'users')).toMatchObject({ rows: 4, skipped: 1 });
    expect(await eve()).toEqual([]);

    // promoted again: R1's row is gone, the decision still keeps R2's out
    const standing = [['C-X001', 'delete-both', "not promoted (decided earlier; R1's row is gone)"]];
    expect((await promoteRelease(e.ctx, 'R2', by)).decisions.map((d) => [d.code, d.action, d.effect])).toEqual(standing);
    expect(await eve()).toEqual([]);
    // recorded before promotion compared texts, its hash is of the row's to_jsonb: compared in that form
    const [{ h }] = await rows(e, `select md5((to_jsonb(u.*) - array['id', 'release', 'feature', 'created_by', 'created_at', 'updated_at'])::text) as h
                                    from staging.users u where id = 2`);
    await e.db.control.raw(`update conflicts set detail = jsonb_set(detail, '{crossRelease,stagingHash}', to_jsonb(?::text)) where release = 'R2' and code = 'C-X001'`, [h]);
    expect((await promoteRelease(e.ctx, 'R2', by)).decisions.map((d) => [d.code, d.action, d.effect])).toEqual(standing);
    expect(await eve()).toEqual([]);
    // the row changed in staging: the decision no longer applies, and the row is promoted
    await e.sql(`update staging.users set name = 'Eve, renamed' where id = 2`);
    expect((await promoteRelease(e.ctx, 'R2', by)).decisions).toEqual([]);
    expect(await eve()).toEqual([{ id: 2, release: 'R2' }]);
  });

  it('a failure mid-promotion leaves master as it was and names the env and table', async () => {
    const e = await ready();
    const first = await promoteRelease(e.ctx, 'R2', by);
    const oid = async (t: string) => (await rows(e, `select $1::regclass::oid::int as oid`, [t]))[0].oid as number;
    const usersPart = await oid('master.users__r2');
    // R2 changes in staging: a row that master's accounts (a CHECK added since) refuses
    await e.sql(`alter table master.accounts add constraint small_balances check (balance < 1000)`);
    await e.sql(`update staging.users set name = 'Dana D.' where id = 1`);
    await e.sql(`update staging.accounts set balance = 5000 where id = 11`);
    const err = (await promoteRelease(e.ctx, 'R2', by).catch((x: unknown) => x)) as TributaryError;
    expect(err.message).toMatch(/promoting R2 into master, table "master"\."accounts__r2" failed: .*small_balances.*; nothing was promoted/);
    expect(err.details).toMatchObject({ env: 'master', table: '"master"."accounts__r2"' });
    // users had been replaced already: rolled back with the rest
    expect(await oid('master.users__r2')).toBe(usersPart);
    expect(await rows(e, `select name from master.users where id = 1`)).toEqual([{ name: 'Someone' }]);
    expect(await rows(e, `select balance from master.accounts where id = 11`)).toEqual([{ balance: '10.00' }]);
    expect(await e.db.control('promotions').where({ release: 'R2' })).toHaveLength(first.tables.length);
    expect(await e.db.control('audit_events').where({ release: 'R2', action: 'promote.failed' })).toHaveLength(1);
    // fixed: it goes through, and the new partition has the new rows
    await e.sql(`update staging.accounts set balance = 500 where id = 11`);
    const ok = await promoteRelease(e.ctx, 'R2', by);
    expect(ok.tables.find((t) => t.entity === 'users')!.checksum).not.toBe(first.tables.find((t) => t.entity === 'users')!.checksum);
    expect(await rows(e, `select name from master.users where id = 1`)).toEqual([{ name: 'Dana D.' }]);
  });
});
