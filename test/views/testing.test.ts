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
