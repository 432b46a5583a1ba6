// Every API call the operator makes, in one place: the calls themselves (class Kube) and the
// permission each needs (API_CALLS). operator/rbac/*.yaml grants exactly these; kube.test.ts checks
// both directions (every permission granted, every rule used).

import {
  AdmissionregistrationV1Api,
  ApiException,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  EventsV1Api,
  ListWatch,
  PatchStrategy,
  setHeaderOptions,
  V1MicroTime,
  Watch,
  type EventsV1Event,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type V1Lease,
  type V1MutatingWebhookConfiguration,
  type V1Secret,
} from '@kubernetes/client-node';
import { randomBytes } from 'node:crypto';
import type { Counter, Registry } from 'prom-client';
import { counter } from './metrics';
import { CONTROLLER_NAME, FIELD_MANAGER, GROUP, LABEL_MANAGED_BY, MANAGED_BY, PLURAL, STAMP_FIELD_MANAGER, VERSION, type WorkloadKind } from './names';
import type { ObjectRef } from './reconcile';
import type { TracedWorkload, TracedWorkloadStatus } from './types';

export type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch' | 'delete';

/** One permission: `scope: namespace` ones are granted by the Role in the controller's namespace. */
export interface Permission {
  apiGroup: string;
  resource: string;
  verb: Verb;
  scope: 'cluster' | 'namespace';
  /** The object's name when the rule is limited to it (the default names of the RBAC files). */
  resourceName?: string;
}

/** Default object names the RBAC files are written for (flags can change them; then edit the Role). */
export const DEFAULT_NAMES = {
  lease: 'rbinder-controller',
  certSecret: 'rbinder-webhook-tls',
  webhookConfig: 'rbinder-webhook',
} as const;

const p = (apiGroup: string, resource: string, verbs: Verb[], scope: Permission['scope'] = 'cluster', resourceName?: string): Permission[] =>
  verbs.map((verb) => ({ apiGroup, resource, verb, scope, ...(resourceName ? { resourceName } : {}) }));

/** The permissions of each call the operator makes. */
export const API_CALLS = {
  watchTracedWorkloads: p(GROUP, PLURAL, ['list', 'watch']),
  getTracedWorkload: p(GROUP, PLURAL, ['get']),
  patchTracedWorkloadFinalizers: p(GROUP, PLURAL, ['patch']),
  updateTracedWorkloadStatus: p(GROUP, 'tracedworkloads/status', ['update']),
  // ownerReferences with blockOwnerDeletion on the collector objects need it where the
  // OwnerReferencesPermissionEnforcement admission plugin is on.
  ownCollectorObjects: p(GROUP, 'tracedworkloads/finalizers', ['update']),
  watchDeployments: p('apps', 'deployments', ['list', 'watch']),
  watchStatefulSets: p('apps', 'statefulsets', ['list', 'watch']),
  watchDaemonSets: p('apps', 'daemonsets', ['list', 'watch']),
  stampDeployment: p('apps', 'deployments', ['patch']),
  stampStatefulSet: p('apps', 'statefulsets', ['patch']),
  stampDaemonSet: p('apps', 'daemonsets', ['patch']),
  watchPods: p('', 'pods', ['list', 'watch']),
  watchCollectorConfigMaps: p('', 'configmaps', ['list', 'watch']),
  watchCollectorServices: p('', 'services', ['list', 'watch']),
  // Server-side apply creates the object when it does not exist: create and patch.
  applyCollectorConfigMap: p('', 'configmaps', ['create', 'patch']),
  applyCollectorService: p('', 'services', ['create', 'patch']),
  applyCollectorDeployment: p('apps', 'deployments', ['create', 'patch']),
  deleteCollectorConfigMap: p('', 'configmaps', ['delete']),
  deleteCollectorService: p('', 'services', ['delete']),
  deleteCollectorDeployment: p('apps', 'deployments', ['delete']),
  createEvent: p('events.k8s.io', 'events', ['create']),
  getLease: p('coordination.k8s.io', 'leases', ['get'], 'namespace', DEFAULT_NAMES.lease),
  createLease: p('coordination.k8s.io', 'leases', ['create'], 'namespace'),
  updateLease: p('coordination.k8s.io', 'leases', ['update'], 'namespace', DEFAULT_NAMES.lease),
  watchCertSecret: p('', 'secrets', ['list', 'watch'], 'namespace', DEFAULT_NAMES.certSecret),
  getCertSecret: p('', 'secrets', ['get'], 'namespace', DEFAULT_NAMES.certSecret),
  createCertSecret: p('', 'secrets', ['create'], 'namespace'),
  updateCertSecret: p('', 'secrets', ['update'], 'namespace', DEFAULT_NAMES.certSecret),
  watchWebhookConfig: p('admissionregistration.k8s.io', 'mutatingwebhookconfigurations', ['list', 'watch'], 'cluster', DEFAULT_NAMES.webhookConfig),
  patchWebhookConfig: p('admissionregistration.k8s.io', 'mutatingwebhookconfigurations', ['patch'], 'cluster', DEFAULT_NAMES.webhookConfig),
} satisfies Record<string, Permission[]>;

