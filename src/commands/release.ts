import type { App, RespondFn } from '@slack/bolt';
import { consolidate } from '../engine/consolidate/index.js';
import { listConflicts } from '../engine/review/index.js';
import { authorize } from '../engine/kernel/roles.js';
import { resultCounts, auditSummary, releaseEvents } from '../engine/report/index.js';
import { tagRelease, type TagResult } from '../engine/gate/index.js';
import { suggest, TributaryError, unknownName } from '../errors.js';
import { parseWords, tokenize, type Grammar } from './grammar.js';
import { redact } from '../log.js';
import type { BotDeps } from '../slack/deps.js';
import { COMMANDS } from '../slack/ids.js';
import { auditCard, conflictListMessage, errorMessage, helpMessage, loadCard, statusMessage, textMessage, validationCard } from '../views/blocks.js';
import { type Message, esc } from '../views/limits.js';
import { renderAuditSummary } from '../views/audit.js';
import { assertReloadConfirmed, loadRelease } from '../engine/load/index.js';
import { validateRelease } from '../engine/validate/index.js';
import { renderCarried, renderCounts, renderOffenders, renderTag } from '../views/text.js';
import { progressMessageIn, replyError } from './common.js';
import { openApproveFromCommand, runPromote, runTestCommand } from './testing.js';
import { openRollbackFromCommand, runDeployRequest } from './deploy.js';
import { postCoverage } from './nightly.js';

/**
 * `/release …`: the CLI's twin in Slack. Each request is acknowledged at once; long work goes on in
 * the background and reports by updating one progress message.
 */
interface Parsed {
  sub: string;
  args: string[];
  flags: Record<string, string | true>;
}

const RELEASE = { name: 'release', required: true };
const VALUE = { value: true };
const SWITCH = { value: false };

/** Each `/release` sub-command's grammar: what it takes, and nothing else (an unknown flag is refused, never ignored). */
const GRAMMARS: Record<string, Grammar> = {
  status: { usage: '/release status [R2]', args: [{ name: 'release', required: false }], flags: {} },
  tag: { usage: '/release tag R2 [--env ST-3]', args: [RELEASE], flags: { env: VALUE } },
  consolidate: { usage: '/release consolidate R2 [--env ST-3]', args: [RELEASE], flags: { env: VALUE } },
  conflicts: { usage: '/release conflicts R2 [--priority P1]', args: [RELEASE], flags: { priority: VALUE } },
  review: { usage: '/release review R2', args: [RELEASE], flags: {} },
  validate: { usage: '/release validate R2', args: [RELEASE], flags: {} },
  load: { usage: '/release load R2 [--confirm]', args: [RELEASE], flags: { confirm: SWITCH } },
  audit: { usage: '/release audit R2', args: [RELEASE], flags: {} },
  test: { usage: '/release test R2 --tier 1|2 | --feature FEAT-101 | --smoke [--env production]', args: [RELEASE], flags: { tier: VALUE, feature: VALUE, smoke: SWITCH, env: VALUE } },
  promote: { usage: '/release promote R2', args: [RELEASE], flags: {} },
  approve: { usage: '/release approve R2', args: [RELEASE], flags: {} },
  deploy: { usage: '/release deploy R2 [--at 2026-11-26T22:00:00Z] [--bundle N]', args: [RELEASE], flags: { at: VALUE, bundle: VALUE } },
  rollback: { usage: '/release rollback R2', args: [RELEASE], flags: {} },
  coverage: { usage: '/release coverage', args: [], flags: {} },
};

/** Every `/release` sub-command (test/e2e/role-walk.db.test.ts walks them all). */
export const RELEASE_SUBCOMMANDS = Object.keys(GRAMMARS);

/**
 * A `/release` command's text as Slack sends it, parsed by its sub-command's grammar; a release it names
 * must be in the plan. Refused (TributaryError 'usage' or 'unknown_release') with what was not understood.
 */
export function parseCommand(text: string, releases: Iterable<string>): Parsed {
  const words = tokenize(text);
  const sub = (words[0] ?? 'help').toLowerCase();
  const grammar = GRAMMARS[sub];
  if (!grammar) {
    const close = suggest(sub, [...Object.keys(GRAMMARS), 'help']);
    throw new TributaryError('usage', `Unknown command "${sub}"${close ? ` (did you mean ${close}?)` : ''}.`);
  }
  const { args, flags } = parseWords(words.slice(1), grammar);
  const release = args.release;
  const plan = [...releases];
  if (release !== undefined && !plan.includes(release)) throw unknownName('unknown_release', 'release', release, plan);
  return { sub, args: release === undefined ? [] : [release], flags };
}

