import type { Command } from 'commander';
import type { Ctx } from '../engine/kernel/context.js';
import { authorize } from '../engine/kernel/roles.js';
import { why } from '../engine/report/index.js';
import { loadRelease } from '../engine/load/index.js';
import { renderLineage, renderLoad } from '../views/text.js';

/** `tributary load R2` and `tributary why <entity> <key> --release R2`. */
/**
 * The CLI acts with its operator's trust (whoever reaches the control database), under the identity of
 * `--as` (or the OS user). Where roles are configured, that identity must hold the role, as in Slack:
 * `--as U0123ABCD` names the Slack user whose role is checked; a refusal is audited.
 */
export async function authorizeCli(ctx: Ctx, actor: string, action: Parameters<typeof authorize>[3], release?: string): Promise<void> {
  await authorize(ctx, actor.replace(/^cli:/, ''), [], action, release);
}

export interface CliHelpers {
  withCtx<T>(fn: (ctx: Ctx) => Promise<T>): Promise<T>;
  out(value: unknown, text: () => string): void;
  actor(): string;
  json(): boolean;
}

export function registerLoadCommands(program: Command, h: CliHelpers): void {
  program
    .command('load <release>')
    .description('load the validated release into the staging env (one transaction), verified by counts and checksums; past tier 1 it needs --confirm (says what it resets)')
    .option('--confirm', 're-load a release past tier 1 or approved: its tier runs, promotion and approval no longer count')
    .action(async (release: string, o: { confirm?: boolean }) => {
      await h.withCtx(async (ctx) => {
        const progress = h.json() ? undefined : (step: string, info?: Record<string, unknown>) => process.stderr.write(`… ${step}${info ? ` ${JSON.stringify(info)}` : ''}\n`);
        await authorizeCli(ctx, h.actor(), 'load', release);
        const r = await loadRelease(ctx, release, { actor: h.actor(), ...(o.confirm ? { confirm: true } : {}), ...(progress ? { progress } : {}) });
        h.out(r, () => renderLoad(r));
      });
    });

  program
    .command('why <entity> <key>')
    .description('lineage of a consolidated record: source envs, features, creators, and the rules and decisions that shaped it')
    .requiredOption('--release <release>', 'the release')
    .action(async (entity: string, key: string, o: { release: string }) => {
      await h.withCtx(async (ctx) => {
        const rows = await why(ctx, entity, key, o.release);
        h.out(rows, () => renderLineage(o.release, rows));
      });
    });
}
