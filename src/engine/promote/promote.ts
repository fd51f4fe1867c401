import crypto from 'node:crypto';
import os from 'node:os';
import type { Knex } from 'knex';
import type pg from 'pg';
import { pgClient } from '../../db/pg.js';
import { type Config, type EntitySpec, type EnvSpec, envByRole, releaseOrThrow } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { cellsObjectSql, copyRows } from '../kernel/copy.js';
import { ensureUserTypes, userTypesOf } from '../kernel/types.js';
import { failpoint } from '../kernel/failpoints.js';
import { checksumOfQuerySql, checksumSql, COLUMNS_SQL, type TableColumn, textSettingsSql } from '../kernel/checksum.js';
import { type ConflictDetail, type ConflictRow, type CrossReleaseInfo, type VersionView, CROSS_RELEASE, openPromoteRunId, PROMOTE_CODE_PREFIX, renameValues, type Decision } from '../review/index.js';
import { envError, type Actor, type Ctx } from '../kernel/context.js';
import { childEntities, displayValue, nonPayloadColumns, identityKeys } from '../kernel/entities.js';
import { partitionName } from '../kernel/master.js';
import { passGate, transition } from '../kernel/lifecycle.js';
import { ident, literal, qualified } from '../kernel/sql.js';
import { freshKeys, keyFloor, maxIntegerKeySql } from '../kernel/freshKeys.js';
import { conflictPriority, featurePriority, type ConflictPriority } from '../kernel/priority.js';

/**
 * Promote: a release's rows in staging into the cumulative master, one LIST partition per release.
 *
 * Everything on master happens in one transaction on a dedicated connection (serialised with other
 * promotions by an advisory lock): per entity, parents first, the release's old partition is detached
 * and dropped, a new table is created like the partitioned parent and filled from staging with COPY.
 * Then, parents first, the release's rows are compared with master's rows of every other release on
 * the primary key and on each natural key (PostgreSQL cannot enforce uniqueness across partitions):
 *   - identical data (tags and ignored columns aside; the primary key counts): `exact-duplicate`, the
 *     release's copy is not promoted (skipped, reported, audited; its children keep resolving, to the
 *     identical row of the earlier release, as the keys are the same);
 *   - differing data: a `cross-release` conflict in the review queue (a `promote` run holds them), and
 *     the promotion is refused until it is decided. A decision is applied on the next promote while
 *     both rows are unchanged (see planCrossRelease in ./crossRelease.ts for what each one does).
 * Children are never silently orphaned: children in the release of a row that is not promoted point at
 * master's row (keep 1), children of a row given a new key follow it (keep both), and a decision that
 * would leave rows of any release pointing at nothing (keep 2 under another key, delete both) is
 * refused, at decision time and again here, where the conflict is opened anew with the reason.
 * Before commit, per table, the row count and checksum of the new partition must equal those of the
 * staging rows promoted (the same transformations applied there, in one snapshot). Any failure rolls
 * master back and names the env and table.
 */
export interface PromotedTable {
  entity: string;
  table: string;
  partition: string;
  rows: number;
  checksum: string;
  /** Staging rows of the release not promoted (exact duplicates, keep 1, delete both). */
  skipped: number;
  autoResolved: number;
}

export interface AutoResolvedItem {
  entity: string;
  /** The shared identity, e.g. `email=a@x`. */
  key: string;
  pk: string;
  /** The earlier release whose identical row master keeps. */
  release: string;
  rule: 'exact-duplicate';
}

export interface AppliedDecision {
  code: string;
  entity: string;
  key: string;
  action: Decision['action'];
  effect: string;
}

export interface PromoteResult {
  release: string;
  env: string;
  /** The promote run whose decisions were applied (null when there were no cross-release conflicts). */
  runId: number | null;
  tables: PromotedTable[];
  autoResolved: { total: number; items: AutoResolvedItem[] };
  decisions: AppliedDecision[];
  /** Master rows of earlier releases deleted by decisions (keep 2, delete both). */
  replaced: { entity: string; release: string; pk: string }[];
  ms: number;
}

type Progress = (step: string, info?: Record<string, unknown>) => void;

interface Column {
  name: string;
  type: string;
  notNull: boolean;
}

interface Work {
  e: EntitySpec;
  parent: string;
  part: string;
  partQ: string;
  staging: string;
  columns: Column[];
  skipped: Set<string>;
  /** staging pk → new column values (text), as applied to the new partition. */
  patches: Map<string, Record<string, string>>;
  /** new pk → staging pk, for rows given a new key. */
  pkOrig: Map<string, string>;
  autoResolved: AutoResolvedItem[];
  autoCount: number;
  decisions: AppliedDecision[];
  freshKey?: (pk: string, owner: string) => string;
}

interface Pair {
  spk: string;
  mpk: string;
  mrel: string;
  shash: string;
  mhash: string;
  keys: string[];
}

interface Known extends ConflictRow {
  params: Decision | null;
}

/** A conflict to record (or keep open) when the promotion is refused. */
interface Blocking {
  entity: string;
  identity: string;
  keyLabel: string;
  priority: ConflictPriority;
  detail: ConflictDetail;
  /** An open conflict of the same rows (kept, its detail refreshed); else a new one is created. */
  existing?: Known;
}

const SHAPE_SQL = `select a.attname as name, format_type(a.atttypid, a.atttypmod) as type, a.attnotnull as "notNull"
    from pg_attribute a where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped order by a.attnum`;

const PROMOTE_LOCK = 'tributary:promote';
const SAMPLE = 100;

