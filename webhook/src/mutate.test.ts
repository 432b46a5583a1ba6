import type { V1Container, V1EnvVar, V1Pod } from '@kubernetes/client-node';
import { applyPatch, deepClone } from 'fast-json-patch';
import { describe, expect, it } from 'vitest';
import { defaultInjectionConfig, type InjectionConfig, type TracedWorkloadConfig } from './config';
import type { ImageLookup } from './entrypoint';
import { imagesToResolve, mutatePod, pinnedPlatform, type MutationInput, type PodMutation } from './mutate';

const TRACER_IMAGE = 'registry.example.com/rbinder/tracer:0.1.0';
const LAUNCHER = '/rbinder/bin/rbinder';

function config(overrides: Partial<InjectionConfig> = {}): InjectionConfig {
  return defaultInjectionConfig(TRACER_IMAGE, {
    collectorEndpoint: 'http://rbinder-collector.rbinder-system:4318',
    propagators: ['tracecontext', 'baggage'],
    ...overrides,
  });
}

/** A Deployment's pod ("web", ReplicaSet web-7d4b9c) as the API server sends it at CREATE. */
function pod(overrides: { annotations?: Record<string, string>; labels?: Record<string, string>; containers?: V1Container[]; spec?: Partial<V1Pod['spec']> } = {}): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      generateName: 'web-7d4b9c-',
      namespace: 'shop',
      labels: { app: 'web', 'pod-template-hash': '7d4b9c', ...overrides.labels },
      ...(overrides.annotations ? { annotations: overrides.annotations } : {}),
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-7d4b9c', uid: 'rs-uid', controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      serviceAccountName: 'default',
      containers: overrides.containers ?? [{ name: 'app', image: 'shop/web:1.0', command: ['/web'], args: ['--port', '8080'] }],
      ...overrides.spec,
    },
  };
}

const ENABLED = { 'rbinder.io/inject': 'enabled', 'kubernetes.io/metadata.name': 'shop' };

function input(overrides: Partial<MutationInput> = {}): MutationInput {
  return { namespace: 'shop', namespaceLabels: ENABLED, config: config(), ...overrides };
}

/** Applies the patch to a copy of the pod, as the API server does, and returns the result. */
function patched(p: V1Pod, m: PodMutation): V1Pod {
  return applyPatch(deepClone(p) as V1Pod, deepClone(m.patch), true, false).newDocument;
}

function env(c: V1Container): Record<string, V1EnvVar> {
  return Object.fromEntries((c.env ?? []).map((e) => [e.name, e]));
}

const value = (c: V1Container, name: string): string | undefined => env(c)[name]?.value;

