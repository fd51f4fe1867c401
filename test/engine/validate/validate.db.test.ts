import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../../src/config/load.js';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import { listConflicts } from '../../../src/engine/review/queue.js';
import { applyDecision } from '../../../src/engine/review/decide.js';
import { releaseState } from '../../../src/engine/kernel/lifecycle.js';
import { tagRelease } from '../../../src/engine/gate/tag.js';
import { decideFinding, listFindings, validateRelease, waiveFinding, type FindingRow } from '../../../src/engine/validate/index.js';
import { TributaryError } from '../../../src/errors.js';
import { cli, output } from '../../process.js';
import { configDoc, insertAccounts, insertTransactions, insertUsers, testEnv, type TestEnv } from '../../helpers.js';

/**
 * Validation of the consolidated dataset: every data-test kind passing and failing, integrity (orphans over
 * several hops, types, required fields, columns the ST table lacks), the gate on open conflicts, waivers
 * (qa_lead only, audited), decisions on findings, and re-validation closing what was fixed.
 */
const ACTOR = 'cli:test';
let env: TestEnv | undefined;

afterEach(async () => {
  await env?.close();
  env = undefined;
});

/** The helper's dataset (users → accounts → transactions) with data tests added per entity. */
function dataset(tests: { users?: unknown[]; accounts?: unknown[]; transactions?: unknown[] }, opts: { txReferences?: boolean } = {}): Record<string, unknown> {
  return {
    entities: {
      users: { primaryKey: 'id', naturalKeys: ['email', 'username'], core: ['role'], ignore: ['updated_at'], tests: tests.users ?? [] },
      accounts: { primaryKey: 'id', naturalKeys: ['number'], references: [{ column: 'user_id', entity: 'users' }], tests: tests.accounts ?? [] },
      transactions: {
        primaryKey: 'id',
        ...(opts.txReferences === false ? {} : { references: [{ column: 'account_id', entity: 'accounts', columns: ['currency'] }] }),
        tests: tests.transactions ?? [],
      },
    },
  };
}

/** One data test of each kind (relationships on a column that is not a declared reference). */
const EVERY_KIND = dataset(
  {
    users: [
      { not_null: ['phone'] },
      { unique: ['phone'] },
      { accepted_values: { column: 'role', values: ['Customer', 'Administrator'] } },
      // jsonb's ? operator must survive knex's bindings
      { name: 'admins_in_oslo', sql: "select id, role, city from {{ this }} u where u.role = 'Administrator' and not (jsonb_build_array('Oslo') ? u.city)" },
    ],
    accounts: [{ expression: 'balance between 0 and 1000000' }, { unique: [['currency', 'balance']], name: 'one_balance_per_currency' }],
    transactions: [{ not_null: 'amount' }, { relationships: { column: 'account_id', to: 'accounts' } }],
  },
  { txReferences: false },
);

async function consolidated(e: TestEnv): Promise<void> {
  await tagRelease(e.ctx, 'R2', { actor: ACTOR });
  await consolidate(e.ctx, 'R2', { actor: ACTOR });
}

async function stateOf(e: TestEnv): Promise<string> {
  return (await releaseState(e.db.control, 'R2')).state;
}

const brief = (f: FindingRow) => [f.rule, f.entity, f.key, f.column, f.value];

async function refusal(p: Promise<unknown>): Promise<TributaryError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TributaryError);
  return err as TributaryError;
}

async function resultTable(e: TestEnv): Promise<string> {
  return `work."r${(await releaseState(e.db.control, 'R2')).currentRunId}_result"`;
}

