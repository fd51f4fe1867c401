import type { ConflictRow, DecisionOutcome, ReferenceForms } from '../engine/review/index.js';
import type { ResultCounts, ReleaseStatus, Lineage } from '../engine/report/index.js';
import type { TagResult } from '../engine/gate/index.js';
import type { LoadResult } from '../engine/load/index.js';
import type { ExportResult, ImportResult } from '../engine/transfer/index.js';

/** Plain-text renderings for the CLI: pure functions of domain objects. */
const pct = (n: number, of: number) => (of === 0 ? '0%' : `${((100 * n) / of).toFixed(1)}%`);

export function renderTag(r: TagResult): string {
  const lines = [`Locked ${r.release} in ${r.envs.join(', ')}:`];
  for (const l of r.locks) lines.push(`  ${l.env.padEnd(8)} ${l.table.padEnd(16)} ${String(l.rows).padStart(7)} rows  checksum ${l.checksum}`);
  return lines.join('\n');
}

export function renderOffenders(r: TagResult): string {
  const lines = [`${r.offenderCount} row(s) of ${r.release} lack their tags; nothing was locked:`];
  for (const o of r.offenders) lines.push(`  ${o.env.padEnd(8)} ${o.table.padEnd(16)} key ${o.key}: missing ${o.missing.join(', ')}`);
  if (r.offenderCount > r.offenders.length) lines.push(`  … and ${r.offenderCount - r.offenders.length} more`);
  return lines.join('\n');
}

export function renderCounts(release: string, c: ResultCounts, steps?: Record<string, number>): string {
  const lines = [
    `Consolidation of ${release}`,
    `  records collected     ${c.collected}`,
    `  conflicts detected    ${c.conflicts}`,
    `  auto-resolved         ${c.autoResolved} (${pct(c.autoResolved, c.conflicts)})`,
    `  manual review         ${c.manual} (${pct(c.manual, c.conflicts)})  P1 ${c.byPriority.P1 ?? 0} · P2 ${c.byPriority.P2 ?? 0} · P3 ${c.byPriority.P3 ?? 0}`,
    `  final dataset         ${c.final} records${c.pending ? ` (+${c.pending} awaiting review)` : ''}`,
    `  merged ${c.merged} · renamed ${c.renamed} · re-keyed ${c.rekeyed} · deleted ${c.deleted}`,
    `  by rule: ${Object.entries(c.byRule).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`,
  ];
  if (steps && Object.keys(steps).length > 0) lines.push(`  time: ${Object.entries(steps).map(([k, v]) => `${k} ${(v / 1000).toFixed(2)}s`).join(', ')}`);
  return lines.join('\n');
}