describe('mutatePod: selection', () => {
  const tw: TracedWorkloadConfig = { serviceName: 'storefront', configHash: 'abc' };
  const lookup = (ns: string, name: string): TracedWorkloadConfig | undefined => (ns === 'shop' && name === 'web' ? tw : undefined);

  it.each<[string, V1Pod, Partial<MutationInput>, PodMutation['result'], string]>([
    ['namespace label rbinder.io/inject=enabled', pod(), {}, 'injected', ''],
    ['pod annotation rbinder.io/inject=true', pod({ annotations: { 'rbinder.io/inject': 'true' } }), { namespaceLabels: {} }, 'injected', ''],
    ['annotation "True " is true', pod({ annotations: { 'rbinder.io/inject': 'True ' } }), { namespaceLabels: {} }, 'injected', ''],
    ['TracedWorkload annotation', pod({ annotations: { 'rbinder.io/traced-workload': 'web', 'rbinder.io/config-hash': 'abc' } }), { namespaceLabels: {}, tracedWorkload: lookup }, 'injected', ''],
    ['not selected', pod(), { namespaceLabels: {} }, 'ignored', 'not selected'],
    ['namespace labels unknown', pod(), { namespaceLabels: undefined }, 'ignored', 'not selected'],
    ['namespace label with another value', pod(), { namespaceLabels: { 'rbinder.io/inject': 'disabled' } }, 'ignored', 'not selected'],
    ['opted out in an enabled namespace', pod({ annotations: { 'rbinder.io/inject': 'false' } }), {}, 'ignored', 'opted out by annotation rbinder.io/inject=false'],
    // Stamped by the operator, so the pod says why it is not traced (the rollout counts it).
    ['opt-out beats a TracedWorkload', pod({ annotations: { 'rbinder.io/inject': 'false', 'rbinder.io/traced-workload': 'web' } }), { tracedWorkload: lookup }, 'skipped', 'opted out by annotation rbinder.io/inject=false'],
    ['opt-out of an unselected pod', pod({ annotations: { 'rbinder.io/inject': 'false' } }), { namespaceLabels: { 'rbinder.io/inject': 'enabled' } }, 'ignored', 'opted out by annotation rbinder.io/inject=false'],
    ['kube-system, even when asked', pod({ annotations: { 'rbinder.io/inject': 'true' } }), { namespace: 'kube-system' }, 'ignored', 'namespace kube-system is excluded'],
    ["the controller's namespace", pod({ annotations: { 'rbinder.io/inject': 'true' } }), { namespace: 'rbinder-system' }, 'ignored', 'namespace rbinder-system is excluded'],
    ['a configured excluded namespace', pod(), { namespace: 'infra', config: config({ excludedNamespaces: ['infra'] }) }, 'ignored', 'namespace infra is excluded'],
    ['unknown TracedWorkload', pod({ annotations: { 'rbinder.io/traced-workload': 'gone' } }), { namespaceLabels: {}, tracedWorkload: lookup }, 'skipped', 'TracedWorkload shop/gone not found'],
    ['windows pod', pod({ spec: { os: { name: 'windows' } } }), {}, 'skipped', 'pods for windows nodes cannot be traced'],
  ])('%s → %s', (_name, p, overrides, result, reason) => {
    const m = mutatePod(p, input(overrides));
    expect({ result: m.result, reason: m.reason }).toEqual({ result, reason });
    if (result === 'ignored') expect(m.patch).toEqual([]);
    if (result === 'skipped') expect(patched(p, m).metadata?.annotations?.['rbinder.io/skipped']).toBe(reason);
  });

  it('says which rule selected the pod', () => {
    const tracedWorkload = (): TracedWorkloadConfig => ({});
    const by = (p: V1Pod, o: Partial<MutationInput> = {}): string | undefined => mutatePod(p, input(o)).selectedBy;
    expect(by(pod({ annotations: { 'rbinder.io/traced-workload': 'web', 'rbinder.io/inject': 'true' } }), { tracedWorkload })).toBe('TracedWorkload web');
    expect(by(pod({ annotations: { 'rbinder.io/inject': 'true' } }))).toBe('annotation rbinder.io/inject=true');
    expect(by(pod(), { namespaceLabels: {} })).toBeUndefined();
  });

  it('does not warn about an unknown TracedWorkload on a pod it skips for that reason', () => {
    const m = mutatePod(pod({ annotations: { 'rbinder.io/traced-workload': 'gone' } }), input({ namespaceLabels: {}, tracedWorkload: () => undefined }));
    expect(m.warnings).toEqual(['rbinder: pod not traced: TracedWorkload shop/gone not found']);
  });

  it('warns about a bad rbinder.io/inject value and treats it as absent', () => {
    const m = mutatePod(pod({ annotations: { 'rbinder.io/inject': 'yes' } }), input({ namespaceLabels: {} }));
    expect(m.result).toBe('ignored');
    expect(m.warnings).toEqual(['annotation rbinder.io/inject="yes" is neither "true" nor "false"; ignored']);
  });

  it("applies the TracedWorkload's configuration over the cluster's", () => {
    const workload: TracedWorkloadConfig = {
      serviceName: 'storefront',
      collectorEndpoint: 'http://tw-collector:4318',
      sampler: { type: 'parentbased_traceidratio', argument: '0.25' },
      injectTo: ['*.shop.svc'],
      extraEnv: { RBINDER_MODE: 'fast' },
    };
    const p = pod({ annotations: { 'rbinder.io/traced-workload': 'web' } });
    const m = mutatePod(p, input({ namespaceLabels: {}, tracedWorkload: () => workload }));
    const c = patched(p, m).spec!.containers[0]!;
    expect(value(c, 'OTEL_SERVICE_NAME')).toBe('storefront');
    expect(value(c, 'OTEL_EXPORTER_OTLP_ENDPOINT')).toBe('http://tw-collector:4318');
    expect(value(c, 'OTEL_PROPAGATORS')).toBe('tracecontext,baggage');
    expect(value(c, 'OTEL_TRACES_SAMPLER')).toBe('parentbased_traceidratio');
    expect(value(c, 'OTEL_TRACES_SAMPLER_ARG')).toBe('0.25');
    expect(value(c, 'RBINDER_INJECT_TO')).toBe('*.shop.svc');
    expect(value(c, 'RBINDER_MODE')).toBe('fast');
  });

  it('falls back to the cluster defaults, with a warning, when a selected pod names an unknown TracedWorkload', () => {
    const m = mutatePod(pod({ annotations: { 'rbinder.io/traced-workload': 'gone' } }), input({ tracedWorkload: () => undefined }));
    expect(m.result).toBe('injected');
    expect(m.warnings).toEqual(['TracedWorkload shop/gone is not known to the webhook; using the cluster defaults']);
  });
});

