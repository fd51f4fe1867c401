import type { Knex } from 'knex';
import { type DataTest, type EntitySpec, releaseOrThrow, TABLE_PLACEHOLDER } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { requireRationale } from '../kernel/rationale.js';
import { failpoint } from '../kernel/failpoints.js';
import { byColumnName, rowHashOfTexts, textSettingsSql } from '../kernel/checksum.js';
import { type ConflictRow, describeDecision, planRecordDecision, type BlastRadius, type Decision } from '../review/index.js';
import { currentRunId, runTables, type RunTables } from '../kernel/workArea.js';
import { onEnv, type Actor, type Ctx } from '../kernel/context.js';
import { masterKeys } from '../kernel/master.js';
import { isValidated, passGate, releaseState, transition } from '../kernel/lifecycle.js';
import { authorize } from '../kernel/roles.js';
import { ident, literal, qualified, textArray } from '../kernel/sql.js';

/**
 * Validation of a release's consolidated dataset (the current run's final rows), as SQL in the control
 * database, before it may be loaded:
 *   - integrity: every reference resolves (to a final row of its parent, or to master's earlier releases),
 *     chains of references are intact over every hop (a transaction whose account's user was deleted is
 *     an orphan-chain), values fit the ST table's column types, NOT NULL columns are populated, and no
 *     value sits in a column the ST table does not have (loading would drop it);
 *   - the data tests of the config, dbt style: not_null, unique, accepted_values, relationships,
 *     expression (a per-row boolean) and sql (a query returning the violating rows).
 * Findings are stored per run (table findings), numbered F-001… per release; validating again recomputes
 * them: a finding that no longer occurs is closed. A finding is closed by a decision on its record (delete
 * or re-point, the conflict decisions' own code), by fixing the source and re-consolidating, or waived by
 * a qa_lead with a rationale. With no open findings the release becomes `validated` (loading needs it).
 *
 * The ST table's shape (column types, NOT NULL) is that of the highest-precedence source env that has
 * the table: the shape the staging tables are created with.
 */
export type FindingStatus = 'open' | 'closed' | 'waived';

export interface FindingRow {
  id: number;
  release: string;
  run_id: number;
  seq: number;
  code: string;
  fingerprint: string;
  entity: string;
  identity: string;
  /** The record's primary key value (null for a finding about a whole entity). */
  key: string | null;
  rule: string;
  kind: 'integrity' | 'test';
  column: string | null;
  value: string | null;
  message: string;
  detail: { parent?: string; test?: string; env?: string; table?: string; decision?: Decision; blast?: BlastRadius };
  status: FindingStatus;
  first_seen_at: Date;
  last_seen_at: Date;
  closed_at: Date | null;
  closed_by: string | null;
  resolution: string | null;
  waived_by: string | null;
  waived_at: Date | null;
  rationale: string | null;
}

export interface ValidationCounts {
  open: number;
  waived: number;
  closed: number;
  /** Findings seen for the first time in this run. */
  new: number;
  /** Closed (or waived) findings that occur again. */
  reopened: number;
  /** Findings that no longer occur, closed by this validation. */
  closedNow: number;
}

export interface ValidationReport {
  release: string;
  runId: number;
  state: string;
  ms: number;
  /** Final rows checked, per entity. */
  rows: Record<string, number>;
  counts: ValidationCounts;
  /** Open findings per rule. */
  byRule: Record<string, number>;
  /** Open and waived findings, in code order. */
  findings: FindingRow[];
}

/** Integrity rules (the data tests are named by their `name`, else by their kind). */
export const INTEGRITY_RULES = ['orphan', 'orphan-chain', 'required', 'type', 'unknown-column'] as const;

const lockKey = (release: string) => `tributary:validate:${release}`;

export function ruleOf(t: DataTest): string {
  return t.name ?? t.kind;
}

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
       case when t.typtype = 'd' then (select bn.nspname = 'pg_catalog' from pg_type b join pg_namespace bn on bn.oid = b.typnamespace where b.oid = t.typbasetype) end as "baseBuiltin",
       case when t.typtype = 'e' then (select array_agg(enumlabel::text order by enumsortorder) from pg_enum where enumtypid = t.oid) end as labels,
       case when t.typcategory = 'A' then (select en.nspname = 'pg_catalog' from pg_type el join pg_namespace en on en.oid = el.typnamespace where el.oid = t.typelem) end as "elemBuiltin"
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
      c.cast = m[1]!;
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
  throw new TributaryError('config_invalid', `${ctx.config.file}: dataset.entities.${e.name}: table ${e.table} exists in no source env (${ctx.config.sources.map((s) => s.name).join(', ')})`);
}

// ---------------------------------------------------------------------------------------------------
// the findings of one validation, gathered in a work table of the run

