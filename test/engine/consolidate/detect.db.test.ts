import { afterEach, describe, expect, it } from 'vitest';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import { listConflicts } from '../../../src/engine/review/queue.js';
import { tagRelease } from '../../../src/engine/gate/tag.js';
import { finalRows, insertAccounts, insertTransactions, insertUsers, testEnv, type TestEnv } from '../../helpers.js';

/** Each row of DESIGN.md's conflict policy, alone and in 3-env groups, and the identity edge cases. */
let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

async function run(sources: number, setup: (e: TestEnv) => Promise<void>, extra: Record<string, unknown> = {}) {
  env = await testEnv(sources, extra);
  await setup(env);
  await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
  const result = await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
  return { result, users: await finalRows(env, 'users'), queue: await listConflicts(env.ctx, 'R2') };
}

type Row = { pk: string; data: Record<string, unknown>; rule: string | null; reason: string | null; sources: { env: string }[]; status: string };

const byEmail = (rows: Record<string, unknown>[], email: string) => (rows as Row[]).filter((r) => r.data.email === email);

describe('phase 2: version rules', () => {
  it('exact-duplicate: identical in three envs collapses to the highest-precedence record', async () => {
    const { users, result } = await run(3, async (e) => {
      for (const [i, s] of ['st1', 'st2', 'st3'].entries()) await insertUsers(e, s, [{ id: 10 + i, email: 'kim@x', feature: 'FEAT-M' }]);
    });
    const kim = byEmail(users, 'kim@x');
    expect(kim).toHaveLength(1);
    expect(kim[0]!.pk).toBe('10');
    expect(kim[0]!.rule).toBe('exact-duplicate');
    expect(kim[0]!.sources.map((s) => s.env)).toEqual(['ST-1', 'ST-2', 'ST-3']);
    expect(result.counts.byRule['exact-duplicate']).toBe(1);
    expect(result.counts.manual).toBe(0);
  });

  it('newest-wins: identical payloads, different timestamps keep the newest, with a readable reason', async () => {
    const { users } = await run(3, async (e) => {
      await insertUsers(e, 'st1', [{ id: 1, email: 'ivan@x', created_at: '2024-01-10T08:00:00Z' }]);
      await insertUsers(e, 'st2', [{ id: 2, email: 'ivan@x', created_at: '2024-01-11T08:00:00Z' }]);
      await insertUsers(e, 'st3', [{ id: 3, email: 'ivan@x', created_at: '2024-01-12T08:00:00Z' }]);
    });
    const ivan = byEmail(users, 'ivan@x');
    expect(ivan).toHaveLength(1);
    expect(ivan[0]!.pk).toBe('3');
    expect(ivan[0]!.rule).toBe('newest-wins');
    expect(ivan[0]!.reason).toBe('ST-3 newer: 2024-01-12 08:00 vs 2024-01-11 08:00 — newest wins');
  });

  it('complementary-merge: versions that differ only where one side is null are united', async () => {
    const { users } = await run(3, async (e) => {
      await insertUsers(e, 'st1', [{ id: 1, email: 'leo@x', phone: null, city: 'Lyon' }]);
      await insertUsers(e, 'st2', [{ id: 2, email: 'leo@x', phone: '+33', city: null }]);
      await insertUsers(e, 'st3', [{ id: 3, email: 'leo@x', phone: null, city: null }]);
    });
    const leo = byEmail(users, 'leo@x');
    expect(leo).toHaveLength(1);
    expect(leo[0]!.rule).toBe('complementary-merge');
    expect(leo[0]!.pk).toBe('1');
    expect(leo[0]!.data.phone).toBe('+33');
    expect(leo[0]!.data.city).toBe('Lyon');
  });

  it('core-conflict: a core attribute differs → review, P1 when a version is of a critical feature', async () => {
    const { users, queue } = await run(3, async (e) => {
      await insertUsers(e, 'st1', [{ id: 1, email: 'dana@x', role: 'Administrator', feature: 'FEAT-C' }]);
      await insertUsers(e, 'st3', [{ id: 3, email: 'dana@x', role: 'Customer', feature: 'FEAT-M' }]);
      await insertUsers(e, 'st1', [{ id: 5, email: 'omar@x', role: 'Support', feature: 'FEAT-M' }]);
      await insertUsers(e, 'st2', [{ id: 6, email: 'omar@x', role: 'Customer', feature: 'FEAT-L' }]);
      await insertUsers(e, 'st3', [{ id: 7, email: 'omar@x', role: 'Manager', feature: 'FEAT-M' }]);
    });
    expect(queue.map((c) => [c.code, c.kind, c.priority, c.key_label])).toEqual([
      ['C-001', 'core-conflict', 'P1', 'email=dana@x'],
      ['C-002', 'core-conflict', 'P2', 'email=omar@x'],
    ]);
    expect(queue[0]!.detail.suggested).toBe(1);
    expect(queue[0]!.detail.differing).toEqual(['role']);
    expect(queue[1]!.detail.versions).toHaveLength(3);
    expect(byEmail(users, 'dana@x')[0]!.status).toBe('pending');
  });

  it('feature-priority: non-core attributes differ → the higher-priority feature wins', async () => {
    const { users } = await run(3, async (e) => {
      await insertUsers(e, 'st1', [{ id: 1, email: 'fp@x', name: 'Low', feature: 'FEAT-L' }]);
      await insertUsers(e, 'st2', [{ id: 2, email: 'fp@x', name: 'Critical', feature: 'FEAT-C' }]);
      await insertUsers(e, 'st3', [{ id: 3, email: 'fp@x', name: 'Medium', feature: 'FEAT-M' }]);
    });
    const fp = byEmail(users, 'fp@x');
    expect(fp[0]!.rule).toBe('feature-priority');
    expect(fp[0]!.data.name).toBe('Critical');
    expect(fp[0]!.reason).toContain('FEAT-C (critical) outranks');
  });

  it('env-precedence: same feature → the higher-precedence env wins', async () => {
    const { users } = await run(3, async (e) => {
      await insertUsers(e, 'st2', [{ id: 2, email: 'ep@x', name: 'Two' }]);
      await insertUsers(e, 'st3', [{ id: 3, email: 'ep@x', name: 'Three' }]);
    });
    const ep = byEmail(users, 'ep@x');
    expect(ep[0]!.rule).toBe('env-precedence');
    expect(ep[0]!.data.name).toBe('Two');
    expect(ep[0]!.reason).toBe("same feature FEAT-M; ST-2 has precedence over ST-3 — kept ST-2's version");
  });

  it('equal-priority: different features of equal priority → review P3, suggested keep both', async () => {
    const { queue } = await run(3, async (e) => {
      await insertAccounts(e, 'st2', [{ id: 1, number: 'M-1001', user_id: null, balance: '1500.00', feature: 'FEAT-H1' }]);
      await insertAccounts(e, 'st3', [{ id: 2, number: 'M-1001', user_id: null, balance: '2750.00', feature: 'FEAT-H2' }]);
    });
    expect(queue).toHaveLength(1);
    expect(queue[0]!.kind).toBe('equal-priority');
    expect(queue[0]!.priority).toBe('P3');
    expect(queue[0]!.detail.suggestion).toBe('keep-both');
  });

  it('the policy is configurable: with newest-wins disabled, a timestamp-only difference goes to review', async () => {
    const rules = ['exact-duplicate', 'complementary-merge', 'core-conflict', 'feature-priority', 'env-precedence', 'equal-priority'];
    const { users, queue } = await run(
      2,
      async (e) => {
        await insertUsers(e, 'st1', [{ id: 1, email: 'ts@x', created_at: '2024-01-10T08:00:00Z' }]);
        await insertUsers(e, 'st2', [{ id: 2, email: 'ts@x', created_at: '2024-01-11T08:00:00Z' }]);
      },
      { policy: { rules } },
    );
    const ts = byEmail(users, 'ts@x');
    expect(ts[0]!.status).toBe('pending');
    expect(ts[0]!.rule).toBe('unmatched');
    expect(queue.map((c) => [c.kind, c.priority])).toEqual([['unmatched', 'P3']]);
  });
});

