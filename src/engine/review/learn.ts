import { addScopedRule } from '../../config/policyFile.js';
import type { KeepChoice, ScopedRule } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { must } from '../kernel/must.js';
import { recordAudit } from '../kernel/audit.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { attributesSql, envsSql, signatureText, type PatternChoice, type Signature } from './patterns.js';
import type { Decision, VersionView } from './types.js';

/**
 * Rules learnt from reviewers. Decisions are compared by signature (patterns.ts) and by what they chose,
 * told as a pattern would choose it (a kept version by its highest-precedence env, unless the pattern
 * decision it came from chose by feature or rule). When at least MIN_AGREEING decisions on one
 * signature agree and none disagrees, in one release or across releases (each release's current
 * consolidation), the scoped rule that would have decided them is proposed, named after what it does.
 * A qa_lead accepts it into the config file (config/policyFile.ts); the next consolidation applies it.
 */
export const MIN_AGREEING = 3;

/** Kinds a scoped rule may decide (the config's policy.scoped[].kind). */
const RULE_KINDS = new Set(['core-conflict', 'equal-priority', 'inconsistent-identity', 'unmatched']);

export interface Proposal extends ScopedRule {
  signature: string;
  decisions: { release: string; code: string; decision: string; by: string }[];
}

interface Row {
  release: string;
  code: string;
  entity: string;
  kind: string;
  attributes: string[];
  envs: string[];
  id: number;
  params: Decision;
  decided_by: string;
  versions: VersionView[] | null;
  choice: PatternChoice | null;
}

function choiceOf(r: Row): KeepChoice | { other: string } {
  if (r.choice && !('action' in r.choice)) return r.choice;
  if (r.params.action === 'keep') {
    const v = r.versions?.find((x) => x.no === (r.params as { version: number }).version);
    if (v?.envs[0]) return { keepEnv: v.envs[0] };
  }
  return { other: r.params.action };
}

const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');

function choiceSlug(c: KeepChoice): string {
  if ('keepEnv' in c) return `keep-${slug(c.keepEnv)}`;
  if ('keepFeature' in c) return `keep-${slug(c.keepFeature)}`;
  return `keep-${c.keepByRule.replace(/-wins$/, '')}`;
}

/** The proposals the decisions on record support, minus the signatures a scoped rule already decides. */
export async function listProposals(ctx: Ctx): Promise<Proposal[]> {
  const res = await ctx.db.control.raw<{ rows: Row[] }>(
    `select c.release, c.code, c.entity, c.kind, ${attributesSql('c')} as attributes, ${envsSql('c')} as envs,
            d.id, d.params, d.decided_by, c.detail->'versions' as versions, pd.choice
       from decisions d join conflicts c on c.id = d.conflict_id
       left join pattern_decisions pd on pd.id = d.pattern_decision_id
      where c.run_id in (select current_run_id from release_states where current_run_id is not null)
      order by c.release, c.code`,
  );
  const groups = new Map<string, { sig: Signature; rows: Row[]; choices: Set<string> }>();
  for (const r of res.rows) {
    const sig: Signature = { entity: r.entity, kind: r.kind, attributes: r.attributes, envs: r.envs };
    const key = signatureText(sig);
    const g = groups.get(key) ?? { sig, rows: [], choices: new Set<string>() };
    g.rows.push(r);
    g.choices.add(JSON.stringify(choiceOf(r)));
    groups.set(key, g);
  }
  const existing = ctx.config.policy.scoped;
  const taken = new Set(existing.map((r) => r.name));
  const out: Proposal[] = [];
  for (const [key, g] of [...groups.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const agreeing = g.rows.length >= MIN_AGREEING && g.choices.size === 1;
    if (!agreeing || !RULE_KINDS.has(g.sig.kind) || g.sig.attributes.length === 0 || g.sig.envs.length < 2) continue;
    const choice = choiceOf(must(g.rows[0], `a decision of group ${key}`));
    if ('other' in choice) continue;
    if (existing.some((r) => signatureText(r) === key)) continue;
    let name = `${choiceSlug(choice)}-${slug(g.sig.entity)}-${g.sig.attributes.map(slug).join('-')}`.slice(0, 70).replace(/-$/, '');
    if (taken.has(name)) name = `${name}-${g.sig.envs.map(slug).join('-')}`.slice(0, 80).replace(/-$/, '');
    for (let i = 2; taken.has(name); i += 1) name = `${name.replace(/-\d+$/, '')}-${i}`;
    taken.add(name);
    out.push({
      name,
      ...g.sig,
      choice,
      signature: key,
      decisions: g.rows.map((r) => ({ release: r.release, code: r.code, decision: `D-${r.id}`, by: r.decided_by })),
    });
  }
  return out;
}

/** Writes a proposal into the config file as a scoped rule (qa_lead), audited; the caller's config takes it too. */
export async function acceptProposal(
  ctx: Ctx,
  name: string,
  by: { actor: Actor },
): Promise<{ rule: ScopedRule; file: string; decisions: Proposal['decisions'] }> {
  const proposals = await listProposals(ctx);
  const p = proposals.find((x) => x.name === name);
  if (!p) {
    const known = proposals.length
      ? ` (proposals: ${proposals.map((x) => x.name).join(', ')})`
      : ' (there are none: tributary policy proposals lists them)';
    throw new TributaryError('unknown_conflict', `no proposal ${name}${known}`, { code: name });
  }
  const rule: ScopedRule = { name: p.name, entity: p.entity, kind: p.kind, attributes: p.attributes, envs: p.envs, choice: p.choice };
  const cites = p.decisions.map((d) => `${d.release} ${d.code} (${d.decision}, ${d.by})`).join(', ');
  const day = new Date().toISOString().slice(0, 10);
  addScopedRule(ctx.config.file, rule, `learnt from ${p.decisions.length} agreeing decisions: ${cites}; accepted by ${by.actor} on ${day}`);
  ctx.config.policy.scoped = [...ctx.config.policy.scoped, rule];
  await recordAudit(ctx.db.control, {
    actor: by.actor,
    action: 'policy.accept',
    subject: rule.name,
    details: { rule, signature: p.signature, decisions: p.decisions },
  });
  return { rule, file: ctx.config.file, decisions: p.decisions };
}
