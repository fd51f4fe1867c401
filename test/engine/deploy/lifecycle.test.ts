import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEPLOYMENT_STATES, nextDeploymentState, type Deployment } from '../../../src/engine/deploy/lifecycle.js';
import { ROOT } from '../../helpers.js';

/**
 * The deployment's states live in one table (src/engine/deploy/lifecycle.ts): no other module writes
 * `deployments.status`. The scan below fails on any such write; it is proven on samples first.
 */
const LIFECYCLE = 'src/engine/deploy/lifecycle.ts';

/** Statements that write a deployment's status: knex on the deployments table, or raw SQL. */
function statusWrites(source: string): string[] {
  const out: string[] = [];
  const knex = /\(\s*['"`]deployments['"`]\s*\)/g;
  for (let m = knex.exec(source); m; m = knex.exec(source)) {
    const end = source.indexOf(';', m.index);
    const statement = source.slice(m.index, end === -1 ? undefined : end);
    if (/\.(update|insert|merge|upsert)\s*\(/.test(statement) && /\bstatus\b/.test(statement)) out.push(statement.trim());
  }
  for (const m of source.matchAll(/(update\s+deployments\b[^;]*\bstatus\b|insert\s+into\s+deployments\b)/gi)) out.push(m[0]);
  return out;
}

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []));
}

describe('writes of a deployment status', () => {
  it('the scan finds knex and SQL writes of the status, and lets other columns through', () => {
    expect(statusWrites(`await db('deployments').where({ id }).update({ status: 'rejected', cause });`)).toHaveLength(1);
    expect(statusWrites(`await trx("deployments")\n  .insert({ release, status: 'awaiting-go' })\n  .returning('*');`)).toHaveLength(1);
    expect(statusWrites(`await db.raw("UPDATE deployments SET cause = 'x', status = 'expired' WHERE id = 1");`)).toHaveLength(1);
    expect(statusWrites(`await db.raw('insert into deployments (release) values (?)', [r]);`)).toHaveLength(1);
    expect(statusWrites(`await ctx.db.control('deployments').where({ id: d.id }).update({ steps: JSON.stringify(s) });`)).toEqual([]);
    expect(statusWrites(`const open = await db('deployments').where({ env }).whereIn('status', OPEN).first();`)).toEqual([]);
  });

  it(`only ${LIFECYCLE} writes deployments.status`, () => {
    const offenders = sources(path.join(ROOT, 'src'))
      .filter((f) => path.relative(ROOT, f) !== LIFECYCLE)
      .flatMap((f) => statusWrites(fs.readFileSync(f, 'utf8')).map((w) => `${path.relative(ROOT, f)}: ${w.split('\n')[0]}`));
    expect(offenders).toEqual([]);
    // and the lifecycle module does write it (the scan would see it)
    expect(statusWrites(fs.readFileSync(path.join(ROOT, LIFECYCLE), 'utf8')).length).toBeGreaterThan(0);
  });
});

const at = (status: Deployment['status'], steps: Deployment['steps'] = [], undo: Deployment['undo'] = []): Deployment =>
  ({ id: 7, release: 'R2', status, steps, undo }) as Deployment;
const step = (name: string, status: 'done' | 'failed' | 'skipped' | 'running') => ({ name, status, startedAt: '2026-12-05T00:00:00Z' });

describe('the transition table', () => {
  it('a refused transition says what must happen first', () => {
    expect(() => nextDeploymentState(at('succeeded'), 'go')).toThrow('deployment #7 of R2 is succeeded: cannot go it; only a deployment awaiting Go gets one; request it again (/release deploy R2)');
    expect(() => nextDeploymentState(at('rolled-back'), 'roll-back')).toThrow(/is rolled-back: cannot roll-back it; only a deployment that ran/);
    expect(nextDeploymentState(at('awaiting-go'), 'schedule')).toBe('scheduled');
    expect(nextDeploymentState(at('rollback-failed'), 'roll-back')).toBe('rolling-back');
  });

  it('guards: a rollback ends as rolled back only with every undo step done; smoke failing alone is its own outcome', () => {
    const undone = [step('undo deploy-data', 'done'), step('undo deploy-code', 'done')];
    expect(nextDeploymentState(at('rolling-back', [], undone), 'rolled-back')).toBe('rolled-back');
    const smokeFails = [...undone, step('smoke after rollback', 'failed')];
    expect(() => nextDeploymentState(at('rolling-back', [], smokeFails), 'rolled-back')).toThrow(/an undo step is not done/);
    expect(nextDeploymentState(at('rolling-back', [], smokeFails), 'smoke-failing-after-rollback')).toBe('restored-smoke-failing');
    const codeFails = [step('undo deploy-data', 'done'), step('undo deploy-code', 'failed'), step('smoke after rollback', 'failed')];
    expect(() => nextDeploymentState(at('rolling-back', [], codeFails), 'smoke-failing-after-rollback')).toThrow(/other than the smoke after rollback is not done/);
    expect(() => nextDeploymentState(at('running', [step('lock', 'done'), step('smoke', 'failed')]), 'succeed')).toThrow(/a step is not done/);
    expect(() => nextDeploymentState(at('approved', [step('lock', 'done')]), 'cancel')).toThrow(/it has started/);
  });

  it('every state is named once', () => {
    expect(new Set(DEPLOYMENT_STATES).size).toBe(DEPLOYMENT_STATES.length);
    expect(DEPLOYMENT_STATES).toContain('restored-smoke-failing');
  });
});
