import type { App, RespondFn } from '@slack/bolt';
import type { ConsolidateResult } from '../engine/consolidate/index.js';
import type { Coverage } from '../engine/nightly/index.js';
import type { ValidationReport } from '../engine/validate/index.js';
import { getConflict, isAutoCode, listConflicts, releaseOfCode, type ConflictRow, type Pattern, type Proposal } from '../engine/review/index.js';
import { patternListMessage, proposalCard } from '../views/patterns.js';
import { postPatternCards } from './patterns.js';
import { releaseEvents, type AuditSummary, type ReleaseStatus } from '../engine/report/index.js';
import { suggest, TributaryError } from '../errors.js';
import { tokenize } from '../commands/grammar.js';
import { commandHelp, helpLines } from '../commands/help.js';
import { authorizeFor, parseText, runChecked } from '../commands/invoke.js';
import type { Io } from '../commands/io.js';
import { BY_ID, flagsOf, TABLE, type CommandDef, type Parsed } from '../commands/table.js';
import { redact } from '../log.js';
import type { BotDeps } from './deps.js';
import { COMMANDS } from './ids.js';
import { auditCard, channelLink, composed, conflictListMessage, errorMessage, helpMessage, loadCard, preMessage, statusMessage, textMessage, validationCard } from '../views/blocks.js';
import { type Message, esc, hidePaths } from '../views/limits.js';
import { renderAuditSummary } from '../views/audit.js';
import { assertReloadConfirmed, type LoadResult } from '../engine/load/index.js';
import { renderCarried, renderCounts } from '../views/text.js';
import { autoResolvedAnswer } from './autoResolved.js';
import { inProgress, replyError, type Outcome, type Runner } from './common.js';
import { explainSlackError } from './slackErrors.js';
import { openApproveFromCommand, runPromote, runTestCommand } from './testing.js';
import { openDecisionFromCommand as openConflictDecision } from './review.js';
import { openFindingDecisionFromCommand, openWaiveFromCommand } from './findings.js';
import { isFindingCode, type FindingDecisionOutcome } from '../engine/validate/index.js';
import { decisionOf } from '../commands/runs.js';
import { openDecisionFromCommand, openRollbackFromCommand, refreshGoCard, runDeployRequest } from './deploy.js';
import { postCoverage } from './nightly.js';

/**
 * `/release …`: the CLI's twin in Slack. Each request is acknowledged at once; long work goes on in
 * the background and reports by updating one progress message.
 */
/** The `/release` sub-commands whose Slack form differs from the table's text answer (cards, channel posts, modals). */
type SlackRun = (deps: BotDeps, respond: RespondFn, r: Request, run: Runner) => Promise<void>;

interface Request {
  user: string;
  channel: string;
  triggerId: string;
  parsed: Parsed;
}

const str = (v: Parsed['flags'][string]): string | undefined => (typeof v === 'string' ? v : undefined);
const rel = (r: Request): string => r.parsed.args.release!;

/**
 * The Slack form of a command, where it has one: the result as Block Kit, a card or a progress message
 * in the channel, a modal for what the flags leave out. Each is given an invocation the table parsed,
 * checked and authorized. A command without one answers with its text, ephemerally (or, a long one, in a
 * progress message in the channel).
 */
