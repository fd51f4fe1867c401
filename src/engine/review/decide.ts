import type { Knex } from 'knex';
import type { EntitySpec } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { recordAudit } from '../kernel/audit.js';
import { failpoint } from '../kernel/failpoints.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { getConflict } from './queue.js';
import { isAutoCode, reopenAutoResolution } from './autoResolved.js';
import type { ConflictRow, BlastRadius, Decision, DecisionOutcome, Dependent, Plan, VersionView } from './types.js';
import { must } from '../kernel/must.js';
import type { DecisionsRow } from '../../db/rows.js';
import { CROSS_RELEASE, planCrossRelease, validateCrossRelease } from './crossRelease.js';
import { masterKeys } from '../kernel/master.js';
import { materializeRefs, rawRefs, refsObject, runTables, type RunTables } from '../kernel/workArea.js';
import { isValidated, releaseState, transition } from '../kernel/lifecycle.js';
import { literal } from '../kernel/sql.js';
import { describeDecision } from './describe.js';
import { childEntities, renderTemplate } from '../kernel/entities.js';
import { requireRationale } from '../kernel/rationale.js';
import { freshKeys, keyFloor, masterMaxKey, maxIntegerKeySql } from '../kernel/freshKeys.js';
import { startUndoLog, stopUndoLog } from './undoLog.js';
import { parentContradictions } from './targets.js';

/**
 * Human decisions on complex conflicts. Each needs a rationale and the decider's identity, shows its
 * blast radius before it is applied (planDecision), and is applied once only: the conflict row is
 * locked, and a second decider (another process, a Slack retry) finds it decided and is refused.
 */

export const VERSION_ACTIONS = ['keep', 'keep-both', 'merge', 'delete-both'] as const;
export const RECORD_ACTIONS = ['repoint', 'delete', 'waive'] as const;

interface RecordRef {
  env: string;
  pk: string;
  version: number;
  effPk: string;
}

function entityOf(ctx: Ctx, name: string): EntitySpec {
  return must(ctx.config.entities.find((e) => e.name === name), `entity ${name} in the config`);
}

async function recordsOf(k: Knex.Transaction, t: RunTables, entity: string, identity: string): Promise<RecordRef[]> {
  const res = await k.raw<{ rows: RecordRef[] }>(
    `select c.env, c.pk, c.version_no as version, coalesce(rk.new_pk, c.pk) as "effPk"
       from ${t.cmp} c left join ${t.rekey} rk on rk.entity = c.entity and rk.env = c.env and rk.pk = c.pk
      where c.entity = ? and c.identity = ? order by c.version_no, c.env_rank`,
    [entity, identity],
  );
  return res.rows;
}

/** Child result rows whose reference resolves to one of the given parent records (through their env). */
type EnvKey = { env: string; pk: string };

async function directChildren(
  ctx: Ctx,
  k: Knex.Transaction,
  t: RunTables,
  entity: string,
  recs: EnvKey[],
  finalPk?: string,
): Promise<Dependent[]> {
  const out: Dependent[] = [];
  for (const { e, column } of childEntities(ctx.config, entity)) {
    const col = literal(column);
    const res = await k.raw<{ rows: { pk: string; identity: string }[] }>(
      `select c.pk, c.identity from ${t.result} c
        where c.entity = ? and c.status <> 'deleted'
          and ((c.rep_env, ${rawRefs('c')}->>${col}) in (select * from unnest(?::text[], ?::text[]))
               or (?::text is not null and c.data->>${col} = ?::text))`,
      [e.name, recs.map((r) => r.env), recs.map((r) => r.pk), finalPk ?? null, finalPk ?? null],
    );
    out.push(...res.rows.map((r) => ({ entity: e.name, pk: r.pk, identity: r.identity })));
  }
  return out;
}

