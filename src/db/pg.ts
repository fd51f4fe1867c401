import type pg from 'pg';
import { lazy } from '../lazy.js';

const loadPg = lazy<typeof pg>('pg');
let pgReady = false;

/**
 * pg asks as it loads whether it runs in a Cloudflare Worker: where there is no `navigator` (Node 20;
 * Node 21 and later have one) it builds a fetch Response, which loads Node's fetch (undici), a third of
 * pg's load time, with every CLI run. A navigator naming Node, only while pg loads, answers it.
 */
function loadPgWithoutFetch(): typeof pg {
  if ('navigator' in globalThis) return loadPg();
  Object.defineProperty(globalThis, 'navigator', { value: { userAgent: `Node.js/${process.version}` }, configurable: true, writable: true });
  try {
    return loadPg();
  } finally {
    delete (globalThis as { navigator?: unknown }).navigator;
  }
}

/** The pg driver, loaded on first use (src/lazy.ts), with int8 normalised (knex's pg dialect shares it). */
export function pgDriver(): typeof pg {
  const driver = loadPgWithoutFetch();
  if (!pgReady) {
    // int8 (count(*), bigint ids) arrives as a string from pg: normalise it here, once.
    driver.types.setTypeParser(20, (v) => Number(v));
    pgReady = true;
  }
  return driver;
}

/** A pg client (not yet connected). */
export function pgClient(config: pg.ClientConfig): pg.Client {
  return new (pgDriver().Client)(config);
}

/** COPY streams over a pg client (pg-copy-streams), loaded on first use. */
export const copyStreams = lazy<typeof import('pg-copy-streams')>('pg-copy-streams');
