import type { Knex } from 'knex';
import { type EntitySpec, releaseOrThrow, type ScopedRule } from '../../config/load.js';
import type { Collected, KeyStats } from './collect.js';
import { materializeRefs, rawRefs, recordsPartition, refsObject, runTables, workTable, type RunTables } from '../kernel/workArea.js';
import type { Ctx } from '../kernel/context.js';
import { ident, KEY_TEXT, literal, textArray } from '../kernel/sql.js';
import { masterKeys } from '../kernel/master.js';
import { nonPayloadColumns } from '../kernel/entities.js';
import { INTEGER_KEY, keyFloor, masterMaxKey, suffixedKeySql } from '../kernel/freshKeys.js';
import { RULE_PREDICATES, SURVIVOR_ORDER, SIMPLE_RULES, scopedMatchSql, scopedReasonSql, scopedSurvivorOrder } from './rules.js';
import { conflictPrioritySql, isCriticalSql, PRIORITY_RANK } from '../kernel/priority.js';

/**
 * Detection and resolution, set-based in SQL over the work area, following DESIGN.md's three phases:
 *   1. identities: natural keys identify; a primary key shared by different identities is re-keyed;
 *      natural keys that point at two identities make an inconsistent-identity conflict;
 *   2. versions: an identity's records collapse into versions, and the first matching policy rule
 *      resolves them (or queues them for review with a priority);
 *   3. references: children follow the key map to their surviving parent; a reference that resolves
 *      nowhere is a dangling-reference, a parent that lost on the columns the child relies on is a
 *      mismatched-parent.
 * Why a record resolved the way it did is in this file and in rules.ts: the rule predicates, the survivor order, the reasons.
 */

export interface DetectCounts {
  collected: number;
  identities: number;
  conflicts: number;
  autoResolved: number;
  manual: number;
  byRule: Record<string, number>;
  byPriority: Record<string, number>;
}

async function createTables(ctx: Ctx, k: Knex, t: RunTables, runId: number): Promise<void> {
  const T = KEY_TEXT;
  await k.raw(`create unlogged table ${t.rekey} (entity ${T}, env ${T}, env_rank int, pk ${T},
      new_pk ${T}, owner_env ${T}, primary key (entity, env, pk))`);
  await k.raw(`create unlogged table ${t.cmp} (entity ${T}, env ${T}, env_rank int, pk ${T}, identity ${T}, payload jsonb, ts timestamptz,
      feature ${T}, fpri int, created_by text, created_at timestamptz, version_no int)`);
  // buildResult gathers each multi-record identity's sources from cmp: without an index, one scan of cmp per identity
  await k.raw(`create index on ${t.cmp} (identity, entity)`);
  await k.raw(`create unlogged table ${t.versions} (entity ${T}, identity ${T}, version_no int, payload jsonb, ts timestamptz,
        best_rank int,
      envs text[], pks text[], features text[], feature ${T}, fpri int, created_by text, created_at timestamptz,
      rep_env ${T}, rep_pk ${T}, n int,
      primary key (entity, identity, version_no))`);
  await k.raw(`create unlogged table ${t.idsum} (entity ${T}, identity ${T}, nv int, nrec int, rule text, priority text, survivor int,
      differing text[], reason text, primary key (entity, identity))`);
  await k.raw(`create unlogged table ${t.keyMap} (entity ${T}, env ${T}, old_pk ${T}, new_pk ${T}, primary key (entity, env, old_pk))`);
  // Partitioned by entity, like the records. Its key (entity, identity) is added once the rows are in
  // (detectAndResolve): one index build, not a million inserts into it.
  // sources is null for a record that is its identity's only one: sourcesSql() derives it from the record.
  // raw_refs: the references as collected, kept once data's are rewritten (null: data's are; see rawRefs())
  await k.raw(`create table ${t.result} (entity ${T} not null, identity ${T} not null, pk ${T}, data jsonb, raw_refs jsonb,
      sources jsonb, rule text, reason text, conflict text, status text not null, rep_env ${T} not null, rep_pk ${T} not null, feature ${T})
      partition by list (entity)`);
  for (const [i, e] of ctx.config.entities.entries()) {
    await k.raw(`create unlogged table ${resultPartition(runId, i)} partition of ${t.result} for values in (${literal(e.name)})`);
  }
}

/** The partition of the result holding the config's i-th entity (from 0). */
function resultPartition(runId: number, i: number): string {
  return workTable(runId, `result_${i + 1}`);
}

/** The feature plan as a VALUES list: feature → priority rank (1 = critical). */
function planValues(ctx: Ctx, release: string, alias = 'plan'): string {
  const plan = releaseOrThrow(ctx.config, release);
  const rows = [...plan.features.values()].map((f) => `(${literal(f.id)}, ${PRIORITY_RANK[f.priority]}, ${literal(f.priority)})`);
  return `(values ${rows.join(', ')}) as ${alias}(feature, rank, priority)`;
}

