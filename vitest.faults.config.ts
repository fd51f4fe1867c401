import { defineConfig } from 'vitest/config';

/**
 * `npm run test:faults` (through test/faults/run.ts): the fault suite, real processes killed with SIGKILL
 * at each failpoint. Not part of `npm test`.
 */
export default defineConfig({
  test: {
    include: ['test/faults/**/*.faults.test.ts'],
    globalSetup: ['test/build-setup.ts', 'test/global-setup.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
  },
});
