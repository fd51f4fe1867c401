import type pg from 'pg';
import { pgClient } from '../../db/pg.js';
import { type EntitySpec, type EnvSpec, envByRole, releaseOrThrow } from '../../config/load.js';
import type { ApprovalsRow, LoadsRow, RunsRow, TestRunsRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import { redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { failpoint } from '../kernel/failpoints.js';
import { byColumnName, rowHashOfTexts, type TableColumn } from '../kernel/checksum.js';
import { ensureUserTypes, userTypesOf, type UserType } from '../kernel/types.js';
import { cellsSelectSql, copyRows, requireChecksum, targetChecksum } from '../kernel/copy.js';
import { currentRunId, runTables } from '../kernel/workArea.js';
import { envError, type Actor, type Ctx } from '../kernel/context.js';
import { passGate, releaseState, transition, type ReleaseState } from '../kernel/lifecycle.js';
import { ident, literal, qualified } from '../kernel/sql.js';
import { firstRow, must } from '../kernel/must.js';

/**
 * Load: the validated dataset of a release into the staging environment's tables (same schema as the
 * ST tables, created if absent), in one transaction, parents before children; then, before commit,
 * per table the row count and an order-independent checksum computed the same way on both sides
 * (DESIGN.md, "Checksums"). Loading again replaces the release's rows. Any failure rolls everything
 * back and names the table.
 */
export interface LoadedTable {
  entity: string;
  table: string;
  rows: number;
  checksum: string;
}

export interface LoadResult {
  release: string;
  runId: number;
  env: string;
  tables: LoadedTable[];
  ms: number;
}

export interface TableShape {
  columns: (TableColumn & { notNull: boolean; num: number })[];
  primaryKey: string[];
  /** The enums, domains and composites its columns use (created in staging where missing). */
  types: UserType[];
}

const SHAPE_SQL = `select a.attname as name, format_type(a.atttypid, a.atttypmod) as type,
           a.attnotnull as "notNull", a.attnum as num
    from pg_attribute a where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped order by a.attnum`;
const PK_SQL = `select a.attname as name from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
    where i.indrelid = to_regclass($1) and i.indisprimary order by array_position(i.indkey::int2[], a.attnum)`;

/** The ST table's shape, from the highest-precedence source env that has it. */
export async function sourceShape(ctx: Ctx, e: EntitySpec): Promise<TableShape> {
  for (const env of ctx.config.sources) {
    const client = pgClient(ctx.db.envParams(env) as pg.ClientConfig);
    client.on('error', () => undefined);
    try {
      await client.connect();
      const cols = await client.query<TableShape['columns'][number]>(SHAPE_SQL, [qualified(env.schema, e.table)]);
      if (cols.rows.length === 0) continue;
      const pk = await client.query<{ name: string }>(PK_SQL, [qualified(env.schema, e.table)]);
      const types = await userTypesOf(client, qualified(env.schema, e.table));
      return { columns: cols.rows, primaryKey: pk.rows.map((r) => r.name), types };
    } catch (err) {
      throw envError(ctx, env, err);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  throw new TributaryError('config_invalid', `entity ${e.name}: table ${e.table} exists in no source env`);
}

export function createTableSql(table: string, shape: TableShape, temp = false): string {
  const cols = shape.columns.map((c) => `${ident(c.name)} ${c.type}${c.notNull && !temp ? ' not null' : ''}`);
  if (shape.primaryKey.length > 0 && !temp) cols.push(`primary key (${shape.primaryKey.map(ident).join(', ')})`);
  return `create ${temp ? 'temp ' : ''}table ${temp ? '' : 'if not exists '}${table} (${cols.join(', ')})${temp ? ' on commit drop' : ''}`;
}

/**
 * The count and checksum the release's final rows of one entity must have in staging: their cells' texts,
 * as collected from the sources (or typed in a decision), hashed in the control database. Never computed
 * from the copy being checked.
 */
async function expectedChecksum(ctx: Ctx, runId: number, e: EntitySpec, shape: TableShape): Promise<{ rows: number; checksum: string }> {
  const t = runTables(runId);
  const res = await ctx.db.control.raw<{ rows: { rows: number; checksum: string }[] }>(
    `select count(*)::int as rows, coalesce(sum(${rowHashOfTexts(finalCells(shape))}), 0)::text as checksum
       from ${t.result} r where r.entity = ? and r.status = 'final'`,
    [e.name],
  );
  return firstRow(res.rows, `the count and checksum of entity ${e.name}'s final rows`);
}

/**
 * The control side's figures per entity: those validation computed over the same final rows (any change to
 * them since sends the release back to validation), else computed while the rows travel (another connection).
 */
export async function expectedFigures(ctx: Ctx, runId: number, shapes: Map<string, TableShape>): Promise<Figures> {
  const run: Pick<RunsRow, 'counts'> | undefined = await ctx.db.control<RunsRow>('runs').where({ id: runId }).first('counts');
  const validated = (run?.counts as { validated?: Record<string, { rows: number; checksum: string }> } | undefined)?.validated ?? {};
  const expected: Figures = new Map();
  for (const e of ctx.config.entities) {
    const figures = validated[e.name];
    const p = figures
      ? Promise.resolve(figures)
      : expectedChecksum(ctx, runId, e, must(shapes.get(e.name), `the shape of entity ${e.name}'s table`));
    p.catch(() => undefined);
    expected.set(e.name, p);
  }
  return expected;
}

/** A final row's cells in column-name order (the checksum's order). */
function finalCells(shape: TableShape): string[] {
  return [...shape.columns].sort(byColumnName).map((c) => `r.data->>${literal(c.name)}`);
}

/** Past tier 1: a re-load throws away what testing established since the last load. */
const RESETS_ON_RELOAD: readonly ReleaseState[] = ['tier1-passed', 'promoted', 'tier2-passed', 'approved'];

/** What re-loading a release past tier 1 resets, said before it is done (a re-load needs `confirm`). */
async function reloadResets(ctx: Ctx, release: string, state: ReleaseState): Promise<string> {
  const approval: Pick<ApprovalsRow, 'approved_by' | 'approved_at'> | undefined = await ctx.db
    .control<ApprovalsRow>('approvals')
    .where({ release })
    .orderBy('id', 'desc')
    .first('approved_by', 'approved_at');
  const runs = (await ctx.db
    .control<TestRunsRow>('test_runs')
    .where({ release, status: 'passed' })
    .groupBy('tier')
    .select('tier', ctx.db.control.raw('count(*)::int as n'))) as (Pick<TestRunsRow, 'tier'> & { n: number })[];
  const approvedBy = approval && `the approval by ${approval.approved_by} (${new Date(approval.approved_at).toISOString()})`;
  const parts = [
    ...(state === 'approved' && approvedBy ? [approvedBy] : []),
    ...runs.map((r) => `${r.n} passed tier ${r.tier} run(s)`),
    ...(['promoted', 'tier2-passed', 'approved'].includes(state) ? ['the promotion to master'] : []),
  ];
  const lost = parts.length ? parts.join(', ') : 'its tier 1 result';
  return (
    `release ${release} is ${state}: loading it again sends it back to loaded, ` +
    `and ${lost} no longer count${parts.length === 1 ? 's' : ''}` +
    ' (tier 1, promotion, tier 2 and approval are needed again)'
  );
}

/** Refuses (unconfirmed) to re-load a release past tier 1 without `confirm`, saying what it would reset. */
export async function assertReloadConfirmed(ctx: Ctx, release: string, confirm: boolean, known?: ReleaseState): Promise<void> {
  const state = known ?? (await releaseState(ctx.db.control, release)).state;
  if (!RESETS_ON_RELOAD.includes(state) || confirm) return;
  const resets = await reloadResets(ctx, release, state);
  throw new TributaryError('unconfirmed', `${resets}. Nothing was done: re-load with --confirm.`, { release, state });
}

type Progress = (step: string, info?: Record<string, unknown>) => void;
type Figures = Map<string, Promise<{ rows: number; checksum: string }>>;

/** What a load reads and writes: staging, the run whose final rows it copies, the tables' shapes and figures. */
interface LoadPlan {
  release: string;
  staging: EnvSpec;
  runId: number;
  shapes: Map<string, TableShape>;
  expected: Figures;
}

export async function loadRelease(
  ctx: Ctx,
  release: string,
  opts: { actor: Actor; confirm?: boolean; progress?: Progress },
): Promise<LoadResult> {
  releaseOrThrow(ctx.config, release);
  const started = performance.now();
  const state = await passGate(ctx.db.control, release, 'load', opts.actor);
  await assertReloadConfirmed(ctx, release, !!opts.confirm, state);
  const staging = envByRole(ctx.config, 'staging');
  if (!staging) {
    const message = `${ctx.config.file}: environments: no env has role: staging, so there is nowhere to load ${release}`;
    throw new TributaryError('config_invalid', message);
  }
  const runId = await currentRunId(ctx, release);
  const shapes = new Map<string, TableShape>();
  for (const e of ctx.config.entities) shapes.set(e.name, await sourceShape(ctx, e));
  const expected = await expectedFigures(ctx, runId, shapes);
  const tables = await copyToStaging(ctx, { release, staging, runId, shapes, expected }, opts);
  const ms = Math.round(performance.now() - started);
  await recordLoad(ctx, { release, staging, runId, tables, ms, actor: opts.actor });
  return { release, runId, env: staging.name, tables, ms };
}

/**
 * The final rows into staging in one transaction (its tables created where absent, the release's rows
 * deleted first), each table's count and checksum verified before commit; a failure rolls staging back,
 * is audited and names the table.
 */
async function copyToStaging(ctx: Ctx, plan: LoadPlan, opts: { actor: Actor; progress?: Progress }): Promise<LoadedTable[]> {
  const { staging } = plan;
  const target = pgClient(ctx.db.envParams(staging) as pg.ClientConfig);
  const source = pgClient(ctx.db.controlParams as pg.ClientConfig);
  target.on('error', () => undefined);
  source.on('error', () => undefined);
  const tables: LoadedTable[] = [];
  const at = { table: '' };
  try {
    try {
      await target.connect();
    } catch (err) {
      throw envError(ctx, staging, err);
    }
    await source.connect();
    await source.query('begin isolation level repeatable read read only');
    await target.query('begin');
    await prepareStaging(ctx, target, plan, at);
    for (const e of ctx.config.entities) tables.push(await copyTable(ctx, source, target, plan, e, at, opts.progress));
    await target.query('commit');
    await source.query('commit');
    // staging committed, the control database not yet: loading again replaces the release's rows
    await failpoint('load.after-staging-commit');
  } catch (err) {
    await target.query('rollback').catch(() => undefined);
    return await loadFailed(ctx, plan, at.table, err, opts.actor);
  } finally {
    await target.end().catch(() => undefined);
    await source.end().catch(() => undefined);
  }
  return tables;
}

/** Staging's schema, types and tables where absent; then the release's rows out, children first. */
async function prepareStaging(ctx: Ctx, target: pg.Client, plan: LoadPlan, at: { table: string }): Promise<void> {
  const { staging, shapes, release } = plan;
  if (staging.schema) await target.query(`create schema if not exists ${ident(staging.schema)}`);
  for (const e of ctx.config.entities) {
    at.table = qualified(staging.schema, e.table);
    const shape = must(shapes.get(e.name), `the shape of entity ${e.name}'s table`);
    await ensureUserTypes(target, shape.types, at.table);
    await target.query(createTableSql(at.table, shape));
  }
  // children first out, parents first in
  for (const e of [...ctx.config.entities].reverse()) {
    at.table = qualified(staging.schema, e.table);
    await target.query(`delete from ${at.table} where ${ident(ctx.config.tags.release)} = $1`, [release]);
  }
}

/** One entity's final rows into its staging table, then the table's count and checksum checked. */
async function copyTable(
  ctx: Ctx,
  source: pg.Client,
  target: pg.Client,
  plan: LoadPlan,
  e: EntitySpec,
  at: { table: string },
  progress: Progress | undefined,
): Promise<LoadedTable> {
  const { staging, release } = plan;
  const t = runTables(plan.runId);
  at.table = qualified(staging.schema, e.table);
  const current = at.table;
  progress?.('load', { table: e.table });
  // the rows leave the control database as their cells' texts (kernel/copy.ts): staging's COPY reads each
  // with its column's type
  const shape = must(plan.shapes.get(e.name), `the shape of entity ${e.name}'s table`);
  const select =
    `select ${cellsSelectSql('r.data', shape.columns)} from ${t.result} r` + ` where r.entity = ${literal(e.name)} and r.status = 'final'`;
  await copyRows(source, target, {
    failpoint: 'load.copy',
    select,
    table: current,
    columns: shape.columns.map((c) => c.name),
  });
  const byName = [...shape.columns].sort(byColumnName);
  const got = await targetChecksum(target, staging.schema, e.table, byName, `${ident(ctx.config.tags.release)} = ${literal(release)}`);
  const expected = await must(plan.expected.get(e.name), `the expected figures of entity ${e.name}`);
  requireChecksum(`staging table ${current} (${e.name})`, got, expected, { table: current });
  await failpoint('load.table-copied');
  return { entity: e.name, table: e.table, rows: got.rows, checksum: got.checksum };
}

/** A failed load: audited, then thrown as a TributaryError naming the table (an unreachable staging as such). */
async function loadFailed(ctx: Ctx, plan: LoadPlan, current: string, err: unknown, actor: Actor): Promise<never> {
  const { release, staging } = plan;
  const where = `${staging.name}${current ? `, table ${current}` : ''}`;
  const failed = () => `loading ${release} into ${where} failed: ${redact((err as Error).message)}; nothing was loaded`;
  const message = err instanceof TributaryError ? err.message : failed();
  const details = { env: staging.name, table: current, error: message };
  await recordAudit(ctx.db.control, { actor, action: 'load.failed', release, details });
  if (err instanceof TributaryError) throw err;
  const named = envError(ctx, staging, err);
  if (named instanceof TributaryError && named.code === 'env_unreachable') throw named;
  throw new TributaryError('database', message, { env: staging.name, table: current });
}

/** The load recorded: its tables in `loads`, the release's state and the audit trail, in one transaction. */
async function recordLoad(
  ctx: Ctx,
  load: { release: string; staging: EnvSpec; runId: number; tables: LoadedTable[]; ms: number; actor: Actor },
): Promise<void> {
  const { release, staging, runId, tables, ms, actor } = load;
  await ctx.db.control.transaction(async (trx) => {
    await trx<LoadsRow>('loads').insert(
      tables.map((x) => ({
        release,
        run_id: runId,
        env: staging.name,
        entity: x.entity,
        table_name: x.table,
        row_count: x.rows,
        checksum: x.checksum,
        loaded_by: actor,
      })),
    );
    await transition(trx, release, 'load');
    await recordAudit(trx, { actor, action: 'load.finish', release, subject: staging.name, details: { runId, ms, tables } });
  });
}

