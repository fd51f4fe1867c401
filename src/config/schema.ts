import { z } from 'zod';

/** SQL identifiers taken from the config are quoted, and also restricted to a safe shape. */
const identifier = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a plain SQL identifier (letters, digits, underscore)');

export const PRIORITIES = ['critical', 'high', 'medium', 'low'] as const;
export type FeaturePriority = (typeof PRIORITIES)[number];

export const RULE_NAMES = [
  'exact-duplicate',
  'newest-wins',
  'complementary-merge',
  'core-conflict',
  'feature-priority',
  'env-precedence',
  'equal-priority',
] as const;
export type VersionRuleName = (typeof RULE_NAMES)[number];

export const DEFAULT_RULES: VersionRuleName[] = [...RULE_NAMES];

const featureSchema = z.strictObject({
  priority: z.enum(PRIORITIES),
  owner: z.string().min(1),
  description: z.string().optional(),
  deprecated: z.boolean().default(false),
});

const releaseSchema = z.strictObject({
  features: z.record(z.string().min(1), featureSchema).refine((f) => Object.keys(f).length > 0, 'a release needs at least one feature'),
  description: z.string().optional(),
});

const tlsSchema = z
  .strictObject({
    rejectUnauthorized: z.boolean().default(true),
    ca: z.string().optional(),
  })
  .optional();

const envSchema = z.strictObject({
  role: z.enum(['source', 'staging', 'master', 'production']),
  /** Lower number = higher precedence. Required for sources. */
  precedence: z.number().int().positive().optional(),
  /** A PostgreSQL URL. Without it the env lives on the control server (embedded or DATABASE_URL). */
  url: z.string().min(1).optional(),
  /** Database name on the control server, when no url is given. */
  database: identifier.optional(),
  schema: identifier.optional(),
  tls: tlsSchema,
});

const referenceSchema = z.strictObject({
  column: identifier,
  entity: identifier,
  /** Parent columns the child relies on (mismatched-parent). */
  columns: z.array(identifier).default([]),
});

/**
 * Data tests, dbt style: each entry of an entity's `tests` names one kind (and optionally a `name` for its
 * findings). Columns are the ST table's columns; `expression` and `sql` are PostgreSQL over typed rows.
 */
export const DATA_TEST_KINDS = ['not_null', 'unique', 'accepted_values', 'relationships', 'expression', 'sql'] as const;
export type DataTestKind = (typeof DATA_TEST_KINDS)[number];

const columnsOrOne = z.union([identifier, z.array(identifier).min(1)]);

const dataTestSchema = z
  .strictObject({
    name: z.string().regex(/^[A-Za-z0-9_.:-]+$/, 'a test name uses letters, digits, _ . : -').max(80).optional(),
    /** Each column must be populated. */
    not_null: columnsOrOne.optional(),
    /** Each entry is unique among the final rows; an entry that is a list is a combination of columns. */
    unique: z.union([identifier, z.array(z.union([identifier, z.array(identifier).min(1)])).min(1)]).optional(),
    accepted_values: z
      .strictObject({ column: identifier, values: z.array(z.union([z.string(), z.number(), z.boolean()])).min(1) })
      .optional(),
    /** The column holds a key of the `to` entity (a final row, or master); usually implied by `references`. */
    relationships: z.strictObject({ column: identifier, to: identifier }).optional(),
    /** A per-row SQL boolean over the row's columns; rows for which it is false are findings. */
    expression: z.string().trim().min(1).optional(),
    /** A query returning the violating rows (with the entity's primary key column); `{{ entity }}` / `{{ this }}` are the consolidated tables. */
    sql: z.string().trim().min(1).optional(),
  })
  .superRefine((t, issue) => {
    const kinds = DATA_TEST_KINDS.filter((k) => t[k] !== undefined);
    if (kinds.length !== 1) {
      issue.addIssue({
        code: 'custom',
        message: kinds.length === 0 ? `a test needs one of ${DATA_TEST_KINDS.join(', ')}` : `one kind per test entry (found ${kinds.join(' and ')}): split them into two entries`,
      });
    }
    if (t.sql !== undefined && !t.name) issue.addIssue({ code: 'custom', path: ['name'], message: 'a sql test needs a name (it names its findings)' });
    for (const k of ['expression', 'sql'] as const) {
      if (t[k]?.replace(/;\s*$/, '').includes(';')) issue.addIssue({ code: 'custom', path: [k], message: 'one statement only (no ";")' });
    }
  });

