import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // the fault suite runs on its own (npm run test:faults), not in npm test
    exclude: ['test/faults/**', 'node_modules/**'],
    globalSetup: ['test/build-setup.ts', 'test/global-setup.ts'],
    // generous: a test that spawns processes may wait long on a loaded machine (npm run test:busy); waits end on events
    testTimeout: 180_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
  },
});
