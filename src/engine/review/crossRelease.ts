import type { Knex } from 'knex';
import { type Config, type EntitySpec, type EnvSpec, envByRole } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { tableExists } from '../kernel/checksum.js';
import type { ConflictRow, CrossReleaseInfo, BlastRadius, Decision, Dependent, Plan } from './types.js';
import { onEnv, type Ctx } from '../kernel/context.js';
import { ident, qualified } from '../kernel/sql.js';
import { childEntities, displayValue, renderTemplate } from '../kernel/entities.js';
import { must } from '../kernel/must.js';
import type { RunsRow } from '../../db/rows.js';

/**
 * Cross-release conflicts: what `tributary promote` finds between a release's staging rows and the rows
 * master holds from earlier releases (src/engine/promote/promote.ts), and how a decision on one is planned.
 * Shared by promote.ts and decide.ts (a decision on a cross-release conflict is only recorded; promote
 * applies it).
 */
export const CROSS_RELEASE = 'cross-release';
/** Codes of cross-release conflicts: C-X001…, numbered per release across its promote runs. */
export const PROMOTE_CODE_PREFIX = 'C-X';
export const CROSS_RELEASE_ACTIONS = ['keep', 'keep-both', 'delete-both'] as const;

/** The latest open promote run of a release: its cross-release conflicts are in the review queue. */
export async function openPromoteRunId(db: Knex | Knex.Transaction, release: string): Promise<number | null> {
  const row = await db<RunsRow>('runs').where({ release, kind: 'promote', status: 'open' }).orderBy('id', 'desc').first('id');
  return row ? Number(row.id) : null;
}

function entityOf(config: Config, name: string): EntitySpec {
  const e = config.entities.find((x) => x.name === name);
  if (!e) throw new TributaryError('config_invalid', `entity ${name} is no longer in the dataset of ${config.file}`);
  return e;
}

/**
 * The new natural key values of the release's row under "keep both": the values given (--rename
 * 2.email=…), else the rename template applied to each natural key column whose value master's row
 * shares ({env} is the release name).
 */
export function renameValues(
  config: Config,
  e: EntitySpec,
  release: string,
  staging: Record<string, unknown>,
  master: Record<string, unknown>,
  given: Record<string, string> | undefined,
): Record<string, string> {
  const values: Record<string, string> = {};
  const feature = (staging[config.tags.feature] as string | null | undefined) ?? null;
  for (const col of [...new Set(e.naturalKeys.flat())]) {
    const current = staging[col];
    if (given?.[col] !== undefined) values[col] = given[col];
    else if (current !== null && current !== undefined && displayValue(current) === displayValue(master[col])) {
      values[col] = renderTemplate(config.policy.renameTemplate, displayValue(current), release, feature, 2);
    }
  }
  return values;
}

/** Checks a decision's shape against a cross-release conflict (version 1: master's row, 2: the release's). */
export function validateCrossRelease(config: Config, c: ConflictRow, d: Decision): void {
  if (!(CROSS_RELEASE_ACTIONS as readonly string[]).includes(d.action)) {
    const message = `${c.code} is a ${CROSS_RELEASE} conflict: decide it with ${CROSS_RELEASE_ACTIONS.join(', ')} (not ${d.action})`;
    throw new TributaryError('decision_invalid', message, { code: c.code });
  }
  if (d.action === 'keep' && d.version !== 1 && d.version !== 2) {
    const earlier = c.detail.crossRelease?.masterRelease ?? 'an earlier release';
    throw new TributaryError(
      'decision_invalid',
      `${c.code} has versions 1 (master's row of ${earlier}) and 2 (${c.release}'s row); there is no version ${d.version}`,
    );
  }
  if (d.action === 'keep-both') {
    const e = entityOf(config, c.entity);
    const nk = new Set(e.naturalKeys.flat());
    for (const [v, cols] of Object.entries(d.rename ?? {})) {
      if (Number(v) !== 2) {
        const message = `keep-both on ${c.code}: only version 2 (${c.release}'s row) is renamed; master's row keeps its keys`;
        throw new TributaryError('decision_invalid', message, { field: Object.keys(cols)[0] });
      }
      for (const col of Object.keys(cols)) {
        if (!nk.has(col)) {
          const message = `keep-both on ${c.code}: ${col} is not a natural key of ${c.entity} (${[...nk].join(', ') || 'none'})`;
          throw new TributaryError('decision_invalid', message, { field: col });
        }
      }
    }
  }
}