export type RawDataTest = z.infer<typeof dataTestSchema>;

const entitySchema = z.strictObject({
  table: identifier.optional(),
  primaryKey: identifier,
  naturalKeys: z.array(z.union([identifier, z.array(identifier).min(1)])).default([]),
  references: z.array(referenceSchema).default([]),
  core: z.array(identifier).default([]),
  ignore: z.array(identifier).default([]),
  /** Column compared by newest-wins; defaults to the created_at tag. */
  timestamp: identifier.optional(),
  /** Data tests run by `tributary validate` (see DATA_TEST_KINDS). */
  tests: z.array(dataTestSchema).default([]),
});

const tagsSchema = z
  .strictObject({
    release: identifier.default('release'),
    feature: identifier.default('feature'),
    createdBy: identifier.default('created_by'),
    createdAt: identifier.default('created_at'),
  })
  .default({ release: 'release', feature: 'feature', createdBy: 'created_by', createdAt: 'created_at' });

const unknownRule = (input: unknown) => `unknown rule ${JSON.stringify(input)}; the rules are ${RULE_NAMES.join(', ')}`;
const ruleEntry = z.union(
  [
    z.enum(RULE_NAMES),
    z.strictObject({ rule: z.enum(RULE_NAMES, { error: (iss) => unknownRule(iss.input) }), enabled: z.boolean().default(true) }),
  ],
  {
    error: (iss) => {
      const name = typeof iss.input === 'object' && iss.input !== null ? (iss.input as { rule?: unknown }).rule : iss.input;
      return typeof name === 'string' && !(RULE_NAMES as readonly string[]).includes(name) ? unknownRule(name) : `a rule is one of ${RULE_NAMES.join(', ')}, or { rule, enabled }`;
    },
  },
);

/** The policy rules a scoped rule or a pattern decision may keep a version by (their survivor order). */
export const KEEP_BY_RULES = ['newest-wins', 'env-precedence', 'feature-priority'] as const;
export type KeepByRule = (typeof KEEP_BY_RULES)[number];

/**
 * A scoped rule: decides the conflicts of one signature (entity, kind, the attributes that differ, the
 * envs involved) by keeping one version, chosen by env, by feature or by a policy rule's order. Learnt
 * from reviewers' decisions (tributary policy accept), or written by hand.
 */
const scopedRuleSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'a rule name uses lower-case letters, digits and -').max(80),
    entity: identifier,
    kind: z.enum(['core-conflict', 'equal-priority', 'inconsistent-identity', 'unmatched']),
    attributes: z.array(identifier).min(1),
    envs: z.array(z.string().min(1)).min(2),
    keepEnv: z.string().min(1).optional(),
    keepFeature: z.string().min(1).optional(),
    keepByRule: z.enum(KEEP_BY_RULES).optional(),
  })
  .superRefine((r, issue) => {
    const given = (['keepEnv', 'keepFeature', 'keepByRule'] as const).filter((k) => r[k] !== undefined);
    if (given.length !== 1) issue.addIssue({ code: 'custom', message: `a scoped rule keeps one version: give exactly one of keepEnv, keepFeature, keepByRule${given.length ? ` (found ${given.join(' and ')})` : ''}` });
    if (r.keepEnv !== undefined && !r.envs.includes(r.keepEnv)) issue.addIssue({ code: 'custom', path: ['keepEnv'], message: `${r.keepEnv} is not one of the rule's envs (${[...r.envs].sort().join(', ')})` });
  });

const policySchema = z
  .strictObject({
    rules: z.array(ruleEntry).default(DEFAULT_RULES),
    renameTemplate: z.string().min(1).default('{value}-{env}'),
    scoped: z.array(scopedRuleSchema).default([]),
  })
  .default({ rules: DEFAULT_RULES, renameTemplate: '{value}-{env}', scoped: [] });