describe('phase 1: identities and the key map', () => {
  it('re-key: one primary key used by two people; the lower-precedence one gets a fresh key and its children follow', async () => {
    const { users } = await run(3, async (e) => {
      await insertUsers(e, 'st1', [{ id: 1500, email: 'mia@x' }, { id: 7, email: 'a@x' }]);
      await insertUsers(e, 'st2', [{ id: 1500, email: 'nick@x' }]);
      await insertUsers(e, 'st3', [{ id: 2000, email: 'z@x' }]);
      await insertAccounts(e, 'st2', [{ id: 1, number: 'AC-NICK', user_id: 1500 }]);
      await insertAccounts(e, 'st1', [{ id: 2, number: 'AC-MIA', user_id: 1500 }]);
    });
    expect(byEmail(users, 'mia@x')[0]!.pk).toBe('1500');
    const nick = byEmail(users, 'nick@x')[0]!;
    expect(nick.rule).toBe('re-key');
    expect(nick.pk).toBe('2001'); // above the largest key of the entity in every env
    expect(nick.data.id).toBe('2001');
    const accounts = (await finalRows(env!, 'accounts')) as Row[];
    expect(accounts.find((a) => a.data.number === 'AC-NICK')!.data.user_id).toBe('2001');
    expect(accounts.find((a) => a.data.number === 'AC-MIA')!.data.user_id).toBe('1500');
  });

  it('re-key: the fresh key is above master\'s keys too (an earlier release\'s), in (env precedence, old key) order', async () => {
    const { users } = await run(3, async (e) => {
      await insertUsers(e, 'st1', [{ id: 8, email: 'mia@x' }, { id: 9, email: 'ola@x' }]);
      await insertUsers(e, 'st2', [{ id: 9, email: 'pia@x' }]);
      await insertUsers(e, 'st3', [{ id: 8, email: 'nick@x' }, { id: 9, email: 'quinn@x' }]);
      await e.sql(`insert into master.users (id, email, release) values (3000, 'r1@x', 'R1')`);
    });
    expect(['pia@x', 'nick@x', 'quinn@x'].map((m) => byEmail(users, m)[0]!.pk)).toEqual(['3001', '3002', '3003']);
  });

  it('entities detected at once: the counts add up every entity’s re-keys and identities', async () => {
    const { result } = await run(3, async (e) => {
      await insertUsers(e, 'st1', [{ id: 1500, email: 'mia@x' }, { id: 1501, email: 'ola@x' }]);
      await insertUsers(e, 'st2', [{ id: 1500, email: 'nick@x' }, { id: 1501, email: 'pia@x' }]);
      await insertAccounts(e, 'st1', [{ id: 1, number: 'AC-1', user_id: 1500 }]);
      await insertAccounts(e, 'st2', [{ id: 1, number: 'AC-2', user_id: 1500 }, { id: 3, number: 'AC-1', user_id: 1501 }]);
    });
    // users 1500 and 1501, accounts 1: three keys each shared by two records; accounts AC-1 twice: one identity
    expect(result.counts.byRule['re-key']).toBe(3);
    expect(result.counts.collected).toBe(7);
    expect(result.counts.identities).toBe(6);
  });

  it('key map: a child follows only its own env’s entry to the surviving parent', async () => {
    await run(3, async (e) => {
      await insertUsers(e, 'st1', [{ id: 10, email: 'judy@x' }, { id: 20, email: 'other@x' }]);
      await insertUsers(e, 'st2', [{ id: 20, email: 'judy@x' }]);
      await insertAccounts(e, 'st2', [{ id: 1, number: 'AC-J2', user_id: 20 }]);
      await insertAccounts(e, 'st1', [{ id: 2, number: 'AC-O1', user_id: 20 }]);
    });
    const accounts = (await finalRows(env!, 'accounts')) as Row[];
    // ST-2's user 20 is judy, whose survivor is ST-1's 10; ST-1's user 20 is "other" and stays 20
    expect(accounts.find((a) => a.data.number === 'AC-J2')!.data.user_id).toBe('10');
    expect(accounts.find((a) => a.data.number === 'AC-O1')!.data.user_id).toBe('20');
    const km = await env!.db.control.raw(`select env, old_pk, new_pk from work."r1_key_map" where entity = 'users' order by env, old_pk`);
    expect(km.rows).toContainEqual({ env: 'ST-2', old_pk: '20', new_pk: '10' });
  });

  it('duplicates inside one env collapse like duplicates across envs', async () => {
    const { users } = await run(2, async (e) => {
      await insertUsers(e, 'st1', [{ id: 1, email: 'twice@x' }, { id: 2, email: 'twice@x' }]);
    });
    const twice = byEmail(users, 'twice@x');
    expect(twice).toHaveLength(1);
    expect(twice[0]!.rule).toBe('exact-duplicate');
  });

  it('an entity without natural keys is identified by its primary key', async () => {
    await run(2, async (e) => {
      await insertTransactions(e, 'st1', [{ id: 1, account_id: 105, amount: '5.00' }]);
      await insertTransactions(e, 'st2', [{ id: 1, account_id: 105, amount: '6.00' }]);
      await e.sql(`insert into master.accounts (id, number, user_id, currency, release) values (105, 'AC-R1', null, 'USD', 'R1')`);
    });
    const tx = (await finalRows(env!, 'transactions')) as Row[];
    expect(tx).toHaveLength(1);
    expect(tx[0]!.rule).toBe('env-precedence');
    expect(tx[0]!.data.amount).toBe('5.00');
  });

  it('inconsistent-identity: email matches one record, username another → review P1', async () => {
    const { queue } = await run(2, async (e) => {
      await insertUsers(e, 'st1', [{ id: 1, email: 'pat@x', username: 'pat' }]);
      await insertUsers(e, 'st2', [{ id: 2, email: 'pat.smith@x', username: 'pat' }]);
    });
    expect(queue.map((c) => [c.kind, c.priority])).toEqual([['inconsistent-identity', 'P1']]);
    expect(queue[0]!.detail.versions).toHaveLength(2);
  });
});

