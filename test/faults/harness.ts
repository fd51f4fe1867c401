import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { expect } from 'vitest';
import { stringify } from 'yaml';
import { paramsFromUrl } from '../../src/db/connect.js';
import { configDoc, dropDatabase, testEnv, urlFor, type TestEnv } from '../helpers.js';
import { output, startCli, type CliResult } from '../process.js';

/**
 * The fault suite's harness: a world (a database and its config directory) seeded once and copied with
 * CREATE DATABASE … TEMPLATE for each run; a command run as a real process and killed with SIGKILL once
 * it said it waits at a failpoint; the recovery the README gives; then the world compared with an
 * uninterrupted run of the same command on another copy of the same world. Each verdict is appended to
 * FAULTS_REPORT (test/faults/run.ts prints them and checks that every declared failpoint was tried).
 */

export interface World {
  template: string;
  dir: string;
  sources: number;
  extra: Record<string, unknown>;
}

export interface Copy {
  database: string;
  dir: string;
  configFile: string;
  /** Runs the CLI on this copy. */
  cli(args: string[], env?: NodeJS.ProcessEnv): Promise<CliResult>;
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client(paramsFromUrl(urlFor('postgres')));
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** Seeds a world once: a test env built by `build`, then its connections closed so it can be a template. */
export async function seedWorld(sources: number, extra: Record<string, unknown>, build: (e: TestEnv) => Promise<void>): Promise<World> {
  const e = await testEnv(sources, extra);
  await build(e);
  await e.disconnect();
  return { template: e.database, dir: e.dir, sources, extra };
}

const copies: Copy[] = [];

/** A copy of the world: its database (CREATE DATABASE … TEMPLATE) and its config directory's files. */
export async function copyWorld(w: World): Promise<Copy> {
  const database = `t_${crypto.randomBytes(6).toString('hex')}`;
  await admin((c) => c.query(`create database ${database} template ${w.template}`));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-fault-'));
  fs.cpSync(w.dir, dir, { recursive: true });
  const configFile = path.join(dir, 'tributary.yml');
  fs.writeFileSync(configFile, stringify(configDoc(database, w.sources, w.extra)));
  const copy: Copy = { database, dir, configFile, cli: (args, env) => startCli(['--config', configFile, ...args], { env: env ?? {} }).done };
  copies.push(copy);
  return copy;
}

/** Drops every copy and the worlds' templates (afterAll). */
export async function dropWorlds(...worlds: World[]): Promise<void> {
  for (const c of copies.splice(0)) {
    await dropDatabase(c.database);
    fs.rmSync(c.dir, { recursive: true, force: true });
  }
  for (const w of worlds) {
    await dropDatabase(w.template);
    fs.rmSync(w.dir, { recursive: true, force: true });
  }
}

export interface Interrupted {
  /** The pid that said it waits at the point (the CLI's, or a child's of it). */
  pausedPid: number;
  result: CliResult;
}

/**
 * Runs `args` on a copy with the failpoint set to pause, waits until the process says it waits there,
 * and kills the CLI with SIGKILL. Fails if the command ends without reaching the point.
 */
export async function killAt(copy: Copy, point: string, args: string[]): Promise<Interrupted> {
  const p = startCli(['--config', copy.configFile, ...args], { env: { TRIBUTARY_FAILPOINTS: `${point}=pause` } });
  const said = new RegExp(`failpoint ${point.replaceAll('.', '\\.')}: paused \\(pid (\\d+)\\)`);
  let stderr = '';
  const paused = await new Promise<number | null>((resolve) => {
    p.child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = said.exec(stderr);
      if (m) resolve(Number(m[1]));
    });
    p.child.on('close', () => resolve(null));
  });
  if (paused === null) {
    const r = await p.done;
    throw new Error(`${args.join(' ')} ended without pausing at ${point}:\n${output(r)}`);
  }
  p.child.kill('SIGKILL');
  const result = await p.done;
  expect(result.signal).toBe('SIGKILL');
  return { pausedPid: paused, result };
}

