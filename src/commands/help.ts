import { childrenOf, commandsOf, flagsOf, rolesOf, usageOf, type CommandDef, type Side } from './table.js';

/** Help from the command table, as lines of text: `/release help`, `/release help <command>` (the CLI's is commander's, built from the same table). */

/** One line per command of the side: its usage, what it does, the role it needs. */
export function helpLines(side: Side): string[] {
  return commandsOf(side).map((d) => `\`${usageOf(d, side)}\`: ${d.summary}${rolesOf(d) ? ` (${rolesOf(d)})` : ''}`);
}

/** A command's help: usage, what it does, each flag, the role it needs, its sub-commands, where else it runs. */
export function commandHelp(def: CommandDef, side: Side): string[] {
  const other: Side = side === 'cli' ? 'slack' : 'cli';
  const lines = [`\`${usageOf(def, side)}\``, def.summary];
  for (const f of flagsOf(def, side)) lines.push(`  --${f.name}${f.type === 'switch' ? '' : ` <${f.arg ?? 'value'}>`}: ${f.help}${f.choices ? ` (${f.choices.join(', ')})` : ''}${f.default !== undefined ? ` (default: ${f.default})` : ''}`);
  const roles = rolesOf(def);
  lines.push(roles ? `Role: ${roles} (a refusal is audited)` : 'Role: none (it changes nothing)');
  const subs = childrenOf(def.id, side);
  if (subs.length) lines.push(`Sub-commands: ${subs.map((s) => `\`${usageOf(s, side)}\``).join(', ')}`);
  lines.push(def.only ? `Only in ${def.only.side === 'cli' ? 'the CLI' : 'Slack'}: ${def.only.why}.` : `${other === 'cli' ? 'CLI' : 'Slack'}: \`${usageOf(def, other)}\``);
  return lines;
}