describe('mutatePod: unstamped pods of a workload a TracedWorkload selects (automatic rollout off)', () => {
  const tw: TracedWorkloadConfig = { serviceName: 'storefront', collectorEndpoint: 'http://tw-collector:4318', configHash: 'h4sh' };
  const other: TracedWorkloadConfig = { serviceName: 'other', configHash: 'other-hash' };
  const calls: string[] = [];
  /** TracedWorkload "web-tracing" selects Deployment web, StatefulSet db and DaemonSet agent of namespace shop. */
  const workloadSelection: NonNullable<MutationInput['workloadSelection']> = (ns, kind, name) => {
    calls.push(`${ns}/${kind}/${name}`);
    if (ns !== 'shop') return undefined;
    if ((kind === 'Deployment' && name === 'web') || (kind === 'StatefulSet' && name === 'db') || (kind === 'DaemonSet' && name === 'agent')) {
      return { name: 'web-tracing', config: tw };
    }
    return undefined;
  };
  const lookup = (ns: string, name: string): TracedWorkloadConfig | undefined => (ns === 'shop' && name === 'other-tw' ? other : undefined);
  const owned = (kind: string, name: string, annotations?: Record<string, string>): V1Pod => {
    const p = pod(annotations ? { annotations } : {});
    p.metadata!.ownerReferences = [{ apiVersion: 'apps/v1', kind, name, uid: 'uid', controller: true }];
    return p;
  };
  const stampOps = (m: PodMutation) => m.patch.filter((op) => /rbinder\.io~1(traced-workload|config-hash)$|\/annotations$/.test(op.path));

  it.each<[string, V1Pod, Partial<MutationInput>, PodMutation['result'], string, string | undefined]>([
    ['pod of the selected Deployment', pod(), {}, 'injected', '', 'TracedWorkload web-tracing (selects Deployment web)'],
    ['pod of the selected StatefulSet', owned('StatefulSet', 'db'), {}, 'injected', '', 'TracedWorkload web-tracing (selects StatefulSet db)'],
    ['pod of the selected DaemonSet', owned('DaemonSet', 'agent'), {}, 'injected', '', 'TracedWorkload web-tracing (selects DaemonSet agent)'],
    ['pod of an unselected Deployment', owned('ReplicaSet', 'api-7d4b9c'), {}, 'ignored', 'not selected', undefined],
    ['pod of an unselected StatefulSet', owned('StatefulSet', 'cache'), {}, 'ignored', 'not selected', undefined],
    ['pod of a Job (never looked up)', owned('Job', 'web'), {}, 'ignored', 'not selected', undefined],
    ['bare pod', (() => { const p = pod(); delete p.metadata!.ownerReferences; return p; })(), {}, 'ignored', 'not selected', undefined],
    ['opt-out wins', pod({ annotations: { 'rbinder.io/inject': 'false' } }), {}, 'ignored', 'opted out by annotation rbinder.io/inject=false', undefined],
    ['opt-out wins in an enabled namespace', pod({ annotations: { 'rbinder.io/inject': 'false' } }), { namespaceLabels: ENABLED }, 'ignored', 'opted out by annotation rbinder.io/inject=false', undefined],
    ['excluded namespace wins', pod(), { config: config({ excludedNamespaces: ['shop'] }) }, 'ignored', 'namespace shop is excluded', undefined],
    ['an explicit stamp wins', pod({ annotations: { 'rbinder.io/traced-workload': 'other-tw', 'rbinder.io/config-hash': 'other-hash' } }), {}, 'injected', '', 'TracedWorkload other-tw'],
    ['an explicit stamp of an unknown TracedWorkload wins', pod({ annotations: { 'rbinder.io/traced-workload': 'gone' } }), {}, 'skipped', 'TracedWorkload shop/gone not found', undefined],
    ['selected over the namespace label', pod(), { namespaceLabels: ENABLED }, 'injected', '', 'TracedWorkload web-tracing (selects Deployment web)'],
    ['selected over rbinder.io/inject=true', pod({ annotations: { 'rbinder.io/inject': 'true' } }), {}, 'injected', '', 'TracedWorkload web-tracing (selects Deployment web)'],
  ])('%s → %s', (_name, p, overrides, result, reason, selectedBy) => {
    const m = mutatePod(p, input({ namespaceLabels: {}, tracedWorkload: lookup, workloadSelection, ...overrides }));
    expect({ result: m.result, reason: m.reason, selectedBy: m.selectedBy }).toEqual({ result, reason, selectedBy });
    if (result === 'ignored') expect(m.patch).toEqual([]);
  });

  it("injects with the TracedWorkload's configuration and stamps the pod with its name and hash", () => {
    const p = pod();
    const m = mutatePod(p, input({ namespaceLabels: {}, workloadSelection }));
    expect(m).toMatchObject({ result: 'injected', injected: ['app'], warnings: [] });
    expect(stampOps(m)).toEqual([
      {
        op: 'add',
        path: '/metadata/annotations',
        value: { 'rbinder.io/traced-workload': 'web-tracing', 'rbinder.io/config-hash': 'h4sh', 'rbinder.io/injected': 'app' },
      },
    ]);
    const out = patched(p, m);
    expect(out.metadata?.annotations).toEqual({ 'rbinder.io/traced-workload': 'web-tracing', 'rbinder.io/config-hash': 'h4sh', 'rbinder.io/injected': 'app' });
    const c = out.spec!.containers[0]!;
    expect(c.command).toEqual([LAUNCHER, '--', '/web', '--port', '8080']);
    expect(value(c, 'OTEL_SERVICE_NAME')).toBe('storefront');
    expect(value(c, 'OTEL_EXPORTER_OTLP_ENDPOINT')).toBe('http://tw-collector:4318');
  });

  it('adds the stamp to annotations the pod already has, as separate operations', () => {
    const p = pod({ annotations: { team: 'shop' } });
    const m = mutatePod(p, input({ namespaceLabels: {}, workloadSelection }));
    expect(m.patch).toEqual(
      expect.arrayContaining([
        { op: 'add', path: '/metadata/annotations/rbinder.io~1traced-workload', value: 'web-tracing' },
        { op: 'add', path: '/metadata/annotations/rbinder.io~1config-hash', value: 'h4sh' },
      ]),
    );
    expect(patched(p, m).metadata?.annotations).toMatchObject({ team: 'shop', 'rbinder.io/traced-workload': 'web-tracing', 'rbinder.io/config-hash': 'h4sh' });
  });

  it('stamps a selected pod it cannot trace too, so the operator counts it as current', () => {
    const p = pod({ spec: { os: { name: 'windows' } } });
    const m = mutatePod(p, input({ namespaceLabels: {}, workloadSelection }));
    expect(m.result).toBe('skipped');
    expect(patched(p, m).metadata?.annotations).toEqual({
      'rbinder.io/traced-workload': 'web-tracing',
      'rbinder.io/config-hash': 'h4sh',
      'rbinder.io/skipped': 'pods for windows nodes cannot be traced',
    });
  });

  it('asks about the Deployment (the ReplicaSet name less its pod-template-hash), and not at all for opted-out or stamped pods', () => {
    calls.length = 0;
    mutatePod(pod(), input({ workloadSelection }));
    expect(calls).toEqual(['shop/Deployment/web']);
    calls.length = 0;
    mutatePod(pod({ annotations: { 'rbinder.io/inject': 'false' } }), input({ workloadSelection }));
    mutatePod(pod({ annotations: { 'rbinder.io/traced-workload': 'other-tw' } }), input({ tracedWorkload: lookup, workloadSelection }));
    mutatePod(pod(), input({ namespace: 'kube-system', workloadSelection }));
    expect(calls).toEqual([]);
  });

  it('lists the images of a pod selected through its owner', () => {
    const p = pod({ containers: [{ name: 'app', image: 'shop/web:1.0' }] });
    expect(imagesToResolve(p, input({ namespaceLabels: {}, workloadSelection }))).toEqual([{ container: 'app', image: 'shop/web:1.0' }]);
    expect(imagesToResolve(p, input({ namespaceLabels: {} }))).toEqual([]);
  });
});

