/**
 * `npm run test:faults`: runs the fault suite (vitest.faults.config.ts), then prints each failpoint with
 * its verdict and fails unless every failpoint declared in src/ (a `failpoint('…')` call, or a verified copy's
 * `failpoint: '…'`) was reached by a test that killed a process there and recovered, and every step of the
 * chain has a point.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { STEPS as STEPS_OF_DEPLOY, UNDO_STEP_KEYS } from '../../src/engine/deploy/deployment.js';
import type { Verdict } from './harness.js';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

/** The steps that must each have a failpoint. */
const STEPS = ['consolidate', 'decide', 'validate', 'load', 'test', 'promote', 'bundle', 'deploy', 'rollback', 'nightly', 'archive', 'restore'];

/**
 * The deployment's step runner declares one point per step, from a template (src/engine/deploy/deployment.ts):
 * `deploy.step.<step>` for each forward step, `rollback.step.<key>` for each undo step.
 */
const TEMPLATED: Record<string, readonly string[]> = {
  'deploy.step.': STEPS_OF_DEPLOY,
  'rollback.step.': UNDO_STEP_KEYS,
};

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const p = path.join(dir, d.name);
    if (d.isDirectory()) return sourceFiles(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

/**
 * Every failpoint the code declares: `failpoint('name')` calls in src/, and the verified copies' points
 * (`failpoint: 'name'`, src/engine/kernel/copy.ts).
 */
export function declaredPoints(): Map<string, string> {
  const points = new Map<string, string>();
  for (const file of sourceFiles(path.join(ROOT, 'src'))) {
    const text = fs.readFileSync(file, 'utf8');
    for (const m of text.matchAll(/\bfailpoint(?:\(|:)\s*'([^']+)'/g)) points.set(m[1]!, path.relative(ROOT, file));
    if (/\bfailpoint\(\s*`/.test(text)) {
      for (const [prefix, keys] of Object.entries(TEMPLATED)) if (text.includes(prefix.split('.')[0]!)) for (const k of keys) points.set(`${prefix}${k}`, path.relative(ROOT, file));
    }
  }
  return points;
}

function main(): number {
  const started = Date.now();
  const report = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-faults-')), 'verdicts.jsonl');
  fs.writeFileSync(report, '');
  const vitest = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/vitest/vitest.mjs'), 'run', '--config', 'vitest.faults.config.ts', ...process.argv.slice(2)], {
    cwd: ROOT,
    stdio: 'inherit',
    env: { ...process.env, FAULTS_REPORT: report },
  });
  const verdicts = fs.readFileSync(report, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Verdict);
  const declared = declaredPoints();
  const problems: string[] = [];
  console.log('\nfailpoint verdicts:');
  for (const [point, file] of [...declared].sort()) {
    const mine = verdicts.filter((v) => v.point === point);
    const recovered = mine.length > 0 && mine.every((v) => v.recovered);
    const verdict = mine.length === 0 ? 'NOT TRIED' : recovered ? 'recovered' : mine.some((v) => v.paused) ? 'NOT RECOVERED' : 'NOT REACHED';
    console.log(`  ${verdict.padEnd(13)} ${point}  (${file})`);
    if (verdict !== 'recovered') problems.push(`${point}: ${verdict}${mine[0]?.error ? ` — ${mine[0].error.split('\n')[0]}` : ''}`);
  }
  for (const v of verdicts) if (!declared.has(v.point)) problems.push(`${v.point}: tried by ${v.file}, but no failpoint('${v.point}') in src/`);
  for (const step of STEPS) if (![...declared.keys()].some((p) => p.startsWith(`${step}.`))) problems.push(`step ${step} has no failpoint`);
  const tried = [...declared.keys()].filter((p) => verdicts.some((v) => v.point === p && v.paused)).length;
  const recovered = [...declared.keys()].filter((p) => verdicts.some((v) => v.point === p) && verdicts.filter((v) => v.point === p).every((v) => v.recovered)).length;
  console.log(`\npoints declared ${declared.size}, tried ${tried}, recovered ${recovered}; ${Math.round((Date.now() - started) / 1000)} s`);
  // a run of a subset of the files checks only the verdicts it produced
  const subset = process.argv.length > 2;
  if (!subset && problems.length > 0) {
    console.error(`\nthe fault suite fails:\n  ${problems.join('\n  ')}`);
    return 1;
  }
  return vitest.status ?? 1;
}

process.exit(main());
