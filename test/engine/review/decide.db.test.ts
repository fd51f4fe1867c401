import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import { listConflicts, nextConflict, queueSummary, showConflict } from '../../../src/engine/review/queue.js';
import { applyDecision, planDecision } from '../../../src/engine/review/decide.js';
import { tagRelease } from '../../../src/engine/gate/tag.js';
import { TributaryError } from '../../../src/errors.js';
import { finalRows, insertAccounts, insertTransactions, insertUsers, testEnv, type TestEnv } from '../../helpers.js';

/**
 * Decisions through the engine: each kind changes the dataset as it says, shows its blast radius first,
 * needs a rationale, is applied once only and is audited.
 */
let env: TestEnv;
const by = { actor: 'U_ALICE', rationale: 'checked with the feature owner' };

type Row = { pk: string; data: Record<string, unknown>; rule: string | null; reason: string | null; status: string };

async function seed(e: TestEnv): Promise<void> {
  // C-001 P1 core-conflict on dana (3 versions) with children in every env
  await insertUsers(e, 'st1', [{ id: 1, email: 'dana@x', role: 'Administrator', feature: 'FEAT-C', phone: '111' }]);
  await insertUsers(e, 'st2', [{ id: 2, email: 'dana@x', role: 'Customer', feature: 'FEAT-M', phone: '222' }]);
  await insertUsers(e, 'st3', [{ id: 3, email: 'dana@x', role: 'Support', feature: 'FEAT-M', phone: '333' }]);
  await insertAccounts(e, 'st1', [{ id: 11, number: 'AC-D1', user_id: 1 }]);
  await insertAccounts(e, 'st2', [{ id: 12, number: 'AC-D2', user_id: 2 }]);
  await insertAccounts(e, 'st3', [{ id: 13, number: 'AC-D3', user_id: 3 }]);
  await insertTransactions(e, 'st3', [{ id: 31, account_id: 13 }]);
  // C-002 P1 dangling reference
  await insertTransactions(e, 'st1', [{ id: 40, account_id: 999 }]);
  // C-003 P3 equal-priority on merchant M-1 (same primary key in both envs)
  // the merchant's owner is the same person in both envs (ST-2's 61 collapses into ST-1's 60)
  await insertUsers(e, 'st1', [{ id: 60, email: 'merchant@x' }]);
  await insertUsers(e, 'st2', [{ id: 61, email: 'merchant@x' }]);
  await insertAccounts(e, 'st1', [{ id: 50, number: 'M-1', user_id: 60, balance: '1500.00', feature: 'FEAT-H1' }]);
  await insertAccounts(e, 'st2', [{ id: 50, number: 'M-1', user_id: 61, balance: '2750.00', feature: 'FEAT-H2' }]);
  await insertTransactions(e, 'st2', [{ id: 51, account_id: 50 }]);
}

beforeEach(async () => {
  await env?.close();
  env = await testEnv(3);
  await seed(env);
  await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
  await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
});
afterAll(async () => {
  await env?.close();
});

const codeOf = async (kind: string) => (await listConflicts(env.ctx, 'R2')).find((c) => c.kind === kind)!.code;

