// Issue #4's scenarios end to end with the REAL controller: bin/rbinder-controller (operator and
// webhook in one process) runs out of cluster as a child process, as the rbinder-controller
// ServiceAccount, against the real control plane of e2e/cluster. kube-controller-manager makes the
// ReplicaSets and Pods; the API server sends every pod CREATE to the controller's webhook over TLS
// with the certificate the operator made, wrote into --cert-dir and published in the caBundle.
// There is no kubelet: pods stay Pending, and nothing runs the images (the containers have an
// explicit command, so the webhook needs no registry).
//
// The tests are numbered as the scenarios of issue #4 and run in file order, which differs where
// one scenario needs another's state: 1, 2, 3, 4, 7, 8 (API server restart), 9 (automatic rollout
// off), 5 (delete), 6 (stop the controller, last). 3b is a known bug kept as an expected failure (see its comment).

import {
  AdmissionregistrationV1Api,
  ApiException,
  ApiextensionsV1Api,
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
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
  type V1ReplicaSet,
  type V1Role,
  type V1RoleBinding,
} from '@kubernetes/client-node';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { buildMutatingWebhookConfiguration } from '../webhook/src/webhook-configuration';
import { startCluster, type Cluster } from './cluster/cluster';
import { exitedWithin, spawnController, type ControllerProcess } from './controller/controller';
import { errorText } from '../operator/src/kube';
import { CRD_NAME, GROUP, PLURAL, VERSION } from '../operator/src/names';
import { eventually, Fatal, freePort } from './support/k8s';

const repo = resolve(__dirname, '..');
const SYSTEM = 'rbinder-system';
const NS = 'shop';
const WEBHOOK_CONFIG = 'rbinder-webhook'; // the operator's --webhook-config-name default (and its RBAC's resourceNames)
const TRACER_IMAGE = 'some-registry.example/rbinder-bundle:test';
const DEFAULT_ENDPOINT = 'http://rbinder-collector.rbinder-system:4318';
const LAUNCHER = '/rbinder/bin/rbinder';
const FINALIZER = 'rbinder.io/revert-workloads';
const A = {
  inject: 'rbinder.io/inject',
  injected: 'rbinder.io/injected',
  skipped: 'rbinder.io/skipped',
  tracedWorkload: 'rbinder.io/traced-workload',
  configHash: 'rbinder.io/config-hash',
};
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  observedGeneration?: number;
}
interface WorkloadStatus {
  kind: string;
  name: string;
  state: string;
  configHash?: string;
  injectedPods?: number;
  podsNeedingRestart?: number;
}
interface TracedWorkload {
  metadata: { name: string; namespace: string; uid: string; generation?: number; finalizers?: string[]; deletionTimestamp?: string };
  spec: Record<string, unknown>;
  status?: {
    observedGeneration?: number;
    configHash?: string;
    selectedWorkloads?: number;
    injectedPods?: number;
    collector?: string;
    workloads?: WorkloadStatus[];
    conditions?: Condition[];
  };
}

let cluster: Cluster;
let admin: KubeConfig;
let core: CoreV1Api;
let apps: AppsV1Api;
let custom: CustomObjectsApi;
let admission: AdmissionregistrationV1Api;
let workDir: string;
let certDir: string;
let saKubeconfigPath: string;
let controller: ControllerProcess | undefined;

const context = (): string => (controller ? controller.tail() : '(controller not started)');



const getTw = (name: string): Promise<TracedWorkload> => custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name }) as Promise<TracedWorkload>;
async function twExists(name: string): Promise<boolean> {
  try {
    await getTw(name);
    return true;
  } catch (err) {
    if (err instanceof ApiException && err.code === 404) return false;
    throw err;
  }
}
async function createTw(name: string, spec: Record<string, unknown>): Promise<TracedWorkload> {
  return (await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, body: { apiVersion: `${GROUP}/${VERSION}`, kind: 'TracedWorkload', metadata: { name }, spec } })) as TracedWorkload;
}
async function patchTwSpec(name: string, spec: Record<string, unknown>): Promise<TracedWorkload> {
  return (await custom.patchNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name, body: { spec } }, mergePatch)) as TracedWorkload;
}
const conditionOf = (tw: TracedWorkload, type: string): Condition | undefined => tw.status?.conditions?.find((c) => c.type === type);