const SLACK_RUNS: Record<string, { when?: (p: Parsed) => boolean; run: SlackRun }> = {
  status: {
    run: async (_deps, respond, r, run) => {
      const v = (await run()).value as ReleaseStatus | ReleaseStatus[];
      await respond({ response_type: 'ephemeral', ...statusMessage(Array.isArray(v) ? v : [v]) });
    },
  },
  conflicts: {
    run: async (deps, respond, r, run) => {
      if (r.parsed.flags.status === 'auto-resolved') return postAutoResolved(deps, respond, r);
      const o = await run();
      if (r.parsed.flags.patterns) {
        // the list for the asker, and a card per pattern in the review channel: one decision each
        const patterns = o.value as Pattern[];
        await respond({ response_type: 'ephemeral', ...patternListMessage(rel(r), patterns) });
        if (patterns.length > 0) await postPatternCards(deps, rel(r), deps.ctx.config.slack.reviewChannel ?? r.channel, patterns);
        return;
      }
      await respond({ response_type: 'ephemeral', ...conflictListMessage(rel(r), o.value as ConflictRow[], str(r.parsed.flags.priority), (str(r.parsed.flags.status) ?? 'open') as 'open' | 'decided' | 'all') });
    },
  },
  tag: { when: (p) => p.flags.install === undefined && !!p.args.release, run: (deps, respond, r, run) => runTag(deps, respond, r, run) },
  consolidate: { run: (deps, respond, r, run) => runConsolidate(deps, respond, r, run) },
  validate: { run: (deps, respond, r, run) => runValidate(deps, respond, r, run) },
  load: { run: (deps, respond, r, run) => runLoad(deps, respond, r, run) },
  audit: { when: (p) => p.flags.format === 'text', run: async (deps, respond, r, run) => postAudit(deps, respond, r.user, r.channel, rel(r), (await run()).value as AuditSummary) },
  test: { run: (deps, respond, r, run) => runTestCommand(deps, respond, r.user, r.channel, rel(r), r.parsed.flags, run) },
  promote: { run: (deps, respond, r, run) => runPromote(deps, respond, r.user, r.channel, rel(r), run) },
  approve: { when: (p) => p.flags.rationale === undefined, run: (deps, respond, r) => openApproveFromCommand(deps, respond, r.user, r.triggerId, rel(r)) },
  deploy: { run: (deps, respond, r, run) => runDeployRequest(deps, respond, r.channel, run) },
  'deploy go': { when: (p) => p.flags.rationale === undefined, run: (deps, _respond, r) => openDecisionFromCommand(deps, r.triggerId, Number(r.parsed.args.id), 'go') },
  'deploy no-go': { when: (p) => p.flags.rationale === undefined, run: (deps, _respond, r) => openDecisionFromCommand(deps, r.triggerId, Number(r.parsed.args.id), 'no-go') },
  rollback: { when: (p) => p.flags.rationale === undefined, run: (deps, _respond, r) => openRollbackFromCommand(deps, r.triggerId, rel(r)) },
  // a decision without its rationale: the decision modal asks for it (a conflict, an overrule A-…, a finding)
  decide: {
    when: (p) => p.flags.rationale === undefined && !p.flags['dry-run'] && p.flags.pattern === undefined && /^[CAF]-\d+$/i.test(p.args.code ?? ''),
    run: async (deps, _respond, r, run) => {
      const code = r.parsed.args.code!;
      if (isFindingCode(code)) {
        // the table's run as a dry run: its flags checked (--release, --delete | --repoint), the plan for the modal
        r.parsed.flags['dry-run'] = true;
        return openFindingDecisionFromCommand(deps, r.triggerId, (await run()).value as FindingDecisionOutcome, r.channel);
      }
      const release = str(r.parsed.flags.release) ?? (await releaseOfCode(deps.ctx, code));
      // an automatic resolution is about versions (deciding re-opens it), as the table's run says
      const d = decisionOf(r.parsed.flags, isAutoCode(code) || !!(await getConflict(deps.ctx, release, code)).detail.versions);
      await openConflictDecision(deps, r.triggerId, release, code, d.action, d.action === 'keep' ? d.version : undefined);
    },
  },
  waive: { when: (p) => p.flags.rationale === undefined, run: (deps, _respond, r) => openWaiveFromCommand(deps, r.triggerId, str(r.parsed.flags.release)!, r.parsed.args.finding!, r.channel) },
  // each proposed rule as a card with its Accept button (qa_lead), for the asker
  'policy proposals': {
    run: async (_deps, respond, r, run) => {
      const o = await run();
      const proposals = o.value as Proposal[];
      if (proposals.length === 0) return void (await respond({ response_type: 'ephemeral', ...textMessage(o.text) }));
      for (const p of proposals.slice(0, 10)) await respond({ response_type: 'ephemeral', replace_original: false, ...proposalCard(p) });
    },
  },
  coverage: { run: async (deps, respond, r, run) => postCoverage(deps, respond, r.user, r.channel, (await run()).value as Coverage) },
  review: {
    run: async (deps, respond, r) => {
      const channel = deps.ctx.config.slack.reviewChannel ?? r.channel;
      const open = await listConflicts(deps.ctx, rel(r), { status: 'open' });
      // told once the first post went through: a channel the bot cannot post to gets nothing half-way, only the fix
      let told = false;
      const tell = async () => {
        if (told) return;
        told = true;
        await respond({ response_type: 'ephemeral', ...composed`Posting ${open.length} open conflict card(s) of ${rel(r)} to ${channelLink(channel)}, highest priority first.` });
      };
      try {
        await deps.cards.postCards(rel(r), channel, tell);
        await tell();
      } catch (err) {
        // a refusal a person can fix (the bot not invited, an archived channel…) names the review channel
        if (!explainSlackError(err)) throw err;
        await replyError(respond, err, '/release review', channel);
      }
    },
  },
};

/** Commands that open a modal: their work goes first in the queue (a trigger expires after 3 s). */
const opensModal = (def: CommandDef, p: Parsed) => flagsOf(def, 'slack').some((f) => f.modal && p.flags[f.name] === undefined);

