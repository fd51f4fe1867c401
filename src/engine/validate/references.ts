import { type EntitySpec } from '../../config/load.js';
import { type RunTables } from '../kernel/workArea.js';
import { type Ctx } from '../kernel/context.js';
import { masterKeys } from '../kernel/master.js';
import { literal } from '../kernel/sql.js';
import { add, detailOf, type Scope } from './scope.js';
import type { Unresolved } from './types.js';
import { must } from '../kernel/must.js';


const refKey = (entity: string, column: string, parent: string) => `${entity}.${column}>${parent}`;

/**
 * References of `column` that resolve neither to a final row of `parent` nor to master (master is another
 * connection: before the transaction).
 */
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

export async function precomputeReferences(ctx: Ctx, t: RunTables): Promise<Map<string, Unresolved[]>> {
  const out = new Map<string, Unresolved[]>();
  for (const e of ctx.config.entities) {
    const refs = [
      ...e.references.map((r) => [r.column, r.entity] as const),
      ...e.tests.flatMap((x) => (x.kind === 'relationships' ? [[x.column, x.to] as const] : [])),
    ];
    for (const [column, parent] of refs) {
      const key = refKey(e.name, column, parent);
      if (!out.has(key)) out.set(key, await findUnresolved(ctx, t, e.name, column, parent));
    }
  }
  return out;
}

export const unresolved = (s: Scope, e: EntitySpec, column: string, parent: string): Unresolved[] =>
  s.unresolved.get(refKey(e.name, column, parent)) ?? [];

/** The primary key column of an entity the config references (config validation checked it exists). */
function primaryKeyOf(s: Scope, entity: string): string {
  return must(s.ctx.config.entities.find((x) => x.name === entity), `entity ${entity} in the config`).primaryKey;
}

export async function addUnresolved(
  s: Scope,
  e: EntitySpec,
  column: string,
  parent: string,
  rule: string,
  kind: 'integrity' | 'test',
  rows: Unresolved[],
  test?: string,
): Promise<void> {
  if (rows.length === 0) return;
  const why = (r: Unresolved) =>
    r.pstatus === 'deleted'
      ? 'which was deleted'
      : r.pstatus === 'pending'
        ? 'which still awaits review'
        : `which is neither in the consolidated ${parent} nor in master`;
  const parentPk = primaryKeyOf(s, parent);
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
    [
      rows.map((r) => r.identity),
      rows.map((r) => r.pk),
      rows.map((r) => r.v),
      rows.map((r) => `${column} = ${r.v} points at ${parent} ${parentPk} ${r.v}, ${why(r)}`),
    ],
  );
}

export async function checkReferences(s: Scope, e: EntitySpec): Promise<void> {
  for (const ref of e.references) {
    await addUnresolved(s, e, ref.column, ref.entity, 'orphan', 'integrity', unresolved(s, e, ref.column, ref.entity));
  }
  // chains: a reference to a parent that is itself an orphan (parents are checked before their children;
  // a reference of an entity to itself goes round until no new link is found)
  for (let round = 0; round < 1000; round++) {
    let added = 0;
    for (const ref of e.references) {
      const broken = await s.k.raw<{ rows: unknown[] }>(
        `select 1 from ${s.found} where entity = ? and rule in ('orphan', 'orphan-chain') limit 1`,
        [ref.entity],
      );
      if (broken.rows.length === 0) continue;
      const col = literal(ref.column);
      const parentPk = primaryKeyOf(s, ref.entity);
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
          message:
            `format('%s = %s points at %s %s %s, which is itself an orphan: %s', ${col}, r.data->>${col}, ` +
            `${literal(ref.entity)}, ${literal(parentPk)}, r.data->>${col}, b.message)`,
          detail: detailOf(s, e.name, { parent: ref.entity }),
        },
        `${s.t.result} r join (select distinct on (key) key, message from ${s.found}
                                 where entity = ${literal(ref.entity)} and rule in ('orphan', 'orphan-chain')
                                 order by key, message) b on b.key = r.data->>${col}
          where r.entity = ${literal(e.name)} and r.status = 'final'`,
      );
    }
    if (added === 0 || !e.references.some((r) => r.entity === e.name)) break;
  }
}
