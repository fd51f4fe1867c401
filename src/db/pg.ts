import type pg from 'pg';
import { lazy } from '../lazy.js';

const loadPg = lazy<typeof pg>('pg');
let pgReady = false;

/** The pg driver, loaded on first use (src/lazy.ts), with int8 normalised (knex's pg dialect shares it). */
export function pgDriver(): typeof pg {
  const driver = loadPg();
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
