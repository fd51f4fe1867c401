import os from 'node:os';
import type pg from 'pg';
import type { ConnectionParams } from '../../db/connect.js';
import { pgClient } from '../../db/pg.js';
import { TributaryError } from '../../errors.js';
import { logger, redact } from '../../log.js';
import { firstRow } from './must.js';

/**
 * A session that holds a lock for a whole run sits idle meanwhile: a server's idle_session_timeout would
 * end it, and the lock with it. It runs a query at a third of that timeout (or every 10 s without one).
 */
export async function keepSessionAlive(client: pg.Client, lose: (why: string) => void): Promise<NodeJS.Timeout> {
  const res = await client.query<{ ms: string }>(`select setting as ms from pg_settings where name = 'idle_session_timeout'`);
  const timeout = res.rows[0]?.ms;
  const every = Number(timeout) > 0 ? Math.max(50, Math.floor(Number(timeout) / 3)) : 10_000;
  const timer = setInterval(() => {
    client.query('select 1').catch((err: Error) => lose(err.message));
  }, every);
  timer.unref();
  return timer;
}

/** This process, as the rows it claims name it (host:pid). */
export const processName = (): string => `${os.hostname()}:${process.pid}`;

/** A session advisory lock held on a connection of its own, for as long as the work it guards. */
export interface HeldLock {
  /** Aborted (with a gate_busy error naming `what`) the moment the lock's session is gone. */
  lost: AbortSignal;
  /** Unlocks (if still held) and closes the connection. */
  release(): Promise<void>;
}

/**
 * Takes the session advisory lock `key` on a dedicated connection (TCP keep-alives, and a query at a third
 * of idle_session_timeout, so neither a NAT nor the server drops it for idleness); null when another
 * session holds it. When the session ends anyway (terminated, network lost), `lost` is aborted at once:
 * the holder stops, and records nothing over whoever takes the lock next.
 */
export async function holdSessionLock(params: ConnectionParams, key: string, what: string): Promise<HeldLock | null> {
  const client = pgClient({ ...params, connectionTimeoutMillis: 10_000, keepAlive: true } as pg.ClientConfig);
  const lost = new AbortController();
  const lose = (why: string) => {
    if (lost.signal.aborted) return;
    logger().error(
      { lock: what, why: redact(why) },
      'the lock connection is gone: another process may take over; this one stops and records nothing over it',
    );
    lost.abort(new TributaryError('gate_busy', `${what} lost its lock (${redact(why)}): another process may have taken over`));
  };
  client.on('error', (err) => lose(err.message));
  client.on('end', () => lose('connection closed'));
  const close = async () => {
    client.removeAllListeners('end');
    await client.end().catch(() => undefined);
  };
  try {
    await client.connect();
    const tried = await client.query<{ ok: boolean }>('select pg_try_advisory_lock(hashtext($1)) as ok', [key]);
    const got = firstRow(tried.rows, `pg_try_advisory_lock's answer for ${what}`).ok;
    if (!got) {
      await close();
      return null;
    }
    const keepAlive = await keepSessionAlive(client, lose);
    return {
      lost: lost.signal,
      release: async () => {
        clearInterval(keepAlive);
        if (!lost.signal.aborted) await client.query('select pg_advisory_unlock(hashtext($1))', [key]).catch(() => undefined);
        await close();
      },
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** Whether a live session holds the advisory lock `key` (a dead process's session lock is gone). */
export async function sessionLockHeld(params: ConnectionParams, key: string): Promise<boolean> {
  const c = pgClient(params as pg.ClientConfig);
  c.on('error', () => undefined);
  await c.connect();
  try {
    const got = await c.query<{ ok: boolean }>('select pg_try_advisory_lock(hashtext($1)) as ok', [key]);
    const { ok } = firstRow(got.rows, "pg_try_advisory_lock's answer");
    if (ok) await c.query('select pg_advisory_unlock(hashtext($1))', [key]);
    return !ok;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * Waits (up to `ms`) until no session holds the advisory lock `key`: its holder stopped, or died. False
 * when it is still held then (its holder lives on).
 */
export async function waitSessionLockFree(params: ConnectionParams, key: string, ms: number): Promise<boolean> {
  const c = pgClient(params as pg.ClientConfig);
  c.on('error', () => undefined);
  await c.connect();
  try {
    await c.query(`set lock_timeout = ${Math.max(1, Math.round(ms))}`);
    await c.query('select pg_advisory_lock(hashtext($1))', [key]);
    await c.query('select pg_advisory_unlock(hashtext($1))', [key]);
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === '55P03') return false;
    throw err;
  } finally {
    await c.end().catch(() => undefined);
  }
}
