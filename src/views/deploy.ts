import type { KnownBlock, ModalView } from '@slack/types';
import { standing, type Bundle, type Deployment, type GoDecision, type StepState } from '../engine/deploy/index.js';
import { ACTIONS, BLOCKS, VIEWS } from '../slack/ids.js';
import { checkMessage, checkView, clip, esc, LIMITS, type Message } from './limits.js';
import { composed, mention, slackWords } from './blocks.js';
import { chainHeadContext, context, ENDING_ICON, type Ending, plain, section } from './kit.js';
import { RATIONALE_MIN } from '../engine/kernel/rationale.js';

/** Deployments as text (CLI) and Block Kit (go/no-go card, progress, rollback and interrupted cards). */
const who = (a: string) => (/^[UW][A-Z0-9]+$/.test(a) ? `<@${a}>` : esc(a));

const ICON: Record<string, string> = { done: ':white_check_mark:', skipped: ':white_circle:', running: ':hourglass_flowing_sand:', failed: ':x:' };

function stepLine(s: StepState, md: boolean): string {
  const ms = s.ms !== undefined ? ` (${(s.ms / 1000).toFixed(1)} s)` : '';
  const text = `${s.name}${ms}${s.detail ? `: ${s.detail}` : ''}${s.error ? `: ${s.error}` : ''}`;
  return md ? `${ICON[s.status] ?? ''} ${esc(clip(text, 300))}` : `  [${s.status.padEnd(7)}] ${text}`;
}

/** States whose name alone does not say what happened. */
const MEANING: Partial<Record<Deployment['status'], string>> = {
  'restored-smoke-failing': 'rolled back; smoke after rollback failing: code and data restored and verified, the smoke tests fail on the restored state too',
  'rollback-failed': 'NOT fully rolled back',
};

/** Code and data part-way: where they stand is said, from the steps done and undone. */
const PARTIAL: readonly Deployment['status'][] = ['running', 'rolling-back', 'rollback-failed'];

export function renderDeployment(d: Deployment, decisions: GoDecision[] = []): string {
  const lines = [
    `Deployment #${d.id} of ${d.release} to ${d.env}: ${d.status}${MEANING[d.status] ? ` (${MEANING[d.status]})` : ''}`,
    `  bundle v${d.bundle_version}, code ${d.code_version}${d.previous_code_version ? ` (was ${d.previous_code_version})` : ''}; requested by ${d.requested_by} at ${new Date(d.requested_at).toISOString()}${d.window_at ? `; window ${new Date(d.window_at).toISOString()}` : ''}`,
  ];
  if (d.status === 'awaiting-go') lines.push(`  waiting for Go until ${new Date(d.expires_at).toISOString()} (unanswered = no-go)`);
  for (const x of decisions) lines.push(`  ${x.decision.toUpperCase()} by ${x.actor}: ${x.rationale}`);
  for (const s of d.steps) lines.push(stepLine(s, false));
  if (d.undo.length) lines.push('  rollback (reverse order):', ...d.undo.map((s) => stepLine(s, false)));
  if (d.cause) lines.push(`  cause: ${d.cause}`);
  if (PARTIAL.includes(d.status) && d.steps.length) lines.push(`  where it stands: ${standing(d)}`);
  return lines.join('\n');
}

export interface GoCardArgs {
  deployment: Deployment;
  bundle: Bundle;
  tiers: { tier: string; runId: number; status: string; passRate: number }[];
  approval?: { by: string; at: Date | string; override: boolean; rationale: string };
  decisions: GoDecision[];
  needed: number;
}