describe('keys and tables since the lock', () => {
  it('the empty string is no natural key: two records whose email is "" are two identities', async () => {
    const { result, users, queue } = await run(2, async (e) => {
      await insertUsers(e, 'st1', [{ id: 1, email: '', username: 'ana' }]);
      await insertUsers(e, 'st2', [{ id: 2, email: '', username: 'ben' }]);
    });
    expect(queue).toEqual([]);
    expect(result.counts.conflicts).toBe(0);
    expect((users as Row[]).map((u) => [u.pk, u.data.email, u.data.username])).toEqual([
      ['1', '', 'ana'],
      ['2', '', 'ben'],
    ]);
  });

  it('an ST table reshaped or dropped after the lock is refused, naming env, table and what changed', async () => {
    env = await testEnv(2);
    await insertUsers(env, 'st1', [{ id: 1, email: 'a@x' }]);
    await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
    await env.sql('alter table st2.users add column nickname text');
    await env.sql('alter table st2.users alter column city type varchar(40)');
    await expect(consolidate(env.ctx, 'R2', { actor: 'cli:test' })).rejects.toThrow(
      'env ST-2: table "st2"."users": reshaped since the lock: column nickname added, column city changed from text to character varying(40); re-lock it: tributary tag R2 --env ST-2',
    );
    await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
    await env.sql('drop table st1.transactions');
    await expect(consolidate(env.ctx, 'R2', { actor: 'cli:test' })).rejects.toThrow('env ST-1: table "st1"."transactions": dropped since the lock; re-lock it: tributary tag R2 --env ST-1');
  });
});

