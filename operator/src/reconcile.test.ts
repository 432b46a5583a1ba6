import { describe, expect, it } from 'vitest';
import { DEFAULT_WORKLOAD_CONFIG_HASH, tracedWorkloadConfig } from './config';
import { injectedPod, NOW, OPTIONS, pod, stamped, state, tracedWorkload, workload } from './fixtures';
import { ANNOTATION_APPLIED_HASH, ANNOTATION_CONFIG_HASH, ANNOTATION_INJECT, ANNOTATION_TRACED_WORKLOAD, FINALIZER, LABEL_MANAGED_BY, MANAGED_BY } from './names';
import type { ObservedState } from './observed';
import { reconcile, type Action, type ReconcileOptions } from './reconcile';
import type { TracedWorkload, TracedWorkloadSpec } from './types';

const bySelector: TracedWorkloadSpec = { selector: { matchLabels: { tier: 'web' } } };
const web = workload('Deployment', 'web', { labels: { tier: 'web' } });
const hashOf = (tw: TracedWorkload): string => tracedWorkloadConfig(tw).configHash!;

const only = <T extends Action['type']>(actions: Action[], type: T): Extract<Action, { type: T }>[] => actions.filter((a): a is Extract<Action, { type: T }> => a.type === type);
const stamps = (actions: Action[]): Record<string, Record<string, string>> =>
  Object.fromEntries(only(actions, 'stamp').map((a) => [`${a.workload.kind}/${a.workload.name}`, a.annotations]));
const statusOf = (actions: Action[], name: string) => only(actions, 'status').find((a) => a.tracedWorkload.name === name)?.status;
const condition = (actions: Action[], name: string, type: string) => statusOf(actions, name)?.conditions?.find((c) => c.type === type);

/** What the API server would hold after the actions (enough for the reconciler to see its own writes). */
function afterActions(observed: ObservedState, actions: Action[]): ObservedState {
  const next = structuredClone(observed);
  for (const a of actions) {
    const tw = 'tracedWorkload' in a ? next.tracedWorkloads.find((t) => t.metadata.name === a.tracedWorkload.name) : undefined;
    if (a.type === 'addFinalizer') tw!.metadata.finalizers = [...(tw!.metadata.finalizers ?? []), FINALIZER];
    if (a.type === 'removeFinalizer') next.tracedWorkloads = next.tracedWorkloads.filter((t) => t !== tw);
    if (a.type === 'status') tw!.status = a.status;
    if (a.type === 'stamp') {
      const w = next.workloads.find((x) => x.kind === a.workload.kind && x.name === a.workload.name)!;
      for (const k of Object.keys(w.stamp)) delete w.templateAnnotations[k];
      w.stamp = { ...a.annotations };
      Object.assign(w.templateAnnotations, a.annotations);
    }
    if (a.type === 'apply') next.collectorObjects = [...next.collectorObjects.filter((o) => !(o.kind === a.object.kind && o.metadata?.name === a.object.metadata?.name)), a.object];
    if (a.type === 'delete') next.collectorObjects = next.collectorObjects.filter((o) => !(o.kind === a.object.kind && o.metadata?.name === a.object.name));
  }
  return next;
}

/** Reconciles until nothing is left to do; returns every pass's actions. */
function converge(observed: ObservedState, options: ReconcileOptions = OPTIONS): { passes: Action[][]; final: ObservedState } {
  const passes: Action[][] = [];
  let current = observed;
  for (let i = 0; i < 5; i++) {
    const actions = reconcile(current, options);
    if (actions.length === 0) return { passes, final: current };
    passes.push(actions);
    current = afterActions(current, actions);
  }
  throw new Error(`no convergence: ${JSON.stringify(passes.at(-1))}`);
}