/** The go/no-go card: the bundle, tier results, approvals, who asked, the window; Go / No-go while open. */
export function goNoGoCard(a: GoCardArgs): Message {
  const d = a.deployment;
  const blocks: KnownBlock[] = [
    { type: 'header', text: plain(clip(`Go / no-go: ${d.release} to ${d.env}`, LIMITS.headerText)) },
    section(`*Bundle v${a.bundle.version}* · code \`${esc(a.bundle.codeVersion)}\` · data ${a.bundle.tables.map((t) => `\`${esc(t.table)}\` ${t.rows} rows`).join(', ')}${a.bundle.migration ? ` · migration \`${esc(a.bundle.migration)}\`` : ''}`),
    section(`*Tests*: ${a.tiers.map((t) => `tier ${esc(t.tier)} run #${t.runId} ${t.status === 'passed' ? ':white_check_mark:' : ':x:'} ${t.passRate}%`).join(' · ') || 'none'}\n*QA approval*: ${a.approval ? `${who(a.approval.by)}${a.approval.override ? ' (*override* of a failed gate)' : ''}: ${esc(clip(a.approval.rationale, 300))}` : 'none'}`),
    section(`*Asked by* ${who(d.requested_by)} · *window* ${d.window_at ? `<!date^${Math.floor(new Date(d.window_at).getTime() / 1000)}^{date_short_pretty} {time}|${new Date(d.window_at).toISOString()}>` : 'now, once Go'} · *answer by* <!date^${Math.floor(new Date(d.expires_at).getTime() / 1000)}^{date_short_pretty} {time}|${new Date(d.expires_at).toISOString()}> (unanswered = no-go)`),
  ];
  if (a.decisions.length) blocks.push(section(a.decisions.map((x) => `${x.decision === 'go' ? ':large_green_circle: *Go*' : ':red_circle: *No-go*'} by ${who(x.actor)}: ${esc(clip(x.rationale, 300))}`).join('\n')));
  if (d.status === 'awaiting-go') {
    const value = JSON.stringify({ id: d.id, release: d.release });
    blocks.push({
      type: 'actions',
      block_id: `deploy:go:${d.id}`,
      elements: [
        { type: 'button', action_id: ACTIONS.deployGo, text: plain('Go'), value, style: 'primary' },
        { type: 'button', action_id: ACTIONS.deployNoGo, text: plain('No-go'), value, style: 'danger' },
      ],
    });
    blocks.push(context(`Needs ${a.needed} Go from release managers; the one who asked cannot be the only one.`));
  } else {
    blocks.push(context(`Deployment #${d.id}: *${esc(d.status)}*${d.cause ? ` · ${slackWords(esc(clip(d.cause, 500)))}` : ''}`));
  }
  return checkMessage({ text: `Go / no-go: ${d.release} to ${d.env} (deployment #${d.id}): ${d.status}`, blocks });
}

export interface DecideRef {
  id: number;
  release: string;
  decision?: 'go' | 'no-go' | 'rollback';
  channel?: string;
  ts?: string;
}

/** The confirmation modal of Go, No-go and rollback: a rationale is required. */
export function confirmModal(ref: DecideRef, summary: string): ModalView {
  const title = ref.decision === 'go' ? 'Go' : ref.decision === 'no-go' ? 'No-go' : 'Roll back';
  return checkView({
    type: 'modal',
    callback_id: VIEWS.deployDecide,
    title: plain(clip(`${title}: ${ref.release}`, LIMITS.modalTitle)),
    submit: plain(ref.decision === 'rollback' ? 'Roll back' : title),
    close: plain('Cancel'),
    private_metadata: JSON.stringify(ref),
    blocks: [
      section(summary),
      { type: 'input', block_id: BLOCKS.deployRationale, label: plain('Rationale'), element: { type: 'plain_text_input', action_id: 'value', multiline: true, min_length: RATIONALE_MIN, max_length: 1000 } },
    ],
  });
}

/**
 * What a deployment's state means for the people watching: still going, succeeded, refused (rejected at
 * its go/no-go, expired, cancelled: nothing ran), partial (rolled back: the env is restored, the release is
 * not on it) or failed (the rollback itself failed). Every state is named, so none keeps the hourglass by default.
 */
const STATE_ENDING: Record<Deployment['status'], Ending> = {
  'awaiting-go': 'running',
  scheduled: 'running',
  approved: 'running',
  running: 'running',
  'rolling-back': 'running',
  succeeded: 'success',
  'rolled-back': 'partial',
  'restored-smoke-failing': 'partial',
  'rollback-failed': 'failure',
  rejected: 'refusal',
  expired: 'refusal',
  cancelled: 'refusal',
};
export const deploymentIcon = (status: Deployment['status']): string => ENDING_ICON[STATE_ENDING[status] ?? 'running'];

