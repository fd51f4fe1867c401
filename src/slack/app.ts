import type { Server } from 'node:http';
import { App, LogLevel, type Logger as BoltLogger } from '@slack/bolt';
import PQueue from 'p-queue';
import type { SlackSettings } from '../config/slack.js';
import { watchPolicy } from '../config/policyFile.js';
import type { Ctx } from '../engine/kernel/context.js';
import { openRoles } from '../engine/kernel/roles.js';
import { failpoint } from '../engine/kernel/failpoints.js';
import { releaseStatus, type ReleaseStatus } from '../engine/report/index.js';
import { preloadLazy } from '../lazy.js';
import { logger, redact } from '../log.js';
import { register as registerHome } from './home.js';
import { register as registerRelease } from './release.js';
import { register as registerReview } from './review.js';
import { register as registerPatterns } from './patterns.js';
import { register as registerTesting } from './testing.js';
import { register as registerFindings } from './findings.js';
import { DeployWatcher, register as registerDeploy } from './deploy.js';
import { nightlyHooks, register as registerNightly } from './nightly.js';
import { NightlyScheduler } from '../engine/nightly/index.js';
import { closeAbandonedTestRuns } from '../engine/tiers/index.js';
import { processName } from '../engine/kernel/sessionLock.js';
import { CardService } from './cards.js';
import type { BotDeps } from './deps.js';

/**
 * The Slack bot: @slack/bolt in Socket Mode (SLACK_APP_TOKEN) or with the HTTP receiver on PORT
 * (/slack/events). Transport only: every command area registers its listeners from src/commands.
 */
export interface BotOptions {
  /** Skip auth.test (tests): the bot's own ids. */
  botId?: string;
  botUserId?: string;
  /** Web API retries (0 in tests). */
  retries?: number;
  progressIntervalMs?: number;
  cardIntervalMs?: number;
  backgroundConcurrency?: number;
  /** How long a release status may be reused (default 1 s; 0 in tests that change state between requests). */
  statusTtlMs?: number;
  /**
   * How often the audit trail is read for decisions taken elsewhere (the CLI, another bot), whose cards
   * are then brought up to date (default 5 s; 0: never, the cards refresh when clicked).
   */
  cardFollowMs?: number;
  /** Run the nightly schedule when the config has one (default true). */
  scheduler?: boolean;
}

export interface Bot {
  app: App;
  deps: BotDeps;
  start(): Promise<{ port?: number }>;
  stop(): Promise<void>;
  /** Resolves once nothing is in flight: every request handled, background work done, every card posted. */
  idle(): Promise<void>;
}

function boltLogger(): BoltLogger {
  const log = logger().child({ component: 'bolt' });
  const fmt = (msg: unknown[]) => redact(msg.map((m) => (m instanceof Error ? m.message : typeof m === 'string' ? m : JSON.stringify(m))).join(' '));
  let level = LogLevel.INFO;
  return {
    // Bolt logs every request at debug level: format only what will be written
    debug: (...m) => (log.isLevelEnabled('debug') ? log.debug(fmt(m)) : undefined),
    info: (...m) => (log.isLevelEnabled('info') ? log.info(fmt(m)) : undefined),
    warn: (...m) => log.warn(fmt(m)),
    error: (...m) => log.error(fmt(m)),
    setLevel: (l) => {
      level = l;
    },
    getLevel: () => level,
    setName: () => undefined,
  };
}

