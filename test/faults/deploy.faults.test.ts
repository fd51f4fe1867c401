import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createBundle } from '../../src/engine/deploy/bundle.js';
import { decideGo, executeDeployment, getDeployment, interruptedDeployments, requestDeployment, STEPS, unlockEnv } from '../../src/engine/deploy/deployment.js';
import { dumpProduction, readyToDeploy } from '../deploy-setup.js';
import { report } from './harness.js';
import type { TestEnv } from '../helpers.js';
import { cli, output, startCli, type CliProcess } from '../process.js';

/**
 * No rollback restores over newer writes, on any path: a real CLI rolling back is paused at each undo
 * step (TRIBUTARY_FAILPOINTS=rollback.step.<step>=pause) and killed with SIGKILL; a customer then writes
 * to a production table the deploy touched; the resume (`deploy run`, or `rollback R2` again) must
 * refuse, naming the table, and leave code and data exactly as they are. Once the row is gone again,
 * the rollback finishes. The same for the automatic rollback after a failed forward step.
 */
let env: TestEnv;
let app: string;
let version = 1;
const FILE = 'test/faults/deploy.faults.test.ts';

/** Runs a fault case and records its verdict for the suite's report (test/faults/run.ts). */
async function verdict(point: string, fn: (paused: () => void) => Promise<void>): Promise<void> {
  const v = { point, file: FILE, paused: false, recovered: false, error: undefined as string | undefined };
  try {
    await fn(() => (v.paused = true));
    v.recovered = true;
  } catch (err) {
    v.error = (err as Error).message.slice(0, 2000);
    throw err;
  } finally {
    report(v);
  }
}

beforeAll(async () => {
  app = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-faults-app-'));
  env = await readyToDeploy(app, {}, { bundle: false });
});

afterAll(async () => {
  await env?.close();
});

const codeOf = () => path.basename(fs.readlinkSync(path.join(app, 'current')));
const config = () => ['--config', env.configFile];

/** R2 deployed with a new code version (in this process); returns the deployment id and the version before. */
async function deployed(): Promise<{ id: number; before: string; data: string }> {
  version += 1;
  const before = codeOf();
  const data = await dumpProduction(env);
  await createBundle(env.ctx, 'R2', { code: `v${version}`, actor: 'U0RM1' });
  const d = await requestDeployment(env.ctx, 'R2', { actor: 'U0RM1' });
  await decideGo(env.ctx, d.id, { actor: 'U0RM2', decision: 'go', rationale: 'go ahead' });
  expect((await executeDeployment(env.ctx, d.id, { actor: 'U0RM2' })).status).toBe('succeeded');
  return { id: d.id, before, data };
}

/** Starts the CLI with a failpoint paused; resolves once it printed that it is paused there, then kills it. */
async function killedAt(point: string, args: string[], deployment: number): Promise<void> {
  const run: CliProcess = startCli([...config(), ...args], { env: { TRIBUTARY_FAILPOINTS: `${point}=pause` } });
  let stderr = '';
  run.child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  await vi.waitFor(() => expect(stderr).toContain(`failpoint ${point}: paused (pid ${run.child.pid})`), { timeout: 60_000, interval: 50 });
  run.child.kill('SIGKILL');
  expect((await run.done).signal).toBe('SIGKILL');
  // the server ends the killed process's sessions, and with them its hold on the deployment, a moment later
  // (on a busy machine, later still): the deployment reads as interrupted only from then on
  await vi.waitFor(async () => expect((await interruptedDeployments(env.ctx)).map((d) => d.id)).toContain(deployment), { timeout: 60_000, interval: 50 });
}

/** A customer signs up: a write to prod.users, a table the deploy touched. */
async function customerWrites(id: number): Promise<void> {
  await env.sql(`insert into prod.users (id, email, release) values (${id}, 'signup-${id}@x', 'R1')`);
}

const UNDO_STEPS = ['maintenance-off', 'deploy-data', 'migrate-up', 'deploy-code', 'maintenance-on', 'restart', 'smoke'] as const;

