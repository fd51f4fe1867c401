import type { Knex } from 'knex';
import { type EntitySpec, TABLE_PLACEHOLDER } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { redact } from '../../log.js';
import { type RunTables } from '../kernel/workArea.js';
import { type Ctx } from '../kernel/context.js';
import { ident, literal } from '../kernel/sql.js';
import type { Unresolved } from './types.js';
import { must } from '../kernel/must.js';
import type { TableShape } from './shape.js';

// ---------------------------------------------------------------------------------------------------
// the findings of one validation, gathered in a work table of the run

export interface Scope {
  ctx: Ctx;
  /** The validation's transaction (or a savepoint in it): the temporary tables and views live there. */
  k: Knex.Transaction;
  t: RunTables;
  runId: number;
  found: string;
  shapes: Map<string, TableShape>;
  ord: Map<string, number>;
  /** References that resolve neither among the final rows nor in master, found before the transaction. */
  unresolved: Map<string, Unresolved[]>;
  /** PostgreSQL 16+ has pg_input_is_valid; 15 uses work.input_is_valid (a subtransaction per value). */
  validInput: string;
  /** Per entity, the final rows' count and checksum as loading verifies them (when the typed pass gave them). */
  checksums: Map<string, { rows: number; checksum: string }>;
}

/** The ST table's shape of an entity (tableShape read every entity's before the validation). */
export function shapeOf(s: Scope, entity: string): TableShape {
  return must(s.shapes.get(entity), `the ST table's shape of entity ${entity}`);
}

/** Runs fn in a savepoint: an error rolls back only what fn did (and is rethrown). */
export async function savepoint<T>(s: Scope, fn: (sp: Scope) => Promise<T>): Promise<T> {
  return s.k.transaction((sp) => fn({ ...s, k: sp }));
}

/**
 * Temporary objects of the validation's transaction: each entity's final rows typed. `{{ users }}`: the final rows
 * of users with the ST table's columns.
 */
const tempRows = (entity: string) => `pg_temp.${ident(`tributary_rows__${entity}`)}`;
/** The same with the record's identity and key first (for expressions). */
export const tempKeyed = (entity: string) => `pg_temp.${ident(`tributary_keyed__${entity}`)}`;

/** `(select string_agg(k=v, ', '))` of a jsonb object: an offending value that spans several columns. */
export function kvText(obj: string): string {
  return `(select string_agg(kv.k || '=' || coalesce(kv.v #>> '{}', '∅'), ', ' order by kv.k) from jsonb_each(${obj}) as kv(k, v))`;
}

/** Where the final rows of an entity are. */
export function finalRows(s: Scope, entity: string): string {
  return `${s.t.result} r where r.entity = ${literal(entity)} and r.status = 'final'`;
}

export async function createTempObjects(s: Scope): Promise<void> {
  await s.k.raw(`create temp table ${s.found} (fingerprint text primary key, ord int, entity text not null, identity text not null,
      key text,
      rule text not null, kind text not null, col text, value text, message text not null, detail jsonb not null default '{}')`);
  for (const e of s.ctx.config.entities) {
    const typed =
      `from ${s.t.result} r cross join lateral ${typedCells(shapeOf(s, e.name))} x` +
      ` where r.entity = ${literal(e.name)} and r.status = 'final'`;
    await s.k.raw(`create temp view ${tempRows(e.name)} as select x.* ${typed}`);
    await s.k.raw(`create temp view ${tempKeyed(e.name)} as select r.identity as "__identity", r.pk as "__pk", x.* ${typed}`);
  }
}

export async function dropTempObjects(s: Scope): Promise<void> {
  for (const e of s.ctx.config.entities) {
    await s.k.raw(`drop view if exists ${tempKeyed(e.name)}, ${tempRows(e.name)}`);
  }
  await s.k.raw(`drop table if exists ${s.found}`);
}

/**
 * A final row `r`'s cells read as the ST table's (exposed) column types: each cell's text given to its
 * type's input, as staging's COPY will (a json keeps its text; JSON null is not SQL NULL).
 */
export function typedCells(shape: TableShape): string {
  return `(select ${shape.columns.map((c) => `(r.data->>${literal(c.name)})::${c.exposed} as ${ident(c.name)}`).join(', ')})`;
}