/** Whether a process is alive. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface Snapshot {
  queue: string[];
  decisions: string[];
  findings: string[];
  states: string[];
  /** Runs, test runs and nightly slots still `running`: an interrupted attempt's must be closed. */
  running: string[];
  dataset: string;
  tables: string[];
  audit: string[];
}

// ids, times, timings and paths differ between two runs of the same world; what was done does not
const VOLATILE_KEY = /^(id|ms|steps|timings|pid|host|runId|previousRun|testRunId|manifest|dir|file|path|bytes)$|(At|_at|Ms|_ms)$/;

function normalizeText(s: string, dirs: string[]): string {
  let out = s;
  for (const d of dirs) out = out.replaceAll(d, '<dir>');
  return out
    .replaceAll(new RegExp(`${os.hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+`, 'g'), '<host>:<pid>')
    .replace(/#\d+/g, '#N')
    .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, '<time>')
    // an archive directory's stamp, with the -2 a second archive within the same second gets (a killed one left its own)
    .replace(/\d{8}T\d{6}Z(-\d+)?/g, '<stamp>');
}

function normalize(v: unknown, dirs: string[]): unknown {
  if (typeof v === 'string') return normalizeText(v, dirs);
  if (Array.isArray(v)) return v.map((x) => normalize(x, dirs));
  if (v && typeof v === 'object') {
    return Object.fromEntries(
      Object.entries(v as Record<string, unknown>)
        .filter(([k]) => !VOLATILE_KEY.test(k))
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, x]) => [k, normalize(x, dirs)]),
    );
  }
  return v;
}

/** What item 3 of issue 14 compares: queue, decisions, dataset, every table by checksum, and the audit trail. */
export async function snapshot(copy: Copy, otherDirs: string[] = []): Promise<Snapshot> {
  const c = new pg.Client(paramsFromUrl(urlFor(copy.database)));
  await c.connect();
  const dirs = [copy.dir, ...otherDirs];
  try {
    const rows = async (sql: string) => (await c.query(sql)).rows.map((r) => JSON.stringify(normalize(r, dirs)));
    const current = (await c.query(`select current_run_id as id from release_states where release = 'R2'`)).rows[0]?.id as number | undefined;
    const dataset = current
      ? ((await c.query(`select md5(coalesce(string_agg(r::text, '|' order by r::text), '')) as sum from (select entity, pk, data, status from work."r${current}_result") r`)).rows[0]!.sum as string)
      : '';
    const tables = await c.query<{ name: string }>(
      `select schemaname || '.' || tablename as name from pg_tables where schemaname not in ('public', 'work', 'pg_catalog', 'information_schema', 'pgboss') order by 1`,
    );
    const sums: string[] = [];
    for (const t of tables.rows) {
      const s = await c.query(`select count(*)::int as n, md5(coalesce(string_agg(x::text, '|' order by x::text), '')) as sum from ${t.name} x`);
      sums.push(`${t.name} ${s.rows[0]!.n} ${s.rows[0]!.sum}`);
    }
    return {
      queue: await rows(`select entity, identity, kind, priority, status from conflicts order by 1, 2, 3, 4, 5`),
      decisions: (await rows(`select c.entity, c.identity, c.kind, d.params, d.rationale, d.decided_by from decisions d join conflicts c on c.id = d.conflict_id`)).sort(),
      findings: (await rows(`select entity, rule, status from findings`)).sort(),
      states: await rows(`select release, state from release_states order by release`),
      running: await rows(
        `select 'runs' as t, kind from runs where status = 'running' union all select 'test_runs', tier from test_runs where status = 'running'
         union all select 'nightly_runs', kind from nightly_runs where status = 'running' order by 1, 2`,
      ),
      dataset,
      tables: sums,
      audit: await rows(`select action, subject, details from audit_events order by id`),
    };
  } finally {
    await c.end();
  }
}