describe('decisions', () => {
  it('the queue is ordered by priority and shows related data per version', async () => {
    const queue = await listConflicts(env.ctx, 'R2');
    expect(queue.map((c) => [c.code, c.kind, c.priority])).toEqual([
      ['C-001', 'core-conflict', 'P1'],
      ['C-002', 'dangling-reference', 'P1'],
      ['C-003', 'equal-priority', 'P3'],
    ]);
    const dana = await showConflict(env.ctx, 'R2', 'C-001');
    expect(dana.detail.versions!.map((v) => [v.envs, v.children])).toEqual([
      [['ST-1'], 1],
      [['ST-2'], 1],
      [['ST-3'], 1],
    ]);
  });

  it('keep one version: the survivor is that version, the other envs’ children follow it; planning changes nothing', async () => {
    const plan = await planDecision(env.ctx, 'R2', 'C-001', { action: 'keep', version: 2 });
    expect(plan.applied).toBe(false);
    expect(plan.blast.rewritten).toBe(2);
    expect((await showConflict(env.ctx, 'R2', 'C-001')).status).toBe('open');

    const out = await applyDecision(env.ctx, 'R2', 'C-001', { action: 'keep', version: 2 }, by);
    expect(out.applied).toBe(true);
    const users = (await finalRows(env, 'users')) as Row[];
    const dana = users.find((u) => u.data.email === 'dana@x')!;
    expect([dana.pk, dana.status, dana.rule, dana.data.role]).toEqual(['2', 'final', 'decision', 'Customer']);
    expect(dana.reason).toContain('checked with the feature owner');
    const accounts = (await finalRows(env, 'accounts')) as Row[];
    expect(accounts.filter((a) => String(a.data.number).startsWith('AC-D')).map((a) => a.data.user_id)).toEqual(['2', '2', '2']);
    const audit = await env.db.control('audit_events').where({ action: 'decision', subject: 'C-001' });
    expect(audit).toHaveLength(1);
    expect(audit[0].actor).toBe('U_ALICE');
  });

  it('merge takes each picked attribute from its version', async () => {
    await applyDecision(env.ctx, 'R2', 'C-001', { action: 'merge', picks: { role: 1, phone: 3 } }, by);
    const dana = ((await finalRows(env, 'users')) as Row[]).find((u) => u.data.email === 'dana@x')!;
    expect([dana.pk, dana.data.role, dana.data.phone]).toEqual(['1', 'Administrator', '333']);
  });

  it('keep both renames the natural key, re-keys a colliding primary key and rewrites that env’s children', async () => {
    const code = await codeOf('equal-priority');
    const plan = await planDecision(env.ctx, 'R2', code, { action: 'keep-both' });
    expect(plan.blast.renamed).toEqual([{ version: 2, values: { number: 'M-1-st-2' }, pk: '51' }]);
    expect(plan.blast.rewritten).toBe(1);
    await applyDecision(env.ctx, 'R2', code, { action: 'keep-both' }, by);
    const accounts = ((await finalRows(env, 'accounts')) as Row[]).filter((a) => String(a.data.number).startsWith('M-1'));
    expect(accounts.map((a) => [a.pk, a.data.number, a.data.balance, a.data.user_id])).toEqual([
      ['50', 'M-1', '1500.00', '60'],
      ['51', 'M-1-st-2', '2750.00', '60'],
    ]);
    const tx = ((await finalRows(env, 'transactions')) as Row[]).find((t) => t.pk === '51')!;
    expect(tx.data.account_id).toBe('51');
  });

  it('keep both gives its fresh key above master\'s keys too, so the key cannot collide when the release is promoted', async () => {
    // R1, promoted earlier, holds account 900 in master: 51 (above every env's keys) is free now, but
    // a key at or below master's largest could be one an earlier release already uses
    await env.sql(`insert into master.accounts (id, number, user_id, currency, release) values (900, 'AC-R1', null, 'USD', 'R1')`);
    const code = await codeOf('equal-priority');
    const plan = await planDecision(env.ctx, 'R2', code, { action: 'keep-both' });
    expect(plan.blast.renamed).toEqual([{ version: 2, values: { number: 'M-1-st-2' }, pk: '901' }]);
  });

  it('keep both refuses a new natural key that is already taken, naming it', async () => {
    const code = await codeOf('equal-priority');
    await expect(applyDecision(env.ctx, 'R2', code, { action: 'keep-both', rename: { 2: { number: 'AC-D1' } } }, by)).rejects.toThrow(/number=AC-D1 is already taken/);
    expect((await showConflict(env.ctx, 'R2', code)).status).toBe('open');
  });

  it('delete both lists dependents and refuses without cascade; with cascade removes them too', async () => {
    await expect(applyDecision(env.ctx, 'R2', 'C-001', { action: 'delete-both' }, by)).rejects.toThrow(/4 row\(s\) depend on it/);
    const plan = await planDecision(env.ctx, 'R2', 'C-001', { action: 'delete-both', cascade: true });
    expect(plan.blast.dependentCount).toBe(4);
    expect(plan.blast.dependents).toContainEqual({ entity: 'transactions', pk: '31' });
    await applyDecision(env.ctx, 'R2', 'C-001', { action: 'delete-both', cascade: true }, by);
    const res = await env.db.control.raw(`select entity, pk from work."r1_result" where status = 'deleted' order by entity, pk`);
    expect(res.rows).toEqual([
      { entity: 'accounts', pk: '11' },
      { entity: 'accounts', pk: '12' },
      { entity: 'accounts', pk: '13' },
      { entity: 'transactions', pk: '31' },
      { entity: 'users', pk: '1' },
    ]);
  });

  it('a dangling reference can be re-pointed to a consolidated parent, and not to a missing one', async () => {
    await expect(applyDecision(env.ctx, 'R2', 'C-002', { action: 'repoint', to: '777' }, by)).rejects.toThrow(/accounts 777 is neither/);
    await applyDecision(env.ctx, 'R2', 'C-002', { action: 'repoint', to: '11' }, by);
    const tx = ((await finalRows(env, 'transactions')) as Row[]).find((t) => t.pk === '40')!;
    expect([tx.status, tx.data.account_id]).toEqual(['final', '11']);
  });

  it('needs a rationale, fits the conflict kind, and applies once only', async () => {
    // at least three characters other than white space, on every engine path (the CLI's too)
    for (const rationale of ['  ', 'ok', ' a b ']) {
      await expect(applyDecision(env.ctx, 'R2', 'C-001', { action: 'keep', version: 1 }, { actor: 'U_A', rationale })).rejects.toThrow(/a decision needs a rationale of at least 3 characters/);
    }
    await expect(applyDecision(env.ctx, 'R2', 'C-001', { action: 'waive' }, by)).rejects.toThrow(/decide it with keep, keep-both, merge, delete-both/);
    await applyDecision(env.ctx, 'R2', 'C-001', { action: 'keep', version: 1 }, by);
    const second = applyDecision(env.ctx, 'R2', 'C-001', { action: 'keep', version: 3 }, { actor: 'U_BOB', rationale: 'no, the third' });
    await expect(second).rejects.toBeInstanceOf(TributaryError);
    await expect(second).rejects.toThrow(/already decided by U_ALICE/);
    expect(await env.db.control('decisions')).toHaveLength(1);
    expect((await queueSummary(env.ctx, 'R2')).decided).toBe(1);
  });

  it('review next hands two reviewers different conflicts, highest priority first', async () => {
    const a = await nextConflict(env.ctx, 'R2', 'U_A');
    const b = await nextConflict(env.ctx, 'R2', 'U_B');
    expect(a!.code).toBe('C-001');
    expect(b!.code).toBe('C-002');
    expect((await nextConflict(env.ctx, 'R2', 'U_A'))!.code).toBe('C-001');
  });
});

