import fs from 'node:fs';
import path from 'node:path';
import type { z } from 'zod';
import { TributaryError, unknownName } from '../errors.js';
import { registerSecret } from '../log.js';
import { yamlLib } from '../lazy.js';
import { scheduleProblem } from './cron.js';
import { configSchema, RULE_NAMES, type FeaturePriority, type KeepByRule, type RawConfig, type RawDataTest, type VersionRuleName } from './schema.js';

export interface FeatureSpec {
  id: string;
  priority: FeaturePriority;
  owner: string;
  deprecated: boolean;
}

export interface ReleaseSpec {
  name: string;
  features: Map<string, FeatureSpec>;
}

export interface TlsSpec {
  rejectUnauthorized: boolean;
  ca?: string;
}

export interface EnvSpec {
  name: string;
  role: 'source' | 'staging' | 'master' | 'production';
  /** 1 = highest precedence; sources only (others get 0). */
  precedence: number;
  url?: string;
  database?: string;
  schema?: string;
  tls?: TlsSpec;
}

export interface ReferenceSpec {
  column: string;
  entity: string;
  columns: string[];
}

/** One data test of an entity, as `tributary validate` runs it; `path` is where the config declares it. */
export type DataTest = { entity: string; name?: string; path: string } & (
  | { kind: 'not_null'; columns: string[] }
  | { kind: 'unique'; columns: string[] }
  | { kind: 'accepted_values'; column: string; values: (string | number | boolean)[] }
  | { kind: 'relationships'; column: string; to: string }
  | { kind: 'expression'; expression: string }
  | { kind: 'sql'; sql: string }
);

/** `{{ users }}`, `{{ this }}`: the consolidated tables a data test's SQL may read. */
export const TABLE_PLACEHOLDER = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

export interface EntitySpec {
  name: string;
  table: string;
  primaryKey: string;
  /** Each natural key is one or more columns; the first identifies, the others are checked for consistency. */
  naturalKeys: string[][];
  references: ReferenceSpec[];
  core: string[];
  ignore: string[];
  /** Column compared by newest-wins (the created_at tag unless configured). */
  timestamp: string;
  tests: DataTest[];
}

/** How a scoped rule (or a pattern decision) keeps one version of every conflict it decides. */
export type KeepChoice = { keepEnv: string } | { keepFeature: string } | { keepByRule: KeepByRule };

/** A scoped rule of the policy (policy.scoped): decides every conflict of one signature. */
export interface ScopedRule {
  name: string;
  entity: string;
  kind: string;
  /** Sorted. */
  attributes: string[];
  /** Sorted. */
  envs: string[];
  choice: KeepChoice;
}

export interface TagColumns {
  release: string;
  feature: string;
  createdBy: string;
  createdAt: string;
}

export interface Config {
  file: string;
  database: { url?: string; dataDir: string; name: string; port?: number };
  releases: Map<string, ReleaseSpec>;
  envs: Map<string, EnvSpec>;
  /** Source envs, highest precedence first: none on an on-premises side, which imports transfer packages. */
  sources: EnvSpec[];
  tags: TagColumns;
  /** Entities, parents before children. */
  entities: EntitySpec[];
  policy: { rules: VersionRuleName[]; renameTemplate: string; scoped: ScopedRule[] };
  collect: { concurrency: number };
  roles: { reviewer: string[]; qa_lead: string[]; release_manager: string[] };
  slack: { reviewChannel?: string; releaseChannel?: string };
  /** The command runner of two-tier testing; absent when the team has not configured a test suite. */
  testing?: TestingSpec;
  /** Synchronized deployment; absent when not configured. */
  deploy?: DeploySpec;
  /** The nightly cumulative regression; absent when not configured. */
  nightly?: NightlySpec;
  /** Cold storage of archived release partitions (absolute). */
  archive: { dir: string };
  logLevel: string;
  /** TRIBUTARY_AUDIT_KEY: the audit chain's HMAC key (a secret; see resolveAuditKey in ./auditKey.ts). */
  auditKey?: string;
  /**
   * Transfer packages: trusted public keys (PEM texts, or absolute files), the signing key file (absolute),
   * and TRIBUTARY_SIGNING_KEY (a secret: the Ed25519 private key's PEM) when set.
   */
  transfer: { publicKeys: string[]; signingKeyFile?: string; signingKey?: string };
}

