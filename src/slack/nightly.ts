import path from 'node:path';
import type { App, BlockAction, ButtonAction, RespondFn } from '@slack/bolt';
import { coverageGrowth, type Coverage, decideProposal, setChartPath, type PruneProposal, type SlotRow, type SchedulerHooks, type NightlySummary } from '../engine/nightly/index.js';
import { TributaryError } from '../errors.js';
import { logger, redact } from '../log.js';
import type { BotDeps } from './deps.js';
import { ACTIONS } from './ids.js';
import { coverageMessage, nightlyCard, nightlyFailedCard, pruneCard } from '../views/nightly.js';
import { replyError } from './common.js';
import { recordMessage } from './messages.js';
import { writeCoverageChart } from '../commands/charts.js';
import { textMessage } from '../views/blocks.js';

/**
 * The nightly regression in Slack: the morning post (summary card and the coverage chart as a PNG),
 * `/release coverage`, and the weekly pruning proposals whose buttons only the feature's owner may use.
 */

async function uploadChart(deps: BotDeps, channel: string, coverage: Coverage, name: string, comment?: string): Promise<string> {
  const { file, png } = await writeCoverageChart(deps.ctx, coverage, name);
  await deps.client.files.uploadV2({ channel_id: channel, file: png, filename: path.basename(file), title: 'Coverage growth per release', ...(comment ? { initial_comment: comment } : {}) });
  return file;
}

export function nightlyHooks(deps: BotDeps): SchedulerHooks {
  const { ctx } = deps;
  const channel = ctx.config.nightly!.channel;
  return {
    async postNightly(row: SlotRow) {
      if (row.status !== 'done' || !row.summary) {
        const m = nightlyFailedCard(row.error ?? 'unknown error', row.slot);
        await deps.client.chat.postMessage({ channel, text: m.text, blocks: m.blocks });
        return;
      }
      const card = nightlyCard(row.summary as NightlySummary);
      await deps.client.chat.postMessage({ channel, text: card.text, blocks: card.blocks });
      try {
        const file = await uploadChart(deps, channel, await coverageGrowth(ctx), `nightly-${row.id}-coverage.png`);
        await setChartPath(ctx, row.id, file);
      } catch (err) {
        logger().warn({ err: redact((err as Error).message) }, 'nightly: the coverage chart could not be posted');
      }
    },
    async postDigest(proposals: PruneProposal[]) {
      for (const p of proposals) {
        const m = pruneCard(p, { prune: ACTIONS.prune, keep: ACTIONS.pruneKeep });
        const res = await deps.client.chat.postMessage({ channel, text: m.text, blocks: m.blocks });
        if (res.ts) await recordMessage(ctx.db.control, 'prune', p.id, { channel: res.channel ?? channel, ts: res.ts });
      }
    },
  };
}

/** `/release coverage`: the table and the chart, in the channel the command came from. */
export async function postCoverage(deps: BotDeps, respond: RespondFn, user: string, channel: string, coverage: Coverage): Promise<void> {
  const m = coverageMessage(coverage);
  try {
    await deps.client.chat.postMessage({ channel, text: m.text, blocks: m.blocks });
  } catch {
    await respond({ response_type: 'ephemeral', ...m });
  }
  try {
    await uploadChart(deps, channel, coverage, `coverage-${Date.now()}.png`, `Coverage growth, requested by <@${user}>`);
  } catch (err) {
    await respond({ response_type: 'ephemeral', replace_original: false, ...textMessage(`The table is posted, but the chart could not be uploaded (${redact((err as Error).message)}); \`tributary coverage --chart coverage.png\` writes it`) });
  }
}

export function register(app: App, deps: BotDeps): void {
  const { ctx } = deps;
  for (const [actionId, answer] of [[ACTIONS.prune, 'prune'], [ACTIONS.pruneKeep, 'keep']] as const) {
    app.action<BlockAction<ButtonAction>>(actionId, async ({ ack, body, action, respond }) => {
      await ack();
      deps.background(async () => {
        try {
          const ref = JSON.parse(action.value ?? '{}') as { proposal?: unknown };
          if (typeof ref.proposal !== 'number') throw new TributaryError('usage', 'this button carries no proposal');
          const r = await decideProposal(ctx, ref.proposal, body.user.id, answer);
          const channel = body.container?.channel_id;
          const ts = body.container?.message_ts;
          if (channel && ts) {
            const m = pruneCard(r.proposal, { prune: ACTIONS.prune, keep: ACTIONS.pruneKeep }, r.removed.length);
            await deps.client.chat.update({ channel, ts, text: m.text, blocks: m.blocks });
          }
        } catch (err) {
          await replyError(respond, err, `prune ${answer}`);
        }
      });
    });
  }
}
