// TracedWorkloadCache: the webhook's view of TracedWorkloads, from an informer that runs on every
// replica (leader or not). Admission makes no API call: it asks this cache.

import type { Logger } from 'pino';
import { tracedWorkloadConfig, type TracedWorkloadConfig } from './config';
import { ResilientInformer } from './informer';
import type { Kube } from './kube';
import type { WorkloadKind } from './names';
import type { TracedWorkload } from './types';

export type { TracedWorkloadConfig } from './config';

export class TracedWorkloadCache {
  readonly informer: ResilientInformer<TracedWorkload>;
  private readonly listeners = new Set<() => void>();
  private readonly memo = new WeakMap<TracedWorkload, TracedWorkloadConfig>();

  constructor(kube: Kube, logger: Logger) {
    this.informer = new ResilientInformer('tracedworkloads', kube.tracedWorkloads(), logger, () => {
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
    for (const tw of this.informer.list(namespace)) {
      if (tw.metadata.deletionTimestamp) continue;
      const entry = tw.status?.workloads?.find((w) => w.kind === kind && w.name === name);
      if (entry && (entry.state === 'Stamped' || entry.state === 'RestartNeeded')) return { name: tw.metadata.name, config: this.configOf(tw) };
    }
    return undefined;
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
