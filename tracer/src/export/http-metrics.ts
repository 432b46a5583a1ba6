// http.server.request.duration and http.client.request.duration without the SDK's per-measurement
// cost. A Histogram instrument hashes its attributes on every record (sorted keys, JSON.stringify):
// in the chain benchmark that and building the attributes object were a fifth of the tracer's
// JavaScript. Here an exchange finds its series through a cheap key made of the record fields the
// attributes come from; the series' attributes are built once. Each metric reader gets a
// MetricProducer that aggregates like the SDK's explicit-bucket histogram (same buckets, sum,
// count, min, max) in the temporality its exporter asks for, and the SDK still exports it
// (PeriodicExportingMetricReader's `metricProducers`). docs/architecture.md, "Request metrics".

import { SpanKind, ValueType, type Attributes, type Histogram, type HrTime, type Meter } from '@opentelemetry/api';
import { millisToHrTime } from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  AggregationType,
  DataPointType,
  InstrumentType,
  type CollectionResult,
  type HistogramMetricData,
  type MetricProducer,
  type PushMetricExporter,
  type ResourceMetrics,
  type ScopeMetrics,
} from '@opentelemetry/sdk-metrics';
import { METRIC_HTTP_CLIENT_REQUEST_DURATION, METRIC_HTTP_SERVER_REQUEST_DURATION } from '@opentelemetry/semantic-conventions';
import type { SpanRecord } from '../records';
import { durationMetricAttributes, durationSeconds } from './spans';

/** semconv advice for http.*.request.duration. */
export const HTTP_DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

export const HTTP_DURATION_METRICS = {
  server: { name: METRIC_HTTP_SERVER_REQUEST_DURATION, description: 'Duration of HTTP server requests.', unit: 's' },
  client: { name: METRIC_HTTP_CLIENT_REQUEST_DURATION, description: 'Duration of HTTP client requests.', unit: 's' },
} as const;

/** The same metrics as the SDK's Histogram instruments (for exporters that want another aggregation). */
export function createHttpDurationHistograms(meter: Meter): { server: Histogram; client: Histogram } {
  const create = ({ name, description, unit }: { name: string; description: string; unit: string }) =>
    meter.createHistogram(name, { description, unit, advice: { explicitBucketBoundaries: HTTP_DURATION_BUCKETS } });
  return { server: create(HTTP_DURATION_METRICS.server), client: create(HTTP_DURATION_METRICS.client) };
}

/** The SDK's default cardinality limit per metric stream; later attribute sets share one overflow series. */
const CARDINALITY_LIMIT = 2000;
const OVERFLOW_ATTRIBUTES: Attributes = Object.freeze({ 'otel.metric.overflow': true });
/** Record keys remembered at most (they can be more varied than attribute sets: absolute-form targets). */
const MAX_KEYS = 16_384;

interface Series {
  /** Index into each producer's cells. */
  id: number;
  server: boolean;
  attributes: Attributes;
}

/** The attribute sets seen so far, shared by every reader. */
export class HttpDurationSeries {
  /** By the engine's series id (SpanRecord.metricSeries): no string of the record is read. */
  private readonly byEngineId: (Series | undefined)[] = [];
  private readonly byKey = new Map<string, Series>();
  private readonly byAttributes = new Map<string, Series>();
  private readonly counts = { server: 0, client: 0 };
  private readonly overflow: { server?: Series; client?: Series } = {};
  private nextId = 0;

  constructor(private readonly limit = CARDINALITY_LIMIT) {}

  /** The series an exchange counts in. */
  seriesOf(record: SpanRecord): Series {
    const id = record.metricSeries;
    if (id === undefined || id === 0) return this.seriesByKey(record);
    return (this.byEngineId[id] ??= this.seriesByKey(record));
  }

