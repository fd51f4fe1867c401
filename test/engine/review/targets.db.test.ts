import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import { tagRelease } from '../../../src/engine/gate/tag.js';
import { applyDecision, planDecision } from '../../../src/engine/review/decide.js';
import { listConflicts } from '../../../src/engine/review/queue.js';
import { parentContradictions, repointTargets } from '../../../src/engine/review/targets.js';
import { renderDecision } from '../../../src/views/text.js';
import { main } from '../../../src/cli/main.js';
import { insertAccounts, insertTransactions, TEST_AUDIT_KEY, testEnv, type TestEnv } from '../../helpers.js';

/** Re-point targets from the work area, and the warning on a parent that contradicts the child, in the engine and the CLI. */
let env: TestEnv;

beforeAll(async () => {
  env = await testEnv(2);
  await insertAccounts(env, 'st1', [{ id: 10, number: 'AC-10', user_id: null, currency: 'USD' }]);
  await insertAccounts(env, 'st1', [{ id: 12, number: 'AC-12', user_id: null, currency: 'EUR' }]);
  await insertAccounts(env, 'st2', [{ id: 11, number: 'AC-11', user_id: null, currency: 'USD' }]);
  await insertTransactions(env, 'st2', [{ id: 40, account_id: 13, currency: 'USD' }]);
  await tagRelease(env.ctx, 'R2', { actor: 'cli:test' });
  await consolidate(env.ctx, 'R2', { actor: 'cli:test' });
});
afterAll(async () => {
  await env?.close();
});

const dangling = async () => {
  const c = (await listConflicts(env.ctx, 'R2')).find((x) => x.kind === 'dangling-reference');
  if (!c) throw new Error('expected the dangling reference');
  return c;
};

describe('re-point targets', () => {
  it('lists the consolidated parents, the child env first, then by closeness of key; a typed master key is offered', async () => {
    const c = await dangling();
    const all = await repointTargets(env.ctx, c);
    expect(all.map((t) => [t.key, t.env, t.columns])).toEqual([
      ['11', 'ST-2', { currency: 'USD' }],
      ['12', 'ST-1', { currency: 'EUR' }],
      ['10', 'ST-1', { currency: 'USD' }],
    ]);
    expect((await repointTargets(env.ctx, c, { limit: 1 })).map((t) => t.key)).toEqual(['11']);
    expect((await repointTargets(env.ctx, c, { query: '2' })).map((t) => t.key)).toEqual(['12']);
    expect(await repointTargets(env.ctx, c, { query: '77' })).toEqual([]);
    await env.sql(`insert into master.accounts (id, number, user_id, currency, balance, release, feature, created_by, created_at) values (77, 'AC-77', null, 'GBP', 1, 'R1', 'F', 'qa', now())`);
    expect(await repointTargets(env.ctx, c, { query: '77' })).toEqual([{ key: '77', env: 'master', columns: { currency: 'GBP' } }]);
    await env.sql('delete from master.accounts where id = 77');
  });

  it('warns, in the plan, the decision and the CLI, when the parent contradicts the columns the child relies on', async () => {
    const c = await dangling();
    expect(await parentContradictions(env.ctx, c, '11')).toEqual([]);
    const warning = 'transactions 40 has currency "USD", but accounts 12 has currency "EUR"';
    expect(await parentContradictions(env.ctx, c, '12')).toEqual([warning]);
    const plan = await planDecision(env.ctx, 'R2', c.code, { action: 'repoint', to: '12' });
    expect(plan.warnings).toEqual([warning]);
    expect(renderDecision(plan)).toContain(`warning: ${warning}`);
    expect((await planDecision(env.ctx, 'R2', c.code, { action: 'repoint', to: '11' })).warnings).toBeUndefined();

    // the CLI prints it with the dry run (before anything is recorded) and with the decision
    process.env.TRIBUTARY_AUDIT_KEY = TEST_AUDIT_KEY;
    const out: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((chunk: string) => (out.push(String(chunk)), true)) as typeof process.stdout.write;
    try {
      expect(await main(['decide', c.code, '--release', 'R2', '--repoint', '12', '--dry-run', '--config', env.configFile])).toBe(0);
    } finally {
      process.stdout.write = write;
    }
    expect(out.join('')).toContain(`warning: ${warning}`);
    const done = await applyDecision(env.ctx, 'R2', c.code, { action: 'repoint', to: '12' }, { actor: 'cli:alice', rationale: 'the EUR account is meant' });
    expect(done.warnings).toEqual([warning]);
  });
});
