import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { pgClient } from '../../db/pg.js';
import { type EnvSpec, envOrThrow } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { checksumSql, COLUMNS_SQL, type TableColumn, textSettingsSql } from '../kernel/checksum.js';
import { copyFromFile } from '../kernel/copy.js';
import { must } from '../kernel/must.js';
import { envError, type Actor, type Ctx } from '../kernel/context.js';
import { ident, literal, qualified } from '../kernel/sql.js';
import { ensureUserTypes } from '../kernel/types.js';
import { productionEnv, verifiedBundle, type Bundle, type BundleTable } from './bundle.js';

/**
 * The built-in data deployer: a bundle's data package into the production env's tables (the same shape
 * as staging's, created from the bundle if absent, not partitioned).
 *
 *  - backupData: before the deploy, every table the package touches is copied, server-side, into a table
 *    of the production database's `tributary_backup` schema (`<table>_<backup id>`), and the table's
 *    row count and checksum are taken in the same snapshot (on a second connection, in parallel);
 *    recorded in data_backups.
 *  - deployData: one transaction: the release's rows out (children first), the bundle's files in with
 *    COPY (parents first), then per table the release's rows must have the manifest's count and checksum
 *    (over the bundle's columns); else everything rolls back and the error names env and table.
 *  - restoreData: one transaction: each touched table emptied and refilled from its backup (a table the
 *    deploy created is dropped), then each table's count and checksum must equal the figures taken
 *    before the deploy.
 * Checksums are src/engine/kernel/checksum.ts's (DESIGN.md, "Checksums").
 */
export const BACKUP_SCHEMA = 'tributary_backup';

export interface BackupTable {
  entity: string;
  /** Table name in the env's schema. */
  table: string;
  schema: string | null;
  /** Name of the copy in BACKUP_SCHEMA (null when the table did not exist). */
  backup: string | null;
  /** False: the table did not exist before the deploy (a restore drops it). */
  existed: boolean;
  /** The whole table before the deploy. */
  rows: number;
  checksum: string;
}

export interface Backup {
  id: number;
  deploymentId: number | null;
  bundleId: number | null;
  env: string;
  release: string;
  /** Parents first. */
  tables: BackupTable[];
  createdBy: string;
  createdAt: string;
  restoredAt: string | null;
}

export interface DeployedTable {
  entity: string;
  table: string;
  /** Rows of the release removed before loading. */
  deleted: number;
  /** Rows of the release after loading (equal to the manifest's, as is the checksum). */
  rows: number;
  checksum: string;
  /** True when the deploy created the table. */
  created: boolean;
}

export interface DataDeployResult {
  env: string;
  release: string;
  bundleId: number;
  bundleVersion: number;
  backupId: number;
  tables: DeployedTable[];
  /** With opts.figures: each whole table's count and checksum as the deploy committed it. */
  after?: TableFigures[];
  ms: number;
}

export interface RestoredTable {
  entity: string;
  table: string;
  rows: number;
  checksum: string;
  /** The figures of the backup (before the deploy) and of the restored table: equal, or the restore rolled back. */
  before: { rows: number; checksum: string };
  after: { rows: number; checksum: string };
  /** The table did not exist before the deploy and was dropped. */
  dropped: boolean;
}

export interface RestoreResult {
  backupId: number;
  env: string;
  release: string;
  tables: RestoredTable[];
  ms: number;
}

/** Called as each step starts: backup, load, verify, restore (per table). */
export type DataProgress = (step: 'backup' | 'load' | 'verify' | 'restore', info: { table: string }) => void;

export interface TableFigures {
  table: string;
  exists: boolean;
  rows: number;
  checksum: string;
}

export interface BackupRow {
  id: number;
  deployment_id: number | null;
  bundle_id: number | null;
  env: string;
  release: string;
  tables: BackupTable[];
  created_by: string;
  created_at: Date | string;
  restored_at: Date | string | null;
}

function fromRow(r: BackupRow): Backup {
  return {
    id: Number(r.id),
    deploymentId: r.deployment_id == null ? null : Number(r.deployment_id),
    bundleId: r.bundle_id == null ? null : Number(r.bundle_id),
    env: r.env,
    release: r.release,
    tables: r.tables,
    createdBy: r.created_by,
    createdAt: new Date(r.created_at).toISOString(),
    restoredAt: r.restored_at == null ? null : new Date(r.restored_at).toISOString(),
  };
}