describe('data tests', () => {
  it('every kind passes on clean data, and the release becomes validated (audited with counts and time)', async () => {
    env = await testEnv(2, { dataset: EVERY_KIND });
    await insertUsers(env, 'st1', [
      { id: 1, email: 'ada@x', phone: '111', role: 'Administrator', city: 'Oslo' },
      { id: 2, email: 'ben@x', phone: '222' },
    ]);
    await insertUsers(env, 'st2', [{ id: 3, email: 'cleo@x', phone: '333', city: null }]);
    await insertAccounts(env, 'st1', [
      { id: 11, number: 'AC-1', user_id: 1, balance: '0.00' },
      { id: 12, number: 'AC-2', user_id: 2, balance: '1000000.00', currency: 'EUR' },
    ]);
    await insertTransactions(env, 'st1', [{ id: 21, account_id: 11, amount: '5.00' }]);
    await insertTransactions(env, 'st2', [{ id: 22, account_id: 12, amount: '7.00' }]);
    await consolidated(env);

    const r = await validateRelease(env.ctx, 'R2', { actor: ACTOR });
    expect(r.findings.map(brief)).toEqual([]);
    expect(r.counts).toEqual({ open: 0, waived: 0, closed: 0, new: 0, reopened: 0, closedNow: 0 });
    expect(r.rows).toEqual({ users: 3, accounts: 2, transactions: 2 });
    expect(r.state).toBe('validated');
    expect(await stateOf(env)).toBe('validated');
    const audit = await env.db.control('audit_events').where({ release: 'R2' }).whereIn('action', ['validate.start', 'validate.finish']).orderBy('id');
    expect(audit.map((a) => a.action)).toEqual(['validate.start', 'validate.finish']);
    expect(audit[1].details).toMatchObject({ counts: { open: 0 }, ms: expect.any(Number), rows: { users: 3 } });
  });

  it('every kind fails on the rows that break it, naming entity, key, rule and value', async () => {
    env = await testEnv(2, { dataset: EVERY_KIND });
    await insertUsers(env, 'st1', [
      { id: 1, email: 'ada@x', phone: '111', role: 'Administrator', city: 'Lisbon' },
      { id: 2, email: 'ben@x', phone: null },
      { id: 3, email: 'cleo@x', phone: '333', role: 'Superuser' },
    ]);
    await insertUsers(env, 'st2', [
      { id: 4, email: 'dev@x', phone: '444' },
      { id: 5, email: 'eva@x', phone: '444' },
    ]);
    await insertAccounts(env, 'st1', [
      { id: 11, number: 'AC-1', user_id: 1, balance: '2000000.00' },
      { id: 12, number: 'AC-2', user_id: 2, balance: '-1.00', currency: 'EUR' },
      { id: 13, number: 'AC-3', user_id: 3, balance: '-1.00', currency: 'EUR' },
    ]);
    await insertTransactions(env, 'st1', [{ id: 21, account_id: 11, amount: '5.00' }]);
    await insertTransactions(env, 'st2', [
      { id: 22, account_id: 99, amount: '7.00' },
      { id: 23, account_id: 12 },
    ]);
    await env.sql(`update st2.transactions set amount = null where id = 23`);
    await consolidated(env);

    const r = await validateRelease(env.ctx, 'R2', { actor: ACTOR });
    expect(r.findings.map(brief)).toEqual([
      ['accepted_values', 'users', '3', 'role', 'Superuser'],
      ['admins_in_oslo', 'users', '1', null, 'city=Lisbon, role=Administrator'],
      ['not_null', 'users', '2', 'phone', null],
      ['unique', 'users', '4', 'phone', '444'],
      ['unique', 'users', '5', 'phone', '444'],
      ['expression', 'accounts', '11', 'balance', '2000000.00'],
      ['expression', 'accounts', '12', 'balance', '-1.00'],
      ['expression', 'accounts', '13', 'balance', '-1.00'],
      ['one_balance_per_currency', 'accounts', '12', 'currency+balance', 'balance=-1.00, currency=EUR'],
      ['one_balance_per_currency', 'accounts', '13', 'currency+balance', 'balance=-1.00, currency=EUR'],
      ['not_null', 'transactions', '23', 'amount', null],
      ['relationships', 'transactions', '22', 'account_id', '99'],
    ]);
    expect(r.findings.map((f) => f.code)).toEqual(r.findings.map((_, i) => `F-${String(i + 1).padStart(3, '0')}`));
    expect(r.findings.every((f) => f.status === 'open' && f.kind === 'test')).toBe(true);
    const msg = (rule: string, key: string) => r.findings.find((f) => f.rule === rule && f.key === key)!.message;
    expect(msg('unique', '4')).toBe('phone = 444 is not unique: also held by id 5');
    expect(msg('accepted_values', '3')).toBe('role = Superuser is not an accepted value (Customer, Administrator)');
    expect(msg('expression', '11')).toBe('2000000.00 fails: balance between 0 and 1000000');
    expect(msg('relationships', '22')).toBe('account_id = 99 points at accounts id 99, which is neither in the consolidated accounts nor in master');
    expect(r.counts).toMatchObject({ open: 12, new: 12 });
    expect(r.byRule).toMatchObject({ unique: 2, expression: 3, not_null: 2 });
    expect(r.state).toBe('consolidated');
    expect(await stateOf(env)).toBe('consolidated');
  });

  it('config: each test entry names one kind; errors name the file and the path', () => {
    const base = (tests: unknown[], extra: Record<string, unknown> = {}) => {
      const doc = configDoc('t_cfg', 1, { dataset: dataset({ users: tests }), ...extra });
      const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-vcfg-')), 'tributary.yml');
      fs.writeFileSync(file, stringify(doc));
      try {
        loadConfig({ file, env: {} });
        return undefined;
      } catch (err) {
        return (err as Error).message;
      } finally {
        fs.rmSync(path.dirname(file), { recursive: true, force: true });
      }
    };
    expect(base([{ not_null: 'phone' }, { unique: ['email', ['name', 'city']] }, { name: 'x', sql: 'select id from {{ users }}' }])).toBeUndefined();
    expect(base([{ not_null: 'phone', unique: 'email' }])).toMatch(/dataset\.entities\.users\.tests\[0\]: one kind per test entry \(found not_null and unique\)/);
    expect(base([{ name: 'nothing' }])).toMatch(/tests\[0\]: a test needs one of not_null, unique, accepted_values, relationships, expression, sql/);
    expect(base([{ sql: 'select id from {{ this }}' }])).toMatch(/tests\[0\]\.name: a sql test needs a name/);
    expect(base([{ name: 'x', sql: 'select id from {{ customers }}' }])).toMatch(/tests\[0\]\.sql: \{\{ customers \}\} names no entity/);
    expect(base([{ relationships: { column: 'manager_id', to: 'managers' } }])).toMatch(/tests\[0\]\.relationships\.to: unknown entity "managers"/);
    expect(base([{ accepted_values: { column: 'role', values: [] } }])).toMatch(/tests\[0\]\.accepted_values\.values/);
    expect(base([{ expression: 'true; drop table users' }])).toMatch(/tests\[0\]\.expression: one statement only/);
  });

  it('a test naming a column the ST table lacks, or SQL that does not compile, is a config error naming the test', async () => {
    env = await testEnv(1, { dataset: dataset({ users: [{ not_null: ['nickname'] }] }) });
    await insertUsers(env, 'st1', [{ id: 1, email: 'ada@x' }]);
    await consolidated(env);
    const err = await refusal(validateRelease(env.ctx, 'R2', { actor: ACTOR }));
    expect(err.code).toBe('config_invalid');
    expect(err.message).toContain('dataset.entities.users.tests[0]: "nickname" is not a column of users');

    const bad = { ...env.ctx, config: { ...env.config, entities: env.config.entities.map((e) => (e.name === 'users' ? { ...e, tests: [{ entity: 'users', path: 'dataset.entities.users.tests[0]', kind: 'expression' as const, expression: 'colour = 1' }] } : e)) } };
    const err2 = await refusal(validateRelease(bad, 'R2', { actor: ACTOR }));
    expect(err2.code).toBe('config_invalid');
    expect(err2.message).toMatch(/dataset\.entities\.users\.tests\[0\]\.expression: column "colour" does not exist/);
    const sqlTest = { entity: 'users', path: 'dataset.entities.users.tests[0]', name: 'no_key', kind: 'sql' as const, sql: 'select email from {{ this }}' };
    const bad2 = { ...env.ctx, config: { ...env.config, entities: env.config.entities.map((e) => (e.name === 'users' ? { ...e, tests: [sqlTest] } : e)) } };
    const err3 = await refusal(validateRelease(bad2, 'R2', { actor: ACTOR }));
    expect(err3.message).toContain('tests[0].sql: the query must return the users primary key column "id" (it returns: email)');
  });
});

