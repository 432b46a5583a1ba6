// The thin loop around reconcile(): informers feed a snapshot, any change schedules one pass
// (coalesced), and the pass carries out the actions in order. Level-triggered: a failed action is
// simply found again on the next pass, which comes after a capped backoff.

import type { KubernetesObject, V1Pod } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { Counter, Histogram, Registry } from 'prom-client';
import type { TracedWorkloadCache } from './cache';
import { backoffDelay, ResilientInformer, type Backoff } from './informer';
import { errorText, isNotFound, isStatus, retryOnConflict, type Kube } from './kube';
import { counter, histogram } from './metrics';
import { FINALIZER, LABEL_MANAGED_BY, MANAGED_BY, WORKLOAD_KINDS, type WorkloadKind } from './names';
import { observePod, observeWorkload, type AppsWorkload, type ObservedState } from './observed';
import { reconcile, type Action, type ReconcileOptions } from './reconcile';
import type { TracedWorkload } from './types';

export interface ControllerOptions extends Omit<ReconcileOptions, 'now'> {
  /** A full pass at least this often, whatever happens. */
  resyncMs: number;
  /** Changes within this window are handled in one pass. */
  debounceMs: number;
  /** Delay before retrying after a failed pass. */
  retryBackoff: Backoff;
  registry?: Registry;
}

export class Controller {
  private readonly workloads = new Map<WorkloadKind, ResilientInformer<KubernetesObject>>();
  private readonly pods: ResilientInformer<KubernetesObject>;
  private readonly configMaps: ResilientInformer<KubernetesObject>;
  private readonly services: ResilientInformer<KubernetesObject>;
  private unsubscribe: (() => void) | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = true;
  private failures = 0;
  private readonly metrics: { passes: Counter<'result'>; actions: Counter<'type' | 'result'>; duration: Histogram<string>; conflicts: Counter<string> };
  /** The last pass's outcome, for health checks and tests. */
  lastPass: { at: Date; actions: number; failed: number } | undefined;

  constructor(
    private readonly kube: Kube,
    private readonly cache: TracedWorkloadCache,
    private readonly options: ControllerOptions,
    private readonly logger: Logger,
  ) {
    const onChange = (): void => this.trigger();
    for (const kind of WORKLOAD_KINDS) this.workloads.set(kind, new ResilientInformer(kind.toLowerCase() + 's', kube.workloads(kind), logger, onChange));
    this.pods = new ResilientInformer('pods', kube.pods(), logger, onChange);
    this.configMaps = new ResilientInformer('configmaps', kube.collectorConfigMaps(), logger, onChange);
    this.services = new ResilientInformer('services', kube.collectorServices(), logger, onChange);
    const r = options.registry;
    this.metrics = {
      passes: counter(r, { name: 'rbinder_operator_reconcile_passes_total', help: 'Reconcile passes, by result', labelNames: ['result'] }),
      actions: counter(r, { name: 'rbinder_operator_actions_total', help: 'Actions carried out, by type and result', labelNames: ['type', 'result'] }),
      duration: histogram(r, { name: 'rbinder_operator_reconcile_duration_seconds', help: 'Duration of a reconcile pass' }),
      conflicts: counter(r, { name: 'rbinder_operator_conflicts_total', help: 'Writes retried after 409 Conflict' }),
    };
  }

  informers(): ResilientInformer<KubernetesObject>[] {
    return [...this.workloads.values(), this.pods, this.configMaps, this.services];
  }

  get synced(): boolean {
    return this.informers().every((i) => i.hasSynced);
  }

  async start(): Promise<void> {
    this.stopped = false;
    this.unsubscribe = this.cache.onChange(() => this.trigger());
    await Promise.all(this.informers().map((i) => i.start()));
    await Promise.all([...this.informers().map((i) => i.synced), this.cache.synced]);
    this.logger.info('operator caches synced');
    this.trigger(0);
  }

