import fs from 'node:fs';
import path from 'node:path';
import { ValidationError } from 'objection';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Decision, DECISION_ACTIONS, Run, RUN_KINDS, RUN_STATUSES, type DecisionAction, type RunKind } from '../../src/db/models.js';
import type { Decision as ReviewDecision } from '../../src/engine/review/types.js';
import { ROOT, testEnv, type TestEnv } from '../helpers.js';

/**
 * The objection models accept what the code writes: every kind of run with each of its statuses, and
 * every action of a decision, inserted through the model into a migrated control database.
 */
let env: TestEnv;
beforeAll(async () => {
  env = await testEnv(1, {}, { tables: false });
});
afterAll(async () => {
  await env.close();
});

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((f) => f.isFile() && f.name.endsWith('.ts'))
    .map((f) => path.join(f.parentPath, f.name));
}

/** The kind and status of every run the code inserts (`…('runs').insert({ … })`, `Run.query(…).insert({ … })`). */
function insertedRuns(): { file: string; kind: string; status: string }[] {
  const found: { file: string; kind: string; status: string }[] = [];
  for (const file of sources(path.join(ROOT, 'src'))) {
    const text = fs.readFileSync(file, 'utf8');
    for (const m of text.matchAll(/(?:\('runs'\)|Run\.query\([^)]*\))\s*\.insert\(\{([^}]*)\}/gs)) {
      const fields = m[1] ?? '';
      found.push({
        file: path.relative(ROOT, file),
        kind: /kind: '([^']+)'/.exec(fields)?.[1] ?? '(none)',
        status: /status: '([^']+)'/.exec(fields)?.[1] ?? '(none)',
      });
    }
  }
  return found;
}

it('every run the code inserts has a kind and a first status the Run model allows', () => {
  const runs = insertedRuns();
  expect(runs.map((r) => r.kind).sort()).toEqual(['consolidate', 'import', 'promote']);
  for (const r of runs) {
    expect(RUN_KINDS, `${r.file} inserts a run of kind ${r.kind}`).toContain(r.kind);
    expect(RUN_STATUSES[r.kind as RunKind] as readonly string[], `${r.file} inserts a ${r.kind} run ${r.status}`).toContain(r.status);
  }
});

it('inserts every kind of run with each of its statuses through the Run model', async () => {
  for (const kind of RUN_KINDS) {
    for (const status of RUN_STATUSES[kind]) {
      const run = await Run.query(env.db.control).insert({ release: 'R1', kind, status, started_by: 'cli:test', pid: 1, host: 'h' });
      const row = await env.db.control('runs').where({ id: run.id }).first();
      expect(row).toMatchObject({ release: 'R1', kind, status, started_by: 'cli:test', env_filter: null });
    }
  }
  const rows = await env.db.control('runs').select('kind').count('* as n').groupBy('kind').orderBy('kind');
  expect(rows.map((r) => [r.kind, Number(r.n)])).toEqual([['consolidate', 3], ['import', 1], ['promote', 2]]);
});

it('the Run model refuses a kind or a status no code writes', async () => {
  const bad = { release: 'R1', started_by: 'cli:test' };
  await expect(Run.query(env.db.control).insert({ ...bad, kind: 'export' as RunKind, status: 'running' })).rejects.toThrow(ValidationError);
  await expect(Run.query(env.db.control).insert({ ...bad, kind: 'promote', status: 'pending' as 'open' })).rejects.toThrow(/status/);
});

/** Every action of the review's Decision type: adding one there without the model fails to compile here. */
const REVIEW_ACTIONS = {
  keep: true, 'keep-both': true, merge: true, 'delete-both': true, repoint: true, delete: true, waive: true,
} satisfies Record<ReviewDecision['action'], true>;

it('inserts a decision of every action the review takes through the Decision model', async () => {
  expect([...DECISION_ACTIONS].sort()).toEqual(Object.keys(REVIEW_ACTIONS).sort());
  const run = await Run.query(env.db.control).insert({ release: 'R1', kind: 'consolidate', status: 'succeeded', started_by: 'cli:test' });
  for (const [i, action] of (Object.keys(REVIEW_ACTIONS) as DecisionAction[]).entries()) {
    const [conflict] = await env.db.control('conflicts')
      .insert({ release: 'R1', run_id: run.id, code: `C-${i}`, entity: 'users', identity: 'email', key_label: 'k', kind: 'k', priority: 'P2', detail: '{}' })
      .returning('id');
    const d = await Decision.query(env.db.control).insert({
      conflict_id: Number(conflict.id), release: 'R1', run_id: run.id, action, params: { action }, blast: { renamed: [] },
      rationale: 'because', decided_by: 'cli:test',
    });
    const row = await env.db.control('decisions').where({ id: d.id }).first();
    expect(row).toMatchObject({ action, params: { action }, blast: { renamed: [] }, pattern_decision_id: null });
  }
  await expect(
    Decision.query(env.db.control).insert({ conflict_id: 1, release: 'R1', run_id: run.id, action: 'approve' as DecisionAction, rationale: 'x', decided_by: 'cli:test' }),
  ).rejects.toThrow(ValidationError);
});