/** Thrown inside master's transaction when conflicts are open: rolls it back, then they are recorded. */
class Refused {
  constructor(
    readonly blocking: Blocking[],
    readonly issues: string[],
    readonly detected: Set<string>,
  ) {}
}

export async function promoteRelease(ctx: Ctx, release: string, opts: { actor: Actor; progress?: Progress }): Promise<PromoteResult> {
  releaseOrThrow(ctx.config, release);
  const started = performance.now();
  await passGate(ctx.db.control, release, 'promote', opts.actor);
  const staging = envByRole(ctx.config, 'staging');
  const master = envByRole(ctx.config, 'master');
  if (!staging) throw new TributaryError('config_invalid', `${ctx.config.file}: environments: no env has role: staging, so there is nothing to promote ${release} from`);
  if (!master) throw new TributaryError('config_invalid', `${ctx.config.file}: environments: no env has role: master, so there is nowhere to promote ${release} to`);
  const rel = ctx.config.tags.release;

  // what reviewers decided so far, latest conflict per pair of rows
  const known = (await ctx.db.control('conflicts as c')
    .leftJoin('decisions as d', 'd.conflict_id', 'c.id')
    .where({ 'c.release': release, 'c.kind': CROSS_RELEASE })
    .orderBy('c.id')
    .select('c.*', 'd.params')) as Known[];
  const latest = new Map<string, Known>();
  const standingDelete = new Map<string, Known>();
  for (const k of known) {
    latest.set(`${k.entity}\u0000${k.identity}`, k);
    if (k.status === 'decided' && k.params?.action === 'delete-both') standingDelete.set(`${k.entity}\u0000${k.detail.crossRelease!.stagingPk}`, k);
  }

  const target = pgClient(ctx.db.envParams(master) as pg.ClientConfig);
  const source = pgClient(ctx.db.envParams(staging) as pg.ClientConfig);
  target.on('error', () => undefined);
  source.on('error', () => undefined);
  const works: Work[] = [];
  const replaced: PromoteResult['replaced'] = [];
  const tables: PromotedTable[] = [];
  let current = '';
  let env: EnvSpec = master;
  const m = (sql: string, params?: unknown[]) => target.query(sql, params);
  try {
    try {
      await target.connect();
    } catch (err) {
      throw envError(ctx, master, err);
    }
    env = staging;
    try {
      await source.connect();
    } catch (err) {
      throw envError(ctx, staging, err);
    }
    // both ends of the COPY read and write text in the same formats; staging is read in one snapshot
    await source.query('begin isolation level repeatable read read only');
    await source.query(textSettingsSql());
    env = master;
    await m('begin');
    await m(textSettingsSql());
    await m('select pg_advisory_xact_lock(hashtext($1))', [PROMOTE_LOCK]);
    if (master.schema) await m(`create schema if not exists ${ident(master.schema)}`);

    // 1. per entity: the partitioned parent, the release's new partition filled from staging
    for (const e of ctx.config.entities) {
      env = staging;
      current = qualified(staging.schema, e.table);
      const columns = (await source.query<Column>(SHAPE_SQL, [current])).rows;
      if (columns.length === 0) {
        throw new TributaryError('gate_state', `staging env ${staging.name} has no table ${current}: load ${release} into staging first (tributary load ${release})`, { env: staging.name, table: current });
      }
      for (const col of [e.primaryKey, rel]) {
        if (!columns.some((c) => c.name === col)) throw new TributaryError('config_invalid', `staging table ${current} has no column ${col} (entity ${e.name}'s ${col === rel ? 'release tag' : 'primary key'})`, { env: staging.name, table: current });
      }
      env = master;
      const parent = qualified(master.schema, e.table);
      current = parent;
      // the enum, domain and composite types staging's table uses, created in master if it lacks them
      await ensureUserTypes(target, await userTypesOf(source, qualified(staging.schema, e.table)), parent);
      await ensureParent(m, ctx.config.file, master, e, columns, rel);
      await ensureIndexes(m, master, e, columns);
      const part = partitionName(e.table, release);
      const partQ = qualified(master.schema, part);
      await replacePartition(m, parent, master, part, release);
      current = partQ;
      opts.progress?.('copy', { table: e.table });
      await m(`create table ${partQ} (like ${parent} including defaults including constraints)`);
      const list = columns.map((c) => ident(c.name)).join(', ');
      await copyRows(source, target, {
        failpoint: 'promote.copy',
        select: `select ${list} from ${qualified(staging.schema, e.table)} where ${ident(rel)} = ${literal(release)}`,
        table: partQ,
        columns: columns.map((c) => c.name),
      });
      works.push({ e, parent, part, partQ, staging: qualified(staging.schema, e.table), columns, skipped: new Set(), patches: new Map(), pkOrig: new Map(), autoResolved: [], autoCount: 0, decisions: [] });
    }

    // 2. parents first: detect against the other releases, apply the decisions, queue the rest
    const byEntity = new Map(works.map((w) => [w.e.name, w]));
    const blocking: Blocking[] = [];
    const issues: string[] = [];
    const detected = new Set<string>();
    for (const w of works) {
      const { e } = w;
      current = w.partQ;
      opts.progress?.('detect', { entity: e.name });
      const excl = nonPayloadColumns(ctx.config, e);
      const pk = ident(e.primaryKey);
      const pairs = new Map<string, Pair>();
      const payload = w.columns.filter((c) => !excl.includes(c.name));
      for (const key of identityKeys(e)) {
        const on = key.columns.map((c) => `m.${ident(c)} = n.${ident(c)}`).join(' and ');
        const res = await m(
          `select n.${pk}::text as spk, m.${pk}::text as mpk, m.${ident(rel)}::text as mrel,
                  ${payloadHashSql('n', payload)} as shash, ${payloadHashSql('m', payload)} as mhash
             from ${w.partQ} n join ${w.parent} m on ${on} and m.${ident(rel)} <> $1`,
          [release],
        );
        for (const r of res.rows as Omit<Pair, 'keys'>[]) {
          const id = `${r.spk}|${r.mrel}|${r.mpk}`;
          const p = pairs.get(id) ?? { ...r, keys: [] };
          p.keys.push(key.label);
          pairs.set(id, p);
        }
      }
      const bySpk = new Map<string, Pair[]>();
      for (const p of [...pairs.values()].sort((a, b) => cmp(a.spk, b.spk) || cmp(a.mrel, b.mrel) || cmp(a.mpk, b.mpk))) {
        const list = bySpk.get(p.spk) ?? [];
        list.push(p);
        bySpk.set(p.spk, list);
      }
      // the rows of the pairs that differ (for the cards, and renames)
      const differing = [...pairs.values()].filter((p) => p.shash !== p.mhash && !bySpk.get(p.spk)!.some((q) => q.shash === q.mhash));
      const sdata = new Map<string, Record<string, unknown>>();
      const mdata = new Map<string, Record<string, unknown>>();
      if (differing.length > 0) {
        const s = await m(`select ${pk}::text as pk, ${cellsObjectSql('n', w.columns)} as data from ${w.partQ} n where ${pk}::text = any($1::text[])`, [[...new Set(differing.map((p) => p.spk))]]);
        for (const r of s.rows) sdata.set(r.pk, r.data);
        const t = await m(
          `select m.${pk}::text as pk, m.${ident(rel)}::text as rel, ${cellsObjectSql('m', w.columns)} as data
             from ${w.parent} m join unnest($1::text[], $2::text[]) as u(pk, rel) on m.${pk}::text = u.pk and m.${ident(rel)}::text = u.rel`,
          [differing.map((p) => p.mpk), differing.map((p) => p.mrel)],
        );
        for (const r of t.rows) mdata.set(`${r.rel}|${r.pk}`, r.data);
      }
      const mapping = new Map<string, string>();
      const keyLabel = (p: Pair, data: Record<string, unknown>) => {
        const k = identityKeys(e).find((x) => x.label === p.keys[0])!;
        return k.columns.map((c) => `${c}=${displayValue(data[c])}`).join(', ');
      };
      const conflictFor = async (p: Pair, why?: string, existing?: Known): Promise<Blocking> => {
        const s = sdata.get(p.spk)!;
        const o = mdata.get(`${p.mrel}|${p.mpk}`)!;
        const skip = new Set(excl);
        const attrs = w.columns.map((c) => c.name).filter((c) => !skip.has(c) && displayValue(s[c]) !== displayValue(o[c]));
        const show = (d: Record<string, unknown>) => `${attrs.slice(0, 4).map((a) => `${a}=${displayValue(d[a])}`).join(', ')}${attrs.length > 4 ? `, … (${attrs.length} attributes differ)` : ''}`;
        const label = keyLabel(p, s);
        const children = await childCounts(m, ctx.config, byEntity, e, p);
        const info: CrossReleaseInfo = { release, masterRelease: p.mrel, stagingPk: p.spk, masterPk: p.mpk, keys: p.keys, stagingHash: p.shash, masterHash: p.mhash };
        const version = (no: number, envName: string, pkv: string, r: string, d: Record<string, unknown>, n: number): VersionView => ({
          no,
          envs: [envName],
          pks: [pkv],
          feature: (d[ctx.config.tags.feature] as string | null) ?? null,
          features: null,
          created_by: (d[ctx.config.tags.createdBy] as string | null) ?? null,
          created_at: d[ctx.config.tags.createdAt] == null ? null : String(d[ctx.config.tags.createdAt]),
          ts: d[e.timestamp] == null ? null : String(d[e.timestamp]),
          data: d,
          children: n,
          release: r,
        });
        const detail: ConflictDetail = {
          reason: `${e.name} ${label}: ${p.mrel} in master has ${show(o)}, ${release} has ${show(s)}${why ? ` (${why})` : ''}`,
          suggestion: 'none',
          differing: attrs,
          versions: [version(1, 'master', p.mpk, p.mrel, o, children.master), version(2, 'staging', p.spk, release, s, children.release)],
          crossRelease: info,
        };
        return { entity: e.name, identity: `${p.spk}|${p.mrel}|${p.mpk}`, keyLabel: label, priority: pairPriority(ctx.config, release, p, s, o), detail, ...(existing ? { existing } : {}) };
      };

      for (const [spk, list] of bySpk) {
        const same = list.find((p) => p.shash === p.mhash);
        if (same) {
          // an identical payload (the key, tags and timestamp aside): master's row stays, the release's children follow it
          w.skipped.add(spk);
          if (same.mpk !== spk) mapping.set(spk, same.mpk);
          w.autoCount += 1;
          if (w.autoResolved.length < SAMPLE) {
            const row = (await m(`select ${cellsObjectSql('n', w.columns)} as data from ${w.partQ} n where ${pk}::text = $1`, [spk])).rows[0].data as Record<string, unknown>;
            w.autoResolved.push({ entity: e.name, key: keyLabel(same, row), pk: spk, release: same.mrel, rule: 'exact-duplicate' });
          }
          continue;
        }
        // each differing pair: a decision that still applies, or a conflict to decide
        const decided: { p: Pair; k: Known; d: Decision }[] = [];
        let blocked = false;
        for (const p of list) {
          const identity = `${p.spk}|${p.mrel}|${p.mpk}`;
          detected.add(`${e.name}\u0000${identity}`);
          const k = latest.get(`${e.name}\u0000${identity}`);
          const unchanged = k && (await sameRows(m, w, excl, rel, p, k.detail.crossRelease));
          if (k && unchanged && k.status === 'decided' && k.params) decided.push({ p, k, d: k.params });
          else {
            blocked = true;
            if (k && k.status === 'open') blocking.push(await conflictFor(p, undefined, k));
            else blocking.push(await conflictFor(p, k ? `the rows changed since ${k.code} was decided` : undefined));
          }
        }
        if (blocked) continue;
        const notPromoted = decided.find((x) => (x.d.action === 'keep' && x.d.version === 1) || x.d.action === 'delete-both');
        const renames: Record<string, string> = {};
        let newPk = false;
        const applied: { x: (typeof decided)[number]; effect: string }[] = [];
        const inapplicable: { x: (typeof decided)[number]; why: string }[] = [];
        for (const x of decided) {
          const { p, d } = x;
          const samePk = p.spk === p.mpk;
          const s = sdata.get(p.spk)!;
          const o = mdata.get(`${p.mrel}|${p.mpk}`)!;
          if (d.action === 'keep' && d.version === 1) {
            if (!samePk && !mapping.has(spk) && !decided.some((y) => y.p.mpk === spk && y.d.action === 'keep' && y.d.version === 1)) mapping.set(spk, p.mpk);
            applied.push({ x, effect: `not promoted: ${p.mrel}'s row stays${samePk ? '' : `; ${release}'s children point at ${e.primaryKey} ${p.mpk}`}` });
          } else if (d.action === 'delete-both') {
            const mine = await countReferencing(m, ctx.config, byEntity, e, p.spk, 'release');
            const theirs = await countReferencing(m, ctx.config, byEntity, e, p.mpk, 'master');
            if (mine + theirs > 0) {
              inapplicable.push({ x, why: `${x.k.code}'s delete-both no longer applies: ${mine + theirs} row(s) now reference the two rows` });
              continue;
            }
            await deleteMaster(m, w, rel, p, replaced);
            applied.push({ x, effect: `neither kept: ${p.mrel}'s row deleted, ${release}'s not promoted` });
          } else if (notPromoted) {
            applied.push({ x, effect: `overridden by ${notPromoted.k.code} (${release}'s row is not promoted)` });
          } else if (d.action === 'keep') {
            if (!samePk) {
              const theirs = await countReferencing(m, ctx.config, byEntity, e, p.mpk, 'master');
              if (theirs > 0) {
                inapplicable.push({ x, why: `${x.k.code}'s keep 2 no longer applies: ${theirs} row(s) of earlier releases now reference ${p.mrel}'s ${e.primaryKey} ${p.mpk}` });
                continue;
              }
            }
            await deleteMaster(m, w, rel, p, replaced);
            applied.push({ x, effect: `promoted; ${p.mrel}'s row deleted from master` });
          } else if (d.action === 'keep-both') {
            Object.assign(renames, renameValues(ctx.config, e, release, s, o, d.rename?.[2]));
            if (samePk) newPk = true;
            applied.push({ x, effect: 'promoted, renamed' });
          }
        }
        for (const { x, why } of inapplicable) blocking.push(await conflictFor(x.p, why));
        if (inapplicable.length > 0) continue;
        if (notPromoted) {
          w.skipped.add(spk);
        } else if (newPk || Object.keys(renames).length > 0) {
          const patch: Record<string, string> = { ...renames };
          if (newPk) patch[e.primaryKey] = await freshPk(m, w, spk, release);
          const taken = await renameTaken(m, w, rel, release, spk, renames);
          if (taken) {
            for (const a of applied.filter((y) => y.x.d.action === 'keep-both')) blocking.push(await conflictFor(a.x.p, `${a.x.k.code}'s keep-both would give ${taken}; decide it again with --rename`));
            continue;
          }
          await patchRow(m, w, spk, patch);
          if (newPk) {
            mapping.set(spk, patch[e.primaryKey]!);
            w.pkOrig.set(patch[e.primaryKey]!, spk);
          }
          for (const a of applied) if (a.x.d.action === 'keep-both') a.effect = `promoted as ${Object.entries(patch).map(([c, v]) => `${c}=${v}`).join(', ')}`;
        }
        for (const a of applied) w.decisions.push({ code: a.x.k.code, entity: e.name, key: a.x.k.key_label, action: a.x.d.action, effect: a.effect });
      }

      // rows a delete-both decision keeps out although master's row is gone (while the row is unchanged)
      const standing = [...standingDelete.values()].filter((k) => k.entity === e.name && !bySpk.has(k.detail.crossRelease!.stagingPk));
      if (standing.length > 0) {
        const res = await m(
          `select ${pk}::text as pk, ${payloadHashSql('n', payload)} as h, ${LEGACY_HASH_SQL('n')} as legacy from ${w.partQ} n where ${pk}::text = any($2::text[])`,
          [excl, standing.map((k) => k.detail.crossRelease!.stagingPk)],
        );
        for (const r of res.rows as { pk: string; h: string; legacy: string }[]) {
          const k = standing.find((x) => x.detail.crossRelease!.stagingPk === r.pk)!;
          const stored = k.detail.crossRelease!.stagingHash;
          if (stored !== (isTextForm(stored) ? r.h : r.legacy)) continue;
          const refs = await countReferencing(m, ctx.config, byEntity, e, r.pk, 'release');
          if (refs > 0) {
            issues.push(`${k.code} (delete both) keeps ${release}'s ${e.name} ${r.pk} out of master, but ${refs} row(s) of ${release} now reference it: fix the data in staging (tributary load ${release}) or consolidate again`);
            continue;
          }
          w.skipped.add(r.pk);
          w.decisions.push({ code: k.code, entity: e.name, key: k.key_label, action: 'delete-both', effect: `not promoted (decided earlier; ${k.detail.crossRelease!.masterRelease}'s row is gone)` });
        }
      }

      if (w.skipped.size > 0) await m(`delete from ${w.partQ} where ${pk}::text = any($1::text[])`, [[...w.skipped]]);
      if (mapping.size > 0) await repoint(m, ctx.config, byEntity, e, mapping);
    }

    if (blocking.length > 0 || issues.length > 0) throw new Refused(blocking, issues, detected);

    // 3. verify every table against staging, attach the partitions
    for (const w of works) {
      current = w.partQ;
      opts.progress?.('verify', { table: w.e.table });
      await m(`alter table ${w.parent} attach partition ${w.partQ} for values in (${literal(release)})`);
      const mcols = (await m(COLUMNS_SQL, [w.partQ])).rows as TableColumn[];
      const got = (await m(checksumSql(mcols, master.schema, w.part, 'true'))).rows[0] as { rows: number; checksum: string };
      env = staging;
      const scols = (await source.query<TableColumn>(COLUMNS_SQL, [w.staging])).rows;
      const pk = ident(w.e.primaryKey);
      const want = (
        await source.query<{ rows: number; checksum: string }>(
          checksumOfQuerySql(
            scols,
            `select x.* from ${w.staging} s
               left join unnest($1::text[], $2::jsonb[]) as p(pk, patch) on p.pk = s.${pk}::text
               cross join lateral jsonb_populate_record(s, coalesce(p.patch, '{}'::jsonb)) as x
              where s.${ident(rel)} = $3 and not (s.${pk}::text = any($4::text[]))`,
          ),
          [[...w.patches.keys()], [...w.patches.values()].map((v) => JSON.stringify(v)), release, [...w.skipped]],
        )
      ).rows[0]!;
      env = master;
      if (got.rows !== want.rows || got.checksum !== want.checksum) {
        throw new TributaryError(
          'database',
          `master env ${master.name}, table ${w.partQ}: after promoting, ${got.rows} row(s) with checksum ${got.checksum}, but ${release}'s rows to promote from staging are ${want.rows} with checksum ${want.checksum}; nothing was promoted`,
          { env: master.name, table: w.partQ },
        );
      }
      tables.push({ entity: w.e.name, table: w.e.table, partition: w.part, rows: got.rows, checksum: got.checksum, skipped: w.skipped.size, autoResolved: w.autoCount });
    }
    current = '';
    await failpoint('promote.before-commit');
    await m('commit');
    await source.query('commit').catch(() => undefined);
    // master committed, the control database not yet: promoting again replaces the release's partitions
    await failpoint('promote.after-master-commit');
  } catch (err) {
    await target.query('rollback').catch(() => undefined);
    await source.query('rollback').catch(() => undefined);
    if (err instanceof Refused) {
      await target.end().catch(() => undefined);
      await source.end().catch(() => undefined);
      throw await refuse(ctx, release, opts.actor, err);
    }
    const message =
      err instanceof TributaryError
        ? err.message
        : `promoting ${release} into ${env.name}${current ? `, table ${current}` : ''} failed: ${redact((err as Error).message)}; nothing was promoted`;
    await recordAudit(ctx.db.control, { actor: opts.actor, action: 'promote.failed', release, details: { env: env.name, table: current, error: message } });
    if (err instanceof TributaryError) throw err;
    const named = envError(ctx, env, err);
    if (named instanceof TributaryError && named.code === 'env_unreachable') throw named;
    throw new TributaryError('database', message, { env: env.name, table: current });
  } finally {
    await target.end().catch(() => undefined);
    await source.end().catch(() => undefined);
  }

  const ms = Math.round(performance.now() - started);
  const autoItems = works.flatMap((w) => w.autoResolved);
  const autoTotal = works.reduce((n, w) => n + w.autoCount, 0);
  const decisions = works.flatMap((w) => w.decisions);
  const runId = await ctx.db.control.transaction(async (trx) => {
    await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [`${PROMOTE_LOCK}:${release}`]);
    const run = await openPromoteRunId(trx, release);
    const now = new Date();
    await trx('promotions').insert(
      works.map((w, i) => ({
        release,
        run_id: run,
        env: master.name,
        entity: w.e.name,
        table_name: w.e.table,
        partition_name: w.part,
        row_count: tables[i]!.rows,
        checksum: tables[i]!.checksum,
        skipped: w.skipped.size,
        auto_resolved_count: w.autoCount,
        auto_resolved: JSON.stringify(w.autoResolved),
        decisions: JSON.stringify(w.decisions),
        promoted_by: opts.actor,
        promoted_at: now,
      })),
    );
    let dropped: string[] = [];
    if (run) {
      // every conflict still open in the run no longer occurs (an open one would have refused the promotion)
      dropped = (await trx('conflicts').where({ run_id: run, status: 'open' }).del().returning('code')).map((r: { code: string }) => r.code);
      await trx('runs').where({ id: run }).update({ status: 'succeeded', finished_at: trx.fn.now(), counts: JSON.stringify({ tables: tables.length, autoResolved: autoTotal, decisions: decisions.length }) });
    }
    await transition(trx, release, 'promote');
    await recordAudit(trx, {
      actor: opts.actor,
      action: 'promote.finish',
      release,
      subject: master.name,
      details: { runId: run, ms, tables, autoResolved: { total: autoTotal, items: autoItems.slice(0, SAMPLE) }, decisions, replaced: replaced.slice(0, SAMPLE), replacedCount: replaced.length, ...(dropped.length ? { dropped } : {}) },
    });
    return run;
  });
  return { release, env: master.name, runId, tables, autoResolved: { total: autoTotal, items: autoItems }, decisions, replaced, ms };
}

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The hashes that tell whether two rows are the same record (and whether a decided pair is unchanged): the
 * compared columns' texts in their own types (kernel/copy.ts cellsObjectSql, under the transaction's text
 * settings), so equal exactly when docs/policy.md says two values are equal (a json keeps its whitespace,
 * key order and duplicate keys, -0 is not 0; a jsonb normalises). Marked `text:`, to tell them from the
 * hashes decisions recorded before (LEGACY_HASH_SQL).
 */
