import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import { autoResolutionCounts, autoResolutionDigest, listAutoResolutions, showAutoResolution, type AutoResolution } from '../../../src/engine/review/autoResolved.js';
import { listConflicts } from '../../../src/engine/review/queue.js';
import { applyDecision, planDecision } from '../../../src/engine/review/decide.js';
import { releaseEvents, resultRecords, type ResultRecord } from '../../../src/engine/report/index.js';
import { currentRunId } from '../../../src/engine/kernel/workArea.js';
import { tagRelease } from '../../../src/engine/gate/tag.js';
import { TributaryError } from '../../../src/errors.js';
import { autoResolvedAnswer } from '../../../src/slack/autoResolved.js';
import { finalRows, insertAccounts, insertUsers, testEnv, type TestEnv } from '../../helpers.js';

/**
 * Every automatic resolution on record: listed (streamed, filtered), shown side by side, vouched for by
 * one audit event's digest, overruled like a conflict, and the overrule carried across a re-consolidation
 * while its records are unchanged (re-opened when they changed).
 */
let env: TestEnv;
const by = { actor: 'U_ALICE', rationale: 'ST-1 holds the reference profile' };

async function seed(e: TestEnv): Promise<void> {
  // newest-wins: ivan (ST-2 newer)
  await insertUsers(e, 'st1', [{ id: 1, email: 'ivan@x', created_at: '2024-01-10T08:00:00Z' }]);
  await insertUsers(e, 'st2', [{ id: 2, email: 'ivan@x', created_at: '2024-01-11T08:00:00Z' }]);
  // complementary-merge: leo (phone from ST-2)
  await insertUsers(e, 'st1', [{ id: 3, email: 'leo@x', phone: null, city: 'Lyon' }]);
  await insertUsers(e, 'st2', [{ id: 4, email: 'leo@x', phone: '+33', city: 'Lyon' }]);
  // env-precedence: kim (same feature, city differs)
  await insertUsers(e, 'st1', [{ id: 5, email: 'kim@x', city: 'Oslo' }]);
  await insertUsers(e, 'st2', [{ id: 6, email: 'kim@x', city: 'Bergen' }]);
  // re-key: 1500 is mia in ST-1 and nick in ST-2; nick's account follows his new key
  await insertUsers(e, 'st1', [{ id: 1500, email: 'mia@x' }]);
  await insertUsers(e, 'st2', [{ id: 1500, email: 'nick@x' }]);
  await insertAccounts(e, 'st2', [{ id: 1, number: 'AC-NICK', user_id: 1500 }]);
}

beforeEach(async () => {
  await env?.close();
  env = await testEnv(2);
  await seed(env);
  await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
  await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
});
afterAll(async () => {
  await env?.close();
});

async function all(filter = {}, pageSize?: number): Promise<AutoResolution[]> {
  const out: AutoResolution[] = [];
  for await (const a of listAutoResolutions(env.ctx, 'R2', filter, pageSize)) out.push(a);
  return out;
}

