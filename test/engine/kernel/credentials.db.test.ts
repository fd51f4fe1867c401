import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../../src/config/load.js';
import { openDatabase, type Db } from '../../../src/db/connect.js';
import { codeDeployer } from '../../../src/engine/deploy/codeDeployers.js';
import type { Ctx } from '../../../src/engine/kernel/context.js';
import { envCredentials, teamConnection } from '../../../src/engine/kernel/shell.js';
import { databaseUrl, runShard } from '../../../src/engine/tiers/runner.js';
import { configDoc, createDatabase, dropDatabase, ROOT, TEST_AUDIT_KEY, urlFor } from '../../helpers.js';

/**
 * Credentials stay with their environment (issue 16): a team's test or deploy command gets the target
 * env's credentials through PGHOST, PGPORT, PGUSER, PGPASSWORD and PGDATABASE; the URL it sees carries
 * no password; the control server's password never reaches it, not even for an env on that server;
 * other envs' config variables and libpq variables inherited from Tributary's environment do not either.
 */
const STAGING_PW = 'staging-pw-4c1e';
const ST9_PW = 'st9-secret-pw-77aa';
const INHERITED_PW = 'inherited-pgpassword-31';
let database: string;
let dir: string;
let db: Db;
let ctx: Ctx;
let controlPw: string;
const saved: Record<string, string | undefined> = {};

function withPassword(url: string, user: string | undefined, pw: string): string {
  const u = new URL(url);
  if (user) u.username = user;
  u.password = pw;
  return u.toString();
}

beforeAll(async () => {
  database = await createDatabase();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-creds-'));
  // the suite's server may need its password (embedded); a trust server ignores the one given here
  const control = new URL(urlFor(database));
  controlPw = control.password ? decodeURIComponent(control.password) : 'control-pw-9d2b';
  const doc = configDoc(database, 1) as { database: unknown; environments: Record<string, Record<string, unknown>> };
  doc.database = { url: withPassword(urlFor(database), undefined, controlPw) };
  doc.environments.staging = { role: 'staging', schema: 'staging', url: '${STAGING_DATABASE_URL}' };
  doc.environments['ST-9'] = { role: 'source', precedence: 9, schema: 'st9', url: '${ST9_DATABASE_URL}' };
  const file = path.join(dir, 'tributary.yml');
  fs.writeFileSync(file, stringify(doc));
  const vars = {
    STAGING_DATABASE_URL: withPassword(urlFor(database), 'qa_staging', STAGING_PW),
    ST9_DATABASE_URL: withPassword(urlFor(database), 'qa_st9', ST9_PW),
    PGPASSWORD: INHERITED_PW,
    PGUSER: 'inherited_user',
    // the transfer package's signing key (the cloud side's export): never a team command's
    TRIBUTARY_SIGNING_KEY: '-----BEGIN PRIVATE KEY-----\\nsigning-key-body\\n-----END PRIVATE KEY-----',
  };
  // the bot's own process environment: what a team command would inherit
  for (const [k, v] of Object.entries(vars)) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  const config = loadConfig({ file, env: { ...process.env, TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } });
  db = await openDatabase(config);
  ctx = { config, db };
});

afterAll(async () => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  await db?.close();
  if (database) await dropDatabase(database);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs a shard whose command records its environment and its filled command line. */
async function shardEnv(envName: string): Promise<{ env: Record<string, string>; line: string }> {
  const env = ctx.config.envs.get(envName)!;
  const out = path.join(dir, `${envName}.env`);
  const workDir = fs.mkdtempSync(path.join(dir, 'shard-'));
  const o = await runShard({
    runId: 1,
    index: 1,
    count: 1,
    tests: [{ id: 'test::a', name: 'a' }],
    command: `env > ${out}; echo {databaseUrl} > ${out}.line; printf '<testsuites><testcase name="a" classname="t" time="0.1"/></testsuites>' > {junit}`,
    cwd: ROOT,
    env: envName,
    databaseUrl: databaseUrl(teamConnection(ctx, env), env.schema),
    timeoutMs: 10_000,
    workDir,
    retries: 0,
  });
  expect(o.status, o.error).toBe('done');
  return { env: parseEnv(fs.readFileSync(out, 'utf8')), line: fs.readFileSync(`${out}.line`, 'utf8') };
}

function parseEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const l of text.split('\n')) {
    const i = l.indexOf('=');
    if (i > 0) env[l.slice(0, i)] = l.slice(i + 1);
  }
  return env;
}

function expectNoForeignCredential(all: string): void {
  expect(all).not.toContain(ST9_PW);
  expect(all).not.toContain(INHERITED_PW);
  expect(all).not.toContain('inherited_user');
  expect(all).not.toContain('signing-key-body');
  expect(all).not.toContain('TRIBUTARY_SIGNING_KEY');
  expect(all).not.toContain(controlPw);
  expect(all).not.toContain('ST9_DATABASE_URL');
  expect(all).not.toContain('STAGING_DATABASE_URL');
}

describe('team commands get the credentials of their target env only', () => {
  it('a test command on staging: PG* of staging, a URL without password, nothing foreign', async () => {
    const { env, line } = await shardEnv('staging');
    expect(env).toMatchObject({ PGUSER: 'qa_staging', PGPASSWORD: STAGING_PW, PGDATABASE: database, PGOPTIONS: '-c search_path=staging' });
    expect(env.PGHOST).toBeTruthy();
    expect(env.PGPORT).toMatch(/^\d+$/);
    expect(env.TRIBUTARY_DATABASE_URL).not.toContain(STAGING_PW);
    expect(env.TRIBUTARY_DATABASE_URL).toContain('qa_staging@');
    expect(line).not.toContain(STAGING_PW);
    expectNoForeignCredential(Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n') + line);
  });

  it('an env on the control server gets no password: the control password never reaches a team command', async () => {
    const { env, line } = await shardEnv('master');
    expect(env.PGPASSWORD).toBeUndefined();
    expect(env).toMatchObject({ PGDATABASE: database, PGOPTIONS: '-c search_path=master' });
    expectNoForeignCredential(Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n') + line);
  });

  it('a deploy command gets the PG* of the env it deploys to, and nothing foreign', async () => {
    const out = path.join(dir, 'deploy.env');
    const deployer = codeDeployer(
      { env: 'staging', bundleDir: dir, cwd: ROOT, timeoutMs: 10_000, commands: { deploy: { run: `env > ${out}`, timeoutMs: 10_000 }, rollback: { run: 'true', timeoutMs: 10_000 } }, quorum: 1, promptMs: 1000, windows: [], smoke: false },
      (name) => envCredentials(ctx, name),
    );
    const r = await deployer.run('deploy', { release: 'R2', env: 'staging', version: 'v1' });
    expect(r.ok, r.error).toBe(true);
    const env = parseEnv(fs.readFileSync(out, 'utf8'));
    expect(env).toMatchObject({ PGUSER: 'qa_staging', PGPASSWORD: STAGING_PW, TRIBUTARY_ENV: 'staging' });
    expectNoForeignCredential(fs.readFileSync(out, 'utf8').replace(`PGPASSWORD=${STAGING_PW}`, ''));
  });
});