const TEXT_FORM = 'text:';

function payloadHashSql(alias: string, payload: readonly Column[]): string {
  return `'${TEXT_FORM}' || md5(${cellsObjectSql(alias, payload)}::text)`;
}

const isTextForm = (hash: string) => hash.startsWith(TEXT_FORM);

/**
 * The hash cross-release decisions recorded before promotion compared texts: md5 of the row's to_jsonb
 * without the columns left out of the comparison (`$1`). A decision that carries it still applies while
 * both rows give the same hash in that form (as it did before), so no decision is lost.
 */
const LEGACY_HASH_SQL = (alias: string) => `md5((to_jsonb(${alias}.*) - $1::text[])::text)`;

/**
 * Whether a decided pair's rows are those its decision was taken on: their hashes now equal those it
 * recorded, in the form it recorded them (text form; else the earlier to_jsonb form, computed here).
 */
async function sameRows(m: Query, w: Work, excl: string[], rel: string, p: Pair, x: CrossReleaseInfo | undefined): Promise<boolean> {
  if (!x) return false;
  if (isTextForm(x.stagingHash)) return x.stagingHash === p.shash && x.masterHash === p.mhash;
  const pk = ident(w.e.primaryKey);
  const res = await m(
    `select (select ${LEGACY_HASH_SQL('n')} from ${w.partQ} n where n.${pk}::text = $2) as shash,
            (select ${LEGACY_HASH_SQL('m')} from ${w.parent} m where m.${pk}::text = $3 and m.${ident(rel)}::text = $4) as mhash`,
    [excl, p.spk, p.mpk, p.mrel],
  );
  const legacy = res.rows[0] as { shash: string | null; mhash: string | null } | undefined;
  return legacy !== undefined && x.stagingHash === legacy.shash && x.masterHash === legacy.mhash;
}

