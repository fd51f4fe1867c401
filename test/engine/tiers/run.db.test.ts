import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { releaseState, transition } from '../../../src/engine/kernel/lifecycle.js';
import { runShard } from '../../../src/engine/tiers/runner.js';
import { approveRelease, runTests } from '../../../src/engine/tiers/run.js';
import { ROOT, testEnv, type TestEnv } from '../../helpers.js';

/** Two-tier testing: the command runner, selection per tier, sharding, classes, the gates, approval. */
let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

const RUNNER = path.join(ROOT, 'test/fixtures/fake-runner.mjs');
const SUITE = [
  'login works @FEAT-C',
  'merchant onboarding [FEAT-H1]',
  'profile edit @FEAT-M',
  'service answers @smoke',
  'R1 statements @FEAT-OLD',
  'R1 export @FEAT-OLD',
  'old fax feature @FEAT-GONE',
];

interface Setup {
  e: TestEnv;
  behave(b: { results?: Record<string, string>; malformed?: boolean; sleepMs?: number }): void;
}

async function setup(testing: Record<string, unknown> = {}): Promise<Setup> {
  const behaviour = path.join(fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'tributary-behave-')), 'behaviour.json');
  const write = (b: object) => {
    fs.writeFileSync(behaviour, JSON.stringify({ suite: SUITE, ...b }));
    fs.rmSync(`${behaviour}.count`, { force: true, recursive: true });
  };
  write({});
  const e = await testEnv(1, {
    releases: {
      R1: { features: { 'FEAT-OLD': { priority: 'high', owner: 'zoe' }, 'FEAT-GONE': { priority: 'low', owner: 'zoe', deprecated: true } } },
      R2: { features: { 'FEAT-C': { priority: 'critical', owner: 'alice' }, 'FEAT-H1': { priority: 'high', owner: 'bob' }, 'FEAT-M': { priority: 'medium', owner: 'dan' } } },
    },
    testing: { command: `node ${RUNNER} {tests} {junit} ${behaviour}`, agents: 2, shards: 2, timeoutSeconds: 30, reportDir: 'reports', ...testing },
  });
  env = e;
  return { e, behave: write };
}

let loads = 0;
/** Marks R2 as loaded with the given data (what `tributary load` records). */
async function loaded(e: TestEnv, checksum = 'abc'): Promise<void> {
  await e.db.control('release_states').insert({ release: 'R2', state: 'loaded' }).onConflict('release').merge();
  await e.db.control('loads').insert({ release: 'R2', run_id: 1, env: 'staging', entity: 'users', table_name: 'users', row_count: 3, checksum, loaded_by: 'cli:test', loaded_at: new Date(Date.now() + ++loads * 1000) });
}

const by = { actor: 'cli:qa' };

