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
  return () => (loaded ??= require(id) as T);
}

/** yaml (a dual package: src loads its CommonJS copy only, through here). */
export const yamlLib = lazy<typeof import('yaml')>('yaml');
