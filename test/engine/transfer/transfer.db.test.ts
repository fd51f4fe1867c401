import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { loadConfig } from '../../../src/config/load.js';
import { openDatabase, paramsFromUrl, type Db } from '../../../src/db/connect.js';
import { consolidate } from '../../../src/engine/consolidate/run.js';
import { tagRelease } from '../../../src/engine/gate/tag.js';
import type { Ctx } from '../../../src/engine/kernel/context.js';
import { canonicalJson } from '../../../src/engine/kernel/audit.js';
import { verifyChain, why } from '../../../src/engine/report/index.js';
import { applyDecision } from '../../../src/engine/review/decide.js';
import { listConflicts } from '../../../src/engine/review/queue.js';
import { importRelease, verifyTravelledChains } from '../../../src/engine/transfer/index.js';
import { validateRelease } from '../../../src/engine/validate/validate.js';
import { cli, output } from '../../process.js';
import { FakeSlack, signedPost, slashBody, startTestBot, TEST_SIGNING_SECRET } from '../../slack/fake-slack.js';
import { configDoc, createDatabase, dropDatabase, insertAccounts, insertUsers, testEnv, urlFor } from '../../helpers.js';

/**
 * The hybrid estate end to end: the cloud side consolidates, validates and exports R2 (the real CLI), its
 * control database is DROPPED, and an on-premises side with a control database of its own and a config
 * without sources verifies and imports the package into staging. Every kind of bad package is refused,
 * naming the file and what failed, with nothing loaded.
 */
const by = { actor: 'cli:test' };
let work: string;
let pkgDir: string;
let keyDir: string;
let cloudFigures: { users: { rows: number; checksum: string } };
let cloudState: { why: Awaited<ReturnType<typeof why>>; events: number; head: string };
let onprem: { database: string; configFile: string; db: Db; ctx: Ctx; sql(t: string, p?: unknown[]): Promise<pg.QueryResult>; client: pg.Client };

const SETTINGS = `set local timezone = 'UTC'; set local datestyle = 'ISO, YMD'; set local intervalstyle = 'postgres'; set local extra_float_digits = 3; set local lc_monetary = 'C'`;

/** The rows of a table as text lines (its cells' ::text under fixed settings), sorted: compared across databases. */
async function tableTexts(c: pg.Client, table: string): Promise<string[]> {
  await c.query('begin');
  await c.query(SETTINGS);
  const res = await c.query(`select t::text as row from ${table} t where release = 'R2'`);
  await c.query('commit');
  return res.rows.map((r) => r.row as string).sort();
}