describe('reconcile: stamping', () => {
  it('adds the finalizer first, blocking, and stamps nothing before it', () => {
    const tw = tracedWorkload('tw', bySelector, { finalizers: [] });
    const actions = reconcile(state({ tracedWorkloads: [tw], workloads: [web] }), OPTIONS);
    expect(actions[0]).toEqual({ type: 'addFinalizer', tracedWorkload: { namespace: 'shop', name: 'tw' }, blocking: true });
    expect(stamps(actions)).toEqual({});
  });

  const tw = tracedWorkload('tw', bySelector);
  const hash = hashOf(tw);
  const cases: { name: string; observed: ObservedState; options?: Partial<ReconcileOptions>; stamps: Record<string, Record<string, string>> }[] = [
    {
      name: 'stamps a workload the selector matches',
      observed: state({ tracedWorkloads: [tw], workloads: [web, workload('Deployment', 'db', { labels: { tier: 'db' } })] }),
      stamps: { 'Deployment/web': { [ANNOTATION_TRACED_WORKLOAD]: 'tw', [ANNOTATION_CONFIG_HASH]: hash } },
    },
    {
      name: 'stamps a workload named in spec.workloads',
      observed: state({ tracedWorkloads: [tracedWorkload('tw', { workloads: [{ kind: 'StatefulSet', name: 'db' }] })], workloads: [workload('StatefulSet', 'db'), workload('Deployment', 'db')] }),
      stamps: { 'StatefulSet/db': { [ANNOTATION_TRACED_WORKLOAD]: 'tw', [ANNOTATION_CONFIG_HASH]: hashOf(tracedWorkload('tw', { workloads: [{ kind: 'StatefulSet', name: 'db' }] })) } },
    },
    { name: 'leaves a workload stamped with the current hash alone', observed: state({ tracedWorkloads: [tw], workloads: [stamped(web, 'tw', hash)] }), stamps: {} },
    {
      name: 're-stamps when the configuration changed (pods roll)',
      observed: state({ tracedWorkloads: [tw], workloads: [stamped(web, 'tw', 'oldhash')] }),
      stamps: { 'Deployment/web': { [ANNOTATION_TRACED_WORKLOAD]: 'tw', [ANNOTATION_CONFIG_HASH]: hash } },
    },
    {
      name: 'removes the stamp from a workload no longer selected',
      observed: state({ tracedWorkloads: [tw], workloads: [stamped(workload('Deployment', 'web', { labels: { tier: 'other' } }), 'tw', hash)] }),
      stamps: { 'Deployment/web': {} },
    },
    {
      name: 'removes the stamp of a TracedWorkload that no longer exists',
      observed: state({ workloads: [stamped(web, 'gone', hash)] }),
      stamps: { 'Deployment/web': {} },
    },
    {
      name: 'stamps a workload annotated rbinder.io/inject=true with the default configuration',
      observed: state({ workloads: [workload('DaemonSet', 'agent', { annotations: { [ANNOTATION_INJECT]: 'true' } })] }),
      stamps: { 'DaemonSet/agent': { [ANNOTATION_INJECT]: 'true', [ANNOTATION_CONFIG_HASH]: DEFAULT_WORKLOAD_CONFIG_HASH } },
    },
    {
      name: 'never stamps a workload opted out with rbinder.io/inject=false',
      observed: state({ tracedWorkloads: [tw], workloads: [workload('Deployment', 'web', { labels: { tier: 'web' }, annotations: { [ANNOTATION_INJECT]: 'false' } })] }),
      stamps: {},
    },
    {
      name: 'never stamps in an excluded namespace',
      observed: state({ workloads: [workload('Deployment', 'dns', { namespace: 'kube-system', annotations: { [ANNOTATION_INJECT]: 'true' } })] }),
      stamps: {},
    },
    {
      name: "never stamps the operator's own collectors, even under an empty selector",
      observed: state({ tracedWorkloads: [tracedWorkload('tw', { selector: {} })], workloads: [workload('Deployment', 'tw-collector', { labels: { [LABEL_MANAGED_BY]: MANAGED_BY } })] }),
      stamps: {},
    },
    {
      name: "never touches the template annotations of the operator's own collector Deployment",
      observed: state({ workloads: [{ ...workload('Deployment', 'tw-collector', { labels: { [LABEL_MANAGED_BY]: MANAGED_BY } }), stamp: { [ANNOTATION_INJECT]: 'false' } }] }),
      stamps: {},
    },
    {
      name: 'with automatic rollout off, leaves the template alone',
      observed: state({ tracedWorkloads: [tracedWorkload('tw', { ...bySelector, rollout: { automatic: false } })], workloads: [web] }),
      stamps: {},
    },
    {
      name: 'with automatic rollout off by default, leaves annotated workloads alone',
      observed: state({ workloads: [workload('Deployment', 'api', { annotations: { [ANNOTATION_INJECT]: 'true' } })] }),
      options: { automaticRolloutByDefault: false },
      stamps: {},
    },
    {
      name: 'with automatic rollout off, still stamps an OnDelete StatefulSet (nothing restarts)',
      observed: state({ tracedWorkloads: [tracedWorkload('tw', { workloads: [{ kind: 'StatefulSet', name: 'db' }], rollout: { automatic: false } })], workloads: [workload('StatefulSet', 'db', { onDelete: true })] }),
      stamps: { 'StatefulSet/db': { [ANNOTATION_TRACED_WORKLOAD]: 'tw', [ANNOTATION_CONFIG_HASH]: hashOf(tracedWorkload('tw', { workloads: [{ kind: 'StatefulSet', name: 'db' }], rollout: { automatic: false } })) } },
    },
    {
      name: 'the older of two TracedWorkloads selecting one workload wins',
      observed: state({
        tracedWorkloads: [tracedWorkload('young', bySelector, { creationTimestamp: new Date('2025-12-02T00:00:00Z') }), tracedWorkload('old', bySelector, { creationTimestamp: new Date('2025-11-01T00:00:00Z') })],
        workloads: [web],
      }),
      stamps: { 'Deployment/web': { [ANNOTATION_TRACED_WORKLOAD]: 'old', [ANNOTATION_CONFIG_HASH]: hashOf(tracedWorkload('old', bySelector)) } },
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(stamps(reconcile(c.observed, { ...OPTIONS, ...c.options }))).toEqual(c.stamps);
    });
  }

  it('converges: a second pass over its own writes does nothing', () => {
    const { passes, final } = converge(state({ tracedWorkloads: [tracedWorkload('tw', { ...bySelector, collector: { provision: {} } }, { finalizers: [] })], workloads: [web] }));
    expect(passes.length).toBeGreaterThanOrEqual(2);
    expect(final.workloads[0]!.stamp[ANNOTATION_TRACED_WORKLOAD]).toBe('tw');
    expect(final.collectorObjects.map((o) => o.kind).sort()).toEqual(['ConfigMap', 'Deployment', 'Service']);
  });
});

