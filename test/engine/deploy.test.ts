import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createBundle } from '../../src/engine/deploy/bundle.js';
import { decideGo, executeDeployment, getDeployment, requestDeployment, rollbackRelease, unlockEnv } from '../../src/engine/deploy/deployment.js';
import { approvedRelease, dumpProduction, fakeDeployer, seedProduction } from '../deploy-setup.js';
import type { TestEnv } from '../helpers.js';

/** The synchronized sequence and its rollback, go/no-go, the env lock, timeouts and secrets. */
let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

function appDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-app-'));
}

async function ready(app: string, deploy: Record<string, unknown> = {}): Promise<TestEnv> {
  const e = await approvedRelease({ deploy: fakeDeployer(app, deploy) });
  env = e;
  await seedProduction(e);
  fs.mkdirSync(path.join(app, 'releases', 'v1'), { recursive: true });
  fs.symlinkSync(path.join(app, 'releases', 'v1'), path.join(app, 'current'));
  await createBundle(e.ctx, 'R2', { code: 'v2', actor: 'U0RM1' });
  return e;
}

async function approvedDeployment(e: TestEnv) {
  const d = await requestDeployment(e.ctx, 'R2', { actor: 'U0RM1' });
  const res = await decideGo(e.ctx, d.id, { actor: 'U0RM2', decision: 'go', rationale: 'window agreed' });
  expect(res.ready).toBe(true);
  return d;
}

const codeOf = (app: string) => path.basename(fs.readlinkSync(path.join(app, 'current')));
const calls = (app: string) => fs.readFileSync(path.join(app, 'calls'), 'utf8').trim().split('\n').filter((c) => c !== 'current');

