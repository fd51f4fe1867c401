import { Option, type Command } from 'commander';
import { releaseOrThrow } from '../config/load.js';
import { auditSummary, releaseEvents, verifyChain } from '../engine/report/index.js';
import type { Ctx } from '../engine/kernel/context.js';
import { listAutoResolutions, type AutoResolution } from '../engine/review/index.js';
import { EXIT, TributaryError } from '../errors.js';
import { redactDeep } from '../log.js';
import { verifyTravelledChains } from '../engine/transfer/index.js';
import { renderAuditMarkdown, renderAuditSummary, renderTravelled, renderVerify } from '../views/audit.js';

/** `tributary audit R2 [--format text|markdown|json]` and `tributary audit verify R2 [--head <hash>]`. */
export interface AuditCliHelpers {
  withCtx<T>(fn: (ctx: Ctx) => Promise<T>): Promise<T>;
  /** Prints the value as JSON with --json, else the text (both redacted). */
  out(value: unknown, text: () => string): void;
  json(): boolean;
}

export function registerAuditCommands(program: Command, h: AuditCliHelpers): void {
  const audit = program
    .command('audit')
    .description('the audit summary of a release, with the chain head as a witness (audit verify: check the hash chain)')
    .argument('<release>')
    .addOption(new Option('--format <format>', 'text, markdown (a table) or json (the summary, every event of the release and every automatic resolution)').choices(['text', 'markdown', 'json']).default('text'))
    .action(async (release: string, o: { format: 'text' | 'markdown' | 'json' }) => {
      await h.withCtx(async (ctx) => {
        const summary = await auditSummary(ctx, release);
        if (o.format === 'json' || h.json()) {
          const autoResolutions: AutoResolution[] = [];
          if (summary.runId) for await (const a of listAutoResolutions(ctx, release)) autoResolutions.push(a);
          const value = { summary, events: await releaseEvents(ctx.db.control, release), autoResolutions };
          return h.out(value, () => JSON.stringify(redactDeep(value), null, 2));
        }
        h.out(summary, () => (o.format === 'markdown' ? renderAuditMarkdown(summary) : renderAuditSummary(summary)));
      });
    });

  audit
    .command('verify [release]')
    .description("walk the audit hash chain and report the first broken link (exit 3); the release's events are counted; on premises, also the chains that travelled in transfer packages")
    .option('--head <hash>', 'a chain head printed earlier (a witness kept outside the database): it must still be in the chain')
    .action(async (release: string | undefined, o: { head?: string }) => {
      if (o.head !== undefined && !/^[0-9a-f]{64}$/i.test(o.head.trim())) {
        throw new TributaryError('usage', `--head takes the 64-hex-digit hash printed as "chain head" by tributary audit (got "${o.head}")`);
      }
      await h.withCtx(async (ctx) => {
        if (release) releaseOrThrow(ctx.config, release);
        const report = await verifyChain(ctx.db.control, { ...(release ? { release } : {}), ...(o.head ? { head: o.head } : {}) });
        // on premises, also the chains that travelled in imported transfer packages
        const travelled = await verifyTravelledChains(ctx, release);
        h.out(travelled.length ? { ...report, travelled } : report, () => [renderVerify(report), renderTravelled(travelled)].filter(Boolean).join('\n'));
        if (!report.intact || travelled.some((c) => !c.intact)) process.exitCode = EXIT.gate;
      });
    });
}