/** A Backup, also from a raw data_backups row (snake_case), as callers may read the table themselves. */
export function asBackup(b: Backup | BackupRow): Backup {
  return 'created_by' in b ? fromRow(b) : b;
}

export async function getBackup(ctx: Ctx, id: number): Promise<Backup | null> {
  const row = (await ctx.db.control('data_backups').where({ id }).first()) as BackupRow | undefined;
  return row ? fromRow(row) : null;
}

const DATA_LOCK = 'tributary:deploy-data';

/** Text formats fixed on both sides of every COPY; float output exact. */
const SESSION = "set datestyle = 'ISO, YMD'; set intervalstyle = 'postgres'; set time zone 'UTC'";

type Query = <R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params?: unknown[]) => Promise<pg.QueryResult<R>>;

async function open(ctx: Ctx, env: EnvSpec): Promise<{ client: pg.Client; q: Query }> {
  const client = pgClient(ctx.db.envParams(env) as pg.ClientConfig);
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query(SESSION);
  } catch (err) {
    await client.end().catch(() => undefined);
    throw envError(ctx, env, err);
  }
  return { client, q: (sql, params) => client.query(sql, params as unknown[]) };
}

async function exists(q: Query, table: string): Promise<boolean> {
  const [row] = (await q<{ t: string | null }>('select to_regclass($1)::text as t', [table])).rows;
  return must(row, `to_regclass's answer for ${table}`).t !== null;
}

/** Count and checksum of `table` (all its columns, or the given ones with the table's types) where `where`. */
async function figures(
  q: Query,
  schema: string | undefined,
  table: string,
  where = 'true',
  only?: string[],
): Promise<{ rows: number; checksum: string }> {
  let cols = (await q<TableColumn>(COLUMNS_SQL, [qualified(schema, table)])).rows;
  if (only) {
    const have = new Map(cols.map((c) => [c.name, c]));
    const missing = only.filter((c) => !have.has(c));
    if (missing.length > 0) throw new Error(`column(s) ${missing.join(', ')} missing`);
    cols = cols.filter((c) => only.includes(c.name));
  }
  const [sum] = (await q<{ rows: number; checksum: string }>(checksumSql(cols, schema, table, where))).rows;
  return must(sum, `the checksum row of ${table}`);
}

/** Names an env's table for messages: `schema.table`. */
function shown(schema: string | null | undefined, table: string): string {
  return schema ? `${schema}.${table}` : table;
}

function failure(ctx: Ctx, env: EnvSpec, err: unknown, what: string, table: string, tail: string): Error {
  if (err instanceof TributaryError) return err;
  const named = envError(ctx, env, err);
  if (named instanceof TributaryError && named.code === 'env_unreachable') return named;
  const reason = redact((err as Error).message ?? String(err));
  const message = `${what} env ${env.name}${table ? `, table ${table}` : ''} failed: ${reason}; ${tail}`;
  return new TributaryError('database', message, { env: env.name, ...(table ? { table } : {}) });
}

/**
 * Row count and checksum of each table of an env (the whole table, or one release's rows), e.g. to show
 * production before and after a deploy or a rollback. A table that does not exist has exists: false.
 */
export async function dataChecksums(
  ctx: Ctx,
  env: EnvSpec | string,
  tables: string[],
  opts: { release?: string } = {},
): Promise<TableFigures[]> {
  const spec = typeof env === 'string' ? envOrThrow(ctx.config, env) : env;
  const { client, q } = await open(ctx, spec);
  let current = '';
  try {
    await q('begin isolation level repeatable read read only');
    await q(textSettingsSql());
    const out: TableFigures[] = [];
    for (const t of tables) {
      current = shown(spec.schema, t);
      if (!(await exists(q, qualified(spec.schema, t)))) {
        out.push({ table: t, exists: false, rows: 0, checksum: '0' });
        continue;
      }
      const where = opts.release ? `${ident(ctx.config.tags.release)} = ${literal(opts.release)}` : 'true';
      out.push({ table: t, exists: true, ...(await figures(q, spec.schema, t, where)) });
    }
    await q('commit');
    return out;
  } catch (err) {
    throw failure(ctx, spec, err, 'checksums of', current, 'nothing was changed');
  } finally {
    await client.end().catch(() => undefined);
  }
}

