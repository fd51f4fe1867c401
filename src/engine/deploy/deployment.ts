import type { Knex } from 'knex';
import { releaseOrThrow, type DeploySpec } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { logger, redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import { requireRationale } from '../kernel/rationale.js';
import { failpoint } from '../kernel/failpoints.js';
import type { ApprovalsRow, DeploymentsRow, EnvLocksRow, TestRunsRow } from '../../db/rows.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { passGate } from '../kernel/lifecycle.js';
import { must } from '../kernel/must.js';
import { runTests } from '../tiers/index.js';
import { getBundle, productionEnv, type Bundle } from './bundle.js';
import {
  backupData, changedMessage, changedSince, dataChecksums, deployData, getBackup, restoreData, type Backup, type TableFigures,
} from './dataDeployer.js';
import { codeDeployer, type CodeDeployer } from './codeDeployers.js';
import {
  IN_FLIGHT_STATES, insertDeployment, OPEN_STATES, ROLLBACK_FROM, SMOKE_AFTER_ROLLBACK, toDeployment, transitionDeployment, transitionWhere,
  type Deployment, type DeploymentEvent, type DeploymentFields, type StepState,
} from './lifecycle.js';
import { envCredentials } from '../kernel/shell.js';
import { holdSessionLock, processName as executorName, sessionLockHeld } from '../kernel/sessionLock.js';

export type { Deployment, DeploymentStatus, StepState } from './lifecycle.js';

/**
 * A deployment is a persisted state machine. Requested (`/release deploy R2`), it waits for Go from
 * release managers (quorum; the requester alone never suffices; an unanswered prompt expires as
 * no-go), may be scheduled into a maintenance window, then runs the synchronized sequence, each step
 * persisted before and after it runs. A failure at any step, or failed smoke tests, rolls code and data
 * back together in the exact reverse order of what was done; the env then stays locked until a
 * release_manager unlocks it. A process that dies mid-deployment leaves the deployment `running` with
 * no live executor: `interruptedDeployments` finds it, and it is resumed or rolled back from there.
 */
export const STEPS = [
  'lock', 'record-version', 'maintenance-on', 'deploy-code', 'migrate-up', 'backup-data', 'deploy-data', 'restart',
  'maintenance-off', 'smoke',
] as const;
export type StepName = (typeof STEPS)[number];

export interface GoDecision {
  actor: string;
  decision: 'go' | 'no-go';
  rationale: string;
  decided_at: Date;
}

export type DeployProgress = (d: Deployment) => void;

export function deploySpecOf(ctx: Ctx): DeploySpec {
  const d = ctx.config.deploy;
  if (!d) {
    throw new TributaryError(
      'config_invalid',
      `${ctx.config.file}: deploy: not configured; add deploy.commands (deploy, rollback, …) or deploy.webhook; ` +
        'see docs/configuration.md, "Deployment"',
    );
  }
  return d;
}

/** An audit event about a deployment: its release, the subject `deployment #<id>`. */
function auditDeployment(
  db: Knex | Knex.Transaction,
  actor: Actor,
  action: string,
  d: Pick<Deployment, 'id' | 'release'>,
  details?: Record<string, unknown>,
) {
  return recordAudit(db, { actor, action, release: d.release, subject: `deployment #${d.id}`, ...(details ? { details } : {}) });
}

/** The deployments table, its rows typed as read (toDeployment narrows them). */
const deployments = (db: Knex | Knex.Transaction) => db<DeploymentsRow>('deployments');

export async function getDeployment(db: Knex | Knex.Transaction, id: number): Promise<Deployment> {
  const d = await deployments(db).where({ id }).first();
  if (!d) throw new TributaryError('usage', `no deployment #${id}`);
  return toDeployment(d);
}

/** Scheduled deployments whose time has come, each with that time. */
async function dueScheduled(db: Knex): Promise<{ d: Deployment; at: Date }[]> {
  const rows = await deployments(db).where({ status: 'scheduled' }).where('window_at', '<=', db.fn.now());
  return rows.map(toDeployment).map((d) => ({ d, at: new Date(must(d.window_at, `the window of scheduled deployment #${d.id}`)) }));
}

export async function decisionsOf(db: Knex | Knex.Transaction, id: number): Promise<GoDecision[]> {
  return db('deploy_decisions').where({ deployment_id: id }).orderBy('id').select('actor', 'decision', 'rationale', 'decided_at');
}

// ---- go / no-go ----

const formats = new Map<string, Intl.DateTimeFormat>();
function formatIn(timeZone: string): Intl.DateTimeFormat {
  let f = formats.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
    formats.set(timeZone, f);
  }
  return f;
}

function inWindow(spec: DeploySpec, at: Date): boolean {
  if (spec.windows.length === 0) return true;
  return spec.windows.some((w) => {
    const parts = Object.fromEntries(formatIn(w.timezone).formatToParts(at).map((p) => [p.type, p.value]));
    const day = String(parts.weekday).slice(0, 3).toLowerCase();
    const hm = `${parts.hour}:${parts.minute}`;
    const within = w.start <= w.end ? hm >= w.start && hm < w.end : hm >= w.start || hm < w.end;
    return w.days.includes(day) && within;
  });
}

const OPEN_INDEX = 'deployments_one_open_per_env';

/** A scheduled deployment not started within its window (or 30 minutes after window_at without windows) expires. */
export const WINDOW_GRACE_MS = 30 * 60_000;
/** An approved deployment whose process died before running it stops holding the env after this long. */
export const APPROVED_GRACE_MS = 30 * 60_000;

async function busyError(db: Knex, env: string): Promise<TributaryError> {
  const open = await db('deployments').where({ env }).whereIn('status', OPEN_STATES).first('id', 'release', 'status');
  const message = open
    ? `${env} already has deployment #${String(open.id)} of ${String(open.release)} (${String(open.status)}): one deployment at a time`
    : `${env} already has an open deployment: one deployment at a time`;
  return new TributaryError('gate_busy', message, { env });
}

type RequestOpts = { actor: Actor; at?: Date; bundleVersion?: number };

/**
 * A deployment asked for: the release must be approved and bundled, the time (if any) in a maintenance
 * window, the env free of other deployments and unlocked. Then it awaits Go.
 */
export async function requestDeployment(ctx: Ctx, release: string, opts: RequestOpts): Promise<Deployment> {
  releaseOrThrow(ctx.config, release);
  const spec = deploySpecOf(ctx);
  await passGate(ctx.db.control, release, 'deploy', opts.actor, (state) => {
    if (state !== 'approved') {
      throw new TributaryError(
        'gate_state',
        `release ${release} is ${state}: only an approved release is deployed; ` +
          `approve it after tier 2 first (tributary approve ${release})`,
        { release },
      );
    }
  });
  const bundle = await getBundle(ctx, release, opts.bundleVersion);
  if (!bundle) {
    throw new TributaryError('gate_state', `${release} has no release bundle: tributary bundle ${release} --code <version> first`, {
      release,
    });
  }
  if (opts.at && !inWindow(spec, opts.at)) throw outsideWindows(spec, opts.at);
  await expireStale(ctx);
  await refuseIfOpen(ctx, spec, opts.actor);
  await refuseIfLocked(ctx, spec.env, release, opts.actor);
  try {
    return await insertRequest(ctx, release, bundle, spec, opts);
  } catch (err) {
    // a concurrent request got in between the check and the insert: the unique index says so
    const pg = err as { code?: string; constraint?: string };
    if (pg.code === '23505' && pg.constraint === OPEN_INDEX) throw await busyError(ctx.db.control, spec.env);
    throw err;
  }
}