export type ApiCall = keyof typeof API_CALLS;

export function isStatus(err: unknown, code: number): boolean {
  if (err instanceof ApiException) return err.code === code;
  const e = err as { code?: unknown; statusCode?: unknown } | undefined;
  return e?.code === code || e?.statusCode === code;
}

export const isNotFound = (err: unknown): boolean => isStatus(err, 404);
export const isConflict = (err: unknown): boolean => isStatus(err, 409);

/** A short text for logs: the API's message when there is one. */
export function errorText(err: unknown): string {
  if (err instanceof ApiException) {
    const body = err.body as { message?: string } | string | undefined;
    const message = typeof body === 'string' ? (safeJson(body)?.message ?? body) : body?.message;
    return `HTTP ${err.code}: ${message ?? err.message}`;
  }
  return err instanceof Error ? err.message : String(err);
}

function safeJson(text: string): { message?: string } | undefined {
  try {
    return JSON.parse(text) as { message?: string };
  } catch {
    return undefined;
  }
}

const apply = setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply);
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const jsonPatch = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);

export interface KubeOptions {
  /** The controller's namespace (lease, certificate Secret). */
  namespace: string;
  /** Name of this replica, for events (reportingInstance) and the lease. */
  identity: string;
  registry?: Registry;
}

/** The operator's API client: one method per call in API_CALLS. */
export class Kube {
  readonly apps: AppsV1Api;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  readonly coordination: CoordinationV1Api;
  readonly events: EventsV1Api;
  readonly admission: AdmissionregistrationV1Api;
  private readonly requests: Counter<'call' | 'code'>;

  constructor(
    readonly kubeConfig: KubeConfig,
    readonly options: KubeOptions,
  ) {
    this.apps = kubeConfig.makeApiClient(AppsV1Api);
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    this.custom = kubeConfig.makeApiClient(CustomObjectsApi);
    this.coordination = kubeConfig.makeApiClient(CoordinationV1Api);
    this.events = kubeConfig.makeApiClient(EventsV1Api);
    this.admission = kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    this.requests = counter(options.registry, {
      name: 'rbinder_operator_api_requests_total',
      help: 'API requests made by the operator, by call and HTTP status (2xx: success, 0: no answer)',
      labelNames: ['call', 'code'],
    });
  }

  /** Runs one call, counting it by outcome. */
  async call<T>(name: ApiCall, run: () => Promise<T>): Promise<T> {
    try {
      const out = await run();
      this.requests.inc({ call: name, code: '2xx' });
      return out;
    } catch (err) {
      this.requests.inc({ call: name, code: String((err as { code?: number }).code ?? 0) });
      throw err;
    }
  }

  // --- list/watch (informers) ---

  /** A ListWatch (not started) over `path`; `list` is counted as `name`. */
  listWatch<T extends KubernetesObject>(
    name: ApiCall,
    path: string,
    list: () => Promise<KubernetesListObject<T>>,
    selectors: { labelSelector?: string; fieldSelector?: string } = {},
  ): ListWatch<T> {
    return new ListWatch<T>(path, new Watch(this.kubeConfig), () => this.call(name, list), false, selectors.labelSelector, selectors.fieldSelector);
  }

