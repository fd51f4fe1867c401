import type pg from 'pg';

/**
 * Odd values for the exact-values tests (test/engine/load/exact-values.db.test.ts,
 * test/e2e/type-matrix.db.test.ts), and how those tests read cells: each cell's ::text under fixed
 * settings, by queries of their own (never the carrier's or the checksums' code).
 */
export const SETTINGS = `set local timezone = 'UTC'; set local datestyle = 'ISO, YMD'; set local intervalstyle = 'postgres'; set local extra_float_digits = 3; set local lc_monetary = 'C'`;

/** Each row's cells as text (id → texts in the given column order), read under fixed settings. */
export async function cellTexts(c: pg.Client, table: string, columns: string[], where: string): Promise<Map<number, (string | null)[]>> {
  return new Map([...(await cellTextsBy(c, table, columns, where, 'id'))].map(([k, v]) => [Number(k), v]));
}

/** The odd columns added to users in every env (the staging table is created like ST-1's). */
export const ODD = `add column prefs json, add column doc jsonb, add column score float8, add column ratio real, add column amount numeric,
  add column tags int[], add column blob bytea, add column span interval, add column cash money, add column at timestamp,
  add column born date, add column alarm timetz, add column "odd ""name"" col" text, add column zoned timestamptz, add column u uuid, add column ip inet,
  add column net cidr, add column mac macaddr, add column bits bit varying, add column words tsvector, add column x xml, add column span2 int4range`;

/** Three users in ST-1 holding the odd values (JSON null, duplicate keys, -0, NaN, ±infinity, escapes, …). */
export const ODD_ROWS = `insert into st1.users (id, email, username, release, feature, created_by, created_at, prefs, doc, score, ratio, amount, tags, blob, span, cash, at, born, alarm, "odd ""name"" col", zoned, u, ip, net, mac, bits, words, x, span2)
  values
  (1, 'nul@x', 'nul', 'R2', 'FEAT-M', 'qa', '2024-01-10T09:00:00Z', 'null', 'null', '-0', 'NaN', 'NaN', '{{1,NULL},{3,4}}', '\\x00ff00', '1 year -2 days 03:04:05.5', '12.34',
   'infinity', '-infinity', '10:00:00+05:30', '', '2024-03-10 02:30:00-08', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '::ffff:1.2.3.4/64', '10.1.0.0/16',
   '08:00:2b:01:02:03', '0010110', 'a fat cat sat', '<a b="1">x &amp; y</a>', '[1,5)'),
  (2, 'dup@x', 'dup', 'R2', 'FEAT-M', 'qa', '2024-01-10T09:00:00Z', '{"a": 1,  "a": 2,"b" :[ ]}', '{"b": 1, "a": [true, null]}', 'Infinity', '-Infinity', '1.50000000000000000000001',
   '{}', '\\x', '-00:00:00.000001', '-0.01', '2024-02-29 23:59:59.999999', '0001-01-01', '00:00:00-12', e'quote '' backslash \\\\ tab \\t newline \\n \\\\N emoji 🐟',
   '-infinity', null, '0.0.0.0', '::/0', null, '', '', '<!-- c -->', 'empty'),
  (3, 'esc@x', 'esc', 'R2', 'FEAT-M', 'qa', '2024-01-10T09:00:00Z', '{"z": "\\u0000"}', null, '1e-310', '3.4e38', '1.0', null, null, null, null, null, null, null, '\\N',
   '2024-06-01 12:00:00+09:30', null, null, null, null, null, null, null, '(,)')`;

/** Each row's cells as text keyed by the text of column `key`, read under fixed settings. */
export async function cellTextsBy(c: pg.Client, table: string, columns: string[], where: string, key: string): Promise<Map<string, (string | null)[]>> {
  const q = (x: string) => `"${x.replace(/"/g, '""')}"`;
  await c.query('begin');
  await c.query(SETTINGS);
  const res = await c.query(`select ${q(key)}::text as k, array[${columns.map((x) => `${q(x)}::text`).join(', ')}] as cells from ${table} where ${where}`);
  await c.query('commit');
  return new Map(res.rows.map((r) => [r.k as string, r.cells as (string | null)[]]));
}
