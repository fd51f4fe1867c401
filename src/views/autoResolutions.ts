import type { KnownBlock } from '@slack/types';
import type { AutoCounts, AutoResolution } from '../engine/review/index.js';
import { context, section } from './kit.js';
import { checkMessage, clip, esc, type Message } from './limits.js';

/**
 * The automatic resolutions (A-…) as text for the CLI (a line per resolution, streamed; one shown side
 * by side) and for Slack (counts per rule and the first few, the whole list as a file's content).
 */

function cell(v: unknown): string {
  if (v === null || v === undefined) return '∅';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** What the rule did, in a few words: kept (env, version), merged (attribute ← env), re-keyed (env old → new). */
export function outcomeText(a: AutoResolution): string {
  const d = a.detail;
  if (d.rekeyed) {
    const moved = d.rekeyed.map((m) => `${m.env} ${m.old} → ${m.new}${m.children.length ? ` (${m.children.length} child row(s) followed)` : ''}`).join(', ');
    return `kept ${d.kept.env}'s key ${d.kept.pk}; re-keyed ${moved}`;
  }
  const kept = `kept version ${d.kept.version} (${(d.kept.envs ?? [d.kept.env]).join(', ')}, key ${d.kept.key})`;
  const merged = d.merged && Object.keys(d.merged).length ? `; merged ${Object.entries(d.merged).map(([attr, env]) => `${attr} ← ${env}`).join(', ')}` : '';
  return `${kept}${merged}`;
}

function overruleText(a: AutoResolution): string {
  const o = a.overrule;
  if (!o) return '';
  return o.status === 'open' ? 're-opened: awaiting a decision' : `overruled by ${o.decidedBy}: ${o.decision?.action === 'keep' ? `keep version ${o.decision.version}` : (o.decision?.action ?? '?')}${o.rationale ? ` — ${o.rationale}` : ''}`;
}

/** One line (and its reason) of `tributary conflicts R2 --status auto-resolved`. */
export function renderAutoLine(a: AutoResolution): string {
  const over = overruleText(a);
  return `  ${a.code}  ${a.rule.padEnd(19)} ${a.entity} ${a.keyLabel}  ${outcomeText(a)}${over ? `  [${over}]` : ''}\n         ${a.reason}`;
}

export function renderAutoHeader(release: string, c: AutoCounts): string {
  const rules = Object.entries(c.byRule).sort((x, y) => y[1] - x[1]).map(([r, n]) => `${r} ${n}`).join(', ');
  return `Automatic resolutions of ${release} (run #${c.runId}): ${c.total}${rules ? ` — ${rules}` : ''}${c.overruled ? ` · ${c.overruled} overruled` : ''}${c.reopened ? ` · ${c.reopened} re-opened` : ''}`;
}

/** `tributary conflicts show R2 A-014`: the versions side by side, the rule and its reason, the outcome. */
export function renderAutoResolution(a: AutoResolution): string {
  const d = a.detail;
  const lines = [`${a.code}  ${a.rule}  ${a.entity} ${a.keyLabel}  (run #${a.runId})`, `  reason: ${a.reason}`, `  outcome: ${outcomeText(a)}`];
  const over = overruleText(a);
  if (over) lines.push(`  ${over}`);
  const versions = d.versions ?? [];
  const keptNo = d.kept.version;
  const heads = versions.map((v) => `v${v.no} ${v.envs.join(',')} key ${v.pks.join(',')}${v.no === keptNo ? ' (kept)' : ''}${v.key && v.key !== v.pks[0] ? ` → ${v.key}` : ''}`);
  const differing = new Set(d.differing ?? []);
  const attrs = [...new Set(versions.flatMap((v) => Object.keys(v.data)))];
  const width = Math.max(9, ...attrs.map((x) => x.length + 2));
  const colw = Math.max(12, ...heads.map((h) => h.length), ...versions.flatMap((v) => Object.values(v.data).map((x) => Math.min(40, cell(x).length))));
  const row = (label: string, cells: string[]) => `  ${label.padEnd(width)} ${cells.map((c) => clip(c, 40).padEnd(colw)).join(' │ ')}`.trimEnd();
  lines.push(row('', heads));
  lines.push(row('feature', versions.map((v) => v.feature ?? '?')));
  for (const attr of attrs) lines.push(row(`${differing.has(attr) ? '* ' : ''}${attr}`, versions.map((v) => cell(v.data[attr]))));
  for (const m of d.rekeyed ?? []) {
    for (const ch of m.children) lines.push(`  followed: ${ch.entity} ${ch.pk} (${m.env}: ${m.old} → ${m.new})`);
  }
  if (a.rule !== 're-key' && a.overrule?.status !== 'decided') {
    lines.push(`  overrule: tributary decide ${a.code} --release ${a.release} --keep <version> | --keep-both | --merge attr=<version> …  --rationale "…"`);
  }
  return lines.join('\n');
}

/** The Slack answer: counts per rule and the first few; the whole list goes with it as a file (autoResolutionsFile). */
export function autoResolutionsMessage(release: string, counts: AutoCounts, first: AutoResolution[], opts: { filter?: string; shown?: number } = {}): Message {
  const shown = first.slice(0, Math.min(opts.shown ?? 10, 30));
  const rules = Object.entries(counts.byRule).sort((x, y) => y[1] - x[1]);
  const blocks: KnownBlock[] = [
    section(`*Automatic resolutions of ${esc(release)}*${opts.filter ? ` (${esc(opts.filter)})` : ''}: ${counts.total}${counts.overruled ? ` · ${counts.overruled} overruled` : ''}${counts.reopened ? ` · ${counts.reopened} re-opened` : ''}`),
  ];
  if (rules.length > 0) blocks.push(section(rules.map(([r, n]) => `• ${esc(r)}: ${n}`).join('\n')));
  for (let i = 0; i < shown.length; i += 10) {
    blocks.push(
      section(
        shown
          .slice(i, i + 10)
          .map((a) => `*${a.code}* ${esc(a.rule)} · ${esc(a.entity)} \`${esc(clip(a.keyLabel, 80))}\` · ${esc(clip(outcomeText(a), 200))}${a.overrule ? ` · _${esc(clip(overruleText(a), 120))}_` : ''}`)
          .join('\n'),
      ),
    );
  }
  if (counts.total > shown.length) blocks.push(context(`${counts.total - shown.length} more in the attached list · \`tributary conflicts ${esc(release)} --status auto-resolved\``));
  return checkMessage({ text: `${counts.total} automatic resolutions in ${release}`, blocks });
}

/** The whole list as a file: one resolution per line, tab-separated, with a header. */
export function autoResolutionsFile(rows: Iterable<AutoResolution>): string {
  const lines = ['code\tentity\tkey\trule\toutcome\treason\toverrule'];
  const clean = (s: string) => s.replace(/[\t\n\r]+/g, ' ');
  for (const a of rows) lines.push([a.code, a.entity, a.keyLabel, a.rule, outcomeText(a), a.reason, overruleText(a)].map(clean).join('\t'));
  return `${lines.join('\n')}\n`;
}
