import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// The benchmark harness's smoke run (bench/bench.test.ts), on its own: it keeps both cores busy
// with wrk and traced servers for seconds, and beside the tracer suite it starved the servers
// there, whose span export runs at idle priority (--export-priority idle), past their tests'
// waits. Run it with
//   npx vitest run --config bench/vitest.config.mts
export default defineConfig({
  test: {
    root: fileURLToPath(new URL('..', import.meta.url)),
    include: ['bench/bench.test.ts'],
    maxWorkers: 1,
    testTimeout: 120_000,
    hookTimeout: 300_000,
    reporters: ['default'],
  },
});