/** One message updated in place while the sequence (or the rollback) runs: every step with its timing. */
export function deployProgressMessage(d: Deployment, head?: { seq: number; hash: string } | null): Message {
  const blocks: KnownBlock[] = [section(`${deploymentIcon(d.status)} *Deployment #${d.id} of ${esc(d.release)} to ${esc(d.env)}*: ${esc(d.status)}${MEANING[d.status] ? ` (${esc(MEANING[d.status]!)})` : ''} · code \`${esc(d.code_version)}\``)];
  if (d.steps.length) blocks.push(section(d.steps.map((s) => stepLine(s, true)).join('\n')));
  if (d.undo.length) blocks.push(section(`*Rollback* (reverse order)\n${d.undo.map((s) => stepLine(s, true)).join('\n')}`));
  if (d.cause) blocks.push(context(`Cause: ${slackWords(esc(clip(d.cause, 1000)))}`));
  if (head) blocks.push(chainHeadContext(head));
  return checkMessage({ text: `Deployment #${d.id} of ${d.release}: ${d.status}`, blocks });
}

const ROLLBACK_OUTCOME: Partial<Record<Deployment['status'], string>> = {
  'rolled-back': 'was rolled back',
  'restored-smoke-failing': 'was rolled back; smoke after rollback failing (code and data restored and verified; the earlier release fails its smoke tests too)',
};

/** After a rollback: what happened and why; the env stays locked until a release_manager unlocks it. */
export function rollbackCard(d: Deployment, locked: boolean): Message {
  const blocks: KnownBlock[] = [
    section(`${deploymentIcon(d.status)} *${esc(d.release)} on ${esc(d.env)} ${ROLLBACK_OUTCOME[d.status] ?? 'was NOT fully rolled back'}* (deployment #${d.id}): ${slackWords(esc(clip(d.cause ?? '', 1500)))}`),
    section(d.undo.map((s) => stepLine(s, true)).join('\n') || 'nothing to undo'),
  ];
  if (d.status === 'rollback-failed') blocks.push(context(`Where it stands: ${esc(clip(standing(d), 500))}`));
  if (locked) {
    blocks.push({ type: 'actions', block_id: `deploy:unlock:${d.id}`, elements: [{ type: 'button', action_id: ACTIONS.deployUnlock, text: plain(`Unlock ${clip(d.env, 40)}`), value: JSON.stringify({ env: d.env, id: d.id }) }] });
    blocks.push(context(`${esc(d.env)} stays locked until a release_manager unlocks it (here, or \`tributary unlock ${esc(d.env)}\`).`));
  } else {
    blocks.push(context(`${esc(d.env)} is unlocked.`));
  }
  return checkMessage({ text: `${d.release} on ${d.env}: ${d.status}${MEANING[d.status] ? ` (${MEANING[d.status]})` : ''} (deployment #${d.id})`, blocks });
}

/** The timeline for the post-mortem thread. */
export function timelineText(d: Deployment): string {
  const rows = [...d.steps, ...d.undo].map((s) => `• ${s.startedAt.slice(11, 19)} ${s.name} ${s.status}${s.ms !== undefined ? ` ${(s.ms / 1000).toFixed(1)} s` : ''}${s.error ? `: ${esc(clip(s.error, 300))}` : ''}`);
  return `*Post-mortem timeline of deployment #${d.id}* (${esc(d.release)} to ${esc(d.env)}, UTC)\n${rows.join('\n')}`;
}