describe('phase 3: references', () => {
  it('dangling-reference: a child whose parent is nowhere → P1; one whose parent is in master resolves', async () => {
    const { queue } = await run(2, async (e) => {
      await insertTransactions(e, 'st1', [{ id: 1, account_id: 999 }, { id: 2, account_id: 105 }]);
      await e.sql(`insert into master.accounts (id, number, user_id, currency, release) values (105, 'AC-R1', null, 'USD', 'R1')`);
    });
    expect(queue.map((c) => [c.kind, c.priority, c.key_label])).toEqual([['dangling-reference', 'P1', 'id=1']]);
    expect(queue[0]!.detail.reason).toContain('account_id = 999');
  });

  it('a reference to a parent in another env reads through it: two versions referencing the same parent compare equal (newest-wins, not env-precedence)', async () => {
    const { result, queue } = await run(2, async (e) => {
      // user 5 lives only in ST-1; ST-2's newer copy of account AC-X references it across envs
      await insertUsers(e, 'st1', [{ id: 5, email: 'pia@x' }]);
      await insertAccounts(e, 'st1', [{ id: 1, number: 'AC-X', user_id: 5, created_at: '2024-01-10T08:00:00Z' }]);
      await insertAccounts(e, 'st2', [{ id: 1, number: 'AC-X', user_id: 5, created_at: '2024-01-11T08:00:00Z' }]);
    });
    expect(queue).toEqual([]);
    expect(result.counts.byRule).toEqual({ 'newest-wins': 1 });
    const accounts = (await finalRows(env!, 'accounts')) as Row[];
    expect(accounts.map((a) => [a.pk, a.rule, a.data.user_id, a.sources.map((x) => x.env).join(',')])).toEqual([['1', 'newest-wins', '5', 'ST-1,ST-2']]);
  });

  it('a reference to a parent in another env whose key moved there follows it to the survivor', async () => {
    const { queue } = await run(3, async (e) => {
      // pia is ST-1's user 7 and ST-3's user 5: the survivor keeps 7; ST-2's account references 5 across envs
      await insertUsers(e, 'st1', [{ id: 7, email: 'pia@x' }]);
      await insertUsers(e, 'st3', [{ id: 5, email: 'pia@x' }]);
      await insertAccounts(e, 'st2', [{ id: 1, number: 'AC-Z', user_id: 5 }]);
    });
    expect(queue).toEqual([]);
    const accounts = (await finalRows(env!, 'accounts')) as Row[];
    expect(accounts.map((a) => [a.pk, a.data.user_id])).toEqual([['1', '7']]);
  });

  it('a reference across envs to a key two different parents hold elsewhere is ambiguous: dangling-reference', async () => {
    const { queue } = await run(3, async (e) => {
      await insertUsers(e, 'st1', [{ id: 5, email: 'pia@x' }]);
      await insertUsers(e, 'st2', [{ id: 5, email: 'quinn@x' }]);
      await insertAccounts(e, 'st3', [{ id: 1, number: 'AC-Y', user_id: 5 }]);
    });
    expect(queue.map((c) => [c.kind, c.priority, c.key_label])).toEqual([['dangling-reference', 'P1', 'number=AC-Y']]);
    expect(queue[0]!.detail.reason).toContain('user_id = 5 points at no users record in ST-3, and 2 different users records hold that key in other envs');
  });

  it('mismatched-parent: a child relying on a parent column that lost → P1', async () => {
    const { queue } = await run(2, async (e) => {
      await insertAccounts(e, 'st1', [{ id: 1, number: 'AC-FX', user_id: null, currency: 'USD' }]);
      await insertAccounts(e, 'st2', [{ id: 2, number: 'AC-FX', user_id: null, currency: 'EUR' }]);
      await insertTransactions(e, 'st2', [{ id: 5, account_id: 2, currency: 'EUR' }]);
      await insertTransactions(e, 'st1', [{ id: 6, account_id: 1, currency: 'USD' }]);
    });
    expect(queue.map((c) => [c.kind, c.key_label])).toEqual([['mismatched-parent', 'id=5']]);
    const tx = (await finalRows(env!, 'transactions')) as Row[];
    expect(tx.find((t) => t.pk === '5')!.data.account_id).toBe('1');
  });
});
