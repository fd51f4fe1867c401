/**
 * `npm run bench:cli [-- --quick]`: how fast the CLI answers, as users run it (bin/tributary.js, the
 * compiled dist/): `tributary --help`, and `tributary status R2 --json` on the demo's data (seeded, tagged
 * and consolidated in a scratch database on the bench server). Target: each under 0.5 s, the median of
 * several runs. Also the same `--help` through tsx from the sources (what the CLI cost before it was
 * compiled), measured in the same run, as the baseline.
 */
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config/load.js';
import { openDatabase } from '../src/db/connect.js';
import { seedDemo } from '../src/demo/seed.js';
import { consolidate } from '../src/engine/consolidate/index.js';
import { tagRelease } from '../src/engine/gate/index.js';
import { runBench, withScratch } from './dataset.js';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const TARGET_MS = 500;

function timeRuns(runs: number, args: string[], env: NodeJS.ProcessEnv): { median: number; all: number[] } {
  const all: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const r = spawnSync(process.execPath, args, { cwd: ROOT, env, encoding: 'utf8' });
    all.push(performance.now() - t0);
    if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  }
  const sorted = [...all].sort((a, b) => a - b);
  return { median: sorted[Math.floor(sorted.length / 2)]!, all };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false } } });
  const runs = values.quick ? 3 : 7;
  const build = spawnSync('npm', ['run', '-s', 'build'], { cwd: ROOT, stdio: 'inherit' });
  if (build.status !== 0) throw new Error('npm run build failed');
  await withScratch('cli', async (s) => {
    const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: s.url, TRIBUTARY_AUDIT_KEY: 'bench-cli-audit-key', LOG_LEVEL: 'warn' };
    const config = loadConfig({ file: path.join(ROOT, 'tributary.yml'), env });
    const db = await openDatabase(config);
    try {
      await seedDemo(config, db);
      const actor = `cli:${os.userInfo().username}`;
      await tagRelease({ config, db }, 'R2', { actor });
      await consolidate({ config, db }, 'R2', { actor });
    } finally {
      await db.close();
    }
    const cli = path.join(ROOT, 'bin/tributary.js');
    const help = timeRuns(runs, [cli, '--help'], env);
    const status = timeRuns(runs, [cli, '--config', path.join(ROOT, 'tributary.yml'), 'status', 'R2', '--json'], env);
    const tsx = timeRuns(runs, ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), '--help'], env);
    const ms = (x: number) => `${x.toFixed(0)} ms`;
    const verdict = (x: number) => (x < TARGET_MS ? 'PASS' : 'MISS');
    console.log(`Tributary CLI start-up benchmark on ${s.server.label}, median of ${runs} runs (${os.cpus().length} CPU(s))`);
    console.log('');
    console.log('figure                                   value     target');
    console.log(`tributary --help (compiled)              ${ms(help.median).padEnd(9)} < ${TARGET_MS} ms  ${verdict(help.median)}`);
    console.log(`tributary status R2 --json (demo data)   ${ms(status.median).padEnd(9)} < ${TARGET_MS} ms  ${verdict(status.median)}`);
    console.log(`baseline: --help through tsx (sources)   ${ms(tsx.median).padEnd(9)} (compiled / tsx: ${(help.median / tsx.median).toFixed(2)})`);
  });
}

runBench('cli', main);
