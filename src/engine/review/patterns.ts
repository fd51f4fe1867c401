import type { Knex } from 'knex';
import { releaseOrThrow, type KeepChoice } from '../../config/load.js';
import { KEEP_BY_RULES, PRIORITIES } from '../../config/schema.js';
import { TributaryError } from '../../errors.js';
import { recordAudit } from '../kernel/audit.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { applyDecisionIn } from './decide.js';
import { queueRunIds } from './queue.js';
import type { BlastRadius, ConflictRow, Decision, VersionView } from './types.js';
import { must } from '../kernel/must.js';
import type { PatternDecisionsRow } from '../../db/rows.js';

/**
 * Review at scale. An open conflict's signature is (entity, kind, the sorted attributes that differ, the
 * sorted envs involved); the open conflicts of one signature form a pattern, P-1… largest first (then by
 * the signature's text), so a queue always numbers its patterns alike. One decision for a pattern takes
 * one decision per member, through the same path as a single decision (applyDecisionIn), all in one
 * transaction, each naming the pattern decision (PD-…) it came from. A choice that names a version by
 * number means nothing across conflicts: a pattern keeps by env, by feature or by a policy rule's order,
 * or keeps both, deletes or waives.
 */

export interface Signature {
  entity: string;
  kind: string;
  attributes: string[];
  envs: string[];
}

export interface Pattern extends Signature {
  id: string;
  count: number;
  priority: string;
  /** The signature as text: entity/kind/attributes/envs. */
  signature: string;
  sample: { code: string; key: string; reason: string };
}

/** A pattern decision's choice: a kept version by env, feature or rule, or one that needs no version. */
export type PatternChoice =
  | KeepChoice
  | { action: 'keep-both' }
  | { action: 'delete-both' | 'delete'; cascade?: boolean }
  | { action: 'waive' };

export function signatureText(s: Signature): string {
  return `${s.entity}/${s.kind}/${s.attributes.join('+') || '-'}/${s.envs.join('+') || '-'}`;
}

/** SQL over a conflicts row `c`: the sorted attributes that differ (or the reference's column). */
export function attributesSql(c: string): string {
  return `coalesce((select array_agg(x collate "C" order by x collate "C") from jsonb_array_elements_text(${c}.detail->'differing') x),
                   case when jsonb_exists(${c}.detail, 'column') then array[${c}.detail->>'column'] else '{}'::text[] end)`;
}

/** SQL over a conflicts row `c`: the sorted envs its versions (or its record) come from. */
export function envsSql(c: string): string {
  return `case when jsonb_exists(${c}.detail, 'versions')
               then array(select distinct e collate "C"
                            from jsonb_array_elements(${c}.detail->'versions') v, jsonb_array_elements_text(v->'envs') e order by 1)
               else array_remove(array[${c}.detail->>'env'], null) end`;
}

interface PatternRow {
  entity: string;
  kind: string;
  attributes: string[];
  envs: string[];
  n: number;
  priority: string;
  sample: string;
}

async function patternRows(k: Knex | Knex.Transaction, runIds: number[]): Promise<PatternRow[]> {
  const res = await k.raw<{ rows: PatternRow[] }>(
    `with sig as (select c.code, c.entity, c.kind, c.priority, ${attributesSql('c')} as attributes, ${envsSql('c')} as envs
                    from conflicts c where c.run_id = any(?::int[]) and c.status = 'open')
     select entity, kind, attributes, envs, count(*)::int as n, min(priority) as priority, min(code collate "C") as sample
       from sig group by entity, kind, attributes, envs`,
    [runIds],
  );
  const rows = res.rows;
  const text = new Map(rows.map((r) => [r, signatureText({ entity: r.entity, kind: r.kind, attributes: r.attributes, envs: r.envs })]));
  const textOf = (r: (typeof rows)[number]) => must(text.get(r), 'the signature of a pattern');
  return rows.sort((a, b) => b.n - a.n || (textOf(a) < textOf(b) ? -1 : textOf(a) > textOf(b) ? 1 : 0));
}

/** The open conflicts of a release's review queue, grouped into patterns: largest first. */
export async function listPatterns(ctx: Ctx, release: string, db: Knex | Knex.Transaction = ctx.db.control): Promise<Pattern[]> {
  releaseOrThrow(ctx.config, release);
  const runIds = await queueRunIds(db, release);
  const rows = await patternRows(db, runIds);
  const samples =
    rows.length === 0
      ? []
      : ((await db('conflicts')
          .whereIn('run_id', runIds)
          .whereIn('code', rows.map((r) => r.sample))
          .select('code', 'key_label', 'detail')) as ConflictRow[]);
  return rows.map((r, i) => {
    const s = must(samples.find((x) => x.code === r.sample), `the sample conflict ${r.sample}`);
    const sig: Signature = { entity: r.entity, kind: r.kind, attributes: r.attributes, envs: r.envs };
    const sample = { code: r.sample, key: s.key_label, reason: s.detail.reason };
    return { id: `P-${i + 1}`, ...sig, count: r.n, priority: r.priority, signature: signatureText(sig), sample };
  });
}