/** A Deployment whose container has an explicit command (no registry lookup) and its own env. */
function deployment(name: string, labels: Record<string, string>, podAnnotations: Record<string, string> = {}, replicas = 1): V1Deployment {
  return {
    metadata: { name, namespace: NS, labels },
    spec: {
      replicas,
      // Recreate: without a kubelet no pod ever becomes available, so a rolling update would
      // stall with the old pods kept; Recreate deletes them (unscheduled pods go at once) and
      // brings the new ReplicaSet up to full size.
      strategy: { type: 'Recreate' },
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name }, annotations: podAnnotations },
        spec: {
          containers: [
            {
              name: 'app',
              image: 'registry.invalid/shop/web:1',
              command: ['/web'],
              args: ['--port', '8080'],
              env: [{ name: 'LOG_FORMAT', value: 'json' }],
            },
          ],
        },
      },
    },
  };
}

const podsOf = async (app: string): Promise<V1Pod[]> => (await core.listNamespacedPod({ namespace: NS, labelSelector: `app=${app}` })).items.filter((p) => !p.metadata?.deletionTimestamp);
const replicaSetsOf = async (app: string): Promise<V1ReplicaSet[]> => (await apps.listNamespacedReplicaSet({ namespace: NS, labelSelector: `app=${app}` })).items;
const templateAnnotations = async (name: string): Promise<Record<string, string>> => (await apps.readNamespacedDeployment({ name, namespace: NS })).spec?.template?.metadata?.annotations ?? {};
const annotationsOf = (p: V1Pod): Record<string, string> => p.metadata?.annotations ?? {};
const appContainer = (p: V1Pod) => p.spec!.containers.find((c) => c.name === 'app')!;
function envOf(p: V1Pod): Record<string, string> {
  return Object.fromEntries((appContainer(p).env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));
}

/** Carries what the webhook adds (judged by the spec, not by the annotation alone). */
function isMutated(p: V1Pod): boolean {
  return (
    (p.spec?.initContainers ?? []).some((c) => c.name === 'rbinder-install') ||
    (p.spec?.volumes ?? []).some((v) => v.name === 'rbinder-bundle') ||
    appContainer(p).command?.[0] === LAUNCHER
  );
}
function expectUnmutated(p: V1Pod): void {
  const name = p.metadata?.name;
  expect(isMutated(p), `pod ${name} carries the tracer`).toBe(false);
  expect(appContainer(p).command, name).toEqual(['/web']);
  expect(appContainer(p).args, name).toEqual(['--port', '8080']);
  expect(annotationsOf(p)[A.injected], name).toBeUndefined();
  expect(Object.keys(envOf(p)).filter((k) => k.startsWith('OTEL_')), name).toEqual([]);
}

/** The mutated pods of `app` that run the configuration `hash` (its current ReplicaSet's). */
async function mutatedPods(app: string, hash: string, count = 1): Promise<V1Pod[]> {
  return eventually(`${count} mutated pod(s) of ${app} with configuration ${hash}`, async () => {
    const pods = (await podsOf(app)).filter((p) => annotationsOf(p)[A.configHash] === hash && annotationsOf(p)[A.injected] !== undefined);
    return pods.length >= count ? pods : undefined;
  });
}

async function applyRbac(): Promise<void> {
  const rbac = admin.makeApiClient(RbacAuthorizationV1Api);
  for (const file of ['clusterrole.yaml', 'role.yaml']) {
    for (const doc of loadAllYaml(readFileSync(join(repo, 'operator/rbac', file), 'utf8')) as { kind: string }[]) {
      if (doc.kind === 'ClusterRole') await rbac.createClusterRole({ body: doc as V1ClusterRole });
      else if (doc.kind === 'ClusterRoleBinding') await rbac.createClusterRoleBinding({ body: doc as V1ClusterRoleBinding });
      else if (doc.kind === 'Role') await rbac.createNamespacedRole({ namespace: SYSTEM, body: doc as V1Role });
      else if (doc.kind === 'RoleBinding') await rbac.createNamespacedRoleBinding({ namespace: SYSTEM, body: doc as V1RoleBinding });
    }
  }
  // The webhook half of the process reads namespaces (rbinder.io/inject label), ServiceAccounts and
  // Secrets (pull credentials): docs/webhook.md asks for get on these cluster-wide. operator/rbac
  // does not grant it (the process runs as one ServiceAccount), so it is granted here.
  for (const doc of loadAllYaml(readFileSync(join(__dirname, '..', 'webhook', 'rbac', 'clusterrole.yaml'), 'utf8')) as { kind: string }[]) {
    if (doc.kind === 'ClusterRole') await rbac.createClusterRole({ body: doc as V1ClusterRole });
    else if (doc.kind === 'ClusterRoleBinding') await rbac.createClusterRoleBinding({ body: doc as V1ClusterRoleBinding });
  }
  await core.createNamespacedServiceAccount({ namespace: SYSTEM, body: { metadata: { name: 'rbinder-controller' } } });
}

