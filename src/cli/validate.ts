import type { Command } from 'commander';
import type { Ctx } from '../engine/kernel/context.js';
import type { Decision } from '../engine/review/index.js';
import { decideFinding, isFindingCode, validateRelease, waiveFinding } from '../engine/validate/index.js';
import { EXIT, TributaryError } from '../errors.js';
import { renderFindingDecision, renderValidation, renderWaiver } from '../views/validation.js';
import { authorizeCli } from './load.js';

/** `tributary validate R2`, `tributary waive F-003 --release R2`, and `tributary decide F-003 …` for findings. */
export interface ValidateCliHelpers {
  withCtx<T>(fn: (ctx: Ctx) => Promise<T>): Promise<T>;
  out(value: unknown, text: () => string): void;
  /** `cli:<name>`, from --as or the OS user. */
  actor(): string;
}

export { isFindingCode };

/** The name the CLI acts as, checked against the roles of the config (Slack user IDs). */
const userOf = (actor: string) => actor.replace(/^cli:/, '');

export function registerValidateCommands(program: Command, h: ValidateCliHelpers): void {
  program
    .command('validate <release>')
    .description('validate the consolidated release (integrity and the data tests); lists its findings, exit 3 while any is open')
    .action(async (release: string) => {
      await h.withCtx(async (ctx) => {
        await authorizeCli(ctx, h.actor(), 'validate', release);
        const r = await validateRelease(ctx, release, { actor: h.actor() });
        h.out(r, () => renderValidation(r));
        if (r.counts.open > 0) process.exitCode = EXIT.gate;
      });
    });

  program
    .command('waive <finding>')
    .description('accept a validation finding as it is (qa_lead; audited)')
    .requiredOption('--release <release>', 'the release')
    .option('--rationale <text>', 'why (required)')
    .action(async (code: string, o: { release: string; rationale?: string }) => {
      await h.withCtx(async (ctx) => {
        const f = await waiveFinding(ctx, o.release, code, { actor: h.actor(), user: userOf(h.actor()), rationale: o.rationale ?? '' });
        h.out(f, () => renderWaiver(f));
      });
    });
}

/** `tributary decide F-003 --release R2 --delete [--cascade] | --repoint <key> --rationale "…" [--dry-run]`. */
export async function decideFindingCommand(ctx: Ctx, code: string, o: Record<string, unknown>, h: Pick<ValidateCliHelpers, 'out' | 'actor'>): Promise<void> {
  const release = o.release as string | undefined;
  if (!release) throw new TributaryError('usage', `tributary decide ${code} --release <release> …: a finding needs its release`);
  const chosen = ['delete', 'repoint', 'keep', 'keepBoth', 'merge', 'waive'].filter((k) => o[k] !== undefined && o[k] !== false);
  if (chosen.length !== 1 || !['delete', 'repoint'].includes(chosen[0]!)) {
    throw new TributaryError('usage', `a finding is decided with exactly one of --delete [--cascade] or --repoint <key> (a qa_lead can waive it: tributary waive ${code} --release ${release})`);
  }
  const d: Decision = o.repoint !== undefined ? { action: 'repoint', to: String(o.repoint) } : { action: 'delete', cascade: !!o.cascade };
  if (!o.dryRun) await authorizeCli(ctx, h.actor(), 'decide', release);
  const r = await decideFinding(ctx, release, code, d, { actor: h.actor(), rationale: String(o.rationale ?? '') }, { dryRun: !!o.dryRun });
  h.out(r, () => renderFindingDecision(r));
}
