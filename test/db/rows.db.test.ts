import fs from 'node:fs';
import { expect, it } from 'vitest';
import { generateRows, ROWS_FILE } from '../../scripts/rows.js';
import { urlFor } from '../helpers.js';

/** src/db/rows.ts, the control tables' row types, is what the migrations make: regenerate with `npm run rows`. */
it('src/db/rows.ts matches the migrated schema (npm run rows regenerates it)', async () => {
  const generated = await generateRows(urlFor('postgres'));
  expect(generated).toContain('export interface RunsRow {');
  expect(fs.readFileSync(ROWS_FILE, 'utf8'), 'src/db/rows.ts differs from the migrations: run `npm run rows`').toBe(generated);
});
