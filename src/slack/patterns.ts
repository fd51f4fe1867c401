import type { App, BlockAction, ButtonAction, RespondFn } from '@slack/bolt';
import { acceptProposal, decidePattern, latestPatternDecision, listPatterns, type Pattern, type PatternChoice } from '../engine/review/index.js';
import { authorize } from '../engine/kernel/roles.js';
import { TributaryError } from '../errors.js';
import { logger, redact } from '../log.js';
import type { BotDeps } from './deps.js';
import { BLOCKS, PATTERN_ACTIONS, PATTERN_KEEP_ENV_ACTION, VIEWS } from './ids.js';
import { textMessage, who } from '../views/blocks.js';
import { patternCard, patternDecidedMessage, patternModal, proposalAcceptedMessage, type PatternModalMeta, type PatternRef } from '../views/patterns.js';
import { readSubmission, replyError } from './common.js';

/**
 * Review at scale in Slack: a pattern card's buttons open the pattern decision's modal (the combined blast
 * radius first, the rationale required); the submission is `decide --pattern`'s engine call, and the card
 * is updated in place with each member's card. A card whose pattern is gone or changed is stale. A
 * proposal card's Accept writes the rule into the policy (`policy accept`).
 */
function parseRef(value: string | undefined): PatternRef {
  try {
    const v = JSON.parse(value ?? '') as PatternRef;
    if (typeof v.release === 'string' && typeof v.pattern === 'string' && typeof v.signature === 'string' && v.choice && typeof v.choice === 'object') return v;
  } catch {
    // fall through
  }
  throw new TributaryError('usage', `this button carries no pattern: the card is from another version of Tributary; run /release conflicts <release> --patterns again`);
}

/** The pattern a card showed, found by its signature (ids are positions in the queue and move when it changes). */
async function currentPattern(deps: BotDeps, ref: PatternRef): Promise<Pattern | undefined> {
  return (await listPatterns(deps.ctx, ref.release)).find((p) => p.signature === ref.signature);
}

/** Why a card's pattern is gone: decided (by whom, as which PD-…) or no longer in the queue. */
async function goneText(deps: BotDeps, ref: PatternRef): Promise<string> {
  const d = await latestPatternDecision(deps.ctx, ref.release, ref.signature);
  return d
    ? `${ref.pattern} (${ref.signature}) was already decided by ${who(d.decidedBy)} (${d.code}): no open conflict of it is left`
    : `${ref.pattern} (${ref.signature}) has no open conflicts in ${ref.release}'s current consolidation (it was re-run): this card is stale`;
}

/** Posts a pattern card per pattern (the first few) to the channel; a decision updates it in place. */
export async function postPatternCards(deps: BotDeps, release: string, channel: string, patterns: Pattern[], max = 20): Promise<number> {
  const shown = patterns.slice(0, max);
  for (const p of shown) await deps.cards.post(channel, patternCard(release, p));
  return shown.length;
}

/** Planning needs a concrete choice: a delete plans with its dependents (the modal asks whether to take them). */
const draft = (choice: PatternChoice): PatternChoice => ('action' in choice && (choice.action === 'delete' || choice.action === 'delete-both') ? { action: choice.action, cascade: true } : choice);

