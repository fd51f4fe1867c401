import type { ActionsBlock, Button, KnownBlock, ModalView } from '@slack/types';
import type { Pattern, PatternChoice, PatternOutcome, Proposal, UndoOutcome } from '../engine/review/index.js';
import { describeChoice } from '../engine/review/index.js';
import { RATIONALE_MIN } from '../engine/kernel/rationale.js';
import { BLOCKS, PATTERN_ACTIONS, VIEWS } from '../slack/ids.js';
import { who } from './blocks.js';
import { button, context, plain, section } from './kit.js';
import { checkMessage, checkView, clip, esc, LIMITS, type Message } from './limits.js';

/**
 * Review at scale, rendered: the patterns of a queue (text and Block Kit), a pattern card with the
 * choices that apply to every member, a pattern decision and its combined blast radius, an undo, and the
 * rules proposed from reviewers' decisions. Pure functions.
 */

const VERSION_KINDS = new Set(['core-conflict', 'equal-priority', 'inconsistent-identity', 'unmatched', 'cross-release']);

/** What a pattern button carries: the release, the pattern and the signature it was shown with. */
export interface PatternRef {
  release: string;
  pattern: string;
  signature: string;
  choice: PatternChoice;
}

/** What the pattern modal carries: the card's ref and where the card is (updated in place once decided). */
export interface PatternModalMeta extends PatternRef {
  channel?: string;
  ts?: string;
}

const attrs = (p: Pattern) => p.attributes.join(', ') || 'no attribute';

export function renderPatterns(release: string, patterns: Pattern[]): string {
  if (patterns.length === 0) return `No open conflicts in ${release}.`;
  const total = patterns.reduce((n, p) => n + p.count, 0);
  const lines = [`${release}: ${total} open conflict(s) in ${patterns.length} pattern(s) — one decision each (tributary decide --pattern P-<n> …)`];
  for (const p of patterns) {
    lines.push(`  ${p.id.padEnd(5)} ${String(p.count).padStart(5)} × ${p.priority} ${p.entity} ${p.kind}: attributes differ (${attrs(p)}) between ${p.envs.join(', ') || '—'}`);
    lines.push(`        e.g. ${p.sample.code} ${p.sample.key}: ${p.sample.reason}`);
  }
  return lines.join('\n');
}

export function renderPatternOutcome(o: PatternOutcome): string {
  const b = o.blast;
  const head = o.applied
    ? `${o.code} (${o.pattern.id}, ${o.pattern.signature}) decided by ${o.decidedBy}: ${describeChoice(o.choice)} for ${o.decisions.length} conflict(s) — ${o.rationale}`
    : `${o.pattern.id} (${o.pattern.signature}): plan for ${describeChoice(o.choice)} on ${o.decisions.length} conflict(s) (not applied)`;
  const lines = [head, `  combined blast radius: ${b.rewritten} child row(s) re-pointed, ${b.removed} row(s) removed, ${b.renamed.length} renamed, ${b.dependentCount} dependent row(s)`];
  for (const d of o.decisions.slice(0, 20)) lines.push(`  ${d.code} ${d.key}: ${d.decision.action}${d.decision.action === 'keep' ? ` version ${d.decision.version}` : ''}`);
  if (o.decisions.length > 20) lines.push(`  … ${o.decisions.length - 20} more`);
  return lines.join('\n');
}

export function renderUndo(o: UndoOutcome): string {
  const b = o.blast;
  return [
    o.applied ? `${o.target} undone (${o.release}): ${b.reopened.join(', ')} open again — ${o.rationale}` : `${o.target} (${o.release}): plan to undo (not applied)`,
    `  blast radius: ${b.restored} row(s) put back as they were, ${b.removed} row(s) the decision added removed, ${b.keyMap} key map entr${b.keyMap === 1 ? 'y' : 'ies'}; re-opens ${b.reopened.join(', ')}`,
    ...o.decisions.map((d) => `  ${d.id} on ${d.code} by ${d.decidedBy}${d.pattern ? ` (from ${d.pattern})` : ''}`),
  ].join('\n');
}

const keepText = (p: Proposal) => ('keepEnv' in p.choice ? `keep ${p.choice.keepEnv}'s version` : 'keepFeature' in p.choice ? `keep ${p.choice.keepFeature}'s version` : `keep the version ${p.choice.keepByRule} keeps`);

