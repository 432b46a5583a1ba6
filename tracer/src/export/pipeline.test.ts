// The pipeline against a real OTLP/HTTP JSON endpoint served by the test (node:http).

import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseCommandLine, type TracerConfig } from '../config';
import { createLogger, type Logger } from '../log';
import type { Batch, EngineStats, ProcessRecord } from '../records';
import { HTTP_DURATION_BUCKETS, createTelemetry } from './pipeline';
import { FIXTURE_SPAN_ID as SERVER_SPAN_ID, FIXTURE_TRACE_ID as TRACE_ID, spanRecord as record } from './record-fixture';

// --- a minimal OTLP/HTTP receiver -----------------------------------------------------------

interface ReceivedRequest {
  path: string;
  contentType: string | undefined;
  body: unknown;
}

type Responder = (req: http.IncomingMessage, res: http.ServerResponse, index: number) => void;

interface Receiver {
  url: string;
  requests: ReceivedRequest[];
  /** Resolves once `count` requests to `path` have arrived. */
  waitFor(path: string, count: number): Promise<ReceivedRequest[]>;
  close(): Promise<void>;
}

const ok: Responder = (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
};

async function startReceiver(respond: Responder = ok): Promise<Receiver> {
  const requests: ReceivedRequest[] = [];
  const waiters: Array<() => void> = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const index = requests.length;
      requests.push({ path: req.url ?? '', contentType: req.headers['content-type'], body: text === '' ? undefined : JSON.parse(text) });
      for (const wake of waiters.splice(0)) wake();
      respond(req, res, index);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    waitFor(path, count) {
      return new Promise((resolve) => {
        const check = (): void => {
          const matching = requests.filter((r) => r.path === path);
          if (matching.length >= count) resolve(matching);
          else waiters.push(check);
        };
        check();
      });
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

// --- OTLP JSON helpers ------------------------------------------------------------------------

interface AnyValue {
  stringValue?: string;
  intValue?: number | string;
  doubleValue?: number;
  boolValue?: boolean;
  arrayValue?: { values: AnyValue[] };
}
interface KeyValue {
  key: string;
  value: AnyValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: KeyValue[];
  status: { code?: number; message?: string };
  flags?: number;
}
interface TracesBody {
  resourceSpans: Array<{ resource: { attributes: KeyValue[] }; scopeSpans: Array<{ scope: { name: string; version?: string }; spans: OtlpSpan[] }> }>;
}
interface MetricsBody {
  resourceMetrics: Array<{
    resource: { attributes: KeyValue[] };
    scopeMetrics: Array<{ metrics: Array<{ name: string; unit?: string; histogram?: { dataPoints: HistogramPoint[]; aggregationTemporality?: number }; sum?: { dataPoints: NumberPoint[]; isMonotonic?: boolean } }> }>;
  }>;
}
interface HistogramPoint {
  attributes: KeyValue[];
  count: number | string;
  explicitBounds: number[];
}
interface NumberPoint {
  attributes: KeyValue[];
  asInt?: number | string;
  asDouble?: number;
}

function plain(value: AnyValue): unknown {
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.intValue !== undefined) return Number(value.intValue);
  if (value.doubleValue !== undefined) return value.doubleValue;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.arrayValue !== undefined) return value.arrayValue.values.map(plain);
  return undefined;
}

function attrs(list: KeyValue[]): Record<string, unknown> {
  return Object.fromEntries(list.map((kv) => [kv.key, plain(kv.value)]));
}

// --- fixtures ---------------------------------------------------------------------------------

const CLIENT_SPAN_ID = 'a3ce929d0e0e4736';
const REMOTE_PARENT_ID = '53995c3f42cd8ad8';


// Its syscalls went through ptrace stops (a fast-path fallback): its resource says so, whatever --mode.
const python: ProcessRecord = { pid: 42, ppid: 1, executablePath: '/usr/bin/python3.12', commandArgs: ['python3', 'app.py'], mode: 'ptrace' };

const stats: EngineStats = {
  stops: { 'read.enter': 10, 'read.exit': 8, 'write.enter': 6 },
  bytesRead: 1000,
  bytesWritten: 2000,
  connectionsTracked: 3,
  connectionsAbandoned: 1,
  connectionsNotHttp: 2,
  parseErrors: 0,
  spansDropped: 4,
  tracesShed: 7,
};
/** The same counters without any loss: no warning at the end. */
const lossless: EngineStats = { ...stats, spansDropped: 0, tracesShed: 0 };

