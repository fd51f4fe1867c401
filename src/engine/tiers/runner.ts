import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { paramsFromUrl, type ConnectionParams } from '../../db/connect.js';
import { TributaryError } from '../../errors.js';
import { redact, registerSecret } from '../../log.js';
import { parseJUnit, type FeatureMapping } from './junit.js';
import type { ShardOutcome, ShardSpec, TestCaseResult } from './types.js';
import { commandEnv, execShell, fillCommand, pgEnv, type Exec } from '../kernel/shell.js';
import { must } from '../kernel/must.js';

/**
 * The command runner: runs the team's own test command for one shard in a child process (its own
 * process group, so a timeout kills the whole tree), with the placeholders filled in, and reads back the
 * JUnit XML it wrote. A shard whose command cannot run, times out, or writes no or malformed JUnit XML is
 * `errored`: its tests count as errored, never as passed.
 */

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** A regular expression that matches exactly the selected test names. */
export function namePattern(names: string[]): string {
  return names.length === 0 ? '.*' : `^(?:${[...new Set(names)].map(escapeRegex).join('|')})$`;
}

/**
 * A PostgreSQL URL of the target env, with its password (kept inside Tributary: the shard spec); the
 * env's schema (if any) becomes the search_path. The team's command gets it without the password
 * ({databaseUrl}, TRIBUTARY_DATABASE_URL) and the password as PGPASSWORD (targetEnv).
 */
export function databaseUrl(p: ConnectionParams, schema?: string): string {
  const auth = `${encodeURIComponent(p.user)}${p.password ? `:${encodeURIComponent(p.password)}` : ''}@`;
  if (p.password) registerSecret(p.password);
  const params: string[] = [];
  if (schema) params.push(`options=${encodeURIComponent(`-c search_path=${schema}`)}`);
  if (p.ssl) params.push(`sslmode=${p.ssl.rejectUnauthorized ? 'verify-full' : 'require'}`);
  const q = params.join('&');
  return `postgres://${auth}${p.host}:${p.port}/${encodeURIComponent(p.database)}${q ? `?${q}` : ''}`;
}

/** The URL without its password: what a command line may show. */
export function withoutPassword(url: string): string {
  try {
    const u = new URL(url);
    if (!u.password) return url;
    u.password = '';
    return u.toString();
  } catch {
    return url;
  }
}

/** What the team's test command gets of its target env: the URL without password, and libpq's variables. */
function targetEnv(url: string): { url: string; vars: Record<string, string> } {
  const schema = /-c search_path=([^&\s]+)/.exec(decodeURIComponent(new URL(url).searchParams.get('options') ?? ''))?.[1];
  return { url: withoutPassword(url), vars: pgEnv(paramsFromUrl(url), schema) };
}

export interface RunShardOptions {
  knownFeatures?: Set<string>;
  mapping?: FeatureMapping;
  /** Name of the agent running the shard (host:pid by default). */
  agent?: string;
  /** The run was abandoned: the command's process group is killed. */
  signal?: AbortSignal;
}

/** One run of the test command: its cases, or the error that kept it from reporting them. */
interface Attempt {
  cases: TestCaseResult[];
  exec: Exec;
  error?: string;
  junit: string;
}

async function attempt(spec: ShardSpec, tests: { id: string; name: string }[], tag: string, opts: RunShardOptions): Promise<Attempt> {
  const { exec, junit } = await runCommand(spec, tests, tag, opts);
  return readAttempt(spec, exec, junit, opts);
}

/** Runs the test command on `tests` in a directory of its own (`tag`), writing JUnit XML to `junit`. */
async function runCommand(
  spec: ShardSpec,
  tests: { id: string; name: string }[],
  tag: string,
  opts: RunShardOptions,
): Promise<{ exec: Exec; junit: string }> {
  const dir = path.join(spec.workDir, `shard-${spec.index}-${tag}`);
  fs.mkdirSync(dir, { recursive: true });
  const junit = path.join(dir, 'junit.xml');
  fs.rmSync(junit, { force: true });
  const testsFile = path.join(dir, 'tests.txt');
  fs.writeFileSync(testsFile, tests.map((t) => t.name).join('\n') + (tests.length ? '\n' : ''));
  const target = targetEnv(spec.databaseUrl);
  const values = {
    databaseUrl: target.url,
    env: spec.env,
    tests: testsFile,
    pattern: namePattern(tests.map((t) => t.name)),
    shard: String(spec.index),
    shards: String(spec.count),
    junit,
  };
  const cmd = fillCommand(spec.command, values);
  const exec = await execShell(
    cmd,
    spec.cwd,
    commandEnv({
      ...target.vars,
      TRIBUTARY_DATABASE_URL: target.url,
      TRIBUTARY_ENV: spec.env,
      TRIBUTARY_TESTS_FILE: testsFile,
      TRIBUTARY_SHARD: String(spec.index),
      TRIBUTARY_SHARDS: String(spec.count),
      TRIBUTARY_JUNIT: junit,
    }),
    spec.timeoutMs,
    opts.signal,
  );
  exec.tail = redact(exec.tail);
  return { exec, junit };
}

