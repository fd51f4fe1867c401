import { defineConfig } from 'vitest/config';

/**
 * `npm run test:faults`: the fault suite (real processes stopped at failpoints and killed with SIGKILL,
 * then the damage looked for). Slow, so not part of `npm test`; same database setup.
 */
export default defineConfig({
  test: {
    include: ['test/faults/**/*.faults.test.ts'],
    globalSetup: ['test/build-setup.ts', 'test/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
  },
});
