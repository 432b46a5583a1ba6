import { defineConfig } from 'vitest/config';

// Unit tests sit next to the code; tracer integration tests run real programs under bin/rbinder
// and take seconds each, so the timeouts are generous and files run two at a time (2-core machines).
export default defineConfig({
  test: {
    include: ['tracer/**/*.test.ts', 'e2e/support/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 300_000,
    maxWorkers: 2,
    reporters: ['default'],
  },
});
