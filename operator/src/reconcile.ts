// The operator's reconciler: one pure function from the observed cluster (and the options) to the
// actions that bring it where the TracedWorkloads say. The controller loop (controller.ts) feeds it
// from informer caches and carries the actions out in order.

import type { KubernetesObject } from '@kubernetes/client-node';
import { collectorAvailable, desiredCollectorObjects } from './collector';
import { canonicalJson, collectorEndpoint, DEFAULT_WORKLOAD_CONFIG_HASH, rolloutSettings, tracedWorkloadConfig } from './config';
import {
  ANNOTATION_APPLIED_HASH,
  ANNOTATION_CONFIG_HASH,
  ANNOTATION_INJECT,
  ANNOTATION_INJECTED,
  ANNOTATION_SKIPPED,
  ANNOTATION_TRACED_WORKLOAD,
  API_VERSION,
  CONDITION_COLLECTOR_READY,
  CONDITION_DEGRADED,
  CONDITION_READY,
  CONDITION_ROLLED_OUT,
  FINALIZER,
  KIND,
  LABEL_INSTANCE,
} from './names';
import { crashLoopingContainer, type ObservedPod, type ObservedState } from './observed';
import { isOperatorManaged, selectWorkloads, tracedWorkloadKey, workloadKey, type ObservedWorkload } from './selection';
import type { Condition, TracedWorkload, TracedWorkloadStatus, WorkloadStatus } from './types';

export interface ObjectRef {
  apiVersion: string;
  kind: string;
  namespace: string;
  name: string;
  uid?: string;
}

export interface NamespacedName {
  namespace: string;
  name: string;
}

/**
 * What the controller does, in the order given. `blocking`: the rest of the pass waits for it to
 * succeed (a finalizer before any stamp; the record of a rollback before the stamp is removed, so
 * that the workload is never stamped again with the configuration that crashed).
 */
export type Action = ActionBody & { blocking?: boolean };

type ActionBody =
  | { type: 'addFinalizer'; tracedWorkload: NamespacedName }
  | { type: 'removeFinalizer'; tracedWorkload: NamespacedName }
  /** Server-side apply of exactly these pod-template annotations as the operator's (empty: remove the stamp). */
  | { type: 'stamp'; workload: { kind: ObservedWorkload['kind']; namespace: string; name: string }; annotations: Record<string, string>; why: string }
  /** Server-side apply of a provisioned object. */
  | { type: 'apply'; object: KubernetesObject }
  | { type: 'delete'; object: ObjectRef }
  | { type: 'status'; tracedWorkload: NamespacedName; status: TracedWorkloadStatus }
  | { type: 'event'; regarding: ObjectRef; eventType: 'Normal' | 'Warning'; reason: string; action: string; note: string };

export interface ReconcileOptions {
  /** Namespaces never stamped (kube-system, the controller's own, ...). */
  excludedNamespaces: ReadonlySet<string>;
  /** spec.rollout.automatic when unset, and for workloads selected by their own annotation. */
  automaticRolloutByDefault: boolean;
  collectorImage: string;
  now: Date;
}

interface WorkloadOutcome {
  state: WorkloadStatus['state'];
  configHash?: string;
  message?: string;
}

function workloadRef(w: ObservedWorkload): ObjectRef {
  return { apiVersion: 'apps/v1', kind: w.kind, namespace: w.namespace, name: w.name };
}

function tracedWorkloadRef(tw: TracedWorkload): ObjectRef {
  return { apiVersion: API_VERSION, kind: KIND, namespace: tw.metadata.namespace, name: tw.metadata.name, uid: tw.metadata.uid };
}

function sameStamp(a: Record<string, string>, b: Record<string, string>): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

function podsOf(pods: ObservedPod[], w: ObservedWorkload): ObservedPod[] {
  return pods.filter((p) => p.namespace === w.namespace && p.workload?.kind === w.kind && p.workload.name === w.name);
}

/** A pod runs the configuration `hash` under the tracer (or the webhook said why it could not). */
function podIsCurrent(pod: ObservedPod, hash: string): boolean {
  if (pod.annotations[ANNOTATION_CONFIG_HASH] !== hash) return false;
  return pod.annotations[ANNOTATION_INJECTED] !== undefined || pod.annotations[ANNOTATION_SKIPPED] !== undefined;
}

