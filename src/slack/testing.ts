import fs from 'node:fs';
import path from 'node:path';
import type { App, BlockAction, ButtonAction, RespondFn } from '@slack/bolt';
import type { PromoteResult } from '../engine/promote/index.js';
import { authorize } from '../engine/kernel/roles.js';
import { type Tier, approvalOfRun, approveRelease, latestTier2Run, reportOfRun, type TestRunReport } from '../engine/tiers/index.js';
import type { Parsed } from '../commands/table.js';
import { TributaryError } from '../errors.js';
import { logger, redact } from '../log.js';
import type { BotDeps } from './deps.js';
import { ACTIONS, BLOCKS, VIEWS } from './ids.js';
import { composed, mention, plainTimes, textMessage } from '../views/blocks.js';
import { esc, type Message } from '../views/limits.js';
import { approveModal, promoteCard, testRunCard, tierLabel, type ApproveRef } from '../views/testing.js';
import { inProgress, readSubmission, replyError, type Runner } from './common.js';

/**
 * Two-tier testing in Slack: `/release test R2 --tier 1|2 | --feature F | --smoke [--env E]` runs the
 * team's tests in the background, updating one progress message as shards finish, then posts the
 * summary card and uploads the reports; `/release promote R2`; the tier 2 card's Approve button (and
 * `/release approve R2`) opens a modal with a rationale; the card is then updated in place.
 */
export function testRequestOf(flags: Parsed['flags']): { tier: Tier; feature?: string; env?: string } {
  const tier = flags.tier;
  const feature = typeof flags.feature === 'string' ? flags.feature : undefined;
  const env = typeof flags.env === 'string' ? flags.env : undefined;
  const chosen = [tier !== undefined, flags.feature !== undefined, flags.smoke !== undefined].filter(Boolean).length;
  if (chosen !== 1) throw new TributaryError('usage', 'choose one of --tier 1, --tier 2, --feature FEAT-101, --smoke: /release test R2 --tier 1');
  if (tier !== undefined) {
    if (tier !== '1' && tier !== '2') throw new TributaryError('usage', `--tier takes 1 or 2 (got "${String(tier)}"): /release test R2 --tier 1`);
    if (env) throw new TributaryError('usage', '--env goes with --feature or --smoke (tier 1 runs on staging, tier 2 on master)');
    return { tier };
  }
  if (flags.feature === true) throw new TributaryError('usage', '--feature needs a feature id: /release test R2 --feature FEAT-101');
  return { tier: feature ? 'feature' : 'smoke', ...(feature ? { feature } : {}), ...(env ? { env } : {}) };
}

async function post(deps: BotDeps, respond: RespondFn, channel: string, m: Message): Promise<{ channel: string; ts: string } | undefined> {
  try {
    const res = await deps.client.chat.postMessage({ channel, text: m.text, blocks: m.blocks });
    return res.ts ? { channel: res.channel ?? channel, ts: res.ts } : undefined;
  } catch {
    await respond({ response_type: 'ephemeral', ...m });
    return undefined;
  }
}

async function uploadReports(deps: BotDeps, respond: RespondFn, channel: string, r: TestRunReport): Promise<void> {
  try {
    for (const file of [r.reports.markdown, r.reports.junit]) {
      await deps.client.files.uploadV2({
        channel_id: channel,
        filename: path.basename(file),
        title: `${r.release} ${tierLabel(r.tier)}: ${file.endsWith('.md') ? 'report' : 'merged JUnit XML'}`,
        content: redact(fs.readFileSync(file, 'utf8')),
      });
    }
  } catch (err) {
    await respond({ response_type: 'ephemeral', replace_original: false, ...textMessage(`The summary is posted, but the report files could not be uploaded (${redact((err as Error).message)}); they are on the bot's machine: ${r.reports.markdown}`) });
  }
}

export async function runTestCommand(deps: BotDeps, respond: RespondFn, user: string, channel: string, release: string, flags: Parsed['flags'], run: Runner): Promise<void> {
  const req = testRequestOf(flags);
  const target = deps.ctx.config.slack.releaseChannel ?? channel;
  await inProgress(deps, respond, target, `${esc(release)} ${tierLabel(req.tier, req.feature)}${req.env ? ` on ${esc(req.env)}` : ''} by <@${user}>`, 'starting', async (progress) => {
    const r = (await run((line) => progress.step('running shards', line))).value as TestRunReport;
    await progress.done(r.gate.passed ? 'passed' : 'failed', `${r.totals.passed}/${r.totals.total - r.totals.skipped} passed (${r.totals.passRate}%)`, r.gate.passed ? 'success' : 'failure');
    await post(deps, respond, target, testRunCard(r));
    await uploadReports(deps, respond, target, r);
  });
}

export async function runPromote(deps: BotDeps, respond: RespondFn, user: string, channel: string, release: string, run: Runner): Promise<void> {
  const target = deps.ctx.config.slack.releaseChannel ?? channel;
  await inProgress(deps, respond, target, `Promotion of ${esc(release)} into master by <@${user}>`, 'starting', async (progress) => {
    const o = await run((step, info) => progress.step(step, info?.table ? `table ${String(info.table)}` : undefined));
    // cross-release conflicts go to the same review cards: say where to decide them
    if (o.code !== 0) return progress.fail(`${redact(String((o.value as { message?: string }).message ?? o.text))}\nDecide them in Slack: /release review ${release} posts their cards; then /release promote ${release} again.`);
    await progress.done('promoted and verified');
    const card = promoteCard(o.value as PromoteResult);
    await deps.client.chat.postMessage({ channel: target, text: card.text, blocks: card.blocks });
  });
}

