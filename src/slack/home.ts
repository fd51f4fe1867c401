import type { App } from '@slack/bolt';
import { assignedConflicts } from '../engine/review/index.js';
import type { ReleaseStatus } from '../engine/report/index.js';
import { logger, redact } from '../log.js';
import type { BotDeps } from './deps.js';
import { EVENTS } from './ids.js';
import { homeView, type HomeNight } from '../views/blocks.js';
import { archivedReleases, recentNights, type NightlySummary } from '../engine/nightly/index.js';

/** The App Home tab: the last nights' health, each release's state, its queue by priority, and the conflicts assigned to the viewer. */
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
      const assigned = await assignedConflicts(ctx, runs, user);
      const nights: HomeNight[] = (await recentNights(ctx, 7)).map((n) => {
        const sum = n.summary as NightlySummary | null;
        return {
          at: new Date(n.started_at).toISOString().slice(0, 16).replace('T', ' '),
          status: n.status === 'running' ? (n.interrupted ? 'interrupted' : 'running') : n.status === 'done' ? 'done' : 'failed',
          passRate: sum?.totals?.passRate ?? null,
          newRegressions: sum?.newRegressions?.count ?? 0,
          fixed: sum?.fixed?.count ?? 0,
          ...(n.error ? { error: n.error } : {}),
        };
      });
      const archived = await archivedReleases(ctx);
      await deps.client.views.publish({ user_id: user, view: homeView({ statuses, assigned, nights, archived }) });
    } catch (err) {
      logger().error({ err: redact((err as Error).message), user }, 'could not publish the App Home');
    }
  };
}