/** `/release help [command]`, from the table. */
export function releaseHelp(words: string[], problem?: string): ReturnType<typeof helpMessage> {
  const name = words.join(' ').toLowerCase();
  if (!name) return helpMessage(helpLines('slack'), problem);
  const def = BY_ID.get(name);
  if (!def) {
    const close = suggest(name, TABLE.map((d) => d.id));
    return helpMessage(helpLines('slack'), `Unknown command "${name}"${close ? ` (did you mean ${close}?)` : ''}.`);
  }
  return textMessage(commandHelp(def, 'slack').join('\n'));
}

/**
 * Runs a command of the table for a Slack user: the role it needs (a refusal is audited), then its Slack
 * form, or its text (ephemerally; a long command in a progress message in the channel).
 */
async function runFor(deps: BotDeps, respond: RespondFn, def: CommandDef, r: Request): Promise<void> {
  const { ctx } = deps;
  const groups = await deps.groupsOf(r.user);
  await authorizeFor(ctx, def, r.parsed, { user: r.user, groups });
  const run: Runner = async (progress) => {
    const o: Outcome = { value: undefined, text: '', code: 0 };
    const io: Io = {
      actor: r.user,
      user: r.user,
      groups,
      json: false,
      out: (value, render) => {
        o.value = value;
        o.text = render();
      },
      progress: (line, info) => progress?.(line, info),
      line: (t) => {
        o.text += `${t}\n`;
      },
      exit: (c) => {
        o.code = c;
      },
      statusOf: (name) => deps.statusOf(name),
    };
    await runChecked(ctx, def, r.parsed, io);
    return o;
  };
  const special = SLACK_RUNS[def.id];
  if (special && (!special.when || special.when(r.parsed))) return special.run(deps, respond, r, run);
  if (!def.long) {
    const o = await run();
    await respond({ response_type: 'ephemeral', ...preMessage(o.text) });
    await afterRun(deps, def, r);
    return;
  }
  const title = `${esc(def.id)} ${Object.values(r.parsed.args).filter(Boolean).map((a) => esc(a!)).join(' ')} by <@${r.user}>`;
  await inProgress(deps, respond, ctx.config.slack.releaseChannel ?? r.channel, title, 'starting', async (progress) => {
    const o = await run((line) => progress.step(line));
    await (o.code === 0 ? progress.done('done', hidePaths(o.text)) : progress.fail(hidePaths(o.text), o.code === 3 ? 'refusal' : 'failure'));
  });
  await afterRun(deps, def, r);
}

/** What a command changed that cards show: they are updated in place. */
async function afterRun(deps: BotDeps, def: CommandDef, r: Request): Promise<void> {
  const release = str(r.parsed.flags.release) ?? r.parsed.args.release;
  if (def.id === 'decide' && release && !r.parsed.flags['dry-run']) await deps.cards.refresh(release, r.parsed.args.code!).catch(() => undefined);
  if ((def.id === 'deploy go' || def.id === 'deploy no-go') && r.parsed.args.id) await refreshGoCard(deps, Number(r.parsed.args.id)).catch(() => undefined);
}

/** Takes a slash command's text through the table: refused in the ack (ephemerally) when not understood. */
export async function handleSlash(deps: BotDeps, text: string, req: Omit<Request, 'parsed'>, ack: (m?: Record<string, unknown>) => Promise<void>, respond: RespondFn): Promise<void> {
  const { ctx } = deps;
  let def: CommandDef;
  let parsed: Parsed;
  try {
    const words = tokenize(text);
    if (words.length === 0 || words[0]!.toLowerCase() === 'help') {
      await ack({ response_type: 'ephemeral', ...releaseHelp(words.slice(1)) });
      return;
    }
    ({ def, parsed } = parseText(text, ctx.config));
  } catch (err) {
    // refused before anything is done: only the person who typed it sees why
    if (!(err instanceof TributaryError)) throw err;
    await ack({ response_type: 'ephemeral', ...(err.code === 'usage' ? releaseHelp([], err.message) : errorMessage(err.message)) });
    return;
  }
  await ack();
  const work = async () => {
    try {
      await runFor(deps, respond, def, { ...req, parsed });
    } catch (err) {
      if (err instanceof TributaryError && err.code === 'usage') {
        await respond({ response_type: 'ephemeral', ...releaseHelp([], err.message) });
        return;
      }
      await replyError(respond, err, `/release ${def.id}`);
    }
  };
  // long jobs get their own queue; modals must open within the trigger's 3 s
  if (def.long && !opensModal(def, parsed)) deps.longRunning(work);
  else deps.background(work, opensModal(def, parsed));
}

export function register(app: App, deps: BotDeps): void {
  app.command(COMMANDS.release, async ({ command, ack, respond }) => {
    await handleSlash(deps, (command.text ?? '').trim(), { user: command.user_id, channel: command.channel_id, triggerId: command.trigger_id }, ack, respond);
  });
  // `/rollback R2` is `/release rollback R2`
  app.command(COMMANDS.rollback, async ({ command, ack, respond }) => {
    const text = (command.text ?? '').trim();
    await handleSlash(deps, text ? `rollback ${text}` : 'help rollback', { user: command.user_id, channel: command.channel_id, triggerId: command.trigger_id }, ack, respond);
  });
}

