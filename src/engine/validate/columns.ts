import { type EntitySpec } from '../../config/load.js';
import { byColumnName, rowHashOfTexts } from '../kernel/checksum.js';
import { ident, literal, textArray } from '../kernel/sql.js';
import { shapeOf, savepoint, finalRows, typedCells, add, detailOf, couldNotRun, isConfigError, type Scope } from './scope.js';
import type { ColumnShape, TableShape } from './shape.js';
import { firstRow, must } from '../kernel/must.js';

// --- integrity --------------------------------------------------------------------------------------

/** What the column checks of one entity read: its ST table's shape and the columns each check looks at. */
interface ColumnPlan {
  shape: TableShape;
  detail: string;
  /** The env and table, in messages. */
  where: string;
  names: string;
  required: string[];
  enums: ColumnShape[];
}

type Pass = { n: number; unknown: number; required: number; enums: number; checksum: string | null };

/**
 * Columns: values in columns the ST table lacks, empty NOT NULL columns, values that do not fit their type.
 * Clean data costs one pass (which also reads every row as the table's row type, as loading will); only
 * what that pass finds is looked at value by value. Returns the entity's final row count.
 */
export async function checkColumns(s: Scope, e: EntitySpec): Promise<number> {
  const shape = shapeOf(s, e.name);
  const plan: ColumnPlan = {
    shape,
    detail: detailOf(s, e.name),
    where: `${shape.env} ${shape.table}`,
    names: textArray(shape.columns.map((c) => c.name)),
    required: shape.columns.filter((c) => c.notNull).map((c) => c.name),
    enums: shape.columns.filter((c) => c.enumLabels),
  };
  const { found, typeError } = await firstPass(s, e, plan);
  if (found.unknown > 0) await addUnknownColumns(s, e, plan);
  if (found.required > 0) await addRequired(s, e, plan);
  if (found.enums > 0) for (const c of plan.enums) await addEnumValue(s, e, plan, c);
  if (typeError) await addTypeErrors(s, e, plan, typeError);
  if (typeError === undefined && found.checksum !== null) s.checksums.set(e.name, { rows: found.n, checksum: found.checksum });
  return found.n;
}

function enumLabels(c: ColumnShape): string[] {
  return must(c.enumLabels, `the labels of enum column ${c.name}`);
}

function enumBad(c: ColumnShape): string {
  return `(r.data->>${literal(c.name)} is not null and not (r.data->>${literal(c.name)} = any(${textArray(enumLabels(c))})))`;
}

/**
 * The one pass over the entity's final rows, typed: the counts of each kind of problem, and the rows'
 * checksum. When a value does not fit its type the typed pass fails: the counts then come from an untyped
 * pass, and the error is returned (the values are then looked at one by one).
 */
async function firstPass(s: Scope, e: EntitySpec, plan: ColumnPlan): Promise<{ found: Pass; typeError: unknown }> {
  const { shape, names, required, enums } = plan;
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
  const what = `the counts of the column checks of ${e.name}`;
  try {
    const found = await savepoint(s, async (sp) => firstRow((await sp.k.raw<{ rows: Pass[] }>(pass(true))).rows, what));
    return { found, typeError: undefined };
  } catch (err) {
    if (isConfigError(err)) throw err;
    return { found: firstRow((await s.k.raw<{ rows: Pass[] }>(pass(false))).rows, what), typeError: err };
  }
}

/** A value in a column the ST table does not have: loading would drop it. */
async function addUnknownColumns(s: Scope, e: EntitySpec, { detail, where, names }: ColumnPlan): Promise<void> {
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

/** An empty NOT NULL column. */
async function addRequired(s: Scope, e: EntitySpec, { detail, where, required }: ColumnPlan): Promise<void> {
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
    `${s.t.result} r cross join unnest(${textArray(required)}) as c(col)` +
      ` where r.entity = ${literal(e.name)} and r.status = 'final' and r.data->>c.col is null`,
  );
}

/** A value of an enum column that is not one of its labels. */
async function addEnumValue(s: Scope, e: EntitySpec, { detail, where }: ColumnPlan, c: ColumnShape): Promise<void> {
  const labels = literal(enumLabels(c).join(', '));
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
      message:
        `format('%s = %s is not a value of %s (%s), the type of %s in %s', ${literal(c.name)}, r.data->>${literal(c.name)}, ` +
        `${literal(c.type)}, ${labels}, ${literal(c.name)}, ${literal(where)})`,
      detail,
    },
    `${finalRows(s, e.name)} and ${enumBad(c)}`,
  );
}

/** Value by value (PostgreSQL 15: a subtransaction each), only because the typed pass failed. */
async function addTypeErrors(s: Scope, e: EntitySpec, { shape, detail, where }: ColumnPlan, typeError: unknown): Promise<void> {
  let n = 0;
  for (const c of shape.columns) {
    const v = `r.data->>${literal(c.name)}`;
    let bad: string | undefined;
    if (c.cast) bad = `not ${s.validInput}(${v}, ${literal(c.cast)})${c.maxLength ? ` or length(rtrim(${v}, ' ')) > ${c.maxLength}` : ''}`;
    else if (c.array) bad = `jsonb_typeof(r.data->${literal(c.name)}) <> 'array'`;
    if (!bad) continue;
    const message =
      `format('%s = %s is not a valid %s, the type of %s in %s', ${literal(c.name)}, ${v}, ${literal(c.type)}, ` +
      `${literal(c.name)}, ${literal(where)})`;
    n += await add(
      s,
      e.name,
      { identity: 'r.identity', key: 'r.pk', rule: 'type', kind: 'integrity', col: literal(c.name), value: v, message, detail },
      `${finalRows(s, e.name)} and ${v} is not null and (${bad})`,
    );
  }
  if (n === 0) await couldNotRun(s, e, 'type', 'integrity', typeError, {}, ` (the rows do not fit ${where})`);
}
