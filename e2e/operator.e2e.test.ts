// The operator against a real control plane (e2e/cluster): it runs out of cluster as the
// rbinder-controller ServiceAccount bound to exactly operator/rbac/*.yaml (a missing rule fails
// these tests), with a stand-in webhook served over TLS with the certificates the operator makes.
// There is no kubelet: pods stay Pending, and a crash loop is simulated by writing pod status as a
// kubelet would.

import {
  AdmissionregistrationV1Api,
  ApiException,
  ApiextensionsV1Api,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  EventsV1Api,
  KubeConfig,
  loadAllYaml,
  loadYaml,
  PatchStrategy,
  RbacAuthorizationV1Api,
  setHeaderOptions,
  type V1ClusterRole,
  type V1ClusterRoleBinding,
  type V1CustomResourceDefinition,
  type V1Deployment,
  type V1Pod,
  type V1Role,
  type V1RoleBinding,
} from '@kubernetes/client-node';
import { existsSync, readFileSync, unwatchFile, watchFile } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { tracedWorkloadConfig } from '../operator/src/config';
import { errorText, isConflict, Kube, retryOnConflict } from '../operator/src/kube';
import {
  ANNOTATION_CONFIG_HASH,
  ANNOTATION_INJECT,
  ANNOTATION_INJECTED,
  ANNOTATION_TRACED_WORKLOAD,
  FINALIZER,
  GROUP,
  PLURAL,
  VERSION,
} from '../operator/src/names';
import { runOperator, type OperatorHandle } from '../operator/src/run';
import type { TracedWorkload } from '../operator/src/types';
import { startCluster, type Cluster } from './cluster/cluster';
import { eventually as eventuallyIn } from './support/k8s';

const repo = resolve(__dirname, '..');
const SYSTEM = 'rbinder-system';
const NS = 'shop';
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

let cluster: Cluster;
let admin: KubeConfig;
let operatorKc: KubeConfig;
let core: CoreV1Api;
let apps: AppsV1Api;
let custom: CustomObjectsApi;
let admission: AdmissionregistrationV1Api;
let workDir: string;
let certDir: string;
let logFile: string;
let operator: OperatorHandle | undefined;
let registry: Registry;
let webhook: Server;
let webhookCalls = 0;

const eventually = <T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> =>
  eventuallyIn(what, fn, timeoutMs, { intervalMs: 200, context: () => `operator log: ${logFile}` });

const getTw = (name: string): Promise<TracedWorkload> => custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name }) as Promise<TracedWorkload>;
const twExists = async (name: string): Promise<boolean> => {
  try {
    await getTw(name);
    return true;
  } catch (err) {
    if (err instanceof ApiException && err.code === 404) return false;
    throw err;
  }
};
const templateAnnotations = async (name: string): Promise<Record<string, string>> =>
  (await apps.readNamespacedDeployment({ name, namespace: NS })).spec?.template?.metadata?.annotations ?? {};
const condition = (tw: TracedWorkload, type: string) => tw.status?.conditions?.find((c) => c.type === type);

function deployment(name: string, labels: Record<string, string>, annotations: Record<string, string> = {}): V1Deployment {
  return {
    metadata: { name, namespace: NS, labels, annotations },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name } }, spec: { containers: [{ name: 'app', image: 'example.invalid/app:1' }] } },
    },
  };
}

async function createTw(name: string, spec: TracedWorkload['spec']): Promise<TracedWorkload> {
  return (await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'TracedWorkload', metadata: { name }, spec } })) as TracedWorkload;
}

async function patchTwSpec(name: string, spec: Partial<TracedWorkload['spec']>): Promise<TracedWorkload> {
  return (await custom.patchNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name, body: { spec } }, mergePatch)) as TracedWorkload;
}

async function metric(name: string): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  return ((m?.values ?? []) as { value: number }[]).reduce((n, v) => n + v.value, 0);
}

