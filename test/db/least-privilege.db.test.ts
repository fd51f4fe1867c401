import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { main } from '../../src/cli/main.js';
import { loadConfig } from '../../src/config/load.js';
import { openDatabase, paramsFromUrl, type Db } from '../../src/db/connect.js';
import { recordAudit } from '../../src/engine/kernel/audit.js';
import { chainHead, verifyChain } from '../../src/engine/report/auditTrail.js';
import { configDoc, createDatabase, dropDatabase, TEST_AUDIT_KEY, urlFor } from '../helpers.js';
import { cli, output } from '../process.js';

/**
 * The database is the real boundary (issue 16, docs/operations.md): migrations run as an owner role;
 * the bot and the CLI connect as an app role (made by `tributary grants <app> --apply`) that reads and
 * writes the control tables, but may only append to and read the audit trail, cannot switch its
 * triggers off and cannot migrate. Roles are made on whichever server the suite uses (unique names per
 * run) and dropped afterwards.
 */
const suffix = crypto.randomBytes(4).toString('hex');
const OWNER = `trib_owner_${suffix}`;
const APP = `trib_app_${suffix}`;
const PASSWORD = crypto.randomBytes(12).toString('hex');

let database: string;
let dir: string;
let ownerDb: Db;

function urlAs(role: string): string {
  const u = new URL(urlFor(database));
  u.username = role;
  u.password = PASSWORD;
  return u.toString();
}

function configFile(name: string, url: string): string {
  const file = path.join(dir, `${name}.yml`);
  fs.writeFileSync(file, stringify({ ...configDoc(database, 1), database: { url } }));
  return file;
}

async function as<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client(paramsFromUrl(url));
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

const admin = <T>(fn: (c: pg.Client) => Promise<T>) => as(urlFor('postgres'), fn);
const run = async (...argv: string[]) => {
  process.exitCode = undefined;
  const code = await main(argv);
  process.exitCode = undefined;
  return code;
};

let ownerCfg: string;
let appCfg: string;

beforeAll(async () => {
  process.env.TRIBUTARY_AUDIT_KEY = TEST_AUDIT_KEY;
  delete process.env.DATABASE_URL;
  delete process.env.TRIBUTARY_CONFIG;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-roles-'));
  database = await createDatabase();
  await admin((c) => c.query(`create role ${OWNER} login password '${PASSWORD}'`));
  await admin((c) => c.query(`alter database ${database} owner to ${OWNER}`));
  await as(urlFor(database), (c) => c.query(`alter schema public owner to ${OWNER}`));
  ownerCfg = configFile('owner', urlAs(OWNER));
  appCfg = configFile('app', urlAs(APP));
  // the owner migrates (on open) and writes the first events
  ownerDb = await openDatabase(loadConfig({ file: ownerCfg, env: { TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } }));
  for (const action of ['tag.lock', 'consolidate.finish']) await recordAudit(ownerDb.control, { actor: 'U0LEAD', action, release: 'R2' });
  // the documented command, run by an administrator (a role that may create roles)
  const grants = await cli(['--config', configFile('admin', urlFor(database)), 'grants', APP, '--apply']);
  expect(grants.code, output(grants)).toBe(0);
  expect(grants.stdout).toContain(`${APP} has least privilege`);
  await admin((c) => c.query(`alter role ${APP} password '${PASSWORD}'`));
});