/** Phase 1b: natural keys beyond the first that point at two identities merge them into one inconsistent group. */
async function groupInconsistent(k: Knex, t: RunTables, e: EntitySpec): Promise<void> {
  for (const [i] of e.naturalKeys.slice(1).entries()) {
    // the key's value, computed by the collection (alt_keys)
    const value = `alt_keys[${i + 1}]`;
    const bad = await k.raw<{ rows: { v: string; lo: string; hi: string; n: number }[] }>(
      `select v, min(identity) as lo, max(identity) as hi, count(*)::int as n
         from (select ${value} as v, identity from ${t.records} where entity = ? and ${value} is not null) kv
        group by v having min(identity) <> max(identity)`,
      [e.name],
    );
    if (bad.rows.length === 0) continue;
    // a value on two records names exactly their two identities; values on more are looked up
    const many = bad.rows.filter((r) => r.n > 2).map((r) => r.v);
    const res = {
      rows: bad.rows.filter((r) => r.n === 2).flatMap((r) => [{ identity: r.lo, v: r.v }, { identity: r.hi, v: r.v }]),
    };
    if (many.length > 0) {
      const more = await k.raw<{ rows: { identity: string; v: string }[] }>(
        `select distinct identity, ${value} as v from ${t.records} where entity = ? and ${value} = any(?::text[])`,
        [e.name, many],
      );
      res.rows.push(...more.rows);
    }
    // union-find over the (few) linked identities
    const parent = new Map<string, string>();
    const find = (x: string): string => {
      let p = parent.get(x) ?? x;
      for (let next = parent.get(p); next !== undefined && next !== p; next = parent.get(p)) p = next;
      parent.set(x, p);
      return p;
    };
    const byValue = new Map<string, string>();
    for (const r of res.rows) {
      const other = byValue.get(r.v);
      if (other) {
        const [a, b] = [find(other), find(r.identity)].sort() as [string, string];
        if (a !== b) parent.set(b, a);
      } else byValue.set(r.v, r.identity);
    }
    const mapping = res.rows.map((r) => [r.identity, find(r.identity)] as const);
    const unique = [...new Map(mapping).entries()];
    await k.raw(
      `update ${t.records} r set identity = 'i:' || substr(m.g, 3)
         from unnest(?::text[], ?::text[]) as m(identity, g)
        where r.entity = ? and r.identity = m.identity`,
      [unique.map((u) => u[0]), unique.map((u) => u[1]), e.name],
    );
  }
}

/** Phase 1c: a primary key shared by different identities: lower-precedence ones get fresh keys. */
async function rekey(ctx: Ctx, k: Knex, t: RunTables, e: EntitySpec, keys: KeyStats | undefined): Promise<number> {
  if (e.naturalKeys.length === 0) return 0;
  // fresh keys (kernel/freshKeys.ts): integer keys above every env's and master's, in (env precedence, old key) order
  const floor = keys?.max == null ? 0n : keyFloor(keys.max, await masterMaxKey(ctx, e));
  const integer = `m.pk ~ ${INTEGER_KEY}`;
  const fresh = `case when ${integer}
      then (${floor}::numeric + row_number() over (partition by ${integer} order by m.env_rank,
            case when ${integer} then m.pk::numeric end, m.pk))::text
      else ${suffixedKeySql('m.pk', 'm.env')} end`;
  await k.raw(
    `insert into ${t.rekey} (entity, env, env_rank, pk, new_pk, owner_env)
     with shared as (
       select pk from ${t.sharedPk} where entity = ?
     ), sr as materialized (
       -- the (few) records of those keys, read once
       select r.env, r.env_rank, r.pk, r.identity from ${t.records} r join shared using (pk) where r.entity = ?
     ), owners as (
       select sr.pk, (array_agg(sr.identity order by sr.env_rank, sr.identity))[1] as owner,
                     (array_agg(sr.env order by sr.env_rank, sr.identity))[1] as owner_env
         from sr group by sr.pk
     ), m as (
       select sr.env, sr.env_rank, sr.pk, o.owner_env from sr join owners o on o.pk = sr.pk where sr.identity <> o.owner
     )
     select ?, m.env, m.env_rank, m.pk, ${fresh}, m.owner_env from m`,
    [e.name, e.name, e.name],
  );
  const groups = await k.raw<{ rows: { n: number }[] }>(`select count(distinct pk)::int as n from ${t.rekey} where entity = ?`, [e.name]);
  return groups.rows[0]?.n ?? 0;
}

/** Phase 2a: records of identities with two or more records, payloads with references translated to parent identities. */
async function buildVersions(ctx: Ctx, k: Knex, t: RunTables, e: EntitySpec, release: string): Promise<void> {
  let payload = `(r.data - ${textArray(nonPayloadColumns(ctx.config, e))})`;
  const joins: string[] = [];
  e.references.forEach((ref, i) => {
    const alias = `p${i}`;
    const value = `r.data->>${literal(ref.column)}`;
    joins.push(`left join ${t.records} ${alias} on ${alias}.entity = ${literal(ref.entity)}
        and ${alias}.env = r.env and ${alias}.pk = ${value}`);
    // a parent in another env (none in the child's own): the one identity holding that key there; none
    // or several (ambiguous: phase 3 makes it a dangling reference) leave the key as it is
    joins.push(`left join lateral (select min(x.identity) as identity from ${t.records} x
        where ${alias}.identity is null and x.entity = ${literal(ref.entity)} and x.pk = ${value}
                having count(distinct x.identity) = 1) ${alias}x on true`);
    const parent = `coalesce(${alias}.identity, ${alias}x.identity)`;
    const path = literal(`{${ref.column}}`);
    payload = `case when ${parent} is null then ${payload} else jsonb_set(${payload}, ${path}, to_jsonb('@' || ${parent})) end`;
  });
  await k.raw(
    `insert into ${t.cmp} (entity, env, env_rank, pk, identity, payload, ts, feature, fpri, created_by, created_at)
     with multi as (select identity from ${t.multi} where entity = ?)
     select r.entity, r.env, r.env_rank, r.pk, r.identity, ${payload}, r.ts::timestamptz, r.feature, coalesce(plan.rank, 9),
                 r.created_by, r.created_at::timestamptz
       from ${t.records} r join multi using (identity)
       left join ${planValues(ctx, release)} on plan.feature = r.feature
       ${joins.join('\n       ')}
      where r.entity = ?`,
    [e.name, e.name],
  );
  await k.raw(
    `insert into ${t.versions} (entity, identity, version_no, payload, ts, best_rank, envs, pks,
                                 features, feature, fpri, created_by, created_at, rep_env, rep_pk, n)
     select entity, identity,
            row_number() over (partition by identity order by min(env_rank), ts desc nulls last)::int,
            payload, ts, min(env_rank),
            array_agg(env order by env_rank, pk), array_agg(pk order by env_rank, pk),
            array_agg(distinct feature) filter (where feature is not null),
            (array_agg(feature order by fpri, env_rank))[1], min(fpri),
            (array_agg(created_by order by env_rank, pk))[1], (array_agg(created_at order by env_rank, pk))[1],
            (array_agg(env order by env_rank, pk))[1], (array_agg(pk order by env_rank, pk))[1], count(*)::int
       from ${t.cmp} where entity = ? group by entity, identity, payload, ts`,
    [e.name],
  );
  await k.raw(
    `update ${t.cmp} c set version_no = v.version_no from ${t.versions} v
      where c.entity = ? and v.entity = c.entity and v.identity = c.identity and v.payload = c.payload and v.ts is not distinct from c.ts`,
    [e.name],
  );
}