type BackupOpts = { deploymentId?: number; actor: Actor; progress?: DataProgress };
type Connection = Awaited<ReturnType<typeof open>>;

/**
 * Backs up every production table the bundle touches (a server-side copy in BACKUP_SCHEMA) with its
 * row count and checksum before the deploy, in one snapshot; records it in data_backups.
 */
export async function backupData(ctx: Ctx, bundle: Bundle, opts: BackupOpts): Promise<Backup & { ms: number }> {
  const env = productionEnv(ctx);
  const started = performance.now();
  const ids = await ctx.db.control.raw<{ rows: { id: string | number }[] }>(
    `select nextval(pg_get_serial_sequence('data_backups', 'id')) as id`,
  );
  const id = Number(must(ids.rows[0], 'the next id of data_backups').id);
  const copier = await open(ctx, env);
  let summer: Connection | undefined;
  const at = { current: '' };
  let tables: BackupTable[];
  try {
    summer = await open(ctx, env);
    await copier.q(`create schema if not exists ${ident(BACKUP_SCHEMA)}`);
    // the copies and the checksums see one snapshot: the copier's, exported to the second connection
    await copier.q('begin isolation level repeatable read');
    const snapshot = must((await copier.q<{ s: string }>('select pg_export_snapshot() as s')).rows[0], 'the exported snapshot').s;
    await summer.q('begin isolation level repeatable read read only');
    await summer.q(`set transaction snapshot ${literal(snapshot)}`);
    await summer.q(textSettingsSql());
    tables = await copyTables(copier, summer, { env, bundle, id, at, progress: opts.progress });
    at.current = '';
    await summer.q('commit');
    await copier.q('commit');
  } catch (err) {
    await copier.q('rollback').catch(() => undefined);
    await summer?.q('rollback').catch(() => undefined);
    const e = failure(ctx, env, err, `backing up ${bundle.release}'s tables in`, at.current, 'no backup was taken');
    const details = { bundle: bundle.version, table: at.current, error: e.message };
    const event = { actor: opts.actor, action: 'deploy.data.backup.failed', release: bundle.release, subject: env.name, details };
    await recordAudit(ctx.db.control, event);
    throw e;
  } finally {
    await copier.client.end().catch(() => undefined);
    await summer?.client.end().catch(() => undefined);
  }
  return recordBackup(ctx, bundle, { id, env, tables, opts, ms: Math.round(performance.now() - started) });
}

type CopyPlan = { env: EnvSpec; bundle: Bundle; id: number; at: { current: string }; progress?: DataProgress | undefined };

/** Each table copied (by the copier) and counted and checksummed (by the summer), in one snapshot. */
async function copyTables(copier: Connection, summer: Connection, p: CopyPlan): Promise<BackupTable[]> {
  const { env, bundle, id } = p;
  const tables: BackupTable[] = [];
  for (const t of bundle.tables) {
    const table = qualified(env.schema, t.table);
    p.at.current = shown(env.schema, t.table);
    if (!(await exists(copier.q, table))) {
      tables.push({ entity: t.entity, table: t.table, schema: env.schema ?? null, backup: null, existed: false, rows: 0, checksum: '0' });
      continue;
    }
    // `<table>_<id>`, shortened (with the table's position) past PostgreSQL's 63-byte names
    const tail = `_${id}`;
    const backup =
      Buffer.byteLength(t.table + tail) <= 63 ? t.table + tail : `${t.table.slice(0, 40)}_${bundle.tables.indexOf(t) + 1}${tail}`;
    p.progress?.('backup', { table: t.table });
    const [, sum] = await Promise.all([
      copier.q(`create table ${qualified(BACKUP_SCHEMA, backup)} as table ${table}`),
      figures(summer.q, env.schema, t.table),
    ]);
    const schema = env.schema ?? null;
    tables.push({ entity: t.entity, table: t.table, schema, backup, existed: true, rows: sum.rows, checksum: sum.checksum });
  }
  return tables;
}

type BackupMade = { id: number; env: EnvSpec; tables: BackupTable[]; opts: BackupOpts; ms: number };

