// Names the operator uses. The ones shared with the webhook, tracer, chart and docs (DESIGN.md §9)
// come from webhook/src/names.ts, the one place they are spelled; the rest are the operator's own.

export {
  ANNOTATION_CONFIG_HASH,
  ANNOTATION_INJECT,
  ANNOTATION_INJECTED,
  ANNOTATION_SKIPPED,
  ANNOTATION_TRACED_WORKLOAD,
  LABEL_APP_NAME,
} from '../../webhook/src/names';

/** The CRD: `tracedworkloads.rbinder.io`, kind TracedWorkload, v1alpha1. */
export const GROUP = 'rbinder.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'TracedWorkload';
export const PLURAL = 'tracedworkloads';
export const CRD_NAME = `${PLURAL}.${GROUP}`;

/** Finalizer on every TracedWorkload: its workloads are reverted before it goes. */
export const FINALIZER = 'rbinder.io/revert-workloads';

/** Field manager of the operator's writes, and of the objects it provisions (server-side apply). */
export const FIELD_MANAGER = 'rbinder-operator';

/**
 * Field manager of the stamp alone: server-side apply owns exactly the stamp annotations, so removing
 * the stamp removes what the operator added and nothing a user set. A manager of its own, because an
 * apply declares everything its manager owns in the object.
 */
export const STAMP_FIELD_MANAGER = 'rbinder-stamp';

/** reportingController of events, and the managed-by label value of objects the operator creates. */
export const CONTROLLER_NAME = 'rbinder.io/operator';
export const MANAGED_BY = 'rbinder-operator';

/** Label on objects the operator provisions; value: the owning TracedWorkload's name. */
export const LABEL_MANAGED_BY = 'app.kubernetes.io/managed-by';
export const LABEL_INSTANCE = 'app.kubernetes.io/instance';
export const LABEL_COMPONENT = 'app.kubernetes.io/component';

/**
 * Annotation on objects the operator provisions (collector ConfigMap, Deployment, Service): the hash
 * of what the operator last applied, so an unchanged object is not written again.
 */
export const ANNOTATION_APPLIED_HASH = 'rbinder.io/applied-hash';

/** Pod-template annotation of a provisioned collector: its configuration's hash (a new one restarts it). */
export const ANNOTATION_COLLECTOR_CONFIG_HASH = 'rbinder.io/collector-config-hash';

/** Workload kinds a TracedWorkload selects. */
export type WorkloadKind = 'Deployment' | 'StatefulSet' | 'DaemonSet';
export const WORKLOAD_KINDS: readonly WorkloadKind[] = ['Deployment', 'StatefulSet', 'DaemonSet'];

/** Condition types on TracedWorkload status. */
export const CONDITION_READY = 'Ready';
export const CONDITION_COLLECTOR_READY = 'CollectorReady';
export const CONDITION_ROLLED_OUT = 'RolledOut';
export const CONDITION_DEGRADED = 'Degraded';

/** Ports of the provisioned collector. */
export const OTLP_GRPC_PORT = 4317;
export const OTLP_HTTP_PORT = 4318;
export const COLLECTOR_HEALTH_PORT = 13133;