export interface TestingSpec {
  command: string;
  /** Absolute working directory (the config file's directory by default). */
  cwd: string;
  agents: number;
  shards: number;
  timeoutMs: number;
  /** Absolute path of the feature mapping file, when one is configured. */
  mapping?: string;
  passRate: number;
  retries: number;
  dispatch: 'local' | 'pgboss';
  /** pgboss: how long shards may wait for an agent while no agent works on the run. */
  agentWaitMs: number;
  /** Absolute path. */
  reportDir: string;
}

export interface DeployCommand {
  run: string;
  timeoutMs: number;
}

export const DEPLOY_COMMANDS = ['current', 'deploy', 'rollback', 'restart', 'health', 'migrateUp', 'migrateDown', 'maintenanceOn', 'maintenanceOff'] as const;
export type DeployCommandName = (typeof DEPLOY_COMMANDS)[number];

export interface DeployWindow {
  days: string[];
  start: string;
  end: string;
  timezone: string;
}

export interface DeploySpec {
  /** The env deployed to (role production by default). */
  env: string;
  /** Absolute path. */
  bundleDir: string;
  migration?: string;
  /** Absolute working directory of the commands. */
  cwd: string;
  timeoutMs: number;
  commands?: Partial<Record<DeployCommandName, DeployCommand>> & { deploy: DeployCommand; rollback: DeployCommand };
  webhook?: { url: string; statusUrl?: string; token?: string; pollMs: number; timeoutMs: number };
  quorum: number;
  promptMs: number;
  windows: DeployWindow[];
  smoke: boolean;
}

export interface NightlySpec {
  schedule: string;
  timezone: string;
  channel: string;
  /** HH:MM in the time zone: a run done earlier is posted then. */
  postAt?: string;
  nights: number;
  pruneDigest: string;
}

export interface LoadOptions {
  file?: string;
  env?: NodeJS.ProcessEnv;
}

const SECRET_NAME = /(URL|PASSWORD|TOKEN|SECRET|KEY)/i;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** LOG_LEVEL from the environment: one of pino's levels, else a config error naming the variable. */
function logLevelOf(env: NodeJS.ProcessEnv): string {
  const level = env.LOG_LEVEL ?? 'info';
  if (!LOG_LEVELS.includes(level)) {
    throw new TributaryError('config_invalid', `environment variable LOG_LEVEL: ${JSON.stringify(level)} is not a log level; use one of ${LOG_LEVELS.join(', ')}`, { variable: 'LOG_LEVEL' });
  }
  return level;
}

function configError(file: string, at: string, reason: string): TributaryError {
  const where = at ? `${at}: ` : '';
  return new TributaryError('config_invalid', `${file}: ${where}${reason}`, { file, path: at });
}

function pathText(parts: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of parts) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
}

/**
 * The environment variables the config substitutes (env URLs, passwords, tokens): Tributary's, not the
 * team's. Team commands never inherit them (src/engine/kernel/shell.ts, commandEnv).
 */
const substituted = new Set<string>();

export function configVariables(): ReadonlySet<string> {
  return substituted;
}

/** Replaces ${VAR} and ${VAR:-default} in every string, naming the path of a missing variable. */
function substitute(value: unknown, env: NodeJS.ProcessEnv, file: string, at: (string | number)[]): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_m, name: string, fallback?: string) => {
      substituted.add(name);
      const v = env[name];
      if (v === undefined || v === '') {
        if (fallback !== undefined) return fallback;
        throw configError(file, pathText(at), `environment variable ${name} is not set`);
      }
      if (SECRET_NAME.test(name)) registerSecret(v);
      return v;
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => substitute(v, env, file, [...at, i]));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = substitute(v, env, file, [...at, k]);
    return out;
  }
  return value;
}

export function resolveConfigPath(opts: LoadOptions = {}): string {
  const env = opts.env ?? process.env;
  return path.resolve(opts.file ?? env.TRIBUTARY_CONFIG ?? 'tributary.yml');
}