type Query = (sql: string, params?: unknown[]) => Promise<pg.QueryResult>;

/**
 * The master table of an entity, partitioned by LIST on the release tag: created like the staging
 * table (primary key: the entity's key and the release); a plain table of earlier releases (as before
 * the first promotion) is converted in place, one partition per release; a partitioned one must have
 * the staging table's columns.
 */
async function ensureParent(m: Query, file: string, master: EnvSpec, e: EntitySpec, columns: Column[], rel: string): Promise<void> {
  const parent = qualified(master.schema, e.table);
  const kind = (await m('select c.relkind from pg_class c where c.oid = to_regclass($1)', [parent])).rows[0]?.relkind as string | undefined;
  const create = async () => {
    const cols = columns.map((c) => `${ident(c.name)} ${c.type}${c.notNull ? ' not null' : ''}`);
    await m(`create table ${parent} (${cols.join(', ')}, primary key (${ident(e.primaryKey)}, ${ident(rel)})) partition by list (${ident(rel)})`);
  };
  if (!kind) return create();
  if (kind !== 'p' && kind !== 'r') throw new TributaryError('config_invalid', `master env ${master.name}: ${parent} is not a table (relkind ${kind}); entity ${e.name} in ${file} needs it to be one`, { env: master.name, table: parent });
  const have = (await m(SHAPE_SQL, [parent])).rows as Column[];
  const want = new Map(columns.map((c) => [c.name, c.type]));
  const got = new Map(have.map((c) => [c.name, c.type]));
  const problems = [
    ...columns.filter((c) => !got.has(c.name)).map((c) => `${c.name} is missing`),
    ...have.filter((c) => !want.has(c.name)).map((c) => `${c.name} is not in staging`),
    ...columns.filter((c) => got.has(c.name) && got.get(c.name) !== c.type).map((c) => `${c.name} is ${got.get(c.name)} (staging: ${c.type})`),
  ];
  if (problems.length > 0) {
    throw new TributaryError('config_invalid', `master env ${master.name}, table ${parent}: its columns differ from staging's (${problems.join('; ')}): align master's table first (ALTER TABLE on the parent changes every partition)`, {
      env: master.name,
      table: parent,
    });
  }
  if (kind === 'p') {
    const p = (await m(
      `select p.partstrat as strat, array(select a.attname::text from unnest(p.partattrs::int2[]) with ordinality as k(attnum, ord)
                                        join pg_attribute a on a.attrelid = p.partrelid and a.attnum = k.attnum order by k.ord) as keys
         from pg_partitioned_table p where p.partrelid = to_regclass($1)`,
      [parent],
    )).rows[0] as { strat: string; keys: string[] };
    if (p.strat !== 'l' || p.keys.length !== 1 || p.keys[0] !== rel) {
      throw new TributaryError('config_invalid', `master env ${master.name}, table ${parent}: partitioned by ${p.strat === 'l' ? 'list' : p.strat === 'r' ? 'range' : 'hash'} (${p.keys.join(', ')}), but promotion needs list (${rel})`, { env: master.name, table: parent });
    }
    return;
  }
  // a plain table of earlier releases: convert it (in this transaction) into partitions, one per release
  const nulls = (await m(`select count(*)::int as n from ${parent} where ${ident(rel)} is null`)).rows[0].n as number;
  if (nulls > 0) throw new TributaryError('config_invalid', `master env ${master.name}, table ${parent}: ${nulls} row(s) have no ${rel}; tag them with their release before the first promotion partitions the table`, { env: master.name, table: parent });
  const legacy = `${e.table}__tributary_unpartitioned`;
  await m(`alter table ${parent} rename to ${ident(legacy)}`);
  const legacyQ = qualified(master.schema, legacy);
  const pkeys = (await m(`select conname from pg_constraint where conrelid = to_regclass($1) and contype = 'p'`, [legacyQ])).rows as { conname: string }[];
  for (const c of pkeys) await m(`alter table ${legacyQ} drop constraint ${ident(c.conname)}`);
  await create();
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
  const exists = (await m('select to_regclass($1)::text as t', [qualified(master.schema, part)])).rows[0].t as string | null;
  if (other || exists) {
    throw new TributaryError('config_invalid', `master env ${master.name}: table ${qualified(master.schema, part)} already exists${other ? ` as the partition ${other.bound}` : ''}, so it cannot become ${release}'s partition`, {
      env: master.name,
      table: qualified(master.schema, part),
    });
  }
}

