import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { stringify } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import { openDatabase } from '../src/db/connect.js';
import { consolidate } from '../src/engine/consolidate/index.js';
import { tagRelease } from '../src/engine/gate/index.js';
import { logger } from '../src/log.js';
import { createBot } from '../src/slack/app.js';
import { configDoc, generate, plan, RELEASE, runBench, withScratch } from './dataset.js';

/**
 * `npm run bench:slack [-- --quick | --rows N --envs K --interactions M --concurrency C]`: Slack ack
 * latency while the same process consolidates. Signed interactions, C at a time (default 50), go to
 * the bot's real HTTP receiver (slash commands, button clicks, App Home events), its Web API calls to a
 * local fake Slack API, while `consolidate` runs over N rows (default 1,000,000 over 8 envs) on the
 * PostgreSQL server in BENCH_DATABASE_URL, or on an embedded one. Prints p50/p99/max ack latency and
 * failures against the service level: p99 < 300 ms, no failures. `--busy`: the same with one busy loop per
 * core at normal priority (no process's priority changed) for the whole measured run, as on a machine that
 * does other work: p99 must stay under 1 s (the target is still 300 ms).
 */

const TARGET_P99_MS = 300;
const BUSY_LIMIT_P99_MS = 1000;
const execFileAsync = promisify(execFile);
const SECRET = 'bench-signing-secret';

function options() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      rows: { type: 'string' },
      envs: { type: 'string' },
      interactions: { type: 'string' },
      concurrency: { type: 'string' },
      busy: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const base = values.quick ? { rows: 20_000, envs: 4, interactions: 400 } : { rows: 1_000_000, envs: 8, interactions: 3_000 };
  const int = (v: string | undefined, d: number) => {
    if (v === undefined) return d;
    const n = Number(v.replace(/_/g, ''));
    if (!Number.isInteger(n) || n < 1) throw new Error(`not a positive integer: ${v}`);
    return n;
  };
  return {
    rows: int(values.rows, base.rows),
    envs: int(values.envs, base.envs),
    interactions: int(values.interactions, base.interactions),
    concurrency: int(values.concurrency, 50),
    busy: values.busy,
  };
}

interface Sample {
  at: number;
  ms: number;
  status: number;
}

/** Runs the load generator in its own process (its timing must not share the bot's event loop). */
async function runLoad(endpoint: string, fakeUrl: string, total: number, concurrency: number): Promise<Sample[]> {
  const { stdout } = await execFileAsync(process.execPath, ['--import', 'tsx', LOAD_SCRIPT, endpoint, SECRET, fakeUrl, String(total), String(concurrency), RELEASE], {
    maxBuffer: 64 * 1024 * 1024,
  });
  return stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Sample);
}

const LOAD_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'slack-load.ts');