/** Every row that depends, directly or transitively, on the given records. */
async function allDependents(
  ctx: Ctx,
  k: Knex.Transaction,
  t: RunTables,
  entity: string,
  recs: EnvKey[],
  finalPk?: string,
): Promise<(Dependent & { identity: string })[]> {
  const seen = new Map<string, Dependent & { identity: string }>();
  let frontier = (await directChildren(ctx, k, t, entity, recs, finalPk)) as (Dependent & { identity: string })[];
  while (frontier.length > 0) {
    const next: (Dependent & { identity: string })[] = [];
    for (const d of frontier) {
      const key = `${d.entity}/${d.identity}`;
      if (seen.has(key)) continue;
      seen.set(key, d);
      const src = await k.raw<{ rows: { env: string; pk: string }[] }>(
        `select r.env, r.pk from ${t.records} r where r.entity = ? and r.identity = ?`,
        [d.entity, d.identity],
      );
      next.push(...((await directChildren(ctx, k, t, d.entity, src.rows, d.pk)) as (Dependent & { identity: string })[]));
    }
    frontier = next;
  }
  return [...seen.values()];
}

async function childCountFor(ctx: Ctx, k: Knex.Transaction, t: RunTables, entity: string, recs: EnvKey[]): Promise<number> {
  if (recs.length === 0) return 0;
  return (await directChildren(ctx, k, t, entity, recs)).length;
}

function validate(ctx: Ctx, c: ConflictRow, d: Decision): void {
  if (c.kind === CROSS_RELEASE) return validateCrossRelease(ctx.config, c, d);
  const isVersion = !!c.detail.versions;
  const allowed: readonly string[] = isVersion ? VERSION_ACTIONS : RECORD_ACTIONS;
  if (!allowed.includes(d.action)) {
    const message = `${c.code} is a ${c.kind} conflict: decide it with ${allowed.join(', ')} (not ${d.action})`;
    throw new TributaryError('decision_invalid', message, { code: c.code });
  }
  const versions = c.detail.versions ?? [];
  if (d.action === 'keep' && !versions.some((v) => v.no === d.version)) {
    const nos = versions.map((v) => v.no).join(', ');
    throw new TributaryError('decision_invalid', `${c.code} has versions ${nos}; there is no version ${d.version}`);
  }
  if (d.action === 'merge') validatePicks(c, versions, d.picks);
}

function validatePicks(c: ConflictRow, versions: VersionView[], picks: Record<string, number>): void {
  if (Object.keys(picks).length === 0) {
    throw new TributaryError('decision_invalid', `merge needs a pick per differing attribute (${(c.detail.differing ?? []).join(', ')})`);
  }
  for (const [attr, v] of Object.entries(picks)) {
    if (!versions.some((x) => x.no === v)) {
      throw new TributaryError('decision_invalid', `merge pick ${attr}=${v}: ${c.code} has no version ${v}`);
    }
    if (!(attr in (versions[0]?.data ?? {}))) {
      throw new TributaryError('decision_invalid', `merge pick ${attr}: ${c.entity} has no attribute "${attr}"`);
    }
  }
}

/** What every version decision works with: the work tables, the entity, its records and their versions. */
interface VersionScope {
  ctx: Ctx;
  k: Knex.Transaction;
  c: ConflictRow;
  t: RunTables;
  e: EntitySpec;
  recs: RecordRef[];
  versions: VersionView[];
  blast: BlastRadius;
  summary: string;
}

/** The representative record of version `no` (its first env's). */
function repOf(s: VersionScope, no: number): RecordRef {
  const v = must(s.versions.find((x) => x.no === no), `version ${no} of ${s.c.code}`);
  return must(s.recs.find((r) => r.version === no && r.env === v.envs[0]), `the record of version ${no} of ${s.c.code} in ${v.envs[0]}`);
}