/** The cases the command reported in its JUnit XML, or why there are none (it did not start, timed out, wrote none…). */
function readAttempt(spec: ShardSpec, exec: Exec, junit: string, opts: RunShardOptions): Attempt {
  const lastLine = exec.tail.trim().split('\n').slice(-1)[0] ?? '';
  const failed = (error: string): Attempt => ({ cases: [], exec, junit, error });
  if (exec.spawnError) return failed(`shard ${spec.index}: the test command could not start: ${redact(exec.spawnError)}`);
  if (exec.timedOut) {
    return failed(`shard ${spec.index}: the test command timed out after ${Math.round(spec.timeoutMs / 1000)} s and was killed`);
  }
  if (exec.exitCode === 127 || exec.exitCode === 126) {
    const why = exec.exitCode === 127 ? 'was not found' : 'is not executable';
    return failed(
      `shard ${spec.index}: the test command ${why} (exit ${exec.exitCode}): ${lastLine || redact(spec.command)}; ` +
        'check testing.command in the config',
    );
  }
  if (!fs.existsSync(junit) || fs.statSync(junit).size === 0) {
    const how = exec.signal ? `signal ${exec.signal}` : `code ${exec.exitCode}`;
    const tail = lastLine ? `: ${lastLine}` : '';
    return failed(`shard ${spec.index}: the test command exited with ${how} and wrote no JUnit XML to {junit}${tail}`);
  }
  try {
    const cases = parseJUnit(fs.readFileSync(junit, 'utf8'), junit, {
      ...(opts.knownFeatures ? { knownFeatures: opts.knownFeatures } : {}),
      ...(opts.mapping ? { mapping: opts.mapping } : {}),
    });
    return { cases, exec, junit };
  } catch (err) {
    const msg = err instanceof TributaryError ? err.message : (err as Error).message;
    return { cases: [], exec, junit, error: `shard ${spec.index}: malformed JUnit XML: ${redact(msg)}` };
  }
}

/** Keeps the cases of the selected tests (runners report unselected ones as skipped) and adds the missing ones as errored. */
function selected(spec: ShardSpec, tests: { id: string; name: string }[], cases: TestCaseResult[]): TestCaseResult[] {
  if (tests.length === 0) return cases.filter((c) => !(c.status === 'skipped' && /pattern/i.test(c.message ?? '')));
  const byId = new Map(tests.map((t) => [t.id, t]));
  const byName = new Map(tests.map((t) => [t.name, t]));
  const out = new Map<string, TestCaseResult>();
  for (const c of cases) {
    const t = byId.get(c.id) ?? byName.get(c.name);
    if (!t) continue;
    // a test reported twice (a runner retrying on its own) counts once, by its last report
    out.set(t.id, { ...c, id: t.id });
  }
  for (const t of tests) {
    if (!out.has(t.id)) {
      out.set(t.id, {
        id: t.id,
        name: t.name,
        classname: '',
        status: 'errored',
        durationMs: 0,
        message: `shard ${spec.index}: selected but not reported by the test command`,
        features: [],
        smoke: false,
        properties: {},
      });
    }
  }
  return [...out.values()];
}

/** Runs one shard: the command, then (when configured) the failing tests again to tell flaky from failing. */
export async function runShard(spec: ShardSpec, opts: RunShardOptions = {}): Promise<ShardOutcome> {
  const started = performance.now();
  const agent = opts.agent ?? `${os.hostname()}:${process.pid}`;
  const first = await attempt(spec, spec.tests, 'run', opts);
  if (first.error) {
    return {
      index: spec.index,
      status: 'errored',
      cases: [],
      retriedPassed: [],
      error: first.error,
      exitCode: first.exec.exitCode,
      durationMs: Math.round(performance.now() - started),
      outputTail: first.exec.tail,
      agent,
    };
  }
  const cases = new Map(selected(spec, spec.tests, first.cases).map((c) => [c.id, c]));
  const retriedPassed: string[] = [];
  for (let r = 1; r <= spec.retries; r++) {
    const failing = [...cases.values()]
      .filter((c) => c.status === 'failed' || c.status === 'errored')
      .map((c) => ({ id: c.id, name: c.name }));
    if (failing.length === 0) break;
    if (opts.signal?.aborted) break;
    const again = await attempt(spec, failing, `retry${r}`, opts);
    if (again.error) break;
    for (const c of selected(spec, failing, again.cases)) {
      if (c.status === 'passed') {
        const before = must(cases.get(c.id), `the first result of ${c.name}, failing before its retry`);
        cases.set(c.id, { ...c, durationMs: before.durationMs + c.durationMs });
        retriedPassed.push(c.id);
      }
    }
  }
  return {
    index: spec.index,
    status: 'done',
    cases: [...cases.values()],
    seen: first.cases,
    retriedPassed,
    exitCode: first.exec.exitCode,
    durationMs: Math.round(performance.now() - started),
    outputTail: first.exec.tail,
    agent,
  };
}
