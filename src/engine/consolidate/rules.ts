import type { ScopedRule } from '../../config/load.js';
import type { VersionRuleName } from '../../config/schema.js';
import { literal } from '../kernel/sql.js';
import { must } from '../kernel/must.js';

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

export const SIMPLE_RULES = new Set<string>([
  'exact-duplicate',
  'newest-wins',
  'complementary-merge',
  'feature-priority',
  'env-precedence',
]);

/**
 * Scoped rules (policy.scoped): each decides the conflicts of one signature (entity, kind, the attributes
 * that differ, the envs involved) by keeping one version. They run after the policy's rules, on the
 * identities those left for review; the first scoped rule that matches decides, and its name is the
 * result's rule and starts its reason.
 */
export function scopedSurvivorOrder(r: ScopedRule): string {
  const c = r.choice;
  // the first version that holds the env (or feature), as a pattern decision picks it (review/patterns.ts)
  if ('keepEnv' in c) return `(${literal(c.keepEnv)} = any(v.envs)) desc, v.version_no`;
  if ('keepFeature' in c) return `(${literal(c.keepFeature)} = any(v.features)) desc, v.version_no`;
  return `${must(SURVIVOR_ORDER[c.keepByRule], `the survivor order of rule ${c.keepByRule}`)}, v.version_no`;
}

/** What a scoped rule kept, in words, as SQL (w.rep_env: the kept version's env). */
function scopedKeptSql(r: ScopedRule): string {
  const c = r.choice;
  if ('keepEnv' in c) return `format('kept %s''s version', w.rep_env)`;
  if ('keepFeature' in c) return `format('kept %s''s version (%s''s)', ${literal(c.keepFeature)}, w.rep_env)`;
  return `format('kept the version %s keeps (%s''s)', ${literal(c.keepByRule)}, w.rep_env)`;
}

/** Re-labels the entity's identities that a scoped rule matches (in idsum `s`): the statement classify() runs per rule. */
export function scopedMatchSql(r: ScopedRule, idsum: string, versions: string): string {
  const featureOk =
    'keepFeature' in r.choice
      ? `and exists (select 1 from ${versions} v where v.entity = s.entity and v.identity = s.identity` +
        ` and ${literal(r.choice.keepFeature)} = any(v.features))`
      : '';
  const envs = `array(select distinct env from ${versions} v, unnest(v.envs) env where v.entity = s.entity and v.identity = s.identity)`;
  const attrs = `${literal(`{${r.attributes.join(',')}}`)}::text[]`;
  const envList = `${literal(`{${r.envs.map((e) => `"${e}"`).join(',')}}`)}::text[]`;
  return `update ${idsum} s set rule = ${literal(r.name)}, priority = null
     where s.entity = ${literal(r.entity)} and s.rule = ${literal(r.kind)}
       and s.differing @> ${attrs} and s.differing <@ ${attrs}
       and ${envs} @> ${envList} and ${envs} <@ ${envList} ${featureOk}`;
}

/** The reason a scoped rule gives, as SQL over classify()'s reason query (s: idsum, w: the survivor version). */
export function scopedReasonSql(r: ScopedRule): string {
  return `format('%s (scoped rule): attributes differ (%s) between %s — %s', ${literal(r.name)}, array_to_string(s.differing, ', '),
    ${literal(r.envs.join(', '))}, ${scopedKeptSql(r)})`;
}