/** A cross-release conflict's priority: P1 when the release's row or master's is of a critical feature, each in its own release's plan. */
function pairPriority(config: Config, release: string, p: Pair, s: Record<string, unknown>, o: Record<string, unknown>): ConflictPriority {
  return conflictPriority([featurePriority(config, release, s[config.tags.feature]), featurePriority(config, p.mrel, o[config.tags.feature])]);
}

/** Rows referencing `pk` of entity `e`: in the release's new partitions, or in master's other releases. */
async function countReferencing(m: Query, config: Config, works: Map<string, Work>, e: EntitySpec, pk: string, where: 'release' | 'master'): Promise<number> {
  let n = 0;
  for (const { e: child, column } of childEntities(config, e.name)) {
    const w = works.get(child.name)!;
    const res = await m(`select count(*)::int as n from ${where === 'release' ? w.partQ : w.parent} where ${ident(column)}::text = $1`, [pk]);
    n += res.rows[0].n as number;
  }
  return n;
}

async function childCounts(m: Query, config: Config, works: Map<string, Work>, e: EntitySpec, p: Pair): Promise<{ master: number; release: number }> {
  return { master: await countReferencing(m, config, works, e, p.mpk, 'master'), release: await countReferencing(m, config, works, e, p.spk, 'release') };
}

