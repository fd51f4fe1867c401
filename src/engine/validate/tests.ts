import { type DataTest, type EntitySpec } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { ident, literal, textArray } from '../kernel/sql.js';
import { unresolved, addUnresolved } from './references.js';
import {
  add,
  configProblem,
  couldNotRun,
  detailOf,
  expandSql,
  finalRows,
  isConfigError,
  kvText,
  noBindings,
  pgMessage,
  requireColumns,
  savepoint,
  shapeOf,
  tempKeyed,
  type Scope,
} from './scope.js';
import { ruleOf } from './types.js';

// --- data tests ----------------------------------------------------------------------------------

/** What every test's findings carry: its rule, the detail, where the final rows are and the primary key's name. */
interface TestFrame {
  rule: string;
  detail: string;
  rows: string;
  pkName: string;
}

type TestOf<K extends DataTest['kind']> = Extract<DataTest, { kind: K }>;

export async function runTest(s: Scope, e: EntitySpec, test: DataTest): Promise<void> {
  const rule = ruleOf(test);
  const detail = detailOf(s, e.name, { test: test.path });
  const f: TestFrame = { rule, detail, rows: finalRows(s, e.name), pkName: literal(e.primaryKey) };
  switch (test.kind) {
    case 'not_null':
      return testNotNull(s, e, test, f);
    case 'unique':
      return testUnique(s, e, test, f);
    case 'accepted_values':
      return testAcceptedValues(s, e, test, f);
    case 'relationships':
      requireColumns(s, e, test.path, [test.column]);
      await addUnresolved(s, e, test.column, test.to, rule, 'test', unresolved(s, e, test.column, test.to), test.path);
      return;
    case 'expression':
      return testExpression(s, e, test, f);
    case 'sql':
      return testSql(s, e, test, f);
  }
}

async function testNotNull(s: Scope, e: EntitySpec, test: TestOf<'not_null'>, { rule, detail }: TestFrame): Promise<void> {
  requireColumns(s, e, test.path, test.columns);
  const message = `format('%s is empty (test %s)', c.col, ${literal(rule)})`;
  await add(
    s,
    e.name,
    { identity: 'r.identity', key: 'r.pk', rule, kind: 'test', col: 'c.col', value: 'null', message, detail },
    `${s.t.result} r cross join unnest(${textArray(test.columns)}) as c(col)` +
      ` where r.entity = ${literal(e.name)} and r.status = 'final' and r.data->>c.col is null`,
  );
}

async function testUnique(s: Scope, e: EntitySpec, test: TestOf<'unique'>, { rule, detail, rows, pkName }: TestFrame): Promise<void> {
  requireColumns(s, e, test.path, test.columns);
  const label = test.columns.join('+');
  const value =
    test.columns.length === 1
      ? `k.v->>0`
      : kvText(`jsonb_build_object(${test.columns.map((c, i) => `${literal(c)}, k.v->${i}`).join(', ')})`);
  const others =
    `array_to_string((array_remove(d.pks, k.pk))[1:5], ', ') || ` +
    `case when cardinality(d.pks) > 6 then format(' and %s more', cardinality(d.pks) - 6) else '' end`;
  const tuple = `jsonb_build_array(${test.columns.map((c) => `r.data->${literal(c)}`).join(', ')})`;
  const notNull = test.columns.map((c) => `r.data->>${literal(c)} is not null`).join(' and ');
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
    `(select r.identity, r.pk, ${tuple} as v from ${rows}
            and ${notNull}) k
          join (select ${tuple} as v, array_agg(r.pk order by r.pk) as pks from ${rows}
            and ${notNull}
            group by 1 having count(*) > 1) d on d.v = k.v`,
  );
}

async function testAcceptedValues(s: Scope, e: EntitySpec, test: TestOf<'accepted_values'>, f: TestFrame): Promise<void> {
  const { rule, detail, rows } = f;
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
}

async function testExpression(s: Scope, e: EntitySpec, test: TestOf<'expression'>, { rule, detail }: TestFrame): Promise<void> {
  const shape = shapeOf(s, e.name);
  const words = new Set(test.expression.replace(/'(?:[^']|'')*'/g, '').match(/[A-Za-z_][A-Za-z0-9_]*/g) ?? []);
  const used = shape.columns.filter((c) => words.has(c.name)).map((c) => c.name);
  const [only] = used.length === 1 ? used : [];
  const value =
    used.length === 0
      ? 'null'
      : only !== undefined
        ? `v.${ident(only)}::text`
        : kvText(`jsonb_build_object(${used.map((c) => `${literal(c)}, to_jsonb(v.${ident(c)})`).join(', ')})`);
  await guarded(s, e, test, (sp) =>
    add(
      sp,
      e.name,
      {
        identity: 'v."__identity"',
        key: 'v."__pk"',
        rule,
        kind: 'test',
        col: only !== undefined ? literal(only) : 'null',
        value,
        message: `format('%s fails: %s', ${value === 'null' ? `'the row'` : value}, ${literal(test.expression)})`,
        detail,
        ...(test.name ? {} : { extra: literal(test.expression) }),
      },
      `${tempKeyed(e.name)} as v where (${expandSql(e.name, test.expression)}) is false`,
    ),
  );
}

async function testSql(s: Scope, e: EntitySpec, test: TestOf<'sql'>, { rule, detail, pkName }: TestFrame): Promise<void> {
  const query = expandSql(e.name, test.sql);
  await guarded(s, e, test, async (sp) => {
    const probe = await sp.k.raw<{ fields: { name: string }[] }>(noBindings(`select * from (${query}) as q limit 0`));
    if (!probe.fields.some((f) => f.name === e.primaryKey)) {
      const returns = probe.fields.map((f) => f.name).join(', ') || 'no columns';
      const message =
        `${s.ctx.config.file}: ${test.path}.sql: the query must return the ${e.name} primary key column "${e.primaryKey}" ` +
        `(it returns: ${returns})`;
      throw new TributaryError('config_invalid', message, { file: s.ctx.config.file, path: `${test.path}.sql` });
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
}

/** A test's own SQL: an error of the SQL (42…) is a config error naming the test; an error of the data is a finding. */
async function guarded(s: Scope, e: EntitySpec, test: DataTest, fn: (sp: Scope) => Promise<unknown>): Promise<void> {
  try {
    await savepoint(s, fn);
  } catch (err) {
    if (err instanceof TributaryError) throw err;
    if (isConfigError(err)) throw configProblem(s, `${test.path}.${test.kind}`, err);
    const hint = /invalid input|out of range|value too long/i.test(pgMessage(err)) ? ' (see the type findings)' : '';
    await couldNotRun(s, e, ruleOf(test), 'test', err, { test: test.path }, hint);
  }
}