describe('mutatePod: the mutation', () => {
  it('adds the volume, the install container, and runs the app under the launcher', () => {
    const p = pod();
    const m = mutatePod(p, input());
    expect(m).toMatchObject({ result: 'injected', reason: '', injected: ['app'], warnings: [], selectedBy: 'namespace label rbinder.io/inject=enabled' });
    const out = patched(p, m);
    expect(out.spec!.volumes).toEqual([{ name: 'rbinder-bundle', emptyDir: { sizeLimit: '256Mi' } }]);
    expect(out.spec!.initContainers).toEqual([
      {
        name: 'rbinder-install',
        image: TRACER_IMAGE,
        imagePullPolicy: 'IfNotPresent',
        command: ['/rbinder/install', '/rbinder-volume'],
        volumeMounts: [{ name: 'rbinder-bundle', mountPath: '/rbinder-volume' }],
        resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { cpu: '500m', memory: '128Mi' } },
        securityContext: {
          runAsNonRoot: true,
          runAsUser: 65532,
          runAsGroup: 65532,
          allowPrivilegeEscalation: false,
          privileged: false,
          readOnlyRootFilesystem: true,
          capabilities: { drop: ['ALL'] },
          seccompProfile: { type: 'RuntimeDefault' },
        },
        terminationMessagePolicy: 'FallbackToLogsOnError',
      },
    ]);
    const c = out.spec!.containers[0]!;
    expect(c.command).toEqual([LAUNCHER, '--', '/web', '--port', '8080']);
    expect(c.args).toBeUndefined();
    expect(c.volumeMounts).toEqual([{ name: 'rbinder-bundle', mountPath: '/rbinder', readOnly: true }]);
    expect(out.metadata!.annotations).toEqual({ 'rbinder.io/injected': 'app' });
  });

  it('puts the install container before the pod\'s own init containers, which are not traced', () => {
    const p = pod({ spec: { initContainers: [{ name: 'migrate', image: 'shop/migrate:1', command: ['/migrate'] }] } });
    const out = patched(p, mutatePod(p, input()));
    expect(out.spec!.initContainers!.map((c) => [c.name, c.command?.[0]])).toEqual([
      ['rbinder-install', '/rbinder/install'],
      ['migrate', '/migrate'],
    ]);
  });

  it('gives the traced container the OpenTelemetry environment', () => {
    const p = pod();
    const c = patched(p, mutatePod(p, input())).spec!.containers[0]!;
    expect(c.env).toEqual([
      { name: 'OTEL_RESOURCE_ATTRIBUTES_POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } },
      { name: 'OTEL_RESOURCE_ATTRIBUTES_POD_UID', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.uid' } } },
      { name: 'OTEL_RESOURCE_ATTRIBUTES_NODE_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'spec.nodeName' } } },
      { name: 'OTEL_SERVICE_NAME', value: 'web' },
      { name: 'OTEL_EXPORTER_OTLP_ENDPOINT', value: 'http://rbinder-collector.rbinder-system:4318' },
      { name: 'OTEL_PROPAGATORS', value: 'tracecontext,baggage' },
      {
        name: 'OTEL_RESOURCE_ATTRIBUTES',
        value:
          'k8s.namespace.name=shop,k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME),k8s.pod.uid=$(OTEL_RESOURCE_ATTRIBUTES_POD_UID),' +
          'k8s.node.name=$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME),k8s.container.name=app,k8s.replicaset.name=web-7d4b9c,k8s.deployment.name=web',
      },
    ]);
  });

  it('passes sampling and the injection allow-list from the configuration', () => {
    const p = pod();
    const cfg = config({ sampler: { type: 'traceidratio', argument: '0.1' }, injectTo: ['*.svc.cluster.local', '10.0.0.0/8'], otlpProtocol: 'grpc' });
    const c = patched(p, mutatePod(p, input({ config: cfg }))).spec!.containers[0]!;
    expect([value(c, 'OTEL_TRACES_SAMPLER'), value(c, 'OTEL_TRACES_SAMPLER_ARG'), value(c, 'RBINDER_INJECT_TO'), value(c, 'OTEL_EXPORTER_OTLP_PROTOCOL')]).toEqual([
      'traceidratio',
      '0.1',
      '*.svc.cluster.local,10.0.0.0/8',
      'grpc',
    ]);
  });

  it('computes the patch from the difference, escaping annotation keys', () => {
    const p = pod({ annotations: { team: 'a' } });
    const m = mutatePod(p, input());
    expect(m.patch).toContainEqual({ op: 'add', path: '/metadata/annotations/rbinder.io~1injected', value: 'app' });
    expect(m.patch).toContainEqual({ op: 'remove', path: '/spec/containers/0/args' });
    expect(m.patch.every((op) => JSON.stringify(op) !== undefined && !('value' in op && op.value === undefined))).toBe(true);
  });

  it('is idempotent: the injected pod is left alone', () => {
    const p = pod();
    const once = patched(p, mutatePod(p, input()));
    expect(mutatePod(once, input())).toMatchObject({ result: 'ignored', reason: 'already injected', patch: [] });
  });

  it('does not trust a copied rbinder.io/injected annotation without the tracer', () => {
    const p = pod({ annotations: { 'rbinder.io/injected': 'app' } });
    const m = mutatePod(p, input());
    expect(m.result).toBe('injected');
    expect(patched(p, m).spec!.initContainers![0]!.name).toBe('rbinder-install');
  });

  it('uses the configured image, install command, paths, resources and uid', () => {
    const cfg = config({
      tracerImage: 'mirror.local/tracer@sha256:' + 'b'.repeat(64),
      tracerImagePullPolicy: 'Always',
      installCommand: ['/opt/install', '--quiet'],
      installMountPath: '/target',
      mountPath: '/opt/rbinder',
      launcherPath: 'rbinder',
      installResources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '64Mi' } },
      installUser: 10001,
      volumeSizeLimit: undefined,
    });
    const p = pod();
    const out = patched(p, mutatePod(p, input({ config: cfg })));
    const init = out.spec!.initContainers![0]!;
    expect(init).toMatchObject({ image: cfg.tracerImage, imagePullPolicy: 'Always', command: ['/opt/install', '--quiet', '/target'], resources: cfg.installResources });
    expect(init.securityContext).toMatchObject({ runAsUser: 10001, runAsGroup: 10001 });
    expect(out.spec!.volumes).toEqual([{ name: 'rbinder-bundle', emptyDir: {} }]);
    expect(out.spec!.containers[0]!.command!.slice(0, 2)).toEqual(['/opt/rbinder/rbinder', '--']);
    expect(out.spec!.containers[0]!.volumeMounts).toEqual([{ name: 'rbinder-bundle', mountPath: '/opt/rbinder', readOnly: true }]);
  });
});