let cloudTexts: Record<string, string[]>;
let cloudAuto: Record<string, unknown>[];
const exportChecks: Record<'early' | 'byEnv' | 'noKey' | 'notEmpty', Awaited<ReturnType<typeof cli>>> = {} as never;

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-transfer-'));
  keyDir = path.join(work, 'keys');
  pkgDir = path.join(work, 'R2-package');
  // the operator's key pair (the real CLI: no config, no database)
  const keys = await cli(['keys', 'generate', '--out', keyDir, '--name', 'cloud']);
  expect(keys.code, output(keys)).toBe(0);
  expect(fs.statSync(path.join(keyDir, 'cloud.key')).mode & 0o777).toBe(0o600);

  // the cloud side: ST envs, a user-defined type, a conflict decided by a person, validation
  const cloud = await testEnv(2);
  try {
    await cloud.sql(`create type public.mood as enum ('calm', 'it''s fine', 'loud')`);
    for (const s of ['st1', 'st2', 'master']) await cloud.sql(`alter table ${s}.users add column mood public.mood, add column prefs json`);
    await insertUsers(cloud, 'st1', [{ id: 1500, email: 'mia@x' }, { id: 1, email: 'dana@x', role: 'Administrator', feature: 'FEAT-C' }]);
    await insertUsers(cloud, 'st2', [{ id: 1500, email: 'nick@x' }, { id: 2, email: 'dana@x', role: 'Customer' }]);
    await cloud.sql(`update st1.users set mood = 'it''s fine', prefs = '{"a": 1,  "a": null}' where id = 1500`);
    await insertAccounts(cloud, 'st2', [{ id: 10, number: 'AC-NICK', user_id: 1500 }, { id: 11, number: 'AC-DANA', user_id: 2 }]);
    await tagRelease(cloud.ctx, 'R2', by);
    await consolidate(cloud.ctx, 'R2', by);
    for (const c of await listConflicts(cloud.ctx, 'R2')) await applyDecision(cloud.ctx, 'R2', c.code, { action: 'keep', version: 1 }, { actor: 'U0ALICE', rationale: 'the admin is right' });
    exportChecks.early = await cli(['--config', cloud.configFile, 'export', 'R2', '--out', path.join(work, 'early'), '--key', path.join(keyDir, 'cloud.key')]);
    const v = await validateRelease(cloud.ctx, 'R2', by);
    expect(v.counts.open).toBe(0);
    // the final rows as the cloud's control database holds them (each cell's text), as row texts
    const run = (await cloud.db.control('release_states').where({ release: 'R2' }).first()).current_run_id as number;
    cloudTexts = {};
    for (const table of ['users', 'accounts']) {
      const cols = (await cloud.sql(`select attname from pg_attribute where attrelid = 'st1.${table}'::regclass and attnum > 0 and not attisdropped order by attnum`)).rows.map((r) => r.attname as string);
      const c = new pg.Client(paramsFromUrl(urlFor(cloud.database)));
      await c.connect();
      await c.query('begin');
      await c.query(SETTINGS);
      const res = await c.query(`select array[${cols.map((x) => `data->>'${x}'`).join(', ')}] as cells from work.r${run}_result where entity = $1 and status = 'final'`, [table]);
      await c.query('commit');
      await c.end();
      cloudTexts[table] = res.rows.map((r) => `(${(r.cells as (string | null)[]).map((x) => (x === null ? '' : /[\s,()"\\]|^$/.test(x) ? `"${x.replace(/\\/g, '\\\\').replace(/"/g, '""')}"` : x)).join(',')})`).sort();
    }
    cloudAuto = (await cloud.db.control('auto_resolutions').where({ run_id: run }).orderBy('code').select('code', 'entity', 'identity', 'key_label', 'rule', 'reason', 'detail')) as Record<string, unknown>[];
    expect(cloudAuto.length).toBeGreaterThan(0);
    cloudState = {
      why: await why(cloud.ctx, 'users', '2', 'R2'),
      events: Number((await cloud.db.control('audit_events').where({ release: 'R2' }).count('* as n'))[0]!.n),
      head: '',
    };
    const ex = await cli(['--config', cloud.configFile, 'export', 'R2', '--out', pkgDir, '--key', path.join(keyDir, 'cloud.key')]);
    expect(ex.code, output(ex)).toBe(0);
    expect(ex.stdout).toMatch(/Exported R2 \(run #\d+\) to .*R2-package .*signed by key [0-9a-f]{16}/);
    const pem = fs.readFileSync(path.join(keyDir, 'cloud.key'), 'utf8');
    exportChecks.byEnv = await cli(['--config', cloud.configFile, 'export', 'R2', '--out', path.join(work, 'by-env')], { env: { TRIBUTARY_SIGNING_KEY: pem.replaceAll('\n', '\\n') } });
    exportChecks.noKey = await cli(['--config', cloud.configFile, 'export', 'R2', '--out', path.join(work, 'no-key')]);
    exportChecks.notEmpty = await cli(['--config', cloud.configFile, 'export', 'R2', '--out', pkgDir, '--key', path.join(keyDir, 'cloud.key')]);
    const m = JSON.parse(fs.readFileSync(path.join(pkgDir, 'manifest.json'), 'utf8'));
    cloudFigures = { users: m.tables.find((t: { entity: string }) => t.entity === 'users') };
    cloudState.head = m.audit.head.hash;
  } finally {
    // the cloud's control database (and its ST envs) are gone before anything is imported
    await cloud.close();
  }

  // the on-premises side: its own control database, no sources, the cloud's public key
  const database = await createDatabase();
  const doc = configDoc(database, 0, { transfer: { publicKeys: [path.join(keyDir, 'cloud.pub')] } });
  const configFile = path.join(work, 'onprem.yml');
  fs.writeFileSync(configFile, stringify(doc));
  const config = loadConfig({ file: configFile, env: { TRIBUTARY_AUDIT_KEY: 'on-premises-audit-key-1234' } });
  expect(config.sources).toEqual([]);
  const db = await openDatabase(config);
  const client = new pg.Client(paramsFromUrl(urlFor(database)));
  await client.connect();
  onprem = { database, configFile, db, ctx: { config, db }, client, sql: (t, p) => client.query(t, p as unknown[]) };
}, 120_000);

