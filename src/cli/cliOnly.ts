import type { Config } from '../config/load.js';
import type { Io } from '../commands/io.js';
import type { Parsed } from '../commands/table.js';
import { TributaryError } from '../errors.js';

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

/**
 * The runs that read no config and open no database: the transfer package's key pair, files on the
 * operator's machine (written where the operator says, before any tributary.yml exists).
 */
export type FileRun = (p: Parsed, io: Io) => Promise<void>;

export const FILE_RUNS: Record<string, FileRun> = {
  async keys() {
    throw new TributaryError('usage', 'tributary keys generate --out <dir> [--name <name>]');
  },
  async 'keys generate'(p, io) {
    const { generateKeyPair } = await import('../engine/kernel/package.js');
    const r = generateKeyPair(p.flags.out as string, p.flags.name as string);
    io.out(r, () => `Wrote ${r.privateFile} (private: never commit it, never store it in a database) and ${r.publicFile} (key id ${r.keyId}).`);
  },
};
