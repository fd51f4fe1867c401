import type { Knex } from 'knex';
import type { EntitySpec } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import type { Ctx } from './context.js';
import { releaseState } from './lifecycle.js';
import { ident, literal } from './sql.js';

/**
 * The work area: the unlogged tables of one consolidation run in the control database's `work` schema
 * (collected records, versions, key map, result), and what every later phase reads of them.
 */

/** A table of run `runId`'s work area. */
export function workTable(runId: number, name: string): string {
  return `work.${ident(`r${runId}_${name}`)}`;
}

/** The partition of the collected records holding the config's i-th entity (from 0). */
export function recordsPartition(runId: number, i: number): string {
  return workTable(runId, `records_${i + 1}`);
}

export interface RunTables {
  records: string;
  /** Identities with two or more records, and primary keys used by two or more identities (per entity). */
  multi: string;
  sharedPk: string;
  rekey: string;
  cmp: string;
  versions: string;
  idsum: string;
  keyMap: string;
  result: string;
}

export function runTables(runId: number): RunTables {
  return {
    records: workTable(runId, 'records'),
    multi: workTable(runId, 'multi'),
    sharedPk: workTable(runId, 'shared_pk'),
    rekey: workTable(runId, 'rekey'),
    cmp: workTable(runId, 'cmp'),
    versions: workTable(runId, 'versions'),
    idsum: workTable(runId, 'idsum'),
    keyMap: workTable(runId, 'key_map'),
    result: workTable(runId, 'result'),
  };
}

/**
 * A result row's references as collected (and pins, `!column`), to read with ->>: its raw_refs, or while
 * its data's references were never rewritten (raw_refs null), its data.
 */
export function rawRefs(alias: string): string {
  return `coalesce(${alias}.raw_refs, ${alias}.data)`;
}

/**
 * A result row's sources (env, pk, feature, created_by of each record it was made from), as jsonb. Rows
 * of single-record identities store none: their one source is the record at (rep_env, rep_pk).
 */
export function sourcesSql(t: RunTables, alias: string): string {
  return `coalesce(${alias}.sources, (select jsonb_build_array(jsonb_build_object('env', x.env, 'pk', x.pk, 'feature', x.feature,
                                                                              'created_by', x.created_by))
            from ${t.records} x where x.entity = ${alias}.entity and x.env = ${alias}.rep_env and x.pk = ${alias}.rep_pk))`;
}

/**
 * How people name an identity of entity `e` (the `identity` SQL expression): its first natural key's
 * columns and values (`email=ann@x`, several joined by +), or for an identity by primary key, `id=7`.
 */
export function keyLabelSql(e: EntitySpec, identity: string): string {
  const natural = (e.naturalKeys[0] ?? [e.primaryKey]).join('+');
  return `case when ${identity} like 'p:%' then ${literal(`${e.primaryKey}=`)} || substr(${identity}, 3)
               else ${literal(`${natural}=`)} || replace(substr(${identity}, 3), chr(31), '+') end`;
}

/** A record's references as jsonb ({column: key}, nulls left out). */
export function refsObject(e: EntitySpec, dataExpr: string): string {
  if (e.references.length === 0) return `'{}'::jsonb`;
  const pairs = e.references.map((r) => `${literal(r.column)}, ${dataExpr}->>${literal(r.column)}`).join(', ');
  return `jsonb_strip_nulls(jsonb_build_object(${pairs}))`;
}

