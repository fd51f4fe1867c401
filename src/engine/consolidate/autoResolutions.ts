import type { EntitySpec } from '../../config/load.js';
import type { Ctx } from '../kernel/context.js';
import { keyLabelSql, runTables, type RunTables } from '../kernel/workArea.js';
import { literal, textArray } from '../kernel/sql.js';
import { nonPayloadColumns } from '../kernel/entities.js';

/**
 * The record of what the rules decided: every group a rule resolved gets a code (A-001…, in config entity
 * order, then rule-resolved identities before re-keyed primary keys) and a row in `auto_resolutions`
 * with the rule, its reason, the versions side by side and what was kept (env and version), merged
 * (attribute ← env) or re-keyed (env, old key → new key, and the child rows that followed).
 * Set-based: one INSERT … SELECT per entity from the run's work tables, never a statement per group.
 */
export async function recordAutoResolutions(ctx: Ctx, runId: number, release: string, total: number): Promise<number> {
  const t = runTables(runId);
  const width = Math.max(3, String(total).length);
  // each entity on a connection of its own, all at once, under a provisional code that sorts in the
  // final order (entity order, then the groups' order); one statement then numbers them A-001…
  const counts = await Promise.all(
    ctx.config.entities.map(async (e, i) => {
      const res = await ctx.db.control.raw<{ rowCount: number }>(
        `insert into auto_resolutions (release, run_id, code, entity, identity, key_label, rule, reason, detail)
         select ?, ?, '~' || lpad(?::text, 4, '0') || ':' || lpad((row_number() over (order by g.ord, g.sortkey))::text, 12, '0'),
                         ?, g.identity, g.label, g.rule, g.reason, g.detail
           from (${ruleGroups(ctx, t, e)} union all ${rekeyGroups(ctx, t, e)}) g`,
        [release, runId, i, e.name],
      );
      return res.rowCount;
    }),
  );
  await ctx.db.control.raw(
    `update auto_resolutions a set code = 'A-' || lpad(n.no::text, ?::int, '0')
       from (select id, row_number() over (order by code) as no from auto_resolutions where run_id = ? and code like '~%') n
      where a.id = n.id`,
    [width, runId],
  );
  return counts.reduce((a, b) => a + b, 0);
}

/** The identities a version rule resolved (no review priority): the survivor, the versions, the merged attributes. */
function ruleGroups(ctx: Ctx, t: RunTables, e: EntitySpec): string {
  const entity = literal(e.name);
  return `select 0 as ord, s.identity as sortkey, s.identity, ${keyLabelSql(e, 's.identity')} as label, s.rule, s.reason,
          jsonb_build_object(
            'kept', jsonb_build_object('version', s.survivor, 'env', w.rep_env, 'pk', w.rep_pk,
                                            'envs', to_jsonb(w.envs), 'pks', to_jsonb(w.pks), 'key', r.pk),
            'differing', to_jsonb(s.differing),
            'versions', (select jsonb_agg(jsonb_build_object('no', v.version_no, 'envs', to_jsonb(v.envs),
                                                              'pks', to_jsonb(v.pks), 'feature', v.feature,
                                  'features', to_jsonb(v.features), 'created_by', v.created_by, 'created_at', v.created_at,
                                  'ts', v.ts, 'data', o.data) order by v.version_no)
                           from ${t.versions} v join ${t.records} o on o.entity = v.entity and o.env = v.rep_env and o.pk = v.rep_pk
                          where v.entity = s.entity and v.identity = s.identity),
            -- complementary-merge: each attribute filled from another version, as buildResult (detect.ts) fills it
            'merged', case when s.rule = 'complementary-merge' then (
                select coalesce(jsonb_object_agg(f.key, f.env), '{}'::jsonb) from (
                  select distinct on (kv.key) kv.key, v.rep_env as env
                    from ${t.versions} v
                    join ${t.records} o on o.entity = v.entity and o.env = v.rep_env and o.pk = v.rep_pk
                    cross join jsonb_each(o.data - ${textArray(nonPayloadColumns(ctx.config, e))}) kv
                   where v.entity = s.entity and v.identity = s.identity and kv.value <> 'null'::jsonb
                     and coalesce(base.data -> kv.key, 'null'::jsonb) = 'null'::jsonb
                   order by kv.key, v.best_rank) f) end
          ) as detail
     from ${t.idsum} s
     join ${t.versions} w on w.entity = s.entity and w.identity = s.identity and w.version_no = s.survivor
     join ${t.records} base on base.entity = s.entity and base.env = w.rep_env and base.pk = w.rep_pk
     join ${t.result} r on r.entity = s.entity and r.identity = s.identity
    where s.entity = ${entity} and s.priority is null`;
}

