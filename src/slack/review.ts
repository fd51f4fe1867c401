import type { App, BlockAction, BlockSuggestion, ButtonAction, RespondFn, ViewOutput } from '@slack/bolt';
import { getConflict, isAutoCode, nextConflict, showConflict, type ConflictRow, applyDecision, decisionOf, describeDecision, planDecision, repointTargets, TARGET_LIMIT, type Decision } from '../engine/review/index.js';
import { authorize } from '../engine/kernel/roles.js';
import { TributaryError } from '../errors.js';
import { logger, redact } from '../log.js';
import type { BotDeps } from './deps.js';
import { ACTIONS, BLOCKS, KEEP_ACTION, OPTIONS, VIEWS } from './ids.js';
import { composed, conflictCard, mention, decisionModal, plainTimes, targetOptions, textMessage, type CardRef, type ModalMeta } from '../views/blocks.js';
import { clip } from '../views/limits.js';
import { readSubmission, replyError } from './common.js';

/**
 * Review in Slack: a card's buttons open a decision modal (rationale required, blast radius shown);
 * the submission applies the decision through the engine, and every card of the conflict is updated
 * in place. A stale card (decided elsewhere, or from an earlier consolidation) is refreshed when clicked.
 */
function parseRef(value: string | undefined): CardRef {
  try {
    const v = JSON.parse(value ?? '') as CardRef;
    if (typeof v.release === 'string' && typeof v.code === 'string') return v;
  } catch {
    // fall through
  }
  throw new TributaryError('usage', 'this button carries no conflict: the card is from another version of Tributary; run /release review again');
}

const ACTION_OF: Record<string, (c: ConflictRow) => Decision['action']> = {
  [ACTIONS.keepBoth]: () => 'keep-both',
  [ACTIONS.merge]: () => 'merge',
  [ACTIONS.delete]: (c) => (c.detail.versions ? 'delete-both' : 'delete'),
  [ACTIONS.repoint]: () => 'repoint',
  [ACTIONS.waive]: () => 'waive',
};

/** A plan needs a concrete decision: the modal's defaults (suggestions) stand in for the inputs. */
function draftDecision(c: ConflictRow, action: Decision['action'], version?: number): Decision {
  switch (action) {
    case 'keep':
      return { action, version: version ?? 1 };
    case 'keep-both':
      return { action };
    case 'merge':
      return { action, picks: Object.fromEntries((c.detail.differing ?? []).map((a) => [a, c.detail.suggested ?? 1])) };
    case 'delete-both':
    case 'delete':
      return { action, cascade: true };
    case 'repoint':
      return { action: 'waive' };
    case 'waive':
      return { action };
  }
}

async function staleCheck(deps: BotDeps, ref: CardRef, respond: RespondFn): Promise<ConflictRow | undefined> {
  let c: ConflictRow;
  try {
    c = await getConflict(deps.ctx, ref.release, ref.code);
  } catch (err) {
    if (err instanceof TributaryError && err.code === 'unknown_conflict') {
      await respond({ response_type: 'ephemeral', replace_original: false, ...textMessage(`${ref.code} is no longer in ${ref.release}'s current consolidation (it was re-run): this card is stale.`) });
      return undefined;
    }
    throw err;
  }
  if (c.run_id !== ref.runId) {
    await respond({ response_type: 'ephemeral', replace_original: false, ...textMessage(`This card is from an earlier consolidation of ${ref.release}; ${c.code} now is a ${c.kind} conflict. Refreshing it.`) });
    return undefined;
  }
  if (c.status === 'decided') {
    // the card is brought up to date (with every other card of the conflict); the click changes nothing
    await deps.cards.refresh(ref.release, ref.code);
    const d = await decisionOf(deps.ctx, c.id);
    const what = d ? `: ${describeDecision(c, d.decision, 'done')}` : '';
    await respond({ response_type: 'ephemeral', replace_original: false, ...composed`${c.code} was already decided by ${mention(c.decided_by)}${what}; the card is refreshed.` });
    return undefined;
  }
  return c;
}