async function applyRbacAndServiceAccount(): Promise<void> {
  const rbac = admin.makeApiClient(RbacAuthorizationV1Api);
  for (const file of ['clusterrole.yaml', 'role.yaml']) {
    for (const doc of loadAllYaml(readFileSync(join(repo, 'operator/rbac', file), 'utf8')) as { kind: string }[]) {
      switch (doc.kind) {
        case 'ClusterRole':
          await rbac.createClusterRole({ body: doc as V1ClusterRole });
          break;
        case 'ClusterRoleBinding':
          await rbac.createClusterRoleBinding({ body: doc as V1ClusterRoleBinding });
          break;
        case 'Role':
          await rbac.createNamespacedRole({ namespace: SYSTEM, body: doc as V1Role });
          break;
        case 'RoleBinding':
          await rbac.createNamespacedRoleBinding({ namespace: SYSTEM, body: doc as V1RoleBinding });
          break;
      }
    }
  }
  await core.createNamespacedServiceAccount({ namespace: SYSTEM, body: { metadata: { name: 'rbinder-controller' } } });
}

/** A kubeconfig that authenticates as the rbinder-controller ServiceAccount (a TokenRequest token). */
async function serviceAccountKubeConfig(): Promise<KubeConfig> {
  const token = await core.createNamespacedServiceAccountToken({ name: 'rbinder-controller', namespace: SYSTEM, body: { spec: { expirationSeconds: 7200, audiences: [] } } });
  const c = admin.getCurrentCluster()!;
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'e2e', server: c.server, caData: c.caData, caFile: c.caFile, skipTLSVerify: false }],
    users: [{ name: 'rbinder-controller', token: token.status!.token }],
    contexts: [{ name: 'e2e', cluster: 'e2e', user: 'rbinder-controller' }],
    currentContext: 'e2e',
  });
  return kc;
}

/**
 * A stand-in for the webhook: marks the pods the operator stamped as injected, over TLS with the
 * certificate the operator wrote into certDir (reloaded when it changes, as the real webhook does).
 */
async function startStandInWebhook(dir = certDir): Promise<{ server: Server; port: number }> {
  const load = () => ({ cert: readFileSync(join(dir, 'tls.crt')), key: readFileSync(join(dir, 'tls.key')) });
  const server = createServer(load(), (req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c));
    req.on('end', () => {
      webhookCalls++;
      const review = JSON.parse(body) as { request: { uid: string; object: V1Pod } };
      const annotations = review.request.object.metadata?.annotations ?? {};
      const selected = annotations[ANNOTATION_TRACED_WORKLOAD] !== undefined || annotations[ANNOTATION_INJECT] === 'true';
      const response: Record<string, unknown> = { uid: review.request.uid, allowed: true };
      if (selected) {
        const patch = [{ op: 'add', path: `/metadata/annotations/${ANNOTATION_INJECTED.replace('/', '~1')}`, value: 'app' }];
        response.patchType = 'JSONPatch';
        response.patch = Buffer.from(JSON.stringify(patch)).toString('base64');
      }
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response }));
    });
  });
  watchFile(join(dir, 'tls.crt'), { interval: 100 }, () => server.setSecureContext(load()));
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return { server, port: (server.address() as AddressInfo).port };
}