describe('reconcile: deletion', () => {
  const deleting = tracedWorkload('tw', bySelector, { deletionTimestamp: NOW });
  it('reverts the workloads of a TracedWorkload being deleted, keeping the finalizer until they are', () => {
    const actions = reconcile(state({ tracedWorkloads: [deleting], workloads: [stamped(web, 'tw', 'h')] }), OPTIONS);
    expect(stamps(actions)).toEqual({ 'Deployment/web': {} });
    expect(only(actions, 'removeFinalizer')).toEqual([]);
  });
  it('removes the finalizer once no workload carries its stamp', () => {
    const actions = reconcile(state({ tracedWorkloads: [deleting], workloads: [web] }), OPTIONS);
    expect(only(actions, 'removeFinalizer')).toEqual([{ type: 'removeFinalizer', tracedWorkload: { namespace: 'shop', name: 'tw' } }]);
  });
  it('hands a workload to the next TracedWorkload that selects it', () => {
    const next = tracedWorkload('next', bySelector, { creationTimestamp: new Date('2025-12-05T00:00:00Z') });
    const actions = reconcile(state({ tracedWorkloads: [deleting, next], workloads: [stamped(web, 'tw', 'h')] }), OPTIONS);
    expect(stamps(actions)['Deployment/web']?.[ANNOTATION_TRACED_WORKLOAD]).toBe('next');
  });
  it('converges to no finalizer and no stamp', () => {
    const { final } = converge(state({ tracedWorkloads: [deleting], workloads: [stamped(web, 'tw', 'h')] }));
    expect(final.tracedWorkloads).toEqual([]);
    expect(final.workloads[0]!.stamp).toEqual({});
  });
});

