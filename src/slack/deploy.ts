import type { App, BlockAction, ButtonAction, RespondFn } from '@slack/bolt';
import { getBundle, claimDue, decideGo, decisionsOf, envLock, executeDeployment, expireStale, getDeployment, goCardFacts, IN_FLIGHT_STATES, interruptedDeployments, ROLLBACK_FROM, rollbackInterruptedDeployment, rollbackRelease, rollbackTarget, unlockEnv, whereItStopped, type Deployment } from '../engine/deploy/index.js';
import { authorize } from '../engine/kernel/roles.js';
import { TributaryError } from '../errors.js';
import { logger, redact } from '../log.js';
import type { BotDeps } from './deps.js';
import { ACTIONS, BLOCKS, VIEWS } from './ids.js';
import { confirmModal, deployProgressMessage, goNoGoCard, goPendingMessage, interruptedCard, interruptedEndedCard, rollbackCard, timelineText, type DecideRef } from '../views/deploy.js';
import { channelLink, composed, mention, plainTimes, textMessage } from '../views/blocks.js';
import { esc } from '../views/limits.js';
import { readSubmission, replyError, type Runner } from './common.js';
import { throttled } from './throttle.js';
import { chainHead } from '../engine/report/index.js';
import { messageAbout, recordMessage } from './messages.js';

/**
 * Deployment from Slack: `/release deploy R2 [--at <time>]` posts the go/no-go card; Go / No-go open a
 * confirmation modal with a rationale (release_manager); the Go that completes the quorum starts the
 * sequence, reported in one message updated in place. A rollback (automatic, `/rollback R2`, or the
 * Roll back button of an interrupted deployment) ends with a card whose Unlock button frees the env,
 * and a post-mortem thread with the timeline. A watcher expires unanswered prompts (no-go), starts
 * scheduled deployments in their window, and reports deployments interrupted by a crash.
 */
function channelOf(deps: BotDeps, fallback: string): string {
  return deps.ctx.config.slack.releaseChannel ?? fallback;
}

/** The channel of the deployment's go/no-go card, where what follows it goes. */
async function cardChannel(deps: BotDeps, id: number): Promise<string | undefined> {
  return (await messageAbout(deps.ctx.db.control, 'deployment', id))?.channel;
}

async function goCard(deps: BotDeps, d: Deployment) {
  const { ctx } = deps;
  const bundle = (await getBundle(ctx, d.release, d.bundle_version))!;
  const facts = await goCardFacts(ctx, d.release);
  return goNoGoCard({ deployment: d, bundle, ...facts, decisions: await decisionsOf(ctx.db.control, d.id), needed: ctx.config.deploy?.quorum ?? 1 });
}

export async function refreshGoCard(deps: BotDeps, id: number): Promise<void> {
  const d = await getDeployment(deps.ctx.db.control, id);
  const at = await messageAbout(deps.ctx.db.control, 'deployment', id);
  if (!at) return;
  const card = await goCard(deps, d);
  await deps.client.chat.update({ channel: at.channel, ts: at.ts, text: card.text, blocks: card.blocks });
}

/** `/release deploy R2 [--at <time>] [--bundle N]`: the request (the table's run), and its go/no-go card in the release channel. */
export async function runDeployRequest(deps: BotDeps, respond: RespondFn, channel: string, run: Runner): Promise<void> {
  const target = channelOf(deps, channel);
  const d = (await run()).value as Deployment;
  const card = await goCard(deps, d);
  try {
    const res = await deps.client.chat.postMessage({ channel: target, text: card.text, blocks: card.blocks });
    if (res.ts) await recordMessage(deps.ctx.db.control, 'deployment', d.id, { channel: res.channel ?? target, ts: res.ts });
  } catch (err) {
    await respond({ response_type: 'ephemeral', ...composed`Deployment #${d.id} is requested, but its go/no-go card could not be posted to ${channelLink(target)} (${redact((err as Error).message)}): invite the bot there, or decide with tributary deploy go ${d.id}` });
  }
}

/**
 * Runs a deployment in the background, reporting in one message updated in place; then the outcome.
 * `ended`, if given, runs once the work has ended (whatever its outcome; not when it could not run).
 */
