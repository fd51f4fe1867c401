import os from 'node:os';
import type { Knex } from 'knex';
import type { ConflictsRow, RunsRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import { recordAudit } from '../kernel/audit.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { firstRow, must } from '../kernel/must.js';
import { type ConflictRow, CROSS_RELEASE, openPromoteRunId, PROMOTE_CODE_PREFIX } from '../review/index.js';
import type { Blocking } from './types.js';

/** A refused promotion: its conflicts recorded in the release's open promote run, and what to do said. */

export const PROMOTE_LOCK = 'tributary:promote';

/** Thrown inside master's transaction when conflicts are open: rolls it back, then they are recorded. */
export class Refused {
  constructor(
    readonly blocking: Blocking[],
    readonly issues: string[],
    readonly detected: Set<string>,
  ) {}
}

/** Records the conflicts that refused the promotion (in the release's open promote run) and says what to do. */
export async function refuse(ctx: Ctx, release: string, actor: Actor, r: Refused): Promise<TributaryError> {
  const k: Knex = ctx.db.control;
  const { open, created, dropped } = await k.transaction(async (trx) => {
    await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [`${PROMOTE_LOCK}:${release}`]);
    let run = await openPromoteRunId(trx, release);
    const fresh = r.blocking.filter((b) => !b.existing || b.existing.run_id !== run);
    if (!run && r.blocking.length > 0) {
      const [row] = await trx<RunsRow>('runs')
        .insert({ release, kind: 'promote', status: 'open', started_by: actor, pid: process.pid, host: os.hostname() })
        .returning('id');
      run = Number(must(row, 'the new promote run').id);
    }
    const created = await createConflicts(trx, release, run, fresh);
    for (const b of r.blocking) {
      if (b.existing && b.existing.run_id === run) {
        const refreshed = { detail: JSON.stringify(b.detail), key_label: b.keyLabel, priority: b.priority };
        await trx<ConflictsRow>('conflicts').where({ id: b.existing.id }).update(refreshed);
      }
    }
    const dropped = run ? await dropStale(trx, run, r.detected) : [];
    const open = run
      ? ((await trx<ConflictsRow>('conflicts').where({ run_id: run, status: 'open' }).orderBy(['priority', 'code'])) as ConflictRow[])
      : [];
    await recordAudit(trx, {
      actor,
      action: 'promote.refused',
      release,
      details: { runId: run, open: open.map((c) => c.code), created, ...(dropped.length ? { dropped } : {}), issues: r.issues },
    });
    return { open, created, dropped };
  });
  return refusal(release, r.issues, open, created, dropped);
}

/** The new conflicts, numbered after the release's last (C-X001…); their codes. */
async function createConflicts(trx: Knex.Transaction, release: string, run: number | null, fresh: Blocking[]): Promise<string[]> {
  const created: string[] = [];
  if (fresh.length === 0) return created;
  const runId = must(run, 'the promote run of the new conflicts');
  const max = await trx.raw<{ rows: { n: number | null }[] }>(
    `select max(substring(code from ${PROMOTE_CODE_PREFIX.length + 1})::int) as n from conflicts where release = ? and code like ?`,
    [release, `${PROMOTE_CODE_PREFIX}%`],
  );
  let n = Number(max.rows[0]?.n ?? 0);
  for (const b of fresh) {
    n += 1;
    const code = `${PROMOTE_CODE_PREFIX}${String(n).padStart(3, '0')}`;
    created.push(code);
    await trx<ConflictsRow>('conflicts').insert({
      release,
      run_id: runId,
      code,
      entity: b.entity,
      identity: b.identity,
      key_label: b.keyLabel,
      kind: CROSS_RELEASE,
      priority: b.priority,
      detail: JSON.stringify(b.detail),
    });
  }
  return created;
}

/** Open conflicts of the run that no longer occur are deleted; their codes. */
async function dropStale(trx: Knex.Transaction, run: number, detected: Set<string>): Promise<string[]> {
  type Open = Pick<ConflictsRow, 'id' | 'code' | 'entity' | 'identity'>;
  const rows = (await trx<ConflictsRow>('conflicts')
    .where({ run_id: run, status: 'open' })
    .select('id', 'code', 'entity', 'identity')) as Open[];
  const stale = rows.filter((c) => !detected.has(`${c.entity}\u0000${c.identity}`));
  if (stale.length > 0) await trx<ConflictsRow>('conflicts').whereIn('id', stale.map((c) => c.id)).del();
  return stale.map((c) => c.code);
}

function refusal(release: string, issues: string[], open: ConflictRow[], created: string[], dropped: string[]): TributaryError {
  const lines = open.slice(0, 20).map((c) => `  ${c.code} ${c.priority}: ${c.detail.reason}`);
  if (open.length > 20) lines.push(`  … and ${open.length - 20} more`);
  const parts = [];
  if (open.length > 0) {
    const first = firstRow(open, 'an open conflict').code;
    parts.push(
      `promotion of ${release} refused: ${open.length} cross-release conflict(s) with master's earlier releases are open:\n` +
        `${lines.join('\n')}\n` +
        `Decide them (tributary conflicts ${release}; ` +
        `tributary decide ${first} --keep 1|2 | --keep-both [--rename 2.<column>=<value>] | --delete --rationale "…"), then promote again.`,
    );
  }
  if (issues.length > 0) parts.push(`${open.length > 0 ? '' : `promotion of ${release} refused: `}${issues.join('\n')}`);
  const conflicts = open.map((c) => ({ code: c.code, priority: c.priority, entity: c.entity, key: c.key_label, reason: c.detail.reason }));
  return new TributaryError('gate_conflicts', parts.join('\n'), { release, conflicts, created, dropped, issues });
}
