import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // the fault suite runs on its own (npm run test:faults), not in npm test
    exclude: ['test/faults/**', 'node_modules/**'],
    globalSetup: ['test/build-setup.ts', 'test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
  },
});
