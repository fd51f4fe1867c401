import fs from 'node:fs';
import path from 'node:path';
import { consolidate } from '../engine/consolidate/index.js';
import { createBundle, decideGo, decisionsOf, executeDeployment, getDeployment, interruptedDeployments, listBundles, requestDeployment, requireBundle, rollbackInterruptedDeployment, rollbackRelease, unlockEnv, whereItStopped, type Deployment } from '../engine/deploy/index.js';
import { installTagging, tagRelease, type TagResult } from '../engine/gate/index.js';
import type { Ctx } from '../engine/kernel/context.js';
import { currentRunId } from '../engine/kernel/workArea.js';
import { loadRelease } from '../engine/load/index.js';
import { archiveReleases, coverageGrowth, restoreRelease, runNightlyNow, setChartPath } from '../engine/nightly/index.js';
import { promoteRelease } from '../engine/promote/index.js';
import { auditSummary, releaseEvents, releaseStatus, resultCounts, resultRecords, verifyChain, why } from '../engine/report/index.js';
import { acceptProposal, applyDecision, autoResolutionCounts, decidePattern, listPatterns, listProposals, onlyReleaseWithOpenConflicts, undoDecision, type PatternChoice, isAutoCode, listAutoResolutions, listConflicts, nextConflict, planDecision, releaseOfCode, showAutoResolution, showConflict, type AutoFilter, type AutoResolution, type Decision } from '../engine/review/index.js';
import { renderAutoHeader, renderAutoLine, renderAutoResolution } from '../views/autoResolutions.js';
import { renderPatternOutcome, renderPatterns, renderProposals, renderUndo } from '../views/patterns.js';
import type { KeepByRule } from '../config/schema.js';
import { exportRelease, importRelease, verifyTravelledChains } from '../engine/transfer/index.js';
import { approveRelease, runTests, type Tier } from '../engine/tiers/index.js';
import { decideFinding, isFindingCode, validateRelease, waiveFinding } from '../engine/validate/index.js';
import { EXIT, TributaryError } from '../errors.js';
import { redactDeep } from '../log.js';
import { renderAuditMarkdown, renderAuditSummary, renderTravelled, renderVerify } from '../views/audit.js';
import { renderBundle, renderBundleList, renderDeployment } from '../views/deploy.js';
import { renderArchive, renderCoverage, renderNightly } from '../views/nightly.js';
import { renderPromote, renderPromoteRefused, type PromoteRefusal } from '../views/promote.js';
import { renderProgress, renderTestRun } from '../views/testing.js';
import { renderCarried, renderConflict, renderCounts, renderDecision, renderExport, renderImport, renderLineage, renderLoad, renderOffenders, renderQueue, renderStatus, renderTag } from '../views/text.js';
import { renderFindingDecision, renderValidation, renderWaiver } from '../views/validation.js';
import { coverageChartPngOf, writeCoverageChart } from './charts.js';
import type { Io, Run } from './io.js';
import type { Parsed } from './table.js';

/**
 * The run of every command of the table (src/commands/table.ts), by its id: the engine call and its result
 * rendered through src/views, the same whichever adapter received it. The adapter has parsed the words,
 * checked the names and the role; a run checks what only its engine call can.
 */
const str = (v: Parsed['flags'][string]): string | undefined => (typeof v === 'string' ? v : undefined);
const list = (v: Parsed['flags'][string]): string[] => (Array.isArray(v) ? v : typeof v === 'string' ? [v] : []);
const arg = (p: Parsed, name: string): string => p.args[name]!;

