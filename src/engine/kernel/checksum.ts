import type { Knex } from 'knex';
import { firstRow } from './must.js';
import { ident, qualified } from './sql.js';

/**
 * Order-independent table checksums, identical on every PostgreSQL from 15 up: each cell is rendered as
 * its canonical text (what COPY writes: the type's own output) under the explicit settings of TEXT_SETTINGS,
 * the row text is hashed, and the row hashes are summed. Columns are taken in name order so that two
 * tables with the same columns in another order agree. The same text is what rows travel as (copy.ts), so
 * a checksum tells apart every two values a carrier could confuse (JSON null and SQL NULL, a json's
 * whitespace, 1.0 and 1.00, -0 and 0).
 */

/**
 * The settings every copy and checksum reads and writes text under, never a session's defaults: timestamps
 * in UTC and ISO, intervals and floats in one form (extra_float_digits 3: the shortest exact text), money
 * in one locale. `local`: for the current transaction only.
 */
export function textSettingsSql(scope: 'local' | 'session' = 'local'): string {
  const set = scope === 'local' ? 'set local' : 'set';
  return [
    `${set} timezone = 'UTC'`,
    `${set} datestyle = 'ISO, YMD'`,
    `${set} intervalstyle = 'postgres'`,
    `${set} extra_float_digits = 3`,
    `${set} lc_monetary = 'C'`,
  ].join('; ');
}
export interface TableColumn {
  name: string;
  type: string;
}

export interface TableChecksum {
  rows: number;
  checksum: string;
}

/** Columns of a table in name order; `$1` is the qualified table name. */
export const COLUMNS_SQL = `select a.attname as name, format_type(a.atttypid, a.atttypmod) as type
       from pg_attribute a
      where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped
      order by a.attname`;

export async function tableColumns(knex: Knex, schema: string | undefined, table: string): Promise<TableColumn[]> {
  const res = await knex.raw<{ rows: TableColumn[] }>(COLUMNS_SQL.replace('$1', '?'), [qualified(schema, table)]);
  return res.rows;
}

/** Columns in the order of COLUMNS_SQL (`order by attname`: byte order, never the locale's). */
export function byColumnName<T extends { name: string }>(a: T, b: T): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** The checksum query over `table` where `whereSql`; returns one row (rows, checksum). */
export function checksumSql(columns: TableColumn[], schema: string | undefined, table: string, whereSql: string): string {
  return `select count(*)::int as rows, coalesce(sum(${rowHashExpr(columns)}), 0)::text as checksum
         from ${qualified(schema, table)} where ${whereSql}`;
}

export async function tableExists(knex: Knex, schema: string | undefined, table: string): Promise<boolean> {
  const res = await knex.raw<{ rows: { oid: string | null }[] }>('select to_regclass(?)::text as oid', [qualified(schema, table)]);
  return res.rows[0]?.oid != null;
}

/** A cell's canonical text (under TEXT_SETTINGS): its type's own output, as COPY writes it. */
export function canonicalExpr(column: string): string {
  return `${ident(column)}::text`;
}

/**
 * A row's hash: PostgreSQL's own 64-bit text hash (hashtextextended, the function hash partitioning
 * relies on, so it stays the same across versions) of the canonical row text. About 3× faster than md5 here,
 * and available where md5 is not (FIPS mode). Summed by sum(bigint), which returns a numeric (added up in
 * 128-bit integers, not numeric arithmetic per row): the total never overflows.
 */
export function rowHashExpr(columns: TableColumn[]): string {
  return rowHashOfTexts(columns.map((col) => canonicalExpr(col.name)));
}

/**
 * The same hash over the cells' texts given directly (in column-name order), e.g. the texts a row was
 * collected as: equal to rowHashExpr over a table whose cells render as those texts.
 */
export function rowHashOfTexts(texts: string[]): string {
  const parts = texts.map((t) => `coalesce(${t}, '\\N')`);
  // the sign bit masked off: checksums stay non-negative numbers
  return `(hashtextextended(concat_ws(chr(31), ${parts.join(', ')}), 0) & 9223372036854775807)`;
}

/** Count and checksum of the rows of `table` matching `where` (an SQL condition with bindings). */
export async function tableChecksum(
  knex: Knex,
  schema: string | undefined,
  table: string,
  where: { sql: string; bindings: readonly unknown[] } = { sql: 'true', bindings: [] },
): Promise<TableChecksum> {
  const columns = await tableColumns(knex, schema, table);
  return knex.transaction(async (trx) => {
    await trx.raw(textSettingsSql());
    const res = await trx.raw<{ rows: { rows: number; checksum: string }[] }>(
      checksumSql(columns, schema, table, where.sql),
      where.bindings as Knex.RawBinding[],
    );
    const row = firstRow(res.rows, `the checksum query over ${table} to return its one row`);
    return { rows: row.rows, checksum: row.checksum };
  });
}

/** The same checksum over the rows of an arbitrary query (`fromSql` yields the table's columns). */
export function checksumOfQuerySql(columns: TableColumn[], fromSql: string): string {
  return `select count(*)::int as rows, coalesce(sum(${rowHashExpr(columns)}), 0)::text as checksum from (${fromSql}) as q`;
}
