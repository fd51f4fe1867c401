import type { App, BlockAction, ButtonAction } from '@slack/bolt';
import { authorize } from '../engine/kernel/roles.js';
import { decideFinding, listFindings, waiveFinding, type FindingDecisionOutcome } from '../engine/validate/index.js';
import type { Decision } from '../engine/review/index.js';
import { TributaryError } from '../errors.js';
import { logger, redact } from '../log.js';
import type { BotDeps } from './deps.js';
import { ACTIONS, BLOCKS, VIEWS } from './ids.js';
import { findingDecisionModal, plainTimes, textMessage, waiveModal } from '../views/blocks.js';
import { esc } from '../views/limits.js';
import { readSubmission, replyError } from './common.js';

/**
 * Validation findings in Slack: the result card's "Waive F-003…" buttons (qa_lead) open a modal asking
 * for the rationale; the waiver is applied once, audited, and announced in the channel. A finding
 * already closed or waived (elsewhere, or by a double click) is said so in the modal.
 */
const WAIVE = new RegExp(`^${ACTIONS.waiveFinding}:F-\\d+$`);

interface WaiveRef {
  release: string;
  code: string;
  runId: number;
  channel?: string;
}

/** `/release waive F-003 --release R2` without --rationale (the table authorized it): the Waive button's modal. */
export async function openWaiveFromCommand(deps: BotDeps, triggerId: string, release: string, code: string, channel: string): Promise<void> {
  const f = (await listFindings(deps.ctx, release, { status: 'all' })).find((x) => x.code === code);
  if (!f) throw new TributaryError('usage', `${code} is not a finding of ${release}'s current consolidation: /release validate ${release} lists them`);
  if (f.status !== 'open') throw new TributaryError('gate_state', `${f.code} is already ${f.status}.`);
  await deps.client.views.open({ trigger_id: triggerId, view: waiveModal({ release, code: f.code, runId: f.run_id, channel }, f) });
}

/**
 * `/release decide F-003 --release R2 --delete` without --rationale: the table's run planned it (a dry run,
 * its flags checked); the modal shows the plan and asks for the rationale.
 */
export async function openFindingDecisionFromCommand(deps: BotDeps, triggerId: string, plan: FindingDecisionOutcome, channel: string): Promise<void> {
  const meta = { release: plan.finding.release, code: plan.finding.code, decision: plan.decision, channel };
  await deps.client.views.open({ trigger_id: triggerId, view: findingDecisionModal(meta, plan) });
}

export function register(app: App, deps: BotDeps): void {
  const { ctx } = deps;

  app.action<BlockAction<ButtonAction>>(WAIVE, async ({ ack, body, action, respond }) => {
    await ack();
    deps.background(async () => {
      try {
        const ref = JSON.parse(action.value ?? '{}') as WaiveRef;
        if (typeof ref.release !== 'string' || typeof ref.code !== 'string') throw new TributaryError('usage', 'this button names no finding: validate again');
        await authorize(ctx, body.user.id, await deps.groupsOf(body.user.id), 'waive', ref.release);
        const f = (await listFindings(ctx, ref.release, { status: 'all' })).find((x) => x.code === ref.code);
        if (!f) throw new TributaryError('usage', `${ref.code} is not a finding of ${ref.release}'s current consolidation (it was re-run): validate again`);
        if (f.status !== 'open') {
          await respond({ response_type: 'ephemeral', replace_original: false, ...textMessage(`${f.code} is already ${f.status}.`) });
          return;
        }
        await deps.client.views.open({ trigger_id: body.trigger_id, view: waiveModal({ ...ref, ...(body.container?.channel_id ? { channel: body.container.channel_id } : {}) }, f) });
      } catch (err) {
        await replyError(respond, err, 'waive');
      }
    }, true);
  });

  app.view(VIEWS.decideFinding, async ({ ack, body, view }) => {
    const user = body.user.id;
    // the rationale is checked by the engine here, which answers on the form with its own words
    const form = await readSubmission<{ release: string; code: string; decision: Decision; channel?: string }>(ack, view, BLOCKS.findingRationale, 'run the command again', { rationale: 'optional' });
    if (!form) return;
    const { meta, rationale } = form;
    try {
      await authorize(ctx, user, await deps.groupsOf(user), 'decide', meta.release);
      await decideFinding(ctx, meta.release, meta.code, meta.decision, { actor: user, rationale });
      await ack();
    } catch (err) {
      const message = err instanceof TributaryError ? err.message : 'Something went wrong; nothing was changed. Try again, or use the CLI: tributary decide';
      if (!(err instanceof TributaryError)) logger().error({ err: redact(String((err as Error).stack ?? err)) }, 'finding decision failed');
      await ack({ response_action: 'errors', errors: { [BLOCKS.findingRationale]: plainTimes(redact(message)).slice(0, 300) } });
      return;
    }
    if (meta.channel) {
      deps.background(() =>
        deps.client.chat
          .postMessage({ channel: meta.channel!, text: `${meta.code} of ${meta.release} closed by <@${user}> (${meta.decision.action}): ${esc(rationale)}. Validate again: /release validate ${meta.release}` })
          .catch((err) => logger().warn({ err: redact((err as Error).message) }, 'could not announce the decision')),
      );
    }
  });

  app.view(VIEWS.waiveFinding, async ({ ack, body, view }) => {
    const user = body.user.id;
    const form = await readSubmission<WaiveRef>(ack, view, BLOCKS.waiveRationale, 'press Waive again');
    if (!form) return;
    const { meta: ref, rationale } = form;
    try {
      await waiveFinding(ctx, ref.release, ref.code, { actor: user, user, groups: await deps.groupsOf(user), rationale });
      await ack();
    } catch (err) {
      const message = err instanceof TributaryError ? err.message : 'Something went wrong; nothing was waived. Try again, or use the CLI: tributary waive';
      if (!(err instanceof TributaryError)) logger().error({ err: redact(String((err as Error).stack ?? err)) }, 'waiver failed');
      await ack({ response_action: 'errors', errors: { [BLOCKS.waiveRationale]: plainTimes(redact(message)).slice(0, 300) } });
      return;
    }
    if (ref.channel) {
      deps.background(() =>
        deps.client.chat
          .postMessage({ channel: ref.channel!, text: `${ref.code} of ${ref.release} waived by <@${user}>: ${esc(rationale)}. Validate again: /release validate ${ref.release}` })
          .catch((err) => logger().warn({ err: redact((err as Error).message) }, 'could not announce the waiver')),
      );
    }
  });
}
