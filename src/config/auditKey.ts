import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TributaryError } from '../errors.js';
import { registerSecret } from '../log.js';
import type { Config } from './load.js';

/**
 * The audit chain's HMAC key. It never reaches the database, so someone who can write the audit table
 * still cannot re-forge the chain. From TRIBUTARY_AUDIT_KEY; when that is not set and the control
 * database is the embedded one (a demo, a trial), a random key generated once into
 * `<dataDir>/audit.key` (mode 0600, next to server.json). With a real server the key is required.
 */
export interface AuditKey {
  key: string;
  source: 'env' | 'file' | 'generated';
  /** The key file (source file or generated). */
  file?: string;
}

export const AUDIT_KEY_MIN_LENGTH = 16;
const SEE = 'see docs/operations.md, "The audit trail and its key"';

export function auditKeyFile(config: Config): string {
  return path.join(config.database.dataDir, 'audit.key');
}

export function resolveAuditKey(config: Config): AuditKey {
  if (config.auditKey) {
    if (config.auditKey.length < AUDIT_KEY_MIN_LENGTH) {
      throw new TributaryError(
        'config_invalid',
        `TRIBUTARY_AUDIT_KEY is too short (${config.auditKey.length} characters): use at least ${AUDIT_KEY_MIN_LENGTH} random characters, e.g. the output of \`openssl rand -base64 32\` (${SEE})`,
        { variable: 'TRIBUTARY_AUDIT_KEY' },
      );
    }
    return { key: config.auditKey, source: 'env' };
  }
  if (config.database.url) {
    throw new TributaryError(
      'config_invalid',
      'TRIBUTARY_AUDIT_KEY is not set: with a PostgreSQL server (database.url or DATABASE_URL) the audit trail needs an HMAC key kept outside the database; ' +
        `generate one with \`openssl rand -base64 32\`, keep it in your secret store and set TRIBUTARY_AUDIT_KEY for the bot and the CLI alike (${SEE})`,
      { variable: 'TRIBUTARY_AUDIT_KEY' },
    );
  }
  const file = auditKeyFile(config);
  const existing = readKeyFile(file);
  if (existing !== undefined) return { key: existing, source: 'file', file };
  fs.mkdirSync(path.dirname(file), { recursive: true });
  // written aside, then linked into place: two processes starting at once agree on one key
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, `${crypto.randomBytes(32).toString('base64url')}\n`, { mode: 0o600 });
  let created = true;
  try {
    fs.linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    created = false;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  const key = readKeyFile(file);
  if (key === undefined) throw new TributaryError('config_invalid', `${file}: the audit key file vanished while it was being created`);
  return { key, source: created ? 'generated' : 'file', file };
}

function readKeyFile(file: string): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TributaryError('config_invalid', `${file}: cannot read the audit key: ${(err as Error).message}`);
  }
  const key = text.trim();
  if (key.length < AUDIT_KEY_MIN_LENGTH) {
    throw new TributaryError('config_invalid', `${file}: the audit key file is damaged (under ${AUDIT_KEY_MIN_LENGTH} characters); restore it from a backup, or set TRIBUTARY_AUDIT_KEY (${SEE})`);
  }
  registerSecret(key);
  return key;
}
