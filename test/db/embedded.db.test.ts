import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { ensureEmbeddedServer, type ServerInfo } from '../../src/db/embedded.js';
import { ROOT } from '../helpers.js';

const CHILD = path.join(ROOT, 'test/db/embedded-child.ts');

interface ChildReport {
  owner: boolean;
  port: number;
  pid: number;
}

const dirs: string[] = [];

function dataDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tributary-embedded-'));
  // the server runs as the postgres user when the tests run as root
  fs.chmodSync(dir, 0o755);
  dirs.push(dir);
  return path.join(dir, 'pg');
}

/** Runs embedded-child.ts; resolves with its report once it printed it (and, unless holding, exited). */
function runChild(dir: string, hold = false): Promise<{ report: ChildReport; child: ReturnType<typeof spawn> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, ...(hold ? ['hold'] : [])], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n')[0];
      if (hold && out.includes('\n')) resolve({ report: JSON.parse(line!) as ChildReport, child });
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (hold) return reject(new Error(`child exited (${code}) before reporting: ${err}`));
      if (code !== 0) return reject(new Error(`child exited with ${code}: ${err}`));
      resolve({ report: JSON.parse(out.split('\n')[0]!) as ChildReport, child });
    });
  });
}

async function query<T extends pg.QueryResultRow>(info: ServerInfo, sql: string): Promise<T[]> {
  const c = new pg.Client({ ...info, database: 'postgres', connectionTimeoutMillis: 3000 });
  await c.connect();
  try {
    return (await c.query<T>(sql)).rows;
  } finally {
    await c.end();
  }
}

async function reachable(info: ServerInfo): Promise<boolean> {
  try {
    await query(info, 'select 1');
    return true;
  } catch {
    return false;
  }
}

function postmasterPid(dir: string): number | undefined {
  const file = path.join(dir, 'pgdata', 'postmaster.pid');
  if (!fs.existsSync(file)) return undefined;
  return Number(fs.readFileSync(file, 'utf8').split('\n')[0]);
}

