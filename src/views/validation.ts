import type { FindingDecisionOutcome, FindingRow, ValidationReport } from '../engine/validate/index.js';

/** Plain-text renderings of validation for the CLI: pure functions of domain objects. */
const MAX_VALUE = 60;

function short(v: string | null): string {
  if (v === null) return '∅';
  return v.length > MAX_VALUE ? `${v.slice(0, MAX_VALUE - 1)}…` : v;
}

function what(f: FindingRow): string {
  return f.key === null ? `${f.entity} (all rows)` : `${f.entity} ${f.key}`;
}

export function renderFinding(f: FindingRow): string {
  const lines = [`  ${f.code}  ${f.status.padEnd(6)}  ${f.rule.padEnd(16)} ${what(f)}${f.column ? `  ${f.column} = ${short(f.value)}` : f.value !== null ? `  ${short(f.value)}` : ''}`];
  lines.push(`         ${f.message}`);
  if (f.status === 'waived') lines.push(`         waived by ${f.waived_by}${f.waived_at ? ` at ${new Date(f.waived_at).toISOString()}` : ''}: ${f.rationale}`);
  if (f.status === 'closed' && f.resolution) lines.push(`         closed${f.closed_by ? ` by ${f.closed_by}` : ''}: ${f.resolution}`);
  return lines.join('\n');
}

export function renderFindings(release: string, rows: FindingRow[]): string {
  if (rows.length === 0) return `Findings of ${release}: none`;
  return [`Findings of ${release} (${rows.length}):`, ...rows.map(renderFinding)].join('\n');
}

export function renderValidation(r: ValidationReport, limit = 50): string {
  const c = r.counts;
  const checked = Object.entries(r.rows).map(([e, n]) => `${e} ${n}`).join(', ');
  const lines = [
    `Validation of ${r.release} (run #${r.runId}) in ${(r.ms / 1000).toFixed(2)}s: ${checked} final rows checked`,
    `  findings: ${c.open} open · ${c.waived} waived · ${c.closed} closed (this time: ${c.new} new, ${c.reopened} re-opened, ${c.closedNow} closed as fixed)`,
  ];
  const rules = Object.entries(r.byRule).sort((a, b) => b[1] - a[1]);
  if (rules.length > 0) lines.push(`  open by rule: ${rules.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  const shown = r.findings.slice(0, limit);
  for (const f of shown) lines.push(renderFinding(f));
  if (r.findings.length > shown.length) lines.push(`  … and ${r.findings.length - shown.length} more (tributary validate ${r.release} --json)`);
  if (c.open > 0) {
    lines.push(
      '',
      `${r.release} stays ${r.state}: loading is refused while findings are open. Close each one:`,
      `  decide on its record:  tributary decide <F-…> --release ${r.release} --delete [--cascade] | --repoint <key>  --rationale "…"`,
      `  fix the source:        fix the ST data, then tributary tag ${r.release} --env <ST-n> && tributary consolidate ${r.release}`,
      `  waive it (qa_lead):    tributary waive <F-…> --release ${r.release} --rationale "…"`,
      `then validate again: tributary validate ${r.release}`,
    );
  } else lines.push('', `${r.release} is ${r.state}: no open findings. Next: tributary load ${r.release}`);
  return lines.join('\n');
}

export function renderWaiver(f: FindingRow): string {
  return `${f.code} waived by ${f.waived_by}: ${f.rationale}\n${renderFinding(f)}\nValidate again to mark ${f.release} validated once no finding is open: tributary validate ${f.release}`;
}

export function renderFindingDecision(o: FindingDecisionOutcome): string {
  const b = o.blast;
  const head = o.applied
    ? `${o.finding.code} closed by ${o.finding.closed_by}: ${o.finding.resolution}`
    : `${o.finding.code}: plan for ${o.decision.action} (not applied)`;
  const lines = [head, `  blast radius: ${b.rewritten} reference(s) re-pointed, ${b.removed} row(s) removed, ${b.dependentCount} dependent row(s)`];
  for (const d of b.dependents.slice(0, 10)) lines.push(`  depends: ${d.entity} ${d.pk}`);
  if (o.applied) lines.push(`Validate again: tributary validate ${o.finding.release}`);
  return lines.join('\n');
}
