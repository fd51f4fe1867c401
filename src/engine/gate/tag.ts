import { type EnvSpec, type EntitySpec, envOrThrow, releaseOrThrow } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { recordAudit } from '../kernel/audit.js';
import { tableChecksum, tableColumns, tableExists, type TableColumn } from '../kernel/checksum.js';
import { checkReachable, onEnv, requireSources, type Actor, type Ctx } from '../kernel/context.js';
import { transition } from '../kernel/lifecycle.js';
import { ident, literal, qualified } from '../kernel/sql.js';
import { InvariantError } from '../kernel/must.js';
import type { LocksRow } from '../../db/rows.js';

/**
 * Tag & lock, the gate before consolidation. Every row of a release must carry its tags and a feature
 * of the release's plan; a lock records per env and table the row count and checksum, so that data
 * that changes afterwards (drift) is refused until that env is re-locked.
 */
export interface TagOffender {
  env: string;
  entity: string;
  table: string;
  key: string;
  missing: string[];
}

export interface LockEntry {
  env: string;
  entity: string;
  table: string;
  rows: number;
  checksum: string;
  /** The table's columns when it was locked (name order). */
  columns: TableColumn[];
}

export interface TagResult {
  release: string;
  envs: string[];
  offenders: TagOffender[];
  offenderCount: number;
  locks: LockEntry[];
}

const MAX_LISTED = 200;

function sourcesFor(ctx: Ctx, envName?: string): EnvSpec[] {
  if (!envName) return ctx.config.sources;
  const env = envOrThrow(ctx.config, envName);
  if (env.role !== 'source') {
    throw new TributaryError('usage', `env ${envName} is a ${env.role} env; tag and lock apply to source (ST) envs`);
  }
  return [env];
}

async function findOffenders(
  ctx: Ctx,
  env: EnvSpec,
  entity: EntitySpec,
  release: string,
  features: string[],
): Promise<{ count: number; rows: TagOffender[] }> {
  const t = ctx.config.tags;
  const table = qualified(env.schema, entity.table);
  const plan = `array[${features.map(literal).join(',')}]::text[]`;
  const sql = `
    with bad as (
      select ${ident(entity.primaryKey)}::text as key,
             array_remove(array[
               case when ${ident(t.release)} is null then 'release tag' end,
               case when ${ident(t.feature)} is null then 'feature tag'
                    when not (${ident(t.feature)} = any(${plan}))
                    then 'a feature of ' || ${literal(release)} || '''s plan (has ' || ${ident(t.feature)} || ')' end,
               case when ${ident(t.createdBy)} is null then 'created_by tag' end,
               case when ${ident(t.createdAt)} is null then 'created_at tag' end
             ], null) as missing
        from ${table}
       where (${ident(t.release)} = ? and (${ident(t.feature)} is null or not (${ident(t.feature)} = any(${plan}))
                or ${ident(t.createdBy)} is null or ${ident(t.createdAt)} is null))
          or (${ident(t.release)} is null and ${ident(t.feature)} = any(${plan}))
    )
    select key, missing, count(*) over () as total from bad order by key limit ${MAX_LISTED}`;
  const res = await ctx.db.env(env).raw<{ rows: { key: string; missing: string[]; total: number }[] }>(sql, [release]);
  return {
    count: res.rows[0]?.total ?? 0,
    rows: res.rows.map((r) => ({ env: env.name, entity: entity.name, table: entity.table, key: r.key, missing: r.missing })),
  };
}

/**
 * The tags of a release's rows in each env and entity: the offenders (the first MAX_LISTED of each table,
 * and their count) and, for each table without one, its lock (row count, checksum and columns).
 */
async function checkTags(
  ctx: Ctx,
  release: string,
  envs: EnvSpec[],
  features: string[],
): Promise<{ offenders: TagOffender[]; offenderCount: number; locks: LockEntry[] }> {
  const offenders: TagOffender[] = [];
  let offenderCount = 0;
  const locks: LockEntry[] = [];
  for (const env of envs) {
    for (const entity of ctx.config.entities) {
      await onEnv(ctx, env, async () => {
        if (!(await tableExists(ctx.db.env(env), env.schema, entity.table))) {
          const table = qualified(env.schema, entity.table);
          throw new TributaryError('config_invalid', `env ${env.name}: table ${table} (entity ${entity.name}) does not exist`, {
            env: env.name,
            entity: entity.name,
          });
        }
        const found = await findOffenders(ctx, env, entity, release, features);
        offenderCount += found.count;
        offenders.push(...found.rows);
        if (found.count === 0) locks.push(await lockEntry(ctx, env, entity, release));
      });
    }
  }
  return { offenders, offenderCount, locks };
}

/** The lock of one env's table: the release's row count and checksum, and the table's columns. */
async function lockEntry(ctx: Ctx, env: EnvSpec, entity: EntitySpec, release: string): Promise<LockEntry> {
  const where = { sql: `${ident(ctx.config.tags.release)} = ?`, bindings: [release] };
  const sum = await tableChecksum(ctx.db.env(env), env.schema, entity.table, where);
  const columns = await tableColumns(ctx.db.env(env), env.schema, entity.table);
  return { env: env.name, entity: entity.name, table: entity.table, rows: sum.rows, checksum: sum.checksum, columns };
}

/**
 * `tributary tag R2 [--env ST-3]`: checks the tags in every ST env (or one), and on success records the lock.
 * With offenders nothing is locked and a gate error lists them.
 */