export function loadConfig(opts: LoadOptions = {}): Config {
  const env = opts.env ?? process.env;
  const file = resolveConfigPath(opts);
  if (!fs.existsSync(file)) {
    throw new TributaryError(
      'config_missing',
      `${file}: config file not found (pass --config, set TRIBUTARY_CONFIG, or run from a folder with tributary.yml; see docs/configuration.md)`,
      { file },
    );
  }
  const doc = yamlLib().parseDocument(fs.readFileSync(file, 'utf8'));
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const line = e.linePos?.[0];
    throw configError(file, line ? `line ${line.line}, column ${line.col}` : '', `not valid YAML: ${e.message.split('\n')[0]}`);
  }
  const raw = substitute(doc.toJS() ?? {}, env, file, []);
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) throw zodError(file, parsed.error);
  return normalise(file, parsed.data, env);
}

function zodError(file: string, error: z.ZodError): TributaryError {
  const issue = error.issues[0]!;
  const more = error.issues.length > 1 ? ` (and ${error.issues.length - 1} more problem(s))` : '';
  return configError(file, pathText(issue.path), `${issue.message}${more}`);
}

function normalise(file: string, c: z.infer<typeof configSchema>, env: NodeJS.ProcessEnv): Config {
  const releases = new Map<string, ReleaseSpec>();
  for (const [name, r] of Object.entries(c.releases)) {
    const features = new Map<string, FeatureSpec>();
    for (const [id, f] of Object.entries(r.features)) features.set(id, { id, priority: f.priority, owner: f.owner, deprecated: f.deprecated });
    releases.set(name, { name, features });
  }

  const envs = new Map<string, EnvSpec>();
  const seenPrecedence = new Map<number, string>();
  const singletons = new Map<string, string>();
  for (const [name, e] of Object.entries(c.environments)) {
    if (e.role === 'source') {
      if (e.precedence === undefined) throw configError(file, `environments.${name}.precedence`, 'a source env needs a precedence (1 = highest)');
      const other = seenPrecedence.get(e.precedence);
      if (other) throw configError(file, `environments.${name}.precedence`, `precedence ${e.precedence} is already used by ${other}`);
      seenPrecedence.set(e.precedence, name);
    } else {
      const other = singletons.get(e.role);
      if (other) throw configError(file, `environments.${name}.role`, `only one ${e.role} env is allowed (${other} is already ${e.role})`);
      singletons.set(e.role, name);
    }
    if (e.url) registerUrlSecret(e.url);
    envs.set(name, {
      name,
      role: e.role,
      precedence: e.precedence ?? 0,
      ...(e.url ? { url: e.url } : {}),
      ...(e.database ? { database: e.database } : {}),
      ...(e.schema ? { schema: e.schema } : {}),
      ...(e.tls ? { tls: e.tls } : {}),
    });
  }
  const sources = [...envs.values()].filter((e) => e.role === 'source').sort((a, b) => a.precedence - b.precedence);
  // none: an on-premises side, which imports the release from a transfer package (tributary load --from)
  if (sources.length === 0 && !envs.size) throw configError(file, 'environments', 'declare at least one env');

  const tags: TagColumns = c.dataset.tags;
  const declared = c.dataset.entities;
  const entities: EntitySpec[] = [];
  for (const [name, e] of Object.entries(declared)) {
    e.references.forEach((ref, i) => {
      if (!declared[ref.entity]) {
        throw configError(file, `dataset.entities.${name}.references[${i}].entity`, `unknown entity "${ref.entity}" (declared: ${Object.keys(declared).join(', ')})`);
      }
    });
    const tagCols = Object.values(tags);
    for (const [field, cols] of [['core', e.core], ['ignore', e.ignore]] as const) {
      cols.forEach((col, i) => {
        if (col === e.primaryKey || tagCols.includes(col)) throw configError(file, `dataset.entities.${name}.${field}[${i}]`, `"${col}" is a key or tag column, not an attribute`);
      });
    }
    entities.push({
      name,
      table: e.table ?? name,
      primaryKey: e.primaryKey,
      naturalKeys: e.naturalKeys.map((k) => (Array.isArray(k) ? k : [k])),
      references: e.references,
      core: e.core,
      ignore: e.ignore,
      timestamp: e.timestamp ?? tags.createdAt,
      tests: dataTests(file, name, e.tests, declared),
    });
  }

  const databaseUrl = env.DATABASE_URL || c.database.url;
  if (databaseUrl) registerUrlSecret(databaseUrl);
  const dataDir = path.resolve(path.dirname(file), c.database.dataDir);
  const auditKey = env.TRIBUTARY_AUDIT_KEY?.trim();
  if (auditKey) registerSecret(auditKey);
  const signingKey = env.TRIBUTARY_SIGNING_KEY?.trim().replaceAll('\\n', '\n');
  if (signingKey) registerSecret(signingKey);
  const besideConfig = (p: string) => path.resolve(path.dirname(path.resolve(file)), p);

  return {
    file,
    database: { ...(databaseUrl ? { url: databaseUrl } : {}), dataDir, name: c.database.name, ...(c.database.port ? { port: c.database.port } : {}) },
    releases,
    envs,
    sources,
    tags,
    entities: topoSort(file, entities),
    policy: {
      rules: c.policy.rules.flatMap((r) => (typeof r === 'string' ? [r] : r.enabled ? [r.rule] : [])),
      renameTemplate: c.policy.renameTemplate,
      scoped: scopedRules(file, c.policy.scoped, envs, entities),
    },
    collect: c.collect,
    roles: c.roles,
    slack: c.slack,
    ...(c.testing ? { testing: testingSpec(file, c.testing) } : {}),
    ...(c.deploy ? { deploy: deploySpec(file, c.deploy, envs) } : {}),
    ...(c.nightly ? { nightly: nightlySpec(file, c.nightly) } : {}),
    archive: { dir: path.resolve(path.dirname(path.resolve(file)), c.archive.dir) },
    logLevel: logLevelOf(env),
    ...(auditKey ? { auditKey } : {}),
    transfer: {
      publicKeys: c.transfer.publicKeys.map((k) => (k.startsWith('-----BEGIN') ? k : besideConfig(k))),
      ...(c.transfer.signingKeyFile ? { signingKeyFile: besideConfig(c.transfer.signingKeyFile) } : {}),
      ...(signingKey ? { signingKey } : {}),
    },
  };
}