/** The decision modal for a conflict, the choice made: its blast radius drafted from the modal's defaults. */
async function openDecisionModal(deps: BotDeps, triggerId: string, c: ConflictRow, ref: CardRef, action: Decision['action'], where: { channel?: string; ts?: string }): Promise<void> {
  const plan = await planDecision(deps.ctx, ref.release, ref.code, draftDecision(c, action, ref.version));
  // an automatic resolution not re-opened yet: the plan's conflict (re-opened in its rolled-back transaction)
  const full = isAutoCode(ref.code) ? await showConflict(deps.ctx, ref.release, ref.code).catch(() => plan.conflict) : await showConflict(deps.ctx, ref.release, ref.code);
  const meta: ModalMeta = { ...ref, action, ...where };
  const reliesOn = action === 'repoint' ? reliedColumns(deps, full) : [];
  await deps.client.views.open({ trigger_id: triggerId, view: decisionModal({ conflict: full, meta, blast: plan.blast, reliesOn }) });
}

/** The columns a record conflict's child relies on its parent for (the config's reference `columns`). */
function reliedColumns(deps: BotDeps, c: ConflictRow): string[] {
  const e = deps.ctx.config.entities.find((x) => x.name === c.entity);
  return e?.references.find((r) => r.column === c.detail.column && r.entity === c.detail.parent)?.columns ?? [];
}

/**
 * The re-point select's options (block_suggestion): the engine's ranked targets for the modal's conflict,
 * at most 100, answered in the ack (Slack waits 3 s). A modal it cannot read gets no options.
 */
async function answerTargets(deps: BotDeps, ack: (o: { options: ReturnType<typeof targetOptions>['options'] }) => Promise<void>, body: BlockSuggestion): Promise<void> {
  try {
    const meta = JSON.parse(body.view?.private_metadata ?? '') as ModalMeta;
    const c = await getConflict(deps.ctx, meta.release, meta.code);
    await ack(targetOptions(await repointTargets(deps.ctx, c, { query: body.value ?? '', limit: TARGET_LIMIT })));
  } catch (err) {
    logger().warn({ err: redact((err as Error).message) }, 'could not list the re-point targets');
    await ack({ options: [] });
  }
}

/** A conflict, or an automatic resolution (A-…) as the conflict deciding it re-opens (planned, nothing written). */
async function conflictOrAuto(deps: BotDeps, release: string, code: string): Promise<ConflictRow> {
  try {
    return await getConflict(deps.ctx, release, code);
  } catch (err) {
    if (!(isAutoCode(code) && err instanceof TributaryError && err.code === 'unknown_conflict')) throw err;
    return (await planDecision(deps.ctx, release, code, { action: 'keep', version: 1 })).conflict;
  }
}

/**
 * `/release decide C-001 --keep 2` without --rationale (the table authorized it): the card's decision
 * modal for that choice, where the rationale (and what the choice needs) is asked for.
 */
export async function openDecisionFromCommand(deps: BotDeps, triggerId: string, release: string, code: string, action: Decision['action'], version?: number): Promise<void> {
  const c = await conflictOrAuto(deps, release, code);
  if (c.status === 'decided') throw new TributaryError('already_decided', `${c.code} was already decided by ${c.decided_by ?? 'someone'}`);
  await openDecisionModal(deps, triggerId, c, { release, code: c.code, runId: c.run_id, ...(version ? { version } : {}) }, action, {});
}

