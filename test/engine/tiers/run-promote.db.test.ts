import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import { listConflicts } from '../../../src/engine/review/queue.js';
import { applyDecision } from '../../../src/engine/review/decide.js';
import { releaseState, transition } from '../../../src/engine/kernel/lifecycle.js';
import { loadRelease } from '../../../src/engine/load/load.js';
import { promotedFingerprint } from '../../../src/engine/promote/promote.js';
import { tagRelease } from '../../../src/engine/gate/tag.js';
import { runTests } from '../../../src/engine/tiers/run.js';
import { insertAccounts, insertUsers, ROOT, testEnv, type TestEnv } from '../../helpers.js';

/** Tier 2 on real data: it promotes the release into master first when tier 1 passed, then tests master. */
let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

it('tier 2 promotes the loaded release into its own master partition first, and tests the promoted data', async () => {
  const behaviour = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-t2-')), 'behaviour.json');
  fs.writeFileSync(behaviour, JSON.stringify({ suite: ['login works @FEAT-C', 'service answers @smoke', 'old report @FEAT-OLD'] }));
  const e = await testEnv(2, {
    releases: {
      R1: { features: { 'FEAT-OLD': { priority: 'high', owner: 'zoe' } } },
      R2: { features: { 'FEAT-C': { priority: 'critical', owner: 'alice' }, 'FEAT-M': { priority: 'medium', owner: 'dan' } } },
    },
    testing: { command: `node ${path.join(ROOT, 'test/fixtures/fake-runner.mjs')} {tests} {junit} ${behaviour}`, agents: 2, reportDir: 'reports' },
  });
  env = e;
  const by = { actor: 'cli:qa' };
  await insertUsers(e, 'st1', [{ id: 1, email: 'dana@x', feature: 'FEAT-C' }, { id: 2, email: 'eve@x' }]);
  await insertUsers(e, 'st2', [{ id: 3, email: 'finn@x' }]);
  await insertAccounts(e, 'st1', [{ id: 10, number: 'AC-1', user_id: 1 }]);
  await tagRelease(e.ctx, 'R2', by);
  await consolidate(e.ctx, 'R2', by);
  for (const c of await listConflicts(e.ctx, 'R2')) await applyDecision(e.ctx, 'R2', c.code, { action: 'keep', version: 1 }, { actor: 'U0REV', rationale: 'checked' });
  await transition(e.db.control, 'R2', 'validate');
  await loadRelease(e.ctx, 'R2', by);

  const t1 = await runTests(e.ctx, 'R2', { tier: '1', ...by });
  expect(t1.status).toBe('passed');
  expect((await releaseState(e.db.control, 'R2')).state).toBe('tier1-passed');
  const steps: string[] = [];
  const t2 = await runTests(e.ctx, 'R2', { tier: '2', ...by, progress: (p) => steps.push(p.step) });
  expect(steps[0]).toBe('promote');
  expect(t2.status).toBe('passed');
  expect(t2.env).toBe('master');
  expect(t2.totals.total).toBe(3);
  const parts = await e.sql(`select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid join pg_class p on p.oid = i.inhparent
                              join pg_namespace n on n.oid = p.relnamespace where n.nspname = 'master' and p.relname = 'users'`);
  expect(parts.rows.map((r) => r.relname)).toContain('users__r2');
  expect((await e.sql(`select count(*)::int as n from master.users where release = 'R2'`)).rows[0].n).toBe(3);
  const run = await e.db.control('test_runs').where({ id: t2.runId }).first();
  expect(run.data_fingerprint).toBe(await promotedFingerprint(e.ctx, 'R2'));
  expect((await releaseState(e.db.control, 'R2')).state).toBe('tier2-passed');
});