/** The open conflicts of one pattern (P-3), in code order. */
async function patternMembers(
  ctx: Ctx,
  k: Knex.Transaction,
  release: string,
  id: string,
): Promise<{ pattern: Pattern; members: ConflictRow[] }> {
  const m = /^P-(\d+)$/i.exec(id);
  if (!m) throw new TributaryError('usage', `a pattern is named P-<n> (got "${id}"; tributary conflicts ${release} --patterns lists them)`);
  const patterns = await listPatterns(ctx, release, k);
  const pattern = patterns[Number(m[1]) - 1];
  if (!pattern) {
    const message =
      `no pattern ${id.toUpperCase()} in ${release}'s open conflicts ` +
      `(there are ${patterns.length}; tributary conflicts ${release} --patterns lists them)`;
    throw new TributaryError('unknown_conflict', message, { code: id });
  }
  const runIds = await queueRunIds(k, release);
  const res = await k.raw<{ rows: ConflictRow[] }>(
    `select c.* from conflicts c
      where c.run_id = any(?::int[]) and c.status = 'open' and c.entity = ? and c.kind = ?
        and ${attributesSql('c')} = ?::text[] and ${envsSql('c')} = ?::text[]
      order by c.code collate "C"`,
    [runIds, pattern.entity, pattern.kind, pattern.attributes, pattern.envs],
  );
  return { pattern, members: res.rows };
}

const featureRank = (ctx: Ctx, release: string, v: VersionView): number => {
  const plan = ctx.config.releases.get(release)?.features;
  const ranks = (v.features ?? (v.feature ? [v.feature] : [])).map((f) => {
    const p = plan?.get(f)?.priority;
    return p ? PRIORITIES.indexOf(p) + 1 : 9;
  });
  return ranks.length ? Math.min(...ranks) : 9;
};

/** The version a keep choice keeps in one conflict: the first (by number) that holds the env or feature, or the rule's survivor. */
export function keptVersion(ctx: Ctx, release: string, c: ConflictRow, choice: KeepChoice): number {
  const versions = c.detail.versions;
  if (!versions || versions.length === 0) {
    const message = `${c.code} is a ${c.kind} conflict of one record: there is no version to keep (waive or delete it)`;
    throw new TributaryError('decision_invalid', message, { code: c.code });
  }
  if ('keepEnv' in choice) {
    const v = versions.find((x) => x.envs.includes(choice.keepEnv));
    if (!v) {
      const envs = [...new Set(versions.flatMap((x) => x.envs))].join(', ');
      throw new TributaryError('decision_invalid', `${c.code} has no version from ${choice.keepEnv} (its envs: ${envs})`, { code: c.code });
    }
    return v.no;
  }
  if ('keepFeature' in choice) {
    const v = versions.find((x) => (x.features ?? [x.feature]).includes(choice.keepFeature));
    if (!v) throw new TributaryError('decision_invalid', `${c.code} has no version of feature ${choice.keepFeature}`, { code: c.code });
    return v.no;
  }
  const byNo = [...versions].sort((a, b) => a.no - b.no);
  switch (choice.keepByRule) {
    case 'env-precedence':
      return must(byNo[0], `a version of ${c.code}`).no;
    case 'newest-wins': {
      const ts = (v: VersionView) => (v.ts ? Date.parse(v.ts) : Number.NEGATIVE_INFINITY);
      return byNo.reduce((best, v) => (ts(v) > ts(best) ? v : best)).no;
    }
    case 'feature-priority':
      return byNo.reduce((best, v) => (featureRank(ctx, release, v) < featureRank(ctx, release, best) ? v : best)).no;
  }
}

/** The decision a pattern choice makes on one of its conflicts. */
export function memberDecision(ctx: Ctx, release: string, c: ConflictRow, choice: PatternChoice): Decision {
  if ('action' in choice) {
    if (choice.action === 'delete-both' || choice.action === 'delete') {
      return { action: c.detail.versions ? 'delete-both' : 'delete', ...(choice.cascade ? { cascade: true } : {}) };
    }
    return choice.action === 'keep-both' ? { action: 'keep-both' } : { action: 'waive' };
  }
  return { action: 'keep', version: keptVersion(ctx, release, c, choice) };
}

export function describeChoice(choice: PatternChoice): string {
  if ('keepEnv' in choice) return `keep ${choice.keepEnv}'s version`;
  if ('keepFeature' in choice) return `keep ${choice.keepFeature}'s version`;
  if ('keepByRule' in choice) return `keep the version ${choice.keepByRule} keeps`;
  if (choice.action === 'keep-both') return 'keep both, renamed';
  if (choice.action === 'waive') return 'waive';
  return choice.cascade ? 'delete, with dependents' : 'delete';
}

