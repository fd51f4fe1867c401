import type { Command } from 'commander';
import { promoteRelease } from '../engine/promote/index.js';
import { EXIT, TributaryError } from '../errors.js';
import { renderPromote, renderPromoteRefused, type PromoteRefusal } from '../views/promote.js';
import { authorizeCli, type CliHelpers } from './load.js';

/** `tributary promote R2`: staging into the cumulative master, one partition per release (exit 3 while cross-release conflicts are open). */

export function registerPromoteCommands(program: Command, h: CliHelpers): void {
  program
    .command('promote <release>')
    .description("merge the release's staging data into the cumulative master (a partition per release, verified by counts and checksums); refused while cross-release conflicts are open")
    .action(async (release: string) => {
      await h.withCtx(async (ctx) => {
        const progress = h.json() ? undefined : (step: string, info?: Record<string, unknown>) => process.stderr.write(`… ${step}${info ? ` ${JSON.stringify(info)}` : ''}\n`);
        await authorizeCli(ctx, h.actor(), 'promote', release);
        try {
          const r = await promoteRelease(ctx, release, { actor: h.actor(), ...(progress ? { progress } : {}) });
          h.out(r, () => renderPromote(r));
        } catch (err) {
          if (err instanceof TributaryError && err.code === 'gate_conflicts') {
            const refusal: PromoteRefusal = { release, conflicts: (err.details.conflicts as PromoteRefusal['conflicts']) ?? [], issues: (err.details.issues as string[]) ?? [] };
            h.out({ error: err.code, message: err.message, ...refusal }, () => renderPromoteRefused(refusal));
            process.exitCode = EXIT.gate;
            return;
          }
          throw err;
        }
      });
    });
}