export function register(app: App, deps: BotDeps): void {
  const { ctx } = deps;

  const openModal = async (body: BlockAction, respond: RespondFn, ref: PatternRef) => {
    const user = body.user.id;
    try {
      await authorize(ctx, user, await deps.groupsOf(user), 'decide', ref.release);
      const where = { ...(body.container?.channel_id ? { channel: body.container.channel_id as string } : {}), ...(body.container?.message_ts ? { ts: body.container.message_ts as string } : {}) };
      const p = await currentPattern(deps, ref);
      if (!p) {
        const text = await goneText(deps, ref);
        if (where.channel && where.ts) await deps.cards.update(where.channel, where.ts, textMessage(`:information_source: ${text}.`));
        await respond({ response_type: 'ephemeral', replace_original: false, ...textMessage(`${text}; the card is refreshed.`) });
        return;
      }
      const plan = await decidePattern(ctx, ref.release, p.id, draft(ref.choice), { actor: user, rationale: '', dryRun: true, signature: p.signature });
      const meta: PatternModalMeta = { ...ref, pattern: p.id, ...where };
      await deps.client.views.open({ trigger_id: body.trigger_id, view: patternModal(meta, plan) });
    } catch (err) {
      await replyError(respond, err, 'pattern button');
    }
  };

  const onButton = async ({ ack, body, action, respond }: { ack: () => Promise<void>; body: BlockAction<ButtonAction>; action: ButtonAction; respond: RespondFn }) => {
    await ack();
    let ref: PatternRef;
    try {
      ref = parseRef(action.value);
    } catch (err) {
      await replyError(respond, err, action.action_id);
      return;
    }
    deps.background(() => openModal(body, respond, ref), true);
  };
  app.action<BlockAction<ButtonAction>>(PATTERN_KEEP_ENV_ACTION, onButton);
  for (const id of [PATTERN_ACTIONS.keepByRule, PATTERN_ACTIONS.keepBoth, PATTERN_ACTIONS.delete, PATTERN_ACTIONS.waive]) app.action<BlockAction<ButtonAction>>(id, onButton);

  app.view(VIEWS.decidePattern, async ({ ack, body, view }) => {
    const user = body.user.id;
    const form = await readSubmission<PatternModalMeta>(ack, view, BLOCKS.patternRationale, 'click the card again', { why: 'the rationale goes to the audit trail of every decision' });
    if (!form) return;
    const { meta, rationale } = form;
    const cascade = (view.state.values[BLOCKS.cascade]?.value?.selected_options ?? []).some((o) => o.value === 'cascade');
    const choice: PatternChoice = 'action' in meta.choice && meta.choice.action.startsWith('delete') ? { action: meta.choice.action as 'delete-both' | 'delete', ...(cascade ? { cascade: true } : {}) } : meta.choice;
    let decided: Awaited<ReturnType<typeof decidePattern>>;
    try {
      await authorize(ctx, user, await deps.groupsOf(user), 'decide', meta.release);
      const p = await currentPattern(deps, meta);
      if (!p) {
        const d = await latestPatternDecision(ctx, meta.release, meta.signature);
        // a repeated submission of the same decision: it landed the first time
        if (d && d.decidedBy === user) return void (await ack());
        throw new TributaryError('already_decided', await goneText(deps, meta));
      }
      decided = await decidePattern(ctx, meta.release, p.id, choice, { actor: user, rationale, signature: meta.signature });
      await ack();
    } catch (err) {
      if (err instanceof TributaryError) {
        await ack({ response_action: 'errors', errors: { [err.message.includes('depend') && view.state.values[BLOCKS.cascade] ? BLOCKS.cascade : BLOCKS.patternRationale]: redact(err.message).slice(0, 300) } });
        if (err.code === 'already_decided' && meta.channel && meta.ts) {
          const text = err.message;
          deps.background(() => deps.cards.update(meta.channel!, meta.ts!, textMessage(`:information_source: ${text}.`)));
        }
      } else {
        logger().error({ err: redact(String((err as Error).stack ?? err)) }, 'pattern decision failed');
        await ack({ response_action: 'errors', errors: { [BLOCKS.patternRationale]: 'Something went wrong applying the decision; nothing was changed. Try again, or use the CLI.' } });
      }
      return;
    }
    deps.background(async () => {
      try {
        if (meta.channel && meta.ts) await deps.cards.update(meta.channel, meta.ts, patternDecidedMessage(decided));
        // each member's own card (where one was posted) and the queue summaries
        for (const d of decided.decisions) await deps.cards.refresh(meta.release, d.code);
      } catch (err) {
        logger().warn({ err: redact((err as Error).message) }, 'could not refresh the pattern card');
      }
    });
  });

  app.action<BlockAction<ButtonAction>>(PATTERN_ACTIONS.accept, async ({ ack, body, action, respond }) => {
    await ack();
    deps.background(async () => {
      const user = body.user.id;
      try {
        const { name } = JSON.parse(action.value ?? '{}') as { name?: string };
        if (!name) throw new TributaryError('usage', 'this button names no proposal: run /release policy proposals again');
        await authorize(ctx, user, await deps.groupsOf(user), 'policy');
        const res = await acceptProposal(ctx, name, { actor: user });
        await respond({ replace_original: true, ...proposalAcceptedMessage(res, user) });
      } catch (err) {
        await replyError(respond, err, 'accept proposal');
      }
    });
  });
}
