import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TributaryError } from '../../errors.js';
import { registerSecret } from '../../log.js';
import { canonicalJson } from './audit.js';
import { fsyncFile } from './copy.js';
import type { UserType } from './types.js';

/**
 * The one package format of transfer packages, production bundles and archives: a folder of files and a
 * manifest (manifest.json: canonical JSON whose `format` names the kind and its version, every file with
 * its SHA-256 and size, and per table its file, row count, checksum, columns and types) signed with Ed25519
 * (manifest.sig: the key's id and the signature of the manifest's exact bytes). One function verifies a
 * package before anything is used (readVerifiedPackage): import, deploy and restore all call it.
 *
 * Keys: the private key never enters a database: it comes from TRIBUTARY_SIGNING_KEY or a key file; the
 * receiving side trusts the public keys named in its config (transfer.publicKeys). A transfer package is
 * always signed and a signature is required. Bundles and archives are signed when this side has a signing
 * key (configuredSigningKey), and verified against transfer.publicKeys and this side's own key when they
 * are signed; without a signing key they are written unsigned (local use: the demo, tests), and an
 * unsigned bundle or archive is accepted with every file's SHA-256 still verified against its manifest.
 */

export const MANIFEST_FILE = 'manifest.json';
export const SIGNATURE_FILE = 'manifest.sig';
export const SIGNATURE_FORMAT = 'tributary-signature-v1';

export interface PackageFile {
  sha256: string;
  bytes: number;
}

/** The manifests' formats (the `format` field): each names its kind and version. */
export const FORMATS = {
  transfer: 'tributary-transfer-v1',
  bundle: 'tributary-bundle-v2',
  archive: 'tributary-archive-v2',
} as const;

/** What every manifest holds: its format and its files (relative paths, forward slashes). */
export interface SignedManifest {
  format: string;
  files: Record<string, PackageFile>;
}

/** A column of a packaged table: its name and type as format_type() gives it. */
export interface PackageColumn {
  name: string;
  type: string;
  notNull?: boolean;
  num?: number;
}

/** A packaged table: the file of its rows (gzip COPY text, columns in `columns` order) and their figures. */
export interface PackageTable {
  entity: string;
  table: string;
  /** The file, relative to the manifest (a key of `files`). */
  file: string;
  /** Count and checksum of the rows (kernel/checksum.ts), computed on the source, never from the file. */
  rows: number;
  checksum: string;
  columns: PackageColumn[];
  primaryKey?: string[];
  /** The enums, domains and composites its columns use, with their definitions. */
  types?: UserType[];
}

/** A manifest of tables: what bundles, archives and transfer packages share. */
export interface PackageManifest extends SignedManifest {
  tables: PackageTable[];
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
  const written = writePackageManifest(dir, manifest, key);
  return { digest: written.digest, keyId: keyIdOf(key) };
}

/** Writes a file whole or not at all: a temporary file, synced, renamed into place. */
function writeWhole(file: string, text: string): void {
  fs.writeFileSync(`${file}.tmp`, text);
  fsyncFile(`${file}.tmp`);
  fs.renameSync(`${file}.tmp`, file);
}

/**
 * Writes the manifest into `dir`, signed when `key` is given (manifest.sig first, then manifest.json, each
 * synced and renamed into place: a manifest that exists is complete). Returns its digest and the key's id.
 */
export function writePackageManifest(
  dir: string,
  manifest: SignedManifest,
  key: crypto.KeyObject | null,
): { digest: string; keyId: string | null } {
  const text = manifestText(manifest);
  if (!key) {
    fs.rmSync(path.join(dir, SIGNATURE_FILE), { force: true });
    writeWhole(path.join(dir, MANIFEST_FILE), text);
    return { digest: digestOf(text), keyId: null };
  }
  const keyId = keyIdOf(key);
  const signature = crypto.sign(null, Buffer.from(text, 'utf8'), key).toString('base64');
  const sig: SignatureDoc = { format: SIGNATURE_FORMAT, algorithm: 'ed25519', keyId, signature };
  writeWhole(path.join(dir, SIGNATURE_FILE), `${JSON.stringify(sig, null, 2)}\n`);
  writeWhole(path.join(dir, MANIFEST_FILE), text);
  return { digest: digestOf(text), keyId };
}

/**
 * This side's signing key for bundles and archives, when it has one: TRIBUTARY_SIGNING_KEY (config's
 * transfer.signingKey), else transfer.signingKeyFile, as export finds it; null when neither is set.
 */
export function configuredSigningKey(transfer: { signingKey?: string; signingKeyFile?: string }): crypto.KeyObject | null {
  if (transfer.signingKey) return signingKey({ pem: transfer.signingKey });
  if (transfer.signingKeyFile) return signingKey({ file: transfer.signingKeyFile });
  return null;
}

/**
 * The keys a side verifies its own bundles and archives with: transfer.publicKeys and the public half of
 * its own signing key (a package this side signed is trusted here without listing its key).
 */
export function localKeys(transfer: { publicKeys: readonly string[]; signingKey?: string; signingKeyFile?: string }, origin: string): {
  signing: crypto.KeyObject | null;
  trusted: Map<string, crypto.KeyObject>;
} {
  const trusted = trustedKeys(transfer.publicKeys, `${origin}: transfer.publicKeys`);
  const signing = configuredSigningKey(transfer);
  if (signing) trusted.set(keyIdOf(signing), crypto.createPublicKey(signing));
  return { signing, trusted };
}

