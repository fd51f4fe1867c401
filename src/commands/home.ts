import type { App } from '@slack/bolt';
import type { ConflictRow } from '../engine/conflicts.js';
import type { ReleaseStatus } from '../engine/status.js';
import { logger, redact } from '../log.js';
import type { BotDeps } from '../slack/app.js';
import { EVENTS } from '../slack/ids.js';
import { homeView } from '../views/blocks.js';

/** The App Home tab: each release's state, its queue by priority, and the conflicts assigned to the viewer. */
export function register(app: App, deps: BotDeps): void {
  const { ctx } = deps;
  app.event(EVENTS.appHomeOpened, async ({ event, context }) => {
    // Events API retries (X-Slack-Retry-Num) repeat an event already handled
    if (context.retryNum) return;
    if (event.tab !== 'home') return;
    deps.background(() => publishHome(event.user));
  });

  const publishHome = async (user: string) => {
    try {
      const statuses: ReleaseStatus[] = [];
      for (const r of ctx.config.releases.keys()) statuses.push(await deps.statusOf(r));
      const runs = statuses.flatMap((s) => (s.run?.status === 'succeeded' ? [s.run.id] : []));
      const assigned = runs.length
        ? ((await ctx.db.control('conflicts').whereIn('run_id', runs).where({ status: 'open', assigned_to: user }).orderBy(['priority', 'code'])) as ConflictRow[])
        : [];
      await deps.client.views.publish({ user_id: user, view: homeView({ statuses, assigned }) });
    } catch (err) {
      logger().error({ err: redact((err as Error).message), user }, 'could not publish the App Home');
    }
  };
}