  private seriesByKey(record: SpanRecord): Series {
    const server = record.kind === SpanKind.SERVER;
    // Every field durationMetricAttributes reads, the target only when it can name the server.
    // Strings from the wire carry their length, so that no two records share a key by accident.
    const { method, error, protocolVersion } = record;
    const head = `${record.statusCode} ${protocolVersion.length}:${protocolVersion}${method.length}:${method}${error.length}:${error}`;
    const key = server
      ? `S${head}`
      : `C${head}${record.host.length}:${record.host}${record.peerAddress.length}:${record.peerAddress}${record.peerPort} ${record.target.startsWith('/') ? '' : record.target}`;
    let series = this.byKey.get(key);
    if (series === undefined) {
      series = this.seriesFor(server, durationMetricAttributes(record));
      if (this.byKey.size >= MAX_KEYS) this.byKey.clear();
      this.byKey.set(key, series);
    }
    return series;
  }

  private seriesFor(server: boolean, attributes: Attributes): Series {
    const canonical = `${server ? 'S' : 'C'}${JSON.stringify(Object.keys(attributes).sort().map((k) => [k, attributes[k]]))}`;
    let series = this.byAttributes.get(canonical);
    if (series !== undefined) return series;
    const side = server ? 'server' : 'client';
    // One slot of the limit stays for the overflow series, as in the SDK.
    if (this.counts[side] >= this.limit - 1) {
      return (this.overflow[side] ??= { id: this.nextId++, server, attributes: OVERFLOW_ATTRIBUTES });
    }
    this.counts[side]++;
    series = { id: this.nextId++, server, attributes: Object.freeze(attributes) };
    this.byAttributes.set(canonical, series);
    return series;
  }
}

interface Cell {
  series: Series;
  startTime: HrTime;
  counts: number[];
  sum: number;
  count: number;
  min: number;
  max: number;
}

/** What a reader's exporter asks of histograms; undefined when this producer cannot give it (the SDK must). */
export interface HistogramShape {
  temporality: AggregationTemporality;
  boundaries: number[];
  recordMinMax: boolean;
  drop: boolean;
}

export function histogramShapeOf(exporter: PushMetricExporter): HistogramShape | undefined {
  const temporality = exporter.selectAggregationTemporality?.(InstrumentType.HISTOGRAM) ?? AggregationTemporality.CUMULATIVE;
  const aggregation = exporter.selectAggregation?.(InstrumentType.HISTOGRAM) ?? { type: AggregationType.DEFAULT };
  switch (aggregation.type) {
    case AggregationType.DEFAULT:
      return { temporality, boundaries: HTTP_DURATION_BUCKETS, recordMinMax: true, drop: false };
    case AggregationType.EXPLICIT_BUCKET_HISTOGRAM: {
      const boundaries = aggregation.options?.boundaries;
      // The SDK's own rules for boundaries (sorted, finite) are not repeated here: odd ones go to it.
      if (boundaries !== undefined && !boundaries.every((b, i) => Number.isFinite(b) && (i === 0 || b > (boundaries[i - 1] as number)))) {
        return undefined;
      }
      return { temporality, boundaries: boundaries ?? HTTP_DURATION_BUCKETS, recordMinMax: aggregation.options?.recordMinMax ?? true, drop: false };
    }
    case AggregationType.DROP:
      return { temporality, boundaries: [], recordMinMax: false, drop: true };
    default:
      return undefined; // exponential histograms, sums, last value: the SDK's instruments do these
  }
}

/** One metric reader's view of the request durations. */
export class HttpDurationProducer implements MetricProducer {
  private cells: (Cell | undefined)[] = [];
  private lastCollection: HrTime;

  constructor(
    private readonly shape: HistogramShape,
    private readonly resource: Resource,
    private readonly scope: { name: string; version?: string },
    /** Milliseconds since the epoch (tests pass a clock). */
    private readonly now: () => number = Date.now,
  ) {
    this.lastCollection = millisToHrTime(now());
  }