function deploymentId(v: string): number {
  const id = Number(v.replace(/^#/, ''));
  if (!Number.isInteger(id) || id < 1) throw new TributaryError('usage', `a deployment id is a number (got "${v}")`);
  return id;
}

/** A deployment's steps as they change, one line each. */
function stepLines(io: Io): (d: Deployment) => void {
  const seen = new Set<string>();
  return (d) => {
    for (const s of [...d.steps, ...d.undo]) {
      const key = `${s.name}:${s.status}`;
      if (seen.has(key)) continue;
      seen.add(key);
      io.progress(`${s.name}: ${s.status}${s.ms !== undefined ? ` (${(s.ms / 1000).toFixed(1)} s)` : ''}${s.error ? `: ${s.error}` : ''}`);
    }
  };
}

/** `--keep 2`, `--keep-both [--rename 1.email=x]`, `--merge a=1`, `--delete [--cascade]`, `--repoint <key>`, `--waive`: exactly one. */
export function decisionOf(f: Parsed['flags'], both: boolean): Decision {
  const chosen = ['keep', 'keep-both', 'merge', 'delete', 'repoint', 'waive'].filter((k) => f[k] !== undefined);
  if (chosen.length !== 1) throw new TributaryError('usage', 'choose exactly one of --keep <version>, --keep-both, --merge attr=<version>…, --delete, --repoint <key>, --waive');
  if (f.keep !== undefined) return { action: 'keep', version: Number(f.keep) };
  if (f['keep-both']) {
    const rename: Record<number, Record<string, string>> = {};
    for (const r of list(f.rename)) {
      const m = /^(\d+)\.([A-Za-z_][A-Za-z0-9_]*)=(.+)$/.exec(r);
      if (!m) throw new TributaryError('usage', `--rename takes <version>.<column>=<value> (got "${r}")`);
      (rename[Number(m[1])] ??= {})[m[2]!] = m[3]!;
    }
    return { action: 'keep-both', rename };
  }
  if (f.merge !== undefined) {
    const picks: Record<string, number> = {};
    for (const p of list(f.merge)) {
      const m = /^([A-Za-z_][A-Za-z0-9_]*)=(\d+)$/.exec(p);
      if (!m) throw new TributaryError('usage', `--merge takes <attribute>=<version> (got "${p}")`);
      picks[m[1]!] = Number(m[2]);
    }
    return { action: 'merge', picks };
  }
  if (f.delete) return { action: both ? 'delete-both' : 'delete', cascade: !!f.cascade };
  if (f.repoint !== undefined) return { action: 'repoint', to: String(f.repoint) };
  return { action: 'waive' };
}

/** `decide F-003 --release R2 --delete [--cascade] | --repoint <key> --rationale "…" [--dry-run]`. */
async function decideFindingRun(ctx: Ctx, code: string, p: Parsed, io: Io): Promise<void> {
  const release = str(p.flags.release);
  if (!release) throw new TributaryError('usage', `tributary decide ${code} --release <release> …: a finding needs its release`);
  const chosen = ['delete', 'repoint', 'keep', 'keep-both', 'merge', 'waive'].filter((k) => p.flags[k] !== undefined);
  if (chosen.length !== 1 || !['delete', 'repoint'].includes(chosen[0]!)) {
    throw new TributaryError('usage', `a finding is decided with exactly one of --delete [--cascade] or --repoint <key> (a qa_lead can waive it: tributary waive ${code} --release ${release})`);
  }
  const d: Decision = p.flags.repoint !== undefined ? { action: 'repoint', to: String(p.flags.repoint) } : { action: 'delete', cascade: !!p.flags.cascade };
  const r = await decideFinding(ctx, release, code, d, { actor: io.actor, rationale: str(p.flags.rationale) ?? '' }, { dryRun: !!p.flags['dry-run'] });
  io.out(r, () => renderFindingDecision(r));
}

async function deployDecision(ctx: Ctx, p: Parsed, io: Io, decision: 'go' | 'no-go'): Promise<void> {
  const res = await decideGo(ctx, deploymentId(arg(p, 'id')), { actor: io.actor, decision, rationale: str(p.flags.rationale)! });
  if (!res.ready) {
    const decisions = await decisionsOf(ctx.db.control, res.deployment.id);
    io.out(res.deployment, () => `${renderDeployment(res.deployment, decisions)}\n${res.deployment.status === 'awaiting-go' ? `${res.gos} Go so far; needs ${res.needed}, one of them from someone other than ${res.deployment.requested_by}` : ''}`);
    return;
  }
  const d = await executeDeployment(ctx, res.deployment.id, { actor: io.actor, progress: stepLines(io) });
  io.out(d, () => renderDeployment(d));
  if (d.status !== 'succeeded') io.exit(EXIT.failure);
}

/** `conflicts <release> --status auto-resolved [--rule r] [--entity e]`: streamed, a line (or a JSON array element) per resolution as it is read. */
async function autoResolutions(ctx: Ctx, release: string, p: Parsed, io: Io): Promise<void> {
  const rule = str(p.flags.rule);
  const entity = str(p.flags.entity);
  const filter: AutoFilter = { ...(rule ? { rule } : {}), ...(entity ? { entity } : {}) };
  if (!io.json) await io.line(renderAutoHeader(release, await autoResolutionCounts(ctx, release, filter)));
  // a JSON array, one element a line: each is written when the next (or the end) is read
  let held: string | undefined;
  for await (const a of listAutoResolutions(ctx, release, filter)) {
    if (!io.json) {
      await io.line(renderAutoLine(a));
      continue;
    }
    await io.line(held === undefined ? '[' : `${held},`);
    held = JSON.stringify(redactDeep(a));
  }
  if (io.json) {
    if (held === undefined) await io.line('[]');
    else {
      await io.line(held);
      await io.line(']');
    }
  }
}

/** A pattern's choice from decide's flags: by env, feature or rule, keep both, delete or waive; never a version number. */
export function patternChoice(f: Parsed['flags']): PatternChoice {
  for (const flag of ['keep', 'merge', 'repoint', 'rename'] as const) {
    if (f[flag] !== undefined) {
      throw new TributaryError('usage', `--${flag} names ${flag === 'repoint' ? 'one parent key' : 'versions by number'}, which differ from conflict to conflict: a pattern is decided with --keep-env, --keep-feature, --keep-by-rule, --keep-both, --delete or --waive`);
    }
  }
  const chosen = ['keep-env', 'keep-feature', 'keep-by-rule', 'keep-both', 'delete', 'waive'].filter((k) => f[k] !== undefined);
  if (chosen.length !== 1) throw new TributaryError('usage', 'with --pattern choose exactly one of --keep-env <env>, --keep-feature <feature>, --keep-by-rule <rule>, --keep-both, --delete, --waive');
  if (f['keep-env']) return { keepEnv: String(f['keep-env']) };
  if (f['keep-feature']) return { keepFeature: String(f['keep-feature']) };
  if (f['keep-by-rule']) return { keepByRule: String(f['keep-by-rule']) as KeepByRule };
  if (f['keep-both']) return { action: 'keep-both' };
  if (f.delete) return { action: 'delete-both', ...(f.cascade ? { cascade: true } : {}) };
  return { action: 'waive' };
}

/** `decide --pattern P-3 --keep-env ST-1 --rationale "…" [--release R2] [--dry-run]`: every open conflict of the pattern. */
async function decidePatternRun(ctx: Ctx, p: Parsed, io: Io): Promise<void> {
  if (p.args.code) throw new TributaryError('usage', `decide --pattern ${String(p.flags.pattern)} decides a pattern: name no code (${p.args.code})`);
  const choice = patternChoice(p.flags);
  const release = str(p.flags.release) ?? (await onlyReleaseWithOpenConflicts(ctx));
  const id = String(p.flags.pattern);
  const dryRun = !!p.flags['dry-run'];
  const res = await decidePattern(ctx, release, id, choice, { actor: io.actor, rationale: dryRun ? '' : (str(p.flags.rationale) ?? ''), ...(dryRun ? { dryRun: true } : {}) });
  io.out(res, () => renderPatternOutcome(res));
}

export const RUNS: Record<string, Run> = {
  async status(ctx, p, io) {
    const release = p.args.release;
    const names = release ? [release] : [...ctx.config.releases.keys()];
    const all: Awaited<ReturnType<typeof releaseStatus>>[] = [];
    for (const r of names) all.push(await (io.statusOf ? io.statusOf(r) : releaseStatus(ctx, r)));
    io.out(release ? all[0] : all, () => all.map(renderStatus).join('\n\n'));
  },

  async tag(ctx, p, io) {
    const install = str(p.flags.install);
    if (install) {
      const r = await installTagging(ctx, install, io.actor);
      io.out(r, () => `Installed tag columns and trigger in ${r.env}: ${r.tables.join(', ')}\nTest code tags its rows with: SET tributary.release = 'R2'; SET tributary.feature = 'FEAT-101';`);
      return;
    }
    const release = p.args.release;
    if (!release) throw new TributaryError('usage', 'tributary tag <release> [--env <env>], or tributary tag --install <env>');
    const env = str(p.flags.env);
    try {
      const r = await tagRelease(ctx, release, { actor: io.actor, ...(env ? { env } : {}) });
      io.out(r, () => renderTag(r));
    } catch (err) {
      if (err instanceof TributaryError && err.code === 'gate_untagged') {
        const r = err.details.result as TagResult;
        io.out({ error: err.code, ...r }, () => renderOffenders(r));
        io.exit(EXIT.gate);
        return;
      }
      throw err;
    }
  },

  async consolidate(ctx, p, io) {
    const release = arg(p, 'release');
    const env = str(p.flags.env);
    const r = await consolidate(ctx, release, { actor: io.actor, progress: (step, i) => io.progress(step, i), ...(env ? { env } : {}) });
    const counts = await resultCounts(ctx, r.runId);
    const queue = await listConflicts(ctx, release, { limit: 25 });
    const carried = renderCarried(r.carried);
    io.out({ ...r, counts }, () => `${renderCounts(release, counts, r.steps)}${carried ? `\n${carried}` : ''}\n\n${renderQueue(release, queue)}${counts.manual > 25 ? `\n  … see tributary conflicts ${release}` : ''}`);
  },

  async conflicts(ctx, p, io) {
    const release = arg(p, 'release');
    if (p.flags.status === 'auto-resolved') return autoResolutions(ctx, release, p, io);
    if (p.flags.patterns) {
      const patterns = await listPatterns(ctx, release);
      return io.out(patterns, () => renderPatterns(release, patterns));
    }
    const priority = str(p.flags.priority);
    const rows = await listConflicts(ctx, release, { status: (str(p.flags.status) ?? 'open') as 'open' | 'decided' | 'all', ...(priority ? { priority } : {}) });
    io.out(rows, () => renderQueue(release, rows));
  },

  async 'conflicts next'(ctx, p, io) {
    const release = arg(p, 'release');
    const c = await nextConflict(ctx, release, io.actor);
    if (!c) return io.out(null, () => `No unassigned open conflicts in ${release}.`);
    const full = await showConflict(ctx, release, c.code);
    io.out(full, () => renderConflict(full));
  },

  async 'conflicts show'(ctx, p, io) {
    if (isAutoCode(arg(p, 'code'))) {
      const a = await showAutoResolution(ctx, arg(p, 'release'), arg(p, 'code'));
      return io.out(a, () => renderAutoResolution(a));
    }
    const c = await showConflict(ctx, arg(p, 'release'), arg(p, 'code'));
    io.out(c, () => renderConflict(c));
  },

  async review() {
    throw new TributaryError('usage', 'review posts cards in Slack: /release review <release>');
  },

  async decide(ctx, p, io) {
    if (p.flags.pattern !== undefined) return decidePatternRun(ctx, p, io);
    const code = p.args.code;
    if (!code) throw new TributaryError('usage', 'tributary decide <code> …, or tributary decide --pattern P-<n> …');
    if (isFindingCode(code)) return decideFindingRun(ctx, code, p, io);
    const release = str(p.flags.release) ?? (await releaseOfCode(ctx, code));
    // an automatic resolution (A-…) is about versions: deciding re-opens it
    const versions = isAutoCode(code) || !!(await showConflict(ctx, release, code)).detail.versions;
    const d = decisionOf(p.flags, versions);
    if (p.flags['dry-run']) {
      const plan = await planDecision(ctx, release, code, d);
      return io.out(plan, () => renderDecision(plan));
    }
    const res = await applyDecision(ctx, release, code, d, { actor: io.actor, rationale: str(p.flags.rationale) ?? '' });
    io.out(res, () => renderDecision(res));
  },

  async undo(ctx, p, io) {
    const release = str(p.flags.release);
    const dryRun = !!p.flags['dry-run'];
    const res = await undoDecision(ctx, arg(p, 'decision'), { actor: io.actor, rationale: dryRun ? '' : (str(p.flags.rationale) ?? ''), ...(dryRun ? { dryRun: true } : {}), ...(release ? { release } : {}) });
    io.out(res, () => renderUndo(res));
  },

  async policy() {
    throw new TributaryError('usage', 'tributary policy proposals, or tributary policy accept <name>');
  },

  async 'policy proposals'(ctx, _p, io) {
    const proposals = await listProposals(ctx);
    io.out(proposals, () => renderProposals(proposals));
  },

  async 'policy accept'(ctx, p, io) {
    const res = await acceptProposal(ctx, arg(p, 'name'), { actor: io.actor });
    io.out(res, () => `Accepted ${res.rule.name} into ${res.file} (policy.scoped), citing ${res.decisions.map((d) => `${d.release} ${d.code}`).join(', ')}.\nThe next consolidation applies it; a running bot reloads its policy from the file.`);
  },

  async result(ctx, p, io) {
    const runId = await currentRunId(ctx, arg(p, 'release'));
    const entity = str(p.flags.entity);
    const entities = entity ? [entity] : ctx.config.entities.map((e) => e.name);
    for (const name of entities) {
      if (!ctx.config.entities.some((e) => e.name === name)) throw new TributaryError('usage', `unknown entity "${name}" (dataset: ${ctx.config.entities.map((e) => e.name).join(', ')})`);
      for await (const r of resultRecords(ctx, runId, name)) {
        if (!p.flags.all && r.status !== 'final') continue;
        await io.line(JSON.stringify(r));
      }
    }
  },

  async why(ctx, p, io) {
    const release = str(p.flags.release)!;
    const rows = await why(ctx, arg(p, 'entity'), arg(p, 'key'), release);
    io.out(rows, () => renderLineage(release, rows));
  },

  async validate(ctx, p, io) {
    const r = await validateRelease(ctx, arg(p, 'release'), { actor: io.actor });
    io.out(r, () => renderValidation(r));
    if (r.counts.open > 0) io.exit(EXIT.gate);
  },

  async waive(ctx, p, io) {
    const f = await waiveFinding(ctx, str(p.flags.release)!, arg(p, 'finding'), { actor: io.actor, user: io.user, groups: io.groups, rationale: str(p.flags.rationale) ?? '' });
    io.out(f, () => renderWaiver(f));
  },

  async load(ctx, p, io) {
    // on premises: the signed transfer package instead of the consolidated release (CLI only: a folder on this machine)
    const from = str(p.flags.from);
    if (from) {
      const r = await importRelease(ctx, arg(p, 'release'), { actor: io.actor, from, ...(p.flags.confirm ? { confirm: true } : {}) });
      return io.out(r, () => renderImport(r));
    }
    const r = await loadRelease(ctx, arg(p, 'release'), { actor: io.actor, ...(p.flags.confirm ? { confirm: true } : {}), progress: (step, i) => io.progress(step, i) });
    io.out(r, () => renderLoad(r));
  },

  async export(ctx, p, io) {
    const key = str(p.flags.key);
    const r = await exportRelease(ctx, arg(p, 'release'), { actor: io.actor, out: str(p.flags.out)!, ...(key ? { keyFile: key } : {}) });
    io.out(r, () => renderExport(r));
  },

  async test(ctx, p, io) {
    const f = p.flags;
    const chosen = [f.tier !== undefined, f.feature !== undefined, f.smoke !== undefined].filter(Boolean).length;
    if (chosen !== 1) throw new TributaryError('usage', 'choose one of --tier 1, --tier 2, --feature <feature>, --smoke');
    if (f.env && f.tier) throw new TributaryError('usage', '--env goes with --feature or --smoke (tier 1 runs on staging, tier 2 on master)');
    const tier: Tier = f.tier ? (f.tier as Tier) : f.feature ? 'feature' : 'smoke';
    const feature = str(f.feature);
    const env = str(f.env);
    const r = await runTests(ctx, arg(p, 'release'), { tier, actor: io.actor, ...(feature ? { feature } : {}), ...(env ? { env } : {}), progress: (x) => io.progress(renderProgress(x)) });
    io.out(r, () => renderTestRun(r));
    if (r.status !== 'passed') io.exit(EXIT.failure);
  },

  async approve(ctx, p, io) {
    const release = arg(p, 'release');
    const r = await approveRelease(ctx, release, { actor: io.actor, rationale: str(p.flags.rationale)!, override: !!p.flags.override });
    io.out(r, () => `${release} approved by ${r.approvedBy} on tier 2 run #${r.runId}${r.override ? ' (OVERRIDE of a failed gate)' : ''}: ready for production`);
  },

  async promote(ctx, p, io) {
    const release = arg(p, 'release');
    try {
      const r = await promoteRelease(ctx, release, { actor: io.actor, progress: (step, i) => io.progress(step, i) });
      io.out(r, () => renderPromote(r));
    } catch (err) {
      if (err instanceof TributaryError && err.code === 'gate_conflicts') {
        const refusal: PromoteRefusal = { release, conflicts: (err.details.conflicts as PromoteRefusal['conflicts']) ?? [], issues: (err.details.issues as string[]) ?? [] };
        io.out({ error: err.code, message: err.message, ...refusal }, () => renderPromoteRefused(refusal));
        io.exit(EXIT.gate);
        return;
      }
      throw err;
    }
  },

  async bundle(ctx, p, io) {
    const release = arg(p, 'release');
    const code = str(p.flags.code);
    if (code !== undefined && (p.flags.version !== undefined || p.flags.list)) throw new TributaryError('usage', '--code makes a bundle; --version and --list show them: choose one');
    if (p.flags.list) {
      const all = await listBundles(ctx, release);
      return io.out(all, () => renderBundleList(release, all));
    }
    if (code === undefined) {
      const b = await requireBundle(ctx, release, p.flags.version !== undefined ? Number(p.flags.version) : undefined);
      return io.out(b, () => renderBundle(b));
    }
    const b = await createBundle(ctx, release, { code, actor: io.actor });
    io.out(b, () => renderBundle(b));
  },

  async deploy(ctx, p, io) {
    const at = str(p.flags.at) !== undefined ? new Date(str(p.flags.at)!) : undefined;
    if (at && Number.isNaN(at.getTime())) throw new TributaryError('usage', `--at takes an ISO time, e.g. 2026-11-26T22:00:00Z (got "${String(p.flags.at)}")`);
    const d = await requestDeployment(ctx, arg(p, 'release'), { actor: io.actor, ...(at ? { at } : {}), ...(p.flags.bundle !== undefined ? { bundleVersion: Number(p.flags.bundle) } : {}) });
    io.out(d, () => `${renderDeployment(d)}\nRelease managers decide: tributary deploy go ${d.id} --rationale "…" (or no-go), or Go on its card in Slack.`);
  },

  'deploy go': (ctx, p, io) => deployDecision(ctx, p, io, 'go'),
  'deploy no-go': (ctx, p, io) => deployDecision(ctx, p, io, 'no-go'),

  async 'deploy run'(ctx, p, io) {
    const d = await executeDeployment(ctx, deploymentId(arg(p, 'id')), { actor: io.actor, progress: stepLines(io) });
    io.out(d, () => renderDeployment(d));
    if (d.status !== 'succeeded') io.exit(EXIT.failure);
  },

  async 'deploy status'(ctx, p, io) {
    if (p.args.id) {
      const d = await getDeployment(ctx.db.control, deploymentId(p.args.id));
      const decisions = await decisionsOf(ctx.db.control, d.id);
      return io.out({ ...d, decisions }, () => renderDeployment(d, decisions));
    }
    const all = await interruptedDeployments(ctx);
    io.out(all, () => (all.length ? all.map((d) => `${renderDeployment(d)}\n  ${whereItStopped(d)}\n  resume: tributary deploy run ${d.id} · roll back: tributary rollback ${d.release} --rationale "…"`).join('\n\n') : 'No interrupted deployment.'));
  },

  async rollback(ctx, p, io) {
    const release = arg(p, 'release');
    const rationale = str(p.flags.rationale)!;
    const interrupted = (await interruptedDeployments(ctx)).find((d) => d.release === release);
    const d = interrupted
      ? await rollbackInterruptedDeployment(ctx, interrupted.id, { actor: io.actor, rationale, progress: stepLines(io) })
      : await rollbackRelease(ctx, release, { actor: io.actor, rationale, progress: stepLines(io) });
    // an approved deployment that never started is cancelled: nothing was done, nothing is locked
    const cancelled = d.status === 'cancelled';
    io.out(d, () => `${renderDeployment(d)}${cancelled ? '' : `\n${d.env} stays locked until a release_manager unlocks it: tributary unlock ${d.env}`}`);
    // restored but failing its smoke tests is not a clean rollback: a script must look
    if (d.status !== 'rolled-back' && !cancelled) io.exit(EXIT.failure);
  },

  async unlock(ctx, p, io) {
    const env = arg(p, 'env');
    const rationale = str(p.flags.rationale);
    const r = await unlockEnv(ctx, env, { actor: io.actor, ...(rationale ? { rationale } : {}) });
    io.out(r, () => (r.was ? `${env} unlocked (it was held by ${r.was.holder}${r.was.deployment_id ? ` for deployment #${r.was.deployment_id}` : ''})` : `${env} was not locked`));
  },

  async nightly(ctx, p, io) {
    if (!p.flags.now) throw new TributaryError('usage', 'tributary nightly --now (the bot runs the schedule in nightly.schedule)');
    const r = await runNightlyNow(ctx, io.actor);
    if (r.row.status !== 'done' || !r.summary) throw new TributaryError('runner_failed', `the nightly run failed: ${r.row.error ?? 'unknown error'}`);
    const chart = r.coverage ? (await writeCoverageChart(ctx, r.coverage, `nightly-${r.row.id}-coverage.png`)).file : undefined;
    if (chart) await setChartPath(ctx, r.row.id, chart);
    io.out({ summary: r.summary, coverage: r.coverage, chart }, () => `${renderNightly(r.summary!)}${chart ? `\n  coverage chart: ${chart}` : ''}`);
    if (r.summary.status !== 'passed') io.exit(EXIT.failure);
  },

  async coverage(ctx, p, io) {
    const c = await coverageGrowth(ctx);
    const file = str(p.flags.chart);
    const chart = file ? path.resolve(file) : undefined;
    if (chart) fs.writeFileSync(chart, await coverageChartPngOf(c));
    io.out({ ...c, ...(chart ? { chart } : {}) }, () => `${renderCoverage(c)}${chart ? `\nchart: ${chart}` : ''}`);
  },

  async archive(ctx, p, io) {
    const olderThan = str(p.flags['older-than'])!;
    const dryRun = !!p.flags['dry-run'];
    if (!dryRun && !p.flags.yes) {
      const plan = await archiveReleases(ctx, { olderThan, actor: io.actor, dryRun: true });
      if (plan.archived.length > 0) throw new TributaryError('unconfirmed', `${renderArchive(plan)}\nNothing was done: add --yes to archive and drop these partitions.`, { plan });
    }
    const r = await archiveReleases(ctx, { olderThan, actor: io.actor, ...(dryRun ? { dryRun: true } : {}), progress: (release, table) => io.progress(`${release}: ${table}`) });
    io.out(r, () => renderArchive(r));
  },

  async restore(ctx, p, io) {
    const release = arg(p, 'release');
    const manifest = str(p.flags.manifest);
    const r = await restoreRelease(ctx, release, { actor: io.actor, ...(manifest ? { manifest: path.resolve(manifest) } : {}) });
    io.out(r, () => [`${release} restored into ${r.env} from ${r.manifest} (${(r.ms / 1000).toFixed(1)} s), counts and checksums equal to the manifest's:`, ...r.tables.map((t) => `  ${t.table}: ${t.rows} rows, checksum ${t.checksum}`)].join('\n'));
  },

  async audit(ctx, p, io) {
    const release = arg(p, 'release');
    const format = str(p.flags.format) ?? 'text';
    const summary = await auditSummary(ctx, release);
    if (format === 'json' || io.json) {
      const autoResolutions: AutoResolution[] = [];
      if (summary.runId) for await (const a of listAutoResolutions(ctx, release)) autoResolutions.push(a);
      const value = { summary, events: await releaseEvents(ctx.db.control, release), autoResolutions };
      return io.out(value, () => JSON.stringify(redactDeep(value), null, 2));
    }
    io.out(summary, () => (format === 'markdown' ? renderAuditMarkdown(summary) : renderAuditSummary(summary)));
  },

  async 'audit verify'(ctx, p, io) {
    const head = str(p.flags.head);
    if (head !== undefined && !/^[0-9a-f]{64}$/i.test(head.trim())) throw new TributaryError('usage', `--head takes the 64-hex-digit hash printed as "chain head" by tributary audit (got "${head}")`);
    const release = p.args.release;
    const report = await verifyChain(ctx.db.control, { ...(release ? { release } : {}), ...(head ? { head } : {}) });
    // on premises, also the chains that travelled in imported transfer packages
    const travelled = await verifyTravelledChains(ctx, release);
    io.out(travelled.length ? { ...report, travelled } : report, () => [renderVerify(report), renderTravelled(travelled)].filter(Boolean).join('\n'));
    if (!report.intact || travelled.some((c) => !c.intact)) io.exit(EXIT.gate);
  },
};
