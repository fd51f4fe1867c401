import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createBundle } from '../../src/engine/deploy/bundle.js';
import { decideGo, getDeployment, interruptedDeployments, requestDeployment, unlockEnv, whereItStopped } from '../../src/engine/deploy/deployment.js';
import { approvedRelease, dumpProduction, fakeDeployer, seedProduction } from '../deploy-setup.js';
import type { TestEnv } from '../helpers.js';
import { cli, output, startCli } from '../process.js';

/**
 * Crash safety with real processes: the deployer (the CLI running `deploy run`) is killed with SIGKILL
 * after each step (while the next one runs), and a new process resumes it or rolls it back; code and
 * data always end at the same version.
 */
let env: TestEnv;
let app: string;

beforeAll(async () => {
  app = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-crash-app-'));
  env = await approvedRelease({ deploy: fakeDeployer(app) });
  await seedProduction(env);
  fs.mkdirSync(path.join(app, 'releases', 'v1'), { recursive: true });
  fs.symlinkSync(path.join(app, 'releases', 'v1'), path.join(app, 'current'));
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
      process.kill(Number(pid), 'SIGKILL');
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