async function deleteMaster(m: Query, w: Work, rel: string, p: Pair, replaced: PromoteResult['replaced']): Promise<void> {
  const res = await m(`delete from ${w.parent} where ${ident(w.e.primaryKey)}::text = $1 and ${ident(rel)} = $2`, [p.mpk, p.mrel]);
  if ((res.rowCount ?? 0) > 0) replaced.push({ entity: w.e.name, release: p.mrel, pk: p.mpk });
}

/** A primary key for the release's row that no row of any release has (keep both on a shared key): kernel/freshKeys.ts. */
async function freshPk(m: Query, w: Work, spk: string, release: string): Promise<string> {
  const pk = `${ident(w.e.primaryKey)}::text`;
  if (!w.freshKey) {
    const res = await m(`select greatest(${maxIntegerKeySql(pk, w.parent)}, ${maxIntegerKeySql(pk, w.partQ)})::text as m`);
    w.freshKey = freshKeys(keyFloor(res.rows[0].m as string | null));
  }
  return w.freshKey(spk, release);
}

/** The first renamed value some other row already has, described; else null. */
async function renameTaken(m: Query, w: Work, rel: string, release: string, spk: string, renames: Record<string, string>): Promise<string | null> {
  const pk = ident(w.e.primaryKey);
  for (const [col, value] of Object.entries(renames)) {
    const res = await m(
      `(select ${pk}::text as pk, ${ident(rel)}::text as rel from ${w.parent} where ${ident(col)}::text = $1 limit 1)
       union all (select ${pk}::text, $3 from ${w.partQ} where ${ident(col)}::text = $1 and ${pk}::text <> $2 limit 1)`,
      [value, spk, release],
    );
    const r = res.rows[0] as { pk: string; rel: string } | undefined;
    if (r) return `${w.e.name} ${col}=${value}, which ${w.e.primaryKey} ${r.pk} of ${r.rel} already has`;
  }
  return null;
}