/**
 * The team's own test suite, run by the command runner. Placeholders in `command` (shell-quoted when
 * substituted): {databaseUrl} {env} {tests} (a file, one test name per line) {pattern} (a regular
 * expression matching the selected test names) {shard} {shards} (1-based index and count) {junit} (the
 * JUnit XML file the command must write).
 */
const testingSchema = z.strictObject({
  command: z.string().trim().min(1),
  /** Working directory of the command, relative to the config file. */
  cwd: z.string().min(1).optional(),
  /** Shards run at once on this machine. */
  agents: z.number().int().min(1).max(256).default(4),
  /** Shards per run (default: agents). */
  shards: z.number().int().min(1).max(1024).optional(),
  timeoutSeconds: z.number().int().min(1).default(3600),
  /** A YAML file mapping test names (or /regex/) to features and the smoke tag. */
  mapping: z.string().min(1).optional(),
  /** The tier 2 gate: pass rate in percent. */
  passRate: z.number().min(0).max(100).default(99),
  /** Failing tests re-run this many times; a pass on retry marks the test flaky. */
  retries: z.number().int().min(0).max(5).default(0),
  /** local: child processes under p-queue; pgboss: `tributary agent` processes pull shards from a pg-boss queue. */
  dispatch: z.enum(['local', 'pgboss']).default('local'),
  /** pgboss: a shard no `tributary agent` takes within this many seconds (while none works on the run) is errored. */
  agentWaitSeconds: z.number().int().min(1).default(600),
  /** Where the merged JUnit XML and Markdown reports are written, relative to the config file. */
  reportDir: z.string().min(1).default('.tributary/reports'),
});

/** A deployer command: a shell command line, or one with its own timeout. Placeholders: {version}. */
const deployCommand = z.union([
  z.string().trim().min(1),
  z.strictObject({ run: z.string().trim().min(1), timeoutSeconds: z.number().int().min(1).optional() }),
]);

/** A maintenance window in which scheduled deployments may start: days, HH:MM–HH:MM, a time zone. */
const windowSchema = z.strictObject({
  days: z.array(z.enum(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'])).min(1).default(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun']),
  start: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'HH:MM'),
  end: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'HH:MM'),
  timezone: z.string().min(1).default('UTC'),
});

/**
 * Synchronized deployment of code and data. Code goes out through the team's own tool: `commands`
 * (shell commands, each with a timeout, output captured with secrets redacted) or a CI/CD `webhook`;
 * data goes out built in (backup, load in one transaction, verify) to the production env.
 */
const deploySchema = z
  .strictObject({
    /** The env deployed to (default: the env with role production). */
    env: z.string().optional(),
    /** Where release bundles (data packages) are written, relative to the config file. */
    bundleDir: z.string().min(1).default('.tributary/bundles'),
    /** The schema migration step the bundle names (a label, e.g. "v42"), passed to migrateUp/migrateDown as {migration}. */
    migration: z.string().min(1).optional(),
    /** Working directory of the commands, relative to the config file. */
    cwd: z.string().min(1).optional(),
    timeoutSeconds: z.number().int().min(1).default(600),
    commands: z
      .strictObject({
        /** Prints the code version running now (recorded before deploying, the version a rollback returns to). */
        current: deployCommand.optional(),
        deploy: deployCommand,
        rollback: deployCommand,
        restart: deployCommand.optional(),
        health: deployCommand.optional(),
        migrateUp: deployCommand.optional(),
        migrateDown: deployCommand.optional(),
        maintenanceOn: deployCommand.optional(),
        maintenanceOff: deployCommand.optional(),
      })
      .optional(),
    webhook: z
      .strictObject({
        /** POSTed { action, version, release, env } (version for deploy and rollback; migration too when deploy.migration is set); answers { id } or { status }; polled at statusUrl with {id}. */
        url: z.string().url(),
        statusUrl: z.string().min(1).optional(),
        token: z.string().min(1).optional(),
        pollSeconds: z.number().min(0.05).default(5),
        timeoutSeconds: z.number().int().min(1).default(1800),
      })
      .optional(),
    /** Go decisions needed from release managers; the requester's own Go never suffices alone. */
    quorum: z.number().int().min(1).max(10).default(1),
    /** A go/no-go prompt not answered within this time counts as no-go. */
    promptMinutes: z.number().min(0.01).default(60),
    windows: z.array(windowSchema).default([]),
    /** Run the smoke tests (testing.command, smoke tag) against the env after deploying and after a rollback. */
    smoke: z.boolean().default(true),
  })
  .superRefine((d, issue) => {
    if (!d.commands && !d.webhook) issue.addIssue({ code: 'custom', message: 'give the code deployer: commands (deploy, rollback, …) or webhook' });
    if (d.commands && d.webhook) issue.addIssue({ code: 'custom', message: 'one code deployer: commands or webhook, not both' });
  });