function needRelease(p: Parsed): string {
  const r = p.args[0];
  if (!r) throw new TributaryError('usage', `missing release: ${GRAMMARS[p.sub]!.usage}`);
  return r;
}

export function register(app: App, deps: BotDeps): void {
  const { ctx } = deps;
  app.command(COMMANDS.release, async ({ command, ack, respond }) => {
    const user = command.user_id;
    const text = (command.text ?? '').trim();
    if (text === '' || /^help\b/i.test(text)) {
      await ack({ response_type: 'ephemeral', ...helpMessage() });
      return;
    }
    let p: Parsed;
    try {
      p = parseCommand(text, ctx.config.releases.keys());
    } catch (err) {
      // refused before anything is done: only the person who typed it sees why
      if (!(err instanceof TributaryError)) throw err;
      await ack({ response_type: 'ephemeral', ...(err.code === 'usage' ? helpMessage(err.message) : errorMessage(err.message)) });
      return;
    }
    await ack();
    const work = async () => {
      try {
        switch (p.sub) {
          case 'status': {
            const names = p.args[0] ? [p.args[0]] : [...ctx.config.releases.keys()];
            const statuses = [];
            for (const r of names) statuses.push(await deps.statusOf(r));
            await respond({ response_type: 'ephemeral', ...statusMessage(statuses) });
            return;
          }
          case 'conflicts': {
            const release = needRelease(p);
            const priority = typeof p.flags.priority === 'string' ? p.flags.priority.toUpperCase() : undefined;
            const rows = await listConflicts(ctx, release, { status: 'open', ...(priority ? { priority } : {}) });
            await respond({ response_type: 'ephemeral', ...conflictListMessage(release, rows, priority) });
            return;
          }
          case 'tag':
            return await runTag(deps, respond, user, command.channel_id, needRelease(p), typeof p.flags.env === 'string' ? p.flags.env : undefined);
          case 'consolidate':
            return await runConsolidate(deps, respond, user, command.channel_id, needRelease(p), typeof p.flags.env === 'string' ? p.flags.env : undefined);
          case 'validate':
            return await runValidate(deps, respond, user, command.channel_id, needRelease(p));
          case 'load':
            return await runLoad(deps, respond, user, command.channel_id, needRelease(p), p.flags.confirm === true);
          case 'audit':
            return await postAudit(deps, respond, user, command.channel_id, needRelease(p));
          case 'test':
            return await runTestCommand(deps, respond, user, command.channel_id, needRelease(p), p.flags);
          case 'promote':
            return await runPromote(deps, respond, user, command.channel_id, needRelease(p));
          case 'approve':
            return await openApproveFromCommand(deps, respond, user, command.trigger_id, needRelease(p));
          case 'deploy':
            return await runDeployRequest(deps, respond, user, command.channel_id, needRelease(p), p.flags);
          case 'rollback':
            return await openRollbackFromCommand(deps, user, command.trigger_id, needRelease(p));
          case 'coverage':
            return await postCoverage(deps, respond, user, command.channel_id);
          case 'review': {
            const release = needRelease(p);
            await authorize(ctx, user, await deps.groupsOf(user), 'review', release);
            const channel = ctx.config.slack.reviewChannel ?? command.channel_id;
            const open = await listConflicts(ctx, release, { status: 'open' });
            await respond({ response_type: 'ephemeral', ...textMessage(`Posting ${open.length} open conflict card(s) of ${release} to <#${channel}>, highest priority first.`) });
            await deps.cards.postCards(release, channel);
            return;
          }
        }
      } catch (err) {
        if (err instanceof TributaryError && err.code === 'usage') {
          await respond({ response_type: 'ephemeral', ...helpMessage(err.message) });
          return;
        }
        await replyError(respond, err, `/release ${p.sub}`);
      }
    };
    // long jobs get their own queue; modals (approve, rollback) must open within the trigger's 3 s
    if (['tag', 'consolidate', 'validate', 'load', 'test', 'promote', 'deploy'].includes(p.sub)) deps.longRunning(work);
    else deps.background(work, ['approve', 'rollback'].includes(p.sub));
  });
}

async function runTag(deps: BotDeps, respond: RespondFn, user: string, channel: string, release: string, env?: string): Promise<void> {
  const { ctx } = deps;
  await authorize(ctx, user, await deps.groupsOf(user), 'tag', release);
  const progress = await progressMessageIn(deps, channel, `Tag & lock ${esc(release)}${env ? ` (${esc(env)})` : ''} by <@${user}>`, respond);
  progress.step('checking tags');
  try {
    const r = await tagRelease(ctx, release, { actor: user, ...(env ? { env } : {}) });
    await progress.done('locked', renderTag(r));
  } catch (err) {
    if (err instanceof TributaryError && err.code === 'gate_untagged') {
      await progress.fail(renderOffenders(err.details.result as TagResult));
      return;
    }
    await progress.fail(redact(err instanceof Error ? err.message : String(err)));
    if (!(err instanceof TributaryError)) throw err;
  }
}

