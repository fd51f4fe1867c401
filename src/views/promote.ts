import type { PromoteResult } from '../engine/promote/index.js';

/** Plain-text renderings of `tributary promote` for the CLI: pure functions of domain objects. */
export function renderPromote(r: PromoteResult): string {
  const lines = [`Promoted ${r.release} into ${r.env} in ${(r.ms / 1000).toFixed(2)}s, one partition per table, verified against staging:`];
  for (const t of r.tables) {
    const skipped = t.skipped ? `  (${t.skipped} not promoted${t.autoResolved ? `: ${t.autoResolved} exact duplicate(s) of earlier releases` : ''})` : '';
    lines.push(`  ${t.table.padEnd(16)} ${t.partition.padEnd(24)} ${String(t.rows).padStart(8)} rows  checksum ${t.checksum}${skipped}`);
  }
  if (r.autoResolved.total > 0) {
    lines.push(`Auto-resolved (exact-duplicate, kept once, from the earlier release): ${r.autoResolved.total}`);
    for (const a of r.autoResolved.items.slice(0, 10)) lines.push(`  ${a.entity} ${a.key} (${a.release} already has it)`);
    if (r.autoResolved.total > 10) lines.push(`  … and ${r.autoResolved.total - 10} more`);
  }
  if (r.decisions.length > 0) {
    lines.push(`Decisions applied (${r.decisions.length}):`);
    for (const d of r.decisions.slice(0, 20)) lines.push(`  ${d.code} ${d.action.padEnd(11)} ${d.entity} ${d.key}: ${d.effect}`);
    if (r.decisions.length > 20) lines.push(`  … and ${r.decisions.length - 20} more`);
  }
  if (r.replaced.length > 0) lines.push(`Rows of earlier releases deleted from master by those decisions: ${r.replaced.slice(0, 10).map((x) => `${x.entity} ${x.pk} (${x.release})`).join(', ')}${r.replaced.length > 10 ? ', …' : ''}`);
  return lines.join('\n');
}

export interface PromoteRefusal {
  release: string;
  conflicts: { code: string; priority: string; entity: string; key: string; reason: string }[];
  issues: string[];
}

export function renderPromoteRefused(r: PromoteRefusal): string {
  const lines = [`Promotion of ${r.release} refused.`];
  if (r.conflicts.length > 0) {
    lines.push(`${r.conflicts.length} cross-release conflict(s) with master's earlier releases are open:`);
    for (const c of r.conflicts.slice(0, 25)) lines.push(`  ${c.code}  ${c.priority}  ${c.entity} ${c.key}`, `         ${c.reason}`);
    if (r.conflicts.length > 25) lines.push(`  … and ${r.conflicts.length - 25} more`);
    lines.push(
      `Decide them: tributary conflicts show ${r.release} ${r.conflicts[0]!.code}, then tributary decide ${r.conflicts[0]!.code} --keep 1 (master's row) | --keep 2 (${r.release}'s row) | --keep-both [--rename 2.<column>=<value>] | --delete --rationale "…"`,
      `then promote again: tributary promote ${r.release}`,
    );
  }
  for (const i of r.issues) lines.push(i);
  return lines.join('\n');
}
