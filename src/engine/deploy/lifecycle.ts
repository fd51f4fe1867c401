import type { Knex } from 'knex';
import type { DeploymentsRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import { must } from '../kernel/must.js';
import type { TableFigures } from './dataDeployer.js';

/**
 * The deployment lifecycle as data, in the shape of the release's (src/engine/kernel/lifecycle.ts):
 * every state, every allowed transition with its guard, in one table. This module is the only one that
 * writes `deployments.status` (test/engine/deploy/lifecycle.test.ts fails on any other write); a
 * transition that is not allowed fails with a coded error that says what must happen first.
 */
export const DEPLOYMENT_STATES = [
  'awaiting-go', 'scheduled', 'approved', 'running', 'rolling-back',
  'succeeded', 'rolled-back', 'restored-smoke-failing', 'rollback-failed', 'rejected', 'expired', 'cancelled',
] as const;
export type DeploymentStatus = (typeof DEPLOYMENT_STATES)[number];

/** A deployment in one of these holds its env (the partial unique index deployments_one_open_per_env). */
export const OPEN_STATES: readonly DeploymentStatus[] = ['awaiting-go', 'scheduled', 'approved', 'running', 'rolling-back'];
/** Run by a process, or interrupted when no live process holds its executor lock. */
export const IN_FLIGHT_STATES: readonly DeploymentStatus[] = ['approved', 'running', 'rolling-back'];
/** A release's last deployment in one of these may be rolled back on demand (a stopped rollback is taken up again). */
export const ROLLBACK_FROM: readonly DeploymentStatus[] = ['succeeded', 'rollback-failed'];

export interface StepState {
  name: string;
  status: 'running' | 'done' | 'skipped' | 'failed';
  startedAt: string;
  ms?: number;
  detail?: string;
  output?: string;
  error?: string;
  /** deploy-data: each touched table's whole count and checksum as the deploy committed it. */
  figures?: TableFigures[];
}

/**
 * A `deployments` row (src/db/rows.ts) with its status and step lists narrowed (toDeployment checks them).
 * `approved_at`: when it reached Go (approved, or claimed in its window).
 */
export type Deployment = Omit<DeploymentsRow, 'status' | 'steps' | 'undo'> & {
  status: DeploymentStatus;
  steps: StepState[];
  undo: StepState[];
};

/** A `deployments` row as a Deployment: its status one of the lifecycle's, its steps and undo steps lists. */
export function toDeployment(row: DeploymentsRow): Deployment {
  const { status, steps, undo } = row;
  if (!(DEPLOYMENT_STATES as readonly string[]).includes(status)) {
    const message = `deployment #${row.id} has the status "${status}", which is none of ${DEPLOYMENT_STATES.join(', ')}`;
    throw new TributaryError('internal', message);
  }
  if (!Array.isArray(steps) || !Array.isArray(undo)) {
    const message = `deployment #${row.id}: its steps and undo steps are not lists (deployments.steps, deployments.undo)`;
    throw new TributaryError('internal', message);
  }
  return { ...row, status: status as DeploymentStatus, steps: steps as StepState[], undo: undo as StepState[] };
}

/** Columns written with a transition (or a step's progress): anything but the status itself. */
export type DeploymentFields = { [K in Exclude<keyof Deployment, 'id' | 'status'>]?: unknown };

export type DeploymentEvent =
  | 'go' | 'schedule' | 'no-go' | 'expire' | 'claim' | 'start' | 'lock-refused' | 'cancel'
  | 'succeed' | 'roll-back' | 'rolled-back' | 'smoke-failing-after-rollback' | 'rollback-failed';

interface Transition {
  from: readonly DeploymentStatus[];
  to: DeploymentStatus;
  /** What must happen first, when the deployment is in none of `from`. */
  first: (d: Pick<Deployment, 'id' | 'release'>) => string;
  /** Beyond the state: what the deployment's own record must show; a reason when it does not. */
  guard?: (d: Deployment) => string | null;
  /** The deployment is over (finished_at is set). */
  ends?: boolean;
}

const undoSteps = (d: Deployment) => d.undo.filter((s) => s.name !== SMOKE_AFTER_ROLLBACK);
/** The last undo step: the smoke tests run on the restored state. */
export const SMOKE_AFTER_ROLLBACK = 'smoke after rollback';

const awaitingGoFirst = (d: Pick<Deployment, 'release'>) =>
  `only a deployment awaiting Go gets one; request it again (/release deploy ${d.release})`;

const TRANSITIONS: Record<DeploymentEvent, Transition> = {
  /** The Go that completes the quorum, to run now. */
  go: { from: ['awaiting-go'], to: 'approved', first: awaitingGoFirst },
  /** The Go that completes the quorum, to run in its window. */
  schedule: { from: ['awaiting-go'], to: 'scheduled', first: awaitingGoFirst },
  'no-go': { from: ['awaiting-go'], to: 'rejected', first: () => 'its go/no-go is over', ends: true },
  /** Unanswered prompt, a window passed, or an approved one whose process died, superseded. */
  expire: {
    from: ['awaiting-go', 'scheduled', 'approved'],
    to: 'expired',
    first: () => 'only a deployment not yet started expires',
    ends: true,
  },
  /** Its window came: claimed once. */
  claim: { from: ['scheduled'], to: 'approved', first: () => 'only a scheduled deployment is claimed in its window' },
  /** Run, or resumed after its process died (running again). */
  start: {
    from: ['approved', 'running'],
    to: 'running',
    first: (d) => `only an approved (or interrupted) deployment runs; see tributary deploy status ${d.id}`,
  },
  /** The lock step found the env locked: nothing was done. */
  'lock-refused': {
    from: ['running'],
    to: 'rejected',
    first: () => 'only a running deployment takes the env lock',
    guard: (d) => (d.steps.some((s) => s.name !== 'lock' && s.status !== 'skipped') ? 'steps after the lock ran' : null),
    ends: true,
  },
  /** It reached Go but never started: nothing to undo. */
  cancel: {
    from: ['approved'],
    to: 'cancelled',
    first: (d) => `only an approved deployment that never started is cancelled; see tributary deploy status ${d.id}`,
    guard: (d) => (d.steps.length > 0 ? 'it has started' : null),
    ends: true,
  },
  succeed: {
    from: ['running'],
    to: 'succeeded',
    first: (d) => `only a running deployment succeeds; see tributary deploy status ${d.id}`,
    guard: (d) => (d.steps.every((s) => s.status === 'done' || s.status === 'skipped') ? null : 'a step is not done'),
    ends: true,
  },
  'roll-back': {
    from: ['running', 'rolling-back', ...ROLLBACK_FROM],
    to: 'rolling-back',
    first: (d) => `only a deployment that ran (or is running) is rolled back; see tributary deploy status ${d.id}`,
  },
  'rolled-back': {
    from: ['rolling-back'],
    to: 'rolled-back',
    first: (d) => `only a rollback under way finishes; see tributary deploy status ${d.id}`,
    guard: (d) => (d.undo.every((s) => s.status === 'done' || s.status === 'skipped') ? null : 'an undo step is not done'),
    ends: true,
  },
  /**
   * Code and data restored and verified; only the smoke tests on the restored state fail (the earlier
   * release fails them too).
   */
  'smoke-failing-after-rollback': {
    from: ['rolling-back'],
    to: 'restored-smoke-failing',
    first: (d) => `only a rollback under way finishes; see tributary deploy status ${d.id}`,
    guard: (d) =>
      undoSteps(d).every((s) => s.status === 'done' || s.status === 'skipped') &&
      d.undo.find((s) => s.name === SMOKE_AFTER_ROLLBACK)?.status === 'failed'
        ? null
        : 'an undo step other than the smoke after rollback is not done, or that smoke passed',
    ends: true,
  },
  /** An undo step failed, or the rollback was refused (production written since): the rollback stopped. */
  'rollback-failed': {
    from: ['rolling-back', 'running'],
    to: 'rollback-failed',
    first: (d) => `only a rollback under way (or a failed deployment's) stops; see tributary deploy status ${d.id}`,
    ends: true,
  },
};

/** The state a deployment reaches on an event, or a coded error saying what must happen first. */
export function nextDeploymentState(d: Deployment, event: DeploymentEvent): DeploymentStatus {
  const t = TRANSITIONS[event];
  if (!t.from.includes(d.status)) throw refusal(d, d.status, event, t.first(d));
  const why = t.guard?.(d);
  if (why) throw refusal(d, d.status, event, why);
  return t.to;
}

function refusal(d: Pick<Deployment, 'id' | 'release'>, status: string, event: DeploymentEvent, first: string): TributaryError {
  const message = `deployment #${d.id} of ${d.release} is ${status}: cannot ${event} it; ${first}`;
  return new TributaryError('gate_state', message, { release: d.release, state: status, event });
}

/**
 * Applies a transition: the status moves only if the row is still in an allowed state (a concurrent
 * process may have moved it), with the fields given; returns the row.
 */
export async function transitionDeployment(
  db: Knex | Knex.Transaction,
  d: Deployment,
  event: DeploymentEvent,
  fields: DeploymentFields = {},
): Promise<Deployment> {
  const t = TRANSITIONS[event];
  nextDeploymentState(d, event);
  // the fields are columns' values as written (JSON texts, db.fn.now()): the row comes back as read
  const [row] = (await db('deployments')
    .where({ id: d.id })
    .whereIn('status', t.from)
    .update({ ...fields, status: t.to, ...(t.ends ? { finished_at: db.fn.now() } : {}) })
    .returning('*')) as DeploymentsRow[];
  if (row) return toDeployment(row);
  const now = await db<DeploymentsRow>('deployments').where({ id: d.id }).first('status');
  throw refusal(d, String(now?.status ?? 'gone'), event, t.first(d));
}

/**
 * The same transition for every row in `from` matching `where` (expiry of unanswered prompts);
 * returns the rows moved.
 */
export async function transitionWhere(
  db: Knex | Knex.Transaction,
  event: 'expire',
  where: (q: Knex.QueryBuilder) => Knex.QueryBuilder,
  fields: DeploymentFields = {},
): Promise<Deployment[]> {
  const t = TRANSITIONS[event];
  const rows = (await where(db('deployments').whereIn('status', t.from))
    .update({ ...fields, status: t.to, finished_at: db.fn.now() })
    .returning('*')) as DeploymentsRow[];
  return rows.map(toDeployment);
}

/** A new request: every deployment starts awaiting Go. */
export async function insertDeployment(db: Knex | Knex.Transaction, fields: DeploymentFields): Promise<Deployment> {
  const [row] = (await db('deployments').insert({ ...fields, status: 'awaiting-go' }).returning('*')) as DeploymentsRow[];
  return toDeployment(must(row, 'the inserted deployment row'));
}