export function register(app: App, deps: BotDeps): void {
  const { ctx } = deps;

  app.options<'block_suggestion'>({ action_id: OPTIONS.repointTargets }, async ({ ack, body }) => answerTargets(deps, ack, body));

  const openModal = async (body: BlockAction, respond: RespondFn, ref: CardRef, pick: (c: ConflictRow) => Decision['action']) => {
    const user = body.user.id;
    try {
      // an ephemeral card (Review next) can be updated later only through the response_url of a click on it
      if (body.container?.is_ephemeral && body.response_url) deps.cards.rememberEphemeral(ref.release, ref.code, body.response_url);
      await authorize(ctx, user, await deps.groupsOf(user), 'decide', ref.release);
      const c = await staleCheck(deps, ref, respond);
      if (!c) return;
      await openDecisionModal(deps, body.trigger_id, c, ref, pick(c), {
        ...(body.container?.channel_id ? { channel: body.container.channel_id } : {}),
        ...(body.container?.message_ts ? { ts: body.container.message_ts } : {}),
      });
    } catch (err) {
      await replyError(respond, err, 'review button');
    }
  };

  app.action<BlockAction<ButtonAction>>(KEEP_ACTION, async ({ ack, body, action, respond }) => {
    await ack();
    deps.background(async () => {
      try {
        await openModal(body, respond, parseRef(action.value), () => 'keep');
      } catch (err) {
        await replyError(respond, err, 'keep');
      }
    }, true);
  });
  for (const id of [ACTIONS.keepBoth, ACTIONS.merge, ACTIONS.delete, ACTIONS.repoint, ACTIONS.waive]) {
    app.action<BlockAction<ButtonAction>>(id, async ({ ack, body, action, respond }) => {
      await ack();
      let ref: CardRef;
      try {
        ref = parseRef(action.value);
      } catch (err) {
        await replyError(respond, err, id);
        return;
      }
      deps.background(() => openModal(body, respond, ref, ACTION_OF[id]!), true);
    });
  }

  app.action<BlockAction<ButtonAction>>(ACTIONS.next, async ({ ack, body, action, respond }) => {
    await ack();
    deps.background(() => reviewNext(body, action, respond));
  });

  const reviewNext = async (body: BlockAction, action: ButtonAction, respond: RespondFn) => {
    const user = body.user.id;
    try {
      const { release } = JSON.parse(action.value ?? '{}') as { release?: string };
      if (!release) throw new TributaryError('usage', 'this button names no release');
      await authorize(ctx, user, await deps.groupsOf(user), 'decide', release);
      const c = await nextConflict(ctx, release, user);
      if (!c) {
        await respond({ response_type: 'ephemeral', replace_original: false, ...textMessage(`No unassigned open conflicts left in ${release}.`) });
        return;
      }
      const full = await showConflict(ctx, release, c.code);
      await respond({ response_type: 'ephemeral', replace_original: false, ...conflictCard(full) });
    } catch (err) {
      await replyError(respond, err, 'review next');
    }
  };

  app.view(VIEWS.decide, async ({ ack, body, view }) => {
    const user = body.user.id;
    const form = await readSubmission<ModalMeta>(ack, view, BLOCKS.rationale, 'click the card again');
    if (!form) return;
    const { meta, rationale } = form;
    const values = view.state.values;
    let decision: Decision;
    try {
      decision = decisionFromView(meta, values);
    } catch (err) {
      const e = err as TributaryError;
      await ack({ response_action: 'errors', errors: { [String(e.details?.block ?? BLOCKS.rationale)]: e.message } });
      return;
    }
    try {
      await authorize(ctx, user, await deps.groupsOf(user), 'decide', meta.release);
      const current = await conflictOrAuto(deps, meta.release, meta.code);
      if (current.run_id !== meta.runId) throw new TributaryError('gate_state', `${meta.code} belongs to an earlier consolidation of ${meta.release}; open the new card`);
      if (decision.action === 'repoint' && !confirmed(values)) {
        // a parent that contradicts the columns the child relies on: said on the form, recorded only once confirmed
        const warnings = (await planDecision(ctx, meta.release, meta.code, decision)).warnings ?? [];
        if (warnings.length > 0) {
          const tick = values[BLOCKS.repointConfirm] ? ' Tick "Re-point even if …" below to re-point regardless.' : '';
          await ack({ response_action: 'errors', errors: { [BLOCKS.repointTo]: clip(`Warning: ${warnings.join('; ')}.${tick}`, 300) } });
          return;
        }
      }
      await applyDecision(ctx, meta.release, meta.code, decision, { actor: user, rationale });
      await ack();
    } catch (err) {
      if (err instanceof TributaryError && err.code === 'already_decided' && err.details.decidedBy === user) {
        // a repeated submission of the same decision: it landed the first time
        await ack();
      } else if (err instanceof TributaryError) {
        const block = blockForError(err, meta, view);
        await ack({ response_action: 'errors', errors: { [block]: plainTimes(redact(err.message)).slice(0, 300) } });
        if (err.code === 'already_decided') deps.background(() => deps.cards.refresh(meta.release, meta.code));
        return;
      } else {
        logger().error({ err: redact(String((err as Error).stack ?? err)) }, 'decision failed');
        await ack({ response_action: 'errors', errors: { [BLOCKS.rationale]: 'Something went wrong applying the decision; nothing was changed. Try again, or use the CLI.' } });
        return;
      }
    }
    deps.background(() =>
      deps.cards.refresh(meta.release, meta.code).catch((err) => logger().warn({ err: redact((err as Error).message) }, 'could not refresh the card')),
    );
  });
}