async function runConsolidate(deps: BotDeps, respond: RespondFn, user: string, channel: string, release: string, env?: string): Promise<void> {
  const { ctx } = deps;
  await authorize(ctx, user, await deps.groupsOf(user), 'consolidate', release);
  const progress = await progressMessageIn(deps, channel, `Consolidation of ${esc(release)}${env ? ` (re-collecting ${esc(env)})` : ''} by <@${user}>`, respond);
  let rows = 0;
  try {
    const r = await consolidate(ctx, release, {
      actor: user,
      ...(env ? { env } : {}),
      progress: (step, info) => {
        if (typeof info?.rows === 'number' && info.env) rows += info.rows;
        const detail = step === 'collect' ? `${rows} rows collected${info?.env ? `, ${String(info.env)} done` : ''}` : info ? Object.entries(info).map(([k, v]) => `${k} ${String(v)}`).join(', ') : undefined;
        progress.step(step, detail);
      },
    });
    const counts = await resultCounts(ctx, r.runId);
    const carried = renderCarried(r.carried);
    await progress.done('done', `${renderCounts(release, counts, r.steps)}${carried ? `\n${carried}` : ''}\nReview: /release review ${release}`);
  } catch (err) {
    await progress.fail(redact(err instanceof Error ? err.message : String(err)));
    if (!(err instanceof TributaryError)) throw err;
  }
}

async function runValidate(deps: BotDeps, respond: RespondFn, user: string, channel: string, release: string): Promise<void> {
  const { ctx } = deps;
  await authorize(ctx, user, await deps.groupsOf(user), 'validate', release);
  const progress = await progressMessageIn(deps, channel, `Validation of ${esc(release)} by <@${user}>`, respond);
  progress.step('integrity checks and data tests');
  try {
    const r = await validateRelease(ctx, release, { actor: user });
    await progress.done(r.counts.open === 0 ? 'valid' : `${r.counts.open} open finding(s)`);
    await postResult(deps, respond, channel, validationCard(r));
  } catch (err) {
    await progress.fail(redact(err instanceof Error ? err.message : String(err)));
    if (!(err instanceof TributaryError)) throw err;
  }
}

async function runLoad(deps: BotDeps, respond: RespondFn, user: string, channel: string, release: string, confirm: boolean): Promise<void> {
  const { ctx } = deps;
  await authorize(ctx, user, await deps.groupsOf(user), 'load', release);
  // past tier 1 a re-load resets testing and approval: said (ephemerally) before anything is posted
  await assertReloadConfirmed(ctx, release, confirm);
  const progress = await progressMessageIn(deps, channel, `Load of ${esc(release)} into staging by <@${user}>`, respond);
  try {
    const r = await loadRelease(ctx, release, { actor: user, confirm, progress: (step, info) => progress.step(step, info?.table ? `table ${String(info.table)}` : undefined) });
    await progress.done('loaded and verified');
    await postResult(deps, respond, channel, loadCard(r));
  } catch (err) {
    await progress.fail(redact(err instanceof Error ? err.message : String(err)));
    if (!(err instanceof TributaryError)) throw err;
  }
}

/** The audit summary with the chain head (a witness outside the database), and the full trail as a file. */
async function postAudit(deps: BotDeps, respond: RespondFn, user: string, channel: string, release: string): Promise<void> {
  const { ctx } = deps;
  const summary = await auditSummary(ctx, release);
  const card = auditCard(renderAuditSummary(summary), summary.head?.hash ?? null);
  await postResult(deps, respond, channel, card);
  const events = await releaseEvents(ctx.db.control, release);
  try {
    await deps.client.files.uploadV2({
      channel_id: channel,
      filename: `tributary-audit-${release}.json`,
      title: `Audit trail of ${release}`,
      content: redact(JSON.stringify({ summary, events }, null, 2)),
      initial_comment: `Full audit trail of ${release}: ${events.length} events, requested by <@${user}>`,
    });
  } catch (err) {
    await respond({ response_type: 'ephemeral', ...textMessage(`The summary is posted, but the trail file could not be uploaded (${redact((err as Error).message)}); export it with: tributary audit ${release} --format json`) });
  }
}

async function postResult(deps: BotDeps, respond: RespondFn, channel: string, m: Message): Promise<void> {
  try {
    await deps.client.chat.postMessage({ channel, text: m.text, blocks: m.blocks });
  } catch {
    await respond({ response_type: 'ephemeral', ...m });
  }
}
