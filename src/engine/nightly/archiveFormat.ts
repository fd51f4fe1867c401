import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { pgClient } from '../../db/pg.js';
import { envByRole, type EnvSpec } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { textSettingsSql, type TableColumn } from '../kernel/checksum.js';
import { envError, type Ctx } from '../kernel/context.js';
import {
  FORMATS,
  localKeys,
  MANIFEST_FILE,
  readVerifiedPackage,
  verifyFiles,
  type PackageFile,
  type PackageManifest,
  type PackageTable,
} from '../kernel/package.js';

/**
 * The archive's manifest: the package format of bundles and transfer packages (kernel/package.ts), format
 * tributary-archive-v2, with the archive's own fields (the env, its schema, the release column, when it was
 * promoted and archived). Archives of the older format tributary-archive-v1 (a manifest.json of its own,
 * each table with its file's sha256 and size) are still read and restored, their files verified by the same
 * code; any other format is refused, naming it.
 */
export const ARCHIVE_FORMAT = FORMATS.archive;
export const OLD_ARCHIVE_FORMAT = 'tributary-archive-v1';

export interface ArchivedTable extends PackageTable {
  /** The partition's name in master's schema. */
  partition: string;
  /** In the table's column order: the COPY column list. */
  columns: TableColumn[];
}

export interface Manifest extends PackageManifest {
  format: typeof ARCHIVE_FORMAT | typeof OLD_ARCHIVE_FORMAT;
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

export const PROMOTE_LOCK = 'tributary:promote';
export const SHAPE_SQL = `select a.attname as name, format_type(a.atttypid, a.atttypmod) as type
    from pg_attribute a where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped order by a.attnum`;

export function masterOf(ctx: Ctx): EnvSpec {
  const master = envByRole(ctx.config, 'master');
  if (!master) throw new TributaryError('config_invalid', `${ctx.config.file}: environments: no env has role: master`);
  return master;
}

export async function connect(ctx: Ctx, env: EnvSpec): Promise<pg.Client> {
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

type Fields = Record<string, unknown>;
const bad = (file: string, field: string, what: string) =>
  new TributaryError('config_invalid', `${file}: ${field}: ${what}`, { file, field });

function parse(file: string): Fields {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Fields;
  } catch (err) {
    throw new TributaryError('config_invalid', `${file}: not a readable JSON manifest: ${(err as Error).message}`, { file });
  }
}

/** The archive's own fields, in either format. */
function checkArchiveFields(file: string, m: Fields): void {
  for (const f of ['release', 'env', 'releaseColumn', 'archivedAt'] as const) {
    if (typeof m[f] !== 'string' || !m[f]) throw bad(file, f, 'missing');
  }
  if (!Array.isArray(m.tables) || m.tables.length === 0) throw bad(file, 'tables', 'missing or empty');
  (m.tables as Fields[]).forEach((t, i) => {
    if (typeof t.partition !== 'string' || !t.partition) throw bad(file, `tables[${i}].partition`, 'missing');
  });
}

/** A tributary-archive-v1 manifest's tables, checked as that format was, then in today's shape. */
function fromOldFormat(file: string, m: Fields): Manifest {
  const files: Record<string, PackageFile> = {};
  const tables = (m.tables as Fields[]).map((t, i) => {
    for (const f of ['entity', 'table', 'file', 'checksum', 'sha256'] as const) {
      if (typeof t[f] !== 'string' || !t[f]) throw bad(file, `tables[${i}].${f}`, 'missing');
    }
    if (typeof t.rows !== 'number' || t.rows < 0) throw bad(file, `tables[${i}].rows`, 'not a row count');
    if (!Array.isArray(t.columns) || t.columns.length === 0) throw bad(file, `tables[${i}].columns`, 'missing');
    const name = t.file as string;
    if (path.isAbsolute(name) || name.includes('..')) throw bad(file, `tables[${i}].file`, 'must be a file name next to the manifest');
    const { sha256, bytes, ...rest } = t;
    files[name] = { sha256: sha256 as string, bytes: Number(bytes ?? 0) };
    return rest as unknown as ArchivedTable;
  });
  return { ...(m as unknown as Manifest), tables, files };
}

/**
 * Reads a manifest and checks its fields, naming the file and the field that is wrong (its files are not
 * read: see verifiedArchive). An old-format manifest comes back in today's shape.
 */
export function readManifest(file: string): Manifest {
  const m = parse(file);
  if (m.format !== ARCHIVE_FORMAT && m.format !== OLD_ARCHIVE_FORMAT) {
    const what = `${JSON.stringify(m.format)} is not an archive format this version restores`;
    const reads = `it reads ${ARCHIVE_FORMAT}, and the older ${OLD_ARCHIVE_FORMAT}`;
    throw bad(file, 'format', `${what} (${reads}); restore it with the version that wrote it`);
  }
  checkArchiveFields(file, m);
  return m.format === OLD_ARCHIVE_FORMAT ? fromOldFormat(file, m) : (m as unknown as Manifest);
}

/**
 * The archive at `file`, verified before master is touched, by the package code every format shares: a
 * tributary-archive-v2 archive as a package (its signature when signed, its tables, each file's size and
 * SHA-256); a tributary-archive-v1 archive by its fields and each file's SHA-256.
 */
export async function verifiedArchive(ctx: Ctx, file: string): Promise<Manifest> {
  const m = readManifest(file);
  const dir = path.dirname(file);
  if (m.format === OLD_ARCHIVE_FORMAT) {
    await verifyFiles(dir, file, m.files);
    return m;
  }
  if (path.basename(file) !== MANIFEST_FILE) throw bad(file, 'file', `an archive's manifest is its folder's ${MANIFEST_FILE}`);
  const { trusted } = localKeys(ctx.config.transfer, ctx.config.file);
  const pkg = await readVerifiedPackage<Manifest>(dir, trusted, ARCHIVE_FORMAT, { unsigned: 'accept' });
  return pkg.manifest;
}
