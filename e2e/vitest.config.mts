import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// The end-to-end suite: each *.e2e.test.ts file runs against a real Kubernetes control plane
// (e2e/cluster/), or the cluster that RBINDER_E2E_KUBECONFIG names. Run it with
//   npx vitest run --config e2e/vitest.config.mts
// globalSetup builds the control-plane binaries first if the cache is empty (tens of minutes
// cold, with its own timeout inside; progress on stderr), so no test timeout covers the build.
// Files run one after the other: each starts its own control plane, and 2 cores are enough for one.
export default defineConfig({
  test: {
    root: fileURLToPath(new URL('..', import.meta.url)),
    include: ['e2e/**/*.e2e.test.ts'],
    globalSetup: ['e2e/cluster/global-setup.ts'],
    fileParallelism: false,
    maxWorkers: 1,
    testTimeout: 180_000,
    hookTimeout: 300_000,
    teardownTimeout: 120_000,
    reporters: ['default'],
  },
});
