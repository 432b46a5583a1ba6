// rbinder's request-duration aggregation against the SDK's Histogram instruments on the same
// exchanges: what the exporter receives must be the same, in both temporalities, with the
// cardinality limit, and across collections.

import { describe, expect, it } from 'vitest';
import type { Attributes } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  AggregationTemporality,
  AggregationType,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type PushMetricExporter,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { loadNative } from '../native';
import type { SpanRecord } from '../records';
import { decodeSpans } from '../span-buffer';
import { HTTP_DURATION_BUCKETS, HttpDurationProducer, HttpDurationRecorder, HttpDurationSeries, createHttpDurationHistograms, histogramShapeOf } from './http-metrics';
import { spanRecord as exchange } from './record-fixture';
import { durationMetricAttributes, durationSeconds } from './spans';

const resource = resourceFromAttributes({ 'service.name': 'test' });
const scope = { name: 'rbinder', version: '0.0.0-test' };


/** Seeded exchanges over every field the attributes depend on, durations on and between bucket boundaries. */
function exchanges(n: number, seed: number): SpanRecord[] {
  let state = seed;
  const pick = <T>(list: readonly T[]): T => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return list[(state >>> 8) % list.length] as T;
  };
  const durations = [0, 0.001, ...HTTP_DURATION_BUCKETS, 0.0051, 0.3, 11, 123.456];
  return Array.from({ length: n }, () => {
    const seconds = pick(durations);
    const target = pick(['/', '/a?b=1', 'http://proxy.example:3128/p', 'example.com:443', '*']);
    return exchange({
      kind: pick([1, 2] as const),
      method: target === 'example.com:443' ? 'CONNECT' : pick(['GET', 'POST', 'FROB', 'get']),
      target,
      statusCode: pick([0, 200, 204, 404, 503]),
      protocolVersion: pick(['1.1', '1.0', '']),
      error: pick(['', '', 'connection reset']),
      host: pick(['', 'api.example.com', 'api.example.com:8443', '[::1]:9000', 'bad host[']),
      peerAddress: pick(['10.0.0.5', '', '/run/app.sock', '::1']),
      peerPort: pick([0, 80, 9000]),
      endTime: [1700000000 + Math.floor(seconds), Math.round((seconds % 1) * 1e9)],
    });
  });
}

