import { spawn } from 'node:child_process';
import { configVariables, type EnvSpec } from '../../config/load.js';
import type { ConnectionParams } from '../../db/connect.js';
import { carriesSecret } from '../../log.js';
import type { Ctx } from './context.js';
import { must } from './must.js';

/** The team's shell commands (test runners, deployers): filled, run in their own process group, timed out. */

const TAIL_BYTES = 4000;

/**
 * Tributary's own secrets never reach the team's commands (tests, deployers): the audit key would let a
 * test forge the audit chain, the control database URL and Slack tokens are not theirs to use. Nor do
 * the variables the config substitutes (other environments' URLs and passwords), any variable whose value
 * carries a secret Tributary knows, or libpq variables inherited from Tributary's own environment: a team
 * command gets the credentials of the environment it targets, and only those (pgEnv).
 */
const WITHHELD = /^(TRIBUTARY_AUDIT_KEY|TRIBUTARY_SIGNING_KEY|DATABASE_URL|SLACK_[A-Z_]*(TOKEN|SECRET)[A-Z_]*|PG[A-Z_]+)$/;

/** The basics a command needs to run at all (a short password could otherwise match inside PATH). */
const BASICS = new Set(['PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'TZ', 'TMPDIR', 'PWD']);

function withheld(name: string, value: string | undefined): boolean {
  if (BASICS.has(name)) return false;
  return WITHHELD.test(name) || configVariables().has(name) || (value !== undefined && carriesSecret(value));
}

/**
 * The target environment's credentials as libpq's standard variables (read by psql, pg_dump, node-pg,
 * psycopg, …), so no password needs to appear in a command line (`ps` shows those to every user).
 */
export function pgEnv(p: ConnectionParams, schema?: string): Record<string, string> {
  return {
    PGHOST: p.host,
    PGPORT: String(p.port),
    PGUSER: p.user,
    PGDATABASE: p.database,
    ...(p.password ? { PGPASSWORD: p.password } : {}),
    ...(schema ? { PGOPTIONS: `-c search_path=${schema}` } : {}),
    ...(p.ssl ? { PGSSLMODE: p.ssl.rejectUnauthorized ? 'verify-full' : 'require' } : {}),
  };
}

export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/**
 * An env's connection as a team command may have it: never with the control server's password, even
 * when the env lives on that server (give such an env a URL of its own, with its own role).
 */
export function teamConnection(ctx: Ctx, env: EnvSpec): ConnectionParams {
  const p = ctx.db.envParams(env);
  if (!p.password || p.password !== ctx.db.controlParams.password) return p;
  const { password: _control, ...rest } = p;
  return rest;
}

/** The libpq variables of a config env by name (none for a name that is not one). */
export function envCredentials(ctx: Ctx, envName: string): Record<string, string> {
  const env = ctx.config.envs.get(envName);
  return env ? pgEnv(teamConnection(ctx, env), env.schema) : {};
}

export function commandEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!withheld(k, v)) env[k] = v;
  return { ...env, ...extra };
}

export function fillCommand(command: string, values: Record<string, string>): string {
  return command.replace(/\{([A-Za-z]+)\}/g, (m, name: string) => {
    const value = values[name];
    return value === undefined ? m : shellQuote(value);
  });
}

export interface Exec {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  tail: string;
  spawnError?: string;
}

/**
 * The team's command runs under this guard, in a process group of its own: when Tributary's end of the
 * guard's stdin closes (Tributary stopped, or was killed with SIGKILL), the watcher (reading it as fd 3:
 * a background list's own stdin is /dev/null) kills the whole group,
 * so no shard or deploy command outlives the run that owns it. A command killed by a signal ends the
 * guard with that signal.
 */
const GUARD = `exec 3<&0
/bin/sh -c "$1" </dev/null 3<&- &
c=$!
(while read -r _; do :; done <&3; kill -KILL 0) &
w=$!
wait "$c"
s=$?
kill "$w" 2>/dev/null
if [ "$s" -gt 128 ]; then kill -s "$(kill -l "$s")" $$; fi
exit "$s"`;

/** Runs the team's command under the guard; `signal` (the run that owns it was abandoned) kills its whole group. */
export function execShell(cmd: string, cwd: string, env: NodeJS.ProcessEnv, timeoutMs: number, signal?: AbortSignal): Promise<Exec> {
  return new Promise((resolve) => {
    let tail = '';
    const keep = (chunk: Buffer) => {
      tail = (tail + chunk.toString('utf8')).slice(-TAIL_BYTES);
    };
    let child;
    try {
      // stdin stays open (never written): it closes when this process ends
      child = spawn('/bin/sh', ['-c', GUARD, 'tributary-guard', cmd], { cwd, env, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (err) {
      resolve({ exitCode: null, signal: null, timedOut: false, tail: '', spawnError: (err as Error).message });
      return;
    }
    child.stdin.on('error', () => undefined);
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    const killGroup = (sig: NodeJS.Signals) => {
      try {
        process.kill(-must(child.pid, "the pid of the command's process group"), sig);
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup('SIGTERM');
      setTimeout(() => killGroup('SIGKILL'), 2000).unref();
    }, timeoutMs);
    const abandon = () => killGroup('SIGKILL');
    if (signal?.aborted) abandon();
    signal?.addEventListener('abort', abandon);
    child.on('error', (err) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', abandon);
      resolve({ exitCode: null, signal: null, timedOut, tail, spawnError: err.message });
    });
    child.on('close', (code, sig) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', abandon);
      // the group may hold grandchildren still writing: make sure none outlives the shard
      killGroup('SIGKILL');
      child.stdin.destroy();
      resolve({ exitCode: code, signal: sig, timedOut, tail });
    });
  });
}
