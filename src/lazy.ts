import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/**
 * A dependency loaded on its first use instead of when a module naming it is loaded. Every CLI command
 * loads the whole engine; loading knex, pg, objection, pino, zod, yaml, pg-boss… up front cost each
 * `tributary` run a quarter of a second before it did anything (`npm run bench:cli` prints what each
 * costs). Only for CommonJS packages (or dual ones whose every use in src goes through here, so that
 * one copy is loaded): `lazy<typeof import('pg')>('pg')`, then `pgModule().Client`.
 */
export function lazy<T>(id: string): () => T {
  let loaded: T | undefined;
  const load = (): T => (loaded ??= require(id) as T);
  loaders.push(load);
  return load;
}

const loaders: (() => unknown)[] = [];

/**
 * Loads now every dependency declared lazy by the modules loaded so far. A long-lived process (the bot)
 * calls it at start-up, so that no first use later holds its event loop while a package loads (Slack's
 * acknowledgements must stay fast); a one-shot CLI command does not.
 */
export function preloadLazy(): void {
  for (const load of loaders) load();
}

/** yaml (a dual package: src loads its CommonJS copy only, through here). */
export const yamlLib = lazy<typeof import('yaml')>('yaml');
