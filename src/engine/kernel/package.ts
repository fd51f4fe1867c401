import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TributaryError } from '../../errors.js';
import { registerSecret } from '../../log.js';
import { canonicalJson } from './audit.js';

/**
 * A signed package: a folder of files and a manifest (manifest.json: canonical JSON naming every file with
 * its SHA-256 and size) signed with Ed25519 (manifest.sig: the key's id and the signature of the manifest's
 * exact bytes). The transfer package uses it (src/engine/transfer); bundles and archives can use the same
 * manifest, signature and verification. The private key never enters a database: it comes from
 * TRIBUTARY_SIGNING_KEY or a key file; the receiving side trusts public keys named in its config.
 */

export const MANIFEST_FILE = 'manifest.json';
export const SIGNATURE_FILE = 'manifest.sig';
export const SIGNATURE_FORMAT = 'tributary-signature-v1';

export interface PackageFile {
  sha256: string;
  bytes: number;
}

/** What every signed manifest holds: its format and its files (relative paths, forward slashes). */
export interface SignedManifest {
  format: string;
  files: Record<string, PackageFile>;
}

interface SignatureDoc {
  format: string;
  algorithm: 'ed25519';
  keyId: string;
  signature: string;
}

const refuse = (file: string, what: string, details: Record<string, unknown> = {}) =>
  new TributaryError('package_refused', `${file}: ${what}; nothing was loaded`, { file, ...details });

