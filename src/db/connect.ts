import type { Knex } from 'knex';
import type pg from 'pg';
import { resolveAuditKey, type AuditKey } from '../config/auditKey.js';
import { controlOwnership } from './owner.js';
import type { Config, EnvSpec } from '../config/load.js';
import { TributaryError } from '../errors.js';
import { logger, redact } from '../log.js';
import { ensureEmbeddedServer, type EmbeddedHandle } from './embedded.js';
import { migrationSource } from './migrations.js';
import { lowerPriority } from './renice.js';
import { lazy } from '../lazy.js';
import { pgClient, pgDriver } from './pg.js';

export { lowerPriority };

const loadKnex = lazy<typeof import('knex')>('knex');

export interface ConnectionParams {
  host: string;
  port: number;
  user: string;
  password?: string;
  database: string;
  ssl?: false | { rejectUnauthorized: boolean; ca?: string };
}

export interface Db {
  /** The control database: runs, locks, conflicts, decisions, audit, and the work area. */
  control: Knex;
  controlParams: ConnectionParams;
  /** A connection to an environment (cached). */
  env(env: EnvSpec): Knex;
  envParams(env: EnvSpec): ConnectionParams;
  embedded?: EmbeddedHandle;
  /** Where the audit chain's key came from (never the key itself). */
  auditKey: Omit<AuditKey, 'key'>;
  close(): Promise<void>;
}

/**
 * The audit chain's key per control database, held in this process only. Keyed by the knex client's
 * config object, which a transaction shares with the knex instance it was opened from.
 */
const auditKeys = new WeakMap<object, string>();

export function attachAuditKey(knex: Knex, key: string): void {
  auditKeys.set(knex.client.config as object, key);
}

/** The audit key of a control database (a knex instance or a transaction on it), if it has one. */
export function auditKeyOf(knex: Knex | Knex.Transaction): string | undefined {
  return auditKeys.get(knex.client.config as object);
}

export function paramsFromUrl(url: string): ConnectionParams {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TributaryError('config_invalid', `not a valid PostgreSQL URL: ${redact(url)}`);
  }
  const sslmode = u.searchParams.get('sslmode');
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username || 'postgres'),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    database: decodeURIComponent(u.pathname.replace(/^\//, '')) || 'postgres',
    ...(sslmode && sslmode !== 'disable' ? { ssl: { rejectUnauthorized: sslmode === 'verify-full' || sslmode === 'verify-ca' } } : {}),
  };
}

export function makeKnex(params: ConnectionParams, pool: { min: number; max: number } = { min: 0, max: 10 }, workMem?: string): Knex {
  pgDriver();
  return loadKnex().knex({
    client: 'pg',
    connection: { ...params, connectionTimeoutMillis: 5000 } as Knex.PgConnectionConfig,
    pool: {
      ...pool,
      idleTimeoutMillis: 10_000,
      // memory for the set-based detection's hash aggregates, and no JIT: it compiled every large statement
      // of a consolidation afresh (50–100 ms each) to save less than that (performance settings: no result
      // depends on them); and the background priority of the heavy sessions
      ...(workMem
        ? {
            afterCreate: (conn: pg.Client, done: (err: Error | null, conn: pg.Client) => void) =>
              void conn
                .query(`set work_mem = '${workMem}'; set jit = off`)
                .then(() => lowerPriority(conn, params.host))
                .then(() => done(null, conn), (err: Error) => done(err, conn)),
          }
        : {}),
    },
    acquireConnectionTimeout: 15_000,
    // knex logs to stdout by default: keep stdout for command output (--json) and mask secrets.
    // A failed connection is reported by the caller, naming the env: here it is detail only.
    log: {
      warn: (m: unknown) => (String(m).startsWith('Acquire connection error') ? logger().debug(redact(String(m))) : logger().warn(redact(String(m)))),
      error: (m: unknown) => logger().error(redact(String(m))),
      deprecate: (m: unknown) => logger().debug(redact(String(m))),
      debug: (m: unknown) => logger().debug(redact(String(m))),
    },
  });
}