/** A version's record data as SQL, its primary key set to the key it keeps. */
function recordData(s: VersionScope, no: number): { sql: string; bindings: Knex.RawBinding[] } {
  const rep = repOf(s, no);
  const { t, e, c } = s;
  const pkPath = literal(`{${e.primaryKey}}`);
  return {
    sql: `(select jsonb_set(o.data, ${pkPath}, work.key_value(o.data->${literal(e.primaryKey)}, ?))
             from ${t.records} o where o.entity = ? and o.env = ? and o.pk = ?)`,
    bindings: [rep.effPk, c.entity, rep.env, rep.pk],
  };
}

/** One version survives with the data of `dataSql`: the other records' keys map to it. */
async function keepOne(s: VersionScope, survivorNo: number, dataSql: string, bindings: Knex.RawBinding[]): Promise<() => Promise<void>> {
  const { ctx, k, c, t, e, recs, summary } = s;
  const rep = repOf(s, survivorNo);
  const moved = recs.filter((r) => r.pk !== rep.effPk);
  s.blast.rewritten = await childCountFor(ctx, k, t, c.entity, moved);
  return async () => {
    await k.raw(
      `update ${t.result} r set data = x.data, pk = ?, raw_refs = ${refsObject(e, 'x.data')}, status = 'final', rule = 'decision',
                reason = ?, rep_env = ?, rep_pk = ?
           from (select ${dataSql} as data) x
          where r.entity = ? and r.identity = ?`,
      [rep.effPk, summary, rep.env, rep.pk, ...bindings, c.entity, c.identity],
    );
    await deleteKeyMap(s);
    if (moved.length > 0) await mapKeys(s, rep.effPk, moved);
  };
}

/** The key map's entries of the conflict's records go: the decision writes them anew. */
async function deleteKeyMap(s: VersionScope): Promise<void> {
  await s.k.raw(`delete from ${s.t.keyMap} where entity = ? and (env, old_pk) in (select * from unnest(?::text[], ?::text[]))`, [
    s.c.entity,
    s.recs.map((r) => r.env),
    s.recs.map((r) => r.pk),
  ]);
}

/** The records `moved` now map to key `to`. */
async function mapKeys(s: VersionScope, to: string, moved: RecordRef[]): Promise<void> {
  const sql = `insert into ${s.t.keyMap} (entity, env, old_pk, new_pk)
               select ?, env, pk, ? from unnest(?::text[], ?::text[]) as m(env, pk)`;
  await s.k.raw(sql, [
    s.c.entity,
    to,
    moved.map((r) => r.env),
    moved.map((r) => r.pk),
  ]);
}

/** Merge: version 1's record with each picked attribute taken from its version. */
function planMerge(s: VersionScope, picks: Record<string, number>): Promise<() => Promise<void>> {
  const base = recordData(s, 1);
  const patch = Object.entries(picks).map(([attr, v]) => {
    const rep = repOf(s, v);
    return {
      sql: `(select jsonb_build_object(?::text, o.data->?) from ${s.t.records} o where o.entity = ? and o.env = ? and o.pk = ?)`,
      bindings: [attr, attr, s.c.entity, rep.env, rep.pk],
    };
  });
  const sql = [base.sql, ...patch.map((p) => p.sql)].join(' || ');
  return keepOne(s, 1, sql, [...base.bindings, ...patch.flatMap((p) => p.bindings)]);
}

interface KeptVersion {
  no: number;
  pk: string;
  values: Record<string, string>;
}

