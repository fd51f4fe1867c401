import type { Knex } from 'knex';
import { releaseOrThrow } from '../../config/load.js';
import { suggest, TributaryError } from '../../errors.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { runTables, currentRunId } from '../kernel/workArea.js';
import { CROSS_RELEASE, openPromoteRunId } from './crossRelease.js';
import { literal } from '../kernel/sql.js';
import { childEntities } from '../kernel/entities.js';
import { isAutoCode } from './autoResolved.js';
import type { ConflictRow } from './types.js';
import { referenceForms } from './targets.js';
import { must } from '../kernel/must.js';

/** The review queue: listing, showing with live child counts, and handing out the next conflict. */

/**
 * The runs whose conflicts make up a release's review queue: its current consolidation and, while a
 * promotion waits on cross-release conflicts, its latest open promote run (codes C-X…, unique per release).
 */
export async function queueRunIds(db: Knex | Knex.Transaction, release: string): Promise<number[]> {
  const current = await currentRunId({ db: { control: db as Knex } }, release);
  const promote = await openPromoteRunId(db, release);
  return promote ? [current, promote] : [current];
}

export interface ListFilter {
  status?: 'open' | 'decided' | 'all';
  priority?: string;
  limit?: number;
}

export async function listConflicts(ctx: Ctx, release: string, filter: ListFilter = {}): Promise<ConflictRow[]> {
  releaseOrThrow(ctx.config, release);
  const runIds = await queueRunIds(ctx.db.control, release);
  const q = ctx.db.control('conflicts').whereIn('run_id', runIds).orderBy([{ column: 'priority' }, { column: 'code' }]);
  const status = filter.status ?? 'open';
  if (status !== 'all') q.where({ status });
  if (filter.priority) {
    if (!/^P[123]$/.test(filter.priority)) throw new TributaryError('usage', `--priority must be P1, P2 or P3 (got "${filter.priority}")`);
    q.where({ priority: filter.priority });
  }
  if (filter.limit) q.limit(filter.limit);
  return q;
}

export async function getConflict(
  ctx: Ctx,
  release: string,
  code: string,
  db: Knex | Knex.Transaction = ctx.db.control,
  forUpdate = false,
): Promise<ConflictRow> {
  const runIds = await queueRunIds(db, release);
  const q = db<ConflictRow>('conflicts').whereIn('run_id', runIds).where({ code: code.toUpperCase() }).first();
  if (forUpdate) q.forUpdate();
  const row = await q;
  if (!row) {
    // a mistyped code: the one it most likely meant
    const close = suggest(code.toUpperCase(), (await db('conflicts').whereIn('run_id', runIds).pluck('code')) as string[]);
    const hint = close ? `: did you mean ${close}?` : ` (tributary conflicts ${release} lists them)`;
    const message = `no conflict ${code} in release ${release}'s current consolidation or open promotion${hint}`;
    throw new TributaryError('unknown_conflict', message, { code, ...(close ? { suggestion: close } : {}) });
  }
  return row as ConflictRow;
}

/** Finds which release a bare code belongs to, when the caller did not say. */
export async function releaseOfCode(ctx: Ctx, code: string): Promise<string> {
  const k = ctx.db.control;
  const rows = await k('conflicts as c')
    .where('c.code', code.toUpperCase())
    .where((w) =>
      w
        .whereIn('c.run_id', k('release_states').whereNotNull('current_run_id').select('current_run_id'))
        .orWhereIn('c.run_id', k('runs').where({ kind: 'promote', status: 'open' }).select('id')),
    )
    .select('c.release');
  if (rows.length === 0 && isAutoCode(code)) {
    const current = k('release_states').whereNotNull('current_run_id').select('current_run_id');
    rows.push(...(await k('auto_resolutions as a').where('a.code', code.toUpperCase()).whereIn('a.run_id', current).select('a.release')));
  }
  if (rows.length === 0) {
    throw new TributaryError('unknown_conflict', `no conflict ${code} in any release's current consolidation or open promotion`, { code });
  }
  if (rows.length > 1) {
    throw new TributaryError('usage', `${code} exists in several releases (${rows.map((r) => r.release).join(', ')}): pass --release`);
  }
  return rows[0].release as string;
}

