// What the webhook needs to know to inject a pod: the cluster-wide settings (flags of
// bin/rbinder-controller) and, for pods of a TracedWorkload, that workload's settings on top.

import type { V1ResourceRequirements } from '@kubernetes/client-node';

/**
 * What happens when the webhook itself fails: `Ignore` admits the pod unchanged (with a warning),
 * `Fail` rejects it. Drives both the handler and the MutatingWebhookConfiguration's failurePolicy.
 */
export type FailurePolicy = 'Ignore' | 'Fail';
export const FAILURE_POLICIES: readonly FailurePolicy[] = ['Ignore', 'Fail'];

export type PullPolicy = 'Always' | 'IfNotPresent' | 'Never';
export const PULL_POLICIES: readonly PullPolicy[] = ['Always', 'IfNotPresent', 'Never'];

export interface SamplerSetting {
  /** OTEL_TRACES_SAMPLER, e.g. "parentbased_traceidratio". */
  type: string;
  /** OTEL_TRACES_SAMPLER_ARG, e.g. "0.1". */
  argument?: string;
}

/** Telemetry settings: cluster-wide defaults, each of which a TracedWorkload may override. */
export interface TelemetrySettings {
  /** OTEL_EXPORTER_OTLP_ENDPOINT, e.g. "http://rbinder-collector.rbinder-system:4318". */
  collectorEndpoint?: string;
  /** OTEL_EXPORTER_OTLP_PROTOCOL. */
  otlpProtocol?: string;
  /** OTEL_PROPAGATORS entries. */
  propagators?: string[];
  sampler?: SamplerSetting;
  /** RBINDER_INJECT_TO entries: destinations that may receive trace context. */
  injectTo?: string[];
  /** Further RBINDER_* (or other) variables for traced containers, e.g. RBINDER_MODE. */
  extraEnv?: Record<string, string>;
}

export interface InjectionConfig extends TelemetrySettings {
  /** The tracer bundle image: holds the installer and the bundle it installs. */
  tracerImage: string;
  tracerImagePullPolicy: PullPolicy;
  /**
   * The bundle image's installer; the directory to install into is appended as the last argument.
   * No shell or `cp` is needed in any image.
   */
  installCommand: string[];
  /** Where the bundle volume is mounted in the install container. */
  installMountPath: string;
  /** Where the bundle volume is mounted (read-only) in traced containers. */
  mountPath: string;
  /** The tracer launcher, relative to mountPath. */
  launcherPath: string;
  /** Resources of the install container (requests and limits, so that no LimitRange or quota rejects the pod). */
  installResources: V1ResourceRequirements;
  /** The non-root uid (and gid) of the install container. */
  installUser: number;
  /** emptyDir sizeLimit of the bundle volume, e.g. "256Mi"; none when undefined. */
  volumeSizeLimit?: string;
  /** The controller's own namespace: never injected. */
  controllerNamespace: string;
  /** More namespaces never injected (kube-system always is). */
  excludedNamespaces: string[];
  failurePolicy: FailurePolicy;
}

/**
 * What the webhook needs from a TracedWorkload (the operator maps the CR's spec to this and keeps
 * it in an informer cache). Fields left undefined fall back to the cluster-wide configuration.
 */
export interface TracedWorkloadConfig extends TelemetrySettings {
  /** service.name of the workload's spans. */
  serviceName?: string;
  /** Containers to trace; all app containers when undefined or empty. */
  containers?: string[];
  /** The hash of this configuration the operator stamps on pod templates. */
  configHash?: string;
}

/** How the webhook finds a TracedWorkload's configuration (the operator backs it with an informer cache). */
export type TracedWorkloadLookup = (namespace: string, name: string) => TracedWorkloadConfig | undefined;

/** The workload kinds a TracedWorkload selects (and whose pod templates the operator stamps). */
export type SelectableWorkloadKind = 'Deployment' | 'StatefulSet' | 'DaemonSet';

/**
 * The TracedWorkload selecting a workload, by the workload's kind and name, for pods that carry no
 * `rbinder.io/traced-workload` stamp (automatic rollout off leaves the pod template alone). The
 * operator backs it with `TracedWorkloadCache.forWorkload`.
 */
export type WorkloadSelection = (
  namespace: string,
  kind: SelectableWorkloadKind,
  name: string,
) => { name: string; config: TracedWorkloadConfig } | undefined;

export const DEFAULT_INSTALL_RESOURCES: V1ResourceRequirements = {
  requests: { cpu: '10m', memory: '32Mi' },
  limits: { cpu: '500m', memory: '128Mi' },
};

/** The uid of "nonroot" in distroless images; any non-zero uid works. */
export const DEFAULT_INSTALL_USER = 65532;

export const DEFAULT_CONTROLLER_NAMESPACE = 'rbinder-system';

/** Defaults for everything but the tracer image, which has to be named. */
export function defaultInjectionConfig(tracerImage: string, overrides: Partial<InjectionConfig> = {}): InjectionConfig {
  return {
    tracerImage,
    tracerImagePullPolicy: 'IfNotPresent',
    installCommand: ['/rbinder/install'],
    installMountPath: '/rbinder-volume',
    mountPath: '/rbinder',
    launcherPath: 'bin/rbinder',
    installResources: DEFAULT_INSTALL_RESOURCES,
    installUser: DEFAULT_INSTALL_USER,
    volumeSizeLimit: '256Mi',
    controllerNamespace: DEFAULT_CONTROLLER_NAMESPACE,
    excludedNamespaces: [],
    failurePolicy: 'Ignore',
    ...overrides,
  };
}

/** The absolute path of the tracer launcher in traced containers. */
export function launcherFile(config: Pick<InjectionConfig, 'mountPath' | 'launcherPath'>): string {
  return `${config.mountPath.replace(/\/+$/, '')}/${config.launcherPath.replace(/^\/+/, '')}`;
}

/** The telemetry settings for a pod: the TracedWorkload's where it sets them, else the cluster's. */
export function effectiveTelemetry(config: InjectionConfig, workload: TracedWorkloadConfig | undefined): TelemetrySettings {
  const pick = <K extends keyof TelemetrySettings>(key: K): TelemetrySettings[K] => workload?.[key] ?? config[key];
  return {
    collectorEndpoint: pick('collectorEndpoint'),
    otlpProtocol: pick('otlpProtocol'),
    propagators: pick('propagators'),
    sampler: pick('sampler'),
    injectTo: pick('injectTo'),
    extraEnv: { ...config.extraEnv, ...workload?.extraEnv },
  };
}