/** A kubeconfig file that authenticates as rbinder-system/rbinder-controller (a TokenRequest token). */
async function writeServiceAccountKubeconfig(path: string): Promise<void> {
  const token = await core.createNamespacedServiceAccountToken({ name: 'rbinder-controller', namespace: SYSTEM, body: { spec: { expirationSeconds: 7200, audiences: [] } } });
  const c = admin.getCurrentCluster()!;
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'e2e', server: c.server, caData: c.caData ?? Buffer.from(cluster.caPem).toString('base64'), skipTLSVerify: false }],
    users: [{ name: 'rbinder-controller', token: token.status!.token }],
    contexts: [{ name: 'e2e', cluster: 'e2e', user: 'rbinder-controller' }],
    currentContext: 'e2e',
  });
  await writeFile(path, kc.exportConfig(), { mode: 0o600 });
}

beforeAll(async () => {
  cluster = await startCluster();
  admin = cluster.kubeConfig;
  core = admin.makeApiClient(CoreV1Api);
  apps = admin.makeApiClient(AppsV1Api);
  custom = admin.makeApiClient(CustomObjectsApi);
  admission = admin.makeApiClient(AdmissionregistrationV1Api);
  workDir = await mkdtemp(join(tmpdir(), 'rbinder-controller-e2e.'));
  certDir = join(workDir, 'certs');
  saKubeconfigPath = join(workDir, 'controller.kubeconfig');

  // loadYaml gives the typed model, which serializes default and x-kubernetes-* under their real
  // names (a plain object would lose them).
  const crd = loadYaml<V1CustomResourceDefinition>(readFileSync(join(repo, 'crds/tracedworkloads.rbinder.io.yaml'), 'utf8'));
  await admin.makeApiClient(ApiextensionsV1Api).createCustomResourceDefinition({ body: crd });
  for (const name of [SYSTEM, NS]) await core.createNamespace({ body: { metadata: { name } } });
  await applyRbac();
  await writeServiceAccountKubeconfig(saKubeconfigPath);

  // The webhook configuration as webhook-configuration.ts builds it, registered by URL (nothing
  // routes a Service here) and without caBundle: the operator fills that in.
  const port = await freePort();
  await admission.createMutatingWebhookConfiguration({
    body: buildMutatingWebhookConfiguration({ name: WEBHOOK_CONFIG, failurePolicy: 'Ignore', controllerNamespace: SYSTEM, url: `https://127.0.0.1:${port}` }),
  });

  // Pods need the namespace's default ServiceAccount, which kube-controller-manager creates.
  await eventually('default ServiceAccount', async () => (await core.readNamespacedServiceAccount({ name: 'default', namespace: NS })).metadata?.name);

  controller = await spawnController({ kubeconfigPath: saKubeconfigPath, namespace: SYSTEM, certDir, tracerImage: TRACER_IMAGE, collectorEndpoint: DEFAULT_ENDPOINT, port });
  await waitControllerReady();
}, 1_800_000);

/** The operator made the certificates, published the caBundle, and the webhook answers /readyz. */
async function waitControllerReady(): Promise<void> {
  const c = controller!;
  await eventually('certificate files in --cert-dir', async () => {
    if (!c.running()) throw new Fatal(`controller exited: ${c.tracked.proc.exitCode}${c.tail()}`);
    return existsSync(join(certDir, 'tls.crt')) && existsSync(join(certDir, 'tls.key')) && existsSync(join(certDir, 'ca.crt'));
  }, 90_000).catch((err: Error) => {
    throw new Error(`${err.message}${c.tail()}`);
  });
  await eventually('caBundle published', async () => {
    const bundle = (await admission.readMutatingWebhookConfiguration({ name: WEBHOOK_CONFIG })).webhooks?.[0]?.clientConfig?.caBundle;
    return bundle && Buffer.from(bundle, 'base64').toString('utf8').includes((await readFile(join(certDir, 'ca.crt'), 'utf8')).trim());
  }, 60_000);
  await eventually('/readyz 200', async () => {
    if (!c.running()) throw new Fatal(`controller exited: ${c.tracked.proc.exitCode}${c.tail()}`);
    return (await c.get('/readyz')).status === 200;
  }, 90_000).catch((err: Error) => {
    throw new Error(`${err.message}${c.tail()}`);
  });
}

