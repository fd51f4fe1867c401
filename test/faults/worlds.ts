import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { transition } from '../../src/engine/kernel/lifecycle.js';
import { loadRelease } from '../../src/engine/load/load.js';
import { promoteRelease } from '../../src/engine/promote/promote.js';
import { applyDecision } from '../../src/engine/review/decide.js';
import { validateRelease } from '../../src/engine/validate/validate.js';
import { DEPLOY_ENVS } from '../deploy-setup.js';
import { insertAccounts, insertTransactions, insertUsers, type TestEnv } from '../helpers.js';
import { seedWorld, type World } from './harness.js';

/**
 * The fault suite's worlds: release R2 at each stage of its chain (two ST envs, staging, master with an
 * earlier release R1), each seeded once per test file and copied for every run.
 */
export type Stage = 'tagged' | 'consolidated' | 'decided' | 'validated' | 'loaded' | 'tier1' | 'approved';

const ORDER: Stage[] = ['tagged', 'consolidated', 'decided', 'validated', 'loaded', 'tier1', 'approved'];
const by = { actor: 'cli:test' };

async function seedRows(e: TestEnv): Promise<void> {
  await insertUsers(e, 'st1', [
    { id: 1, email: 'dana@x', role: 'Manager', feature: 'FEAT-C' },
    { id: 2, email: 'eve@x', phone: null },
    { id: 1500, email: 'new@x', feature: 'FEAT-L', city: "O'Hare \\ \t tab" },
    { id: 20, email: 'gus@x', role: 'Admin', feature: 'FEAT-C' },
    { id: 30, email: 'ivy@x', role: 'Admin', feature: 'FEAT-H1' },
    { id: 40, email: 'jo@x', role: 'Admin', feature: 'FEAT-M' },
  ]);
  await insertUsers(e, 'st2', [
    { id: 21, email: 'gus@x', role: 'Customer' },
    { id: 31, email: 'ivy@x', role: 'Customer', feature: 'FEAT-H2' },
    { id: 41, email: 'jo@x', role: 'Customer', feature: 'FEAT-M' },
  ]);
  await insertAccounts(e, 'st1', [
    { id: 10, number: 'AC-DANA', user_id: 1, balance: '12.30' },
    { id: 11, number: 'AC-NEW', user_id: 1500 },
  ]);
  await insertTransactions(e, 'st1', [{ id: 7, account_id: 10, amount: '12.50' }]);
  await e.sql(`insert into master.users (id, email, username, name, role, release, feature, created_by, created_at) values (100, 'old@x', 'old', 'Old', 'Customer', 'R1', 'FEAT-OLD', 'qa-r1', '2023-06-01T10:00:00Z')`);
}

async function decideAll(e: TestEnv): Promise<void> {
  const open = await e.db.control('conflicts').where({ release: 'R2', status: 'open' }).orderBy('code');
  for (const c of open) await applyDecision(e.ctx, 'R2', c.code as string, { action: 'keep', version: 1 }, { actor: 'U0ALICE', rationale: `checked ${c.code}` });
}

const STEPS: Record<Stage, (e: TestEnv) => Promise<unknown>> = {
  tagged: (e) => tagRelease(e.ctx, 'R2', by),
  consolidated: (e) => consolidate(e.ctx, 'R2', by),
  decided: decideAll,
  validated: (e) => validateRelease(e.ctx, 'R2', by),
  loaded: (e) => loadRelease(e.ctx, 'R2', by),
  tier1: async (e) => transition(e.db.control, 'R2', 'tier1'),
  approved: async (e) => {
    await promoteRelease(e.ctx, 'R2', by);
    await transition(e.db.control, 'R2', 'approve');
  },
};

/** R2 brought through the real chain up to `stage`. */
export function seedStage(stage: Stage, extra: Record<string, unknown> = {}, more?: (e: TestEnv) => Promise<void>): Promise<World> {
  return seedWorld(2, { environments: DEPLOY_ENVS, ...extra }, async (e) => {
    await seedRows(e);
    for (const s of ORDER.slice(0, ORDER.indexOf(stage) + 1)) await STEPS[s](e);
    await more?.(e);
  });
}
