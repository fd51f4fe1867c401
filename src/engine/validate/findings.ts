import type { Knex } from 'knex';
import { releaseOrThrow } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { recordAudit } from '../kernel/audit.js';
import { requireRationale } from '../kernel/rationale.js';
import { type ConflictRow, describeDecision, planRecordDecision, type BlastRadius, type Decision } from '../review/index.js';
import { currentRunId } from '../kernel/workArea.js';
import { type Actor, type Ctx } from '../kernel/context.js';
import { isValidated, releaseState, transition } from '../kernel/lifecycle.js';
import { authorize } from '../kernel/roles.js';
import { lockKey, type FindingStatus, type FindingRow } from './types.js';
import { must } from '../kernel/must.js';

// ---------------------------------------------------------------------------------------------------
// listing, waivers and decisions

export interface FindingFilter {
  status?: FindingStatus | 'all' | 'current';
}

/** The findings of the release's current consolidation (default: open and waived), in code order. */
export async function listFindings(ctx: Ctx, release: string, filter: FindingFilter = {}): Promise<FindingRow[]> {
  releaseOrThrow(ctx.config, release);
  const runId = await currentRunId(ctx, release);
  const q = ctx.db.control<FindingRow>('findings').where({ run_id: runId }).orderBy('seq');
  const status = filter.status ?? 'current';
  if (status === 'current') q.whereIn('status', ['open', 'waived']);
  else if (status !== 'all') q.where({ status });
  return (await q) as FindingRow[];
}

function seqOf(code: string): number {
  const m = /^F-?0*(\d+)$/i.exec(code.trim());
  if (!m) throw new TributaryError('usage', `"${code}" is not a finding code (F-001, as tributary validate lists them)`);
  return Number(m[1]);
}

export function isFindingCode(code: string): boolean {
  return /^F-?\d+$/i.test(code.trim());
}

async function lockedFinding(ctx: Ctx, trx: Knex.Transaction, release: string, code: string): Promise<FindingRow> {
  releaseOrThrow(ctx.config, release);
  await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [lockKey(release)]);
  const runId = await currentRunId({ db: { control: trx as unknown as Knex } }, release);
  const row = await trx<FindingRow>('findings').where({ run_id: runId, seq: seqOf(code) }).forUpdate().first();
  if (!row) {
    const message = `no finding ${code} in release ${release}'s current consolidation (tributary validate ${release} lists them)`;
    throw new TributaryError('unknown_conflict', message, { code });
  }
  return row as FindingRow;
}

function refuseUnlessOpen(f: FindingRow): void {
  if (f.status === 'waived') {
    const message = `${f.code} was already waived by ${f.waived_by} at ${f.waived_at?.toISOString()}: ${f.rationale}`;
    throw new TributaryError('already_decided', message, { code: f.code });
  }
  if (f.status === 'closed') {
    const message = `${f.code} is closed (${f.resolution ?? 'no longer occurs'}${f.closed_by ? `, ${f.closed_by}` : ''})`;
    throw new TributaryError('already_decided', message, { code: f.code });
  }
}

/** A qa_lead accepts a finding as it is, with a rationale (audited; a refusal too). */
export async function waiveFinding(
  ctx: Ctx,
  release: string,
  code: string,
  by: { actor: Actor; rationale: string; user?: string; groups?: string[] },
): Promise<FindingRow> {
  releaseOrThrow(ctx.config, release);
  await authorize(ctx, by.user ?? by.actor, by.groups ?? [], 'waive', release);
  const rationale = requireRationale(by.rationale, 'a waiver', `why may ${code} stay as it is?`);
  return ctx.db.control.transaction(async (trx) => {
    const f = await lockedFinding(ctx, trx, release, code);
    refuseUnlessOpen(f);
    const [row] = await trx<FindingRow>('findings')
      .where({ id: f.id })
      .update({ status: 'waived', waived_by: by.actor, waived_at: trx.fn.now() as unknown as Date, rationale })
      .returning('*');
    await recordAudit(trx, {
      actor: by.actor,
      action: 'finding.waived',
      release,
      subject: f.code,
      details: { runId: f.run_id, entity: f.entity, key: f.key, rule: f.rule, column: f.column, value: f.value, rationale },
    });
    return row as FindingRow;
  });
}

export const FINDING_ACTIONS = ['delete', 'repoint'] as const;

export interface FindingDecisionOutcome {
  finding: FindingRow;
  decision: Decision;
  blast: BlastRadius;
  applied: boolean;
}

class PlanOnly {
  constructor(readonly outcome: FindingDecisionOutcome) {}
}

