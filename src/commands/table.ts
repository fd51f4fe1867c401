import { NEEDS, type RoleAction } from '../engine/kernel/roles.js';

/**
 * The command table: every command of Tributary, defined once. Both adapters are built from it: the CLI
 * (src/cli/main.ts: commander) and Slack (`/release …`, src/slack/release.ts). An entry says what a
 * command takes (positional arguments, flags: typed, with defaults), the role it needs when it changes
 * state, whether it is one-sided (and why: shown in help), and its help text. What it does is its run
 * function (src/commands/runs.ts, the same key), an engine call whose result renders through src/views.
 *
 * This module is data only (no engine, no adapter): `tributary --help` and `/release help` read it
 * without loading the rest. Adding a command: docs/contributing.md, "Adding a command".
 */

/** `switch`: no value (`--smoke`); `value`: one word; `int`: a whole number ≥ 1; `list`: may repeat (`--merge a=1 --merge b=2`). */
export type FlagType = 'switch' | 'value' | 'int' | 'list';

/** What a name stands for: a name of the plan (did-you-mean when it does not exist), or free text. */
export type NameKind = 'release' | 'env' | 'feature';

export interface FlagDef {
  name: string;
  type: FlagType;
  help: string;
  /** The value's placeholder in usage (`--at <time>`). */
  arg?: string;
  default?: string;
  choices?: string[];
  /** Required in the CLI; in Slack, a `modal` flag left out opens the command's modal instead. */
  required?: boolean;
  modal?: boolean;
  /** A name checked against the config (did you mean …?). */
  kind?: NameKind;
  /** One adapter only (a path on the machine that runs the command means nothing in Slack). */
  only?: 'cli';
  /** Why it is one adapter's only: the other refuses the flag with it (default: a path on the machine). */
  why?: string;
}

export interface ArgDef {
  name: string;
  required: boolean;
  help?: string;
  kind?: NameKind;
}

export type Side = 'cli' | 'slack';

export interface Parsed {
  args: Record<string, string | undefined>;
  flags: Record<string, string | true | string[] | undefined>;
}

export interface CommandDef {
  /** The command's words: 'deploy go'. */
  id: string;
  /** A typical invocation's words after the name (help, docs, and the tests that walk the table). */
  example: string;
  summary: string;
  args: ArgDef[];
  flags: FlagDef[];
  /**
   * The role action (src/engine/kernel/roles.ts NEEDS) an invocation needs; undefined: it changes nothing.
   * A function where it depends on the flags (`decide --dry-run` only reads).
   */
  needs?: RoleAction | ((p: Parsed) => RoleAction | undefined);
  /** One adapter only, and why (shown in help). */
  only?: { side: Side; why: string };
  /** Runs for minutes: Slack reports it in one progress message in the channel. */
  long?: boolean;
}

const RELEASE: ArgDef = { name: 'release', required: true, kind: 'release' };
const RATIONALE: FlagDef = { name: 'rationale', type: 'value', arg: 'text', help: 'why (audited)' };

