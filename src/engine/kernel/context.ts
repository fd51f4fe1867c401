import type { Config, EnvSpec } from '../../config/load.js';
import type { Db } from '../../db/connect.js';
import { TributaryError } from '../../errors.js';
import { redact } from '../../log.js';

/** What every engine operation needs: the validated config and the open databases. */
export interface Ctx {
  config: Config;
  db: Db;
}

/** Who acts: a Slack user id, or `cli:<name>` from the CLI. */
export type Actor = string;

const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'ETIMEDOUT', 'EHOSTUNREACH', 'ECONNRESET', '3D000', '28P01', '28000', '57P03']);

export function describeEnv(ctx: Ctx, env: EnvSpec): string {
  const p = ctx.db.envParams(env);
  return `${env.name} (${p.host}:${p.port}/${p.database}${env.schema ? `, schema ${env.schema}` : ''})`;
}

/** Turns driver errors into errors that name the environment; never leaks a password. */
export function envError(ctx: Ctx, env: EnvSpec, err: unknown): Error {
  if (err instanceof TributaryError) return err;
  const e = err as { code?: string; message?: string };
  const msg = redact(e.message ?? String(err));
  if ((e.code && UNREACHABLE.has(e.code)) || /timeout|connect/i.test(msg)) {
    return new TributaryError('env_unreachable', `env ${describeEnv(ctx, env)} is unreachable: ${msg}`, { env: env.name });
  }
  if (e.code === '42P01' || e.code === '42703') {
    return new TributaryError(
      'config_invalid',
      `env ${env.name}: ${msg} (does the dataset in ${ctx.config.file} match this env's tables? ` +
        `run tributary tag --install ${env.name} to add tag columns)`,
      { env: env.name },
    );
  }
  return new TributaryError('database', `env ${env.name}: ${msg}`, { env: env.name });
}

/**
 * The source envs, or a refusal on an on-premises side (a config without sources): tag and consolidate run
 * on the cloud side; this side imports the release from a signed transfer package.
 */
export function requireSources(ctx: Ctx, release: string, step: string): EnvSpec[] {
  if (ctx.config.sources.length > 0) return ctx.config.sources;
  throw new TributaryError(
    'config_invalid',
    `${ctx.config.file}: environments: no env has role: source, so there is nothing to ${step} here; ` +
      `on an on-premises side, import ${release} from its signed transfer package: tributary load ${release} --from <dir>`,
    { release },
  );
}

export async function onEnv<T>(ctx: Ctx, env: EnvSpec, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw envError(ctx, env, err);
  }
}

/** Checks that every given env answers, naming the first that does not. */
export async function checkReachable(ctx: Ctx, envs: EnvSpec[]): Promise<void> {
  const results = await Promise.allSettled(envs.map((env) => onEnv(ctx, env, () => ctx.db.env(env).raw('select 1'))));
  const failed = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
  const [only] = failed;
  if (only) {
    if (failed.length === 1) throw only;
    throw new TributaryError('env_unreachable', failed.map((f) => f.message).join('\n'), { envs: failed.length });
  }
}
