import { type EnvSpec, type EntitySpec, envOrThrow, releaseOrThrow } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { recordAudit } from '../kernel/audit.js';
import { tableChecksum, tableColumns, tableExists, type TableColumn } from '../kernel/checksum.js';
import { checkReachable, onEnv, requireSources, type Actor, type Ctx } from '../kernel/context.js';
import { transition } from '../kernel/lifecycle.js';
import { ident, literal, qualified } from '../kernel/sql.js';

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
  if (env.role !== 'source') throw new TributaryError('usage', `env ${envName} is a ${env.role} env; tag and lock apply to source (ST) envs`);
  return [env];
}

async function findOffenders(ctx: Ctx, env: EnvSpec, entity: EntitySpec, release: string, features: string[]): Promise<{ count: number; rows: TagOffender[] }> {
  const t = ctx.config.tags;
  const table = qualified(env.schema, entity.table);
  const plan = `array[${features.map(literal).join(',')}]::text[]`;
  const sql = `
    with bad as (
      select ${ident(entity.primaryKey)}::text as key,
             array_remove(array[
               case when ${ident(t.release)} is null then 'release tag' end,
               case when ${ident(t.feature)} is null then 'feature tag'
                    when not (${ident(t.feature)} = any(${plan})) then 'a feature of ' || ${literal(release)} || '''s plan (has ' || ${ident(t.feature)} || ')' end,
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
 * `tributary tag R2 [--env ST-3]`: checks the tags in every ST env (or one), and on success records the lock.
 * With offenders nothing is locked and a gate error lists them.
 */
export async function tagRelease(ctx: Ctx, release: string, opts: { env?: string; actor: Actor }): Promise<TagResult> {
  const plan = releaseOrThrow(ctx.config, release);
  requireSources(ctx, release, 'tag');
  const envs = sourcesFor(ctx, opts.env);
  await checkReachable(ctx, envs);
  const features = [...plan.features.keys()];
  const offenders: TagOffender[] = [];
  let offenderCount = 0;
  const locks: LockEntry[] = [];
  for (const env of envs) {
    for (const entity of ctx.config.entities) {
      await onEnv(ctx, env, async () => {
        if (!(await tableExists(ctx.db.env(env), env.schema, entity.table))) {
          throw new TributaryError('config_invalid', `env ${env.name}: table ${qualified(env.schema, entity.table)} (entity ${entity.name}) does not exist`, { env: env.name, entity: entity.name });
        }
        const found = await findOffenders(ctx, env, entity, release, features);
        offenderCount += found.count;
        offenders.push(...found.rows);
        if (found.count === 0) {
          const sum = await tableChecksum(ctx.db.env(env), env.schema, entity.table, { sql: `${ident(ctx.config.tags.release)} = ?`, bindings: [release] });
          const columns = await tableColumns(ctx.db.env(env), env.schema, entity.table);
          locks.push({ env: env.name, entity: entity.name, table: entity.table, rows: sum.rows, checksum: sum.checksum, columns });
        }
      });
    }
  }
  const result: TagResult = { release, envs: envs.map((e) => e.name), offenders, offenderCount, locks: offenderCount === 0 ? locks : [] };
  if (offenderCount > 0) {
    await recordAudit(ctx.db.control, { actor: opts.actor, action: 'gate.tag.refused', release, details: { envs: result.envs, offenders: offenderCount } });
    throw new TributaryError('gate_untagged', `release ${release}: ${offenderCount} row(s) lack their tags; nothing was locked`, { result });
  }
  await ctx.db.control.transaction(async (trx) => {
    await trx('locks').where({ release }).whereIn('env', result.envs).delete();
    await trx('locks').insert(locks.map((l) => ({ release, env: l.env, entity: l.entity, table_name: l.table, row_count: l.rows, checksum: l.checksum, columns: JSON.stringify(l.columns), locked_by: opts.actor })));
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

export interface LockRow {
  env: string;
  entity: string;
  table_name: string;
  row_count: number;
  checksum: string;
  /** The table's columns when it was locked (null: locked before they were recorded). */
  columns: TableColumn[] | null;
  locked_at: Date;
  locked_by: string;
}

export async function locksOf(ctx: Ctx, release: string): Promise<LockRow[]> {
  return ctx.db.control('locks').where({ release }).orderBy(['env', 'entity']);
}

/** The gate: every source env and entity must be locked. Names what is missing. */
export async function requireLocked(ctx: Ctx, release: string, envs: EnvSpec[]): Promise<Map<string, LockRow>> {
  const rows = await locksOf(ctx, release);
  const byKey = new Map(rows.map((r) => [`${r.env}/${r.entity}`, r]));
  const missing: string[] = [];
  for (const env of envs) for (const e of ctx.config.entities) if (!byKey.has(`${env.name}/${e.name}`)) missing.push(`${env.name} (${e.table})`);
  if (missing.length > 0) {
    const hint = missing.length === envs.length * ctx.config.entities.length ? `tributary tag ${release}` : `tributary tag ${release} --env <env>`;
    throw new TributaryError('gate_not_locked', `release ${release} is not locked for ${missing.join(', ')}: run ${hint} first`, { release, missing });
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
  if (env.role !== 'source') throw new TributaryError('usage', `env ${envName} is a ${env.role} env; tagging is installed in source (ST) envs`);
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
            new.${ident(t.createdBy)} := coalesce(new.${ident(t.createdBy)}, nullif(current_setting('tributary.created_by', true), ''), current_user);
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
