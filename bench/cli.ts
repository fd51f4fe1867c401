/**
 * `npm run bench:cli [-- --quick]`: how fast the CLI answers, as users run it (bin/tributary.js, the
 * compiled dist/): `tributary --help`, and `tributary status R2 --json` on the demo's data (seeded, tagged
 * and consolidated in a scratch database on the bench server). Target: each under 0.5 s, the median of
 * several runs. Also the same `--help` through tsx from the sources (what the CLI cost before it was
 * compiled), measured in the same run, as the baseline. Then where start-up goes: node itself, loading
 * the CLI's modules, and each package the two commands load (found by bench/packages-loaded.mjs), each
 * timed alone in fresh processes.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
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

/** The median of `runs` fresh processes timing `body` (an ES module's code) and printing the milliseconds. */
function timeAlone(runs: number, body: string): number {
  const all: number[] = [];
  for (let i = 0; i < runs; i++) {
    const code = `const t0 = performance.now(); ${body}; console.log(performance.now() - t0);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`timing ${body} failed: ${r.stderr}`);
    all.push(Number(r.stdout.trim()));
  }
  return all.sort((a, b) => a - b)[Math.floor(all.length / 2)]!;
}

/** The packages of package.json's dependencies that a CLI run loads (directly or not), and how. */
function packagesLoaded(args: string[], env: NodeJS.ProcessEnv): { name: string; how: 'require' | 'import' }[] {
  const file = path.join(os.tmpdir(), `tributary-bench-cli-${process.pid}.json`);
  const r = spawnSync(process.execPath, ['--import', path.join(ROOT, 'bench/packages-loaded.mjs'), ...args], { cwd: ROOT, env: { ...env, PACKAGES_LOADED_FILE: file }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  const loaded = JSON.parse(fs.readFileSync(file, 'utf8')) as { name: string; how: 'require' | 'import' }[];
  fs.rmSync(file, { force: true });
  const direct = Object.keys((JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies);
  return loaded.filter((p) => direct.includes(p.name));
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

    // where start-up goes: each part alone, in fresh processes (the parts overlap: a package the CLI's
    // modules import statically is in both lines)
    const main = pathToFileURL(path.join(ROOT, 'dist/src/cli/main.js')).href;
    const nodeAlone = timeRuns(runs, ['-e', '0'], env).median;
    const cliModules = timeAlone(runs, `await import(${JSON.stringify(main)})`);
    const helpPackages = packagesLoaded([cli, '--help'], env);
    const statusPackages = packagesLoaded([cli, '--config', path.join(ROOT, 'tributary.yml'), 'status', 'R2', '--json'], env);
    const alone = new Map<string, number>();
    for (const p of statusPackages) {
      const load = p.how === 'import' ? `await import(${JSON.stringify(p.name)})` : `(await import('node:module')).createRequire(${JSON.stringify(`${ROOT}/`)})(${JSON.stringify(p.name)})`;
      alone.set(p.name, timeAlone(runs, load));
    }
    const list = (ps: { name: string }[]) => ps.map((p) => (alone.has(p.name) ? `${p.name} ${ms(alone.get(p.name)!)}` : p.name)).join(', ') || 'none';
    console.log('');
    console.log(`where start-up goes (each part alone, fresh processes, median of ${runs}; the parts overlap)`);
    console.log(`node itself (node -e 0)                  ${ms(nodeAlone)}`);
    console.log(`loading the CLI's modules, no command    ${ms(cliModules)}`);
    console.log(`packages --help loads                    ${helpPackages.map((p) => p.name).join(', ') || 'none'}`);
    console.log(`packages status R2 --json loads          ${list(statusPackages)}`);
  });
}

runBench('cli', main);