/** Keep both: each version keeps its key (or a fresh one when taken) and, past version 1, new natural keys. */
async function keepBothPlan(s: VersionScope, rename: Record<number, Record<string, string>> | undefined): Promise<KeptVersion[]> {
  const { ctx, k, c, t, e, versions } = s;
  const template = ctx.config.policy.renameTemplate;
  const nkCols = [...new Set(e.naturalKeys.flat())];
  const usedPks = new Set<string>();
  const maxPk = await k.raw<{ rows: { m: string | null }[] }>(
    `select greatest(${maxIntegerKeySql('pk', t.result, 'entity = :entity')},
                     ${maxIntegerKeySql('pk', t.records, 'entity = :entity')})::text as m`,
    { entity: c.entity },
  );
  const freshKey = freshKeys(keyFloor(maxPk.rows[0]?.m, await masterMaxKey(ctx, e)));
  const plan: KeptVersion[] = [];
  for (const v of versions) {
    const rep = repOf(s, v.no);
    let pk = rep.effPk;
    if (usedPks.has(pk)) pk = freshKey(pk, rep.env);
    usedPks.add(pk);
    const values: Record<string, string> = {};
    if (v.no !== 1) {
      for (const col of nkCols) {
        const given = rename?.[v.no]?.[col];
        const current = v.data[col];
        if (given !== undefined) values[col] = given;
        else if (current !== null && current !== undefined && versions.some((o) => o.no !== v.no && o.data[col] === current)) {
          values[col] = renderTemplate(template, String(current), rep.env, v.feature, v.no);
        }
      }
    }
    plan.push({ no: v.no, pk, values });
    if (v.no !== 1) s.blast.renamed.push({ version: v.no, values, pk });
  }
  return plan;
}

/** New natural keys must be unique among the entity's records and among themselves. */
async function checkNewKeys(s: VersionScope, plan: KeptVersion[]): Promise<void> {
  const seen = new Map<string, number>();
  for (const p of plan) {
    for (const [col, value] of Object.entries(p.values)) {
      const key = `${col}=${value}`;
      const other = seen.get(key);
      if (other !== undefined) {
        const message = `keep-both: versions ${other} and ${p.no} would both get ${key}; give distinct values`;
        throw new TributaryError('decision_invalid', message, { field: col });
      }
      seen.set(key, p.no);
      const taken = await s.k.raw<{ rows: { pk: string }[] }>(
        `select pk from ${s.t.result} where entity = ? and status <> 'deleted' and data->>? = ? limit 1`,
        [s.c.entity, col, value],
      );
      const holder = taken.rows[0];
      if (holder) {
        throw new TributaryError(
          'decision_invalid',
          `keep-both: ${s.c.entity} ${key} is already taken (by ${s.e.primaryKey} ${holder.pk}); give another value for version ${p.no}`,
          { field: col, value },
        );
      }
    }
  }
}

/** Writes one kept version as a result row of its own identity (version 1 keeps the conflict's). */
async function writeKeptVersion(s: VersionScope, p: KeptVersion): Promise<void> {
  const { k, c, t, e, recs, versions, summary } = s;
  const rep = repOf(s, p.no);
  const identity = p.no === 1 ? c.identity : `${c.identity}#${p.no}`;
  const patch = JSON.stringify(p.values);
  const sources = JSON.stringify(recs.filter((r) => r.version === p.no).map((r) => ({ env: r.env, pk: r.pk, version: p.no })));
  const data = `(select jsonb_set(o.data, ${literal(`{${e.primaryKey}}`)}, work.key_value(o.data->${literal(e.primaryKey)}, ?)) || ?::jsonb
                   from ${t.records} o where o.entity = ? and o.env = ? and o.pk = ?)`;
  const renamed = Object.entries(p.values).map(([kk, vv]) => `${kk} → ${vv}`).join(', ') || `${e.primaryKey} → ${p.pk}`;
  const reason = p.no === 1 ? summary : `${summary} (renamed: ${renamed})`;
  const feature = must(versions.find((v) => v.no === p.no), `version ${p.no} of ${c.code}`).feature;
  await k.raw(
    `insert into ${t.result} (entity, identity, pk, data, raw_refs, sources, rule, reason, conflict, status, rep_env, rep_pk, feature)
             select ?, ?, ?, x.data, ${refsObject(e, 'x.data')}, ?::jsonb, 'decision', ?, ?, 'final', ?, ?, ?
               from (select ${data} as data) x
             on conflict (entity, identity) do update set pk = excluded.pk, data = excluded.data, raw_refs = excluded.raw_refs,
               sources = excluded.sources, rule = excluded.rule, reason = excluded.reason, status = excluded.status,
               rep_env = excluded.rep_env, rep_pk = excluded.rep_pk`,
    [c.entity, identity, p.pk, sources, reason, c.code, rep.env, rep.pk, feature, p.pk, patch, c.entity, rep.env, rep.pk],
  );
  const mv = recs.filter((r) => r.version === p.no && r.pk !== p.pk);
  if (mv.length > 0) await mapKeys(s, p.pk, mv);
}