describe('integrity', () => {
  async function seedChain(e: TestEnv): Promise<void> {
    await insertUsers(e, 'st1', [
      { id: 1, email: 'ada@x' },
      { id: 3, email: 'cleo@x' },
    ]);
    await insertAccounts(e, 'st1', [
      { id: 11, number: 'AC-1', user_id: 1 },
      { id: 12, number: 'AC-2', user_id: 999 },
    ]);
    await insertTransactions(e, 'st1', [
      { id: 21, account_id: 11 },
      { id: 22, account_id: 12 },
      { id: 23, account_id: 12 },
    ]);
  }

  it('is refused while the review queue has open conflicts (audited)', async () => {
    env = await testEnv(1);
    await seedChain(env);
    await consolidated(env);
    expect((await listConflicts(env.ctx, 'R2')).map((c) => c.kind)).toEqual(['dangling-reference']);
    const err = await refusal(validateRelease(env.ctx, 'R2', { actor: ACTOR }));
    expect(err.code).toBe('gate_state');
    expect(err.message).toContain('decide the 1 open conflicts first');
    const refused = await env.db.control('audit_events').where({ action: 'gate.validate.refused', release: 'R2' });
    expect(refused).toHaveLength(1);
    expect(refused[0].details).toMatchObject({ openConflicts: 1 });
    expect(await env.db.control('findings')).toHaveLength(0);
  });

  it('finds orphans over several hops; decisions on findings delete or re-point; re-validation closes what was fixed', async () => {
    env = await testEnv(1);
    await seedChain(env);
    await consolidated(env);
    // the reviewer accepts the dangling account as it is: validation still finds it and what hangs on it
    await applyDecision(env.ctx, 'R2', 'C-001', { action: 'waive' }, { actor: 'U_REV', rationale: 'looked fine' });
    // and user 1 was deleted, leaving its account and that account's transaction behind
    await env.db.control.raw(`update ${await resultTable(env)} set status = 'deleted' where entity = 'users' and pk = '1'`);

    const r = await validateRelease(env.ctx, 'R2', { actor: ACTOR });
    expect(r.findings.map(brief)).toEqual([
      ['orphan', 'accounts', '11', 'user_id', '1'],
      ['orphan', 'accounts', '12', 'user_id', '999'],
      ['orphan-chain', 'transactions', '21', 'account_id', '11'],
      ['orphan-chain', 'transactions', '22', 'account_id', '12'],
      ['orphan-chain', 'transactions', '23', 'account_id', '12'],
    ]);
    const byKey = (entity: string, key: string) => r.findings.find((f) => f.entity === entity && f.key === key)!;
    expect(byKey('accounts', '11').message).toBe('user_id = 1 points at users id 1, which was deleted');
    expect(byKey('accounts', '12').message).toBe('user_id = 999 points at users id 999, which is neither in the consolidated users nor in master');
    expect(byKey('transactions', '21').message).toBe(
      'account_id = 11 points at accounts id 11, which is itself an orphan: user_id = 1 points at users id 1, which was deleted',
    );
    expect(r.state).toBe('consolidated');

    // delete the dangling account: refused without cascade (two transactions hang on it), then with cascade
    const acc12 = byKey('accounts', '12').code;
    const noCascade = await refusal(decideFinding(env.ctx, 'R2', acc12, { action: 'delete' }, { actor: 'U_REV', rationale: 'test data of a removed feature' }));
    expect(noCascade.message).toMatch(/2 row\(s\) depend on it/);
    const plan = await decideFinding(env.ctx, 'R2', acc12, { action: 'delete', cascade: true }, { actor: 'U_REV', rationale: '' }, { dryRun: true });
    expect([plan.applied, plan.blast.removed, plan.blast.dependentCount]).toEqual([false, 3, 2]);
    const done = await decideFinding(env.ctx, 'R2', acc12, { action: 'delete', cascade: true }, { actor: 'U_REV', rationale: 'test data of a removed feature' });
    expect([done.applied, done.finding.status, done.finding.closed_by]).toEqual([true, 'closed', 'U_REV']);
    expect(done.finding.resolution).toContain('delete, with dependents — test data of a removed feature');
    // re-point the other account to a live user; only reference findings can be re-pointed
    const acc11 = byKey('accounts', '11').code;
    await expect(decideFinding(env.ctx, 'R2', acc11, { action: 'repoint', to: '777' }, { actor: 'U_REV', rationale: 'the new parent' })).rejects.toThrow(/users 777 is neither/);
    await decideFinding(env.ctx, 'R2', acc11, { action: 'repoint', to: '3' }, { actor: 'U_REV', rationale: 'Cleo owns it' });
    const audit = await env.db.control('audit_events').where({ action: 'finding.decision', release: 'R2' }).orderBy('id');
    expect(audit.map((a) => [a.actor, a.subject])).toEqual([
      ['U_REV', acc12],
      ['U_REV', acc11],
    ]);

    const again = await validateRelease(env.ctx, 'R2', { actor: ACTOR });
    expect(again.findings).toEqual([]);
    expect(again.counts).toMatchObject({ open: 0, closed: 5, new: 0, closedNow: 3 });
    expect(again.state).toBe('validated');
    const all = await listFindings(env.ctx, 'R2', { status: 'all' });
    expect(all.map((f) => [f.code, f.status, f.resolution])).toEqual([
      ['F-001', 'closed', expect.stringContaining('re-point user_id to 3')],
      ['F-002', 'closed', expect.stringContaining('delete, with dependents')],
      ['F-003', 'closed', 'no longer occurs'],
      ['F-004', 'closed', 'no longer occurs'],
      ['F-005', 'closed', 'no longer occurs'],
    ]);
    const tx = await env.db.control.raw(`select pk, status, data->>'account_id' as a from ${await resultTable(env)} where entity = 'transactions' order by pk`);
    expect(tx.rows).toEqual([
      { pk: '21', status: 'final', a: '11' },
      { pk: '22', status: 'deleted', a: '12' },
      { pk: '23', status: 'deleted', a: '12' },
    ]);
  });

  it('finds values that do not fit the column type, empty required fields and columns the ST table lacks; fixing the source closes them', async () => {
    env = await testEnv(2, { dataset: dataset({ accounts: [{ expression: 'balance >= 0' }] }) });
    // ST-1 defines the tables (the highest precedence); ST-2's have drifted from it
    await env.sql(`alter table st1.users alter column city set not null`);
    await env.sql(`alter table st2.accounts alter column balance type text`);
    await env.sql(`alter table st2.users add column nickname text`);
    await insertUsers(env, 'st1', [{ id: 1, email: 'ada@x' }]);
    await insertUsers(env, 'st2', [
      { id: 2, email: 'ben@x', city: null },
      { id: 3, email: 'cleo@x' },
    ]);
    await env.sql(`update st2.users set nickname = 'Cleo' where id = 3`);
    await insertAccounts(env, 'st1', [{ id: 11, number: 'AC-1', user_id: 1 }]);
    await insertAccounts(env, 'st2', [
      { id: 12, number: 'AC-2', user_id: 2, balance: 'lots' },
      { id: 13, number: 'AC-3', user_id: 3, balance: '99999999999999' },
    ]);
    await consolidated(env);

    const r = await validateRelease(env.ctx, 'R2', { actor: ACTOR });
    expect(r.findings.map(brief)).toEqual([
      ['required', 'users', '2', 'city', null],
      ['unknown-column', 'users', '3', 'nickname', 'Cleo'],
      ['expression', 'accounts', null, null, null],
      ['type', 'accounts', '12', 'balance', 'lots'],
      ['type', 'accounts', '13', 'balance', '99999999999999'],
    ]);
    const msg = (rule: string) => r.findings.find((f) => f.rule === rule)!.message;
    expect(msg('required')).toBe('city is empty, but it is NOT NULL in ST-1 st1.users');
    expect(msg('unknown-column')).toBe('nickname = Cleo, but ST-1 st1.users has no column nickname: loading would drop it');
    expect(msg('type')).toBe('balance = lots is not a valid numeric(12,2), the type of balance in ST-1 st1.accounts');
    expect(msg('expression')).toMatch(/^test expression could not run on the consolidated accounts: invalid input syntax for type numeric: "lots" \(see the type findings\)$/);
    const codes = Object.fromEntries(r.findings.map((f) => [`${f.rule}:${f.key}`, f.code]));

    // fix the source, re-lock and re-collect: the next validation no longer finds what was fixed
    await env.sql(`update st2.accounts set balance = '12.50' where id = 12`);
    await env.sql(`update st2.accounts set balance = '13.50' where id = 13`);
    await env.sql(`update st2.users set city = 'Oslo' where id = 2`);
    await tagRelease(env.ctx, 'R2', { actor: ACTOR, env: 'ST-2' });
    await consolidate(env.ctx, 'R2', { actor: ACTOR });
    const again = await validateRelease(env.ctx, 'R2', { actor: ACTOR });
    expect(again.findings.map(brief)).toEqual([['unknown-column', 'users', '3', 'nickname', 'Cleo']]);
    // the same problem keeps its number across runs
    expect(again.findings[0]!.code).toBe(codes['unknown-column:3']);
  });
});