describe('a rollback killed with SIGKILL at each undo step, then a write to production, then a resume', () => {
  UNDO_STEPS.forEach((step, i) => {
    const resume = i % 2 === 0 ? ['deploy', 'run'] : ['rollback', 'R2', '--rationale', 'taking it up again'];
    it(`at ${step}: \`${resume.slice(0, 2).join(' ')}\` refuses, names prod.users, leaves code and data as they are; after the write is undone it finishes`, () => verdict(`rollback.step.${step}`, async (paused) => {
      const { id, before, data } = await deployed();
      await killedAt(`rollback.step.${step}`, ['--as', 'rm1', 'rollback', 'R2', '--rationale', 'customer reports'], id);
      paused();
      const stopped = (await interruptedDeployments(env.ctx)).find((d) => d.id === id)!;
      expect(stopped.status).toBe('rolling-back');
      expect(stopped.undo.find((s) => s.status === 'running')?.name).toBe(step === 'smoke' ? 'smoke after rollback' : `undo ${step}`);

      await customerWrites(9000 + i);
      const code = codeOf();
      const written = await dumpProduction(env);
      const args = resume[0] === 'deploy' ? ['deploy', 'run', String(id)] : resume;
      const r = await cli([...config(), '--as', 'rm2', ...args]);
      expect(r.code, output(r)).toBe(1);
      const restored = UNDO_STEPS.indexOf(step) > UNDO_STEPS.indexOf('deploy-data');
      const since = restored ? 'changed since the rollback restored it' : 'changed since the deploy';
      expect(r.stdout, output(r)).toContain(`Deployment #${id} of R2 to production: rollback-failed`);
      expect(r.stdout).toMatch(new RegExp(`ROLLBACK REFUSED: cannot roll back R2: production table prod\\.users \\(env production\\) ${since} \\(rows (\\d+) → \\d+\\)`));
      // nothing was undone after the write: code and data exactly as they were
      expect(codeOf()).toBe(code);
      expect(await dumpProduction(env)).toBe(written);
      const after = await getDeployment(env.db.control, id);
      expect(after.status).toBe('rollback-failed');
      expect(after.undo.filter((s) => s.status !== 'running')).toEqual(stopped.undo.filter((s) => s.status !== 'running'));
      expect(await env.db.control('audit_events').where({ action: 'deploy.rollback.refused', subject: `deployment #${id}` })).toHaveLength(1);
      // deploy status says where code and data stand, from the undo steps as well as the forward ones
      const status = await cli([...config(), 'deploy', 'status', String(id)]);
      const undone = UNDO_STEPS.indexOf(step) > UNDO_STEPS.indexOf('deploy-code');
      const codeNow = undone ? `code back at ${before}` : step === 'deploy-code' ? `code possibly half-way back to ${before} (its undo was interrupted)` : `code at ${code}`;
      const dataNow = restored ? 'data restored to before the deploy (verified)' : step === 'deploy-data' ? 'data restore interrupted' : 'data of R2 deployed';
      expect(status.stdout, output(status)).toContain(`where it stands: ${codeNow}, ${dataNow}`);

      // the write reconciled (the row removed), the rollback is taken up again and finishes
      await env.sql(`delete from prod.users where id = ${9000 + i}`);
      const again = await cli([...config(), '--as', 'rm1', 'rollback', 'R2', '--rationale', 'reconciled']);
      expect(again.code, output(again)).toBe(0);
      expect((await getDeployment(env.db.control, id)).status).toBe('rolled-back');
      expect(codeOf()).toBe(before);
      expect(await dumpProduction(env)).toBe(data);
      await unlockEnv(env.ctx, 'production', { actor: 'U0RM1' });
    }));
  });
});

describe('a deployment killed with SIGKILL at each forward step (and in the data copy), then resumed', () => {
  [...STEPS.map((step) => `deploy.step.${step}`), 'deploy.copy'].forEach((point) => {
    it(`at ${point}: \`deploy run\` takes it up and it ends as an uninterrupted one does (code, data, status)`, () => verdict(point, async (paused) => {
      // the reference: the same release deployed without interruption
      await deployed();
      const reference = await dumpProduction(env);
      version += 1;
      await createBundle(env.ctx, 'R2', { code: `v${version}`, actor: 'U0RM1' });
      const d = await requestDeployment(env.ctx, 'R2', { actor: 'U0RM1' });
      await decideGo(env.ctx, d.id, { actor: 'U0RM2', decision: 'go', rationale: 'go ahead' });
      await killedAt(point, ['--as', 'rm2', 'deploy', 'run', String(d.id)], d.id);
      paused();
      const r = await cli([...config(), '--as', 'rm2', 'deploy', 'run', String(d.id)]);
      expect(r.code, output(r)).toBe(0);
      const after = await getDeployment(env.db.control, d.id);
      expect(after.status).toBe('succeeded');
      expect(after.steps.map((s) => `${s.name}:${s.status}`).filter((s) => !s.endsWith(':done') && !s.endsWith(':skipped'))).toEqual([]);
      expect(codeOf()).toBe(`v${version}`);
      expect(await dumpProduction(env)).toBe(reference);
    }));
  });
});

describe('the automatic rollback after a failed forward step', () => {
  it('killed before restart, a write, then the resumed deployment fails its restart: the rollback is refused, nothing undone', async () => {
    version += 1;
    await createBundle(env.ctx, 'R2', { code: `v${version}`, actor: 'U0RM1' });
    const d = await requestDeployment(env.ctx, 'R2', { actor: 'U0RM1' });
    await decideGo(env.ctx, d.id, { actor: 'U0RM2', decision: 'go', rationale: 'go ahead' });
    await killedAt('deploy.step.restart', ['--as', 'rm2', 'deploy', 'run', String(d.id)], d.id);
    await customerWrites(9100);
    const written = await dumpProduction(env);
    fs.rmSync(path.join(app, 'failed-restart'), { force: true });
    fs.writeFileSync(path.join(app, 'fail'), 'restart');
    try {
      const r = await cli([...config(), '--as', 'rm2', 'deploy', 'run', String(d.id)]);
      expect(r.code, output(r)).toBe(1);
      expect(r.stdout).toContain('restart failed: deploy.commands.restart failed');
      expect(r.stdout).toMatch(/ROLLBACK REFUSED: cannot roll back R2: production table prod\.users \(env production\) changed since the deploy/);
      expect(r.stdout).toContain(`Nothing more was undone: code at v${version}, data of R2 deployed`);
    } finally {
      fs.rmSync(path.join(app, 'fail'));
    }
    const after = await getDeployment(env.db.control, d.id);
    expect(after.status).toBe('rollback-failed');
    expect(after.undo).toEqual([]);
    expect(codeOf()).toBe(`v${version}`);
    expect(await dumpProduction(env)).toBe(written);
  });
});
