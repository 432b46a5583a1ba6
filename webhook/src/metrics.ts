// The webhook's Prometheus metrics, on a registry of its own (served at /metrics).

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { LookupResult, RegistryErrorKind } from './registry/client';

/** How an admission request ended: the mutation results, or the handler's own failure, or a bad request. */
export type RequestResult = 'injected' | 'skipped' | 'ignored' | 'error' | 'invalid';

export class WebhookMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'result'>;
  readonly duration: Histogram<'result'>;
  readonly imageLookups: Counter<'result'>;
  readonly registryErrors: Counter<'kind'>;
  readonly certificateReloads: Counter<'result'>;
  readonly certificateExpiry: Gauge;

  constructor(options: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'rbinder_webhook_admission_requests_total',
      help: 'AdmissionReview requests for pods, by result (injected, skipped, ignored, error, invalid).',
      labelNames: ['result'],
      registers,
    });
    this.duration = new Histogram({
      name: 'rbinder_webhook_mutation_duration_seconds',
      help: 'Time to answer an AdmissionReview for a pod, registry lookups included, by result.',
      labelNames: ['result'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.imageLookups = new Counter({
      name: 'rbinder_webhook_image_lookups_total',
      help: 'Image entrypoint lookups, by result: cache_hit (no registry request), fetched, error.',
      labelNames: ['result'],
      registers,
    });
    this.registryErrors = new Counter({
      name: 'rbinder_webhook_registry_errors_total',
      help: 'Failed image lookups, by kind (auth, not_found, timeout, tls, network, rate_limited, unavailable, protocol, invalid_reference).',
      labelNames: ['kind'],
      registers,
    });
    this.certificateReloads = new Counter({
      name: 'rbinder_webhook_certificate_reloads_total',
      help: 'Serving certificate reloads after the files changed, by result (success, failure).',
      labelNames: ['result'],
      registers,
    });
    this.certificateExpiry = new Gauge({
      name: 'rbinder_webhook_certificate_expiry_timestamp_seconds',
      help: 'When the serving certificate in use expires (Unix time).',
      registers,
    });
    // Counters at zero from the start, so rates and alerts work before the first event.
    for (const result of ['injected', 'skipped', 'ignored', 'error', 'invalid'] satisfies RequestResult[]) this.requests.inc({ result }, 0);
    for (const result of ['cache_hit', 'fetched', 'error'] satisfies LookupResult[]) this.imageLookups.inc({ result }, 0);
    if (options.processMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'rbinder_webhook_' });
  }

  onLookup = (result: LookupResult): void => {
    this.imageLookups.inc({ result });
  };

  onRegistryError = (kind: RegistryErrorKind): void => {
    this.registryErrors.inc({ kind });
  };
}
