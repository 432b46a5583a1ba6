// From a TracedWorkload's spec to what the webhook injects (TracedWorkloadConfig, defined by the
// webhook in webhook/src/config.ts), and the hash stamped on pod templates so that pods roll when,
// and only when, that configuration changes.

import { createHash } from 'node:crypto';
import type { TracedWorkloadConfig } from '../../webhook/src/config';
import { OTLP_GRPC_PORT, OTLP_HTTP_PORT } from './names';
import type { TracedWorkload } from './types';

export type { TracedWorkloadConfig } from '../../webhook/src/config';

export const DEFAULT_PROPAGATORS = ['tracecontext', 'baggage'];
export const DEFAULT_CRASH_LOOP_RESTARTS = 3;

/** JSON with object keys sorted and undefined members dropped: equal values, equal text. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalJson(v))).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

/** 16 hex digits of SHA-256 over the canonical JSON. */
export function hashOf(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex').slice(0, 16);
}

/** Name of the collector objects (ConfigMap, Deployment, Service) provisioned for a TracedWorkload. */
export function collectorName(tracedWorkloadName: string): string {
  const name = `${tracedWorkloadName}-collector`;
  if (name.length <= 63) return name;
  // Services need DNS-1035 labels: keep it short and unique.
  return `${tracedWorkloadName.slice(0, 45).replace(/-+$/, '')}-${hashOf(tracedWorkloadName).slice(0, 6)}-collector`;
}

/** The OTLP endpoint traced pods send to; undefined means the webhook's cluster-wide default. */
export function collectorEndpoint(tw: TracedWorkload): string | undefined {
  const collector = tw.spec.collector;
  if (collector?.endpoint) return collector.endpoint;
  if (collector?.provision) {
    const port = collector.protocol === 'grpc' ? OTLP_GRPC_PORT : OTLP_HTTP_PORT;
    return `http://${collectorName(tw.metadata.name)}.${tw.metadata.namespace}.svc:${port}`;
  }
  return undefined;
}

/** The configuration the webhook applies to pods stamped with this TracedWorkload (configHash included). */
export function tracedWorkloadConfig(tw: TracedWorkload): TracedWorkloadConfig {
  const spec = tw.spec;
  const ratio = spec.sampling?.ratio;
  const config: TracedWorkloadConfig = {
    serviceName: spec.serviceName || undefined,
    containers: spec.containers?.length ? [...spec.containers] : undefined,
    propagators: spec.propagators?.length ? [...spec.propagators] : DEFAULT_PROPAGATORS,
    sampler: ratio === undefined || ratio >= 1 ? { type: 'parentbased_always_on' } : { type: 'parentbased_traceidratio', argument: String(ratio) },
    injectTo: spec.injectTo?.length ? [...spec.injectTo] : undefined,
    collectorEndpoint: collectorEndpoint(tw),
    otlpProtocol: spec.collector?.protocol,
  };
  return { ...config, configHash: hashOf(config) };
}

/**
 * The configuration of a workload selected by its own `rbinder.io/inject: "true"` annotation: the
 * webhook's cluster-wide defaults. Its hash is a constant, so such pods roll once.
 */
export const DEFAULT_WORKLOAD_CONFIG_HASH = hashOf({ defaults: true });

export interface RolloutSettings {
  automatic: boolean;
  rollbackOnCrashLoop: boolean;
  crashLoopRestarts: number;
}

export function rolloutSettings(tw: TracedWorkload, automaticByDefault: boolean): RolloutSettings {
  const r = tw.spec.rollout;
  return {
    automatic: r?.automatic ?? automaticByDefault,
    rollbackOnCrashLoop: r?.rollbackOnCrashLoop ?? true,
    crashLoopRestarts: r?.crashLoopRestarts ?? DEFAULT_CRASH_LOOP_RESTARTS,
  };
}
