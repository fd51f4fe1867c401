import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { TributaryError } from '../../errors.js';
import { logger } from '../../log.js';
import type { ArchivesRow, PromotionsRow } from '../../db/rows.js';
import { recordAudit } from '../kernel/audit.js';
import { failpoint } from '../kernel/failpoints.js';
import { checksumSql, COLUMNS_SQL, type TableColumn } from '../kernel/checksum.js';
import { copyToFile } from '../kernel/copy.js';
import { envError, type Actor, type Ctx } from '../kernel/context.js';
import { must } from '../kernel/must.js';
import { localKeys, writePackageManifest, type PackageFile } from '../kernel/package.js';
import { qualified, ident } from '../kernel/sql.js';
import {
  ARCHIVE_FORMAT,
  connect,
  masterOf,
  PROMOTE_LOCK,
  readManifest,
  SHAPE_SQL,
  type ArchivedTable,
  type Manifest,
} from './archiveFormat.js';
import { masterPartitions, type MasterPartition } from './coverage.js';

export { archivedReleases, findManifest, restoreRelease, type RestoreResult } from './restore.js';
export { readManifest, type ArchivedTable, type Manifest } from './archiveFormat.js';

/**
 * Keeping master lean: `archive --older-than 2y` moves the release partitions last promoted before the
 * cut-off to cold storage, and `restore R0` brings one back (restore.ts).
 *
 * Archive, per release, in one transaction on master (serialised with promotions by their advisory
 * lock): each partition is locked against writes (SHARE), then exported with COPY (text) through gzip
 * while a second connection computes its checksum the way every other copy is verified
 * (src/engine/kernel/checksum.ts); the row counts of both must agree. The files are written and synced, then
 * the manifest (the package format of bundles and transfer packages, kernel/package.ts: tables, columns,
 * row counts, checksums, the SHA-256 of each file; signed when this side has a signing key), and only then
 * are the partitions detached and dropped and the transaction committed: a failure anywhere leaves master
 * as it was.
 */
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

type Progress = (release: string, table: string) => void;
const UNITS: Record<string, number> = { y: 365.25 * 86_400_000, mo: 30 * 86_400_000, w: 7 * 86_400_000, d: 86_400_000, h: 3_600_000 };

/** `2y`, `18mo`, `8w`, `90d`, `12h` → milliseconds. */
export function parseAge(text: string, option = '--older-than'): number {
  const m = /^(\d+(?:\.\d+)?)(y|mo|w|d|h)$/.exec(text.trim());
  const unit = m ? UNITS[m[2] ?? ''] : undefined;
  if (!m || unit === undefined || Number(m[1]) <= 0) {
    throw new TributaryError('usage', `${option} takes an age such as 2y, 18mo, 8w, 90d or 12h (got "${text}")`);
  }
  return Number(m[1]) * unit;
}

const stamp = (d: Date) => d.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');