/** A decision applies to a finding about one record; re-pointing, to a finding about a reference. */
function refuseUndecidable(f: FindingRow, d: Decision, release: string): void {
  if (f.identity === '*' || f.key === null) {
    const message =
      `${f.code} is about ${f.entity} as a whole, not one record: ` + 'fix the source (or the test) and consolidate again, or waive it';
    throw new TributaryError('decision_invalid', message, { code: f.code });
  }
  if (!(FINDING_ACTIONS as readonly string[]).includes(d.action)) {
    const message =
      `decide a finding with ${FINDING_ACTIONS.join(' or ')} (or waive it: tributary waive ${f.code} --release ${release}); ` +
      `not ${d.action}`;
    throw new TributaryError('decision_invalid', message, { code: f.code });
  }
  if (d.action === 'repoint' && !(f.detail.parent && f.column)) {
    const message = `${f.code} (${f.rule}) is not about a reference: delete the record, fix the source, or waive it`;
    throw new TributaryError('decision_invalid', message, { code: f.code });
  }
}

/** The finding as the reference conflict a record decision takes (src/engine/review/decide.ts). */
function findingConflict(ctx: Ctx, release: string, f: FindingRow): ConflictRow {
  const entity = must(
    ctx.config.entities.find((e) => e.name === f.entity),
    `entity ${f.entity} of finding ${f.code} in the config`,
  );
  return {
    id: 0,
    release,
    run_id: f.run_id,
    code: f.code,
    entity: f.entity,
    identity: f.identity,
    key_label: `${entity.primaryKey}=${f.key}`,
    kind: f.rule,
    priority: 'P1',
    status: 'open',
    detail: {
      reason: f.message,
      suggestion: 'delete',
      ...(f.column ? { column: f.column } : {}),
      ...(f.detail.parent ? { parent: f.detail.parent } : {}),
    },
    assigned_to: null,
    assigned_at: null,
    decided_by: null,
    decided_at: null,
  } as ConflictRow;
}

/**
 * Closes a finding on a record with a decision of the same kinds as a reference conflict's: delete the
 * record (with `cascade`, its dependents too) or re-point its reference. The record changes in the
 * consolidated dataset exactly as a conflict decision changes it (src/engine/review/decide.ts); validate again
 * afterwards. With `dryRun`, shows the blast radius and changes nothing.
 */
export async function decideFinding(
  ctx: Ctx,
  release: string,
  code: string,
  d: Decision,
  by: { actor: Actor; rationale: string },
  opts: { dryRun?: boolean } = {},
): Promise<FindingDecisionOutcome> {
  const rationale = opts.dryRun
    ? by.rationale?.trim()
    : requireRationale(by.rationale, 'a decision', `why ${d.action} the record of ${code}?`);
  try {
    return await ctx.db.control.transaction(async (trx) => {
      const f = await lockedFinding(ctx, trx, release, code);
      refuseUnlessOpen(f);
      // locked before the data changes (see applyDecision): a running validation finishes first
      if (!opts.dryRun) await trx('release_states').where({ release }).forUpdate().first();
      refuseUndecidable(f, d, release);
      const conflict = findingConflict(ctx, release, f);
      const summary = `${by.actor}: ${describeDecision(conflict, d)} (finding ${f.code}, ${f.rule}) — ${rationale}`;
      const plan = await planRecordDecision(ctx, trx, conflict, d, summary);
      if (opts.dryRun) throw new PlanOnly({ finding: f, decision: d, blast: plan.blast, applied: false });
      await plan.apply();
      const [row] = await trx<FindingRow>('findings')
        .where({ id: f.id })
        .update({
          status: 'closed',
          closed_at: trx.fn.now() as unknown as Date,
          closed_by: by.actor,
          resolution: `${describeDecision(conflict, d)} — ${rationale}`,
          detail: JSON.stringify({ ...f.detail, decision: d, blast: plan.blast }) as unknown as FindingRow['detail'],
        })
        .returning('*');
      const { state } = await releaseState(trx, release);
      if (isValidated(state)) await transition(trx, release, 'invalidate');
      await recordAudit(trx, {
        actor: by.actor,
        action: 'finding.decision',
        release,
        subject: f.code,
        details: { runId: f.run_id, entity: f.entity, key: f.key, rule: f.rule, decision: d, rationale, blast: plan.blast },
      });
      return { finding: row as FindingRow, decision: d, blast: plan.blast, applied: true };
    });
  } catch (err) {
    if (err instanceof PlanOnly) return err.outcome;
    throw err;
  }
}