/** The backup recorded in data_backups, audited; when that fails, its copies are dropped (they would be orphans). */
async function recordBackup(ctx: Ctx, bundle: Bundle, b: BackupMade): Promise<Backup & { ms: number }> {
  const { id, env, tables, opts, ms } = b;
  const record = {
    id, deploymentId: opts.deploymentId ?? null, bundleId: bundle.id, env: env.name, release: bundle.release, tables, createdBy: opts.actor,
    createdAt: '', restoredAt: null,
  };
  try {
    const row = await ctx.db.control.transaction(async (trx) => {
      const [r] = (await trx('data_backups')
        .insert({
          id, deployment_id: record.deploymentId, bundle_id: bundle.id, env: env.name, release: bundle.release,
          tables: JSON.stringify(tables), created_by: opts.actor,
        })
        .returning('*')) as BackupRow[];
      const details = { backupId: id, deploymentId: record.deploymentId, bundle: bundle.version, ms, tables };
      await recordAudit(trx, { actor: opts.actor, action: 'deploy.data.backup', release: bundle.release, subject: env.name, details });
      return must(r, `the data_backups row of backup #${id}`);
    });
    return { ...fromRow(row), ms };
  } catch (err) {
    // not recorded: the copies would be orphans
    await dropBackup(ctx, record, { actor: opts.actor, audit: false }).catch(() => undefined);
    throw err;
  }
}

function createTableSql(table: string, t: BundleTable): string {
  const cols = t.columns.map((c) => `${ident(c.name)} ${c.type}${c.notNull ? ' not null' : ''}`);
  if (t.primaryKey.length > 0) cols.push(`primary key (${t.primaryKey.map(ident).join(', ')})`);
  return `create table ${table} (${cols.join(', ')})`;
}

type DeployOpts = { actor: Actor; progress?: DataProgress; figures?: boolean };

/** A data deploy or restore under way: its connection, and the table at hand (named by an error). */
interface DataJob {
  client: pg.Client;
  q: Query;
  env: EnvSpec;
  current: string;
}

/**
 * Deploys the bundle's data package into production in one transaction: the release's rows replaced,
 * then verified per table by count and checksum against the manifest. Needs the backup taken for it.
 */
export async function deployData(ctx: Ctx, given: Bundle, input: Backup, opts: DeployOpts): Promise<DataDeployResult> {
  // the bundle's manifest verified first (its signature when signed, every file's SHA-256)
  const bundle = await verifiedBundle(ctx, given);
  const backup = asBackup(input);
  const env = productionEnv(ctx);
  const started = performance.now();
  const release = bundle.release;
  checkDeployInput(bundle, backup, env);
  const { client, q } = await open(ctx, env);
  const job: DataJob = { client, q, env, current: '' };
  let out: DeployedTable[];
  const after: TableFigures[] = [];
  try {
    await q('begin');
    await q(textSettingsSql());
    // one data deploy or restore at a time on this database (the env lock of the deployment aside)
    await q('select pg_advisory_xact_lock(hashtext($1))', [DATA_LOCK]);
    if (env.schema) await q(`create schema if not exists ${ident(env.schema)}`);
    const created = await createMissingTables(job, bundle);
    const deleted = await deleteRelease(job, bundle, ident(ctx.config.tags.release));
    await loadFiles(job, bundle, opts.progress);
    out = await verifyDeployed(job, bundle, ident(ctx.config.tags.release), { created, deleted, progress: opts.progress });
    // the whole tables as this transaction commits them: what a later rollback compares production with,
    // so that writes made after the deploy are never discarded silently
    if (opts.figures) {
      for (const t of bundle.tables) {
        job.current = shown(env.schema, t.table);
        after.push({ table: t.table, exists: true, ...(await figures(q, env.schema, t.table)) });
      }
    }
    job.current = '';
    await q('commit');
  } catch (err) {
    await q('rollback').catch(() => undefined);
    const e = failure(ctx, env, err, `deploying ${release} bundle v${bundle.version} into`, job.current, 'production is unchanged');
    const details = { bundle: bundle.version, backupId: backup.id, table: job.current, error: e.message };
    await recordAudit(ctx.db.control, { actor: opts.actor, action: 'deploy.data.failed', release, subject: env.name, details });
    throw e;
  } finally {
    await client.end().catch(() => undefined);
  }
  const ms = Math.round(performance.now() - started);
  const details = { bundle: bundle.version, bundleId: bundle.id, backupId: backup.id, ms, tables: out };
  await recordAudit(ctx.db.control, { actor: opts.actor, action: 'deploy.data', release, subject: env.name, details });
  return {
    env: env.name, release, bundleId: bundle.id, bundleVersion: bundle.version, backupId: backup.id, tables: out,
    ...(opts.figures ? { after } : {}), ms,
  };
}

