import type { KnownBlock } from '@slack/types';
import type { ArchiveReport, Coverage, NightlySummary, TestRef, PruneProposal } from '../engine/nightly/index.js';
import { checkMessage, clip, esc, type Message } from './limits.js';
import { context, md, plain, section } from './kit.js';

/**
 * The nightly regression as people read it (CLI text and the Slack post), the coverage growth table
 * (its chart is coverageChart.ts) and the weekly pruning proposals.
 */
const num = (n: number) => n.toLocaleString('en-US');
const pctText = (n: number | null) => (n === null ? '–' : `${n}%`);

function trendArrow(s: NightlySummary): string {
  const a = s.trend.avg7;
  if (a === null || s.trend.points.length < 2) return '';
  const d = Math.round((s.totals.passRate - a) * 100) / 100;
  return d > 0 ? ` (▲ ${d} vs the 7-night average)` : d < 0 ? ` (▼ ${-d} vs the 7-night average)` : ' (= the 7-night average)';
}

function refLine(r: TestRef): string {
  const rel = r.releases.length ? ` [${r.releases.join(', ')}]` : '';
  return `${r.name}${rel}${r.message ? `: ${r.message.split('\n')[0]!.slice(0, 160)}` : ''}`;
}

/** A small text sparkline of pass rates (oldest first). */
export function sparkline(rates: number[]): string {
  const bars = '▁▂▃▄▅▆▇█';
  if (rates.length === 0) return '';
  const lo = Math.min(...rates);
  const hi = Math.max(...rates);
  return rates.map((r) => bars[hi === lo ? bars.length - 1 : Math.round(((r - lo) / (hi - lo)) * (bars.length - 1))]).join('');
}

