import type { Knex } from 'knex';
import { TributaryError } from '../../errors.js';
import { recordAudit } from '../kernel/audit.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { isValidated, releaseState, transition } from '../kernel/lifecycle.js';
import { runTables } from '../kernel/workArea.js';
import { CROSS_RELEASE } from './crossRelease.js';
import { queueRunIds } from './queue.js';
import type { ConflictRow } from './types.js';
import { undoTable } from './undoLog.js';

/**
 * Undo: a decision (D-<id>, or the conflict's code) or a pattern decision (PD-<id>, each of its
 * decisions) is taken back: the conflict is open again and the run's result and key map are as they
 * were before the decision (the rows' images from its undo log, undoLog.ts). Refused when a later
 * decision changed the same rows (it names it: undo that one first), and for a decision of an earlier
 * consolidation. The blast radius is shown first (dryRun); the undo is audited, per decision.
 */

export interface UndoBlast {
  /** Result rows put back as they were (changed or deleted by the decision). */
  restored: number;
  /** Result rows the decision added, removed again. */
  removed: number;
  /** Key map entries put back or removed. */
  keyMap: number;
  /** The conflicts open again. */
  reopened: string[];
}

export interface UndoOutcome {
  target: string;
  release: string;
  decisions: { id: string; code: string; decidedBy: string; pattern?: string }[];
  blast: UndoBlast;
  applied: boolean;
  rationale?: string;
}

interface Target {
  release: string;
  pattern?: { id: number; code: string };
  rows: (ConflictRow & { decision_id: number; decided_by_d: string; pattern_decision_id: number | null })[];
}

async function decisionsOf(trx: Knex.Transaction, where: (q: Knex.QueryBuilder) => void): Promise<Target['rows']> {
  const q = trx('decisions as d')
    .join('conflicts as c', 'c.id', 'd.conflict_id')
    .select('c.*', 'd.id as decision_id', 'd.decided_by as decided_by_d', 'd.pattern_decision_id')
    .orderBy('d.id');
  where(q);
  return (await q.forUpdate()) as Target['rows'];
}

/** Which decisions an undo target names: PD-<n>, D-<n>, or a conflict's code (release given). */
async function resolveTarget(ctx: Ctx, trx: Knex.Transaction, target: string, release?: string): Promise<Target> {
  const t = target.toUpperCase();
  let m: RegExpExecArray | null;
  if ((m = /^PD-(\d+)$/.exec(t))) {
    const pd = await trx('pattern_decisions').where({ id: Number(m[1]) }).forUpdate().first();
    if (!pd) throw new TributaryError('unknown_conflict', `no pattern decision ${t}`, { code: t });
    if (pd.undone_at) {
      const message = `${t} was already undone by ${pd.undone_by} at ${new Date(pd.undone_at).toISOString()}`;
      throw new TributaryError('already_decided', message, { code: t });
    }
    const rows = await decisionsOf(trx, (q) => q.where('d.pattern_decision_id', pd.id));
    return { release: pd.release, pattern: { id: pd.id, code: t }, rows };
  }
  if ((m = /^D-(\d+)$/.exec(t))) {
    const id = Number(m[1]);
    const rows = await decisionsOf(trx, (q) => q.where('d.id', id));
    const head = rows[0];
    if (!head) {
      const message = `no decision ${t} (an undone decision is gone; tributary audit lists them)`;
      throw new TributaryError('unknown_conflict', message, { code: t });
    }
    return { release: head.release, rows };
  }
  if (!release) {
    throw new TributaryError('usage', `undo takes a decision (D-<n>), a pattern decision (PD-<n>) or a conflict's code with --release`);
  }
  const runIds = await queueRunIds(trx, release);
  const rows = await decisionsOf(trx, (q) => q.whereIn('c.run_id', runIds).where('c.code', t));
  if (rows.length === 0) {
    const message = `no decided conflict ${t} in ${release}'s current consolidation or open promotion`;
    throw new TributaryError('unknown_conflict', message, { code: t });
  }
  return { release, rows };
}

class DryRun {
  constructor(readonly outcome: UndoOutcome) {}
}

type UndoRow = Target['rows'][number];