export async function tagRelease(ctx: Ctx, release: string, opts: { env?: string; actor: Actor }): Promise<TagResult> {
  const plan = releaseOrThrow(ctx.config, release);
  requireSources(ctx, release, 'tag');
  const envs = sourcesFor(ctx, opts.env);
  await checkReachable(ctx, envs);
  const { offenders, offenderCount, locks } = await checkTags(ctx, release, envs, [...plan.features.keys()]);
  const result: TagResult = { release, envs: envs.map((e) => e.name), offenders, offenderCount, locks: offenderCount === 0 ? locks : [] };
  if (offenderCount > 0) {
    const details = { envs: result.envs, offenders: offenderCount };
    await recordAudit(ctx.db.control, { actor: opts.actor, action: 'gate.tag.refused', release, details });
    const message = `release ${release}: ${offenderCount} row(s) lack their tags; nothing was locked`;
    throw new TributaryError('gate_untagged', message, { result });
  }
  await ctx.db.control.transaction(async (trx) => {
    await trx('locks').where({ release }).whereIn('env', result.envs).delete();
    await trx('locks').insert(
      locks.map((l) => ({
        release,
        env: l.env,
        entity: l.entity,
        table_name: l.table,
        row_count: l.rows,
        checksum: l.checksum,
        columns: JSON.stringify(l.columns),
        locked_by: opts.actor,
      })),
    );
    await transition(trx, release, 'lock');
    await recordAudit(trx, {
      actor: opts.actor,
      action: opts.env ? 'gate.relock' : 'gate.lock',
      release,
      details: { envs: result.envs, tables: locks.map((l) => ({ env: l.env, entity: l.entity, rows: l.rows, checksum: l.checksum })) },
    });
  });
  return result;
}

/** A lock: `columns` are the table's columns when it was locked (null: locked before they were recorded). */
export type LockRow = Omit<LocksRow, 'columns'> & { columns: TableColumn[] | null };

export async function locksOf(ctx: Ctx, release: string): Promise<LockRow[]> {
  const rows = await ctx.db.control<LocksRow>('locks').where({ release }).orderBy(['env', 'entity']);
  return rows.map((r) => ({ ...r, columns: lockedColumns(r) }));
}

/** A lock's `columns` (jsonb: the table's columns, or null). */
function lockedColumns(r: LocksRow): TableColumn[] | null {
  if (r.columns === null) return null;
  if (!Array.isArray(r.columns)) {
    throw new InvariantError(`the columns of the lock of ${r.release} in ${r.env} (${r.entity}) to be a list, found ${typeof r.columns}`);
  }
  return r.columns as TableColumn[];
}

/** The gate: every source env and entity must be locked. Names what is missing. */
export async function requireLocked(ctx: Ctx, release: string, envs: EnvSpec[]): Promise<Map<string, LockRow>> {
  const rows = await locksOf(ctx, release);
  const byKey = new Map(rows.map((r) => [`${r.env}/${r.entity}`, r]));
  const missing: string[] = [];
  for (const env of envs) {
    for (const e of ctx.config.entities) if (!byKey.has(`${env.name}/${e.name}`)) missing.push(`${env.name} (${e.table})`);
  }
  if (missing.length > 0) {
    const all = missing.length === envs.length * ctx.config.entities.length;
    const hint = all ? `tributary tag ${release}` : `tributary tag ${release} --env <env>`;
    const message = `release ${release} is not locked for ${missing.join(', ')}: run ${hint} first`;
    throw new TributaryError('gate_not_locked', message, { release, missing });
  }
  return byKey;
}

/**
 * `tributary tag --install ST-1`: adds the tag columns and a trigger that fills them from PostgreSQL
 * settings (`SET tributary.release = 'R2'`, `tributary.feature`, `tributary.created_by`), so a team's
 * test code tags its rows automatically.
 */
export async function installTagging(ctx: Ctx, envName: string, actor: Actor): Promise<{ env: string; tables: string[] }> {
  const env = envOrThrow(ctx.config, envName);
  if (env.role !== 'source') {
    throw new TributaryError('usage', `env ${envName} is a ${env.role} env; tagging is installed in source (ST) envs`);
  }
  const t = ctx.config.tags;
  const knex = ctx.db.env(env);
  const tables: string[] = [];
  await onEnv(ctx, env, () =>
    knex.transaction(async (trx) => {
      for (const entity of ctx.config.entities) {
        const table = qualified(env.schema, entity.table);
        const fn = qualified(env.schema, `tributary_tags_${entity.table}`);
        await trx.raw(`alter table ${table}
            add column if not exists ${ident(t.release)} text,
            add column if not exists ${ident(t.feature)} text,
            add column if not exists ${ident(t.createdBy)} text,
            add column if not exists ${ident(t.createdAt)} timestamptz`);
        await trx.raw(`create or replace function ${fn}() returns trigger language plpgsql as $$
          begin
            new.${ident(t.release)} := coalesce(new.${ident(t.release)}, nullif(current_setting('tributary.release', true), ''));
            new.${ident(t.feature)} := coalesce(new.${ident(t.feature)}, nullif(current_setting('tributary.feature', true), ''));
            new.${ident(t.createdBy)} := coalesce(new.${ident(t.createdBy)},
              nullif(current_setting('tributary.created_by', true), ''), current_user);
            new.${ident(t.createdAt)} := coalesce(new.${ident(t.createdAt)}, now());
            return new;
          end $$`);
        await trx.raw(`drop trigger if exists tributary_tags on ${table}`);
        await trx.raw(`create trigger tributary_tags before insert on ${table} for each row execute function ${fn}()`);
        tables.push(entity.table);
      }
    }),
  );
  await recordAudit(ctx.db.control, { actor, action: 'tag.install', subject: env.name, details: { tables } });
  return { env: env.name, tables };
}
