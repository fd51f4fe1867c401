import fs from 'node:fs';
import path from 'node:path';
import type { Ctx } from '../engine/kernel/context.js';
import type { Coverage } from '../engine/nightly/index.js';

/** Coverage charts as PNG files, written for the CLI and uploaded by the Slack handlers. */

/** Where a coverage chart goes: the reports directory (or the archive directory without testing). */
export function chartPath(ctx: Ctx, name: string): string {
  const dir = path.join(ctx.config.testing?.reportDir ?? ctx.config.archive.dir, 'charts');
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, name);
}

/** Renders the coverage chart to a PNG file; returns its path and bytes. */
export async function writeCoverageChart(ctx: Ctx, coverage: Coverage, name: string): Promise<{ file: string; png: Buffer }> {
  const png = await coverageChartPngOf(coverage);
  const file = chartPath(ctx, name);
  fs.writeFileSync(file, png);
  return { file, png };
}

/** The chart as a PNG; echarts is loaded on the first chart, not with the CLI or the bot. */
export async function coverageChartPngOf(coverage: Coverage): Promise<Buffer> {
  const { coverageChartPng } = await import('../views/coverageChart.js');
  return coverageChartPng(coverage);
}