function configFor(endpoint: string, env: NodeJS.ProcessEnv = {}, flags: string[] = []): TracerConfig {
  const config = parseCommandLine(['--protocol', 'http/json', '--endpoint', endpoint, ...flags, 'python3', 'app.py'], env);
  if (!('command' in config)) throw new Error('expected a config');
  return config;
}

interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

function capturingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (line: string) => lines.push(JSON.parse(line) as LogLine) } });
  return { logger, lines };
}

// --- tests ------------------------------------------------------------------------------------

describe('createTelemetry', () => {
  let receiver: Receiver | undefined;

  beforeEach(() => {
    // Keep the runner's own environment out of what the SDK reads from process.env.
    for (const name of Object.keys(process.env)) if (name.startsWith('OTEL_')) vi.stubEnv(name, undefined);
    vi.stubEnv('OTEL_RESOURCE_ATTRIBUTES', 'deployment.environment.name=test');
  });

  afterEach(async () => {
    vi.unstubAllEnvs();
    await receiver?.close();
    receiver = undefined;
  });

  it('exports spans and metrics as OTLP/HTTP JSON', async () => {
    receiver = await startReceiver();
    const { logger, lines } = capturingLogger();
    const telemetry = createTelemetry(configFor(receiver.url), { engineStats: () => stats, logger });

    const batch: Batch = {
      processes: [python],
      spans: [
        record({
          kind: 1,
          spanId: SERVER_SPAN_ID,
          parentSpanId: REMOTE_PARENT_ID,
          parentIsRemote: true,
          traceState: 'congo=t61rcWkgMzE',
          method: 'POST',
          target: '/orders?id=7',
          statusCode: 503,
          userAgent: 'curl/8.5.0',
        }),
        record({
          kind: 2,
          spanId: CLIENT_SPAN_ID,
          parentSpanId: SERVER_SPAN_ID,
          startTime: [1700000000, 1_000_000],
          endTime: [1700000000, 15_000_000],
          target: '/stock/7',
          host: 'inventory:9000',
          peerAddress: '10.1.2.3',
          peerPort: 9000,
          statusCode: 0,
          error: 'connection reset',
        }),
        // A pid whose process record has not arrived.
        record({ pid: 77, tid: 78, spanId: '1111111111111111', traceId: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' }),
        // Not sampled: counted in metrics, not exported as a span.
        record({ spanId: '2222222222222222', traceId: 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', traceFlags: 0 }),
      ],
    };
    telemetry.onBatch(batch);
    await telemetry.shutdown(5000);

    const [traces] = await receiver.waitFor('/v1/traces', 1);
    expect(traces.contentType).toBe('application/json');
    const body = traces.body as TracesBody;
    const byPid = new Map(body.resourceSpans.map((rs) => [attrs(rs.resource.attributes)['process.pid'], rs]));
    expect([...byPid.keys()].sort()).toEqual([42, 77]);

    const python42 = byPid.get(42)!;
    expect(attrs(python42.resource.attributes)).toMatchObject({
      'service.name': 'python3',
      'process.pid': 42,
      'process.parent_pid': 1,
      'process.executable.name': 'python3.12',
      'process.executable.path': '/usr/bin/python3.12',
      'process.command_args': ['python3', 'app.py'],
      'os.type': 'linux',
      'telemetry.sdk.language': 'nodejs',
      'rbinder.tracer.mode': 'ptrace',
      'deployment.environment.name': 'test',
    });
    expect(attrs(python42.resource.attributes)['host.name']).toEqual(expect.any(String));
    expect(python42.scopeSpans).toHaveLength(1);
    expect(python42.scopeSpans[0].scope.name).toBe('rbinder');

    const spans = new Map(python42.scopeSpans[0].spans.map((s) => [s.spanId, s]));
    const server = spans.get(SERVER_SPAN_ID)!;
    expect(server).toMatchObject({ traceId: TRACE_ID, parentSpanId: REMOTE_PARENT_ID, name: 'POST', kind: 2, status: { code: 2 } });
    expect(server.status.message).toBeFalsy();
    expect(server.flags! & 0x300).toBe(0x300); // has-is-remote and is-remote: the parent came from another process
    expect(attrs(server.attributes)).toMatchObject({
      'http.request.method': 'POST',
      'url.path': '/orders',
      'url.query': 'id=7',
      'url.scheme': 'http',
      'http.response.status_code': 503,
      'server.address': 'localhost',
      'server.port': 8000,
      'client.address': '127.0.0.1',
      'user_agent.original': 'curl/8.5.0',
      'error.type': '503',
    });
    const client = spans.get(CLIENT_SPAN_ID)!;
    expect(client).toMatchObject({ traceId: TRACE_ID, parentSpanId: SERVER_SPAN_ID, name: 'GET', kind: 3, status: { code: 2, message: 'connection reset' } });
    expect(attrs(client.attributes)).toMatchObject({
      'url.full': 'http://inventory:9000/stock/7',
      'server.address': 'inventory',
      'server.port': 9000,
      'network.peer.address': '10.1.2.3',
      'error.type': 'connection reset',
    });

    const unknownPid = byPid.get(77)!;
    expect(attrs(unknownPid.resource.attributes)['process.executable.name']).toBeUndefined();
    expect(unknownPid.scopeSpans[0].spans.map((s) => s.spanId)).toEqual(['1111111111111111']);

    const exportedIds = body.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans.map((s) => s.spanId)));
    expect(exportedIds).not.toContain('2222222222222222');

    const [metrics] = await receiver.waitFor('/v1/metrics', 1);
    const metricsBody = metrics.body as MetricsBody;
    // The tracer's own metrics carry the configured mode.
    expect(attrs(metricsBody.resourceMetrics[0].resource.attributes)).toMatchObject({ 'service.name': 'python3', 'rbinder.tracer.mode': 'fast' });
    // The engine's counters (SDK instruments) and the request durations (http-metrics.ts) share one scope.
    expect(metricsBody.resourceMetrics[0].scopeMetrics).toHaveLength(1);
    const byName = new Map(metricsBody.resourceMetrics[0].scopeMetrics.flatMap((sm) => sm.metrics).map((m) => [m.name, m]));

    const serverDuration = byName.get('http.server.request.duration')!;
    expect(serverDuration.unit).toBe('s');
    const serverPoints = serverDuration.histogram!.dataPoints;
    expect(serverPoints.reduce((n, p) => n + Number(p.count), 0)).toBe(3); // unsampled ones count too
    expect(serverPoints[0].explicitBounds).toEqual(HTTP_DURATION_BUCKETS);
    expect(serverPoints.map((p) => attrs(p.attributes))).toContainEqual({
      'http.request.method': 'POST',
      'http.response.status_code': 503,
      'url.scheme': 'http',
      'network.protocol.version': '1.1',
      'error.type': '503',
    });
    const clientPoints = byName.get('http.client.request.duration')!.histogram!.dataPoints;
    expect(clientPoints.map((p) => attrs(p.attributes))).toEqual([
      {
        'http.request.method': 'GET',
        'url.scheme': 'http',
        'network.protocol.version': '1.1',
        'server.address': 'inventory',
        'server.port': 9000,
        'error.type': 'connection reset',
      },
    ]);

    const points = (name: string) => byName.get(name)!.sum!.dataPoints.map((p) => ({ ...attrs(p.attributes), value: Number(p.asInt ?? p.asDouble) }));
    expect(points('rbinder.syscall.stops')).toEqual(
      expect.arrayContaining([
        { syscall: 'read.enter', value: 10 },
        { syscall: 'read.exit', value: 8 },
        { syscall: 'write.enter', value: 6 },
      ]),
    );
    expect(points('rbinder.bytes')).toEqual(expect.arrayContaining([{ direction: 'read', value: 1000 }, { direction: 'written', value: 2000 }]));
    expect(points('rbinder.connections.tracked')).toEqual([{ value: 3 }]);
    expect(points('rbinder.connections.abandoned')).toEqual([{ value: 1 }]);
    expect(points('rbinder.connections.not_http')).toEqual([{ value: 2 }]);
    expect(points('rbinder.parse.errors')).toEqual([{ value: 0 }]);
    expect(points('rbinder.spans.dropped')).toEqual([{ value: 4 }]);
    expect(points('rbinder.traces.shed')).toEqual([{ value: 7 }]);
    expect(byName.get('rbinder.syscall.stops')!.sum!.isMonotonic).toBe(true);

    // The engine's losses, said once at the end.
    expect(lines.filter((l) => l.level === 'warn' || l.level === 'error')).toEqual([
      expect.objectContaining({ msg: expect.stringMatching(/^export fell behind/), tracesShed: 7, spansDropped: 4 }),
    ]);
  });

  it('exports request durations in the temporality the metric exporter asks for', async () => {
    for (const [preference, temporality] of [
      [undefined, 2], // CUMULATIVE
      ['delta', 1],
      ['lowmemory', 1], // histograms are delta in lowmemory
    ] as const) {
      receiver = await startReceiver();
      // The SDK's OTLP exporter reads this one from the environment itself.
      vi.stubEnv('OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE', preference);
      const telemetry = createTelemetry(configFor(receiver.url), { engineStats: () => stats, logger: capturingLogger().logger });
      telemetry.onBatch({ processes: [python], spans: [record({}), record({ spanId: '3333333333333333' })] });
      await telemetry.shutdown(5000);
      const [metrics] = await receiver.waitFor('/v1/metrics', 1);
      const all = (metrics.body as MetricsBody).resourceMetrics[0].scopeMetrics.flatMap((sm) => sm.metrics);
      const duration = all.find((m) => m.name === 'http.server.request.duration')!.histogram!;
      expect({ preference, temporality: duration.aggregationTemporality, count: Number(duration.dataPoints[0].count) }).toEqual({ preference, temporality, count: 2 });
      await receiver.close();
      receiver = undefined;
    }
  });

  it('logs one warning per failure streak and one line when export recovers', async () => {
    // 503 with a Retry-After beyond the export timeout: the exporter gives up at once (no retry).
    receiver = await startReceiver((_req, res, index) => {
      if (index < 2) res.writeHead(503, { 'retry-after': '60' }).end();
      else ok(_req, res, index);
    });
    const { logger, lines } = capturingLogger();
    const config = configFor(receiver.url, { OTEL_BSP_SCHEDULE_DELAY: '10', OTEL_METRICS_EXPORTER: 'none' }, []);
    config.metrics.exporters = [];
    const telemetry = createTelemetry(config, { engineStats: () => lossless, logger });

    for (let i = 1; i <= 3; i++) {
      const batch: Batch = { processes: [python], spans: [record({ spanId: `${i}`.padStart(16, '0') })] };
      expect(() => telemetry.onBatch(batch)).not.toThrow();
      await receiver.waitFor('/v1/traces', i);
    }
    await vi.waitFor(() => expect(lines.some((l) => l.msg === 'export recovered')).toBe(true));
    await expect(telemetry.shutdown(2000)).resolves.toBeUndefined();

    const warnings = lines.filter((l) => l.level === 'warn');
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatchObject({ signal: 'traces', endpoint: `${receiver.url}/v1/traces` });
    expect(warnings[0].msg).toMatch(/^traces export failed/);
    expect(warnings[0].error).toEqual(expect.stringMatching(/503|Unavailable|retryable/i));
    expect(warnings[1]).toMatchObject({ msg: 'export recovered', signal: 'traces', failedExports: 2 });
    expect(lines.filter((l) => l.level === 'error')).toEqual([]);
  });

  it('bounds shutdown when the collector never answers', async () => {
    receiver = await startReceiver(() => {
      // Accept the request and never respond.
    });
    const { logger, lines } = capturingLogger();
    const telemetry = createTelemetry(configFor(receiver.url), { engineStats: () => stats, logger });
    telemetry.onBatch({ processes: [python], spans: [record({})] });

    const started = Date.now();
    await telemetry.shutdown(500);
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(450);
    expect(elapsed).toBeLessThan(1500);
    expect(receiver.requests.length).toBeGreaterThan(0);
    expect(lines.some((l) => l.level === 'warn' && /flush timeout/.test(l.msg))).toBe(true);
    // Shutdown happens once: a second call is the same flush, not a new one.
    await telemetry.shutdown(500);
  });

  it('does nothing on the network with --exporter none, and still never throws', async () => {
    const { logger, lines } = capturingLogger();
    const config = configFor('http://127.0.0.1:9', {}, ['--exporter', 'none']);
    const telemetry = createTelemetry(config, {
      engineStats: () => {
        throw new Error('engine gone');
      },
      logger,
    });
    telemetry.onBatch({ processes: [python], spans: [record({}), record({ traceId: 'not-an-id' })] });
    const started = Date.now();
    await telemetry.shutdown(1000);
    expect(Date.now() - started).toBeLessThan(200);
    expect(lines.filter((l) => l.level === 'warn')).toEqual([]);
  });

  it('runs without an exporter that cannot be built (bad OTEL_EXPORTER_OTLP_ENDPOINT for gRPC)', async () => {
    vi.stubEnv('OTEL_EXPORTER_OTLP_ENDPOINT', 'http://[bad');
    const { logger, lines } = capturingLogger();
    const parsed = parseCommandLine(['--protocol', 'grpc', 'app'], {});
    if (!('command' in parsed)) throw new Error('expected a config');
    const telemetry = createTelemetry(parsed, { engineStats: () => stats, logger });
    expect(() => telemetry.onBatch({ processes: [python], spans: [record({})] })).not.toThrow();
    await telemetry.shutdown(500);
    expect(lines.filter((l) => l.level === 'error').map((l) => [l.signal, l.msg])).toEqual([
      ['traces', 'cannot create exporter; this signal is not exported there'],
      ['metrics', 'cannot create exporter; this signal is not exported there'],
    ]);
  });

  it('tells the engine when export falls behind and catches up, and drops what a full queue cannot hold', async () => {
    // Export requests are held until released: the processor's queue fills behind the first one.
    const held: http.ServerResponse[] = [];
    let holding = true;
    receiver = await startReceiver((req, res, index) => {
      if (holding) held.push(res);
      else ok(req, res, index);
    });
    const { logger, lines } = capturingLogger();
    const config = configFor(receiver.url, {
      OTEL_BSP_MAX_QUEUE_SIZE: '16',
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '4',
      OTEL_BSP_SCHEDULE_DELAY: '10',
      OTEL_EXPORTER_OTLP_TIMEOUT: '30000',
    });
    config.metrics.exporters = [];
    const behind: boolean[] = [];
    const telemetry = createTelemetry(config, {
      engineStats: () => ({ ...stats, spansDropped: 0, tracesShed: 5 }),
      logger,
      onExportBehind: (b) => behind.push(b),
    });
    let next = 0;
    const batchOf = (n: number): Batch => ({
      processes: [python],
      spans: Array.from({ length: n }, () => record({ spanId: (++next).toString(16).padStart(16, '0') })),
    });

    telemetry.onBatch(batchOf(4)); // a full export batch: handed to the exporter, whose request waits
    await vi.waitFor(() => expect(held).toHaveLength(1));
    telemetry.onBatch(batchOf(3));
    expect(behind).toEqual([]);
    telemetry.onBatch(batchOf(5)); // 8 queued of 16: behind
    expect(behind).toEqual([true]);
    telemetry.onBatch(batchOf(10)); // 8 fit, 2 are dropped
    expect(behind).toEqual([true]);

    holding = false;
    for (const res of held.splice(0)) res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    await vi.waitFor(() => expect(behind).toEqual([true, false]));
    await telemetry.shutdown(5000);

    const exported = receiver.requests
      .filter((r) => r.path === '/v1/traces')
      .flatMap((r) => (r.body as TracesBody).resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans.map((sp) => sp.spanId))));
    expect(exported).toHaveLength(20);
    expect(new Set(exported).size).toBe(20);
    expect(exported).not.toContain((21).toString(16).padStart(16, '0'));
    const warnings = lines.filter((l) => l.level === 'warn');
    expect(warnings.map((l) => l.msg)).toEqual([
      'span export is behind: traces that start here are not sampled until it catches up (load shedding)',
      'export fell behind: traces were shed or spans dropped (docs/architecture.md, "Load shedding")',
    ]);
    expect(warnings[0]).toMatchObject({ queued: 8, maxQueueSize: 16, exportPriority: 'idle' });
    expect(warnings[1]).toMatchObject({ tracesShed: 5, spansDropped: 2 });
    expect(lines.some((l) => l.msg === 'span export caught up')).toBe(true);
  });

  it('drops a malformed record with one warning and exports the rest', async () => {
    receiver = await startReceiver();
    const { logger, lines } = capturingLogger();
    const config = configFor(receiver.url);
    config.metrics.exporters = [];
    const telemetry = createTelemetry(config, { engineStats: () => lossless, logger });
    telemetry.onBatch({
      processes: [python],
      spans: [
        record({ traceId: 'zz' }),
        record({ spanId: '0000000000000000' }),
        record({ spanId: 'dddddddddddddddd', parentSpanId: 'xyz' }),
        record({ spanId: 'cccccccccccccccc' }),
      ],
    });
    await telemetry.shutdown(5000);
    const [traces] = await receiver.waitFor('/v1/traces', 1);
    const ids = (traces.body as TracesBody).resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((ss) => ss.spans.map((s) => s.spanId)));
    expect(ids).toEqual(['cccccccccccccccc']);
    const warnings = lines.filter((l) => l.level === 'warn');
    expect(warnings.map((l) => l.msg)).toEqual(['span record dropped; later ones are counted, not logged', 'span records dropped']);
    expect(warnings[1]).toMatchObject({ count: 3 });
  });
});