function podCounts(pods: ObservedPod[], hash: string | undefined): { injectedPods: number; podsNeedingRestart: number } {
  const injectedPods = pods.filter((p) => p.annotations[ANNOTATION_INJECTED] !== undefined && (!hash || p.annotations[ANNOTATION_CONFIG_HASH] === hash)).length;
  const podsNeedingRestart = hash ? pods.filter((p) => !podIsCurrent(p, hash)).length : 0;
  return { injectedPods, podsNeedingRestart };
}

function previousEntry(tw: TracedWorkload, w: ObservedWorkload): WorkloadStatus | undefined {
  return tw.status?.workloads?.find((e) => e.kind === w.kind && e.name === w.name);
}

function condition(type: string, ok: boolean, reason: string, message: string, generation: number | undefined, previous: Condition[] | undefined, now: Date): Condition {
  const status = ok ? 'True' : 'False';
  const before = previous?.find((c) => c.type === type);
  return {
    type,
    status,
    reason,
    message,
    observedGeneration: generation,
    lastTransitionTime: before && before.status === status ? before.lastTransitionTime : now.toISOString(),
  };
}

function describe(w: { kind: string; name: string }): string {
  return `${w.kind}/${w.name}`;
}

function restartCommand(w: { kind: string; name: string; namespace?: string }): string {
  return `kubectl rollout restart ${w.kind.toLowerCase()}/${w.name}${w.namespace ? ` -n ${w.namespace}` : ''}`;
}

