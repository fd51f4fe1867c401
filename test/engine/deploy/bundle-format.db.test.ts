import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { createBundle, getBundle } from '../../../src/engine/deploy/bundle.js';
import { backupData, deployData } from '../../../src/engine/deploy/dataDeployer.js';
import type { Ctx } from '../../../src/engine/kernel/context.js';
import { generateKeyPair, signingKey, writeSignedManifest } from '../../../src/engine/kernel/package.js';
import { TributaryError } from '../../../src/errors.js';
import type { TestEnv } from '../../helpers.js';
import { ROOT } from '../../helpers.js';
import { approvedRelease, seedProduction } from '../../deploy-setup.js';

/**
 * Bundles in the package format of archives and transfer packages (tributary-bundle-v2: manifest.json in
 * the bundle's directory, signed when this side has a signing key, verified before deploying), and a bundle
 * of the older format (its manifest only in the bundles row: test/fixtures/old-format/bundle-v1) deployed.
 */
let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

const by = { actor: 'cli:test' };
const OLD = path.join(ROOT, 'test/fixtures/old-format');
const refusal = async (p: Promise<unknown>) => (await p.catch((x: unknown) => x)) as TributaryError;
const prodRows = async (e: TestEnv) => (await e.sql(`select count(*)::int as n from prod.users where release = 'R2'`)).rows[0].n as number;

describe('bundles in the package format', () => {
  it('writes tributary-bundle-v2 with every file\'s SHA-256, signed with the configured key; deploy verifies it and refuses an altered manifest or an untrusted key', async () => {
    const e = (env = await approvedRelease());
    await seedProduction(e);
    const keys = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-keys-'));
    const mine = generateKeyPair(keys, 'bundle');
    const other = generateKeyPair(keys, 'other');
    const ctx: Ctx = { ...e.ctx, config: { ...e.config, transfer: { publicKeys: [], signingKeyFile: mine.privateFile } } };
    const bundle = await createBundle(ctx, 'R2', { code: 'v1', ...by });
    const manifestFile = path.join(bundle.dir, 'manifest.json');
    const sigFile = path.join(bundle.dir, 'manifest.sig');
    const m = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
    expect([m.format, m.release, m.version, m.codeVersion, m.dataFingerprint]).toEqual(['tributary-bundle-v2', 'R2', 1, 'v1', bundle.dataFingerprint]);
    expect(m.tables.map((t: { file: string; rows: number }) => [t.file, t.rows])).toEqual([['01-users.copy.gz', 4], ['02-accounts.copy.gz', 2], ['03-transactions.copy.gz', 1]]);
    expect(m.files['01-users.copy.gz']).toEqual({ sha256: bundle.tables[0]?.sha256, bytes: bundle.tables[0]?.bytes });
    expect(JSON.parse(fs.readFileSync(sigFile, 'utf8'))).toMatchObject({ algorithm: 'ed25519', keyId: mine.keyId });
    const text = fs.readFileSync(manifestFile, 'utf8');
    const sig = fs.readFileSync(sigFile, 'utf8');
    const backup = await backupData(ctx, bundle, by);

    const altered = { ...m, tables: m.tables.map((t: { rows: number }, i: number) => (i === 0 ? { ...t, rows: 5 } : t)) };
    fs.writeFileSync(manifestFile, JSON.stringify(altered));
    const bad = await refusal(deployData(ctx, bundle, backup, by));
    expect(bad.code).toBe('package_refused');
    expect(bad.message).toContain(`${manifestFile}: the signature does not verify with key ${mine.keyId}`);
    writeSignedManifest(bundle.dir, JSON.parse(text), signingKey({ file: other.privateFile }));
    expect((await refusal(deployData(ctx, bundle, backup, by))).message).toContain(`${sigFile}: signed by key ${other.keyId}, which this side does not trust`);
    // a manifest of another bundle (here: another version) in its directory
    const otherVersion = { ...JSON.parse(text), version: 7 };
    writeSignedManifest(bundle.dir, otherVersion, signingKey({ file: mine.privateFile }));
    expect((await refusal(deployData(ctx, bundle, backup, by))).message).toContain(`${manifestFile}: is the manifest of R2 v7 (code v1), not of bundle v1 of R2`);
    expect(await prodRows(e)).toBe(1);

    fs.writeFileSync(manifestFile, text);
    fs.writeFileSync(sigFile, sig);
    const done = await deployData(ctx, bundle, backup, by);
    expect(done.tables.map((t) => [t.table, t.rows])).toEqual([['users', 4], ['accounts', 2], ['transactions', 1]]);
    expect(await prodRows(e)).toBe(4);
  });

  it('without a signing key writes the bundle unsigned, and deploy still verifies every file against the manifest', async () => {
    const e = (env = await approvedRelease());
    await seedProduction(e);
    const bundle = await createBundle(e.ctx, 'R2', { code: 'v1', ...by });
    expect(fs.readdirSync(bundle.dir).sort()).toEqual(['01-users.copy.gz', '02-accounts.copy.gz', '03-transactions.copy.gz', 'manifest.json']);
    const backup = await backupData(e.ctx, bundle, by);
    const file = path.join(bundle.dir, '01-users.copy.gz');
    const good = fs.readFileSync(file);
    fs.rmSync(file);
    expect((await refusal(deployData(e.ctx, bundle, backup, by))).message).toBe(`${file}: missing from the package; nothing was loaded; make a new bundle (tributary bundle R2 --code v1)`);
    fs.writeFileSync(file, good);
    expect((await deployData(e.ctx, bundle, backup, by)).tables.map((t) => t.rows)).toEqual([4, 2, 1]);
  });
});

describe('a bundle of the older format (tributary-bundle-v1: its manifest in the bundles row)', () => {
  it('still deploys, its files checked against the row\'s SHA-256 as they load', async () => {
    const e = (env = await approvedRelease());
    await seedProduction(e);
    const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-old-bundle-')), 'v1');
    fs.cpSync(path.join(OLD, 'bundle-v1'), dir, { recursive: true });
    expect(fs.existsSync(path.join(dir, 'manifest.json'))).toBe(false);
    const row = JSON.parse(fs.readFileSync(path.join(OLD, 'bundle-v1.row.json'), 'utf8'));
    await e.db.control('bundles').insert({ ...row, manifest: JSON.stringify(row.manifest), dir });
    const bundle = await getBundle(e.ctx, 'R2');
    if (!bundle) throw new Error('expected the fixture bundle');
    const backup = await backupData(e.ctx, bundle, by);

    const file = path.join(dir, '03-transactions.copy.gz');
    const good = fs.readFileSync(file);
    fs.writeFileSync(file, zlib.gzipSync(zlib.gunzipSync(good).toString().replace('12.50', '99.00')));
    const err = await refusal(deployData(e.ctx, bundle, backup, by));
    expect(err.message).toMatch(/^deploying R2 into env production, table prod\.transactions: bundle file .* changed since bundle v1 was made/);
    expect(await prodRows(e)).toBe(1);

    fs.writeFileSync(file, good);
    const done = await deployData(e.ctx, bundle, backup, by);
    expect(done.tables.map((t) => [t.table, t.rows, t.checksum])).toEqual(row.manifest.map((t: { table: string; rows: number; checksum: string }) => [t.table, t.rows, t.checksum]));
    expect(await prodRows(e)).toBe(4);
  });
});