function outsideWindows(spec: DeploySpec, at: Date): TributaryError {
  const windows = spec.windows.map((w) => `${w.days.join(',')} ${w.start}–${w.end} ${w.timezone}`).join('; ');
  return new TributaryError('usage', `${at.toISOString()} is outside every maintenance window (${windows})`);
}

/**
 * One open deployment per env: another refuses the request, unless it reached Go and the process that was
 * to run it died more than APPROVED_GRACE_MS ago (then the new request supersedes it, as no-go).
 */
async function refuseIfOpen(ctx: Ctx, spec: DeploySpec, actor: Actor): Promise<void> {
  const db = ctx.db.control;
  const row = await db<DeploymentsRow>('deployments').where({ env: spec.env }).whereIn('status', OPEN_STATES).first();
  if (!row) return;
  const open = toDeployment(row);
  if (open.status !== 'approved' || (await executorAlive(ctx, open.id))) throw await busyError(db, spec.env);
  // reached Go, but the process that was to run it died before it started
  const approved = `approved${open.approved_at ? ` at ${new Date(open.approved_at).toISOString()}` : ''}`;
  const since = open.approved_at ? new Date(open.approved_at).getTime() : 0;
  if (Date.now() - since < APPROVED_GRACE_MS) {
    throw new TributaryError(
      'gate_busy',
      `${spec.env} already has deployment #${open.id} of ${open.release}, ${approved} but never started (the process that was to run it ` +
        `is gone): run it (tributary deploy run ${open.id}, or Resume in Slack) or cancel it (tributary rollback ${open.release} ` +
        `--rationale "…"); ${APPROVED_GRACE_MS / 60_000} minutes after its Go a new request supersedes it`,
      { env: spec.env },
    );
  }
  const cause =
    `${approved} but never started (the process that was to run it died); superseded by a new request from ${actor}: counts as no-go`;
  await transitionDeployment(db, open, 'expire', { cause });
  await auditDeployment(db, actor, 'deploy.expired', open, { reason: cause });
}

/**
 * An env left locked (after a rollback, or by hand) takes no deployment until a release_manager
 * unlocks it: refused now, not at the lock step after the go/no-go.
 */
async function refuseIfLocked(ctx: Ctx, env: string, release: string, actor: Actor): Promise<void> {
  const lock = await envLock(ctx.db.control, env);
  if (!lock) return;
  const details = { env, locked: lock.reason, holder: lock.holder };
  await recordAudit(ctx.db.control, { actor, action: 'gate.deploy.refused', release, details });
  throw new TributaryError(
    'gate_busy',
    `${env} is locked by ${lock.reason} (held by ${lock.holder} since ${new Date(lock.locked_at).toISOString()}): no deployment is ` +
      `requested until a release_manager unlocks it: tributary unlock ${env} --rationale "…" (or Unlock on the rollback card in Slack)`,
    { env },
  );
}

async function insertRequest(ctx: Ctx, release: string, bundle: Bundle, spec: DeploySpec, opts: RequestOpts): Promise<Deployment> {
  return ctx.db.control.transaction(async (trx) => {
    const row = await insertDeployment(trx, {
      release,
      bundle_id: bundle.id,
      bundle_version: bundle.version,
      code_version: bundle.codeVersion,
      env: spec.env,
      requested_by: opts.actor,
      window_at: opts.at ?? null,
      expires_at: new Date(Date.now() + spec.promptMs),
    });
    const details = { env: spec.env, bundle: bundle.version, code: bundle.codeVersion, at: opts.at?.toISOString() ?? null };
    await recordAudit(trx, { actor: opts.actor, action: 'deploy.requested', release, subject: `deployment #${row.id}`, details });
    return row;
  });
}

/**
 * When a scheduled deployment may no longer start: the end of the maintenance window it was scheduled
 * in (windows configured), else WINDOW_GRACE_MS after its time.
 */
export function windowDeadline(spec: DeploySpec, at: Date): Date {
  if (spec.windows.length === 0 || !inWindow(spec, at)) return new Date(at.getTime() + WINDOW_GRACE_MS);
  // windows are HH:MM: walk minute by minute to the first one outside (a day at most, plus a chained one)
  let t = Math.floor(at.getTime() / 60_000) * 60_000 + 60_000;
  const limit = at.getTime() + 48 * 3600_000;
  while (t < limit && inWindow(spec, new Date(t))) t += 60_000;
  return new Date(t);
}

/**
 * Unanswered prompts past their time count as no-go; so does a scheduled deployment whose window
 * passed before it could start (the bot was down). Returns the ids expired (their cards to update).
 */
export async function expireStale(ctx: Ctx): Promise<number[]> {
  const db = ctx.db.control;
  const unanswered = (q: Knex.QueryBuilder) => q.where({ status: 'awaiting-go' }).where('expires_at', '<=', db.fn.now());
  const rows = await transitionWhere(db, 'expire', unanswered, { cause: 'the go/no-go prompt was not answered in time: no-go' });
  for (const r of rows) await auditDeployment(db, 'tributary', 'deploy.expired', r);
  const out = rows.map((r) => r.id);
  const spec = ctx.config.deploy;
  if (!spec) return out;
  for (const { d, at } of await dueScheduled(db)) {
    const deadline = windowDeadline(spec, at);
    if (Date.now() <= deadline.getTime()) continue;
    const cause =
      `its window passed before it could start (scheduled for ${at.toISOString()}, to start by ${deadline.toISOString()}; ` +
      'the bot was not running): no-go; request it again';
    // a concurrent claim or expiry moved it first: nothing to do
    if (!(await transitionDeployment(db, d, 'expire', { cause }).catch(movedMeanwhile))) continue;
    await auditDeployment(db, 'tributary', 'deploy.expired', d, { reason: cause });
    out.push(d.id);
  }
  return out;
}

export interface GoResult {
  deployment: Deployment;
  /** The quorum is reached: the deployment may run now (or at its window). */
  ready: boolean;
  gos: number;
  needed: number;
}

type GoOpts = { actor: Actor; decision: 'go' | 'no-go'; rationale: string };

