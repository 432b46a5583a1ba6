// How the configuration reaches the engine's injection: propagator formats as bits and the
// destination allow-list (parsed and matched by the engine, native/src/engine/propagation.cc).
import type { PropagatorName } from './config';

const PROPAGATOR_BITS: Record<PropagatorName, number> = {
  tracecontext: 1,
  baggage: 2,
  b3: 4,
  b3multi: 8,
};

export function propagatorMask(names: readonly PropagatorName[]): number {
  return names.reduce((mask, name) => mask | PROPAGATOR_BITS[name], 0);
}

/**
 * Where trace context is injected when RBINDER_INJECT_TO / --inject-to is not set: loopback,
 * private, CGNAT and link-local networks, and cluster-internal host names. Service-to-service
 * traffic inside a cluster or a VPC stays connected, while requests to public addresses (payment
 * providers, SaaS APIs) carry no trace ids or baggage, which may hold user data. Set "*" to inject
 * everywhere, "none" to never inject.
 */
export const DEFAULT_INJECT_TO: readonly string[] = [
  '127.0.0.0/8',
  '::1/128',
  '10.0.0.0/8',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '100.64.0.0/10',
  '169.254.0.0/16',
  'fc00::/7',
  'fe80::/10',
  'localhost',
  '.local',
  '.internal',
  '.svc',
  '.cluster.local',
];

export interface InjectionSettings {
  inject: boolean;
  injectTo: string[];
}

export function injectionSettings(injectTo: readonly string[], propagators: readonly PropagatorName[]): InjectionSettings {
  const entries = injectTo.map((e) => e.trim()).filter((e) => e !== '');
  if (propagators.length === 0 || entries.includes('none')) return { inject: false, injectTo: [] };
  return { inject: true, injectTo: entries.length > 0 ? entries : [...DEFAULT_INJECT_TO] };
}