function runInBackground(deps: BotDeps, id: number, actor: string, channel: string, work: (progress: (d: Deployment) => void) => Promise<Deployment>, ended?: (d: Deployment) => Promise<void>): void {
  deps.longRunning(async () => {
    let ts: string | undefined;
    // updates go out one after the other: the final one (with the chain head) is never overtaken by a late progress update
    let chain: Promise<void> = Promise.resolve();
    const send = (d: Deployment, head?: Awaited<ReturnType<typeof chainHead>>): Promise<void> => {
      const m = deployProgressMessage(d, head);
      chain = chain.then(async () => {
        try {
          if (ts) await deps.client.chat.update({ channel, ts, text: m.text, blocks: m.blocks });
          else ts = (await deps.client.chat.postMessage({ channel, text: m.text, blocks: m.blocks })).ts;
        } catch (err) {
          logger().warn({ err: redact((err as Error).message), deployment: id }, 'deployment progress update failed');
        }
      });
      return chain;
    };
    const updates = throttled<Deployment>(deps.progressIntervalMs, (d) => void send(d));
    try {
      await send(await getDeployment(deps.ctx.db.control, id));
      const d = await work(updates.push);
      updates.stop();
      // the final message names the chain head: a witness of the audit trail outside the database
      await send(d, await chainHead(deps.ctx.db.control));
      await refreshGoCard(deps, id).catch(() => undefined);
      await ended?.(d).catch((err) => logger().warn({ err: redact((err as Error).message), deployment: id }, 'could not update the interrupted-deployment card'));
      if (d.status === 'rolled-back' || d.status === 'restored-smoke-failing' || d.status === 'rollback-failed') await postRollback(deps, channel, d);
    } catch (err) {
      updates.stop();
      const message = redact(err instanceof Error ? err.message : String(err));
      logger().warn({ deployment: id, actor }, `deployment could not run: ${message}`);
      await deps.client.chat.postMessage({ channel, text: `Deployment #${id} could not run: ${message}` }).catch(() => undefined);
    }
  });
}

async function postRollback(deps: BotDeps, channel: string, d: Deployment): Promise<void> {
  const locked = !!(await envLock(deps.ctx.db.control, d.env));
  const card = rollbackCard(d, locked);
  const res = await deps.client.chat.postMessage({ channel, text: card.text, blocks: card.blocks });
  // the post-mortem thread opens with the timeline
  if (res.ts) await deps.client.chat.postMessage({ channel, thread_ts: res.ts, text: timelineText(d) });
}

async function openConfirm(deps: BotDeps, triggerId: string, ref: DecideRef): Promise<void> {
  const d = await getDeployment(deps.ctx.db.control, ref.id);
  const summary =
    ref.decision === 'rollback' && d.status === 'approved' && d.steps.length === 0
      ? `Cancel deployment #${d.id} of *${esc(d.release)}* to *${esc(d.env)}*: it reached Go but never started (the process that was to run it died); nothing was done, so nothing is rolled back.`
      : ref.decision === 'rollback'
      ? `Roll back *${esc(d.release)}* on *${esc(d.env)}* (deployment #${d.id}, ${esc(d.status)}): data restored from its backup and verified, schema migrated down, code back to ${esc(d.previous_code_version ?? 'the previous version')}. ${esc(d.env)} stays locked afterwards.`
      : `${ref.decision === 'go' ? 'Go' : 'No-go'} for deployment #${d.id}: *${esc(d.release)}* to *${esc(d.env)}*, code \`${esc(d.code_version)}\`${d.window_at ? `, window ${new Date(d.window_at).toISOString()}` : ', at once'}.`;
  await deps.client.views.open({ trigger_id: triggerId, view: confirmModal(ref, summary) });
}

/** `/release rollback R2` (or `/rollback R2`) without --rationale: the confirmation modal (the table authorized it). */
export async function openRollbackFromCommand(deps: BotDeps, triggerId: string, release: string): Promise<void> {
  const d = await rollbackTarget(deps.ctx, release);
  await openConfirm(deps, triggerId, { id: d.id, release, decision: 'rollback' });
}

/** `/release deploy go|no-go <id>` without --rationale: the card's confirmation modal. */
export async function openDecisionFromCommand(deps: BotDeps, triggerId: string, id: number, decision: 'go' | 'no-go'): Promise<void> {
  const d = await getDeployment(deps.ctx.db.control, id);
  if (d.status !== 'awaiting-go') throw new TributaryError('gate_state', `Deployment #${d.id} is ${d.status}: its go/no-go is over.`);
  const channel = await cardChannel(deps, d.id);
  await openConfirm(deps, triggerId, { id: d.id, release: d.release, decision, ...(channel ? { channel } : {}) });
}

function parseRef(value: string | undefined): DecideRef {
  const v = JSON.parse(value ?? '{}') as DecideRef;
  if (typeof v.id !== 'number' || typeof v.release !== 'string') throw new TributaryError('usage', 'this button names no deployment');
  return v;
}