function scopedRules(file: string, raw: RawConfig['policy']['scoped'], envs: Map<string, EnvSpec>, entities: EntitySpec[]): ScopedRule[] {
  const names = new Set<string>();
  return raw.map((r, i) => {
    const at = `policy.scoped[${i}]`;
    if (names.has(r.name)) throw configError(file, `${at}.name`, `a second scoped rule named "${r.name}": rule names are unique`);
    if ((RULE_NAMES as readonly string[]).includes(r.name) || ['re-key', 'decision', 'inconsistent-identity', 'unmatched', 'dangling-reference', 'mismatched-parent'].includes(r.name)) {
      throw configError(file, `${at}.name`, `"${r.name}" is a policy rule's name: give the scoped rule a name of its own`);
    }
    names.add(r.name);
    if (!entities.some((e) => e.name === r.entity)) throw configError(file, `${at}.entity`, `unknown entity "${r.entity}" (declared: ${entities.map((e) => e.name).join(', ')})`);
    r.envs.forEach((env, j) => {
      if (envs.get(env)?.role !== 'source') throw configError(file, `${at}.envs[${j}]`, `"${env}" is not a source (ST) env (sources: ${[...envs.values()].filter((e) => e.role === 'source').map((e) => e.name).join(', ')})`);
    });
    const choice: KeepChoice = r.keepEnv !== undefined ? { keepEnv: r.keepEnv } : r.keepFeature !== undefined ? { keepFeature: r.keepFeature } : { keepByRule: r.keepByRule! };
    return { name: r.name, entity: r.entity, kind: r.kind, attributes: [...r.attributes].sort(), envs: [...r.envs].sort(), choice };
  });
}