function typeOf(w: Work, col: string): string {
  return w.columns.find((c) => c.name === col)!.type;
}

/** Sets columns of one release row (by its staging key), here and in the staging-side checksum. */
async function patchRow(m: Query, w: Work, spk: string, patch: Record<string, string>): Promise<void> {
  const cols = w.columns.map((c) => ident(c.name)).join(', ');
  await m(
    `update ${w.partQ} t set (${cols}) = (select ${w.columns.map((c) => `x.${ident(c.name)}`).join(', ')} from jsonb_populate_record(t, $1::jsonb) as x)
      where t.${ident(w.e.primaryKey)}::text = $2`,
    [JSON.stringify(patch), spk],
  );
  w.patches.set(spk, { ...(w.patches.get(spk) ?? {}), ...patch });
}

/** Children in the release of rows whose key changed (or that master's row stands in for) follow them. */
async function repoint(m: Query, config: Config, works: Map<string, Work>, e: EntitySpec, mapping: Map<string, string>): Promise<void> {
  for (const { e: child, column } of childEntities(config, e.name)) {
    const w = works.get(child.name)!;
    const res = await m(
      `update ${w.partQ} c set ${ident(column)} = u.new::${typeOf(w, column)} from unnest($1::text[], $2::text[]) as u(old, new)
        where c.${ident(column)}::text = u.old returning c.${ident(child.primaryKey)}::text as pk, u.new as nv`,
      [[...mapping.keys()], [...mapping.values()]],
    );
    for (const r of res.rows as { pk: string; nv: string }[]) {
      const orig = w.pkOrig.get(r.pk) ?? r.pk;
      w.patches.set(orig, { ...(w.patches.get(orig) ?? {}), [column]: r.nv });
    }
  }
}

