import type { Command } from 'commander';
import { createBundle, listBundles, requireBundle, type Bundle } from '../engine/deploy/index.js';
import { TributaryError } from '../errors.js';
import { authorizeCli, type CliHelpers } from './load.js';

/**
 * `tributary bundle R2 --code <version>`: the approved release's immutable bundle (code version, data
 * exported from master with counts and checksums, migration step); the same parts give back the same
 * bundle. `tributary bundle R2` shows the latest, `--list` every version.
 */
export function renderBundle(b: Bundle & { created?: boolean }): string {
  const head = `Bundle ${b.release} v${b.version}${b.created === false ? ' (unchanged: the same code version, migration and data)' : ''}`;
  const lines = [
    head,
    `  code version:  ${b.codeVersion}`,
    `  migration:     ${b.migration ?? '(none)'}`,
    `  data:          ${b.dataFingerprint}`,
    `  files:         ${b.dir}`,
    `  created:       ${b.createdAt} by ${b.createdBy}`,
  ];
  const w = Math.max(5, ...b.tables.map((t) => t.table.length));
  const rw = Math.max(4, ...b.tables.map((t) => t.rows.toLocaleString('en-US').length));
  lines.push('', `  ${'table'.padEnd(w)}  ${'rows'.padStart(rw)}  checksum`);
  for (const t of b.tables) lines.push(`  ${t.table.padEnd(w)}  ${t.rows.toLocaleString('en-US').padStart(rw)}  ${t.checksum}`);
  return lines.join('\n');
}

export function renderBundleList(release: string, list: Bundle[]): string {
  if (list.length === 0) return `No bundles of ${release} yet: tributary bundle ${release} --code <version>`;
  return [`Bundles of ${release}:`, ...list.map((b) => `  v${b.version}  code ${b.codeVersion}  data ${b.dataFingerprint.slice(0, 12)}  ${b.tables.reduce((n, t) => n + t.rows, 0).toLocaleString('en-US')} rows  ${b.createdAt} by ${b.createdBy}`)].join('\n');
}

export function registerBundleCommands(program: Command, h: CliHelpers): void {
  program
    .command('bundle <release>')
    .description('the approved release\'s immutable bundle for production: --code <version> makes it (data exported from master with counts and checksums); without it shows the latest')
    .option('--code <version>', 'the code version the pipeline built (git tag or sha, image digest)')
    .option('--version <n>', 'show this bundle version')
    .option('--list', 'list every bundle version of the release')
    .action(async (release: string, o: { code?: string; version?: string; list?: boolean }) => {
      if (o.code !== undefined && (o.version !== undefined || o.list)) throw new TributaryError('usage', '--code makes a bundle; --version and --list show them: choose one');
      await h.withCtx(async (ctx) => {
        if (o.list) {
          const list = await listBundles(ctx, release);
          return h.out(list, () => renderBundleList(release, list));
        }
        if (o.code === undefined) {
          let version: number | undefined;
          if (o.version !== undefined) {
            version = Number(o.version);
            if (!Number.isInteger(version) || version < 1) throw new TributaryError('usage', `--version takes a bundle version number (got "${o.version}")`);
          }
          const b = await requireBundle(ctx, release, version);
          return h.out(b, () => renderBundle(b));
        }
        await authorizeCli(ctx, h.actor(), 'bundle', release);
        const b = await createBundle(ctx, release, { code: o.code, actor: h.actor() });
        h.out(b, () => renderBundle(b));
      });
    });
}
