import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archiveReleases, restoreRelease } from '../../../src/engine/nightly/archive.js';
import { tableChecksum } from '../../../src/engine/kernel/checksum.js';
import type { Ctx } from '../../../src/engine/kernel/context.js';
import { generateKeyPair, signingKey, writeSignedManifest } from '../../../src/engine/kernel/package.js';
import { ROOT, testEnv, type TestEnv } from '../../helpers.js';

/**
 * Archives in the package format of bundles and transfer packages (tributary-archive-v2: manifest.json
 * with every file's SHA-256, signed when this side has a signing key), and archives of the older format
 * (tributary-archive-v1, the committed fixture test/fixtures/old-format/archive-v1) still restored.
 */
let env: TestEnv;
const actor = 'cli:qa';
const OLD = path.join(ROOT, 'test/fixtures/old-format/archive-v1');

beforeAll(async () => {
  env = await testEnv(1, { archive: { dir: 'cold' } });
  // master as promotion leaves it (the fixture's R0: the same rows as test/engine/nightly/run.db.test.ts)
  await env.sql(`drop table master.transactions, master.accounts, master.users`);
  await env.sql(`create table master.users (id int not null, email text, name text, balance numeric(12,2), seen timestamptz, tags jsonb,
                   release text not null, feature text, primary key (id, release)) partition by list (release)`);
  await env.sql(`create table master.accounts (id int not null, number text, user_id int, release text not null, primary key (id, release))
                   partition by list (release)`);
  await env.sql(`create table master.users__r0 partition of master.users for values in ('R0')`);
  await env.sql(`create table master.accounts__r0 partition of master.accounts for values in ('R0')`);
  await env.sql(
    `insert into master.users select i, 'u' || i || '@x.io', case when i % 7 = 0 then null else 'Tab\t"quoted" \\ back' || i end,
            (i * 1.25)::numeric(12,2), timestamptz '2024-03-31 01:30:00+00' + i * interval '1 hour', jsonb_build_object('n', i), 'R0', 'F'
       from generate_series(1, 300) i`,
  );
  await env.sql(`insert into master.accounts select i, 'AC-' || i, i, 'R0' from generate_series(1, 150) i`);
  for (const t of ['users', 'accounts']) {
    await env.db.control('promotions').insert({
      release: 'R0', env: 'master', entity: t, table_name: t, partition_name: `${t}__r0`, row_count: 0, checksum: '0',
      promoted_by: 'cli:test', promoted_at: env.db.control.raw(`now() - interval '3 years'`),
    });
  }
});

afterAll(async () => {
  await env?.close();
});

const figures = async () => {
  const master = env.db.env(env.config.envs.get('master') ?? ({} as never));
  return { users: await tableChecksum(master, 'master', 'users__r0'), accounts: await tableChecksum(master, 'master', 'accounts__r0') };
};
const inMaster = async () => (await env.sql(`select to_regclass('master.users__r0')::text as t`)).rows[0].t as string | null;
const copyOf = (dir: string) => {
  const to = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-archive-')), path.basename(dir));
  fs.cpSync(dir, to, { recursive: true });
  return to;
};

