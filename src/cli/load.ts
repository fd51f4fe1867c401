import type { Command } from 'commander';
import type { Ctx } from '../engine/kernel/context.js';
import { authorize } from '../engine/kernel/roles.js';
import { why } from '../engine/report/index.js';
import { loadRelease } from '../engine/load/index.js';
import { exportRelease, generateKeyPair, importRelease } from '../engine/transfer/index.js';
import { renderExport, renderImport, renderLineage, renderLoad } from '../views/text.js';

/**
 * `tributary load R2 [--from <dir>]`, `tributary why <entity> <key> --release R2`, and the transfer package's
 * operator commands: `tributary export R2 --out <dir>` and `tributary keys generate` (files an operator
 * moves and guards: no Slack form).
 */
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
    .option('--from <dir>', 'on premises: load a signed transfer package (tributary export) instead, verified first (signature, SHA-256 of each file, release, a later run); an operator file operation, not in Slack')
    .action(async (release: string, o: { confirm?: boolean; from?: string }) => {
      await h.withCtx(async (ctx) => {
        const progress = h.json() ? undefined : (step: string, info?: Record<string, unknown>) => process.stderr.write(`… ${step}${info ? ` ${JSON.stringify(info)}` : ''}\n`);
        await authorizeCli(ctx, h.actor(), 'load', release);
        if (o.from) {
          const r = await importRelease(ctx, release, { actor: h.actor(), from: o.from, ...(o.confirm ? { confirm: true } : {}) });
          return h.out(r, () => renderImport(r));
        }
        const r = await loadRelease(ctx, release, { actor: h.actor(), ...(o.confirm ? { confirm: true } : {}), ...(progress ? { progress } : {}) });
        h.out(r, () => renderLoad(r));
      });
    });

  program
    .command('export <release>')
    .description('cloud side: write the validated release as a signed transfer package (gzip COPY files, manifest, Ed25519 signature) into a new folder; an operator file operation, not in Slack')
    .requiredOption('--out <dir>', 'the package folder (new or empty)')
    .option('--key <file>', 'the private key file (else $TRIBUTARY_SIGNING_KEY, else transfer.signingKeyFile)')
    .action(async (release: string, o: { out: string; key?: string }) => {
      await h.withCtx(async (ctx) => {
        await authorizeCli(ctx, h.actor(), 'export', release);
        const r = await exportRelease(ctx, release, { actor: h.actor(), out: o.out, ...(o.key ? { keyFile: o.key } : {}) });
        h.out(r, () => renderExport(r));
      });
    });

  program
    .command('keys')
    .description('transfer package keys (operator commands, run outside the bot): keys generate')
    .command('generate')
    .description('write a new Ed25519 key pair: <name>.key (private, mode 0600: keep it in your secret store) and <name>.pub (for transfer.publicKeys on premises)')
    .requiredOption('--out <dir>', 'where to write the pair')
    .option('--name <name>', 'file name of the pair', 'tributary-transfer')
    .action((o: { out: string; name: string }) => {
      const r = generateKeyPair(o.out, o.name);
      h.out(r, () => `Wrote ${r.privateFile} (private: never commit it, never store it in a database) and ${r.publicFile} (key id ${r.keyId}).`);
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
