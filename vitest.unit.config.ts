import { defineConfig } from 'vitest/config';

/**
 * `npm run test:unit`: the tests that need no database (`x.test.ts`; those that do are `x.db.test.ts`).
 * No database is started: a unit test that reaches for PostgreSQL fails here, which keeps the names honest.
 */
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/**/*.db.test.ts', 'test/faults/**', 'node_modules/**'],
    globalSetup: ['test/build-setup.ts'],
    testTimeout: 60_000,
    pool: 'forks',
  },
});
