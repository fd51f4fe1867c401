

/**
 * Review: the queue of conflicts people decide (queue.ts), their decisions with blast radius, applied once
 * (decide.ts), and cross-release conflicts found by promotion (crossRelease.ts). Owns `conflicts` and
 * `decisions`.
 */
export { CROSS_RELEASE, PROMOTE_CODE_PREFIX, openPromoteRunId, renameValues } from './crossRelease.js';
export { applyDecision, decisionOf, planDecision, planRecordDecision } from './decide.js';
export { describeDecision } from './describe.js';
export type { RecordedDecision } from './decide.js';
export { autoResolutionCounts, autoResolutionDigest, isAutoCode, listAutoResolutions, reopenAutoResolution, showAutoResolution } from './autoResolved.js';
export type { AutoCounts, AutoDigest, AutoFilter, AutoResolution, AutoResolutionDetail, Overrule } from './autoResolved.js';
export { getConflict, listConflicts, nextConflict, queueSummary, releaseOfCode, showConflict } from './queue.js';
export type { QueueSummary } from './queue.js';
export type { BlastRadius, ConflictDetail, ConflictRow, CrossReleaseInfo, Decision, DecisionOutcome, VersionView } from './types.js';
