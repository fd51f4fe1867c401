import type { Config } from '../config/load.js';
import type { Io } from '../commands/io.js';
import type { Parsed } from '../commands/table.js';

/**
 * The runs of the table's CLI-only commands that do not work on an opened Tributary context: migrate and
 * grants act as a database role (the owner, a role that may create roles), agent is a long-lived worker
 * process that handles its own signals. Loaded when one of them runs.
 */
export type CliRun = (config: Config, p: Parsed, io: Io) => Promise<void>;

export const CLI_RUNS: Record<string, CliRun> = {
  agent: async (config, p) => (await import('./agent.js')).agentRun(config, p),
  migrate: async (config, p, io) => (await import('./migrate.js')).migrateRun(config, p, io),
  grants: async (config, p, io) => (await import('./migrate.js')).grantsRun(config, p, io),
};
