import crypto from 'node:crypto';
import type pg from 'pg';
import { pgClient } from '../../db/pg.js';
import type { ConflictsRow, PromotionsRow, RunsRow } from '../../db/rows.js';
import { type Config, type EnvSpec, envByRole, releaseOrThrow } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { textSettingsSql } from '../kernel/checksum.js';
import { failpoint } from '../kernel/failpoints.js';
import { envError, type Actor, type Ctx } from '../kernel/context.js';
import { passGate, transition } from '../kernel/lifecycle.js';
import { must } from '../kernel/must.js';
import { ident } from '../kernel/sql.js';
import { CROSS_RELEASE, openPromoteRunId } from '../review/index.js';
import { copyPartition, verifyAndAttach } from './partitions.js';
import { PROMOTE_LOCK, Refused, refuse } from './refuse.js';
import { resolveCrossRelease, SAMPLE } from './resolve.js';
import type { Known, KnownDecisions, Progress, PromotedTable, PromoteResult, Replaced, Session, Work } from './types.js';

export type { AppliedDecision, AutoResolvedItem, PromotedTable, PromoteResult } from './types.js';

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
 *     both rows are unchanged (see planCrossRelease in ../review/crossRelease.ts for what each one does).
 * Rows are compared as their cells' texts, as every copy carries them (docs/policy.md, "Equality of values").
 * Children are never silently orphaned: children in the release of a row that is not promoted point at
 * master's row (keep 1), children of a row given a new key follow it (keep both), and a decision that
 * would leave rows of any release pointing at nothing (keep 2 under another key, delete both) is
 * refused, at decision time and again here, where the conflict is opened anew with the reason.
 * Before commit, per table, the row count and checksum of the new partition must equal those of the
 * staging rows promoted (the same transformations applied there, in one snapshot). Any failure rolls
 * master back and names the env and table.
 *
 * The steps: gate → copy partitions → find pairs, resolve, apply decisions and standing decisions
 * (resolve.ts) → verify and attach → commit → record.
 */
export async function promoteRelease(ctx: Ctx, release: string, opts: { actor: Actor; progress?: Progress }): Promise<PromoteResult> {
  releaseOrThrow(ctx.config, release);
  const started = performance.now();
  await passGate(ctx.db.control, release, 'promote', opts.actor);
  const { staging, master } = promotionEnvs(ctx.config, release);
  const known = await knownDecisions(ctx, release);
  const s = openSession(ctx, release, staging, master, opts.progress);
  let done: Promoted;
  try {
    done = await promoteIntoMaster(s, known);
  } catch (err) {
    throw await failure(s, opts.actor, err);
  } finally {
    await s.target.end().catch(() => undefined);
    await s.source.end().catch(() => undefined);
  }
  return recordPromotion(ctx, release, master, opts.actor, { ...done, ms: Math.round(performance.now() - started) });
}

/** Master's transaction: the partitions copied, cross-release conflicts resolved (or refused), verified, committed. */
async function promoteIntoMaster(s: Session, known: KnownDecisions): Promise<Promoted> {
  await begin(s);
  // 1. per entity: the partitioned parent, the release's new partition filled from staging
  const works: Work[] = [];
  for (const e of s.ctx.config.entities) works.push(await copyPartition(s, e));
  // 2. parents first: detect against the other releases, apply the decisions, queue the rest
  const outcome = await resolveCrossRelease(s, works, known);
  if (outcome.blocking.length > 0 || outcome.issues.length > 0) throw new Refused(outcome.blocking, outcome.issues, outcome.detected);
  // 3. verify every table against staging, attach the partitions
  const tables: PromotedTable[] = [];
  for (const w of works) tables.push(await verifyAndAttach(s, w));
  s.at.table = '';
  await failpoint('promote.before-commit');
  await s.m('commit');
  await s.source.query('commit').catch(() => undefined);
  // master committed, the control database not yet: promoting again replaces the release's partitions
  await failpoint('promote.after-master-commit');
  return { works, tables, replaced: outcome.replaced };
}

