import type { AuditSummary, ChainReport, StepName, StepTime } from '../engine/report/index.js';
import type { TravelledChain } from '../engine/transfer/index.js';

/** The audit summary and the chain verification, as plain text (CLI) and Markdown (export): pure functions. */
const STEPS: StepName[] = ['collection', 'detection', 'resolution', 'review', 'validation', 'loading'];

export function duration(ms: number): string {
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)}s`;
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0 ? `${h}h ${String(m).padStart(2, '0')}m` : `${m}m ${String(sec).padStart(2, '0')}s`;
}

export function stepText(t: StepTime): string {
  if (t.status === 'not run yet') return `not run yet${t.note ? ` (${t.note})` : ''}`;
  if (t.status === 'none needed') return 'none needed (no conflict queued)';
  const time = t.ms === null ? 'done (time not recorded)' : duration(t.ms);
  const notes = [t.note, t.status === 'in progress' ? 'in progress' : undefined].filter(Boolean);
  return notes.length > 0 ? `${time} (${notes.join(', ')})` : time;
}

/** The summary's rows, shared by the text and the Markdown renderings. */
function rows(s: AuditSummary): [string, string][] {
  const out: [string, string][] = [];
  const c = s.counts;
  if (c) {
    out.push(
      ['total records collected', String(c.collected)],
      ['conflicts detected', String(c.conflicts)],
      ['auto-resolved', `${c.autoResolved} (${c.autoResolvedPct}%)`],
      ...Object.entries(c.autoByRule ?? {})
        .sort((a, b) => b[1] - a[1])
        .map(([rule, n]): [string, string] => [`  by ${rule}`, String(n)]),
      ...(c.overruled ? [['  overruled by a reviewer', String(c.overruled)] as [string, string]] : []),
      ['manual review', `${c.manual} (${c.manualPct}%)`],
      ['final dataset', `${c.final} records${c.pending ? ` (+${c.pending} awaiting review)` : ''}`],
      ['merged', String(c.merged)],
      ['renamed', String(c.renamed)],
      ['deleted', String(c.deleted)],
    );
  } else {
    out.push(['total records collected', `not consolidated yet (tributary consolidate ${s.release})`]);
  }
  for (const name of STEPS) out.push([`time: ${name}`, stepText(s.steps[name])]);
  out.push(['audit events', `${s.events} for ${s.release}`]);
  return out;
}

function headText(s: AuditSummary): string {
  return s.head ? `#${s.head.seq} ${s.head.hash} (${s.head.at})` : 'none (the audit trail is empty)';
}

export function renderAuditSummary(s: AuditSummary): string {
  const lines = [`Audit summary of ${s.release} (${s.state}${s.runId ? `, run #${s.runId}` : ''})`];
  for (const [k, v] of rows(s)) lines.push(`  ${k.padEnd(26)} ${v}`);
  lines.push(`  ${'chain head (witness)'.padEnd(26)} ${headText(s)}`);
  if (s.head) lines.push(`  keep the head outside the database; later: tributary audit verify ${s.release} --head ${s.head.hash}`);
  return lines.join('\n');
}

const md = (v: string) => v.replace(/\|/g, '\\|');

export function renderAuditMarkdown(s: AuditSummary): string {
  const lines = [`## Audit summary: ${s.release}`, '', `State: ${s.state}${s.runId ? `, run #${s.runId}` : ''}`, '', '| metric | value |', '|---|---|'];
  for (const [k, v] of rows(s)) lines.push(`| ${md(k)} | ${md(v)} |`);
  lines.push('', `Chain head (witness): \`${headText(s)}\``);
  if (s.head) lines.push('', `Verify later with \`tributary audit verify ${s.release} --head ${s.head.hash}\`.`);
  return lines.join('\n');
}

/** The travelled chains of imported transfer packages (on premises), after the local chain's report. */
export function renderTravelled(chains: TravelledChain[]): string {
  return chains
    .map((c) =>
      c.intact
        ? `Travelled chain intact: ${c.events} event(s) of ${c.release} from package ${c.digest.slice(0, 16)}… (cloud run #${c.sourceRunId}), vouched for by key ${c.keyId}'s signature${c.head ? `; signed head #${c.head.seq} ${c.head.hash}` : ''}`
        : `Travelled chain BROKEN: ${c.broken}`,
    )
    .join('\n');
}

export function renderVerify(r: ChainReport): string {
  const of = r.release ? ` (${r.releaseEvents} of ${r.release})` : '';
  const lines: string[] = [];
  if (r.broken) {
    lines.push(`Audit chain BROKEN${r.broken.seq !== null ? ` at event #${r.broken.seq}` : ''}: ${r.broken.message}`);
    lines.push(`  ${r.events} event(s) verified before the break${of}${r.head ? `; last good #${r.head.seq} ${r.head.hash}` : ''}`);
  } else {
    lines.push(`Audit chain intact: ${r.events} event(s) verified${of}`);
    lines.push(`  head #${r.head ? `${r.head.seq} ${r.head.hash} (${r.head.at})` : '– (empty)'}`);
    if (r.witness) lines.push(`  witnessed head found at #${r.witness.seq}${r.witness.since ? `; ${r.witness.since} event(s) appended since` : '; nothing appended since'}`);
  }
  if (r.unchained > 0) lines.push(`  ${r.unchained} older event(s) predate the chain and are not covered`);
  if (!r.newestChecked && !r.broken) lines.push('  not checked: the removal of the newest events (pass --head <hash>, a chain head witnessed earlier, e.g. from a bot message)');
  return lines.join('\n');
}
