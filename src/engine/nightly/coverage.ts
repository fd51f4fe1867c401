import { envByRole } from '../../config/load.js';
import type { ArchivesRow } from '../../db/rows.js';
import { must } from '../kernel/must.js';
import { TributaryError } from '../../errors.js';
import { envError, type Ctx } from '../kernel/context.js';
import { qualified } from '../kernel/sql.js';

/**
 * Coverage growth: per release, the tests of its features (the catalog, feature → release by the plan)
 * and its data records (the row counts of its partitions in master, or of its archive when it was moved
 * to cold storage), each also cumulated over the releases up to it. Releases are in the plan's order, after those
 * no longer in the plan (old ones, archived), which are ordered by their first promotion.
 */
export interface CoverageRow {
  release: string;
  tests: number;
  records: number;
  /** Records of the release in cold storage (not in master now). */
  archived: boolean;
  cumulativeTests: number;
  cumulativeRecords: number;
}

export interface Coverage {
  env: string;
  rows: CoverageRow[];
  at: string;
}

export interface MasterPartition {
  entity: string;
  table: string;
  release: string;
  /** Qualified and quoted, as regclass text. */
  partition: string;
  schema: string;
  name: string;
}

/** Every release partition of master's entity tables (parsed from the partition bounds). */
export async function masterPartitions(ctx: Ctx): Promise<MasterPartition[]> {
  const master = envByRole(ctx.config, 'master');
  if (!master) throw new TributaryError('config_invalid', `${ctx.config.file}: environments: no env has role: master`);
  const k = ctx.db.env(master);
  const out: MasterPartition[] = [];
  try {
    for (const e of ctx.config.entities) {
      const res = await k.raw<{ rows: { name: string; bound: string; schema: string; relname: string }[] }>(
        `select c.oid::regclass::text as name, pg_get_expr(c.relpartbound, c.oid) as bound, n.nspname as schema, c.relname
           from pg_inherits i join pg_class c on c.oid = i.inhrelid join pg_namespace n on n.oid = c.relnamespace
          where i.inhparent = to_regclass(?)`,
        [qualified(master.schema, e.table)],
      );
      for (const r of res.rows) {
        const m = /^FOR VALUES IN \('((?:[^']|'')*)'\)$/.exec(r.bound);
        const bound = m?.[1];
        if (bound === undefined) continue;
        const release = bound.replace(/''/g, "'");
        out.push({ entity: e.name, table: e.table, release, partition: r.name, schema: r.schema, name: r.relname });
      }
    }
  } catch (err) {
    throw envError(ctx, master, err);
  }
  return out;
}

export async function coverageGrowth(ctx: Ctx): Promise<Coverage> {
  const parts = await masterPartitions(ctx);
  const master = must(envByRole(ctx.config, 'master'), 'the env with role master (masterPartitions checked it)');
  const records = new Map<string, number>();
  if (parts.length > 0) {
    const sql = parts.map((p) => `select ?::text as release, count(*)::bigint as n from ${p.partition}`).join(' union all ');
    const res = await ctx.db.env(master).raw<{ rows: { release: string; n: number }[] }>(sql, parts.map((p) => p.release));
    for (const r of res.rows) records.set(r.release, (records.get(r.release) ?? 0) + Number(r.n));
  }
  const db = ctx.db.control;
  const archived = new Map<string, number>();
  const arch: Pick<ArchivesRow, 'release' | 'row_count'>[] = await db<ArchivesRow>('archives')
    .whereNull('restored_at')
    .select('release', 'row_count')
    .orderBy('id');
  for (const a of arch) if (!records.has(a.release)) archived.set(a.release, Number(a.row_count));

  const features: string[] = [];
  const owners: string[] = [];
  for (const r of ctx.config.releases.values()) {
    for (const f of r.features.keys()) {
      features.push(f);
      owners.push(r.name);
    }
  }
  const tests = new Map<string, number>();
  const t = await db.raw<{ rows: { release: string; n: number }[] }>(
    `select fr.release, count(distinct c.test_id)::int as n
       from test_catalog c cross join lateral jsonb_array_elements_text(c.features) f
       join unnest(?::text[], ?::text[]) as fr(feature, release) on fr.feature = f
      group by 1`,
    [features, owners],
  );
  for (const r of t.rows) tests.set(r.release, r.n);

  const first = new Map<string, number>();
  const p = await db('promotions').groupBy('release').select('release').min('promoted_at as at');
  for (const r of p as { release: string; at: Date }[]) first.set(r.release, new Date(r.at).getTime());
  const plan = [...ctx.config.releases.keys()];
  const names = [...new Set([...plan, ...records.keys(), ...archived.keys()])];
  // releases no longer in the plan (old, archived) first, by their first promotion; then the plan's order
  const planPos = (r: string) => (plan.includes(r) ? plan.indexOf(r) : -1);
  names.sort((a, b) => planPos(a) - planPos(b) || (first.get(a) ?? Infinity) - (first.get(b) ?? Infinity) || a.localeCompare(b));

  let ct = 0;
  let cr = 0;
  const rows = names.map((release) => {
    const n = tests.get(release) ?? 0;
    const isArchived = archived.has(release);
    const rec = records.get(release) ?? archived.get(release) ?? 0;
    ct += n;
    cr += rec;
    return { release, tests: n, records: rec, archived: isArchived, cumulativeTests: ct, cumulativeRecords: cr };
  });
  return { env: master.name, rows, at: new Date().toISOString() };
}
