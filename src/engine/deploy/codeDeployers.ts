import type { DeployCommandName, DeploySpec } from '../../config/load.js';
import { TributaryError } from '../../errors.js';
import { redact } from '../../log.js';
import { commandEnv, execShell, fillCommand } from '../kernel/shell.js';

/**
 * The code deployer: the team's own tool, never a home-made one. Either configured shell commands
 * (each with a timeout; the whole process group is killed when it runs over; output captured with
 * secrets redacted) or an HTTP webhook to a CI/CD system whose job is polled until it finishes.
 */
export interface StepRun {
  ok: boolean;
  /** The command or webhook action, for the record (secrets redacted). */
  what: string;
  /** The last lines of output (redacted). */
  output: string;
  ms: number;
  error?: string;
}

export interface Vars {
  version?: string;
  release: string;
  migration?: string;
  env: string;
}

export interface CodeDeployer {
  kind: 'commands' | 'webhook';
  has(name: DeployCommandName): boolean;
  /** `signal`: the deployment was abandoned (its process lost its lock): the command is killed. */
  run(name: DeployCommandName, vars: Vars, signal?: AbortSignal): Promise<StepRun>;
}

/** The libpq variables (PGHOST, PGPASSWORD, …) of the env a command targets. */
export type Credentials = (env: string) => Record<string, string>;

type Commands = NonNullable<DeploySpec['commands']>;
type Webhook = NonNullable<DeploySpec['webhook']>;

function commandDeployer(spec: DeploySpec, commands: Commands, credentials: Credentials): CodeDeployer {
  return {
    kind: 'commands',
    has: (name) => commands[name] !== undefined,
    async run(name, vars, signal) {
      const c = commands[name];
      if (!c) return { ok: true, what: `${name}: not configured`, output: '', ms: 0 };
      const values: Record<string, string> = { release: vars.release, env: vars.env };
      if (vars.version !== undefined) values.version = vars.version;
      if (vars.migration !== undefined) values.migration = vars.migration;
      const line = fillCommand(c.run, values);
      const started = performance.now();
      const env = commandEnv({
        ...credentials(vars.env),
        TRIBUTARY_RELEASE: vars.release,
        TRIBUTARY_ENV: vars.env,
        ...(vars.version ? { TRIBUTARY_VERSION: vars.version } : {}),
      });
      const exec = await execShell(line, spec.cwd, env, c.timeoutMs, signal);
      const ms = Math.round(performance.now() - started);
      const output = redact(exec.tail).trim();
      const what = redact(line);
      const last = output.split('\n').slice(-1)[0] ?? '';
      const failed = (error: string): StepRun => ({ ok: false, what, output, ms, error });
      if (exec.spawnError) return failed(`deploy.commands.${name} could not start: ${redact(exec.spawnError)}`);
      if (exec.timedOut) return failed(`deploy.commands.${name} timed out after ${Math.round(c.timeoutMs / 1000)} s and was killed`);
      if (exec.exitCode !== 0) {
        const why =
          exec.exitCode === 127 ? 'command not found'
          : exec.signal ? `killed by ${exec.signal}`
          : `exit code ${exec.exitCode}`;
        return { ok: false, what, output, ms, error: `deploy.commands.${name} failed (${why})${last ? `: ${last}` : ''}` };
      }
      return { ok: true, what, output, ms };
    },
  };
}

const WEBHOOK_ACTIONS: Record<DeployCommandName, string> = {
  current: 'current',
  deploy: 'deploy',
  rollback: 'rollback',
  restart: 'restart',
  health: 'health',
  migrateUp: 'migrate-up',
  migrateDown: 'migrate-down',
  maintenanceOn: 'maintenance-on',
  maintenanceOff: 'maintenance-off',
};

/** A CI/CD webhook: POST { action, version, release, env }; the answer is { status } or { id } to poll. */
function webhookDeployer(w: Webhook): CodeDeployer {
  const headers = { 'content-type': 'application/json', ...(w.token ? { authorization: `Bearer ${w.token}` } : {}) };
  const call = async (url: string, init: RequestInit): Promise<Record<string, unknown>> => {
    const res = await fetch(url, { ...init, headers, signal: AbortSignal.timeout(30_000) });
    const text = await res.text();
    if (!res.ok) throw new Error(`HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`);
    return text ? (JSON.parse(text) as Record<string, unknown>) : {};
  };
  return {
    kind: 'webhook',
    has: () => true,
    async run(name, vars) {
      const action = WEBHOOK_ACTIONS[name];
      const what = `webhook ${action}${vars.version ? ` ${vars.version}` : ''}`;
      const started = performance.now();
      const ms = () => Math.round(performance.now() - started);
      try {
        let body = await call(w.url, { method: 'POST', body: JSON.stringify({ action, ...vars }) });
        const deadline = Date.now() + w.timeoutMs;
        while (!['succeeded', 'success', 'failed', 'failure', 'error'].includes(String(body.status ?? ''))) {
          if (!body.id || !w.statusUrl) {
            if (body.status === undefined) break; // answered without a job: done
            throw new Error(`answered status "${String(body.status)}" with no job id to poll (set deploy.webhook.statusUrl)`);
          }
          if (Date.now() > deadline) {
            const error = `deploy.webhook ${action} timed out after ${Math.round(w.timeoutMs / 1000)} s (job ${String(body.id)})`;
            return { ok: false, what, output: '', ms: ms(), error };
          }
          await new Promise((r) => setTimeout(r, w.pollMs));
          body = { id: body.id, ...(await call(w.statusUrl.replace('{id}', encodeURIComponent(String(body.id))), { method: 'GET' })) };
        }
        const output = redact(String(body.output ?? body.version ?? ''));
        if (['failed', 'failure', 'error'].includes(String(body.status))) {
          const error = `deploy.webhook ${action} failed${body.message ? `: ${redact(String(body.message))}` : ''}`;
          return { ok: false, what, output, ms: ms(), error };
        }
        return { ok: true, what, output, ms: ms() };
      } catch (err) {
        return { ok: false, what, output: '', ms: ms(), error: `deploy.webhook ${action}: ${redact((err as Error).message)}` };
      }
    },
  };
}

/** Commands get the credentials of the env they target (`credentials`), and no other. */
export function codeDeployer(spec: DeploySpec, credentials: Credentials = () => ({})): CodeDeployer {
  if (spec.commands) return commandDeployer(spec, spec.commands, credentials);
  if (spec.webhook) return webhookDeployer(spec.webhook);
  throw new TributaryError('config_invalid', 'deploy: give the code deployer (commands or webhook)');
}
