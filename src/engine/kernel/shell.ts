import { spawn } from 'node:child_process';

/** The team's shell commands (test runners, deployers): filled, run in their own process group, timed out. */

const TAIL_BYTES = 4000;

/**
 * Tributary's own secrets never reach the team's commands (tests, deployers): the audit key would let a
 * test forge the audit chain, the control database URL and Slack tokens are not theirs to use.
 */
const WITHHELD = /^(TRIBUTARY_AUDIT_KEY|DATABASE_URL|SLACK_[A-Z_]*(TOKEN|SECRET)[A-Z_]*)$/;

export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

export function commandEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!WITHHELD.test(k)) env[k] = v;
  return { ...env, ...extra };
}

export function fillCommand(command: string, values: Record<string, string>): string {
  return command.replace(/\{([A-Za-z]+)\}/g, (m, name: string) => (values[name] === undefined ? m : shellQuote(values[name]!)));
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

export function execShell(cmd: string, cwd: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<Exec> {
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
        process.kill(-child.pid!, sig);
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup('SIGTERM');
      setTimeout(() => killGroup('SIGKILL'), 2000).unref();
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ exitCode: null, signal: null, timedOut, tail, spawnError: err.message });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      // the group may hold grandchildren still writing: make sure none outlives the shard
      killGroup('SIGKILL');
      child.stdin.destroy();
      resolve({ exitCode: code, signal, timedOut, tail });
    });
  });
}