export async function ensureDatabase(server: Omit<ConnectionParams, 'database'>, name: string): Promise<void> {
  const client = pgClient({ ...server, database: 'postgres', connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    const found = await client.query('select 1 from pg_database where datname = $1', [name]);
    if (found.rowCount === 0) {
      try {
        await client.query(`create database "${name}"`);
      } catch (err) {
        // another process created it meanwhile
        if ((err as { code?: string }).code !== '42P04' && (err as { code?: string }).code !== '23505') throw err;
      }
    }
  } finally {
    await client.end();
  }
}

export interface OpenOptions {
  /** Run pending migrations (default true). */
  migrate?: boolean;
}

/**
 * Pending migrations are applied on open by the owner of the control tables; a role that is not the
 * owner (the least-privilege app role) cannot apply them and is told who can. Nothing pending (every
 * command but the first): two reads, no write (knex's migrate.latest takes and frees its lock table,
 * two commits, on every call).
 */
async function migrateIfOwner(control: Knex, params: ConnectionParams): Promise<void> {
  const present = await control.raw<{ rows: { present: boolean }[] }>("select to_regclass('knex_migrations') is not null as present");
  const applied = new Set(present.rows[0]!.present ? (await control('knex_migrations').select('name')).map((r: { name: string }) => r.name) : []);
  const known = await migrationSource.getMigrations([]);
  const pending = known.filter((m) => !applied.has(m));
  // one applied that this version does not know: knex's migrate.latest refuses it, naming it
  const unknown = [...applied].filter((m) => !known.includes(m));
  if (pending.length === 0 && unknown.length === 0) return;
  const own = await controlOwnership(control);
  if (own.isOwner) {
    await control.migrate.latest({ migrationSource });
    return;
  }
  if (pending.length === 0) return;
  await control.destroy();
  throw new TributaryError(
    'database',
    `the control database ${params.host}:${params.port}/${params.database} needs ${pending.length} migration(s) (${pending.join(', ')}), and ${own.user} is not the owner of its tables (${own.owner}): ` +
      'run `tributary migrate` with the owner role\'s credentials first (docs/operations.md, "Least privilege")',
  );
}

export async function openDatabase(config: Config, opts: OpenOptions = {}): Promise<Db> {
  // first: a missing audit key is a start-up error, before any server is started or reached
  const { key: auditKey, ...auditKeySource } = resolveAuditKey(config);
  let controlParams: ConnectionParams;
  let embedded: EmbeddedHandle | undefined;
  if (config.database.url) {
    controlParams = paramsFromUrl(config.database.url);
  } else {
    embedded = await ensureEmbeddedServer(config.database.dataDir, config.database.port);
    await ensureDatabase(embedded.info, config.database.name);
    controlParams = { ...embedded.info, database: config.database.name };
  }
  const control = makeKnex(controlParams, { min: 0, max: 12 }, '64MB');
  attachAuditKey(control, auditKey);
  try {
    await control.raw('select 1');
  } catch (err) {
    await control.destroy();
    throw new TributaryError('database', `cannot reach the control database ${controlParams.host}:${controlParams.port}/${controlParams.database}: ${redact((err as Error).message)}`);
  }
  if (opts.migrate !== false) await migrateIfOwner(control, controlParams);

  const envs = new Map<string, Knex>();
  const envParams = (env: EnvSpec): ConnectionParams => {
    if (env.url) {
      const p = paramsFromUrl(env.url);
      if (env.tls) p.ssl = { rejectUnauthorized: env.tls.rejectUnauthorized, ...(env.tls.ca ? { ca: env.tls.ca } : {}) };
      return p;
    }
    return { ...controlParams, database: env.database ?? controlParams.database };
  };
  return {
    control,
    controlParams,
    embedded,
    auditKey: auditKeySource,
    envParams,
    env(env) {
      let k = envs.get(env.name);
      if (!k) {
        k = makeKnex(envParams(env), { min: 0, max: 4 });
        envs.set(env.name, k);
      }
      return k;
    },
    async close() {
      await Promise.all([...envs.values()].map((k) => k.destroy()));
      await control.destroy();
      // the server stops with its last user, whoever started it
      await embedded?.release();
    },
  };
}
