import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createBundle } from '../../../src/engine/deploy/bundle.js';
import { getBackup } from '../../../src/engine/deploy/dataDeployer.js';
import { claimDue, decideGo, executeDeployment, getDeployment, interruptedDeployments, requestDeployment, rollbackInterruptedDeployment, rollbackRelease, unlockEnv, whereItStopped, windowDeadline } from '../../../src/engine/deploy/deployment.js';
import { rollbackCard } from '../../../src/views/deploy.js';
import { dumpProduction, fakeDeployer, readyToDeploy } from '../../deploy-setup.js';
import { cli, output } from '../../process.js';
import { ROOT, urlFor, type TestEnv } from '../../helpers.js';

/** The synchronized sequence and its rollback, go/no-go, the env lock, timeouts and secrets. */
let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

function appDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-app-'));
}

async function ready(app: string, deploy: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Promise<TestEnv> {
  const e = await readyToDeploy(app, extra, { deploy });
  env = e;
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
      // a second request is refused at once by the lock, naming its holder and how to release it
      await createBundle(e.ctx, 'R2', { code: 'v3', actor: 'U0RM1' });
      fs.rmSync(path.join(app, 'fail'));
      await expect(requestDeployment(e.ctx, 'R2', { actor: 'U0RM1' })).rejects.toThrow(
        new RegExp(`^production is locked by deployment #${d.id} of R2 \\(held by U0RM1 since [^)]+\\): no deployment is requested until a release_manager unlocks it: tributary unlock production`),
      );
      expect(await e.db.control('deployments').where({ status: 'awaiting-go' })).toHaveLength(0);
      await unlockEnv(e.ctx, 'production', { actor: 'U0RM2', rationale: 'cause understood' });
      expect(await e.db.control('env_locks')).toHaveLength(0);
      // locked after its Go (by hand): the lock step refuses it, nothing done
      const again = await approvedDeployment(e);
      await e.db.control('env_locks').insert({ env: 'production', holder: 'U0OPS', reason: 'a hand lock' });
      const refused = await executeDeployment(e.ctx, again.id, { actor: 'U0RM2' });
      expect(refused.status).toBe('rejected');
      expect(refused.cause).toMatch(/locked by a hand lock \(held by U0OPS/);
      await unlockEnv(e.ctx, 'production', { actor: 'U0RM2', rationale: 'done by hand' });
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
    // the prompt's expiry passes, by the database's clock (the one expiry is judged by)
    const { expires_at: expiresAt } = await getDeployment(e.db.control, d.id);
    await vi.waitFor(async () => expect((await e.db.control.raw<{ rows: { past: boolean }[] }>('select now() > ?::timestamptz as past', [expiresAt])).rows[0]!.past).toBe(true), { timeout: 60_000, interval: 50 });
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
      const { codeDeployer } = await import('../../../src/engine/deploy/codeDeployers.js');
      const { registerSecret } = await import('../../../src/log.js');
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

describe('failures inside the built-in data step and in the smoke tests', () => {
  it('a COPY that fails inside deploy-data rolls everything back: data byte-identical, code back', async () => {
    const app = appDir();
    const e = await ready(app);
    // production refuses one of R2's rows (users 1500): the data deploy's COPY fails
    await e.sql(`alter table prod.users add constraint users_id_small check (id < 1000)`);
    const before = await dumpProduction(e);
    const d = await approvedDeployment(e);
    const out = await executeDeployment(e.ctx, d.id, { actor: 'U0RM2' });
    expect(out.status).toBe('rolled-back');
    const step = out.steps.find((s) => s.name === 'deploy-data')!;
    expect(step.status).toBe('failed');
    expect(step.error).toMatch(/env production, table prod\.users failed: .*users_id_small.*production is unchanged/);
    expect(out.cause).toMatch(/^deploy-data failed: /);
    expect(out.undo.map((s) => `${s.name}:${s.status}`)).toEqual(['undo deploy-data:done', 'undo migrate-up:done', 'undo deploy-code:done', 'undo maintenance-on:done', 'undo restart:done', 'smoke after rollback:done']);
    expect(await dumpProduction(e)).toBe(before);
    expect(codeOf(app)).toBe('v1');
    expect(calls(app)).toEqual(['maintenance-on', 'deploy v2', 'migrate-up', 'migrate-down', 'rollback v1', 'maintenance-off', 'restart']);
  });

  it('real smoke tests against production: a failing one rolls back, and the smoke after rollback passes on the restored state', async () => {
    const app = appDir();
    const suite = path.join(ROOT, 'test/fixtures/deploy-smoke.test.mjs');
    // production lives on the control server here, whose password Tributary never hands to a team
    // command: the team brings its own, as teams do (a pgpass file; the embedded server needs one)
    const pgpass = path.join(app, 'pgpass');
    fs.writeFileSync(pgpass, `*:*:*:*:${decodeURIComponent(new URL(urlFor('postgres')).password)}\n`, { mode: 0o600 });
    const e = await ready(app, { smoke: true }, { testing: { command: `PGPASSFILE=${pgpass} SMOKE_APP=${app} node --test --test-reporter=junit --test-reporter-destination={junit} ${suite}`, agents: 1, shards: 1, timeoutSeconds: 60, reportDir: 'reports' } });
    // code v2 is broken: the smoke test fails on it, and passes on v1
    fs.writeFileSync(path.join(app, 'bad-versions'), 'v2\n');
    const before = await dumpProduction(e);
    const d = await approvedDeployment(e);
    const out = await executeDeployment(e.ctx, d.id, { actor: 'U0RM2' });
    expect(out.status).toBe('rolled-back');
    const smoke = out.steps.find((s) => s.name === 'smoke')!;
    expect(smoke.status).toBe('failed');
    expect(smoke.error).toMatch(/smoke tests on production \(test run #\d+\): 0\/1 passed; .*code v2 answers 500/);
    const after = out.undo.find((s) => s.name === 'smoke after rollback')!;
    expect(after).toMatchObject({ status: 'done' });
    expect(after.detail).toMatch(/smoke tests on production \(test run #\d+\): 1\/1 passed/);
    expect(await dumpProduction(e)).toBe(before);
    expect(codeOf(app)).toBe('v1');
    const runs = await e.db.control('test_runs').where({ release: 'R2', tier: 'smoke' }).orderBy('id').select('env', 'status');
    expect(runs).toEqual([{ env: 'production', status: 'failed' }, { env: 'production', status: 'passed' }]);
  }, 60_000);
});

describe('smoke failing after the rollback too', () => {
  it('code and data restored and verified, only the smoke on the restored state fails: its own outcome, in the CLI, deploy status, the card and the audit; the env stays locked', async () => {
    const app = appDir();
    const suite = path.join(ROOT, 'test/fixtures/deploy-smoke.test.mjs');
    // production lives on the control server here, whose password Tributary never hands to a team
    // command: the team brings its own, as teams do (a pgpass file; the embedded server needs one)
    const pgpass = path.join(app, 'pgpass');
    fs.writeFileSync(pgpass, `*:*:*:*:${decodeURIComponent(new URL(urlFor('postgres')).password)}\n`, { mode: 0o600 });
    const e = await ready(app, { smoke: true }, { testing: { command: `PGPASSFILE=${pgpass} SMOKE_APP=${app} node --test --test-reporter=junit --test-reporter-destination={junit} ${suite}`, agents: 1, shards: 1, timeoutSeconds: 60, reportDir: 'reports' } });
    // the earlier release (v1) fails the smoke test too
    fs.writeFileSync(path.join(app, 'bad-versions'), 'v2\nv1\n');
    const before = await dumpProduction(e);
    const d = await approvedDeployment(e);
    const out = await executeDeployment(e.ctx, d.id, { actor: 'U0RM2' });
    expect(out.status).toBe('restored-smoke-failing');
    expect(out.undo.map((s) => `${s.name}:${s.status}`)).toEqual([
      'undo maintenance-off:done', 'undo deploy-data:done', 'undo migrate-up:done', 'undo deploy-code:done', 'undo maintenance-on:done', 'undo restart:done', 'smoke after rollback:failed',
    ]);
    expect(out.undo.at(-1)!.error).toMatch(/smoke tests on production \(test run #\d+\): 0\/1 passed; .*code v1 answers 500/);
    expect(await dumpProduction(e)).toBe(before);
    expect(codeOf(app)).toBe('v1');
    expect((await e.db.control('env_locks').first()).deployment_id).toBe(d.id);
    expect(await e.db.control('audit_events').where({ action: 'deploy.rolled-back.smoke-failing', subject: `deployment #${d.id}` })).toHaveLength(1);
    expect(await e.db.control('audit_events').where({ action: 'deploy.rollback.failed' })).toHaveLength(0);

    const status = await cli(['--config', e.configFile, 'deploy', 'status', String(d.id)]);
    expect(status.code, output(status)).toBe(0);
    expect(status.stdout).toContain(`Deployment #${d.id} of R2 to production: restored-smoke-failing (rolled back; smoke after rollback failing: code and data restored and verified`);
    const card = rollbackCard(out, true);
    expect(card.text).toBe(`R2 on production: restored-smoke-failing (rolled back; smoke after rollback failing: code and data restored and verified, the smoke tests fail on the restored state too) (deployment #${d.id})`);
    expect(JSON.stringify(card.blocks)).toContain('*R2 on production was rolled back; smoke after rollback failing (code and data restored and verified; the earlier release fails its smoke tests too)*');
    expect(JSON.stringify(card.blocks)).not.toContain('NOT fully');
    expect(JSON.stringify(card.blocks)).toContain('stays locked until a release_manager unlocks it');
  }, 90_000);
});

describe('rollback on demand after production changed', () => {
  it('refuses, naming the table and its rows, when production was written after the deploy; rolls back once it is as deployed again', async () => {
    const app = appDir();
    const e = await ready(app);
    const before = await dumpProduction(e);
    const d = await approvedDeployment(e);
    const done = await executeDeployment(e.ctx, d.id, { actor: 'U0RM2' });
    expect(done.steps.find((s) => s.name === 'deploy-data')!.figures!.map((f) => f.table)).toEqual(['users', 'accounts', 'transactions']);
    const rows = (await e.sql(`select count(*)::int as n from prod.users`)).rows[0].n as number;
    // a customer signs up after the deploy
    await e.sql(`insert into prod.users (id, email, release) values (9001, 'signup@x', 'R1')`);
    const written = await dumpProduction(e);
    await expect(rollbackRelease(e.ctx, 'R2', { actor: 'U0RM1', rationale: 'customer reports' })).rejects.toThrow(
      `cannot roll back R2: production table prod.users (env production) changed since the deploy (rows ${rows} → ${rows + 1}); a rollback would discard those writes`,
    );
    expect(await dumpProduction(e)).toBe(written);
    expect(codeOf(app)).toBe('v2');
    expect((await getDeployment(e.db.control, d.id)).status).toBe('succeeded');
    expect(await e.db.control('env_locks')).toHaveLength(0);
    expect((await e.db.control('audit_events').where({ action: 'deploy.rollback.refused' })).length).toBe(1);
    // an update that keeps the count is caught by the checksum
    await e.sql(`delete from prod.users where id = 9001; update prod.accounts set balance = balance + 1 where id = 200`);
    await expect(rollbackRelease(e.ctx, 'R2', { actor: 'U0RM1', rationale: 'customer reports' })).rejects.toThrow(/production table prod\.accounts \(env production\) changed since the deploy \(rows \d+ → \d+, checksum \S+ → \S+\)/);
    await e.sql(`update prod.accounts set balance = balance - 1 where id = 200`);
    const out = await rollbackRelease(e.ctx, 'R2', { actor: 'U0RM1', rationale: 'customer reports' });
    expect(out.status).toBe('rolled-back');
    expect(await dumpProduction(e)).toBe(before);
    expect(codeOf(app)).toBe('v1');
  });

  it('when the data restore fails the rollback stops there, says where code and data stand, and a second rollback finishes it', async () => {
    const app = appDir();
    const e = await ready(app);
    const before = await dumpProduction(e);
    const d = await approvedDeployment(e);
    const done = await executeDeployment(e.ctx, d.id, { actor: 'U0RM2' });
    const deployed = await dumpProduction(e);
    const backup = (await getBackup(e.ctx, done.backup_id!))!;
    const copy = backup.tables.find((t) => t.table === 'users')!.backup!;
    await e.sql(`alter table tributary_backup.${copy} rename to hidden_copy`);
    fs.writeFileSync(path.join(app, 'calls'), '');
    const out = await rollbackRelease(e.ctx, 'R2', { actor: 'U0RM1', rationale: 'customer reports' });
    expect(out.status).toBe('rollback-failed');
    expect(out.undo.map((s) => `${s.name}:${s.status}`)).toEqual(['undo maintenance-off:done', 'undo deploy-data:failed']);
    expect(out.cause).toContain(
      `ROLLBACK STOPPED: the data restore failed (restoring backup #${backup.id} into env production, table prod.users: its copy tributary_backup.${copy} is gone, so the table cannot be restored; nothing was restored), so the rollback stopped there and did not undo the schema or the code: code still at v2, schema still migrated up, data still R2's as deployed, maintenance on. Code and data are still together at R2's deployment`,
    );
    // neither the schema nor the code was undone: code and data stay at the same version
    expect(calls(app)).toEqual(['maintenance-on']);
    expect(codeOf(app)).toBe('v2');
    expect(await dumpProduction(e)).toBe(deployed);
    expect((await e.db.control('env_locks').first()).deployment_id).toBe(d.id);

    await e.sql(`alter table tributary_backup.hidden_copy rename to ${copy}`);
    const again = await rollbackRelease(e.ctx, 'R2', { actor: 'U0RM1', rationale: 'the copy is back' });
    expect(again.status).toBe('rolled-back');
    expect(again.undo.filter((s) => s.name.startsWith('undo ')).map((s) => `${s.name}:${s.status}`)).toEqual([
      'undo maintenance-off:done', 'undo deploy-data:done', 'undo migrate-up:done', 'undo deploy-code:done', 'undo maintenance-on:done', 'undo restart:done',
    ]);
    expect(await dumpProduction(e)).toBe(before);
    expect(codeOf(app)).toBe('v1');
  });
});

describe('scheduled and approved deployments that did not start', () => {
  it('a scheduled deployment whose window passed while the bot was down expires instead of starting late', async () => {
    const app = appDir();
    const e = await ready(app);
    const late = await requestDeployment(e.ctx, 'R2', { actor: 'U0RM1', at: new Date(Date.now() + 3600_000) });
    await decideGo(e.ctx, late.id, { actor: 'U0RM2', decision: 'go', rationale: 'tonight' });
    // the window came 31 minutes ago (no windows configured: 30 minutes of grace)
    await e.db.control('deployments').where({ id: late.id }).update({ window_at: new Date(Date.now() - 31 * 60_000) });
    expect(await claimDue(e.ctx)).toEqual([]);
    const expired = await getDeployment(e.db.control, late.id);
    expect(expired.status).toBe('expired');
    expect(expired.cause).toMatch(/its window passed before it could start .*: no-go; request it again/);
    expect(await e.db.control('audit_events').where({ action: 'deploy.expired', subject: `deployment #${late.id}` })).toHaveLength(1);
    await expect(executeDeployment(e.ctx, late.id, { actor: 'U0RM2' })).rejects.toThrow(/is expired/);

    // within the grace it starts
    const due = await requestDeployment(e.ctx, 'R2', { actor: 'U0RM1', at: new Date(Date.now() + 3600_000) });
    await decideGo(e.ctx, due.id, { actor: 'U0RM2', decision: 'go', rationale: 'tonight' });
    await e.db.control('deployments').where({ id: due.id }).update({ window_at: new Date(Date.now() - 29 * 60_000) });
    expect(await claimDue(e.ctx)).toEqual([due.id]);
    expect((await getDeployment(e.db.control, due.id)).approved_at).not.toBeNull();
  });

  it('with maintenance windows, the grace is the end of the window the deployment was scheduled in', () => {
    const spec = { windows: [{ days: ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'], start: '22:00', end: '02:00', timezone: 'UTC' }] } as unknown as Parameters<typeof windowDeadline>[0];
    expect(windowDeadline(spec, new Date('2026-11-26T23:00:00Z')).toISOString()).toBe('2026-11-27T02:00:00.000Z');
    expect(windowDeadline(spec, new Date('2026-11-27T01:30:00Z')).toISOString()).toBe('2026-11-27T02:00:00.000Z');
    const none = { windows: [] } as unknown as Parameters<typeof windowDeadline>[0];
    expect(windowDeadline(none, new Date('2026-11-26T23:00:00Z')).toISOString()).toBe('2026-11-26T23:30:00.000Z');
  });

  it('an approved deployment whose process died before it started is reported, can be resumed or cancelled, and does not block requests forever', async () => {
    const app = appDir();
    const e = await ready(app);
    const d = await approvedDeployment(e); // Go reached; the process that was to run it "died"
    const found = (await interruptedDeployments(e.ctx)).find((x) => x.id === d.id)!;
    expect(found.status).toBe('approved');
    expect(whereItStopped(found)).toMatch(/^approved at \S+ but never started \(the process that was to run it died\): nothing was done/);
    await expect(requestDeployment(e.ctx, 'R2', { actor: 'U0RM1' })).rejects.toThrow(new RegExp(`deployment #${d.id} of R2, approved at \\S+ but never started .*tributary deploy run ${d.id}.*tributary rollback R2`));
    // cancelled ("Roll back" on it): nothing to undo
    await expect(rollbackInterruptedDeployment(e.ctx, d.id, { actor: 'U0RM1', rationale: ' n o ' })).rejects.toThrow(/a rollback needs a rationale of at least 3 characters/);
    const cancelled = await rollbackInterruptedDeployment(e.ctx, d.id, { actor: 'U0RM1', rationale: 'not tonight after all' });
    expect(cancelled.status).toBe('cancelled');
    expect(cancelled.cause).toMatch(/^cancelled before it started by U0RM1: not tonight after all/);
    expect(codeOf(app)).toBe('v1');

    // another one, left approved for over 30 minutes: a new request supersedes it (expired, audited)
    const stale = await approvedDeployment(e);
    await e.db.control('deployments').where({ id: stale.id }).update({ approved_at: new Date(Date.now() - 31 * 60_000) });
    const fresh = await requestDeployment(e.ctx, 'R2', { actor: 'U0RM1' });
    const gone = await getDeployment(e.db.control, stale.id);
    expect(gone.status).toBe('expired');
    expect(gone.cause).toMatch(/but never started .*superseded by a new request from U0RM1/);
    expect(fresh.status).toBe('awaiting-go');
    // Resume runs an approved one
    await decideGo(e.ctx, fresh.id, { actor: 'U0RM2', decision: 'go', rationale: 'go ahead' });
    expect((await executeDeployment(e.ctx, fresh.id, { actor: 'U0RM2' })).status).toBe('succeeded');
  });
});

describe('one open deployment per env', () => {
  it('concurrent requests: exactly one gets in, the others are refused as gate_busy; the database enforces it', async () => {
    const app = appDir();
    const e = await ready(app);
    const results = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => requestDeployment(e.ctx, 'R2', { actor: `U0RM${i + 1}` })));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results.filter((x): x is PromiseRejectedResult => x.status === 'rejected')) {
      expect(r.reason).toMatchObject({ code: 'gate_busy' });
      expect((r.reason as Error).message).toMatch(/^production already has deployment #\d+ of R2 \(awaiting-go\): one deployment at a time$/);
    }
    expect(await e.db.control('deployments').whereIn('status', ['awaiting-go'])).toHaveLength(1);
    // a second open row is refused by the partial unique index itself, whatever the code checks
    const row = (await e.db.control('deployments').first())!;
    const { id: _id, ...copy } = row as Record<string, unknown>;
    await expect(e.db.control('deployments').insert({ ...copy, status: 'scheduled', steps: '[]', undo: '[]' })).rejects.toThrow(/deployments_one_open_per_env/);
    await e.db.control('deployments').insert({ ...copy, status: 'rejected', steps: '[]', undo: '[]' });
  });
});

describe('bad input', () => {
  it('a rollback of a release the plan does not have names it', async () => {
    const app = appDir();
    const e = await ready(app);
    await expect(rollbackRelease(e.ctx, 'R9', { actor: 'U0RM1', rationale: 'customer reports' })).rejects.toMatchObject({ code: 'unknown_release', message: expect.stringContaining('R9') });
  });
});
