// Prometheus metrics, created once per registry: a replica that leads again (or a second operator
// in one process, as in the e2e tests) reuses them instead of registering them twice.

import { Counter, Histogram, type CounterConfiguration, type HistogramConfiguration, type Registry } from 'prom-client';

export function counter<L extends string>(registry: Registry | undefined, config: Omit<CounterConfiguration<L>, 'registers'>): Counter<L> {
  const existing = registry?.getSingleMetric(config.name);
  if (existing) return existing as Counter<L>;
  return new Counter<L>({ ...config, registers: registry ? [registry] : [] });
}

export function histogram<L extends string>(registry: Registry | undefined, config: Omit<HistogramConfiguration<L>, 'registers'>): Histogram<L> {
  const existing = registry?.getSingleMetric(config.name);
  if (existing) return existing as Histogram<L>;
  return new Histogram<L>({ ...config, registers: registry ? [registry] : [] });
}
