import os from 'node:os';
import pg from 'pg';
import type { Knex } from 'knex';
import { releaseOrThrow, type DeploySpec } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { logger, redact } from '../../log.js';
import { recordAudit } from '../kernel/audit.js';
import type { Actor, Ctx } from '../kernel/context.js';
import { releaseState } from '../kernel/lifecycle.js';
import { runTests } from '../tiers/index.js';
import { getBundle, productionEnv, type Bundle } from './bundle.js';
import { backupData, changedMessage, changedSince, dataChecksums, deployData, getBackup, restoreData, type Backup, type TableFigures } from './dataDeployer.js';
import { codeDeployer, type CodeDeployer } from './codeDeployers.js';

/**
 * A deployment is a persisted state machine. Requested (`/release deploy R2`), it waits for Go from
 * release managers (quorum; the requester alone never suffices; an unanswered prompt expires as
 * no-go), may be scheduled into a maintenance window, then runs the synchronized sequence, each step
 * persisted before and after it runs. A failure at any step, or failed smoke tests, rolls code and data
 * back together in the exact reverse order of what was done; the env then stays locked until a
 * release_manager unlocks it. A process that dies mid-deployment leaves the deployment `running` with
 * no live executor: `interruptedDeployments` finds it, and it is resumed or rolled back from there.
 */
export const STEPS = ['lock', 'record-version', 'maintenance-on', 'deploy-code', 'migrate-up', 'backup-data', 'deploy-data', 'restart', 'maintenance-off', 'smoke'] as const;
export type StepName = (typeof STEPS)[number];

export type DeploymentStatus = 'awaiting-go' | 'scheduled' | 'approved' | 'running' | 'succeeded' | 'rolling-back' | 'rolled-back' | 'rollback-failed' | 'rejected' | 'expired';

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

export interface Deployment {
  id: number;
  release: string;
  bundle_id: number;
  bundle_version: number;
  code_version: string;
  env: string;
  status: DeploymentStatus;
  requested_by: string;
  requested_at: Date;
  window_at: Date | null;
  expires_at: Date;
  /** When it reached Go (approved, or claimed in its window). */
  approved_at: Date | null;
  previous_code_version: string | null;
  backup_id: number | null;
  steps: StepState[];
  undo: StepState[];
  cause: string | null;
  slack: { channel?: string; ts?: string; progressTs?: string };
  executor: string | null;
  started_at: Date | null;
  finished_at: Date | null;
}

export interface GoDecision {
  actor: string;
  decision: 'go' | 'no-go';
  rationale: string;
  decided_at: Date;
}

export type DeployProgress = (d: Deployment) => void;

export function deploySpecOf(ctx: Ctx): DeploySpec {
  const d = ctx.config.deploy;
  if (!d) throw new TributaryError('config_invalid', `${ctx.config.file}: deploy: not configured; add deploy.commands (deploy, rollback, …) or deploy.webhook; see the README, "Deployment"`);
  return d;
}

export async function getDeployment(db: Knex | Knex.Transaction, id: number): Promise<Deployment> {
  const d = await db('deployments').where({ id }).first();
  if (!d) throw new TributaryError('usage', `no deployment #${id}`);
  return d as Deployment;
}

export async function decisionsOf(db: Knex | Knex.Transaction, id: number): Promise<GoDecision[]> {
  return db('deploy_decisions').where({ deployment_id: id }).orderBy('id').select('actor', 'decision', 'rationale', 'decided_at');
}

// ---- go / no-go ----

const formats = new Map<string, Intl.DateTimeFormat>();
function formatIn(timeZone: string): Intl.DateTimeFormat {
  let f = formats.get(timeZone);
  if (!f) formats.set(timeZone, (f = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })));
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

/** A deployment in one of these holds its env (a partial unique index allows one per env). */
export const OPEN_STATUSES: readonly DeploymentStatus[] = ['awaiting-go', 'scheduled', 'approved', 'running', 'rolling-back'];
const OPEN_INDEX = 'deployments_one_open_per_env';

/** A scheduled deployment not started within its window (or 30 minutes after window_at without windows) expires. */
export const WINDOW_GRACE_MS = 30 * 60_000;
/** An approved deployment whose process died before running it stops holding the env after this long. */
export const APPROVED_GRACE_MS = 30 * 60_000;

async function busyError(db: Knex, env: string): Promise<TributaryError> {
  const open = await db('deployments').where({ env }).whereIn('status', OPEN_STATUSES).first('id', 'release', 'status');
  return new TributaryError('gate_busy', open ? `${env} already has deployment #${String(open.id)} of ${String(open.release)} (${String(open.status)}): one deployment at a time` : `${env} already has an open deployment: one deployment at a time`, { env });
}