afterAll(async () => {
  await onprem?.db.close();
  await onprem?.client.end();
  if (onprem) await dropDatabase(onprem.database);
  fs.rmSync(work, { recursive: true, force: true });
});

/** A copy of the package to damage. */
function copyPackage(name: string): string {
  const dir = path.join(work, name);
  fs.cpSync(pkgDir, dir, { recursive: true });
  return dir;
}

/** Re-signs a package's manifest after a change (an insider with the key, or a package for another release). */
function resign(dir: string, change: (m: Record<string, unknown>) => void, keyFile = path.join(keyDir, 'cloud.key')): void {
  const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  change(m);
  const text = `${canonicalJson(m)}\n`;
  const key = crypto.createPrivateKey(fs.readFileSync(keyFile, 'utf8'));
  const pub = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
  fs.writeFileSync(path.join(dir, 'manifest.json'), text);
  fs.writeFileSync(
    path.join(dir, 'manifest.sig'),
    JSON.stringify({ format: 'tributary-signature-v1', algorithm: 'ed25519', keyId: crypto.createHash('sha256').update(pub).digest('hex').slice(0, 16), signature: crypto.sign(null, Buffer.from(text), key).toString('base64') }),
  );
}

function sha(file: string): { sha256: string; bytes: number } {
  const b = fs.readFileSync(file);
  return { sha256: crypto.createHash('sha256').update(b).digest('hex'), bytes: b.length };
}

async function nothingLoaded(): Promise<void> {
  const staging = (await onprem.sql(`select to_regclass('staging.users')::text as t`)).rows[0].t;
  if (staging) expect((await onprem.sql(`select count(*)::int as n from staging.users`)).rows[0].n).toBe(0);
  expect(await onprem.db.control('transfer_packages')).toEqual([]);
  expect(await onprem.db.control('imported_audit_events')).toEqual([]);
  expect(await onprem.db.control('auto_resolutions')).toEqual([]);
  expect(await onprem.db.control('release_states')).toEqual([]);
  expect((await onprem.db.control('runs').count('* as n'))[0]!.n).toBe(0);
}

async function refused(dir: string, pattern: RegExp): Promise<void> {
  const err = (await importRelease(onprem.ctx, 'R2', { ...by, from: dir }).catch((x: Error) => x)) as Error & { code?: string };
  expect(err).toBeInstanceOf(Error);
  expect(err.code, err.message).toBe('package_refused');
  expect(err.message).toMatch(pattern);
  expect(err.message).toContain('nothing was loaded');
  await nothingLoaded();
}

describe('export (cloud side)', () => {
  it('only a validated release; signed with --key or TRIBUTARY_SIGNING_KEY alike; no key or a non-empty folder refused, naming what to do', () => {
    expect(exportChecks.early.code, output(exportChecks.early)).toBe(3);
    expect(exportChecks.early.stderr).toMatch(/release R2 is consolidated: only a validated release is exported; validate it first/);
    expect(fs.existsSync(path.join(work, 'early'))).toBe(false);
    expect(exportChecks.byEnv.code, output(exportChecks.byEnv)).toBe(0);
    const sig = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'manifest.sig'), 'utf8')).keyId as string;
    expect(sig(path.join(work, 'by-env'))).toBe(sig(pkgDir));
    expect(exportChecks.noKey.code, output(exportChecks.noKey)).toBe(2);
    expect(exportChecks.noKey.stderr).toMatch(/no signing key: set TRIBUTARY_SIGNING_KEY to the private key \(PEM\), or give a key file/);
    expect(fs.readdirSync(work).filter((f) => f.startsWith('no-key'))).toEqual([]);
    expect(exportChecks.notEmpty.code, output(exportChecks.notEmpty)).toBe(2);
    expect(exportChecks.notEmpty.stderr).toMatch(/R2-package exists and is not empty: export into a new folder/);
    const secret = fs.readFileSync(path.join(keyDir, 'cloud.key'), 'utf8').split('\n')[1]!;
    for (const r of Object.values(exportChecks)) expect(`${r.stdout}${r.stderr}`).not.toContain(secret);
  });
});

