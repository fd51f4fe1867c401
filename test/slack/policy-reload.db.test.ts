import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect, it } from 'vitest';
import { addScopedRule } from '../../src/config/policyFile.js';
import type { ScopedRule } from '../../src/config/load.js';
import { consolidate } from '../../src/engine/consolidate/run.js';
import { tagRelease } from '../../src/engine/gate/tag.js';
import { listConflicts } from '../../src/engine/review/queue.js';
import type { Bot } from '../../src/slack/app.js';
import { insertUsers, testEnv, type TestEnv } from '../helpers.js';
import { slackScaffold } from './scaffold.js';

/**
 * The running bot reloads its policy when the config file changes (a rule accepted by tributary policy
 * accept from the CLI, another process): the next consolidation it runs applies the rule. A file that
 * does not load leaves the policy in use.
 */
let env: TestEnv;
let bot: Bot;

const rule: ScopedRule = { name: 'keep-st-1-users-role', entity: 'users', kind: 'core-conflict', attributes: ['role'], envs: ['ST-1', 'ST-2'], choice: { keepEnv: 'ST-1' } };

async function until(check: () => boolean, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out');
    await sleep(50);
  }
}

slackScaffold(
  {
    env: () => testEnv(2),
    prepare: async (e) => {
      for (let i = 1; i <= 3; i++) {
        await insertUsers(e, 'st1', [{ id: i, email: `u${i}@x`, role: 'Administrator' }]);
        await insertUsers(e, 'st2', [{ id: 100 + i, email: `u${i}@x`, role: 'Customer' }]);
      }
      await tagRelease(e.ctx, 'R2', { actor: 'cli:test' });
    },
    bot: { scheduler: false },
  },
  (s) => ({ env, bot } = s),
);

it('reloads the policy from the file, and its next consolidation applies the accepted rule', async () => {
  const ctx = bot.deps.ctx;
  expect(ctx.config.policy.scoped).toEqual([]);
  await consolidate(ctx, 'R2', { actor: 'U_LEAD' });
  expect((await listConflicts(ctx, 'R2')).length).toBe(3);

  // another process (the CLI) accepts a rule into the file
  addScopedRule(env.configFile, rule, 'learnt from 3 agreeing decisions (test)');
  await until(() => ctx.config.policy.scoped.length === 1);
  expect(ctx.config.policy.scoped).toEqual([rule]);
  const r = await consolidate(ctx, 'R2', { actor: 'U_LEAD' });
  expect(r.counts.byRule[rule.name]).toBe(3);
  expect(await listConflicts(ctx, 'R2')).toEqual([]);

  // a file that no longer loads: the bot keeps the policy it has
  const good = fs.readFileSync(env.configFile, 'utf8');
  fs.writeFileSync(env.configFile, good.replace('keepEnv: ST-1', 'keepEnv: ST-9'));
  await sleep(2500);
  expect(ctx.config.policy.scoped).toEqual([rule]);
});
