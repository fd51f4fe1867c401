import { releaseOrThrow } from '../../config/load.js';
import type { Decision, Run } from '../../db/models.js';
import type { Ctx } from '../kernel/context.js';
import { queueSummary, type QueueSummary } from '../review/index.js';
import { runTables, sourcesSql } from '../kernel/workArea.js';
import { releaseState, type ReleaseState } from '../kernel/lifecycle.js';
import { locksOf, type LockRow } from '../gate/index.js';

/** The result of a release's current consolidation, with the counts QA leads report. */
export interface ResultCounts {
  collected: number;
  conflicts: number;
  autoResolved: number;
  manual: number;
  final: number;
  pending: number;
  merged: number;
  renamed: number;
  rekeyed: number;
  deleted: number;
  byRule: Record<string, number>;
  byPriority: Record<string, number>;
}

export interface ReleaseStatus {
  release: string;
  state: ReleaseState;
  features: { id: string; priority: string; owner: string }[];
  locks: LockRow[];
  run?: { id: number; status: string; startedAt: Date; finishedAt: Date | null; startedBy: string; steps: Record<string, number> };
  lastFailure?: { id: number; error: string; finishedAt: Date | null };
  counts?: ResultCounts;
  queue?: QueueSummary;
  /** On premises: the release arrived validated in a signed transfer package ("validated (imported)"). */
  imported?: { sourceRunId: number; digest: string; keyId: string };
}

/**
 * The status report reads runs and decisions through knex, not their objection models: the models would
 * load objection with every `tributary status` (src/lazy.ts).
 */
type RunRow = Pick<Run, 'id' | 'kind' | 'status' | 'started_by' | 'started_at' | 'finished_at' | 'steps' | 'counts' | 'error'>;

function runRow(ctx: Ctx, id: number): Promise<RunRow | undefined> {
  return ctx.db.control('runs').where({ id }).first();
}

/** The keys a keep-both decision renamed, from its `blast` (jsonb: `{ renamed: [...] }`). */
function renamedBy(blast: unknown): number {
  const renamed = (blast as { renamed?: unknown } | null)?.renamed;
  return Array.isArray(renamed) ? renamed.length : 0;
}

/** A run's `steps` (jsonb: milliseconds by step name). */
function stepsOf(steps: unknown): Record<string, number> {
  return typeof steps === 'object' && steps !== null ? (steps as Record<string, number>) : {};
}

export async function resultCounts(ctx: Ctx, runId: number): Promise<ResultCounts> {
  const run = (await runRow(ctx, runId))!;
  const detected = run.counts as unknown as { collected: number; conflicts: number; autoResolved: number; manual: number; byRule: Record<string, number>; byPriority: Record<string, number> };
  const t = runTables(runId);
  const res = await ctx.db.control.raw<{ rows: { final: number; pending: number; deleted: number; merged: number; rekeyed: number }[] }>(
    `select count(*) filter (where status = 'final')::int as final,
            count(*) filter (where status = 'pending')::int as pending,
            count(*) filter (where status = 'deleted')::int as deleted,
            count(*) filter (where rule = 'complementary-merge')::int as merged,
            count(*) filter (where rule = 're-key')::int as rekeyed
       from ${t.result}`,
  );
  const dec: Pick<Decision, 'action' | 'blast'>[] = await ctx.db.control('decisions').where({ run_id: runId }).select('action', 'blast');
  const r = res.rows[0]!;
  let merged = r.merged;
  let renamed = 0;
  for (const d of dec) {
    if (d.action === 'merge') merged += 1;
    if (d.action === 'keep-both') renamed += renamedBy(d.blast);
  }
  return {
    collected: detected.collected,
    conflicts: detected.conflicts,
    autoResolved: detected.autoResolved,
    manual: detected.manual,
    final: r.final,
    pending: r.pending,
    merged,
    renamed,
    rekeyed: r.rekeyed,
    deleted: r.deleted,
    byRule: detected.byRule,
    byPriority: detected.byPriority,
  };
}