export async function decideGo(ctx: Ctx, id: number, opts: GoOpts): Promise<GoResult> {
  const spec = deploySpecOf(ctx);
  const rationale = requireRationale(opts.rationale, 'a go/no-go decision', 'why go, or why not?', 'usage');
  await expireStale(ctx);
  return ctx.db.control.transaction(async (trx) => {
    const d = await awaitingGo(trx, id, opts.actor);
    await trx('deploy_decisions').insert({ deployment_id: id, actor: opts.actor, decision: opts.decision, rationale });
    const subject = `deployment #${id}`;
    await recordAudit(trx, { actor: opts.actor, action: `deploy.${opts.decision}`, release: d.release, subject, details: { rationale } });
    if (opts.decision === 'no-go') {
      const row = await transitionDeployment(trx, d, 'no-go', { cause: `no-go by ${opts.actor}: ${rationale}` });
      return { deployment: row, ready: false, gos: 0, needed: spec.quorum };
    }
    const gos = (await trx('deploy_decisions').where({ deployment_id: id, decision: 'go' }).select('actor')).map((r) => r.actor as string);
    const others = gos.filter((a) => a !== d.requested_by);
    const ready = gos.length >= spec.quorum && others.length >= 1;
    const needed = Math.max(spec.quorum, gos.length + (others.length === 0 ? 1 : 0));
    if (!ready) return { deployment: d, ready: false, gos: gos.length, needed };
    const window = d.window_at && d.window_at.getTime() > Date.now() ? d.window_at : null;
    const row = await transitionDeployment(trx, d, window ? 'schedule' : 'go', window ? {} : { approved_at: trx.fn.now() });
    const details = { gos, scheduled: window ? window.toISOString() : null };
    await recordAudit(trx, { actor: opts.actor, action: 'deploy.go.quorum', release: d.release, subject, details });
    return { deployment: row, ready: !window, gos: gos.length, needed: spec.quorum };
  });
}

/** The deployment, locked, still awaiting Go and not yet answered by `actor`; else why not. */
async function awaitingGo(trx: Knex.Transaction, id: number, actor: Actor): Promise<Deployment> {
  const row = await deployments(trx).where({ id }).forUpdate().first();
  if (!row) throw new TributaryError('usage', `no deployment #${id}`);
  const d = toDeployment(row);
  if (d.status === 'expired') {
    throw new TributaryError(
      'gate_state',
      `deployment #${id} expired at ${d.expires_at.toISOString()} without an answer: it counts as no-go; ` +
        `request it again (/release deploy ${d.release})`,
    );
  }
  if (d.status !== 'awaiting-go') throw new TributaryError('already_decided', `deployment #${id} is ${d.status}: its go/no-go is over`);
  const earlier = await trx('deploy_decisions').where({ deployment_id: id, actor }).first();
  if (earlier) {
    const message = `${actor} already said ${String(earlier.decision)} on deployment #${id}`;
    throw new TributaryError('already_decided', message, { decidedBy: actor });
  }
  return d;
}

/**
 * Scheduled deployments whose window has come: each is claimed once (the claim moves it to approved).
 * One whose window passed before it could start is expired instead (expireStale), never started late.
 */
export async function claimDue(ctx: Ctx): Promise<number[]> {
  await expireStale(ctx);
  const spec = deploySpecOf(ctx);
  const db = ctx.db.control;
  const out: number[] = [];
  for (const { d, at } of await dueScheduled(db)) {
    if (Date.now() > windowDeadline(spec, at).getTime()) continue;
    // claimed once: another watcher that got there first wins
    const claimed = await transitionDeployment(db, d, 'claim', { approved_at: db.fn.now() }).catch(movedMeanwhile);
    if (claimed) out.push(claimed.id);
  }
  return out;
}

/** A conditional transition lost to a concurrent one (the row is no longer in the state it was read in). */
function movedMeanwhile(err: unknown): null {
  if (err instanceof TributaryError && err.code === 'gate_state') return null;
  throw err;
}

// ---- the env lock ----

export async function envLock(db: Knex | Knex.Transaction, env: string): Promise<EnvLocksRow | undefined> {
  return db<EnvLocksRow>('env_locks').where({ env }).first();
}

export async function unlockEnv(
  ctx: Ctx,
  env: string,
  opts: { actor: Actor; rationale?: string },
): Promise<{ env: string; was?: Pick<EnvLocksRow, 'holder' | 'deployment_id'> }> {
  const db = ctx.db.control;
  const running = await deployments(db).where({ env }).whereIn('status', ['running', 'rolling-back']).first('id', 'executor');
  if (running && (await executorAlive(ctx, running.id))) {
    throw new TributaryError(
      'gate_busy',
      `${env} is locked by deployment #${running.id}, which is still running (${String(running.executor)}): wait for it, or stop it first`,
    );
  }
  const lock = await envLock(db, env);
  if (!lock) return { env };
  await db.transaction(async (trx) => {
    await trx('env_locks').where({ env }).delete();
    const details = { holder: lock.holder, deployment: lock.deployment_id, rationale: opts.rationale ?? null };
    await recordAudit(trx, { actor: opts.actor, action: 'env.unlock', subject: env, details });
  });
  return { env, was: { holder: lock.holder, deployment_id: lock.deployment_id } };
}

// ---- execution ----

const EXECUTOR_LOCK = (id: number) => `tributary:deployment:${id}`;

/** Whether a live process holds the deployment's executor lock (a dead process's session lock is gone). */
export function executorAlive(ctx: Ctx, id: number): Promise<boolean> {
  return sessionLockHeld(ctx.db.controlParams, EXECUTOR_LOCK(id));
}

/**
 * The executor locks this process holds, by deployment: every write of a deployment's row checks its
 * lock first, so a process that lost it (its session ended) records nothing over the one that took over.
 */
const held = new Map<number, AbortSignal>();

interface Runner {
  ctx: Ctx;
  /** Aborted when this process lost the deployment's executor lock: the step's command is killed, nothing more is recorded. */
  lost: AbortSignal;
  spec: DeploySpec;
  code: CodeDeployer;
  bundle: Bundle;
  actor: Actor;
  progress?: DeployProgress;
}

/** The steps as they are now, with other columns (never the status: transitions go through lifecycle.ts). */
async function persist(ctx: Ctx, d: Deployment, fields: DeploymentFields = {}): Promise<Deployment> {
  held.get(d.id)?.throwIfAborted();
  const [row] = (await ctx.db.control('deployments')
    .where({ id: d.id, executor: d.executor })
    .update({ steps: JSON.stringify(d.steps), undo: JSON.stringify(d.undo), ...fields })
    .returning('*')) as DeploymentsRow[];
  return toDeployment(must(row, `deployment #${d.id}'s row, run by ${String(d.executor)}`));
}

/** A transition of the lifecycle table, with the steps as they are now. */
function move(ctx: Ctx, d: Deployment, event: DeploymentEvent, fields: DeploymentFields = {}): Promise<Deployment> {
  held.get(d.id)?.throwIfAborted();
  return transitionDeployment(ctx.db.control, d, event, { steps: JSON.stringify(d.steps), undo: JSON.stringify(d.undo), ...fields });
}

function vars(d: Deployment, spec: DeploySpec, version?: string) {
  return {
    release: d.release,
    env: d.env,
    ...(version !== undefined ? { version } : {}),
    ...(spec.migration ? { migration: spec.migration } : {}),
  };
}