/** Keep both, renamed: the plan, its keys checked, and the rows it writes. */
async function planKeepBoth(s: VersionScope, rename: Record<number, Record<string, string>> | undefined): Promise<() => Promise<void>> {
  const plan = await keepBothPlan(s, rename);
  await checkNewKeys(s, plan);
  const keyOf = (version: number) => must(plan.find((p) => p.no === version), `the kept key of version ${version}`).pk;
  const moved = s.recs.filter((r) => r.pk !== keyOf(r.version));
  s.blast.rewritten = await childCountFor(s.ctx, s.k, s.t, s.c.entity, moved);
  return async () => {
    await deleteKeyMap(s);
    for (const p of plan) await writeKeptVersion(s, p);
  };
}

/** The version decision's own writes, by action. */
function planVersionAction(s: VersionScope, d: Decision): Promise<() => Promise<void>> {
  switch (d.action) {
    case 'keep': {
      const rd = recordData(s, d.version);
      return keepOne(s, d.version, rd.sql, rd.bindings);
    }
    case 'merge':
      return planMerge(s, d.picks);
    case 'keep-both':
      return planKeepBoth(s, d.rename);
    case 'delete-both':
      return planDelete(s.ctx, s.k, s.t, s.c, s.recs, d.cascade ?? false, s.blast, s.summary);
    default:
      throw new TributaryError('decision_invalid', `unsupported action ${d.action}`);
  }
}

/** After the writes: the kept rows' own references follow their env's key map, like every consolidated row's, and so do the children's. */
async function rematerialize(s: VersionScope): Promise<void> {
  const { ctx, k, c, t, e, recs } = s;
  const kept = await k.raw<{ rows: { identity: string }[] }>(
    `select identity from ${t.result} where entity = ? and (identity = ? or identity like ?)`,
    [c.entity, c.identity, `${c.identity}#%`],
  );
  await materializeRefs(k, t, e, { identities: kept.rows.map((r) => r.identity) });
  for (const child of childEntities(ctx.config, c.entity)) {
    await materializeRefs(k, t, child.e, { parent: c.entity, envs: recs.map((r) => r.env), pks: recs.map((r) => r.pk) });
  }
}

async function planVersionDecision(ctx: Ctx, k: Knex.Transaction, c: ConflictRow, d: Decision, summary: string): Promise<Plan> {
  const t = runTables(c.run_id);
  const e = entityOf(ctx, c.entity);
  const recs = await recordsOf(k, t, c.entity, c.identity);
  const versions = must(c.detail.versions, `the versions of ${c.code}`);
  const blast: BlastRadius = { rewritten: 0, removed: 0, renamed: [], dependents: [], dependentCount: 0 };
  const s: VersionScope = { ctx, k, c, t, e, recs, versions, blast, summary };
  const apply = await planVersionAction(s, d);
  return {
    blast,
    apply: async () => {
      await apply();
      await rematerialize(s);
    },
  };
}

