import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import PQueue from 'p-queue';
import type { EnvSpec, EntitySpec } from '../config/load.js';
import { TributaryError } from '../errors.js';
import { COLUMNS_SQL, rowHashExpr, type TableColumn } from './checksum.js';
import { envError, type Ctx } from './context.js';
import { lowerPriority } from '../db/connect.js';
import { ident, literal, qualified } from './sql.js';
import type { LockRow } from './tag.js';

/**
 * Collect: a release's rows from every ST env, in parallel (bounded by p-queue), streamed with COPY from
 * each source straight into the work area of the control database: rows never gather in JavaScript
 * memory. Each env is read in one repeatable-read transaction, each row with its hash computed like the lock's
 * checksum, so the rows collected are exactly the rows that were locked (drift is refused).
 */
export function workTable(runId: number, name: string): string {
  return `work.${ident(`r${runId}_${name}`)}`;
}

export async function createRecordsTable(ctx: Ctx, runId: number): Promise<void> {
  await ctx.db.control.raw(`create unlogged table ${workTable(runId, 'records')} (
    entity text not null,
    env text not null,
    env_rank int not null,
    pk text not null,
    identity text not null,
    feature text,
    created_by text,
    created_at timestamptz,
    ts timestamptz,
    data jsonb not null,
    rh bigint
  )`);
}

function identityExpr(entity: EntitySpec): string {
  const pk = `'p:' || t.${ident(entity.primaryKey)}::text`;
  const nk = entity.naturalKeys[0];
  if (!nk) return pk;
  // concat_ws skips nulls, so require every column of the key
  const allPresent = nk.map((c) => `t.${ident(c)} is not null`).join(' and ');
  return `case when ${allPresent} then 'n:' || concat_ws(chr(31), ${nk.map((c) => `t.${ident(c)}::text`).join(', ')}) else ${pk} end`;
}

function sourceQuery(ctx: Ctx, env: EnvSpec, entity: EntitySpec, release: string, rowHash: string): string {
  const t = ctx.config.tags;
  return `select ${literal(entity.name)}, ${literal(env.name)}, ${env.precedence}, t.${ident(entity.primaryKey)}::text,
      ${identityExpr(entity)}, t.${ident(t.feature)}, t.${ident(t.createdBy)}, t.${ident(t.createdAt)}::timestamptz,
      t.${ident(entity.timestamp)}::timestamptz, to_jsonb(t), ${rowHash}
    from ${qualified(env.schema, entity.table)} t where t.${ident(t.release)} = ${literal(release)}`;
}

/**
 * The gate, on the collected rows themselves: per env and table, the count and the sum of row hashes
 * must equal the lock's. All envs were read in their own snapshot, so what was checked is what was collected.
 */
async function checkDrift(ctx: Ctx, runId: number, release: string, locks: Map<string, LockRow>, only?: { env: string }): Promise<void> {
  const res = await ctx.db.control.raw<{ rows: { env: string; entity: string; rows: number; checksum: string }[] }>(
    `select env, entity, count(*)::int as rows, coalesce(sum(rh::numeric), 0)::text as checksum from ${workTable(runId, 'records')} group by env, entity`,
  );
  const got = new Map(res.rows.map((r) => [`${r.env}/${r.entity}`, r]));
  const drift: { env: string; table: string; message: string }[] = [];
  for (const env of ctx.config.sources) {
    for (const entity of ctx.config.entities) {
      const lock = locks.get(`${env.name}/${entity.name}`)!;
      const now = got.get(`${env.name}/${entity.name}`) ?? { rows: 0, checksum: '0' };
      if (now.rows !== Number(lock.row_count) || now.checksum !== lock.checksum) {
        const reused = only && only.env !== env.name;
        drift.push({
          env: env.name,
          table: entity.table,
          message: reused
            ? `${env.name}, table ${entity.table}: re-locked since the consolidation this one builds on; collect it again: tributary consolidate ${release} (without --env)`
            : `drift in ${env.name}, table ${entity.table}: ${release}'s rows changed since the lock of ${lock.locked_at.toISOString()} (rows ${lock.row_count} → ${now.rows}${now.checksum !== lock.checksum ? ', checksum differs' : ''}); re-lock with: tributary tag ${release} --env ${env.name}`,
        });
      }
    }
  }
  if (drift.length > 0) {
    throw new TributaryError('gate_drift', drift.map((d) => d.message).join('\n'), { env: drift[0]!.env, table: drift[0]!.table, drift: drift.map(({ env, table }) => ({ env, table })) });
  }
}

export interface CollectedEnv {
  env: string;
  rows: number;
  perEntity: Record<string, number>;
}