/** The backup is this env's and release's, not restored, covers every table; every file of the bundle is there. */
function checkDeployInput(bundle: Bundle, backup: Backup, env: EnvSpec): void {
  const release = bundle.release;
  const covered = new Set(backup.tables.map((t) => t.table));
  const uncovered = bundle.tables.find((t) => !covered.has(t.table));
  const problem =
    backup.env !== env.name
      ? `backup #${backup.id} is of env ${backup.env}, not ${env.name}`
      : backup.release !== release
        ? `backup #${backup.id} is of release ${backup.release}, not ${release}`
        : backup.restoredAt
          ? `backup #${backup.id} was restored at ${backup.restoredAt}; take a new one`
          : uncovered
            ? `backup #${backup.id} does not cover table ${uncovered.table}`
            : null;
  if (problem) {
    const message = `deploying ${release} bundle v${bundle.version} into env ${env.name} refused: ${problem}`;
    throw new TributaryError('gate_state', message, { env: env.name, backupId: backup.id });
  }
  for (const t of bundle.tables) {
    const file = path.join(bundle.dir, t.file);
    if (!fs.existsSync(file)) {
      throw new TributaryError(
        'gate_state',
        `bundle v${bundle.version} of ${release}: file ${file} (table ${t.table}) is missing; ` +
          `make a new bundle (tributary bundle ${release} --code ${bundle.codeVersion})`,
        { env: env.name, table: t.table },
      );
    }
  }
}

/** The bundle's tables production does not have yet, created (with their user types). */
async function createMissingTables(job: DataJob, bundle: Bundle): Promise<Set<string>> {
  const { q, env } = job;
  const created = new Set<string>();
  for (const t of bundle.tables) {
    job.current = shown(env.schema, t.table);
    const table = qualified(env.schema, t.table);
    if (!(await exists(q, table))) {
      await ensureUserTypes(job.client, t.types ?? [], table);
      await q(createTableSql(table, t));
      created.add(t.table);
    }
  }
  return created;
}

/** The release's rows out of production, children first; how many each table had. */
async function deleteRelease(job: DataJob, bundle: Bundle, rel: string): Promise<Map<string, number>> {
  const deleted = new Map<string, number>();
  for (const t of [...bundle.tables].reverse()) {
    job.current = shown(job.env.schema, t.table);
    const res = await job.q(`delete from ${qualified(job.env.schema, t.table)} where ${rel} = $1`, [bundle.release]);
    deleted.set(t.table, res.rowCount ?? 0);
  }
  return deleted;
}

/** The bundle's files into production, parents first; a file changed since the bundle was made is refused. */
async function loadFiles(job: DataJob, bundle: Bundle, progress?: DataProgress): Promise<void> {
  const { env } = job;
  for (const t of bundle.tables) {
    job.current = shown(env.schema, t.table);
    progress?.('load', { table: t.table });
    const file = path.join(bundle.dir, t.file);
    const table = qualified(env.schema, t.table);
    const read = await copyFromFile(job.client, { failpoint: 'deploy.copy', file, table, columns: t.columns.map((c) => c.name) });
    if (read.sha256 !== t.sha256) {
      throw new TributaryError(
        'database',
        `deploying ${bundle.release} into env ${env.name}, table ${job.current}: bundle file ${file} changed since ` +
          `bundle v${bundle.version} was made (sha256 differs); production is unchanged`,
        { env: env.name, table: job.current },
      );
    }
  }
}