/** Phase 2b: classify each identity with the policy's rules, in the configured order. */
async function classify(ctx: Ctx, k: Knex, t: RunTables, e: EntitySpec, release: string): Promise<void> {
  const scoped = ctx.config.policy.scoped.filter((r) => r.entity === e.name);
  await matchRules(ctx, k, t, e);
  for (const r of scoped) await k.raw(scopedMatchSql(r, t.idsum, t.versions));
  await pickSurvivors(k, t, e, scoped);
  await explainRules(ctx, k, t, e, release, scoped);
}

/** Each identity's rule (the first of the policy's that matches), priority and differing attributes. */
async function matchRules(ctx: Ctx, k: Knex, t: RunTables, e: EntitySpec): Promise<void> {
  const rules = ctx.config.policy.rules;
  const ruleCase = rules.map((r) => `when ${RULE_PREDICATES[r]} then ${literal(r)}`).join(' ');
  await k.raw(
    `insert into ${t.idsum} (entity, identity, nv, nrec, rule, priority, differing)
     with keys as (select distinct identity, key from ${t.versions} v, jsonb_object_keys(v.payload) key where v.entity = :entity),
     vals as (select k.identity, k.key, coalesce(v.payload -> k.key, 'null'::jsonb) as val
                from keys k join ${t.versions} v on v.entity = :entity and v.identity = k.identity),
     attrs as (select identity, key, count(distinct val) as dv, count(distinct val) filter (where val <> 'null'::jsonb) as dnn
                 from vals group by identity, key),
     a as (select identity,
                  coalesce(array_agg(key order by key) filter (where dv > 1), '{}') as differing,
                  bool_and(dnn <= 1) as complementary,
                  coalesce(bool_or(dv > 1 and key = any(:core::text[])), false) as core_differs
             from attrs group by identity),
     vs as (select identity, count(*)::int as nv, sum(n)::int as nrec, count(distinct payload)::int as npayload,
                   count(distinct feature)::int as nfeat, count(distinct fpri)::int as npri, min(fpri) as top,
                   bool_or(${isCriticalSql('fpri')}) as critical
              from ${t.versions} where entity = :entity group by identity),
     s as (select vs.*, coalesce(a.differing, '{}') as differing, coalesce(a.complementary, true) as complementary,
                  coalesce(a.core_differs, false) as core_differs,
                  (select count(*) from ${t.versions} v where v.entity = :entity
                                       and v.identity = vs.identity and v.fpri = vs.top)::int as ntop
             from vs left join a using (identity))
     select :entity, s.identity, s.nv, s.nrec, r.rule,
            case r.rule when 'core-conflict' then ${conflictPrioritySql('s.critical')}
                        when 'inconsistent-identity' then 'P1'
                        when 'equal-priority' then 'P3' when 'unmatched' then 'P3' end,
            s.differing
       from s cross join lateral (
         select case when s.identity like 'i:%' then 'inconsistent-identity' ${ruleCase} else 'unmatched' end as rule
       ) r`,
    { entity: e.name, core: e.core },
  );
}

/** Each identity's surviving version: the first in its rule's survivor order. */
async function pickSurvivors(k: Knex, t: RunTables, e: EntitySpec, scoped: ScopedRule[]): Promise<void> {
  const survivorCase = [...Object.entries(SURVIVOR_ORDER), ...scoped.map((r) => [r.name, scopedSurvivorOrder(r)] as const)]
    .map(([rule, order]) => `when ${literal(rule)} then row_number() over (partition by v.identity order by ${order})`)
    .join(' ');
  await k.raw(
    `update ${t.idsum} i set survivor = w.version_no
       from (select v.identity, v.version_no, case s.rule ${survivorCase} end as place
               from ${t.versions} v join ${t.idsum} s on s.entity = v.entity and s.identity = v.identity
              where v.entity = :entity) w
      where i.entity = :entity and w.identity = i.identity and w.place = 1`,
    { entity: e.name },
  );
}

