import type { Knex } from 'knex';
import { releaseOrThrow } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { failpoint } from '../kernel/failpoints.js';
import { textSettingsSql } from '../kernel/checksum.js';
import { currentRunId, runTables } from '../kernel/workArea.js';
import { type Actor, type Ctx } from '../kernel/context.js';
import { passGate, releaseState, transition } from '../kernel/lifecycle.js';
import { ident } from '../kernel/sql.js';
import type { ConflictsRow, ReleaseStatesRow } from '../../db/rows.js';
import { checkColumns } from './columns.js';
import { precomputeReferences, checkReferences } from './references.js';
import { createTempObjects, dropTempObjects, type Scope } from './scope.js';
import { tableShape, type TableShape } from './shape.js';
import { runTest } from './tests.js';
import { lockKey, type FindingStatus, type FindingRow, type ValidationCounts, type ValidationReport } from './types.js';


/**
 * Validation of a release's consolidated dataset (the current run's final rows), as SQL in the control
 * database, before it may be loaded:
 *   - integrity: every reference resolves (to a final row of its parent, or to master's earlier releases),
 *     chains of references are intact over every hop (a transaction whose account's user was deleted is
 *     an orphan-chain), values fit the ST table's column types, NOT NULL columns are populated, and no
 *     value sits in a column the ST table does not have (loading would drop it);
 *   - the data tests of the config, dbt style: not_null, unique, accepted_values, relationships,
 *     expression (a per-row boolean) and sql (a query returning the violating rows).
 * Findings are stored per run (table findings), numbered F-001… per release; validating again recomputes
 * them: a finding that no longer occurs is closed. A finding is closed by a decision on its record (delete
 * or re-point, the conflict decisions' own code), by fixing the source and re-consolidating, or waived by
 * a qa_lead with a rationale. With no open findings the release becomes `validated` (loading needs it).
 *
 * The ST table's shape (column types, NOT NULL) is that of the highest-precedence source env that has
 * the table: the shape the staging tables are created with.
 */


async function openConflicts(ctx: Ctx, runId: number): Promise<number> {
  const row = await ctx.db
    .control<ConflictsRow>('conflicts')
    .where({ run_id: runId, status: 'open' })
    .count<{ n: string }[]>('* as n')
    .first();
  return Number(row?.n ?? 0);
}

/**
 * Validates the release's current consolidation and records its findings; the release becomes validated when
 * none is open.
 */
export async function validateRelease(ctx: Ctx, release: string, opts: { actor: Actor }): Promise<ValidationReport> {
  releaseOrThrow(ctx.config, release);
  const started = performance.now();
  await passGate(ctx.db.control, release, 'validate', opts.actor);
  const runId = await currentRunId(ctx, release);
  await refuseOpenConflicts(ctx, release, runId, opts.actor);
  await recordAudit(ctx.db.control, { actor: opts.actor, action: 'validate.start', release, subject: `run #${runId}` });
  await failpoint('validate.after-start');
  try {
    // what needs other connections first (the ST catalogs, master's keys); then one transaction on the control
    // database
    const t = runTables(runId);
    const shapes = new Map<string, TableShape>();
    for (const e of ctx.config.entities) shapes.set(e.name, await tableShape(ctx, e));
    const unresolvedRefs = await precomputeReferences(ctx, t);
    return await ctx.db.control.transaction(async (trx) => {
      const scope = await openScope(ctx, trx, release, { t, runId, shapes, unresolved: unresolvedRefs });
      await trx.raw(textSettingsSql());
      const report = await runValidation(scope, release, opts.actor, started);
      await failpoint('validate.before-commit');
      return report;
    });
  } catch (err) {
    const message = redact(err instanceof Error ? err.message : String(err));
    const details = { error: message };
    await recordAudit(ctx.db.control, { actor: opts.actor, action: 'validate.failed', release, subject: `run #${runId}`, details });
    throw err;
  }
}