afterAll(async () => {
  await ownerDb?.close();
  if (database) await dropDatabase(database);
  await admin(async (c) => {
    await c.query(`drop role if exists ${APP}`);
    await c.query(`drop role if exists ${OWNER}`);
  });
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('least privilege on the control database', () => {
  it('the control tables belong to the owner role, which the app role is not', async () => {
    const owners = await as(urlAs(OWNER), (c) => c.query(`select distinct tableowner from pg_tables where schemaname = 'public'`));
    expect(owners.rows).toEqual([{ tableowner: OWNER }]);
    const printed = await cli(['--config', ownerCfg, 'grants', APP]);
    expect(printed.code, output(printed)).toBe(0);
    expect(printed.stdout).toContain(`revoke update, delete, truncate on audit_events from "${APP}"`);
  });

  it('the app role appends to and reads the audit trail, and reads and writes the other control tables', async () => {
    const appDb = await openDatabase(loadConfig({ file: appCfg, env: { TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY } }));
    try {
      const appended = await recordAudit(appDb.control, { actor: 'U0LEAD', action: 'validate.finish', release: 'R2' });
      expect(appended.seq).toBe(3);
      expect(await verifyChain(appDb.control)).toMatchObject({ intact: true, events: 3 });
      await appDb.control('release_states').insert({ release: 'R9', state: 'locked', updated_at: appDb.control.fn.now() });
      await appDb.control('release_states').where({ release: 'R9' }).update({ state: 'consolidated' });
      await appDb.control('release_states').where({ release: 'R9' }).delete();
    } finally {
      await appDb.close();
    }
  });

  it.each([
    ['update an audit event', `update audit_events set actor = 'someone else'`, /permission denied for table audit_events/],
    ['delete audit events', `delete from audit_events`, /permission denied for table audit_events/],
    ['truncate the audit trail', `truncate audit_events`, /permission denied for table audit_events/],
    ['disable its append-only trigger', `alter table audit_events disable trigger user`, /must be owner of table audit_events/],
    ['drop it', `drop table audit_events`, /must be owner of table audit_events/],
    ['rewrite the chain origin', `insert into audit_chain_origin (one, unchained_events) values (false, 0)`, /permission denied for table audit_chain_origin/],
  ])('the app role cannot %s', async (_what, sql, refused) => {
    await expect(as(urlAs(APP), (c) => c.query(sql))).rejects.toThrow(refused);
  });

  it('the app role cannot migrate, up or down: refused before anything, audited', async () => {
    const before = (await chainHead(ownerDb.control))!.seq;
    expect(await run('--config', appCfg, '--as', 'U0LEAD', 'migrate', '--down', '--yes')).toBe(3);
    expect(await run('--config', appCfg, '--as', 'U0LEAD', 'migrate')).toBe(3);
    const refusals = await ownerDb.control('audit_events').where({ action: 'auth.refused', subject: 'migrate' }).where('seq', '>', before).select('details');
    expect(refusals.map((r) => r.details)).toEqual([
      { needed: `owner:${OWNER}`, connectedAs: APP },
      { needed: `owner:${OWNER}`, connectedAs: APP },
    ]);
    expect(await as(urlAs(OWNER), (c) => c.query(`select to_regclass('audit_events') is not null as there`))).toMatchObject({ rows: [{ there: true }] });
  });

  it('the owner role can still switch the trigger off and cut the newest events: caught against a witnessed head', async () => {
    const head = (await chainHead(ownerDb.control))!;
    await as(urlAs(OWNER), async (c) => {
      await c.query('alter table audit_events disable trigger user');
      await c.query(`delete from audit_events where seq = ${head.seq}`);
      await c.query('alter table audit_events enable trigger user');
    });
    expect((await verifyChain(ownerDb.control)).newestChecked).toBe(false);
    expect((await verifyChain(ownerDb.control, { head: head.hash })).broken).toMatchObject({ kind: 'witness' });
  });

  it('the owner rolls back only with --yes, after being told what goes: tables, row counts, the audit trail', async () => {
    const without = await cli(['--config', ownerCfg, 'migrate', '--down']);
    expect(without.code, output(without)).toBe(2);
    expect(without.stderr).toMatch(/table audit_events \(\d+ rows\): the audit trail/);
    expect(without.stderr).toContain('table release_states');
    expect(without.stderr).toContain('Nothing was done: add --yes');
    expect(await as(urlAs(OWNER), (c) => c.query(`select to_regclass('audit_events') is not null as there`))).toMatchObject({ rows: [{ there: true }] });
    const withYes = await cli(['--config', ownerCfg, 'migrate', '--down', '--yes']);
    expect(withYes.code, output(withYes)).toBe(0);
    expect(withYes.stdout).toMatch(/rolled back: .*20261125120000_control/);
    expect(await as(urlAs(OWNER), (c) => c.query(`select to_regclass('audit_events') is not null as there`))).toMatchObject({ rows: [{ there: false }] });
  });
});