/** The events of `more` that `base` lacks (as a multiset). */
function extraEvents(base: string[], more: string[]): { extra: string[]; missing: string[] } {
  const left = new Map<string, number>();
  for (const e of base) left.set(e, (left.get(e) ?? 0) + 1);
  const extra: string[] = [];
  for (const e of more) {
    const n = left.get(e) ?? 0;
    if (n > 0) left.set(e, n - 1);
    else extra.push(e);
  }
  const missing = [...left].flatMap(([e, n]) => Array<string>(n).fill(e));
  return { extra, missing };
}

/** Item 3's "equal": everything equal, the audit trail with at most one more event (the interrupted attempt). */
export function expectEqualWorlds(recovered: Snapshot, baseline: Snapshot): void {
  expect(recovered.queue).toEqual(baseline.queue);
  expect(recovered.decisions).toEqual(baseline.decisions);
  expect(recovered.findings).toEqual(baseline.findings);
  expect(recovered.states).toEqual(baseline.states);
  expect(recovered.running).toEqual(baseline.running);
  expect(recovered.dataset).toBe(baseline.dataset);
  expect(recovered.tables).toEqual(baseline.tables);
  const { extra, missing } = extraEvents(baseline.audit, recovered.audit);
  expect(missing, 'audit events of the uninterrupted run missing after recovery').toEqual([]);
  expect(extra.length, `audit events beyond the uninterrupted run's: ${extra.join('\n')}`).toBeLessThanOrEqual(1);
}

export interface Verdict {
  point: string;
  file: string;
  paused: boolean;
  recovered: boolean;
  error?: string;
}

/** Records a failpoint's verdict for test/faults/run.ts (every fault test goes through here). */
export function report(v: Verdict): void {
  const file = process.env.FAULTS_REPORT;
  if (file) fs.appendFileSync(file, `${JSON.stringify(v)}\n`);
}

export interface FaultCase {
  /** The world the command starts from. */
  world: () => World;
  /** The command, as CLI arguments (--config is added). */
  args: string[];
  /** After the kill: what the README says to do (default: run `args` again). */
  recover?: (copy: Copy) => Promise<void>;
  /** Extra checks after the kill (e.g. that no child outlived the CLI). */
  afterKill?: (i: Interrupted, copy: Copy) => Promise<void>;
}

const baselines = new Map<string, Promise<{ snap: Snapshot; dir: string }>>();

/** An uninterrupted run of the command on a copy of the world, once per world and command. */
export function baseline(c: FaultCase): Promise<{ snap: Snapshot; dir: string }> {
  const key = `${c.world().template} ${c.args.join(' ')}`;
  let b = baselines.get(key);
  if (!b) {
    b = (async () => {
      const copy = await copyWorld(c.world());
      const r = await copy.cli(c.args);
      expect(r.code, output(r)).toBe(0);
      return { snap: await snapshot(copy, [c.world().dir]), dir: copy.dir };
    })();
    baselines.set(key, b);
  }
  return b;
}

/** One failpoint of the suite: kill there, recover, compare; the verdict goes to the report. */
export async function faultCase(point: string, file: string, c: FaultCase): Promise<void> {
  const verdict: Verdict = { point, file, paused: false, recovered: false };
  try {
    const base = await baseline(c);
    const copy = await copyWorld(c.world());
    const killed = await killAt(copy, point, c.args);
    verdict.paused = true;
    await c.afterKill?.(killed, copy);
    if (c.recover) await c.recover(copy);
    else {
      const again = await copy.cli(c.args);
      expect(again.code, output(again)).toBe(0);
    }
    expectEqualWorlds(await snapshot(copy, [c.world().dir]), base.snap);
    verdict.recovered = true;
  } catch (err) {
    verdict.error = (err as Error).message.slice(0, 2000);
    throw err;
  } finally {
    report(verdict);
  }
}
