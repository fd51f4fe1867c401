import { releaseOrThrow } from '../../config/load.js';
import type { ConflictsRow, LoadsRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import { currentRunId, runTables, sourcesSql } from '../kernel/workArea.js';
import type { Ctx } from '../kernel/context.js';
import { decisionOf, type RecordedDecision } from '../review/index.js';

/**
 * Lineage: where a consolidated record came from (envs, features, creators) and every rule or
 * decision that shaped it, found by its final key or by any source key it had in an ST env.
 */
export interface Lineage {
  entity: string;
  pk: string;
  status: string;
  identity: string;
  sources: { env: string; pk: string; feature: string | null; created_by: string | null }[];
  rule: string | null;
  reason: string | null;
  conflict?: { code: string; kind: string; priority: string; decision?: RecordedDecision };
  rekeyedFrom: { env: string; oldPk: string }[];
  loaded?: { env: string; at: Date };
}

/** A row of the consolidation's result table (a work-area table, not a control table), as lineage reads it. */
interface ResultLine {
  identity: string;
  pk: string;
  status: string;
  sources: Lineage['sources'];
  rule: string | null;
  reason: string | null;
  conflict: string | null;
}

export async function why(ctx: Ctx, entity: string, key: string, release: string): Promise<Lineage[]> {
  releaseOrThrow(ctx.config, release);
  if (!ctx.config.entities.some((e) => e.name === entity)) {
    throw new TributaryError('usage', `unknown entity "${entity}" (dataset: ${ctx.config.entities.map((e) => e.name).join(', ')})`);
  }
  const runId = await currentRunId(ctx, release);
  const t = runTables(runId);
  const rows = await ctx.db.control.raw<{ rows: ResultLine[] }>(
    `select r.identity, r.pk, r.status, ${sourcesSql(t, 'r')} as sources, r.rule, r.reason, r.conflict from ${t.result} r
      where r.entity = ?
        and (r.pk = ? or split_part(r.identity, '#', 1) in (select identity from ${t.records} where entity = ? and pk = ?))
      order by r.pk`,
    [entity, key, entity, key],
  );
  if (rows.rows.length === 0) {
    throw new TributaryError(
      'usage',
      `no ${entity} record with key ${key} in ${release}'s consolidation (neither a final key nor a source key)`,
    );
  }
  const load = await ctx.db.control<LoadsRow>('loads').where({ release, run_id: runId, entity }).orderBy('id', 'desc').first();
  const out: Lineage[] = [];
  for (const r of rows.rows) {
    const km = await ctx.db.control.raw<{ rows: { env: string; old_pk: string }[] }>(
      `select env, old_pk from ${t.keyMap} where entity = ? and new_pk = ? order by env, old_pk`,
      [entity, r.pk],
    );
    const lin: Lineage = {
      entity,
      pk: r.pk,
      status: r.status,
      identity: r.identity,
      sources: r.sources,
      rule: r.rule,
      reason: r.reason,
      rekeyedFrom: km.rows.map((k) => ({ env: k.env, oldPk: k.old_pk })),
      ...(load && r.status === 'final' ? { loaded: { env: load.env, at: load.loaded_at } } : {}),
    };
    if (r.conflict) {
      const c = await ctx.db.control<ConflictsRow>('conflicts').where({ run_id: runId, code: r.conflict }).first();
      if (c) {
        const d = await decisionOf(ctx, c.id);
        lin.conflict = { code: c.code, kind: c.kind, priority: c.priority, ...(d ? { decision: d } : {}) };
      }
    }
    out.push(lin);
  }
  return out;
}