/** Each identity's reason: why its rule resolved it the way it did (or why it needs review). */
async function explainRules(ctx: Ctx, k: Knex, t: RunTables, e: EntitySpec, release: string, scoped: ScopedRule[]): Promise<void> {
  await k.raw(
    `update ${t.idsum} i set reason = x.reason
       from (
         select s.identity,
                case s.rule
                  ${scoped.map((r) => `when ${literal(r.name)} then ${scopedReasonSql(r)}`).join('\n                  ')}
                  when 'exact-duplicate' then format('identical in %s — kept %s''s record (highest precedence)',
                        array_to_string(w.envs, ', '), w.rep_env)
                  when 'newest-wins' then format('%s newer: %s vs %s — newest wins', w.rep_env,
                        to_char(w.ts at time zone 'UTC', 'YYYY-MM-DD HH24:MI'), to_char(o.ts at time zone 'UTC', 'YYYY-MM-DD HH24:MI'))
                  when 'complementary-merge' then format('%s differ only where one side is empty (%s) — attributes united, %s''s key kept',
                        array_to_string(o.envs || w.envs, ', '), array_to_string(s.differing, ', '), w.rep_env)
                  when 'feature-priority' then format('%s (%s) outranks %s — kept %s''s version',
                        w.feature, pw.priority, o.features_txt, w.rep_env)
                  when 'env-precedence' then format('same feature %s; %s has precedence over %s — kept %s''s version',
                        w.feature, w.rep_env, o.envs_txt, w.rep_env)
                  when 'core-conflict' then format('core attributes differ (%s): needs review; suggested: keep %s''s version (%s, %s)',
                        array_to_string(s.differing, ', '), w.rep_env, w.feature, pw.priority)
                  when 'equal-priority' then format('%s and %s are features of equal priority (%s) and disagree on %s: '
                        'needs review; suggested: keep both, renamed',
                        w.feature, o.features_txt, pw.priority, array_to_string(s.differing, ', '))
                  when 'inconsistent-identity' then format('natural keys point at different records (%s differ across %s): '
                        'needs review; suggested: keep both, renamed',
                        array_to_string(s.differing, ', '), array_to_string(o.envs || w.envs, ', '))
                  else format('no policy rule matched (%s differ): needs review', array_to_string(s.differing, ', '))
                end as reason
           from ${t.idsum} s
           join ${t.versions} w on w.entity = s.entity and w.identity = s.identity and w.version_no = s.survivor
           left join ${planValues(ctx, release, 'pw')} on pw.feature = w.feature
           cross join lateral (
             select max(v.ts) as ts,
                    array_agg(distinct env) as envs,
                    string_agg(distinct env, ', ') as envs_txt,
                    coalesce(string_agg(distinct coalesce(v.feature, 'no feature') ||
                             coalesce(' (' || p2.priority || ')', ''), ', '), 'none') as features_txt
               from ${t.versions} v
               left join ${planValues(ctx, release, 'p2')} on p2.feature = v.feature
               cross join unnest(v.envs) env
              where v.entity = s.entity and v.identity = s.identity and v.version_no <> s.survivor
           ) o
          where s.entity = :entity
       ) x
      where i.entity = :entity and i.identity = x.identity`,
    { entity: e.name },
  );
}

/** Phase 2c, first part: the result rows of the entity's single-record identities (possibly re-keyed): needs only the re-keying. */
async function buildSingletons(k: Knex, t: RunTables, e: EntitySpec): Promise<number> {
  const pk = literal(`{${e.primaryKey}}`);
  const pkv = `data->${literal(e.primaryKey)}`;
  // sources and raw_refs stay null: sourcesSql() reads the first off the record, rawRefs() the second off data
  const res = await k.raw<{ rowCount: number }>(
    `insert into ${t.result} (entity, identity, pk, data, rule, reason, status, rep_env, rep_pk, feature)
     select r.entity, r.identity, coalesce(rk.new_pk, r.pk),
            case when rk.new_pk is null then r.data else jsonb_set(r.data, ${pk}, work.key_value(r.${pkv}, rk.new_pk)) end,
            case when rk.new_pk is not null then 're-key' end,
            case when rk.new_pk is not null then format('%s %s in %s is also used by a different record in %s — re-keyed to %s',
                 ${literal(e.primaryKey)}, r.pk, r.env, rk.owner_env, rk.new_pk) end,
            'final', r.env, r.pk, r.feature
       from ${t.records} r
       left join ${t.rekey} rk on rk.entity = r.entity and rk.env = r.env and rk.pk = r.pk
      where r.entity = ? and not exists (select 1 from ${t.multi} m where m.entity = r.entity and m.identity = r.identity)`,
    [e.name],
  );
  return res.rowCount;
}

