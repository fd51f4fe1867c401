import type { ActionsBlock, Button, HomeView, KnownBlock, ModalView, SectionBlock } from '@slack/types';
import { describeDecision, type Pattern, type QueueSummary, type ConflictRow, type VersionView, type BlastRadius, type Decision, type RepointTarget } from '../engine/review/index.js';
import type { ReleaseStatus } from '../engine/report/index.js';
import type { LoadResult } from '../engine/load/index.js';
import type { FindingDecisionOutcome, ValidationReport } from '../engine/validate/index.js';
import { ACTIONS, BLOCKS, COMMANDS, OPTIONS, VIEWS } from '../slack/ids.js';
import { checkMessage, checkView, clip, esc, hidePaths, LIMITS, type Message } from './limits.js';
import { button, chainHeadContext, context, header, ENDING_ICON, type Ending, plain, section } from './kit.js';
import { RATIONALE_MIN } from '../engine/kernel/rationale.js';
import { renderFindingDecision } from './validation.js';
import { referenceText } from './text.js';

/**
 * Block Kit views: pure functions from domain objects to messages, modals and the App Home tab.
 * User text is escaped, every message carries a `text` fallback, and every payload is checked
 * against Slack's limits (views/limits.ts) before it leaves.
 */
/** What a button carries: enough to find the conflict, and to tell a stale card from a current one. */
export interface CardRef {
  release: string;
  code: string;
  runId: number;
  version?: number;
}

export function cardValue(ref: CardRef): string {
  return JSON.stringify(ref);
}

export function who(actor: string | null | undefined): string {
  if (!actor) return 'someone';
  return /^[UW][A-Z0-9]+$/.test(actor) ? `<@${actor}>` : esc(actor);
}

export function when(d: Date | string | null | undefined): string {
  if (!d) return '';
  const date = new Date(d);
  return `<!date^${Math.floor(date.getTime() / 1000)}^{date_short_pretty} {time}|${date.toISOString()}>`;
}

const PRIORITY_EMOJI: Record<string, string> = { P1: ':red_circle:', P2: ':large_orange_circle:', P3: ':large_yellow_circle:' };


/** `/release help`: the usage lines (from the command table) and, when a request was refused, why. */
export function helpMessage(lines: string[], problem?: string): Message {
  const blocks: KnownBlock[] = [];
  if (problem) blocks.push(section(`:warning: ${esc(problem)}`));
  // a section holds 3,000 characters: the lines go in as many as they need
  let chunk = '*Tributary* consolidates, tests and deploys release test data from the ST databases.';
  for (const l of lines) {
    const next = `${chunk}\n• ${l}`;
    if (next.length > 2900) {
      blocks.push(section(chunk));
      chunk = `• ${l}`;
    } else chunk = next;
  }
  blocks.push(section(chunk));
  blocks.push(context(`\`${COMMANDS.release} help <command>\`: one command. Every command has a CLI twin: \`tributary status R2\`, \`tributary decide C-015 …\``));
  return checkMessage({ text: `${problem ? `${problem}\n` : ''}Usage: ${COMMANDS.release} help [command]`, blocks });
}

/** A command's text result as the CLI prints it, in a code block (a path on the bot's machine by its file name). */
export function preMessage(raw: string): Message {
  const text = hidePaths(raw);
  const body = clip(esc(text), 2900).replace(/```/g, "'''");
  return checkMessage({ text: clip(text, 3000), blocks: [section(`\`\`\`${body}\`\`\``)] });
}

export function textMessage(text: string): Message {
  return checkMessage({ text: clip(text, 3000), blocks: [section(esc(text))] });
}

/** A mention or channel link the bot composes: Slack renders it, so it is not escaped. */
export interface Ref {
  readonly ref: string;
}
/** A person by their Slack id (`<@U…>`); anyone else (cli:alice, a group) by name, escaped. */
export const mention = (id: string | null | undefined): Ref | string => (id && /^[UW][A-Z0-9]+$/.test(id) ? { ref: `<@${id}>` } : (id ?? 'someone'));
/** A channel by its Slack id (`<#C…>`); a name is shown as typed, escaped. */
export const channelLink = (id: string): Ref | string => (/^[CG][A-Z0-9_]+$/.test(id) ? { ref: `<#${id}>` } : id);

