import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { insertAccounts, insertUsers, type TestEnv } from '../helpers.js';

/** The review-at-scale world of the Slack tests: R2 consolidated into five open conflicts in two patterns, and one the rules decided. */
export async function patternsWorld(e: TestEnv): Promise<void> {
  // four users whose role differs between ST-1 and ST-2 (one pattern), each with an ST-2 account that follows the survivor
  for (let i = 1; i <= 4; i++) {
    await insertUsers(e, 'st1', [{ id: i, email: `u${i}@x`, role: 'Administrator' }]);
    await insertUsers(e, 'st2', [{ id: 100 + i, email: `u${i}@x`, role: 'Customer' }]);
    await insertAccounts(e, 'st2', [{ id: 200 + i, number: `AC-${i}`, user_id: 100 + i }]);
  }
  await insertUsers(e, 'st1', [{ id: 20, email: 'w@x', role: 'Administrator' }]);
  await insertUsers(e, 'st3', [{ id: 120, email: 'w@x', role: 'Support' }]);
  // one the rules decide (newest-wins): A-001
  await insertUsers(e, 'st1', [{ id: 30, email: 'ivan@x', created_at: '2024-01-10T08:00:00Z' }]);
  await insertUsers(e, 'st2', [{ id: 130, email: 'ivan@x', created_at: '2024-01-11T08:00:00Z' }]);
  await tagRelease(e.ctx, 'R2', { actor: 'cli:test' });
  await consolidate(e.ctx, 'R2', { actor: 'cli:test' });
}
