import crypto from 'node:crypto';
import type { EntitySpec, EnvSpec } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { checksumOfQuerySql, checksumSql, COLUMNS_SQL, type TableChecksum, type TableColumn } from '../kernel/checksum.js';
import { copyRows } from '../kernel/copy.js';
import { partitionName } from '../kernel/master.js';
import { firstRow } from '../kernel/must.js';
import { ident, literal, qualified } from '../kernel/sql.js';
import { ensureUserTypes, userTypesOf } from '../kernel/types.js';
import type { Column, PromotedTable, Query, Session, Work } from './types.js';

/**
 * Master's side of a promotion: the partitioned parent of each entity, the release's new partition filled
 * from staging with the verified copy, and its verification (count and checksum against staging's rows
 * promoted) when it is attached.
 */

const SHAPE_SQL = `select a.attname as name, format_type(a.atttypid, a.atttypmod) as type, a.attnotnull as "notNull"
    from pg_attribute a where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped order by a.attnum`;

/** Step 1 for one entity: the partitioned parent (and its types and indexes), the release's new partition filled from staging. */
export async function copyPartition(s: Session, e: EntitySpec): Promise<Work> {
  const { master, staging, release, m } = s;
  const columns = await stagingColumns(s, e);
  s.at.env = master;
  const parent = qualified(master.schema, e.table);
  s.at.table = parent;
  // the enum, domain and composite types staging's table uses, created in master if it lacks them
  await ensureUserTypes(s.target, await userTypesOf(s.source, qualified(staging.schema, e.table)), parent);
  await ensureParent(m, s.ctx.config.file, master, e, columns, s.rel);
  await ensureIndexes(m, master, e, columns);
  const part = partitionName(e.table, release);
  const partQ = qualified(master.schema, part);
  await replacePartition(m, parent, master, part, release);
  s.at.table = partQ;
  s.progress?.('copy', { table: e.table });
  await m(`create table ${partQ} (like ${parent} including defaults including constraints)`);
  const list = columns.map((c) => ident(c.name)).join(', ');
  await copyRows(s.source, s.target, {
    failpoint: 'promote.copy',
    select: `select ${list} from ${qualified(staging.schema, e.table)} where ${ident(s.rel)} = ${literal(release)}`,
    table: partQ,
    columns: columns.map((c) => c.name),
  });
  return {
    e,
    parent,
    part,
    partQ,
    staging: qualified(staging.schema, e.table),
    columns,
    skipped: new Set(),
    patches: new Map(),
    pkOrig: new Map(),
    autoResolved: [],
    autoCount: 0,
    decisions: [],
  };
}

/** The staging table's columns, which must hold the release (load it first), its primary key and release tag. */
async function stagingColumns(s: Session, e: EntitySpec): Promise<Column[]> {
  const { staging, release } = s;
  s.at.env = staging;
  const table = qualified(staging.schema, e.table);
  s.at.table = table;
  const columns = (await s.source.query<Column>(SHAPE_SQL, [table])).rows;
  if (columns.length === 0) {
    throw new TributaryError(
      'gate_state',
      `staging env ${staging.name} has no table ${table}: load ${release} into staging first (tributary load ${release})`,
      { env: staging.name, table },
    );
  }
  for (const col of [e.primaryKey, s.rel]) {
    if (!columns.some((c) => c.name === col)) {
      const what = col === s.rel ? 'release tag' : 'primary key';
      throw new TributaryError('config_invalid', `staging table ${table} has no column ${col} (entity ${e.name}'s ${what})`, {
        env: staging.name,
        table,
      });
    }
  }
  return columns;
}

/**
 * The master table of an entity, partitioned by LIST on the release tag: created like the staging
 * table (primary key: the entity's key and the release); a plain table of earlier releases (as before
 * the first promotion) is converted in place, one partition per release; a partitioned one must have
 * the staging table's columns.
 */
async function ensureParent(m: Query, file: string, master: EnvSpec, e: EntitySpec, columns: Column[], rel: string): Promise<void> {
  const parent = qualified(master.schema, e.table);
  const kind = (await m('select c.relkind from pg_class c where c.oid = to_regclass($1)', [parent])).rows[0]?.relkind as string | undefined;
  if (!kind) return createParent(m, parent, e, columns, rel);
  if (kind !== 'p' && kind !== 'r') {
    throw new TributaryError(
      'config_invalid',
      `master env ${master.name}: ${parent} is not a table (relkind ${kind}); entity ${e.name} in ${file} needs it to be one`,
      { env: master.name, table: parent },
    );
  }
  await requireStagingShape(m, master, parent, columns);
  if (kind === 'p') return requireListByRelease(m, master, parent, rel);
  return convertPlainTable(m, master, e, columns, rel);
}

