

/**
 * Promote: merges a release's staging rows into master, one partition per release, after detecting conflicts
 * with earlier releases (they join the review queue); one transaction, verified by counts and checksums.
 * Owns `promotions` and master's partitions.
 */
export { promoteRelease, promotedFingerprint } from './promote.js';
export type { PromoteResult } from './promote.js';
