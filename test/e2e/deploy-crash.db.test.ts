import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createBundle } from '../../src/engine/deploy/bundle.js';
import { decideGo, getDeployment, interruptedDeployments, requestDeployment, unlockEnv, whereItStopped } from '../../src/engine/deploy/deployment.js';
import { dumpProduction, readyToDeploy } from '../deploy-setup.js';
import type { TestEnv } from '../helpers.js';
import { cli, output, processAlive, startCli } from '../process.js';

/**
 * Crash safety with real processes: the deployer (the CLI running `deploy run`) is killed with SIGKILL
 * after each step (while the next one runs), and a new process resumes it or rolls it back; code and
 * data always end at the same version.
 */
let env: TestEnv;
let app: string;

beforeAll(async () => {
  app = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-crash-app-'));
  env = await readyToDeploy(app, {}, { bundle: false });
});

afterAll(async () => {
  await env?.close();
});

const codeOf = () => path.basename(fs.readlinkSync(path.join(app, 'current')));
const r2Rows = async () => (await env.sql(`select count(*)::int as n from prod.users where release = 'R2'`)).rows[0].n as number;

// the CLI is killed while this command runs, i.e. after the step before it
const POINTS = [
  { hang: 'maintenance-on', after: 'record-version' },
  { hang: 'deploy', after: 'maintenance-on' },
  { hang: 'migrate-up', after: 'deploy-code' },
  { hang: 'restart', after: 'deploy-data' },
  { hang: 'health', after: 'deploy-data' },
  { hang: 'maintenance-off', after: 'restart' },
  // record-version runs `current`: killed right after the lock
  { hang: 'current', after: 'lock' },
  { hang: 'current', after: 'lock' },
];

describe('a deployer killed with SIGKILL mid-deployment', () => {
  POINTS.forEach((p, i) => {
    const recover = i % 2 === 0 ? 'resume' : 'roll back';
    it(`after ${p.after} (while ${p.hang} runs): found interrupted, then ${recover}`, async () => {
      const version = `v${i + 2}`;
      await createBundle(env.ctx, 'R2', { code: version, actor: 'U0RM1' });
      const codeBefore = codeOf();
      const dataBefore = await dumpProduction(env);
      const d = await requestDeployment(env.ctx, 'R2', { actor: 'U0RM1' });
      await decideGo(env.ctx, d.id, { actor: 'U0RM2', decision: 'go', rationale: 'go ahead' });
      fs.rmSync(path.join(app, 'hanging'), { force: true });
      fs.writeFileSync(path.join(app, 'hang'), p.hang);

      const run = startCli(['--config', env.configFile, '--as', 'rm2', 'deploy', 'run', String(d.id)]);
      await vi.waitFor(() => expect(fs.existsSync(path.join(app, 'hanging'))).toBe(true), { timeout: 30_000, interval: 50 });
      run.child.kill('SIGKILL');
      const killed = await run.done;
      expect(killed.signal).toBe('SIGKILL');
      const [, pid] = fs.readFileSync(path.join(app, 'hanging'), 'utf8').split(' ');
      // the team's hanging command ends with the process that ran it (its guard kills its group)
      await vi.waitFor(() => expect(processAlive(Number(pid))).toBe(false), { timeout: 60_000, interval: 50 });
      fs.rmSync(path.join(app, 'hang'));

      const stopped = (await interruptedDeployments(env.ctx)).find((x) => x.id === d.id)!;
      expect(stopped).toBeDefined();
      expect(stopped.steps.find((s) => s.name === p.after)?.status).toBe('done');
      expect(whereItStopped(stopped)).toMatch(/^stopped at /);
      const status = await cli(['--config', env.configFile, 'deploy', 'status']);
      expect(status.stdout).toContain(`Deployment #${d.id} of R2 to production: running`);

      if (recover === 'resume') {
        const r = await cli(['--config', env.configFile, '--as', 'rm2', 'deploy', 'run', String(d.id)]);
        expect(r.code, output(r)).toBe(0);
        expect((await getDeployment(env.db.control, d.id)).status).toBe('succeeded');
        expect(codeOf()).toBe(version);
        expect(await r2Rows()).toBeGreaterThan(1);
      } else {
        const r = await cli(['--config', env.configFile, '--as', 'rm1', 'rollback', 'R2', '--rationale', 'the deployer died']);
        expect(r.code, output(r)).toBe(0);
        const after = await getDeployment(env.db.control, d.id);
        expect(after.status).toBe('rolled-back');
        expect(codeOf()).toBe(codeBefore);
        expect(await dumpProduction(env)).toBe(dataBefore);
        await unlockEnv(env.ctx, 'production', { actor: 'U0RM1' });
      }
      expect(await interruptedDeployments(env.ctx)).toHaveLength(0);
    });
  });
});

/** Requests R2 (a new bundle with this code version) and says Go; returns the deployment id. */
async function approved(version: string): Promise<number> {
  await createBundle(env.ctx, 'R2', { code: version, actor: 'U0RM1' });
  const d = await requestDeployment(env.ctx, 'R2', { actor: 'U0RM1' });
  await decideGo(env.ctx, d.id, { actor: 'U0RM2', decision: 'go', rationale: 'go ahead' });
  return d.id;
}

/** `deploy run` exits 1 when the deployment it ran (or resumed) did not succeed, e.g. a rollback finished. */
async function recover(how: 'resume' | 'roll back', id: number, code = 0): Promise<void> {
  const r =
    how === 'resume'
      ? await cli(['--config', env.configFile, '--as', 'rm2', 'deploy', 'run', String(id)])
      : await cli(['--config', env.configFile, '--as', 'rm1', 'rollback', 'R2', '--rationale', 'the deployer died']);
  expect(r.code, output(r)).toBe(code);
  expect(r.stdout).toContain(`Deployment #${id} of R2 to production: ${how === 'resume' && code === 0 ? 'succeeded' : 'rolled-back'}`);
}