async function smoke(r: Runner, d: Deployment): Promise<{ ok: boolean; detail: string }> {
  if (!r.spec.smoke || !r.ctx.config.testing) return { ok: true, detail: 'skipped: no smoke tests configured' };
  const t = await runTests(r.ctx, d.release, { tier: 'smoke', env: d.env, actor: r.actor, signal: r.lost });
  const detail = `smoke tests on ${d.env} (test run #${t.runId}): ${t.totals.passed}/${t.totals.total - t.totals.skipped} passed`;
  if (t.totals.failed + t.totals.errored > 0 || t.totals.total - t.totals.skipped === 0) {
    const first = t.failures[0];
    return { ok: false, detail: `${detail}${first ? `; ${first.name}: ${first.message ?? first.status}` : ''}` };
  }
  return { ok: true, detail };
}

/** Runs one deployer command; a failure throws with the command's output attached. */
async function runOrThrow(r: Runner, d: Deployment, name: Parameters<CodeDeployer['run']>[0], version?: string) {
  const out = await r.code.run(name, vars(d, r.spec, version), r.lost);
  r.lost.throwIfAborted();
  if (!out.ok) throw new TributaryError('runner_failed', out.error ?? `${name} failed`, { output: out.output });
  return out;
}

/** What a step did: its detail, the command's output, columns it sets (e.g. the previous code version). */
interface StepOutcome {
  detail: string;
  output?: string;
  skipped?: boolean;
  figures?: TableFigures[];
  patch?: DeploymentFields;
}

type Command = (name: Parameters<CodeDeployer['run']>[0], version?: string) => ReturnType<typeof runOrThrow>;

/** One forward step. Returns what it did, or throws with the cause. */
async function forward(r: Runner, d: Deployment, step: StepName): Promise<StepOutcome> {
  const { ctx, code, spec } = r;
  const cmd: Command = (name, version) => runOrThrow(r, d, name, version);
  switch (step) {
    case 'lock':
      return lockEnv(ctx, d);
    case 'record-version':
      return recordVersion(code, cmd);
    case 'maintenance-on':
      if (!code.has('maintenanceOn')) return { detail: 'not configured', skipped: true };
      return { detail: 'maintenance on', output: (await cmd('maintenanceOn')).output };
    case 'deploy-code':
      return { detail: `code ${d.code_version} deployed`, output: (await cmd('deploy', d.code_version)).output };
    case 'migrate-up':
      if (!code.has('migrateUp')) return { detail: 'not configured', skipped: true };
      return { detail: `schema migrated up${spec.migration ? ` to ${spec.migration}` : ''}`, output: (await cmd('migrateUp')).output };
    case 'backup-data': {
      const b = await backupData(ctx, r.bundle, { deploymentId: d.id, actor: r.actor });
      const tables = b.tables.map((t) => `${t.table} (${t.rows} rows, checksum ${t.checksum})`).join(', ');
      return { detail: `backed up ${tables}`, patch: { backup_id: b.id } };
    }
    case 'deploy-data': {
      // the whole tables' figures as committed: a rollback on demand later refuses if production changed since
      const res = await deployData(ctx, r.bundle, await backupOf(ctx, d), { actor: r.actor, figures: true });
      const tables = res.tables.map((t) => `${t.table} ${t.rows} rows`).join(', ');
      return { detail: `data of ${d.release} deployed and verified: ${tables}`, ...(res.after ? { figures: res.after } : {}) };
    }
    case 'restart':
      return restartStep(code, cmd);
    case 'maintenance-off':
      if (!code.has('maintenanceOff')) return { detail: 'not configured', skipped: true };
      return { detail: 'maintenance off', output: (await cmd('maintenanceOff')).output };
    case 'smoke': {
      if (!r.spec.smoke || !r.ctx.config.testing) {
        return { detail: 'no smoke tests configured (testing.command, deploy.smoke)', skipped: true };
      }
      const s = await smoke(r, d);
      if (!s.ok) throw new TributaryError('runner_failed', s.detail);
      return { detail: s.detail };
    }
  }
}

/** The lock step: the env locked for this deployment (already its lock: done), or refused. */
async function lockEnv(ctx: Ctx, d: Deployment): Promise<StepOutcome> {
  const inserted = await ctx.db.control('env_locks')
    .insert({ env: d.env, deployment_id: d.id, holder: d.requested_by, reason: `deployment #${d.id} of ${d.release}` })
    .onConflict('env')
    .ignore()
    .returning('env');
  if (inserted.length === 0) {
    const lock = await envLock(ctx.db.control, d.env);
    if (lock?.deployment_id !== d.id) {
      throw new TributaryError(
        'gate_busy',
        `${d.env} is locked by ${lock?.reason ?? 'another deployment'} (held by ${lock?.holder ?? '?'} since ` +
          `${lock?.locked_at.toISOString() ?? '?'}); a release_manager unlocks it: tributary unlock ${d.env}`,
      );
    }
  }
  return { detail: `${d.env} locked for deployment #${d.id}` };
}

/** The record-version step: the version running before this deployment (for a code rollback). */
async function recordVersion(code: CodeDeployer, cmd: Command): Promise<StepOutcome> {
  if (!code.has('current')) {
    return { detail: 'no deploy.commands.current: the previous version is unknown, a code rollback is not possible', skipped: true };
  }
  const out = await cmd('current');
  const version = out.output.trim().split('\n').slice(-1)[0]?.trim() ?? '';
  if (!version) throw new TributaryError('runner_failed', 'deploy.commands.current printed no version');
  return { detail: `running version: ${version}`, output: out.output, patch: { previous_code_version: version } };
}

async function restartStep(code: CodeDeployer, cmd: Command): Promise<StepOutcome> {
  const out = code.has('restart') ? (await cmd('restart')).output : '';
  if (code.has('health')) await cmd('health');
  const detail = [code.has('restart') ? 'restarted' : 'no restart configured', code.has('health') ? 'healthy' : '']
    .filter(Boolean)
    .join(', ');
  return { detail, output: out };
}

async function backupOf(ctx: Ctx, d: Deployment): Promise<Backup> {
  const fresh = await getDeployment(ctx.db.control, d.id);
  if (!fresh.backup_id) throw new TributaryError('internal', `deployment #${d.id} has no data backup`);
  const b = await getBackup(ctx, fresh.backup_id);
  if (!b) throw new TributaryError('internal', `deployment #${d.id}: backup #${fresh.backup_id} is gone`);
  return b;
}

/**
 * The undo of a forward step, in the rollback (exact reverse order), then the restart on the previous
 * code and the smoke tests on the restored state. Null: nothing to undo.
 */
