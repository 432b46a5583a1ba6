// Which workloads each TracedWorkload selects, and who wins when several claim one. Pure.

import type { V1LabelSelector } from '@kubernetes/client-node';
import { ANNOTATION_INJECT, LABEL_MANAGED_BY, MANAGED_BY, type WorkloadKind } from './names';
import type { TracedWorkload } from './types';

/** What the reconciler needs to know about a Deployment, StatefulSet or DaemonSet. */
export interface ObservedWorkload {
  kind: WorkloadKind;
  namespace: string;
  name: string;
  labels: Record<string, string>;
  /** The workload's own metadata annotations (rbinder.io/inject opts it in or out). */
  annotations: Record<string, string>;
  /** spec.template.metadata.annotations. */
  templateAnnotations: Record<string, string>;
  /** The template annotations this operator owns (server-side apply managedFields), with their current values. */
  stamp: Record<string, string>;
  /** Update strategy: OnDelete means a template change restarts nothing. */
  onDelete: boolean;
}

export function workloadKey(w: { kind: string; namespace: string; name: string }): string {
  return `${w.namespace}/${w.kind}/${w.name}`;
}

export function tracedWorkloadKey(tw: Pick<TracedWorkload, 'metadata'>): string {
  return `${tw.metadata.namespace}/${tw.metadata.name}`;
}

/** Kubernetes label-selector semantics; an empty selector matches everything. */
export function matchesSelector(selector: V1LabelSelector, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(labels, e.key);
    const values = e.values ?? [];
    switch (e.operator) {
      case 'In':
        if (!has || !values.includes(labels[e.key]!)) return false;
        break;
      case 'NotIn':
        if (has && values.includes(labels[e.key]!)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        return false; // unknown operator: the CRD's enum keeps these out; match nothing
    }
  }
  return true;
}

/** Whether the TracedWorkload's spec names or selects the workload (ignoring opt-outs and conflicts). */
export function selects(tw: TracedWorkload, w: ObservedWorkload): boolean {
  if (tw.metadata.namespace !== w.namespace) return false;
  if ((tw.spec.workloads ?? []).some((ref) => ref.kind === w.kind && ref.name === w.name)) return true;
  return tw.spec.selector !== undefined && matchesSelector(tw.spec.selector, w.labels);
}

export function injectAnnotation(w: Pick<ObservedWorkload, 'annotations'>): boolean | undefined {
  const v = w.annotations[ANNOTATION_INJECT]?.trim().toLowerCase();
  return v === 'true' ? true : v === 'false' ? false : undefined;
}

/** Objects the operator itself runs (the collectors) are never traced: their export traffic would be. */
export function isOperatorManaged(w: Pick<ObservedWorkload, 'labels'>): boolean {
  return w.labels[LABEL_MANAGED_BY] === MANAGED_BY;
}

export type Selection =
  | { by: 'tracedWorkload'; tracedWorkload: TracedWorkload }
  | { by: 'annotation' }
  | { by: 'none' };

export interface SelectionResult {
  /** Per workload key. */
  selection: Map<string, Selection>;
  /** Per TracedWorkload key: every workload its spec matches, with why it is not its own when so. */
  claims: Map<string, { workload: ObservedWorkload; lostTo?: string; optedOut?: boolean }[]>;
}

/** Older first, then by name: the winner among TracedWorkloads selecting the same workload. */
export function compareAge(a: TracedWorkload, b: TracedWorkload): number {
  const ta = Date.parse(String(a.metadata.creationTimestamp ?? '')) || 0;
  const tb = Date.parse(String(b.metadata.creationTimestamp ?? '')) || 0;
  if (ta !== tb) return ta - tb;
  return a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0;
}

/**
 * Decides each workload's selection. A TracedWorkload being deleted selects nothing (so its
 * workloads are reverted); workloads in excluded namespaces and the operator's own are never selected.
 */
export function selectWorkloads(tracedWorkloads: TracedWorkload[], workloads: ObservedWorkload[], excludedNamespaces: ReadonlySet<string>): SelectionResult {
  const live = tracedWorkloads.filter((tw) => !tw.metadata.deletionTimestamp).sort(compareAge);
  const selection = new Map<string, Selection>();
  const claims = new Map<string, { workload: ObservedWorkload; lostTo?: string; optedOut?: boolean }[]>();
  for (const tw of live) claims.set(tracedWorkloadKey(tw), []);
  for (const w of workloads) {
    const key = workloadKey(w);
    if (excludedNamespaces.has(w.namespace) || isOperatorManaged(w)) {
      selection.set(key, { by: 'none' });
      continue;
    }
    const optIn = injectAnnotation(w);
    const selecting = live.filter((tw) => selects(tw, w));
    const winner = optIn === false ? undefined : selecting[0];
    for (const tw of selecting) {
      claims.get(tracedWorkloadKey(tw))!.push({
        workload: w,
        optedOut: optIn === false || undefined,
        lostTo: winner && winner !== tw ? winner.metadata.name : undefined,
      });
    }
    if (winner) selection.set(key, { by: 'tracedWorkload', tracedWorkload: winner });
    else if (optIn === true) selection.set(key, { by: 'annotation' });
    else selection.set(key, { by: 'none' });
  }
  return { selection, claims };
}