/** A public key's id: the first 16 hex digits of the SHA-256 of its SubjectPublicKeyInfo. */
export function keyIdOf(key: crypto.KeyObject): string {
  const pub = key.type === 'private' ? crypto.createPublicKey(key) : key;
  return crypto.createHash('sha256').update(pub.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

/** Writes a new Ed25519 key pair: `<name>.key` (private, PKCS#8 PEM, mode 0600) and `<name>.pub`. */
export function generateKeyPair(dir: string, name: string): { privateFile: string; publicFile: string; keyId: string } {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new TributaryError('usage', `key name "${name}": use letters, digits, . _ -`);
  const privateFile = path.resolve(dir, `${name}.key`);
  const publicFile = path.resolve(dir, `${name}.pub`);
  for (const f of [privateFile, publicFile]) {
    if (fs.existsSync(f)) {
      throw new TributaryError('usage', `${f} already exists: a key is never overwritten (choose another --name or folder)`);
    }
  }
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ed25519');
  fs.mkdirSync(path.resolve(dir), { recursive: true });
  fs.writeFileSync(privateFile, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600, flag: 'wx' });
  fs.writeFileSync(publicFile, publicKey.export({ type: 'spki', format: 'pem' }) as string, { flag: 'wx' });
  return { privateFile, publicFile, keyId: keyIdOf(publicKey) };
}

/** The signing key: TRIBUTARY_SIGNING_KEY (its PEM text) or a key file; never shown in errors. */
export function signingKey(src: { pem?: string; file?: string }): crypto.KeyObject {
  let pem = src.pem;
  let where = 'TRIBUTARY_SIGNING_KEY';
  if (!pem) {
    if (!src.file) {
      throw new TributaryError(
        'config_invalid',
        'no signing key: set TRIBUTARY_SIGNING_KEY to the private key (PEM), ' +
          'or give a key file (--key or transfer.signingKeyFile); tributary keys generate writes a pair',
        { variable: 'TRIBUTARY_SIGNING_KEY' },
      );
    }
    where = src.file;
    try {
      pem = fs.readFileSync(src.file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      throw new TributaryError('config_invalid', `${src.file}: cannot read the signing key (${code})`, { file: src.file });
    }
  }
  registerSecret(pem.trim());
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(pem);
  } catch {
    throw new TributaryError('config_invalid', `${where}: not a private key in PEM (PKCS#8); tributary keys generate writes one`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new TributaryError(
      'config_invalid',
      `${where}: a ${key.asymmetricKeyType} key; packages are signed with Ed25519 keys (tributary keys generate)`,
    );
  }
  return key;
}

/** The trusted public keys by id, from PEM texts or files (transfer.publicKeys). */
export function trustedKeys(entries: readonly string[], origin: string): Map<string, crypto.KeyObject> {
  const keys = new Map<string, crypto.KeyObject>();
  entries.forEach((entry, i) => {
    const where = `${origin}[${i}]${entry.startsWith('-----BEGIN') ? '' : ` (${entry})`}`;
    let pem = entry;
    if (!entry.startsWith('-----BEGIN')) {
      try {
        pem = fs.readFileSync(entry, 'utf8');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code ?? 'error';
        throw new TributaryError('config_invalid', `${where}: cannot read the public key file (${code})`);
      }
    }
    let key: crypto.KeyObject;
    try {
      key = crypto.createPublicKey(pem);
    } catch {
      throw new TributaryError('config_invalid', `${where}: not a public key in PEM`);
    }
    if (key.asymmetricKeyType !== 'ed25519') {
      throw new TributaryError('config_invalid', `${where}: a ${key.asymmetricKeyType} key; transfer keys are Ed25519`);
    }
    keys.set(keyIdOf(key), key);
  });
  return keys;
}

/** The manifest's text (canonical JSON: one text per manifest) and its SHA-256, the package's digest. */
export function manifestText(manifest: SignedManifest): string {
  return `${canonicalJson(manifest)}\n`;
}

export function digestOf(text: string | Buffer): string {
  return crypto.createHash('sha256').update(text).digest('hex');
}

/** Writes manifest.json and its signature into `dir`. Returns the package's digest and the key's id. */
export function writeSignedManifest(dir: string, manifest: SignedManifest, key: crypto.KeyObject): { digest: string; keyId: string } {
  const text = manifestText(manifest);
  const keyId = keyIdOf(key);
  const signature = crypto.sign(null, Buffer.from(text, 'utf8'), key).toString('base64');
  const sig: SignatureDoc = { format: SIGNATURE_FORMAT, algorithm: 'ed25519', keyId, signature };
  fs.writeFileSync(path.join(dir, MANIFEST_FILE), text);
  fs.writeFileSync(path.join(dir, SIGNATURE_FILE), `${JSON.stringify(sig, null, 2)}\n`);
  return { digest: digestOf(text), keyId };
}

export interface VerifiedPackage<M extends SignedManifest> {
  dir: string;
  manifest: M;
  /** manifest.json as it arrived, and its SHA-256. */
  text: string;
  digest: string;
  keyId: string;
  /** manifest.sig as it arrived. */
  signature: string;
}

/** A manifest's file name, safe to join to the package folder. */
function safeName(name: string): boolean {
  return /^[A-Za-z0-9_][A-Za-z0-9_.-]*(\/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$/.test(name) && !name.split('/').includes('..');
}

async function hashFile(file: string): Promise<PackageFile> {
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  for await (const chunk of fs.createReadStream(file)) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), bytes };
}

/**
 * Reads a package and verifies it before anything is used: the signature of manifest.json by a trusted
 * key, then each file's size and SHA-256. Each refusal names the file and what failed.
 */
export async function readVerifiedPackage<M extends SignedManifest>(
  dir: string,
  trusted: Map<string, crypto.KeyObject>,
  format: string,
): Promise<VerifiedPackage<M>> {
  const root = path.resolve(dir);
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw refuse(root, 'no such package folder');
  const manifestFile = path.join(root, MANIFEST_FILE);
  const sigFile = path.join(root, SIGNATURE_FILE);
  if (!fs.existsSync(manifestFile)) throw refuse(manifestFile, 'missing: the package has no manifest');
  if (!fs.existsSync(sigFile)) throw refuse(sigFile, 'missing: the manifest is not signed');
  const raw = fs.readFileSync(manifestFile);
  const sigText = fs.readFileSync(sigFile, 'utf8');
  const sig = verifySignature(raw, sigText, { manifestFile, sigFile }, trusted);
  let manifest: M;
  try {
    manifest = JSON.parse(raw.toString('utf8')) as M;
  } catch {
    throw refuse(manifestFile, 'not JSON');
  }
  if (manifest.format !== format) throw refuse(manifestFile, `format ${JSON.stringify(manifest.format)}, expected ${format}`);
  await verifyFiles(root, manifestFile, manifest);
  return { dir: root, manifest, text: raw.toString('utf8'), digest: digestOf(raw), keyId: sig.keyId, signature: sigText };
}

/** The signature file's document, once it verifies the manifest's bytes with a trusted key. */
function verifySignature(
  raw: Buffer,
  sigText: string,
  files: { manifestFile: string; sigFile: string },
  trusted: Map<string, crypto.KeyObject>,
): SignatureDoc {
  const { manifestFile, sigFile } = files;
  let sig: SignatureDoc;
  try {
    sig = JSON.parse(sigText) as SignatureDoc;
  } catch {
    throw refuse(sigFile, 'not a signature file (not JSON)');
  }
  const wellFormed = sig.format === SIGNATURE_FORMAT && sig.algorithm === 'ed25519';
  if (!wellFormed || typeof sig.keyId !== 'string' || typeof sig.signature !== 'string') {
    throw refuse(sigFile, `not a ${SIGNATURE_FORMAT} Ed25519 signature`);
  }
  const key = trusted.get(sig.keyId);
  if (!key) {
    const known = [...trusted.keys()].join(', ') || 'none';
    throw refuse(sigFile, `signed by key ${sig.keyId}, which this side does not trust (transfer.publicKeys: ${known})`, {
      keyId: sig.keyId,
    });
  }
  if (!crypto.verify(null, raw, key, Buffer.from(sig.signature, 'base64'))) {
    throw refuse(
      manifestFile,
      `the signature does not verify with key ${sig.keyId}: the manifest was altered after signing, or signed by another key`,
      { keyId: sig.keyId },
    );
  }
  return sig;
}

/** Each file the manifest lists: inside the package, present, of its size and SHA-256. */
async function verifyFiles(root: string, manifestFile: string, manifest: SignedManifest): Promise<void> {
  const files = Object.entries(manifest.files ?? {});
  const bySha = new Map(files.map(([name, f]) => [f.sha256, name]));
  for (const [name, want] of files) {
    if (!safeName(name)) throw refuse(manifestFile, `names the file ${JSON.stringify(name)}, outside the package`);
    const file = path.join(root, name);
    if (!fs.existsSync(file)) throw refuse(file, 'missing from the package');
    const got = await hashFile(file);
    if (got.bytes < want.bytes) throw refuse(file, `truncated: ${got.bytes} of the ${want.bytes} bytes the manifest lists`);
    if (got.sha256 !== want.sha256) {
      const other = bySha.get(got.sha256);
      throw refuse(
        file,
        other && other !== name
          ? `holds the contents of ${other} (files reordered or swapped): its SHA-256 is not the one the manifest lists for it`
          : `altered: its SHA-256 ${got.sha256.slice(0, 16)}… (${got.bytes} bytes) ` +
              `is not the manifest's ${want.sha256.slice(0, 16)}… (${want.bytes} bytes)`,
      );
    }
  }
}

/** Verifies a stored manifest's signature again (audit verify on the receiving side). */
export function signatureHolds(
  text: string,
  signature: string,
  trusted: Map<string, crypto.KeyObject>,
): { ok: boolean; keyId: string | null; why?: string } {
  let sig: SignatureDoc;
  try {
    sig = JSON.parse(signature) as SignatureDoc;
  } catch {
    return { ok: false, keyId: null, why: 'the stored signature is not JSON' };
  }
  const key = trusted.get(sig.keyId);
  if (!key) return { ok: false, keyId: sig.keyId, why: `key ${sig.keyId} is no longer trusted (transfer.publicKeys)` };
  if (!crypto.verify(null, Buffer.from(text, 'utf8'), key, Buffer.from(sig.signature, 'base64'))) {
    return { ok: false, keyId: sig.keyId, why: 'the stored manifest does not match its signature' };
  }
  return { ok: true, keyId: sig.keyId };
}
