/** Small helpers for the SQL the engine builds from config identifiers (validated, and always quoted). */
export function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function qualified(schema: string | undefined, table: string): string {
  return schema ? `${ident(schema)}.${ident(table)}` : ident(table);
}

export function literal(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

export function textArray(values: string[]): string {
  return `array[${values.map(literal).join(',')}]::text[]`;
}

/**
 * The work area's text columns: byte-order collation. Keys are compared, grouped, sorted and indexed
 * millions of times in a consolidation, and the locale's collation (even C.UTF-8 on PostgreSQL 15) costs
 * a strcoll per comparison. Against a column of the default collation this one wins, so joins with the
 * control tables still work.
 */
export const KEY_TEXT = 'text collate "C"';
