import { afterEach, expect, it } from 'vitest';
import { byColumnName, COLUMNS_SQL } from '../../../src/engine/kernel/checksum.js';
import { testEnv, type TestEnv } from '../../helpers.js';

/** Both sides of every checksum take the columns in the same order: PostgreSQL's attname order. */
let env: TestEnv | undefined;
afterEach(async () => {
  await env?.close();
  env = undefined;
});

it('orders columns as PostgreSQL orders attname (byte order), whatever the locale says', async () => {
  env = await testEnv(1, {}, { tables: false });
  await env.sql('create table public.shape ("addr_2" text, "addr1" text, "Zeta" text, "alpha" text, "é" text, "e" text)');
  const pg = (await env.sql(COLUMNS_SQL, ['public.shape'])).rows.map((r) => r.name as string);
  const js = pg.map((name) => ({ name })).reverse().sort(byColumnName).map((c) => c.name);
  expect(js).toEqual(pg);
  expect(pg).toEqual(['Zeta', 'addr1', 'addr_2', 'alpha', 'e', 'é']);
});
