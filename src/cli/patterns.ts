import type { Command } from 'commander';
import { KEEP_BY_RULES, type KeepByRule } from '../config/schema.js';
import { acceptProposal, decidePattern, listPatterns, listProposals, undoDecision, type PatternChoice } from '../engine/review/index.js';
import { TributaryError } from '../errors.js';
import { renderPatternOutcome, renderPatterns, renderProposals, renderUndo } from '../views/patterns.js';
import { authorizeCli, type CliHelpers } from './load.js';
import type { Ctx } from '../engine/kernel/context.js';

/**
 * Review at scale on the CLI: `conflicts R2 --patterns`, `decide --pattern P-3 --keep-env ST-1`,
 * `undo <D-…|PD-…|C-…>`, `policy proposals` and `policy accept <name>`.
 */

export async function listPatternsCommand(ctx: Ctx, release: string, h: Pick<CliHelpers, 'out'>): Promise<void> {
  const patterns = await listPatterns(ctx, release);
  h.out(patterns, () => renderPatterns(release, patterns));
}

/** A pattern's choice from decide's flags: by env, feature or rule, keep both, delete or waive; never a version number. */
export function patternChoice(o: Record<string, unknown>): PatternChoice {
  for (const flag of ['keep', 'merge', 'repoint', 'rename'] as const) {
    if (o[flag] !== undefined) {
      throw new TributaryError('usage', `--${flag} names ${flag === 'repoint' ? 'one parent key' : 'versions by number'}, which differ from conflict to conflict: a pattern is decided with --keep-env, --keep-feature, --keep-by-rule, --keep-both, --delete or --waive`);
    }
  }
  const chosen = ['keepEnv', 'keepFeature', 'keepByRule', 'keepBoth', 'delete', 'waive'].filter((k) => o[k] !== undefined && o[k] !== false);
  if (chosen.length !== 1) throw new TributaryError('usage', 'with --pattern choose exactly one of --keep-env <env>, --keep-feature <feature>, --keep-by-rule <rule>, --keep-both, --delete, --waive');
  if (o.keepEnv) return { keepEnv: String(o.keepEnv) };
  if (o.keepFeature) return { keepFeature: String(o.keepFeature) };
  if (o.keepByRule) {
    const rule = String(o.keepByRule);
    if (!(KEEP_BY_RULES as readonly string[]).includes(rule)) throw new TributaryError('usage', `--keep-by-rule takes ${KEEP_BY_RULES.join(', ')} (got "${rule}")`);
    return { keepByRule: rule as KeepByRule };
  }
  if (o.keepBoth) return { action: 'keep-both' };
  if (o.delete) return { action: 'delete-both', ...(o.cascade ? { cascade: true } : {}) };
  return { action: 'waive' };
}

/** The release a pattern belongs to: --release, or the only release with open conflicts. */
async function patternRelease(ctx: Ctx, given: string | undefined): Promise<string> {
  if (given) return given;
  const rows = await ctx.db.control('conflicts as c')
    .join('release_states as s', 's.current_run_id', 'c.run_id')
    .where('c.status', 'open')
    .distinct('c.release')
    .orderBy('c.release');
  if (rows.length === 1) return rows[0].release as string;
  throw new TributaryError('usage', rows.length === 0 ? 'no release has open conflicts' : `several releases have open conflicts (${rows.map((r) => r.release).join(', ')}): pass --release`);
}

export async function decidePatternCommand(ctx: Ctx, o: Record<string, unknown>, h: Pick<CliHelpers, 'out' | 'actor'>): Promise<void> {
  const choice = patternChoice(o);
  const release = await patternRelease(ctx, o.release as string | undefined);
  const id = String(o.pattern);
  if (o.dryRun) {
    const plan = await decidePattern(ctx, release, id, choice, { actor: h.actor(), rationale: '', dryRun: true });
    return h.out(plan, () => renderPatternOutcome(plan));
  }
  await authorizeCli(ctx, h.actor(), 'decide', release);
  const res = await decidePattern(ctx, release, id, choice, { actor: h.actor(), rationale: String(o.rationale ?? '') });
  h.out(res, () => renderPatternOutcome(res));
}

export function registerPatternCommands(program: Command, h: CliHelpers): void {
  program
    .command('undo <decision>')
    .description('take back a decision (D-<n>, or a conflict code with --release) or a pattern decision (PD-<n>): the conflicts are open again and the data as before (--dry-run shows what it restores)')
    .option('--release <release>', 'the release of a conflict code')
    .option('--rationale <text>', 'why (required)')
    .option('--dry-run', 'show what the undo restores, without applying it')
    .action(async (target: string, o: { release?: string; rationale?: string; dryRun?: boolean }) => {
      await h.withCtx(async (ctx) => {
        if (o.dryRun) {
          const plan = await undoDecision(ctx, target, { actor: h.actor(), rationale: '', dryRun: true, ...(o.release ? { release: o.release } : {}) });
          return h.out(plan, () => renderUndo(plan));
        }
        await authorizeCli(ctx, h.actor(), 'decide', o.release);
        const res = await undoDecision(ctx, target, { actor: h.actor(), rationale: o.rationale ?? '', ...(o.release ? { release: o.release } : {}) });
        h.out(res, () => renderUndo(res));
      });
    });

  const policy = program.command('policy').description('rules learnt from reviewers: policy proposals | policy accept <name>');
  policy
    .command('proposals')
    .description('the scoped rules that agreeing decisions (three or more on one signature, none contradicting) propose')
    .action(async () => {
      await h.withCtx(async (ctx) => {
        const proposals = await listProposals(ctx);
        h.out(proposals, () => renderProposals(proposals));
      });
    });
  policy
    .command('accept <name>')
    .description('write a proposed rule into the config file (policy.scoped, with a comment naming its decisions); the next consolidation applies it (qa_lead)')
    .action(async (name: string) => {
      await h.withCtx(async (ctx) => {
        await authorizeCli(ctx, h.actor(), 'policy');
        const res = await acceptProposal(ctx, name, { actor: h.actor() });
        h.out(res, () => `Accepted ${res.rule.name} into ${res.file} (policy.scoped), citing ${res.decisions.map((d) => `${d.release} ${d.code}`).join(', ')}.\nThe next consolidation applies it; a running bot reloads its policy from the file.`);
      });
    });
}