/** Phase 2c, second part: the result rows of multi-record identities (final, or pending review) and the entity's key map. */
async function buildResult(ctx: Ctx, k: Knex, t: RunTables, e: EntitySpec): Promise<number> {
  const pk = literal(`{${e.primaryKey}}`);
  const excluded = textArray(nonPayloadColumns(ctx.config, e));
  // the survivor (merged for complementary-merge), or the suggestion while pending
  const res = await k.raw<{ rowCount: number }>(
    `insert into ${t.result} (entity, identity, pk, data, raw_refs, sources, rule, reason, status, rep_env, rep_pk, feature)
     select s.entity, s.identity, coalesce(rk.new_pk, base.pk), m.data, ${refsObject(e, 'm.data')}, src.sources, s.rule, s.reason,
            case when s.priority is null then 'final' else 'pending' end, base.env, base.pk, w.feature
       from ${t.idsum} s
       join ${t.versions} w on w.entity = s.entity and w.identity = s.identity and w.version_no = s.survivor
       join ${t.records} base on base.entity = s.entity and base.env = w.rep_env and base.pk = w.rep_pk
       left join ${t.rekey} rk on rk.entity = base.entity and rk.env = base.env and rk.pk = base.pk
       cross join lateral (
         select jsonb_agg(jsonb_build_object('env', c.env, 'pk', c.pk, 'feature', c.feature,
                                            'created_by', c.created_by, 'version', c.version_no)
                          order by c.env_rank, c.pk) as sources
           from ${t.cmp} c where c.entity = s.entity and c.identity = s.identity
       ) src
       cross join lateral (
         select case when s.rule = 'complementary-merge' then
                  base.data || coalesce((
                    select jsonb_object_agg(f.key, f.value) from (
                      select distinct on (kv.key) kv.key, kv.value
                        from ${t.versions} v
                        join ${t.records} o on o.entity = v.entity and o.env = v.rep_env and o.pk = v.rep_pk
                        cross join jsonb_each(o.data - ${excluded}) kv
                       where v.entity = s.entity and v.identity = s.identity and kv.value <> 'null'::jsonb
                         and coalesce(base.data -> kv.key, 'null'::jsonb) = 'null'::jsonb
                       order by kv.key, v.best_rank) f), '{}'::jsonb)
                else base.data end as merged
       ) mm
       cross join lateral (
         select case when rk.new_pk is null then mm.merged
                         else jsonb_set(mm.merged, ${pk}, work.key_value(mm.merged->${literal(e.primaryKey)}, rk.new_pk)) end as data
       ) m
      where s.entity = ?`,
    [e.name],
  );
  // key map: every record whose primary key differs from its survivor's, and every re-keyed record
  await k.raw(
    `insert into ${t.keyMap} (entity, env, old_pk, new_pk)
     select r.entity, r.env, r.pk, coalesce(rk.new_pk, r.pk) from ${t.rekey} rk
       join ${t.records} r on r.entity = rk.entity and r.env = rk.env and r.pk = rk.pk
      where rk.entity = ?
     on conflict do nothing`,
    [e.name],
  );
  await k.raw(
    `insert into ${t.keyMap} (entity, env, old_pk, new_pk)
     -- the survivor's final key as the insert above gave it (final: no priority), from the small tables, not the result
     select c.entity, c.env, c.pk, f.pk from ${t.cmp} c
       join ${t.idsum} s on s.entity = c.entity and s.identity = c.identity and s.priority is null
       join ${t.versions} w on w.entity = s.entity and w.identity = s.identity and w.version_no = s.survivor
       left join ${t.rekey} rk on rk.entity = w.entity and rk.env = w.rep_env and rk.pk = w.rep_pk
       cross join lateral (select coalesce(rk.new_pk, w.rep_pk) as pk) f
      where c.entity = ? and c.pk <> f.pk
     on conflict (entity, env, old_pk) do update set new_pk = excluded.new_pk`,
    [e.name],
  );
  return res.rowCount;
}

export interface ReferenceProblem {
  entity: string;
  identity: string;
  kind: 'dangling-reference' | 'mismatched-parent';
  column: string;
  parentEntity: string;
  value: string;
  env: string;
  detail: string;
}

/** Phase 3: references that resolve nowhere, and parents that lost on the columns a child relies on. */
async function findReferenceProblems(ctx: Ctx, k: Knex, t: RunTables, e: EntitySpec): Promise<ReferenceProblem[]> {
  const problems: ReferenceProblem[] = [];
  for (const ref of e.references) {
    const col = literal(ref.column);
    const candidates = await k.raw<{ rows: { identity: string; env: string; v: string }[] }>(
      // most references find their parent in their own env: that test first, the rest on the few left
      `with c as materialized (
         select c.identity, c.rep_env, ${rawRefs('c')}->>${col} as v from ${t.result} c
          where c.entity = ? and c.status = 'final' and ${rawRefs('c')}->>${col} is not null
            and not exists (select 1 from ${t.records} p where p.entity = ? and p.env = c.rep_env and p.pk = ${rawRefs('c')}->>${col})
       )
       select c.identity, c.rep_env as env, c.v from c
        where not exists (select 1 from ${t.keyMap} km where km.entity = ? and km.env = c.rep_env and km.old_pk = c.v)
          and not exists (select 1 from ${t.result} p where p.entity = ? and p.pk = c.v and p.status <> 'deleted')
          -- a parent other envs hold: read through it (workArea.ts), or ambiguous (ambiguousParents)
          and not exists (select 1 from ${t.records} x where x.entity = ? and x.pk = c.v)`,
      [e.name, ref.entity, ref.entity, ref.entity, ref.entity],
    );
    const dangling = (m: { identity: string; v: string; env: string }, detail: string): ReferenceProblem => ({
      entity: e.name,
      identity: m.identity,
      kind: 'dangling-reference',
      column: ref.column,
      parentEntity: ref.entity,
      value: m.v,
      env: m.env,
      detail,
    });
    for (const m of await ambiguousParents(k, t, e.name, ref.entity, col)) {
      const detail =
        `${ref.column} = ${m.v} points at no ${ref.entity} record in ${m.env}, ` +
        `and ${m.n} different ${ref.entity} records hold that key in other envs: which one is meant is ambiguous`;
      problems.push(dangling(m, detail));
    }
    let missing = candidates.rows;
    if (missing.length > 0) {
      const inMaster = await masterKeys(ctx, ref.entity, [...new Set(missing.map((m) => m.v))]);
      missing = missing.filter((m) => !inMaster.has(m.v));
    }
    for (const m of missing) {
      const detail = `${ref.column} = ${m.v} points at no ${ref.entity} record in ${m.env}, in the consolidated ${ref.entity} or in master`;
      problems.push(dangling(m, detail));
    }
    if (ref.columns.length > 0) problems.push(...(await mismatchedParents(k, t, e, ref)));
  }
  return problems;
}