describe('a re-consolidation', () => {
  it('keeps the decisions whose records are unchanged and re-opens those whose records changed', async () => {
    await applyDecision(env.ctx, 'R2', 'C-001', { action: 'keep', version: 2 }, by);
    await applyDecision(env.ctx, 'R2', 'C-003', { action: 'keep-both' }, by);
    // the merchant's balance is fixed in ST-2: its conflict is no longer the one that was decided
    await env.sql(`update st2.accounts set balance = 2800 where id = 50`);
    await tagRelease(env.ctx, 'R2', { actor: 'cli:test', env: 'ST-2' });
    const again = await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
    expect(again.carried).toEqual({ carried: 1, reopened: ['C-003'] });
    const queue = await listConflicts(env.ctx, 'R2', { status: 'all' });
    const dana = queue.find((c) => c.kind === 'core-conflict')!;
    expect([dana.status, dana.decided_by]).toEqual(['decided', 'U_ALICE']);
    const kept = ((await finalRows(env, 'users')) as Row[]).find((u) => u.data.email === 'dana@x')!;
    expect(kept.data.role).toBe('Customer');
    expect(kept.reason).toContain('carried over from C-001');
    expect(queue.find((c) => c.code === 'C-003')!.status).toBe('open');
    expect(await env.db.control('audit_events').where({ action: 'decision.reopened', subject: 'C-003' })).toHaveLength(1);
  });

  it('--env re-collects one env and reuses the others\' rows of the last consolidation', async () => {
    await applyDecision(env.ctx, 'R2', 'C-001', { action: 'keep', version: 1 }, by);
    await env.sql(`update st3.users set phone = '999' where id = 3`);
    await expect(consolidate(env.ctx, 'R2', { actor: 'cli:test', env: 'ST-3' })).rejects.toThrow(/drift in ST-3, table users/);
    await tagRelease(env.ctx, 'R2', { actor: 'cli:test', env: 'ST-3' });
    const again = await consolidate(env.ctx, 'R2', { actor: 'cli:test', env: 'ST-3' });
    // dana's ST-3 version changed: her decision is re-opened; the rest came from the previous run
    expect(again.carried.reopened).toEqual(['C-001']);
    expect(again.counts.collected).toBe(13);
    await env.sql(`update st2.users set phone = '888' where id = 2`);
    await tagRelease(env.ctx, 'R2', { actor: 'cli:test', env: 'ST-2' });
    await expect(consolidate(env.ctx, 'R2', { actor: 'cli:test', env: 'ST-3' })).rejects.toThrow(/ST-2, table users: re-locked since the consolidation this one builds on/);
  });
});
