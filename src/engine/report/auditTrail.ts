import type { Knex } from 'knex';
import { releaseOrThrow } from '../../config/load.js';
import { auditKeyOf } from '../../db/connect.js';
import type { AuditEventsRow, RunsRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import { AT_FORMAT, eventHash } from '../kernel/audit.js';
import type { Ctx } from '../kernel/context.js';
import { releaseState, type ReleaseState } from '../kernel/lifecycle.js';
import { firstRow, must } from '../kernel/must.js';
import { resultCounts } from './status.js';
import { autoResolutionCounts, autoResolutionDigest } from '../review/index.js';

/**
 * Reading the audit trail: the summary QA leads report for a release (counts, the time of each step,
 * the chain head as a witness), the release's events for export, and the verification of the chain.
 */

/** The newest event of the chain: its hash, kept outside the database, witnesses everything before it. */
export interface ChainHead {
  seq: number;
  id: number;
  hash: string;
  at: string;
}

export type StepName = 'collection' | 'detection' | 'resolution' | 'review' | 'validation' | 'loading';

export interface StepTime {
  status: 'done' | 'in progress' | 'not run yet' | 'none needed';
  ms: number | null;
  /** e.g. "2 of 3 decided" for the review. */
  note?: string;
}

export interface AuditSummary {
  release: string;
  state: ReleaseState;
  runId: number | null;
  counts: {
    collected: number;
    conflicts: number;
    autoResolved: number;
    autoResolvedPct: number;
    manual: number;
    manualPct: number;
    final: number;
    pending: number;
    merged: number;
    renamed: number;
    rekeyed: number;
    deleted: number;
    /** The automatic resolutions per rule (re-key included), and how many of them were overruled. */
    autoByRule: Record<string, number>;
    overruled: number;
  } | null;
  steps: Record<StepName, StepTime>;
  /** Audit events of this release. */
  events: number;
  head: ChainHead | null;
}

export interface AuditEventView {
  id: number;
  seq: number | null;
  at: string;
  actor: string;
  action: string;
  release: string | null;
  subject: string | null;
  details: Record<string, unknown>;
  prev_hash: string | null;
  hash: string | null;
}

const pct = (n: number, of: number) => (of === 0 ? 0 : Math.round((1000 * n) / of) / 10);
const NOT_RUN: StepTime = { status: 'not run yet', ms: null };

export async function chainHead(db: Knex): Promise<ChainHead | null> {
  const res = await db.raw<{ rows: ChainHead[] }>(
    `select seq, id, hash, to_char(at at time zone 'UTC', ${AT_FORMAT}) as at
       from audit_events where seq is not null order by seq desc limit 1`,
  );
  return res.rows[0] ?? null;
}

/** Every event of a release, oldest first (at in ISO UTC). */
export async function releaseEvents(db: Knex, release: string): Promise<AuditEventView[]> {
  const res = await db.raw<{ rows: AuditEventView[] }>(
    `select id, seq, to_char(at at time zone 'UTC', ${AT_FORMAT}) as at, actor, action, release, subject, details, prev_hash, hash
       from audit_events where release = ? order by id`,
    [release],
  );
  return res.rows;
}

/** The latest `<step>.finish` event of the current run (validation and loading record their time in details.ms). */
async function finishedStep(db: Knex, release: string, action: string, runId: number, after: number): Promise<StepTime> {
  const row = await db<AuditEventsRow>('audit_events')
    .where({ release, action })
    .where('id', '>', after)
    .where((q) => q.whereRaw(`details->>'runId' is null`).orWhereRaw(`details->>'runId' = ?`, [String(runId)]))
    .orderBy('id', 'desc')
    .first('details');
  if (!row) return NOT_RUN;
  const ms = Number((row.details as { ms?: unknown }).ms);
  return { status: 'done', ms: Number.isFinite(ms) ? Math.round(ms) : null };
}

export async function auditSummary(ctx: Ctx, release: string): Promise<AuditSummary> {
  releaseOrThrow(ctx.config, release);
  const db = ctx.db.control;
  const { state, currentRunId } = await releaseState(db, release);
  const [{ n: events }] = (await db('audit_events').where({ release }).count('* as n')) as unknown as [{ n: number }];
  const head = await chainHead(db);
  const steps: Record<StepName, StepTime> = {
    collection: NOT_RUN,
    detection: NOT_RUN,
    resolution: NOT_RUN,
    review: NOT_RUN,
    validation: NOT_RUN,
    loading: NOT_RUN,
  };
  if (!currentRunId) return { release, state, runId: null, counts: null, steps, events: Number(events), head };

  const c = await resultCounts(ctx, currentRunId);
  const auto = await autoResolutionCounts(ctx, release);
  const run = await db<RunsRow>('runs').where({ id: currentRunId }).first('steps');
  const recorded = (run?.steps ?? {}) as Record<string, unknown>;
  for (const name of ['collection', 'detection', 'resolution'] as const) {
    const ms = recorded[name];
    if (typeof ms === 'number') steps[name] = { status: 'done', ms };
  }
  steps.review = await reviewTime(db, currentRunId);

  // validation and loading count only after the current run finished (a re-consolidation starts over)
  const finish = await db<AuditEventsRow>('audit_events')
    .where({ release, action: 'consolidate.finish', subject: `run #${currentRunId}` })
    .orderBy('id', 'desc')
    .first('id');
  const after = finish?.id ?? 0;
  steps.validation = await finishedStep(db, release, 'validate.finish', currentRunId, after);
  steps.loading = await finishedStep(db, release, 'load.finish', currentRunId, after);

  return {
    release,
    state,
    runId: currentRunId,
    counts: {
      collected: c.collected,
      conflicts: c.conflicts,
      autoResolved: c.autoResolved,
      autoResolvedPct: pct(c.autoResolved, c.conflicts),
      manual: c.manual,
      manualPct: pct(c.manual, c.conflicts),
      final: c.final,
      pending: c.pending,
      merged: c.merged,
      renamed: c.renamed,
      rekeyed: c.rekeyed,
      deleted: c.deleted,
      autoByRule: auto.byRule,
      overruled: auto.overruled,
    },
    steps,
    events: Number(events),
    head,
  };
}

/** The review's time: from the first conflict queued to the last decision taken. */
async function reviewTime(db: Knex, runId: number): Promise<StepTime> {
  const q = (await db('conflicts')
    .where({ run_id: runId })
    .first(
      db.raw('count(*)::int as total'),
      db.raw(`count(*) filter (where status = 'decided')::int as decided`),
      db.raw('min(created_at) as first_queued'),
      db.raw('max(decided_at) as last_decided'),
    )) as { total: number; decided: number; first_queued: Date | null; last_decided: Date | null };
  if (q.total === 0) return { status: 'none needed', ms: 0 };
  if (q.decided === 0) return { status: 'not run yet', ms: null, note: `${q.total} queued` };
  const lastDecided = must(q.last_decided, `the time of the last decision of run ${runId} (${q.decided} decided)`);
  const firstQueued = must(q.first_queued, `the time the first conflict of run ${runId} was queued`);
  const ms = Math.max(0, new Date(lastDecided).getTime() - new Date(firstQueued).getTime());
  return { status: q.decided === q.total ? 'done' : 'in progress', ms, note: `${q.decided} of ${q.total} decided` };
}

export type BreakKind = 'altered' | 'missing' | 'reordered' | 'unlinked' | 'unchained' | 'witness';

export interface ChainBreak {
  kind: BreakKind;
  /** The position and row where the chain breaks. */
  seq: number | null;
  id: number | null;
  message: string;
}

export interface ChainReport {
  intact: boolean;
  /** Chained events walked (up to the break, if any). */
  events: number;
  /** Of those, the events of the release asked about. */
  releaseEvents: number | null;
  release: string | null;
  /** Events written before the chain existed (recorded by the audit_chain_origin migration): not covered. */
  unchained: number;
  /** False without a witnessed head: the removal of the newest events cannot be seen then. */
  newestChecked: boolean;
  head: ChainHead | null;
  witness: { hash: string; found: boolean; seq: number | null; since: number | null } | null;
  broken: ChainBreak | null;
}

/** An event of the chain as the walk reads it: `at` as text (AT_FORMAT), seq and hash set. */
type WalkRow = Omit<AuditEventsRow, 'at' | 'seq' | 'hash'> & { at: string; seq: number; hash: string };

const short = (h: string | null) => (h ? h.slice(0, 16) : '∅');

/**
 * The chain vouches for the current consolidation's automatic resolutions through the digest its
 * `consolidate.auto-resolutions` event carries: a recorded resolution changed, added or removed since
 * no longer matches it.
 */
async function autoResolutionsAltered(db: Knex, release: string): Promise<ChainBreak | null> {
  const { currentRunId } = await releaseState(db, release);
  if (!currentRunId) return null;
  const event = await db<AuditEventsRow>('audit_events')
    .where({ release, action: 'consolidate.auto-resolutions', subject: `run #${currentRunId}` })
    .orderBy('id', 'desc')
    .first('id', 'seq', 'details');
  if (!event) return null;
  const recorded = event.details as { digest: string; count: number };
  const now = await autoResolutionDigest(db, currentRunId);
  if (now.digest === recorded.digest) return null;
  return {
    kind: 'altered',
    seq: event.seq,
    id: event.id,
    message:
      `the automatic resolutions of ${release}'s run #${currentRunId} were altered: ` +
      `they no longer match the digest event #${event.seq} vouches for (${now.count} recorded now, ${recorded.count} then)`,
  };
}

interface StrayCheck {
  /** Unchained events that are among those recorded as predating the chain (audit_chain_origin). */
  predating: number;
  flagged: ChainBreak | null;
}

/**
 * Events without a place in the chain (no seq, no hash): only those the install had before the chain
 * existed are expected, as recorded once by the audit_chain_origin migration (their count and id range).
 * Any other, whatever its id, was written around the audit trail or had its link removed.
 */
async function strayEvent(db: Knex): Promise<StrayCheck> {
  const res = await db.raw<{
    rows: { n: number; outside: number; first_outside: string | null; recorded: number | null; last: string | null }[];
  }>(
    `select count(e.id)::int as n,
            count(e.id) filter (where o.unchained_min_id is null
                                   or e.id not between o.unchained_min_id and o.unchained_max_id)::int as outside,
            min(e.id) filter (where o.unchained_min_id is null
                                 or e.id not between o.unchained_min_id and o.unchained_max_id) as first_outside,
            max(o.unchained_events) as recorded, max(e.id) as last
       from (select 1) as one
       left join audit_chain_origin o on true
       left join audit_events e on e.seq is null`,
  );
  const r = firstRow(res.rows, 'the count of unchained audit events');
  const recorded = r.recorded ?? 0;
  const why =
    `it has no place in the chain (no seq and hash) and is not one of the ${recorded} event(s) recorded as predating the chain: ` +
    'it was written around the audit trail, or its link was removed';
  if (r.outside > 0) {
    const message = `event id ${r.first_outside}: ${why}`;
    return { predating: r.n - r.outside, flagged: { kind: 'unchained', seq: null, id: Number(r.first_outside), message } };
  }
  if (r.n > recorded) {
    const message = `${r.n} events have no place in the chain where ${recorded} predate it (the newest is id ${r.last}): ${why}`;
    return { predating: recorded, flagged: { kind: 'unchained', seq: null, id: Number(r.last), message } };
  }
  return { predating: r.n, flagged: null };
}

/**
 * Walks the whole chain in seq order, in pages, and reports the first broken link: an event missing
 * (removed), out of order (reordered), not linked to the one before, or not matching its own hash
 * (altered; the key is needed to compute it, so a forged hash does not match either). With a witnessed
 * head (a hash printed by an earlier summary), also checks that this event is still in the chain: the
 * newest events cannot be removed unnoticed.
 */
export async function verifyChain(db: Knex, opts: { release?: string; head?: string; pageSize?: number } = {}): Promise<ChainReport> {
  const key = auditKeyOf(db);
  if (!key) throw new TributaryError('config_invalid', 'cannot verify the audit trail without its key (TRIBUTARY_AUDIT_KEY)');
  const witnessHash = opts.head?.trim().toLowerCase();
  const report: ChainReport = {
    intact: true,
    events: 0,
    releaseEvents: opts.release ? 0 : null,
    release: opts.release ?? null,
    unchained: 0,
    newestChecked: !!witnessHash,
    head: null,
    witness: witnessHash ? { hash: witnessHash, found: false, seq: null, since: null } : null,
    broken: null,
  };
  const fail = (b: ChainBreak): ChainReport => ({ ...report, intact: false, broken: b });

  const broken = await walkChain(db, key, report, opts.pageSize ?? 1000);
  if (broken) return fail(broken);

  if (opts.release) {
    const altered = await autoResolutionsAltered(db, opts.release);
    if (altered) return fail(altered);
  }

  const stray = await strayEvent(db);
  report.unchained = stray.predating;
  if (stray.flagged) return fail(stray.flagged);

  const witnessed = checkWitness(report);
  return witnessed ? fail(witnessed) : report;
}

/**
 * Walks the chain in seq order, in pages, counting into `report` (events, the release's events, the head,
 * the witness found); the first broken link, or null.
 */
async function walkChain(db: Knex, key: string, report: ChainReport, pageSize: number): Promise<ChainBreak | null> {
  let prev: ChainLink = { seq: 0, id: 0, hash: null };
  for (;;) {
    const res = await db.raw<{ rows: WalkRow[] }>(
      `select id, seq, to_char(at at time zone 'UTC', ${AT_FORMAT}) as at, actor, action, release, subject, details, prev_hash, hash
         from audit_events where seq > ? order by seq limit ?`,
      [prev.seq, pageSize],
    );
    for (const r of res.rows) {
      const broken = brokenLink(key, prev, r);
      if (broken) return broken;
      report.events += 1;
      if (report.release && r.release === report.release) report.releaseEvents = (report.releaseEvents ?? 0) + 1;
      if (report.witness && r.hash === report.witness.hash) report.witness = { ...report.witness, found: true, seq: r.seq };
      report.head = { seq: r.seq, id: r.id, hash: r.hash, at: r.at };
      prev = { seq: r.seq, id: r.id, hash: r.hash };
    }
    if (res.rows.length < pageSize) return null;
  }
}

/** The event walked before: where the next one must follow on. */
interface ChainLink {
  seq: number;
  id: number;
  hash: string | null;
}

/** How event `r` breaks the chain after `prev`: missing events, reordered rows, a broken link or an altered event; else null. */
function brokenLink(key: string, prev: ChainLink, r: WalkRow): ChainBreak | null {
  const where = `event #${r.seq} (id ${r.id}, ${r.action}${r.release ? ` ${r.release}` : ''} at ${r.at})`;
  if (r.seq !== prev.seq + 1) {
    const missing = r.seq - prev.seq - 1;
    const which = missing === 1 ? `event #${prev.seq + 1} is` : `events #${prev.seq + 1}–#${r.seq - 1} are`;
    return { kind: 'missing', seq: prev.seq + 1, id: null, message: `${which} missing: removed from the chain before ${where}` };
  }
  if (r.id <= prev.id) {
    return {
      kind: 'reordered',
      seq: r.seq,
      id: r.id,
      message: `${where} is out of order: it comes after event #${prev.seq} (id ${prev.id}) in the chain; rows were reordered`,
    };
  }
  if (r.prev_hash !== prev.hash) {
    return {
      kind: 'unlinked',
      seq: r.seq,
      id: r.id,
      message:
        `${where} does not link to the event before it: ` +
        `it names ${short(r.prev_hash)}…, event #${prev.seq} has ${short(prev.hash)}…`,
    };
  }
  const expected = eventHash(key, {
    seq: r.seq,
    at: r.at,
    actor: r.actor,
    action: r.action,
    release: r.release,
    subject: r.subject,
    details: r.details,
    prevHash: r.prev_hash,
  });
  if (expected !== r.hash) {
    return { kind: 'altered', seq: r.seq, id: r.id, message: `${where} was altered: its contents do not match its hash` };
  }
  return null;
}

/** With a witnessed head: a break when the walk did not find it, else how many events came since (in `report`). */
function checkWitness(report: ChainReport): ChainBreak | null {
  const { witness } = report;
  if (!witness) return null;
  if (!witness.found) {
    return {
      kind: 'witness',
      seq: null,
      id: null,
      message:
        `the witnessed head ${short(witness.hash)}… is not in the chain (newest is #${report.head?.seq ?? 0}): ` +
        'events at or before it were removed or rewritten',
    };
  }
  const head = must(report.head, 'the chain head, once the witnessed head was found in the chain');
  witness.since = head.seq - must(witness.seq, "the witnessed head's seq, once found");
  return null;
}