export function validChoice(choice: PatternChoice): void {
  if ('keepByRule' in choice && !(KEEP_BY_RULES as readonly string[]).includes(choice.keepByRule)) {
    throw new TributaryError('usage', `a pattern keeps by rule ${KEEP_BY_RULES.join(', ')} (not ${choice.keepByRule})`);
  }
}

export interface PatternOutcome {
  pattern: Pattern;
  choice: PatternChoice;
  /** PD-<id> once applied. */
  code?: string;
  applied: boolean;
  decisions: { code: string; key: string; decision: Decision; blast: BlastRadius }[];
  /** The members' blast radius, added up. */
  blast: BlastRadius;
  rationale?: string;
  decidedBy?: string;
}

function addBlast(sum: BlastRadius, b: BlastRadius): void {
  sum.rewritten += b.rewritten;
  sum.removed += b.removed;
  sum.renamed.push(...b.renamed.slice(0, Math.max(0, 50 - sum.renamed.length)));
  sum.dependents.push(...b.dependents.slice(0, Math.max(0, 50 - sum.dependents.length)));
  sum.dependentCount += b.dependentCount;
}

class DryRun {
  constructor(readonly outcome: PatternOutcome) {}
}

/**
 * Decides every open conflict of a pattern with one choice. With dryRun the decisions are taken and
 * rolled back: the combined blast radius is exactly what applying them would do, one after the other.
 */
export async function decidePattern(
  ctx: Ctx,
  release: string,
  id: string,
  choice: PatternChoice,
  by: { actor: Actor; rationale: string; dryRun?: boolean; signature?: string },
): Promise<PatternOutcome> {
  validChoice(choice);
  const rationale = by.rationale?.trim() || (by.dryRun ? '(dry run)' : '');
  if (!rationale) {
    const message = `a pattern decision needs a rationale (why ${describeChoice(choice)} for all of ${id}?)`;
    throw new TributaryError('decision_invalid', message, { field: 'rationale' });
  }
  try {
    return await ctx.db.control.transaction(async (trx) => {
      const { pattern, members } = await patternMembers(ctx, trx, release, id);
      // a card's pattern: refused when the id now names other conflicts (the queue changed since it was shown)
      if (by.signature && pattern.signature !== by.signature) {
        const message =
          `${pattern.id} of ${release} now is ${pattern.signature}, not ${by.signature}: ` + 'the queue changed since it was shown';
        throw new TributaryError('gate_state', message, { code: id });
      }
      const decisions = members.map((c) => ({ c, d: memberDecision(ctx, release, c, choice) }));
      const [row] = await trx('pattern_decisions')
        .insert({
          release,
          run_id: must(members[0], `a member of ${pattern.id}`).run_id,
          signature: JSON.stringify({ entity: pattern.entity, kind: pattern.kind, attributes: pattern.attributes, envs: pattern.envs }),
          choice: JSON.stringify(choice),
          conflicts: members.length,
          rationale,
          decided_by: by.actor,
        })
        .returning('id');
      const pd = { id: (row as { id: number }).id, code: `PD-${(row as { id: number }).id}` };
      const blast: BlastRadius = { rewritten: 0, removed: 0, renamed: [], dependents: [], dependentCount: 0 };
      const out: PatternOutcome['decisions'] = [];
      for (const { c, d } of decisions) {
        const res = await applyDecisionIn(ctx, trx, release, c.code, d, { actor: by.actor, rationale, pattern: pd });
        addBlast(blast, res.blast);
        out.push({ code: c.code, key: c.key_label, decision: d, blast: res.blast });
      }
      await trx('pattern_decisions').where({ id: pd.id }).update({ blast: JSON.stringify(blast) });
      await recordAudit(trx, {
        actor: by.actor,
        action: 'pattern.decision',
        release,
        subject: pd.code,
        details: { pattern: pattern.id, signature: pattern.signature, choice, rationale, conflicts: out.map((x) => x.code), blast },
      });
      if (by.dryRun) throw new DryRun({ pattern, choice, applied: false, decisions: out, blast });
      return { pattern, choice, code: pd.code, applied: true, decisions: out, blast, rationale, decidedBy: by.actor };
    });
  } catch (err) {
    if (err instanceof DryRun) return err.outcome;
    throw err;
  }
}

/** The latest pattern decision on a signature (its text) in a release: who took it, for a card shown before it. */
export async function latestPatternDecision(
  ctx: Ctx,
  release: string,
  signature: string,
): Promise<{ code: string; decidedBy: string } | undefined> {
  const rows = await ctx.db.control<PatternDecisionsRow>('pattern_decisions')
    .where({ release })
    .orderBy('id', 'desc')
    .select('id', 'signature', 'decided_by');
  // signature is jsonb: written by decidePattern from a Signature (older rows hold it as a JSON string)
  const sigOf = (v: unknown) => (typeof v === 'string' ? (JSON.parse(v) as Signature) : (v as Signature));
  const hit = rows.find((r) => signatureText(sigOf(r.signature)) === signature);
  return hit ? { code: `PD-${hit.id}`, decidedBy: hit.decided_by } : undefined;
}