export const TABLE: CommandDef[] = [
  { id: 'status', example: 'R2', summary: 'the state of one release, or of every release in the plan', args: [{ name: 'release', required: false, kind: 'release' }], flags: [] },
  {
    id: 'tag',
    example: 'R2',
    summary: 'check every ST row of the release for its tags and lock it (counts + checksums)',
    args: [{ name: 'release', required: false, kind: 'release' }],
    flags: [
      { name: 'env', type: 'value', arg: 'env', kind: 'env', help: 're-lock one ST env only (after fixing it)' },
      { name: 'install', type: 'value', arg: 'env', kind: 'env', help: 'add tag columns and an auto-tagging trigger to an ST env' },
    ],
    needs: (p) => (p.flags.install !== undefined ? 'install' : 'tag'),
    long: true,
  },
  {
    id: 'consolidate',
    example: 'R2',
    summary: 'collect, detect, auto-resolve and queue the conflicts of a locked release (decisions whose records are unchanged are kept)',
    args: [RELEASE],
    flags: [{ name: 'env', type: 'value', arg: 'env', kind: 'env', help: "re-collect this ST env only (after tag --env), reusing the other envs' rows of the last consolidation" }],
    needs: 'consolidate',
    long: true,
  },
  {
    id: 'conflicts',
    example: 'R2 --priority P1',
    summary: 'the review queue of a release; --status auto-resolved lists what the rules decided (A-001…, streamed)',
    args: [RELEASE],
    flags: [
      { name: 'status', type: 'value', arg: 'status', choices: ['open', 'decided', 'all', 'auto-resolved'], default: 'open', help: 'open, decided or all; auto-resolved: what the rules decided (A-001…)' },
      { name: 'priority', type: 'value', arg: 'p', choices: ['P1', 'P2', 'P3'], help: 'P1, P2 or P3' },
      { name: 'rule', type: 'value', arg: 'rule', help: 'with --status auto-resolved: one rule only (newest-wins, re-key, …)' },
      { name: 'entity', type: 'value', arg: 'entity', help: 'with --status auto-resolved: one entity only' },
      { name: 'patterns', type: 'switch', help: 'the open conflicts grouped by signature (entity, kind, attributes, envs), largest first' },
    ],
  },
  { id: 'conflicts next', example: 'R2', summary: 'take the next unassigned open conflict (assigned to you) and show it', args: [RELEASE], flags: [], needs: 'next' },
  { id: 'conflicts show', example: 'R2 C-001', summary: 'one conflict (C-…: its versions, provenance and suggestion) or automatic resolution (A-…: side by side, what the rule kept)', args: [RELEASE, { name: 'code', required: true }], flags: [] },
  {
    id: 'review',
    example: 'R2',
    summary: 'post the open conflict cards of a release to the review channel, highest priority first',
    args: [RELEASE],
    flags: [],
    needs: 'review',
    only: { side: 'slack', why: 'it posts cards with buttons; in the CLI: conflicts <release>, conflicts next <release>' },
  },
  {
    id: 'decide',
    example: 'C-001 --release R2 --keep 1 --rationale "the newer email"',
    summary: 'decide a conflict or a finding, overrule an automatic resolution (A-…: re-opened and decided like a conflict), or with --pattern every open conflict of a pattern; shows the blast radius, --dry-run to see it without applying',
    args: [{ name: 'code', required: false, help: 'C-…, A-… or F-… (none with --pattern)' }],
    flags: [
      { name: 'pattern', type: 'value', arg: 'P-n', help: 'decide every open conflict of this pattern (conflicts <release> --patterns)' },
      { name: 'keep-env', type: 'value', arg: 'env', kind: 'env', help: 'with --pattern: keep the version from this env' },
      { name: 'keep-feature', type: 'value', arg: 'feature', kind: 'feature', help: "with --pattern: keep this feature's version" },
      { name: 'keep-by-rule', type: 'value', arg: 'rule', choices: ['newest-wins', 'env-precedence', 'feature-priority'], help: 'with --pattern: keep the version this rule keeps' },
      { name: 'release', type: 'value', arg: 'release', kind: 'release', help: 'the release (needed when the code exists in several)' },
      { name: 'keep', type: 'int', arg: 'version', help: 'keep one version (its number, as shown)' },
      { name: 'keep-both', type: 'switch', help: 'keep every version, renamed (new natural keys; new primary keys where they collide)' },
      { name: 'rename', type: 'list', arg: 'v.col=value', help: 'with --keep-both: give a version a natural key value yourself' },
      { name: 'merge', type: 'list', arg: 'attr=version', help: 'merge: pick the version of each differing attribute' },
      { name: 'delete', type: 'switch', help: 'delete (both versions, or the record of a reference conflict)' },
      { name: 'cascade', type: 'switch', help: 'with --delete: also delete the rows that depend on it' },
      { name: 'repoint', type: 'value', arg: 'key', help: 'reference conflict: point the record at another parent' },
      { name: 'waive', type: 'switch', help: 'reference conflict: accept it as is' },
      { ...RATIONALE, modal: true, help: 'why (required; audited); in Slack, without it the decision modal opens (a conflict, an overrule, a finding)' },
      { name: 'dry-run', type: 'switch', help: 'show the blast radius only' },
    ],
    needs: (p) => (p.flags['dry-run'] ? undefined : 'decide'),
  },
  {
    id: 'undo',
    example: 'PD-1 --rationale "wrong env kept"',
    summary: 'take back a decision (D-<n>, or a conflict code with --release) or a pattern decision (PD-<n>): the conflicts are open again and the data as before (--dry-run shows what it restores)',
    args: [{ name: 'decision', required: true }],
    flags: [
      { name: 'release', type: 'value', arg: 'release', kind: 'release', help: 'the release of a conflict code' },
      { ...RATIONALE, help: 'why (required; audited)' },
      { name: 'dry-run', type: 'switch', help: 'show what the undo restores, without applying it' },
    ],
    needs: (p) => (p.flags['dry-run'] ? undefined : 'decide'),
  },
  { id: 'policy', example: '', summary: 'rules learnt from reviewers: policy proposals | policy accept <name>', args: [], flags: [] },
  { id: 'policy proposals', example: '', summary: 'the scoped rules that agreeing decisions (three or more on one signature, none contradicting) propose', args: [], flags: [] },
  {
    id: 'policy accept',
    example: 'keep-st-1-users-role',
    summary: 'write a proposed rule into the config file (policy.scoped, with a comment naming its decisions); the next consolidation applies it',
    args: [{ name: 'name', required: true }],
    flags: [],
    needs: 'policy',
  },
  {
    id: 'result',
    example: 'R2 --entity users',
    summary: 'the consolidated dataset with provenance per record: its sources, and the version(s) and env(s) it came from (JSON lines; streamed)',
    args: [RELEASE],
    flags: [
      { name: 'entity', type: 'value', arg: 'entity', help: 'one entity only' },
      { name: 'all', type: 'switch', help: 'include records awaiting review and deleted ones' },
    ],
    only: { side: 'cli', why: 'it streams the whole dataset as JSON lines, for a pipe' },
  },
  {
    id: 'why',
    example: 'users 1 --release R2',
    summary: 'lineage of a consolidated record: source envs, features, creators, and the rules and decisions that shaped it',
    args: [{ name: 'entity', required: true }, { name: 'key', required: true }],
    flags: [{ name: 'release', type: 'value', arg: 'release', kind: 'release', required: true, help: 'the release' }],
  },
  { id: 'validate', example: 'R2', summary: 'validate the consolidated release (integrity and the data tests); lists its findings, exit 3 while any is open', args: [RELEASE], flags: [], needs: 'validate', long: true },
  {
    id: 'waive',
    example: 'F-001 --release R2 --rationale "known gap"',
    summary: 'accept a validation finding as it is (audited)',
    args: [{ name: 'finding', required: true }],
    flags: [{ name: 'release', type: 'value', arg: 'release', kind: 'release', required: true, help: 'the release' }, { ...RATIONALE, modal: true, help: 'why (required; audited); in Slack, without it the waiver modal opens' }],
    needs: 'waive',
  },
  {
    id: 'load',
    example: 'R2 --confirm',
    summary: 'load the validated release into the staging env (one transaction), verified by counts and checksums; past tier 1 it needs --confirm (says what it resets)',
    args: [RELEASE],
    flags: [
      { name: 'confirm', type: 'switch', help: 're-load a release past tier 1 or approved: its tier runs, promotion and approval no longer count' },
      {
        name: 'from',
        type: 'value',
        arg: 'dir',
        only: 'cli',
        why: "an operator's file operation on premises: the package is a folder on the machine that runs the command",
        help: 'on premises: load a signed transfer package (tributary export) instead, verified first (signature, SHA-256 of each file, release, a later run)',
      },
    ],
    needs: 'load',
    long: true,
  },
  {
    id: 'export',
    example: 'R2 --out /srv/transfer/R2',
    summary: 'cloud side: write the validated release as a signed transfer package (gzip COPY files, manifest, Ed25519 signature) into a new folder',
    args: [RELEASE],
    flags: [
      { name: 'out', type: 'value', arg: 'dir', required: true, help: 'the package folder (new or empty)' },
      { name: 'key', type: 'value', arg: 'file', help: 'the private key file (else $TRIBUTARY_SIGNING_KEY, else transfer.signingKeyFile)' },
    ],
    needs: 'export',
    only: { side: 'cli', why: "an operator's file operation on the cloud side: the package is a folder on the machine that runs it, signed with a key kept there, and moved by a file transfer you trust" },
    long: true,
  },
  {
    id: 'keys',
    example: '',
    summary: 'transfer package keys: keys generate',
    args: [],
    flags: [],
    only: { side: 'cli', why: "key files on the operator's machine: the private key never passes through Slack or a database" },
  },
  {
    id: 'keys generate',
    example: '--out ./keys',
    summary: 'write a new Ed25519 key pair: <name>.key (private, mode 0600: keep it in your secret store) and <name>.pub (for transfer.publicKeys on premises); needs no config and no database',
    args: [],
    flags: [
      { name: 'out', type: 'value', arg: 'dir', required: true, help: 'where to write the pair' },
      { name: 'name', type: 'value', arg: 'name', default: 'tributary-transfer', help: 'file name of the pair' },
    ],
    only: { side: 'cli', why: "key files on the operator's machine: the private key never passes through Slack or a database" },
  },
  {
    id: 'test',
    example: 'R2 --tier 1',
    summary: "run the team's tests: --tier 1 (the release's features + smoke on staging), --tier 2 (everything on master), --feature, --smoke",
    args: [RELEASE],
    flags: [
      { name: 'tier', type: 'value', arg: 'tier', choices: ['1', '2'], help: '1 or 2' },
      { name: 'feature', type: 'value', arg: 'feature', kind: 'feature', help: "one feature's tests" },
      { name: 'smoke', type: 'switch', help: 'the smoke tests' },
      { name: 'env', type: 'value', arg: 'env', kind: 'env', help: 'target env for --feature/--smoke (default: staging)' },
    ],
    needs: 'test',
    long: true,
  },
  {
    id: 'approve',
    example: 'R2 --rationale "tier 2 green"',
    summary: 'approve the release after tier 2: it becomes ready for production',
    args: [RELEASE],
    flags: [{ ...RATIONALE, required: true, modal: true, help: 'why (recorded in the audit trail); in Slack, without it the approval modal opens' }, { name: 'override', type: 'switch', help: 'approve past a failed tier 2 gate (the rationale says why)' }],
    needs: 'approve',
  },
  {
    id: 'promote',
    example: 'R2',
    summary: "merge the release's staging data into the cumulative master (a partition per release, verified by counts and checksums); refused while cross-release conflicts are open",
    args: [RELEASE],
    flags: [],
    needs: 'promote',
    long: true,
  },
  {
    id: 'bundle',
    example: 'R2 --code v1.2.3',
    summary: "the approved release's immutable bundle for production: --code <version> makes it (data exported from master with counts and checksums); without it shows the latest",
    args: [RELEASE],
    flags: [
      { name: 'code', type: 'value', arg: 'version', help: 'the code version the pipeline built (git tag or sha, image digest)' },
      { name: 'version', type: 'int', arg: 'n', help: 'show this bundle version' },
      { name: 'list', type: 'switch', help: 'list every bundle version of the release' },
    ],
    needs: (p) => (p.flags.code !== undefined ? 'bundle' : undefined),
  },
  {
    id: 'deploy',
    example: 'R2',
    summary: 'request a synchronized deployment of code and data of an approved release (its latest bundle); then go/no-go, run, status',
    args: [{ name: 'release', required: true, kind: 'release' }],
    flags: [
      { name: 'at', type: 'value', arg: 'time', help: 'schedule it (ISO time) inside a maintenance window' },
      { name: 'bundle', type: 'int', arg: 'version', help: 'a bundle version other than the latest' },
    ],
    needs: 'deploy',
  },
  { id: 'deploy go', example: '1 --rationale "checked"', summary: 'say Go; the Go that completes the quorum runs it now (or at its window)', args: [{ name: 'id', required: true }], flags: [{ ...RATIONALE, required: true, modal: true, help: 'why (audited); in Slack, without it the confirmation modal opens' }], needs: 'go' },
  { id: 'deploy no-go', example: '1 --rationale "not tonight"', summary: 'say No-go: the deployment is rejected', args: [{ name: 'id', required: true }], flags: [{ ...RATIONALE, required: true, modal: true, help: 'why (audited); in Slack, without it the confirmation modal opens' }], needs: 'go' },
  { id: 'deploy run', example: '1', summary: 'run an approved deployment now, or resume an interrupted one (its process died)', args: [{ name: 'id', required: true }], flags: [], needs: 'deploy', long: true },
  { id: 'deploy status', example: '', summary: 'one deployment, or the interrupted ones', args: [{ name: 'id', required: false }], flags: [] },
  {
    id: 'rollback',
    example: 'R2 --rationale "smoke failing"',
    summary: "roll back the release's last deployment: data restored from its backup and verified, schema down, code back",
    args: [RELEASE],
    flags: [{ ...RATIONALE, required: true, modal: true, help: 'why (audited); in Slack, without it the confirmation modal opens' }],
    needs: 'rollback',
    long: true,
  },
  { id: 'unlock', example: 'production', summary: 'release the env lock a deployment or a rollback left', args: [{ name: 'env', required: true }], flags: [RATIONALE], needs: 'unlock' },
  {
    id: 'nightly',
    example: '--now',
    summary: 'the nightly cumulative regression on master: --now runs one at once (the bot runs it on nightly.schedule) and prints its summary',
    args: [],
    flags: [{ name: 'now', type: 'switch', help: 'run it now' }],
    needs: 'nightly',
    long: true,
  },
  { id: 'coverage', example: '', summary: 'coverage growth per release: tests and data records, each also cumulative', args: [], flags: [{ name: 'chart', type: 'value', arg: 'file', only: 'cli', help: 'also write the chart as a PNG' }] },
  {
    id: 'archive',
    example: '--older-than 2y --yes',
    summary: "move master's release partitions promoted before the cut-off to cold storage (gzip + manifest with counts and checksums), then drop them",
    args: [],
    flags: [
      { name: 'older-than', type: 'value', arg: 'age', required: true, help: 'e.g. 2y, 18mo, 90d' },
      { name: 'dry-run', type: 'switch', help: 'list what would be archived' },
      { name: 'yes', type: 'switch', help: 'do it (without it: says which partitions and rows it would archive and drop, and does nothing)' },
    ],
    needs: (p) => (p.flags['dry-run'] ? undefined : 'archive'),
    long: true,
  },
  {
    id: 'restore',
    example: 'R2',
    summary: 'bring an archived release back into master (re-created and attached), verified against its manifest',
    args: [RELEASE],
    flags: [{ name: 'manifest', type: 'value', arg: 'file', only: 'cli', help: 'a manifest.json (default: the newest archive of the release)' }],
    needs: 'restore',
    long: true,
  },
  {
    id: 'audit',
    example: 'R2',
    summary: 'the audit summary of a release, with the chain head as a witness (audit verify: check the hash chain)',
    args: [RELEASE],
    flags: [{ name: 'format', type: 'value', arg: 'format', choices: ['text', 'markdown', 'json'], default: 'text', help: 'text, markdown (a table) or json (the summary, every event of the release and every automatic resolution)' }],
  },
  {
    id: 'audit verify',
    example: 'R2',
    summary: "walk the audit hash chain and report the first broken link (exit 3); the release's events are counted; on premises, also the chains that travelled in transfer packages",
    args: [{ name: 'release', required: false, kind: 'release' }],
    flags: [{ name: 'head', type: 'value', arg: 'hash', help: 'a chain head printed earlier (a witness kept outside the database): it must still be in the chain' }],
  },
  {
    id: 'agent',
    example: '--concurrency 2',
    summary: 'run test shards queued by `tributary test` (testing.dispatch: pgboss) until SIGTERM/SIGINT',
    args: [],
    flags: [
      { name: 'name', type: 'value', arg: 'name', help: 'name recorded on the shards it runs (default: host:pid)' },
      { name: 'concurrency', type: 'int', arg: 'n', default: '1', help: 'shards run at once' },
      { name: 'grace', type: 'int', arg: 'seconds', default: '30', help: 'on SIGTERM/SIGINT: how long running shards may finish before they go back to the queue' },
    ],
    only: { side: 'cli', why: 'a long-lived worker process on a runner machine; it runs only shards an authorized test queued' },
  },
  {
    id: 'migrate',
    example: '',
    summary: 'apply the control database migrations as the owner of its tables (--down --yes: roll the last batch back, after saying what it drops)',
    args: [],
    flags: [
      { name: 'down', type: 'switch', help: 'roll back the last batch (says what it drops; needs --yes)' },
      { name: 'yes', type: 'switch', help: 'with --down: do it' },
    ],
    only: { side: 'cli', why: "its boundary is the database owner's credentials, not a Slack role" },
  },
  {
    id: 'grants',
    example: 'tributary_app',
    summary: 'the SQL of the least-privilege set-up: <app-role> (not the owner) may read and write the control tables, only INSERT and SELECT the audit trail (--apply runs it; needs CREATEROLE)',
    args: [{ name: 'app-role', required: true }],
    flags: [{ name: 'apply', type: 'switch', help: 'run it on the control database (as a role that may create roles and grant on its tables)' }],
    only: { side: 'cli', why: 'it needs a database role that may create roles, not a Slack role' },
  },
];

