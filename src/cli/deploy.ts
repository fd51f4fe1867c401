import type { Command } from 'commander';
import { TributaryError } from '../errors.js';
import { decideGo, decisionsOf, executeDeployment, getDeployment, interruptedDeployments, requestDeployment, rollbackInterruptedDeployment, rollbackRelease, unlockEnv, whereItStopped, type Deployment } from '../engine/deploy/index.js';
import { renderDeployment } from '../views/deploy.js';
import { authorizeCli, type CliHelpers } from './load.js';

/**
 * `tributary deploy R2`, `deploy go|no-go <id>`, `deploy run|status <id>`, `rollback R2`, `unlock <env>`.
 * A Go that completes the quorum runs the deployment here, in the foreground, printing each step.
 */
function stepPrinter(json: boolean): ((d: Deployment) => void) | undefined {
  if (json) return undefined;
  const seen = new Set<string>();
  return (d) => {
    for (const s of [...d.steps, ...d.undo]) {
      const key = `${s.name}:${s.status}`;
      if (seen.has(key)) continue;
      seen.add(key);
      process.stderr.write(`… ${s.name}: ${s.status}${s.ms !== undefined ? ` (${(s.ms / 1000).toFixed(1)} s)` : ''}${s.error ? `: ${s.error}` : ''}\n`);
    }
  };
}