export function renderProposals(proposals: Proposal[]): string {
  if (proposals.length === 0) return 'No rule to propose: no signature has three agreeing decisions without a contradicting one.';
  const lines = ['Rules learnt from reviewers (tributary policy accept <name>, qa_lead):'];
  for (const p of proposals) {
    lines.push(`  ${p.name}: ${p.entity} ${p.kind} where attributes differ (${p.attributes.join(', ')}) between ${p.envs.join(', ')} → ${keepText(p)}`);
    lines.push(`    agrees with ${p.decisions.length} decision(s): ${p.decisions.map((d) => `${d.release} ${d.code}`).join(', ')}`);
  }
  return lines.join('\n');
}

/** The patterns of a review summary: largest first, the first few with their sample, the rest counted. */
export function patternListMessage(release: string, patterns: Pattern[]): Message {
  const total = patterns.reduce((n, p) => n + p.count, 0);
  const blocks: KnownBlock[] = [section(`*${esc(release)}: ${total} open conflict(s) in ${patterns.length} pattern(s)*: one decision each`)];
  const shown = patterns.slice(0, 20);
  for (const p of shown) {
    blocks.push(section(`*${p.id}* · ${p.count} × ${p.priority} \`${esc(p.entity)}\` ${esc(p.kind)}: attributes differ (${esc(attrs(p))}) between ${esc(p.envs.join(', '))}\n_e.g. ${p.sample.code} ${esc(clip(p.sample.key, 200))}_`));
  }
  if (patterns.length > shown.length) blocks.push(context(`… ${patterns.length - shown.length} more: tributary conflicts ${esc(release)} --patterns`));
  return checkMessage({ text: `${release}: ${total} open conflicts in ${patterns.length} patterns`, blocks });
}

/** The choices a pattern's card offers: the same as a conflict card's where they apply to every member. */
export function patternChoices(p: Pattern): { label: string; actionId: string; choice: PatternChoice }[] {
  const out: { label: string; actionId: string; choice: PatternChoice }[] = [];
  if (VERSION_KINDS.has(p.kind)) {
    for (const env of p.envs.slice(0, 10)) out.push({ label: `Keep ${env}'s`, actionId: `${PATTERN_ACTIONS.keepEnvPrefix}${env}`, choice: { keepEnv: env } });
    out.push({ label: 'Keep the newest', actionId: PATTERN_ACTIONS.keepByRule, choice: { keepByRule: 'newest-wins' } });
    out.push({ label: 'Keep both (rename)', actionId: PATTERN_ACTIONS.keepBoth, choice: { action: 'keep-both' } });
    out.push({ label: 'Delete both', actionId: PATTERN_ACTIONS.delete, choice: { action: 'delete-both' } });
  } else {
    out.push({ label: 'Delete', actionId: PATTERN_ACTIONS.delete, choice: { action: 'delete' } });
    out.push({ label: 'Waive', actionId: PATTERN_ACTIONS.waive, choice: { action: 'waive' } });
  }
  return out;
}

/** A pattern card: the signature, the count, a sample, and one button per choice (each opens the modal with the combined blast radius). */
export function patternCard(release: string, p: Pattern): Message {
  const blocks: KnownBlock[] = [
    section(`*${p.id}* · *${p.count}* open ${esc(p.kind)} conflict(s) of \`${esc(p.entity)}\` (${p.priority}): attributes differ (${esc(attrs(p))}) between ${esc(p.envs.join(', '))}`),
    section(`_Sample ${p.sample.code} ${esc(clip(p.sample.key, 200))}:_ ${esc(clip(p.sample.reason, 1500))}`),
  ];
  const buttons: Button[] = patternChoices(p).map((c) => {
    const value: PatternRef = { release, pattern: p.id, signature: p.signature, choice: c.choice };
    return button(c.label, c.actionId, JSON.stringify(value), 'action' in c.choice && c.choice.action.startsWith('delete') ? 'danger' : undefined);
  });
  for (let i = 0; i < buttons.length; i += LIMITS.actionsElements) {
    blocks.push({ type: 'actions', block_id: `pattern:${p.id}:${i}`, elements: buttons.slice(i, i + LIMITS.actionsElements) } as ActionsBlock);
  }
  blocks.push(context('Choices that name a version by number do not apply to a pattern; decide a single conflict from its own card.'));
  return checkMessage({ text: `${p.id}: ${p.count} ${p.kind} conflicts of ${p.entity}`, blocks });
}