describe('automatic resolutions on record', () => {
  it('lists every group a rule resolved, with codes, rules and reasons; filtered by rule and entity; the same in pages of one', async () => {
    const list = await all();
    expect(list.map((a) => [a.code, a.entity, a.rule, a.keyLabel])).toEqual([
      ['A-001', 'users', 'newest-wins', 'email=ivan@x'],
      ['A-002', 'users', 'env-precedence', 'email=kim@x'],
      ['A-003', 'users', 'complementary-merge', 'email=leo@x'],
      ['A-004', 'users', 're-key', 'id=1500'],
    ]);
    expect(list[0]!.reason).toBe('ST-2 newer: 2024-01-11 08:00 vs 2024-01-10 08:00 — newest wins');
    expect(list.every((a) => a.overrule === null)).toBe(true);
    expect(await all({}, 1)).toEqual(list);
    expect((await all({ rule: 'newest-wins' })).map((a) => a.code)).toEqual(['A-001']);
    expect(await all({ entity: 'accounts' })).toEqual([]);
    await expect(all({ rule: 'newest-loses' })).rejects.toThrow(/unknown rule "newest-loses"/);
    await expect(all({ entity: 'widgets' })).rejects.toThrow(/unknown entity "widgets"/);
    const counts = await autoResolutionCounts(env.ctx, 'R2');
    expect(counts.byRule).toEqual({ 'newest-wins': 1, 'env-precedence': 1, 'complementary-merge': 1, 're-key': 1 });

    // Slack's answer gives the same list: counts per rule and the first few, the whole list as a file
    const slack = await autoResolvedAnswer(env.ctx, 'R2', {}, 2);
    expect(slack.message.text).toBe('4 automatic resolutions in R2');
    expect(JSON.stringify(slack.message.blocks)).toContain('*A-002* env-precedence');
    expect(JSON.stringify(slack.message.blocks)).not.toContain('*A-003*');
    expect(slack.file.filename).toBe('R2-auto-resolutions.tsv');
    expect(slack.file.content.trim().split('\n').slice(1).map((l) => l.split('\t')[0])).toEqual(list.map((a) => a.code));
    expect((await autoResolvedAnswer(env.ctx, 'R2', { rule: 're-key' })).file.filename).toBe('R2-auto-resolutions-re-key.tsv');
  });

  it('shows what was kept (env and version), merged (attribute ← env) and re-keyed (old → new key, the children that followed)', async () => {
    const ivan = await showAutoResolution(env.ctx, 'R2', 'a-001');
    expect(ivan.detail.kept).toMatchObject({ version: 2, env: 'ST-2', pk: '2', key: '2' });
    expect(ivan.detail.versions.map((v) => [v.no, v.envs, v.pks])).toEqual([
      [1, ['ST-1'], ['1']],
      [2, ['ST-2'], ['2']],
    ]);
    const leo = await showAutoResolution(env.ctx, 'R2', 'A-003');
    expect(leo.detail.kept).toMatchObject({ env: 'ST-1', pk: '3' });
    expect(leo.detail.merged).toEqual({ phone: 'ST-2' });
    const rekey = await showAutoResolution(env.ctx, 'R2', 'A-004');
    expect(rekey.detail.kept).toMatchObject({ env: 'ST-1', pk: '1500' });
    expect(rekey.detail.rekeyed).toEqual([{ env: 'ST-2', old: '1500', new: '1501', children: [{ entity: 'accounts', pk: '1' }] }]);
    expect(rekey.reason).toBe('id 1500 is used by different records in ST-1, ST-2; ST-1 keeps it — re-keyed ST-2 → 1501');
    await expect(showAutoResolution(env.ctx, 'R2', 'A-099')).rejects.toThrow(/no automatic resolution A-099/);
  });

  it('one audit event per consolidation carries their digest; changing a recorded row changes the digest', async () => {
    const runId = await currentRunId(env.ctx, 'R2');
    const events = (await releaseEvents(env.db.control, 'R2')).filter((e) => e.action === 'consolidate.auto-resolutions');
    expect(events).toHaveLength(1);
    const digest = await autoResolutionDigest(env.db.control, runId);
    expect(events[0]!.details).toEqual({ count: 4, byRule: { 'newest-wins': 1, 'env-precedence': 1, 'complementary-merge': 1, 're-key': 1 }, digest: digest.digest });
    await env.db.control('auto_resolutions').where({ run_id: runId, code: 'A-001' }).update({ reason: 'ST-1 newer' });
    expect((await autoResolutionDigest(env.db.control, runId)).digest).not.toBe(digest.digest);
  });

  it('the result says which version(s) and env(s) each row came from', async () => {
    const runId = await currentRunId(env.ctx, 'R2');
    const rows: ResultRecord[] = [];
    for await (const r of resultRecords(env.ctx, runId, 'users')) rows.push(r);
    const of = (email: string) => rows.find((r) => r.data.email === email)!;
    expect(of('ivan@x').from).toEqual({ versions: [2], envs: ['ST-2'], resolution: 'A-001' });
    expect(of('leo@x').from).toEqual({ versions: [1, 2], envs: ['ST-1', 'ST-2'], resolution: 'A-003', merged: { phone: 'ST-2' } });
    expect(of('mia@x').from).toEqual({ versions: [], envs: ['ST-1'] });
  });

  it('a reviewer overrules one: blast radius first, then decided like a conflict and audited; a re-key cannot be overruled', async () => {
    const plan = await planDecision(env.ctx, 'R2', 'A-001', { action: 'keep', version: 1 });
    expect(plan.applied).toBe(false);
    expect(plan.conflict.detail.suggested).toBe(2);
    // planning re-opened nothing
    expect((await showAutoResolution(env.ctx, 'R2', 'A-001')).overrule).toBeNull();
    await expect(applyDecision(env.ctx, 'R2', 'A-001', { action: 'keep', version: 1 }, { actor: 'U_ALICE', rationale: ' ' })).rejects.toThrow(/rationale/);

    const out = await applyDecision(env.ctx, 'R2', 'A-001', { action: 'keep', version: 1 }, by);
    expect(out.applied).toBe(true);
    const ivan = ((await finalRows(env, 'users')) as { pk: string; data: Record<string, unknown>; rule: string }[]).find((u) => u.data.email === 'ivan@x')!;
    expect([ivan.pk, ivan.rule]).toEqual(['1', 'decision']);
    const shown = await showAutoResolution(env.ctx, 'R2', 'A-001');
    expect(shown.overrule).toMatchObject({ status: 'decided', decidedBy: 'U_ALICE', decision: { action: 'keep', version: 1 } });
    expect((await autoResolutionCounts(env.ctx, 'R2')).overruled).toBe(1);
    const audit = (await releaseEvents(env.db.control, 'R2')).find((e) => e.action === 'decision' && e.subject === 'A-001')!;
    expect(audit.details).toMatchObject({ kind: 'newest-wins', overrules: { rule: 'newest-wins', kept: { version: 2, env: 'ST-2' } } });
    // it is decided once, like a conflict
    await expect(applyDecision(env.ctx, 'R2', 'A-001', { action: 'keep', version: 2 }, by)).rejects.toMatchObject({ code: 'already_decided' });

    const err = await applyDecision(env.ctx, 'R2', 'A-004', { action: 'keep', version: 1 }, by).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TributaryError);
    expect((err as TributaryError).message).toMatch(/A-004 is a re-key/);
  });

  it('two reviewers overruling the same resolution at once: one decides it, the other is told it is decided', async () => {
    const both = await Promise.allSettled([
      applyDecision(env.ctx, 'R2', 'A-002', { action: 'keep', version: 2 }, { actor: 'U_ALICE', rationale: 'Bergen is right' }),
      applyDecision(env.ctx, 'R2', 'A-002', { action: 'keep', version: 2 }, { actor: 'U_BOB', rationale: 'Bergen, surely' }),
    ]);
    expect(both.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const refused = both.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
    expect(refused.reason).toMatchObject({ code: 'already_decided' });
    expect(await env.db.control('conflicts').where({ code: 'A-002' })).toHaveLength(1);
  });

  it('a re-consolidation keeps the overrule while the records are unchanged, and re-opens it (audited) when they changed', async () => {
    await applyDecision(env.ctx, 'R2', 'A-001', { action: 'keep', version: 1 }, by);
    const again = await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
    expect(again.carried).toEqual({ carried: 1, reopened: [] });
    const kept = await showAutoResolution(env.ctx, 'R2', 'A-001');
    expect(kept.overrule).toMatchObject({ status: 'decided', decidedBy: 'U_ALICE' });
    expect(kept.overrule!.rationale).toContain('carried over from A-001');
    const ivan = ((await finalRows(env, 'users')) as { pk: string; data: Record<string, unknown> }[]).find((u) => u.data.email === 'ivan@x')!;
    expect(ivan.pk).toBe('1');

    // ST-1's ivan changes (still newest-wins: the payload stays equal, the timestamp moves): re-opened for review
    await env.sql(`update st1.users set created_at = '2024-01-09T08:00:00Z' where id = 1`);
    await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
    const third = await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
    expect(third.carried).toEqual({ carried: 0, reopened: ['A-001'] });
    const reopened = await showAutoResolution(env.ctx, 'R2', 'A-001');
    expect(reopened.overrule).toMatchObject({ status: 'open', decidedBy: null });
    expect((await listConflicts(env.ctx, 'R2')).map((c) => [c.code, c.kind, c.status])).toEqual([['A-001', 'newest-wins', 'open']]);
    const ev = (await releaseEvents(env.db.control, 'R2')).filter((e) => e.action === 'decision.reopened');
    expect(ev.map((e) => [e.subject, e.details.reason])).toEqual([['A-001', 'the records changed since the overrule']]);
  });
});

describe('an overrule whose identity no rule resolves any more', () => {
  it('lapses, audited; the identity is a conflict for review', async () => {
    await applyDecision(env.ctx, 'R2', 'A-002', { action: 'keep', version: 2 }, by);
    // kim's role now differs (a core attribute): core-conflict, for review, not a rule's any more
    await env.sql(`update st2.users set role = 'Administrator' where id = 6`);
    await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
    await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
    expect((await all()).map((a) => a.keyLabel)).not.toContain('email=kim@x');
    expect((await listConflicts(env.ctx, 'R2')).map((c) => [c.kind, c.key_label, c.status])).toEqual([['core-conflict', 'email=kim@x', 'open']]);
    const ev = (await releaseEvents(env.db.control, 'R2')).filter((e) => e.action === 'decision.reopened');
    expect(ev.map((e) => [e.subject, e.details.reason])).toEqual([['A-002', 'the overrule of A-002 lapsed: no rule resolves users email=kim@x any more (its records changed)']]);
  });
});
