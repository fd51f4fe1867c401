import crypto from 'node:crypto';
import fs from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import type pg from 'pg';
import { copyStreams } from '../../db/pg.js';
import { TributaryError } from '../../errors.js';
import { checksumSql, textSettingsSql, type TableChecksum, type TableColumn } from './checksum.js';
import { failpoint, failpointAction } from './failpoints.js';
import { firstRow } from './must.js';
import { ident, literal } from './sql.js';

/**
 * The verified copy: how rows travel between databases (work area → staging, staging → master, master →
 * bundles, bundles → production, master ↔ archives). Rows travel as each cell's canonical text, what COPY
 * writes, under the explicit settings of textSettingsSql() on both ends: every value arrives exactly as it
 * left (JSON null stays JSON null, a json keeps its whitespace and duplicate keys, -0 stays -0). After the
 * copy, the target's count and checksum must equal the expected figures, computed by the caller from what
 * the source holds (never from the stream being checked).
 *
 * Each copy has its failpoint (`<phase>.copy`, reached just before the rows stream): `pause` and the other
 * actions stop there; `corrupt` alters one cell in flight. Copies into a file (bundle, archive) read the
 * file back before anyone relies on it; copies out of a file (deploy, restore) are verified by the count and
 * checksum the file's manifest recorded from its source.
 */

/**
 * The cells of a row as canonical texts, as one jsonb object ({column: text}, SQL NULL as JSON null):
 * the work area's carrier. `alias` is the row's table alias; `columns` its columns.
 */
export function cellsObjectSql(alias: string, columns: readonly { name: string }[]): string {
  if (columns.length === 0) return `'{}'::jsonb`;
  // jsonb_object over two arrays: no limit on the number of columns (jsonb_build_object takes at most 50)
  const names = columns.map((c) => literal(c.name)).join(', ');
  const texts = columns.map((c) => `${alias}.${ident(c.name)}::text`).join(', ');
  return `jsonb_object(array[${names}]::text[], array[${texts}]::text[])`;
}

/** The cells of a work-area row (`dataExpr`, a cellsObjectSql object) as text columns, in the given order. */
export function cellsSelectSql(dataExpr: string, columns: readonly { name: string }[]): string {
  return columns.map((c) => `${dataExpr}->>${literal(c.name)}`).join(', ');
}

export interface VerifiedCopy {
  /** The failpoint of this copy (`<phase>.copy`): `corrupt` alters one cell in flight (tests only). */
  failpoint: string;
  /** A query yielding the rows, one text (or typed) column per target column, in `columns` order. */
  select: string;
  /** The qualified target table. */
  table: string;
  /** The target's columns the rows fill, in the select's order. */
  columns: readonly string[];
}

/**
 * Copies rows from `source` into `target` as COPY text. Both connections must be inside a transaction
 * (the settings are set for it only). Returns the rows written.
 */
export async function copyRows(source: pg.Client, target: pg.Client, c: VerifiedCopy): Promise<number> {
  await source.query(textSettingsSql());
  await target.query(textSettingsSql());
  await failpoint(c.failpoint);
  const out = source.query(copyStreams().to(`copy (${c.select}) to stdout`));
  const into = target.query(copyStreams().from(`copy ${c.table} (${c.columns.map(ident).join(', ')}) from stdin`));
  if (failpointAction(c.failpoint) === 'corrupt') await pipeline(out, corruptOneCell(), into);
  else await pipeline(out, into);
  return into.rowCount;
}

export interface FileWritten {
  /** Rows written (the source's count of what it sent). */
  rows: number;
  /** Size and sha256 of the compressed file. */
  bytes: number;
  sha256: string;
}

/**
 * Copies the rows of `select` on `source` into `file`, gzip-compressed COPY text, under the copy's settings
 * (`source` must be inside a transaction). The text handed to the compressor must be, byte for byte, what
 * the source sent, the file read back must hold exactly the compressor's output (gzip's CRC checks the text
 * again on every read), and the text must hold `expectedRows` rows (the source's own count, taken by the caller with the
 * checksum the manifest records, possibly still being computed); else the copy is refused, naming `what`
 * (the table), and the file is removed.
 */