async function backward(r: Runner, d: Deployment, key: string, expected: Expected | null): Promise<StepOutcome | null> {
  const { ctx, code } = r;
  const cmd: Command = (name, version) => runOrThrow(r, d, name, version);
  switch (key) {
    case 'maintenance-off':
      return code.has('maintenanceOn') ? { detail: 'maintenance on for the rollback', output: (await cmd('maintenanceOn')).output } : null;
    case 'deploy-data': {
      // checked again in the restore's transaction, with the tables locked: no write slips in between
      const check = expected ? { expect: expected.figures, since: expected.since } : {};
      const res = await restoreData(ctx, await backupOf(ctx, d), { actor: r.actor, ...check });
      const tables = res.tables.map((t) => `${t.table} ${t.rows} rows, checksum ${t.checksum} (before: ${t.before.checksum})`).join(', ');
      return { detail: `data restored and verified identical to before the deploy: ${tables}` };
    }
    case 'migrate-up':
      return code.has('migrateDown') ? { detail: 'schema migrated down', output: (await cmd('migrateDown')).output } : null;
    case 'deploy-code': {
      const fresh = await getDeployment(ctx.db.control, d.id);
      if (!fresh.previous_code_version) {
        const message = 'the previous code version was not recorded (deploy.commands.current): roll the code back by hand';
        throw new TributaryError('runner_failed', message);
      }
      return { detail: `code back to ${fresh.previous_code_version}`, output: (await cmd('rollback', fresh.previous_code_version)).output };
    }
    case 'maintenance-on':
      return code.has('maintenanceOff') ? { detail: 'maintenance off', output: (await cmd('maintenanceOff')).output } : null;
    case 'restart':
      return { detail: 'restarted on the previous version', output: (await cmd('restart')).output };
    case 'smoke': {
      const s = await smoke(r, d);
      if (!s.ok) throw new TributaryError('runner_failed', s.detail);
      return { detail: s.detail };
    }
    default:
      return null;
  }
}

function runnerOf(ctx: Ctx, bundle: Bundle, actor: Actor, lost: AbortSignal, progress?: DeployProgress): Runner {
  const spec = deploySpecOf(ctx);
  return { ctx, lost, spec, code: codeDeployer(spec, (env) => envCredentials(ctx, env)), bundle, actor, ...(progress ? { progress } : {}) };
}

/**
 * Holds the deployment's executor lock on a dedicated connection (kept alive) for as long as it runs. A
 * lost lock (its session ended) stops the run at once: the running command is killed and nothing more
 * is recorded, as if the process had died; whoever takes the lock resumes it from what was persisted.
 */
async function withExecutor<T>(ctx: Ctx, id: number, fn: (lost: AbortSignal) => Promise<T>): Promise<T> {
  const lock = await holdSessionLock(ctx.db.controlParams, EXECUTOR_LOCK(id), `deployment #${id}`);
  if (!lock) throw new TributaryError('gate_busy', `deployment #${id} is being run by another process`);
  held.set(id, lock.lost);
  try {
    return await fn(lock.lost);
  } finally {
    held.delete(id);
    await lock.release();
  }
}

type StepKind = 'forward' | 'undo';

/**
 * One step of the sequence or of its rollback, the same way for both: marked running and persisted (a
 * process that dies leaves it `running`), its failpoint (`deploy.step.<step>`, `rollback.step.<step>`),
 * timed, run, its outcome persisted and audited. A failure comes back in the step's state: the caller
 * decides what follows (roll back, stop, go on).
 */
async function runStep(
  r: Runner,
  dep: Deployment,
  kind: StepKind,
  key: string,
  work: (d: Deployment) => Promise<StepOutcome | null>,
): Promise<{ d: Deployment; state: StepState }> {
  const list = kind === 'forward' ? 'steps' : 'undo';
  const state: StepState = { name: stepName(kind, key), status: 'running', startedAt: new Date().toISOString() };
  const put = (d: Deployment): Deployment => ({ ...d, [list]: [...d[list].filter((s) => s.name !== state.name), { ...state }] });
  let d = await persist(r.ctx, put(dep));
  r.progress?.(d);
  const t0 = performance.now();
  let patch: DeploymentFields = {};
  try {
    await failpoint(`${kind === 'forward' ? 'deploy' : 'rollback'}.step.${key}`);
    const res = (await work(d)) ?? { detail: 'nothing to undo', skipped: true };
    patch = res.patch ?? {};
    Object.assign(state, {
      status: res.skipped ? 'skipped' : 'done',
      detail: res.detail,
      ...(res.output ? { output: res.output.slice(-1500) } : {}),
      ...(res.figures ? { figures: res.figures } : {}),
    });
  } catch (err) {
    // a lost lock stops here: the step stays `running`, as if this process had died
    r.lost.throwIfAborted();
    Object.assign(state, {
      status: 'failed',
      error: redact(err instanceof Error ? err.message : String(err)),
      ...(err instanceof TributaryError && err.details.output ? { output: String(err.details.output).slice(-1500) } : {}),
    });
    logger().error({ deployment: d.id, step: state.name }, `${kind === 'forward' ? 'deployment' : 'rollback'} step failed: ${state.error}`);
  }
  state.ms = Math.round(performance.now() - t0);
  d = await persist(r.ctx, put(d), patch);
  const action = `${kind === 'forward' ? 'deploy.step' : 'deploy.rollback.step'}.${state.status}`;
  const details = { step: state.name, ms: state.ms, detail: state.detail ?? null, error: state.error ?? null };
  await auditDeployment(r.ctx.db.control, r.actor, action, d, details);
  r.progress?.(d);
  return { d, state };
}

function stepName(kind: StepKind, key: string): string {
  if (kind === 'forward') return key;
  return key === 'smoke' ? SMOKE_AFTER_ROLLBACK : `undo ${key}`;
}

/**
 * Runs (or resumes) a deployment: forward from the first step not done; on a failure, the rollback.
 * A step found `running` (its process died) is run again: every step is safe to repeat (code deploy of
 * one version, data in one transaction, a backup taken afresh).
 */
type ExecOpts = { actor: Actor; progress?: DeployProgress };

export async function executeDeployment(ctx: Ctx, id: number, opts: ExecOpts): Promise<Deployment> {
  return withExecutor(ctx, id, async (lost) => {
    let d = await getDeployment(ctx.db.control, id);
    // a rollback interrupted by a crash: taken up again, production checked first like any restore
    if (d.status === 'rolling-back') return rollBack(ctx, d, opts, d.cause ?? 'resumed rollback', { lost });
    if (d.status !== 'approved' && d.status !== 'running') throw notRunnable(d);
    const r = runnerOf(ctx, await bundleOf(ctx, d), opts.actor, lost, opts.progress);
    d = await move(ctx, d, 'start', { executor: executorName(), ...(d.started_at ? {} : { started_at: new Date() }) });
    if (d.steps.length === 0) {
      await auditDeployment(ctx.db.control, opts.actor, 'deploy.start', d, { env: d.env, code: d.code_version, bundle: d.bundle_version });
    }
    opts.progress?.(d);
    for (const step of STEPS) {
      const prev = d.steps.find((s) => s.name === step);
      if (prev && (prev.status === 'done' || prev.status === 'skipped')) continue;
      const ran = await runStep(r, d, 'forward', step, (now) => forward(r, now, step));
      d = ran.d;
      if (ran.state.status !== 'failed') continue;
      // the lock was refused: nothing was done, the deployment did not start
      if (step === 'lock') return move(ctx, d, 'lock-refused', { cause: ran.state.error });
      return rollBack(ctx, d, opts, `${step} failed: ${ran.state.error}`, { lost, runner: r });
    }
    await ctx.db.control('env_locks').where({ env: d.env, deployment_id: d.id }).delete();
    d = await move(ctx, d, 'succeed');
    const ms = d.steps.reduce((a, s) => a + (s.ms ?? 0), 0);
    await auditDeployment(ctx.db.control, opts.actor, 'deploy.succeeded', d, { env: d.env, code: d.code_version, ms });
    opts.progress?.(d);
    return d;
  });
}