/** The release's rows as loaded, over the bundle's columns, against the manifest's counts and checksums. */
async function verifyDeployed(
  job: DataJob,
  bundle: Bundle,
  rel: string,
  how: { created: Set<string>; deleted: Map<string, number>; progress?: DataProgress | undefined },
): Promise<DeployedTable[]> {
  const { q, env } = job;
  const release = bundle.release;
  const out: DeployedTable[] = [];
  for (const t of bundle.tables) {
    job.current = shown(env.schema, t.table);
    how.progress?.('verify', { table: t.table });
    // statistics that know the new rows: the checksum then aggregates in parallel workers (2× faster here)
    await q(`analyze ${qualified(env.schema, t.table)}`);
    const got = await figures(q, env.schema, t.table, `${rel} = ${literal(release)}`, t.columns.map((c) => c.name));
    if (got.rows !== t.rows || got.checksum !== t.checksum) {
      throw new TributaryError(
        'database',
        `deploying ${release} into env ${env.name}, table ${job.current}: after loading, ${got.rows} row(s) of ${release} with checksum ` +
          `${got.checksum}, but bundle v${bundle.version} has ${t.rows} with checksum ${t.checksum}; production is unchanged`,
        { env: env.name, table: job.current },
      );
    }
    const deleted = how.deleted.get(t.table) ?? 0;
    out.push({ entity: t.entity, table: t.table, deleted, rows: got.rows, checksum: got.checksum, created: how.created.has(t.table) });
  }
  return out;
}

/** The first table whose figures now differ from those recorded right after the deploy, or null. */
export function changedSince(
  deployed: TableFigures[],
  now: TableFigures[],
): { table: string; before: TableFigures; now: TableFigures } | null {
  for (const f of deployed) {
    const n = now.find((x) => x.table === f.table) ?? { table: f.table, exists: false, rows: 0, checksum: '0' };
    if (n.exists !== f.exists || n.rows !== f.rows || n.checksum !== f.checksum) return { table: f.table, before: f, now: n };
  }
  return null;
}

/** Why a rollback is refused: a table changed after the deploy (or after the restore); going on would discard those writes. */
export function changedMessage(
  release: string,
  env: string,
  shownTable: string,
  c: { before: TableFigures; now: TableFigures },
  since = 'the deploy',
): string {
  const checksum = c.before.rows === c.now.rows ? `, checksum ${c.before.checksum} → ${c.now.checksum}` : '';
  const what = !c.now.exists ? `was dropped since ${since}` : `changed since ${since} (rows ${c.before.rows} → ${c.now.rows}${checksum})`;
  return (
    `cannot roll back ${release}: production table ${shownTable} (env ${env}) ${what}; a rollback would discard those writes. ` +
    'Nothing was rolled back; reconcile those rows first (or restore by hand)'
  );
}

type RestoreOpts = { actor: Actor; progress?: DataProgress; expect?: TableFigures[]; since?: string };

/** A backup table's place in production (its schema, or the search path's). */
const placeOf = (t: BackupTable) => qualified(t.schema ?? undefined, t.table);
/** A backup table's copy in BACKUP_SCHEMA (a table that existed before the deploy has one). */
const copyOf = (t: BackupTable) => qualified(BACKUP_SCHEMA, must(t.backup, `the copy of ${t.table} in the backup`));

/**
 * Puts every table of the backup back exactly as it was before the deploy, in one transaction, and
 * verifies each table's count and checksum against the figures taken then; marks the backup restored.
 */
export async function restoreData(ctx: Ctx, input: Backup, opts: RestoreOpts): Promise<RestoreResult> {
  const backup = asBackup(input);
  const env = envOrThrow(ctx.config, backup.env);
  const started = performance.now();
  const { client, q } = await open(ctx, env);
  const job: DataJob = { client, q, env, current: '' };
  let out: RestoredTable[];
  try {
    await q('begin');
    await q(textSettingsSql());
    await q('select pg_advisory_xact_lock(hashtext($1))', [DATA_LOCK]);
    await checkCopies(job, backup);
    // opts.expect: the tables must still be exactly as the deploy left them, or as opts.since says (writes held off meanwhile)
    if (opts.expect) await checkUnchanged(job, backup, opts.expect, opts.since);
    const kept = backup.tables.filter((t) => t.existed);
    const colsOf = await restoredColumns(job, kept);
    const rowHash = (alias: string, t: BackupTable) =>
      `md5(row(${must(colsOf.get(t), `the columns of ${t.table}`).map((c) => `${alias}.${c}`).join(', ')})::text)`;
    const diff = await emptyTables(job, kept, rowHash);
    // tables the deploy created go (children first)
    for (const t of [...backup.tables].reverse().filter((x) => !x.existed)) {
      job.current = shown(t.schema, t.table);
      await q(`drop table if exists ${placeOf(t)}`);
    }
    await refill(job, kept, { colsOf, rowHash, diff, progress: opts.progress });
    out = await verifyRestored(job, backup, opts.progress);
    job.current = '';
    await q('commit');
  } catch (err) {
    await q('rollback').catch(() => undefined);
    const e = failure(ctx, env, err, `restoring backup #${backup.id} into`, job.current, 'nothing was restored');
    const details = { backupId: backup.id, table: job.current, error: e.message };
    const failed = { actor: opts.actor, action: 'deploy.data.restore.failed', release: backup.release, subject: env.name, details };
    await recordAudit(ctx.db.control, failed);
    throw e;
  } finally {
    await client.end().catch(() => undefined);
  }
  const ms = Math.round(performance.now() - started);
  await ctx.db.control.transaction(async (trx) => {
    await trx('data_backups').where({ id: backup.id }).update({ restored_at: trx.fn.now() });
    const details = { backupId: backup.id, deploymentId: backup.deploymentId, ms, tables: out };
    await recordAudit(trx, { actor: opts.actor, action: 'deploy.data.restore', release: backup.release, subject: env.name, details });
  });
  return { backupId: backup.id, env: env.name, release: backup.release, tables: out, ms };
}