async function planDelete(
  ctx: Ctx,
  k: Knex.Transaction,
  t: RunTables,
  c: ConflictRow,
  recs: { env: string; pk: string }[],
  cascade: boolean,
  blast: BlastRadius,
  summary: string,
): Promise<() => Promise<void>> {
  const current = await k.raw<{ rows: { pk: string }[] }>(`select pk from ${t.result} where entity = ? and identity = ?`, [
    c.entity,
    c.identity,
  ]);
  const deps = await allDependents(ctx, k, t, c.entity, recs, current.rows[0]?.pk);
  blast.dependentCount = deps.length;
  blast.dependents = deps.slice(0, 50).map((d) => ({ entity: d.entity, pk: d.pk }));
  blast.removed = 1 + (cascade ? deps.length : 0);
  if (deps.length > 0 && !cascade) {
    return async () => {
      throw new TributaryError(
        'decision_invalid',
        `${c.code}: ${deps.length} row(s) depend on it (${blast.dependents.slice(0, 5).map((d) => `${d.entity} ${d.pk}`).join(', ')}` +
          `${deps.length > 5 ? ', …' : ''}); delete with cascade, or choose another resolution`,
        { dependents: deps.length },
      );
    };
  }
  return async () => {
    await k.raw(`update ${t.result} set status = 'deleted', rule = 'decision', reason = ? where entity = ? and identity = ?`, [
      summary,
      c.entity,
      c.identity,
    ]);
    for (const d of deps) {
      await k.raw(`update ${t.result} set status = 'deleted', rule = 'decision', reason = ? where entity = ? and identity = ?`, [
        `${summary} (cascade from ${c.entity} ${c.key_label})`,
        d.entity,
        d.identity,
      ]);
    }
  };
}

/** Re-point: the parent must be consolidated or in master; the reference is pinned to it. */
async function planRepoint(ctx: Ctx, k: Knex.Transaction, c: ConflictRow, to: string, blast: BlastRadius, summary: string): Promise<Plan> {
  const t = runTables(c.run_id);
  const column = must(c.detail.column, `the reference column of ${c.code}`);
  const parent = must(c.detail.parent, `the parent entity of ${c.code}`);
  const found = await k.raw<{ rows: { pk: string }[] }>(`select pk from ${t.result} where entity = ? and pk = ? and status = 'final'`, [
    parent,
    to,
  ]);
  if (found.rows.length === 0 && !(await masterKeys(ctx, parent, [to])).has(to)) {
    const message = `re-point ${c.code}: ${parent} ${to} is neither in the consolidated ${parent} nor in master`;
    throw new TributaryError('decision_invalid', message, { field: column, value: to });
  }
  blast.rewritten = 1;
  const refs = refsObject(entityOf(ctx, c.entity), 'data');
  return {
    blast,
    apply: async () => {
      await k.raw(
        `update ${t.result} set status = 'final', rule = 'decision', reason = ?,
                    raw_refs = coalesce(raw_refs, ${refs}) || jsonb_build_object(?::text, ?::text),
                    data = jsonb_set(data, ?::text[], work.key_value(data->?, ?))
              where entity = ? and identity = ?`,
        [summary, `!${column}`, to, `{${column}}`, column, to, c.entity, c.identity],
      );
    },
  };
}

/** A decision on one record (also used for validation findings: src/engine/validate/validate.ts). */
export async function planRecordDecision(ctx: Ctx, k: Knex.Transaction, c: ConflictRow, d: Decision, summary: string): Promise<Plan> {
  const t = runTables(c.run_id);
  const blast: BlastRadius = { rewritten: 0, removed: 0, renamed: [], dependents: [], dependentCount: 0 };
  switch (d.action) {
    case 'waive':
      return {
        blast,
        apply: async () => {
          await k.raw(`update ${t.result} set status = 'final', rule = 'decision', reason = ? where entity = ? and identity = ?`, [
            summary,
            c.entity,
            c.identity,
          ]);
        },
      };
    case 'repoint':
      return planRepoint(ctx, k, c, d.to, blast, summary);
    case 'delete': {
      const src = await k.raw<{ rows: EnvKey[] }>(`select env, pk from ${t.records} where entity = ? and identity = ?`, [
        c.entity,
        c.identity,
      ]);
      return { blast, apply: await planDelete(ctx, k, t, c, src.rows, d.cascade ?? false, blast, summary) };
    }
    default:
      throw new TributaryError('decision_invalid', `unsupported action ${d.action}`);
  }
}

