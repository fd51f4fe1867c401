import fs from 'node:fs';
import path from 'node:path';
import type { Ctx } from '../engine/kernel/context.js';
import type { Coverage } from '../engine/nightly/index.js';
import { coverageChartPng } from '../views/nightly.js';

/** Coverage charts as PNG files, written for the CLI and uploaded by the Slack handlers. */

/** Where a coverage chart goes: the reports directory (or the archive directory without testing). */
export function chartPath(ctx: Ctx, name: string): string {
  const dir = path.join(ctx.config.testing?.reportDir ?? ctx.config.archive.dir, 'charts');
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, name);
}

/** Renders the coverage chart to a PNG file; returns its path and bytes. */
export function writeCoverageChart(ctx: Ctx, coverage: Coverage, name: string): { file: string; png: Buffer } {
  const png = coverageChartPng(coverage);
  const file = chartPath(ctx, name);
  fs.writeFileSync(file, png);
  return { file, png };
}