type Values = ViewOutput['state']['values'];

function decisionFromView(meta: ModalMeta, values: Values): Decision {
  switch (meta.action) {
    case 'keep':
      return { action: 'keep', version: meta.version ?? 1 };
    case 'keep-both': {
      const rename: Record<number, Record<string, string>> = {};
      for (const [block, v] of Object.entries(values)) {
        if (!block.startsWith(BLOCKS.renamePrefix)) continue;
        const [version, col] = block.slice(BLOCKS.renamePrefix.length).split(':');
        const value = v.value?.value?.trim();
        if (!value) throw new TributaryError('decision_invalid', `give a new ${col} for version ${version}`, { block });
        (rename[Number(version)] ??= {})[col!] = value;
      }
      return { action: 'keep-both', rename };
    }
    case 'merge': {
      const picks: Record<string, number> = {};
      for (const [block, v] of Object.entries(values)) {
        if (!block.startsWith(BLOCKS.mergePrefix)) continue;
        picks[block.slice(BLOCKS.mergePrefix.length)] = Number(v.value?.selected_option?.value ?? 1);
      }
      return { action: 'merge', picks };
    }
    case 'delete-both':
    case 'delete': {
      const cascade = (values[BLOCKS.cascade]?.value?.selected_options ?? []).some((o) => o.value === 'cascade');
      return { action: meta.action, cascade };
    }
    case 'repoint': {
      const picked = values[BLOCKS.repointTo]?.[OPTIONS.repointTargets] ?? values[BLOCKS.repointTo]?.value;
      const to = (picked?.selected_option?.value ?? picked?.value ?? undefined)?.trim();
      if (!to) throw new TributaryError('decision_invalid', 'give the key of the parent to point at', { block: BLOCKS.repointTo });
      return { action: 'repoint', to };
    }
    case 'waive':
      return { action: 'waive' };
  }
}

/** The re-point modal's confirmation, ticked. */
function confirmed(values: Values): boolean {
  return (values[BLOCKS.repointConfirm]?.value?.selected_options ?? []).some((o) => o.value === 'confirm');
}

function blockForError(err: TributaryError, meta: ModalMeta, view: { state: { values: Values } }): string {
  const field = err.details.field as string | undefined;
  const blocks = Object.keys(view.state.values);
  if (field && meta.action === 'keep-both') {
    const hit = blocks.find((b) => b.startsWith(BLOCKS.renamePrefix) && b.endsWith(`:${field}`));
    if (hit) return hit;
  }
  if (meta.action === 'repoint' && blocks.includes(BLOCKS.repointTo) && err.code === 'decision_invalid') return BLOCKS.repointTo;
  if ((meta.action === 'delete' || meta.action === 'delete-both') && blocks.includes(BLOCKS.cascade) && /depend/.test(err.message)) return BLOCKS.cascade;
  return BLOCKS.rationale;
}
