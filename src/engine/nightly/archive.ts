import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { pgClient } from '../../db/pg.js';
import { envByRole, type EnvSpec } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { logger, redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { failpoint } from '../kernel/failpoints.js';
import { checksumSql, COLUMNS_SQL, type TableColumn, textSettingsSql } from '../kernel/checksum.js';
import { copyFromFile, copyToFile, fsyncFile } from '../kernel/copy.js';
import { envError, type Actor, type Ctx } from '../kernel/context.js';
import { partitionName } from '../kernel/master.js';
import { masterPartitions, type MasterPartition } from './coverage.js';
import { ident, literal, qualified } from '../kernel/sql.js';

/**
 * Keeping master lean: `archive --older-than 2y` moves the release partitions last promoted before the
 * cut-off to cold storage, and `restore R0` brings one back.
 *
 * Archive, per release, in one transaction on master (serialised with promotions by their advisory
 * lock): each partition is locked against writes (SHARE), then exported with COPY (text) through gzip
 * while a second connection computes its checksum the way every other copy is verified
 * (src/engine/kernel/checksum.ts); the row counts of both must agree. The files are written and synced, then
 * the manifest (tables, columns, row counts, checksums, sha256 of each file), and only then are the
 * partitions detached and dropped and the transaction committed: a failure anywhere leaves master as
 * it was. Restore re-creates each partition like its parent (with a CHECK on the release so attaching
 * needs no scan), COPYs the rows back, and commits only when count and checksum equal the manifest's.
 */
export interface ArchivedTable {
  entity: string;
  table: string;
  partition: string;
  /** The export file, relative to the manifest's directory. */
  file: string;
  /** In the table's column order: the COPY column list. */
  columns: TableColumn[];
  rows: number;
  checksum: string;
  sha256: string;
  bytes: number;
}

export interface Manifest {
  format: 'tributary-archive-v1';
  release: string;
  env: string;
  schema: string | null;
  /** The release column (the partition key). */
  releaseColumn: string;
  promotedAt: string | null;
  /** The age given to `tributary archive --older-than`, if any. */
  olderThan?: string;
  archivedAt: string;
  archivedBy: string;
  compression: 'gzip';
  copyFormat: 'text';
  tables: ArchivedTable[];
}

export interface ArchiveResult {
  release: string;
  promotedAt: string | null;
  manifest: string;
  rows: number;
  tables: { table: string; rows: number; checksum: string; bytes: number }[];
  ms: number;
}

export interface ArchiveReport {
  cutoff: string;
  dryRun: boolean;
  archived: ArchiveResult[];
  /** Releases in master not old enough, or without a promotion record. */
  kept: { release: string; promotedAt: string | null; reason: string }[];
}

const PROMOTE_LOCK = 'tributary:promote';
const SHAPE_SQL = `select a.attname as name, format_type(a.atttypid, a.atttypmod) as type
    from pg_attribute a where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped order by a.attnum`;
const UNITS: Record<string, number> = { y: 365.25 * 86_400_000, mo: 30 * 86_400_000, w: 7 * 86_400_000, d: 86_400_000, h: 3_600_000 };

/** `2y`, `18mo`, `8w`, `90d`, `12h` → milliseconds. */
export function parseAge(text: string, option = '--older-than'): number {
  const m = /^(\d+(?:\.\d+)?)(y|mo|w|d|h)$/.exec(text.trim());
  if (!m || Number(m[1]) <= 0) throw new TributaryError('usage', `${option} takes an age such as 2y, 18mo, 8w, 90d or 12h (got "${text}")`);
  return Number(m[1]) * UNITS[m[2]!]!;
}

function masterOf(ctx: Ctx): EnvSpec {
  const master = envByRole(ctx.config, 'master');
  if (!master) throw new TributaryError('config_invalid', `${ctx.config.file}: environments: no env has role: master`);
  return master;
}

async function connect(ctx: Ctx, env: EnvSpec): Promise<pg.Client> {
  const c = pgClient(ctx.db.envParams(env) as pg.ClientConfig);
  c.on('error', () => undefined);
  try {
    await c.connect();
  } catch (err) {
    throw envError(ctx, env, err);
  }
  // the same text formats on both sides of every COPY; float output fixed for the checksums
  await c.query(textSettingsSql('session'));
  return c;
}

async function sha256(file: string): Promise<string> {
  const h = crypto.createHash('sha256');
  await pipeline(fs.createReadStream(file), h);
  return h.digest('hex');
}

const stamp = (d: Date) => d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');

/** The archives row and audit event of an archive whose master transaction committed. */
async function recordArchive(ctx: Ctx, manifestFile: string, m: Manifest): Promise<{ rows: number; summary: { table: string; rows: number; checksum: string; bytes: number }[] }> {
  const rows = m.tables.reduce((n, t) => n + t.rows, 0);
  const summary = m.tables.map((t) => ({ table: t.partition, rows: t.rows, checksum: t.checksum, bytes: t.bytes }));
  await ctx.db.control.transaction(async (trx) => {
    await trx('archives').insert({ release: m.release, env: m.env, manifest: manifestFile, row_count: rows, tables: JSON.stringify(summary), archived_by: m.archivedBy });
    await recordAudit(trx, { actor: m.archivedBy, action: 'archive.release', release: m.release, subject: manifestFile, details: { env: m.env, promotedAt: m.promotedAt, ...(m.olderThan ? { olderThan: m.olderThan } : {}), rows, tables: summary } });
  });
  return { rows, summary };
}

/**
 * Archives whose master transaction committed but whose process died before recording them: a complete
 * manifest in archive.dir that no archives row names, its release gone from master. Recorded now, as
 * they would have been (an attempt that died before its commit left its release in master: skipped).
 */
async function recordInterrupted(ctx: Ctx, parts: { release: string }[]): Promise<void> {
  const dir = ctx.config.archive.dir;
  if (!fs.existsSync(dir)) return;
  const known = new Set(((await ctx.db.control('archives').select('manifest')) as { manifest: string }[]).map((r) => r.manifest));
  for (const d of fs.readdirSync(dir).sort()) {
    const file = path.join(dir, d, 'manifest.json');
    if (known.has(file) || !fs.existsSync(file)) continue;
    const m = readManifest(file);
    if (parts.some((p) => p.release === m.release)) continue;
    logger().warn({ manifest: file }, 'archive: recording an archive whose process stopped after it committed');
    await recordArchive(ctx, file, m);
  }
}

/** A dry run's entry: the partitions that would be archived and dropped, with their row counts. */
async function planArchive(ctx: Ctx, release: string, promotedAt: Date, parts: MasterPartition[]): Promise<ArchiveResult> {
  const k = ctx.db.env(masterOf(ctx));
  const tables: ArchiveResult['tables'] = [];
  for (const p of parts.filter((x) => x.release === release)) {
    const res = await k.raw<{ rows: { n: string }[] }>(`select count(*) as n from ${p.partition}`);
    tables.push({ table: p.partition, rows: Number(res.rows[0]!.n), checksum: '', bytes: 0 });
  }
  return { release, promotedAt: promotedAt.toISOString(), manifest: '', rows: tables.reduce((n, t) => n + t.rows, 0), tables, ms: 0 };
}

export async function archiveReleases(ctx: Ctx, opts: { olderThan: string; actor: Actor; dryRun?: boolean; now?: Date; progress?: (release: string, table: string) => void }): Promise<ArchiveReport> {
  const age = parseAge(opts.olderThan);
  const cutoff = new Date((opts.now ?? new Date()).getTime() - age);
  const parts = await masterPartitions(ctx);
  if (!opts.dryRun) await recordInterrupted(ctx, parts);
  const releases = [...new Set(parts.map((p) => p.release))].sort();
  const promoted = new Map<string, Date>();
  for (const r of (await ctx.db.control('promotions').groupBy('release').select('release').max('promoted_at as at')) as { release: string; at: Date }[]) promoted.set(r.release, new Date(r.at));
  const report: ArchiveReport = { cutoff: cutoff.toISOString(), dryRun: !!opts.dryRun, archived: [], kept: [] };
  for (const release of releases) {
    const at = promoted.get(release) ?? null;
    if (!at) {
      report.kept.push({ release, promotedAt: null, reason: 'no promotion recorded (its age is unknown)' });
      continue;
    }
    if (at.getTime() >= cutoff.getTime()) {
      report.kept.push({ release, promotedAt: at.toISOString(), reason: `promoted after the cut-off ${cutoff.toISOString()}` });
      continue;
    }
    if (opts.dryRun) {
      report.archived.push(await planArchive(ctx, release, at, parts));
      continue;
    }
    report.archived.push(await archiveRelease(ctx, release, { actor: opts.actor, promotedAt: at, olderThan: opts.olderThan, ...(opts.progress ? { progress: opts.progress } : {}) }));
  }
  return report;
}

/**
 * A directory of its own for one archive: never one that exists (a second archive of the release within
 * the same second gets `-2`), so that a failed archive removes only what it wrote itself.
 */
function newDirectory(parent: string, name: string): string {
  fs.mkdirSync(parent, { recursive: true });
  for (let n = 1; ; n++) {
    const dir = path.join(parent, n === 1 ? name : `${name}-${n}`);
    try {
      fs.mkdirSync(dir);
      return dir;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

export async function archiveRelease(ctx: Ctx, release: string, opts: { actor: Actor; promotedAt?: Date | null; olderThan?: string; progress?: (release: string, table: string) => void }): Promise<ArchiveResult> {
  const started = performance.now();
  const master = masterOf(ctx);
  const rel = ctx.config.tags.release;
  const parts = (await masterPartitions(ctx)).filter((p) => p.release === release);
  if (parts.length === 0) throw new TributaryError('no_rows', `master env ${master.name} has no partition of ${release} to archive`, { release });
  const now = new Date();
  const dirName = `${release.replace(/[^A-Za-z0-9._-]/g, '_')}-${stamp(now)}`;
  const dir = newDirectory(ctx.config.archive.dir, dirName);
  const a = await connect(ctx, master);
  let b: pg.Client | undefined;
  let committed = false;
  try {
    b = await connect(ctx, master);
    await a.query('begin');
    await a.query('select pg_advisory_xact_lock(hashtext($1))', [PROMOTE_LOCK]);
    const tables: ArchivedTable[] = [];
    for (const p of parts) {
      opts.progress?.(release, p.table);
      await a.query(`lock table ${p.partition} in share mode`);
      const shape = (await a.query<TableColumn>(SHAPE_SQL, [p.partition])).rows;
      const byName = (await a.query<TableColumn>(COLUMNS_SQL, [p.partition])).rows;
      const file = `${p.table}.copy.gz`;
      const target = path.join(dir, file);
      const list = shape.map((c) => ident(c.name)).join(', ');
      // the checksum on a second connection, meanwhile: the SHARE lock keeps the rows as they are
      const sum = b.query<{ rows: number; checksum: string }>(checksumSql(byName, p.schema, p.name, 'true')).then((r) => r.rows[0]!);
      sum.catch(() => undefined);
      const written = await copyToFile(a, {
        failpoint: 'archive.copy',
        select: `select ${list} from ${p.partition}`,
        file: target,
        what: `archive of ${release}: master env ${master.name}, table ${p.partition}`,
        expectedRows: sum.then((x) => Number(x.rows)),
        details: { release, table: p.partition },
      });
      const s = await sum;
      tables.push({ entity: p.entity, table: p.table, partition: p.name, file, columns: shape, rows: written.rows, checksum: s.checksum, sha256: written.sha256, bytes: written.bytes });
      await failpoint('archive.table-exported');
    }
    const manifest: Manifest = {
      format: 'tributary-archive-v1',
      release,
      env: master.name,
      schema: master.schema ?? null,
      releaseColumn: rel,
      promotedAt: opts.promotedAt ? opts.promotedAt.toISOString() : null,
      ...(opts.olderThan ? { olderThan: opts.olderThan } : {}),
      archivedAt: now.toISOString(),
      archivedBy: opts.actor,
      compression: 'gzip',
      copyFormat: 'text',
      tables,
    };
    const manifestFile = path.join(dir, 'manifest.json');
    fs.writeFileSync(`${manifestFile}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
    fsyncFile(`${manifestFile}.tmp`);
    fs.renameSync(`${manifestFile}.tmp`, manifestFile);
    for (const p of parts) {
      await a.query(`alter table ${qualified(master.schema, p.table)} detach partition ${p.partition}`);
      await a.query(`drop table ${p.partition}`);
    }
    await failpoint('archive.before-commit');
    await a.query('commit');
    committed = true;
    await failpoint('archive.after-master-commit');
    const { rows, summary } = await recordArchive(ctx, manifestFile, manifest);
    return { release, promotedAt: manifest.promotedAt, manifest: manifestFile, rows, tables: summary, ms: Math.round(performance.now() - started) };
  } catch (err) {
    if (!committed) {
      await a.query('rollback').catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    }
    throw err instanceof TributaryError ? err : envError(ctx, master, err);
  } finally {
    await a.end().catch(() => undefined);
    await b?.end().catch(() => undefined);
  }
}

/** The newest archive of a release not restored since: from the control database, else by the directory. */
export async function findManifest(ctx: Ctx, release: string): Promise<string> {
  const row = await ctx.db.control('archives').where({ release }).whereNull('restored_at').orderBy('id', 'desc').first('manifest');
  if (row && fs.existsSync(row.manifest as string)) return row.manifest as string;
  const dir = ctx.config.archive.dir;
  const prefix = `${release.replace(/[^A-Za-z0-9._-]/g, '_')}-`;
  const found = fs.existsSync(dir)
    ? fs.readdirSync(dir).filter((d) => d.startsWith(prefix) && /^\d{8}T\d{6}Z$/.test(d.slice(prefix.length)) && fs.existsSync(path.join(dir, d, 'manifest.json'))).sort()
    : [];
  if (found.length === 0) throw new TributaryError('no_rows', `no archive of ${release} in ${dir}${row ? ` (the recorded manifest ${String(row.manifest)} is missing)` : ''}`, { release });
  return path.join(dir, found[found.length - 1]!, 'manifest.json');
}

/** Reads and checks a manifest, naming the file and the field that is wrong. */
export function readManifest(file: string): Manifest {
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new TributaryError('config_invalid', `${file}: not a readable JSON manifest: ${(err as Error).message}`, { file });
  }
  const bad = (field: string, what: string) => new TributaryError('config_invalid', `${file}: ${field}: ${what}`, { file, field });
  if (m.format !== 'tributary-archive-v1') throw bad('format', `expected "tributary-archive-v1" (got ${JSON.stringify(m.format)})`);
  for (const f of ['release', 'env', 'releaseColumn', 'archivedAt'] as const) if (typeof m[f] !== 'string' || !m[f]) throw bad(f, 'missing');
  if (!Array.isArray(m.tables) || m.tables.length === 0) throw bad('tables', 'missing or empty');
  (m.tables as Record<string, unknown>[]).forEach((t, i) => {
    for (const f of ['entity', 'table', 'partition', 'file', 'checksum', 'sha256'] as const) if (typeof t[f] !== 'string' || !t[f]) throw bad(`tables[${i}].${f}`, 'missing');
    if (typeof t.rows !== 'number' || t.rows < 0) throw bad(`tables[${i}].rows`, 'not a row count');
    if (!Array.isArray(t.columns) || t.columns.length === 0) throw bad(`tables[${i}].columns`, 'missing');
    if (path.isAbsolute(t.file as string) || (t.file as string).includes('..')) throw bad(`tables[${i}].file`, 'must be a file name next to the manifest');
  });
  return m as unknown as Manifest;
}

export interface RestoreResult {
  release: string;
  manifest: string;
  env: string;
  tables: { table: string; rows: number; checksum: string; verified: true }[];
  rows: number;
  ms: number;
}

/** The archives row marked restored and the audit event, together. */
async function recordRestore(ctx: Ctx, file: string, release: string, env: string, restored: RestoreResult['tables'], actor: Actor): Promise<number> {
  const rows = restored.reduce((n, t) => n + t.rows, 0);
  await ctx.db.control.transaction(async (trx) => {
    await trx('archives').where({ release, manifest: file }).whereNull('restored_at').update({ restored_at: trx.fn.now(), restored_by: actor });
    await recordAudit(trx, { actor, action: 'archive.restored', release, subject: file, details: { env, rows, tables: restored } });
  });
  return rows;
}

/**
 * A restore whose master transaction committed but whose process died before recording it: the
 * archive is not marked restored, yet every partition of the manifest is attached in master with the
 * manifest's rows and checksum. Its tables, to record; else null.
 */
async function committedRestore(ctx: Ctx, a: pg.Client, file: string, m: Manifest): Promise<RestoreResult['tables'] | null> {
  const pending = await ctx.db.control('archives').where({ release: m.release, manifest: file }).whereNull('restored_at').first('id');
  if (!pending) return null;
  const master = masterOf(ctx);
  const tables: RestoreResult['tables'] = [];
  for (const t of m.tables) {
    const part = partitionName(t.table, m.release);
    const attached = (await a.query(`select 1 from pg_inherits where inhrelid = to_regclass($1) and inhparent = to_regclass($2)`, [qualified(master.schema, part), qualified(master.schema, t.table)])).rowCount;
    if (!attached) return null;
    const byName = (await a.query<TableColumn>(COLUMNS_SQL, [qualified(master.schema, part)])).rows;
    const s = (await a.query<{ rows: number; checksum: string }>(checksumSql(byName, master.schema, part, 'true'))).rows[0]!;
    if (Number(s.rows) !== t.rows || s.checksum !== t.checksum) return null;
    tables.push({ table: part, rows: t.rows, checksum: t.checksum, verified: true });
  }
  return tables;
}

export async function restoreRelease(ctx: Ctx, release: string, opts: { actor: Actor; manifest?: string; progress?: (table: string) => void }): Promise<RestoreResult> {
  const started = performance.now();
  const file = opts.manifest ?? (await findManifest(ctx, release));
  const m = readManifest(file);
  if (m.release !== release) throw new TributaryError('usage', `${file} is the archive of ${m.release}, not ${release}`, { file });
  const master = masterOf(ctx);
  const dir = path.dirname(file);
  // the files are what the manifest says, before master is touched
  for (const [i, t] of m.tables.entries()) {
    const f = path.join(dir, t.file);
    if (!fs.existsSync(f)) throw new TributaryError('no_rows', `${file}: tables[${i}].file: ${f} is missing`, { file });
    if ((await sha256(f)) !== t.sha256) throw new TributaryError('gate_drift', `${f}: its sha256 differs from the manifest's (tables[${i}].sha256): the archive file was changed or damaged`, { file: f });
  }
  const a = await connect(ctx, master);
  try {
    const resumed = await committedRestore(ctx, a, file, m);
    if (resumed) {
      const rows = await recordRestore(ctx, file, release, master.name, resumed, opts.actor);
      return { release, manifest: file, env: master.name, tables: resumed, rows, ms: Math.round(performance.now() - started) };
    }
    await a.query('begin');
    await a.query('select pg_advisory_xact_lock(hashtext($1))', [PROMOTE_LOCK]);
    const restored: RestoreResult['tables'] = [];
    for (const t of m.tables) {
      opts.progress?.(t.table);
      const parent = qualified(master.schema, t.table);
      const part = partitionName(t.table, release);
      const partQ = qualified(master.schema, part);
      const kind = (await a.query('select c.relkind from pg_class c where c.oid = to_regclass($1)', [parent])).rows[0]?.relkind as string | undefined;
      if (kind !== 'p') throw new TributaryError('gate_state', `master env ${master.name} has no partitioned table ${parent} to restore ${release}'s ${t.table} into${kind ? ' (it is not partitioned)' : ''}: promote a release first, or re-create it`, { table: parent });
      const existing = (await a.query(
        `select c.oid::regclass::text as name from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = to_regclass($1) and pg_get_expr(c.relpartbound, c.oid) = $2`,
        [parent, `FOR VALUES IN (${literal(release)})`],
      )).rows[0] as { name: string } | undefined;
      if (existing || (await a.query('select to_regclass($1)::text as t', [partQ])).rows[0].t) {
        throw new TributaryError('gate_state', `${release} is in master already (${existing?.name ?? partQ}): nothing to restore`, { release });
      }
      const shape = (await a.query<TableColumn>(SHAPE_SQL, [parent])).rows;
      const want = new Map(t.columns.map((c) => [c.name, c.type]));
      const problems = [...t.columns.filter((c) => !shape.some((s) => s.name === c.name)).map((c) => `${c.name} is gone`), ...shape.filter((s) => want.has(s.name) && want.get(s.name) !== s.type).map((s) => `${s.name} is ${s.type} (archived: ${want.get(s.name)})`)];
      if (problems.length > 0) throw new TributaryError('gate_state', `master table ${parent} changed since ${release} was archived (${problems.join('; ')}): align it first`, { table: parent });
      await a.query(`create table ${partQ} (like ${parent} including defaults including constraints)`);
      // the partition bound as a constraint: rows are checked on the way in, and attaching needs no scan
      await a.query(`alter table ${partQ} add constraint tributary_restore_bound check (${ident(m.releaseColumn)} is not null and ${ident(m.releaseColumn)} = ${literal(release)})`);
      await copyFromFile(a, { failpoint: 'restore.copy', file: path.join(dir, t.file), table: partQ, columns: t.columns.map((c) => c.name) });
      const byName = (await a.query<TableColumn>(COLUMNS_SQL, [partQ])).rows;
      const s = (await a.query<{ rows: number; checksum: string }>(checksumSql(byName, master.schema, part, 'true'))).rows[0]!;
      if (Number(s.rows) !== t.rows || s.checksum !== t.checksum) {
        throw new TributaryError('gate_drift', `restore of ${release}: ${partQ} has ${s.rows} rows, checksum ${s.checksum}, but the manifest ${file} says ${t.rows} rows, checksum ${t.checksum}: nothing restored`, { table: partQ });
      }
      await a.query(`alter table ${parent} attach partition ${partQ} for values in (${literal(release)})`);
      await a.query(`alter table ${partQ} drop constraint tributary_restore_bound`);
      restored.push({ table: part, rows: t.rows, checksum: t.checksum, verified: true });
      await failpoint('restore.table-copied');
    }
    await a.query('commit');
    await failpoint('restore.after-master-commit');
    const rows = await recordRestore(ctx, file, release, master.name, restored, opts.actor);
    return { release, manifest: file, env: master.name, tables: restored, rows, ms: Math.round(performance.now() - started) };
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
  return ((await ctx.db.control('archives').whereNull('restored_at').distinct('release')) as { release: string }[]).map((r) => r.release);
}