export async function copyToFile(
  source: pg.Client,
  c: {
    failpoint: string;
    select: string;
    file: string;
    what: string;
    expectedRows: number | Promise<number>;
    details?: Record<string, unknown>;
  },
): Promise<FileWritten> {
  await source.query(textSettingsSql());
  await failpoint(c.failpoint);
  const sent = crypto.createHash('sha256');
  const out = source.query(copyStreams().to(`copy (${c.select}) to stdout`));
  const stages: NodeJS.ReadWriteStream[] = [tap((b) => sent.update(b))];
  if (failpointAction(c.failpoint) === 'corrupt') stages.push(corruptOneCell());
  // what is handed to the compressor, and what the compressor wrote, each hashed on the way
  const handed = crypto.createHash('sha256');
  const written = crypto.createHash('sha256');
  let lines = 0;
  stages.push(
    tap((b) => {
      handed.update(b);
      for (let i = b.indexOf(10); i >= 0; i = b.indexOf(10, i + 1)) lines++;
    }),
    zlib.createGzip({ level: 1 }),
    tap((b) => written.update(b)),
  );
  await pipeline([out, ...stages, fs.createWriteStream(c.file)]);
  fsyncFile(c.file);
  // read back: what the file holds, not what was handed to it. The file's bytes must be the compressor's
  // output, and its input the source's text (zlib's own framing checks the compression on every read).
  const file = crypto.createHash('sha256');
  let bytes = 0;
  await pipeline(
    fs.createReadStream(c.file),
    tap((b) => {
      file.update(b);
      bytes += b.length;
    }),
    drain(),
  );
  const rows = Number(out.rowCount);
  const expected = await c.expectedRows;
  const sha256 = file.digest('hex');
  if (handed.digest('hex') !== sent.digest('hex') || sha256 !== written.digest('hex') || lines !== rows || rows !== expected) {
    fs.rmSync(c.file, { force: true });
    throw new TributaryError(
      'database',
      `${c.what}: the file written does not hold the rows as the source sent them (${lines} line(s) written; ` +
        `the source sent ${rows} row(s) and counted ${expected}${lines === rows ? ', and their text differs' : ''}); nothing was written`,
      c.details ?? {},
    );
  }
  return { rows, bytes, sha256 };
}

/**
 * Copies a gzip-compressed COPY text file into `table` (`columns` in the file's order) under the copy's
 * settings (`target` must be inside a transaction). Returns the rows written and the sha256 of the
 * compressed file as read; the caller verifies count and checksum against the file's manifest.
 */
export async function copyFromFile(
  target: pg.Client,
  c: { failpoint: string; file: string; table: string; columns: readonly string[] },
): Promise<{ rows: number; sha256: string }> {
  await target.query(textSettingsSql());
  await failpoint(c.failpoint);
  const hash = crypto.createHash('sha256');
  const into = target.query(copyStreams().from(`copy ${c.table} (${c.columns.map(ident).join(', ')}) from stdin`));
  const stages: NodeJS.ReadWriteStream[] = [tap((b) => hash.update(b)), zlib.createGunzip()];
  if (failpointAction(c.failpoint) === 'corrupt') stages.push(corruptOneCell());
  await pipeline([fs.createReadStream(c.file), ...stages, into]);
  return { rows: into.rowCount, sha256: hash.digest('hex') };
}

function tap(see: (chunk: Buffer) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      see(chunk);
      cb(null, chunk);
    },
  });
}

/** A sink that discards what it reads. */
function drain(): NodeJS.WritableStream {
  return new Transform({ transform: (_c, _e, cb) => cb() }).resume();
}

/** Flushes a written file to disk before anything relies on it (bundles, archives, packages). */
export function fsyncFile(file: string): void {
  const fd = fs.openSync(file, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** The count and checksum of the target's rows matching `where`, under the copy's settings. */
export async function targetChecksum(
  target: pg.Client,
  schema: string | undefined,
  table: string,
  columnsByName: TableColumn[],
  where: string,
): Promise<TableChecksum> {
  await target.query(textSettingsSql());
  const res = await target.query<TableChecksum>(checksumSql(columnsByName, schema, table, where));
  return firstRow(res.rows, `the checksum query over ${table} to return its one row`);
}

/** Refuses a copy whose target does not hold what was expected: names the table; nothing says "verified". */
export function requireChecksum(what: string, got: TableChecksum, want: TableChecksum, details: Record<string, unknown>): void {
  if (got.rows === want.rows && got.checksum === want.checksum) return;
  throw new TributaryError(
    'database',
    `${what}: after the copy, ${got.rows} row(s) with checksum ${got.checksum}, ` +
      `but the source's values give ${want.rows} with checksum ${want.checksum}; nothing was written`,
    details,
  );
}

/**
 * A test-only fault: changes, in the first row in flight, the last digit that follows another digit, one down
 * (9 → 8, 0 → 1), so the row stays valid input (a key, usually first, and a release name such as R0 are left
 * alone; a time zone offset +00 becomes +01, 12.50 becomes 12.51): only verification can catch it. The
 * row's last `skipLastFields` fields are left alone (e.g. a hash that travels with the row).
 */
export function corruptOneCell(skipLastFields = 0): Transform {
  let done = false;
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      if (!done) {
        let end = chunk.indexOf(10);
        if (end < 0) end = chunk.length;
        for (let k = 0; k < skipLastFields; k++) end = Math.max(0, chunk.lastIndexOf(9, end - 1));
        for (let i = end - 1; i >= 1; i--) {
          const b = chunk.readUInt8(i);
          const before = chunk.readUInt8(i - 1);
          if (b >= 48 && b <= 57 && before >= 48 && before <= 57) {
            chunk[i] = b === 48 ? 49 : b - 1;
            done = true;
            break;
          }
        }
      }
      cb(null, chunk);
    },
  });
}
