import type { VersionRuleName } from '../../config/schema.js';

/**
 * The conflict policy's rules as data: each rule's situation as a predicate over an identity's summary, and
 * how its survivor is chosen. The SQL that applies them is in detect.ts (classify).
 */

/** A rule's situation, as a predicate over the identity summary `s` (see classify()). */
export const RULE_PREDICATES: Record<VersionRuleName, string> = {
  'exact-duplicate': 's.nv = 1',
  'newest-wins': 's.nv > 1 and s.npayload = 1',
  'complementary-merge': 's.npayload > 1 and s.complementary',
  'core-conflict': 's.core_differs',
  'feature-priority': 's.npayload > 1 and not s.core_differs and s.npri > 1 and s.ntop = 1',
  'env-precedence': 's.npayload > 1 and not s.core_differs and s.nfeat = 1',
  'equal-priority': 's.npayload > 1 and not s.core_differs and s.nfeat > 1 and not (s.npri > 1 and s.ntop = 1)',
};

/** How the survivor version is chosen, per rule (the first version in this order wins). */
export const SURVIVOR_ORDER: Record<string, string> = {
  'exact-duplicate': 'v.best_rank',
  'newest-wins': 'v.ts desc nulls last, v.best_rank',
  'complementary-merge': 'v.best_rank',
  'feature-priority': 'v.fpri, v.best_rank',
  'env-precedence': 'v.best_rank',
  // complex: the suggested version
  'core-conflict': 'v.fpri, v.best_rank',
  'equal-priority': 'v.best_rank',
  'inconsistent-identity': 'v.best_rank',
  unmatched: 'v.best_rank',
};

export const SIMPLE_RULES = new Set<string>(['exact-duplicate', 'newest-wins', 'complementary-merge', 'feature-priority', 'env-precedence']);