  tracedWorkloads(): ListWatch<TracedWorkload> {
    return this.listWatch('watchTracedWorkloads', `/apis/${GROUP}/${VERSION}/${PLURAL}`, async () =>
      (await this.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })) as KubernetesListObject<TracedWorkload>,
    );
  }

  workloads(kind: WorkloadKind): ListWatch<KubernetesObject> {
    switch (kind) {
      case 'Deployment':
        return this.listWatch('watchDeployments', '/apis/apps/v1/deployments', () => this.apps.listDeploymentForAllNamespaces());
      case 'StatefulSet':
        return this.listWatch('watchStatefulSets', '/apis/apps/v1/statefulsets', () => this.apps.listStatefulSetForAllNamespaces());
      case 'DaemonSet':
        return this.listWatch('watchDaemonSets', '/apis/apps/v1/daemonsets', () => this.apps.listDaemonSetForAllNamespaces());
    }
  }

  pods(): ListWatch<KubernetesObject> {
    return this.listWatch('watchPods', '/api/v1/pods', () => this.core.listPodForAllNamespaces());
  }

  collectorConfigMaps(): ListWatch<KubernetesObject> {
    const labelSelector = `${LABEL_MANAGED_BY}=${MANAGED_BY}`;
    return this.listWatch('watchCollectorConfigMaps', '/api/v1/configmaps', () => this.core.listConfigMapForAllNamespaces({ labelSelector }), { labelSelector });
  }

  collectorServices(): ListWatch<KubernetesObject> {
    const labelSelector = `${LABEL_MANAGED_BY}=${MANAGED_BY}`;
    return this.listWatch('watchCollectorServices', '/api/v1/services', () => this.core.listServiceForAllNamespaces({ labelSelector }), { labelSelector });
  }

  certSecret(name: string): ListWatch<V1Secret> {
    const namespace = this.options.namespace;
    const fieldSelector = `metadata.name=${name}`;
    return this.listWatch('watchCertSecret', `/api/v1/namespaces/${namespace}/secrets`, () => this.core.listNamespacedSecret({ namespace, fieldSelector }), { fieldSelector });
  }

  webhookConfig(name: string): ListWatch<V1MutatingWebhookConfiguration> {
    const fieldSelector = `metadata.name=${name}`;
    return this.listWatch('watchWebhookConfig', '/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations', () => this.admission.listMutatingWebhookConfiguration({ fieldSelector }), {
      fieldSelector,
    });
  }

  // --- TracedWorkloads ---

  getTracedWorkload(namespace: string, name: string): Promise<TracedWorkload> {
    return this.call('getTracedWorkload', () => this.custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, namespace, name }) as Promise<TracedWorkload>);
  }

  /** Sets the finalizers, conditional on resourceVersion (409 when someone wrote in between). */
  patchTracedWorkloadFinalizers(namespace: string, name: string, finalizers: string[], resourceVersion: string): Promise<TracedWorkload> {
    return this.call(
      'patchTracedWorkloadFinalizers',
      () =>
        this.custom.patchNamespacedCustomObject(
          { group: GROUP, version: VERSION, plural: PLURAL, namespace, name, body: { metadata: { finalizers, resourceVersion } }, fieldManager: FIELD_MANAGER },
          mergePatch,
        ) as Promise<TracedWorkload>,
    );
  }

  /** Replaces the status of the object as read (409 when it changed since). */
  updateTracedWorkloadStatus(object: TracedWorkload, status: TracedWorkloadStatus): Promise<TracedWorkload> {
    const { namespace, name } = object.metadata;
    return this.call(
      'updateTracedWorkloadStatus',
      () =>
        this.custom.replaceNamespacedCustomObjectStatus({
          group: GROUP,
          version: VERSION,
          plural: PLURAL,
          namespace,
          name,
          body: { ...object, status },
          fieldManager: FIELD_MANAGER,
        }) as Promise<TracedWorkload>,
    );
  }

  // --- workloads ---

  /**
   * Server-side apply of exactly these pod-template annotations, owned by the operator: the API
   * server removes those it applied before and does not apply now, unless someone else also set them.
   */
  stampWorkload(kind: WorkloadKind, namespace: string, name: string, annotations: Record<string, string>): Promise<unknown> {
    const body = { apiVersion: 'apps/v1', kind, metadata: { name, namespace }, spec: { template: { metadata: { annotations } } } };
    const params = { name, namespace, body, fieldManager: STAMP_FIELD_MANAGER, force: true };
    switch (kind) {
      case 'Deployment':
        return this.call('stampDeployment', () => this.apps.patchNamespacedDeployment(params, apply));
      case 'StatefulSet':
        return this.call('stampStatefulSet', () => this.apps.patchNamespacedStatefulSet(params, apply));
      case 'DaemonSet':
        return this.call('stampDaemonSet', () => this.apps.patchNamespacedDaemonSet(params, apply));
    }
  }

  // --- provisioned objects ---

  applyObject(object: KubernetesObject): Promise<unknown> {
    const name = object.metadata?.name ?? '';
    const namespace = object.metadata?.namespace ?? '';
    const params = { name, namespace, body: object, fieldManager: FIELD_MANAGER, force: true };
    switch (object.kind) {
      case 'ConfigMap':
        return this.call('applyCollectorConfigMap', () => this.core.patchNamespacedConfigMap(params, apply));
      case 'Service':
        return this.call('applyCollectorService', () => this.core.patchNamespacedService(params, apply));
      case 'Deployment':
        return this.call('applyCollectorDeployment', () => this.apps.patchNamespacedDeployment(params, apply));
      default:
        throw new Error(`the operator does not provision ${object.kind}`);
    }
  }

  deleteObject(ref: ObjectRef): Promise<unknown> {
    const { name, namespace } = ref;
    switch (ref.kind) {
      case 'ConfigMap':
        return this.call('deleteCollectorConfigMap', () => this.core.deleteNamespacedConfigMap({ name, namespace }));
      case 'Service':
        return this.call('deleteCollectorService', () => this.core.deleteNamespacedService({ name, namespace }));
      case 'Deployment':
        return this.call('deleteCollectorDeployment', () => this.apps.deleteNamespacedDeployment({ name, namespace }));
      default:
        throw new Error(`the operator does not delete ${ref.kind}`);
    }
  }

  // --- events ---

  createEvent(regarding: ObjectRef, eventType: 'Normal' | 'Warning', reason: string, action: string, note: string): Promise<EventsV1Event> {
    const namespace = regarding.namespace;
    const now = new V1MicroTime();
    // <object>.<unique suffix>, as kubectl and client-go name events.
    const suffix = `${now.getTime().toString(16)}${randomBytes(4).toString('hex')}`;
    const body: EventsV1Event = {
      metadata: { name: `${regarding.name.slice(0, 253 - suffix.length - 1)}.${suffix}`, namespace },
      eventTime: now,
      reportingController: CONTROLLER_NAME,
      reportingInstance: this.options.identity.slice(0, 128),
      action,
      reason,
      type: eventType,
      note: note.slice(0, 1024),
      regarding: { apiVersion: regarding.apiVersion, kind: regarding.kind, namespace, name: regarding.name, uid: regarding.uid },
    };
    return this.call('createEvent', () => this.events.createNamespacedEvent({ namespace, body }));
  }

  // --- leader election ---

  getLease(name: string): Promise<V1Lease> {
    return this.call('getLease', () => this.coordination.readNamespacedLease({ name, namespace: this.options.namespace }));
  }

  createLease(lease: V1Lease): Promise<V1Lease> {
    return this.call('createLease', () => this.coordination.createNamespacedLease({ namespace: this.options.namespace, body: lease }));
  }

  /** Conditional on lease.metadata.resourceVersion. */
  updateLease(lease: V1Lease): Promise<V1Lease> {
    return this.call('updateLease', () => this.coordination.replaceNamespacedLease({ name: lease.metadata!.name!, namespace: this.options.namespace, body: lease }));
  }

  // --- certificates ---

  getSecret(name: string): Promise<V1Secret> {
    return this.call('getCertSecret', () => this.core.readNamespacedSecret({ name, namespace: this.options.namespace }));
  }

  createSecret(secret: V1Secret): Promise<V1Secret> {
    return this.call('createCertSecret', () => this.core.createNamespacedSecret({ namespace: this.options.namespace, body: secret, fieldManager: FIELD_MANAGER }));
  }

  /** Conditional on secret.metadata.resourceVersion. */
  updateSecret(secret: V1Secret): Promise<V1Secret> {
    return this.call('updateCertSecret', () =>
      this.core.replaceNamespacedSecret({ name: secret.metadata!.name!, namespace: this.options.namespace, body: secret, fieldManager: FIELD_MANAGER }),
    );
  }

  /** RFC 6902 patch of the webhook configuration (the caller puts a `test` first). */
  patchWebhookConfig(name: string, operations: object[]): Promise<V1MutatingWebhookConfiguration> {
    return this.call('patchWebhookConfig', () => this.admission.patchMutatingWebhookConfiguration({ name, body: operations, fieldManager: FIELD_MANAGER }, jsonPatch));
  }
}

/** Runs `attempt` until it does not fail with 409 Conflict (at most `tries` times). */
export async function retryOnConflict<T>(attempt: () => Promise<T>, tries = 5, onConflict?: (n: number) => void): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      if (!isConflict(err) || n >= tries) throw err;
      onConflict?.(n);
    }
  }
}
