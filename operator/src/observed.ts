// The reconciler's view of the cluster: small projections of the API objects it reads, made once
// per pass from the informer caches (and built directly in unit tests).

import type { KubernetesObject, V1ContainerStatus, V1DaemonSet, V1Deployment, V1ManagedFieldsEntry, V1Pod, V1StatefulSet } from '@kubernetes/client-node';
import { owningWorkloads } from '../../webhook/src/workload';
import { STAMP_FIELD_MANAGER, type WorkloadKind } from './names';
import type { ObservedWorkload } from './selection';
import type { TracedWorkload } from './types';

export interface ObservedContainer {
  name: string;
  restartCount: number;
  waitingReason?: string;
  lastExitCode?: number;
}

export interface ObservedPod {
  namespace: string;
  name: string;
  /** The Deployment, StatefulSet or DaemonSet it belongs to. */
  workload?: { kind: WorkloadKind; name: string };
  annotations: Record<string, string>;
  /** App and init containers. */
  containers: ObservedContainer[];
}

export interface ObservedState {
  tracedWorkloads: TracedWorkload[];
  workloads: ObservedWorkload[];
  pods: ObservedPod[];
  /** ConfigMaps, Deployments and Services labelled as the operator's. */
  collectorObjects: KubernetesObject[];
}

export type AppsWorkload = V1Deployment | V1StatefulSet | V1DaemonSet;

/**
 * The template annotations a field manager owns through server-side apply, read from
 * managedFields (`f:spec.f:template.f:metadata.f:annotations.f:<key>`).
 */
export function ownedTemplateAnnotationKeys(managedFields: V1ManagedFieldsEntry[] | undefined, manager = STAMP_FIELD_MANAGER): string[] {
  const keys = new Set<string>();
  for (const entry of managedFields ?? []) {
    if (entry.manager !== manager || entry.operation !== 'Apply') continue;
    const fields = entry.fieldsV1 as Record<string, Record<string, Record<string, Record<string, Record<string, unknown>>>>> | undefined;
    const annotations = fields?.['f:spec']?.['f:template']?.['f:metadata']?.['f:annotations'] ?? {};
    for (const k of Object.keys(annotations)) if (k.startsWith('f:')) keys.add(k.slice(2));
  }
  return [...keys];
}

export function observeWorkload(kind: WorkloadKind, object: AppsWorkload): ObservedWorkload {
  const templateAnnotations = object.spec?.template?.metadata?.annotations ?? {};
  const stamp: Record<string, string> = {};
  for (const key of ownedTemplateAnnotationKeys(object.metadata?.managedFields)) {
    const value = templateAnnotations[key];
    if (value !== undefined) stamp[key] = value;
  }
  const strategy = kind === 'Deployment' ? undefined : (object.spec as { updateStrategy?: { type?: string } } | undefined)?.updateStrategy?.type;
  return {
    kind,
    namespace: object.metadata?.namespace ?? '',
    name: object.metadata?.name ?? '',
    labels: object.metadata?.labels ?? {},
    annotations: object.metadata?.annotations ?? {},
    templateAnnotations,
    stamp,
    onDelete: strategy === 'OnDelete',
  };
}

function observeContainer(s: V1ContainerStatus): ObservedContainer {
  return {
    name: s.name,
    restartCount: s.restartCount ?? 0,
    waitingReason: s.state?.waiting?.reason,
    lastExitCode: s.lastState?.terminated?.exitCode,
  };
}

export function observePod(pod: V1Pod): ObservedPod {
  const owners = owningWorkloads(pod);
  const outer = owners[owners.length - 1];
  const workload = outer && (outer.kind === 'Deployment' || outer.kind === 'StatefulSet' || outer.kind === 'DaemonSet') ? { kind: outer.kind, name: outer.name } : undefined;
  return {
    namespace: pod.metadata?.namespace ?? '',
    name: pod.metadata?.name ?? '',
    workload,
    annotations: pod.metadata?.annotations ?? {},
    containers: [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])].map(observeContainer),
  };
}

/** A container that restarted at least `threshold` times and is failing now. */
export function crashLoopingContainer(pod: ObservedPod, threshold: number): ObservedContainer | undefined {
  return pod.containers.find(
    (c) => c.restartCount >= threshold && (c.waitingReason === 'CrashLoopBackOff' || (c.lastExitCode !== undefined && c.lastExitCode !== 0)),
  );
}