async function createWebhookConfiguration(name: string, port: number, namespace: string, failurePolicy: 'Ignore' | 'Fail'): Promise<void> {
  await admission.createMutatingWebhookConfiguration({
    body: {
      metadata: { name },
      webhooks: [
        {
          name: 'pods.rbinder.io',
          admissionReviewVersions: ['v1'],
          sideEffects: 'None',
          failurePolicy,
          timeoutSeconds: 5,
          clientConfig: { url: `https://127.0.0.1:${port}/mutate--v1-pod` },
          namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': namespace } },
          rules: [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'], scope: 'Namespaced' }],
        },
      ],
    },
  });
}

async function startOperator(identity: string): Promise<OperatorHandle> {
  const logger = pino({ level: 'debug', base: { identity } }, pino.destination({ dest: logFile, append: true, sync: true }));
  return runOperator({
    kubeConfig: operatorKc,
    namespace: SYSTEM,
    identity,
    leaderElection: { leaseDurationMs: 4_000, renewDeadlineMs: 3_000, retryPeriodMs: 500 },
    webhookUrl: 'https://127.0.0.1',
    certDir,
    collectorImage: 'otel/opentelemetry-collector:e2e',
    debounceMs: 50,
    resyncMs: 20_000,
    logger,
    registry,
  });
}

beforeAll(async () => {
  cluster = await startCluster();
  admin = cluster.kubeConfig;
  core = admin.makeApiClient(CoreV1Api);
  apps = admin.makeApiClient(AppsV1Api);
  custom = admin.makeApiClient(CustomObjectsApi);
  admission = admin.makeApiClient(AdmissionregistrationV1Api);
  workDir = await mkdtemp(join(tmpdir(), 'rbinder-operator-e2e.'));
  certDir = join(workDir, 'certs');
  logFile = join(workDir, 'operator.log');
  registry = new Registry();

  // Through the typed model: client-node serializes by its own field names, so a plain object
  // would lose x-kubernetes-* and default.
  const crd = loadYaml<V1CustomResourceDefinition>(readFileSync(join(repo, 'crds/tracedworkloads.rbinder.io.yaml'), 'utf8'));
  const ext = admin.makeApiClient(ApiextensionsV1Api);
  await ext.createCustomResourceDefinition({ body: crd });
  await eventually('CRD established', async () => (await ext.readCustomResourceDefinition({ name: crd.metadata!.name! })).status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True'));
  for (const name of [SYSTEM, NS]) await core.createNamespace({ body: { metadata: { name } } });
  await applyRbacAndServiceAccount();
  operatorKc = await serviceAccountKubeConfig();
  // Pods need the namespace's default ServiceAccount, which kube-controller-manager creates.
  await eventually('default ServiceAccount', async () => (await core.readNamespacedServiceAccount({ name: 'default', namespace: NS })).metadata?.name);
}, 1_800_000);

afterAll(async () => {
  await operator?.stop();
  if (webhook) {
    unwatchFile(join(certDir, 'tls.crt'));
    webhook.close();
  }
  await cluster?.stop();
  if (process.env.RBINDER_E2E_KEEP !== '1' && workDir) await rm(workDir, { recursive: true, force: true });
}, 180_000);

describe('TracedWorkload CRD', () => {
  it('applies defaults and refuses invalid specs with the CEL rules', async () => {
    const tw = await createTw('defaults', { selector: { matchLabels: { none: 'x' } }, collector: { provision: { exporters: { 'otlp/x': { endpoint: 'x:4317' } } } } });
    expect(tw.spec).toMatchObject({
      propagators: ['tracecontext', 'baggage'],
      sampling: { ratio: 1 },
      rollout: { rollbackOnCrashLoop: true, crashLoopRestarts: 3 },
      collector: { protocol: 'http/protobuf', provision: { replicas: 1, exporters: { 'otlp/x': { endpoint: 'x:4317' } } } },
    });
    await custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name: 'defaults' });
    const invalid: [string, TracedWorkload['spec'], RegExp][] = [
      ['nothing selected', {}, /set selector, workloads, or both/],
      ['endpoint and provision', { selector: {}, collector: { endpoint: 'http://x:4318', provision: {} } }, /not both/],
      ['endpoint not a URL', { selector: {}, collector: { endpoint: 'x:4318' } }, /http:\/\/ or https:\/\//],
      ['none with others', { selector: {}, propagators: ['none', 'b3'] }, /none excludes/],
      ['ratio above 1', { selector: {}, sampling: { ratio: 2 } }, /ratio/],
      ['In without values', { selector: { matchExpressions: [{ key: 'a', operator: 'In' }] } }, /need values/],
    ];
    for (const [what, spec, message] of invalid) {
      const err = await createTw('invalid', spec).catch((e: unknown) => e);
      expect(err, what).toBeInstanceOf(ApiException);
      expect((err as ApiException<unknown>).code, what).toBe(422);
      expect(errorText(err), what).toMatch(message);
    }
  });
});

describe('operator', () => {
  it('starts as the ServiceAccount, takes the lease, creates the webhook certificates and keeps the caBundle current', async () => {
    // A workload that exists before the operator: caught up once selected.
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('web', { tier: 'web' }) });
    operator = await startOperator('replica-a');
    await eventually('leader', async () => operator!.isLeader());
    const lease = await admin.makeApiClient(CoordinationV1Api).readNamespacedLease({ name: 'rbinder-controller', namespace: SYSTEM });
    expect(lease.spec?.holderIdentity).toBe('replica-a');

    await eventually('certificate files', async () => existsSync(join(certDir, 'tls.crt')) && existsSync(join(certDir, 'tls.key')));
    const secret = await core.readNamespacedSecret({ name: 'rbinder-webhook-tls', namespace: SYSTEM });
    expect(secret.type).toBe('kubernetes.io/tls');
    expect(Object.keys(secret.data ?? {}).sort()).toEqual(['ca-bundle.crt', 'ca.crt', 'ca.key', 'tls.crt', 'tls.key']);

    // The webhook configuration appears after the operator: its caBundle gets filled in.
    const standIn = await startStandInWebhook();
    webhook = standIn.server;
    const port = standIn.port;
    await createWebhookConfiguration('rbinder-webhook', port, NS, 'Ignore');
    const caBundle = await eventually('caBundle patched', async () => (await admission.readMutatingWebhookConfiguration({ name: 'rbinder-webhook' })).webhooks?.[0]?.clientConfig?.caBundle);
    expect(Buffer.from(caBundle, 'base64').toString('utf8')).toBe(await readFile(join(certDir, 'ca.crt'), 'utf8'));

    // The API server trusts the webhook: a pod opting in is marked by it.
    const created = await core.createNamespacedPod({
      namespace: NS,
      body: { metadata: { name: 'probe', annotations: { [ANNOTATION_INJECT]: 'true' } }, spec: { containers: [{ name: 'app', image: 'example.invalid/app:1' }] } },
    });
    expect(created.metadata?.annotations?.[ANNOTATION_INJECTED]).toBe('app');
    expect(webhookCalls).toBeGreaterThan(0);
    await core.deleteNamespacedPod({ name: 'probe', namespace: NS });
  });

  let firstHash = '';
  it('create: stamps the selected workload, provisions the collector, writes status and events', async () => {
    await createTw('shop', { selector: { matchLabels: { tier: 'web' } }, collector: { provision: { exporters: { 'otlp/backend': { endpoint: 'tempo.observability:4317' } } } } });
    const tw = await eventually('status', async () => {
      const t = await getTw('shop');
      return t.status?.observedGeneration === 1 && t.status.selectedWorkloads === 1 ? t : undefined;
    });
    expect(tw.metadata.finalizers).toContain(FINALIZER);
    firstHash = tracedWorkloadConfig(tw).configHash!;
    expect(tw.status?.configHash).toBe(firstHash);
    expect(await templateAnnotations('web')).toMatchObject({ [ANNOTATION_TRACED_WORKLOAD]: 'shop', [ANNOTATION_CONFIG_HASH]: firstHash });
    expect(tw.status?.collector).toBe('http://shop-collector.shop.svc:4318');
    expect(condition(tw, 'CollectorReady')).toMatchObject({ status: 'False', observedGeneration: 1 }); // no kubelet: never available
    expect(tw.status?.conditions?.map((c) => c.type)).toEqual(['Ready', 'CollectorReady', 'RolledOut', 'Degraded']);

    const cm = await core.readNamespacedConfigMap({ name: 'shop-collector', namespace: NS });
    const config = parseYaml(cm.data!['collector.yaml']!) as { service: { pipelines: { traces: { processors: string[]; exporters: string[] } } } };
    expect(config.service.pipelines.traces).toEqual({ receivers: ['otlp'], processors: ['memory_limiter', 'batch'], exporters: ['otlp/backend'] });
    const collector = await apps.readNamespacedDeployment({ name: 'shop-collector', namespace: NS });
    expect(collector.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'TracedWorkload', name: 'shop', uid: tw.metadata.uid, controller: true });
    expect(collector.spec?.template.metadata?.annotations?.[ANNOTATION_INJECT]).toBe('false');
    expect((await core.readNamespacedService({ name: 'shop-collector', namespace: NS })).spec?.ports?.map((p) => p.port)).toEqual([4317, 4318]);

    // The stamped template's pods go through the webhook.
    await eventually('an injected pod with the stamp', async () => {
      const pods = (await core.listNamespacedPod({ namespace: NS, labelSelector: 'app=web' })).items;
      return pods.some((p) => p.metadata?.annotations?.[ANNOTATION_CONFIG_HASH] === firstHash && p.metadata.annotations[ANNOTATION_INJECTED] === 'app');
    });
    const events = await eventually('events', async () => {
      const list = (await admin.makeApiClient(EventsV1Api).listNamespacedEvent({ namespace: NS })).items.filter((e) => e.reportingController === 'rbinder.io/operator');
      return list.some((e) => e.reason === 'Stamped') && list.some((e) => e.reason === 'CollectorProvisioned') ? list : undefined;
    });
    expect(events.find((e) => e.reason === 'Stamped')?.regarding).toMatchObject({ kind: 'TracedWorkload', name: 'shop' });
    // Metrics went to the registry the entry serves.
    expect(await metric('rbinder_operator_reconcile_passes_total')).toBeGreaterThan(0);
    expect(await metric('rbinder_operator_api_requests_total')).toBeGreaterThan(0);
  });

  let secondHash = '';
  it('update: a new configuration hash rolls the pods (a new ReplicaSet appears)', async () => {
    const replicaSetsBefore = (await apps.listNamespacedReplicaSet({ namespace: NS, labelSelector: 'app=web' })).items.length;
    const updated = await patchTwSpec('shop', { sampling: { ratio: 0.5 } });
    secondHash = tracedWorkloadConfig(updated).configHash!;
    expect(secondHash).not.toBe(firstHash);
    await eventually('re-stamped', async () => (await templateAnnotations('web'))[ANNOTATION_CONFIG_HASH] === secondHash);
    const replicaSets = await eventually('a new ReplicaSet', async () => {
      const list = (await apps.listNamespacedReplicaSet({ namespace: NS, labelSelector: 'app=web' })).items;
      return list.length > replicaSetsBefore && list.some((rs) => rs.spec?.template?.metadata?.annotations?.[ANNOTATION_CONFIG_HASH] === secondHash) ? list : undefined;
    });
    expect(replicaSets.length).toBe(replicaSetsBefore + 1);
    await eventually('status at generation 2', async () => (await getTw('shop')).status?.observedGeneration === 2);
  });

  it('conflicting updates: a stale write gets 409 and the operator retries with a fresh read', async () => {
    const kube = new Kube(operatorKc, { namespace: SYSTEM, identity: 'test' });
    const stale = await getTw('shop');
    await custom.patchNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name: 'shop', body: { metadata: { labels: { touched: '1' } } } }, mergePatch);
    const err = await kube.updateTracedWorkloadStatus(stale, { ...stale.status }).catch((e: unknown) => e);
    expect(isConflict(err)).toBe(true);
    let attempts = 0;
    let current = stale;
    await retryOnConflict(async () => {
      attempts++;
      try {
        await kube.updateTracedWorkloadStatus(current, { ...current.status });
      } catch (e) {
        current = await kube.getTracedWorkload(NS, 'shop');
        throw e;
      }
    });
    expect(attempts).toBe(2);

    // Under a stream of concurrent writes the operator's status still catches up (its writes that
    // meet 409 are retried; rbinder_operator_conflicts_total counts them).
    const writer = (async () => {
      for (let i = 0; i < 30; i++) {
        await custom.patchNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name: 'shop', body: { metadata: { labels: { touched: String(i) } } } }, mergePatch);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await patchTwSpec('shop', { serviceName: 'shop-web' });
    await writer;
    const settled = await eventually('status at generation 3', async () => {
      const t = await getTw('shop');
      return t.status?.observedGeneration === 3 ? t : undefined;
    });
    secondHash = settled.status!.configHash!;
    await eventually('re-stamped', async () => (await templateAnnotations('web'))[ANNOTATION_CONFIG_HASH] === secondHash);
  });

  it('rolls back a workload whose injected pods crash-loop, and says so', async () => {
    const pod = await eventually('an injected pod of the current configuration', async () => {
      const pods = (await core.listNamespacedPod({ namespace: NS, labelSelector: 'app=web' })).items;
      return pods.find((p) => p.metadata?.annotations?.[ANNOTATION_CONFIG_HASH] === secondHash && p.metadata.annotations[ANNOTATION_INJECTED]);
    });
    // What a kubelet reports for a container that keeps failing.
    await core.patchNamespacedPodStatus(
      {
        name: pod.metadata!.name!,
        namespace: NS,
        body: {
          status: {
            containerStatuses: [
              {
                name: 'app',
                image: 'example.invalid/app:1',
                imageID: '',
                ready: false,
                started: false,
                restartCount: 4,
                state: { waiting: { reason: 'CrashLoopBackOff', message: 'back-off 40s restarting failed container' } },
                lastState: { terminated: { exitCode: 139, reason: 'Error' } },
              },
            ],
          },
        },
      },
      mergePatch,
    );
    const tw = await eventually('rolled back', async () => {
      const t = await getTw('shop');
      return t.status?.workloads?.find((w) => w.name === 'web')?.state === 'RolledBack' ? t : undefined;
    });
    expect(condition(tw, 'Degraded')).toMatchObject({ status: 'True', reason: 'CrashLoopRollback' });
    expect(tw.status?.workloads?.[0]?.message).toContain(pod.metadata!.name!);
    await eventually('stamp removed', async () => (await templateAnnotations('web'))[ANNOTATION_TRACED_WORKLOAD] === undefined);
    // Stays rolled back...
    await new Promise((r) => setTimeout(r, 1_000));
    expect((await templateAnnotations('web'))[ANNOTATION_TRACED_WORKLOAD]).toBeUndefined();
    // ...until the configuration changes.
    await patchTwSpec('shop', { sampling: { ratio: 0.25 } });
    await eventually('stamped again', async () => (await templateAnnotations('web'))[ANNOTATION_TRACED_WORKLOAD] === 'shop');
  });

  it('stamps a workload annotated rbinder.io/inject=true, and reverts it when the annotation goes', async () => {
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('legacy', { tier: 'none' }, { [ANNOTATION_INJECT]: 'true' }) });
    await eventually('stamped', async () => (await templateAnnotations('legacy'))[ANNOTATION_INJECT] === 'true' && (await templateAnnotations('legacy'))[ANNOTATION_CONFIG_HASH]);
    await apps.patchNamespacedDeployment({ name: 'legacy', namespace: NS, body: { metadata: { annotations: { [ANNOTATION_INJECT]: null } } } }, mergePatch);
    await eventually('reverted', async () => Object.keys(await templateAnnotations('legacy')).length === 0);
  });

  it('with automatic rollout off, stamps nothing and says which pods need a restart', async () => {
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('batch', { tier: 'batch' }) });
    await createTw('manual', { selector: { matchLabels: { tier: 'batch' } }, rollout: { automatic: false } });
    const tw = await eventually('status', async () => {
      const t = await getTw('manual');
      return t.status?.workloads?.[0]?.state === 'RestartNeeded' ? t : undefined;
    });
    expect(condition(tw, 'RolledOut')).toMatchObject({ status: 'False', reason: 'RestartNeeded' });
    expect(condition(tw, 'RolledOut')!.message).toContain('kubectl rollout restart deployment/batch -n shop');
    expect((await templateAnnotations('batch'))[ANNOTATION_TRACED_WORKLOAD]).toBeUndefined();
  });

  it('survives an API server restart (watches resume; expired resourceVersions relist)', async () => {
    // The TracedWorkload cache runs on every replica, leader or not: its watch must come back.
    const cache = operator!.cache.informer;
    const before = { ...cache.stats };
    await cluster.restartApiServer();
    // A change made after the restart is seen. (With the API server down longer than the renew
    // deadline the leader steps down, as client-go's does, and leads again once it can renew.)
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('api', { tier: 'web' }) });
    await eventually('new workload stamped after the restart', async () => (await templateAnnotations('api'))[ANNOTATION_TRACED_WORKLOAD] === 'shop', 90_000);
    await custom.patchNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name: 'manual', body: { metadata: { labels: { seen: 'yes' } } } }, mergePatch);
    await eventually('cache sees changes after the restart', async () => operator!.cache.list().some((t) => t.metadata.name === 'manual' && t.metadata.labels?.seen === 'yes'));
    expect(cache.stats.restarts).toBeGreaterThan(before.restarts);
    // The new API server's watch cache starts at the current revision: the old resourceVersion is
    // too old (410 Gone) and the informer lists again.
    expect(cache.stats.lists).toBeGreaterThan(before.lists);
    expect(operator!.isLeader()).toBe(true);
  }, 240_000);

  it('delete: reverts every workload, removes the finalizer; the collector goes with the TracedWorkload', async () => {
    await custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name: 'shop' });
    await eventually('TracedWorkload gone', async () => !(await twExists('shop')));
    for (const name of ['web', 'api']) {
      const annotations = await templateAnnotations(name);
      expect(annotations[ANNOTATION_TRACED_WORKLOAD]).toBeUndefined();
      expect(annotations[ANNOTATION_CONFIG_HASH]).toBeUndefined();
    }
    await eventually('collector garbage-collected', async () => {
      try {
        await apps.readNamespacedDeployment({ name: 'shop-collector', namespace: NS });
        return false;
      } catch (err) {
        return err instanceof ApiException && err.code === 404;
      }
    });
  });

  it('hands leadership over on shutdown: the lease is released, a second replica takes it at once', async () => {
    const second = await startOperator('replica-b');
    try {
      await new Promise((r) => setTimeout(r, 1_500));
      expect(second.isLeader()).toBe(false);
      const stoppedAt = Date.now();
      await operator!.stop();
      operator = undefined;
      const released = await admin.makeApiClient(CoordinationV1Api).readNamespacedLease({ name: 'rbinder-controller', namespace: SYSTEM });
      expect(['', 'replica-b']).toContain(released.spec?.holderIdentity ?? '');
      await eventually('replica-b leads', async () => second.isLeader(), 10_000);
      expect(Date.now() - stoppedAt).toBeLessThan(4_000); // sooner than the lease would expire
      // And it works: the manual TracedWorkload is still reported.
      await eventually('status kept', async () => (await getTw('manual')).status?.workloads?.[0]?.state === 'RestartNeeded');
    } finally {
      operator = second;
    }
  });
  it('rotates the serving certificate and the CA while the API server keeps calling the webhook', async () => {
    // Its own operator (certificates only matter here), with lifetimes of seconds: the serving
    // certificate is renewed every ~4 s, the CA after ~11 s in two steps.
    await operator?.stop();
    operator = undefined;
    const ns = 'rotation';
    const dir = join(workDir, 'rotation-certs');
    await core.createNamespace({ body: { metadata: { name: ns } } });
    await eventually('default ServiceAccount', async () => (await core.readNamespacedServiceAccount({ name: 'default', namespace: ns })).metadata?.name);
    const rotating = await runOperator({
      kubeConfig: admin,
      namespace: ns,
      leaderElect: false,
      webhookConfigName: 'rbinder-webhook-rotation',
      webhookUrl: 'https://127.0.0.1',
      certDir: dir,
      certLifetimeMs: 6_000,
      caLifetimeMs: 16_000,
      caTrustGraceMs: 1_000,
      logger: pino({ level: 'debug', base: { identity: 'rotation' } }, pino.destination({ dest: logFile, append: true, sync: true })),
    });
    let server: Server | undefined;
    try {
      await eventually('certificate files', async () => existsSync(join(dir, 'tls.crt')));
      const standIn = await startStandInWebhook(dir);
      server = standIn.server;
      // failurePolicy Fail: a TLS failure would fail the pod's creation.
      await createWebhookConfiguration('rbinder-webhook-rotation', standIn.port, ns, 'Fail');
      await eventually('caBundle patched', async () => (await admission.readMutatingWebhookConfiguration({ name: 'rbinder-webhook-rotation' })).webhooks?.[0]?.clientConfig?.caBundle);

      const servingCerts = new Set<string>();
      const cas = new Set<string>();
      let maxBundle = 0;
      let failures = 0;
      const until = Date.now() + 24_000;
      for (let i = 0; Date.now() < until; i++) {
        servingCerts.add(await readFile(join(dir, 'tls.crt'), 'utf8'));
        const secret = await core.readNamespacedSecret({ name: 'rbinder-webhook-tls', namespace: ns });
        cas.add(secret.data!['ca.crt']!);
        maxBundle = Math.max(maxBundle, (Buffer.from(secret.data!['ca-bundle.crt']!, 'base64').toString().match(/BEGIN CERTIFICATE/g) ?? []).length);
        try {
          const pod = await core.createNamespacedPod({
            namespace: ns,
            body: { metadata: { name: `p${i}`, annotations: { [ANNOTATION_INJECT]: 'true' } }, spec: { containers: [{ name: 'app', image: 'example.invalid/app:1' }] } },
          });
          expect(pod.metadata?.annotations?.[ANNOTATION_INJECTED]).toBe('app');
        } catch (err) {
          failures++;
          process.stderr.write(`pod p${i}: ${errorText(err)}\n`);
        }
        await new Promise((r) => setTimeout(r, 250));
      }
      expect(failures).toBe(0);
      expect(servingCerts.size).toBeGreaterThanOrEqual(4);
      expect(cas.size).toBeGreaterThanOrEqual(2);
      expect(maxBundle).toBe(2); // old and new CA trusted together during the rotation
    } finally {
      if (server) {
        unwatchFile(join(dir, 'tls.crt'));
        server.close();
      }
      await rotating.stop();
    }
  }, 120_000);
});