async function runTag(deps: BotDeps, respond: RespondFn, r: Request, run: Runner): Promise<void> {
  const env = str(r.parsed.flags.env);
  await inProgress(deps, respond, r.channel, `Tag & lock ${esc(rel(r))}${env ? ` (${esc(env)})` : ''} by <@${r.user}>`, 'checking tags', async (progress) => {
    // untagged rows: the offenders, as the CLI lists them
    const o = await run();
    await (o.code === 0 ? progress.done('locked', o.text) : progress.fail(o.text, o.code === 3 ? 'refusal' : 'failure'));
  });
}

async function runConsolidate(deps: BotDeps, respond: RespondFn, r: Request, run: Runner): Promise<void> {
  const release = rel(r);
  const env = str(r.parsed.flags.env);
  let rows = 0;
  await inProgress(deps, respond, r.channel, `Consolidation of ${esc(release)}${env ? ` (re-collecting ${esc(env)})` : ''} by <@${r.user}>`, 'starting', async (progress) => {
    const o = await run((step, info) => {
      if (typeof info?.rows === 'number' && info.env) rows += info.rows;
      const detail = step === 'collect' ? `${rows} rows collected${info?.env ? `, ${String(info.env)} done` : ''}` : info ? Object.entries(info).map(([k, v]) => `${k} ${String(v)}`).join(', ') : undefined;
      progress.step(step, detail);
    });
    const v = o.value as ConsolidateResult & { counts: Parameters<typeof renderCounts>[1] };
    const carried = renderCarried(v.carried);
    await progress.done('done', `${renderCounts(release, v.counts, v.steps)}${carried ? `\n${carried}` : ''}\nReview: /release review ${release}`);
  });
}

async function runValidate(deps: BotDeps, respond: RespondFn, r: Request, run: Runner): Promise<void> {
  await inProgress(deps, respond, r.channel, `Validation of ${esc(rel(r))} by <@${r.user}>`, 'integrity checks and data tests', async (progress) => {
    const v = (await run()).value as ValidationReport;
    await progress.done(v.counts.open === 0 ? 'valid' : `${v.counts.open} open finding(s)`, undefined, v.counts.open === 0 ? 'success' : 'partial');
    await postResult(deps, respond, r.channel, validationCard(v));
  });
}

async function runLoad(deps: BotDeps, respond: RespondFn, r: Request, run: Runner): Promise<void> {
  // past tier 1 a re-load resets testing and approval: said (ephemerally) before anything is posted
  await assertReloadConfirmed(deps.ctx, rel(r), r.parsed.flags.confirm === true);
  await inProgress(deps, respond, r.channel, `Load of ${esc(rel(r))} into staging by <@${r.user}>`, 'starting', async (progress) => {
    const o = await run((step, info) => progress.step(step, info?.table ? `table ${String(info.table)}` : undefined));
    await progress.done('loaded and verified');
    await postResult(deps, respond, r.channel, loadCard(o.value as LoadResult));
  });
}

/** The audit summary with the chain head (a witness outside the database), and the full trail as a file. */
async function postAudit(deps: BotDeps, respond: RespondFn, user: string, channel: string, release: string, summary: AuditSummary): Promise<void> {
  const { ctx } = deps;
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

/** `--status auto-resolved`: the counts per rule and the first few, and the whole list as a file. */
async function postAutoResolved(deps: BotDeps, respond: RespondFn, r: Request): Promise<void> {
  const rule = str(r.parsed.flags.rule);
  const entity = str(r.parsed.flags.entity);
  const { message, file } = await autoResolvedAnswer(deps.ctx, rel(r), { ...(rule ? { rule } : {}), ...(entity ? { entity } : {}) });
  await respond({ response_type: 'ephemeral', ...message });
  try {
    await deps.client.files.uploadV2({ channel_id: r.channel, filename: file.filename, title: file.filename, content: redact(file.content), initial_comment: `Automatic resolutions of ${rel(r)}, requested by <@${r.user}>` });
  } catch (err) {
    await respond({ response_type: 'ephemeral', replace_original: false, ...textMessage(`The whole list could not be uploaded (${redact((err as Error).message)}); export it with: tributary conflicts ${rel(r)} --status auto-resolved --json`) });
  }
}

async function postResult(deps: BotDeps, respond: RespondFn, channel: string, m: Message): Promise<void> {
  try {
    await deps.client.chat.postMessage({ channel, text: m.text, blocks: m.blocks });
  } catch {
    await respond({ response_type: 'ephemeral', ...m });
  }
}
