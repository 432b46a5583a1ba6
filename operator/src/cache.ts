// TracedWorkloadCache: the webhook's view of TracedWorkloads, from an informer that runs on every
// replica (leader or not). Admission makes no API call: it asks this cache.

import type { Logger } from 'pino';
import { tracedWorkloadConfig, type TracedWorkloadConfig } from './config';
import { ResilientInformer } from './informer';
import type { Kube } from './kube';
import { PLURAL, type WorkloadKind } from './names';
import type { TracedWorkload } from './types';

export type { TracedWorkloadConfig } from './config';

export class TracedWorkloadCache {
  readonly informer: ResilientInformer<TracedWorkload>;
  private readonly listeners = new Set<() => void>();
  private readonly memo = new WeakMap<TracedWorkload, TracedWorkloadConfig>();

  constructor(kube: Kube, logger: Logger) {
    this.informer = new ResilientInformer(PLURAL, kube.tracedWorkloads(), logger, () => {
      for (const l of this.listeners) l();
    });
  }

  /**
   * The configuration of TracedWorkload `name` in `namespace` (what pods stamped
   * `rbinder.io/traced-workload: name` get), or undefined when the cache does not know it.
   */
  lookup = (namespace: string, name: string): TracedWorkloadConfig | undefined => {
    const tw = this.informer.get(name, namespace);
    return tw ? this.configOf(tw) : undefined;
  };

  /**
   * The TracedWorkload that selects a workload, for pods that carry no stamp (automatic rollout
   * off: the pod template is left alone, so new pods are matched by their owner). From the
   * TracedWorkloads' status, which the leader keeps.
   */
  forWorkload = (namespace: string, kind: WorkloadKind, name: string): { name: string; config: TracedWorkloadConfig } | undefined => {
    const tw = selectingTracedWorkload(this.informer.list(namespace), kind, name);
    return tw ? { name: tw.metadata.name, config: this.configOf(tw) } : undefined;
  };

  private configOf(tw: TracedWorkload): TracedWorkloadConfig {
    let config = this.memo.get(tw);
    if (!config) {
      config = tracedWorkloadConfig(tw);
      this.memo.set(tw, config);
    }
    return config;
  }

  list(): readonly TracedWorkload[] {
    return this.informer.list();
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get synced(): Promise<void> {
    return this.informer.synced;
  }

  async start(): Promise<void> {
    await this.informer.start();
  }

  async stop(): Promise<void> {
    await this.informer.stop();
  }
}

/** The TracedWorkload whose status says it applies to the workload (not a conflict, opt-out or rollback). */
export function selectingTracedWorkload(tracedWorkloads: readonly TracedWorkload[], kind: WorkloadKind, name: string): TracedWorkload | undefined {
  return tracedWorkloads.find(
    (tw) =>
      !tw.metadata.deletionTimestamp &&
      tw.status?.workloads?.some((w) => w.kind === kind && w.name === name && (w.state === 'Stamped' || w.state === 'RestartNeeded')),
  );
}