export async function requestDeployment(ctx: Ctx, release: string, opts: { actor: Actor; at?: Date; bundleVersion?: number; slack?: { channel?: string } }): Promise<Deployment> {
  releaseOrThrow(ctx.config, release);
  const spec = deploySpecOf(ctx);
  const db = ctx.db.control;
  const { state } = await releaseState(db, release);
  if (state !== 'approved') {
    await recordAudit(db, { actor: opts.actor, action: 'gate.deploy.refused', release, details: { state } });
    throw new TributaryError('gate_state', `release ${release} is ${state}: only an approved release is deployed; approve it after tier 2 first (tributary approve ${release})`, { release });
  }
  const bundle = await getBundle(ctx, release, opts.bundleVersion);
  if (!bundle) throw new TributaryError('gate_state', `${release} has no release bundle: tributary bundle ${release} --code <version> first`, { release });
  if (opts.at && !inWindow(spec, opts.at)) {
    throw new TributaryError('usage', `${opts.at.toISOString()} is outside every maintenance window (${spec.windows.map((w) => `${w.days.join(',')} ${w.start}–${w.end} ${w.timezone}`).join('; ')})`);
  }
  await expireStale(ctx);
  const open = (await db('deployments').where({ env: spec.env }).whereIn('status', OPEN_STATUSES).first()) as Deployment | undefined;
  if (open && open.status === 'approved' && !(await executorAlive(ctx, open.id))) {
    // reached Go, but the process that was to run it died before it started
    const since = open.approved_at ? new Date(open.approved_at).getTime() : 0;
    if (Date.now() - since < APPROVED_GRACE_MS) {
      throw new TributaryError(
        'gate_busy',
        `${spec.env} already has deployment #${open.id} of ${open.release}, approved${open.approved_at ? ` at ${new Date(open.approved_at).toISOString()}` : ''} but never started (the process that was to run it is gone): run it (tributary deploy run ${open.id}, or Resume in Slack) or cancel it (tributary rollback ${open.release} --rationale "…"); ${APPROVED_GRACE_MS / 60_000} minutes after its Go a new request supersedes it`,
        { env: spec.env },
      );
    }
    const cause = `approved${open.approved_at ? ` at ${new Date(open.approved_at).toISOString()}` : ''} but never started (the process that was to run it died); superseded by a new request from ${opts.actor}: counts as no-go`;
    const n = await db('deployments').where({ id: open.id, status: 'approved' }).update({ status: 'expired', finished_at: db.fn.now(), cause });
    if (n > 0) await recordAudit(db, { actor: opts.actor, action: 'deploy.expired', release: open.release, subject: `deployment #${open.id}`, details: { reason: cause } });
  } else if (open) {
    throw await busyError(db, spec.env);
  }
  try {
    return await insertRequest(ctx, release, bundle, spec, opts);
  } catch (err) {
    // a concurrent request got in between the check and the insert: the unique index says so
    if ((err as { code?: string; constraint?: string }).code === '23505' && (err as { constraint?: string }).constraint === OPEN_INDEX) throw await busyError(db, spec.env);
    throw err;
  }
}