describe('waivers', () => {
  it('need a qa_lead (a refusal is audited) and a rationale; a waiver closes the finding and outlives re-validation', async () => {
    env = await testEnv(1, { dataset: dataset({ users: [{ accepted_values: { column: 'role', values: ['Customer'] } }] }), roles: { reviewer: ['U0REV'], qa_lead: ['U0LEAD'], release_manager: [] } });
    await insertUsers(env, 'st1', [
      { id: 1, email: 'ada@x', role: 'Auditor' },
      { id: 2, email: 'ben@x' },
    ]);
    await consolidated(env);
    const r = await validateRelease(env.ctx, 'R2', { actor: ACTOR });
    expect(r.findings.map(brief)).toEqual([['accepted_values', 'users', '1', 'role', 'Auditor']]);

    const forbidden = await refusal(waiveFinding(env.ctx, 'R2', 'F-001', { actor: 'U0REV', rationale: 'auditors are fine' }));
    expect(forbidden.code).toBe('forbidden');
    expect(forbidden.message).toContain('waive needs the qa_lead role');
    const refusedAudit = await env.db.control('audit_events').where({ action: 'auth.refused', actor: 'U0REV' });
    expect(refusedAudit).toHaveLength(1);
    expect(refusedAudit[0]).toMatchObject({ release: 'R2', subject: 'waive' });
    expect((await listFindings(env.ctx, 'R2'))[0]!.status).toBe('open');

    for (const rationale of [' ', 'ok']) await expect(waiveFinding(env.ctx, 'R2', 'F-001', { actor: 'U0LEAD', rationale })).rejects.toThrow(/a waiver needs a rationale of at least 3/);
    await expect(waiveFinding(env.ctx, 'R2', 'F-009', { actor: 'U0LEAD', rationale: 'accepted as is' })).rejects.toThrow(/no finding F-009/);
    const waived = await waiveFinding(env.ctx, 'R2', 'f-1', { actor: 'U0LEAD', rationale: 'the audit feature adds this role in R3' });
    expect([waived.status, waived.waived_by, waived.rationale]).toEqual(['waived', 'U0LEAD', 'the audit feature adds this role in R3']);
    await expect(waiveFinding(env.ctx, 'R2', 'F-001', { actor: 'U0LEAD', rationale: 'again' })).rejects.toThrow(/already waived by U0LEAD/);
    const audit = await env.db.control('audit_events').where({ action: 'finding.waived' });
    expect(audit.map((a) => [a.actor, a.subject, a.details.rationale])).toEqual([['U0LEAD', 'F-001', 'the audit feature adds this role in R3']]);
    // a waived finding is not a decision on a record
    await expect(decideFinding(env.ctx, 'R2', 'F-001', { action: 'delete' }, { actor: 'U0LEAD', rationale: 'accepted as is' })).rejects.toThrow(/already waived/);

    const again = await validateRelease(env.ctx, 'R2', { actor: ACTOR });
    expect(again.counts).toMatchObject({ open: 0, waived: 1 });
    expect(again.state).toBe('validated');

    // the record changes afterwards (as a decision would change it): validated no more
    await env.db.control.raw(`update ${await resultTable(env)} set data = jsonb_set(data, '{role}', '"Boss"') where entity = 'users' and pk = '1'`);
    const changed = await validateRelease(env.ctx, 'R2', { actor: ACTOR });
    // the waiver was for role = Auditor: a different value opens it again
    expect(changed.findings.map((f) => [f.code, f.status, f.value])).toEqual([['F-001', 'open', 'Boss']]);
    expect(changed.counts).toMatchObject({ open: 1, reopened: 1 });
    expect(changed.state).toBe('consolidated');
  });
});