describe('the synchronized sequence', () => {
  it('deploys code and data together, step by step, then unlocks the env', async () => {
    const app = appDir();
    const e = await ready(app);
    const d = await approvedDeployment(e);
    const done = await executeDeployment(e.ctx, d.id, { actor: 'U0RM2' });
    expect(done.status).toBe('succeeded');
    expect(done.steps.map((s) => `${s.name}:${s.status}`)).toEqual([
      'lock:done', 'record-version:done', 'maintenance-on:done', 'deploy-code:done', 'migrate-up:done', 'backup-data:done', 'deploy-data:done', 'restart:done', 'maintenance-off:done', 'smoke:skipped',
    ]);
    expect(done.previous_code_version).toBe('v1');
    expect(codeOf(app)).toBe('v2');
    expect(calls(app)).toEqual(['maintenance-on', 'deploy v2', 'migrate-up', 'restart', 'health', 'maintenance-off']);
    expect((await e.sql(`select count(*)::int as n from prod.users where release = 'R2'`)).rows[0].n).toBeGreaterThan(1);
    expect((await e.db.control('env_locks')).length).toBe(0);
  });

  for (const failing of ['maintenance-on', 'deploy', 'migrate-up', 'restart', 'health', 'maintenance-off']) {
    it(`a failure of ${failing} rolls code and data back together, in the exact reverse order, and keeps the env locked`, async () => {
      const app = appDir();
      const e = await ready(app);
      const before = await dumpProduction(e);
      fs.writeFileSync(path.join(app, 'fail'), failing);
      const d = await approvedDeployment(e);
      const out = await executeDeployment(e.ctx, d.id, { actor: 'U0RM2' });
      expect(out.status).toBe('rolled-back');
      expect(out.cause).toContain(`failed on purpose`);
      expect(codeOf(app)).toBe('v1');
      expect(await dumpProduction(e)).toBe(before);
      const forward = ['maintenance-on', 'deploy v2', 'migrate-up', 'restart', 'health', 'maintenance-off'];
      const ran = forward.slice(0, forward.findIndex((c) => c.startsWith(failing)) + 1);
      const undo: Record<string, string> = { 'maintenance-on': 'maintenance-off', 'deploy v2': 'rollback v1', 'migrate-up': 'migrate-down', 'maintenance-off': 'maintenance-on' };
      // done steps are undone, and a failed one that may have half-applied (code, schema, maintenance on)
      const undone = ['maintenance-on', 'deploy', 'migrate-up'].includes(failing) ? ran : ran.slice(0, -1);
      const expectedUndo = [...undone].reverse().flatMap((c) => (undo[c] ? [undo[c]!] : []));
      // after the undo of the code, a restart on the previous version
      expect(calls(app)).toEqual([...ran, ...expectedUndo, ...(ran.includes('deploy v2') ? ['restart'] : [])]);
      expect((await e.db.control('env_locks').where({ env: 'production' }).first()).deployment_id).toBe(d.id);
      // a second deployment is refused by the lock, naming its holder
      await createBundle(e.ctx, 'R2', { code: 'v3', actor: 'U0RM1' });
      fs.rmSync(path.join(app, 'fail'));
      const again = await approvedDeployment(e);
      const refused = await executeDeployment(e.ctx, again.id, { actor: 'U0RM2' });
      expect(refused.status).toBe('rejected');
      expect(refused.cause).toMatch(new RegExp(`locked by deployment #${d.id} of R2 \\(held by U0RM1`));
      await unlockEnv(e.ctx, 'production', { actor: 'U0RM2', rationale: 'cause understood' });
      expect(await e.db.control('env_locks')).toHaveLength(0);
    });
  }

  it('a command that hangs hits its timeout and the deployment rolls back', async () => {
    const app = appDir();
    const e = await ready(app, { commands: { ...(fakeDeployer(app).commands as Record<string, string>), restart: { run: `node ${path.resolve('test/fixtures/fake-deployer.mjs')} ${app} restart`, timeoutSeconds: 1 } } });
    fs.writeFileSync(path.join(app, 'hang'), 'restart');
    const d = await approvedDeployment(e);
    const started = Date.now();
    const out = await executeDeployment(e.ctx, d.id, { actor: 'U0RM2' });
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(out.steps.find((s) => s.name === 'restart')!.error).toMatch(/deploy.commands.restart timed out after 1 s/);
    expect(out.status).toBe('rollback-failed'); // the restart after the rollback hangs too, and says so
    expect(codeOf(app)).toBe('v1');
  });

  it('keeps secrets out of the captured output', async () => {
    const app = appDir();
    const tool = `node ${path.resolve('test/fixtures/fake-deployer.mjs')} ${app}`;
    const e = await ready(app, { commands: { ...(fakeDeployer(app).commands as Record<string, string>), deploy: `echo "db postgres://deployer:pw-very-secret-42@db:5432/prod, slack xoxb-1234-abcdef"; ${tool} deploy {version}` } });
    const d = await approvedDeployment(e);
    const out = await executeDeployment(e.ctx, d.id, { actor: 'U0RM2' });
    const step = out.steps.find((s) => s.name === 'deploy-code')!;
    expect(step.output).toContain('postgres://deployer:***@db:5432/prod');
    const stored = JSON.stringify(await getDeployment(e.db.control, d.id)) + JSON.stringify(await e.db.control('audit_events').where('release', 'R2').select('details'));
    expect(stored).not.toContain('pw-very-secret-42');
    expect(stored).not.toContain('xoxb-1234');
  });
});

describe('go / no-go', () => {
  it('the requester alone is never enough; no-go rejects; an unanswered prompt expires as no-go', async () => {
    const app = appDir();
    const e = await ready(app, { quorum: 1, promptMinutes: 0.01 });
    const d = await requestDeployment(e.ctx, 'R2', { actor: 'U0RM1' });
    const self = await decideGo(e.ctx, d.id, { actor: 'U0RM1', decision: 'go', rationale: 'mine' });
    expect(self.ready).toBe(false);
    await expect(decideGo(e.ctx, d.id, { actor: 'U0RM1', decision: 'go', rationale: 'again' })).rejects.toThrow(/already said go/);
    await new Promise((r) => setTimeout(r, 800));
    await expect(decideGo(e.ctx, d.id, { actor: 'U0RM2', decision: 'go', rationale: 'late' })).rejects.toThrow(/expired .* counts as no-go/);
    expect((await getDeployment(e.db.control, d.id)).status).toBe('expired');
    await expect(executeDeployment(e.ctx, d.id, { actor: 'U0RM2' })).rejects.toThrow(/is expired/);
  });

  it('no-go rejects; a deployment cannot run before Go; a scheduled one waits for its window', async () => {
    const app = appDir();
    const e = await ready(app);
    const d = await requestDeployment(e.ctx, 'R2', { actor: 'U0RM1' });
    await expect(executeDeployment(e.ctx, d.id, { actor: 'U0RM1' })).rejects.toThrow(/waits for Go/);
    const no = await decideGo(e.ctx, d.id, { actor: 'U0RM2', decision: 'no-go', rationale: 'not tonight' });
    expect(no.deployment.status).toBe('rejected');
    const later = await requestDeployment(e.ctx, 'R2', { actor: 'U0RM1', at: new Date(Date.now() + 3600_000) });
    const go = await decideGo(e.ctx, later.id, { actor: 'U0RM2', decision: 'go', rationale: 'tonight' });
    expect(go).toMatchObject({ ready: false, deployment: { status: 'scheduled' } });
    await expect(executeDeployment(e.ctx, later.id, { actor: 'U0RM1' })).rejects.toThrow(/starts in its window/);
  });
});