export interface VerifiedPackage<M extends SignedManifest> {
  dir: string;
  manifest: M;
  /** manifest.json as it arrived, and its SHA-256. */
  text: string;
  digest: string;
  /** The signing key's id and manifest.sig as it arrived; null for an unsigned bundle or archive. */
  keyId: string | null;
  signature: string | null;
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

export interface VerifyOptions {
  /** An unsigned package (no manifest.sig): refused (transfer packages, the default) or accepted (bundles, archives). */
  unsigned?: 'refuse' | 'accept';
}

/**
 * Reads a package and verifies it before anything is used: the signature of manifest.json by a trusted
 * key (when signed; an unsigned package only where `unsigned: 'accept'`), its format, its tables field by
 * field, then each file's size and SHA-256. Each refusal names the file and what failed.
 */
export async function readVerifiedPackage<M extends SignedManifest>(
  dir: string,
  trusted: Map<string, crypto.KeyObject>,
  format: string,
  opts: VerifyOptions = {},
): Promise<VerifiedPackage<M>> {
  const root = path.resolve(dir);
  if (!fs.existsSync(root) || !fs.statSync(root).isDirectory()) throw refuse(root, 'no such package folder');
  const manifestFile = path.join(root, MANIFEST_FILE);
  const sigFile = path.join(root, SIGNATURE_FILE);
  if (!fs.existsSync(manifestFile)) throw refuse(manifestFile, 'missing: the package has no manifest');
  const signed = fs.existsSync(sigFile);
  if (!signed && opts.unsigned !== 'accept') throw refuse(sigFile, 'missing: the manifest is not signed');
  const raw = fs.readFileSync(manifestFile);
  const sigText = signed ? fs.readFileSync(sigFile, 'utf8') : null;
  const sig = sigText === null ? null : verifySignature(raw, sigText, { manifestFile, sigFile }, trusted);
  let manifest: M;
  try {
    manifest = JSON.parse(raw.toString('utf8')) as M;
  } catch {
    throw refuse(manifestFile, 'not JSON');
  }
  if (manifest.format !== format) throw refuse(manifestFile, `format ${JSON.stringify(manifest.format)}, expected ${format}`);
  if (!manifest.files || typeof manifest.files !== 'object') throw refuse(manifestFile, 'files: missing');
  checkTables(manifestFile, manifest);
  await verifyFiles(root, manifestFile, manifest.files);
  const text = raw.toString('utf8');
  return { dir: root, manifest, text, digest: digestOf(raw), keyId: sig?.keyId ?? null, signature: sigText };
}

/** A manifest's tables, field by field: each refusal names the field (tables[1].checksum). */
function checkTables(manifestFile: string, manifest: SignedManifest): void {
  const tables = (manifest as Partial<PackageManifest>).tables;
  if (tables === undefined) return;
  const bad = (field: string, what: string) => refuse(manifestFile, `${field}: ${what}`, { field });
  if (!Array.isArray(tables) || tables.length === 0) throw bad('tables', 'missing or empty');
  tables.forEach((t: Partial<PackageTable>, i) => {
    for (const f of ['entity', 'table', 'file', 'checksum'] as const) {
      if (typeof t[f] !== 'string' || !t[f]) throw bad(`tables[${i}].${f}`, 'missing');
    }
    if (typeof t.rows !== 'number' || !Number.isInteger(t.rows) || t.rows < 0) throw bad(`tables[${i}].rows`, 'not a row count');
    if (!Array.isArray(t.columns) || t.columns.length === 0) throw bad(`tables[${i}].columns`, 'missing');
    t.columns.forEach((c, j) => {
      if (typeof c?.name !== 'string' || typeof c.type !== 'string') {
        throw bad(`tables[${i}].columns[${j}]`, 'not a column (name and type)');
      }
    });
    if (!manifest.files[t.file as string]) throw bad(`tables[${i}].file`, `${t.file} is not among the manifest's files`);
  });
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

/**
 * Each file the manifest lists, against its size and SHA-256: a refusal names the file and what failed
 * (missing, truncated, swapped with another of the package's files, altered).
 */
export async function verifyFiles(root: string, manifestFile: string, files: Record<string, PackageFile>): Promise<void> {
  const entries = Object.entries(files);
  const bySha = new Map(entries.map(([name, f]) => [f.sha256, name]));
  for (const [name, want] of entries) {
    if (!safeName(name)) throw refuse(manifestFile, `names the file ${JSON.stringify(name)}, outside the package`);
    const file = path.join(root, name);
    if (!fs.existsSync(file)) throw refuse(file, 'missing from the package');
    const got = await hashFile(file);
    if (got.bytes < want.bytes) throw refuse(file, `truncated: ${got.bytes} of the ${want.bytes} bytes the manifest lists`);
    if (got.sha256 === want.sha256) continue;
    const other = bySha.get(got.sha256);
    if (other && other !== name) {
      const what = `holds the contents of ${other} (files reordered or swapped): its SHA-256 is not the one the manifest lists for it`;
      throw refuse(file, what);
    }
    const now = `${got.sha256.slice(0, 16)}… (${got.bytes} bytes)`;
    throw refuse(file, `altered: its SHA-256 ${now} is not the manifest's ${want.sha256.slice(0, 16)}… (${want.bytes} bytes)`);
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
