import type { Knex } from 'knex';
import { TributaryError } from '../errors.js';

/**
 * The release lifecycle as data. Later stages (validated, loaded, tiers, deploy) extend this table;
 * a transition that is not allowed fails with a coded error that says what must happen first.
 */
export const RELEASE_STATES = ['planned', 'locked', 'consolidated', 'validated', 'loaded'] as const;
export type ReleaseState = (typeof RELEASE_STATES)[number];

export type ReleaseEvent = 'lock' | 'consolidate' | 'validate' | 'invalidate' | 'load';

const TRANSITIONS: Record<ReleaseEvent, { from: readonly ReleaseState[]; to: ReleaseState; first: string }> = {
  lock: { from: ['planned', 'locked', 'consolidated', 'validated', 'loaded'], to: 'locked', first: '' },
  consolidate: { from: ['locked', 'consolidated', 'validated', 'loaded'], to: 'consolidated', first: 'tag and lock it first: tributary tag <release>' },
  /** Validation passed: no open findings. */
  validate: { from: ['consolidated', 'validated', 'loaded'], to: 'validated', first: 'consolidate it first: tributary consolidate <release>' },
  /** A decision or a new finding after validation: validate again. */
  invalidate: { from: ['consolidated', 'validated', 'loaded'], to: 'consolidated', first: 'consolidate it first: tributary consolidate <release>' },
  load: { from: ['validated', 'loaded'], to: 'loaded', first: 'validate it first (loading is refused while findings are open): tributary validate <release>' },
};

export function nextState(release: string, current: ReleaseState, event: ReleaseEvent): ReleaseState {
  const t = TRANSITIONS[event];
  if (!t.from.includes(current)) {
    throw new TributaryError('gate_state', `release ${release} is ${current}: cannot ${event} it; ${t.first}`, { release, state: current, event });
  }
  return t.to;
}

export async function releaseState(db: Knex | Knex.Transaction, release: string): Promise<{ state: ReleaseState; currentRunId: number | null }> {
  const row = await db('release_states').where({ release }).first();
  return row ? { state: row.state as ReleaseState, currentRunId: row.current_run_id } : { state: 'planned', currentRunId: null };
}

export async function transition(
  db: Knex | Knex.Transaction,
  release: string,
  event: ReleaseEvent,
  extra: { currentRunId?: number } = {},
): Promise<ReleaseState> {
  const { state } = await releaseState(db, release);
  const to = nextState(release, state, event);
  await db('release_states')
    .insert({ release, state: to, updated_at: db.fn.now(), ...(extra.currentRunId ? { current_run_id: extra.currentRunId } : {}) })
    .onConflict('release')
    .merge();
  return to;
}