export function register(app: App, deps: BotDeps): void {
  const { ctx } = deps;

  for (const [id, decision] of [[ACTIONS.deployGo, 'go'], [ACTIONS.deployNoGo, 'no-go'], [ACTIONS.deployRollback, 'rollback']] as const) {
    app.action<BlockAction<ButtonAction>>(id, async ({ ack, body, action, respond }) => {
      await ack();
      deps.background(async () => {
        try {
          const ref = parseRef(action.value);
          await authorize(ctx, body.user.id, await deps.groupsOf(body.user.id), decision === 'rollback' ? 'rollback' : 'go', ref.release);
          const d = await getDeployment(ctx.db.control, ref.id);
          if (decision !== 'rollback' && d.status !== 'awaiting-go') {
            await refreshGoCard(deps, d.id).catch(() => undefined);
            await respond({ response_type: 'ephemeral', replace_original: false, ...textMessage(`Deployment #${d.id} is ${d.status}: its go/no-go is over.`) });
            return;
          }
          // a rollback that cannot succeed (already rolled back, never deployed) is refused before its modal opens
          if (decision === 'rollback' && ![...ROLLBACK_FROM, ...IN_FLIGHT_STATES].includes(d.status)) {
            await respond({ response_type: 'ephemeral', replace_original: false, ...textMessage(`Deployment #${d.id} is ${d.status}: there is nothing to roll back.`) });
            return;
          }
          await openConfirm(deps, body.trigger_id, { ...ref, decision, ...(body.container?.channel_id ? { channel: body.container.channel_id } : {}) });
        } catch (err) {
          await replyError(respond, err, decision);
        }
      }, true);
    });
  }

  app.action<BlockAction<ButtonAction>>(ACTIONS.deployResume, async ({ ack, body, action, respond }) => {
    await ack();
    deps.background(async () => {
      try {
        const ref = parseRef(action.value);
        await authorize(ctx, body.user.id, await deps.groupsOf(body.user.id), 'deploy', ref.release);
        await recordResume(deps, ref.id, body.user.id);
        runInBackground(deps, ref.id, body.user.id, body.container?.channel_id ?? channelOf(deps, ''), (progress) => executeDeployment(ctx, ref.id, { actor: body.user.id, progress }), (d) => closeInterruptedCard(deps, d, body.user.id, 'resumed'));
      } catch (err) {
        await replyError(respond, err, 'resume');
      }
    }, true);
  });

  app.action<BlockAction<ButtonAction>>(ACTIONS.deployUnlock, async ({ ack, body, action, respond }) => {
    await ack();
    deps.background(async () => {
      try {
        const { env } = JSON.parse(action.value ?? '{}') as { env?: string };
        if (!env) throw new TributaryError('usage', 'this button names no env');
        await authorize(ctx, body.user.id, await deps.groupsOf(body.user.id), 'unlock');
        const r = await unlockEnv(ctx, env, { actor: body.user.id, rationale: 'Unlock button' });
        // an unlock is news for the channel; a press that changed nothing answers the presser only
        await respond({ response_type: r.was ? 'in_channel' : 'ephemeral', replace_original: false, ...(r.was ? composed`${env} unlocked by ${mention(body.user.id)} (it was held by ${mention(r.was.holder)}).` : composed`${env} was not locked.`) });
      } catch (err) {
        await replyError(respond, err, 'unlock');
      }
    });
  });

  app.view(VIEWS.deployDecide, async ({ ack, body, view }) => {
    const user = body.user.id;
    const form = await readSubmission<DecideRef>(ack, view, BLOCKS.deployRationale, 'press the button again', { why: 'it goes to the audit trail' });
    if (!form) return;
    const { meta: ref, rationale } = form;
    try {
      await authorize(ctx, user, await deps.groupsOf(user), ref.decision === 'rollback' ? 'rollback' : 'go', ref.release);
      if (ref.decision === 'rollback') {
        const d = await getDeployment(ctx.db.control, ref.id);
        await ack();
        const channel = ref.channel ?? (await cardChannel(deps, d.id)) ?? channelOf(deps, '');
        const interrupted = IN_FLIGHT_STATES.includes(d.status);
        runInBackground(deps, d.id, user, channel, (progress) =>
          interrupted ? rollbackInterruptedDeployment(ctx, d.id, { actor: user, rationale, progress }) : rollbackRelease(ctx, d.release, { actor: user, rationale, progress }),
        );
        return;
      }
      const res = await decideGo(ctx, ref.id, { actor: user, decision: ref.decision!, rationale });
      await ack();
      deps.background(() => refreshGoCard(deps, ref.id).catch((err) => logger().warn({ err: redact((err as Error).message) }, 'could not refresh the go/no-go card')));
      if (res.ready) {
        const channel = (await cardChannel(deps, ref.id)) ?? channelOf(deps, '');
        runInBackground(deps, ref.id, user, channel, (progress) => executeDeployment(ctx, ref.id, { actor: user, progress }));
      }
      else if (ref.decision === 'go' && res.deployment.status === 'awaiting-go') deps.background(() => tellWhoElse(deps, ref, user, res.needed));
    } catch (err) {
      const message = err instanceof TributaryError ? err.message : 'Something went wrong; nothing was decided. Try again, or use the CLI.';
      if (!(err instanceof TributaryError)) logger().error({ err: redact(String((err as Error).stack ?? err)) }, 'deployment decision failed');
      await ack({ response_action: 'errors', errors: { [BLOCKS.deployRationale]: plainTimes(redact(message)).slice(0, 300) } });
      if (err instanceof TributaryError && err.code === 'already_decided') deps.background(() => refreshGoCard(deps, ref.id).catch(() => undefined));
    }
  });
}

