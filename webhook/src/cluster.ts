// ClusterLookups backed by the Kubernetes API: namespaces (for the rbinder.io/inject label),
// ServiceAccounts and Secrets (for image pull credentials). Each answer is cached briefly, so a
// Deployment scaling up costs one read, not one per pod; concurrent readers share a request; every
// read has a timeout, since the API server is waiting on our answer to its own request.
//
// RBAC: get on namespaces, serviceaccounts and secrets, cluster-wide (docs/webhook.md).

import type { KubeConfig, V1Namespace, V1Secret, V1ServiceAccount } from '@kubernetes/client-node';
import type { ClusterLookups } from './admission';
import type { TracedWorkloadLookup, WorkloadSelection } from './config';

/** The calls used, in @kubernetes/client-node 1.x's object-parameter style. */
export interface CoreApi {
  readNamespace(param: { name: string }): Promise<V1Namespace>;
  readNamespacedSecret(param: { name: string; namespace: string }): Promise<V1Secret>;
  readNamespacedServiceAccount(param: { name: string; namespace: string }): Promise<V1ServiceAccount>;
}

export interface KubernetesLookupOptions {
  /** How long an answer (including "not found") is reused. */
  cacheTtlMs?: number;
  /** Most time for one API call. */
  timeoutMs?: number;
  tracedWorkload?: TracedWorkloadLookup;
  workloadSelection?: WorkloadSelection;
  now?: () => number;
}

/** Loads `path`, else the kubeconfig as kubectl would (KUBECONFIG, ~/.kube/config), else the in-cluster service account. */
export async function loadKubeConfig(path?: string): Promise<KubeConfig> {
  const k8s = await import('@kubernetes/client-node');
  const kc = new k8s.KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  if (!kc.getCurrentCluster()) throw new Error('no Kubernetes cluster configured (no KUBECONFIG, ~/.kube/config or in-cluster service account)');
  return kc;
}

export async function coreApiFor(kc: KubeConfig): Promise<CoreApi> {
  const k8s = await import('@kubernetes/client-node');
  return kc.makeApiClient(k8s.CoreV1Api);
}

export function kubernetesLookups(api: CoreApi, options: KubernetesLookupOptions = {}): ClusterLookups {
  const ttl = options.cacheTtlMs ?? 30_000;
  const timeoutMs = options.timeoutMs ?? 1500;
  const now = options.now ?? Date.now;
  const cache = new Map<string, { value: Promise<unknown>; expires: number }>();

  function cached<T>(key: string, read: () => Promise<T>): Promise<T> {
    const hit = cache.get(key);
    if (hit && hit.expires > now()) return hit.value as Promise<T>;
    const value = withTimeout(read(), timeoutMs, key);
    cache.set(key, { value, expires: now() + ttl });
    // Errors are not remembered: the next pod asks again.
    value.catch(() => {
      if (cache.get(key)?.value === value) cache.delete(key);
    });
    if (cache.size > 10_000) {
      for (const [k, v] of cache) if (v.expires <= now()) cache.delete(k);
    }
    return value;
  }

  return {
    namespaceLabels: (namespace) =>
      cached(`ns/${namespace}`, async () => orUndefined(api.readNamespace({ name: namespace })).then((ns) => (ns ? (ns.metadata?.labels ?? {}) : undefined))),
    secret: (namespace, name) => cached(`secret/${namespace}/${name}`, () => orUndefined(api.readNamespacedSecret({ name, namespace }))),
    serviceAccountPullSecrets: (namespace, serviceAccount) =>
      cached(`sa/${namespace}/${serviceAccount}`, async () => {
        const sa = await orUndefined(api.readNamespacedServiceAccount({ name: serviceAccount, namespace }));
        return (sa?.imagePullSecrets ?? []).map((s) => s.name).filter((n): n is string => !!n);
      }),
    tracedWorkload: options.tracedWorkload,
    workloadSelection: options.workloadSelection,
  };
}

/** Lookups for a webhook without a cluster (tests, local runs): nothing is labelled, no secrets. */
export const NO_CLUSTER: ClusterLookups = {
  namespaceLabels: async () => undefined,
  secret: async () => undefined,
  serviceAccountPullSecrets: async () => [],
};

async function orUndefined<T>(p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (err) {
    if ((err as { code?: number }).code === 404) return undefined;
    throw err;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`reading ${what} from the API server took over ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