describe('rollback on demand', () => {
  it('restores the data byte-identical and the code, and says why when it cannot', async () => {
    const app = appDir();
    const e = await ready(app);
    await expect(rollbackRelease(e.ctx, 'R2', { actor: 'U0RM1', rationale: 'x' })).rejects.toThrow(/needs a rationale|no successful deployment/);
    const before = await dumpProduction(e);
    const d = await approvedDeployment(e);
    await executeDeployment(e.ctx, d.id, { actor: 'U0RM2' });
    expect(await dumpProduction(e)).not.toBe(before);
    const out = await rollbackRelease(e.ctx, 'R2', { actor: 'U0RM1', rationale: 'customer reports' });
    expect(out.status).toBe('rolled-back');
    expect(await dumpProduction(e)).toBe(before);
    expect(codeOf(app)).toBe('v1');
    expect((await e.db.control('env_locks').first()).holder).toBe('U0RM1');
    await expect(rollbackRelease(e.ctx, 'R2', { actor: 'U0RM1', rationale: 'again please' })).rejects.toThrow(/no successful deployment/);
  });
});

describe('the webhook deployer', () => {
  it('posts the action with its token, polls the job until it finishes, and reports a failed job', async () => {
    const http = await import('node:http');
    const seen: { action: string; auth: string | undefined }[] = [];
    let polls = 0;
    const server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        res.setHeader('content-type', 'application/json');
        if (req.method === 'POST') {
          const b = JSON.parse(body) as { action: string; version?: string };
          seen.push({ action: `${b.action}${b.version ? ` ${b.version}` : ''}`, auth: req.headers.authorization });
          res.end(JSON.stringify({ id: b.action === 'deploy' ? 'job-1' : 'job-2', status: 'queued' }));
          return;
        }
        polls++;
        res.end(JSON.stringify(req.url!.includes('job-1') ? { status: polls < 3 ? 'running' : 'succeeded', output: 'deployed with token tok-hook-secret-1' } : { status: 'failed', message: 'pipeline red' }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const { codeDeployer } = await import('../../src/engine/deploy/deployers.js');
      const { registerSecret } = await import('../../src/log.js');
      registerSecret('tok-hook-secret-1');
      const spec = { env: 'production', bundleDir: '/tmp', cwd: '/tmp', timeoutMs: 5000, quorum: 1, promptMs: 1000, windows: [], smoke: false, webhook: { url: `http://127.0.0.1:${port}/hook`, statusUrl: `http://127.0.0.1:${port}/jobs/{id}`, token: 'tok-hook-secret-1', pollMs: 20, timeoutMs: 5000 } };
      const deployer = codeDeployer(spec);
      const ok = await deployer.run('deploy', { release: 'R2', env: 'production', version: 'v2' });
      expect(ok).toMatchObject({ ok: true });
      expect(ok.output).toBe('deployed with token ***');
      expect(polls).toBe(3);
      const bad = await deployer.run('restart', { release: 'R2', env: 'production' });
      expect(bad).toMatchObject({ ok: false, error: 'deploy.webhook restart failed: pipeline red' });
      expect(seen).toEqual([{ action: 'deploy v2', auth: 'Bearer tok-hook-secret-1' }, { action: 'restart', auth: 'Bearer tok-hook-secret-1' }]);
    } finally {
      server.close();
    }
  });
});