/** Rewrites the children's reference columns through their own env's key map (and pinned re-points). */
export async function materializeRefs(
  k: Knex | Knex.Transaction,
  t: RunTables,
  e: EntitySpec,
  only?: { parent: string; envs: string[]; pks: string[] } | { identities: string[] },
): Promise<void> {
  for (const ref of e.references) {
    if (only && 'parent' in only && ref.entity !== only.parent) continue;
    const col = literal(ref.column);
    const pin = literal(`!${ref.column}`);
    const raw = rawRefs('r');
    const filter = !only
      ? ''
      : 'parent' in only
        ? `and (r.rep_env, ${raw}->>${col}) in (select * from unnest(?::text[], ?::text[]))`
        : 'and r.identity = any(?::text[])';
    const extra = !only ? [] : 'parent' in only ? [only.envs, only.pks] : [only.identities];
    // Only rows whose reference changes are rewritten: a key that already holds its target (same text, and
    // a number or a string, which key_value keeps as they are) would be rewritten to itself. That is most
    // rows, and rewriting them (and calling key_value for each) was most of this statement's time. The
    // first pass (detection: no pins yet, every reference as collected) looks only at references the key
    // map moves.
    await k.raw(
      `with target as materialized (
         select r.ctid as tid, x.k
           from ${t.result} r
           ${only ? 'left join' : 'join'} ${t.keyMap} km on km.entity = ? and km.env = r.rep_env and km.old_pk = ${raw}->>${col}
           cross join lateral (select coalesce(${raw}->>${pin}, km.new_pk, ${raw}->>${col}) as k) x
          where r.entity = ? and r.data is not null and (${raw}->>${col} is not null or ${raw}->>${pin} is not null) ${filter}
            and (x.k is null or x.k is distinct from r.data->>${col}
                 or coalesce(jsonb_typeof(r.data->${col}), '') not in ('number', 'string'))
       )
       update ${t.result} c
          set data = jsonb_set(c.data, ${literal(`{${ref.column}}`)}, work.key_value(c.data->${col}, target.k)),
              raw_refs = coalesce(c.raw_refs, ${refsObject(e, 'c.data')})
         from target
        -- by row address (in the entity's partition): the few rows found above, not a join over the whole
        -- result (its key is built later)
        where c.entity = ? and c.ctid = target.tid`,
      [ref.entity, e.name, ...extra, e.name],
    );
    if (!only) await materializeCrossEnvRefs(k, t, e, ref);
  }
}

/**
 * References to a parent only other envs hold (none in the child's own env), whose key moved there: they
 * follow the one identity holding that key to its survivor's key. Only keys the key map moved are looked
 * at (a semi-join on the small key map), so the children are read once more, not looked up one by one.
 */
async function materializeCrossEnvRefs(
  k: Knex | Knex.Transaction,
  t: RunTables,
  e: EntitySpec,
  ref: EntitySpec['references'][number],
): Promise<void> {
  const col = literal(ref.column);
  const raw = rawRefs('r');
  await k.raw(
    `with cand as materialized (
       select r.ctid as tid, r.rep_env, ${raw}->>${col} as v from ${t.result} r
        where r.entity = ? and r.data is not null and ${raw}->>${literal(`!${ref.column}`)} is null
          -- inside coalesce, the IN stays a hashed subplan: as a join, the fresh tables' missing statistics
          -- made it a nested loop over the key map per child (seconds)
          and coalesce(${raw}->>${col} in (select km.old_pk from ${t.keyMap} km where km.entity = ?), false)
          and not exists (select 1 from ${t.records} p where p.entity = ? and p.env = r.rep_env and p.pk = ${raw}->>${col})
     ), target as (
       select c.tid, s.pk from cand c
         cross join lateral (select min(x.identity) as identity from ${t.records} x
                              where x.entity = ? and x.pk = c.v having count(distinct x.identity) = 1) o
         join ${t.result} s on s.entity = ? and s.identity = o.identity and s.status = 'final'
        where s.pk is distinct from c.v
     )
     update ${t.result} c
        set data = jsonb_set(c.data, ${literal(`{${ref.column}}`)}, work.key_value(c.data->${col}, target.pk)),
            raw_refs = coalesce(c.raw_refs, ${refsObject(e, 'c.data')})
       from target
      where c.entity = ? and c.ctid = target.tid`,
    [e.name, ref.entity, ref.entity, ref.entity, ref.entity, e.name],
  );
}

/** The release's current consolidation run, whose work area holds its result. */
export async function currentRunId(ctx: Ctx | { db: { control: Knex } }, release: string): Promise<number> {
  const { currentRunId } = await releaseState(ctx.db.control, release);
  if (!currentRunId) {
    throw new TributaryError(
      'gate_state',
      `release ${release} has not been consolidated yet: run tributary consolidate ${release} first`,
      { release },
    );
  }
  return currentRunId;
}
