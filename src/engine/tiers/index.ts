

/**
 * Tiers: two-tier testing. Selects tests (catalog.ts), shards them over agents (agents.ts) or local processes
 * (runner.ts), reads JUnit XML (junit.ts), classifies results against the baseline and applies the gate
 * (results.ts); run.ts runs a tier and records the approval. Owns `test_runs`, `test_shards`, `test_results`,
 * `test_catalog`, `approvals`.
 */
export { runAgent } from './agents.js';
export { learnTests } from './catalog.js';
export type { Tier } from './catalog.js';
export { parseJUnit, writeJUnit } from './junit.js';
export { classifyRun } from './results.js';
export type { RunTotals, Totals } from './results.js';
export { approvalOfRun, approveRelease, closeAbandonedTestRuns, latestTier2Run, reportOfRun, runTests } from './run.js';
export type { FailureView, TestProgress, TestRunReport } from './run.js';
export type { TestCaseResult } from './types.js';