/** The archives row and audit event of an archive whose master transaction committed. */
async function recordArchive(ctx: Ctx, manifestFile: string, m: Manifest): Promise<{ rows: number; summary: ArchiveResult['tables'] }> {
  const rows = m.tables.reduce((n, t) => n + t.rows, 0);
  const summary = m.tables.map((t) => ({ table: t.partition, rows: t.rows, checksum: t.checksum, bytes: m.files[t.file]?.bytes ?? 0 }));
  await ctx.db.control.transaction(async (trx) => {
    const tables = JSON.stringify(summary);
    const row = { release: m.release, env: m.env, manifest: manifestFile, row_count: rows, tables, archived_by: m.archivedBy };
    await trx('archives').insert(row);
    const details = { env: m.env, promotedAt: m.promotedAt, ...(m.olderThan ? { olderThan: m.olderThan } : {}), rows, tables: summary };
    await recordAudit(trx, { actor: m.archivedBy, action: 'archive.release', release: m.release, subject: manifestFile, details });
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
  const rows: Pick<ArchivesRow, 'manifest'>[] = await ctx.db.control<ArchivesRow>('archives').select('manifest');
  const known = new Set(rows.map((r) => r.manifest));
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
    tables.push({ table: p.partition, rows: Number(must(res.rows[0], `the row count of ${p.partition}`).n), checksum: '', bytes: 0 });
  }
  return { release, promotedAt: promotedAt.toISOString(), manifest: '', rows: tables.reduce((n, t) => n + t.rows, 0), tables, ms: 0 };
}

/** When each release in master was last promoted. */
async function lastPromoted(ctx: Ctx): Promise<Map<string, Date>> {
  const rows = (await ctx.db.control<PromotionsRow>('promotions').groupBy('release').select('release').max('promoted_at as at')) as {
    release: string;
    at: Date;
  }[];
  return new Map(rows.map((r) => [r.release, new Date(r.at)]));
}

/** Why a release stays in master (null: it is archived). */
function keptBecause(at: Date | null, cutoff: Date): string | null {
  if (!at) return 'no promotion recorded (its age is unknown)';
  if (at.getTime() >= cutoff.getTime()) return `promoted after the cut-off ${cutoff.toISOString()}`;
  return null;
}

export async function archiveReleases(
  ctx: Ctx,
  opts: { olderThan: string; actor: Actor; dryRun?: boolean; now?: Date; progress?: Progress },
): Promise<ArchiveReport> {
  const age = parseAge(opts.olderThan);
  const cutoff = new Date((opts.now ?? new Date()).getTime() - age);
  const parts = await masterPartitions(ctx);
  if (!opts.dryRun) await recordInterrupted(ctx, parts);
  const releases = [...new Set(parts.map((p) => p.release))].sort();
  const promoted = await lastPromoted(ctx);
  const report: ArchiveReport = { cutoff: cutoff.toISOString(), dryRun: !!opts.dryRun, archived: [], kept: [] };
  for (const release of releases) {
    const at = promoted.get(release) ?? null;
    const reason = keptBecause(at, cutoff);
    if (!at || reason) {
      report.kept.push({ release, promotedAt: at ? at.toISOString() : null, reason: reason ?? '' });
      continue;
    }
    if (opts.dryRun) {
      report.archived.push(await planArchive(ctx, release, at, parts));
      continue;
    }
    const more = { promotedAt: at, olderThan: opts.olderThan, ...(opts.progress ? { progress: opts.progress } : {}) };
    report.archived.push(await archiveRelease(ctx, release, { actor: opts.actor, ...more }));
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

interface Export {
  ctx: Ctx;
  release: string;
  dir: string;
  /** The exporting connection (in the archive's transaction) and the one computing the checksums. */
  a: pg.Client;
  b: pg.Client;
  files: Record<string, PackageFile>;
}

/** One partition into its file, locked against writes, its checksum computed meanwhile on `b`. */
async function exportPartition(x: Export, p: MasterPartition): Promise<ArchivedTable> {
  const master = masterOf(x.ctx);
  await x.a.query(`lock table ${p.partition} in share mode`);
  const shape = (await x.a.query<TableColumn>(SHAPE_SQL, [p.partition])).rows;
  const byName = (await x.a.query<TableColumn>(COLUMNS_SQL, [p.partition])).rows;
  const file = `${p.table}.copy.gz`;
  const list = shape.map((c) => ident(c.name)).join(', ');
  // the checksum on a second connection, meanwhile: the SHARE lock keeps the rows as they are
  const sum = x.b
    .query<{ rows: number; checksum: string }>(checksumSql(byName, p.schema, p.name, 'true'))
    .then((r) => must(r.rows[0], `the checksum of ${p.partition}`));
  sum.catch(() => undefined);
  const written = await copyToFile(x.a, {
    failpoint: 'archive.copy',
    select: `select ${list} from ${p.partition}`,
    file: path.join(x.dir, file),
    what: `archive of ${x.release}: master env ${master.name}, table ${p.partition}`,
    expectedRows: sum.then((s) => Number(s.rows)),
    details: { release: x.release, table: p.partition },
  });
  const s = await sum;
  x.files[file] = { sha256: written.sha256, bytes: written.bytes };
  return { entity: p.entity, table: p.table, partition: p.name, file, columns: shape, rows: written.rows, checksum: s.checksum };
}

type ArchiveOpts = { actor: Actor; promotedAt?: Date | null; olderThan?: string; progress?: Progress };

function manifestOf(ctx: Ctx, release: string, now: Date, opts: ArchiveOpts, x: Pick<Manifest, 'tables' | 'files'>): Manifest {
  const master = masterOf(ctx);
  return {
    format: ARCHIVE_FORMAT,
    release,
    env: master.name,
    schema: master.schema ?? null,
    releaseColumn: ctx.config.tags.release,
    promotedAt: opts.promotedAt ? opts.promotedAt.toISOString() : null,
    ...(opts.olderThan ? { olderThan: opts.olderThan } : {}),
    archivedAt: now.toISOString(),
    archivedBy: opts.actor,
    compression: 'gzip',
    copyFormat: 'text',
    ...x,
  };
}

/** The partitions out of master: detached and dropped (in the archive's transaction, not yet committed). */
async function dropPartitions(ctx: Ctx, a: pg.Client, parts: MasterPartition[]): Promise<void> {
  const master = masterOf(ctx);
  for (const p of parts) {
    await a.query(`alter table ${qualified(master.schema, p.table)} detach partition ${p.partition}`);
    await a.query(`drop table ${p.partition}`);
  }
}

export async function archiveRelease(ctx: Ctx, release: string, opts: ArchiveOpts): Promise<ArchiveResult> {
  const started = performance.now();
  const master = masterOf(ctx);
  const parts = (await masterPartitions(ctx)).filter((p) => p.release === release);
  if (parts.length === 0) {
    throw new TributaryError('no_rows', `master env ${master.name} has no partition of ${release} to archive`, { release });
  }
  const { signing } = localKeys(ctx.config.transfer, ctx.config.file);
  const now = new Date();
  const dir = newDirectory(ctx.config.archive.dir, `${release.replace(/[^A-Za-z0-9._-]/g, '_')}-${stamp(now)}`);
  const a = await connect(ctx, master);
  let b: pg.Client | undefined;
  let committed = false;
  try {
    b = await connect(ctx, master);
    await a.query('begin');
    await a.query('select pg_advisory_xact_lock(hashtext($1))', [PROMOTE_LOCK]);
    const x: Export = { ctx, release, dir, a, b, files: {} };
    const tables: ArchivedTable[] = [];
    for (const p of parts) {
      opts.progress?.(release, p.table);
      tables.push(await exportPartition(x, p));
      await failpoint('archive.table-exported');
    }
    const manifest = manifestOf(ctx, release, now, opts, { tables, files: x.files });
    writePackageManifest(dir, manifest, signing);
    await dropPartitions(ctx, a, parts);
    await failpoint('archive.before-commit');
    await a.query('commit');
    committed = true;
    await failpoint('archive.after-master-commit');
    const manifestFile = path.join(dir, 'manifest.json');
    const { rows, summary } = await recordArchive(ctx, manifestFile, manifest);
    const ms = Math.round(performance.now() - started);
    return { release, promotedAt: manifest.promotedAt, manifest: manifestFile, rows, tables: summary, ms };
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
