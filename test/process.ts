import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ROOT, TEST_AUDIT_KEY } from './helpers.js';

/** The CLI as a real child process, as users run it: `bin/tributary.js …` (the compiled dist/). */
export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliProcess {
  child: ChildProcess;
  done: Promise<CliResult>;
}

export function startCli(args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): CliProcess {
  const env: NodeJS.ProcessEnv = { ...process.env, TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY, ...opts.env };
  // the tests' own settings must not leak into the CLI's config
  delete env.DATABASE_URL;
  delete env.TRIBUTARY_CONFIG;
  const child = spawn(process.execPath, [path.join(ROOT, 'bin/tributary.js'), ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, done };
}

export function cli(args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return startCli(args, opts).done;
}

/** What a process printed, for assertion messages. */
export function output(r: CliResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/** A loopback port nobody listens on now (for a bot started as a child process). */
export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Whether a process is still alive (signal 0 checks without sending anything). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A process's state letter from /proc (`T`: stopped, e.g. at a failpoint's `stop`). */
export function processState(pid: number): string {
  return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0]!;
}

/** A bot as `npm start` runs it (dist/src/start.js), over HTTP on `port`, against a fake Slack API. */
export interface BotProcess {
  child: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  out(): string;
  /** Its exit: the code, and the signal that ended it, if one did. */
  exited: Promise<[number | null, NodeJS.Signals | null]>;
}

export function startBot(opts: { configFile: string; apiUrl: string; port: number; botToken: string; signingSecret: string; env?: NodeJS.ProcessEnv }): BotProcess {
  const child = spawn(process.execPath, [path.join(ROOT, 'dist/src/start.js')], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      TRIBUTARY_CONFIG: opts.configFile,
      TRIBUTARY_AUDIT_KEY: TEST_AUDIT_KEY,
      SLACK_BOT_TOKEN: opts.botToken,
      SLACK_SIGNING_SECRET: opts.signingSecret,
      SLACK_API_URL: opts.apiUrl,
      PORT: String(opts.port),
      ...opts.env,
    },
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((r) => child.on('exit', (code, signal) => r([code, signal])));
  return { child, out: () => out, exited };
}