/** Child rows hanging on each version's records, counted over every child entity. */
export async function childCounts(
  ctx: Ctx,
  runId: number,
  entity: string,
  records: { env: string; pk: string; key: string }[],
): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  const t = runTables(runId);
  const children = childEntities(ctx.config, entity);
  if (records.length === 0 || children.length === 0) return counts;
  for (const { e, column } of children) {
    const res = await ctx.db.control.raw<{ rows: { key: string; n: number }[] }>(
      `select x.key, count(c.*)::int as n
         from unnest(?::text[], ?::text[], ?::text[]) as x(env, pk, key)
         join ${t.records} c on c.entity = ? and c.env = x.env and c.data->>${literal(column)} = x.pk
        group by x.key`,
      [records.map((x) => x.env), records.map((x) => x.pk), records.map((x) => x.key), e.name],
    );
    for (const row of res.rows) counts.set(row.key, (counts.get(row.key) ?? 0) + row.n);
  }
  return counts;
}

/** A conflict with live related-data counts per version. */
export async function showConflict(ctx: Ctx, release: string, code: string): Promise<ConflictRow> {
  const c = await getConflict(ctx, release, code);
  // a cross-release conflict's child counts were taken in master and staging when promote found it
  if (c.detail.versions && c.kind !== CROSS_RELEASE) {
    const recs = c.detail.versions.flatMap((v) =>
      v.envs.map((env, i) => ({ env, pk: must(v.pks[i], `the key of version ${v.no} in ${env}`), key: String(v.no) })),
    );
    const counts = await childCounts(ctx, c.run_id, c.entity, recs);
    for (const v of c.detail.versions) v.children = counts.get(String(v.no)) ?? 0;
  }
  // a reference conflict: the key as the record holds it now, and as its env's key map reads it
  if (!c.detail.versions && c.kind !== CROSS_RELEASE) {
    const forms = await referenceForms(ctx, c);
    if (forms) c.detail.reference = forms;
  }
  return c;
}

/**
 * "Review next": hands the actor the next unassigned open conflict of the highest priority (or the one
 * already assigned to them). SKIP LOCKED makes two reviewers asking at once get different conflicts.
 */
export async function nextConflict(ctx: Ctx, release: string, actor: Actor): Promise<ConflictRow | undefined> {
  releaseOrThrow(ctx.config, release);
  const runIds = await queueRunIds(ctx.db.control, release);
  return ctx.db.control.transaction(async (trx) => {
    const mine = await trx<ConflictRow>('conflicts')
      .whereIn('run_id', runIds)
      .where({ status: 'open', assigned_to: actor })
      .orderBy(['priority', 'code'])
      .first();
    if (mine) return mine as ConflictRow;
    const res = await trx.raw<{ rows: ConflictRow[] }>(
      `update conflicts set assigned_to = ?, assigned_at = now()
        where id = (select id from conflicts where run_id = any(?::int[]) and status = 'open' and assigned_to is null
                     order by priority, code limit 1 for update skip locked)
        returning *`,
      [actor, runIds],
    );
    return res.rows[0];
  });
}

export interface QueueSummary {
  release: string;
  runId: number;
  open: Record<string, number>;
  decided: number;
  total: number;
}

export async function queueSummary(ctx: Ctx, release: string): Promise<QueueSummary> {
  const runIds = await queueRunIds(ctx.db.control, release);
  const runId = must(runIds[0], `the current run of ${release}`);
  const rows = await ctx.db.control('conflicts')
    .whereIn('run_id', runIds)
    .groupBy('status', 'priority')
    .select('status', 'priority')
    .count<{ status: string; priority: string; count: number }[]>('* as count');
  const open: Record<string, number> = { P1: 0, P2: 0, P3: 0 };
  let decided = 0;
  let total = 0;
  for (const r of rows) {
    const n = Number(r.count);
    total += n;
    if (r.status === 'open') open[r.priority] = (open[r.priority] ?? 0) + n;
    else decided += n;
  }
  return { release, runId, open, decided, total };
}


/** The open conflicts of these runs assigned to a reviewer (the App Home's "assigned to you"). */
export async function assignedConflicts(ctx: Ctx, runIds: number[], user: string): Promise<ConflictRow[]> {
  if (runIds.length === 0) return [];
  const rows = await ctx.db.control('conflicts')
    .whereIn('run_id', runIds)
    .where({ status: 'open', assigned_to: user })
    .orderBy(['priority', 'code']);
  return rows as ConflictRow[];
}

/** The release a pattern decision is for when none is named: the only release with open conflicts. */
export async function onlyReleaseWithOpenConflicts(ctx: Ctx): Promise<string> {
  const rows = await ctx.db.control('conflicts as c')
    .join('release_states as s', 's.current_run_id', 'c.run_id')
    .where('c.status', 'open')
    .distinct('c.release')
    .orderBy('c.release');
  if (rows.length === 1) return rows[0].release as string;
  const several = `several releases have open conflicts (${rows.map((r) => r.release).join(', ')}): pass --release`;
  throw new TributaryError('usage', rows.length === 0 ? 'no release has open conflicts' : several);
}
