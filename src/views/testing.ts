import type { FailureView, TestProgress, TestRunReport, Totals } from '../engine/tiers/index.js';
import type { KnownBlock, ModalView } from '@slack/types';
import { ACTIONS, BLOCKS, VIEWS } from '../slack/ids.js';
import { checkMessage, checkView, clip, esc, LIMITS, type Message } from './limits.js';
import { context, md, plain, section } from './kit.js';
import { RATIONALE_MIN } from '../engine/kernel/rationale.js';

/** Test runs as a QA lead reads them: totals with %, new features vs regression, per feature, failures. */
export function tierLabel(tier: string, feature?: string): string {
  if (tier === '1' || tier === '2') return `tier ${tier}`;
  if (tier === 'feature') return feature ? `feature ${feature}` : 'feature tests';
  return tier;
}

function pct(n: number, of: number): string {
  return of === 0 ? '0%' : `${Math.round((n / of) * 1000) / 10}%`;
}

export function totalsLine(t: Totals): string {
  const failed = t.failed + t.errored;
  return `${t.total} tests: ${t.passed} passed (${pct(t.passed, t.total)}), ${failed} failed (${pct(failed, t.total)}), ${t.skipped} skipped (${pct(t.skipped, t.total)}); pass rate ${t.passRate}%`;
}

export function failureLine(f: FailureView): string {
  const msg = f.message ? `: ${f.message.split('\n')[0]!.slice(0, 200)}` : '';
  return `[${f.class ?? f.status}] ${f.name}${msg}`;
}

/**
 * What was selected, counted as it ran: a first run (the catalog empty: the whole suite runs once, to
 * discover it) selected "0 tests" from the catalog, yet ran the suite, so the count is the run's.
 */
export function selectionText(r: TestRunReport): string {
  const d = r.selection.description;
  if (!r.selection.discovery) return d;
  const n = r.selection.tests;
  return d.replace(/: [\d,]+ tests?\b/, `: ${n.toLocaleString('en-US')} ${n === 1 ? 'test' : 'tests'} (the whole suite)`);
}

