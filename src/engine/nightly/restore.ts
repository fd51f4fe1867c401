import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import type { EnvSpec } from '../../config/load.js';
import type { ArchivesRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import { redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { checksumSql, COLUMNS_SQL, type TableColumn } from '../kernel/checksum.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { copyFromFile } from '../kernel/copy.js';
import { failpoint } from '../kernel/failpoints.js';
import { partitionName } from '../kernel/master.js';
import { must } from '../kernel/must.js';
import { ident, literal, qualified } from '../kernel/sql.js';
import { connect, masterOf, PROMOTE_LOCK, SHAPE_SQL, verifiedArchive, type ArchivedTable, type Manifest } from './archiveFormat.js';

/**
 * `restore R0`: brings an archived release back into master. The archive is verified before master is
 * touched (archiveFormat.ts: the package code of bundles and transfer packages). Restore re-creates each
 * partition like its parent (with a CHECK on the release so attaching needs no scan), COPYs the rows back,
 * and commits only when count and checksum equal the manifest's.
 */
export interface RestoreResult {
  release: string;
  manifest: string;
  env: string;
  tables: { table: string; rows: number; checksum: string; verified: true }[];
  rows: number;
  ms: number;
}

const archiveDirPrefix = (release: string) => `${release.replace(/[^A-Za-z0-9._-]/g, '_')}-`;

/** The newest archive of a release not restored since: from the control database, else by the directory. */
export async function findManifest(ctx: Ctx, release: string): Promise<string> {
  const row: Pick<ArchivesRow, 'manifest'> | undefined = await ctx.db
    .control<ArchivesRow>('archives')
    .where({ release })
    .whereNull('restored_at')
    .orderBy('id', 'desc')
    .first('manifest');
  if (row && fs.existsSync(row.manifest)) return row.manifest;
  const dir = ctx.config.archive.dir;
  const prefix = archiveDirPrefix(release);
  const isArchive = (d: string) =>
    d.startsWith(prefix) && /^\d{8}T\d{6}Z$/.test(d.slice(prefix.length)) && fs.existsSync(path.join(dir, d, 'manifest.json'));
  const found = fs.existsSync(dir) ? fs.readdirSync(dir).filter(isArchive).sort() : [];
  const newest = found.at(-1);
  if (newest === undefined) {
    const recorded = row ? ` (the recorded manifest ${row.manifest} is missing)` : '';
    throw new TributaryError('no_rows', `no archive of ${release} in ${dir}${recorded}`, { release });
  }
  return path.join(dir, newest, 'manifest.json');
}

/** The archives row marked restored and the audit event, together. */
async function recordRestore(ctx: Ctx, file: string, m: Manifest, restored: RestoreResult['tables'], actor: Actor): Promise<number> {
  const env = masterOf(ctx).name;
  const rows = restored.reduce((n, t) => n + t.rows, 0);
  await ctx.db.control.transaction(async (trx) => {
    await trx<ArchivesRow>('archives')
      .where({ release: m.release, manifest: file })
      .whereNull('restored_at')
      .update({ restored_at: trx.fn.now(), restored_by: actor });
    const details = { env, rows, tables: restored };
    await recordAudit(trx, { actor, action: 'archive.restored', release: m.release, subject: file, details });
  });
  return rows;
}

/** Count and checksum of a partition in master. */
async function partitionFigures(a: pg.Client, master: EnvSpec, part: string): Promise<{ rows: number; checksum: string }> {
  const byName = (await a.query<TableColumn>(COLUMNS_SQL, [qualified(master.schema, part)])).rows;
  const res = await a.query<{ rows: number; checksum: string }>(checksumSql(byName, master.schema, part, 'true'));
  const s = must(res.rows[0], `the checksum of ${qualified(master.schema, part)}`);
  return { rows: Number(s.rows), checksum: s.checksum };
}

/**
 * A restore whose master transaction committed but whose process died before recording it: the
 * archive is not marked restored, yet every partition of the manifest is attached in master with the
 * manifest's rows and checksum. Its tables, to record; else null.
 */
async function committedRestore(ctx: Ctx, a: pg.Client, file: string, m: Manifest): Promise<RestoreResult['tables'] | null> {
  const pending = await ctx.db
    .control<ArchivesRow>('archives')
    .where({ release: m.release, manifest: file })
    .whereNull('restored_at')
    .first('id');
  if (!pending) return null;
  const master = masterOf(ctx);
  const tables: RestoreResult['tables'] = [];
  for (const t of m.tables) {
    const part = partitionName(t.table, m.release);
    const attachedSql = `select 1 from pg_inherits where inhrelid = to_regclass($1) and inhparent = to_regclass($2)`;
    const attached = (await a.query(attachedSql, [qualified(master.schema, part), qualified(master.schema, t.table)])).rowCount;
    if (!attached) return null;
    const s = await partitionFigures(a, master, part);
    if (s.rows !== t.rows || s.checksum !== t.checksum) return null;
    tables.push({ table: part, rows: t.rows, checksum: t.checksum, verified: true });
  }
  return tables;
}

interface Restore {
  ctx: Ctx;
  a: pg.Client;
  master: EnvSpec;
  release: string;
  file: string;
  m: Manifest;
}

/** Master's parent table is partitioned, holds no partition of the release, and has the archived columns. */
async function checkTarget(x: Restore, t: ArchivedTable, parent: string, partQ: string): Promise<void> {
  const { a, master, release } = x;
  const kindRow = (await a.query<{ relkind: string }>('select c.relkind from pg_class c where c.oid = to_regclass($1)', [parent])).rows[0];
  const kind = kindRow?.relkind;
  if (kind !== 'p') {
    const why = `master env ${master.name} has no partitioned table ${parent} to restore ${release}'s ${t.table} into`;
    const fix = `${kind ? ' (it is not partitioned)' : ''}: promote a release first, or re-create it`;
    throw new TributaryError('gate_state', `${why}${fix}`, { table: parent });
  }
  const existing = (await a.query<{ name: string }>(
    `select c.oid::regclass::text as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
      where i.inhparent = to_regclass($1) and pg_get_expr(c.relpartbound, c.oid) = $2`,
    [parent, `FOR VALUES IN (${literal(release)})`],
  )).rows[0];
  const taken = (await a.query<{ t: string | null }>('select to_regclass($1)::text as t', [partQ])).rows[0]?.t;
  if (existing || taken) {
    throw new TributaryError('gate_state', `${release} is in master already (${existing?.name ?? partQ}): nothing to restore`, { release });
  }
  const shape = (await a.query<TableColumn>(SHAPE_SQL, [parent])).rows;
  const want = new Map(t.columns.map((c) => [c.name, c.type]));
  const gone = t.columns.filter((c) => !shape.some((s) => s.name === c.name)).map((c) => `${c.name} is gone`);
  const changed = shape
    .filter((s) => want.has(s.name) && want.get(s.name) !== s.type)
    .map((s) => `${s.name} is ${s.type} (archived: ${want.get(s.name)})`);
  const problems = [...gone, ...changed];
  if (problems.length > 0) {
    const what = `master table ${parent} changed since ${release} was archived (${problems.join('; ')}): align it first`;
    throw new TributaryError('gate_state', what, { table: parent });
  }
}

/** One table back: a partition like its parent, the rows in, verified, attached. */
async function restoreTable(x: Restore, t: ArchivedTable): Promise<RestoreResult['tables'][number]> {
  const { a, master, release, m, file } = x;
  const parent = qualified(master.schema, t.table);
  const part = partitionName(t.table, release);
  const partQ = qualified(master.schema, part);
  await checkTarget(x, t, parent, partQ);
  await a.query(`create table ${partQ} (like ${parent} including defaults including constraints)`);
  // the partition bound as a constraint: rows are checked on the way in, and attaching needs no scan
  const rel = ident(m.releaseColumn);
  await a.query(`alter table ${partQ} add constraint tributary_restore_bound check (${rel} is not null and ${rel} = ${literal(release)})`);
  const source = path.join(path.dirname(file), t.file);
  await copyFromFile(a, { failpoint: 'restore.copy', file: source, table: partQ, columns: t.columns.map((c) => c.name) });
  const s = await partitionFigures(a, master, part);
  if (s.rows !== t.rows || s.checksum !== t.checksum) {
    const says = `the manifest ${file} says ${t.rows} rows, checksum ${t.checksum}`;
    const what = `restore of ${release}: ${partQ} has ${s.rows} rows, checksum ${s.checksum}, but ${says}: nothing restored`;
    throw new TributaryError('gate_drift', what, { table: partQ });
  }
  await a.query(`alter table ${parent} attach partition ${partQ} for values in (${literal(release)})`);
  await a.query(`alter table ${partQ} drop constraint tributary_restore_bound`);
  return { table: part, rows: t.rows, checksum: t.checksum, verified: true };
}

/** Every table back in master's transaction, committed only when each equals the manifest. */
async function restoreTables(x: Restore, progress?: (table: string) => void): Promise<RestoreResult['tables']> {
  await x.a.query('begin');
  await x.a.query('select pg_advisory_xact_lock(hashtext($1))', [PROMOTE_LOCK]);
  const restored: RestoreResult['tables'] = [];
  for (const t of x.m.tables) {
    progress?.(t.table);
    restored.push(await restoreTable(x, t));
    await failpoint('restore.table-copied');
  }
  await x.a.query('commit');
  await failpoint('restore.after-master-commit');
  return restored;
}

export async function restoreRelease(
  ctx: Ctx,
  release: string,
  opts: { actor: Actor; manifest?: string; progress?: (table: string) => void },
): Promise<RestoreResult> {
  const started = performance.now();
  const file = opts.manifest ?? (await findManifest(ctx, release));
  // the files are what the manifest says, before master is touched
  const m = await verifiedArchive(ctx, file);
  if (m.release !== release) throw new TributaryError('usage', `${file} is the archive of ${m.release}, not ${release}`, { file });
  const master = masterOf(ctx);
  const a = await connect(ctx, master);
  try {
    const tables = (await committedRestore(ctx, a, file, m)) ?? (await restoreTables({ ctx, a, master, release, file, m }, opts.progress));
    const rows = await recordRestore(ctx, file, m, tables, opts.actor);
    return { release, manifest: file, env: master.name, tables, rows, ms: Math.round(performance.now() - started) };
  } catch (err) {
    await a.query('rollback').catch(() => undefined);
    if (err instanceof TributaryError) throw err;
    throw new TributaryError('database', `restore of ${release} from ${file}: ${redact((err as Error).message)}`, { release });
  } finally {
    await a.end().catch(() => undefined);
  }
}

/** The releases whose master partitions are archived and not restored. */
export async function archivedReleases(ctx: Ctx): Promise<string[]> {
  const rows: Pick<ArchivesRow, 'release'>[] = await ctx.db.control<ArchivesRow>('archives').whereNull('restored_at').distinct('release');
  return rows.map((r) => r.release);
}
