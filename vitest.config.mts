import { defineConfig } from 'vitest/config';

// Unit tests sit next to the code; tracer integration tests run real programs under bin/rbinder
// and take seconds each, so the timeouts are generous and files run two at a time (2-core machines).
// The end-to-end suite against a real API server has its own config (e2e/vitest.config.mts), and so
// has the benchmark harness's smoke run (bench/vitest.config.mts), which must not run beside them.
export default defineConfig({
  test: {
    include: [
      'tracer/**/*.test.ts',
      'webhook/**/*.test.ts',
      'operator/**/*.test.ts',
      'e2e/support/**/*.test.ts',
      'e2e/registry/**/*.test.ts',
      'bench/accuracy/**/*.test.ts',
    ],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    maxWorkers: 2,
    reporters: ['default'],
  },
});