export function renderQueue(release: string, rows: ConflictRow[]): string {
  if (rows.length === 0) return `Review queue of ${release}: empty`;
  const lines = [`Review queue of ${release} (${rows.length}):`];
  for (const c of rows) {
    const who = c.status === 'decided' ? `decided by ${c.decided_by}` : c.assigned_to ? `assigned to ${c.assigned_to}` : '';
    lines.push(`  ${c.code}  ${c.priority}  ${c.kind.padEnd(21)} ${c.entity} ${c.key_label}${who ? `  [${who}]` : ''}`);
    lines.push(`         ${c.detail.reason}`);
  }
  return lines.join('\n');
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '∅';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

export function renderConflict(c: ConflictRow): string {
  const lines = [`${c.code}  ${c.priority}  ${c.kind}  ${c.entity} ${c.key_label}  (${c.status}${c.decided_by ? ` by ${c.decided_by}` : ''})`, `  ${c.detail.reason}`];
  if (c.detail.versions) {
    const differing = new Set(c.detail.differing ?? []);
    for (const v of c.detail.versions) {
      const mark = v.no === c.detail.suggested ? '  ← suggested' : '';
      lines.push(`  version ${v.no}: ${v.envs.join(', ')} (key ${v.pks.join(', ')}) · ${v.feature ?? '?'} · by ${v.created_by ?? '?'} · ${v.created_at ?? '?'}${v.children !== undefined ? ` · ${v.children} child row(s)` : ''}${mark}`);
      const attrs = Object.entries(v.data).filter(([k]) => differing.has(k));
      for (const [k, val] of attrs) lines.push(`      * ${k}: ${cell(val)}`);
    }
    lines.push(`  decide: tributary decide ${c.code} --release ${c.release} --keep <version> | --keep-both | --merge attr=<version> … | --delete [--cascade]  --rationale "…"`);
  } else if (c.detail.record) {
    lines.push(`  record ${c.entity} ${c.detail.record.pk} from ${c.detail.record.env}: ${c.detail.column} = ${c.detail.value}`);
    if (c.detail.reference) lines.push(`  reference: ${referenceText(c.detail.reference, c.detail.parent ?? 'parent')}`);
    lines.push(`  decide: tributary decide ${c.code} --release ${c.release} --repoint <key> | --delete [--cascade] | --waive  --rationale "…"`);
  }
  return lines.join('\n');
}

/** A reference in both forms: as the record holds it, and as its env's key map reads the collected key. */
export function referenceText(r: ReferenceForms, parent: string): string {
  const held = `the record holds ${r.column} = ${r.held ?? '∅'}`;
  const mapped = r.mapped === null ? `${r.env}'s key map has no ${parent} ${r.collected}` : `${r.env}'s key map reads ${r.collected} as ${parent} ${r.mapped}`;
  return `${held}; collected as ${r.collected} in ${r.env}, ${mapped}`;
}

export function renderDecision(o: DecisionOutcome): string {
  const b = o.blast;
  const lines = [
    o.applied ? `${o.conflict.code} decided by ${o.decidedBy}: ${o.decision.action} — ${o.rationale}` : `${o.conflict.code}: plan for ${o.decision.action} (not applied)`,
    `  blast radius: ${b.rewritten} child row(s) re-pointed, ${b.removed} row(s) removed, ${b.renamed.length} renamed, ${b.dependentCount} dependent row(s)`,
  ];
  for (const r of b.renamed) lines.push(`  version ${r.version} → key ${r.pk}${Object.keys(r.values).length ? `, ${Object.entries(r.values).map(([k, v]) => `${k} = ${v}`).join(', ')}` : ''}`);
  for (const d of b.dependents.slice(0, 10)) lines.push(`  depends: ${d.entity} ${d.pk}`);
  for (const w of o.warnings ?? []) lines.push(`  warning: ${w}`);
  return lines.join('\n');
}

export function renderStatus(s: ReleaseStatus): string {
  const lines = [`Release ${s.release}: ${s.state}`, `  features: ${s.features.map((f) => `${f.id} (${f.priority}, ${f.owner})`).join(', ')}`];
  if (s.imported) lines.push(`  validated (imported): cloud run #${s.imported.sourceRunId}, package ${s.imported.digest.slice(0, 16)}…, signed by key ${s.imported.keyId}`);
  else if (s.locks.length > 0) {
    const envs = [...new Set(s.locks.map((l) => l.env))];
    lines.push(`  locked: ${envs.map((e) => `${e} ${s.locks.filter((l) => l.env === e).reduce((n, l) => n + Number(l.row_count), 0)} rows`).join(', ')}`);
  } else lines.push('  not locked yet: tributary tag ' + s.release);
  if (s.run) lines.push(`  run #${s.run.id} ${s.run.status}, started by ${s.run.startedBy} at ${new Date(s.run.startedAt).toISOString()}`);
  if (s.lastFailure) lines.push(`  last run #${s.lastFailure.id} failed: ${s.lastFailure.error}`);
  if (s.counts) lines.push(renderCounts(s.release, s.counts, s.run?.steps).split('\n').slice(1).join('\n'));
  if (s.queue) lines.push(`  queue: open P1 ${s.queue.open.P1} · P2 ${s.queue.open.P2} · P3 ${s.queue.open.P3}; decided ${s.queue.decided} of ${s.queue.total}`);
  return lines.join('\n');
}

export function renderLineage(release: string, rows: Lineage[]): string {
  return rows
    .map((l) => {
      const lines = [`${l.entity} ${l.pk} in ${release}: ${l.status}${l.loaded ? `, loaded into ${l.loaded.env} at ${new Date(l.loaded.at).toISOString()}` : ''}`];
      lines.push(`  from: ${l.sources.map((s) => `${s.env} (key ${s.pk}, ${s.feature ?? 'no feature'}, by ${s.created_by ?? '?'})`).join('; ')}`);
      if (l.rekeyedFrom.length > 0) lines.push(`  key map: ${l.rekeyedFrom.map((k) => `${k.env} ${k.oldPk} → ${l.pk}`).join(', ')}`);
      lines.push(`  rule: ${l.rule ?? 'no conflict (single record)'}${l.reason ? ` — ${l.reason}` : ''}`);
      if (l.conflict) {
        const d = l.conflict.decision;
        lines.push(`  conflict ${l.conflict.code} (${l.conflict.priority} ${l.conflict.kind})${d ? `: decided by ${d.by} at ${new Date(d.at).toISOString()}: ${d.decision.action} — ${d.rationale}` : ': open'}`);
      }
      return lines.join('\n');
    })
    .join('\n\n');
}

export function renderLoad(r: LoadResult): string {
  const lines = [`Loaded ${r.release} into ${r.env} (run #${r.runId}) in ${(r.ms / 1000).toFixed(2)}s, verified on both sides:`];
  for (const t of r.tables) lines.push(`  ${t.table.padEnd(16)} ${String(t.rows).padStart(8)} rows  checksum ${t.checksum}`);
  return lines.join('\n');
}

export function renderExport(r: ExportResult): string {
  const lines = [`Exported ${r.release} (run #${r.runId}) to ${r.dir} in ${(r.ms / 1000).toFixed(2)}s, signed by key ${r.keyId}:`];
  for (const t of r.tables) lines.push(`  ${t.table.padEnd(16)} ${String(t.rows).padStart(8)} rows  checksum ${t.checksum}  ${t.bytes} bytes`);
  lines.push(`  ${r.events} audit event(s); package digest (SHA-256 of manifest.json) ${r.digest}`);
  lines.push('Move the folder with any file transfer you trust; on premises: tributary load <release> --from <dir>');
  return lines.join('\n');
}

export function renderImport(r: ImportResult): string {
  const lines = [`Imported ${r.release} (cloud run #${r.sourceRunId}, here run #${r.runId}) into ${r.env} in ${(r.ms / 1000).toFixed(2)}s, verified against the signed manifest (key ${r.keyId}):`];
  for (const t of r.tables) lines.push(`  ${t.table.padEnd(16)} ${String(t.rows).padStart(8)} rows  checksum ${t.checksum}`);
  lines.push(`  ${r.events} travelled audit event(s); package digest ${r.digest}`);
  return lines.join('\n');
}

export function renderCarried(c: { carried: number; reopened: string[] }): string {
  const parts: string[] = [];
  if (c.carried > 0) parts.push(`kept ${c.carried} earlier decision(s) whose records are unchanged`);
  if (c.reopened.length > 0) parts.push(`re-opened ${c.reopened.join(', ')} (their records changed since the decision)`);
  return parts.length ? `Previous consolidation: ${parts.join('; ')}.` : '';
}
