

/**
 * Review: the queue of conflicts people decide (queue.ts), their decisions with blast radius, applied once
 * (decide.ts), patterns of alike conflicts decided at once (patterns.ts), undo (undo.ts), rules learnt
 * from decisions (learn.ts), and cross-release conflicts found by promotion (crossRelease.ts). Owns `conflicts`, `decisions`
 * and `pattern_decisions`.
 */
export { CROSS_RELEASE, PROMOTE_CODE_PREFIX, openPromoteRunId, renameValues } from './crossRelease.js';
export { applyDecision, decisionOf, planDecision, planRecordDecision } from './decide.js';
export { describeDecision } from './describe.js';
export type { DecidedBy, RecordedDecision } from './decide.js';
export {
  autoResolutionCounts,
  autoResolutionDigest,
  isAutoCode,
  listAutoResolutions,
  reopenAutoResolution,
  showAutoResolution,
} from './autoResolved.js';
export type { AutoCounts, AutoDigest, AutoFilter, AutoResolution, AutoResolutionDetail, Overrule } from './autoResolved.js';
export { decidePattern, describeChoice, latestPatternDecision, listPatterns, signatureText } from './patterns.js';
export type { Pattern, PatternChoice, PatternOutcome, Signature } from './patterns.js';
export { keyDistance, parentContradictions, rankTargets, repointTargets, TARGET_LIMIT } from './targets.js';
export type { RepointTarget } from './targets.js';
export { undoDecision } from './undo.js';
export type { UndoBlast, UndoOutcome } from './undo.js';
export { acceptProposal, listProposals, MIN_AGREEING } from './learn.js';
export type { Proposal } from './learn.js';
export {
  assignedConflicts,
  getConflict,
  listConflicts,
  nextConflict,
  onlyReleaseWithOpenConflicts,
  queueSummary,
  releaseOfCode,
  showConflict,
} from './queue.js';
export type { QueueSummary } from './queue.js';
export type {
  BlastRadius,
  ConflictDetail,
  ConflictRow,
  CrossReleaseInfo,
  Decision,
  DecisionOutcome,
  ReferenceForms,
  VersionView,
} from './types.js';