function notRunnable(d: Deployment): TributaryError {
  const why =
    d.status === 'awaiting-go' ? 'it waits for Go'
    : d.status === 'scheduled' ? `it starts in its window at ${d.window_at?.toISOString()}`
    : 'nothing to run';
  return new TributaryError('gate_state', `deployment #${d.id} is ${d.status}: ${why}`);
}

/** The deployment's bundle (a deployment is requested only with one, and bundles are never deleted). */
async function bundleOf(ctx: Ctx, d: Deployment): Promise<Bundle> {
  return must(await getBundle(ctx, d.release, d.bundle_version), `bundle v${d.bundle_version} of ${d.release}, deployment #${d.id}'s`);
}

/** Steps whose effects a rollback undoes: done ones, and a failed/interrupted one that may have half-applied. */
const UNDOABLE: readonly string[] = ['maintenance-on', 'deploy-code', 'migrate-up', 'deploy-data', 'maintenance-off'];
/** Of those, the ones a failure or a crash may have left half-applied. */
const HALF_APPLIED: readonly string[] = ['deploy-code', 'migrate-up', 'maintenance-on', 'deploy-data'];

/** Every step a rollback may run, by its key (its failpoint is `rollback.step.<key>`). */
export const UNDO_STEP_KEYS: readonly string[] = [...UNDOABLE, 'restart', 'smoke'];

function toUndo(d: Deployment): StepName[] {
  return d.steps
    .filter((s) => UNDOABLE.includes(s.name))
    .filter((s) => s.status === 'done' || ((s.status === 'failed' || s.status === 'running') && HALF_APPLIED.includes(s.name)))
    .map((s) => s.name as StepName)
    .sort((a, b) => STEPS.indexOf(b) - STEPS.indexOf(a));
}

/** The rollback's steps in order: each undo, then a restart on the previous code (if it was changed) and the smoke tests. */
function undoPlan(d: Deployment, code: CodeDeployer): string[] {
  const undo = toUndo(d);
  return [...undo, ...(code.has('restart') && undo.includes('deploy-code') ? ['restart'] : []), 'smoke'];
}

/**
 * Where code and data stand when the data restore failed and the rollback stopped there (nothing after
 * it undone, so code and data are not left at different versions unsaid).
 */
function standingAfterFailedRestore(d: Deployment, error: string): string {
  const undone = new Set(d.undo.filter((s) => s.status === 'done').map((s) => s.name));
  const stepDone = (name: string) => d.steps.some((s) => s.name === name && s.status === 'done');
  const data = stepDone('deploy-data')
    ? `data still ${d.release}'s as deployed`
    : `data either as before the deploy or as deployed (the process died during the data deploy): check it`;
  const code = stepDone('deploy-code') ? `code still at ${d.code_version}` : `code possibly at ${d.code_version}`;
  const schema = stepDone('migrate-up') ? ', schema still migrated up' : '';
  const maintenanceOn = undone.has('undo maintenance-off') || (stepDone('maintenance-on') && !stepDone('maintenance-off'));
  const maintenance = maintenanceOn ? ', maintenance on' : '';
  return (
    `the data restore failed (${error}), so the rollback stopped there and did not undo the schema or the code: ` +
    `${code}${schema}, ${data}${maintenance}. Code and data are still together at ${d.release}'s deployment; fix the cause, ` +
    `then roll back again (tributary rollback ${d.release} --rationale "…") or keep this version`
  );
}

/** What production's touched tables must hold for the rollback to go on, and since when they should. */
interface Expected {
  figures: TableFigures[];
  since: string;
}

class RollbackRefused extends TributaryError {}

/**
 * A restore puts the touched tables back to their pre-deploy backup: rows written to them since would be
 * lost, and once restored, the schema and code undone under rows written since. Before any rollback
 * goes on (first request, resumed after a crash, automatic after a failed step), production is compared
 * with the figures it must hold: as the data deploy committed them (not restored yet), as the backup
 * (restored, or the data deploy never committed), either when a restore was interrupted. Returns the
 * figures the restore checks again with the tables locked (null: no data to check); throws, naming the
 * table and what changed, when production differs.
 */
async function checkProduction(ctx: Ctx, d: Deployment, code: CodeDeployer): Promise<Expected | null> {
  const finished = (key: string) => d.undo.some((s) => s.name === stepName('undo', key) && (s.status === 'done' || s.status === 'skipped'));
  const plan = undoPlan(d, code).filter((key) => !finished(key));
  const deployed = d.steps.find((s) => s.name === 'deploy-data');
  if (!deployed || deployed.status === 'skipped' || plan.length === 0 || !d.backup_id) return null;
  const candidates = await expectedFigures(ctx, d, deployed);
  const [first] = candidates;
  if (!first) throw new TributaryError('internal', `deployment #${d.id}: no figures to compare production with`);
  const now = await dataChecksums(ctx, d.env, first.figures.map((f) => f.table));
  const match = candidates.find((c) => !changedSince(c.figures, now));
  if (match) return match;
  const changed = must(changedSince(first.figures, now), `a table of ${d.env} that changed since ${first.since}`);
  const schema = productionEnv(ctx).schema;
  const table = schema ? `${schema}.${changed.table}` : changed.table;
  const details = { release: d.release, env: d.env, table: changed.table };
  throw new RollbackRefused('gate_state', changedMessage(d.release, d.env, table, changed, first.since), details);
}

/** The figures production may hold for the rollback to go on, the likeliest first (checkProduction). */
async function expectedFigures(ctx: Ctx, d: Deployment, deployed: StepState): Promise<Expected[]> {
  const restore = d.undo.find((s) => s.name === 'undo deploy-data');
  const backup = await backupOf(ctx, d);
  const before: Expected = {
    since: restore?.status === 'done' ? 'the rollback restored it' : 'the backup taken before the deploy',
    figures: backup.tables.map((t) => ({ table: t.table, exists: t.existed, rows: t.rows, checksum: t.checksum })),
  };
  if (restore?.status === 'done' || deployed.status !== 'done') return [before];
  if (!deployed.figures) {
    throw new RollbackRefused(
      'gate_state',
      `cannot roll back ${d.release}: deployment #${d.id} recorded no figures of production after its data deploy, so writes made since ` +
        `cannot be told apart; restore by hand from backup #${String(d.backup_id)} if you are sure`,
      { release: d.release, env: d.env },
    );
  }
  const candidates: Expected[] = [{ since: 'the deploy', figures: deployed.figures }];
  // the restore's transaction may have committed before its process died
  if (restore?.status === 'running') candidates.push({ ...before, since: 'the interrupted restore' });
  return candidates;
}