function dataTests(file: string, entity: string, raw: RawDataTest[], declared: Record<string, unknown>): DataTest[] {
  const out: DataTest[] = [];
  raw.forEach((t, i) => {
    const path = `dataset.entities.${entity}.tests[${i}]`;
    const base = { entity, path, ...(t.name ? { name: t.name } : {}) };
    const list = (v: string | string[]) => (Array.isArray(v) ? v : [v]);
    if (t.not_null !== undefined) out.push({ ...base, kind: 'not_null', columns: list(t.not_null) });
    else if (t.unique !== undefined) {
      const keys = typeof t.unique === 'string' ? [t.unique] : t.unique;
      keys.forEach((key, j) => out.push({ ...base, path: `${path}.unique[${j}]`, kind: 'unique', columns: list(key) }));
    } else if (t.accepted_values) out.push({ ...base, kind: 'accepted_values', column: t.accepted_values.column, values: t.accepted_values.values });
    else if (t.relationships) {
      if (!declared[t.relationships.to]) {
        throw configError(file, `${path}.relationships.to`, `unknown entity "${t.relationships.to}" (declared: ${Object.keys(declared).join(', ')})`);
      }
      out.push({ ...base, kind: 'relationships', column: t.relationships.column, to: t.relationships.to });
    } else {
      const kind = t.expression !== undefined ? 'expression' : 'sql';
      const text = (t.expression ?? t.sql)!;
      for (const m of text.matchAll(TABLE_PLACEHOLDER)) {
        if (m[1] !== 'this' && !declared[m[1]!]) {
          throw configError(file, `${path}.${kind}`, `{{ ${m[1]} }} names no entity (use {{ this }} or one of: ${Object.keys(declared).join(', ')})`);
        }
      }
      out.push(kind === 'expression' ? { ...base, kind, expression: text } : { ...base, kind, sql: text });
    }
  });
  return out;
}

function testingSpec(file: string, t: NonNullable<z.infer<typeof configSchema>['testing']>): TestingSpec {
  const base = path.dirname(path.resolve(file));
  const cwd = path.resolve(base, t.cwd ?? '.');
  if (!fs.existsSync(cwd)) throw configError(file, 'testing.cwd', `directory ${cwd} does not exist`);
  const mapping = t.mapping ? path.resolve(base, t.mapping) : undefined;
  if (mapping && !fs.existsSync(mapping)) throw configError(file, 'testing.mapping', `file ${mapping} does not exist`);
  for (const m of t.command.matchAll(/\{([A-Za-z]+)\}/g)) {
    if (!TEST_PLACEHOLDERS.includes(m[1]!)) throw configError(file, 'testing.command', `unknown placeholder {${m[1]}} (known: ${TEST_PLACEHOLDERS.map((p) => `{${p}}`).join(' ')})`);
  }
  if (!t.command.includes('{junit}')) throw configError(file, 'testing.command', 'the command must write JUnit XML to {junit}');
  return {
    command: t.command,
    cwd,
    agents: t.agents,
    shards: t.shards ?? t.agents,
    timeoutMs: t.timeoutSeconds * 1000,
    ...(mapping ? { mapping } : {}),
    passRate: t.passRate,
    retries: t.retries,
    dispatch: t.dispatch,
    agentWaitMs: t.agentWaitSeconds * 1000,
    reportDir: path.resolve(base, t.reportDir),
  };
}