/** Decisions of an earlier consolidation are undone there no more: their current one is. */
async function refuseStale(trx: Knex.Transaction, release: string, rows: UndoRow[]): Promise<void> {
  const current = await queueRunIds(trx, release);
  const stale = rows.filter((r) => !current.includes(r.run_id));
  const first = stale[0];
  if (first) {
    throw new TributaryError(
      'gate_state',
      `${stale.map((r) => r.code).join(', ')} belong(s) to an earlier consolidation of ${release} (run #${first.run_id}): ` +
        'its decision was carried into the current one or re-opened; undo that one instead',
      { release },
    );
  }
}

/** Every decision undone must have logged what it changed (decisions before the undo log did not). */
async function requireLogged(trx: Knex.Transaction, log: string, release: string, logged: UndoRow[]): Promise<void> {
  const has = (await trx.raw<{ rows: { r: string | null }[] }>('select to_regclass(?)::text as r', [log])).rows[0]?.r;
  const counted = has
    ? (await trx.raw<{ rows: { conflict_id: number }[] }>(`select distinct conflict_id from ${log} where conflict_id = any(?::int[])`, [
        logged.map((r) => r.id),
      ])).rows
    : [];
  const missing = logged.filter((r) => !counted.some((x) => x.conflict_id === r.id));
  if (missing.length > 0) {
    const codes = missing.map((r) => r.code).join(', ');
    const message = `${codes}: decided before decisions kept an undo log; re-consolidate ${release} to re-open it`;
    throw new TributaryError('gate_state', message, { release });
  }
}

/** A later decision that changed the same rows is undone first. */
async function refuseLater(trx: Knex.Transaction, log: string, target: string, ids: number[]): Promise<void> {
  const later = await trx.raw<{ rows: { conflict_id: number }[] }>(
    `select distinct l2.conflict_id from ${log} l1 join ${log} l2 on l2.tbl = l1.tbl and l2.row_key = l1.row_key and l2.seq > l1.seq
            where l1.conflict_id = any(?::int[]) and not (l2.conflict_id = any(?::int[]))`,
    [ids, ids],
  );
  if (later.rows.length === 0) return;
  const deps = await trx('conflicts as c')
    .join('decisions as d', 'd.conflict_id', 'c.id')
    .whereIn('c.id', later.rows.map((r) => r.conflict_id))
    .select('c.code', 'd.id', 'd.decided_by')
    .orderBy('d.id');
  const named = deps.map((d) => `${d.code} (D-${d.id}, by ${d.decided_by})`).join(', ');
  throw new TributaryError(
    'gate_state',
    `${target.toUpperCase()}: a later decision changed the same rows: ${named}; undo ${deps.length > 1 ? 'them' : 'it'} first`,
    { dependsOn: deps.map((d) => `D-${d.id}`) },
  );
}

/** Each row's first image in the log is how it was before: put it back (a row first inserted is removed). */
async function putBack(trx: Knex.Transaction, runId: number, log: string, ids: number[], blast: UndoBlast): Promise<void> {
  const t = runTables(runId);
  const first = `(select distinct on (tbl, row_key) tbl, row_key, op, old from ${log}
                   where conflict_id = any(?::int[]) order by tbl, row_key, seq)`;
  const counts = await trx.raw<{ rows: { tbl: string; op: string; n: number }[] }>(
    `select tbl, op, count(*)::int as n from ${first} f group by tbl, op`,
    [ids],
  );
  for (const c of counts.rows) {
    if (c.tbl === 'key_map') blast.keyMap += c.n;
    else if (c.op === 'I') blast.removed += c.n;
    else blast.restored += c.n;
  }
  await trx.raw(
    `with f as ${first}
           delete from ${t.result} r using f
            where f.tbl = 'result' and r.entity = split_part(f.row_key, chr(31), 1) and r.identity = split_part(f.row_key, chr(31), 2)`,
    [ids],
  );
  await trx.raw(
    `insert into ${t.result} select (jsonb_populate_record(null::${t.result}, f.old)).*
       from ${first} f where f.tbl = 'result' and f.op <> 'I'`,
    [ids],
  );
  await trx.raw(
    `with f as ${first}
           delete from ${t.keyMap} m using f
            where f.tbl = 'key_map' and m.entity = split_part(f.row_key, chr(31), 1) and m.env = split_part(f.row_key, chr(31), 2)
              and m.old_pk = split_part(f.row_key, chr(31), 3)`,
    [ids],
  );
  await trx.raw(
    `insert into ${t.keyMap} select (jsonb_populate_record(null::${t.keyMap}, f.old)).*
       from ${first} f where f.tbl = 'key_map' and f.op <> 'I'`,
    [ids],
  );
  await trx.raw(`delete from ${log} where conflict_id = any(?::int[])`, [ids]);
}