/**
 * The primary keys several identities shared: who kept the key, who moved to which key, and the child
 * rows whose reference followed (those the key map rewrote: raw_refs holds what they named before).
 */
function rekeyGroups(ctx: Ctx, t: RunTables, e: EntitySpec): string {
  const entity = literal(e.name);
  const children = ctx.config.entities.flatMap((c) =>
    c.references
      .filter((ref) => ref.entity === e.name)
      .map(
        (ref) => `select c.rep_env as env, c.raw_refs->>${literal(ref.column)} as old, ${literal(c.name)} as entity, c.pk
                    from ${t.result} c join ${t.rekey} rk on rk.entity = ${entity}
                             and rk.env = c.rep_env and rk.pk = c.raw_refs->>${literal(ref.column)}
                   where c.entity = ${literal(c.name)} and c.raw_refs is not null and c.data->>${literal(ref.column)} = rk.new_pk`,
      ),
  );
  const followed = children.length
    ? `left join lateral (select coalesce(jsonb_agg(jsonb_build_object('entity', ch.entity, 'pk', ch.pk)
                                                 order by ch.entity, ch.pk), '[]'::jsonb) as rows
                            from ch where ch.env = rk.env and ch.old = rk.pk) f on true`
    : `cross join (select '[]'::jsonb as rows) f`;
  return `(with ${children.length ? `ch as materialized (${children.join(' union all ')}),` : ''}
     moved as (
       select rk.pk, min(rk.owner_env) as owner_env,
              jsonb_agg(jsonb_build_object('env', rk.env, 'old', rk.pk, 'new', rk.new_pk, 'children', f.rows)
                                  order by rk.env_rank, rk.env) as moved,
              string_agg(rk.env || ' → ' || rk.new_pk, ', ' order by rk.env_rank, rk.env) as moves
         from ${t.rekey} rk ${followed}
        where rk.entity = ${entity}
        group by rk.pk)
   select 1 as ord, m.pk as sortkey, 'key:' || m.pk as identity, ${literal(`${e.primaryKey}=`)} || m.pk as label, 're-key' as rule,
          format('%s %s is used by different records in %s; %s keeps it — re-keyed %s',
                 ${literal(e.primaryKey)}, m.pk, x.envs, m.owner_env, m.moves) as reason,
          jsonb_build_object('kept', jsonb_build_object('env', m.owner_env, 'pk', m.pk, 'key', m.pk),
                             'rekeyed', m.moved, 'versions', x.versions) as detail
     from moved m
     cross join lateral (
       select string_agg(distinct r.env, ', ') as envs,
              jsonb_agg(jsonb_build_object('no', r.no, 'envs', jsonb_build_array(r.env),
                                                'pks', jsonb_build_array(r.pk), 'feature', r.feature,
                        'created_by', r.created_by, 'created_at', r.created_at, 'key', r.key, 'data', r.data) order by r.no) as versions
         from (select x.env, x.pk, x.feature, x.created_by, x.created_at, x.data, coalesce(rk.new_pk, x.pk) as key,
                      row_number() over (order by x.env_rank, x.env, x.identity) as no
                 from ${t.records} x left join ${t.rekey} rk on rk.entity = x.entity and rk.env = x.env and rk.pk = x.pk
                where x.entity = ${entity} and x.pk = m.pk) r
     ) x)`;
}
