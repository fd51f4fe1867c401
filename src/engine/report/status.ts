import { releaseOrThrow } from '../../config/load.js';
import type { DecisionsRow, RunsRow } from '../../db/rows.js';
import type { Ctx } from '../kernel/context.js';
import { firstRow, InvariantError, must } from '../kernel/must.js';
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
  run?: {
    id: number;
    status: string;
    startedAt: Date;
    finishedAt: Date | null;
    startedBy: string;
    steps: Record<string, number>;
  };
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
type RunRow = Pick<RunsRow, 'id' | 'kind' | 'status' | 'started_by' | 'started_at' | 'finished_at' | 'steps' | 'counts' | 'error'>;

function runRow(ctx: Ctx, id: number): Promise<RunRow | undefined> {
  return ctx.db.control<RunsRow>('runs').where({ id }).first();
}

/** What detection counted, as a consolidation run records it in its `counts`. */
interface DetectedCounts {
  collected: number;
  conflicts: number;
  autoResolved: number;
  manual: number;
  byRule: Record<string, number>;
  byPriority: Record<string, number>;
}

/** A run's jsonb object column (steps, counts: objects by the schema's default), or an error naming it. */
function jsonObject(value: unknown, what: string): Record<string, unknown> {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  throw new InvariantError(`expected ${what} to be a JSON object, found ${JSON.stringify(value)}`);
}

export async function resultCounts(ctx: Ctx, runId: number): Promise<ResultCounts> {
  const run = must(await runRow(ctx, runId), `run ${runId}'s row in runs`);
  const detected = jsonObject(run.counts, `the counts of run ${runId}`) as unknown as DetectedCounts;
  const t = runTables(runId);
  const res = await ctx.db.control.raw<{ rows: { final: number; pending: number; deleted: number; merged: number; rekeyed: number }[] }>(
    `select count(*) filter (where status = 'final')::int as final,
            count(*) filter (where status = 'pending')::int as pending,
            count(*) filter (where status = 'deleted')::int as deleted,
            count(*) filter (where rule = 'complementary-merge')::int as merged,
            count(*) filter (where rule = 're-key')::int as rekeyed
       from ${t.result}`,
  );
  const dec: Pick<DecisionsRow, 'action' | 'blast'>[] = await ctx.db
    .control<DecisionsRow>('decisions')
    .where({ run_id: runId })
    .select('action', 'blast');
  const r = firstRow(res.rows, `the result counts of run ${runId}`);
  let merged = r.merged;
  let renamed = 0;
  for (const d of dec) {
    if (d.action === 'merge') merged += 1;
    if (d.action === 'keep-both') {
      const blast = jsonObject(d.blast, `the blast of a keep-both decision of run ${runId}`) as { renamed: unknown[] };
      renamed += blast.renamed.length;
    }
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
  const latest: RunRow | undefined = await ctx.db
    .control<RunsRow>('runs')
    .where({ release, kind: 'consolidate' })
    .orderBy('id', 'desc')
    .first();
  if (latest?.status === 'failed') status.lastFailure = { id: latest.id, error: latest.error ?? '', finishedAt: latest.finished_at };
  if (currentRunId) {
    const run = must(await runRow(ctx, currentRunId), `release ${release}'s current run (${currentRunId}) in runs`);
    status.run = {
      id: run.id,
      status: run.status,
      startedAt: run.started_at,
      finishedAt: run.finished_at,
      startedBy: run.started_by,
      steps: jsonObject(run.steps, `the steps of run ${run.id}`) as Record<string, number>,
    };
    const imported = (jsonObject(run.counts, `the counts of run ${run.id}`) as { imported?: ReleaseStatus['imported'] }).imported;
    if (run.kind === 'import' && imported) status.imported = imported;
    status.counts = await resultCounts(ctx, currentRunId);
    status.queue = await queueSummary(ctx, release);
  }
  if (latest?.status === 'running') {
    const { id, started_at: startedAt, started_by: startedBy } = latest;
    status.run = { id, status: 'running', startedAt, finishedAt: null, startedBy, steps: {} };
  }
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
  const { merged } = r;
  const extra = merged ? r.sources.filter((s) => Object.values(merged).includes(s.env)) : [];
  const versions = [...new Set([rep?.version, ...extra.map((s) => s.version)].filter((v): v is number => typeof v === 'number'))].sort(
    (a, b) => a - b,
  );
  const envs = versions.length
    ? [...new Set(r.sources.filter((s) => s.version !== undefined && versions.includes(s.version)).map((s) => s.env))]
    : [r.rep_env];
  return { versions, envs, ...(r.resolution ? { resolution: r.resolution } : {}), ...(r.merged ? { merged: r.merged } : {}) };
}

/** The consolidated dataset with provenance, streamed in pages (never whole tables in memory). */
export async function* resultRecords(
  ctx: Ctx,
  runId: number,
  entity: string,
  pageSize = 1000,
): AsyncGenerator<ResultRecord> {
  const t = runTables(runId);
  let after = '';
  for (;;) {
    const res = await ctx.db.control.raw<{ rows: ResultRow[] }>(
      `select r.entity, r.identity, r.pk, r.status, r.rule, r.reason, r.conflict, ${sourcesSql(t, 'r')} as sources,
              r.rep_env, r.rep_pk,
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
    const last = res.rows.at(-1);
    if (!last || res.rows.length < pageSize) return;
    after = last.identity;
  }
}
