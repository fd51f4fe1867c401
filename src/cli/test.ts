import type { Command } from 'commander';
import { TributaryError } from '../errors.js';
import { type Tier, approveRelease, runTests } from '../engine/tiers/index.js';
import { renderProgress, renderTestRun } from '../views/testing.js';
import { authorizeCli, type CliHelpers } from './load.js';

/** `tributary test R2 --tier 1|2 | --feature F | --smoke [--env E]` and `tributary approve R2`. */
export function registerTestCommands(program: Command, h: CliHelpers): void {
  program
    .command('test <release>')
    .description("run the team's tests: --tier 1 (the release's features + smoke on staging), --tier 2 (everything on master), --feature, --smoke")
    .option('--tier <tier>', '1 or 2')
    .option('--feature <feature>', "one feature's tests")
    .option('--smoke', 'the smoke tests')
    .option('--env <env>', 'target env for --feature/--smoke (default: staging)')
    .action(async (release: string, o: { tier?: string; feature?: string; smoke?: boolean; env?: string }) => {
      const chosen = [o.tier !== undefined, o.feature !== undefined, !!o.smoke].filter(Boolean).length;
      if (chosen !== 1) throw new TributaryError('usage', 'choose one of --tier 1, --tier 2, --feature <feature>, --smoke');
      if (o.tier !== undefined && o.tier !== '1' && o.tier !== '2') throw new TributaryError('usage', `--tier takes 1 or 2 (got "${o.tier}")`);
      if (o.env && o.tier) throw new TributaryError('usage', '--env goes with --feature or --smoke (tier 1 runs on staging, tier 2 on master)');
      const tier: Tier = o.tier ? (o.tier as Tier) : o.feature ? 'feature' : 'smoke';
      await h.withCtx(async (ctx) => {
        await authorizeCli(ctx, h.actor(), 'test', release);
        const progress = h.json() ? undefined : (p: Parameters<typeof renderProgress>[0]) => process.stderr.write(`… ${renderProgress(p)}\n`);
        const r = await runTests(ctx, release, { tier, actor: h.actor(), ...(o.feature ? { feature: o.feature } : {}), ...(o.env ? { env: o.env } : {}), ...(progress ? { progress } : {}) });
        h.out(r, () => renderTestRun(r));
        if (r.status !== 'passed') process.exitCode = 1;
      });
    });

  program
    .command('approve <release>')
    .description('approve the release after tier 2 (qa_lead): it becomes ready for production')
    .requiredOption('--rationale <text>', 'why (recorded in the audit trail)')
    .option('--override', 'approve past a failed tier 2 gate (the rationale says why)')
    .action(async (release: string, o: { rationale: string; override?: boolean }) => {
      await h.withCtx(async (ctx) => {
        await authorizeCli(ctx, h.actor(), 'approve', release);
        const r = await approveRelease(ctx, release, { actor: h.actor(), rationale: o.rationale, override: !!o.override });
        h.out(r, () => `${release} approved by ${r.approvedBy} on tier 2 run #${r.runId}${r.override ? ' (OVERRIDE of a failed gate)' : ''}: ready for production`);
      });
    });
}
