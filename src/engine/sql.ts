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
