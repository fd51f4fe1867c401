import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { generateKeyPair, keyIdOf, readVerifiedPackage, signingKey, trustedKeys, writeSignedManifest } from '../../../src/engine/kernel/package.js';

/** The signed package format (kernel/package.ts): keys, signing, and verification before use. */
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-package-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('keys', () => {
  it('generates a pair once: the private key 0600, never overwritten; the id is the public key’s', () => {
    const k = generateKeyPair(dir, 'one');
    expect(fs.statSync(k.privateFile).mode & 0o777).toBe(0o600);
    expect(keyIdOf(crypto.createPublicKey(fs.readFileSync(k.publicFile, 'utf8')))).toBe(k.keyId);
    expect(keyIdOf(signingKey({ file: k.privateFile }))).toBe(k.keyId);
    expect(() => generateKeyPair(dir, 'one')).toThrow(/one\.key already exists: a key is never overwritten/);
  });

  it('names the variable when there is no signing key, and refuses a key that is not Ed25519 without showing it', () => {
    expect(() => signingKey({})).toThrow(/no signing key: set TRIBUTARY_SIGNING_KEY/);
    const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    expect(() => signingKey({ pem: rsa })).toThrow(/^TRIBUTARY_SIGNING_KEY: a rsa key; packages are signed with Ed25519 keys/);
    const err = (() => {
      try {
        signingKey({ pem: 'not a key at all, secret-ish text' });
      } catch (e) {
        return e as Error;
      }
    })()!;
    expect(err.message).toMatch(/TRIBUTARY_SIGNING_KEY: not a private key in PEM/);
    expect(err.message).not.toContain('secret-ish');
  });

  it('trusts public keys from PEM text or files, naming a bad entry', () => {
    const k = generateKeyPair(dir, 'two');
    const keys = trustedKeys([fs.readFileSync(k.publicFile, 'utf8'), k.publicFile], 'transfer.publicKeys');
    expect([...keys.keys()]).toEqual([k.keyId]);
    expect(() => trustedKeys([path.join(dir, 'nope.pub')], 'transfer.publicKeys')).toThrow(/transfer\.publicKeys\[0\] \(.*nope\.pub\): cannot read the public key file \(ENOENT\)/);
  });
});

describe('a signed package', () => {
  it('verifies; refuses a file the manifest names outside the package', async () => {
    const k = generateKeyPair(dir, 'three');
    const pkg = path.join(dir, 'pkg');
    fs.mkdirSync(pkg);
    fs.writeFileSync(path.join(pkg, 'a.txt'), 'hello');
    const sha = crypto.createHash('sha256').update('hello').digest('hex');
    const key = signingKey({ file: k.privateFile });
    writeSignedManifest(pkg, { format: 'test-v1', files: { 'a.txt': { sha256: sha, bytes: 5 } } }, key);
    const trusted = trustedKeys([k.publicFile], 'transfer.publicKeys');
    const ok = await readVerifiedPackage(pkg, trusted, 'test-v1');
    expect(ok.keyId).toBe(k.keyId);
    await expect(readVerifiedPackage(pkg, trusted, 'other-v1')).rejects.toThrow(/manifest\.json: format "test-v1", expected other-v1/);
    writeSignedManifest(pkg, { format: 'test-v1', files: { '../a.txt': { sha256: sha, bytes: 5 } } }, key);
    await expect(readVerifiedPackage(pkg, trusted, 'test-v1')).rejects.toThrow(/manifest\.json: names the file "\.\.\/a\.txt", outside the package; nothing was loaded/);
  });
});