describe('reconcile: crash-loop rollback', () => {
  const tw = tracedWorkload('tw', bySelector);
  const hash = hashOf(tw);
  const crashing = [{ name: 'app', restartCount: 3, waitingReason: 'CrashLoopBackOff' }];

  it('removes the stamp of a workload whose injected pods crash-loop, recording it first', () => {
    const actions = reconcile(state({ tracedWorkloads: [tw], workloads: [stamped(web, 'tw', hash)], pods: [injectedPod(web, 'web-1', 'tw', hash, crashing)] }), OPTIONS);
    expect(actions[0]).toMatchObject({ type: 'status', blocking: true });
    expect(stamps(actions)).toEqual({ 'Deployment/web': {} });
    const entry = statusOf(actions, 'tw')!.workloads![0]!;
    expect(entry).toMatchObject({ kind: 'Deployment', name: 'web', state: 'RolledBack', configHash: hash });
    expect(entry.message).toContain('web-1');
    expect(condition(actions, 'tw', 'Degraded')).toMatchObject({ status: 'True', reason: 'CrashLoopRollback' });
    expect(only(actions, 'event').filter((e) => e.reason === 'RolledBack').map((e) => e.regarding.kind).sort()).toEqual(['Deployment', 'TracedWorkload']);
  });

  const cases = [
    { name: 'not below the restart threshold', pods: [injectedPod(web, 'web-1', 'tw', hash, [{ name: 'app', restartCount: 2, waitingReason: 'CrashLoopBackOff' }])] },
    { name: 'not for pods of an earlier configuration', pods: [injectedPod(web, 'web-1', 'tw', 'old', crashing)] },
    { name: 'not for pods the webhook did not inject', pods: [pod(web, 'web-1', { [ANNOTATION_CONFIG_HASH]: hash }, crashing)] },
  ];
  for (const c of cases) {
    it(`rolls back ${c.name}`, () => {
      expect(stamps(reconcile(state({ tracedWorkloads: [tw], workloads: [stamped(web, 'tw', hash)], pods: c.pods }), OPTIONS))).toEqual({});
    });
  }

  it('does not roll back when rollbackOnCrashLoop is off', () => {
    const off = tracedWorkload('tw', { ...bySelector, rollout: { rollbackOnCrashLoop: false } });
    const h = hashOf(off);
    expect(stamps(reconcile(state({ tracedWorkloads: [off], workloads: [stamped(web, 'tw', h)], pods: [injectedPod(web, 'web-1', 'tw', h, crashing)] }), OPTIONS))).toEqual({});
  });

  it('does not stamp again with the configuration that crashed, but does with a new one', () => {
    const rolledBack = tracedWorkload('tw', bySelector, { status: { workloads: [{ kind: 'Deployment', name: 'web', state: 'RolledBack', configHash: hash, message: 'crashed' }] } });
    const actions = reconcile(state({ tracedWorkloads: [rolledBack], workloads: [web] }), OPTIONS);
    expect(stamps(actions)).toEqual({});
    const changed = tracedWorkload('tw', { ...bySelector, sampling: { ratio: 0.5 } }, { status: rolledBack.status });
    expect(stamps(reconcile(state({ tracedWorkloads: [changed], workloads: [web] }), OPTIONS))['Deployment/web']?.[ANNOTATION_CONFIG_HASH]).toBe(hashOf(changed));
  });
});