function parseId(v: string): number {
  const id = Number(v.replace(/^#/, ''));
  if (!Number.isInteger(id) || id < 1) throw new TributaryError('usage', `a deployment id is a number (got "${v}")`);
  return id;
}

export function registerDeployCommands(program: Command, h: CliHelpers): void {
  const deploy = program
    .command('deploy')
    .description('synchronized deployment of code and data: request, go/no-go, run, status')
    .argument('[release]', 'request a deployment of this approved release (its latest bundle)')
    .option('--at <time>', 'schedule it (ISO time) inside a maintenance window')
    .option('--bundle <version>', 'a bundle version other than the latest')
    .action(async (release: string | undefined, o: { at?: string; bundle?: string }) => {
      if (!release) throw new TributaryError('usage', 'tributary deploy <release> [--at <time>], or tributary deploy go|no-go|run|status <id>');
      const at = o.at ? new Date(o.at) : undefined;
      if (at && Number.isNaN(at.getTime())) throw new TributaryError('usage', `--at takes an ISO time, e.g. 2026-11-26T22:00:00Z (got "${o.at}")`);
      await h.withCtx(async (ctx) => {
        await authorizeCli(ctx, h.actor(), 'deploy', release);
        const d = await requestDeployment(ctx, release, { actor: h.actor(), ...(at ? { at } : {}), ...(o.bundle ? { bundleVersion: Number(o.bundle) } : {}) });
        h.out(d, () => `${renderDeployment(d)}\nRelease managers decide: tributary deploy go ${d.id} --rationale "…" (or no-go), or Go on its card in Slack.`);
      });
    });

  for (const decision of ['go', 'no-go'] as const) {
    deploy
      .command(`${decision} <id>`)
      .description(decision === 'go' ? 'say Go (release_manager); the Go that completes the quorum runs it now (or at its window)' : 'say No-go: the deployment is rejected')
      .requiredOption('--rationale <text>', 'why (audited)')
      .action(async (idText: string, o: { rationale: string }) => {
        await h.withCtx(async (ctx) => {
          await authorizeCli(ctx, h.actor(), 'go');
          const res = await decideGo(ctx, parseId(idText), { actor: h.actor(), decision, rationale: o.rationale });
          if (!res.ready) {
            const decisions = await decisionsOf(ctx.db.control, res.deployment.id);
            h.out(res.deployment, () => `${renderDeployment(res.deployment, decisions)}\n${res.deployment.status === 'awaiting-go' ? `${res.gos} Go so far; needs ${res.needed}, one of them from someone other than ${res.deployment.requested_by}` : ''}`);
            return;
          }
          const d = await executeDeployment(ctx, res.deployment.id, { actor: h.actor(), ...(stepPrinter(h.json()) ? { progress: stepPrinter(h.json())! } : {}) });
          h.out(d, () => renderDeployment(d));
          if (d.status !== 'succeeded') process.exitCode = 1;
        });
      });
  }

  deploy
    .command('run <id>')
    .description('run an approved deployment now, or resume an interrupted one (its process died)')
    .action(async (idText: string) => {
      await h.withCtx(async (ctx) => {
        await authorizeCli(ctx, h.actor(), 'deploy');
        const d = await executeDeployment(ctx, parseId(idText), { actor: h.actor(), ...(stepPrinter(h.json()) ? { progress: stepPrinter(h.json())! } : {}) });
        h.out(d, () => renderDeployment(d));
        if (d.status !== 'succeeded') process.exitCode = 1;
      });
    });

  deploy
    .command('status [id]')
    .description('one deployment, or the interrupted ones')
    .action(async (idText?: string) => {
      await h.withCtx(async (ctx) => {
        if (idText) {
          const d = await getDeployment(ctx.db.control, parseId(idText));
          const decisions = await decisionsOf(ctx.db.control, d.id);
          h.out({ ...d, decisions }, () => renderDeployment(d, decisions));
          return;
        }
        const list = await interruptedDeployments(ctx);
        h.out(list, () => (list.length ? list.map((d) => `${renderDeployment(d)}\n  ${whereItStopped(d)}\n  resume: tributary deploy run ${d.id} · roll back: tributary rollback ${d.release} --rationale "…"`).join('\n\n') : 'No interrupted deployment.'));
      });
    });

  program
    .command('rollback <release>')
    .description("roll back the release's last deployment: data restored from its backup and verified, schema down, code back (release_manager)")
    .requiredOption('--rationale <text>', 'why (audited)')
    .action(async (release: string, o: { rationale: string }) => {
      await h.withCtx(async (ctx) => {
        await authorizeCli(ctx, h.actor(), 'rollback', release);
        const interrupted = (await interruptedDeployments(ctx)).find((d) => d.release === release);
        const d = interrupted
          ? await rollbackInterrupted(ctx, interrupted, h.actor(), o.rationale, stepPrinter(h.json()))
          : await rollbackRelease(ctx, release, { actor: h.actor(), rationale: o.rationale, ...(stepPrinter(h.json()) ? { progress: stepPrinter(h.json())! } : {}) });
        // an approved deployment that never started is cancelled: nothing was done, nothing is locked
        const cancelled = d.status === 'cancelled';
        h.out(d, () => `${renderDeployment(d)}${cancelled ? '' : `\n${d.env} stays locked until a release_manager unlocks it: tributary unlock ${d.env}`}`);
        // restored but failing its smoke tests is not a clean rollback: a script must look
        if (d.status !== 'rolled-back' && !cancelled) process.exitCode = 1;
      });
    });

  program
    .command('unlock <env>')
    .description('release the env lock a deployment or a rollback left (release_manager)')
    .option('--rationale <text>', 'why (audited)')
    .action(async (env: string, o: { rationale?: string }) => {
      await h.withCtx(async (ctx) => {
        await authorizeCli(ctx, h.actor(), 'unlock');
        const r = await unlockEnv(ctx, env, { actor: h.actor(), ...(o.rationale ? { rationale: o.rationale } : {}) });
        h.out(r, () => (r.was ? `${env} unlocked (it was held by ${r.was.holder}${r.was.deployment_id ? ` for deployment #${r.was.deployment_id}` : ''})` : `${env} was not locked`));
      });
    });
}

function rollbackInterrupted(ctx: Parameters<typeof executeDeployment>[0], d: Deployment, actor: string, rationale: string, progress?: (d: Deployment) => void): Promise<Deployment> {
  return rollbackInterruptedDeployment(ctx, d.id, { actor, rationale, ...(progress ? { progress } : {}) });
}