/** Found at start-up: a deployment whose process died; Resume or Roll back. Its times show as Slack dates. */
export function interruptedCard(d: Deployment, where: string): Message {
  const value = JSON.stringify({ id: d.id, release: d.release });
  return checkMessage({
    text: `Deployment #${d.id} of ${d.release} was interrupted`,
    blocks: [
      section(`:warning: *Deployment #${d.id} of ${esc(d.release)} to ${esc(d.env)} was interrupted* (the process running it died): ${slackWords(esc(where))}`),
      section(d.steps.map((s) => stepLine(s, true)).join('\n') || 'no step started'),
      {
        type: 'actions',
        block_id: `deploy:interrupted:${d.id}`,
        elements: [
          { type: 'button', action_id: ACTIONS.deployResume, text: plain('Resume'), value, style: 'primary' },
          { type: 'button', action_id: ACTIONS.deployRollback, text: plain('Roll back'), value, style: 'danger' },
        ],
      },
    ],
  });
}

/**
 * The interrupted card once resumed from Slack: by whom, and how the run ended; no buttons any more (a press
 * on a stale copy is answered that there is nothing to resume).
 */
export function interruptedEndedCard(d: Deployment, by: string, acted: 'resumed'): Message {
  const ended = `${esc(d.status)}${MEANING[d.status] ? ` (${esc(MEANING[d.status]!)})` : ''}`;
  return checkMessage({
    text: `Deployment #${d.id} of ${d.release} was interrupted, then ${acted} by ${by}: ${d.status}`,
    blocks: [
      section(`${deploymentIcon(d.status)} *Deployment #${d.id} of ${esc(d.release)} to ${esc(d.env)} was interrupted* (the process running it died), *then ${acted}* by ${who(by)}: ${ended}`),
      context(`The steps are in the deployment's progress message below. \`tributary deploy status ${d.id}\` shows it too.`),
    ],
  });
}

/** `tributary bundle R2`: one bundle, as text. */
export function renderBundle(b: Bundle & { created?: boolean }): string {
  const head = `Bundle ${b.release} v${b.version}${b.created === false ? ' (unchanged: the same code version, migration and data)' : ''}`;
  const lines = [
    head,
    `  code version:  ${b.codeVersion}`,
    `  migration:     ${b.migration ?? '(none)'}`,
    `  data:          ${b.dataFingerprint}`,
    `  files:         ${b.dir}`,
    `  created:       ${b.createdAt} by ${b.createdBy}`,
  ];
  const w = Math.max(5, ...b.tables.map((t) => t.table.length));
  const rw = Math.max(4, ...b.tables.map((t) => t.rows.toLocaleString('en-US').length));
  lines.push('', `  ${'table'.padEnd(w)}  ${'rows'.padStart(rw)}  checksum`);
  for (const t of b.tables) lines.push(`  ${t.table.padEnd(w)}  ${t.rows.toLocaleString('en-US').padStart(rw)}  ${t.checksum}`);
  return lines.join('\n');
}

export function renderBundleList(release: string, list: Bundle[]): string {
  if (list.length === 0) return `No bundles of ${release} yet: tributary bundle ${release} --code <version>`;
  return [`Bundles of ${release}:`, ...list.map((b) => `  v${b.version}  code ${b.codeVersion}  data ${b.dataFingerprint.slice(0, 12)}  ${b.tables.reduce((n, t) => n + t.rows, 0).toLocaleString('en-US')} rows  ${b.createdAt} by ${b.createdBy}`)].join('\n');
}

/**
 * To a release manager whose Go did not complete the quorum: how many more Go are needed, and from whom
 * (the release managers who have not said Go; one of them other than the requester, who never suffices alone).
 */
export function goPendingMessage(d: Pick<Deployment, 'id' | 'release' | 'requested_by'>, gos: string[], needed: number, managers: string[]): Message {
  const more = Math.max(needed - gos.length, 1);
  const onlyRequester = gos.every((g) => g === d.requested_by);
  const who = managers.filter((m) => !gos.includes(m)).map(mention);
  const from = who.length ? who : ['any release_manager (roles.release_manager is open)'];
  return onlyRequester
    ? composed`Your Go on deployment #${d.id} of ${d.release} is recorded; nothing runs yet. ${more} more Go needed, from a release_manager other than ${mention(d.requested_by)} (who asked for it): ${from}.`
    : composed`Your Go on deployment #${d.id} of ${d.release} is recorded (${gos.length} of ${needed}); nothing runs yet. ${more} more Go needed, from: ${from}.`;
}