/** A Go that does not complete the quorum: the one who said it hears who else must say Go (only they see it). */
async function tellWhoElse(deps: BotDeps, ref: DecideRef, user: string, needed: number): Promise<void> {
  const d = await getDeployment(deps.ctx.db.control, ref.id);
  const gos = (await decisionsOf(deps.ctx.db.control, ref.id)).filter((x) => x.decision === 'go').map((x) => x.actor);
  const m = goPendingMessage(d, gos, needed, deps.ctx.config.roles.release_manager);
  const channel = ref.channel ?? (await cardChannel(deps, d.id)) ?? channelOf(deps, '');
  try {
    await deps.client.chat.postEphemeral({ channel, user, text: m.text, blocks: m.blocks });
  } catch (err) {
    logger().warn({ err: redact((err as Error).message), deployment: ref.id }, 'could not tell the release manager who else must say Go');
  }
}

/** The interrupted card, once its deployment was resumed from it and the run has ended: updated in place, without its buttons. */
async function closeInterruptedCard(deps: BotDeps, d: Deployment, by: string, acted: 'resumed'): Promise<void> {
  const at = await messageAbout(deps.ctx.db.control, 'interrupted', d.id);
  if (!at) return;
  const card = interruptedEndedCard(d, by, acted);
  await deps.client.chat.update({ channel: at.channel, ts: at.ts, text: card.text, blocks: card.blocks });
}

async function recordResume(deps: BotDeps, id: number, user: string): Promise<void> {
  const d = await getDeployment(deps.ctx.db.control, id);
  if (!IN_FLIGHT_STATES.includes(d.status)) throw new TributaryError('gate_state', `deployment #${id} is ${d.status}: nothing to resume`);
  logger().info({ deployment: id, user }, 'resuming an interrupted deployment');
}

/**
 * The bot's deployment watcher: unanswered prompts expire as no-go (their cards say so), scheduled
 * deployments start in their window, and at start-up every deployment left in flight by a dead process
 * is reported with Resume and Roll back.
 */
export class DeployWatcher {
  private timer?: NodeJS.Timeout;
  private busy = false;

  constructor(
    private readonly deps: BotDeps,
    private readonly intervalMs = 15_000,
  ) {}

  async start(): Promise<void> {
    const { ctx } = this.deps;
    for (const d of await interruptedDeployments(ctx)) {
      const channel = (await cardChannel(this.deps, d.id)) ?? ctx.config.slack.releaseChannel;
      if (!channel) {
        logger().warn({ deployment: d.id }, `deployment #${d.id} was interrupted (${whereItStopped(d)}); no channel to report it: tributary deploy status`);
        continue;
      }
      const card = interruptedCard(d, whereItStopped(d));
      try {
        const res = await this.deps.client.chat.postMessage({ channel, text: card.text, blocks: card.blocks });
        // recorded: a Resume from it updates it in place once the run has ended
        if (res.ts) await recordMessage(ctx.db.control, 'interrupted', d.id, { channel: res.channel ?? channel, ts: res.ts });
      } catch (err) {
        logger().warn({ err: redact((err as Error).message) }, 'could not report an interrupted deployment');
      }
    }
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
  }

  async tick(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const { ctx } = this.deps;
      for (const id of await expireStale(ctx)) await refreshGoCard(this.deps, id).catch(() => undefined);
      for (const id of await claimDue(ctx)) {
        const channel = (await cardChannel(this.deps, id)) ?? ctx.config.slack.releaseChannel ?? '';
        runInBackground(this.deps, id, 'tributary', channel, (progress) => executeDeployment(ctx, id, { actor: 'tributary', progress }));
      }
    } catch (err) {
      logger().warn({ err: redact((err as Error).message) }, 'deployment watcher failed');
    } finally {
      this.busy = false;
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
