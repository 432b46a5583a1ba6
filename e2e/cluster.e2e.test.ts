// The control plane the e2e suite runs against is the real thing: controllers act, RBAC
// forbids, admission webhooks are called (and an unreachable one with failurePolicy Ignore does
// not block), and data lives in etcd across an API server restart.

import {
  AdmissionregistrationV1Api,
  ApiException,
  AppsV1Api,
  AuthorizationV1Api,
  CoreV1Api,
  KubeConfig,
  RbacAuthorizationV1Api,
  type V1MutatingWebhook,
  type V1Pod,
} from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from './support/k8s';
import { startCluster, type Cluster } from './cluster/cluster';

let cluster: Cluster;
let core: CoreV1Api;
let apps: AppsV1Api;
let rbac: RbacAuthorizationV1Api;
let authz: AuthorizationV1Api;
let admission: AdmissionregistrationV1Api;
const ns = `rbinder-e2e-${randomBytes(3).toString('hex')}`;
const webhookConfigs: string[] = [];
const externalCluster = Boolean(process.env.RBINDER_E2E_KUBECONFIG);

/** Polls fn until it returns a value other than undefined. */
async function eventually<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${timeoutMs} ms${lastError ? ` (last error: ${String(lastError)})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

function statusOf(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}

/** The `message` of the Status object an API error carries. */
function messageOf(err: unknown): string {
  if (!(err instanceof ApiException)) return String(err);
  const body: unknown = err.body;
  try {
    const status = (typeof body === 'string' ? JSON.parse(body) : body) as { message?: string };
    return status.message ?? String(body);
  } catch {
    return String(body);
  }
}

function pod(name: string): V1Pod {
  // Never pulled: there is no kubelet (and a kind cluster's kubelet just reports ErrImagePull).
  return { metadata: { name }, spec: { containers: [{ name: 'app', image: 'registry.invalid/rbinder/none:1' }] } };
}


/** Accepts TCP connections and never answers (a webhook that hangs), counting the connections. */
async function blackHole(): Promise<{ port: number; connections: () => number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  let count = 0;
  const server: Server = createServer((s) => {
    count++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('no port');
  return {
    port: address.port,
    connections: () => count,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((done) => server.close(done));
    },
  };
}

/** A webhook on pod CREATE in this test's namespace only (so it disturbs nothing else). */
function podWebhook(name: string, url: string, failurePolicy: 'Ignore' | 'Fail', timeoutSeconds: number): V1MutatingWebhook {
  return {
    name,
    clientConfig: { url },
    rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'] }],
    failurePolicy,
    sideEffects: 'None',
    admissionReviewVersions: ['v1'],
    timeoutSeconds,
    namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': ns } },
  };
}

async function createWebhookConfig(webhook: V1MutatingWebhook): Promise<string> {
  const name = `${ns}-${webhook.name.split('.')[0]}`;
  await admission.createMutatingWebhookConfiguration({ body: { metadata: { name }, webhooks: [webhook] } });
  webhookConfigs.push(name);
  return name;
}

async function deleteWebhookConfig(name: string): Promise<void> {
  await admission.deleteMutatingWebhookConfiguration({ name }).catch(() => undefined);
  webhookConfigs.splice(webhookConfigs.indexOf(name), 1);
}

describe('the e2e Kubernetes control plane', () => {
  beforeAll(async () => {
    cluster = await startCluster();
    const kc = cluster.kubeConfig;
    core = kc.makeApiClient(CoreV1Api);
    apps = kc.makeApiClient(AppsV1Api);
    rbac = kc.makeApiClient(RbacAuthorizationV1Api);
    authz = kc.makeApiClient(AuthorizationV1Api);
    admission = kc.makeApiClient(AdmissionregistrationV1Api);
    await core.createNamespace({ body: { metadata: { name: ns } } });
    // Pods need the namespace's `default` ServiceAccount, which the controller-manager makes.
    await eventually('default ServiceAccount', () => core.readNamespacedServiceAccount({ name: 'default', namespace: ns }));
  });

  afterAll(async () => {
    if (!cluster) return;
    // Cluster-scoped leftovers would outlive the namespace on an external cluster.
    for (const name of [...webhookConfigs]) await deleteWebhookConfig(name);
    if (cluster.external) await core.deleteNamespace({ name: ns }).catch(() => undefined);
    await cluster.stop();
  });

  it('stores and serves objects (namespace, ConfigMap)', async () => {
    const created = await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'settings' }, data: { greeting: 'hello' } },
    });
    expect(created.metadata?.uid).toBeTruthy();
    const read = await core.readNamespacedConfigMap({ name: 'settings', namespace: ns });
    expect(read.data).toEqual({ greeting: 'hello' });
    const nsObj = await core.readNamespace({ name: ns });
    expect(nsObj.status?.phase).toBe('Active');
  });

  it('runs controllers: a Deployment gets a ReplicaSet, which gets Pods', async () => {
    const labels = { app: 'web' };
    const deployment = await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        metadata: { name: 'web' },
        spec: {
          replicas: 2,
          selector: { matchLabels: labels },
          template: { metadata: { labels }, spec: pod('unused').spec },
        },
      },
    });
    const rs = await eventually('ReplicaSet of the Deployment', async () => {
      const list = await apps.listNamespacedReplicaSet({ namespace: ns });
      return list.items.find((r) => r.metadata?.ownerReferences?.some((o) => o.uid === deployment.metadata?.uid));
    });
    expect(rs.spec?.replicas).toBe(2);
    const pods = await eventually('2 Pods of the ReplicaSet', async () => {
      const list = await core.listNamespacedPod({ namespace: ns, labelSelector: 'app=web' });
      const owned = list.items.filter((p) => p.metadata?.ownerReferences?.some((o) => o.uid === rs.metadata?.uid));
      return owned.length === 2 ? owned : undefined;
    });
    for (const p of pods) {
      expect(p.metadata?.name).toMatch(/^web-[a-z0-9]+-[a-z0-9]+$/);
      // The ServiceAccount admission plugin mounted the token volume.
      expect(p.spec?.volumes?.some((v) => v.projected)).toBe(true);
      if (!cluster.external) expect(p.status?.phase).toBe('Pending'); // no scheduler, no kubelet
    }
  });

  it('enforces RBAC: a ServiceAccount without rights is forbidden, then allowed by a RoleBinding', async () => {
    await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'nobody' } } });
    const user = `system:serviceaccount:${ns}:nobody`;

    const review = await authz.createSubjectAccessReview({
      body: { spec: { user, resourceAttributes: { namespace: ns, verb: 'list', resource: 'pods' } } },
    });
    expect(review.status?.allowed).toBe(false);

    // Its own token, from the TokenRequest API, and a client that uses nothing else.
    const tokenRequest = await core.createNamespacedServiceAccountToken({
      name: 'nobody',
      namespace: ns,
      body: { spec: { audiences: [], expirationSeconds: 600 } },
    });
    const token = tokenRequest.status?.token;
    expect(token).toBeTruthy();
    const asNobody = new KubeConfig();
    asNobody.loadFromOptions({
      clusters: [{ name: 'e2e', server: cluster.apiserverUrl, caData: cluster.caData }],
      users: [{ name: 'nobody', token }],
      contexts: [{ name: 'e2e', cluster: 'e2e', user: 'nobody' }],
      currentContext: 'e2e',
    });
    const coreAsNobody = asNobody.makeApiClient(CoreV1Api);
    const denied = await coreAsNobody.listNamespacedPod({ namespace: ns }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(statusOf(denied)).toBe(403);
    expect(messageOf(denied)).toContain(`"${user}" cannot list resource "pods"`);

    await rbac.createNamespacedRole({
      namespace: ns,
      body: { metadata: { name: 'pod-reader' }, rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list'] }] },
    });
    await rbac.createNamespacedRoleBinding({
      namespace: ns,
      body: {
        metadata: { name: 'nobody-reads-pods' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'pod-reader' },
        subjects: [{ kind: 'ServiceAccount', name: 'nobody', namespace: ns }],
      },
    });
    const list = await eventually('list allowed after the RoleBinding', () => coreAsNobody.listNamespacedPod({ namespace: ns }), 30_000);
    expect(list.items.length).toBeGreaterThanOrEqual(0);
    // Still nothing beyond the Role: no secrets.
    const secrets = await coreAsNobody.listNamespacedSecret({ namespace: ns }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(statusOf(secrets)).toBe(403);
  });

  it('calls mutating webhooks: failurePolicy Fail on an unreachable webhook refuses pods', async () => {
    const url = `https://127.0.0.1:${await freePort()}/mutate--v1-pod`;
    const failing = await createWebhookConfig(podWebhook('fail.e2e.rbinder.io', url, 'Fail', 5));
    try {
      const refused = await eventually('pod refused by the failing webhook', () =>
        core.createNamespacedPod({ namespace: ns, body: pod(`refused-${randomBytes(2).toString('hex')}`) }).then(
          () => undefined, // admitted: the new configuration has not reached the API server's cache yet
          (e: unknown) => e,
        ),
      30_000);
      expect(statusOf(refused)).toBe(500);
      expect(messageOf(refused)).toContain('failed calling webhook "fail.e2e.rbinder.io"');
      expect(messageOf(refused)).toContain('connection refused');
    } finally {
      await deleteWebhookConfig(failing);
    }
  });

  it('calls mutating webhooks: failurePolicy Ignore on an unreachable webhook admits pods', async () => {
    const url = `https://127.0.0.1:${await freePort()}/mutate--v1-pod`;
    const ignoring = await createWebhookConfig(podWebhook('ignore.e2e.rbinder.io', url, 'Ignore', 5));
    try {
      // Retried while the `Fail` webhook of the test before may linger in the API server's cache.
      const admitted = await eventually('pod admitted despite the unreachable webhook', () =>
        core.createNamespacedPod({ namespace: ns, body: pod(`admitted-${randomBytes(2).toString('hex')}`) }),
      30_000);
      expect(admitted.metadata?.uid).toBeTruthy();
      // Admitted because the API server called the webhook and failed open, not because it has not
      // seen the webhook yet: it logs each such call.
      const logPath = cluster.logPath('kube-apiserver');
      if (logPath) {
        await eventually('"failing open" in the API server log', async () => {
          await core.createNamespacedPod({ namespace: ns, body: pod(`admitted-${randomBytes(2).toString('hex')}`) });
          const log = await readFile(logPath, 'utf8');
          return /Failed calling webhook, failing open ignore\.e2e\.rbinder\.io/.test(log) ? true : undefined;
        }, 30_000);
      }
    } finally {
      await deleteWebhookConfig(ignoring);
    }
  });

  // The webhook listens on this machine's loopback, which a kind cluster's API server (in its
  // node container) cannot reach.
  it.skipIf(externalCluster)('calls mutating webhooks: failurePolicy Ignore on a webhook that hangs admits pods after its timeout', async () => {
    const hole = await blackHole();
    try {
      await createWebhookConfig(podWebhook('hang.e2e.rbinder.io', `https://127.0.0.1:${hole.port}/mutate--v1-pod`, 'Ignore', 2));
      let tookMs = 0;
      await eventually('the API server calls the hanging webhook', async () => {
        const t0 = Date.now();
        await core.createNamespacedPod({ namespace: ns, body: pod(`hang-${randomBytes(2).toString('hex')}`) });
        tookMs = Date.now() - t0;
        return hole.connections() > 0 ? true : undefined;
      }, 30_000);
      expect(tookMs).toBeGreaterThanOrEqual(1_500); // waited for the webhook's 2 s timeout ...
      expect(tookMs).toBeLessThan(10_000); // ... and not much longer
    } finally {
      for (const name of webhookConfigs.filter((n) => n.endsWith('-hang'))) await deleteWebhookConfig(name);
      await hole.close();
    }
  });

  it('keeps its data in etcd across an API server restart', async (ctx) => {
    if (!cluster.canRestartApiServer) ctx.skip();
    const before = await core.createNamespacedConfigMap({
      namespace: ns,
      body: { metadata: { name: 'survivor' }, data: { written: 'before the restart' } },
    });
    const t0 = Date.now();
    await cluster.restartApiServer();
    process.stderr.write(`[rbinder-cluster] kube-apiserver restarted and ready in ${Date.now() - t0} ms\n`);
    // The client reconnects on its own; the first requests may still race the restart.
    const after = await eventually('ConfigMap after the restart', () => core.readNamespacedConfigMap({ name: 'survivor', namespace: ns }), 30_000);
    expect(after.metadata?.uid).toBe(before.metadata?.uid);
    expect(after.metadata?.resourceVersion).toBe(before.metadata?.resourceVersion);
    expect(after.data).toEqual({ written: 'before the restart' });
    const deployment = await apps.readNamespacedDeployment({ name: 'web', namespace: ns });
    expect(deployment.spec?.replicas).toBe(2);
    // And it still writes and still runs controllers after the restart.
    deployment.spec = { ...deployment.spec!, replicas: 3 };
    await apps.replaceNamespacedDeployment({ name: 'web', namespace: ns, body: deployment });
    await eventually('a third Pod after scaling up', async () => {
      const list = await core.listNamespacedPod({ namespace: ns, labelSelector: 'app=web' });
      return list.items.length === 3 ? true : undefined;
    });
  });
});