interface Point {
  attributes: Attributes;
  value: unknown;
}
/** What an export carries, minus timestamps, in a stable order. */
function shapeOf(exports: ResourceMetrics[]): unknown[] {
  return exports.map((rm) => {
    const metrics = rm.scopeMetrics.flatMap((sm) => sm.metrics.map((m) => ({ scope: sm.scope.name, metric: m })));
    return metrics
      .map(({ scope: s, metric }) => ({
        scope: s,
        name: metric.descriptor.name,
        description: metric.descriptor.description,
        unit: metric.descriptor.unit,
        valueType: metric.descriptor.valueType,
        temporality: metric.aggregationTemporality,
        type: metric.dataPointType,
        points: (metric.dataPoints as Point[])
          // The SDK adds a cumulative sum up per collection, in another order: the last bits may differ.
          .map((p) => ({ attributes: p.attributes, value: { ...(p.value as object), sum: Number((p.value as { sum: number }).sum.toPrecision(12)) } }))
          .sort((a, b) => JSON.stringify(sortedEntries(a.attributes)).localeCompare(JSON.stringify(sortedEntries(b.attributes)))),
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
  });
}
function sortedEntries(a: Attributes): unknown[] {
  return Object.keys(a)
    .sort()
    .map((k) => [k, a[k]]);
}

interface Side {
  record(r: SpanRecord): void;
  flush(): Promise<void>;
  exports: ResourceMetrics[];
}

function reader(exporter: PushMetricExporter, producer?: HttpDurationProducer): PeriodicExportingMetricReader {
  return new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000, metricProducers: producer ? [producer] : [] });
}

function sdkSide(temporality: AggregationTemporality, limit?: number): Side {
  const exporter = new InMemoryMetricExporter(temporality);
  const views = limit === undefined ? [] : [{ instrumentName: '*', aggregationCardinalityLimit: limit }];
  const provider = new MeterProvider({ resource, readers: [reader(exporter)], views });
  const { server, client } = createHttpDurationHistograms(provider.getMeter(scope.name, scope.version));
  return {
    record: (r) => (r.kind === 1 ? server : client).record(durationSeconds(r), durationMetricAttributes(r)),
    flush: () => provider.forceFlush(),
    get exports() {
      return exporter.getMetrics();
    },
  };
}

function rbinderSide(temporality: AggregationTemporality, limit?: number): Side {
  const exporter = new InMemoryMetricExporter(temporality);
  const shape = histogramShapeOf(exporter);
  if (!shape) throw new Error('no shape');
  const producer = new HttpDurationProducer(shape, resource, scope);
  const provider = new MeterProvider({ resource, readers: [reader(exporter, producer)] });
  const recorder = new HttpDurationRecorder(new HttpDurationSeries(limit), [producer]);
  return {
    record: (r) => recorder.record(r),
    flush: () => provider.forceFlush(),
    get exports() {
      return exporter.getMetrics();
    },
  };
}

/** The records as the engine hands them over: read from its buffer, with its series ids. */
function throughEngine(records: SpanRecord[]): SpanRecord[] {
  return decodeSpans(loadNative().spanBufferOf(records, false));
}

async function both(
  temporality: AggregationTemporality,
  batches: SpanRecord[][],
  limit?: number,
  mineGets: (batch: SpanRecord[]) => SpanRecord[] = (batch) => batch,
): Promise<[unknown[], unknown[]]> {
  const sdk = sdkSide(temporality, limit);
  const mine = rbinderSide(temporality, limit);
  for (const batch of batches) {
    for (const r of batch) sdk.record(r);
    for (const r of mineGets(batch)) mine.record(r);
    await sdk.flush();
    await mine.flush();
  }
  return [shapeOf(mine.exports), shapeOf(sdk.exports)];
}

describe('request duration metrics', () => {
  for (const temporality of [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA]) {
    const name = temporality === AggregationTemporality.CUMULATIVE ? 'cumulative' : 'delta';

    it(`exports what the SDK's histograms export (${name}, three collections, one of them empty)`, async () => {
      const [mine, sdk] = await both(temporality, [exchanges(3000, 1), [], exchanges(500, 2)]);
      expect(mine).toEqual(sdk);
      // Not vacuous: both kinds, many series, every bucket used somewhere.
      const first = mine[0] as Array<{ points: Array<{ value: { buckets: { counts: number[] } } }> }>;
      expect(first).toHaveLength(2);
      expect(first[0]?.points.length).toBeGreaterThan(5);
      expect(first[1]?.points.length).toBeGreaterThan(5);
      expect(first.flatMap((m) => m.points).length).toBeGreaterThan(40);
      const counts = first.flatMap((m) => m.points.map((p) => p.value.buckets.counts));
      for (let i = 0; i <= HTTP_DURATION_BUCKETS.length; i++) expect(counts.some((c) => (c[i] as number) > 0)).toBe(true);
    });

    it(`exports the same from the engine's records, found by the engine's series ids (${name})`, async () => {
      const [mine, sdk] = await both(temporality, [exchanges(3000, 3), exchanges(500, 4)], undefined, throughEngine);
      expect(mine).toEqual(sdk);
      expect(throughEngine(exchanges(10, 3)).every((r) => (r.metricSeries ?? 0) > 0)).toBe(true);
    });

    it(`overflows into otel.metric.overflow past the cardinality limit like the SDK (${name})`, async () => {
      const many = Array.from({ length: 20 }, (_, i) => exchange({ statusCode: 200 + i, endTime: [1700000000, i * 1_000_000] }));
      const [mine, sdk] = await both(temporality, [many], 8);
      expect(mine).toEqual(sdk);
      expect(JSON.stringify(mine)).toContain('otel.metric.overflow');
    });
  }

  it('keeps the first attribute sets past the limit for the whole run, whatever the temporality', async () => {
    // (The SDK's limit restarts with each delta interval, and its cumulative streams then mix.)
    const side = rbinderSide(AggregationTemporality.DELTA, 3);
    for (const status of [200, 201, 202, 203]) side.record(exchange({ statusCode: status }));
    await side.flush();
    for (const status of [204, 200]) side.record(exchange({ statusCode: status }));
    await side.flush();
    const statuses = side.exports.map((rm) =>
      rm.scopeMetrics.flatMap((sm) => sm.metrics.flatMap((m) => m.dataPoints.map((p) => [p.attributes['http.response.status_code'] ?? 'overflow', (p.value as { count: number }).count]))).sort(),
    );
    expect(statuses).toEqual([
      [[200, 1], [201, 1], ['overflow', 2]],
      [[200, 1], ['overflow', 1]],
    ]);
  });

  it('never lets two exchanges with different attributes share a series through their key', () => {
    const series = new HttpDurationSeries();
    // Joined with spaces, these fields would read the same: "a b c 10.0.0.5".
    const one = series.seriesOf(exchange({ kind: 2, error: 'a', host: 'b c', peerAddress: '10.0.0.5' }));
    const two = series.seriesOf(exchange({ kind: 2, error: 'a b', host: 'c', peerAddress: '10.0.0.5' }));
    expect(one).not.toBe(two);
    expect([one.attributes['error.type'], two.attributes['error.type']]).toEqual(['a', 'a b']);
    // And the same attributes by another key share one.
    const viaTarget = series.seriesOf(exchange({ kind: 2, error: 'a', host: 'b c', peerAddress: '10.0.0.5', target: '*' }));
    expect(viaTarget).toBe(one);
  });

  it('gives records one engine series id exactly when the fields the attributes come from agree', () => {
    const client = exchange({ kind: 2, target: '/a', host: 'api:80', peerAddress: '10.0.0.5', peerPort: 80 });
    const changes: Array<[Partial<SpanRecord>, boolean]> = [
      // Fields of the key: another id.
      [{ kind: 1 }, false], [{ statusCode: 404 }, false], [{ protocolVersion: '1.0' }, false], [{ method: 'POST' }, false],
      [{ error: 'connection reset' }, false], [{ host: 'api:81' }, false], [{ peerAddress: '10.0.0.6' }, false],
      [{ peerPort: 81 }, false], [{ target: 'http://api/a' }, false], [{ target: '*' }, false],
      // Fields the metric does not read: the same id.
      [{ target: '/b?c=d' }, true], [{ userAgent: 'curl/8' }, true], [{ localAddress: '10.0.0.9', localPort: 9 }, true],
      [{ endTime: [1700000001, 0] }, true], [{ spanId: '1111111111111111', traceFlags: 0 }, true], [{ responseBodySize: 7 }, true],
    ];
    const [base, ...changed] = throughEngine([client, ...changes.map(([c]) => ({ ...client, ...c }))]);
    changes.forEach(([change, same], i) => {
      expect([change, changed[i]?.metricSeries === base?.metricSeries]).toEqual([change, same]);
    });
    // A server's key leaves out the client's fields.
    const [s1, s2] = throughEngine([exchange({ host: 'a', peerAddress: '10.0.0.1', peerPort: 1 }), exchange({ host: 'b', peerAddress: '10.0.0.2', peerPort: 2 })]);
    expect(s1?.metricSeries).toBe(s2?.metricSeries);
  });

  it('finds the series of an engine id seen before without reading the record\'s strings', () => {
    const series = new HttpDurationSeries();
    const first = series.seriesOf(exchange({ metricSeries: 5, statusCode: 503 }));
    const strings = ['traceState', 'method', 'target', 'protocolVersion', 'host', 'userAgent', 'peerAddress', 'localAddress', 'error'];
    const untouchable = { ...exchange({ metricSeries: 5 }) };
    for (const key of strings) Object.defineProperty(untouchable, key, { get: () => expect.fail(`read ${key}`) });
    expect(series.seriesOf(untouchable)).toBe(first);
    expect(first.attributes['http.response.status_code']).toBe(503);
  });

  it('reports cumulative points from the first exchange of a series, delta points from the previous collection', async () => {
    let now = 1_000_000;
    const clock = () => now;
    const cumulative = new HttpDurationProducer(histogramShapeOf(new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE))!, resource, scope, clock);
    const delta = new HttpDurationProducer(histogramShapeOf(new InMemoryMetricExporter(AggregationTemporality.DELTA))!, resource, scope, clock);
    const recorder = new HttpDurationRecorder(new HttpDurationSeries(), [cumulative, delta]);
    now += 1000;
    recorder.record(exchange({}));
    now += 1000;
    const times = async (p: HttpDurationProducer) => {
      const point = (await p.collect()).resourceMetrics.scopeMetrics[0]?.metrics[0]?.dataPoints[0];
      return [point?.startTime[0], point?.endTime[0]];
    };
    expect(await times(cumulative)).toEqual([1001, 1002]);
    expect(await times(delta)).toEqual([1000, 1002]);
    now += 1000;
    recorder.record(exchange({}));
    expect(await times(cumulative)).toEqual([1001, 1003]);
    expect(await times(delta)).toEqual([1002, 1003]);
  });

  it('takes the histogram its exporter asks for, and leaves the others to the SDK', () => {
    const asking = (aggregation: ReturnType<NonNullable<PushMetricExporter['selectAggregation']>>): PushMetricExporter => {
      const exporter = new InMemoryMetricExporter(AggregationTemporality.DELTA) as PushMetricExporter;
      exporter.selectAggregation = () => aggregation;
      return exporter;
    };
    expect(histogramShapeOf(new InMemoryMetricExporter(AggregationTemporality.DELTA))).toEqual({
      temporality: AggregationTemporality.DELTA,
      boundaries: HTTP_DURATION_BUCKETS,
      recordMinMax: true,
      drop: false,
    });
    expect(histogramShapeOf(asking({ type: AggregationType.EXPLICIT_BUCKET_HISTOGRAM, options: { boundaries: [1, 2], recordMinMax: false } }))).toMatchObject({
      boundaries: [1, 2],
      recordMinMax: false,
    });
    expect(histogramShapeOf(asking({ type: AggregationType.DROP }))).toMatchObject({ drop: true });
    expect(histogramShapeOf(asking({ type: AggregationType.EXPONENTIAL_HISTOGRAM }))).toBeUndefined();
    expect(histogramShapeOf(asking({ type: AggregationType.EXPLICIT_BUCKET_HISTOGRAM, options: { boundaries: [2, 1] } }))).toBeUndefined();
  });
});