describe('archives in the package format', () => {
  it('writes tributary-archive-v2 (every file with its SHA-256; unsigned without a signing key) and refuses a tampered file, naming it', async () => {
    const before = await figures();
    const a = (await archiveReleases(env.ctx, { olderThan: '2y', actor })).archived[0];
    const manifestFile = a?.manifest ?? '';
    const dir = path.dirname(manifestFile);
    const m = JSON.parse(fs.readFileSync(manifestFile, 'utf8'));
    expect(m.format).toBe('tributary-archive-v2');
    expect(Object.keys(m.files).sort()).toEqual(['accounts.copy.gz', 'users.copy.gz']);
    expect(m.files['users.copy.gz'].sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(m.tables.map((t: { table: string; rows: number }) => [t.table, t.rows])).toEqual([['users', 300], ['accounts', 150]]);
    expect(fs.existsSync(path.join(dir, 'manifest.sig'))).toBe(false);

    const file = path.join(dir, 'users.copy.gz');
    const good = fs.readFileSync(file);
    fs.writeFileSync(file, Buffer.from(good).fill(7, 20, 21));
    await expect(restoreRelease(env.ctx, 'R0', { actor })).rejects.toThrow(`${file}: altered: its SHA-256`);
    fs.truncateSync(file, 10);
    await expect(restoreRelease(env.ctx, 'R0', { actor })).rejects.toThrow(`${file}: truncated: 10 of the ${good.length} bytes the manifest lists`);
    expect(await inMaster()).toBeNull();
    fs.writeFileSync(file, good);

    const unknown = { ...m, format: 'tributary-archive-v9' };
    fs.writeFileSync(manifestFile, JSON.stringify(unknown));
    await expect(restoreRelease(env.ctx, 'R0', { actor })).rejects.toThrow(
      `${manifestFile}: format: "tributary-archive-v9" is not an archive format this version restores (it reads tributary-archive-v2, and the older tributary-archive-v1)`,
    );
    fs.writeFileSync(manifestFile, JSON.stringify(m));
    expect((await restoreRelease(env.ctx, 'R0', { actor })).rows).toBe(450);
    expect(await figures()).toEqual(before);
  });

  it('restores an archive of the older format tributary-archive-v1 (committed fixture), and refuses its altered file', async () => {
    const before = await figures();
    await archiveReleases(env.ctx, { olderThan: '2y', actor });
    expect(await inMaster()).toBeNull();
    const old = copyOf(OLD);
    const manifest = path.join(old, 'manifest.json');
    expect(JSON.parse(fs.readFileSync(manifest, 'utf8')).format).toBe('tributary-archive-v1');

    const file = path.join(old, 'accounts.copy.gz');
    const good = fs.readFileSync(file);
    fs.writeFileSync(file, Buffer.concat([good, Buffer.from([0])]));
    await expect(restoreRelease(env.ctx, 'R0', { actor, manifest })).rejects.toThrow(`${file}: altered: its SHA-256`);
    fs.writeFileSync(file, good);

    const back = await restoreRelease(env.ctx, 'R0', { actor, manifest });
    expect(back.tables.map((t) => [t.table, t.rows])).toEqual([['users__r0', 300], ['accounts__r0', 150]]);
    expect(await figures()).toEqual(before);
    // the archive this test made is restored too: mark it, as a restore of it would
    await env.db.control('archives').whereNull('restored_at').update({ restored_at: env.db.control.fn.now(), restored_by: actor });
  });

  it('signs archives when a signing key is configured, verifies the signature on restore, and refuses an altered manifest or an untrusted key', async () => {
    const keys = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-keys-'));
    const mine = generateKeyPair(keys, 'archive');
    const other = generateKeyPair(keys, 'other');
    const ctx: Ctx = { ...env.ctx, config: { ...env.config, transfer: { publicKeys: [], signingKeyFile: mine.privateFile } } };
    const before = await figures();
    const a = (await archiveReleases(ctx, { olderThan: '2y', actor })).archived[0];
    const manifestFile = a?.manifest ?? '';
    const dir = path.dirname(manifestFile);
    const sigFile = path.join(dir, 'manifest.sig');
    expect(JSON.parse(fs.readFileSync(sigFile, 'utf8'))).toMatchObject({ algorithm: 'ed25519', keyId: mine.keyId });
    const text = fs.readFileSync(manifestFile, 'utf8');
    const sig = fs.readFileSync(sigFile, 'utf8');

    // a checksum changed in the signed manifest: the signature no longer holds
    const m = JSON.parse(text);
    m.tables[0].checksum = '12345';
    fs.writeFileSync(manifestFile, JSON.stringify(m));
    await expect(restoreRelease(ctx, 'R0', { actor })).rejects.toThrow(`${manifestFile}: the signature does not verify with key ${mine.keyId}`);
    // signed by a key this side does not trust (neither transfer.publicKeys nor its own)
    writeSignedManifest(dir, JSON.parse(text), signingKey({ file: other.privateFile }));
    await expect(restoreRelease(ctx, 'R0', { actor })).rejects.toThrow(`${sigFile}: signed by key ${other.keyId}, which this side does not trust`);
    // the other key listed in transfer.publicKeys: trusted
    const trusting: Ctx = { ...ctx, config: { ...ctx.config, transfer: { publicKeys: [other.publicFile], signingKeyFile: mine.privateFile } } };
    expect(await inMaster()).toBeNull();
    fs.writeFileSync(manifestFile, text);
    fs.writeFileSync(sigFile, sig);
    expect((await restoreRelease(trusting, 'R0', { actor })).rows).toBe(450);
    expect(await figures()).toEqual(before);
  });
});