  /** Schedules a pass (coalescing changes within the debounce window). */
  trigger(delayMs = this.options.debounceMs): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.debounceTimer) return;
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      this.runPass();
    }, delayMs);
  }

  private runPass(): void {
    if (this.stopped || this.running) return;
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
    this.running = this.pass()
      .then((ok) => {
        this.metrics.passes.inc({ result: ok ? 'ok' : 'failed' });
        this.failures = ok ? 0 : this.failures + 1;
      })
      .catch((err: unknown) => {
        this.metrics.passes.inc({ result: 'error' });
        this.failures++;
        this.logger.error({ err: errorText(err) }, 'reconcile pass failed');
      })
      .finally(() => {
        this.running = undefined;
        if (this.stopped) return;
        if (this.again) {
          this.again = false;
          this.trigger();
        }
        // A failed pass is retried after a capped backoff; changes meanwhile still trigger passes
        // at once (a workload that cannot be written must not slow down all the others).
        if (this.failures > 0 && !this.retryTimer) {
          this.retryTimer = setTimeout(() => {
            this.retryTimer = undefined;
            this.trigger(0);
          }, backoffDelay(this.failures, this.options.retryBackoff));
          this.retryTimer.unref?.();
        }
        this.resyncTimer = setTimeout(() => this.trigger(0), this.options.resyncMs);
        this.resyncTimer.unref?.();
      });
  }

  snapshot(): ObservedState {
    const workloads = WORKLOAD_KINDS.flatMap((kind) => this.workloads.get(kind)!.list().map((o) => observeWorkload(kind, o as AppsWorkload)));
    const deployments = this.workloads.get('Deployment')!.list();
    const ours = (o: KubernetesObject): boolean => o.metadata?.labels?.[LABEL_MANAGED_BY] === MANAGED_BY;
    const withKind = (kind: string, apiVersion: string) => (o: KubernetesObject): KubernetesObject => ({ ...o, kind, apiVersion });
    return {
      tracedWorkloads: [...this.cache.list()],
      workloads,
      pods: this.pods.list().map((p) => observePod(p as V1Pod)),
      collectorObjects: [
        ...this.configMaps.list().map(withKind('ConfigMap', 'v1')),
        ...this.services.list().map(withKind('Service', 'v1')),
        ...deployments.filter(ours).map(withKind('Deployment', 'apps/v1')),
      ],
    };
  }

  /** One pass; false when an action failed. */
  private async pass(): Promise<boolean> {
    const end = this.metrics.duration.startTimer();
    const observed = this.snapshot();
    const actions = reconcile(observed, { ...this.options, now: new Date() });
    let failed = 0;
    for (const action of actions) {
      if (this.stopped) break;
      try {
        await this.execute(action, observed);
        this.metrics.actions.inc({ type: action.type, result: 'ok' });
      } catch (err) {
        failed++;
        this.metrics.actions.inc({ type: action.type, result: 'failed' });
        this.logger.warn({ action: describeAction(action), err: errorText(err) }, 'action failed');
        if (action.blocking) break;
      }
    }
    if (actions.length > 0) this.logger.debug({ actions: actions.length, failed }, 'reconcile pass');
    this.lastPass = { at: new Date(), actions: actions.length, failed };
    end();
    return failed === 0;
  }

  private async execute(action: Action, observed: ObservedState): Promise<void> {
    switch (action.type) {
      case 'addFinalizer':
      case 'removeFinalizer': {
        const { namespace, name } = action.tracedWorkload;
        await this.retry(async () => {
          let tw: TracedWorkload;
          try {
            tw = await this.kube.getTracedWorkload(namespace, name);
          } catch (err) {
            if (isNotFound(err)) return;
            throw err;
          }
          const finalizers = tw.metadata.finalizers ?? [];
          const has = finalizers.includes(FINALIZER);
          if (action.type === 'addFinalizer') {
            if (has || tw.metadata.deletionTimestamp) return;
            await this.kube.patchTracedWorkloadFinalizers(namespace, name, [...finalizers, FINALIZER], tw.metadata.resourceVersion!);
          } else {
            if (!has) return;
            await this.kube.patchTracedWorkloadFinalizers(namespace, name, finalizers.filter((f) => f !== FINALIZER), tw.metadata.resourceVersion!);
            this.logger.info({ tracedWorkload: `${namespace}/${name}` }, 'workloads reverted; finalizer removed');
          }
        });
        return;
      }
      case 'stamp': {
        const { kind, namespace, name } = action.workload;
        try {
          await this.kube.stampWorkload(kind, namespace, name, action.annotations);
          this.logger.info({ workload: `${namespace}/${kind}/${name}`, stamp: action.annotations, why: action.why }, Object.keys(action.annotations).length ? 'stamped' : 'stamp removed');
        } catch (err) {
          // Gone meanwhile (apply of a missing object is refused as invalid): nothing to stamp.
          if (isNotFound(err) || isStatus(err, 422)) return;
          throw err;
        }
        return;
      }
      case 'apply':
        await this.kube.applyObject(action.object);
        this.logger.info({ object: `${action.object.metadata?.namespace}/${action.object.kind}/${action.object.metadata?.name}` }, 'applied');
        return;
      case 'delete':
        try {
          await this.kube.deleteObject(action.object);
        } catch (err) {
          if (!isNotFound(err)) throw err;
        }
        return;
      case 'status': {
        const { namespace, name } = action.tracedWorkload;
        let current = observed.tracedWorkloads.find((t) => t.metadata.namespace === namespace && t.metadata.name === name);
        await this.retry(async () => {
          if (!current) current = await this.kube.getTracedWorkload(namespace, name);
          try {
            await this.kube.updateTracedWorkloadStatus(current, action.status);
          } catch (err) {
            current = undefined; // read again before the next try
            if (isNotFound(err)) return;
            throw err;
          }
        });
        return;
      }
      case 'event':
        await this.kube.createEvent(action.regarding, action.eventType, action.reason, action.action, action.note);
        return;
    }
  }

  private retry<T>(attempt: () => Promise<T>): Promise<T> {
    return retryOnConflict(attempt, 5, (n) => {
      this.metrics.conflicts.inc();
      this.logger.debug({ attempt: n }, 'conflict; retrying with a fresh read');
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.debounceTimer = undefined;
    await this.running;
    await Promise.all(this.informers().map((i) => i.stop()));
  }
}

function describeAction(a: Action): string {
  switch (a.type) {
    case 'stamp':
      return `stamp ${a.workload.namespace}/${a.workload.kind}/${a.workload.name}`;
    case 'apply':
      return `apply ${a.object.metadata?.namespace}/${a.object.kind}/${a.object.metadata?.name}`;
    case 'delete':
      return `delete ${a.object.namespace}/${a.object.kind}/${a.object.name}`;
    case 'event':
      return `event ${a.reason} on ${a.regarding.kind}/${a.regarding.name}`;
    default:
      return `${a.type} ${a.tracedWorkload.namespace}/${a.tracedWorkload.name}`;
  }
}
