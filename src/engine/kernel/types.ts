import type pg from 'pg';
import { TributaryError } from '../../errors.js';

/**
 * User-defined types (enums, domains, composites) of a table's columns, so that a table created in
 * another database (staging, master, production) is created like the ST table, with its types; or
 * refused with an error naming the type.
 */
export interface UserType {
  /** Schema-qualified and quoted, as the type is created. */
  name: string;
  /** Its schema, quoted. */
  schema: string;
  kind: 'e' | 'd' | 'c';
  /** Enum labels (quoted), a domain's base type and constraints, or a composite's attributes. */
  def: string;
}

// the element type for arrays; enums, domains and composites outside the system schemas, in dependency
// order enough for one level (a domain's or composite's own user types come first by oid)
const USER_TYPES_SQL = `select distinct t.oid, quote_ident(n.nspname) || '.' || quote_ident(t.typname) as name,
       quote_ident(n.nspname) as schema, t.typtype as kind,
       case t.typtype
         when 'e' then (select string_agg(quote_literal(e.enumlabel), ', ' order by e.enumsortorder)
                          from pg_enum e where e.enumtypid = t.oid)
         when 'd' then format_type(t.typbasetype, t.typtypmod)
                       || coalesce(' ' || (select string_agg(pg_get_constraintdef(c.oid), ' ')
                                             from pg_constraint c where c.contypid = t.oid), '')
                       || case when t.typnotnull then ' not null' else '' end
         when 'c' then (select string_agg(quote_ident(x.attname) || ' ' || format_type(x.atttypid, x.atttypmod), ', ' order by x.attnum)
                          from pg_attribute x where x.attrelid = t.typrelid and x.attnum > 0 and not x.attisdropped)
       end as def
  from pg_attribute a
  join pg_type t0 on t0.oid = a.atttypid
  join pg_type t on t.oid = case when t0.typcategory = 'A' then t0.typelem else t0.oid end
  join pg_namespace n on n.oid = t.typnamespace
 where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped
   and n.nspname not in ('pg_catalog', 'information_schema') and t.typtype in ('e', 'd', 'c')
   and (t.typtype <> 'c' or (select c.relkind from pg_class c where c.oid = t.typrelid) = 'c')
 order by t.oid`;

/** The user-defined types the columns of `table` (qualified) use, read from the source. */
export async function userTypesOf(source: pg.Client, table: string): Promise<UserType[]> {
  return (await source.query<UserType>(USER_TYPES_SQL, [table])).rows;
}

/**
 * Creates in the target each type it lacks (in the current transaction); a type that cannot be created
 * there is refused, naming it and the table that needs it.
 */
export async function ensureUserTypes(target: pg.Client, types: UserType[], table: string): Promise<void> {
  for (const t of types) {
    const exists = (await target.query<{ oid: string | null }>('select to_regtype($1)::text as oid', [t.name])).rows[0]?.oid != null;
    if (exists) continue;
    const ddl =
      t.kind === 'e'
        ? `create type ${t.name} as enum (${t.def})`
        : t.kind === 'd'
          ? `create domain ${t.name} as ${t.def}`
          : `create type ${t.name} as (${t.def})`;
    try {
      await target.query('savepoint tributary_type');
      await target.query(`create schema if not exists ${t.schema}`);
      await target.query(ddl);
      await target.query('release savepoint tributary_type');
    } catch (err) {
      await target.query('rollback to savepoint tributary_type').catch(() => undefined);
      throw new TributaryError(
        'database',
        `type ${t.name}, used by ${table}: cannot be created in the target (${(err as Error).message})`,
        { type: t.name, table },
      );
    }
  }
}
