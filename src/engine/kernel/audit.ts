import crypto from 'node:crypto';
import type { Knex } from 'knex';
import { auditKeyOf } from '../../db/connect.js';
import type { AuditEventsRow } from '../../db/rows.js';
import { TributaryError } from '../../errors.js';
import { redact, redactDeep } from '../../log.js';
import { firstRow } from './must.js';

/**
 * The audit trail: append-only (the table refuses updates, deletes and truncation) and hash-chained.
 * Each event carries its position in the chain (`seq`), the hash of the event before it (`prev_hash`)
 * and its own hash: HMAC-SHA256 over a canonical serialisation of the event, keyed with a secret that
 * stays in this process (TRIBUTARY_AUDIT_KEY, see src/config/auditKey.ts). Someone who can write the
 * table can change a row, but cannot compute the hash that would hide it: `tributary audit verify`
 * finds the first broken link (src/engine/report/auditTrail.ts).
 *
 * One chain for the whole table. Appends are serialized by a transaction-level advisory lock, taken in
 * the inserting transaction, so two writers (two processes, two bot replicas) never fork the chain; the
 * unique index on seq refuses a fork even past the lock.
 */
export interface AuditEvent {
  actor: string;
  action: string;
  release?: string;
  subject?: string;
  details?: Record<string, unknown>;
}

export const AUDIT_LOCK = 'tributary:audit';
/** Domain separation: the first field of every hashed serialisation (a later format gets v2). */
export const AUDIT_HASH_FORMAT = 'tributary-audit-v1';
/** How `at` enters the hash: ISO 8601 in UTC with microseconds, rendered by PostgreSQL itself. */
export const AT_FORMAT = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;

/** JSON with object keys sorted (recursively): one text per value, whatever the key order it was built in. */
export function canonicalJson(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(',')}]`;
  if (typeof value === 'object' && !(value instanceof Date)) {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj)
      .filter((k) => obj[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** The fields of an event that its hash covers. */
export interface ChainedFields {
  /** The position in the chain (the row's id is not covered: ids only have to grow along the chain). */
  seq: number;
  /** ISO 8601 UTC with microseconds (AT_FORMAT). */
  at: string;
  actor: string;
  action: string;
  release: string | null;
  subject: string | null;
  details: unknown;
  prevHash: string | null;
}

export function eventHash(key: string, e: ChainedFields): string {
  const text = canonicalJson([AUDIT_HASH_FORMAT, e.seq, e.at, e.actor, e.action, e.release, e.subject, e.details, e.prevHash]);
  return crypto.createHmac('sha256', key).update(text, 'utf8').digest('hex');
}

export interface AppendedEvent {
  id: number;
  seq: number;
  hash: string;
}

/**
 * Appends one event to the audit trail. Given a transaction, the event joins it (and commits or rolls
 * back with it); given the control database, it opens its own. The append lock is held until that
 * transaction ends: call it last in a transaction, after the transaction's own row locks.
 */
export async function recordAudit(db: Knex | Knex.Transaction, event: AuditEvent): Promise<AppendedEvent> {
  const key = auditKeyOf(db);
  if (!key) {
    throw new TributaryError(
      'config_invalid',
      'the audit trail has no key on this database connection: open the control database with openDatabase() (TRIBUTARY_AUDIT_KEY)',
    );
  }
  if ((db as Knex.Transaction).isTransaction) return append(db as Knex.Transaction, key, event);
  return db.transaction((trx) => append(trx, key, event));
}

/** The connections (by their config, shared with their transactions) whose key matched the chain head. */
const keyChecked = new WeakSet<object>();

/**
 * Before its first append, a process proves its key signed the chain head: a process started with
 * another TRIBUTARY_AUDIT_KEY would otherwise append events that break the chain for good. Runs under
 * the append lock, so the head cannot move meanwhile; the refusal rolls the transaction back.
 */
async function checkKeyAgainstHead(trx: Knex.Transaction, key: string): Promise<void> {
  const res = await trx.raw<{ rows: (Omit<ChainedFields, 'prevHash'> & { prev_hash: string | null; hash: string })[] }>(
    `select seq::int as seq, to_char(at at time zone 'UTC', ${AT_FORMAT}) as at, actor, action, release, subject, details, prev_hash, hash
       from audit_events where seq is not null order by seq desc limit 1`,
  );
  const head = res.rows[0];
  if (head && eventHash(key, { ...head, prevHash: head.prev_hash }) !== head.hash) {
    throw new TributaryError(
      'config_invalid',
      `TRIBUTARY_AUDIT_KEY does not match the audit chain: its newest event (#${head.seq}) was not signed with this key, ` +
        'so nothing was written. ' +
        'Every process that writes this control database (bot, CLI, agents) needs the same key; ' +
        'if the key is right, the newest event was altered: run tributary audit verify',
      { variable: 'TRIBUTARY_AUDIT_KEY', seq: head.seq },
    );
  }
  keyChecked.add(trx.client.config as object);
}

async function append(trx: Knex.Transaction, key: string, event: AuditEvent): Promise<AppendedEvent> {
  // the hash covers the details exactly as jsonb gives them back (undefined dropped, dates as strings)
  const details = JSON.parse(JSON.stringify(redactDeep(event.details ?? {}))) as Record<string, unknown>;
  const actor = redact(event.actor);
  const release = event.release ?? null;
  const subject = event.subject == null ? null : redact(event.subject);
  await trx.raw('select pg_advisory_xact_lock(hashtext(?))', [AUDIT_LOCK]);
  // a statement after the lock: its snapshot sees the event the previous holder committed
  const head = await trx.raw<{ rows: { seq: number | null; hash: string | null; at: string }[] }>(
    `select h.seq, h.hash, to_char(now() at time zone 'UTC', ${AT_FORMAT}) as at
       from (select 1) as one
       left join lateral (select seq, hash from audit_events where seq is not null order by seq desc limit 1) as h on true`,
  );
  const h = firstRow(head.rows, 'the audit chain head query to return its one row');
  if (!keyChecked.has(trx.client.config as object)) await checkKeyAgainstHead(trx, key);
  const fields: ChainedFields = {
    seq: (h.seq ?? 0) + 1,
    at: h.at,
    actor,
    action: event.action,
    release,
    subject,
    details,
    prevHash: h.hash,
  };
  const hash = eventHash(key, fields);
  // the id comes from its sequence here, under the lock: ids grow along the chain
  const inserted = await trx('audit_events')
    .insert({
      seq: fields.seq,
      at: fields.at,
      actor,
      action: event.action,
      release,
      subject,
      details: JSON.stringify(details),
      prev_hash: fields.prevHash,
      hash,
    })
    .returning<Pick<AuditEventsRow, 'id'>[]>('id');
  const row = firstRow(inserted, `the id of audit event #${fields.seq}`);
  return { id: Number(row.id), seq: fields.seq, hash };
}