describe('mutatePod: environment precedence', () => {
  const withEnv = (e: V1EnvVar[]): V1Pod => pod({ containers: [{ name: 'app', image: 'shop/web:1.0', command: ['/web'], env: e }] });

  it("never overrides the container's own variables", () => {
    const own: V1EnvVar[] = [
      { name: 'OTEL_SERVICE_NAME', value: 'mine' },
      { name: 'OTEL_EXPORTER_OTLP_ENDPOINT', valueFrom: { configMapKeyRef: { name: 'otel', key: 'endpoint' } } },
      { name: 'OTEL_RESOURCE_ATTRIBUTES_POD_NAME', value: 'fixed' },
    ];
    const p = withEnv(own);
    const c = patched(p, mutatePod(p, input())).spec!.containers[0]!;
    expect(env(c).OTEL_SERVICE_NAME).toEqual({ name: 'OTEL_SERVICE_NAME', value: 'mine' });
    expect(env(c).OTEL_EXPORTER_OTLP_ENDPOINT).toEqual(own[1]);
    expect(env(c).OTEL_RESOURCE_ATTRIBUTES_POD_NAME).toEqual(own[2]);
    expect(c.env!.filter((e) => e.name === 'OTEL_SERVICE_NAME')).toHaveLength(1);
    // The container's own entries keep their order; the downward-API ones the user lacks come first.
    expect(c.env!.map((e) => e.name).slice(0, 5)).toEqual([
      'OTEL_RESOURCE_ATTRIBUTES_POD_UID',
      'OTEL_RESOURCE_ATTRIBUTES_NODE_NAME',
      'OTEL_SERVICE_NAME',
      'OTEL_EXPORTER_OTLP_ENDPOINT',
      'OTEL_RESOURCE_ATTRIBUTES_POD_NAME',
    ]);
  });

  it('extends a plain OTEL_RESOURCE_ATTRIBUTES with the keys it lacks, where it stands', () => {
    const p = withEnv([
      { name: 'A', value: '1' },
      { name: 'OTEL_RESOURCE_ATTRIBUTES', value: 'deployment.environment=prod,k8s.container.name=custom' },
    ]);
    const c = patched(p, mutatePod(p, input())).spec!.containers[0]!;
    const names = c.env!.map((e) => e.name);
    expect(names.indexOf('OTEL_RESOURCE_ATTRIBUTES')).toBeGreaterThan(names.indexOf('OTEL_RESOURCE_ATTRIBUTES_NODE_NAME'));
    expect(value(c, 'OTEL_RESOURCE_ATTRIBUTES')).toBe(
      'deployment.environment=prod,k8s.container.name=custom,k8s.namespace.name=shop,k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME),' +
        'k8s.pod.uid=$(OTEL_RESOURCE_ATTRIBUTES_POD_UID),k8s.node.name=$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME),k8s.replicaset.name=web-7d4b9c,k8s.deployment.name=web',
    );
  });

  it('leaves an OTEL_RESOURCE_ATTRIBUTES from a ConfigMap or Secret alone', () => {
    const ref: V1EnvVar = { name: 'OTEL_RESOURCE_ATTRIBUTES', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } };
    const p = withEnv([ref]);
    const c = patched(p, mutatePod(p, input())).spec!.containers[0]!;
    expect(c.env!.filter((e) => e.name === 'OTEL_RESOURCE_ATTRIBUTES')).toEqual([ref]);
  });

  it.each<[string, V1Pod, Partial<MutationInput>, string]>([
    ['the rbinder.io/service-name annotation', pod({ annotations: { 'rbinder.io/service-name': 'checkout' }, labels: { 'app.kubernetes.io/name': 'label' } }), {}, 'checkout'],
    ['the app.kubernetes.io/name label', pod({ labels: { 'app.kubernetes.io/name': 'web-frontend' } }), {}, 'web-frontend'],
    ['the Deployment name', pod(), {}, 'web'],
  ])('service name from %s', (_name, p, overrides, expected) => {
    expect(value(patched(p, mutatePod(p, input(overrides))).spec!.containers[0]!, 'OTEL_SERVICE_NAME')).toBe(expected);
  });

  it.each<[string, string, string, string]>([
    ['StatefulSet', 'db', 'db', 'k8s.statefulset.name=db'],
    ['DaemonSet', 'agent', 'agent', 'k8s.daemonset.name=agent'],
    ['Job', 'backup-28731', 'backup-28731', 'k8s.job.name=backup-28731'],
  ])('workload name of a %s pod', (kind, name, service, attribute) => {
    const p = pod();
    p.metadata!.ownerReferences = [{ apiVersion: 'apps/v1', kind, name, uid: 'u', controller: true }];
    const c = patched(p, mutatePod(p, input())).spec!.containers[0]!;
    expect(value(c, 'OTEL_SERVICE_NAME')).toBe(service);
    expect(value(c, 'OTEL_RESOURCE_ATTRIBUTES')).toContain(`k8s.container.name=app,${attribute}`);
  });

  it('a bare pod is named after itself, or its generateName', () => {
    const named = pod();
    named.metadata = { name: 'debug', namespace: 'shop' };
    expect(value(patched(named, mutatePod(named, input())).spec!.containers[0]!, 'OTEL_SERVICE_NAME')).toBe('debug');
    const generated = pod();
    generated.metadata = { generateName: 'runner-', namespace: 'shop' };
    expect(value(patched(generated, mutatePod(generated, input())).spec!.containers[0]!, 'OTEL_SERVICE_NAME')).toBe('runner');
  });

  it('a ReplicaSet without a Deployment keeps its own name', () => {
    const p = pod({ labels: { 'pod-template-hash': '' } });
    p.metadata!.ownerReferences![0]!.name = 'standalone';
    expect(value(patched(p, mutatePod(p, input())).spec!.containers[0]!, 'OTEL_SERVICE_NAME')).toBe('standalone');
  });
});

