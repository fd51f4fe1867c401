import { beforeAll } from 'vitest';
import type { Bot, BotOptions } from '../../src/slack/app.js';
import type { TestEnv } from '../helpers.js';
import { FakeSlack, startTestBot } from './fake-slack.js';

/** What a file of Slack tests drives: the fake Web API, the test env the bot runs on, the bot and the URL Slack posts to. */
export interface SlackScaffold {
  fake: FakeSlack;
  env: TestEnv;
  bot: Bot;
  url: string;
}

export interface ScaffoldSetup {
  /** Makes the test env (its database and config): testEnv(…), readyToDeploy(…). */
  env: () => Promise<TestEnv>;
  /** What must be there before the bot starts: rows seeded, a consolidation run, the fake's user groups. */
  prepare?: (env: TestEnv, fake: FakeSlack) => Promise<void> | void;
  /** The bot's options, over startTestBot's. */
  bot?: BotOptions;
}

/**
 * Starts a FakeSlack, makes and prepares the test env, and starts a test bot on it (startTestBot). Its
 * `stop` stops what started, in reverse: the bot, the env (its database dropped), the fake. When a step
 * fails, what had started is stopped before the error is passed on.
 */
export async function startSlackScaffold(setup: ScaffoldSetup): Promise<SlackScaffold & { stop(): Promise<void> }> {
  const fake = new FakeSlack();
  let env: TestEnv | undefined;
  let bot: Bot | undefined;
  const stop = async () => {
    await bot?.stop();
    await env?.close();
    await fake.stop();
  };
  try {
    await fake.start();
    env = await setup.env();
    await setup.prepare?.(env, fake);
    const started = await startTestBot(env.ctx, fake, setup.bot);
    bot = started.bot;
    return { fake, env, bot, url: started.url, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * The set-up of a file of Slack tests: before its tests, startSlackScaffold(setup), whose parts `ready`
 * receives (to keep them in the file's variables); after its tests, all of it stopped again.
 */
export function slackScaffold(setup: ScaffoldSetup, ready: (s: SlackScaffold) => void): void {
  beforeAll(async () => {
    const started = await startSlackScaffold(setup);
    ready(started);
    return started.stop;
  });
}

/** R2 loaded into staging (its state, one load recorded), as test runs want it: a `prepare` of the testing suites. */
export async function loadedR2(env: TestEnv): Promise<void> {
  await env.db.control('release_states').insert({ release: 'R2', state: 'loaded' });
  await env.db.control('loads').insert({ release: 'R2', run_id: 1, env: 'staging', entity: 'users', table_name: 'users', row_count: 3, checksum: '42', loaded_by: 'cli:test' });
}