interface Found {
  count: number;
  sample: Dependent[];
}

async function rowsReferencing(
  k: Knex,
  env: EnvSpec,
  children: { e: EntitySpec; column: string }[],
  releaseColumn: string,
  pk: string,
  release: { eq?: string; not?: string },
): Promise<Found> {
  const out: Found = { count: 0, sample: [] };
  for (const { e, column } of children) {
    if (!(await tableExists(k, env.schema, e.table))) continue;
    const t = qualified(env.schema, e.table);
    const cond = release.eq !== undefined ? `${ident(releaseColumn)} = ?` : `${ident(releaseColumn)} is distinct from ?`;
    const res = await k.raw<{ rows: { pk: string; rel: string | null; n: number }[] }>(
      `select ${ident(e.primaryKey)}::text as pk, ${ident(releaseColumn)}::text as rel, count(*) over ()::int as n
         from ${t} where ${ident(column)}::text = ? and ${cond} order by 1 limit 50`,
      [pk, release.eq ?? release.not ?? null],
    );
    out.count += res.rows[0]?.n ?? 0;
    out.sample.push(...res.rows.map((r) => ({ entity: e.name, pk: `${r.pk} (${r.rel ?? 'no release'})` })));
  }
  return out;
}

/** Rows of earlier releases in master that reference master's row of a cross-release conflict. */
async function masterDependents(ctx: Ctx, e: EntitySpec, x: CrossReleaseInfo): Promise<Found> {
  const master = envByRole(ctx.config, 'master');
  if (!master) return { count: 0, sample: [] };
  const children = childEntities(ctx.config, e.name);
  const { release } = ctx.config.tags;
  return onEnv(ctx, master, () => rowsReferencing(ctx.db.env(master), master, children, release, x.masterPk, { not: x.release }));
}

/** The release's rows in staging that reference its row of a cross-release conflict. */
async function stagingDependents(ctx: Ctx, e: EntitySpec, x: CrossReleaseInfo): Promise<Found> {
  const staging = envByRole(ctx.config, 'staging');
  if (!staging) return { count: 0, sample: [] };
  const children = childEntities(ctx.config, e.name);
  const { release } = ctx.config.tags;
  return onEnv(ctx, staging, () => rowsReferencing(ctx.db.env(staging), staging, children, release, x.stagingPk, { eq: x.release }));
}

/** Who already has `col` = `value`: in master a row of another release; in staging another row of the release. */
async function takenIn(
  ctx: Ctx,
  env: EnvSpec | undefined,
  e: EntitySpec,
  col: string,
  value: string,
  release: string,
  exceptPk?: string,
): Promise<string | null> {
  if (!env) return null;
  return onEnv(ctx, env, async () => {
    const k = ctx.db.env(env);
    if (!(await tableExists(k, env.schema, e.table))) return null;
    const rel = ident(ctx.config.tags.release);
    const scope = exceptPk === undefined ? `${rel} is distinct from ?` : `${rel} = ? and ${ident(e.primaryKey)}::text <> ?`;
    const res = await k.raw<{ rows: { pk: string; rel: string | null }[] }>(
      `select ${ident(e.primaryKey)}::text as pk, ${rel}::text as rel
         from ${qualified(env.schema, e.table)} where ${ident(col)}::text = ? and ${scope} limit 1`,
      exceptPk === undefined ? [value, release] : [value, release, exceptPk],
    );
    const r = res.rows[0];
    return r ? `${e.primaryKey} ${r.pk} of ${r.rel ?? 'no release'} in ${env.name}` : null;
  });
}

/**
 * The blast radius of a decision on a cross-release conflict, and its check. Nothing changes until
 * `tributary promote` applies it (in master's transaction):
 *   keep 1      the release's row is not promoted; its children in the release point at master's row;
 *   keep 2      the release's row is promoted and master's earlier row deleted; refused while rows of
 *               earlier releases reference master's row under another key (they would be orphaned);
 *   keep-both   the release's row is promoted with its natural keys renamed (and a new primary key
 *               when it shares master's: its children in the release follow it);
 *   delete-both neither row stays; refused while any row references either of them (no cascade into
 *               earlier releases).
 */