export function createBot(ctx: Ctx, settings: SlackSettings, opts: BotOptions = {}): Bot {
  // a bot lives long: what a command loads on first use is loaded now, not while a request waits
  preloadLazy();
  const common = {
    token: settings.botToken,
    logger: boltLogger(),
    clientOptions: {
      ...(settings.apiUrl ? { slackApiUrl: settings.apiUrl } : {}),
      ...(opts.retries !== undefined ? { retryConfig: { retries: opts.retries } } : {}),
    },
    ...(opts.botId ? { botId: opts.botId, botUserId: opts.botUserId ?? opts.botId } : {}),
  };
  const app =
    settings.mode === 'socket'
      ? new App({ ...common, appToken: settings.appToken!, socketMode: true })
      : new App({ ...common, signingSecret: settings.signingSecret!, endpoints: '/slack/events' });

  const inflight = new Set<Promise<unknown>>();
  const queue = new PQueue({ concurrency: opts.backgroundConcurrency ?? 4 });
  const longQueue = new PQueue({ concurrency: 4 });
  const track = (p: Promise<unknown>) => {
    inflight.add(p);
    void p.catch(() => undefined).finally(() => inflight.delete(p));
  };
  const groupCache = new Map<string, { at: number; members: Set<string> }>();
  const groupIds = [...new Set(Object.values(ctx.config.roles).flat().filter((id) => id.startsWith('S')))];
  const statusCache = new Map<string, { at: number; value: Promise<ReleaseStatus> }>();
  const deps: BotDeps = {
    ctx,
    statusOf(release) {
      const hit = statusCache.get(release);
      if (hit && Date.now() - hit.at < (opts.statusTtlMs ?? 1000)) return hit.value;
      const value = releaseStatus(ctx, release);
      statusCache.set(release, { at: Date.now(), value });
      value.catch(() => statusCache.delete(release));
      return value;
    },
    client: app.client,
    cards: new CardService(ctx, app.client, opts.cardIntervalMs),
    progressIntervalMs: opts.progressIntervalMs ?? 1500,
    background: (work, urgent) => track(queue.add(work, { priority: urgent ? 1 : 0 })),
    longRunning: (work) => track(longQueue.add(work)),
    async groupsOf(user) {
      const out: string[] = [];
      for (const g of groupIds) {
        let cached = groupCache.get(g);
        if (!cached || Date.now() - cached.at > 300_000) {
          try {
            const res = await app.client.usergroups.users.list({ usergroup: g });
            cached = { at: Date.now(), members: new Set(res.users ?? []) };
            groupCache.set(g, cached);
          } catch (err) {
            logger().warn({ group: g, err: redact((err as Error).message) }, 'could not read user group members');
            continue;
          }
        }
        if (cached.members.has(user)) out.push(g);
      }
      return out;
    },
  };

  // every listener runs inside this middleware, so shutdown can finish the ones in flight
  app.use(async ({ next }) => {
    const p = next();
    track(p);
    await p;
  });
  registerRelease(app, deps);
  registerReview(app, deps);
  registerPatterns(app, deps);
  registerTesting(app, deps);
  registerFindings(app, deps);
  registerDeploy(app, deps);
  registerHome(app, deps);
  registerNightly(app, deps);
  const scheduler = ctx.config.nightly && opts.scheduler !== false ? new NightlyScheduler(ctx, nightlyHooks(deps)) : undefined;
  const deployWatcher = ctx.config.deploy && opts.scheduler !== false ? new DeployWatcher(deps) : undefined;
  app.error(async (err) => {
    logger().error({ err: redact(err.message) }, 'unhandled Slack listener error');
  });

  let unwatchPolicy: (() => void) | undefined;
  return {
    app,
    deps,
    async start() {
      const open = openRoles(ctx);
      if (open.length > 0) logger().warn({ roles: open }, `roles ${open.join(', ')} have no members in the config: everyone has them`);
      // test runs a killed bot or CLI left running are closed (their shards died with their process)
      await closeAbandonedTestRuns(ctx, `interrupted: the process running it stopped (found at the start of bot ${processName()})`);
      await scheduler?.start();
      await deployWatcher?.start();
      const followMs = opts.cardFollowMs ?? 5000;
      if (followMs > 0) await deps.cards.follow(followMs);
      // a rule accepted into the config file (tributary policy accept) reaches the running bot
      unwatchPolicy = watchPolicy(ctx.config);
      await failpoint('bot.before-listen');
      if (settings.mode === 'socket') {
        await app.start();
        logger().info('Tributary bot connected (Socket Mode)');
        return {};
      }
      const server = (await app.start(settings.port)) as Server;
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : settings.port;
      logger().info({ port }, 'Tributary bot listening on /slack/events');
      return { port };
    },
    async idle() {
      while (inflight.size > 0) {
        await Promise.allSettled([...inflight]);
        await deps.cards.idle();
      }
      await deps.cards.idle();
    },
    async stop() {
      await scheduler?.stop();
      deployWatcher?.stop();
      await deps.cards.unfollow();
      unwatchPolicy?.();
      await app.stop();
      const deadline = Date.now() + 25_000;
      while (inflight.size > 0 && Date.now() < deadline) await Promise.race([Promise.allSettled([...inflight]), new Promise((r) => setTimeout(r, 1000))]);
      await deps.cards.idle();
    },
  };
}