export function renderNightly(s: NightlySummary): string {
  const t = s.totals;
  const failed = t.failed + t.errored;
  const lines = [
    `Nightly regression on ${s.env} (test run #${s.runId}, ${s.at}): ${s.status === 'passed' ? 'PASSED' : 'FAILED'}${s.reasons.length ? ` (${s.reasons.join('; ')})` : ''}`,
    `  totals: ${num(t.total)} tests, ${num(t.passed)} passed, ${num(failed)} failed, ${num(t.skipped)} skipped; pass rate ${t.passRate}%${trendArrow(s)}`,
    `  since the previous night${s.previousRunId ? ` (run #${s.previousRunId})` : ' (none yet)'}: ${s.newRegressions.count} new regression(s), ${s.fixed.count} fixed`,
  ];
  for (const r of s.newRegressions.items) lines.push(`    new regression: ${refLine(r)}`);
  if (s.newRegressions.count > s.newRegressions.items.length) lines.push(`    … and ${s.newRegressions.count - s.newRegressions.items.length} more`);
  for (const r of s.fixed.items) lines.push(`    fixed: ${refLine(r)}`);
  lines.push(`  flaky over the last ${s.flaky.nights} night(s): ${s.flaky.items.length === 0 ? 'none' : ''}`);
  s.flaky.items.forEach((f, i) => lines.push(`    ${i + 1}. ${f.name}: ${f.flips} flip(s), ${f.retried} pass(es) on retry, failed ${f.failures}/${f.nights}`));
  lines.push('  per release:');
  for (const r of s.perRelease) lines.push(`    ${r.release}: ${r.passed}/${r.total - r.skipped} passed (${r.passRate}%)${r.newRegressions ? `, ${r.newRegressions} new regression(s)` : ''}`);
  const rates = s.trend.points.map((p) => p.passRate);
  lines.push(`  trend: 7 nights ${pctText(s.trend.avg7)} average (${s.trend.nights7}), 30 nights ${pctText(s.trend.avg30)} average (${s.trend.nights30}) ${sparkline(rates)}`);
  return lines.join('\n');
}

/** The morning post. */
export function nightlyCard(s: NightlySummary): Message {
  const t = s.totals;
  const failed = t.failed + t.errored;
  const icon = s.newRegressions.count > 0 ? ':rotating_light:' : s.status === 'passed' ? ':white_check_mark:' : ':warning:';
  const blocks: KnownBlock[] = [
    section(`${icon} *Nightly regression on ${esc(s.env)}*: pass rate *${t.passRate}%*${esc(trendArrow(s))}\n${num(t.total)} tests · :white_check_mark: ${num(t.passed)} · :x: ${num(failed)} · :fast_forward: ${num(t.skipped)}`),
    {
      type: 'section',
      fields: [
        md(`*New regressions since the previous night*\n${s.newRegressions.count}`),
        md(`*Fixed*\n${s.fixed.count}`),
        md(`*7 nights*\n${pctText(s.trend.avg7)} average`),
        md(`*30 nights*\n${pctText(s.trend.avg30)} average  ${sparkline(s.trend.points.map((p) => p.passRate))}`),
      ],
    },
  ];
  if (s.newRegressions.items.length) blocks.push(section(`:rotating_light: *New regressions*\n${s.newRegressions.items.slice(0, 10).map((r) => `• ${esc(refLine(r))}`).join('\n')}${s.newRegressions.count > 10 ? `\n… and ${s.newRegressions.count - 10} more` : ''}`));
  if (s.fixed.items.length) blocks.push(section(`:tada: *Fixed*\n${s.fixed.items.slice(0, 10).map((r) => `• ${esc(r.name)}`).join('\n')}`));
  blocks.push(section(`*Flaky, last ${s.flaky.nights} night(s)*\n${s.flaky.items.length ? s.flaky.items.map((f, i) => `${i + 1}. ${esc(f.name)}: ${f.flips} flip(s)${f.retried ? `, ${f.retried} pass(es) on retry` : ''}`).join('\n') : 'none'}`));
  blocks.push(section(`*Per release*\n${s.perRelease.map((r) => `• *${esc(r.release)}* ${r.passed}/${r.total - r.skipped} (${r.passRate}%)${r.newRegressions ? ` · :rotating_light: ${r.newRegressions}` : ''}`).join('\n') || 'no tests'}`));
  blocks.push(context(`Test run #${s.runId} · ${esc(s.at)}${s.previousRunId ? ` · compared with run #${s.previousRunId}` : ' · first night'}${s.reasons.length ? ` · ${esc(s.reasons.join('; '))}` : ''}`));
  return checkMessage({ text: `Nightly regression: pass rate ${t.passRate}%, ${s.newRegressions.count} new regression(s), ${s.fixed.count} fixed`, blocks });
}

export function nightlyFailedCard(error: string, slot: string): Message {
  return checkMessage({ text: `Nightly regression failed: ${clip(error, 200)}`, blocks: [section(`:warning: *The nightly regression (${esc(slot)}) did not run to the end*: ${esc(clip(error, 2000))}`)] });
}

export function renderCoverage(c: Coverage): string {
  const rows = c.rows.map((r) => [r.release + (r.archived ? ' (archived)' : ''), num(r.tests), num(r.cumulativeTests), num(r.records), num(r.cumulativeRecords)]);
  const head = ['release', 'tests', 'cumulative tests', 'records', 'cumulative records'];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((x, i) => (i === 0 ? x.padEnd(width[i]!) : x.padStart(width[i]!))).join('  ');
  return [`Coverage growth (${c.env}, ${c.at})`, line(head), ...rows.map(line)].join('\n');
}

export function coverageMessage(c: Coverage): Message {
  const body = c.rows.map((r) => `• *${esc(r.release)}*${r.archived ? ' (archived)' : ''}: ${num(r.tests)} tests (${num(r.cumulativeTests)} cumulative) · ${num(r.records)} records (${num(r.cumulativeRecords)} cumulative)`).join('\n');
  const last = c.rows.at(-1);
  return checkMessage({
    text: last ? `Coverage: ${num(last.cumulativeTests)} tests and ${num(last.cumulativeRecords)} records over ${c.rows.length} release(s)` : 'Coverage: no release yet',
    blocks: [section(`:chart_with_upwards_trend: *Coverage growth per release* (${esc(c.env)})\n${body || 'no release yet'}`)],
  });
}


/** A pruning proposal, as the engine keeps it. */
export type PruneCardInput = PruneProposal;

const who = (owner: string) => (/^[UW][A-Z0-9]+$/.test(owner) ? `<@${owner}>` : esc(owner));

/** A pruning proposal to a feature's owner: the tests, and Prune / Keep buttons (gone once answered). */
export function pruneCard(p: PruneCardInput, actions: { prune: string; keep: string }, removed?: number): Message {
  const list = p.tests.slice(0, 15).map((t) => `• ${esc(t.name)}`).join('\n');
  const blocks: KnownBlock[] = [
    section(`:broom: *Pruning proposal for ${esc(p.feature)}* (${esc(p.release)}, deprecated) · owner ${who(p.owner)}\n${p.tests.length} test(s) cover only deprecated features; they still run in no tier. Prune them from the catalog?\n${list}${p.tests.length > 15 ? `\n… and ${p.tests.length - 15} more` : ''}`),
  ];
  if (p.status === 'proposed') {
    const value = JSON.stringify({ proposal: p.id });
    blocks.push({
      type: 'actions',
      block_id: `prune:${p.id}`,
      elements: [
        { type: 'button', action_id: actions.prune, value, style: 'danger', text: plain(`Prune ${p.tests.length} test(s)`), confirm: { title: plain('Prune these tests?'), text: md(`They leave the catalog (their history stays).`), confirm: plain('Prune'), deny: plain('Cancel') } },
        { type: 'button', action_id: actions.keep, value, text: plain('Keep them') },
      ],
    });
    blocks.push(context(`Only ${who(p.owner)} can answer. Nothing is removed without the owner's confirmation. Proposal #${p.id}.`));
  } else {
    const what = p.status === 'pruned' ? `:white_check_mark: *Pruned* ${removed ?? p.tests.length} test(s)` : p.status === 'kept' ? ':raised_hand: *Kept*' : ':fast_forward: *Superseded* by a newer digest';
    blocks.push(section(`${what}${p.decidedBy ? ` by ${who(p.decidedBy)}` : ''} (proposal #${p.id})`));
  }
  return checkMessage({ text: `Pruning proposal for ${p.feature}: ${p.tests.length} test(s), ${p.status}`, blocks });
}

/** `tributary archive`: what was (or would be) archived, and what was kept. */
export function renderArchive(r: ArchiveReport): string {
  const lines = [`Cut-off: promoted before ${r.cutoff}${r.dryRun ? ' (dry run: nothing archived)' : ''}`];
  if (r.archived.length === 0) lines.push('Nothing to archive.');
  for (const a of r.archived) {
    lines.push(`${a.release} (promoted ${a.promotedAt})${r.dryRun ? `: would be archived, then dropped from master (${a.rows} rows)` : `: archived ${a.rows} rows in ${(a.ms / 1000).toFixed(1)} s → ${a.manifest}`}`);
    for (const t of a.tables) lines.push(`  ${t.table}: ${t.rows} rows${r.dryRun ? '' : `, checksum ${t.checksum}, ${t.bytes} bytes compressed`}`);
  }
  for (const k of r.kept) lines.push(`${k.release}: kept (${k.reason})`);
  return lines.join('\n');
}