/** Keep both: version 2's new natural keys, free in master and staging; its key is given anew at promotion when master has it. */
async function planKeepBothAcross(ctx: Ctx, c: ConflictRow, given: Record<string, string> | undefined, blast: BlastRadius): Promise<void> {
  const x = must(c.detail.crossRelease, `the rows of ${c.code}`);
  const versions = c.detail.versions ?? [];
  const e = entityOf(ctx.config, c.entity);
  const samePk = x.stagingPk === x.masterPk;
  const [mastersRow, stagingsRow] = [must(versions[0], `version 1 of ${c.code}`), must(versions[1], `version 2 of ${c.code}`)];
  const values = renameValues(ctx.config, e, c.release, stagingsRow.data, mastersRow.data, given);
  const renewed = `${x.stagingPk} (a new key is given at promotion: master's ${x.masterRelease} row has ${x.stagingPk})`;
  const pk = samePk ? renewed : x.stagingPk;
  blast.renamed.push({ version: 2, values, pk });
  if (samePk) blast.rewritten = (await stagingDependents(ctx, e, x)).count;
  const master = envByRole(ctx.config, 'master');
  const staging = envByRole(ctx.config, 'staging');
  for (const [col, value] of Object.entries(values)) {
    const inMaster = await takenIn(ctx, master, e, col, value, c.release);
    const taken = inMaster ?? (await takenIn(ctx, staging, e, col, value, c.release, x.stagingPk));
    if (taken) {
      const message =
        `keep-both on ${c.code}: ${e.name} ${col}=${value} is already taken (by ${taken}); ` +
        `give version 2 another value (--rename 2.${col}=…)`;
      throw new TributaryError('decision_invalid', message, { field: col, value });
    }
  }
}

export async function planCrossRelease(ctx: Ctx, c: ConflictRow, d: Decision): Promise<Plan> {
  const x = c.detail.crossRelease;
  const versions = c.detail.versions ?? [];
  if (!x || versions.length !== 2) throw new TributaryError('internal', `${c.code}: a cross-release conflict without its two rows`);
  const e = entityOf(ctx.config, c.entity);
  const samePk = x.stagingPk === x.masterPk;
  const blast: BlastRadius = { rewritten: 0, removed: 0, renamed: [], dependents: [], dependentCount: 0 };
  let refusal: string | null = null;
  switch (d.action) {
    case 'keep': {
      blast.removed = 1;
      if (d.version === 1 && !samePk) blast.rewritten = (await stagingDependents(ctx, e, x)).count;
      if (d.version === 2 && !samePk) {
        const deps = await masterDependents(ctx, e, x);
        blast.dependentCount = deps.count;
        blast.dependents = deps.sample;
        if (deps.count > 0) {
          const sample = `${deps.sample.slice(0, 5).map((r) => `${r.entity} ${r.pk}`).join(', ')}${deps.count > 5 ? ', …' : ''}`;
          refusal =
            `${c.code}: keeping ${c.release}'s row would delete master's ${e.name} ${x.masterPk} of ${x.masterRelease}, ` +
            `but ${deps.count} row(s) of earlier releases reference it (${sample}) ` +
            `and ${c.release}'s row has another key (${x.stagingPk}); keep version 1, or keep both`;
        }
      }
      break;
    }
    case 'keep-both':
      await planKeepBothAcross(ctx, c, d.rename?.[2], blast);
      break;
    case 'delete-both': {
      blast.removed = 2;
      const [mine, theirs] = [await stagingDependents(ctx, e, x), await masterDependents(ctx, e, x)];
      blast.dependentCount = mine.count + theirs.count;
      blast.dependents = [...mine.sample, ...theirs.sample].slice(0, 50);
      if (blast.dependentCount > 0) {
        const more = blast.dependentCount > 5 ? ', …' : '';
        const sample = `${blast.dependents.slice(0, 5).map((r) => `${r.entity} ${r.pk}`).join(', ')}${more}`;
        refusal =
          `${c.code}: ${blast.dependentCount} row(s) reference the two rows (${sample}): deleting both would orphan them, ` +
          'and a cross-release conflict does not cascade into earlier releases; keep one version, or keep both';
      }
      break;
    }
    default:
      throw new TributaryError('decision_invalid', `unsupported action ${d.action} for a ${CROSS_RELEASE} conflict`);
  }
  return {
    blast,
    apply: async () => {
      if (refusal) throw new TributaryError('decision_invalid', refusal, { dependents: blast.dependentCount });
    },
  };
}