/** The consolidation's decisions (one run) each logged what they changed: it is put back. */
async function restoreLogged(
  trx: Knex.Transaction,
  release: string,
  target: string,
  logged: UndoRow[],
  ids: number[],
  blast: UndoBlast,
): Promise<void> {
  const head = logged[0];
  if (!head) return;
  const log = undoTable(head.run_id);
  await requireLogged(trx, log, release, logged);
  await refuseLater(trx, log, target, ids);
  await putBack(trx, head.run_id, log, ids, blast);
}

/** The conflicts open again, the pattern decision marked undone, and a validated release sent back to validation. */
async function reopen(trx: Knex.Transaction, t: Target, ids: number[], actor: Actor, changedData: boolean): Promise<void> {
  await trx('decisions').whereIn('id', t.rows.map((r) => r.decision_id)).delete();
  await trx('conflicts').whereIn('id', ids).update({ status: 'open', decided_by: null, decided_at: null });
  if (t.pattern) {
    await trx('pattern_decisions').where({ id: t.pattern.id }).update({ undone_by: actor, undone_at: trx.fn.now() });
  }
  // the dataset changed back: a validated release must be validated again
  await trx('release_states').where({ release: t.release }).forUpdate().first();
  const { state } = await releaseState(trx, t.release);
  if (changedData && isValidated(state)) await transition(trx, t.release, 'invalidate');
}

/** One audit event per decision undone, and one for the pattern decision. */
async function auditUndo(
  trx: Knex.Transaction,
  t: Target,
  actor: Actor,
  rationale: string,
  blast: UndoBlast,
): Promise<UndoOutcome['decisions']> {
  const { release, pattern, rows } = t;
  const decisions = rows.map((r) => ({
    id: `D-${r.decision_id}`,
    code: r.code,
    decidedBy: r.decided_by_d,
    ...(r.pattern_decision_id ? { pattern: `PD-${r.pattern_decision_id}` } : {}),
  }));
  for (const d of decisions) {
    const details = { decision: d.id, ...(d.pattern ? { patternDecision: d.pattern } : {}), rationale };
    await recordAudit(trx, { actor, action: 'decision.undone', release, subject: d.code, details });
  }
  if (pattern) {
    const details = { conflicts: blast.reopened, rationale, blast };
    await recordAudit(trx, { actor, action: 'pattern.undone', release, subject: pattern.code, details });
  }
  return decisions;
}

export async function undoDecision(
  ctx: Ctx,
  target: string,
  by: { actor: Actor; rationale: string; release?: string; dryRun?: boolean },
): Promise<UndoOutcome> {
  const rationale = by.rationale?.trim() || (by.dryRun ? '(dry run)' : '');
  if (!rationale) {
    throw new TributaryError('decision_invalid', `an undo needs a rationale (why take ${target} back?)`, { field: 'rationale' });
  }
  try {
    return await ctx.db.control.transaction(async (trx) => {
      const resolved = await resolveTarget(ctx, trx, target, by.release);
      const { release, rows } = resolved;
      await refuseStale(trx, release, rows);
      const ids = rows.map((r) => r.id);
      const blast: UndoBlast = { restored: 0, removed: 0, keyMap: 0, reopened: rows.map((r) => r.code) };
      // cross-release decisions change master only at promote: nothing logged to put back
      const logged = rows.filter((r) => r.kind !== CROSS_RELEASE);
      await restoreLogged(trx, release, target, logged, ids, blast);
      await reopen(trx, resolved, ids, by.actor, logged.length > 0);
      const decisions = await auditUndo(trx, resolved, by.actor, rationale, blast);
      const outcome: UndoOutcome = { target: target.toUpperCase(), release, decisions, blast, applied: true, rationale };
      if (by.dryRun) throw new DryRun({ ...outcome, applied: false });
      return outcome;
    });
  } catch (err) {
    if (err instanceof DryRun) return err.outcome;
    throw err;
  }
}