/** Stops a server this process does not own (its owner was killed) by signalling its postmaster. */
async function stopOrphan(dir: string): Promise<void> {
  const pid = postmasterPid(dir);
  if (!pid) return;
  try {
    process.kill(pid, 'SIGINT');
  } catch {
    return;
  }
  const deadline = Date.now() + 30_000;
  while (fs.existsSync(path.join(dir, 'pgdata', 'postmaster.pid')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
}

afterAll(async () => {
  for (const d of dirs) {
    await stopOrphan(path.join(d, 'pg'));
    fs.rmSync(d, { recursive: true, force: true });
  }
});

describe('embedded PostgreSQL shared between processes', () => {
  it('a second process on the same data directory connects to the running server and never starts another', async () => {
    const dir = dataDir();
    const handle = await ensureEmbeddedServer(dir);
    try {
      expect(handle.owner).toBe(true);
      expect(handle.info.host).toBe('127.0.0.1');
      const serverFile = JSON.parse(fs.readFileSync(path.join(dir, 'server.json'), 'utf8')) as ServerInfo;
      expect(serverFile.port).toBe(handle.info.port);
      const pidBefore = postmasterPid(dir);
      expect(pidBefore).toBeGreaterThan(0);
      const [started] = await query<{ t: Date }>(handle.info, 'select pg_postmaster_start_time() as t');

      // two other processes at once: both connect to the same server
      const [a, b] = await Promise.all([runChild(dir), runChild(dir)]);
      for (const { report } of [a, b]) {
        expect(report.owner).toBe(false);
        expect(report.port).toBe(handle.info.port);
      }
      expect(postmasterPid(dir)).toBe(pidBefore);
      const [still] = await query<{ t: Date }>(handle.info, 'select pg_postmaster_start_time() as t');
      expect(still!.t.getTime()).toBe(started!.t.getTime());
      expect((JSON.parse(fs.readFileSync(path.join(dir, 'server.json'), 'utf8')) as ServerInfo).port).toBe(handle.info.port);

      // and so does this process when it asks again
      const again = await ensureEmbeddedServer(dir);
      expect(again.owner).toBe(false);
      expect(again.info).toEqual(handle.info);
      // this process holds two handles: leaving with one leaves the server to the other
      expect(await again.release()).toEqual({ stopped: false });
      expect(await reachable(handle.info)).toBe(true);
    } finally {
      await handle.stop();
    }
    expect(await reachable(handle.info)).toBe(false);
    expect(postmasterPid(dir)).toBeUndefined();
  });

  it('a server left running by a killed owner is found and reused by the next process', async () => {
    const dir = dataDir();
    const { report, child } = await runChild(dir, true);
    expect(report.owner).toBe(true);
    const exited = new Promise((r) => child.once('exit', (_code, signal) => r(signal)));
    expect(child.kill('SIGKILL')).toBe(true);
    expect(await exited).toBe('SIGKILL');

    // the owner is gone, its server is not
    const info = JSON.parse(fs.readFileSync(path.join(dir, 'server.json'), 'utf8')) as ServerInfo;
    expect(info.port).toBe(report.port);
    expect(await reachable(info)).toBe(true);
    const pid = postmasterPid(dir);

    const next = await runChild(dir);
    expect(next.report).toMatchObject({ owner: false, port: report.port });
    const here = await ensureEmbeddedServer(dir);
    expect(here.owner).toBe(false);
    expect(here.info.port).toBe(report.port);
    expect(postmasterPid(dir)).toBe(pid);
    expect(await query<{ one: number }>(here.info, 'select 1 as one')).toEqual([{ one: 1 }]);

    await stopOrphan(dir);
    expect(await reachable(info)).toBe(false);

    // once it is stopped, the next process starts it again on the same data directory
    const restarted = await ensureEmbeddedServer(dir);
    try {
      expect(restarted.owner).toBe(true);
      expect(restarted.info.password).toBe(info.password);
      expect(await reachable(restarted.info)).toBe(true);
    } finally {
      await restarted.stop();
    }
  });

  it('outlives the process that started it while another uses it, and stops with its last live user', async () => {
    const dir = dataDir();
    const first = await runChild(dir, true);
    expect(first.report.owner).toBe(true);
    const second = await runChild(dir, true);
    expect(second.report).toMatchObject({ owner: false, port: first.report.port });
    const info = JSON.parse(fs.readFileSync(path.join(dir, 'server.json'), 'utf8')) as ServerInfo;
    const pid = postmasterPid(dir);

    // the owner stops cleanly (a bot on SIGTERM) while the second still uses the server: it stays
    expect(await releaseBySigterm(first.child)).toEqual({ released: { stopped: false } });
    expect(await reachable(info)).toBe(true);
    expect(postmasterPid(dir)).toBe(pid);

    // a restarted first process finds the same server, not a new one on a new port
    const restarted = await ensureEmbeddedServer(dir);
    expect(restarted).toMatchObject({ owner: false, info: { port: first.report.port } });

    // a user killed without leaving does not keep the server alive
    const killed = await runChild(dir, true);
    const gone = new Promise((r) => killed.child.once('exit', r));
    killed.child.kill('SIGKILL');
    await gone;

    expect(await releaseBySigterm(second.child)).toEqual({ released: { stopped: false } });
    expect(await reachable(info)).toBe(true);
    // the last live user stops it, though another process started it
    expect(await restarted.release()).toEqual({ stopped: true });
    expect(await reachable(info)).toBe(false);
    expect(postmasterPid(dir)).toBeUndefined();
  });
});

/** SIGTERMs a holding child; resolves with what it printed after its first line, once it has exited. */
function releaseBySigterm(child: ReturnType<typeof spawn>): Promise<unknown> {
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').at(-1)!)) : reject(new Error(`exited with ${code}: ${out}`))));
    child.kill('SIGTERM');
  });
}
