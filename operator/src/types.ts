// The TracedWorkload custom resource as TypeScript sees it (crds/tracedworkloads.rbinder.io.yaml is
// the schema the API server enforces; the two change together).

import type { V1LabelSelector, V1ObjectMeta, V1ResourceRequirements } from '@kubernetes/client-node';
import type { WorkloadKind } from './names';

export type Propagator = 'tracecontext' | 'baggage' | 'b3' | 'b3multi' | 'jaeger' | 'none';
export type OtlpProtocol = 'grpc' | 'http/protobuf';

export interface WorkloadRef {
  kind: WorkloadKind;
  name: string;
}

export interface ProvisionedCollector {
  /** Collector image; the operator's --collector-image when unset. */
  image?: string;
  replicas?: number;
  resources?: V1ResourceRequirements;
  /** The collector's `exporters:` section, passed through as written (e.g. { otlp: { endpoint: ... } }). */
  exporters?: Record<string, unknown>;
  /** The collector's `extensions:` section (merged with the health_check extension the operator adds). */
  extensions?: Record<string, unknown>;
}

export interface CollectorSpec {
  /** An existing OTLP endpoint (e.g. http://otel-collector.observability:4318). */
  endpoint?: string;
  /** OTLP protocol the traced pods use; default http/protobuf. */
  protocol?: OtlpProtocol;
  /** A collector the operator runs for this TracedWorkload. */
  provision?: ProvisionedCollector;
}

export interface RolloutSpec {
  /** Restart selected workloads when their configuration changes; the operator's default when unset. */
  automatic?: boolean;
  /** Revert workloads whose injected pods crash-loop; default true. */
  rollbackOnCrashLoop?: boolean;
  /** Restarts of a container of an injected pod that count as a crash loop; default 3. */
  crashLoopRestarts?: number;
}

export interface TracedWorkloadSpec {
  /** Deployments, StatefulSets and DaemonSets in the namespace whose labels match. */
  selector?: V1LabelSelector;
  /** Workloads named explicitly. */
  workloads?: WorkloadRef[];
  /** Containers to trace; all app containers when empty. */
  containers?: string[];
  /** service.name of the spans; when unset, the webhook's rule (annotation, app.kubernetes.io/name, workload name). */
  serviceName?: string;
  propagators?: Propagator[];
  sampling?: { ratio?: number };
  /** Destinations (host, host:port, *.suffix, CIDR) that may receive trace context. */
  injectTo?: string[];
  collector?: CollectorSpec;
  rollout?: RolloutSpec;
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime: string;
}

export type WorkloadState =
  /** The pod template carries the current stamp. */
  | 'Stamped'
  /** Selected, but automatic rollout is off: its pods need a restart to be traced. */
  | 'RestartNeeded'
  /** Injected pods crash-looped with this configHash: the stamp was removed. */
  | 'RolledBack'
  /** Another TracedWorkload selects it too and wins (older). */
  | 'Conflict'
  /** Opted out with rbinder.io/inject: "false" on the workload. */
  | 'OptedOut';

export interface WorkloadStatus extends WorkloadRef {
  state: WorkloadState;
  configHash?: string;
  message?: string;
  /** Pods of the workload that run under the tracer (rbinder.io/injected). */
  injectedPods?: number;
  /** Pods of the workload that run without the tracer although selected. */
  podsNeedingRestart?: number;
}

export interface TracedWorkloadStatus {
  observedGeneration?: number;
  configHash?: string;
  conditions?: Condition[];
  /** Number of workloads this TracedWorkload selects (and wins). */
  selectedWorkloads?: number;
  injectedPods?: number;
  podsNeedingRestart?: number;
  /** The OTLP endpoint traced pods send to. */
  collector?: string;
  workloads?: WorkloadStatus[];
}

export interface TracedWorkload {
  apiVersion?: string;
  kind?: string;
  metadata: V1ObjectMeta & { name: string; namespace: string };
  spec: TracedWorkloadSpec;
  status?: TracedWorkloadStatus;
}