  record(series: Series, seconds: number): void {
    if (this.shape.drop) return;
    let cell = this.cells[series.id];
    if (cell === undefined) {
      const startTime = this.shape.temporality === AggregationTemporality.DELTA ? this.lastCollection : millisToHrTime(this.now());
      cell = { series, startTime, counts: new Array<number>(this.shape.boundaries.length + 1).fill(0), sum: 0, count: 0, min: Infinity, max: -Infinity };
      this.cells[series.id] = cell;
    }
    cell.count++;
    cell.sum += seconds;
    if (seconds < cell.min) cell.min = seconds;
    if (seconds > cell.max) cell.max = seconds;
    cell.counts[bucketOf(this.shape.boundaries, seconds)]++;
  }

  collect(): Promise<CollectionResult> {
    const endTime = millisToHrTime(this.now());
    const server: HistogramMetricData['dataPoints'] = [];
    const client: HistogramMetricData['dataPoints'] = [];
    for (const cell of this.cells) {
      if (cell === undefined) continue;
      (cell.series.server ? server : client).push({
        attributes: cell.series.attributes,
        startTime: cell.startTime,
        endTime,
        value: {
          buckets: { boundaries: this.shape.boundaries, counts: cell.counts.slice() },
          sum: cell.sum,
          count: cell.count,
          min: this.shape.recordMinMax ? cell.min : undefined,
          max: this.shape.recordMinMax ? cell.max : undefined,
        },
      });
    }
    if (this.shape.temporality === AggregationTemporality.DELTA) {
      this.cells = [];
      this.lastCollection = endTime;
    }
    const metric = (which: 'server' | 'client', dataPoints: HistogramMetricData['dataPoints']): HistogramMetricData => ({
      descriptor: { ...HTTP_DURATION_METRICS[which], valueType: ValueType.DOUBLE },
      aggregationTemporality: this.shape.temporality,
      dataPointType: DataPointType.HISTOGRAM,
      dataPoints,
    });
    const metrics: HistogramMetricData[] = [];
    if (server.length > 0) metrics.push(metric('server', server));
    if (client.length > 0) metrics.push(metric('client', client));
    return Promise.resolve({
      resourceMetrics: { resource: this.resource, scopeMetrics: metrics.length > 0 ? [{ scope: this.scope, metrics }] : [] },
      errors: [],
    });
  }
}

/** The bucket a value counts in: the first whose (inclusive) upper boundary is >= it, as the SDK's. */
function bucketOf(boundaries: number[], value: number): number {
  let lo = 0;
  let hi = boundaries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((boundaries[mid] as number) < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Records every exchange into every reader's producer. */
export class HttpDurationRecorder {
  constructor(
    private readonly series: HttpDurationSeries,
    private readonly producers: HttpDurationProducer[],
  ) {}

  record(record: SpanRecord): void {
    const series = this.series.seriesOf(record);
    const seconds = durationSeconds(record);
    for (const producer of this.producers) producer.record(series, seconds);
  }
}

/**
 * The exporter, given one ScopeMetrics per scope: a reader appends its producers' scopes to the
 * SDK's, so rbinder's scope would otherwise arrive twice (its counters, then these histograms).
 */
export function mergingScopes(exporter: PushMetricExporter): PushMetricExporter {
  return {
    export: (metrics, resultCallback) => exporter.export(mergeScopes(metrics), resultCallback),
    forceFlush: () => exporter.forceFlush(),
    shutdown: () => exporter.shutdown(),
    selectAggregationTemporality: exporter.selectAggregationTemporality?.bind(exporter),
    selectAggregation: exporter.selectAggregation?.bind(exporter),
  };
}

function mergeScopes(metrics: ResourceMetrics): ResourceMetrics {
  const byScope = new Map<string, ScopeMetrics>();
  for (const sm of metrics.scopeMetrics) {
    const id = `${sm.scope.name}\0${sm.scope.version ?? ''}\0${sm.scope.schemaUrl ?? ''}`;
    const seen = byScope.get(id);
    if (seen === undefined) byScope.set(id, sm);
    else byScope.set(id, { scope: seen.scope, metrics: [...seen.metrics, ...sm.metrics] });
  }
  return byScope.size === metrics.scopeMetrics.length ? metrics : { resource: metrics.resource, scopeMetrics: [...byScope.values()] };
}