/**
 * A reply the bot composes, as a tagged template: what is interpolated is escaped (users typed it: names,
 * rationales, release names), except the mentions and channel links made by `mention` and `channelLink`,
 * which render as people and channels instead of literal `<@U…>`.
 */
export function composed(parts: TemplateStringsArray, ...values: (string | number | Ref | (string | Ref)[])[]): Message {
  const one = (v: string | number | Ref) => (typeof v === 'object' ? v.ref : esc(v));
  let out = esc(parts[0]);
  values.forEach((v, i) => {
    out += (Array.isArray(v) ? v.map(one).join(', ') : one(v)) + esc(parts[i + 1]);
  });
  return checkMessage({ text: clip(out, 3000), blocks: [section(out)] });
}

/**
 * An engine's words made Slack's: a Slack user named as the author of something ("decided by U0REV",
 * "held by U0RM2") becomes a mention, and a timestamp a Slack date, shown in the reader's time zone.
 * Applied to the escaped text, so nothing a user typed can become markup.
 */
export function slackWords(escaped: string): string {
  return escaped
    .replace(/\bby ([UW][A-Z0-9]{4,})\b/g, 'by <@$1>')
    .replace(/\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?Z\b/g, (iso) => (Number.isNaN(Date.parse(iso)) ? iso : when(iso)));
}

/**
 * A modal's error (plain text: Slack renders neither mentions nor dates there): a timestamp as a person
 * reads it, `2026-12-06 02:16 UTC`, not ISO's `2026-12-06T02:16:46.051Z`.
 */