/** Replaces `{{ users }}` and `{{ this }}` by the consolidated tables. */
export function expandSql(entity: string, text: string): string {
  return text.replace(TABLE_PLACEHOLDER, (_m, name: string) => tempRows(name === 'this' ? entity : name));
}

/** SQL without bindings, safe from knex's `?` placeholders (a test's SQL may use jsonb's `?` operator). */
export const noBindings = (sql: string) => sql.replace(/\?/g, '\\?');

export interface Columns {
  identity: string;
  key: string;
  rule: string;
  kind: 'integrity' | 'test';
  col: string;
  value: string;
  message: string;
  detail: string;
  /** Tells apart two unnamed tests of the same kind on the same column (an expression's text). */
  extra?: string;
}

/** Inserts the rows of `from` (SQL after SELECT … FROM) as findings of `entity`; returns how many. */
export async function add(s: Scope, entity: string, c: Columns, from: string, bindings?: Knex.RawBinding[]): Promise<number> {
  const sql = `insert into ${s.found} (fingerprint, ord, entity, identity, key, rule, kind, col, value, message, detail)
     select concat_ws('|', f.rule, ${literal(entity)}, f.identity, f.col, f.extra), ${s.ord.get(entity) ?? 0}, ${literal(entity)},
            f.identity, f.key, f.rule, f.kind, f.col, f.value, f.message, f.detail
       from (select ${c.identity} as identity, ${c.key} as key, ${literal(c.rule)}::text as rule, ${literal(c.kind)}::text as kind,
                    (${c.col})::text as col, (${c.value})::text as value, (${c.message})::text as message, (${c.detail})::jsonb as detail,
                    (${c.extra ?? 'null'})::text as extra
               from ${from}) f
     on conflict (fingerprint) do nothing`;
  const res = bindings ? await s.k.raw(sql, bindings) : await s.k.raw(noBindings(sql));
  return (res as { rowCount: number }).rowCount ?? 0;
}

export function detailOf(s: Scope, entity: string, extra: Record<string, string> = {}): string {
  const shape = shapeOf(s, entity);
  return literal(JSON.stringify({ env: shape.env, table: shape.table, ...extra }));
}

/** A test that could not run on the data (not on the config): one finding for the entity. */
export async function couldNotRun(
  s: Scope,
  e: EntitySpec,
  rule: string,
  kind: 'integrity' | 'test',
  err: unknown,
  extra: Record<string, string> = {},
  hint = '',
): Promise<void> {
  const what = kind === 'test' ? `test ${rule}` : `the ${rule} check`;
  const message = `${what} could not run on the consolidated ${e.name}: ${redact(pgMessage(err))}${hint}`;
  await add(
    s,
    e.name,
    {
      identity: `'*'`,
      key: 'null',
      rule,
      kind,
      col: 'null',
      value: 'null',
      message: literal(message),
      detail: detailOf(s, e.name, extra),
      ...(extra.test ? { extra: literal(extra.test) } : {}),
    },
    '(select 1) as one',
  );
}

export function pgMessage(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  return m.split(' - ').at(-1) ?? m;
}

/** An error of the SQL itself (syntax, unknown column: class 42; feature not supported: 0A000), not of the data. */
export const isConfigError = (err: unknown) => {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('42') || code === '0A000');
};

export function configProblem(s: Scope, path: string, err: unknown): TributaryError {
  const message = `${s.ctx.config.file}: ${path}: ${redact(pgMessage(err))}`;
  return new TributaryError('config_invalid', message, { file: s.ctx.config.file, path });
}

export function requireColumns(s: Scope, e: EntitySpec, path: string, columns: string[]): void {
  const shape = shapeOf(s, e.name);
  for (const c of columns) {
    if (!shape.columns.some((x) => x.name === c)) {
      const columns = shape.columns.map((x) => x.name).join(', ');
      const message = `${s.ctx.config.file}: ${path}: "${c}" is not a column of ${e.table} (in ${shape.env}: ${columns})`;
      throw new TributaryError('config_invalid', message, {
        file: s.ctx.config.file,
        path,
      });
    }
  }
}
