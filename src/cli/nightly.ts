import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { coverageChartPngOf, writeCoverageChart } from '../commands/charts.js';
import { archiveReleases, restoreRelease, coverageGrowth, runNightlyNow, type ArchiveReport } from '../engine/nightly/index.js';
import { TributaryError } from '../errors.js';
import { renderCoverage, renderNightly } from '../views/nightly.js';
import { authorizeCli, type CliHelpers } from './load.js';

function renderArchive(r: ArchiveReport): string {
  const lines = [`Cut-off: promoted before ${r.cutoff}${r.dryRun ? ' (dry run: nothing archived)' : ''}`];
  if (r.archived.length === 0) lines.push('Nothing to archive.');
  for (const a of r.archived) {
    lines.push(`${a.release} (promoted ${a.promotedAt})${r.dryRun ? `: would be archived, then dropped from master (${a.rows} rows)` : `: archived ${a.rows} rows in ${(a.ms / 1000).toFixed(1)} s → ${a.manifest}`}`);
    for (const t of a.tables) lines.push(`  ${t.table}: ${t.rows} rows${r.dryRun ? '' : `, checksum ${t.checksum}, ${t.bytes} bytes compressed`}`);
  }
  for (const k of r.kept) lines.push(`${k.release}: kept (${k.reason})`);
  return lines.join('\n');
}

/** `tributary nightly --now`, `tributary coverage`, `tributary archive --older-than 2y`, `tributary restore R0`. */
export function registerNightlyCommands(program: Command, h: CliHelpers): void {
  program
    .command('nightly')
    .description('the nightly cumulative regression on master: --now runs one at once (the bot runs it on nightly.schedule) and prints its summary')
    .option('--now', 'run it now')
    .action(async (o: { now?: boolean }) => {
      if (!o.now) throw new TributaryError('usage', 'tributary nightly --now (the bot runs the schedule in nightly.schedule)');
      await h.withCtx(async (ctx) => {
        await authorizeCli(ctx, h.actor(), 'nightly');
        const r = await runNightlyNow(ctx, h.actor());
        if (r.row.status !== 'done' || !r.summary) throw new TributaryError('runner_failed', `the nightly run failed: ${r.row.error ?? 'unknown error'}`);
        const chart = r.coverage ? (await writeCoverageChart(ctx, r.coverage, `nightly-${r.row.id}-coverage.png`)).file : undefined;
        if (chart) await ctx.db.control('nightly_runs').where({ id: r.row.id }).update({ chart_path: chart });
        h.out({ summary: r.summary, coverage: r.coverage, chart }, () => `${renderNightly(r.summary!)}${chart ? `\n  coverage chart: ${chart}` : ''}`);
        if (r.summary.status !== 'passed') process.exitCode = 1;
      });
    });

  program
    .command('coverage')
    .description('coverage growth per release: tests and data records, each also cumulative')
    .option('--chart <file>', 'also write the chart as a PNG')
    .action(async (o: { chart?: string }) => {
      await h.withCtx(async (ctx) => {
        const c = await coverageGrowth(ctx);
        let chart: string | undefined;
        if (o.chart) {
          chart = path.resolve(o.chart);
          fs.writeFileSync(chart, await coverageChartPngOf(c));
        }
        h.out({ ...c, ...(chart ? { chart } : {}) }, () => `${renderCoverage(c)}${chart ? `\nchart: ${chart}` : ''}`);
      });
    });

  program
    .command('archive')
    .description("move master's release partitions promoted before the cut-off to cold storage (gzip + manifest with counts and checksums), then drop them")
    .requiredOption('--older-than <age>', 'e.g. 2y, 18mo, 90d')
    .option('--dry-run', 'list what would be archived')
    .option('--yes', 'do it (without it: says which partitions and rows it would archive and drop, and does nothing)')
    .action(async (o: { olderThan: string; dryRun?: boolean; yes?: boolean }) => {
      await h.withCtx(async (ctx) => {
        if (!o.dryRun) await authorizeCli(ctx, h.actor(), 'archive');
        if (!o.dryRun && !o.yes) {
          const plan = await archiveReleases(ctx, { olderThan: o.olderThan, actor: h.actor(), dryRun: true });
          if (plan.archived.length > 0) throw new TributaryError('unconfirmed', `${renderArchive(plan)}\nNothing was done: add --yes to archive and drop these partitions.`, { plan });
        }
        const progress = h.json() ? undefined : (release: string, table: string) => process.stderr.write(`… ${release}: ${table}\n`);
        const r = await archiveReleases(ctx, { olderThan: o.olderThan, actor: h.actor(), ...(o.dryRun ? { dryRun: true } : {}), ...(progress ? { progress } : {}) });
        h.out(r, () => renderArchive(r));
      });
    });

  program
    .command('restore <release>')
    .description('bring an archived release back into master (re-created and attached), verified against its manifest')
    .option('--manifest <file>', 'a manifest.json (default: the newest archive of the release)')
    .action(async (release: string, o: { manifest?: string }) => {
      await h.withCtx(async (ctx) => {
        await authorizeCli(ctx, h.actor(), 'restore', release);
        const r = await restoreRelease(ctx, release, { actor: h.actor(), ...(o.manifest ? { manifest: path.resolve(o.manifest) } : {}) });
        h.out(r, () => [`${release} restored into ${r.env} from ${r.manifest} (${(r.ms / 1000).toFixed(1)} s), counts and checksums equal to the manifest's:`, ...r.tables.map((t) => `  ${t.table}: ${t.rows} rows, checksum ${t.checksum}`)].join('\n'));
      });
    });
}