type Reference = EntitySpec['references'][number];
type Mismatch = { identity: string; env: string; v: string; mine: Record<string, unknown>; theirs: Record<string, unknown> } & {
  winner: string;
};

/** A child's parent whose surviving version differs on the columns the child relies on (`ref.columns`). */
async function mismatchedParents(k: Knex, t: RunTables, e: EntitySpec, ref: Reference): Promise<ReferenceProblem[]> {
  const problems: ReferenceProblem[] = [];
  const col = literal(ref.column);
  const differs = ref.columns.map((c) => `p.data->${literal(c)} is distinct from ps.data->${literal(c)}`).join(' or ');
  const mism = await k.raw<{ rows: Mismatch[] }>(
    `select c.identity, c.rep_env as env, ${rawRefs('c')}->>${col} as v,
            jsonb_build_object(${ref.columns.map((c) => `${literal(c)}, p.data->${literal(c)}`).join(', ')}) as mine,
            jsonb_build_object(${ref.columns.map((c) => `${literal(c)}, ps.data->${literal(c)}`).join(', ')}) as theirs,
            ps.rep_env as winner
       from ${t.result} c
       join ${t.records} p on p.entity = ? and p.env = c.rep_env and p.pk = ${rawRefs('c')}->>${col}
       join ${t.result} ps on ps.entity = p.entity and ps.identity = p.identity and ps.status = 'final'
      where c.entity = ? and c.status = 'final' and (${differs})`,
    [ref.entity, e.name],
  );
  for (const m of mism.rows) {
    const fmt = (o: Record<string, unknown>) => Object.entries(o).map(([kk, vv]) => `${kk}=${JSON.stringify(vv)}`).join(', ');
    problems.push({
      entity: e.name,
      identity: m.identity,
      kind: 'mismatched-parent',
      column: ref.column,
      parentEntity: ref.entity,
      value: m.v,
      env: m.env,
      detail:
        `relies on ${ref.entity} ${m.v} of ${m.env} (${fmt(m.mine)}), ` + `but the surviving version from ${m.winner} has ${fmt(m.theirs)}`,
    });
  }
  return problems;
}

/**
 * References whose parent is not in the child's own env, while other envs hold that key as two or more
 * different identities: the consolidated survivors cannot tell which one the child meant.
 */
type Ambiguous = { identity: string; env: string; v: string; n: number };

async function ambiguousParents(k: Knex, t: RunTables, entity: string, parent: string, col: string): Promise<Ambiguous[]> {
  const res = await k.raw<{ rows: Ambiguous[] }>(
    `with c as materialized (
       select c.identity, c.rep_env, ${rawRefs('c')}->>${col} as v from ${t.result} c
        where c.entity = ? and c.status = 'final' and ${rawRefs('c')}->>${col} is not null
          and not exists (select 1 from ${t.records} p where p.entity = ? and p.env = c.rep_env and p.pk = ${rawRefs('c')}->>${col})
     )
     select c.identity, c.rep_env as env, c.v, o.n from c
       cross join lateral (select count(distinct x.identity)::int as n from ${t.records} x where x.entity = ? and x.pk = c.v) o
      where o.n > 1`,
    [entity, parent, parent],
  );
  return res.rows;
}

/** The records with reference problems wait for review. */
async function markReferenceProblems(k: Knex, t: RunTables, e: EntitySpec, problems: ReferenceProblem[]): Promise<void> {
  if (problems.length > 0) {
    await k.raw(
      `update ${t.result} r set status = 'pending', rule = p.kind, reason = p.detail
         from unnest(?::text[], ?::text[], ?::text[]) as p(identity, kind, detail)
        where r.entity = ? and r.identity = p.identity`,
      [problems.map((p) => p.identity), problems.map((p) => p.kind), problems.map((p) => p.detail), e.name],
    );
  }
}

export interface DetectOutcome {
  counts: DetectCounts;
  references: ReferenceProblem[];
  timings: { detection: number; resolution: number };
}

/**
 * Starts a statement sequence on a connection of its own, beside the caller's: the returned promise is
 * awaited later, and always (a failure surfaces there, never as an unhandled rejection).
 */
function beside(k: Knex, fn: (trx: Knex.Transaction) => Promise<void>): { done: () => Promise<void> } {
  let failure: unknown;
  const p = k.transaction(fn).catch((err: unknown) => {
    failure = err;
  });
  return {
    done: async () => {
      await p;
      if (failure) throw failure;
    },
  };
}

/** Counters the entities' runs add to, each after its own await (see entityRun). */
interface Tally {
  rekeyGroups: number;
  identities: number;
  /** When the last entity was classified: detection before, resolution after. */
  classified: number;
}

/** The statements phase 2 waits on, started at once beside phase 1b. */
interface Preparation {
  grouped: Map<string, Promise<void>>;
  verified: Promise<Map<string, KeyStats>>;
  indexes: { done: () => Promise<void> };
  multiDone: Promise<void>;
  sharedDone: Promise<void>;
}