export async function releaseStatus(ctx: Ctx, release: string): Promise<ReleaseStatus> {
  const plan = releaseOrThrow(ctx.config, release);
  const { state, currentRunId } = await releaseState(ctx.db.control, release);
  const status: ReleaseStatus = {
    release,
    state,
    features: [...plan.features.values()].map((f) => ({ id: f.id, priority: f.priority, owner: f.owner })),
    locks: await locksOf(ctx, release),
  };
  const latest: RunRow | undefined = await ctx.db.control('runs').where({ release, kind: 'consolidate' }).orderBy('id', 'desc').first();
  if (latest?.status === 'failed') status.lastFailure = { id: latest.id, error: latest.error ?? '', finishedAt: latest.finished_at };
  if (currentRunId) {
    const run = (await runRow(ctx, currentRunId))!;
    status.run = { id: run.id, status: run.status, startedAt: run.started_at, finishedAt: run.finished_at, startedBy: run.started_by, steps: stepsOf(run.steps) };
    const imported = (run.counts as { imported?: ReleaseStatus['imported'] }).imported;
    if (run.kind === 'import' && imported) status.imported = imported;
    status.counts = await resultCounts(ctx, currentRunId);
    status.queue = await queueSummary(ctx, release);
  }
  if (latest?.status === 'running') status.run = { id: latest.id, status: 'running', startedAt: latest.started_at, finishedAt: null, startedBy: latest.started_by, steps: {} };
  return status;
}

export interface ResultRecord {
  entity: string;
  pk: string;
  status: string;
  rule: string | null;
  reason: string | null;
  conflict: string | null;
  sources: { env: string; pk: string; feature: string | null; created_by: string | null; version?: number }[];
  /**
   * Where the row's values came from: the version(s) and env(s) kept (a merge's too), and the automatic
   * resolution (A-…) that chose them. A single record's row has no versions: its one env.
   */
  from: { versions: number[]; envs: string[]; resolution?: string; merged?: Record<string, string> };
  data: Record<string, unknown>;
}

interface ResultRow extends Omit<ResultRecord, 'from'> {
  identity: string;
  rep_env: string;
  rep_pk: string;
  resolution: string | null;
  merged: Record<string, string> | null;
}

/** The version(s) and env(s) a result row was made of: its representative's version, and a merge's other versions. */
function provenance(r: ResultRow): ResultRecord['from'] {
  const rep = r.sources.find((s) => s.env === r.rep_env && s.pk === r.rep_pk);
  const extra = r.merged ? r.sources.filter((s) => Object.values(r.merged!).includes(s.env)) : [];
  const versions = [...new Set([rep?.version, ...extra.map((s) => s.version)].filter((v): v is number => typeof v === 'number'))].sort((a, b) => a - b);
  const envs = versions.length ? [...new Set(r.sources.filter((s) => versions.includes(s.version!)).map((s) => s.env))] : [r.rep_env];
  return { versions, envs, ...(r.resolution ? { resolution: r.resolution } : {}), ...(r.merged ? { merged: r.merged } : {}) };
}

/** The consolidated dataset with provenance, streamed in pages (never whole tables in memory). */
export async function* resultRecords(ctx: Ctx, runId: number, entity: string, pageSize = 1000): AsyncGenerator<ResultRecord> {
  const t = runTables(runId);
  let after = '';
  for (;;) {
    const res = await ctx.db.control.raw<{ rows: ResultRow[] }>(
      `select r.entity, r.identity, r.pk, r.status, r.rule, r.reason, r.conflict, ${sourcesSql(t, 'r')} as sources, r.rep_env, r.rep_pk,
              a.code as resolution, a.detail->'merged' as merged, r.data
         from ${t.result} r
         left join auto_resolutions a on a.run_id = ? and a.entity = r.entity and a.identity = r.identity
        where r.entity = ? and r.identity > ? order by r.identity limit ?`,
      [runId, entity, after, pageSize],
    );
    for (const row of res.rows) {
      const { identity: _i, rep_env: _e, rep_pk: _p, resolution: _r, merged: _m, ...rest } = row;
      yield { ...rest, from: provenance(row) };
    }
    if (res.rows.length < pageSize) return;
    after = res.rows[res.rows.length - 1]!.identity;
  }
}
