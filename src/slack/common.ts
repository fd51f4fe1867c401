import type { AckFn, RespondFn, ViewOutput, ViewResponseAction } from '@slack/bolt';
import { RATIONALE_MIN } from '../engine/kernel/rationale.js';
import { chainHead } from '../engine/report/index.js';
import { TributaryError } from '../errors.js';
import { logger, redact } from '../log.js';
import type { BotDeps } from './deps.js';
import { errorMessage, progressMessage } from '../views/blocks.js';
import { explainSlackError, slackError } from './slackErrors.js';
import type { Ending } from '../views/kit.js';
import { hidePaths } from '../views/limits.js';
import { throttled } from './throttle.js';

/** Tells the user what went wrong, ephemerally; an unexpected error also goes to the log. Never silence. */
export async function replyError(respond: RespondFn, err: unknown, where: string, channel?: string): Promise<void> {
  const explained = explainSlackError(err, channel);
  if (explained) {
    logger().info({ code: slackError(err), where }, 'Slack refused; the user is told what to do');
    await respond({ response_type: 'ephemeral', replace_original: false, ...explained }).catch((e: unknown) => logger().warn({ err: redact((e as Error).message), where }, 'could not tell the user about an error'));
    return;
  }
  const message = redact(err instanceof Error ? (err instanceof TributaryError ? err.message : (err.message.split(' - ').pop() ?? err.message)) : String(err));
  if (!(err instanceof TributaryError)) logger().error({ err: redact(String((err as Error)?.stack ?? err)), where }, 'Slack handler failed');
  else logger().info({ code: err.code, where }, message);
  try {
    await respond({ response_type: 'ephemeral', replace_original: false, ...errorMessage(message) });
  } catch (e) {
    logger().warn({ err: redact((e as Error).message), where }, 'could not tell the user about an error');
  }
}

/**
 * A decision form's submission, read once for every modal (decisions, patterns, findings, waivers,
 * approvals, Go / No-go, rollbacks): its private metadata and its rationale, checked by the engine's rule
 * (kernel/rationale.ts) before anything runs. When either is unusable the form itself is answered, on
 * the rationale's field, and nothing is returned. `again` says how to reopen the form ("click the card
 * again"); a form whose rationale is optional passes `rationale: 'optional'` (the engine checks it then).
 */
export async function readSubmission<T>(
  ack: AckFn<ViewResponseAction> | AckFn<void>,
  view: ViewOutput,
  block: string,
  again: string,
  opts: { rationale?: 'required' | 'optional'; why?: string } = {},
): Promise<{ meta: T; rationale: string } | undefined> {
  const refuse = (message: string) => (ack as AckFn<ViewResponseAction>)({ response_action: 'errors', errors: { [block]: message } });
  let meta: T;
  try {
    meta = JSON.parse(view.private_metadata) as T;
  } catch {
    await refuse(`This form is damaged; close it and ${again}.`);
    return undefined;
  }
  const rationale = view.state.values[block]?.value?.value?.trim() ?? '';
  if ((opts.rationale ?? 'required') === 'required' && rationale.replace(/\s/g, '').length < RATIONALE_MIN) {
    await refuse(`Say why (at least a few words): ${opts.why ?? 'the rationale goes to the audit trail'}.`);
    return undefined;
  }
  return { meta, rationale };
}

export interface ProgressReporter {
  step(step: string, detail?: string): void;
  /** The step's end: a success unless told otherwise (a failed gate, open findings), the icon says which. */
  done(step: string, summary?: string, outcome?: Exclude<Ending, 'running'>): Promise<void>;
  /** The step did not happen: a failure, or a refusal (a gate said no, nothing was changed). */
  fail(message: string, outcome?: 'failure' | 'refusal'): Promise<void>;
}

/**
 * One progress message, updated in place (chat.update), at most every `progressIntervalMs`:
 * step, count, elapsed. Falls back to an ephemeral reply where the bot cannot post.
 */
export async function progressMessageIn(deps: BotDeps, channel: string, title: string, respond: RespondFn): Promise<ProgressReporter> {
  const started = Date.now();
  let ts: string | undefined;
  try {
    const first = progressMessage({ title, step: 'starting', elapsedMs: 0, state: 'running' });
    const res = await deps.client.chat.postMessage({ channel, text: first.text, blocks: first.blocks });
    ts = res.ts;
  } catch (err) {
    logger().info({ err: redact((err as Error).message), channel }, 'cannot post the progress message; replying ephemerally instead');
  }
  // updates go out one after the other: the final one can never be overtaken by a late progress update
  let chain: Promise<unknown> = Promise.resolve();
  const send = (m: ReturnType<typeof progressMessage>, final: boolean): Promise<void> => {
    const next = chain.then(async () => {
      if (ts) await deps.client.chat.update({ channel, ts, text: m.text, blocks: m.blocks });
      else if (final) await respond({ response_type: 'ephemeral', replace_original: false, ...m });
    });
    chain = next.catch(() => undefined);
    return next;
  };
  const updates = throttled<{ step: string; detail?: string }>(deps.progressIntervalMs, (p) => {
    void send(progressMessage({ title, step: p.step, ...(p.detail ? { detail: p.detail } : {}), elapsedMs: Date.now() - started, state: 'running' }), false).catch((err) =>
      logger().warn({ err: redact((err as Error).message) }, 'progress update failed'),
    );
  });
  // the final message names the chain head: each step leaves a witness outside the database
  const head = () =>
    chainHead(deps.ctx.db.control).catch((err: unknown) => {
      logger().warn({ err: redact((err as Error).message) }, 'the chain head could not be read for the final message');
      return null;
    });
  return {
    step(step, detail) {
      updates.push({ step, ...(detail ? { detail } : {}) });
    },
    async done(step, summary, outcome = 'success') {
      updates.stop();
      await send(progressMessage({ title, step, elapsedMs: Date.now() - started, state: outcome, ...(summary ? { summary } : {}), chainHead: await head() }), true);
    },
    async fail(message, outcome = 'failure') {
      updates.stop();
      await send(progressMessage({ title, step: outcome === 'refusal' ? 'refused' : 'failed', detail: redact(message), elapsedMs: Date.now() - started, state: outcome, chainHead: await head() }), true);
    },
  };
}

/** What a command's run (src/commands/runs.ts) gave: its value, its text, its exit code (0 success, 1 failure, 3 a refused gate). */
export interface Outcome {
  value: unknown;
  text: string;
  code: number;
}

/** Runs the command's run for this Slack user (already authorized), its progress going where the Slack form says. */
export type Runner = (progress?: (line: string, info?: Record<string, unknown>) => void) => Promise<Outcome>;

/**
 * A long command in one progress message in the channel: its steps as they go, then done or failed; an
 * error fails the message (and an unexpected one goes on to the log).
 */
export async function inProgress(deps: BotDeps, respond: RespondFn, channel: string, title: string, first: string, body: (progress: ProgressReporter) => Promise<void>): Promise<void> {
  const progress = await progressMessageIn(deps, channel, title, respond);
  progress.step(first);
  try {
    await body(progress);
  } catch (err) {
    await progress.fail(hidePaths(redact(err instanceof Error ? err.message : String(err))));
    if (!(err instanceof TributaryError)) throw err;
  }
}
