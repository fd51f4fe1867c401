import fs from 'node:fs';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../../src/config/load.js';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import { listConflicts } from '../../../src/engine/review/queue.js';
import { applyDecision } from '../../../src/engine/review/decide.js';
import { decidePattern, listPatterns } from '../../../src/engine/review/patterns.js';
import { undoDecision } from '../../../src/engine/review/undo.js';
import { acceptProposal, listProposals } from '../../../src/engine/review/learn.js';
import { tagRelease } from '../../../src/engine/gate/tag.js';
import { finalRows, insertAccounts, insertUsers, testEnv, TEST_AUDIT_KEY, type TestEnv } from '../../helpers.js';

/**
 * Review at scale through the engine: patterns of alike conflicts, one decision for a pattern (the same
 * path as single decisions, each naming it), undo (data as before, refused when a later decision
 * depends on it), and rules learnt from agreeing decisions, accepted into the config file and applied
 * by the next consolidation.
 */
let env: TestEnv;
const by = { actor: 'U_ALICE', rationale: 'ST-1 holds the roles the tests rely on' };

async function seed(e: TestEnv): Promise<void> {
  // four users whose role differs between ST-1 and ST-2 (one signature), each with an ST-2 account that follows the survivor
  for (let i = 1; i <= 4; i++) {
    await insertUsers(e, 'st1', [{ id: i, email: `u${i}@x`, role: 'Administrator' }]);
    await insertUsers(e, 'st2', [{ id: 100 + i, email: `u${i}@x`, role: 'Customer' }]);
    await insertAccounts(e, 'st2', [{ id: 200 + i, number: `AC-${i}`, user_id: 100 + i }]);
  }
  // one whose role and phone differ (another signature), and one between ST-1 and ST-3
  await insertUsers(e, 'st1', [{ id: 10, email: 'v@x', role: 'Administrator', phone: '1' }]);
  await insertUsers(e, 'st2', [{ id: 110, email: 'v@x', role: 'Customer', phone: '2' }]);
  await insertUsers(e, 'st1', [{ id: 20, email: 'w@x', role: 'Administrator' }]);
  await insertUsers(e, 'st3', [{ id: 120, email: 'w@x', role: 'Support' }]);
}

