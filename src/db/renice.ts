import fs from 'node:fs';
import os from 'node:os';
import type pg from 'pg';

const LOCAL_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);

/**
 * Background database work at lower CPU priority. When the PostgreSQL server runs on this machine (the
 * embedded one, or a local server), the server processes of Tributary's heavy sessions (collection,
 * detection, loads) are reniced, so that the bot's own process keeps the CPU it needs to acknowledge
 * Slack within its 3 s (aim: 300 ms) while a consolidation runs. Only a process that is a PostgreSQL
 * server process of this machine is touched (a server in a container or behind a tunnel may report a
 * pid that means something else here); elsewhere, or without permission, this does nothing.
 */
export async function lowerPriority(conn: pg.Client, host: string): Promise<void> {
  if (!LOCAL_HOSTS.has(host) && !host.startsWith('/')) return;
  try {
    const res = await conn.query<{ pid: number }>('select pg_backend_pid() as pid');
    const pid = res.rows[0]!.pid;
    if (!fs.readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('postgres')) return;
    os.setPriority(pid, 10);
  } catch {
    // not ours to renice (another user, another machine, no /proc): nothing to do
  }
}
