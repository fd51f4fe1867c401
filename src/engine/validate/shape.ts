import { type EntitySpec } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { onEnv, type Ctx } from '../kernel/context.js';
import { qualified } from '../kernel/sql.js';
import { must } from '../kernel/must.js';

// ---------------------------------------------------------------------------------------------------
// the ST table's shape

export interface ColumnShape {
  name: string;
  type: string;
  notNull: boolean;
  /** How the column is exposed to expression and sql tests: its own type when built in, else text. */
  exposed: string;
  /** A built-in type the value must be valid input for (domains: their base type). */
  cast?: string;
  /** character varying(n) / character(n): the longest value. */
  maxLength?: number;
  enumLabels?: string[];
  array?: boolean;
}

export interface TableShape {
  env: string;
  table: string;
  columns: ColumnShape[];
}

const SHAPE_SQL = `select a.attname as name, format_type(a.atttypid, a.atttypmod) as type, a.attnotnull as "notNull",
       t.typtype, t.typcategory, tn.nspname = 'pg_catalog' as builtin,
       case when t.typtype = 'd' then format_type(t.typbasetype, t.typtypmod) end as base,
       case when t.typtype = 'd' then (select bn.nspname = 'pg_catalog' from pg_type b join pg_namespace bn on bn.oid = b.typnamespace
                                        where b.oid = t.typbasetype) end as "baseBuiltin",
       case when t.typtype = 'e' then (select array_agg(enumlabel::text order by enumsortorder)
                                         from pg_enum where enumtypid = t.oid) end as labels,
       case when t.typcategory = 'A' then (select en.nspname = 'pg_catalog' from pg_type el join pg_namespace en on en.oid = el.typnamespace
                                            where el.oid = t.typelem) end as "elemBuiltin"
  from pg_attribute a join pg_type t on t.oid = a.atttypid join pg_namespace tn on tn.oid = t.typnamespace
 where a.attrelid = to_regclass(?) and a.attnum > 0 and not a.attisdropped
 order by a.attnum`;

interface ShapeRow {
  name: string;
  type: string;
  notNull: boolean;
  typtype: string;
  typcategory: string;
  builtin: boolean;
  base: string | null;
  baseBuiltin: boolean | null;
  labels: string[] | null;
  elemBuiltin: boolean | null;
}

function columnShape(r: ShapeRow): ColumnShape {
  const c: ColumnShape = { name: r.name, type: r.type, notNull: r.notNull, exposed: 'text' };
  const checkable = (type: string) => {
    c.exposed = type;
    const m = /^(character varying|character)\((\d+)\)$/.exec(type);
    if (m) {
      c.cast = must(m[1], `the base type of ${type}`);
      c.maxLength = Number(m[2]);
    } else c.cast = type;
  };
  if (r.typcategory === 'A') {
    if (r.builtin && r.elemBuiltin) {
      c.exposed = r.type;
      c.array = true;
    }
  } else if (r.typtype === 'e') c.enumLabels = r.labels ?? [];
  else if (r.typtype === 'd') {
    if (r.base && r.baseBuiltin) checkable(r.base);
  } else if (r.typtype === 'b' && r.builtin) checkable(r.type);
  return c;
}

/** The entity's table as the highest-precedence source env that has it defines it. */
export async function tableShape(ctx: Ctx, e: EntitySpec): Promise<TableShape> {
  for (const env of ctx.config.sources) {
    const rows = await onEnv(ctx, env, async () => {
      const res = await ctx.db.env(env).raw<{ rows: ShapeRow[] }>(SHAPE_SQL, [qualified(env.schema, e.table)]);
      return res.rows;
    });
    if (rows.length > 0) return { env: env.name, table: env.schema ? `${env.schema}.${e.table}` : e.table, columns: rows.map(columnShape) };
  }
  const envs = ctx.config.sources.map((s) => s.name).join(', ');
  const message = `${ctx.config.file}: dataset.entities.${e.name}: table ${e.table} exists in no source env (${envs})`;
  throw new TributaryError('config_invalid', message);
}