describe('reconcile: status', () => {
  const tw = tracedWorkload('tw', bySelector);
  const hash = hashOf(tw);

  it('counts injected pods and pods still to be replaced; RolledOut waits for them', () => {
    const actions = reconcile(state({ tracedWorkloads: [tw], workloads: [stamped(web, 'tw', hash)], pods: [injectedPod(web, 'a', 'tw', hash), pod(web, 'b')] }), OPTIONS);
    const status = statusOf(actions, 'tw')!;
    expect(status).toMatchObject({ observedGeneration: 1, configHash: hash, selectedWorkloads: 1, injectedPods: 1, podsNeedingRestart: 1, collector: 'default' });
    expect(condition(actions, 'tw', 'RolledOut')).toMatchObject({ status: 'False', reason: 'Progressing', observedGeneration: 1 });
    expect(condition(actions, 'tw', 'Ready')).toMatchObject({ status: 'False', reason: 'Progressing' });
  });

  it('is Ready when every pod runs the current configuration', () => {
    const actions = reconcile(state({ tracedWorkloads: [tw], workloads: [stamped(web, 'tw', hash)], pods: [injectedPod(web, 'a', 'tw', hash)] }), OPTIONS);
    expect(statusOf(actions, 'tw')!.conditions!.map((c) => [c.type, c.status, c.reason])).toEqual([
      ['Ready', 'True', 'Ready'],
      ['CollectorReady', 'True', 'ClusterDefault'],
      ['RolledOut', 'True', 'RolledOut'],
      ['Degraded', 'False', 'AsExpected'],
    ]);
  });

  it('says pods need a restart when automatic rollout is off', () => {
    const manual = tracedWorkload('tw', { ...bySelector, rollout: { automatic: false } });
    const actions = reconcile(state({ tracedWorkloads: [manual], workloads: [web], pods: [pod(web, 'a'), pod(web, 'b')] }), OPTIONS);
    expect(statusOf(actions, 'tw')!.workloads).toEqual([{ kind: 'Deployment', name: 'web', state: 'RestartNeeded', configHash: hashOf(manual), injectedPods: 0, podsNeedingRestart: 2 }]);
    const rolledOut = condition(actions, 'tw', 'RolledOut')!;
    expect(rolledOut).toMatchObject({ status: 'False', reason: 'RestartNeeded' });
    expect(rolledOut.message).toContain('kubectl rollout restart deployment/web -n shop');
  });

  it('reports conflicts on the younger TracedWorkload', () => {
    const young = tracedWorkload('young', bySelector, { creationTimestamp: new Date('2025-12-09T00:00:00Z') });
    const actions = reconcile(state({ tracedWorkloads: [tw, young], workloads: [web] }), OPTIONS);
    expect(statusOf(actions, 'young')!.workloads).toEqual([{ kind: 'Deployment', name: 'web', state: 'Conflict', message: 'also selected by the older TracedWorkload tw, which applies' }]);
    expect(condition(actions, 'young', 'Degraded')).toMatchObject({ status: 'True', reason: 'Conflict' });
    expect(condition(actions, 'young', 'RolledOut')).toMatchObject({ status: 'False', reason: 'NoWorkloadsSelected' });
  });

  it('keeps lastTransitionTime while a condition keeps its status, and writes nothing when nothing changed', () => {
    const first = reconcile(state({ tracedWorkloads: [tw], workloads: [stamped(web, 'tw', hash)] }), OPTIONS);
    const seen = tracedWorkload('tw', bySelector, { status: statusOf(first, 'tw') });
    const later = { ...OPTIONS, now: new Date(NOW.getTime() + 60_000) };
    expect(reconcile(state({ tracedWorkloads: [seen], workloads: [stamped(web, 'tw', hash)] }), later)).toEqual([]);
  });

  it('the collector: provisioned objects owned by the TracedWorkload; Ready once available', () => {
    const prov = tracedWorkload('tw', { ...bySelector, collector: { provision: { replicas: 2 } } });
    const first = reconcile(state({ tracedWorkloads: [prov], workloads: [web] }), OPTIONS);
    const applied = only(first, 'apply').map((a) => a.object);
    expect(applied.map((o) => `${o.kind}/${o.metadata?.name}`)).toEqual(['ConfigMap/tw-collector', 'Deployment/tw-collector', 'Service/tw-collector']);
    for (const o of applied) expect(o.metadata?.ownerReferences).toEqual([expect.objectContaining({ kind: 'TracedWorkload', name: 'tw', uid: 'uid-tw', controller: true })]);
    expect(statusOf(first, 'tw')!.collector).toBe('http://tw-collector.shop.svc:4318');
    expect(condition(first, 'tw', 'CollectorReady')).toMatchObject({ status: 'False', reason: 'Progressing' });

    const deployment = { ...applied[1]!, metadata: { ...applied[1]!.metadata, generation: 1 }, status: { observedGeneration: 1, availableReplicas: 2, updatedReplicas: 2 } };
    const second = reconcile(state({ tracedWorkloads: [prov], workloads: [web], collectorObjects: [applied[0]!, deployment, applied[2]!] }), OPTIONS);
    expect(only(second, 'apply')).toEqual([]);
    expect(condition(second, 'tw', 'CollectorReady')).toMatchObject({ status: 'True', reason: 'Available' });

    // Switching to an existing endpoint deletes what was provisioned.
    const external = tracedWorkload('tw', { ...bySelector, collector: { endpoint: 'http://otel.obs:4318' } });
    const third = reconcile(state({ tracedWorkloads: [external], workloads: [web], collectorObjects: applied }), OPTIONS);
    expect(only(third, 'delete').map((d) => d.object.kind).sort()).toEqual(['ConfigMap', 'Deployment', 'Service']);
    expect(condition(third, 'tw', 'CollectorReady')).toMatchObject({ status: 'True', reason: 'External' });
  });

  it('re-applies a provisioned object someone changed', () => {
    const prov = tracedWorkload('tw', { ...bySelector, collector: { provision: {} } });
    const applied = only(reconcile(state({ tracedWorkloads: [prov] }), OPTIONS), 'apply').map((a) => a.object);
    const edited = { ...applied[0]!, metadata: { ...applied[0]!.metadata, annotations: { [ANNOTATION_APPLIED_HASH]: 'edited' } } };
    const actions = reconcile(state({ tracedWorkloads: [prov], collectorObjects: [edited, applied[1]!, applied[2]!] }), OPTIONS);
    expect(only(actions, 'apply').map((a) => a.object.kind)).toEqual(['ConfigMap']);
  });
});