export function plainTimes(text: string): string {
  return text.replace(/\b(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(?::\d{2}(?:\.\d+)?)?Z\b/g, '$1 $2 UTC');
}

export function errorMessage(raw: string): Message {
  const text = hidePaths(raw);
  return checkMessage({ text: clip(`Sorry: ${text}`, 3000), blocks: [section(`:x: ${slackWords(esc(text))}`)] });
}

export function statusMessage(statuses: ReleaseStatus[]): Message {
  const blocks: KnownBlock[] = [];
  for (const s of statuses.slice(0, 12)) {
    const lines = [`*${esc(s.release)}*: ${esc(s.state)}`];
    if (s.locks.length > 0) lines.push(`locked: ${[...new Set(s.locks.map((l) => l.env))].join(', ')}`);
    if (s.counts) {
      const c = s.counts;
      lines.push(`collected ${c.collected} · conflicts ${c.conflicts} · auto-resolved ${c.autoResolved} · manual ${c.manual} · final ${c.final}${c.pending ? ` (+${c.pending} awaiting review)` : ''}`);
    }
    if (s.queue) lines.push(`queue: open P1 ${s.queue.open.P1} · P2 ${s.queue.open.P2} · P3 ${s.queue.open.P3} · decided ${s.queue.decided}/${s.queue.total}`);
    if (s.lastFailure) lines.push(`:warning: last run failed: ${esc(s.lastFailure.error)}`);
    blocks.push(section(lines.join('\n')));
  }
  if (statuses.length > 12) blocks.push(context(`… ${statuses.length - 12} more releases: /release status <release>`));
  return checkMessage({ text: statuses.map((s) => `${s.release}: ${s.state}`).join('; ') || 'No releases', blocks });
}

export interface Progress {
  /** mrkdwn, escaped by the caller (it may carry a user mention). */
  title: string;
  step: string;
  detail?: string;
  elapsedMs: number;
  /** How the step ended (or that it still runs): its icon says it. */
  state: Ending;
  summary?: string;
  /** On the final message of a step: the newest audit event, a witness kept outside the database. */
  chainHead?: { seq: number; hash: string } | null;
}

export function progressMessage(p: Progress): Message {
  const icon = ENDING_ICON[p.state];
  const secs = `${(p.elapsedMs / 1000).toFixed(1)}s`;
  const line = `${icon} *${p.title}*: ${esc(p.step)}${p.detail ? ` (${esc(p.detail)})` : ''} · ${secs}`;
  const blocks: KnownBlock[] = [section(line)];
  if (p.summary) blocks.push(section(`\`\`\`${esc(clip(p.summary, 2900))}\`\`\``));
  if (p.chainHead) blocks.push(chainHeadContext(p.chainHead));
  return checkMessage({ text: `${p.title}: ${p.step} (${secs})`, blocks });
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '∅';
  return clip(typeof v === 'string' ? v : JSON.stringify(v), 200);
}

function versionLabel(v: VersionView): string {
  return v.envs.join(', ');
}

/**
 * The version to mark and highlight: only when the suggestion is to keep one version. A suggestion to keep
 * both, delete or waive highlights that choice instead, so the mark, the primary button and the
 * suggestion text always agree.
 */
function suggestedVersion(c: ConflictRow): number | undefined {
  return c.detail.suggestion === 'keep' ? (c.detail.suggested ?? undefined) : undefined;
}

function versionSection(c: ConflictRow, v: VersionView): SectionBlock {
  const differing = new Set(c.detail.differing ?? []);
  const attrs = Object.entries(v.data).filter(([k]) => differing.has(k));
  const same = Object.entries(v.data).filter(([k]) => !differing.has(k) && !['release', 'feature', 'created_by', 'created_at'].includes(k));
  const suggested = suggestedVersion(c) === v.no ? ' · _suggested_' : '';
  const lines = [
    `*Version ${v.no} · ${esc(versionLabel(v))}*${suggested}`,
    `${esc(v.feature ?? 'no feature')} · by ${esc(v.created_by ?? '?')} · ${esc(v.created_at ? new Date(v.created_at).toISOString().slice(0, 16).replace('T', ' ') : '?')} · key ${esc(v.pks.join(', '))}${v.children !== undefined ? ` · ${v.children} child row(s)` : ''}`,
    ...attrs.map(([k, val]) => `:small_orange_diamond: *${esc(k)}*: \`${esc(cell(val))}\``),
  ];
  if (same.length > 0) lines.push(`_${esc(clip(same.map(([k, val]) => `${k}: ${cell(val)}`).join(' · '), 600))}_`);
  return section(lines.join('\n'));
}

function cardHead(c: ConflictRow): KnownBlock[] {
  return [
    header(`${c.code} · ${c.priority} · ${c.kind}`),
    section(`${PRIORITY_EMOJI[c.priority] ?? ''} *${esc(c.entity)}* \`${esc(c.key_label)}\` · release ${esc(c.release)}`),
  ];
}

function cardBody(c: ConflictRow): KnownBlock[] {
  const blocks: KnownBlock[] = [];
  if (c.detail.versions) {
    for (const v of c.detail.versions.slice(0, 10)) blocks.push(versionSection(c, v));
    if (c.detail.versions.length > 10) blocks.push(context(`… ${c.detail.versions.length - 10} more versions: tributary conflicts show ${esc(c.release)} ${c.code}`));
  } else if (c.detail.record) {
    const r = c.detail.record;
    blocks.push(
      section(
        `*Record ${esc(r.pk)}* from ${esc(r.env)}: \`${esc(c.detail.column ?? '')} = ${esc(c.detail.value ?? '')}\`\n_${esc(clip(Object.entries(r.data).map(([k, v]) => `${k}: ${cell(v)}`).join(' · '), 1500))}_`,
      ),
    );
    if (c.detail.reference) blocks.push(context(`:link: ${esc(referenceText(c.detail.reference, c.detail.parent ?? 'parent'))}`));
  }
  return blocks;
}

/** An open conflict card: records side by side, suggestion with rationale, and the decision buttons. */
export function conflictCard(c: ConflictRow): Message {
  const blocks = [...cardHead(c), ...cardBody(c)];
  blocks.push(section(`:bulb: *Suggested:* ${esc(c.detail.reason)}`));
  const ref = { release: c.release, code: c.code, runId: c.run_id };
  const buttons: Button[] = [];
  const suggestion = c.detail.suggestion;
  const primary = (choice: boolean): 'primary' | undefined => (choice ? 'primary' : undefined);
  if (c.detail.versions) {
    for (const v of c.detail.versions.slice(0, 20)) {
      buttons.push(button(`Keep ${clip(versionLabel(v), 60)}`, `${ACTIONS.keepPrefix}${v.no}`, cardValue({ ...ref, version: v.no }), primary(v.no === suggestedVersion(c))));
    }
    buttons.push(button('Keep both (rename)', ACTIONS.keepBoth, cardValue(ref), primary(suggestion === 'keep-both')));
    // a cross-release conflict (promotion into master) is kept, kept both or deleted, never merged
    if (c.kind !== 'cross-release') buttons.push(button('Merge', ACTIONS.merge, cardValue(ref)));
    buttons.push(button('Delete both', ACTIONS.delete, cardValue(ref), suggestion === 'delete' ? 'primary' : 'danger'));
  } else {
    // the primary button is the suggestion's; with none, re-pointing is what most reference conflicts need
    const none = suggestion !== 'delete' && suggestion !== 'waive';
    buttons.push(button('Re-point', ACTIONS.repoint, cardValue(ref), primary(none)));
    buttons.push(button('Delete', ACTIONS.delete, cardValue(ref), suggestion === 'delete' ? 'primary' : 'danger'));
    buttons.push(button('Waive', ACTIONS.waive, cardValue(ref), primary(suggestion === 'waive')));
  }
  blocks.push({ type: 'actions', block_id: `card:${c.code}`, elements: buttons } as ActionsBlock);
  return checkMessage({ text: `${c.code} ${c.priority} ${c.kind}: ${c.entity} ${c.key_label}`, blocks });
}

/** A decided card: who, what, when, rationale; the buttons are gone. */
export function decidedCard(c: ConflictRow, d: { decision: Decision; by: string; at: Date | string; rationale: string; blast?: BlastRadius }): Message {
  const blocks = [...cardHead(c), ...cardBody(c)];
  const blast = d.blast ? ` · ${d.blast.rewritten} re-pointed, ${d.blast.removed} removed, ${d.blast.renamed.length} renamed` : '';
  blocks.push(section(`:white_check_mark: *Decided* by ${who(d.by)} ${when(d.at)}: ${esc(describeDecision(c, d.decision, 'done'))}${blast}\n>${esc(clip(d.rationale, 1500))}`));
  return checkMessage({ text: `${c.code} decided by ${d.by}: ${describeDecision(c, d.decision, 'done')}`, blocks });
}

/** The review queue's summary: counts by priority and, where conflicts are alike, the largest patterns. */
export function queueSummaryMessage(q: QueueSummary, patterns: readonly Pattern[] = []): Message {
  const open = (q.open.P1 ?? 0) + (q.open.P2 ?? 0) + (q.open.P3 ?? 0);
  const blocks: KnownBlock[] = [
    section(`*Review queue of ${esc(q.release)}*: ${open} open (${PRIORITY_EMOJI.P1} P1 ${q.open.P1} · ${PRIORITY_EMOJI.P2} P2 ${q.open.P2} · ${PRIORITY_EMOJI.P3} P3 ${q.open.P3}) · decided ${q.decided} of ${q.total}`),
  ];
  // alike conflicts are decided at once: the largest patterns, and where their cards are
  const alike = patterns.filter((p) => p.count > 1);
  if (open > 0 && alike.length > 0) {
    const top = alike.slice(0, 5).map((p) => `*${p.id}* ${p.count} × \`${esc(p.entity)}\` ${esc(p.kind)} (${esc(p.attributes.join(', ') || '-')}) between ${esc(p.envs.join(', '))}`);
    blocks.push(section(`*${patterns.length} pattern(s)*: one decision decides each whole pattern\n${top.join('\n')}${alike.length > top.length ? `\n… ${alike.length - top.length} more` : ''}`));
    blocks.push(context(`Their cards: \`/release conflicts ${esc(q.release)} --patterns\``));
  }
  if (open > 0) blocks.push({ type: 'actions', block_id: `queue:${q.release}`, elements: [button('Review next', ACTIONS.next, JSON.stringify({ release: q.release }), 'primary')] });
  else blocks.push(context(':tada: every conflict is decided'));
  return checkMessage({ text: `Review queue of ${q.release}: ${open} open, ${q.decided} decided`, blocks });
}

const LIST_TITLE = { open: 'Open conflicts', decided: 'Decided conflicts', all: 'Conflicts' } as const;

/**
 * `/release conflicts R2 [--status open|decided|all] [--priority P1]`: the list, titled by the status asked
 * for; each conflict's status is shown when not only open ones are listed; Review next only while one of
 * those listed is open.
 */
export function conflictListMessage(release: string, rows: ConflictRow[], filter?: string, status: 'open' | 'decided' | 'all' = 'open'): Message {
  const shown = rows.slice(0, 40);
  const title = `${LIST_TITLE[status]} of ${release}${status === 'all' ? ' (open and decided)' : ''}`;
  const blocks: KnownBlock[] = [section(`*${esc(title)}*${filter ? ` (${esc(filter)})` : ''}: ${rows.length}`)];
  for (let i = 0; i < shown.length; i += 10) {
    blocks.push(section(shown.slice(i, i + 10).map((c) => `${PRIORITY_EMOJI[c.priority] ?? ''} *${c.code}* ${c.kind} · ${esc(c.entity)} \`${esc(clip(c.key_label, 80))}\`${status !== 'open' ? ` · ${c.status === 'decided' ? ':white_check_mark: decided' : '*open*'}` : ''}${c.assigned_to ? ` · ${who(c.assigned_to)}` : ''}`).join('\n')));
  }
  if (rows.length > shown.length) blocks.push(context(`… ${rows.length - shown.length} more: filter with --priority P1, or \`tributary conflicts ${esc(release)}\``));
  if (rows.some((c) => c.status === 'open')) blocks.push({ type: 'actions', elements: [button('Review next', ACTIONS.next, JSON.stringify({ release }), 'primary')] });
  return checkMessage({ text: `${rows.length} ${LIST_TITLE[status].toLowerCase()} in ${release}`, blocks });
}

/** What a decision modal carries between opening and submission. */
export interface ModalMeta extends CardRef {
  action: Decision['action'];
  channel?: string;
  ts?: string;
}

export interface ModalArgs {
  conflict: ConflictRow;
  meta: ModalMeta;
  blast: BlastRadius;
  /** Re-point: the columns the child relies on its parent for (a parent that differs there is confirmed). */
  reliesOn?: readonly string[];
}

/** The options of the re-point select (at most 100, as ranked by the engine): key, env and the relied-on columns. */
export function targetOptions(targets: readonly RepointTarget[]): { options: { text: { type: 'plain_text'; text: string }; value: string }[] } {
  return {
    options: targets.slice(0, 100).map((t) => {
      const cols = Object.entries(t.columns).map(([k, v]) => `${k} ${cell(v)}`).join(', ');
      return { text: plain(clip(`${t.key} · ${t.env}${cols ? ` · ${cols}` : ''}`, LIMITS.optionText)), value: clip(t.key, 150) };
    }),
  };
}

function blastText(b: BlastRadius): string {
  const parts = [`${b.rewritten} child row(s) re-pointed`, `${b.removed} row(s) removed`, `${b.renamed.length} record(s) renamed`];
  if (b.dependentCount) parts.push(`${b.dependentCount} dependent row(s)`);
  return `:dart: *Blast radius:* ${parts.join(' · ')}`;
}

const TITLES: Record<Decision['action'], string> = {
  keep: 'Keep one version',
  'keep-both': 'Keep both, renamed',
  merge: 'Merge versions',
  'delete-both': 'Delete both',
  repoint: 'Re-point reference',
  delete: 'Delete record',
  waive: 'Waive',
};

/** The re-point modal's inputs: the reference in both forms, the parent (options answered by the bot), the confirmation. */
function repointInputs(c: ConflictRow, reliesOn: readonly string[]): KnownBlock[] {
  const parent = c.detail.parent ?? 'parent';
  const blocks: KnownBlock[] = [];
  if (c.detail.reference) blocks.push(context(`:link: ${esc(referenceText(c.detail.reference, parent))}`));
  blocks.push({
    type: 'input',
    block_id: BLOCKS.repointTo,
    label: plain(clip(`New ${parent} for ${c.detail.column ?? 'the reference'}`, 2000)),
    hint: plain(`Type to search; ${parent} from ${c.detail.env ?? 'the same env'} first, then the nearest keys`),
    element: { type: 'external_select', action_id: OPTIONS.repointTargets, min_query_length: 0, placeholder: plain(`a ${parent} key`) },
  });
  if (reliesOn.length > 0) {
    blocks.push({
      type: 'input',
      block_id: BLOCKS.repointConfirm,
      optional: true,
      label: plain('Relied-on columns'),
      element: {
        type: 'checkboxes',
        action_id: 'value',
        options: [{ text: plain(clip(`Re-point even if the ${parent}'s ${reliesOn.join(', ')} differ from the record's`, 75)), value: 'confirm' }],
      },
    });
  }
  return blocks;
}

export function decisionModal({ conflict: c, meta, blast, reliesOn = [] }: ModalArgs): ModalView {
  const blocks: KnownBlock[] = [section(`*${c.code}* · ${c.priority} · ${esc(c.kind)} · ${esc(c.entity)} \`${esc(c.key_label)}\``)];
  const versions = c.detail.versions ?? [];
  switch (meta.action) {
    case 'keep': {
      const v = versions.find((x) => x.no === meta.version);
      if (v) blocks.push(versionSection(c, v));
      break;
    }
    case 'keep-both':
      for (const r of blast.renamed) {
        const v = versions.find((x) => x.no === r.version);
        blocks.push(section(`*Version ${r.version}* (${esc(v ? versionLabel(v) : '')}) is kept as key ${esc(r.pk)}`));
        for (const [col, value] of Object.entries(r.values)) {
          blocks.push({
            type: 'input',
            block_id: `${BLOCKS.renamePrefix}${r.version}:${col}`,
            label: plain(clip(`New ${col} for version ${r.version}`, 2000)),
            element: { type: 'plain_text_input', action_id: 'value', initial_value: clip(value, 150) },
          });
        }
      }
      break;
    case 'merge':
      for (const attr of (c.detail.differing ?? []).slice(0, 40)) {
        const options = versions.slice(0, 100).map((v) => ({ text: plain(clip(`v${v.no} ${versionLabel(v)}: ${cell(v.data[attr])}`, LIMITS.optionText)), value: String(v.no) }));
        const initial = options.find((o) => o.value === String(c.detail.suggested ?? 1)) ?? options[0]!;
        blocks.push({
          type: 'input',
          block_id: `${BLOCKS.mergePrefix}${attr}`,
          label: plain(clip(attr, 2000)),
          element: { type: 'static_select', action_id: 'value', options, initial_option: initial },
        });
      }
      break;
    case 'delete-both':
    case 'delete':
      if (blast.dependentCount > 0) {
        blocks.push(section(`:warning: *${blast.dependentCount} row(s) depend on it:* ${blast.dependents.slice(0, 15).map((d) => `${esc(d.entity)} ${esc(d.pk)}`).join(', ')}${blast.dependentCount > 15 ? ', …' : ''}`));
        blocks.push({
          type: 'input',
          block_id: BLOCKS.cascade,
          optional: true,
          label: plain('Dependents'),
          element: { type: 'checkboxes', action_id: 'value', options: [{ text: plain(`Also delete the ${blast.dependentCount} dependent row(s)`), value: 'cascade' }] },
        });
      }
      break;
    case 'repoint':
      blocks.push(...repointInputs(c, reliesOn));
      break;
    case 'waive':
      blocks.push(section(esc(c.detail.reason)));
      break;
  }
  blocks.push(section(blastText(blast)));
  blocks.push({
    type: 'input',
    block_id: BLOCKS.rationale,
    label: plain('Rationale'),
    element: { type: 'plain_text_input', action_id: 'value', multiline: true, min_length: RATIONALE_MIN, max_length: 1000, placeholder: plain('Why is this the right resolution?') },
  });
  return checkView({
    type: 'modal',
    callback_id: VIEWS.decide,
    title: plain(clip(TITLES[meta.action], LIMITS.modalTitle)),
    submit: plain(meta.action === 'delete' || meta.action === 'delete-both' ? 'Delete' : 'Decide'),
    close: plain('Cancel'),
    private_metadata: JSON.stringify(meta),
    blocks,
  });
}

/** One night of the nightly regression, for the App Home. */
export interface HomeNight {
  at: string;
  /** running: a live process runs it; interrupted: its process died (the next tick or start runs it again). */
  status: 'done' | 'failed' | 'running' | 'interrupted';
  passRate: number | null;
  newRegressions: number;
  fixed: number;
  error?: string;
}

export interface HomeArgs {
  statuses: ReleaseStatus[];
  assigned: ConflictRow[];
  /** The last nights, newest first. */
  nights?: HomeNight[];
  /** Releases whose master partitions are in cold storage. */
  archived?: string[];
}

export function homeView({ statuses, assigned, nights, archived }: HomeArgs): HomeView {
  const blocks: KnownBlock[] = [header('Tributary')];
  if (nights && nights.length > 0) {
    const line = (n: HomeNight) =>
      n.status === 'running'
        ? `:hourglass_flowing_sand: ${esc(n.at)} · running`
        : n.status === 'interrupted'
        ? `:warning: ${esc(n.at)} · interrupted (the process running it stopped): it runs again at the next scheduler tick or bot start`
        : n.status === 'failed'
        ? `:warning: ${esc(n.at)} · did not finish: ${esc(clip(n.error ?? '', 120))}`
        : `${n.newRegressions > 0 ? ':rotating_light:' : ':white_check_mark:'} ${esc(n.at)} · pass rate *${n.passRate ?? '–'}%* · ${n.newRegressions} new regression(s) · ${n.fixed} fixed`;
    blocks.push(section(`*Last nights* (nightly regression on master)\n${nights.slice(0, 10).map(line).join('\n')}`));
    blocks.push({ type: 'divider' });
  }
  for (const s of statuses.slice(0, 20)) {
    const q = s.queue;
    blocks.push(section(`*${esc(s.release)}* · ${esc(s.state)}${archived?.includes(s.release) ? ' · archived (cold storage)' : ''}${q ? ` · open P1 ${q.open.P1} · P2 ${q.open.P2} · P3 ${q.open.P3} · decided ${q.decided}/${q.total}` : ''}`));
    if (q && (q.open.P1 ?? 0) + (q.open.P2 ?? 0) + (q.open.P3 ?? 0) > 0) {
      blocks.push({ type: 'actions', block_id: `home:${s.release}`, elements: [button(`Review next in ${s.release}`, ACTIONS.next, JSON.stringify({ release: s.release }), 'primary')] });
    }
  }
  blocks.push({ type: 'divider' });
  blocks.push(section(`*Assigned to you* (${assigned.length})`));
  for (const c of assigned.slice(0, 30)) blocks.push(section(`${PRIORITY_EMOJI[c.priority] ?? ''} *${c.code}* (${esc(c.release)}) ${esc(c.kind)} · ${esc(c.entity)} \`${esc(clip(c.key_label, 80))}\``));
  if (assigned.length === 0) blocks.push(context('Nothing assigned: press *Review next* to take the next conflict.'));
  return checkView({ type: 'home', blocks });
}

/** Validation result card: findings by rule with what to do, or a clean bill. */
export function validationCard(r: ValidationReport): Message {
  const blocks: KnownBlock[] = [];
  if (r.counts.open === 0) {
    blocks.push(section(`:white_check_mark: *${esc(r.release)} is valid*: ${Object.entries(r.rows).map(([e, n]) => `${esc(e)} ${n}`).join(' · ')} rows checked${r.counts.waived ? ` · ${r.counts.waived} waived` : ''}`));
    blocks.push(context(`Next: \`/release load ${esc(r.release)}\` (qa_lead)`));
  } else {
    blocks.push(section(`:warning: *${esc(r.release)}: ${r.counts.open} open finding(s)*; loading is refused until they are closed`));
    blocks.push(section(Object.entries(r.byRule).map(([rule, n]) => `• *${esc(rule)}*: ${n}`).join('\n') || ' '));
    const open = r.findings.filter((f) => f.status === 'open').slice(0, 15);
    blocks.push(section(open.map((f) => `\`${esc(f.code)}\` ${esc(f.entity)} ${esc(f.key ?? '')} · ${esc(f.rule)}: ${esc(clip(f.message, 200))}`).join('\n') || ' '));
    if (r.counts.open > open.length) blocks.push(context(`… ${r.counts.open - open.length} more: \`tributary validate ${esc(r.release)}\``));
    // a qa_lead may waive a finding from here (a modal asks for the rationale)
    const waivable = open.slice(0, 5);
    if (waivable.length > 0) {
      blocks.push({
        type: 'actions',
        block_id: `findings:${r.runId}`,
        elements: waivable.map((f) => button(`Waive ${f.code}…`, `${ACTIONS.waiveFinding}:${f.code}`, JSON.stringify({ release: r.release, code: f.code, runId: r.runId }))),
      } as ActionsBlock);
    }
    blocks.push(context('Close a finding by a decision (`tributary decide <code> --delete | --repoint <key>`), by fixing the source and re-running tag and consolidate, or by a qa_lead waiver (`tributary waive <code> --rationale "…"`); then validate again.'));
  }
  return checkMessage({ text: `${r.release}: ${r.counts.open} open finding(s)`, blocks });
}

/**
 * The decision modal of a finding (`/release decide F-003 --release R2 --delete` without --rationale):
 * the planned decision and its blast radius (the engine's dry run), and the rationale (required; audited).
 */
export function findingDecisionModal(meta: { release: string; code: string; decision: Decision; channel?: string }, plan: FindingDecisionOutcome): ModalView {
  return checkView({
    type: 'modal',
    callback_id: VIEWS.decideFinding,
    title: plain(clip(`Decide ${meta.code}`, LIMITS.modalTitle)),
    submit: plain(meta.decision.action === 'delete' ? 'Delete' : 'Decide'),
    close: plain('Cancel'),
    private_metadata: JSON.stringify(meta),
    blocks: [
      section(`*${esc(meta.code)}* · ${esc(plan.finding.entity)} ${esc(plan.finding.key ?? '')} · ${esc(plan.finding.rule)}\n${esc(clip(plan.finding.message, 1500))}`),
      section(`\`\`\`${esc(clip(renderFindingDecision(plan), 2500))}\`\`\``),
      {
        type: 'input',
        block_id: BLOCKS.findingRationale,
        label: plain('Rationale'),
        element: { type: 'plain_text_input', action_id: 'value', multiline: true, min_length: RATIONALE_MIN, max_length: 1000, placeholder: plain('Why is this the right fix?') },
      },
    ],
  });
}

/** The waiver modal of a finding: what it is, and the rationale (required; audited). */
export function waiveModal(ref: { release: string; code: string; runId: number; channel?: string }, f: { entity: string; key: string | null; rule: string; message: string }): ModalView {
  return checkView({
    type: 'modal',
    callback_id: VIEWS.waiveFinding,
    title: plain(clip(`Waive ${ref.code}`, LIMITS.modalTitle)),
    submit: plain('Waive'),
    close: plain('Cancel'),
    private_metadata: JSON.stringify(ref),
    blocks: [
      section(`*${esc(ref.code)}* · ${esc(f.entity)} ${esc(f.key ?? '')} · ${esc(f.rule)}\n${esc(clip(f.message, 1500))}\nA waiver accepts it as it is (while the offending value stays the same); it is audited.`),
      {
        type: 'input',
        block_id: BLOCKS.waiveRationale,
        label: plain('Rationale'),
        element: { type: 'plain_text_input', action_id: 'value', multiline: true, min_length: RATIONALE_MIN, max_length: 1000, placeholder: plain('Why may this stay as it is?') },
      },
    ],
  });
}

export function loadCard(r: LoadResult): Message {
  const rows = r.tables.map((t) => `\`${esc(t.table)}\` ${t.rows} rows · checksum \`${esc(t.checksum)}\``).join('\n');
  return checkMessage({
    text: `${r.release} loaded into ${r.env}`,
    blocks: [section(`:white_check_mark: *${esc(r.release)} loaded into ${esc(r.env)}* (run #${r.runId}, ${(r.ms / 1000).toFixed(1)}s), counts and checksums verified on both sides:\n${rows}`)],
  });
}

export function auditCard(summary: string, head: string | null): Message {
  return checkMessage({
    text: `Audit summary${head ? ` (chain head ${head})` : ''}`,
    blocks: [section(`\`\`\`${esc(clip(summary, 2900))}\`\`\``), context(`Chain head (keep it as a witness): \`${esc(head ?? 'empty')}\``)],
  });
}