/** checkProduction for a rollback asked for: a refusal is audited and thrown, nothing changed. */
async function refuseIfWrittenSince(ctx: Ctx, d: Deployment, actor: Actor): Promise<Expected | null> {
  try {
    return await checkProduction(ctx, d, codeDeployer(deploySpecOf(ctx)));
  } catch (err) {
    if (err instanceof RollbackRefused) {
      await auditDeployment(ctx.db.control, actor, 'deploy.rollback.refused', d, { reason: err.message, ...err.details });
    }
    throw err;
  }
}

type RollbackHow = { lost: AbortSignal; runner?: Runner; checked?: Expected | null };

/**
 * The rollback: code and data back together, in the exact reverse order of what was done. `checked`:
 * production was already compared (a rollback asked for refuses before anything changes); without
 * it, the rollback is under way (resumed, or automatic after a failed step) and a refusal stops it,
 * as rollback-failed, with code and data left as they are.
 */
async function rollBack(ctx: Ctx, dep: Deployment, opts: ExecOpts, cause: string, how: RollbackHow): Promise<Deployment> {
  const r = how.runner ?? runnerOf(ctx, await bundleOf(ctx, dep), opts.actor, how.lost, opts.progress);
  let expected: Expected | null;
  if (how.checked !== undefined) expected = how.checked;
  else {
    try {
      expected = await checkProduction(ctx, dep, r.code);
    } catch (err) {
      if (!(err instanceof RollbackRefused)) throw err;
      return refusedUnderWay(ctx, dep, opts, cause, err);
    }
  }
  let d = await move(ctx, dep, 'roll-back', { cause, executor: executorName() });
  await auditDeployment(ctx.db.control, opts.actor, 'deploy.rollback.start', d, { cause });
  opts.progress?.(d);
  for (const key of undoPlan(d, r.code)) {
    const prev = d.undo.find((s) => s.name === stepName('undo', key));
    if (prev && (prev.status === 'done' || prev.status === 'skipped')) continue;
    const ran = await runStep(r, d, 'undo', key, (now) => backward(r, now, key, expected));
    d = ran.d;
    // the data may be deployed and was not restored: undoing the schema and the code now would leave
    // code and data at different versions; stop (a data deploy that failed committed nothing: go on)
    if (ran.state.status === 'failed' && key === 'deploy-data' && d.steps.find((s) => s.name === 'deploy-data')?.status !== 'failed') {
      return stopAfterFailedRestore(ctx, d, opts, cause, ran.state);
    }
  }
  return finishRollback(ctx, d, opts, cause);
}

/** The data restore failed: the rollback stops there, saying where code and data stand. */
async function stopAfterFailedRestore(ctx: Ctx, dep: Deployment, opts: ExecOpts, cause: string, restore: StepState): Promise<Deployment> {
  const stopped = standingAfterFailedRestore(dep, must(restore.error, 'the error of the failed data restore'));
  const d = await move(ctx, dep, 'rollback-failed', { cause: `${cause}; ROLLBACK STOPPED: ${stopped}` });
  await auditDeployment(ctx.db.control, opts.actor, 'deploy.rollback.failed', d, { cause, stopped, env: d.env, locked: true });
  opts.progress?.(d);
  return d;
}

/** Every undo step ran: rolled back, rolled back with the smoke tests failing, or failed. */
async function finishRollback(ctx: Ctx, dep: Deployment, opts: ExecOpts, cause: string): Promise<Deployment> {
  const failed = dep.undo.filter((s) => s.status === 'failed').map((s) => s.name);
  const outcome =
    failed.length === 0 ? 'rolled-back'
    : failed.every((n) => n === SMOKE_AFTER_ROLLBACK) ? 'smoke-failing-after-rollback'
    : 'rollback-failed';
  const d = await move(ctx, dep, outcome);
  const action = {
    'rolled-back': 'deploy.rolled-back',
    'smoke-failing-after-rollback': 'deploy.rolled-back.smoke-failing',
    'rollback-failed': 'deploy.rollback.failed',
  }[outcome];
  await auditDeployment(ctx.db.control, opts.actor, action, d, { cause, env: d.env, locked: true, ...(failed.length ? { failed } : {}) });
  opts.progress?.(d);
  return d;
}

/** A rollback under way refused (production written since): it stops there, saying where code and data stand. */
async function refusedUnderWay(ctx: Ctx, dep: Deployment, opts: ExecOpts, cause: string, err: RollbackRefused): Promise<Deployment> {
  await auditDeployment(ctx.db.control, opts.actor, 'deploy.rollback.refused', dep, { reason: err.message, ...err.details });
  const stopped = `${cause}; ROLLBACK REFUSED: ${err.message}. Nothing more was undone: ${standing(dep)}`;
  const d = await move(ctx, dep, 'rollback-failed', { cause: stopped });
  await auditDeployment(ctx.db.control, opts.actor, 'deploy.rollback.failed', d, { cause, refused: err.message, env: d.env });
  opts.progress?.(d);
  return d;
}

/**
 * Deployments in flight whose process is gone (the bot or CLI died mid-deployment), and approved ones
 * that never started (the process that reached Go, or claimed the window, died before running it).
 */
export async function interruptedDeployments(ctx: Ctx): Promise<Deployment[]> {
  const rows = (await deployments(ctx.db.control).whereIn('status', IN_FLIGHT_STATES).orderBy('id')).map(toDeployment);
  const out: Deployment[] = [];
  for (const d of rows) if (!(await executorAlive(ctx, d.id))) out.push(d);
  return out;
}

/** What an interrupted deployment left behind, in words: never code and data at different versions unsaid. */
export function whereItStopped(d: Deployment): string {
  if (d.status === 'approved' && d.steps.length === 0) {
    return (
      `approved${d.approved_at ? ` at ${new Date(d.approved_at).toISOString()}` : ''} but never started (the process that was to run it ` +
      `died): nothing was done, code at ${d.previous_code_version ?? 'the previous version'}, data as before; Resume runs it`
    );
  }
  const done = d.steps.filter((s) => s.status === 'done').map((s) => s.name);
  const running = d.steps.find((s) => s.status === 'running' || s.status === 'failed');
  const undone = d.undo.filter((s) => s.status === 'done').map((s) => s.name);
  const where =
    d.status === 'rolling-back'
      ? `stopped while rolling back (${undone.length ? `done: ${undone.join(', ')}` : 'nothing undone yet'})`
      : `stopped at ${running ? running.name : `the step after ${done.slice(-1)[0]}`}`;
  return `${where}: ${standing(d)}`;
}

