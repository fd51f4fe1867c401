import { autoResolutionCounts, listAutoResolutions, type AutoFilter, type AutoResolution } from '../engine/review/index.js';
import type { Ctx } from '../engine/kernel/context.js';
import type { Message } from '../views/limits.js';
import { autoResolutionsFile, autoResolutionsMessage } from '../views/autoResolutions.js';

/**
 * `/release conflicts R2 --status auto-resolved [--rule r] [--entity e]` in Slack: the counts per rule
 * and the first few as a message, and the whole list as a file to upload with it (files.uploadV2). The
 * command table (issue 17) wires it; the CLI's twin is `tributary conflicts R2 --status auto-resolved`.
 */
export async function autoResolvedAnswer(ctx: Ctx, release: string, filter: AutoFilter = {}, shown = 10): Promise<{ message: Message; file: { filename: string; content: string } }> {
  const counts = await autoResolutionCounts(ctx, release, filter);
  const all: AutoResolution[] = [];
  for await (const a of listAutoResolutions(ctx, release, filter)) all.push(a);
  const label = [filter.rule, filter.entity].filter(Boolean).join(', ');
  return {
    message: autoResolutionsMessage(release, counts, all.slice(0, shown), { shown, ...(label ? { filter: label } : {}) }),
    file: { filename: `${release}-auto-resolutions${label ? `-${label.replace(/[^A-Za-z0-9-]+/g, '-')}` : ''}.tsv`, content: autoResolutionsFile(all) },
  };
}