export function renderTestRun(r: TestRunReport): string {
  const t = r.totals;
  const lines = [
    `${r.release} ${tierLabel(r.tier)} on ${r.env} (test run #${r.runId}): ${r.gate.passed ? 'PASSED' : 'FAILED'}${r.gate.reasons.length ? ` (${r.gate.reasons.join('; ')})` : ''}`,
    `  selection: ${selectionText(r)}; ${r.selection.note}`,
    `  all: ${totalsLine(t)}`,
    `  new features: ${totalsLine(t.newFeatures)}`,
    `  regression of earlier releases: ${totalsLine(t.regression)}`,
  ];
  const feats = Object.entries(t.perFeature).sort(([a], [b]) => a.localeCompare(b));
  if (feats.length) lines.push(`  per feature: ${feats.map(([f, x]) => `${f} ${x.passed}/${x.total - x.skipped}`).join(', ')}`);
  lines.push(`  classes: ${Object.entries(t.classes).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`).join(', ') || 'none'}${r.baselineRunId ? ` (baseline: run #${r.baselineRunId})` : ' (no baseline yet)'}`);
  if (r.newRegressions.length) lines.push('  new regressions:', ...r.newRegressions.map((f) => `    ${failureLine(f)}`));
  if (r.failures.length) lines.push('  failures (top):', ...r.failures.map((f) => `    ${failureLine(f)}`));
  if (r.flaky.length) lines.push(`  flaky: ${r.flaky.map((f) => f.name).join(', ')}`);
  for (const s of r.erroredShards) lines.push(`  shard ${s.index} errored: ${s.error}`);
  lines.push(`  reports: ${r.reports.markdown}, ${r.reports.junit}`, `  took ${(r.ms / 1000).toFixed(1)} s`);
  if (r.tier === '1' && r.gate.passed) lines.push(`Next: tributary test ${r.release} --tier 2 (promotes ${r.release} into master first)`);
  if (r.tier === '2' && r.gate.passed) lines.push(`Next: tributary approve ${r.release} --rationale "…"`);
  return lines.join('\n');
}

export function renderProgress(p: TestProgress): string {
  const secs = (p.elapsedMs / 1000).toFixed(1);
  if (p.step === 'promote') return `promoting… (${secs} s)${p.note ? ` ${p.note}` : ''}`;
  if (p.step === 'select') return `selected: ${p.note ?? ''}`;
  if (p.step === 'shards') return `shards ${p.shardsDone}/${p.shards} done: ${p.passed} passed, ${p.failed} failed (${secs} s)`;
  if (p.step === 'classify') return `comparing with the baseline… (${secs} s)`;
  return `done (${secs} s)`;
}

// ---- Block Kit (Slack) ----

/** What the Approve button carries: the run it approves, so a card of an older run is told apart. */
export interface ApproveRef {
  release: string;
  runId: number;
  channel?: string;
  ts?: string;
}

function totalsFields(label: string, t: Totals): string {
  const failed = t.failed + t.errored;
  return `*${label}*\n${t.total} ${t.total === 1 ? 'test' : 'tests'} · :white_check_mark: ${t.passed} (${pct(t.passed, t.total)}) · :x: ${failed} (${pct(failed, t.total)}) · :fast_forward: ${t.skipped} (${pct(t.skipped, t.total)})\npass rate *${t.passRate}%*`;
}

/**
 * All tests, then the new features' and the earlier releases' shares, each only when the run has tests of
 * it: a smoke run (no feature tests) or a first run (no earlier release) shows no "0 tests · pass rate 0%".
 */
function totalsGroups(r: TestRunReport): [string, Totals][] {
  const groups: [string, Totals][] = [['All', r.totals]];
  if (r.totals.newFeatures.total > 0) groups.push(['New features', r.totals.newFeatures]);
  if (r.totals.regression.total > 0) groups.push(['Regression of earlier releases', r.totals.regression]);
  return groups;
}

export interface ApprovalView {
  by: string;
  at: Date | string;
  rationale: string;
  override: boolean;
}

/** The summary card of a test run; tier 2 carries the approval button (or who approved). */
export function testRunCard(r: TestRunReport, approval?: ApprovalView): Message {
  const icon = r.gate.passed ? ':white_check_mark:' : ':no_entry:';
  const blocks: KnownBlock[] = [
    section(`${icon} *${esc(r.release)} · ${esc(tierLabel(r.tier))} on ${esc(r.env)}*: gate ${r.gate.passed ? '*passed*' : '*failed*'}${r.gate.reasons.length ? `: ${esc(r.gate.reasons.join('; '))}` : ''}`),
    { type: 'section', fields: totalsGroups(r).map(([label, t]) => md(clip(totalsFields(label, t), LIMITS.fieldText))) },
  ];
  const feats = Object.entries(r.totals.perFeature).sort(([a], [b]) => a.localeCompare(b));
  if (feats.length) blocks.push(section(`*Per feature*: ${feats.map(([f, x]) => `${esc(f)} ${x.passed}/${x.total - x.skipped}`).join(' · ')}`));
  if (r.newRegressions.length) blocks.push(section(`:rotating_light: *New regressions (${r.newRegressions.length})*\n${r.newRegressions.slice(0, 10).map((f) => `• ${esc(failureLine(f))}`).join('\n')}`));
  const others = r.failures.filter((f) => f.class !== 'new-regression').slice(0, 10);
  if (others.length) blocks.push(section(`*Other failures*\n${others.map((f) => `• ${esc(failureLine(f))}`).join('\n')}`));
  if (r.flaky.length) blocks.push(section(`*Flaky*: ${r.flaky.slice(0, 20).map((f) => esc(f.name)).join(', ')}`));
  for (const s of r.erroredShards.slice(0, 5)) blocks.push(section(`:warning: shard ${s.index} errored: ${esc(clip(s.error, 500))}`));
  blocks.push(context(`Test run #${r.runId} · ${esc(selectionText(r))} · ${esc(r.selection.note)}${r.baselineRunId ? ` · compared with run #${r.baselineRunId}` : ' · no baseline yet'} · ${(r.ms / 1000).toFixed(1)} s`));
  if (r.tier === '2') {
    if (approval) {
      blocks.push(section(`:white_check_mark: *Approved${approval.override ? ' with an override of the failed gate' : ''}* by ${/^[UW][A-Z0-9]+$/.test(approval.by) ? `<@${approval.by}>` : esc(approval.by)}: ${esc(clip(approval.rationale, 1000))}`));
    } else {
      const value = JSON.stringify({ release: r.release, runId: r.runId } satisfies ApproveRef);
      blocks.push({
        type: 'actions',
        block_id: `tests:approve:${r.runId}`,
        elements: [
          {
            type: 'button',
            action_id: ACTIONS.approve,
            value,
            text: plain(r.gate.passed ? 'Approve for production' : 'Approve with override…'),
            style: r.gate.passed ? 'primary' : 'danger',
          },
        ],
      });
    }
  } else if (r.tier === '1') {
    blocks.push(context(r.gate.passed ? `Next: \`/release test ${esc(r.release)} --tier 2\` (promotes ${esc(r.release)} into master first)` : 'Tier 2 is refused until tier 1 passes on the loaded data.'));
  }
  return checkMessage({ text: `${r.release} ${tierLabel(r.tier)}: ${r.gate.passed ? 'passed' : 'failed'}, pass rate ${r.totals.passRate}%`, blocks });
}