/** Cross-release conflicts (promote) are planned against master and staging, never the consolidation's work tables. */
function planFor(ctx: Ctx, trx: Knex.Transaction, c: ConflictRow, d: Decision, summary: string): Promise<Plan> {
  if (c.kind === CROSS_RELEASE) return planCrossRelease(ctx, c, d);
  return c.detail.versions ? planVersionDecision(ctx, trx, c, d, summary) : planRecordDecision(ctx, trx, c, d, summary);
}

/** The conflict, locked: an automatic resolution (A-…) not re-opened yet becomes a conflict of the same code, in this transaction. */
function lockedConflict(ctx: Ctx, trx: Knex.Transaction, release: string, code: string): Promise<ConflictRow> {
  return getConflict(ctx, release, code, trx, true).catch((err: unknown) => {
    const notOpenedYet = isAutoCode(code) && err instanceof TributaryError && err.code === 'unknown_conflict';
    if (notOpenedYet) return reopenAutoResolution(ctx, trx, release, code);
    throw err;
  });
}

async function withConflict<T>(
  ctx: Ctx,
  release: string,
  code: string,
  fn: (trx: Knex.Transaction, c: ConflictRow) => Promise<T>,
): Promise<T> {
  return ctx.db.control.transaction(async (trx) => fn(trx, await lockedConflict(ctx, trx, release, code)));
}

/** What a decision contradicts, said before and after it is taken: a re-pointed parent's relied-on columns. */
function warningsOf(ctx: Ctx, trx: Knex.Transaction, c: ConflictRow, d: Decision): Promise<string[]> {
  return d.action === 'repoint' && c.kind !== CROSS_RELEASE ? parentContradictions(ctx, c, d.to, trx) : Promise.resolve([]);
}

/** Carries a plan out of a transaction that must not commit. */
class PlanOnly {
  constructor(readonly outcome: DecisionOutcome) {}
}

/** The blast radius of a decision, without applying it (the transaction is rolled back). */
export async function planDecision(ctx: Ctx, release: string, code: string, d: Decision): Promise<DecisionOutcome> {
  try {
    await withConflict(ctx, release, code, async (trx, c) => {
      validate(ctx, c, d);
      const plan = await planFor(ctx, trx, c, d, '');
      const warnings = await warningsOf(ctx, trx, c, d);
      throw new PlanOnly({ conflict: c, decision: d, blast: plan.blast, applied: false, ...(warnings.length > 0 ? { warnings } : {}) });
    });
  } catch (err) {
    if (err instanceof PlanOnly) return err.outcome;
    throw err;
  }
  throw new TributaryError('internal', 'planDecision: no plan');
}

/** Who takes a decision, and why; `pattern` when it is one of a pattern decision's (review/patterns.ts). */
export interface DecidedBy {
  actor: Actor;
  rationale: string;
  pattern?: { id: number; code: string };
}

export async function applyDecision(ctx: Ctx, release: string, code: string, d: Decision, by: DecidedBy): Promise<DecisionOutcome> {
  return ctx.db.control.transaction((trx) => applyDecisionIn(ctx, trx, release, code, d, by));
}

/** A decided conflict is refused, saying who decided it, when, and what. */
async function refuseDecided(trx: Knex.Transaction, c: ConflictRow): Promise<void> {
  if (c.status !== 'decided') return;
  const prev = await trx<DecisionsRow>('decisions').where({ conflict_id: c.id }).first();
  const what = prev ? describeDecision(c, prev.params as Decision) : '';
  const message = `${c.code} was already decided by ${c.decided_by} at ${c.decided_at?.toISOString()}: ${what}`;
  throw new TributaryError('already_decided', message, { code: c.code, decidedBy: c.decided_by });
}