async function createParent(m: Query, parent: string, e: EntitySpec, columns: Column[], rel: string): Promise<void> {
  const cols = columns.map((c) => `${ident(c.name)} ${c.type}${c.notNull ? ' not null' : ''}`);
  await m(
    `create table ${parent} (${cols.join(', ')}, primary key (${ident(e.primaryKey)}, ${ident(rel)})) partition by list (${ident(rel)})`,
  );
}

/** Master's table must have staging's columns, of the same types. */
async function requireStagingShape(m: Query, master: EnvSpec, parent: string, columns: Column[]): Promise<void> {
  const have = (await m(SHAPE_SQL, [parent])).rows as Column[];
  const want = new Map(columns.map((c) => [c.name, c.type]));
  const got = new Map(have.map((c) => [c.name, c.type]));
  const problems = [
    ...columns.filter((c) => !got.has(c.name)).map((c) => `${c.name} is missing`),
    ...have.filter((c) => !want.has(c.name)).map((c) => `${c.name} is not in staging`),
    ...columns
      .filter((c) => got.has(c.name) && got.get(c.name) !== c.type)
      .map((c) => `${c.name} is ${got.get(c.name)} (staging: ${c.type})`),
  ];
  if (problems.length > 0) {
    throw new TributaryError(
      'config_invalid',
      `master env ${master.name}, table ${parent}: its columns differ from staging's (${problems.join('; ')}): ` +
        `align master's table first (ALTER TABLE on the parent changes every partition)`,
      { env: master.name, table: parent },
    );
  }
}

/** A partitioned master table must be partitioned by LIST on the release tag alone. */
async function requireListByRelease(m: Query, master: EnvSpec, parent: string, rel: string): Promise<void> {
  const res = await m(
    `select p.partstrat as strat, array(select a.attname::text from unnest(p.partattrs::int2[]) with ordinality as k(attnum, ord)
                                        join pg_attribute a on a.attrelid = p.partrelid and a.attnum = k.attnum order by k.ord) as keys
         from pg_partitioned_table p where p.partrelid = to_regclass($1)`,
    [parent],
  );
  const p = firstRow(res.rows as { strat: string; keys: string[] }[], `the partitioning of master's ${parent}`);
  if (p.strat !== 'l' || p.keys.length !== 1 || p.keys[0] !== rel) {
    const strategy = p.strat === 'l' ? 'list' : p.strat === 'r' ? 'range' : 'hash';
    throw new TributaryError(
      'config_invalid',
      `master env ${master.name}, table ${parent}: partitioned by ${strategy} (${p.keys.join(', ')}), but promotion needs list (${rel})`,
      { env: master.name, table: parent },
    );
  }
}

/** A plain table of earlier releases: converted (in this transaction) into partitions, one per release. */
async function convertPlainTable(m: Query, master: EnvSpec, e: EntitySpec, columns: Column[], rel: string): Promise<void> {
  const parent = qualified(master.schema, e.table);
  const counted = await m(`select count(*)::int as n from ${parent} where ${ident(rel)} is null`);
  const nulls = firstRow(counted.rows as { n: number }[], 'a count').n;
  if (nulls > 0) {
    throw new TributaryError(
      'config_invalid',
      `master env ${master.name}, table ${parent}: ${nulls} row(s) have no ${rel}; ` +
        `tag them with their release before the first promotion partitions the table`,
      { env: master.name, table: parent },
    );
  }
  const legacy = `${e.table}__tributary_unpartitioned`;
  await m(`alter table ${parent} rename to ${ident(legacy)}`);
  const legacyQ = qualified(master.schema, legacy);
  const pkeys = (await m(`select conname from pg_constraint where conrelid = to_regclass($1) and contype = 'p'`, [legacyQ])).rows as {
    conname: string;
  }[];
  for (const c of pkeys) await m(`alter table ${legacyQ} drop constraint ${ident(c.conname)}`);
  await createParent(m, parent, e, columns, rel);
  const releases = (await m(`select distinct ${ident(rel)}::text as r from ${legacyQ} order by 1`)).rows as { r: string }[];
  const list = columns.map((c) => ident(c.name)).join(', ');
  for (const { r } of releases) {
    const part = qualified(master.schema, partitionName(e.table, r));
    await m(`create table ${part} (like ${parent} including defaults including constraints)`);
    await m(`insert into ${part} (${list}) select ${list} from ${legacyQ} where ${ident(rel)} = $1`, [r]);
    await m(`alter table ${parent} attach partition ${part} for values in (${literal(r)})`);
  }
  await m(`drop table ${legacyQ}`);
}

/**
 * The indexes the bot's queries need on master, made on the partitioned parent (PostgreSQL builds them
 * on every partition, and on each partition attached later: promoted, converted or restored): one per
 * natural key (its columns) and one per reference column, which cross-release detection and the
 * reference checks join on. Idempotent (named after table and columns; `if not exists`).
 */
