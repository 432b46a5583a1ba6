// vitest globalSetup for e2e/vitest.config.mts: builds the pinned control-plane binaries (and
// helm, for the chart tests) once before any test file, unless RBINDER_E2E_KUBECONFIG names an
// existing cluster. A cold build takes tens of minutes; progress goes to stderr.

import { ensureClusterBinaries } from './cluster';

export default async function setup(): Promise<void> {
  const components = process.env.RBINDER_E2E_KUBECONFIG
    ? (['helm'] as const)
    : (['etcd', 'kube-apiserver', 'kube-controller-manager', 'helm'] as const);
  const started = Date.now();
  const paths = await ensureClusterBinaries([...components], {
    buildTimeoutMs: Number(process.env.RBINDER_E2E_BUILD_TIMEOUT_MS ?? 90 * 60_000),
  });
  const secs = Math.round((Date.now() - started) / 1000);
  if (secs > 5) process.stderr.write(`[rbinder-cluster] binaries ready after ${secs} s: ${Object.values(paths).join(' ')}\n`);
}