/** The decision's row, the conflict decided, the release sent back to validation when it changed, and the audit event. */
async function recordDecision(
  trx: Knex.Transaction,
  c: ConflictRow,
  d: Decision,
  by: DecidedBy,
  rationale: string,
  blast: BlastRadius,
): Promise<Date> {
  const now = new Date();
  await trx('decisions').insert({
    conflict_id: c.id,
    release: c.release,
    run_id: c.run_id,
    action: d.action,
    params: JSON.stringify(d),
    blast: JSON.stringify(blast),
    rationale,
    decided_by: by.actor,
    decided_at: now,
    ...(by.pattern ? { pattern_decision_id: by.pattern.id } : {}),
  });
  await trx('conflicts').where({ id: c.id }).update({ status: 'decided', decided_by: by.actor, decided_at: now });
  // the dataset changed: a validated (or loaded) release must be validated again. A cross-release
  // decision changes nothing yet: tributary promote applies it to master
  const { state } = await releaseState(trx, c.release);
  if (c.kind !== CROSS_RELEASE && isValidated(state)) await transition(trx, c.release, 'invalidate');
  const extra = {
    ...(c.detail.overrules ? { overrules: c.detail.overrules } : {}),
    ...(by.pattern ? { patternDecision: by.pattern.code } : {}),
  };
  await recordAudit(trx, {
    actor: by.actor,
    action: 'decision',
    release: c.release,
    subject: c.code,
    details: { entity: c.entity, key: c.key_label, kind: c.kind, decision: d, rationale, blast, ...extra },
  });
  return now;
}

/** applyDecision inside the caller's transaction (a pattern decision takes all of its decisions in one). */
export async function applyDecisionIn(
  ctx: Ctx,
  trx: Knex.Transaction,
  release: string,
  code: string,
  d: Decision,
  by: DecidedBy,
): Promise<DecisionOutcome> {
  const rationale = requireRationale(by.rationale, 'a decision', `why ${describeDecision({ detail: {} } as ConflictRow, d)}?`);
  const c = await lockedConflict(ctx, trx, release, code);
  await refuseDecided(trx, c);
  validate(ctx, c, d);
  // the release's state row, locked before the data changes: a validation running now finishes first,
  // and this decision then sees it validated and sends it back to validation
  await trx('release_states').where({ release }).forUpdate().first();
  const summary = `${by.actor}: ${describeDecision(c, d)} — ${rationale}${by.pattern ? ` (pattern decision ${by.pattern.code})` : ''}`;
  const plan = await planFor(ctx, trx, c, d, summary);
  const warnings = await warningsOf(ctx, trx, c, d);
  // the rows it changes are logged with their image before, so the decision can be undone (undo.ts)
  if (c.kind !== CROSS_RELEASE) await startUndoLog(trx, c.run_id, c.id);
  await plan.apply();
  if (c.kind !== CROSS_RELEASE) await stopUndoLog(trx);
  const now = await recordDecision(trx, { ...c, release }, d, by, rationale, plan.blast);
  await failpoint('decide.before-commit');
  return {
    conflict: { ...c, status: 'decided', decided_by: by.actor, decided_at: now },
    decision: d,
    blast: plan.blast,
    applied: true,
    decidedBy: by.actor,
    decidedAt: now,
    rationale,
    ...(warnings.length > 0 ? { warnings } : {}),
  };
}

export interface RecordedDecision {
  decision: Decision;
  by: string;
  at: Date;
  rationale: string;
  blast: BlastRadius;
}

/** The decision taken on a conflict, if any (to render a decided card). */
export async function decisionOf(ctx: Ctx, conflictId: number): Promise<RecordedDecision | undefined> {
  const row = await ctx.db.control<DecisionsRow>('decisions').where({ conflict_id: conflictId }).first();
  if (!row) return undefined;
  // params and blast are written by recordDecision from a Decision and a BlastRadius
  const { decided_by: by, decided_at: at, rationale } = row;
  return { decision: row.params as Decision, by, at, rationale, blast: row.blast as BlastRadius };
}