type Done = { done: () => Promise<void> };

/** The first rejection among settled promises, thrown. */
function throwFirstRejection(settled: PromiseSettledResult<unknown>[]): void {
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** Runs phases 1–3 over the collected records of a run. */
export async function detectAndResolve(ctx: Ctx, runId: number, release: string, collected: Collected): Promise<DetectOutcome> {
  const k = ctx.db.control;
  const t = runTables(runId);
  await createTables(ctx, k, t, runId);
  const started = performance.now();
  const prep = prepare(ctx, k, t, runId, collected);
  // Each entity on a connection of its own, all at once (the statements are single-threaded, the server
  // has more cores).
  const tally: Tally = { rekeyGroups: 0, identities: 0, classified: started };
  const runs = ctx.config.entities.map((e) => ({ e, run: entityRun(ctx, k, t, e, release, prep, tally) }));
  // Phase 3 for a child entity once its parents' key maps are in: its references follow them
  const chains = runs.map(({ e, run }, i) => resultIndexAndRefs(ctx, k, t, runId, runs, e, run, i));
  // every statement has ended before a failure goes on to the clean-up (which drops these tables)
  throwFirstRejection(await Promise.allSettled([prep.verified, ...chains, prep.indexes.done(), prep.multiDone, prep.sharedDone]));
  let detection = tally.classified - started;
  const resolution = performance.now() - tally.classified;
  const t3 = performance.now();
  const references = await referencePhase(ctx, k, t, runId);
  detection += performance.now() - t3;
  return {
    counts: await outcomeCounts(ctx, k, t, collected, tally, references),
    references,
    timings: { detection: Math.round(detection), resolution: Math.round(resolution) },
  };
}

/**
 * Phase 1b of every entity, a vacuum and analyze of the records, the drift check, the records' two indexes
 * and the passes that find duplicated identities and shared keys: started at once, each waiting on what it
 * needs.
 */
function prepare(ctx: Ctx, k: Knex, t: RunTables, runId: number, collected: Collected): Preparation {
  // Phase 1b of every entity at once: the identities are final once they are all done (a child's
  // versions name its parents' identities).
  const grouped = new Map(ctx.config.entities.map((e) => [e.name, groupInconsistent(k, t, e)] as const));
  // Beside phase 1b, a vacuum for the visibility map of the index-only scans below (the few rows phase 1b
  // moves are read from the heap), and the statistics of the columns the statements filter and join on:
  // each partition's, not the whole table's (sampled again across partitions, they cost as much), and not
  // the jsonb data's (as long again).
  const partitions = ctx.config.entities.map((_, i) => `${recordsPartition(runId, i)} (entity, env, pk, identity)`);
  // (a Promise, not knex's query: each then() of that would run the statement again)
  const vacuumed = Promise.resolve(k.raw(`vacuum (analyze) ${partitions.join(', ')}`)).then(() => undefined);
  const allGrouped = Promise.allSettled([...grouped.values(), vacuumed]);
  // The drift check after the vacuum, on its connection: phase 1b keeps a core of its own. The re-keying
  // needs its key stats, and the run its verdict.
  const verified = vacuumed.then(
    () => collected.verify(),
    () => collected.verify(),
  );
  verified.catch(() => undefined);
  const { byPk, byIdentity } = recordIndexes(k, t, allGrouped);
  const indexes = { done: () => Promise.all([byPk.done(), byIdentity.done()]).then(() => undefined) };
  // every entity's duplicated identities, and its primary keys that name two identities or more
  const multiSql = `select entity, identity from ${t.records} group by identity, entity having count(*) > 1`;
  const multiDone = sortedPass(k, t.multi, multiSql, byIdentity);
  const sharedDone = sortedPass(
    k,
    t.sharedPk,
    // min <> max: more than one identity
    `select entity, pk from ${t.records} group by pk, entity having min(identity) <> max(identity)`,
    byPk,
  );
  multiDone.catch(() => undefined);
  sharedDone.catch(() => undefined);
  return { grouped, verified, indexes, multiDone, sharedDone };
}

/**
 * The records' two indexes, each on a connection of its own, once phase 1b and the vacuum are done. They
 * serve the lookups of decisions, lineage and the queue's cards, and first the duplicates' search: read in
 * index order, records that share a key are neighbours, found by one pass over the index instead of a hash
 * of every record. The selective column leads: a build sorts on the leading column's abbreviated keys, and
 * entity (a handful of values) in front turned every comparison into a full one (3× slower). Lookups give
 * all the columns, in any order.
 */
function recordIndexes(k: Knex, t: RunTables, allGrouped: Promise<PromiseSettledResult<unknown>[]>): { byPk: Done; byIdentity: Done } {
  const index = (columns: string) =>
    beside(k, async (trx) => {
      const failed = (await allGrouped).find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      await trx.raw(`set local maintenance_work_mem = '256MB'`);
      await trx.raw(`set local max_parallel_maintenance_workers = 0`);
      await trx.raw(`create index on ${t.records} (${columns})`);
    });
  const byPk = index('pk, entity, identity');
  const byIdentity = index('identity, entity');
  return { byPk, byIdentity };
}

/** A work table made by one pass over the records in index order (no hash aggregate), once the index is built. */
async function sortedPass(k: Knex, table: string, sql: string, ready: Done): Promise<void> {
  await ready.done();
  await k.transaction(async (trx) => {
    await trx.raw('set local enable_hashagg = off');
    await trx.raw(`create unlogged table ${table} as ${sql}`);
  });
}

/** Phases 1c and 2 of one entity: re-keying and versions side by side, then its result rows. */
async function entityRun(ctx: Ctx, k: Knex, t: RunTables, e: EntitySpec, release: string, prep: Preparation, tally: Tally): Promise<void> {
  // (each awaited value first: `x += await …` would add to the x read before the other entities' updates)
  await prep.grouped.get(e.name);
  // re-keying (shared primary keys) and versions (shared identities) are independent: both at once
  const rekeyed = (async () => {
    await prep.sharedDone;
    const keys = await prep.verified;
    const groups = await rekey(ctx, k, t, e, keys.get(e.name));
    tally.rekeyGroups += groups;
  })();
  const versioned = (async () => {
    await prep.multiDone;
    await buildVersions(ctx, k, t, e, release);
    await classify(ctx, k, t, e, release);
    tally.classified = Math.max(tally.classified, performance.now());
  })();
  // the single-record identities' rows (most of the result) as soon as the re-keying is known
  const singled = Promise.all([rekeyed, prep.multiDone]).then(() => buildSingletons(k, t, e));
  throwFirstRejection(await Promise.allSettled([rekeyed, versioned, singled]));
  const singles = await singled;
  const multi = await buildResult(ctx, k, t, e);
  tally.identities += singles + multi;
}

/**
 * Once an entity's result rows are in: its partition's part of the result's key, then (for a child, once
 * its parents are done) its references materialized beside the result's statistics.
 */
async function resultIndexAndRefs(
  ctx: Ctx,
  k: Knex,
  t: RunTables,
  runId: number,
  runs: { e: EntitySpec; run: Promise<void> }[],
  e: EntitySpec,
  run: Promise<void>,
  i: number,
): Promise<void> {
  await run;
  // The entity's part of the result's key, as soon as its rows are in (the few rows rewritten or sent to
  // review below keep it up to date): the key on the whole result then takes these as they are.
  // (identity, entity), not (entity, identity): see the records' indexes.
  await k.transaction(async (trx) => {
    await trx.raw(`set local maintenance_work_mem = '256MB'`);
    await trx.raw(`set local max_parallel_maintenance_workers = 0`);
    await trx.raw(`create unique index on ${resultPartition(runId, i)} (identity, entity)`);
  });
  if (e.references.length === 0) return;
  for (const ref of e.references) await runs.find((r) => r.e.name === ref.entity)?.run.catch(() => undefined);
  // The result's statistics, beside the rewrite (which does without): without them the reference checks
  // below take the fresh table for near-empty and pick plans four times slower.
  const partitions = ctx.config.entities.map((_, j) => `${resultPartition(runId, j)} (entity, identity, pk, status, rep_env)`);
  throwFirstRejection(await Promise.allSettled([k.raw(`analyze ${partitions.join(', ')}`), materializeRefs(k, t, e)]));
}

/** Phase 3 over every entity: reference problems found and sent to review; then the result's key. */
async function referencePhase(ctx: Ctx, k: Knex, t: RunTables, runId: number): Promise<ReferenceProblem[]> {
  const references: ReferenceProblem[] = [];
  // Statistics for the key tables: without them the planner takes the fresh work tables for near-empty
  // and picks nested-loop anti-joins that rescan one per child row.
  await k.raw(`analyze ${t.keyMap}, ${t.rekey}`);
  for (const e of ctx.config.entities) {
    const found = await findReferenceProblems(ctx, k, t, e);
    await markReferenceProblems(k, t, e, found);
    references.push(...found);
  }
  // The result's key (a unique index: a partitioned table takes no primary key from an index), made of
  // its partitions' (ON CONFLICT (entity, identity) finds it all the same).
  await k.raw(`create unique index ${ident(`r${runId}_result_key`)} on ${t.result} (identity, entity)`);
  return references;
}

/** The run's counts: identities, conflicts by rule and priority, automatic and manual resolutions. */
async function outcomeCounts(
  ctx: Ctx,
  k: Knex,
  t: RunTables,
  collected: Collected,
  tally: Tally,
  references: ReferenceProblem[],
): Promise<DetectCounts> {
  const stats = await k.raw<{ rows: { rule: string; priority: string | null; n: number }[] }>(
    `select rule, priority, count(*)::int as n from ${t.idsum} group by rule, priority`,
  );
  const byRule: Record<string, number> = {};
  const byPriority: Record<string, number> = { P1: 0, P2: 0, P3: 0 };
  let auto = tally.rekeyGroups;
  let manual = 0;
  if (tally.rekeyGroups > 0) byRule['re-key'] = tally.rekeyGroups;
  for (const r of stats.rows) {
    byRule[r.rule] = (byRule[r.rule] ?? 0) + r.n;
    if (SIMPLE_RULES.has(r.rule) || ctx.config.policy.scoped.some((x) => x.name === r.rule)) auto += r.n;
    else {
      manual += r.n;
      byPriority[r.priority ?? 'P3'] = (byPriority[r.priority ?? 'P3'] ?? 0) + r.n;
    }
  }
  for (const p of references) {
    byRule[p.kind] = (byRule[p.kind] ?? 0) + 1;
    byPriority.P1 = (byPriority.P1 ?? 0) + 1;
    manual += 1;
  }
  return {
    collected: collected.envs.reduce((n, c) => n + c.rows, 0),
    identities: tally.identities,
    conflicts: auto + manual,
    autoResolved: auto,
    manual,
    byRule,
    byPriority,
  };
}