function latestTier2(deps: BotDeps, release: string) {
  return latestTier2Run(deps.ctx, release);
}

/** `/release approve R2` without --rationale: the same modal as the card's button, for the latest tier 2 run (the table authorized it). */
export async function openApproveFromCommand(deps: BotDeps, respond: RespondFn, user: string, triggerId: string, release: string): Promise<void> {
  const run = await latestTier2(deps, release);
  if (!run) throw new TributaryError('gate_tests', `${release} has no tier 2 run to approve: /release test ${release} --tier 2 first`);
  await deps.client.views.open({ trigger_id: triggerId, view: approveModal({ release, runId: run.id }, { passed: run.status === 'passed', reasons: run.gate.reasons ?? [] }) });
  void respond;
}

export function register(app: App, deps: BotDeps): void {
  const { ctx } = deps;
  app.action<BlockAction<ButtonAction>>(ACTIONS.approve, async ({ ack, body, action, respond }) => {
    await ack();
    deps.background(async () => {
      try {
        const ref = JSON.parse(action.value ?? '{}') as ApproveRef;
        if (typeof ref.release !== 'string' || typeof ref.runId !== 'number') throw new TributaryError('usage', 'this button carries no test run: post the card again with /release test R2 --tier 2');
        await authorize(ctx, body.user.id, await deps.groupsOf(body.user.id), 'approve', ref.release);
        const run = await latestTier2(deps, ref.release);
        if (!run || run.id !== ref.runId) {
          await respond({ response_type: 'ephemeral', replace_original: false, ...textMessage(`This card is from tier 2 run #${ref.runId}; the latest tier 2 run of ${ref.release} is #${run?.id ?? '?'}: approve that one.`) });
          return;
        }
        const meta: ApproveRef = { ...ref, ...(body.container?.channel_id ? { channel: body.container.channel_id } : {}), ...(body.container?.message_ts ? { ts: body.container.message_ts } : {}) };
        // approved already (from the CLI, another card, a double click): the card is brought up to date, no modal opens
        const approval = await approvalOfRun(ctx, run.id);
        if (approval) {
          await refreshApprovedCard(deps, meta, approval);
          await respond({
            response_type: 'ephemeral',
            replace_original: false,
            ...composed`Tier 2 run #${run.id} of ${ref.release} was already approved by ${mention(approval.approved_by)}; the card is refreshed.`,
          });
          return;
        }
        await deps.client.views.open({ trigger_id: body.trigger_id, view: approveModal(meta, { passed: run.status === 'passed', reasons: run.gate.reasons ?? [] }) });
      } catch (err) {
        await replyError(respond, err, 'approve');
      }
    }, true);
  });

  app.view(VIEWS.approve, async ({ ack, body, view }) => {
    const user = body.user.id;
    const form = await readSubmission<ApproveRef>(ack, view, BLOCKS.approveRationale, 'press Approve again');
    if (!form) return;
    const { meta: ref, rationale } = form;
    try {
      await authorize(ctx, user, await deps.groupsOf(user), 'approve', ref.release);
      const run = await latestTier2(deps, ref.release);
      if (!run || run.id !== ref.runId) throw new TributaryError('gate_state', `tier 2 run #${ref.runId} is no longer the latest of ${ref.release} (#${run?.id ?? '?'}): approve the latest one`);
      const res = await approveRelease(ctx, ref.release, { actor: user, rationale, override: run.status !== 'passed', runId: ref.runId });
      await ack();
      if (ref.channel && ref.ts) {
        deps.background(async () => {
          try {
            const report = await reportOf(deps, ref.release, ref.runId);
            if (report) {
              const card = testRunCard(report, { by: user, at: new Date(), rationale, override: res.override });
              await deps.client.chat.update({ channel: ref.channel!, ts: ref.ts!, text: card.text, blocks: card.blocks });
            }
          } catch (err) {
            logger().warn({ err: redact((err as Error).message) }, 'could not update the tier 2 card');
          }
        });
      }
    } catch (err) {
      const message = err instanceof TributaryError ? err.message : 'Something went wrong; nothing was approved. Try again, or use the CLI: tributary approve';
      if (!(err instanceof TributaryError)) logger().error({ err: redact(String((err as Error).stack ?? err)) }, 'approval failed');
      await ack({ response_action: 'errors', errors: { [BLOCKS.approveRationale]: plainTimes(redact(message)).slice(0, 300) } });
    }
  });
}

/** Redraws a tier 2 card as approved (where it is known), the approval as it was recorded. */
async function refreshApprovedCard(deps: BotDeps, ref: ApproveRef, a: { approved_by: string; approved_at: Date; rationale: string; override: boolean }): Promise<void> {
  if (!ref.channel || !ref.ts) return;
  try {
    const report = await reportOf(deps, ref.release, ref.runId);
    if (!report) return;
    const card = testRunCard(report, { by: a.approved_by, at: a.approved_at, rationale: a.rationale, override: a.override });
    await deps.client.chat.update({ channel: ref.channel, ts: ref.ts, text: card.text, blocks: card.blocks });
  } catch (err) {
    logger().warn({ err: redact((err as Error).message) }, 'could not update the tier 2 card');
  }
}

/** Rebuilds a run's report from the database (to redraw its card after an approval). */
function reportOf(deps: BotDeps, release: string, runId: number): Promise<TestRunReport | undefined> {
  return reportOfRun(deps.ctx, release, runId);
}