describe('a deployer killed with SIGKILL inside the built-in data step', () => {
  for (const how of ['roll back', 'resume'] as const) {
    it(`after backup-data (deploy-data blocked on a production table lock): found interrupted, then ${how}`, async () => {
      const version = how === 'resume' ? 'v20' : 'v21';
      const id = await approved(version);
      const codeBefore = codeOf();
      const dataBefore = await dumpProduction(env);
      // the test holds a SHARE lock on prod.users: the backup (reads) goes through, the data deploy's delete waits
      const holder = new pg.Client(env.ctx.db.envParams(env.ctx.config.envs.get('production')!) as pg.ClientConfig);
      await holder.connect();
      try {
        await holder.query('begin');
        await holder.query('lock table prod.users in share mode');
        const run = startCli(['--config', env.configFile, '--as', 'rm2', 'deploy', 'run', String(id)]);
        await vi.waitFor(
          async () => {
            const d = await getDeployment(env.db.control, id);
            expect(d.steps.find((s) => s.name === 'backup-data')?.status).toBe('done');
            expect(d.steps.find((s) => s.name === 'deploy-data')?.status).toBe('running');
            const waiting = await holder.query(`select count(*)::int as n from pg_locks where relation = 'prod.users'::regclass and not granted`);
            expect(waiting.rows[0].n).toBe(1);
          },
          { timeout: 30_000, interval: 50 },
        );
        run.child.kill('SIGKILL');
        expect((await run.done).signal).toBe('SIGKILL');
      } finally {
        await holder.query('commit').catch(() => undefined);
        await holder.end();
      }
      const stopped = (await interruptedDeployments(env.ctx)).find((x) => x.id === id)!;
      expect(stopped).toBeDefined();
      expect(whereItStopped(stopped)).toBe(`stopped at deploy-data: code at ${version}, data deployment interrupted (its transaction did not commit unless verified)`);
      // the killed process's transaction never committed: production is as before
      expect(await dumpProduction(env)).toBe(dataBefore);

      await recover(how, id);
      const after = await getDeployment(env.db.control, id);
      if (how === 'resume') {
        expect(after.status).toBe('succeeded');
        expect(codeOf()).toBe(version);
        expect(await r2Rows()).toBeGreaterThan(1);
      } else {
        expect(after.status).toBe('rolled-back');
        expect(after.undo.find((s) => s.name === 'undo deploy-data')?.status).toBe('done');
        expect(codeOf()).toBe(codeBefore);
        expect(await dumpProduction(env)).toBe(dataBefore);
        await unlockEnv(env.ctx, 'production', { actor: 'U0RM1' });
      }
      expect(await interruptedDeployments(env.ctx)).toHaveLength(0);
    });
  }
});

describe('a deployer killed with SIGKILL in the middle of a rollback', () => {
  for (const how of ['roll back', 'resume'] as const) {
    it(`restart fails, the rollback hangs undoing the code; then a new process (${how === 'resume' ? 'deploy run' : 'rollback R2'}) finishes it`, async () => {
      const version = how === 'resume' ? 'v30' : 'v31';
      const id = await approved(version);
      const codeBefore = codeOf();
      const dataBefore = await dumpProduction(env);
      fs.rmSync(path.join(app, 'failed-restart'), { force: true });
      fs.rmSync(path.join(app, 'hanging'), { force: true });
      fs.writeFileSync(path.join(app, 'fail'), 'restart');
      fs.writeFileSync(path.join(app, 'hang'), 'rollback');
      const run = startCli(['--config', env.configFile, '--as', 'rm2', 'deploy', 'run', String(id)]);
      await vi.waitFor(() => expect(fs.existsSync(path.join(app, 'hanging'))).toBe(true), { timeout: 30_000, interval: 50 });
      run.child.kill('SIGKILL');
      expect((await run.done).signal).toBe('SIGKILL');
      const [, pid] = fs.readFileSync(path.join(app, 'hanging'), 'utf8').split(' ');
      // the team's hanging command ends with the process that ran it (its guard kills its group)
      await vi.waitFor(() => expect(processAlive(Number(pid))).toBe(false), { timeout: 60_000, interval: 50 });
      fs.rmSync(path.join(app, 'hang'));
      fs.rmSync(path.join(app, 'fail'));

      const stopped = (await interruptedDeployments(env.ctx)).find((x) => x.id === id)!;
      expect(stopped.status).toBe('rolling-back');
      expect(whereItStopped(stopped)).toMatch(/^stopped while rolling back \(done: undo deploy-data, undo migrate-up\)/);
      // the data is already back; the code is not yet: the card and the status say so
      expect(await dumpProduction(env)).toBe(dataBefore);
      expect(codeOf()).toBe(version);

      await recover(how, id, how === 'resume' ? 1 : 0);
      const after = await getDeployment(env.db.control, id);
      expect(after.status).toBe('rolled-back');
      expect(after.undo.filter((s) => s.name.startsWith('undo ')).map((s) => `${s.name}:${s.status}`)).toEqual([
        'undo deploy-data:done', 'undo migrate-up:done', 'undo deploy-code:done', 'undo maintenance-on:done', 'undo restart:done',
      ]);
      expect(codeOf()).toBe(codeBefore);
      expect(await dumpProduction(env)).toBe(dataBefore);
      await unlockEnv(env.ctx, 'production', { actor: 'U0RM1' });
      expect(await interruptedDeployments(env.ctx)).toHaveLength(0);
    });
  }
});