async function insertRequest(ctx: Ctx, release: string, bundle: Bundle, spec: DeploySpec, opts: { actor: Actor; at?: Date; slack?: { channel?: string } }): Promise<Deployment> {
  return ctx.db.control.transaction(async (trx) => {
    const [row] = await trx('deployments')
      .insert({
        release,
        bundle_id: bundle.id,
        bundle_version: bundle.version,
        code_version: bundle.codeVersion,
        env: spec.env,
        status: 'awaiting-go',
        requested_by: opts.actor,
        window_at: opts.at ?? null,
        expires_at: new Date(Date.now() + spec.promptMs),
        slack: JSON.stringify(opts.slack ?? {}),
      })
      .returning('*');
    await recordAudit(trx, { actor: opts.actor, action: 'deploy.requested', release, subject: `deployment #${String(row.id)}`, details: { env: spec.env, bundle: bundle.version, code: bundle.codeVersion, at: opts.at?.toISOString() ?? null } });
    return row as Deployment;
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
  const rows = await db('deployments').where({ status: 'awaiting-go' }).where('expires_at', '<=', db.fn.now()).update({ status: 'expired', finished_at: db.fn.now(), cause: 'the go/no-go prompt was not answered in time: no-go' }).returning(['id', 'release']);
  for (const r of rows) await recordAudit(db, { actor: 'tributary', action: 'deploy.expired', release: r.release, subject: `deployment #${String(r.id)}` });
  const out = rows.map((r) => r.id as number);
  const spec = ctx.config.deploy;
  if (!spec) return out;
  const due = (await db('deployments').where({ status: 'scheduled' }).where('window_at', '<=', db.fn.now()).select('id', 'release', 'window_at')) as Pick<Deployment, 'id' | 'release' | 'window_at'>[];
  for (const d of due) {
    const deadline = windowDeadline(spec, new Date(d.window_at!));
    if (Date.now() <= deadline.getTime()) continue;
    const cause = `its window passed before it could start (scheduled for ${new Date(d.window_at!).toISOString()}, to start by ${deadline.toISOString()}; the bot was not running): no-go; request it again`;
    const n = await db('deployments').where({ id: d.id, status: 'scheduled' }).update({ status: 'expired', finished_at: db.fn.now(), cause });
    if (n === 0) continue;
    await recordAudit(db, { actor: 'tributary', action: 'deploy.expired', release: d.release, subject: `deployment #${d.id}`, details: { reason: cause } });
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

export async function decideGo(ctx: Ctx, id: number, opts: { actor: Actor; decision: 'go' | 'no-go'; rationale: string }): Promise<GoResult> {
  const spec = deploySpecOf(ctx);
  const rationale = opts.rationale.trim();
  if (rationale.length < 3) throw new TributaryError('usage', 'a go/no-go decision needs a rationale');
  await expireStale(ctx);
  return ctx.db.control.transaction(async (trx) => {
    const d = (await trx('deployments').where({ id }).forUpdate().first()) as Deployment | undefined;
    if (!d) throw new TributaryError('usage', `no deployment #${id}`);
    if (d.status === 'expired') throw new TributaryError('gate_state', `deployment #${id} expired at ${d.expires_at.toISOString()} without an answer: it counts as no-go; request it again (/release deploy ${d.release})`);
    if (d.status !== 'awaiting-go') throw new TributaryError('already_decided', `deployment #${id} is ${d.status}: its go/no-go is over`);
    const earlier = await trx('deploy_decisions').where({ deployment_id: id, actor: opts.actor }).first();
    if (earlier) throw new TributaryError('already_decided', `${opts.actor} already said ${String(earlier.decision)} on deployment #${id}`, { decidedBy: opts.actor });
    await trx('deploy_decisions').insert({ deployment_id: id, actor: opts.actor, decision: opts.decision, rationale });
    await recordAudit(trx, { actor: opts.actor, action: `deploy.${opts.decision}`, release: d.release, subject: `deployment #${id}`, details: { rationale } });
    if (opts.decision === 'no-go') {
      const [row] = await trx('deployments').where({ id }).update({ status: 'rejected', finished_at: trx.fn.now(), cause: `no-go by ${opts.actor}: ${rationale}` }).returning('*');
      return { deployment: row as Deployment, ready: false, gos: 0, needed: spec.quorum };
    }
    const gos = (await trx('deploy_decisions').where({ deployment_id: id, decision: 'go' }).select('actor')).map((r) => r.actor as string);
    const others = gos.filter((a) => a !== d.requested_by);
    const ready = gos.length >= spec.quorum && others.length >= 1;
    if (!ready) return { deployment: d, ready: false, gos: gos.length, needed: Math.max(spec.quorum, gos.length + (others.length === 0 ? 1 : 0)) };
    const scheduled = d.window_at && d.window_at.getTime() > Date.now();
    const [row] = await trx('deployments').where({ id }).update({ status: scheduled ? 'scheduled' : 'approved', ...(scheduled ? {} : { approved_at: trx.fn.now() }) }).returning('*');
    await recordAudit(trx, { actor: opts.actor, action: 'deploy.go.quorum', release: d.release, subject: `deployment #${id}`, details: { gos, scheduled: scheduled ? d.window_at!.toISOString() : null } });
    return { deployment: row as Deployment, ready: !scheduled, gos: gos.length, needed: spec.quorum };
  });
}

/**
 * Scheduled deployments whose window has come: each is claimed once (the claim moves it to approved).
 * One whose window passed before it could start is expired instead (expireStale), never started late.
 */
export async function claimDue(ctx: Ctx): Promise<number[]> {
  await expireStale(ctx);
  const spec = deploySpecOf(ctx);
  const db = ctx.db.control;
  const due = (await db('deployments').where({ status: 'scheduled' }).where('window_at', '<=', db.fn.now()).select('id', 'window_at')) as Pick<Deployment, 'id' | 'window_at'>[];
  const out: number[] = [];
  for (const d of due) {
    if (Date.now() > windowDeadline(spec, new Date(d.window_at!)).getTime()) continue;
    const rows = await db('deployments').where({ id: d.id, status: 'scheduled' }).update({ status: 'approved', approved_at: db.fn.now() }).returning('id');
    out.push(...rows.map((r) => r.id as number));
  }
  return out;
}

// ---- the env lock ----

export async function envLock(db: Knex | Knex.Transaction, env: string): Promise<{ env: string; deployment_id: number | null; holder: string; reason: string; locked_at: Date } | undefined> {
  return db('env_locks').where({ env }).first();
}

export async function unlockEnv(ctx: Ctx, env: string, opts: { actor: Actor; rationale?: string }): Promise<{ env: string; was?: { holder: string; deployment_id: number | null } }> {
  const db = ctx.db.control;
  const running = await db('deployments').where({ env }).whereIn('status', ['running', 'rolling-back']).first('id', 'executor');
  if (running && (await executorAlive(ctx, running.id as number))) {
    throw new TributaryError('gate_busy', `${env} is locked by deployment #${String(running.id)}, which is still running (${String(running.executor)}): wait for it, or stop it first`);
  }
  const lock = await envLock(db, env);
  if (!lock) return { env };
  await db.transaction(async (trx) => {
    await trx('env_locks').where({ env }).delete();
    await recordAudit(trx, { actor: opts.actor, action: 'env.unlock', subject: env, details: { holder: lock.holder, deployment: lock.deployment_id, rationale: opts.rationale ?? null } });
  });
  return { env, was: { holder: lock.holder, deployment_id: lock.deployment_id } };
}

// ---- execution ----

const EXECUTOR_LOCK = (id: number) => `tributary:deployment:${id}`;

/** Whether a live process holds the deployment's executor lock (a dead process's session lock is gone). */
export async function executorAlive(ctx: Ctx, id: number): Promise<boolean> {
  const c = new pg.Client(ctx.db.controlParams as pg.ClientConfig);
  c.on('error', () => undefined);
  await c.connect();
  try {
    const got = await c.query<{ ok: boolean }>('select pg_try_advisory_lock(hashtext($1)) as ok', [EXECUTOR_LOCK(id)]);
    if (got.rows[0]!.ok) await c.query('select pg_advisory_unlock(hashtext($1))', [EXECUTOR_LOCK(id)]);
    return !got.rows[0]!.ok;
  } finally {
    await c.end().catch(() => undefined);
  }
}

interface Runner {
  ctx: Ctx;
  spec: DeploySpec;
  code: CodeDeployer;
  bundle: Bundle;
  actor: Actor;
  progress?: DeployProgress;
}

async function persist(ctx: Ctx, d: Deployment, fields: Partial<Record<keyof Deployment, unknown>> = {}): Promise<Deployment> {
  const [row] = await ctx.db.control('deployments')
    .where({ id: d.id })
    .update({ steps: JSON.stringify(d.steps), undo: JSON.stringify(d.undo), ...fields })
    .returning('*');
  return row as Deployment;
}

function vars(d: Deployment, spec: DeploySpec, version?: string) {
  return { release: d.release, env: d.env, ...(version !== undefined ? { version } : {}), ...(spec.migration ? { migration: spec.migration } : {}) };
}

async function smoke(r: Runner, d: Deployment): Promise<{ ok: boolean; detail: string }> {
  if (!r.spec.smoke || !r.ctx.config.testing) return { ok: true, detail: 'skipped: no smoke tests configured' };
  const t = await runTests(r.ctx, d.release, { tier: 'smoke', env: d.env, actor: r.actor });
  const detail = `smoke tests on ${d.env} (test run #${t.runId}): ${t.totals.passed}/${t.totals.total - t.totals.skipped} passed`;
  if (t.totals.failed + t.totals.errored > 0 || t.totals.total - t.totals.skipped === 0) {
    const first = t.failures[0];
    return { ok: false, detail: `${detail}${first ? `; ${first.name}: ${first.message ?? first.status}` : ''}` };
  }
  return { ok: true, detail };
}

/** Runs one deployer command; a failure throws with the command's output attached. */
async function runOrThrow(r: Runner, d: Deployment, name: Parameters<CodeDeployer['run']>[0], version?: string) {
  const out = await r.code.run(name, vars(d, r.spec, version));
  if (!out.ok) throw new TributaryError('runner_failed', out.error ?? `${name} failed`, { output: out.output });
  return out;
}

/** One forward step. Returns detail text, or throws with the cause. */
async function forward(r: Runner, d: Deployment, step: StepName): Promise<{ detail: string; output?: string; skipped?: boolean; figures?: TableFigures[]; patch?: Partial<Record<keyof Deployment, unknown>> }> {
  const { ctx, code, spec } = r;
  const cmd = (name: Parameters<CodeDeployer['run']>[0], version?: string) => runOrThrow(r, d, name, version);
  switch (step) {
    case 'lock': {
      const inserted = await ctx.db.control('env_locks').insert({ env: d.env, deployment_id: d.id, holder: d.requested_by, reason: `deployment #${d.id} of ${d.release}` }).onConflict('env').ignore().returning('env');
      if (inserted.length === 0) {
        const lock = await envLock(ctx.db.control, d.env);
        if (lock?.deployment_id !== d.id) {
          throw new TributaryError('gate_busy', `${d.env} is locked by ${lock?.reason ?? 'another deployment'} (held by ${lock?.holder ?? '?'} since ${lock?.locked_at.toISOString() ?? '?'}); a release_manager unlocks it: tributary unlock ${d.env}`);
        }
      }
      return { detail: `${d.env} locked for deployment #${d.id}` };
    }
    case 'record-version': {
      if (!code.has('current')) return { detail: 'no deploy.commands.current: the previous version is unknown, a code rollback is not possible', skipped: true };
      const out = await cmd('current');
      const version = out.output.trim().split('\n').slice(-1)[0]?.trim() ?? '';
      if (!version) throw new TributaryError('runner_failed', 'deploy.commands.current printed no version');
      return { detail: `running version: ${version}`, output: out.output, patch: { previous_code_version: version } };
    }
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
      return { detail: `backed up ${b.tables.map((t) => `${t.table} (${t.rows} rows, checksum ${t.checksum})`).join(', ')}`, patch: { backup_id: b.id } };
    }
    case 'deploy-data': {
      // the whole tables' figures as committed: a rollback on demand later refuses if production changed since
      const res = await deployData(ctx, r.bundle, await backupOf(ctx, d), { actor: r.actor, figures: true });
      return { detail: `data of ${d.release} deployed and verified: ${res.tables.map((t) => `${t.table} ${t.rows} rows`).join(', ')}`, ...(res.after ? { figures: res.after } : {}) };
    }
    case 'restart': {
      const out = code.has('restart') ? (await cmd('restart')).output : '';
      if (code.has('health')) await cmd('health');
      return { detail: [code.has('restart') ? 'restarted' : 'no restart configured', code.has('health') ? 'healthy' : ''].filter(Boolean).join(', '), output: out };
    }
    case 'maintenance-off':
      if (!code.has('maintenanceOff')) return { detail: 'not configured', skipped: true };
      return { detail: 'maintenance off', output: (await cmd('maintenanceOff')).output };
    case 'smoke': {
      if (!r.spec.smoke || !r.ctx.config.testing) return { detail: 'no smoke tests configured (testing.command, deploy.smoke)', skipped: true };
      const s = await smoke(r, d);
      if (!s.ok) throw new TributaryError('runner_failed', s.detail);
      return { detail: s.detail };
    }
  }
}

async function backupOf(ctx: Ctx, d: Deployment): Promise<Backup> {
  const fresh = await getDeployment(ctx.db.control, d.id);
  if (!fresh.backup_id) throw new TributaryError('internal', `deployment #${d.id} has no data backup`);
  const b = await getBackup(ctx, fresh.backup_id);
  if (!b) throw new TributaryError('internal', `deployment #${d.id}: backup #${fresh.backup_id} is gone`);
  return b;
}

/** The undo of a forward step, in the rollback (exact reverse order). */
async function backward(r: Runner, d: Deployment, step: StepName, guard = false): Promise<{ detail: string; output?: string } | null> {
  const { ctx, code } = r;
  const cmd = (name: Parameters<CodeDeployer['run']>[0], version?: string) => runOrThrow(r, d, name, version);
  switch (step) {
    case 'maintenance-off':
      return code.has('maintenanceOn') ? { detail: 'maintenance on for the rollback', output: (await cmd('maintenanceOn')).output } : null;
    case 'deploy-data': {
      const figures = guard ? d.steps.find((s) => s.name === 'deploy-data' && s.status === 'done')?.figures : undefined;
      const res = await restoreData(ctx, await backupOf(ctx, d), { actor: r.actor, ...(figures ? { expect: figures } : {}) });
      return { detail: `data restored and verified identical to before the deploy: ${res.tables.map((t) => `${t.table} ${t.rows} rows, checksum ${t.checksum} (before: ${t.before.checksum})`).join(', ')}` };
    }
    case 'migrate-up':
      return code.has('migrateDown') ? { detail: 'schema migrated down', output: (await cmd('migrateDown')).output } : null;
    case 'deploy-code': {
      const fresh = await getDeployment(ctx.db.control, d.id);
      if (!fresh.previous_code_version) throw new TributaryError('runner_failed', 'the previous code version was not recorded (deploy.commands.current): roll the code back by hand');
      return { detail: `code back to ${fresh.previous_code_version}`, output: (await cmd('rollback', fresh.previous_code_version)).output };
    }
    case 'maintenance-on':
      return code.has('maintenanceOff') ? { detail: 'maintenance off', output: (await cmd('maintenanceOff')).output } : null;
    default:
      return null;
  }
}

function runnerOf(ctx: Ctx, bundle: Bundle, actor: Actor, progress?: DeployProgress): Runner {
  const spec = deploySpecOf(ctx);
  return { ctx, spec, code: codeDeployer(spec), bundle, actor, ...(progress ? { progress } : {}) };
}

/** Holds the deployment's executor lock on a dedicated connection for as long as it runs. */
async function withExecutor<T>(ctx: Ctx, id: number, fn: () => Promise<T>): Promise<T> {
  const c = new pg.Client(ctx.db.controlParams as pg.ClientConfig);
  c.on('error', () => undefined);
  await c.connect();
  try {
    const got = await c.query<{ ok: boolean }>('select pg_try_advisory_lock(hashtext($1)) as ok', [EXECUTOR_LOCK(id)]);
    if (!got.rows[0]!.ok) throw new TributaryError('gate_busy', `deployment #${id} is being run by another process`);
    return await fn();
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * Runs (or resumes) a deployment: forward from the first step not done; on a failure, the rollback.
 * A step found `running` (its process died) is run again: every step is safe to repeat (code deploy of
 * one version, data in one transaction, a backup taken afresh).
 */
export async function executeDeployment(ctx: Ctx, id: number, opts: { actor: Actor; progress?: DeployProgress }): Promise<Deployment> {
  return withExecutor(ctx, id, async () => {
    let d = await getDeployment(ctx.db.control, id);
    if (d.status === 'rolling-back') return rollBack(ctx, d, opts, d.cause ?? 'resumed rollback');
    if (!['approved', 'running'].includes(d.status)) {
      throw new TributaryError('gate_state', `deployment #${id} is ${d.status}: ${d.status === 'awaiting-go' ? 'it waits for Go' : d.status === 'scheduled' ? `it starts in its window at ${d.window_at?.toISOString()}` : 'nothing to run'}`);
    }
    const bundle = (await getBundle(ctx, d.release, d.bundle_version))!;
    const r = runnerOf(ctx, bundle, opts.actor, opts.progress);
    d = await persist(ctx, d, { status: 'running', executor: `${os.hostname()}:${process.pid}`, ...(d.started_at ? {} : { started_at: new Date() }) });
    if (d.steps.length === 0) await recordAudit(ctx.db.control, { actor: opts.actor, action: 'deploy.start', release: d.release, subject: `deployment #${id}`, details: { env: d.env, code: d.code_version, bundle: d.bundle_version } });
    opts.progress?.(d);
    for (const step of STEPS) {
      const prev = d.steps.find((s) => s.name === step);
      if (prev && (prev.status === 'done' || prev.status === 'skipped')) continue;
      const state: StepState = { name: step, status: 'running', startedAt: new Date().toISOString() };
      d.steps = [...d.steps.filter((s) => s.name !== step), state];
      d = await persist(ctx, d);
      opts.progress?.(d);
      const t0 = performance.now();
      try {
        const res = await forward(r, d, step);
        Object.assign(state, { status: res.skipped ? 'skipped' : 'done', ms: Math.round(performance.now() - t0), detail: res.detail, ...(res.output ? { output: res.output.slice(-1500) } : {}), ...(res.figures ? { figures: res.figures } : {}) });
        d.steps = [...d.steps.filter((s) => s.name !== step), state];
        d = await persist(ctx, d, res.patch ?? {});
        await recordAudit(ctx.db.control, { actor: opts.actor, action: `deploy.step.${state.status}`, release: d.release, subject: `deployment #${id}`, details: { step, ms: state.ms, detail: state.detail } });
        opts.progress?.(d);
      } catch (err) {
        const message = redact(err instanceof Error ? err.message : String(err));
        Object.assign(state, { status: 'failed', ms: Math.round(performance.now() - t0), error: message, ...(err instanceof TributaryError && err.details.output ? { output: String(err.details.output).slice(-1500) } : {}) });
        d.steps = [...d.steps.filter((s) => s.name !== step), state];
        d = await persist(ctx, d);
        await recordAudit(ctx.db.control, { actor: opts.actor, action: 'deploy.step.failed', release: d.release, subject: `deployment #${id}`, details: { step, error: message } });
        if (step === 'lock') {
          // nothing was done: the deployment did not start
          return persist(ctx, d, { status: 'rejected', cause: message, finished_at: new Date() });
        }
        return rollBack(ctx, d, opts, `${step} failed: ${message}`, r);
      }
    }
    await ctx.db.control('env_locks').where({ env: d.env, deployment_id: d.id }).delete();
    d = await persist(ctx, d, { status: 'succeeded', finished_at: new Date() });
    await recordAudit(ctx.db.control, { actor: opts.actor, action: 'deploy.succeeded', release: d.release, subject: `deployment #${id}`, details: { env: d.env, code: d.code_version, ms: d.steps.reduce((a, s) => a + (s.ms ?? 0), 0) } });
    opts.progress?.(d);
    return d;
  });
}

/** Steps whose effects a rollback undoes: done ones, and a failed/interrupted one that may have half-applied. */
const UNDOABLE: readonly string[] = ['maintenance-on', 'deploy-code', 'migrate-up', 'deploy-data', 'maintenance-off'];

function toUndo(d: Deployment): StepName[] {
  return d.steps
    .filter((s) => UNDOABLE.includes(s.name))
    .filter((s) => s.status === 'done' || ((s.status === 'failed' || s.status === 'running') && ['deploy-code', 'migrate-up', 'maintenance-on', 'deploy-data'].includes(s.name)))
    .map((s) => s.name as StepName)
    .sort((a, b) => STEPS.indexOf(b) - STEPS.indexOf(a));
}

/**
 * Where code and data stand when the data restore failed and the rollback stopped there (nothing after
 * it undone, so code and data are not left at different versions unsaid).
 */
function standingAfterFailedRestore(d: Deployment, error: string): string {
  const undone = new Set(d.undo.filter((s) => s.status === 'done').map((s) => s.name));
  const data = d.steps.find((s) => s.name === 'deploy-data')?.status === 'done' ? `data still ${d.release}'s as deployed` : `data either as before the deploy or as deployed (the process died during the data deploy): check it`;
  const code = d.steps.find((s) => s.name === 'deploy-code')?.status === 'done' ? `code still at ${d.code_version}` : `code possibly at ${d.code_version}`;
  const schema = d.steps.find((s) => s.name === 'migrate-up')?.status === 'done' ? ', schema still migrated up' : '';
  const maintenance = undone.has('undo maintenance-off') || (d.steps.some((s) => s.name === 'maintenance-on' && s.status === 'done') && !d.steps.some((s) => s.name === 'maintenance-off' && s.status === 'done')) ? ', maintenance on' : '';
  return `the data restore failed (${error}), so the rollback stopped there and did not undo the schema or the code: ${code}${schema}, ${data}${maintenance}. Code and data are still together at ${d.release}'s deployment; fix the cause, then roll back again (tributary rollback ${d.release} --rationale "…") or keep this version`;
}

async function rollBack(ctx: Ctx, dep: Deployment, opts: { actor: Actor; progress?: DeployProgress }, cause: string, runner?: Runner, guard = false): Promise<Deployment> {
  let d = await persist(ctx, dep, { status: 'rolling-back', cause });
  await recordAudit(ctx.db.control, { actor: opts.actor, action: 'deploy.rollback.start', release: d.release, subject: `deployment #${d.id}`, details: { cause } });
  const r = runner ?? runnerOf(ctx, (await getBundle(ctx, d.release, d.bundle_version))!, opts.actor, opts.progress);
  opts.progress?.(d);
  let failed = false;
  let stopped: string | null = null;
  for (const step of toUndo(d)) {
    const name = `undo ${step}`;
    const prev = d.undo.find((s) => s.name === name);
    if (prev && (prev.status === 'done' || prev.status === 'skipped')) continue;
    const state: StepState = { name, status: 'running', startedAt: new Date().toISOString() };
    d.undo = [...d.undo.filter((s) => s.name !== name), state];
    d = await persist(ctx, d);
    opts.progress?.(d);
    const t0 = performance.now();
    try {
      const res = await backward(r, d, step, guard);
      Object.assign(state, { status: res ? 'done' : 'skipped', ms: Math.round(performance.now() - t0), detail: res?.detail ?? 'nothing to undo', ...(res?.output ? { output: res.output.slice(-1500) } : {}) });
    } catch (err) {
      failed = true;
      Object.assign(state, { status: 'failed', ms: Math.round(performance.now() - t0), error: redact(err instanceof Error ? err.message : String(err)) });
      logger().error({ deployment: d.id, step }, `rollback step failed: ${state.error}`);
      // the data may be deployed and was not restored: undoing the schema and the code now would leave
      // code and data at different versions; stop (a data deploy that failed committed nothing: go on)
      if (step === 'deploy-data' && d.steps.find((s) => s.name === 'deploy-data')?.status !== 'failed') stopped = standingAfterFailedRestore(d, state.error!);
    }
    d.undo = [...d.undo.filter((s) => s.name !== name), state];
    d = await persist(ctx, d);
    await recordAudit(ctx.db.control, { actor: opts.actor, action: `deploy.rollback.step.${state.status}`, release: d.release, subject: `deployment #${d.id}`, details: { step: name, detail: state.detail ?? null, error: state.error ?? null } });
    opts.progress?.(d);
    if (stopped) break;
  }
  if (stopped) {
    d = await persist(ctx, d, { status: 'rollback-failed', cause: `${cause}; ROLLBACK STOPPED: ${stopped}`, finished_at: new Date() });
    await recordAudit(ctx.db.control, { actor: opts.actor, action: 'deploy.rollback.failed', release: d.release, subject: `deployment #${d.id}`, details: { cause, stopped, env: d.env, locked: true } });
    opts.progress?.(d);
    return d;
  }
  // the restored state is checked like the deployed one was
  const finals: StepState[] = [];
  if (r.code.has('restart') && toUndo(d).includes('deploy-code')) {
    const t0 = performance.now();
    const out = await r.code.run('restart', vars(d, r.spec));
    finals.push({ name: 'undo restart', status: out.ok ? 'done' : 'failed', startedAt: new Date().toISOString(), ms: Math.round(performance.now() - t0), detail: out.ok ? 'restarted on the previous version' : '', ...(out.error ? { error: out.error } : {}) });
    if (!out.ok) failed = true;
  }
  const t0 = performance.now();
  try {
    const s = await smoke(r, d);
    finals.push({ name: 'smoke after rollback', status: s.ok ? 'done' : 'failed', startedAt: new Date().toISOString(), ms: Math.round(performance.now() - t0), detail: s.detail });
    if (!s.ok) failed = true;
  } catch (err) {
    failed = true;
    finals.push({ name: 'smoke after rollback', status: 'failed', startedAt: new Date().toISOString(), ms: Math.round(performance.now() - t0), error: redact((err as Error).message) });
  }
  d.undo = [...d.undo.filter((s) => !finals.some((f) => f.name === s.name)), ...finals];
  d = await persist(ctx, d, { status: failed ? 'rollback-failed' : 'rolled-back', finished_at: new Date() });
  await recordAudit(ctx.db.control, { actor: opts.actor, action: failed ? 'deploy.rollback.failed' : 'deploy.rolled-back', release: d.release, subject: `deployment #${d.id}`, details: { cause, env: d.env, locked: true } });
  opts.progress?.(d);
  return d;
}

/**
 * Deployments in flight whose process is gone (the bot or CLI died mid-deployment), and approved ones
 * that never started (the process that reached Go, or claimed the window, died before running it).
 */
export async function interruptedDeployments(ctx: Ctx): Promise<Deployment[]> {
  const rows = (await ctx.db.control('deployments').whereIn('status', ['approved', 'running', 'rolling-back']).orderBy('id')) as Deployment[];
  const out: Deployment[] = [];
  for (const d of rows) if (!(await executorAlive(ctx, d.id))) out.push(d);
  return out;
}

/** What an interrupted deployment left behind, in words: never code and data at different versions unsaid. */
export function whereItStopped(d: Deployment): string {
  if (d.status === 'approved' && d.steps.length === 0) {
    return `approved${d.approved_at ? ` at ${new Date(d.approved_at).toISOString()}` : ''} but never started (the process that was to run it died): nothing was done, code at ${d.previous_code_version ?? 'the previous version'}, data as before; Resume runs it`;
  }
  const done = new Set(d.steps.filter((s) => s.status === 'done').map((s) => s.name));
  const running = d.steps.find((s) => s.status === 'running' || s.status === 'failed');
  const code = done.has('deploy-code') ? `code at ${d.code_version}` : running?.name === 'deploy-code' ? `code possibly half-way to ${d.code_version}` : `code at ${d.previous_code_version ?? 'the previous version'}`;
  const data = done.has('deploy-data') ? `data of ${d.release} deployed` : running?.name === 'deploy-data' ? `data deployment interrupted (its transaction did not commit unless verified)` : 'data as before';
  const undone = d.undo.filter((s) => s.status === 'done').map((s) => s.name);
  return `${d.status === 'rolling-back' ? `stopped while rolling back (${undone.length ? `done: ${undone.join(', ')}` : 'nothing undone yet'})` : `stopped at ${running ? running.name : 'the step after ' + [...done].slice(-1)[0]}`}: ${code}, ${data}`;
}

/** `/rollback R2`: the same rollback, on demand, after a deployment that succeeded; says why when it cannot. */
export async function rollbackRelease(ctx: Ctx, release: string, opts: { actor: Actor; rationale: string; progress?: DeployProgress }): Promise<Deployment> {
  releaseOrThrow(ctx.config, release);
  const spec = deploySpecOf(ctx);
  if (opts.rationale.trim().length < 3) throw new TributaryError('usage', 'a rollback needs a rationale');
  // the last one that succeeded, or whose rollback stopped (it is taken up again where it stopped)
  const d = (await ctx.db.control('deployments').where({ release, env: spec.env }).whereIn('status', ['succeeded', 'rollback-failed']).orderBy('id', 'desc').first()) as Deployment | undefined;
  if (!d) throw new TributaryError('gate_state', `${release} has no successful deployment to ${spec.env} to roll back`);
  const later = await ctx.db.control('deployments').where({ env: spec.env, status: 'succeeded' }).where('id', '>', d.id).first('id', 'release');
  if (later) throw new TributaryError('gate_state', `cannot roll back ${release}: ${String(later.release)} was deployed to ${spec.env} after it (deployment #${String(later.id)}); roll that back first`);
  if (!d.backup_id) throw new TributaryError('gate_state', `cannot roll back ${release}'s data: deployment #${d.id} recorded no backup`);
  if (!d.previous_code_version) throw new TributaryError('gate_state', `cannot roll back ${release}'s code: the version before it was not recorded (configure deploy.commands.current)`);
  const lock = await envLock(ctx.db.control, spec.env);
  if (lock && lock.deployment_id !== d.id) throw new TributaryError('gate_busy', `${spec.env} is locked by ${lock.reason} (held by ${lock.holder}); unlock it first: tributary unlock ${spec.env}`);
  await refuseIfWrittenSince(ctx, d, opts.actor);
  await recordAudit(ctx.db.control, { actor: opts.actor, action: 'deploy.rollback.requested', release, subject: `deployment #${d.id}`, details: { rationale: opts.rationale } });
  await ctx.db.control('env_locks').insert({ env: spec.env, deployment_id: d.id, holder: opts.actor, reason: `rollback of deployment #${d.id} of ${release}` }).onConflict('env').ignore();
  // the restore checks again, in its transaction with the tables locked, that nothing changed meanwhile
  return withExecutor(ctx, d.id, () => rollBack(ctx, d, opts, `rollback requested by ${opts.actor}: ${opts.rationale}`, undefined, true));
}

/**
 * A rollback restores the touched tables to their pre-deploy backup: writes made to them after the
 * deploy would be lost. Compares production now with the figures recorded when the data deploy
 * committed, and refuses, naming the table, when any changed.
 */
async function refuseIfWrittenSince(ctx: Ctx, d: Deployment, actor: Actor): Promise<void> {
  const step = d.steps.find((s) => s.name === 'deploy-data' && s.status === 'done');
  if (!step || d.undo.some((s) => s.name === 'undo deploy-data' && s.status === 'done')) return;
  const refuse = async (message: string, details: Record<string, unknown>) => {
    await recordAudit(ctx.db.control, { actor, action: 'deploy.rollback.refused', release: d.release, subject: `deployment #${d.id}`, details: { reason: message, ...details } });
    return new TributaryError('gate_state', message, { release: d.release, env: d.env });
  };
  if (!step.figures) throw await refuse(`cannot roll back ${d.release}: deployment #${d.id} recorded no figures of production after its data deploy, so writes made since cannot be told apart; restore by hand from backup #${String(d.backup_id)} if you are sure`, {});
  const now = await dataChecksums(ctx, d.env, step.figures.map((f) => f.table));
  const changed = changedSince(step.figures, now);
  if (changed) {
    const schema = productionEnv(ctx).schema;
    throw await refuse(changedMessage(d.release, d.env, schema ? `${schema}.${changed.table}` : changed.table, changed), { table: changed.table, before: changed.before, now: changed.now });
  }
}

/** An interrupted deployment (its process died) rolled back from where it stopped. */
export async function rollbackInterruptedDeployment(ctx: Ctx, id: number, opts: { actor: Actor; rationale: string; progress?: DeployProgress }): Promise<Deployment> {
  const d = await getDeployment(ctx.db.control, id);
  if (!['approved', 'running', 'rolling-back'].includes(d.status)) throw new TributaryError('gate_state', `deployment #${id} is ${d.status}, not interrupted`);
  if (d.status === 'approved') {
    // it never started: nothing to undo, it is cancelled
    return withExecutor(ctx, id, async () => {
      const cause = `cancelled before it started by ${opts.actor}: ${opts.rationale} (${whereItStopped(d)})`;
      const [row] = await ctx.db.control('deployments').where({ id, status: 'approved' }).update({ status: 'rejected', cause, finished_at: new Date() }).returning('*');
      if (!row) throw new TributaryError('gate_state', `deployment #${id} is no longer approved: see tributary deploy status ${id}`);
      await recordAudit(ctx.db.control, { actor: opts.actor, action: 'deploy.cancelled', release: d.release, subject: `deployment #${id}`, details: { rationale: opts.rationale } });
      opts.progress?.(row as Deployment);
      return row as Deployment;
    });
  }
  if (d.status === 'running') await refuseIfWrittenSince(ctx, d, opts.actor);
  await recordAudit(ctx.db.control, { actor: opts.actor, action: 'deploy.rollback.requested', release: d.release, subject: `deployment #${id}`, details: { rationale: opts.rationale, interrupted: whereItStopped(d) } });
  return withExecutor(ctx, id, () => rollBack(ctx, d, opts, `interrupted (${whereItStopped(d)}); rolled back by ${opts.actor}: ${opts.rationale}`, undefined, d.status === 'running'));
}