/** Where code and data stand, from the forward steps and the undo steps both. */
export function standing(d: Deployment): string {
  const ahead = (n: string) => d.steps.find((s) => s.name === n)?.status;
  const back = (n: string) => d.undo.find((s) => s.name === `undo ${n}`)?.status;
  const previous = d.previous_code_version ?? 'the previous version';
  const half = (s: string | undefined) => s === 'running' || s === 'failed';
  const code =
    back('deploy-code') === 'done' ? `code back at ${previous}`
    : half(back('deploy-code'))
      ? `code possibly half-way back to ${previous} (its undo ${back('deploy-code') === 'failed' ? 'failed' : 'was interrupted'})`
    : ahead('deploy-code') === 'done' ? `code at ${d.code_version}`
    : half(ahead('deploy-code')) ? `code possibly half-way to ${d.code_version}`
    : `code at ${previous}`;
  const data =
    back('deploy-data') === 'done' ? 'data restored to before the deploy (verified)'
    : back('deploy-data') === 'running'
      ? `data restore interrupted (its transaction committed only if verified): data as deployed or as before the deploy`
    : ahead('deploy-data') === 'done' ? `data of ${d.release} deployed`
    : ahead('deploy-data') === 'running' ? 'data deployment interrupted (its transaction did not commit unless verified)'
    : ahead('deploy-data') === 'failed' ? 'data as before (the data deploy failed and committed nothing)'
    : 'data as before';
  return `${code}, ${data}`;
}

type RollbackOpts = { actor: Actor; rationale: string; progress?: DeployProgress };

/** `/rollback R2`: the same rollback, on demand, after a deployment that succeeded; says why when it cannot. */
export async function rollbackRelease(ctx: Ctx, release: string, opts: RollbackOpts): Promise<Deployment> {
  releaseOrThrow(ctx.config, release);
  const spec = deploySpecOf(ctx);
  requireRationale(opts.rationale, 'a rollback', `why roll ${release} back?`, 'usage');
  const d = await rollbackable(ctx, release, spec.env);
  const checked = await refuseIfWrittenSince(ctx, d, opts.actor);
  await auditDeployment(ctx.db.control, opts.actor, 'deploy.rollback.requested', d, { rationale: opts.rationale });
  await ctx.db.control('env_locks')
    .insert({ env: spec.env, deployment_id: d.id, holder: opts.actor, reason: `rollback of deployment #${d.id} of ${release}` })
    .onConflict('env')
    .ignore();
  const cause = `rollback requested by ${opts.actor}: ${opts.rationale}`;
  return withExecutor(ctx, d.id, (lost) => rollBack(ctx, d, opts, cause, { lost, checked }));
}

/**
 * The release's deployment a rollback on demand takes back: the last one that succeeded, or whose
 * rollback stopped (it is taken up again where it stopped); refused, saying why, when it cannot be.
 */
async function rollbackable(ctx: Ctx, release: string, env: string): Promise<Deployment> {
  const row = await deployments(ctx.db.control).where({ release, env }).whereIn('status', ROLLBACK_FROM).orderBy('id', 'desc').first();
  if (!row) throw new TributaryError('gate_state', `${release} has no successful deployment to ${env} to roll back`);
  const d = toDeployment(row);
  const later = await deployments(ctx.db.control).where({ env, status: 'succeeded' }).where('id', '>', d.id).first('id', 'release');
  if (later) {
    throw new TributaryError(
      'gate_state',
      `cannot roll back ${release}: ${later.release} was deployed to ${env} after it (deployment #${later.id}); roll that back first`,
    );
  }
  if (!d.backup_id) throw new TributaryError('gate_state', `cannot roll back ${release}'s data: deployment #${d.id} recorded no backup`);
  if (!d.previous_code_version) {
    throw new TributaryError(
      'gate_state',
      `cannot roll back ${release}'s code: the version before it was not recorded (configure deploy.commands.current)`,
    );
  }
  const lock = await envLock(ctx.db.control, env);
  if (lock && lock.deployment_id !== d.id) {
    const message = `${env} is locked by ${lock.reason} (held by ${lock.holder}); unlock it first: tributary unlock ${env}`;
    throw new TributaryError('gate_busy', message);
  }
  return d;
}

/** An interrupted deployment (its process died) rolled back from where it stopped; one that never started is cancelled. */
export async function rollbackInterruptedDeployment(ctx: Ctx, id: number, opts: RollbackOpts): Promise<Deployment> {
  requireRationale(opts.rationale, 'a rollback', `why roll deployment #${id} back?`, 'usage');
  const d = await getDeployment(ctx.db.control, id);
  if (!IN_FLIGHT_STATES.includes(d.status)) throw new TributaryError('gate_state', `deployment #${id} is ${d.status}, not interrupted`);
  if (d.status === 'approved') {
    // it never started: nothing to undo, it is cancelled
    return withExecutor(ctx, id, async () => {
      const cause = `cancelled before it started by ${opts.actor}: ${opts.rationale} (${whereItStopped(d)})`;
      const row = await transitionDeployment(ctx.db.control, d, 'cancel', { cause });
      await auditDeployment(ctx.db.control, opts.actor, 'deploy.cancelled', d, { rationale: opts.rationale });
      opts.progress?.(row);
      return row;
    });
  }
  // a rollback already under way is checked as it resumes (a refusal stops it); a running one before it starts
  const checked = d.status === 'running' ? await refuseIfWrittenSince(ctx, d, opts.actor) : undefined;
  const details = { rationale: opts.rationale, interrupted: whereItStopped(d) };
  await auditDeployment(ctx.db.control, opts.actor, 'deploy.rollback.requested', d, details);
  const cause = `interrupted (${whereItStopped(d)}); rolled back by ${opts.actor}: ${opts.rationale}`;
  return withExecutor(ctx, id, (lost) => rollBack(ctx, d, opts, cause, checked === undefined ? { lost } : { lost, checked }));
}

/** The deployment a rollback of the release takes back: an interrupted one, else the last that succeeded or whose rollback stopped. */
export async function rollbackTarget(ctx: Ctx, release: string): Promise<Deployment> {
  const interrupted = (await interruptedDeployments(ctx)).find((d) => d.release === release);
  if (interrupted) return interrupted;
  const row = await deployments(ctx.db.control).where({ release }).whereIn('status', ROLLBACK_FROM).orderBy('id', 'desc').first();
  if (!row) throw new TributaryError('gate_state', `${release} has no deployment to roll back (none succeeded, none interrupted)`);
  return toDeployment(row);
}

export interface GoCardFacts {
  tiers: { tier: string; runId: number; status: string; passRate: number }[];
  approval?: { by: string; at: Date; override: boolean; rationale: string };
}

/** What the go/no-go card shows besides the deployment: the latest finished tier 1 and 2 runs and the approval. */
export async function goCardFacts(ctx: Ctx, release: string): Promise<GoCardFacts> {
  const runs = await ctx.db.control<TestRunsRow>('test_runs')
    .where({ release })
    .whereIn('tier', ['1', '2'])
    .whereNot({ status: 'running' })
    .orderBy('id', 'desc')
    .select('id', 'tier', 'status', 'totals');
  const tiers = runs
    .filter((r, i, all) => all.findIndex((x) => x.tier === r.tier) === i)
    .map((r) => ({ tier: r.tier, runId: r.id, status: r.status, passRate: Number((r.totals as { passRate?: number }).passRate ?? 0) }))
    .reverse();
  const a = await ctx.db.control<ApprovalsRow>('approvals').where({ release }).orderBy('id', 'desc').first();
  return { tiers, ...(a ? { approval: { by: a.approved_by, at: a.approved_at, override: a.override, rationale: a.rationale } } : {}) };
}