/** What master's transaction did, for the record. */
interface Promoted {
  works: Work[];
  tables: PromotedTable[];
  replaced: Replaced;
}

function promotionEnvs(config: Config, release: string): { staging: EnvSpec; master: EnvSpec } {
  const staging = envByRole(config, 'staging');
  const master = envByRole(config, 'master');
  if (!staging) {
    throw new TributaryError(
      'config_invalid',
      `${config.file}: environments: no env has role: staging, so there is nothing to promote ${release} from`,
    );
  }
  if (!master) {
    throw new TributaryError(
      'config_invalid',
      `${config.file}: environments: no env has role: master, so there is nowhere to promote ${release} to`,
    );
  }
  return { staging, master };
}

/** What reviewers decided so far, latest conflict per pair of rows. */
async function knownDecisions(ctx: Ctx, release: string): Promise<KnownDecisions> {
  const known = (await ctx.db
    .control('conflicts as c')
    .leftJoin('decisions as d', 'd.conflict_id', 'c.id')
    .where({ 'c.release': release, 'c.kind': CROSS_RELEASE })
    .orderBy('c.id')
    .select('c.*', 'd.params')) as Known[];
  const latest = new Map<string, Known>();
  const standingDelete = new Map<string, Known>();
  for (const k of known) {
    latest.set(`${k.entity}\u0000${k.identity}`, k);
    if (k.status === 'decided' && k.params?.action === 'delete-both') {
      standingDelete.set(`${k.entity}\u0000${must(k.detail.crossRelease, `the rows of ${k.code}`).stagingPk}`, k);
    }
  }
  return { latest, standingDelete };
}

function openSession(ctx: Ctx, release: string, staging: EnvSpec, master: EnvSpec, progress?: Progress): Session {
  const target = pgClient(ctx.db.envParams(master) as pg.ClientConfig);
  const source = pgClient(ctx.db.envParams(staging) as pg.ClientConfig);
  target.on('error', () => undefined);
  source.on('error', () => undefined);
  const m = (sql: string, params?: unknown[]) => target.query(sql, params);
  const at = { env: master, table: '' };
  return { ctx, release, rel: ctx.config.tags.release, staging, master, source, target, m, at, ...(progress ? { progress } : {}) };
}

/** Both connections open; staging read in one snapshot, master in one transaction holding the promotion lock. */
async function begin(s: Session): Promise<void> {
  const { ctx, master, staging, m } = s;
  try {
    await s.target.connect();
  } catch (err) {
    throw envError(ctx, master, err);
  }
  s.at.env = staging;
  try {
    await s.source.connect();
  } catch (err) {
    throw envError(ctx, staging, err);
  }
  // both ends of the COPY read and write text in the same formats; staging is read in one snapshot
  await s.source.query('begin isolation level repeatable read read only');
  await s.source.query(textSettingsSql());
  s.at.env = master;
  await m('begin');
  await m(textSettingsSql());
  await m('select pg_advisory_xact_lock(hashtext($1))', [PROMOTE_LOCK]);
  if (master.schema) await m(`create schema if not exists ${ident(master.schema)}`);
}

/**
 * Master rolled back; the error to throw: a refusal records its conflicts; any other failure is audited and
 * names the env and table it happened at.
 */
async function failure(s: Session, actor: Actor, err: unknown): Promise<Error> {
  const { ctx, release, at } = s;
  await s.target.query('rollback').catch(() => undefined);
  await s.source.query('rollback').catch(() => undefined);
  if (err instanceof Refused) {
    await s.target.end().catch(() => undefined);
    await s.source.end().catch(() => undefined);
    return refuse(ctx, release, actor, err);
  }
  const where = `${at.env.name}${at.table ? `, table ${at.table}` : ''}`;
  const message =
    err instanceof TributaryError
      ? err.message
      : `promoting ${release} into ${where} failed: ${redact((err as Error).message)}; nothing was promoted`;
  const details = { env: at.env.name, table: at.table, error: message };
  await recordAudit(ctx.db.control, { actor, action: 'promote.failed', release, details });
  if (err instanceof TributaryError) return err;
  const named = envError(ctx, at.env, err);
  if (named instanceof TributaryError && named.code === 'env_unreachable') return named;
  return new TributaryError('database', message, { env: at.env.name, table: at.table });
}

