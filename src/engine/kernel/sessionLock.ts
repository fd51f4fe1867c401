import type pg from 'pg';

/**
 * A session that holds a lock for a whole run sits idle meanwhile: a server's idle_session_timeout would
 * end it, and the lock with it. It runs a query at a third of that timeout (or every 10 s without one).
 */
export async function keepSessionAlive(client: pg.Client, lose: (why: string) => void): Promise<NodeJS.Timeout> {
  const timeout = (await client.query<{ ms: string }>(`select setting as ms from pg_settings where name = 'idle_session_timeout'`)).rows[0]?.ms;
  const every = Number(timeout) > 0 ? Math.max(50, Math.floor(Number(timeout) / 3)) : 10_000;
  const timer = setInterval(() => {
    client.query('select 1').catch((err: Error) => lose(err.message));
  }, every);
  timer.unref();
  return timer;
}