export const BY_ID: ReadonlyMap<string, CommandDef> = new Map(TABLE.map((d) => [d.id, d]));

export function commandsOf(side: Side): CommandDef[] {
  return TABLE.filter((d) => !d.only || d.only.side === side);
}

/** The role action an invocation needs (undefined: it changes nothing). */
export function needsOf(def: CommandDef, p: Parsed): RoleAction | undefined {
  return typeof def.needs === 'function' ? def.needs(p) : def.needs;
}

/** The roles any invocation of the command may need, for help: `qa_lead`, `reviewer or qa_lead`. */
export function rolesOf(def: CommandDef): string | undefined {
  if (!def.needs) return undefined;
  const actions = typeof def.needs === 'function' ? [...new Set([def.needs({ args: {}, flags: {} }), def.needs({ args: {}, flags: { install: 'x', code: 'x' } })].filter((a): a is RoleAction => !!a))] : [def.needs];
  return [...new Set(actions.flatMap((a) => NEEDS[a]!))].join(' or ');
}

/** The flags the side accepts. */
export function flagsOf(def: CommandDef, side: Side): FlagDef[] {
  return def.flags.filter((f) => !f.only || f.only === side);
}

/** `deploy <release> [--at <time>] [--bundle <version>]`: the command's grammar, for usage lines and help. */
export function usageOf(def: CommandDef, side: Side): string {
  const args = def.args.map((a) => (a.required ? `<${a.name}>` : `[${a.name}]`));
  const flags = flagsOf(def, side).map((f) => {
    const v = f.type === 'switch' ? `--${f.name}` : `--${f.name} <${f.arg ?? 'value'}>`;
    return f.required && !(side === 'slack' && f.modal) ? v : `[${v}]`;
  });
  return [side === 'cli' ? 'tributary' : '/release', def.id, ...args, ...flags].join(' ');
}

/** The sub-commands of a command (`deploy` → go, no-go, run, status). */
export function childrenOf(id: string, side?: Side): CommandDef[] {
  return (side ? commandsOf(side) : TABLE).filter((d) => d.id.startsWith(`${id} `) && !d.id.slice(id.length + 1).includes(' '));
}
