import type { Knex } from 'knex';
import * as control from '../../migrations/20261125120000_control.js';
import * as slackMessages from '../../migrations/20261125140000_slack_messages.js';
import * as auditChain from '../../migrations/20261125150000_audit_chain.js';
import * as findings from '../../migrations/20261125151000_findings.js';
import * as loads from '../../migrations/20261125152000_loads.js';
import * as testing from '../../migrations/20261125160000_testing.js';
import * as deployments from '../../migrations/20261125171000_deployments.js';
import * as deployOpenUnique from '../../migrations/20261125172000_deploy_open_unique.js';
import * as promotions from '../../migrations/20261125161000_promotions.js';
import * as deployBundles from '../../migrations/20261125170000_deploy_bundles.js';
import * as nightly from '../../migrations/20261125180000_nightly.js';
import * as prunedTests from '../../migrations/20261125190000_pruned_tests.js';
import * as auditChainOrigin from '../../migrations/20261205120000_audit_chain_origin.js';
import * as lockColumns from '../../migrations/20261205130000_lock_columns.js';
import * as autoResolutions from '../../migrations/20261206120000_auto_resolutions.js';
import * as patternDecisions from '../../migrations/20261206130000_pattern_decisions.js';
import * as transfer from '../../migrations/20261206140000_transfer.js';
import * as slackPlacement from '../../migrations/20261207120000_slack_placement.js';

/**
 * A static migration source: knex loading `.ts` migrations by directory fails inside vitest on Node 20
 * (STACK.md), and a static list also works from any working directory.
 */
const migrations: Record<string, Knex.Migration> = {
  '20261125120000_control': control,
  '20261125140000_slack_messages': slackMessages,
  '20261125150000_audit_chain': auditChain,
  '20261125151000_findings': findings,
  '20261125152000_loads': loads,
  '20261125160000_testing': testing,
  '20261125171000_deployments': deployments,
  '20261125172000_deploy_open_unique': deployOpenUnique,
  '20261125161000_promotions': promotions,
  '20261125170000_deploy_bundles': deployBundles,
  '20261125180000_nightly': nightly,
  '20261125190000_pruned_tests': prunedTests,
  '20261205120000_audit_chain_origin': auditChainOrigin,
  '20261205130000_lock_columns': lockColumns,
  '20261206120000_auto_resolutions': autoResolutions,
  '20261206130000_pattern_decisions': patternDecisions,
  '20261206140000_transfer': transfer,
  '20261207120000_slack_placement': slackPlacement,
};

export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => Object.keys(migrations).sort(),
  getMigrationName: (name) => name,
  getMigration: async (name) => migrations[name]!,
};
