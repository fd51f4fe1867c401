import type { Knex } from 'knex';
import type { ReleaseStatesRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import { recordAudit } from './audit.js';
import type { Actor } from './context.js';

/**
 * The release lifecycle as data. Later stages (validated, loaded, tiers, deploy) extend this table;
 * a transition that is not allowed fails with a coded error that says what must happen first.
 */
export const RELEASE_STATES = [
  'planned',
  'locked',
  'consolidated',
  'validated',
  'loaded',
  'tier1-passed',
  'promoted',
  'tier2-passed',
  'approved',
] as const;
export type ReleaseState = (typeof RELEASE_STATES)[number];

export type ReleaseEvent =
  | 'lock'
  | 'consolidate'
  | 'validate'
  | 'invalidate'
  | 'import'
  | 'load'
  | 'tier1'
  | 'promote'
  | 'tier2'
  | 'approve';

/** States from which the data may be loaded again (a re-load sends the release back through testing). */
const AFTER_LOAD: readonly ReleaseState[] = ['loaded', 'tier1-passed', 'promoted', 'tier2-passed', 'approved'];
const AFTER_CONSOLIDATE: readonly ReleaseState[] = ['consolidated', 'validated', ...AFTER_LOAD];

const TRANSITIONS: Record<ReleaseEvent, { from: readonly ReleaseState[]; to: ReleaseState; first: string }> = {
  lock: { from: ['planned', 'locked', ...AFTER_CONSOLIDATE], to: 'locked', first: '' },
  consolidate: { from: ['locked', ...AFTER_CONSOLIDATE], to: 'consolidated', first: 'tag and lock it first: tributary tag <release>' },
  /** Validation passed: no open findings. */
  validate: { from: AFTER_CONSOLIDATE, to: 'validated', first: 'consolidate it first: tributary consolidate <release>' },
  /** A decision or a new finding after validation: validate again. */
  invalidate: { from: AFTER_CONSOLIDATE, to: 'consolidated', first: 'consolidate it first: tributary consolidate <release>' },
  /**
   * On premises: a signed transfer package of a release validated on the cloud side arrived ("validated
   * (imported)"; its run is of kind import); the load that follows continues the usual lifecycle.
   */
  import: {
    from: ['planned', 'validated', ...AFTER_LOAD],
    to: 'validated',
    first: 'the release is being consolidated on this side: import it on a side without sources',
  },
  load: {
    from: ['validated', ...AFTER_LOAD],
    to: 'loaded',
    first: 'validate it first (loading is refused while findings are open): tributary validate <release>',
  },
  /** Tier 1 passed on the loaded data. */
  tier1: { from: AFTER_LOAD, to: 'tier1-passed', first: 'load it into staging first: tributary load <release>' },
  /** Staging merged into the cumulative master. */
  promote: {
    from: ['tier1-passed', 'promoted', 'tier2-passed', 'approved'],
    to: 'promoted',
    first: 'pass tier 1 on the loaded data first: tributary test <release> --tier 1',
  },
  /** Tier 2 passed its gate on master. */
  tier2: { from: ['promoted', 'tier2-passed'], to: 'tier2-passed', first: 'promote it first: tributary promote <release>' },
  /** A qa_lead's approval: ready for production (past a failed gate only with an override rationale). */
  approve: { from: ['promoted', 'tier2-passed', 'approved'], to: 'approved', first: 'run tier 2 first: tributary test <release> --tier 2' },
};

/** Validated, and maybe loaded, tested, promoted or approved since: a change to the data invalidates it. */
export function isValidated(state: ReleaseState): boolean {
  return state === 'validated' || AFTER_LOAD.includes(state);
}

export function nextState(release: string, current: ReleaseState, event: ReleaseEvent): ReleaseState {
  const t = TRANSITIONS[event];
  if (!t.from.includes(current)) {
    throw new TributaryError('gate_state', `release ${release} is ${current}: cannot ${event} it; ${t.first}`, {
      release,
      state: current,
      event,
    });
  }
  return t.to;
}

export async function releaseState(
  db: Knex | Knex.Transaction,
  release: string,
): Promise<{ state: ReleaseState; currentRunId: number | null }> {
  const row = await db<ReleaseStatesRow>('release_states').where({ release }).first();
  return row ? { state: row.state as ReleaseState, currentRunId: row.current_run_id } : { state: 'planned', currentRunId: null };
}

/**
 * A release's gate before a step: its state, when `check` lets the step run from it (check throws the refusal,
 * which says what must happen first); else the refusal is audited as `gate.<step>.refused` with the state,
 * and thrown. Without `check`, the step is the lifecycle event of that name.
 */
export async function passGate(db: Knex, release: string, step: ReleaseEvent, actor: Actor): Promise<ReleaseState>;
export async function passGate(
  db: Knex,
  release: string,
  step: string,
  actor: Actor,
  check: (state: ReleaseState) => void,
): Promise<ReleaseState>;
export async function passGate(
  db: Knex,
  release: string,
  step: string,
  actor: Actor,
  check?: (state: ReleaseState) => void,
): Promise<ReleaseState> {
  const { state } = await releaseState(db, release);
  try {
    if (check) check(state);
    else nextState(release, state, step as ReleaseEvent);
  } catch (err) {
    await recordAudit(db, { actor, action: `gate.${step}.refused`, release, details: { state } });
    throw err;
  }
  return state;
}

export async function transition(
  db: Knex | Knex.Transaction,
  release: string,
  event: ReleaseEvent,
  extra: { currentRunId?: number } = {},
): Promise<ReleaseState> {
  const { state } = await releaseState(db, release);
  const to = nextState(release, state, event);
  await db<ReleaseStatesRow>('release_states')
    .insert({ release, state: to, updated_at: db.fn.now(), ...(extra.currentRunId ? { current_run_id: extra.currentRunId } : {}) })
    .onConflict('release')
    .merge();
  return to;
}
