import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import { openDatabase } from '../src/db/connect.js';
import { learnTests, parseJUnit, writeJUnit, runTests, type TestCaseResult } from '../src/engine/tiers/index.js';
import { logger } from '../src/log.js';
import { runBench, withScratch } from './dataset.js';

/**
 * `npm run bench:tiers [-- --quick | --tests N --agents A]`: 1,000 synthetic tests with known durations
 * over 8 local agents (child processes under p-queue) running a real command (each test sleeps its
 * duration, scaled down so that the lower bound is 8 s; 2 s at the quick size) that writes real JUnit XML, through the real orchestration (catalog, shards
 * balanced by history, results recorded in the control database, classification, reports).
 * Figures of one run: makespan / lower bound max(total/agents, longest) ≤ 1.05; orchestration overhead
 * per test < 5 ms; parsing JUnit XML of 10,000 test cases < 1 s.
 */

const TARGETS = { ratio: 1.05, overheadMs: 5, parseMs: 1000 };

function options() {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, tests: { type: 'string' }, agents: { type: 'string' }, cases: { type: 'string' } }, strict: true });
  const base = values.quick ? { tests: 200, agents: 4, cases: 10_000, perAgentMs: 2000 } : { tests: 1000, agents: 8, cases: 10_000, perAgentMs: 8000 };
  const int = (v: string | undefined, d: number) => (v === undefined ? d : Number(v));
  return { tests: int(values.tests, base.tests), agents: int(values.agents, base.agents), cases: int(values.cases, base.cases), perAgentMs: base.perAgentMs };
}

/** Durations with a long tail (as real suites have), scaled so that the lower bound is about perAgentMs. */
function durations(n: number, agents: number, perAgentMs: number): number[] {
  let s = 42;
  const rand = () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
  const raw = Array.from({ length: n }, () => 1 + Math.floor(-Math.log(1 - rand()) * 20));
  const total = raw.reduce((a, b) => a + b, 0);
  const scale = (perAgentMs * agents) / total;
  return raw.map((d) => Math.max(1, Math.round(d * scale)));
}

function parseFigure(cases: number): number {
  const sample: TestCaseResult[] = Array.from({ length: cases }, (_, i) => ({
    id: `suite.module${i % 50}::test ${i} [FEAT-${100 + (i % 8)}]`,
    name: `test ${i} [FEAT-${100 + (i % 8)}]${i % 97 === 0 ? ' @smoke' : ''}`,
    classname: `suite.module${i % 50}`,
    status: i % 31 === 0 ? 'failed' : i % 53 === 0 ? 'skipped' : 'passed',
    durationMs: i % 1000,
    ...(i % 31 === 0 ? { message: `expected ${i} to equal ${i + 1}` } : {}),
    features: [`FEAT-${100 + (i % 8)}`],
    smoke: i % 97 === 0,
    properties: {},
  }));
  const xml = writeJUnit(sample, 'bench');
  parseJUnit(xml, 'warmup.xml');
  const t0 = performance.now();
  const parsed = parseJUnit(xml, 'bench.xml');
  const ms = performance.now() - t0;
  if (parsed.length !== cases) throw new Error(`parsed ${parsed.length} of ${cases} test cases`);
  return ms;
}

async function main(): Promise<void> {
  const o = options();
  logger().level = 'warn';
  await withScratch('tiers', async ({ server, url, dir }) => {
    const file = path.join(dir, 'tributary.yml');
    const runner = path.resolve(path.dirname(new URL(import.meta.url).pathname), 'sleep-runner.mjs');
    fs.writeFileSync(
      file,
      stringify({
        database: { url },
        releases: { R2: { features: { 'FEAT-101': { priority: 'high', owner: 'qa' } } } },
        environments: { 'ST-1': { role: 'source', precedence: 1, schema: 'st1' }, master: { role: 'master', schema: 'master' }, staging: { role: 'staging', schema: 'staging' } },
        dataset: { entities: { users: { primaryKey: 'id' } } },
        testing: { command: `node ${runner} {tests} {junit}`, agents: o.agents, shards: o.agents, timeoutSeconds: 600, reportDir: path.join(dir, 'reports') },
      }),
    );
    const config = loadConfig({ file, env: { ...process.env, TRIBUTARY_AUDIT_KEY: 'bench-audit-key-0123456789' } });
    const db = await openDatabase(config);
    try {
      const ds = durations(o.tests, o.agents, o.perAgentMs);
      const cases: TestCaseResult[] = ds.map((d, i) => ({ id: `bench::t${String(i).padStart(5, '0')} d=${d}ms @FEAT-101`, name: `t${String(i).padStart(5, '0')} d=${d}ms @FEAT-101`, classname: 'bench', status: 'passed', durationMs: d, features: ['FEAT-101'], smoke: false, properties: {} }));
      await learnTests(db.control, cases);
      const total = ds.reduce((a, b) => a + b, 0);
      const bound = Math.max(total / o.agents, Math.max(...ds));

      const t0 = performance.now();
      const r = await runTests({ config, db }, 'R2', { tier: 'nightly', actor: 'cli:bench' });
      const wall = performance.now() - t0;
      if (r.totals.passed !== o.tests) throw new Error(`expected ${o.tests} passed tests, got ${JSON.stringify(r.totals)}`);
      const shards = await db.control('test_shards').where({ run_id: r.runId }).select('started_at', 'finished_at', 'duration_ms', 'expected_ms');
      const first = Math.min(...shards.map((s) => new Date(s.started_at).getTime()));
      const last = Math.max(...shards.map((s) => new Date(s.finished_at).getTime()));
      const makespan = last - first;
      const ratio = makespan / bound;
      // the work that is not the tests themselves: in the shards (spawn, selection file, JUnit parse,
      // recording) and around them (selection, sharding, classification, reports), per test
      const inShards = shards.reduce((a, s) => a + Number(s.duration_ms), 0) - total;
      const around = wall - makespan;
      const overheadPerTest = (inShards + around) / o.tests;
      const parseMs = parseFigure(o.cases);

      const ok = (pass: boolean) => (pass ? 'PASS' : 'MISS');
      console.log(`bench:tiers on ${server.label}: ${o.tests} tests, ${o.agents} agents, ${shards.length} shards (${r.selection.note})`);
      console.log(`  test durations: total ${total} ms, longest ${Math.max(...ds)} ms → lower bound max(total/agents, longest) = ${bound.toFixed(0)} ms`);
      console.log(`  makespan of the shards: ${makespan} ms → ratio ${ratio.toFixed(3)} (target ≤ ${TARGETS.ratio}: ${ok(ratio <= TARGETS.ratio)})`);
      console.log(`  whole run (select, shard, run, record, classify, report): ${wall.toFixed(0)} ms ; orchestration ${inShards.toFixed(0)} ms in the shards + ${around.toFixed(0)} ms around them → ${overheadPerTest.toFixed(2)} ms per test (target < ${TARGETS.overheadMs}: ${ok(overheadPerTest < TARGETS.overheadMs)})`);
      console.log(`  parsing JUnit XML of ${o.cases} test cases: ${parseMs.toFixed(0)} ms (target < ${TARGETS.parseMs}: ${ok(parseMs < TARGETS.parseMs)})`);
    } finally {
      await db.close();
    }
  });
}

runBench('tiers', main);