/** Validation waits for the review queue: open conflicts are refused (audited). */
async function refuseOpenConflicts(ctx: Ctx, release: string, runId: number, actor: Actor): Promise<void> {
  const open = await openConflicts(ctx, runId);
  if (open === 0) return;
  const details = { openConflicts: open };
  await recordAudit(ctx.db.control, { actor, action: 'gate.validate.refused', release, subject: `run #${runId}`, details });
  const message =
    `release ${release} has ${open} open conflict(s) in its review queue: ` +
    `decide the ${open} open conflicts first (tributary conflicts ${release})`;
  throw new TributaryError('gate_state', message, { release, openConflicts: open });
}

/**
 * The validation's scope in its transaction: the release's validation lock taken (or refused as busy), the
 * release's state row locked until the outcome is recorded, and the run still its current one.
 */
async function openScope(
  ctx: Ctx,
  trx: Knex.Transaction,
  release: string,
  run: Pick<Scope, 't' | 'runId' | 'shapes' | 'unresolved'>,
): Promise<Scope> {
  const { runId } = run;
  const busy = await trx.raw<{ rows: { ok: boolean }[] }>('select pg_try_advisory_xact_lock(hashtext(?)) as ok', [lockKey(release)]);
  if (!busy.rows[0]?.ok) {
    throw new TributaryError('gate_busy', `a validation of ${release} is already running; wait for it to finish`, { release });
  }
  // the release's state row stays locked until the outcome is recorded: a consolidation finishing meanwhile waits
  const now: Pick<ReleaseStatesRow, 'current_run_id'> | undefined = await trx<ReleaseStatesRow>('release_states')
    .where({ release })
    .forUpdate()
    .first();
  if (now?.current_run_id !== runId) {
    const message = `run #${runId} is no longer ${release}'s current consolidation: validate ${release} again`;
    throw new TributaryError('gate_state', message, { release });
  }
  const version = await trx.raw<{ rows: { v: number }[] }>(`select current_setting('server_version_num')::int as v`);
  return {
    ctx,
    k: trx,
    ...run,
    found: `pg_temp.${ident('tributary_found')}`,
    ord: new Map(ctx.config.entities.map((e, i) => [e.name, i])),
    validInput: (version.rows[0]?.v ?? 0) >= 160000 ? 'pg_input_is_valid' : 'work.input_is_valid',
    checksums: new Map(),
  };
}

async function runValidation(s: Scope, release: string, actor: Actor, started: number): Promise<ValidationReport> {
  const { ctx, k: trx, runId } = s;
  await createTempObjects(s);
  const rows: Record<string, number> = {};
  for (const e of ctx.config.entities) {
    rows[e.name] = await checkColumns(s, e);
    await checkReferences(s, e);
    for (const test of e.tests) await runTest(s, e, test);
  }

  const counts = await mergeFindings(trx, s, release, actor);
  await dropTempObjects(s);
  let { state } = await releaseState(trx, release);
  // what loading will verify staging against, computed in this validation's snapshot of the final rows
  const complete = ctx.config.entities.every((e) => s.checksums.has(e.name));
  await trx('runs').where({ id: runId }).update({
    counts: trx.raw(`counts - 'validated' || ?::jsonb`, [
      JSON.stringify(complete && counts.open === 0 ? { validated: Object.fromEntries(s.checksums) } : {}),
    ]),
  });
  if (counts.open === 0 && state === 'consolidated') state = await transition(trx, release, 'validate');
  else if (counts.open > 0 && state !== 'consolidated') state = await transition(trx, release, 'invalidate');
  const findings = (await trx<FindingRow>('findings')
    .where({ run_id: runId })
    .whereIn('status', ['open', 'waived'])
    .orderBy('seq')) as FindingRow[];
  const byRule: Record<string, number> = {};
  for (const f of findings) if (f.status === 'open') byRule[f.rule] = (byRule[f.rule] ?? 0) + 1;
  const ms = Math.round(performance.now() - started);
  const details = { counts, byRule, rows, state, ms };
  await recordAudit(trx, { actor, action: 'validate.finish', release, subject: `run #${runId}`, details });
  return { release, runId, state, ms, rows, counts, byRule, findings };
}