interface Scope {
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

/** Runs fn in a savepoint: an error rolls back only what fn did (and is rethrown). */
async function savepoint<T>(s: Scope, fn: (sp: Scope) => Promise<T>): Promise<T> {
  return s.k.transaction((sp) => fn({ ...s, k: sp }));
}

/** Temporary objects of the validation's transaction: each entity's final rows typed. `{{ users }}`: the final rows of users with the ST table's columns. */
const tempRows = (entity: string) => `pg_temp.${ident(`tributary_rows__${entity}`)}`;
/** The same with the record's identity and key first (for expressions). */
const tempKeyed = (entity: string) => `pg_temp.${ident(`tributary_keyed__${entity}`)}`;

/** `(select string_agg(k=v, ', '))` of a jsonb object: an offending value that spans several columns. */
function kvText(obj: string): string {
  return `(select string_agg(kv.k || '=' || coalesce(kv.v #>> '{}', '∅'), ', ' order by kv.k) from jsonb_each(${obj}) as kv(k, v))`;
}

/** Where the final rows of an entity are. */
function finalRows(s: Scope, entity: string): string {
  return `${s.t.result} r where r.entity = ${literal(entity)} and r.status = 'final'`;
}

async function createTempObjects(s: Scope): Promise<void> {
  await s.k.raw(`create temp table ${s.found} (fingerprint text primary key, ord int, entity text not null, identity text not null, key text,
      rule text not null, kind text not null, col text, value text, message text not null, detail jsonb not null default '{}')`);
  for (const e of s.ctx.config.entities) {
    const typed = `from ${s.t.result} r cross join lateral ${typedCells(s.shapes.get(e.name)!)} x where r.entity = ${literal(e.name)} and r.status = 'final'`;
    await s.k.raw(`create temp view ${tempRows(e.name)} as select x.* ${typed}`);
    await s.k.raw(`create temp view ${tempKeyed(e.name)} as select r.identity as "__identity", r.pk as "__pk", x.* ${typed}`);
  }
}

async function dropTempObjects(s: Scope): Promise<void> {
  for (const e of s.ctx.config.entities) {
    await s.k.raw(`drop view if exists ${tempKeyed(e.name)}, ${tempRows(e.name)}`);
  }
  await s.k.raw(`drop table if exists ${s.found}`);
}

/**
 * A final row `r`'s cells read as the ST table's (exposed) column types: each cell's text given to its
 * type's input, as staging's COPY will (a json keeps its text; JSON null is not SQL NULL).
 */
function typedCells(shape: TableShape): string {
  return `(select ${shape.columns.map((c) => `(r.data->>${literal(c.name)})::${c.exposed} as ${ident(c.name)}`).join(', ')})`;
}

/** Replaces `{{ users }}` and `{{ this }}` by the consolidated tables. */
function expandSql(entity: string, text: string): string {
  return text.replace(TABLE_PLACEHOLDER, (_m, name: string) => tempRows(name === 'this' ? entity : name));
}

/** SQL without bindings, safe from knex's `?` placeholders (a test's SQL may use jsonb's `?` operator). */
const noBindings = (sql: string) => sql.replace(/\?/g, '\\?');

interface Columns {
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
async function add(s: Scope, entity: string, c: Columns, from: string, bindings?: Knex.RawBinding[]): Promise<number> {
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

function detailOf(s: Scope, entity: string, extra: Record<string, string> = {}): string {
  const shape = s.shapes.get(entity)!;
  return literal(JSON.stringify({ env: shape.env, table: shape.table, ...extra }));
}

/** A test that could not run on the data (not on the config): one finding for the entity. */
async function couldNotRun(s: Scope, e: EntitySpec, rule: string, kind: 'integrity' | 'test', err: unknown, extra: Record<string, string> = {}, hint = ''): Promise<void> {
  const message = `${kind === 'test' ? `test ${rule}` : `the ${rule} check`} could not run on the consolidated ${e.name}: ${redact(pgMessage(err))}${hint}`;
  await add(
    s,
    e.name,
    { identity: `'*'`, key: 'null', rule, kind, col: 'null', value: 'null', message: literal(message), detail: detailOf(s, e.name, extra), ...(extra.test ? { extra: literal(extra.test) } : {}) },
    '(select 1) as one',
  );
}

function pgMessage(err: unknown): string {
  const m = err instanceof Error ? err.message : String(err);
  return m.split(' - ').pop()!;
}

const isConfigError = (err: unknown) => typeof (err as { code?: unknown }).code === 'string' && ((err as { code: string }).code.startsWith('42') || (err as { code: string }).code === '0A000');

function configProblem(s: Scope, path: string, err: unknown): TributaryError {
  return new TributaryError('config_invalid', `${s.ctx.config.file}: ${path}: ${redact(pgMessage(err))}`, { file: s.ctx.config.file, path });
}

function requireColumns(s: Scope, e: EntitySpec, path: string, columns: string[]): void {
  const shape = s.shapes.get(e.name)!;
  for (const c of columns) {
    if (!shape.columns.some((x) => x.name === c)) {
      throw new TributaryError('config_invalid', `${s.ctx.config.file}: ${path}: "${c}" is not a column of ${e.table} (in ${shape.env}: ${shape.columns.map((x) => x.name).join(', ')})`, {
        file: s.ctx.config.file,
        path,
      });
    }
  }
}

// --- integrity --------------------------------------------------------------------------------------

/**
 * Columns: values in columns the ST table lacks, empty NOT NULL columns, values that do not fit their type.
 * Clean data costs one pass (which also reads every row as the table's row type, as loading will); only
 * what that pass finds is looked at value by value. Returns the entity's final row count.
 */
async function checkColumns(s: Scope, e: EntitySpec): Promise<number> {
  const shape = s.shapes.get(e.name)!;
  const detail = detailOf(s, e.name);
  const where = `${shape.env} ${shape.table}`;
  const names = textArray(shape.columns.map((c) => c.name));
  const required = shape.columns.filter((c) => c.notNull).map((c) => c.name);
  const enums = shape.columns.filter((c) => c.enumLabels);
  const enumBad = (c: ColumnShape) => `(r.data->>${literal(c.name)} is not null and not (r.data->>${literal(c.name)} = any(${textArray(c.enumLabels!)})))`;
  // the typed pass also sums the rows' hashes over their cells read in their types (every cell is read, so a
  // value that does not fit fails the pass), as loading verifies them (checksum.ts): loading then needs no
  // second pass over the consolidated rows
  const sorted = [...shape.columns].sort(byColumnName);
  const flags = `(jsonb_strip_nulls(r.data - ${names}) <> '{}'::jsonb) as "__unknown",
            (${required.length > 0 ? required.map((c) => `r.data->>${literal(c)} is null`).join(' or ') : 'false'}) as "__required",
            (${enums.length > 0 ? enums.map(enumBad).join(' or ') : 'false'}) as "__enums"`;
  const pass = (typed: boolean) =>
    `select count(*)::int as n,
            count(*) filter (where q."__unknown")::int as unknown,
            count(*) filter (where q."__required")::int as required,
            count(*) filter (where q."__enums")::int as enums,
            ${typed ? `coalesce(sum(${rowHashOfTexts(sorted.map((c) => `q.${ident(c.name)}::text`))}), 0)::text` : 'null::text'} as checksum
       from (select ${flags}${typed ? ', x.*' : ''}
               from ${s.t.result} r ${typed ? `cross join lateral ${typedCells(shape)} x` : ''}
              where r.entity = ${literal(e.name)} and r.status = 'final') q`;
  type Pass = { n: number; unknown: number; required: number; enums: number; checksum: string | null };
  let found: Pass;
  let typeError: unknown;
  try {
    found = await savepoint(s, async (sp) => (await sp.k.raw<{ rows: Pass[] }>(pass(true))).rows[0]!);
  } catch (err) {
    if (isConfigError(err)) throw err;
    typeError = err;
    found = (await s.k.raw<{ rows: Pass[] }>(pass(false))).rows[0]!;
  }
  if (found.unknown > 0) {
    // a value in a column the ST table does not have: loading would drop it
    await add(
      s,
      e.name,
      {
        identity: 'r.identity',
        key: 'r.pk',
        rule: 'unknown-column',
        kind: 'integrity',
        col: 'kv.key',
        value: `kv.value #>> '{}'`,
        message: `format('%s = %s, but %s has no column %s: loading would drop it', kv.key, kv.value #>> '{}', ${literal(where)}, kv.key)`,
        detail,
      },
      `${s.t.result} r cross join lateral jsonb_each(jsonb_strip_nulls(r.data - ${names})) as kv
        where r.entity = ${literal(e.name)} and r.status = 'final' and (r.data - ${names}) <> '{}'::jsonb`,
    );
  }
  if (found.required > 0) {
    await add(
      s,
      e.name,
      {
        identity: 'r.identity',
        key: 'r.pk',
        rule: 'required',
        kind: 'integrity',
        col: 'c.col',
        value: 'null',
        message: `format('%s is empty, but it is NOT NULL in %s', c.col, ${literal(where)})`,
        detail,
      },
      `${s.t.result} r cross join unnest(${textArray(required)}) as c(col) where r.entity = ${literal(e.name)} and r.status = 'final' and r.data->>c.col is null`,
    );
  }
  if (found.enums > 0) {
    for (const c of enums) {
      await add(
        s,
        e.name,
        {
          identity: 'r.identity',
          key: 'r.pk',
          rule: 'type',
          kind: 'integrity',
          col: literal(c.name),
          value: `r.data->>${literal(c.name)}`,
          message: `format('%s = %s is not a value of %s (%s), the type of %s in %s', ${literal(c.name)}, r.data->>${literal(c.name)}, ${literal(c.type)}, ${literal(c.enumLabels!.join(', '))}, ${literal(c.name)}, ${literal(where)})`,
          detail,
        },
        `${finalRows(s, e.name)} and ${enumBad(c)}`,
      );
    }
  }
  if (typeError) {
    // value by value (PostgreSQL 15: a subtransaction each), only because the typed pass failed
    let n = 0;
    for (const c of shape.columns) {
      const v = `r.data->>${literal(c.name)}`;
      let bad: string | undefined;
      if (c.cast) bad = `not ${s.validInput}(${v}, ${literal(c.cast)})${c.maxLength ? ` or length(rtrim(${v}, ' ')) > ${c.maxLength}` : ''}`;
      else if (c.array) bad = `jsonb_typeof(r.data->${literal(c.name)}) <> 'array'`;
      if (!bad) continue;
      n += await add(
        s,
        e.name,
        {
          identity: 'r.identity',
          key: 'r.pk',
          rule: 'type',
          kind: 'integrity',
          col: literal(c.name),
          value: v,
          message: `format('%s = %s is not a valid %s, the type of %s in %s', ${literal(c.name)}, ${v}, ${literal(c.type)}, ${literal(c.name)}, ${literal(where)})`,
          detail,
        },
        `${finalRows(s, e.name)} and ${v} is not null and (${bad})`,
      );
    }
    if (n === 0) await couldNotRun(s, e, 'type', 'integrity', typeError, {}, ` (the rows do not fit ${where})`);
  }
  if (typeError === undefined && found.checksum !== null) s.checksums.set(e.name, { rows: found.n, checksum: found.checksum });
  return found.n;
}

interface Unresolved {
  identity: string;
  pk: string;
  v: string;
  pstatus: string | null;
}

const refKey = (entity: string, column: string, parent: string) => `${entity}.${column}>${parent}`;

/** References of `column` that resolve neither to a final row of `parent` nor to master (master is another connection: before the transaction). */
async function findUnresolved(ctx: Ctx, t: RunTables, entity: string, column: string, parent: string): Promise<Unresolved[]> {
  const col = literal(column);
  const res = await ctx.db.control.raw<{ rows: Unresolved[] }>(
    `select r.identity, r.pk, r.data->>${col} as v, null as pstatus
       from ${t.result} r
      where r.entity = ${literal(entity)} and r.status = 'final' and r.data->>${col} is not null
        and not exists (select 1 from ${t.result} p where p.entity = ${literal(parent)} and p.status = 'final' and p.pk = r.data->>${col})`,
  );
  if (res.rows.length === 0) return [];
  const values = [...new Set(res.rows.map((r) => r.v))];
  const inMaster = await masterKeys(ctx, parent, values);
  const missing = res.rows.filter((r) => !inMaster.has(r.v));
  // why: the parent was deleted, awaits review, or is nowhere
  const st = await ctx.db.control.raw<{ rows: { pk: string; status: string }[] }>(
    `select pk, min(status) as status from ${t.result} where entity = ? and pk = any(?::text[]) group by pk`,
    [parent, [...new Set(missing.map((r) => r.v))]],
  );
  const statusOf = new Map(st.rows.map((r) => [r.pk, r.status]));
  return missing.map((r) => ({ ...r, pstatus: statusOf.get(r.v) ?? null }));
}

async function precomputeReferences(ctx: Ctx, t: RunTables): Promise<Map<string, Unresolved[]>> {
  const out = new Map<string, Unresolved[]>();
  for (const e of ctx.config.entities) {
    const refs = [...e.references.map((r) => [r.column, r.entity] as const), ...e.tests.flatMap((x) => (x.kind === 'relationships' ? [[x.column, x.to] as const] : []))];
    for (const [column, parent] of refs) {
      const key = refKey(e.name, column, parent);
      if (!out.has(key)) out.set(key, await findUnresolved(ctx, t, e.name, column, parent));
    }
  }
  return out;
}

const unresolved = (s: Scope, e: EntitySpec, column: string, parent: string): Unresolved[] => s.unresolved.get(refKey(e.name, column, parent)) ?? [];

async function addUnresolved(s: Scope, e: EntitySpec, column: string, parent: string, rule: string, kind: 'integrity' | 'test', rows: Unresolved[], test?: string): Promise<void> {
  if (rows.length === 0) return;
  const why = (r: Unresolved) =>
    r.pstatus === 'deleted'
      ? 'which was deleted'
      : r.pstatus === 'pending'
        ? 'which still awaits review'
        : `which is neither in the consolidated ${parent} nor in master`;
  const parentPk = s.ctx.config.entities.find((x) => x.name === parent)!.primaryKey;
  await add(
    s,
    e.name,
    {
      identity: 'u.identity',
      key: 'u.pk',
      rule,
      kind,
      col: literal(column),
      value: 'u.v',
      message: 'u.message',
      detail: detailOf(s, e.name, { parent, ...(test ? { test } : {}) }),
    },
    'unnest(?::text[], ?::text[], ?::text[], ?::text[]) as u(identity, pk, v, message)',
    [rows.map((r) => r.identity), rows.map((r) => r.pk), rows.map((r) => r.v), rows.map((r) => `${column} = ${r.v} points at ${parent} ${parentPk} ${r.v}, ${why(r)}`)],
  );
}

async function checkReferences(s: Scope, e: EntitySpec): Promise<void> {
  for (const ref of e.references) {
    await addUnresolved(s, e, ref.column, ref.entity, 'orphan', 'integrity', unresolved(s, e, ref.column, ref.entity));
  }
  // chains: a reference to a parent that is itself an orphan (parents are checked before their children;
  // a reference of an entity to itself goes round until no new link is found)
  for (let round = 0; round < 1000; round++) {
    let added = 0;
    for (const ref of e.references) {
      const broken = await s.k.raw<{ rows: unknown[] }>(`select 1 from ${s.found} where entity = ? and rule in ('orphan', 'orphan-chain') limit 1`, [ref.entity]);
      if (broken.rows.length === 0) continue;
      const col = literal(ref.column);
      const parentPk = s.ctx.config.entities.find((x) => x.name === ref.entity)!.primaryKey;
      added += await add(
        s,
        e.name,
        {
          identity: 'r.identity',
          key: 'r.pk',
          rule: 'orphan-chain',
          kind: 'integrity',
          col,
          value: `r.data->>${col}`,
          message: `format('%s = %s points at %s %s %s, which is itself an orphan: %s', ${col}, r.data->>${col}, ${literal(ref.entity)}, ${literal(parentPk)}, r.data->>${col}, b.message)`,
          detail: detailOf(s, e.name, { parent: ref.entity }),
        },
        `${s.t.result} r join (select distinct on (key) key, message from ${s.found}
                                 where entity = ${literal(ref.entity)} and rule in ('orphan', 'orphan-chain') order by key, message) b on b.key = r.data->>${col}
          where r.entity = ${literal(e.name)} and r.status = 'final'`,
      );
    }
    if (added === 0 || !e.references.some((r) => r.entity === e.name)) break;
  }
}

// --- data tests ---------------------------------------------------------------------------------------

async function runTest(s: Scope, e: EntitySpec, test: DataTest): Promise<void> {
  const rule = ruleOf(test);
  const detail = detailOf(s, e.name, { test: test.path });
  const rows = finalRows(s, e.name);
  const pkName = literal(e.primaryKey);
  switch (test.kind) {
    case 'not_null':
      requireColumns(s, e, test.path, test.columns);
      await add(
        s,
        e.name,
        { identity: 'r.identity', key: 'r.pk', rule, kind: 'test', col: 'c.col', value: 'null', message: `format('%s is empty (test %s)', c.col, ${literal(rule)})`, detail },
        `${s.t.result} r cross join unnest(${textArray(test.columns)}) as c(col) where r.entity = ${literal(e.name)} and r.status = 'final' and r.data->>c.col is null`,
      );
      return;
    case 'unique': {
      requireColumns(s, e, test.path, test.columns);
      const label = test.columns.join('+');
      const value = test.columns.length === 1 ? `k.v->>0` : kvText(`jsonb_build_object(${test.columns.map((c, i) => `${literal(c)}, k.v->${i}`).join(', ')})`);
      const others = `array_to_string((array_remove(d.pks, k.pk))[1:5], ', ') || case when cardinality(d.pks) > 6 then format(' and %s more', cardinality(d.pks) - 6) else '' end`;
      await add(
        s,
        e.name,
        {
          identity: 'k.identity',
          key: 'k.pk',
          rule,
          kind: 'test',
          col: literal(label),
          value,
          message: `format('%s = %s is not unique: also held by %s %s', ${literal(label)}, ${value}, ${pkName}, ${others})`,
          detail,
        },
        `(select r.identity, r.pk, jsonb_build_array(${test.columns.map((c) => `r.data->${literal(c)}`).join(', ')}) as v from ${rows}
            and ${test.columns.map((c) => `r.data->>${literal(c)} is not null`).join(' and ')}) k
          join (select jsonb_build_array(${test.columns.map((c) => `r.data->${literal(c)}`).join(', ')}) as v, array_agg(r.pk order by r.pk) as pks from ${rows}
            and ${test.columns.map((c) => `r.data->>${literal(c)} is not null`).join(' and ')}
            group by 1 having count(*) > 1) d on d.v = k.v`,
      );
      return;
    }
    case 'accepted_values': {
      requireColumns(s, e, test.path, [test.column]);
      const v = `r.data->>${literal(test.column)}`;
      const values = test.values.map(String);
      await add(
        s,
        e.name,
        {
          identity: 'r.identity',
          key: 'r.pk',
          rule,
          kind: 'test',
          col: literal(test.column),
          value: v,
          message: `format('%s = %s is not an accepted value (%s)', ${literal(test.column)}, ${v}, ${literal(values.join(', '))})`,
          detail,
        },
        `${rows} and ${v} is not null and not (${v} = any(${textArray(values)}))`,
      );
      return;
    }
    case 'relationships':
      requireColumns(s, e, test.path, [test.column]);
      await addUnresolved(s, e, test.column, test.to, rule, 'test', unresolved(s, e, test.column, test.to), test.path);
      return;
    case 'expression': {
      const shape = s.shapes.get(e.name)!;
      const words = new Set(test.expression.replace(/'(?:[^']|'')*'/g, '').match(/[A-Za-z_][A-Za-z0-9_]*/g) ?? []);
      const used = shape.columns.filter((c) => words.has(c.name)).map((c) => c.name);
      const value = used.length === 0 ? 'null' : used.length === 1 ? `v.${ident(used[0]!)}::text` : kvText(`jsonb_build_object(${used.map((c) => `${literal(c)}, to_jsonb(v.${ident(c)})`).join(', ')})`);
      await guarded(s, e, test, (sp) =>
        add(
          sp,
          e.name,
          {
            identity: 'v."__identity"',
            key: 'v."__pk"',
            rule,
            kind: 'test',
            col: used.length === 1 ? literal(used[0]!) : 'null',
            value,
            message: `format('%s fails: %s', ${value === 'null' ? `'the row'` : value}, ${literal(test.expression)})`,
            detail,
            ...(test.name ? {} : { extra: literal(test.expression) }),
          },
          `${tempKeyed(e.name)} as v where (${expandSql(e.name, test.expression)}) is false`,
        ),
      );
      return;
    }
    case 'sql': {
      const query = expandSql(e.name, test.sql);
      await guarded(s, e, test, async (sp) => {
        const probe = await sp.k.raw<{ fields: { name: string }[] }>(noBindings(`select * from (${query}) as q limit 0`));
        if (!probe.fields.some((f) => f.name === e.primaryKey)) {
          throw new TributaryError('config_invalid', `${s.ctx.config.file}: ${test.path}.sql: the query must return the ${e.name} primary key column "${e.primaryKey}" (it returns: ${probe.fields.map((f) => f.name).join(', ') || 'no columns'})`, {
            file: s.ctx.config.file,
            path: `${test.path}.sql`,
          });
        }
        const value = `nullif(${kvText(`q.rest`)}, '')`;
        await add(
          sp,
          e.name,
          {
            identity: `coalesce(r.identity, 'k:' || q.key)`,
            key: 'q.key',
            rule,
            kind: 'test',
            col: 'null',
            value,
            message: `format('returned by test %s%s', ${literal(rule)}, ': ' || ${value})`,
            detail,
          },
          `(select to_jsonb(q.*)->>${pkName} as key, to_jsonb(q.*) - ${pkName} as rest from (${query}) as q) q
             left join ${s.t.result} r on r.entity = ${literal(e.name)} and r.status = 'final' and r.pk = q.key`,
        );
      });
      return;
    }
  }
}

/** A test's own SQL: an error of the SQL (42…) is a config error naming the test; an error of the data is a finding. */
async function guarded(s: Scope, e: EntitySpec, test: DataTest, fn: (sp: Scope) => Promise<unknown>): Promise<void> {
  try {
    await savepoint(s, fn);
  } catch (err) {
    if (err instanceof TributaryError) throw err;
    if (isConfigError(err)) throw configProblem(s, `${test.path}.${test.kind}`, err);
    await couldNotRun(s, e, ruleOf(test), 'test', err, { test: test.path }, /invalid input|out of range|value too long/i.test(pgMessage(err)) ? ' (see the type findings)' : '');
  }
}

// ---------------------------------------------------------------------------------------------------

async function openConflicts(ctx: Ctx, runId: number): Promise<number> {
  const row = await ctx.db.control('conflicts').where({ run_id: runId, status: 'open' }).count<{ n: string }[]>('* as n').first();
  return Number(row?.n ?? 0);
}

/** Validates the release's current consolidation and records its findings; the release becomes validated when none is open. */
export async function validateRelease(ctx: Ctx, release: string, opts: { actor: Actor }): Promise<ValidationReport> {
  releaseOrThrow(ctx.config, release);
  const started = performance.now();
  await passGate(ctx.db.control, release, 'validate', opts.actor);
  const runId = await currentRunId(ctx, release);
  const open = await openConflicts(ctx, runId);
  if (open > 0) {
    await recordAudit(ctx.db.control, { actor: opts.actor, action: 'gate.validate.refused', release, subject: `run #${runId}`, details: { openConflicts: open } });
    throw new TributaryError('gate_state', `release ${release} has ${open} open conflict(s) in its review queue: decide the ${open} open conflicts first (tributary conflicts ${release})`, {
      release,
      openConflicts: open,
    });
  }
  await recordAudit(ctx.db.control, { actor: opts.actor, action: 'validate.start', release, subject: `run #${runId}` });
  await failpoint('validate.after-start');
  try {
    // what needs other connections first (the ST catalogs, master's keys); then one transaction on the control database
    const t = runTables(runId);
    const shapes = new Map<string, TableShape>();
    for (const e of ctx.config.entities) shapes.set(e.name, await tableShape(ctx, e));
    const unresolvedRefs = await precomputeReferences(ctx, t);
    return await ctx.db.control.transaction(async (trx) => {
      const busy = await trx.raw<{ rows: { ok: boolean }[] }>('select pg_try_advisory_xact_lock(hashtext(?)) as ok', [lockKey(release)]);
      if (!busy.rows[0]?.ok) throw new TributaryError('gate_busy', `a validation of ${release} is already running; wait for it to finish`, { release });
      // the release's state row stays locked until the outcome is recorded: a consolidation finishing meanwhile waits
      const now = await trx('release_states').where({ release }).forUpdate().first();
      if (now?.current_run_id !== runId) throw new TributaryError('gate_state', `run #${runId} is no longer ${release}'s current consolidation: validate ${release} again`, { release });
      const version = await trx.raw<{ rows: { v: number }[] }>(`select current_setting('server_version_num')::int as v`);
      const scope: Scope = {
        ctx,
        k: trx,
        t,
        runId,
        found: `pg_temp.${ident('tributary_found')}`,
        shapes,
        ord: new Map(ctx.config.entities.map((e, i) => [e.name, i])),
        unresolved: unresolvedRefs,
        validInput: (version.rows[0]?.v ?? 0) >= 160000 ? 'pg_input_is_valid' : 'work.input_is_valid',
        checksums: new Map(),
      };
      await trx.raw(textSettingsSql());
      const report = await runValidation(scope, release, opts.actor, started);
      await failpoint('validate.before-commit');
      return report;
    });
  } catch (err) {
    const message = redact(err instanceof Error ? err.message : String(err));
    await recordAudit(ctx.db.control, { actor: opts.actor, action: 'validate.failed', release, subject: `run #${runId}`, details: { error: message } });
    throw err;
  }
}

async function runValidation(s: Scope, release: string, actor: Actor, started: number): Promise<ValidationReport> {
  const { ctx, k: trx, runId } = s;
  await createTempObjects(s);
  const rows: Record<string, number> = {};
  for (const e of ctx.config.entities) {
    rows[e.name] = await checkColumns(s, e);
    await checkReferences(s, e);
    for (const test of e.tests) await runTest(s, e, test);
  }

  const counts = await mergeFindings(trx, s, release, actor);
  await dropTempObjects(s);
  let { state } = await releaseState(trx, release);
  // what loading will verify staging against, computed in this validation's snapshot of the final rows
  const complete = ctx.config.entities.every((e) => s.checksums.has(e.name));
  await trx('runs').where({ id: runId }).update({
    counts: trx.raw(`counts - 'validated' || ?::jsonb`, [JSON.stringify(complete && counts.open === 0 ? { validated: Object.fromEntries(s.checksums) } : {})]),
  });
  if (counts.open === 0 && state === 'consolidated') state = await transition(trx, release, 'validate');
  else if (counts.open > 0 && state !== 'consolidated') state = await transition(trx, release, 'invalidate');
  const findings = (await trx<FindingRow>('findings').where({ run_id: runId }).whereIn('status', ['open', 'waived']).orderBy('seq')) as FindingRow[];
  const byRule: Record<string, number> = {};
  for (const f of findings) if (f.status === 'open') byRule[f.rule] = (byRule[f.rule] ?? 0) + 1;
  const ms = Math.round(performance.now() - started);
  await recordAudit(trx, { actor, action: 'validate.finish', release, subject: `run #${runId}`, details: { counts, byRule, rows, state, ms } });
  return { release, runId, state, ms, rows, counts, byRule, findings };
}

/** Folds this validation's findings into the run's: new ones numbered, recurring ones kept (or re-opened), gone ones closed. */
async function mergeFindings(trx: Knex.Transaction, s: Scope, release: string, actor: Actor): Promise<ValidationCounts> {
  const runId = s.runId;
  // recurring: a waiver stands while the offending value is the same
  const updated = await trx.raw<{ rows: { old: string; status: string }[] }>(
    `update findings f
        set status = case when o.old = 'waived' and f.value is not distinct from n.value then 'waived' else 'open' end,
            key = n.key, value = n.value, message = n.message, detail = n.detail, last_seen_at = now(),
            closed_at = null, closed_by = null, resolution = null
       from ${s.found} n, (select id, status as old from findings where run_id = ?) o
      where f.run_id = ? and f.fingerprint = n.fingerprint and o.id = f.id
      returning o.old, f.status`,
    [runId, runId],
  );
  const reopened = updated.rows.filter((r) => r.old !== 'open' && r.status === 'open').length;
  // new in this run: the release's number for the same problem if it was seen before, else the next one;
  // a waiver of an earlier run carries over while the offending value is the same
  const inserted = await trx.raw(
    `with n as (
       select n.*, prev.seq as prev_seq
         from ${s.found} n
         left join lateral (select p.seq from findings p where p.release = ? and p.fingerprint = n.fingerprint order by p.id desc limit 1) prev on true
        where not exists (select 1 from findings f where f.run_id = ? and f.fingerprint = n.fingerprint)
     ), base as (select coalesce(max(seq), 0) as m from findings where release = ?),
     numbered as (
       select n.*, coalesce(n.prev_seq, base.m + row_number() over (partition by n.prev_seq is null order by n.ord, n.entity, n.rule, n.key, n.fingerprint))::int as seq
         from n cross join base
     )
     insert into findings (release, run_id, seq, code, fingerprint, entity, identity, key, rule, kind, "column", value, message, detail, status, waived_by, waived_at, rationale)
     select ?, ?, x.seq, 'F-' || lpad(x.seq::text, greatest(3, length(x.seq::text)), '0'), x.fingerprint, x.entity, x.identity, x.key, x.rule, x.kind, x.col,
            x.value, x.message, x.detail, case when w.waived_by is not null then 'waived' else 'open' end, w.waived_by, w.waived_at, w.rationale
       from numbered x
       left join lateral (select p.waived_by, p.waived_at, p.rationale from findings p
                           where p.release = ? and p.fingerprint = x.fingerprint and p.status = 'waived' and p.value is not distinct from x.value
                           order by p.id desc limit 1) w on true`,
    [release, runId, release, release, runId, release],
  );
  const closed = await trx.raw(
    `update findings f set status = 'closed', closed_at = now(), closed_by = ?, resolution = 'no longer occurs'
      where f.run_id = ? and f.status in ('open', 'waived') and not exists (select 1 from ${s.found} n where n.fingerprint = f.fingerprint)`,
    [actor, runId],
  );
  const totals = await trx('findings').where({ run_id: runId }).groupBy('status').select('status').count<{ status: FindingStatus; n: string }[]>('* as n');
  const by = (st: FindingStatus) => Number(totals.find((r) => r.status === st)?.n ?? 0);
  return {
    open: by('open'),
    waived: by('waived'),
    closed: by('closed'),
    new: (inserted as { rowCount: number }).rowCount ?? 0,
    reopened,
    closedNow: (closed as { rowCount: number }).rowCount ?? 0,
  };
}

// ---------------------------------------------------------------------------------------------------
// listing, waivers and decisions

export interface FindingFilter {
  status?: FindingStatus | 'all' | 'current';
}

/** The findings of the release's current consolidation (default: open and waived), in code order. */
export async function listFindings(ctx: Ctx, release: string, filter: FindingFilter = {}): Promise<FindingRow[]> {
  releaseOrThrow(ctx.config, release);
  const runId = await currentRunId(ctx, release);
  const q = ctx.db.control<FindingRow>('findings').where({ run_id: runId }).orderBy('seq');
  const status = filter.status ?? 'current';
  if (status === 'current') q.whereIn('status', ['open', 'waived']);
  else if (status !== 'all') q.where({ status });
  return (await q) as FindingRow[];
}

function seqOf(code: string): number {
  const m = /^F-?0*(\d+)$/i.exec(code.trim());
  if (!m) throw new TributaryError('usage', `"${code}" is not a finding code (F-001, as tributary validate lists them)`);
  return Number(m[1]);
}

export function isFindingCode(code: string): boolean {
  return /^F-?\d+$/i.test(code.trim());
}

async function lockedFinding(ctx: Ctx, trx: Knex.Transaction, release: string, code: string): Promise<FindingRow> {
  releaseOrThrow(ctx.config, release);
  await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [lockKey(release)]);
  const runId = await currentRunId({ db: { control: trx as unknown as Knex } }, release);
  const row = await trx<FindingRow>('findings').where({ run_id: runId, seq: seqOf(code) }).forUpdate().first();
  if (!row) throw new TributaryError('unknown_conflict', `no finding ${code} in release ${release}'s current consolidation (tributary validate ${release} lists them)`, { code });
  return row as FindingRow;
}

function refuseUnlessOpen(f: FindingRow): void {
  if (f.status === 'waived') {
    throw new TributaryError('already_decided', `${f.code} was already waived by ${f.waived_by} at ${f.waived_at?.toISOString()}: ${f.rationale}`, { code: f.code });
  }
  if (f.status === 'closed') throw new TributaryError('already_decided', `${f.code} is closed (${f.resolution ?? 'no longer occurs'}${f.closed_by ? `, ${f.closed_by}` : ''})`, { code: f.code });
}

/** A qa_lead accepts a finding as it is, with a rationale (audited; a refusal too). */
export async function waiveFinding(ctx: Ctx, release: string, code: string, by: { actor: Actor; rationale: string; user?: string; groups?: string[] }): Promise<FindingRow> {
  releaseOrThrow(ctx.config, release);
  await authorize(ctx, by.user ?? by.actor, by.groups ?? [], 'waive', release);
  const rationale = requireRationale(by.rationale, 'a waiver', `why may ${code} stay as it is?`);
  return ctx.db.control.transaction(async (trx) => {
    const f = await lockedFinding(ctx, trx, release, code);
    refuseUnlessOpen(f);
    const [row] = await trx<FindingRow>('findings')
      .where({ id: f.id })
      .update({ status: 'waived', waived_by: by.actor, waived_at: trx.fn.now() as unknown as Date, rationale })
      .returning('*');
    await recordAudit(trx, {
      actor: by.actor,
      action: 'finding.waived',
      release,
      subject: f.code,
      details: { runId: f.run_id, entity: f.entity, key: f.key, rule: f.rule, column: f.column, value: f.value, rationale },
    });
    return row as FindingRow;
  });
}

export const FINDING_ACTIONS = ['delete', 'repoint'] as const;

export interface FindingDecisionOutcome {
  finding: FindingRow;
  decision: Decision;
  blast: BlastRadius;
  applied: boolean;
}

class PlanOnly {
  constructor(readonly outcome: FindingDecisionOutcome) {}
}

/**
 * Closes a finding on a record with a decision of the same kinds as a reference conflict's: delete the
 * record (with `cascade`, its dependents too) or re-point its reference. The record changes in the
 * consolidated dataset exactly as a conflict decision changes it (src/engine/review/decide.ts); validate again
 * afterwards. With `dryRun`, shows the blast radius and changes nothing.
 */
export async function decideFinding(
  ctx: Ctx,
  release: string,
  code: string,
  d: Decision,
  by: { actor: Actor; rationale: string },
  opts: { dryRun?: boolean } = {},
): Promise<FindingDecisionOutcome> {
  const rationale = opts.dryRun ? by.rationale?.trim() : requireRationale(by.rationale, 'a decision', `why ${d.action} the record of ${code}?`);
  try {
    return await ctx.db.control.transaction(async (trx) => {
      const f = await lockedFinding(ctx, trx, release, code);
      refuseUnlessOpen(f);
      // locked before the data changes (see applyDecision): a running validation finishes first
      if (!opts.dryRun) await trx('release_states').where({ release }).forUpdate().first();
      if (f.identity === '*' || f.key === null) {
        throw new TributaryError('decision_invalid', `${f.code} is about ${f.entity} as a whole, not one record: fix the source (or the test) and consolidate again, or waive it`, { code: f.code });
      }
      if (!(FINDING_ACTIONS as readonly string[]).includes(d.action)) {
        throw new TributaryError('decision_invalid', `decide a finding with ${FINDING_ACTIONS.join(' or ')} (or waive it: tributary waive ${f.code} --release ${release}); not ${d.action}`, { code: f.code });
      }
      if (d.action === 'repoint' && !(f.detail.parent && f.column)) {
        throw new TributaryError('decision_invalid', `${f.code} (${f.rule}) is not about a reference: delete the record, fix the source, or waive it`, { code: f.code });
      }
      const entity = ctx.config.entities.find((e) => e.name === f.entity)!;
      const conflict = {
        id: 0,
        release,
        run_id: f.run_id,
        code: f.code,
        entity: f.entity,
        identity: f.identity,
        key_label: `${entity.primaryKey}=${f.key}`,
        kind: f.rule,
        priority: 'P1',
        status: 'open',
        detail: { reason: f.message, suggestion: 'delete', ...(f.column ? { column: f.column } : {}), ...(f.detail.parent ? { parent: f.detail.parent } : {}) },
        assigned_to: null,
        assigned_at: null,
        decided_by: null,
        decided_at: null,
      } as ConflictRow;
      const summary = `${by.actor}: ${describeDecision(conflict, d)} (finding ${f.code}, ${f.rule}) — ${rationale}`;
      const plan = await planRecordDecision(ctx, trx, conflict, d, summary);
      if (opts.dryRun) throw new PlanOnly({ finding: f, decision: d, blast: plan.blast, applied: false });
      await plan.apply();
      const [row] = await trx<FindingRow>('findings')
        .where({ id: f.id })
        .update({
          status: 'closed',
          closed_at: trx.fn.now() as unknown as Date,
          closed_by: by.actor,
          resolution: `${describeDecision(conflict, d)} — ${rationale}`,
          detail: JSON.stringify({ ...f.detail, decision: d, blast: plan.blast }) as unknown as FindingRow['detail'],
        })
        .returning('*');
      const { state } = await releaseState(trx, release);
      if (isValidated(state)) await transition(trx, release, 'invalidate');
      await recordAudit(trx, {
        actor: by.actor,
        action: 'finding.decision',
        release,
        subject: f.code,
        details: { runId: f.run_id, entity: f.entity, key: f.key, rule: f.rule, decision: d, rationale, blast: plan.blast },
      });
      return { finding: row as FindingRow, decision: d, blast: plan.blast, applied: true };
    });
  } catch (err) {
    if (err instanceof PlanOnly) return err.outcome;
    throw err;
  }
}