export function reconcile(observed: ObservedState, options: ReconcileOptions): Action[] {
  const { selection, claims } = selectWorkloads(observed.tracedWorkloads, observed.workloads, options.excludedNamespaces);
  const first: Action[] = []; // finalizers, rollback records
  const stamps: Action[] = [];
  const rest: Action[] = [];
  const outcomes = new Map<string, WorkloadOutcome>(); // by workload key, for the winner's status

  const hasFinalizer = (tw: TracedWorkload): boolean => (tw.metadata.finalizers ?? []).includes(FINALIZER);
  for (const tw of observed.tracedWorkloads) {
    if (!tw.metadata.deletionTimestamp && !hasFinalizer(tw)) first.push({ type: 'addFinalizer', tracedWorkload: { namespace: tw.metadata.namespace, name: tw.metadata.name }, blocking: true });
  }

  // 1. Each workload's stamp.
  const rolledBackNow = new Set<string>(); // TracedWorkload keys
  for (const w of observed.workloads) {
    // The operator's own collectors: provisioned below, never stamped nor unstamped.
    if (isOperatorManaged(w)) continue;
    const key = workloadKey(w);
    const sel = selection.get(key) ?? { by: 'none' as const };
    let desired: Record<string, string>;
    let why: string;
    if (sel.by === 'tracedWorkload') {
      const tw = sel.tracedWorkload;
      if (!hasFinalizer(tw)) continue; // stamped once the finalizer guarantees the revert
      const hash = tracedWorkloadConfig(tw).configHash!;
      const settings = rolloutSettings(tw, options.automaticRolloutByDefault);
      const full = { [ANNOTATION_TRACED_WORKLOAD]: tw.metadata.name, [ANNOTATION_CONFIG_HASH]: hash };
      const previous = previousEntry(tw, w);
      const stampedNow = w.stamp[ANNOTATION_TRACED_WORKLOAD] === tw.metadata.name && w.stamp[ANNOTATION_CONFIG_HASH] === hash;
      const crashing = settings.rollbackOnCrashLoop && stampedNow
        ? podsOf(observed.pods, w)
            .filter((p) => p.annotations[ANNOTATION_CONFIG_HASH] === hash && p.annotations[ANNOTATION_INJECTED] !== undefined)
            .map((p) => ({ pod: p, container: crashLoopingContainer(p, settings.crashLoopRestarts) }))
            .find((x) => x.container)
        : undefined;
      if (previous?.state === 'RolledBack' && previous.configHash === hash) {
        desired = {};
        why = 'rolled back earlier';
        outcomes.set(key, { state: 'RolledBack', configHash: hash, message: previous.message });
      } else if (crashing) {
        desired = {};
        why = 'rollback: injected pods crash-loop';
        const message = `pod ${crashing.pod.name}: container ${crashing.container!.name} restarted ${crashing.container!.restartCount} times under the tracer; stamp removed (change the TracedWorkload to try again)`;
        outcomes.set(key, { state: 'RolledBack', configHash: hash, message });
        rolledBackNow.add(tracedWorkloadKey(tw));
        rest.push(
          { type: 'event', regarding: tracedWorkloadRef(tw), eventType: 'Warning', reason: 'RolledBack', action: 'Rollback', note: `${describe(w)}: ${message}` },
          { type: 'event', regarding: workloadRef(w), eventType: 'Warning', reason: 'RolledBack', action: 'Rollback', note: `rbinder removed its stamp: ${message}` },
        );
      } else if (settings.automatic || w.onDelete) {
        desired = full;
        why = `selected by TracedWorkload ${tw.metadata.name}`;
        outcomes.set(key, { state: 'Stamped', configHash: hash });
      } else {
        // No automatic rollout: leave the template as it is (a change would restart the pods).
        desired = w.stamp;
        why = 'rollout disabled';
        outcomes.set(key, { state: sameStamp(w.stamp, full) ? 'Stamped' : 'RestartNeeded', configHash: hash });
      }
    } else if (sel.by === 'annotation') {
      desired = options.automaticRolloutByDefault || w.onDelete ? { [ANNOTATION_INJECT]: 'true', [ANNOTATION_CONFIG_HASH]: DEFAULT_WORKLOAD_CONFIG_HASH } : w.stamp;
      why = `annotated ${ANNOTATION_INJECT}=true`;
    } else {
      desired = {};
      why = 'not selected';
    }
    if (!sameStamp(desired, w.stamp)) {
      stamps.push({ type: 'stamp', workload: { kind: w.kind, namespace: w.namespace, name: w.name }, annotations: desired, why });
      if (sel.by === 'annotation') {
        rest.push({ type: 'event', regarding: workloadRef(w), eventType: 'Normal', reason: 'Stamped', action: 'Stamp', note: `annotated ${ANNOTATION_INJECT}=true: pod template stamped; its pods roll onto the tracer` });
      } else if (sel.by === 'none' && Object.keys(w.stamp).length > 0) {
        rest.push({ type: 'event', regarding: workloadRef(w), eventType: 'Normal', reason: 'Reverted', action: 'Unstamp', note: 'no longer selected: rbinder stamp removed; its pods roll back to the untraced template' });
      }
    }
  }

  // 2. Each TracedWorkload: collector, status, events, finalizer removal.
  for (const tw of observed.tracedWorkloads) {
    const twKey = tracedWorkloadKey(tw);
    const ns = tw.metadata.namespace;
    const name = tw.metadata.name;
    if (tw.metadata.deletionTimestamp) {
      // Gone once no workload carries its stamp; its collector goes with it (ownerReferences).
      const stillStamped = observed.workloads.some((w) => w.namespace === ns && w.stamp[ANNOTATION_TRACED_WORKLOAD] === name);
      if (!stillStamped && hasFinalizer(tw)) rest.push({ type: 'removeFinalizer', tracedWorkload: { namespace: ns, name } });
      continue;
    }

    // Collector objects.
    const desiredObjects = desiredCollectorObjects(tw, { defaultImage: options.collectorImage });
    const ours = observed.collectorObjects.filter(
      (o) => o.metadata?.namespace === ns && o.metadata?.labels?.[LABEL_INSTANCE] === name && (o.metadata?.ownerReferences ?? []).some((r) => r.uid === tw.metadata.uid),
    );
    for (const want of desiredObjects) {
      const have = ours.find((o) => o.kind === want.kind && o.metadata?.name === want.metadata?.name);
      if (have?.metadata?.annotations?.[ANNOTATION_APPLIED_HASH] !== want.metadata?.annotations?.[ANNOTATION_APPLIED_HASH]) {
        rest.push({ type: 'apply', object: want });
        if (want.kind === 'Deployment') {
          rest.push({ type: 'event', regarding: tracedWorkloadRef(tw), eventType: 'Normal', reason: have ? 'CollectorUpdated' : 'CollectorProvisioned', action: 'Provision', note: `collector ${want.metadata?.name} ${have ? 'updated' : 'created'}` });
        }
      }
    }
    for (const have of ours) {
      if (!desiredObjects.some((o) => o.kind === have.kind && o.metadata?.name === have.metadata?.name)) {
        rest.push({ type: 'delete', object: { apiVersion: have.apiVersion ?? 'v1', kind: have.kind ?? '', namespace: ns, name: have.metadata?.name ?? '' } });
      }
    }

    // Status.
    const config = tracedWorkloadConfig(tw);
    const hash = config.configHash!;
    const entries: WorkloadStatus[] = [];
    for (const claim of claims.get(twKey) ?? []) {
      const w = claim.workload;
      const ref = { kind: w.kind, name: w.name };
      if (claim.optedOut) entries.push({ ...ref, state: 'OptedOut', message: `the workload is annotated ${ANNOTATION_INJECT}=false` });
      else if (claim.lostTo) entries.push({ ...ref, state: 'Conflict', message: `also selected by the older TracedWorkload ${claim.lostTo}, which applies` });
      else {
        const outcome = outcomes.get(workloadKey(w));
        if (!outcome) continue; // waiting for the finalizer
        const counts = outcome.state === 'RolledBack' ? { injectedPods: 0, podsNeedingRestart: 0 } : podCounts(podsOf(observed.pods, w), hash);
        entries.push({ ...ref, state: outcome.state, configHash: outcome.configHash, ...(outcome.message ? { message: outcome.message } : {}), ...counts });
      }
    }
    entries.sort((a, b) => (`${a.kind}/${a.name}` < `${b.kind}/${b.name}` ? -1 : 1));
    const own = entries.filter((e) => e.state === 'Stamped' || e.state === 'RestartNeeded');
    const rolledBack = entries.filter((e) => e.state === 'RolledBack');
    const conflicts = entries.filter((e) => e.state === 'Conflict');
    const injectedPods = own.reduce((n, e) => n + (e.injectedPods ?? 0), 0);
    const podsNeedingRestart = own.reduce((n, e) => n + (e.podsNeedingRestart ?? 0), 0);
    const generation = tw.metadata.generation;
    const prev = tw.status?.conditions;
    const now = options.now;

    let collectorCond: Condition;
    if (tw.spec.collector?.provision) {
      const deployment = ours.find((o) => o.kind === 'Deployment');
      const available = collectorAvailable(deployment as Parameters<typeof collectorAvailable>[0]);
      collectorCond = condition(CONDITION_COLLECTOR_READY, available.ready, available.ready ? 'Available' : 'Progressing', available.message, generation, prev, now);
    } else if (tw.spec.collector?.endpoint) {
      collectorCond = condition(CONDITION_COLLECTOR_READY, true, 'External', `pods send to ${tw.spec.collector.endpoint}`, generation, prev, now);
    } else {
      collectorCond = condition(CONDITION_COLLECTOR_READY, true, 'ClusterDefault', "pods send to the controller's default collector endpoint", generation, prev, now);
    }

    let rolledOut: Condition;
    const restartNeeded = own.filter((e) => e.state === 'RestartNeeded' || (e.podsNeedingRestart ?? 0) > 0);
    if (own.length === 0) {
      const why = rolledBack.length > 0 ? 'RolledBack' : 'NoWorkloadsSelected';
      rolledOut = condition(CONDITION_ROLLED_OUT, false, why, rolledBack.length > 0 ? 'every selected workload was rolled back' : 'the selector and names match no Deployment, StatefulSet or DaemonSet in this namespace', generation, prev, now);
    } else if (!rolloutSettings(tw, options.automaticRolloutByDefault).automatic && restartNeeded.length > 0) {
      rolledOut = condition(
        CONDITION_ROLLED_OUT,
        false,
        'RestartNeeded',
        `automatic rollout is off: ${podsNeedingRestart} pods run without the current configuration; restart them: ${restartNeeded.map((e) => restartCommand({ ...e, namespace: ns })).join('; ')}`,
        generation,
        prev,
        now,
      );
    } else if (podsNeedingRestart > 0) {
      rolledOut = condition(CONDITION_ROLLED_OUT, false, 'Progressing', `${podsNeedingRestart} pods not yet replaced by traced ones (${restartNeeded.map(describe).join(', ')})`, generation, prev, now);
    } else {
      rolledOut = condition(CONDITION_ROLLED_OUT, true, 'RolledOut', `${own.length} workloads, ${injectedPods} pods traced with configuration ${hash}`, generation, prev, now);
    }

    const problems: { reason: string; message: string }[] = [];
    if (options.excludedNamespaces.has(ns)) problems.push({ reason: 'ExcludedNamespace', message: `namespace ${ns} is never injected` });
    if (rolledBack.length > 0) problems.push({ reason: 'CrashLoopRollback', message: rolledBack.map((e) => `${describe(e)}: ${e.message ?? 'rolled back'}`).join('; ') });
    if (conflicts.length > 0) problems.push({ reason: 'Conflict', message: conflicts.map((e) => `${describe(e)}: ${e.message}`).join('; ') });
    const degraded: Condition = problems.length
      ? condition(CONDITION_DEGRADED, true, problems[0]!.reason, problems.map((p) => p.message).join('; '), generation, prev, now)
      : condition(CONDITION_DEGRADED, false, 'AsExpected', 'no rollback, conflict or exclusion', generation, prev, now);

    const notReady = [collectorCond, rolledOut].find((c) => c.status !== 'True') ?? (degraded.status === 'True' ? degraded : undefined);
    const ready = notReady
      ? condition(CONDITION_READY, false, notReady.reason, `${notReady.type}: ${notReady.message}`, generation, prev, now)
      : condition(CONDITION_READY, true, 'Ready', `${own.length} workloads traced`, generation, prev, now);

    const status: TracedWorkloadStatus = {
      observedGeneration: generation,
      configHash: hash,
      selectedWorkloads: own.length,
      injectedPods,
      podsNeedingRestart,
      collector: collectorEndpoint(tw) ?? 'default',
      conditions: [ready, collectorCond, rolledOut, degraded],
      workloads: entries,
    };
    if (canonicalJson(status) !== canonicalJson(tw.status ?? {})) {
      if (rolledBackNow.has(twKey)) first.push({ type: 'status', tracedWorkload: { namespace: ns, name }, status, blocking: true });
      else rest.push({ type: 'status', tracedWorkload: { namespace: ns, name }, status });
    }

    // Events for workloads whose state changed.
    for (const e of entries) {
      const before = tw.status?.workloads?.find((p) => p.kind === e.kind && p.name === e.name);
      if (before?.state === e.state && before.configHash === e.configHash) continue;
      if (e.state === 'Stamped') {
        rest.push({ type: 'event', regarding: tracedWorkloadRef(tw), eventType: 'Normal', reason: 'Stamped', action: 'Stamp', note: `${describe(e)} stamped with configuration ${hash}; its pods roll onto the tracer` });
      } else if (e.state === 'RestartNeeded') {
        rest.push({ type: 'event', regarding: tracedWorkloadRef(tw), eventType: 'Normal', reason: 'RestartNeeded', action: 'Stamp', note: `${describe(e)} selected; automatic rollout is off: ${restartCommand({ ...e, namespace: ns })}` });
      } else if (e.state === 'Conflict') {
        rest.push({ type: 'event', regarding: tracedWorkloadRef(tw), eventType: 'Warning', reason: 'Conflict', action: 'Select', note: `${describe(e)}: ${e.message}` });
      }
    }
    for (const before of tw.status?.workloads ?? []) {
      if (!entries.some((e) => e.kind === before.kind && e.name === before.name)) {
        rest.push({ type: 'event', regarding: tracedWorkloadRef(tw), eventType: 'Normal', reason: 'Reverted', action: 'Unstamp', note: `${describe(before)} no longer selected: stamp removed` });
      }
    }
  }

  return [...first, ...stamps, ...rest];
}