/** A decided pattern card: who, what, how many, the combined blast radius; the buttons are gone. */
export function patternDecidedMessage(o: PatternOutcome): Message {
  const b = o.blast;
  return checkMessage({
    text: `${o.code}: ${o.pattern.id} decided by ${o.decidedBy}`,
    blocks: [
      section(`:white_check_mark: *${o.code}* · ${o.pattern.id} (${esc(o.pattern.signature)}) decided by ${who(o.decidedBy)}: ${esc(describeChoice(o.choice))} for ${o.decisions.length} conflict(s)\n>${esc(clip(o.rationale ?? '', 1500))}`),
      context(`${b.rewritten} re-pointed · ${b.removed} removed · ${b.renamed.length} renamed · undo with \`tributary undo ${o.code} --rationale …\``),
    ],
  });
}

/** A proposed rule, with the button that accepts it (qa_lead). */
export function proposalCard(p: Proposal): Message {
  return checkMessage({
    text: `Proposed rule ${p.name}`,
    blocks: [
      section(`:bulb: *Proposed rule \`${esc(p.name)}\`*: \`${esc(p.entity)}\` ${esc(p.kind)} where attributes differ (${esc(p.attributes.join(', '))}) between ${esc(p.envs.join(', '))} → ${esc(keepText(p))}`),
      context(`Agrees with ${p.decisions.length} decision(s): ${esc(clip(p.decisions.map((d) => `${d.release} ${d.code}`).join(', '), 1000))}`),
      { type: 'actions', block_id: `proposal:${p.name}`, elements: [button('Accept into the policy', PATTERN_ACTIONS.accept, JSON.stringify({ name: p.name }), 'primary')] } as ActionsBlock,
    ],
  });
}

/**
 * The pattern decision's modal: the choice, the combined blast radius of every member (the engine's dry
 * run), a cascade choice where rows depend on what a delete removes, and the rationale (required; audited).
 */
export function patternModal(meta: PatternModalMeta, plan: PatternOutcome): ModalView {
  const b = plan.blast;
  const blocks: KnownBlock[] = [
    section(`*${esc(plan.pattern.id)}* · ${plan.decisions.length} open ${esc(plan.pattern.kind)} conflict(s) of \`${esc(plan.pattern.entity)}\`: *${esc(describeChoice(meta.choice))}* for each`),
    section(`*Combined blast radius:* ${b.rewritten} child row(s) re-pointed · ${b.removed} row(s) removed · ${b.renamed.length} renamed · ${b.dependentCount} dependent row(s)`),
    context(clip(plan.decisions.slice(0, 10).map((d) => `${d.code} ${d.key}: ${d.decision.action}${d.decision.action === 'keep' ? ` v${d.decision.version}` : ''}`).join(' · ') + (plan.decisions.length > 10 ? ` · … ${plan.decisions.length - 10} more` : ''), 2000)),
  ];
  if ('action' in meta.choice && meta.choice.action.startsWith('delete') && b.dependentCount > 0) {
    blocks.push({
      type: 'input',
      block_id: BLOCKS.cascade,
      optional: true,
      label: plain('Dependents'),
      element: { type: 'checkboxes', action_id: 'value', options: [{ text: plain(`Also delete the ${b.dependentCount} dependent row(s)`), value: 'cascade' }] },
    });
  }
  blocks.push({
    type: 'input',
    block_id: BLOCKS.patternRationale,
    label: plain('Rationale'),
    element: { type: 'plain_text_input', action_id: 'value', multiline: true, min_length: RATIONALE_MIN, max_length: 1000, placeholder: plain(`Why is this right for all ${plan.decisions.length}?`) },
  });
  return checkView({
    type: 'modal',
    callback_id: VIEWS.decidePattern,
    title: plain(clip(`Decide ${plan.pattern.id}`, LIMITS.modalTitle)),
    submit: plain(`Decide ${plan.decisions.length}`),
    close: plain('Cancel'),
    private_metadata: JSON.stringify(meta),
    blocks,
  });
}

/** An accepted proposal's card: the rule is in the policy file; the button is gone. */
export function proposalAcceptedMessage(r: { rule: { name: string }; decisions: Proposal['decisions'] }, by: string): Message {
  return checkMessage({
    text: `Rule ${r.rule.name} accepted`,
    blocks: [
      section(`:white_check_mark: *Rule \`${esc(r.rule.name)}\` accepted* by ${who(by)} into the policy (policy.scoped): the next consolidation applies it`),
      context(`Learnt from ${r.decisions.length} decision(s): ${esc(clip(r.decisions.map((d) => `${d.release} ${d.code}`).join(', '), 1000))}`),
    ],
  });
}