/** Every copy the backup names is still there: otherwise nothing is restored. */
async function checkCopies(job: DataJob, backup: Backup): Promise<void> {
  for (const t of backup.tables) {
    job.current = shown(t.schema, t.table);
    if (t.backup && !(await exists(job.q, qualified(BACKUP_SCHEMA, t.backup)))) {
      throw new TributaryError(
        'database',
        `restoring backup #${backup.id} into env ${job.env.name}, table ${job.current}: its copy ${BACKUP_SCHEMA}.${t.backup} is gone, ` +
          'so the table cannot be restored; nothing was restored',
        { env: job.env.name, table: job.current },
      );
    }
  }
}

/** The tables, locked against writes, still hold the figures expected; else the restore is refused, naming what changed. */
async function checkUnchanged(job: DataJob, backup: Backup, expect: TableFigures[], since?: string): Promise<void> {
  const { q, env } = job;
  const present: BackupTable[] = [];
  for (const t of backup.tables) if (await exists(q, placeOf(t))) present.push(t);
  job.current = present.map((t) => shown(t.schema, t.table)).join(', ');
  if (present.length > 0) await q(`lock table ${present.map(placeOf).join(', ')} in exclusive mode`);
  const now: TableFigures[] = [];
  for (const f of expect) {
    const t = backup.tables.find((x) => x.table === f.table);
    job.current = shown(t?.schema, f.table);
    const here = present.find((x) => x.table === f.table);
    now.push(
      here
        ? { table: f.table, exists: true, ...(await figures(q, here.schema ?? undefined, f.table)) }
        : { table: f.table, exists: false, rows: 0, checksum: '0' },
    );
  }
  const changed = changedSince(expect, now);
  if (changed) {
    const t = backup.tables.find((x) => x.table === changed.table);
    const message = changedMessage(backup.release, env.name, shown(t?.schema, changed.table), changed, since);
    throw new TributaryError('gate_state', message, { env: env.name, table: changed.table });
  }
}

/** The columns each table gets back from its copy (generated columns are computed again). */
async function restoredColumns(job: DataJob, kept: BackupTable[]): Promise<Map<BackupTable, string[]>> {
  const colsOf = new Map<BackupTable, string[]>();
  for (const t of kept) {
    job.current = shown(t.schema, t.table);
    const names = (await job.q<{ name: string }>(
      `select a.attname as name from pg_attribute a
        where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
          and exists (select 1 from pg_attribute b where b.attrelid = to_regclass($2) and b.attname = a.attname and not b.attisdropped)
        order by a.attnum`,
      [placeOf(t), copyOf(t)],
    )).rows.map((r) => ident(r.name));
    colsOf.set(t, names);
  }
  return colsOf;
}

/**
 * Empties the tables at once (TRUNCATE), to refill them from their copies, parents first; when another
 * table references one (TRUNCATE refused), only the rows that differ from the copy are replaced:
 * children first out, parents first in (a row is its columns' text). True: rows are replaced by difference.
 */
