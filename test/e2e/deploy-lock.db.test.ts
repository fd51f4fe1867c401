import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createBundle } from '../../src/engine/deploy/bundle.js';
import { decideGo, getDeployment, requestDeployment, unlockEnv } from '../../src/engine/deploy/deployment.js';
import { readyToDeploy } from '../deploy-setup.js';
import { advisoryLockHolder, strictIdleTimeout, type TestEnv } from '../helpers.js';
import { cli, output, processAlive, startCli } from '../process.js';

/**
 * The deployment's executor lock, held by the process running it (`deploy run`, a real CLI) for as long
 * as the deployment runs: kept alive through a server's idle_session_timeout shorter than a step, and
 * lost safely when its session is terminated while the process lives (the step's command is killed,
 * nothing more is recorded, and a resume by another process finishes the deployment).
 */
let env: TestEnv;
let app: string;

beforeAll(async () => {
  app = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-deploy-lock-'));
  env = await readyToDeploy(app, {}, { bundle: false });
});

afterAll(async () => {
  await env?.close();
});

const codeOf = () => path.basename(fs.readlinkSync(path.join(app, 'current')));
const executorSession = (id: number) => advisoryLockHolder(env.db.control, `tributary:deployment:${id}`);

/** R2 with a new bundle of this code version, Go given; the fake deployer hangs in `hang`. */
async function approvedHanging(version: string, hang: string): Promise<number> {
  await createBundle(env.ctx, 'R2', { code: version, actor: 'U0RM1' });
  const d = await requestDeployment(env.ctx, 'R2', { actor: 'U0RM1' });
  await decideGo(env.ctx, d.id, { actor: 'U0RM2', decision: 'go', rationale: 'go ahead' });
  fs.rmSync(path.join(app, 'hanging'), { force: true });
  fs.writeFileSync(path.join(app, 'hang'), hang);
  return d.id;
}

/** Waits for the team's command to hang; returns its pid. */
async function hangingPid(): Promise<number> {
  await vi.waitFor(() => expect(fs.existsSync(path.join(app, 'hanging'))).toBe(true), { timeout: 60_000, interval: 50 });
  return Number(fs.readFileSync(path.join(app, 'hanging'), 'utf8').split(' ')[1]);
}

describe('the deployment executor lock', () => {
  it('outlasts an idle_session_timeout shorter than a step: the same session holds it until the deployment ends', async () => {
    const strict = await strictIdleTimeout(env.database, 300);
    try {
      const id = await approvedHanging('v2', 'current');
      const run = startCli(['--config', env.configFile, '--as', 'rm2', 'deploy', 'run', String(id)]);
      const command = await hangingPid();
      const session = await executorSession(id);
      expect(session).toBeDefined();
      // the server ends idle sessions meanwhile (twice over): the lock's is kept busy
      await strict.elapsed();
      await strict.elapsed();
      expect(await executorSession(id)).toBe(session);
      // the step's command dies: the same process rolls the deployment back, holding its lock throughout
      process.kill(command, 'SIGKILL');
      const r = await run.done;
      expect(r.code, output(r)).toBe(1);
      expect(r.stderr).not.toContain('lost its lock');
      expect((await getDeployment(env.db.control, id)).status).toBe('rolled-back');
    } finally {
      await strict.reset();
      fs.rmSync(path.join(app, 'hang'), { force: true });
      await unlockEnv(env.ctx, 'production', { actor: 'U0RM1' });
    }
  });

  it('lost while its process lives (pg_terminate_backend): the command is killed, nothing more is recorded, and a resume finishes the deployment', async () => {
    const id = await approvedHanging('v3', 'deploy');
    const run = startCli(['--config', env.configFile, '--as', 'rm2', 'deploy', 'run', String(id)]);
    const command = await hangingPid();
    const session = await executorSession(id);
    expect(session).toBeDefined();
    // waits (up to 60 s) until the session has ended, and the lock with it
    const ended = await env.db.control.raw<{ rows: { ok: boolean }[] }>('select pg_terminate_backend(?, 60000) as ok', [session!]);
    expect(ended.rows[0]!.ok).toBe(true);

    const r = await run.done;
    expect(r.code, output(r)).not.toBe(0);
    expect(r.stderr).toContain(`deployment #${id} lost its lock`);
    // its command was killed with it, and the deployment is left as a crash leaves it: the step running
    await vi.waitFor(() => expect(processAlive(command)).toBe(false), { timeout: 60_000, interval: 50 });
    const left = await getDeployment(env.db.control, id);
    expect(left.status).toBe('running');
    expect(left.steps.find((s) => s.name === 'deploy-code')?.status).toBe('running');
    expect(left.undo).toEqual([]);
    expect(await env.db.control('audit_events').where({ subject: `deployment #${id}` }).whereIn('action', ['deploy.step.failed', 'deploy.rollback.start'])).toHaveLength(0);

    // another process takes it up from there
    fs.rmSync(path.join(app, 'hang'));
    const resumed = await cli(['--config', env.configFile, '--as', 'rm2', 'deploy', 'run', String(id)]);
    expect(resumed.code, output(resumed)).toBe(0);
    expect((await getDeployment(env.db.control, id)).status).toBe('succeeded');
    expect(codeOf()).toBe('v3');
  });
});
