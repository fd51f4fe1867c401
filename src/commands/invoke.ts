import type { Config } from '../config/load.js';
import type { Ctx } from '../engine/kernel/context.js';
import { authorize } from '../engine/kernel/roles.js';
import { suggest, TributaryError, unknownName } from '../errors.js';
import { parseWords, tokenize, type Grammar } from './grammar.js';
import type { Io } from './io.js';
import { BY_ID, commandsOf, flagsOf, needsOf, usageOf, type CommandDef, type Parsed, type Side } from './table.js';

/**
 * What both adapters do with a command of the table, in the same order: find it, parse its words by
 * its grammar, check its values and names (did you mean R2?), check the role it needs (audited when
 * refused), and run it. The CLI reaches the first two through commander (built from the same table).
 */

/** The command's grammar for the word parser. */
export function grammarOf(def: CommandDef, side: Side): Grammar {
  return {
    usage: usageOf(def, side),
    args: def.args.map((a) => ({ name: a.name, required: a.required })),
    flags: Object.fromEntries(flagsOf(def, side).map((f) => [f.name, { value: f.type !== 'switch', ...(f.type === 'list' ? { many: true } : {}) }])),
    elsewhere: Object.fromEntries(
      def.flags.filter((f) => f.only && f.only !== side).map((f) => [f.name, `--${f.name} is ${f.only === 'cli' ? 'CLI' : 'Slack'} only: ${f.why ?? 'a path on the machine that runs the command means nothing here'}`]),
    ),
  };
}

/** A command's words as typed in Slack (`deploy go 3 --rationale "…"`): its table entry and the words after its name. */
export function findCommand(words: string[], side: Side): { def: CommandDef; rest: string[] } {
  const lower = words.map((w) => w.toLowerCase());
  for (let n = Math.min(2, lower.length); n >= 1; n--) {
    const def = BY_ID.get(lower.slice(0, n).join(' '));
    if (!def) continue;
    if (def.only && def.only.side !== side) throw new TributaryError('usage', `${def.id} is ${def.only.side === 'cli' ? 'CLI' : 'Slack'} only: ${def.only.why}.`);
    return { def, rest: words.slice(n) };
  }
  const name = lower[0] ?? '';
  const close = suggest(name, [...new Set(commandsOf(side).map((d) => d.id.split(' ')[0]!)), 'help']);
  throw new TributaryError('usage', `Unknown command "${name}"${close ? ` (did you mean ${close}?)` : ''}.`);
}

/** A `/release` command's text: its table entry and its parsed, checked arguments and flags. */
export function parseText(text: string, config: Config, side: Side = 'slack'): { def: CommandDef; parsed: Parsed } {
  const { def, rest } = findCommand(tokenize(text), side);
  const { args, flags } = parseWords(rest, grammarOf(def, side));
  const parsed = checkParsed(config, def, { args, flags }, side);
  return { def, parsed };
}

const KNOWN: Record<string, (c: Config) => { code: 'unknown_release' | 'unknown_env' | 'usage'; names: string[] }> = {
  release: (c) => ({ code: 'unknown_release', names: [...c.releases.keys()] }),
  env: (c) => ({ code: 'unknown_env', names: [...c.envs.keys()] }),
  feature: (c) => ({ code: 'usage', names: [...new Set([...c.releases.values()].flatMap((r) => [...r.features.keys()]))] }),
};

function checkName(config: Config | undefined, kind: string, value: string): void {
  if (!config) throw new TributaryError('internal', `a ${kind} name is checked without a config`);
  const known = KNOWN[kind]!(config);
  if (!known.names.includes(value)) throw unknownName(known.code, kind, value, known.names);
}

/**
 * Checks a parsed invocation against its entry: required flags, whole numbers, choices (any case), and
 * every name of the plan (a release, env or feature that does not exist gets "did you mean …?"). Fills
 * in the defaults. Refused with the command's usage. A command that reads no config (keys generate) names
 * nothing of the plan: it is checked without one.
 */
export function checkParsed(config: Config | undefined, def: CommandDef, p: Parsed, side: Side): Parsed {
  const usage = usageOf(def, side);
  const refuse = (why: string): never => {
    throw new TributaryError('usage', `${why}. Usage: ${usage}`);
  };
  const flags = { ...p.flags };
  for (const f of flagsOf(def, side)) {
    let v = flags[f.name];
    if (v === undefined && f.default !== undefined) v = flags[f.name] = f.default;
    if (v === undefined) {
      if (f.required && !(side === 'slack' && f.modal)) refuse(`missing --${f.name}`);
      continue;
    }
    for (const one of Array.isArray(v) ? v : [v]) {
      if (one === true) continue;
      if (f.type === 'int' && !/^[1-9][0-9]*$/.test(one)) refuse(`--${f.name} takes a whole number from 1 (got "${one}")`);
      if (f.choices) {
        const hit = f.choices.find((c) => c.toLowerCase() === one.toLowerCase());
        if (!hit) refuse(`--${f.name} takes ${f.choices.join(', ')} (got "${one}")`);
        flags[f.name] = hit;
      }
      if (f.kind) checkName(config, f.kind, one);
    }
  }
  for (const a of def.args) {
    const v = p.args[a.name];
    if (v !== undefined && a.kind) checkName(config, a.kind, v);
  }
  return { args: p.args, flags };
}

/** The release an invocation concerns (recorded with a refusal). */
function releaseOf(p: Parsed): string | undefined {
  const r = p.args.release ?? p.flags.release;
  return typeof r === 'string' ? r : undefined;
}

/** Checks the role the invocation needs (a refusal is audited), then runs the command. */
export async function authorizeFor(ctx: Ctx, def: CommandDef, p: Parsed, io: Pick<Io, 'user' | 'groups'>): Promise<void> {
  const needs = needsOf(def, p);
  if (needs) await authorize(ctx, io.user, io.groups, needs, releaseOf(p));
}

/** Runs a command whose role was checked (src/commands/runs.ts, loaded with the first command that runs). */
export async function runChecked(ctx: Ctx, def: CommandDef, p: Parsed, io: Io): Promise<void> {
  const { RUNS } = await import('./runs.js');
  const run = RUNS[def.id];
  if (!run) throw new TributaryError('internal', `${def.id} has no run`);
  await run(ctx, p, io);
}

export async function execute(ctx: Ctx, def: CommandDef, p: Parsed, io: Io): Promise<void> {
  await authorizeFor(ctx, def, p, io);
  await runChecked(ctx, def, p, io);
}