describe('CLI', () => {
  it('validate lists findings (exit 3 while open, --json), waive and decide close them', async () => {
    env = await testEnv(1, { dataset: dataset({ users: [{ accepted_values: { column: 'role', values: ['Customer'] } }] }), roles: { reviewer: [], qa_lead: ['U0LEAD'], release_manager: [] } });
    await insertUsers(env, 'st1', [
      { id: 1, email: 'ada@x', role: 'Auditor' },
      { id: 2, email: 'ben@x', role: 'Auditor' },
    ]);
    await consolidated(env);
    const run = (...args: string[]) => cli(['--config', env!.configFile, ...args]);

    const text = await run('validate', 'R2');
    expect(text.code, output(text)).toBe(3);
    expect(text.stdout).toMatch(/F-001\s+open\s+accepted_values\s+users 1\s+role = Auditor/);
    expect(text.stdout).toContain('role = Auditor is not an accepted value (Customer)');
    expect(text.stdout).toContain('tributary waive <F-…> --release R2');
    const json = await run('--json', 'validate', 'R2');
    expect(json.code, output(json)).toBe(3);
    expect(JSON.parse(json.stdout)).toMatchObject({ release: 'R2', counts: { open: 2 }, findings: [{ code: 'F-001', key: '1' }, { code: 'F-002', key: '2' }] });

    const refused = await run('--as', 'bob', 'waive', 'F-001', '--release', 'R2', '--rationale', 'fine');
    expect(refused.code, output(refused)).toBe(3);
    expect(refused.stderr).toContain('waive needs the qa_lead role');
    const waived = await run('--as', 'U0LEAD', 'waive', 'F-001', '--release', 'R2', '--rationale', 'auditors come in R3');
    expect(waived.code, output(waived)).toBe(0);
    expect(waived.stdout).toContain('F-001 waived by cli:U0LEAD: auditors come in R3');
    const deleted = await run('decide', 'F-002', '--release', 'R2', '--delete', '--rationale', 'a stray test user');
    expect(deleted.code, output(deleted)).toBe(0);
    expect(deleted.stdout).toContain('F-002 closed by');
    const keep = await run('decide', 'F-002', '--release', 'R2', '--keep', '1', '--rationale', 'the first is right');
    expect(keep.code, output(keep)).toBe(2);

    const clean = await run('validate', 'R2');
    expect(clean.code, output(clean)).toBe(0);
    expect(clean.stdout).toContain('R2 is validated: no open findings');
    expect(clean.stdout).toMatch(/F-001\s+waived/);
  });
});
