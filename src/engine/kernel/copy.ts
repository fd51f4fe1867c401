import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { TributaryError } from '../../errors.js';
import { checksumSql, textSettingsSql, type TableChecksum, type TableColumn } from './checksum.js';
import { failpointAction } from './failpoints.js';
import { ident, literal } from './sql.js';

/**
 * The verified copy: how rows travel between databases (work area → staging, staging → master, master →
 * bundles, bundles → production, master ↔ archives). Rows travel as each cell's canonical text, what COPY
 * writes, under the explicit settings of textSettingsSql() on both ends: every value arrives exactly as it
 * left (JSON null stays JSON null, a json keeps its whitespace and duplicate keys, -0 stays -0). After the
 * copy, the target's count and checksum must equal the expected figures, computed by the caller from what
 * the source holds (never from the stream being checked).
 */

/**
 * The cells of a row as canonical texts, as one jsonb object ({column: text}, SQL NULL as JSON null):
 * the work area's carrier. `alias` is the row's table alias; `columns` its columns.
 */
export function cellsObjectSql(alias: string, columns: readonly { name: string }[]): string {
  if (columns.length === 0) return `'{}'::jsonb`;
  // jsonb_object over two arrays: no limit on the number of columns (jsonb_build_object takes at most 50)
  return `jsonb_object(array[${columns.map((c) => literal(c.name)).join(', ')}]::text[], array[${columns.map((c) => `${alias}.${ident(c.name)}::text`).join(', ')}]::text[])`;
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
  const out = source.query(copyTo(`copy (${c.select}) to stdout`));
  const into = target.query(copyFrom(`copy ${c.table} (${c.columns.map(ident).join(', ')}) from stdin`));
  if (failpointAction(c.failpoint) === 'corrupt') await pipeline(out, corruptOneCell(), into);
  else await pipeline(out, into);
  return into.rowCount;
}

/** The count and checksum of the target's rows matching `where`, under the copy's settings. */
export async function targetChecksum(target: pg.Client, schema: string | undefined, table: string, columnsByName: TableColumn[], where: string): Promise<TableChecksum> {
  await target.query(textSettingsSql());
  return (await target.query<TableChecksum>(checksumSql(columnsByName, schema, table, where))).rows[0]!;
}

/** Refuses a copy whose target does not hold what was expected: names the table; nothing says "verified". */
export function requireChecksum(what: string, got: TableChecksum, want: TableChecksum, details: Record<string, unknown>): void {
  if (got.rows === want.rows && got.checksum === want.checksum) return;
  throw new TributaryError(
    'database',
    `${what}: after the copy, ${got.rows} row(s) with checksum ${got.checksum}, but the source's values give ${want.rows} with checksum ${want.checksum}; nothing was written`,
    details,
  );
}

/**
 * A test-only fault: changes one digit of the first row in flight (the row stays valid input, so only
 * verification can catch it).
 */
function corruptOneCell(): Transform {
  let done = false;
  return new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback) {
      if (!done) {
        const end = chunk.indexOf(10);
        for (let i = 0; i < (end < 0 ? chunk.length : end); i++) {
          const b = chunk[i]!;
          if (b >= 48 && b <= 57) {
            chunk[i] = b === 57 ? 48 : b + 1;
            done = true;
            break;
          }
        }
      }
      cb(null, chunk);
    },
  });
}
