// The environment of a traced container: OpenTelemetry's standard variables, which the tracer
// honours as the SDKs do, and rbinder's own. A variable the container already sets is never
// overridden; OTEL_RESOURCE_ATTRIBUTES set to a plain value is extended with the keys it lacks.

import type { V1Container, V1EnvVar } from '@kubernetes/client-node';
import type { TelemetrySettings } from './config';
import { ENV } from './names';
import { workloadAttributes, type Workload } from './workload';

export interface ContainerEnvInput {
  container: V1Container;
  namespace: string;
  serviceName: string | undefined;
  workloads: Workload[];
  telemetry: TelemetrySettings;
  /** RBINDER_COMMAND_<key> → argv, when the program depends on the node's architecture. */
  commandByArch?: Record<string, string[]>;
}

/** The container's env with the tracer's variables added; the container's own entries come first and are kept. */
export function tracedContainerEnv(input: ContainerEnvInput): V1EnvVar[] {
  const own = input.container.env ?? [];
  const defined = new Set(own.map((e) => e.name));
  const missing = (vars: V1EnvVar[]): V1EnvVar[] => vars.filter((v) => !defined.has(v.name));

  // Values that exist only once the pod is scheduled come from the downward API. They go first:
  // Kubernetes expands $(NAME) in a value only with variables defined before it, and a user's own
  // OTEL_RESOURCE_ATTRIBUTES (which we may extend) can be anywhere in the list.
  const downward = missing([
    fieldRef(ENV.podName, 'metadata.name'),
    fieldRef(ENV.podUid, 'metadata.uid'),
    fieldRef(ENV.nodeName, 'spec.nodeName'),
  ]);

  const attributes = resourceAttributes(input);
  const t = input.telemetry;
  const settings: V1EnvVar[] = [];
  const set = (name: string, value: string | undefined): void => {
    if (value !== undefined && value !== '') settings.push({ name, value });
  };
  set(ENV.serviceName, input.serviceName);
  set(ENV.endpoint, t.collectorEndpoint);
  set(ENV.protocol, t.otlpProtocol);
  set(ENV.propagators, t.propagators?.join(','));
  set(ENV.sampler, t.sampler?.type);
  if (t.sampler?.type) set(ENV.samplerArg, t.sampler.argument);
  set(ENV.injectTo, t.injectTo?.join(','));
  for (const [name, value] of Object.entries(t.extraEnv ?? {})) set(name, value);
  set(ENV.resourceAttributes, formatAttributes(attributes));
  for (const [key, argv] of Object.entries(input.commandByArch ?? {})) set(`${ENV.commandPrefix}${key}`, JSON.stringify(argv));

  const extended = own.map((e) =>
    e.name === ENV.resourceAttributes && e.valueFrom === undefined ? { ...e, value: mergeAttributes(e.value ?? '', attributes) } : e,
  );
  return [...downward, ...extended, ...missing(dedupe(settings))];
}

function fieldRef(name: string, fieldPath: string): V1EnvVar {
  return { name, valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath } } };
}

function dedupe(vars: V1EnvVar[]): V1EnvVar[] {
  const seen = new Set<string>();
  return vars.filter((v) => !seen.has(v.name) && seen.add(v.name));
}

/** k8s.* resource attributes of the container, in OTEL_RESOURCE_ATTRIBUTES order. */
export function resourceAttributes(input: Pick<ContainerEnvInput, 'container' | 'namespace' | 'workloads'>): [string, string][] {
  const literal = (v: string): string => encodeURIComponent(v);
  return [
    ['k8s.namespace.name', literal(input.namespace)],
    ['k8s.pod.name', `$(${ENV.podName})`],
    ['k8s.pod.uid', `$(${ENV.podUid})`],
    ['k8s.node.name', `$(${ENV.nodeName})`],
    ['k8s.container.name', literal(input.container.name)],
    ...workloadAttributes(input.workloads).map(([k, v]): [string, string] => [k, literal(v)]),
  ];
}

function formatAttributes(attributes: [string, string][]): string {
  return attributes.map(([k, v]) => `${k}=${v}`).join(',');
}

/** The user's OTEL_RESOURCE_ATTRIBUTES with ours appended for the keys it does not set. */
export function mergeAttributes(userValue: string, ours: [string, string][]): string {
  const keys = new Set(
    userValue
      .split(',')
      .map((pair) => pair.split('=', 1)[0]!.trim())
      .filter((k) => k !== ''),
  );
  const added = ours.filter(([k]) => !keys.has(k));
  if (added.length === 0) return userValue;
  const base = userValue.trim().replace(/,+$/, '');
  return base === '' ? formatAttributes(added) : `${base},${formatAttributes(added)}`;
}
