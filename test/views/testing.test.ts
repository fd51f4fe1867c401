import { describe, expect, it } from 'vitest';
import type { TestRunReport, Totals } from '../../src/engine/tiers/index.js';
import { testRunCard } from '../../src/views/testing.js';

/** The test run card's counts: a group with no tests in the run is not shown as "0 tests · pass rate 0%". */
const totals = (passed: number, failed = 0): Totals => ({ total: passed + failed, passed, failed, errored: 0, skipped: 0, passRate: passed + failed ? Math.floor((passed / (passed + failed)) * 100) : 0 });

function report(tier: TestRunReport['tier'], newFeatures: Totals, regression: Totals): TestRunReport {
  const all = totals(newFeatures.passed + regression.passed, newFeatures.failed + regression.failed);
  return {
    runId: 1, release: 'R2', tier, env: 'staging', status: 'passed',
    totals: { ...all, newFeatures, regression, perFeature: {}, classes: { 'new-regression': 0, 'known-failure': 0, fixed: 0, flaky: 0, 'new-test': 0, passing: 0, skipped: 0 }, erroredShards: 0, shards: 2 },
    gate: { passed: true, reasons: [], threshold: 95 }, selection: { description: 'd', tests: all.total, deprecated: 0, note: 'n', discovery: false }, baselineRunId: null,
    failures: [], newRegressions: [], flaky: [], erroredShards: [], reports: { junit: 'j.xml', markdown: 'r.md' }, ms: 1000,
  };
}
const fields = (r: TestRunReport) => ((testRunCard(r).blocks[1] as { fields: { text: string }[] }).fields.map((f) => f.text));

describe('testRunCard counts', () => {
  it('a first tier 1 run (no earlier release) shows its ten tests, and no "0 tests" group', () => {
    const f = fields(report('1', totals(10), totals(0)));
    expect(f[0]).toContain('*All*\n10 tests');
    expect(f.some((t) => t.startsWith('*New features*\n10 tests'))).toBe(true);
    expect(f.join('\n')).not.toMatch(/\b0 tests/);
  });

  it('a smoke run shows no "New features 0 tests · pass rate 0%"', () => {
    const f = fields(report('smoke', totals(0), totals(4, 1)));
    expect(f.join('\n')).not.toContain('New features');
    expect(f.join('\n')).not.toMatch(/\b0 tests/);
    expect(f[0]).toContain('*All*\n5 tests');
  });
});

describe('the selection line of a first run', () => {
  it("counts the tests that ran when the catalog was empty (the whole suite), not the catalog's 0", async () => {
    const { selectionText } = await import('../../src/views/testing.js');
    const r = report('1', totals(8), totals(2));
    const first = { ...r, selection: { description: "R2's 8 features + smoke: 0 tests", tests: 10, deprecated: 0, note: 'the test catalog is empty', discovery: true } };
    expect(selectionText(first)).toBe("R2's 8 features + smoke: 10 tests (the whole suite)");
    expect(JSON.stringify(testRunCard(first).blocks)).toContain('smoke: 10 tests (the whole suite)');
    expect(selectionText({ ...first, selection: { ...first.selection, description: 'smoke: 3 tests', tests: 3, discovery: false } })).toBe('smoke: 3 tests');
  });

  it('says "1 test", not "1 tests"', () => {
    expect(JSON.stringify(testRunCard(report('smoke', totals(0), totals(1))).blocks)).toContain('*All*\\n1 test · ');
  });
});