afterAll(async () => {
  if (controller?.running()) {
    await controller.stop(10_000).catch(() => undefined);
  }
  controller?.kill(); // the whole process group, whatever is left
  if (controller && workDir) await writeFile(join(workDir, 'controller.log'), controller.log()).catch(() => undefined);
  await cluster?.stop();
  if (process.env.RBINDER_E2E_KEEP !== '1' && workDir) await rm(workDir, { recursive: true, force: true });
}, 180_000);

beforeEach(({ task, onTestFailed }) => {
  if (task.fails) return; // an expected failure (a known bug) is no reason for a dump
  onTestFailed(() => {
    process.stderr.write(`\n[controller.e2e] test failed; controller argv: ${controller?.argv.join(' ')}${context()}\n`);
    if (cluster?.logPath('kube-apiserver')) process.stderr.write(`[controller.e2e] API server log: ${cluster.logPath('kube-apiserver')} (RBINDER_E2E_KEEP=1 keeps it)\n`);
  });
});

describe('rbinder-controller (operator + webhook) out of cluster against a real control plane', () => {
  it('1. the CRD is installed and Established; TracedWorkloads can be created and read back', async () => {
    const ext = admin.makeApiClient(ApiextensionsV1Api);
    const crd = await eventually('CRD Established', async () => {
      const c = await ext.readCustomResourceDefinition({ name: CRD_NAME });
      return c.status?.conditions?.some((x) => x.type === 'Established' && x.status === 'True') ? c : undefined;
    });
    expect(crd.status?.conditions?.find((x) => x.type === 'NamesAccepted')?.status).toBe('True');
    expect(crd.status?.acceptedNames).toMatchObject({ kind: 'TracedWorkload', plural: PLURAL, shortNames: ['tw'] });
    // The CRD's defaults survived installation (a plain object would have lost them).
    const probe = await createTw('probe', { selector: { matchLabels: { tier: 'nothing' } } });
    expect(probe.spec).toMatchObject({ propagators: ['tracecontext', 'baggage'], sampling: { ratio: 1 } });
    // kubectl get tw probe -n shop / kubectl get tw -A
    expect((await getTw('probe')).metadata.uid).toBe(probe.metadata.uid);
    const all = (await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })) as { items: TracedWorkload[] };
    expect(all.items.map((t) => `${t.metadata.namespace}/${t.metadata.name}`)).toContain('shop/probe');
    // The running controller sees it: finalizer added, status written.
    const seen = await eventually('probe status', async () => {
      const t = await getTw('probe');
      return t.status?.observedGeneration === 1 && t.metadata.finalizers?.includes(FINALIZER) ? t : undefined;
    });
    expect(conditionOf(seen, 'RolledOut')).toMatchObject({ status: 'False', reason: 'NoWorkloadsSelected' });
    await custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name: 'probe' });
    await eventually('probe deleted (finalizer released)', async () => !(await twExists('probe')));
    // The serving side: health endpoints over the operator's certificate.
    expect((await controller!.get('/healthz')).status).toBe(200);
    expect((await controller!.get('/metrics')).body).toContain('rbinder_operator_reconcile_passes_total');
  });

  let firstHash = '';
  it('2. a TracedWorkload selects a Deployment; the Pods kube-controller-manager creates are mutated by the real webhook', async () => {
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('web', { tier: 'web' }) });
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('optout', { tier: 'web' }, { [A.inject]: 'false' }) });
    await createTw('shop', {
      selector: { matchLabels: { tier: 'web' } },
      collector: { provision: { exporters: { 'otlp/backend': { endpoint: 'tempo.observability:4317', tls: { insecure: true } } } } },
    });
    const tw = await eventually('shop status with a configuration hash', async () => {
      const t = await getTw('shop');
      return t.status?.observedGeneration === 1 && t.status.configHash ? t : undefined;
    });
    firstHash = tw.status!.configHash!;
    await eventually('web stamped', async () => (await templateAnnotations('web'))[A.configHash] === firstHash);

    const [pod] = await mutatedPods('web', firstHash);
    const p = pod!;
    const ann = annotationsOf(p);
    expect(ann).toMatchObject({ [A.injected]: 'app', [A.tracedWorkload]: 'shop', [A.configHash]: firstHash });
    expect(ann[A.skipped]).toBeUndefined();
    // Made by kube-controller-manager from the stamped ReplicaSet.
    expect(p.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'ReplicaSet', controller: true });
    const rs = (await replicaSetsOf('web')).find((r) => r.metadata?.name === p.metadata!.ownerReferences![0]!.name)!;
    expect(rs.spec?.template?.metadata?.annotations?.[A.configHash]).toBe(firstHash);

    // The command: the tracer launcher, then the original argv; args folded in.
    const app = appContainer(p);
    expect(app.command).toEqual([LAUNCHER, '--', '/web', '--port', '8080']);
    expect(app.args).toBeUndefined();
    expect(app.volumeMounts).toContainEqual(expect.objectContaining({ name: 'rbinder-bundle', mountPath: '/rbinder', readOnly: true }));
    // The install init container, first, and the emptyDir it fills.
    const init = p.spec!.initContainers![0]!;
    expect(init).toMatchObject({ name: 'rbinder-install', image: TRACER_IMAGE, command: ['/rbinder/install', '/rbinder-volume'] });
    expect(init.securityContext).toMatchObject({ runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true });
    expect(p.spec!.volumes).toContainEqual(expect.objectContaining({ name: 'rbinder-bundle', emptyDir: expect.objectContaining({ sizeLimit: '256Mi' }) }));
    // OTEL_* from the TracedWorkload (its provisioned collector), the container's own env kept.
    const env = envOf(p);
    expect(env).toMatchObject({
      LOG_FORMAT: 'json',
      OTEL_SERVICE_NAME: 'web',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://shop-collector.shop.svc:4318',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
      OTEL_PROPAGATORS: 'tracecontext,baggage',
      OTEL_TRACES_SAMPLER: 'parentbased_always_on',
    });
    expect(env.OTEL_TRACES_SAMPLER_ARG).toBeUndefined();
    expect(env.OTEL_RESOURCE_ATTRIBUTES).toContain('k8s.namespace.name=shop');
    expect(env.OTEL_RESOURCE_ATTRIBUTES).toContain('k8s.deployment.name=web');
    expect(env.OTEL_RESOURCE_ATTRIBUTES).toContain('k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME)');
    const downward = (appContainer(p).env ?? []).filter((e) => e.valueFrom?.fieldRef).map((e) => e.name);
    expect(downward).toEqual(['OTEL_RESOURCE_ATTRIBUTES_POD_NAME', 'OTEL_RESOURCE_ATTRIBUTES_POD_UID', 'OTEL_RESOURCE_ATTRIBUTES_NODE_NAME']);

    // Only the stamped ReplicaSet's pods remain (Recreate): none of web's pods is untraced.
    await eventually('no untraced web pods left', async () => (await podsOf('web')).every((x) => isMutated(x)));
    // The webhook logged it, and could read what it needs (namespace labels) as the ServiceAccount.
    expect(controller!.lines().some((l) => l.msg === 'pod injected')).toBe(true);
    expect(controller!.log()).not.toMatch(/cannot read namespace labels|forbidden/i);
  });

  it('3. opt-out: a Deployment whose pod template says rbinder.io/inject: "false" gets untraced Pods', async () => {
    // The same TracedWorkload selects it (the opt-out is on the pod template, not the Deployment),
    // so the operator stamps it like web; the webhook leaves its pods alone.
    await eventually('optout stamped', async () => (await templateAnnotations('optout'))[A.configHash] === firstHash);
    const pods = await eventually('an optout pod of the stamped template', async () => {
      const list = (await podsOf('optout')).filter((p) => annotationsOf(p)[A.configHash] === firstHash);
      return list.length > 0 ? list : undefined;
    });
    for (const p of pods) {
      expect(annotationsOf(p)).toMatchObject({ [A.inject]: 'false', [A.tracedWorkload]: 'shop' });
      expectUnmutated(p);
    }
    // The webhook saw it and said why it left it alone (its debug line).
    const line = controller!.lines().find((l) => typeof l.pod === 'string' && String(l.pod).startsWith('optout-') && l.msg === 'pod admitted unchanged');
    expect(line?.reason ?? line, controller!.tail(3000)).toMatch(/opted out by annotation rbinder.io\/inject=false/);
  });

  // Known bug (see the report): a pod the operator stamped but whose template opts out is left
  // without rbinder.io/skipped, so the operator counts it as "not yet replaced" forever and the
  // TracedWorkload's RolledOut never becomes True. Marked `fails` so the suite stays green while
  // it stands; it turns red (remove `.fails`) once webhook/src/mutate.ts annotates such pods.
  it('3b. opt-out: the pod says why (rbinder.io/skipped) and the TracedWorkload rolls out', async () => {
    const pods = (await podsOf('optout')).filter((p) => annotationsOf(p)[A.configHash] === firstHash);
    expect(pods.length).toBeGreaterThan(0);
    for (const p of pods) expect(annotationsOf(p)[A.skipped]).toMatch(/inject=false|opted out/);
    await eventually('RolledOut True', async () => conditionOf(await getTw('shop'), 'RolledOut')?.status === 'True', 10_000);
  });

  let secondHash = '';
  it('4. a configuration change rolls the ReplicaSet: new pod-template hash, its Pods carry the new config', async () => {
    const webRs = await replicaSetsOf('web');
    const oldHashes = new Set(webRs.map((r) => r.metadata?.labels?.['pod-template-hash']));
    const updated = await patchTwSpec('shop', { sampling: { ratio: 0.25 }, propagators: ['tracecontext', 'b3'] });
    expect(updated.metadata.generation).toBe(2);
    const tw = await eventually('status at generation 2', async () => {
      const t = await getTw('shop');
      return t.status?.observedGeneration === 2 ? t : undefined;
    });
    secondHash = tw.status!.configHash!;
    expect(secondHash).not.toBe(firstHash);
    await eventually('web re-stamped', async () => (await templateAnnotations('web'))[A.configHash] === secondHash);

    const rs = await eventually('a new ReplicaSet with the new configuration', async () =>
      (await replicaSetsOf('web')).find((r) => r.spec?.template?.metadata?.annotations?.[A.configHash] === secondHash && (r.spec?.replicas ?? 0) > 0),
    );
    expect(oldHashes.has(rs.metadata?.labels?.['pod-template-hash'])).toBe(false);
    const [p] = await mutatedPods('web', secondHash);
    expect(p!.metadata?.labels?.['pod-template-hash']).toBe(rs.metadata?.labels?.['pod-template-hash']);
    expect(envOf(p!)).toMatchObject({
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.25',
      OTEL_PROPAGATORS: 'tracecontext,b3',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://shop-collector.shop.svc:4318',
    });
    expect(appContainer(p!).command).toEqual([LAUNCHER, '--', '/web', '--port', '8080']);
    // The old configuration's pods are gone (Recreate), the old ReplicaSets scaled to zero.
    await eventually('old pods replaced', async () => (await podsOf('web')).every((x) => annotationsOf(x)[A.configHash] === secondHash));
    for (const r of await replicaSetsOf('web')) {
      if (r.metadata?.name !== rs.metadata?.name) expect(r.spec?.replicas, r.metadata?.name).toBe(0);
    }
  });

  it('7. the provisioned collector (ConfigMap, Deployment, Service) and the status conditions appear', async () => {
    const tw = await getTw('shop');
    const cm = await core.readNamespacedConfigMap({ name: 'shop-collector', namespace: NS });
    const collectorConfig = parseYaml(cm.data!['collector.yaml']!) as { service: { pipelines: { traces: { exporters: string[] } } } };
    expect(collectorConfig.service.pipelines.traces.exporters).toEqual(['otlp/backend']);
    const dep = await apps.readNamespacedDeployment({ name: 'shop-collector', namespace: NS });
    const svc = await core.readNamespacedService({ name: 'shop-collector', namespace: NS });
    for (const o of [cm, dep, svc]) {
      expect(o.metadata?.ownerReferences?.[0], o.metadata?.name).toMatchObject({ kind: 'TracedWorkload', name: 'shop', uid: tw.metadata.uid, controller: true });
    }
    expect(svc.spec?.ports?.map((x) => x.port)).toEqual([4317, 4318]);
    expect(dep.spec?.template.metadata?.annotations?.[A.inject]).toBe('false');
    // Its pods go through the webhook too and are left alone (traffic to the backend is not traced).
    const collectorPods = await eventually('collector pod', async () => {
      const list = (await core.listNamespacedPod({ namespace: NS })).items.filter((x) => x.metadata?.name?.startsWith('shop-collector-'));
      return list.length > 0 ? list : undefined;
    });
    for (const x of collectorPods) expect((x.spec?.initContainers ?? []).some((c) => c.name === 'rbinder-install')).toBe(false);

    const settled = await eventually('status conditions at the current generation', async () => {
      const t = await getTw('shop');
      const conds = t.status?.conditions ?? [];
      return t.status?.observedGeneration === t.metadata.generation && ['Ready', 'CollectorReady', 'RolledOut'].every((type) => conds.some((c) => c.type === type && c.observedGeneration === t.metadata.generation))
        ? t
        : undefined;
    });
    expect(settled.status?.collector).toBe('http://shop-collector.shop.svc:4318');
    expect(settled.status?.selectedWorkloads).toBe(2);
    // No kubelet: the collector never has an available replica, so it is not Ready.
    expect(conditionOf(settled, 'CollectorReady')).toMatchObject({ status: 'False', reason: 'Progressing' });
    expect(conditionOf(settled, 'Ready')).toMatchObject({ status: 'False' });
    expect(conditionOf(settled, 'Degraded')).toMatchObject({ status: 'False' });
    const rolledOut = conditionOf(settled, 'RolledOut')!;
    process.stderr.write(`[controller.e2e] RolledOut: ${rolledOut.status} ${rolledOut.reason}: ${rolledOut.message}\n`);
    const web = await eventually('web counted as injected', async () => {
      const w = (await getTw('shop')).status?.workloads?.find((x) => x.name === 'web');
      return w?.injectedPods === 1 && w.podsNeedingRestart === 0 ? w : undefined;
    });
    expect(web).toMatchObject({ kind: 'Deployment', state: 'Stamped', configHash: secondHash });
  });

  it('8. survives an API server restart: a new selected Deployment still gets mutated Pods, status still updates', async () => {
    await cluster.restartApiServer();
    expect(controller!.running()).toBe(true);
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('api', { tier: 'web' }) });
    await eventually('api stamped after the restart', async () => (await templateAnnotations('api'))[A.configHash] === secondHash, 90_000);
    const [p] = await mutatedPods('api', secondHash);
    expect(appContainer(p!).command).toEqual([LAUNCHER, '--', '/web', '--port', '8080']);
    expect(envOf(p!)).toMatchObject({ OTEL_SERVICE_NAME: 'api', OTEL_TRACES_SAMPLER_ARG: '0.25' });
    // The status follows: three workloads, api's pod counted.
    await eventually('status lists api', async () => {
      const t = await getTw('shop');
      return t.status?.selectedWorkloads === 3 && t.status.workloads?.find((w) => w.name === 'api')?.injectedPods === 1;
    }, 60_000);
    // A spec change after the restart is observed too.
    await patchTwSpec('shop', { serviceName: 'shop-web' });
    const tw = await eventually('status at generation 3', async () => {
      const t = await getTw('shop');
      return t.status?.observedGeneration === 3 ? t : undefined;
    });
    const [q] = await mutatedPods('api', tw.status!.configHash!);
    expect(envOf(q!).OTEL_SERVICE_NAME).toBe('shop-web');
    expect((await controller!.get('/readyz')).status).toBe(200);
  }, 300_000);

  it('9. automatic rollout off: the template is left alone, yet NEW pods of the selected Deployment are injected and stamped by the webhook', async () => {
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('manual', { tier: 'manual' }) });
    const [old] = await eventually('the first manual pod', async () => {
      const list = await podsOf('manual');
      return list.length > 0 ? list : undefined;
    });
    expectUnmutated(old!);
    await createTw('manual', { selector: { matchLabels: { tier: 'manual' } }, rollout: { automatic: false } });
    const tw = await eventually('manual lists the Deployment as RestartNeeded', async () => {
      const t = await getTw('manual');
      return t.status?.configHash && t.status.workloads?.some((w) => w.kind === 'Deployment' && w.name === 'manual' && w.state === 'RestartNeeded') ? t : undefined;
    });
    const hash = tw.status!.configHash!;
    // Not stamped: a template change would have restarted the existing pod.
    const template = await templateAnnotations('manual');
    expect(template[A.tracedWorkload]).toBeUndefined();
    expect(template[A.configHash]).toBeUndefined();

    await apps.patchNamespacedDeploymentScale({ name: 'manual', namespace: NS, body: { spec: { replicas: 3 } } }, mergePatch);
    const fresh = await mutatedPods('manual', hash, 2);
    expect(fresh.length).toBe(2);
    for (const p of fresh) {
      expect(annotationsOf(p)).toMatchObject({ [A.injected]: 'app', [A.tracedWorkload]: 'manual', [A.configHash]: hash });
      expect(appContainer(p).command).toEqual([LAUNCHER, '--', '/web', '--port', '8080']);
      expect(envOf(p)).toMatchObject({ OTEL_SERVICE_NAME: 'manual', OTEL_EXPORTER_OTLP_ENDPOINT: DEFAULT_ENDPOINT, LOG_FORMAT: 'json' });
    }
    // The existing pod is untouched: same pod, still untraced; the template still unstamped.
    const pods = await podsOf('manual');
    expect(pods.length).toBe(3);
    const still = pods.find((p) => p.metadata?.name === old!.metadata?.name);
    expect(still, 'the pre-existing pod is still there').toBeDefined();
    expectUnmutated(still!);
    expect(annotationsOf(still!)[A.configHash]).toBeUndefined();
    expect((await templateAnnotations('manual'))[A.configHash]).toBeUndefined();
    // The operator counts the webhook-stamped pods as injected.
    await eventually('status counts 2 injected pods of manual', async () => (await getTw('manual')).status?.workloads?.find((w) => w.name === 'manual')?.injectedPods === 2);

    await custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name: 'manual' });
    await eventually('TracedWorkload manual gone', async () => !(await twExists('manual')));
  }, 180_000);

  it('5. deleting the TracedWorkload reverts its Deployments (stamp gone, untraced Pods) and removes the finalizer', async () => {
    const stamped = new Map<string, string | undefined>();
    for (const name of ['web', 'api']) stamped.set(name, (await replicaSetsOf(name)).find((r) => (r.spec?.replicas ?? 0) > 0)?.metadata?.labels?.['pod-template-hash']);
    await custom.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace: NS, name: 'shop' });
    await eventually('TracedWorkload gone (finalizer removed)', async () => !(await twExists('shop')));
    for (const name of ['web', 'api', 'optout']) {
      const annotations = await templateAnnotations(name);
      expect(annotations[A.tracedWorkload], name).toBeUndefined();
      expect(annotations[A.configHash], name).toBeUndefined();
    }
    // The user's own annotation stays.
    expect(await templateAnnotations('optout')).toEqual({ [A.inject]: 'false' });
    for (const name of ['web', 'api']) {
      const pods = await eventually(`${name}: untraced pods of the reverted template`, async () => {
        const list = await podsOf(name);
        return list.length > 0 && list.every((p) => annotationsOf(p)[A.configHash] === undefined) ? list : undefined;
      });
      for (const p of pods) expectUnmutated(p);
      const active = (await replicaSetsOf(name)).filter((r) => (r.spec?.replicas ?? 0) > 0);
      expect(active.length, name).toBe(1);
      expect(active[0]!.metadata?.labels?.['pod-template-hash'], name).not.toBe(stamped.get(name));
      expect(active[0]!.spec?.template?.metadata?.annotations?.[A.configHash], name).toBeUndefined();
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

  it('6. with the controller stopped (SIGTERM, exit 0), Pods are still created promptly and untraced', async () => {
    await apps.createNamespacedDeployment({ namespace: NS, body: deployment('batch', { tier: 'batch' }) });
    await createTw('batch', { selector: { matchLabels: { tier: 'batch' } } });
    const tw = await eventually('batch status', async () => {
      const t = await getTw('batch');
      return t.status?.configHash ? t : undefined;
    });
    const hash = tw.status!.configHash!;
    const [traced] = await mutatedPods('batch', hash);
    expect(envOf(traced!).OTEL_EXPORTER_OTLP_ENDPOINT).toBe(DEFAULT_ENDPOINT); // no collector in the spec: the controller's default

    const c = controller!;
    const stoppedAt = Date.now();
    const exit = await c.stop(20_000);
    expect(exit, c.tail()).toEqual({ code: 0, signal: null });
    expect(Date.now() - stoppedAt).toBeLessThan(15_000);
    expect(await exitedWithin(c, 0)).toBeDefined();
    expect(c.log()).toMatch(/operator stopped/);

    // Nothing listens on the webhook's port now: failurePolicy Ignore admits pods unchanged.
    const scaledAt = Date.now();
    await apps.patchNamespacedDeploymentScale({ name: 'batch', namespace: NS, body: { spec: { replicas: 3 } } }, mergePatch);
    const pods = await eventually('3 batch pods', async () => {
      const list = await podsOf('batch');
      return list.length >= 3 ? list : undefined;
    }, 20_000);
    const took = Date.now() - scaledAt;
    process.stderr.write(`[controller.e2e] 2 pods created with the controller down in ${took} ms\n`);
    expect(took).toBeLessThan(10_000);
    const fresh = pods.filter((p) => p.metadata?.name !== traced!.metadata?.name);
    expect(fresh.length).toBe(2);
    for (const p of fresh) {
      expect(annotationsOf(p)[A.configHash]).toBe(hash); // stamped template...
      expectUnmutated(p); // ...but no webhook to inject it
    }
    // A pod created directly is admitted at once as well.
    const t0 = Date.now();
    const direct = await core.createNamespacedPod({
      namespace: NS,
      body: { metadata: { name: 'direct', annotations: { [A.inject]: 'true' } }, spec: { containers: [{ name: 'app', image: 'registry.invalid/x:1', command: ['/x'] }] } },
    });
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(direct.metadata?.annotations?.[A.injected]).toBeUndefined();
    expect(direct.spec?.initContainers ?? []).toEqual([]);
  });
});