function deploySpec(file: string, d: NonNullable<z.infer<typeof configSchema>['deploy']>, envs: Map<string, EnvSpec>): DeploySpec {
  const base = path.dirname(path.resolve(file));
  let env = d.env;
  if (env === undefined) {
    env = [...envs.values()].find((e) => e.role === 'production')?.name;
    if (!env) throw configError(file, 'deploy.env', 'no env has role: production; add one under environments, or name the env to deploy to');
  } else if (!envs.has(env)) {
    throw configError(file, 'deploy.env', `unknown env "${env}" (declared: ${[...envs.keys()].join(', ')})`);
  }
  const cwd = path.resolve(base, d.cwd ?? '.');
  if (!fs.existsSync(cwd)) throw configError(file, 'deploy.cwd', `directory ${cwd} does not exist`);
  const timeoutMs = d.timeoutSeconds * 1000;
  let commands: DeploySpec['commands'];
  if (d.commands) {
    const out: Partial<Record<DeployCommandName, DeployCommand>> = {};
    for (const name of DEPLOY_COMMANDS) {
      const c = d.commands[name];
      if (c === undefined) continue;
      const run = typeof c === 'string' ? c : c.run;
      for (const m of run.matchAll(/\{([A-Za-z]+)\}/g)) {
        if (!['version', 'release', 'migration', 'env'].includes(m[1]!)) throw configError(file, `deploy.commands.${name}`, `unknown placeholder {${m[1]}} (known: {version} {release} {migration} {env})`);
      }
      out[name] = { run, timeoutMs: typeof c === 'string' || c.timeoutSeconds === undefined ? timeoutMs : c.timeoutSeconds * 1000 };
    }
    commands = out as DeploySpec['commands'];
  }
  d.windows.forEach((w, i) => {
    try {
      new Intl.DateTimeFormat('en-US', { timeZone: w.timezone });
    } catch {
      throw configError(file, `deploy.windows[${i}].timezone`, `unknown time zone "${w.timezone}" (an IANA name such as Europe/Lisbon)`);
    }
  });
  if (d.webhook?.token) registerSecret(d.webhook.token);
  return {
    env,
    bundleDir: path.resolve(base, d.bundleDir),
    ...(d.migration ? { migration: d.migration } : {}),
    cwd,
    timeoutMs,
    ...(commands ? { commands } : {}),
    ...(d.webhook
      ? { webhook: { url: d.webhook.url, ...(d.webhook.statusUrl ? { statusUrl: d.webhook.statusUrl } : {}), ...(d.webhook.token ? { token: d.webhook.token } : {}), pollMs: d.webhook.pollSeconds * 1000, timeoutMs: d.webhook.timeoutSeconds * 1000 } }
      : {}),
    quorum: d.quorum,
    promptMs: d.promptMinutes * 60_000,
    windows: d.windows,
    smoke: d.smoke,
  };
}

function nightlySpec(file: string, n: NonNullable<z.infer<typeof configSchema>['nightly']>): NightlySpec {
  const zone = scheduleProblem('* * * * *', n.timezone);
  if (zone) throw configError(file, 'nightly.timezone', zone);
  for (const key of ['schedule', 'pruneDigest'] as const) {
    const problem = scheduleProblem(n[key], n.timezone);
    if (problem) throw configError(file, `nightly.${key}`, problem);
  }
  return { schedule: n.schedule, timezone: n.timezone, channel: n.channel, ...(n.postAt ? { postAt: n.postAt } : {}), nights: n.nights, pruneDigest: n.pruneDigest };
}

export const TEST_PLACEHOLDERS = ['databaseUrl', 'env', 'tests', 'pattern', 'shard', 'shards', 'junit'];

function registerUrlSecret(url: string): void {
  try {
    const u = new URL(url);
    if (u.password) registerSecret(decodeURIComponent(u.password));
  } catch {
    // not a URL: nothing to register
  }
}

/** Parents before children; a reference cycle is a config error. */
function topoSort(file: string, entities: EntitySpec[]): EntitySpec[] {
  const byName = new Map(entities.map((e) => [e.name, e]));
  const out: EntitySpec[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (e: EntitySpec, chain: string[]) => {
    if (state.get(e.name) === 'done') return;
    if (state.get(e.name) === 'visiting') {
      throw configError(file, `dataset.entities.${e.name}.references`, `reference cycle: ${[...chain, e.name].join(' -> ')}`);
    }
    state.set(e.name, 'visiting');
    for (const r of e.references) if (r.entity !== e.name) visit(byName.get(r.entity)!, [...chain, e.name]);
    state.set(e.name, 'done');
    out.push(e);
  };
  for (const e of entities) visit(e, []);
  return out;
}

export function releaseOrThrow(config: Config, name: string): ReleaseSpec {
  const r = config.releases.get(name);
  if (!r) throw unknownName('unknown_release', 'release', name, config.releases.keys());
  return r;
}

export function envOrThrow(config: Config, name: string): EnvSpec {
  const e = config.envs.get(name);
  if (!e) throw unknownName('unknown_env', 'env', name, config.envs.keys());
  return e;
}

export function envByRole(config: Config, role: EnvSpec['role']): EnvSpec | undefined {
  return [...config.envs.values()].find((e) => e.role === role);
}