async function collectEnv(ctx: Ctx, runId: number, env: EnvSpec, release: string, locks: Map<string, LockRow>): Promise<CollectedEnv> {
  const source = new pg.Client({ ...ctx.db.envParams(env), connectionTimeoutMillis: 5000 } as pg.ClientConfig);
  const target = new pg.Client({ ...ctx.db.controlParams } as pg.ClientConfig);
  source.on('error', () => undefined);
  target.on('error', () => undefined);
  const perEntity: Record<string, number> = {};
  let total = 0;
  try {
    try {
      await source.connect();
    } catch (err) {
      throw envError(ctx, env, err);
    }
    await target.connect();
    await Promise.all([lowerPriority(source, ctx.db.envParams(env).host), lowerPriority(target, ctx.db.controlParams.host)]);
    await source.query('begin isolation level repeatable read read only');
    // timestamps in to_jsonb follow the session time zone: fix it for this transaction only
    await source.query("set local timezone = 'UTC'");
    await source.query('set local extra_float_digits = 1');
    for (const entity of ctx.config.entities) {
      const lock = locks.get(`${env.name}/${entity.name}`);
      if (!lock) throw new TributaryError('gate_not_locked', `release ${release} is not locked for ${env.name} (${entity.table})`);
      const cols = await source.query<TableColumn>(COLUMNS_SQL, [qualified(env.schema, entity.table)]);
      // each row's hash travels with it, computed exactly as the lock's checksum was: the drift check
      // then needs no second read of the source (checkDrift sums them in the work area)
      const out = source.query(copyTo(`copy (${sourceQuery(ctx, env, entity, release, rowHashExpr(cols.rows))}) to stdout`));
      const into = target.query(
        copyFrom(`copy ${workTable(runId, 'records')} (entity, env, env_rank, pk, identity, feature, created_by, created_at, ts, data, rh) from stdin`),
      );
      await pipeline(out, into);
      perEntity[entity.name] = into.rowCount;
      total += into.rowCount;
    }
    await source.query('commit');
  } catch (err) {
    throw envError(ctx, env, err);
  } finally {
    await source.end().catch(() => undefined);
    await target.end().catch(() => undefined);
  }
  return { env: env.name, rows: total, perEntity };
}

async function reuseEnv(ctx: Ctx, runId: number, previousRunId: number, env: EnvSpec): Promise<CollectedEnv> {
  const res = await ctx.db.control.raw<{ rows: { entity: string; n: number }[] }>(
    `with copied as (insert into ${workTable(runId, 'records')} (entity, env, env_rank, pk, identity, feature, created_by, created_at, ts, data, rh)
       select entity, env, env_rank, pk, identity, feature, created_by, created_at, ts, data, rh from ${workTable(previousRunId, 'records')} where env = ?
       returning entity)
     select entity, count(*)::int as n from copied group by entity`,
    [env.name],
  );
  const perEntity = Object.fromEntries(res.rows.map((r) => [r.entity, r.n]));
  return { env: env.name, rows: res.rows.reduce((n, r) => n + r.n, 0), perEntity };
}

/** Collects every source env; on any failure, reports every env that failed (the caller cleans up). */
export async function collectRelease(
  ctx: Ctx,
  runId: number,
  release: string,
  locks: Map<string, LockRow>,
  onEnvDone?: (c: CollectedEnv) => void,
  only?: { env: string; previousRunId: number },
): Promise<CollectedEnv[]> {
  await createRecordsTable(ctx, runId);
  const queue = new PQueue({ concurrency: ctx.config.collect.concurrency });
  const settled = await Promise.allSettled(
    ctx.config.sources.map((env) =>
      queue.add(async () => {
        // with --env, the other envs' rows are those of the previous run: what their unchanged locks hold
        const done = only && env.name !== only.env ? await reuseEnv(ctx, runId, only.previousRunId, env) : await collectEnv(ctx, runId, env, release, locks);
        onEnvDone?.(done);
        return done;
      }),
    ),
  );
  const failures = settled.flatMap((s) => (s.status === 'rejected' ? [s.reason as Error] : []));
  if (failures.length === 1) throw failures[0]!;
  if (failures.length > 1) {
    const first = failures[0] as TributaryError;
    throw new TributaryError(first.code ?? 'database', failures.map((f) => f.message).join('\n'), { failures: failures.length });
  }
  await checkDrift(ctx, runId, release, locks, only);
  // two index builds at once: one core each
  await Promise.all([
    ctx.db.control.raw(`create index on ${workTable(runId, 'records')} (entity, identity)`),
    ctx.db.control.raw(`create index on ${workTable(runId, 'records')} (entity, env, pk)`),
  ]);
  await ctx.db.control.raw(`analyze ${workTable(runId, 'records')}`);
  return settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value as CollectedEnv] : []));
}
