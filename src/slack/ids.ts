

/**
 * Every Slack identifier the code registers, in one place, prefixed per area. A test checks
 * manifest.yml against these (and the registrations against the manifest).
 */
export const COMMANDS = {
  release: '/release',
  rollback: '/rollback',
} as const;

export const ACTIONS = {
  /** One per version: `review:keep:<n>` (action_ids must be unique within a block). */
  keepPrefix: 'review:keep:',
  keepBoth: 'review:keep-both',
  merge: 'review:merge',
  delete: 'review:delete',
  repoint: 'review:repoint',
  waive: 'review:waive',
  next: 'review:next',
  /** On the tier 2 card: opens the approval modal. */
  approve: 'tests:approve',
  /** On a pruning proposal: the feature owner's answer. */
  prune: 'nightly:prune',
  pruneKeep: 'nightly:keep',
  /** On the validation card: waive a finding (qa_lead), through a modal with the rationale. */
  waiveFinding: 'findings:waive',
  deployGo: 'deploy:go',
  deployNoGo: 'deploy:no-go',
  deployUnlock: 'deploy:unlock',
  deployResume: 'deploy:resume',
  deployRollback: 'deploy:rollback',
} as const;

export const KEEP_ACTION = /^review:keep:\d+$/;
export const PATTERN_KEEP_ENV_ACTION = /^pattern:keep-env:.+$/;

/**
 * The pattern card's buttons (views/patterns.ts): each opens the pattern decision's modal with its
 * choice; `pattern:keep-env:<env>` one per env. Registered with the command table's Slack wiring.
 */
export const PATTERN_ACTIONS = {
  keepEnvPrefix: 'pattern:keep-env:',
  keepByRule: 'pattern:keep-by-rule',
  keepBoth: 'pattern:keep-both',
  delete: 'pattern:delete',
  waive: 'pattern:waive',
  accept: 'policy:accept',
} as const;

/** External selects whose options the bot answers (block_suggestion, within Slack's 3 s). */
export const OPTIONS = {
  /** The re-point modal's parent: the targets, same env first, then by closeness of key. */
  repointTargets: 'review:repoint-targets',
} as const;

export const VIEWS = {
  decide: 'review:decide',
  approve: 'tests:approve',
  deployDecide: 'deploy:decide',
  waiveFinding: 'findings:waive',
  decidePattern: 'pattern:decide',
  decideFinding: 'findings:decide',
} as const;

export const EVENTS = {
  appHomeOpened: 'app_home_opened',
} as const;

/** Block ids of the decision modal's inputs. */
export const BLOCKS = {
  rationale: 'decide:rationale',
  cascade: 'decide:cascade',
  repointTo: 'decide:repoint-to',
  /** Ticked to re-point to a parent whose columns contradict the child's (the warning says which). */
  repointConfirm: 'decide:repoint-confirm',
  renamePrefix: 'decide:rename:',
  mergePrefix: 'decide:merge:',
  approveRationale: 'approve:rationale',
  deployRationale: 'deploy:rationale',
  waiveRationale: 'findings:rationale',
  patternRationale: 'pattern:rationale',
  findingRationale: 'findings:decide-rationale',
} as const;