async function ensureIndexes(m: Query, master: EnvSpec, e: EntitySpec, columns: Column[]): Promise<void> {
  const parent = qualified(master.schema, e.table);
  const have = new Set(columns.map((c) => c.name));
  const keys = [...e.naturalKeys, ...e.references.map((r) => [r.column])].filter((k) => k.length > 0 && k.every((c) => have.has(c)));
  const seen = new Set<string>();
  for (const key of keys) {
    if (seen.has(key.join('\0'))) continue;
    seen.add(key.join('\0'));
    let name = `${e.table}__${key.join('__')}__idx`;
    if (name.length > 63) name = `${name.slice(0, 46)}_${crypto.createHash('sha256').update(name).digest('hex').slice(0, 12)}_idx`;
    await m(`create index if not exists ${ident(name)} on ${parent} (${key.map(ident).join(', ')})`);
  }
}

/** Detaches and drops the release's partition, if it has one; the new one takes its name. */
async function replacePartition(m: Query, parent: string, master: EnvSpec, part: string, release: string): Promise<void> {
  const parts = (await m(
    `select c.oid::regclass::text as name, c.relname, pg_get_expr(c.relpartbound, c.oid) as bound
       from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = to_regclass($1)`,
    [parent],
  )).rows as { name: string; relname: string; bound: string }[];
  for (const p of parts.filter((x) => x.bound === `FOR VALUES IN (${literal(release)})`)) {
    await m(`alter table ${parent} detach partition ${p.name}`);
    await m(`drop table ${p.name}`);
  }
  const other = parts.find((x) => x.relname === part && x.bound !== `FOR VALUES IN (${literal(release)})`);
  const table = qualified(master.schema, part);
  const exists = firstRow((await m('select to_regclass($1)::text as t', [table])).rows as { t: string | null }[], 'a row').t;
  if (other || exists) {
    const as = other ? ` as the partition ${other.bound}` : '';
    throw new TributaryError(
      'config_invalid',
      `master env ${master.name}: table ${table} already exists${as}, so it cannot become ${release}'s partition`,
      { env: master.name, table },
    );
  }
}

/**
 * Step 3 for one entity: its new partition attached, then its count and checksum must equal those of the
 * staging rows promoted (the decisions' patches applied there, the rows not promoted left out, in staging's
 * snapshot); else nothing is promoted.
 */
export async function verifyAndAttach(s: Session, w: Work): Promise<PromotedTable> {
  const { m, master, release } = s;
  s.at.table = w.partQ;
  s.progress?.('verify', { table: w.e.table });
  await m(`alter table ${w.parent} attach partition ${w.partQ} for values in (${literal(release)})`);
  const mcols = (await m(COLUMNS_SQL, [w.partQ])).rows as TableColumn[];
  const got = firstRow((await m(checksumSql(mcols, master.schema, w.part, 'true'))).rows as TableChecksum[], `the checksum of ${w.partQ}`);
  s.at.env = s.staging;
  const want = await stagingChecksum(s, w);
  s.at.env = master;
  if (got.rows !== want.rows || got.checksum !== want.checksum) {
    throw new TributaryError(
      'database',
      `master env ${master.name}, table ${w.partQ}: after promoting, ${got.rows} row(s) with checksum ${got.checksum}, ` +
        `but ${release}'s rows to promote from staging are ${want.rows} with checksum ${want.checksum}; nothing was promoted`,
      { env: master.name, table: w.partQ },
    );
  }
  return {
    entity: w.e.name,
    table: w.e.table,
    partition: w.part,
    rows: got.rows,
    checksum: got.checksum,
    skipped: w.skipped.size,
    autoResolved: w.autoCount,
  };
}

/** The count and checksum of the release's staging rows as promoted: patched as in master, skipped ones left out. */
async function stagingChecksum(s: Session, w: Work): Promise<TableChecksum> {
  const scols = (await s.source.query<TableColumn>(COLUMNS_SQL, [w.staging])).rows;
  const pk = ident(w.e.primaryKey);
  const res = await s.source.query<TableChecksum>(
    checksumOfQuerySql(
      scols,
      `select x.* from ${w.staging} s
               left join unnest($1::text[], $2::jsonb[]) as p(pk, patch) on p.pk = s.${pk}::text
               cross join lateral jsonb_populate_record(s, coalesce(p.patch, '{}'::jsonb)) as x
              where s.${ident(s.rel)} = $3 and not (s.${pk}::text = any($4::text[]))`,
    ),
    [[...w.patches.keys()], [...w.patches.values()].map((v) => JSON.stringify(v)), s.release, [...w.skipped]],
  );
  return firstRow(res.rows, `the checksum of ${w.staging}`);
}