/** The approval modal: rationale required; past a failed gate it says it is an override. */
export function approveModal(ref: ApproveRef, gate: { passed: boolean; reasons: string[] }): ModalView {
  const blocks: KnownBlock[] = [
    section(gate.passed
      ? `Approve *${esc(ref.release)}* (tier 2 run #${ref.runId} passed its gate): it becomes ready for production.`
      : `:warning: Tier 2 run #${ref.runId} of *${esc(ref.release)}* *failed its gate* (${esc(gate.reasons.join('; '))}). Approving it is an *override*: say why.`),
    {
      type: 'input',
      block_id: BLOCKS.approveRationale,
      label: plain(gate.passed ? 'Rationale' : 'Override rationale'),
      element: { type: 'plain_text_input', action_id: 'value', multiline: true, min_length: RATIONALE_MIN, max_length: 1000 },
    },
  ];
  return checkView({
    type: 'modal',
    callback_id: VIEWS.approve,
    title: plain(clip(gate.passed ? 'Approve release' : 'Override and approve', LIMITS.modalTitle)),
    submit: plain('Approve'),
    close: plain('Cancel'),
    private_metadata: JSON.stringify(ref),
    blocks,
  });
}

/** The promotion's card, posted on its own once the progress message says it ended. */
export function promoteCard(r: Parameters<typeof promoteCardText>[0]): Message {
  const text = promoteCardText(r);
  return checkMessage({ text: clip(text, 3000), blocks: [section(clip(text, 2900))] });
}

export function promoteCardText(r: { release: string; env: string; tables: { table: string; rows: number; checksum: string; skipped?: number }[]; ms: number }): string {
  return `:white_check_mark: *${esc(r.release)} promoted into ${esc(r.env)}* (${(r.ms / 1000).toFixed(1)} s), its own partition, verified by counts and checksums:\n${r.tables.map((t) => `\`${esc(t.table)}\` ${t.rows} rows${t.skipped ? ` (${t.skipped} already in master, not promoted twice)` : ''} · checksum \`${esc(t.checksum)}\``).join('\n')}`;
}