describe('the command runner', () => {
  const spec = (over: Partial<Parameters<typeof runShard>[0]> = {}): Parameters<typeof runShard>[0] => ({
    runId: 1,
    index: 1,
    count: 1,
    tests: [{ id: 'test::a @FEAT-C', name: 'a @FEAT-C' }],
    command: 'true',
    cwd: ROOT,
    env: 'staging',
    databaseUrl: 'postgres://qa:s3cr3t-pw@127.0.0.1:5432/x',
    timeoutMs: 10_000,
    workDir: fs.mkdtempSync(path.join(process.env.TMPDIR ?? '/tmp', 'tributary-shard-')),
    retries: 0,
    ...over,
  });

  it('reports a command that does not exist as an errored shard, naming it', async () => {
    const o = await runShard(spec({ command: 'no-such-test-runner --junit {junit}' }));
    expect(o.status).toBe('errored');
    expect(o.error).toMatch(/not found/);
    expect(o.error).toMatch(/no-such-test-runner/);
  });

  it('reports malformed JUnit XML as errored, naming the file and the line', async () => {
    const o = await runShard(spec({ command: `printf '<testsuites>\\n<testcase name="x">\\n</testsuites>' > {junit}` }));
    expect(o.status).toBe('errored');
    expect(o.error).toMatch(/malformed JUnit XML: .*junit\.xml:\d+/);
  });

  it('kills a command that hangs at its timeout', async () => {
    const started = Date.now();
    const o = await runShard(spec({ command: 'sleep 30; echo never > {junit}', timeoutMs: 500 }));
    expect(o.status).toBe('errored');
    expect(o.error).toMatch(/timed out after/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('fills the placeholders shell-quoted and keeps the database password out of the captured output', async () => {
    const o = await runShard(spec({ command: `echo url={databaseUrl} shard={shard}/{shards}; printf '<testsuites><testcase name="a @FEAT-C" classname="test" time="0.1"/></testsuites>' > {junit}` }), { knownFeatures: new Set(['FEAT-C']) });
    expect(o.status).toBe('done');
    expect(o.outputTail).toContain('shard=1/1');
    expect(o.outputTail).not.toContain('s3cr3t-pw');
    expect(o.cases).toHaveLength(1);
    expect(o.cases[0]!).toMatchObject({ status: 'passed', features: ['FEAT-C'] });
  });

  it("withholds Tributary's own secrets (audit key, control database, Slack tokens) from the team's command", async () => {
    const saved = { slack: process.env.SLACK_BOT_TOKEN, key: process.env.TRIBUTARY_AUDIT_KEY };
    process.env.SLACK_BOT_TOKEN = 'xoxb-withheld';
    process.env.TRIBUTARY_AUDIT_KEY = 'audit-key-withheld-123';
    try {
      const o = await runShard(spec({ command: `env; printf '<testsuites><testcase name="a @FEAT-C" classname="test" time="0.1"/></testsuites>' > {junit}` }));
      expect(o.outputTail).toContain('TRIBUTARY_SHARD=1');
      expect(o.outputTail).not.toMatch(/SLACK_BOT_TOKEN|TRIBUTARY_AUDIT_KEY|withheld/);
    } finally {
      for (const [k, v] of [['SLACK_BOT_TOKEN', saved.slack], ['TRIBUTARY_AUDIT_KEY', saved.key]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it('counts a selected test the command did not report as errored, not passed', async () => {
    const o = await runShard(spec({ tests: [{ id: 'test::a', name: 'a' }, { id: 'test::b', name: 'b' }], command: `printf '<testsuites><testcase name="a" classname="test" time="0.1"/></testsuites>' > {junit}` }));
    expect(o.cases.find((c) => c.name === 'b')).toMatchObject({ status: 'errored' });
  });
});

describe('tiers', () => {
  it('learns the suite on the first run, then selects per tier: tier 1 = the release features + smoke, deprecated tests left out', async () => {
    const { e } = await setup();
    await loaded(e);
    const first = await runTests(e.ctx, 'R2', { tier: '1', ...by });
    expect(first.selection.discovery).toBe(true);
    expect(first.totals.total).toBe(4);
    expect(await e.db.control('test_catalog').count<{ count: number }[]>('* as count')).toEqual([{ count: 7 }]);
    const second = await runTests(e.ctx, 'R2', { tier: '1', ...by });
    expect(second.selection.discovery).toBe(false);
    const names = (await e.db.control('test_results').where({ run_id: second.runId }).pluck('name')).sort();
    expect(names).toEqual(['login works @FEAT-C', 'merchant onboarding [FEAT-H1]', 'profile edit @FEAT-M', 'service answers @smoke']);
    expect(second.totals.shards).toBe(2);
    expect(second.status).toBe('passed');
    expect((await releaseState(e.db.control, 'R2')).state).toBe('tier1-passed');
    const feature = await runTests(e.ctx, 'R2', { tier: 'feature', feature: 'FEAT-OLD', ...by });
    expect(feature.totals.total).toBe(2);
    const smoke = await runTests(e.ctx, 'R2', { tier: 'smoke', ...by });
    expect(smoke.totals.total).toBe(1);
    const nightly = await runTests(e.ctx, 'R2', { tier: 'nightly', ...by });
    expect(nightly.totals.total).toBe(6);
    expect(nightly.selection.deprecated).toBe(1);
    expect(fs.readFileSync(second.reports.markdown, 'utf8')).toContain('Gate: PASSED');
    expect(fs.readFileSync(second.reports.junit, 'utf8')).toContain('login works @FEAT-C');
  });

  it('a run that rediscovers the suite (empty catalog) still leaves out tests pruned on their owner’s confirmation', async () => {
    const { e } = await setup();
    await loaded(e);
    await e.db.control('pruned_tests').insert({ test_id: 'test::R1 export @FEAT-OLD', name: 'R1 export @FEAT-OLD', feature: 'FEAT-OLD', pruned_by: 'U0ZOE' });
    const r = await runTests(e.ctx, 'R2', { tier: 'nightly', ...by });
    expect(r.selection.discovery).toBe(true);
    expect(r.totals.total).toBe(5);
    expect(await e.db.control('test_results').where({ run_id: r.runId, name: 'R1 export @FEAT-OLD' })).toHaveLength(0);
    expect(await e.db.control('test_catalog').where({ name: 'R1 export @FEAT-OLD' })).toHaveLength(0);
  });

  it('shards by historical durations once known, and by count before, saying so', async () => {
    const { e } = await setup();
    await loaded(e);
    await runTests(e.ctx, 'R2', { tier: 'nightly', ...by });
    await e.db.control('test_catalog').update({ duration_ms: null });
    const noHistory = await runTests(e.ctx, 'R2', { tier: 'nightly', ...by });
    expect(noHistory.selection.note).toMatch(/no duration history/);
    await e.db.control('test_catalog').update({ duration_ms: 100 });
    await e.db.control('test_catalog').where({ name: 'R1 export @FEAT-OLD' }).update({ duration_ms: 500 });
    const withHistory = await runTests(e.ctx, 'R2', { tier: 'nightly', ...by });
    expect(withHistory.selection.note).not.toMatch(/no duration history/);
    const shards = await e.db.control('test_shards').where({ run_id: withHistory.runId }).orderBy('idx');
    // longest first: the 500 ms test gets a shard of its own (5 × 100 ms on the other)
    expect(shards.map((s) => (s.tests as unknown[]).length).sort()).toEqual([1, 5]);
  });

  it('tells new regressions, known failures, fixed and flaky apart against the baseline, and gates on them', async () => {
    const s = await setup({ retries: 1 });
    const { e } = s;
    await loaded(e);
    s.behave({ results: { 'R1 export @FEAT-OLD': 'fail' } });
    const base = await runTests(e.ctx, 'R2', { tier: 'nightly', ...by });
    expect(base.totals.classes['new-test']).toBe(1);
    s.behave({ results: { 'R1 statements @FEAT-OLD': 'fail', 'profile edit @FEAT-M': 'flaky' } });
    const now = await runTests(e.ctx, 'R2', { tier: 'nightly', ...by });
    expect(now.baselineRunId).toBe(base.runId);
    const cls = Object.fromEntries((await e.db.control('test_results').where({ run_id: now.runId }).select('name', 'class')).map((r) => [r.name, r.class]));
    expect(cls['R1 statements @FEAT-OLD']).toBe('new-regression');
    expect(cls['R1 export @FEAT-OLD']).toBe('fixed');
    expect(cls['profile edit @FEAT-M']).toBe('flaky');
    expect(now.gate.passed).toBe(false);
    expect(now.gate.reasons.join()).toMatch(/1 new regression/);
    expect(now.newRegressions.map((r) => r.name)).toEqual(['R1 statements @FEAT-OLD']);
    expect(now.totals.regression.failed).toBe(1);
    s.behave({ results: { 'R1 statements @FEAT-OLD': 'fail' } });
    const again = await runTests(e.ctx, 'R2', { tier: 'nightly', ...by });
    expect(Object.fromEntries((await e.db.control('test_results').where({ run_id: again.runId }).select('name', 'class')).map((r) => [r.name, r.class]))['R1 statements @FEAT-OLD']).toBe('known-failure');
  });

  it('an errored run in between never hides a regression; a test that keeps flipping between runs is flaky', async () => {
    const s = await setup();
    const { e } = s;
    await loaded(e);
    const classOf = async (runId: number, name: string) => (await e.db.control('test_results').where({ run_id: runId, name }).first()).class as string;
    await runTests(e.ctx, 'R2', { tier: 'nightly', ...by }); // everything passes
    s.behave({ malformed: true });
    const broken = await runTests(e.ctx, 'R2', { tier: 'nightly', ...by });
    expect(broken.totals.errored).toBe(6);
    s.behave({ results: { 'R1 statements @FEAT-OLD': 'fail' } });
    const now = await runTests(e.ctx, 'R2', { tier: 'nightly', ...by });
    expect(now.baselineRunId).toBe(broken.runId);
    expect(await classOf(now.runId, 'R1 statements @FEAT-OLD')).toBe('new-regression');
    expect(now.gate.passed).toBe(false);
    s.behave({});
    await runTests(e.ctx, 'R2', { tier: 'nightly', ...by }); // passes again
    s.behave({ results: { 'R1 statements @FEAT-OLD': 'fail' } });
    const flip = await runTests(e.ctx, 'R2', { tier: 'nightly', ...by }); // pass, fail, pass, fail
    expect(await classOf(flip.runId, 'R1 statements @FEAT-OLD')).toBe('flaky');
    expect(flip.flaky.map((f) => f.name)).toEqual(['R1 statements @FEAT-OLD']);
  });

  it('counts an errored shard (malformed JUnit XML) as errored, never passed, and fails the gate', async () => {
    const s = await setup();
    await loaded(s.e);
    await runTests(s.e.ctx, 'R2', { tier: 'nightly', ...by });
    s.behave({ malformed: true });
    const r = await runTests(s.e.ctx, 'R2', { tier: 'nightly', ...by });
    expect(r.totals.passed).toBe(0);
    expect(r.totals.errored).toBe(6);
    expect(r.erroredShards.length).toBe(2);
    expect(r.erroredShards[0]!.error).toMatch(/malformed JUnit XML: .*junit\.xml:\d+/);
    expect(r.gate.passed).toBe(false);
  });

  it('refuses tier 2 unless tier 1 passed on the data loaded now, saying what to do first', async () => {
    const s = await setup();
    const { e } = s;
    await loaded(e, 'v1');
    await expect(runTests(e.ctx, 'R2', { tier: '2', ...by })).rejects.toThrow(/tier 1 has not run for R2: run tributary test R2 --tier 1 first/);
    s.behave({ results: { 'login works @FEAT-C': 'fail' } });
    await runTests(e.ctx, 'R2', { tier: '1', ...by });
    await expect(runTests(e.ctx, 'R2', { tier: '2', ...by })).rejects.toThrow(/tier 1 run #\d+ failed/);
    s.behave({});
    await runTests(e.ctx, 'R2', { tier: '1', ...by });
    await loaded(e, 'v2');
    await expect(runTests(e.ctx, 'R2', { tier: '2', ...by })).rejects.toThrow(/tested other data than what is loaded now/);
    const refused = await e.db.control('audit_events').where({ action: 'gate.tier2.refused' }).count<{ count: number }[]>('* as count');
    expect(refused[0]!.count).toBe(3);
  });

  it('approval: refused before tier 2 and past a failed gate without an override; once per run; audited', async () => {
    const { e } = await setup();
    await loaded(e);
    await expect(approveRelease(e.ctx, 'R2', { ...by, rationale: 'ok' })).rejects.toThrow(/an approval needs a rationale of at least 3 characters/);
    await expect(approveRelease(e.ctx, 'R2', { ...by, rationale: 'looks good' })).rejects.toThrow(/no tier 2 run/);
    // a failed tier 2 run on master
    await transition(e.db.control, 'R2', 'tier1');
    await e.db.control('release_states').where({ release: 'R2' }).update({ state: 'promoted' });
    const [run] = await e.db.control('test_runs').insert({ release: 'R2', tier: '2', env: 'master', status: 'failed', started_by: 'cli:qa', gate: JSON.stringify({ passed: false, threshold: 99, reasons: ['1 new regression(s)'] }) }).returning('id');
    await expect(approveRelease(e.ctx, 'R2', { ...by, rationale: 'looks good' })).rejects.toThrow(/needs an explicit override/);
    const ok = await approveRelease(e.ctx, 'R2', { actor: 'cli:lead', rationale: 'known data change, test to be fixed', override: true });
    expect(ok).toMatchObject({ override: true, runId: run.id });
    expect((await releaseState(e.db.control, 'R2')).state).toBe('approved');
    await expect(approveRelease(e.ctx, 'R2', { actor: 'cli:other', rationale: 'me too', override: true })).rejects.toThrow(/already approved by cli:lead/);
    const ev = await e.db.control('audit_events').where({ action: 'release.approved.override' }).first();
    expect(ev.details.rationale).toBe('known data change, test to be fixed');
  });
});