/** The fake Slack Web API, in its own process. */
async function startFake(): Promise<{ url: string; apiUrl(): string; stop(): Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', LOAD_SCRIPT, 'fake'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      if (buf.includes('\n')) resolve(buf.split('\n')[0]!.trim());
    });
    child.once('exit', (code) => reject(new Error(`the fake Slack API exited (${code})`)));
  });
  return {
    url,
    apiUrl: () => `${url}api/`,
    stop: async () => {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** One busy loop per core, at normal priority, until stopped. */
function startBusyLoops(): () => Promise<void> {
  const loops = os.cpus().map(() => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
  return async () => {
    await Promise.all(loops.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : (c.once('exit', r), c.kill('SIGKILL'))))));
  };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function main(): Promise<void> {
  logger().level = 'warn';
  const opts = options();
  await withScratch('slack', async ({ server, url, dir, defer }) => {
    console.log(`Tributary Slack ack benchmark on ${server.label}${opts.busy ? ', on a busy machine (--busy)' : ''}`);
    await generate(url, opts, plan(opts));
    const file = path.join(dir, 'tributary.yml');
    fs.writeFileSync(file, stringify(configDoc(url, opts.envs)));
    const config = loadConfig({ file, env: { TRIBUTARY_AUDIT_KEY: 'bench-audit-key-0123456789' } });
    const db = await openDatabase(config);
    defer(() => db.close());
    const ctx = { config, db };
    await tagRelease(ctx, RELEASE, { actor: 'cli:bench' });
    const fake = await startFake();
    defer(() => fake.stop());
    await import('../src/db/models.js'); // as src/start.ts does
    const bot = createBot(ctx, { mode: 'http', botToken: 'xoxb-bench', signingSecret: SECRET, port: 0, apiUrl: fake.apiUrl() }, { botId: 'BBOT', botUserId: 'UBOT', retries: 0 });
    const { port } = await bot.start();
    defer(() => bot.stop());
    const endpoint = `http://127.0.0.1:${port}/slack/events`;
    if (opts.busy) defer(startBusyLoops());
    // a few requests first, so that start-up work (module loading, first queries) is not measured;
    // then the same load with nothing else running, for comparison
    await runLoad(endpoint, fake.url, 40, 4);
    await bot.deps.cards.idle();
    const idle = (await runLoad(endpoint, fake.url, Math.ceil(opts.interactions / 2), opts.concurrency)).filter((r) => r.status === 200).map((r) => r.ms);
    await new Promise((r) => setTimeout(r, 500));
    const t0 = performance.now();
    const started = Date.now();
    let ended = Number.POSITIVE_INFINITY;
    const run = consolidate(ctx, RELEASE, { actor: 'cli:bench' }).finally(() => {
      ended = Date.now();
    });
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    const load = await runLoad(endpoint, fake.url, opts.interactions, opts.concurrency);
    loop.disable();
    const sentMs = performance.now() - t0;
    const result = await run;
    const consolidateMs = performance.now() - t0;
    await bot.deps.cards.idle();
    const latencies = load.filter((r) => r.status === 200).map((r) => r.ms);
    const during = load.filter((r) => r.status === 200 && r.at >= started && r.at + r.ms <= ended).map((r) => r.ms);
    const failures = load.filter((r) => r.status !== 200).length;

    const sorted = [...latencies].sort((a, b) => a - b);
    const sortedDuring = [...during].sort((a, b) => a - b);
    const p99 = percentile(sorted, 99);
    const fmt = (n: number) => `${n.toFixed(1)} ms`;
    console.log(`data:   ${opts.rows.toLocaleString('en-US')} rows over ${opts.envs} ST envs; consolidation took ${(consolidateMs / 1000).toFixed(1)} s (${result.counts.conflicts} conflicts)`);
    console.log(`load:   ${latencies.length} signed interactions, ${opts.concurrency} at a time, in ${(sentMs / 1000).toFixed(1)} s; ${during.length} of them while consolidating`);
    console.log('');
    console.log(`figure                          value        target`);
    const sortedIdle = [...idle].sort((a, b) => a - b);
    console.log(`ack latency p50 / p99, idle     ${fmt(percentile(sortedIdle, 50))} / ${fmt(percentile(sortedIdle, 99))}  (the same load before the consolidation)`);
    console.log(`ack latency p50                 ${fmt(percentile(sorted, 50)).padEnd(12)}`);
    console.log(`ack latency p99                 ${fmt(p99).padEnd(12)} < ${TARGET_P99_MS} ms   ${p99 < TARGET_P99_MS ? 'PASS' : 'MISS'}`);
    console.log(`ack latency p99 (consolidating) ${fmt(percentile(sortedDuring, 99)).padEnd(12)} < ${TARGET_P99_MS} ms   ${percentile(sortedDuring, 99) < TARGET_P99_MS ? 'PASS' : 'MISS'}`);
    if (opts.busy) {
      const p50 = percentile(sorted, 50);
      console.log(`busy machine: ${os.cpus().length} busy loop(s) at normal priority, p50 / p99 ${fmt(p50)} / ${fmt(p99)}: p99 < ${BUSY_LIMIT_P99_MS} ms ${p99 < BUSY_LIMIT_P99_MS ? 'PASS' : 'MISS'}`);
    }
    console.log(`ack latency max                 ${fmt(sorted.at(-1) ?? 0)}`);
    console.log(`bot event-loop delay p99 / max   ${fmt(loop.percentile(99) / 1e6)} / ${fmt(loop.max / 1e6)}`);
    console.log(`failures                        ${String(failures).padEnd(12)} 0           ${failures === 0 ? 'PASS' : 'MISS'}`);
  });
}

runBench('slack', main);