describe('mutatePod: containers', () => {
  const three: V1Container[] = [
    { name: 'app', image: 'shop/web:1.0', command: ['/web'] },
    { name: 'worker', image: 'shop/worker:1.0', command: ['/worker'] },
    { name: 'istio-proxy', image: 'istio/proxyv2:1.22', args: ['proxy', 'sidecar'] },
  ];
  const commands = (p: V1Pod): (string | undefined)[] => p.spec!.containers.map((c) => c.command?.[0]);

  it('traces the containers the annotation names, and only those', () => {
    const p = pod({ containers: three, annotations: { 'rbinder.io/container-names': ' app , worker' } });
    const m = mutatePod(p, input());
    expect(m.injected).toEqual(['app', 'worker']);
    expect(commands(patched(p, m))).toEqual([LAUNCHER, LAUNCHER, undefined]);
    expect(patched(p, m).spec!.containers[2]).toEqual(three[2]);
  });

  it("falls back to the TracedWorkload's containers", () => {
    const p = pod({ containers: three, annotations: { 'rbinder.io/traced-workload': 'web' } });
    const m = mutatePod(p, input({ tracedWorkload: () => ({ containers: ['worker'] }) }));
    expect(m.injected).toEqual(['worker']);
  });

  it('traces every app container by default, never init or ephemeral ones', () => {
    const p = pod({
      containers: three.slice(0, 2),
      spec: { initContainers: [{ name: 'init', image: 'x', command: ['/init'] }], ephemeralContainers: [{ name: 'debugger', image: 'busybox', command: ['sh'] }] },
    });
    const m = mutatePod(p, input());
    expect(m.injected).toEqual(['app', 'worker']);
    const out = patched(p, m);
    expect(out.spec!.initContainers![1]).toEqual({ name: 'init', image: 'x', command: ['/init'] });
    expect(out.spec!.ephemeralContainers).toEqual(p.spec!.ephemeralContainers);
  });

  it('names unknown containers and init containers in the warnings and the skipped annotation', () => {
    const p = pod({ containers: three.slice(0, 1), annotations: { 'rbinder.io/container-names': 'app,nope,init' }, spec: { initContainers: [{ name: 'init', image: 'x' }] } });
    const m = mutatePod(p, input());
    expect(m.injected).toEqual(['app']);
    expect(m.reason).toBe('container nope: no such container; container init: init and ephemeral containers are never traced');
    expect(m.warnings).toEqual(['container nope: no such container', 'container init: init and ephemeral containers are never traced']);
    expect(patched(p, m).metadata!.annotations).toEqual({
      'rbinder.io/container-names': 'app,nope,init',
      'rbinder.io/injected': 'app',
      'rbinder.io/skipped': m.reason,
    });
  });

  it('skips the pod when none of the named containers exists', () => {
    const p = pod({ annotations: { 'rbinder.io/container-names': 'nope' } });
    const m = mutatePod(p, input());
    expect(m).toMatchObject({ result: 'skipped', reason: 'container nope: no such container' });
    const out = patched(p, m);
    expect(out.spec).toEqual(p.spec);
    expect(out.metadata!.annotations!['rbinder.io/skipped']).toBe('container nope: no such container');
  });

  it('leaves a container whose mount path is taken', () => {
    const p = pod({ containers: [{ name: 'app', image: 'x', command: ['/x'], volumeMounts: [{ name: 'v', mountPath: '/rbinder/cache' }] }] });
    expect(mutatePod(p, input())).toMatchObject({ result: 'skipped', reason: 'container app: a volume is already mounted at or around /rbinder' });
  });

  it('warns when a custom seccomp or AppArmor profile may forbid ptrace', () => {
    const p = pod({
      containers: [
        { name: 'app', image: 'x', command: ['/x'], securityContext: { seccompProfile: { type: 'Localhost', localhostProfile: 'profiles/strict.json' } } },
        { name: 'b', image: 'x', command: ['/x'], securityContext: { appArmorProfile: { type: 'Localhost', localhostProfile: 'k8s-strict' } } },
        { name: 'c', image: 'x', command: ['/x'], securityContext: { seccompProfile: { type: 'RuntimeDefault' } } },
      ],
    });
    const m = mutatePod(p, input());
    expect(m.injected).toEqual(['app', 'b', 'c']);
    expect(m.warnings).toEqual([
      'container app: seccomp profile profiles/strict.json must allow ptrace and seccomp, or the traced container fails to start',
      "container b: a custom AppArmor profile must allow ptrace (trace) of the container's own processes",
    ]);
  });
});