/** Records the conflicts that refused the promotion (in the release's open promote run) and says what to do. */
async function refuse(ctx: Ctx, release: string, actor: Actor, r: Refused): Promise<TributaryError> {
  const k: Knex = ctx.db.control;
  const { open, created, dropped } = await k.transaction(async (trx) => {
    await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [`${PROMOTE_LOCK}:${release}`]);
    let run = await openPromoteRunId(trx, release);
    const fresh = r.blocking.filter((b) => !b.existing || b.existing.run_id !== run);
    if (!run && r.blocking.length > 0) {
      const [row] = await trx('runs').insert({ release, kind: 'promote', status: 'open', started_by: actor, pid: process.pid, host: os.hostname() }).returning('id');
      run = Number((row as { id: number }).id);
    }
    const created: string[] = [];
    if (fresh.length > 0) {
      const max = await trx.raw<{ rows: { n: number | null }[] }>(
        `select max(substring(code from ${PROMOTE_CODE_PREFIX.length + 1})::int) as n from conflicts where release = ? and code like ?`,
        [release, `${PROMOTE_CODE_PREFIX}%`],
      );
      let n = Number(max.rows[0]?.n ?? 0);
      for (const b of fresh) {
        n += 1;
        const code = `${PROMOTE_CODE_PREFIX}${String(n).padStart(3, '0')}`;
        created.push(code);
        await trx('conflicts').insert({ release, run_id: run, code, entity: b.entity, identity: b.identity, key_label: b.keyLabel, kind: CROSS_RELEASE, priority: b.priority, detail: JSON.stringify(b.detail) });
      }
    }
    for (const b of r.blocking.filter((x) => x.existing && x.existing.run_id === run)) {
      await trx('conflicts').where({ id: b.existing!.id }).update({ detail: JSON.stringify(b.detail), key_label: b.keyLabel, priority: b.priority });
    }
    let dropped: string[] = [];
    if (run) {
      const stale = ((await trx('conflicts').where({ run_id: run, status: 'open' }).select('id', 'code', 'entity', 'identity')) as { id: number; code: string; entity: string; identity: string }[]).filter(
        (c) => !r.detected.has(`${c.entity}\u0000${c.identity}`),
      );
      if (stale.length > 0) await trx('conflicts').whereIn('id', stale.map((c) => c.id)).del();
      dropped = stale.map((c) => c.code);
    }
    const open = run ? ((await trx('conflicts').where({ run_id: run, status: 'open' }).orderBy(['priority', 'code'])) as ConflictRow[]) : [];
    await recordAudit(trx, {
      actor,
      action: 'promote.refused',
      release,
      details: { runId: run, open: open.map((c) => c.code), created, ...(dropped.length ? { dropped } : {}), issues: r.issues },
    });
    return { open, created, dropped };
  });
  const lines = open.slice(0, 20).map((c) => `  ${c.code} ${c.priority}: ${c.detail.reason}`);
  if (open.length > 20) lines.push(`  … and ${open.length - 20} more`);
  const parts = [];
  if (open.length > 0) {
    parts.push(
      `promotion of ${release} refused: ${open.length} cross-release conflict(s) with master's earlier releases are open:\n${lines.join('\n')}\n` +
        `Decide them (tributary conflicts ${release}; tributary decide ${open[0]!.code} --keep 1|2 | --keep-both [--rename 2.<column>=<value>] | --delete --rationale "…"), then promote again.`,
    );
  }
  if (r.issues.length > 0) parts.push(`${open.length > 0 ? '' : `promotion of ${release} refused: `}${r.issues.join('\n')}`);
  return new TributaryError('gate_conflicts', parts.join('\n'), { release, conflicts: open.map((c) => ({ code: c.code, priority: c.priority, entity: c.entity, key: c.key_label, reason: c.detail.reason })), created, dropped, issues: r.issues });
}

/** The fingerprint of what a release's latest promotion put in master: sha256 over (entity, rows, checksum). */
export async function promotedFingerprint(ctx: Ctx, release: string): Promise<string | null> {
  const rows = (await ctx.db.control('promotions')
    .where({ release })
    .where('promoted_at', ctx.db.control('promotions').where({ release }).max('promoted_at'))
    .orderBy('entity')
    .select('entity', 'row_count', 'checksum')) as { entity: string; row_count: number | string; checksum: string }[];
  if (rows.length === 0) return null;
  const h = crypto.createHash('sha256');
  for (const r of rows) h.update(`${r.entity}\t${Number(r.row_count)}\t${r.checksum}\n`);
  return h.digest('hex');
}
