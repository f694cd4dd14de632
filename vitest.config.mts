import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // A native crash must take down one worker process, not the whole run.
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