describe('mutatePod: commands from the override annotation and the registry', () => {
  const noCommand = (extra: Partial<V1Container> = {}): V1Pod => pod({ containers: [{ name: 'app', image: 'shop/web:1.0', ...extra }] });
  const images = (lookup: ImageLookup): ReadonlyMap<string, ImageLookup> => new Map([['shop/web:1.0', lookup]]);
  const found = (entrypoint: string[], cmd: string[], architecture = 'amd64'): ImageLookup => ({
    image: { digest: 'sha256:1', index: false, platforms: [{ platform: { os: 'linux', architecture }, digest: 'sha256:1', entrypoint, cmd }] },
  });

  it('asks the registry only for chosen containers without a command or override', () => {
    const p = pod({
      containers: [
        { name: 'app', image: 'shop/web:1.0' },
        { name: 'pinned', image: 'shop/pinned:1', command: ['/p'] },
        { name: 'over', image: 'shop/over:1' },
        { name: 'other', image: 'shop/other:1' },
      ],
      annotations: { 'rbinder.io/command.over': '["/o"]', 'rbinder.io/container-names': 'app,pinned,over' },
    });
    expect(imagesToResolve(p, input())).toEqual([{ container: 'app', image: 'shop/web:1.0' }]);
    expect(imagesToResolve(p, input({ namespaceLabels: {} }))).toEqual([]);
  });

  it("runs the image's Entrypoint and Cmd when the pod has no command", () => {
    const p = noCommand();
    const c = patched(p, mutatePod(p, input({ images: images(found(['/docker-entrypoint.sh'], ['nginx', '-g', 'daemon off;'])) }))).spec!.containers[0]!;
    expect(c.command).toEqual([LAUNCHER, '--', '/docker-entrypoint.sh', 'nginx', '-g', 'daemon off;']);
    expect(c.args).toBeUndefined();
  });

  it('the override annotation wins over the pod command and the registry', () => {
    const p = pod({ annotations: { 'rbinder.io/command.app': '["/real-web"]' } });
    const c = patched(p, mutatePod(p, input({ images: images(found(['/img'], [])) }))).spec!.containers[0]!;
    expect(c.command).toEqual([LAUNCHER, '--', '/real-web', '--port', '8080']);
  });

  it('leaves a container whose command is unknown as it was, and says why on the pod and in a warning', () => {
    const p = noCommand({ args: ['serve'] });
    const m = mutatePod(p, input({ images: images({ error: 'shop/web:1.0: the registry refused access (401)' }) }));
    expect(m.result).toBe('skipped');
    expect(m.reason).toBe('container app: command unknown: shop/web:1.0: the registry refused access (401)');
    expect(m.warnings).toEqual([
      `rbinder: pod not traced: ${m.reason}`,
      'container app is not traced: shop/web:1.0: the registry refused access (401)',
    ]);
    const out = patched(p, m);
    expect(out.spec).toEqual(p.spec);
    expect(out.metadata!.annotations).toEqual({ 'rbinder.io/skipped': m.reason });
  });

  it('traces the containers it can when another one has an unknown command', () => {
    const p = pod({ containers: [{ name: 'app', image: 'shop/web:1.0' }, { name: 'side', image: 'shop/side:1', command: ['/side'] }] });
    const m = mutatePod(p, input());
    expect(m).toMatchObject({ result: 'injected', injected: ['side'], reason: 'container app: command unknown: the image shop/web:1.0 was not looked up' });
    const out = patched(p, m);
    expect(out.spec!.containers[0]).toEqual(p.spec!.containers[0]);
    expect(out.metadata!.annotations).toEqual({ 'rbinder.io/injected': 'side', 'rbinder.io/skipped': m.reason });
  });

  it('selects the command per architecture at run time when the platforms differ', () => {
    const multi: ImageLookup = {
      image: {
        digest: 'sha256:idx',
        index: true,
        platforms: [
          { platform: { os: 'linux', architecture: 'amd64' }, digest: 'sha256:a', entrypoint: ['/srv-x86', '$(literal)'], cmd: [] },
          { platform: { os: 'linux', architecture: 'arm64' }, digest: 'sha256:b', entrypoint: ['/srv-arm'], cmd: [] },
        ],
      },
    };
    const p = noCommand({ args: ['--port', '$(PORT)'] });
    const c = patched(p, mutatePod(p, input({ images: images(multi) }))).spec!.containers[0]!;
    expect(c.command).toEqual([LAUNCHER, '--command-by-arch', '--', '--port', '$(PORT)']);
    expect(value(c, 'RBINDER_COMMAND_AMD64')).toBe('["/srv-x86","$$(literal)"]');
    expect(value(c, 'RBINDER_COMMAND_ARM64')).toBe('["/srv-arm"]');

    const pinnedPod = noCommand();
    pinnedPod.spec!.nodeSelector = { 'kubernetes.io/arch': 'arm64' };
    const pinned = patched(pinnedPod, mutatePod(pinnedPod, input({ images: images(multi) }))).spec!.containers[0]!;
    expect(pinned.command).toEqual([LAUNCHER, '--', '/srv-arm']);
    expect(value(pinned, 'RBINDER_COMMAND_AMD64')).toBeUndefined();
  });
});

describe('pinnedPlatform', () => {
  const withAffinity = (values: string[][]): V1Pod =>
    pod({
      spec: {
        affinity: {
          nodeAffinity: {
            requiredDuringSchedulingIgnoredDuringExecution: {
              nodeSelectorTerms: values.map((v) => ({ matchExpressions: [{ key: 'kubernetes.io/arch', operator: 'In', values: v }] })),
            },
          },
        },
      },
    });

  it.each<[string, V1Pod, string | undefined]>([
    ['nodeSelector', pod({ spec: { nodeSelector: { 'kubernetes.io/arch': 'arm64' } } }), 'arm64'],
    ['one required term', withAffinity([['amd64']]), 'amd64'],
    ['every term the same arch', withAffinity([['amd64'], ['amd64']]), 'amd64'],
    ['terms that differ', withAffinity([['amd64'], ['arm64']]), undefined],
    ['a term allowing two', withAffinity([['amd64', 'arm64']]), undefined],
    ['nothing', pod(), undefined],
  ])('%s', (_name, p, arch) => {
    expect(pinnedPlatform(p)?.architecture).toBe(arch);
  });
});
