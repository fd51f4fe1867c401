

/**
 * Nightly: the cumulative regression on master on a schedule (run.ts, scheduler.ts), its summary and coverage
 * growth (summary.ts, coverage.ts), test pruning proposals (prune.ts), and master's cold storage: archive and
 * restore of old release partitions (archive.ts). Owns `nightly_runs`, `prune_proposals`, `pruned_tests`,
 * `archives`.
 */
export { archivedReleases, archiveReleases, restoreRelease } from './archive.js';
export type { ArchiveReport } from './archive.js';
export { coverageGrowth } from './coverage.js';
export type { Coverage } from './coverage.js';
export { decideProposal } from './prune.js';
export type { PruneProposal } from './prune.js';
export { recentNights, runNightlyNow, setChartPath } from './run.js';
export type { SlotRow } from './run.js';
export { NightlyScheduler } from './scheduler.js';
export type { SchedulerHooks } from './scheduler.js';
export { nightlySummary } from './summary.js';
export type { NightlySummary, TestRef } from './summary.js';