async function emptyTables(job: DataJob, kept: BackupTable[], rowHash: (alias: string, t: BackupTable) => string): Promise<boolean> {
  const { q } = job;
  job.current = kept.map((t) => shown(t.schema, t.table)).join(', ');
  let diff = false;
  if (kept.length > 0) {
    await q('savepoint tributary_truncate');
    try {
      await q(`truncate ${kept.map(placeOf).join(', ')}`);
      await q('release savepoint tributary_truncate');
    } catch (err) {
      if ((err as { code?: string }).code !== '0A000') throw err;
      await q('rollback to savepoint tributary_truncate');
      diff = true;
    }
  }
  if (diff) {
    await q("set local work_mem = '256MB'");
    for (const t of [...kept].reverse()) {
      job.current = shown(t.schema, t.table);
      await q(`delete from ${placeOf(t)} t where not exists (select 1 from ${copyOf(t)} b where ${rowHash('b', t)} = ${rowHash('t', t)})`);
    }
  }
  return diff;
}

type Refill = {
  colsOf: Map<BackupTable, string[]>;
  rowHash: (alias: string, t: BackupTable) => string;
  diff: boolean;
  progress?: DataProgress | undefined;
};

/** Each kept table refilled from its copy, parents first (by difference: only the rows missing). */
async function refill(job: DataJob, kept: BackupTable[], how: Refill): Promise<void> {
  const { rowHash } = how;
  for (const t of kept) {
    job.current = shown(t.schema, t.table);
    how.progress?.('restore', { table: t.table });
    const table = placeOf(t);
    const cols = must(how.colsOf.get(t), `the columns of ${t.table}`);
    const missing = how.diff ? ` where not exists (select 1 from ${table} t where ${rowHash('t', t)} = ${rowHash('b', t)})` : '';
    await job.q(
      `insert into ${table} (${cols.join(', ')}) overriding system value ` +
        `select ${cols.map((c) => `b.${c}`).join(', ')} from ${copyOf(t)} b${missing}`,
    );
  }
}

/** Every table as it was before the deploy: counts and checksums as the backup took them; created ones gone. */
async function verifyRestored(job: DataJob, backup: Backup, progress?: DataProgress): Promise<RestoredTable[]> {
  const { q, env } = job;
  const out: RestoredTable[] = [];
  for (const t of backup.tables) {
    job.current = shown(t.schema, t.table);
    progress?.('verify', { table: t.table });
    const before = { rows: t.rows, checksum: t.checksum };
    if (!t.existed) {
      if (await exists(q, placeOf(t))) throw new Error('the table still exists');
      out.push({ entity: t.entity, table: t.table, rows: 0, checksum: '0', before, after: { rows: 0, checksum: '0' }, dropped: true });
      continue;
    }
    await q(`analyze ${placeOf(t)}`);
    const got = await figures(q, t.schema ?? undefined, t.table);
    if (got.rows !== t.rows || got.checksum !== t.checksum) {
      throw new TributaryError(
        'database',
        `restoring backup #${backup.id} into env ${env.name}, table ${job.current}: after restoring, ${got.rows} row(s) with checksum ` +
          `${got.checksum}, but before the deploy it had ${t.rows} with checksum ${t.checksum}; nothing was restored`,
        { env: env.name, table: job.current },
      );
    }
    out.push({ entity: t.entity, table: t.table, rows: got.rows, checksum: got.checksum, before, after: got, dropped: false });
  }
  return out;
}

/** Drops the backup's copies in the production database (retention); the data_backups row stays. */
export async function dropBackup(ctx: Ctx, input: Backup, opts: { actor: Actor; audit?: boolean }): Promise<void> {
  const backup = asBackup(input);
  const env = envOrThrow(ctx.config, backup.env);
  const { client, q } = await open(ctx, env);
  try {
    for (const t of backup.tables) if (t.backup) await q(`drop table if exists ${qualified(BACKUP_SCHEMA, t.backup)}`);
  } catch (err) {
    throw failure(ctx, env, err, `dropping backup #${backup.id} in`, '', 'some copies may remain');
  } finally {
    await client.end().catch(() => undefined);
  }
  if (opts.audit === false) return;
  const details = { backupId: backup.id };
  const event = { actor: opts.actor, action: 'deploy.data.backup.drop', release: backup.release, subject: env.name, details };
  await recordAudit(ctx.db.control, event);
}
