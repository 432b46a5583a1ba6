// Typed fixtures for the operator's unit tests.

import { ANNOTATION_CONFIG_HASH, ANNOTATION_INJECTED, ANNOTATION_TRACED_WORKLOAD, FINALIZER, type WorkloadKind } from './names';
import type { ObservedPod, ObservedState } from './observed';
import type { ReconcileOptions } from './reconcile';
import type { ObservedWorkload } from './selection';
import type { TracedWorkload, TracedWorkloadSpec } from './types';

export const NOW = new Date('2026-01-01T00:00:00Z');

export function tracedWorkload(name: string, spec: TracedWorkloadSpec, extra: Partial<TracedWorkload['metadata']> & { status?: TracedWorkload['status'] } = {}): TracedWorkload {
  const { status, ...meta } = extra;
  return {
    apiVersion: 'rbinder.io/v1alpha1',
    kind: 'TracedWorkload',
    metadata: { name, namespace: 'shop', uid: `uid-${name}`, generation: 1, creationTimestamp: new Date('2025-12-01T00:00:00Z'), finalizers: [FINALIZER], resourceVersion: '1', ...meta },
    spec,
    ...(status ? { status } : {}),
  };
}

export function workload(kind: WorkloadKind, name: string, extra: Partial<ObservedWorkload> = {}): ObservedWorkload {
  return { kind, namespace: 'shop', name, labels: { app: name }, annotations: {}, templateAnnotations: {}, stamp: {}, onDelete: false, ...extra };
}

/** A workload whose template carries the operator's stamp for TracedWorkload `tw` with `hash`. */
export function stamped(w: ObservedWorkload, tw: string, hash: string): ObservedWorkload {
  const stamp = { [ANNOTATION_TRACED_WORKLOAD]: tw, [ANNOTATION_CONFIG_HASH]: hash };
  return { ...w, stamp, templateAnnotations: { ...w.templateAnnotations, ...stamp } };
}

export function pod(w: ObservedWorkload, name: string, annotations: Record<string, string> = {}, containers: ObservedPod['containers'] = []): ObservedPod {
  return { namespace: w.namespace, name, workload: { kind: w.kind, name: w.name }, annotations, containers };
}

export function injectedPod(w: ObservedWorkload, name: string, tw: string, hash: string, containers: ObservedPod['containers'] = []): ObservedPod {
  return pod(w, name, { [ANNOTATION_TRACED_WORKLOAD]: tw, [ANNOTATION_CONFIG_HASH]: hash, [ANNOTATION_INJECTED]: 'app' }, containers);
}

export function state(partial: Partial<ObservedState>): ObservedState {
  return { tracedWorkloads: [], workloads: [], pods: [], collectorObjects: [], ...partial };
}

export const OPTIONS: ReconcileOptions = {
  excludedNamespaces: new Set(['kube-system', 'rbinder-system']),
  automaticRolloutByDefault: true,
  collectorImage: 'otel/opentelemetry-collector:test',
  now: NOW,
};