describe('bad packages: each refused, naming the file and what failed; nothing loaded', () => {
  it('a missing data file', async () => {
    const dir = copyPackage('missing');
    fs.rmSync(path.join(dir, 'data/accounts.copy.gz'));
    await refused(dir, /missing\/data\/accounts\.copy\.gz: missing from the package/);
  });

  it('a truncated data file', async () => {
    const dir = copyPackage('truncated');
    const f = path.join(dir, 'data/users.copy.gz');
    const b = fs.readFileSync(f);
    fs.writeFileSync(f, b.subarray(0, b.length - 7));
    await refused(dir, new RegExp(`truncated/data/users\\.copy\\.gz: truncated: ${b.length - 7} of the ${b.length} bytes the manifest lists`));
  });

  it('reordered (swapped) files', async () => {
    const dir = copyPackage('reordered');
    fs.renameSync(path.join(dir, 'data/users.copy.gz'), path.join(dir, 'tmp'));
    fs.renameSync(path.join(dir, 'data/accounts.copy.gz'), path.join(dir, 'data/users.copy.gz'));
    fs.renameSync(path.join(dir, 'tmp'), path.join(dir, 'data/accounts.copy.gz'));
    await refused(dir, /reordered\/data\/(users|accounts)\.copy\.gz: holds the contents of data\/(accounts|users)\.copy\.gz \(files reordered or swapped\)/);
  });

  it('an altered data file (one byte, same size)', async () => {
    const dir = copyPackage('altered');
    const f = path.join(dir, 'lineage/records.copy.gz');
    const b = fs.readFileSync(f);
    b[b.length - 12] = b[b.length - 12]! ^ 0xff;
    fs.writeFileSync(f, b);
    await refused(dir, /altered\/lineage\/records\.copy\.gz: altered: its SHA-256 [0-9a-f]{16}… \(\d+ bytes\) is not the manifest's/);
  });

  it('an altered manifest (a checksum changed, not re-signed)', async () => {
    const dir = copyPackage('altered-manifest');
    const f = path.join(dir, 'manifest.json');
    fs.writeFileSync(f, fs.readFileSync(f, 'utf8').replace(cloudFigures.users.checksum, '42'));
    await refused(dir, /altered-manifest\/manifest\.json: the signature does not verify with key [0-9a-f]{16}: the manifest was altered after signing/);
  });

  it('a key this side does not trust', async () => {
    const dir = copyPackage('unknown-key');
    const other = await cli(['keys', 'generate', '--out', keyDir, '--name', 'stranger']);
    expect(other.code, output(other)).toBe(0);
    resign(dir, () => undefined, path.join(keyDir, 'stranger.key'));
    await refused(dir, /unknown-key\/manifest\.sig: signed by key [0-9a-f]{16}, which this side does not trust \(transfer\.publicKeys: [0-9a-f]{16}\)/);
  });

  it('the wrong key (the trusted key named, another one signed)', async () => {
    const dir = copyPackage('wrong-key');
    const trustedId = JSON.parse(fs.readFileSync(path.join(pkgDir, 'manifest.sig'), 'utf8')).keyId as string;
    const { privateKey } = crypto.generateKeyPairSync('ed25519');
    const text = fs.readFileSync(path.join(dir, 'manifest.json'));
    fs.writeFileSync(path.join(dir, 'manifest.sig'), JSON.stringify({ format: 'tributary-signature-v1', algorithm: 'ed25519', keyId: trustedId, signature: crypto.sign(null, text, privateKey).toString('base64') }));
    await refused(dir, new RegExp(`wrong-key/manifest\\.json: the signature does not verify with key ${trustedId}`));
  });

  it('a manifest for another release', async () => {
    const dir = copyPackage('other-release');
    resign(dir, (m) => (m.release = 'R3'));
    await refused(dir, /other-release\/manifest\.json: the package is for release R3, not R2/);
  });

  it('signed rows that do not match the signed checksum: counts and checksums decide, before commit', async () => {
    const dir = copyPackage('insider');
    const f = path.join(dir, 'data/users.copy.gz');
    const text = zlib.gunzipSync(fs.readFileSync(f)).toString('utf8');
    expect(text).toContain('mia@x');
    fs.writeFileSync(f, zlib.gzipSync(text.replace('mia@x', 'mia@y')));
    resign(dir, (m) => ((m.files as Record<string, unknown>)['data/users.copy.gz'] = sha(f)));
    const err = (await importRelease(onprem.ctx, 'R2', { ...by, from: dir }).catch((x: Error) => x)) as Error;
    expect(err.message).toMatch(/staging table "staging"\."users" \(users\), from .*insider\/data\/users\.copy\.gz: after the copy, 3 row\(s\) with checksum \d+, but the source's values give 3 with checksum \d+; nothing was written/);
    await nothingLoaded();
  });
});

describe('a cell corrupted in flight (the real CLI, failpoint import.copy=corrupt)', () => {
  it('is refused naming the table and the file, never says verified, loads nothing', async () => {
    const r = await cli(['--config', onprem.configFile, 'load', 'R2', '--from', pkgDir], { env: { TRIBUTARY_AUDIT_KEY: 'on-premises-audit-key-1234', TRIBUTARY_FAILPOINTS: 'import.copy=corrupt' } });
    expect(r.code, output(r)).toBe(1);
    expect(r.stderr).toMatch(/staging table "staging"\."users" \(users\), from .*R2-package\/data\/users\.copy\.gz: after the copy, 3 row\(s\) with checksum \d+, but the source's values give 3 with checksum \d+; nothing was written/);
    expect(`${r.stdout}${r.stderr}`).not.toMatch(/verified/i);
    await nothingLoaded();
  });
});

describe('import on premises (the cloud control database dropped, a config without sources)', () => {
  it('verifies and loads R2 into staging (the real CLI), cell by cell as the cloud held it; the release is loaded', async () => {
    const r = await cli(['--config', onprem.configFile, 'load', 'R2', '--from', pkgDir], { env: { TRIBUTARY_AUDIT_KEY: 'on-premises-audit-key-1234' } });
    expect(r.code, output(r)).toBe(0);
    expect(r.stdout).toMatch(/Imported R2 \(cloud run #\d+, here run #\d+\) into staging .*verified against the signed manifest/);
    for (const table of ['users', 'accounts']) expect(await tableTexts(onprem.client, `staging.${table}`), table).toEqual(cloudTexts[table]);
    // the user-defined type travelled with its definition
    expect((await onprem.sql(`select enum_range(null::public.mood)::text as r`)).rows[0].r).toBe(`{calm,"it's fine",loud}`);
    const loads = await onprem.db.control('loads').where({ release: 'R2', entity: 'users' });
    expect(loads.map((l) => [Number(l.row_count), l.checksum])).toEqual([[cloudFigures.users.rows, cloudFigures.users.checksum]]);
    expect((await onprem.db.control('release_states').where({ release: 'R2' }).first()).state).toBe('loaded');
    expect((await onprem.db.control('runs').first()).kind).toBe('import');
    const status = await cli(['--config', onprem.configFile, 'status', 'R2'], { env: { TRIBUTARY_AUDIT_KEY: 'on-premises-audit-key-1234' } });
    expect(status.code, output(status)).toBe(0);
    expect(status.stdout).toMatch(/Release R2: loaded\n.*\n {2}validated \(imported\): cloud run #\d+, package [0-9a-f]{16}…, signed by key [0-9a-f]{16}/);
    expect(status.stdout).not.toContain('not locked yet');
  });

  it('answers why on premises as the cloud did: sources, rule, the conflict and its decision', async () => {
    const here = await why(onprem.ctx, 'users', '2', 'R2');
    const strip = (l: typeof here) => l.map(({ loaded: _l, conflict, ...rest }) => ({ ...rest, conflict: conflict && { ...conflict, decision: conflict.decision && { ...conflict.decision, id: 0, decidedAt: null } } }));
    expect(strip(here)).toEqual(strip(cloudState.why));
    expect(here[0]!.conflict?.decision?.rationale).toBe('the admin is right');
    expect(here[0]!.loaded?.env).toBe('staging');
    // the rules' resolutions (A-codes) travelled too, under the run made here
    const runId = (await onprem.db.control('release_states').where({ release: 'R2' }).first()).current_run_id as number;
    expect(await onprem.db.control('auto_resolutions').where({ run_id: runId }).orderBy('code').select('code', 'entity', 'identity', 'key_label', 'rule', 'reason', 'detail')).toEqual(cloudAuto);
  });

  it('audit verify reports both chains: the local one (recording the package digest once) and the travelled one', async () => {
    const local = await verifyChain(onprem.db.control, { release: 'R2' });
    expect(local.intact).toBe(true);
    const finish = await onprem.db.control('audit_events').where({ release: 'R2', action: 'load.finish' });
    expect(finish).toHaveLength(1);
    const pkg = await onprem.db.control('transfer_packages').first();
    expect(finish[0].details.package.digest).toBe(pkg.digest);
    expect(pkg.digest).toBe(crypto.createHash('sha256').update(fs.readFileSync(path.join(pkgDir, 'manifest.json'))).digest('hex'));
    const travelled = await verifyTravelledChains(onprem.ctx, 'R2');
    expect(travelled).toHaveLength(1);
    expect(travelled[0]).toMatchObject({ intact: true, events: cloudState.events, head: { hash: cloudState.head } });

    const r = await cli(['--config', onprem.configFile, 'audit', 'verify', 'R2'], { env: { TRIBUTARY_AUDIT_KEY: 'on-premises-audit-key-1234' } });
    expect(r.code, output(r)).toBe(0);
    expect(r.stdout).toMatch(/Audit chain intact: \d+ event\(s\) verified/);
    expect(r.stdout).toMatch(new RegExp(`Travelled chain intact: ${cloudState.events} event\\(s\\) of R2 from package [0-9a-f]{16}… \\(cloud run #\\d+\\), vouched for by key [0-9a-f]{16}'s signature; signed head #\\d+ ${cloudState.head}`));
    // Slack's /release audit verify runs the same table run: the travelled chain is in its answer too
    const fake = new FakeSlack();
    await fake.start();
    const { bot, url } = await startTestBot(onprem.ctx, fake);
    try {
      const res = await signedPost(url, slashBody(fake, 'audit verify R2'), TEST_SIGNING_SECRET);
      expect(res.status).toBe(200);
      await vi.waitFor(() => expect(JSON.stringify(fake.of('response_url'))).toContain(`Travelled chain intact: ${cloudState.events} event(s) of R2 from package`), { timeout: 20_000 });
      expect(JSON.stringify(fake.of('response_url'))).toContain(cloudState.head);
    } finally {
      await bot.stop();
      await fake.stop();
    }
    const audit = await cli(['--config', onprem.configFile, 'audit', 'R2'], { env: { TRIBUTARY_AUDIT_KEY: 'on-premises-audit-key-1234' } });
    expect(audit.code, output(audit)).toBe(0);
    expect(audit.stdout).toMatch(/loading/);

    // the travelled events and the packages are append-only, like the audit trail
    await expect(onprem.db.control('imported_audit_events').update({ actor: 'U0MALLORY' })).rejects.toThrow(/append-only/);
    await expect(onprem.db.control('transfer_packages').delete()).rejects.toThrow(/append-only/);
    // a travelled event altered here (around the append-only trigger, as an owner could) breaks that chain only
    await onprem.sql(`alter table imported_audit_events disable trigger imported_audit_events_no_update`);
    await onprem.sql(`update imported_audit_events set actor = 'U0MALLORY' where seq = (select min(seq) from imported_audit_events)`);
    await onprem.sql(`alter table imported_audit_events enable trigger imported_audit_events_no_update`);
    const broken = await verifyTravelledChains(onprem.ctx, 'R2');
    expect(broken[0]!.intact).toBe(false);
    expect(broken[0]!.broken).toMatch(/travelled event #\d+ \(\w+\.\w+\) was altered here: it differs from the signed manifest's/);
    const again = await cli(['--config', onprem.configFile, 'audit', 'verify', 'R2'], { env: { TRIBUTARY_AUDIT_KEY: 'on-premises-audit-key-1234' } });
    expect(again.code, output(again)).toBe(3);
    expect(again.stdout).toMatch(/Travelled chain BROKEN: package [0-9a-f]{16}… \(R2, run #\d+\): travelled event/);
  });

  it('refuses the same run again, and an older one; tag and consolidate say this side has no sources', async () => {
    const same = (await importRelease(onprem.ctx, 'R2', { ...by, from: pkgDir }).catch((x: Error) => x)) as Error;
    expect(same.message).toMatch(/R2-package\/manifest\.json: the package holds consolidation run #(\d+) of R2, but staging already holds run #\1: only a package of a later run is loaded; nothing was loaded/);
    const dir = copyPackage('older');
    resign(dir, (m) => ((m.run as { id: number }).id -= 1));
    const older = (await importRelease(onprem.ctx, 'R2', { ...by, from: dir }).catch((x: Error) => x)) as Error;
    expect(older.message).toMatch(/older\/manifest\.json: the package holds consolidation run #\d+ of R2, but staging already holds run #\d+/);
    expect(await onprem.db.control('transfer_packages')).toHaveLength(1);
    expect((await onprem.db.control('audit_events').where({ action: 'load.refused' })).length).toBeGreaterThanOrEqual(2);
    await expect(tagRelease(onprem.ctx, 'R2', by)).rejects.toThrow(/no env has role: source, so there is nothing to tag here; on an on-premises side, import R2 from its signed transfer package/);
  });
});