type Code = Pick<ConflictsRow, 'code'>;

/** After master's commit: the promotions recorded, the promote run closed, the release promoted, audited. */
async function recordPromotion(
  ctx: Ctx,
  release: string,
  master: EnvSpec,
  actor: Actor,
  done: { works: Work[]; tables: PromotedTable[]; replaced: Replaced; ms: number },
): Promise<PromoteResult> {
  const { works, tables, replaced, ms } = done;
  const autoItems = works.flatMap((w) => w.autoResolved);
  const autoTotal = works.reduce((n, w) => n + w.autoCount, 0);
  const decisions = works.flatMap((w) => w.decisions);
  const runId = await ctx.db.control.transaction(async (trx) => {
    await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [`${PROMOTE_LOCK}:${release}`]);
    const run = await openPromoteRunId(trx, release);
    await trx<PromotionsRow>('promotions').insert(promotionRows(release, run, master, actor, works, tables));
    let dropped: string[] = [];
    if (run) {
      // every conflict still open in the run no longer occurs (an open one would have refused the promotion)
      const gone = (await trx<ConflictsRow>('conflicts').where({ run_id: run, status: 'open' }).del().returning('code')) as Code[];
      dropped = gone.map((r) => r.code);
      const counts = { tables: tables.length, autoResolved: autoTotal, decisions: decisions.length };
      const finished = { status: 'succeeded', finished_at: trx.fn.now(), counts: JSON.stringify(counts) };
      await trx<RunsRow>('runs').where({ id: run }).update(finished);
    }
    await transition(trx, release, 'promote');
    await recordAudit(trx, {
      actor,
      action: 'promote.finish',
      release,
      subject: master.name,
      details: {
        runId: run,
        ms,
        tables,
        autoResolved: { total: autoTotal, items: autoItems.slice(0, SAMPLE) },
        decisions,
        replaced: replaced.slice(0, SAMPLE),
        replacedCount: replaced.length,
        ...(dropped.length ? { dropped } : {}),
      },
    });
    return run;
  });
  return { release, env: master.name, runId, tables, autoResolved: { total: autoTotal, items: autoItems }, decisions, replaced, ms };
}

/** One `promotions` row per entity: what its verified partition holds and what was not promoted, and why. */
function promotionRows(release: string, run: number | null, master: EnvSpec, actor: Actor, works: Work[], tables: PromotedTable[]) {
  const now = new Date();
  return works.map((w, i) => {
    const t = must(tables[i], `the verified table of ${w.e.name}`);
    return {
      release,
      run_id: run,
      env: master.name,
      entity: w.e.name,
      table_name: w.e.table,
      partition_name: w.part,
      row_count: t.rows,
      checksum: t.checksum,
      skipped: w.skipped.size,
      auto_resolved_count: w.autoCount,
      auto_resolved: JSON.stringify(w.autoResolved),
      decisions: JSON.stringify(w.decisions),
      promoted_by: actor,
      promoted_at: now,
    };
  });
}

/** The fingerprint of what a release's latest promotion put in master: sha256 over (entity, rows, checksum). */
export async function promotedFingerprint(ctx: Ctx, release: string): Promise<string | null> {
  const rows = (await ctx.db
    .control<PromotionsRow>('promotions')
    .where({ release })
    .where('promoted_at', ctx.db.control('promotions').where({ release }).max('promoted_at'))
    .orderBy('entity')
    .select('entity', 'row_count', 'checksum')) as Pick<PromotionsRow, 'entity' | 'row_count' | 'checksum'>[];
  if (rows.length === 0) return null;
  const h = crypto.createHash('sha256');
  for (const r of rows) h.update(`${r.entity}\t${Number(r.row_count)}\t${r.checksum}\n`);
  return h.digest('hex');
}