/** The run's whole result and key map, as text: equal before a decision and after its undo. */
async function snapshot(): Promise<string> {
  const s = await env.db.control('release_states').where({ release: 'R2' }).first();
  const r = await env.db.control.raw(`select to_jsonb(x) as j from work."r${s.current_run_id}_result" x order by entity, identity`);
  const k = await env.db.control.raw(`select to_jsonb(x) as j from work."r${s.current_run_id}_key_map" x order by entity, env, old_pk`);
  return JSON.stringify([r.rows, k.rows]);
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

describe('patterns', () => {
  it('groups the open conflicts by signature, largest first, with a sample and a count; ids are stable for a queue', async () => {
    const patterns = await listPatterns(env.ctx, 'R2');
    expect(patterns.map((p) => [p.id, p.signature, p.count, p.sample.code])).toEqual([
      ['P-1', 'users/core-conflict/role/ST-1+ST-2', 4, 'C-001'],
      ['P-2', 'users/core-conflict/phone+role/ST-1+ST-2', 1, 'C-005'],
      ['P-3', 'users/core-conflict/role/ST-1+ST-3', 1, 'C-006'],
    ]);
    expect(patterns[0]!.sample.key).toBe('email=u1@x');
    expect(await listPatterns(env.ctx, 'R2')).toEqual(patterns);
  });

  it('one decision for a pattern: blast radius first (nothing changes), then one audited decision per conflict naming it', async () => {
    const before = await snapshot();
    const dry = await decidePattern(env.ctx, 'R2', 'P-1', { keepEnv: 'ST-1' }, { ...by, dryRun: true });
    expect(dry.applied).toBe(false);
    expect(dry.decisions.map((d) => [d.code, d.decision])).toEqual(['C-001', 'C-002', 'C-003', 'C-004'].map((c) => [c, { action: 'keep', version: 1 }]));
    expect(dry.blast.rewritten).toBe(4);
    expect(await snapshot()).toBe(before);
    expect((await listConflicts(env.ctx, 'R2')).length).toBe(6);

    const out = await decidePattern(env.ctx, 'R2', 'P-1', { keepEnv: 'ST-1' }, by);
    expect(out.applied).toBe(true);
    expect(out.code).toMatch(/^PD-\d+$/);
    expect(out.blast.rewritten).toBe(4);
    expect((await listConflicts(env.ctx, 'R2')).map((c) => c.code)).toEqual(['C-005', 'C-006']);
    const users = (await finalRows(env, 'users')) as { pk: string; data: Record<string, unknown>; reason: string }[];
    for (let i = 1; i <= 4; i++) {
      const u = users.find((x) => x.data.email === `u${i}@x`)!;
      expect([u.pk, u.data.role]).toEqual([String(i), 'Administrator']);
      expect(u.reason).toContain(`pattern decision ${out.code}`);
    }
    const accounts = (await finalRows(env, 'accounts')) as { data: Record<string, unknown> }[];
    expect(accounts.map((a) => a.data.user_id).sort()).toEqual(['1', '2', '3', '4']);
    const decisions = await env.db.control('decisions').whereNotNull('pattern_decision_id').select('pattern_decision_id');
    expect(decisions.map((d) => `PD-${d.pattern_decision_id}`)).toEqual(Array(4).fill(out.code));
    const audit = await env.db.control('audit_events').whereIn('action', ['decision', 'pattern.decision']).orderBy('id');
    expect(audit.map((a) => [a.action, a.subject, a.details.patternDecision ?? a.details.pattern])).toEqual([
      ...['C-001', 'C-002', 'C-003', 'C-004'].map((c) => ['decision', c, out.code]),
      ['pattern.decision', out.code, 'P-1'],
    ]);
  });

  it('a choice no member can take is refused naming the conflict, and nothing is decided', async () => {
    await expect(decidePattern(env.ctx, 'R2', 'P-1', { keepEnv: 'ST-3' }, by)).rejects.toThrow(/C-001 has no version from ST-3/);
    await expect(decidePattern(env.ctx, 'R2', 'P-9', { keepEnv: 'ST-1' }, by)).rejects.toThrow(/no pattern P-9 .*there are 3/);
    await expect(decidePattern(env.ctx, 'R2', 'P-1', { keepEnv: 'ST-1' }, { actor: 'U_ALICE', rationale: ' ' })).rejects.toThrow(/rationale/);
    expect((await listConflicts(env.ctx, 'R2')).length).toBe(6);
    expect(await env.db.control('pattern_decisions').count('* as n').first()).toEqual({ n: 0 });
  });

  it('refused when the pattern id now names another signature than the one shown (the queue changed), and nothing is decided', async () => {
    await expect(decidePattern(env.ctx, 'R2', 'P-1', { keepEnv: 'ST-1' }, { ...by, signature: 'users/core-conflict/role/ST-1+ST-3' })).rejects.toThrow(
      'P-1 of R2 now is users/core-conflict/role/ST-1+ST-2, not users/core-conflict/role/ST-1+ST-3: the queue changed since it was shown',
    );
    expect((await listConflicts(env.ctx, 'R2')).length).toBe(6);
    expect(await env.db.control('pattern_decisions').count('* as n').first()).toMatchObject({ n: 0 });
  });

  it('keeps by rule: env-precedence keeps the highest-precedence env’s version in every member', async () => {
    const out = await decidePattern(env.ctx, 'R2', 'P-1', { keepByRule: 'env-precedence' }, by);
    expect(out.decisions.every((d) => d.decision.action === 'keep' && d.decision.version === 1)).toBe(true);
  });
});

describe('undo', () => {
  it('a pattern decision undone: its conflicts are open again and the data is as before, audited', async () => {
    const before = await snapshot();
    const pd = await decidePattern(env.ctx, 'R2', 'P-1', { keepEnv: 'ST-1' }, by);
    expect(await snapshot()).not.toBe(before);
    const dry = await undoDecision(env.ctx, pd.code!, { actor: 'U_ALICE', rationale: '', dryRun: true });
    expect(dry.applied).toBe(false);
    expect(dry.blast.reopened).toEqual(['C-001', 'C-002', 'C-003', 'C-004']);
    expect(dry.blast.restored).toBeGreaterThanOrEqual(8);
    await expect(undoDecision(env.ctx, pd.code!, { actor: 'U_ALICE', rationale: '' })).rejects.toThrow(/rationale/);
    const out = await undoDecision(env.ctx, pd.code!, { actor: 'U_ALICE', rationale: 'ST-2 was right after all' });
    expect(out.applied).toBe(true);
    expect(await snapshot()).toBe(before);
    expect((await listConflicts(env.ctx, 'R2')).length).toBe(6);
    expect(await env.db.control('decisions').count('* as n').first()).toEqual({ n: 0 });
    expect((await env.db.control('pattern_decisions').first()).undone_by).toBe('U_ALICE');
    const audit = await env.db.control('audit_events').whereIn('action', ['decision.undone', 'pattern.undone']).orderBy('id');
    expect(audit.map((a) => [a.action, a.subject])).toEqual([...['C-001', 'C-002', 'C-003', 'C-004'].map((c) => ['decision.undone', c]), ['pattern.undone', pd.code]]);
    await expect(undoDecision(env.ctx, pd.code!, { actor: 'U_ALICE', rationale: 'again' })).rejects.toThrow(/already undone/);
    // decided again after the undo
    await applyDecision(env.ctx, 'R2', 'C-001', { action: 'keep', version: 2 }, by);
  });

  it('a single decision undone by its id or its code; refused while a later decision changed the same rows, naming it', async () => {
    // u1's account AC-1 also differs between ST-1 and ST-2 (features of equal priority): its own conflict
    await insertAccounts(env, 'st1', [{ id: 301, number: 'AC-1', user_id: 1, balance: '99.00', feature: 'FEAT-H1' }]);
    await env.sql(`update st2.accounts set feature = 'FEAT-H2' where number = 'AC-1'`);
    await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
    await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
    const queue = await listConflicts(env.ctx, 'R2');
    const user = queue.find((c) => c.key_label === 'email=u1@x')!.code;
    const account = queue.find((c) => c.key_label === 'number=AC-1')!.code;
    const before = await snapshot();
    // the user's decision re-points the account to the survivor; the account's decision then rewrites that row
    await applyDecision(env.ctx, 'R2', user, { action: 'keep', version: 2 }, by);
    const first = await env.db.control('decisions').first();
    await applyDecision(env.ctx, 'R2', account, { action: 'keep', version: 1 }, by);
    const second = await env.db.control('decisions').orderBy('id', 'desc').first();
    await expect(undoDecision(env.ctx, `D-${first.id}`, { actor: 'U_ALICE', rationale: 'wrong' })).rejects.toThrow(
      new RegExp(`a later decision changed the same rows: ${account} \\(D-${second.id}, by U_ALICE\\); undo it first`),
    );
    await undoDecision(env.ctx, account, { actor: 'U_ALICE', rationale: 'wrong', release: 'R2' });
    await undoDecision(env.ctx, `D-${first.id}`, { actor: 'U_ALICE', rationale: 'wrong' });
    expect(await snapshot()).toBe(before);
    expect((await listConflicts(env.ctx, 'R2')).length).toBe(queue.length);
  });
});

describe('rules learnt from reviewers', () => {
  it('three or more agreeing decisions on one signature propose a scoped rule; one contradicting decision withdraws it', async () => {
    await applyDecision(env.ctx, 'R2', 'C-001', { action: 'keep', version: 1 }, by);
    await applyDecision(env.ctx, 'R2', 'C-002', { action: 'keep', version: 1 }, by);
    expect(await listProposals(env.ctx)).toEqual([]);
    await applyDecision(env.ctx, 'R2', 'C-003', { action: 'keep', version: 1 }, by);
    const [p] = await listProposals(env.ctx);
    expect(p).toMatchObject({ name: 'keep-st-1-users-role', entity: 'users', kind: 'core-conflict', attributes: ['role'], envs: ['ST-1', 'ST-2'], choice: { keepEnv: 'ST-1' } });
    expect(p!.decisions.map((d) => d.code)).toEqual(['C-001', 'C-002', 'C-003']);
    await applyDecision(env.ctx, 'R2', 'C-004', { action: 'keep', version: 2 }, by);
    expect(await listProposals(env.ctx)).toEqual([]);
  });

  it('accepted: written into the config file keeping its comments and ${VAR}s, cited; the next consolidation applies it and names it in every reason', async () => {
    const text = fs.readFileSync(env.configFile, 'utf8');
    fs.writeFileSync(env.configFile, `# the team's own comment\n${text}slack:\n  reviewChannel: \${REVIEW_CHANNEL:-C0REVIEW} # where cards go\n`);
    env.ctx.config = loadConfig({ file: env.configFile, env: { TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } });
    await decidePattern(env.ctx, 'R2', 'P-1', { keepEnv: 'ST-1' }, by);
    const [p] = await listProposals(env.ctx);
    const accepted = await acceptProposal(env.ctx, p!.name, { actor: 'U_LEAD' });
    const written = fs.readFileSync(env.configFile, 'utf8');
    expect(written.startsWith("# the team's own comment\n")).toBe(true);
    expect(written).toContain('reviewChannel: ${REVIEW_CHANNEL:-C0REVIEW} # where cards go');
    expect(written).toMatch(/# learnt from 4 agreeing decisions: R2 C-001 \(D-\d+, U_ALICE\), R2 C-002 .*accepted by U_LEAD/);
    expect(written).toContain('attributes: [ role ]');
    expect(loadConfig({ file: env.configFile }).policy.scoped).toEqual([accepted.rule]);
    expect(await listProposals(env.ctx)).toEqual([]);
    await expect(acceptProposal(env.ctx, p!.name, { actor: 'U_LEAD' })).rejects.toThrow(/no proposal/);
    expect((await env.db.control('audit_events').where({ action: 'policy.accept' }).first()).subject).toBe(p!.name);

    // the next consolidation: the rule decides the four (and only them); the queue keeps the others
    const r = await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
    expect(r.counts.byRule[p!.name]).toBe(4);
    expect(r.counts.manual).toBe(2);
    expect((await listConflicts(env.ctx, 'R2')).map((c) => c.key_label)).toEqual(['email=v@x', 'email=w@x']);
    const users = (await finalRows(env, 'users')) as { data: Record<string, unknown>; rule: string; reason: string }[];
    const ruled = users.filter((u) => u.rule === p!.name);
    expect(ruled.map((u) => u.data.role)).toEqual(Array(4).fill('Administrator'));
    for (const u of ruled) expect(u.reason.startsWith(`${p!.name} (scoped rule): attributes differ (role) between ST-1, ST-2 — kept ST-1's version`)).toBe(true);
  });
});