/** Folds this validation's findings into the run's: new ones numbered, recurring ones kept (or re-opened), gone ones closed. */
async function mergeFindings(trx: Knex.Transaction, s: Scope, release: string, actor: Actor): Promise<ValidationCounts> {
  const runId = s.runId;
  // recurring: a waiver stands while the offending value is the same
  const updated = await trx.raw<{ rows: { old: string; status: string }[] }>(
    `update findings f
        set status = case when o.old = 'waived' and f.value is not distinct from n.value then 'waived' else 'open' end,
            key = n.key, value = n.value, message = n.message, detail = n.detail, last_seen_at = now(),
            closed_at = null, closed_by = null, resolution = null
       from ${s.found} n, (select id, status as old from findings where run_id = ?) o
      where f.run_id = ? and f.fingerprint = n.fingerprint and o.id = f.id
      returning o.old, f.status`,
    [runId, runId],
  );
  const reopened = updated.rows.filter((r) => r.old !== 'open' && r.status === 'open').length;
  // new in this run: the release's number for the same problem if it was seen before, else the next one;
  // a waiver of an earlier run carries over while the offending value is the same
  const inserted = await trx.raw(
    `with n as (
       select n.*, prev.seq as prev_seq
         from ${s.found} n
         left join lateral (select p.seq from findings p where p.release = ? and p.fingerprint = n.fingerprint
                                      order by p.id desc limit 1) prev on true
        where not exists (select 1 from findings f where f.run_id = ? and f.fingerprint = n.fingerprint)
     ), base as (select coalesce(max(seq), 0) as m from findings where release = ?),
     numbered as (
       select n.*, coalesce(n.prev_seq, base.m + row_number() over (partition by n.prev_seq is null
                                              order by n.ord, n.entity, n.rule, n.key, n.fingerprint))::int as seq
         from n cross join base
     )
     insert into findings (release, run_id, seq, code, fingerprint, entity, identity, key, rule, kind, "column",
                           value, message, detail, status, waived_by, waived_at, rationale)
     select ?, ?, x.seq, 'F-' || lpad(x.seq::text, greatest(3, length(x.seq::text)), '0'),
            x.fingerprint, x.entity, x.identity, x.key, x.rule, x.kind, x.col,
            x.value, x.message, x.detail, case when w.waived_by is not null then 'waived' else 'open' end,
            w.waived_by, w.waived_at, w.rationale
       from numbered x
       left join lateral (select p.waived_by, p.waived_at, p.rationale from findings p
                           where p.release = ? and p.fingerprint = x.fingerprint and p.status = 'waived'
                                 and p.value is not distinct from x.value
                           order by p.id desc limit 1) w on true`,
    [release, runId, release, release, runId, release],
  );
  const closed = await trx.raw(
    `update findings f set status = 'closed', closed_at = now(), closed_by = ?, resolution = 'no longer occurs'
      where f.run_id = ? and f.status in ('open', 'waived')
            and not exists (select 1 from ${s.found} n where n.fingerprint = f.fingerprint)`,
    [actor, runId],
  );
  const totals = await trx('findings')
    .where({ run_id: runId })
    .groupBy('status')
    .select('status')
    .count<{ status: FindingStatus; n: string }[]>('* as n');
  const by = (st: FindingStatus) => Number(totals.find((r) => r.status === st)?.n ?? 0);
  return {
    open: by('open'),
    waived: by('waived'),
    closed: by('closed'),
    new: (inserted as { rowCount: number }).rowCount ?? 0,
    reopened,
    closedNow: (closed as { rowCount: number }).rowCount ?? 0,
  };
}
