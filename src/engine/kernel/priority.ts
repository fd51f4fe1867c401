import type { Config } from '../../config/load.js';
import type { FeaturePriority } from '../../config/schema.js';

/**
 * Feature priority → conflict priority, one rule for consolidation and promotion (DESIGN.md's policy): a
 * conflict between versions that a reviewer must settle is P1 only when a critical feature is involved,
 * else P2. (Kinds with a priority of their own, such as references or equal-priority, say so where they
 * are detected.)
 */

export type ConflictPriority = 'P1' | 'P2' | 'P3';

/** Feature priorities, most important first (1 = critical). */
export const PRIORITY_RANK: Record<FeaturePriority, number> = { critical: 1, high: 2, medium: 3, low: 4 };

/** The conflict's priority, from the priorities of the features involved (unknown features count as not critical). */
export function conflictPriority(features: (FeaturePriority | undefined)[]): 'P1' | 'P2' {
  return features.includes('critical') ? 'P1' : 'P2';
}

/** conflictPriority() in SQL: `critical` says whether a critical feature is involved (see isCriticalSql). */
export function conflictPrioritySql(critical: string): string {
  return `case when ${critical} then 'P1' else 'P2' end`;
}

/** SQL: whether a feature of rank `rank` (PRIORITY_RANK) is critical. */
export function isCriticalSql(rank: string): string {
  return `${rank} = ${PRIORITY_RANK.critical}`;
}

/** A feature's priority in its release's plan (the release a row was tagged with); undefined when either is unknown. */
export function featurePriority(config: Config, release: string, feature: unknown): FeaturePriority | undefined {
  return typeof feature === 'string' ? config.releases.get(release)?.features.get(feature)?.priority : undefined;
}