const slackId = z.string().regex(/^[UWS][A-Z0-9]+$/, 'must be a Slack user ID (U…/W…) or user group ID (S…)');

/**
 * The nightly cumulative regression (the bot runs it; `tributary nightly --now` runs one at once): a
 * cron `schedule` in `timezone`, posted to `channel` when done, or at `postAt` (HH:MM) when done earlier.
 */
const nightlySchema = z.strictObject({
  schedule: z.string().trim().min(1),
  timezone: z.string().trim().min(1),
  channel: z.string().trim().min(1),
  postAt: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'a time of day HH:MM, e.g. 07:30').optional(),
  /** Nights the flaky leaderboard looks back over. */
  nights: z.number().int().min(2).max(90).default(14),
  /** When the weekly digest proposes tests of deprecated features for pruning (cron, same time zone). */
  pruneDigest: z.string().trim().min(1).default('0 9 * * 1'),
});

export const configSchema = z.strictObject({
  database: z
    .strictObject({
      url: z.string().min(1).optional(),
      dataDir: z.string().min(1).default('.tributary/pg'),
      name: identifier.default('tributary'),
      port: z.number().int().min(1024).max(65535).optional(),
    })
    .default({ dataDir: '.tributary/pg', name: 'tributary' }),
  releases: z.record(z.string().regex(/^[A-Za-z0-9._-]+$/, 'release names use letters, digits, . _ -'), releaseSchema),
  environments: z.record(z.string().regex(/^[A-Za-z0-9._-]+$/, 'env names use letters, digits, . _ -'), envSchema),
  dataset: z.strictObject({
    tags: tagsSchema,
    entities: z.record(identifier, entitySchema).refine((e) => Object.keys(e).length > 0, 'declare at least one entity'),
  }),
  policy: policySchema,
  collect: z.strictObject({ concurrency: z.number().int().min(1).max(64).default(4) }).default({ concurrency: 4 }),
  roles: z
    .strictObject({
      reviewer: z.array(slackId).default([]),
      qa_lead: z.array(slackId).default([]),
      release_manager: z.array(slackId).default([]),
    })
    .default({ reviewer: [], qa_lead: [], release_manager: [] }),
  slack: z
    .strictObject({ reviewChannel: z.string().optional(), releaseChannel: z.string().optional() })
    .default({}),
  testing: testingSchema.optional(),
  deploy: deploySchema.optional(),
  nightly: nightlySchema.optional(),
  /**
   * Signed transfer packages between a cloud side and an on-premises side (src/engine/transfer): the public
   * keys this side trusts (PEM text, or a file relative to the config file), and the private key file
   * `tributary export` signs with when TRIBUTARY_SIGNING_KEY is not set.
   */
  transfer: z
    .strictObject({
      publicKeys: z.array(z.string().trim().min(1)).default([]),
      signingKeyFile: z.string().min(1).optional(),
    })
    .default({ publicKeys: [] }),
  /** Cold storage of archived release partitions, relative to the config file. */
  archive: z.strictObject({ dir: z.string().min(1).default('.tributary/archive') }).default({ dir: '.tributary/archive' }),
});

export type RawConfig = z.infer<typeof configSchema>;
