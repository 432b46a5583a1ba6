import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPTraceExporter as JsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtoTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { rbinderVersion } from '../config';
import type { SpanRecord } from '../records';
import { durationMetricAttributes, durationSeconds, parseHostPort, toReadableSpan } from './spans';

const resource = resourceFromAttributes({ 'service.name': 'test' });

const TRACE_ID = '0af7651916cd43dd8448eb211c80319c';
const SPAN_ID = 'b7ad6b7169203331';
const PARENT_ID = '00f067aa0ba902b7';

function serverRecord(overrides: Partial<SpanRecord> = {}): SpanRecord {
  return {
    kind: 1,
    traceId: TRACE_ID,
    spanId: SPAN_ID,
    parentSpanId: '',
    parentIsRemote: false,
    traceFlags: 1,
    traceState: '',
    startTime: [1700000000, 100_000_000],
    endTime: [1700000000, 350_000_000],
    pid: 42,
    tid: 43,
    method: 'GET',
    target: '/users/7?verbose=1&x=2',
    statusCode: 200,
    protocolVersion: '1.1',
    host: 'api.example.com:8080',
    userAgent: 'curl/8.5.0',
    peerAddress: '10.0.0.9',
    peerPort: 51234,
    localAddress: '10.0.0.2',
    localPort: 8080,
    requestBodySize: 0,
    responseBodySize: 512,
    error: '',
    ...overrides,
  };
}

function clientRecord(overrides: Partial<SpanRecord> = {}): SpanRecord {
  return serverRecord({
    kind: 2,
    host: 'backend:9000',
    target: '/v1/items?limit=5',
    peerAddress: '10.0.0.5',
    peerPort: 9000,
    localAddress: '10.0.0.2',
    localPort: 40000,
    ...overrides,
  });
}

describe('toReadableSpan', () => {
  it('maps a server exchange to the stable HTTP semantic conventions', () => {
    const span = toReadableSpan(serverRecord(), resource);
    expect(span.name).toBe('GET');
    expect(span.kind).toBe(SpanKind.SERVER);
    expect(span.attributes).toEqual({
      'http.request.method': 'GET',
      'url.scheme': 'http',
      'url.path': '/users/7',
      'url.query': 'verbose=1&x=2',
      'http.response.status_code': 200,
      'server.address': 'api.example.com',
      'server.port': 8080,
      'client.address': '10.0.0.9',
      'network.peer.address': '10.0.0.9',
      'network.peer.port': 51234,
      'network.protocol.version': '1.1',
      'user_agent.original': 'curl/8.5.0',
      'http.response.body.size': 512,
      'thread.id': 43,
    });
    expect(span.status).toEqual({ code: SpanStatusCode.UNSET });
  });

  it('maps a client exchange, with url.full from the Host header', () => {
    const span = toReadableSpan(clientRecord({ method: 'POST', requestBodySize: 20, userAgent: '' }), resource);
    expect(span.name).toBe('POST');
    expect(span.kind).toBe(SpanKind.CLIENT);
    expect(span.attributes).toEqual({
      'http.request.method': 'POST',
      'url.scheme': 'http',
      'url.full': 'http://backend:9000/v1/items?limit=5',
      'url.path': '/v1/items',
      'url.query': 'limit=5',
      'http.response.status_code': 200,
      'server.address': 'backend',
      'server.port': 9000,
      'network.peer.address': '10.0.0.5',
      'network.peer.port': 9000,
      'network.protocol.version': '1.1',
      'http.request.body.size': 20,
      'http.response.body.size': 512,
      'thread.id': 43,
    });
  });

  it.each<[string, Partial<SpanRecord>, Record<string, unknown>]>([
    ['Host without port means port 80', { host: 'example.com' },
      { 'server.address': 'example.com', 'server.port': 80, 'url.full': 'http://example.com/v1/items?limit=5' }],
    ['IPv6 Host', { host: '[::1]:9000' }, { 'server.address': '::1', 'server.port': 9000, 'url.full': 'http://[::1]:9000/v1/items?limit=5' }],
    ['no Host: the peer', { host: '' }, { 'server.address': '10.0.0.5', 'server.port': 9000, 'url.full': 'http://10.0.0.5:9000/v1/items?limit=5' }],
    ['absolute-form target (proxy)', { target: 'http://origin.test:8081/a/b?c=d', host: 'origin.test:8081', peerAddress: '10.0.0.99', peerPort: 3128 },
      { 'server.address': 'origin.test', 'server.port': 8081, 'url.full': 'http://origin.test:8081/a/b?c=d', 'url.path': '/a/b', 'url.query': 'c=d' }],
    ['CONNECT authority-form', { method: 'CONNECT', target: 'secure.test:443', host: 'secure.test:443' },
      { 'server.address': 'secure.test', 'server.port': 443, 'url.full': undefined, 'url.path': undefined }],
    ['target without query', { target: '/health' }, { 'url.path': '/health', 'url.query': undefined }],
    ['unix socket peer', { host: '', peerAddress: '/var/run/docker.sock', peerPort: 0 },
      { 'network.peer.address': '/var/run/docker.sock', 'network.peer.port': undefined, 'network.transport': 'unix', 'server.address': undefined, 'url.full': undefined }],
  ])('client: %s', (_name, overrides, expected) => {
    const { attributes } = toReadableSpan(clientRecord(overrides), resource);
    for (const [key, value] of Object.entries(expected)) expect(attributes[key], key).toEqual(value);
  });

  it.each<[string, Partial<SpanRecord>, Record<string, unknown>]>([
    ['no Host: this end of the connection', { host: '' }, { 'server.address': '10.0.0.2', 'server.port': 8080 }],
    ['empty peer: no client.address', { peerAddress: '', peerPort: 0 }, { 'client.address': undefined, 'network.peer.address': undefined }],
    ['no response yet', { statusCode: 0, responseBodySize: 0 }, { 'http.response.status_code': undefined, 'http.response.body.size': undefined }],
  ])('server: %s', (_name, overrides, expected) => {
    const { attributes } = toReadableSpan(serverRecord(overrides), resource);
    for (const [key, value] of Object.entries(expected)) expect(attributes[key], key).toEqual(value);
  });

  it.each([
    ['PROPFIND', 'PROPFIND'],
    ['get', 'get'], // methods are case-sensitive: "get" is not GET
    ['QUERY', 'QUERY'],
  ])('reports unknown method %s as _OTHER, named "HTTP"', (method, original) => {
    const span = toReadableSpan(serverRecord({ method }), resource);
    expect(span.name).toBe('HTTP');
    expect(span.attributes['http.request.method']).toBe('_OTHER');
    expect(span.attributes['http.request.method_original']).toBe(original);
  });

  it.each(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'])('keeps known method %s', (method) => {
    const span = toReadableSpan(serverRecord({ method }), resource);
    expect(span.name).toBe(method);
    expect(span.attributes['http.request.method_original']).toBeUndefined();
  });

  it.each<[string, SpanRecord, SpanStatusCode, string | undefined, string | undefined]>([
    ['server 200', serverRecord(), SpanStatusCode.UNSET, undefined, undefined],
    ['server 404 is not a server error', serverRecord({ statusCode: 404 }), SpanStatusCode.UNSET, undefined, undefined],
    ['server 503', serverRecord({ statusCode: 503 }), SpanStatusCode.ERROR, undefined, '503'],
    ['client 302', clientRecord({ statusCode: 302 }), SpanStatusCode.UNSET, undefined, undefined],
    ['client 404', clientRecord({ statusCode: 404 }), SpanStatusCode.ERROR, undefined, '404'],
    ['client 500', clientRecord({ statusCode: 500 }), SpanStatusCode.ERROR, undefined, '500'],
    ['client reset before a response', clientRecord({ statusCode: 0, error: 'connection reset' }), SpanStatusCode.ERROR, 'connection reset', 'connection reset'],
    ['server closed mid-response', serverRecord({ statusCode: 200, error: 'connection closed' }), SpanStatusCode.ERROR, 'connection closed', 'connection closed'],
  ])('status: %s', (_name, record, code, message, errorType) => {
    const span = toReadableSpan(record, resource);
    expect(span.status.code).toBe(code);
    expect(span.status.message).toBe(message);
    expect(span.attributes['error.type']).toBe(errorType);
  });

  it('carries ids, flags, trace state, times and scope', () => {
    const span = toReadableSpan(
      serverRecord({ parentSpanId: PARENT_ID, parentIsRemote: true, traceState: 'vendor=abc,other=1', traceFlags: 1 }),
      resource,
    );
    const context = span.spanContext();
    expect(context).toMatchObject({ traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: 1 });
    expect(context.traceState?.get('vendor')).toBe('abc');
    expect(context.traceState?.serialize()).toBe('vendor=abc,other=1');
    expect(span.parentSpanContext).toMatchObject({ traceId: TRACE_ID, spanId: PARENT_ID, isRemote: true });
    expect(span.startTime).toEqual([1700000000, 100_000_000]);
    expect(span.endTime).toEqual([1700000000, 350_000_000]);
    expect(span.duration).toEqual([0, 250_000_000]);
    expect(span.ended).toBe(true);
    expect(span.resource).toBe(resource);
    expect(span.instrumentationScope).toEqual({ name: 'rbinder', version: rbinderVersion() });
    expect([span.links, span.events]).toEqual([[], []]);
    expect([span.droppedAttributesCount, span.droppedEventsCount, span.droppedLinksCount]).toEqual([0, 0, 0]);
  });

  it('has no parent context for a root span and no trace state when none was carried', () => {
    const span = toReadableSpan(clientRecord(), resource);
    expect(span.parentSpanContext).toBeUndefined();
    expect(span.spanContext().traceState).toBeUndefined();
  });

  it('never gives a negative duration', () => {
    const span = toReadableSpan(serverRecord({ startTime: [100, 500], endTime: [99, 0] }), resource);
    expect(span.endTime).toEqual([100, 500]);
    expect(span.duration).toEqual([0, 0]);
  });
});

describe('durationMetricAttributes', () => {
  it('keeps server metrics low-cardinality (no server.*, no path)', () => {
    expect(durationMetricAttributes(serverRecord({ statusCode: 500 }))).toEqual({
      'http.request.method': 'GET',
      'url.scheme': 'http',
      'http.response.status_code': 500,
      'network.protocol.version': '1.1',
      'error.type': '500',
    });
  });

  it('gives client metrics server.address and server.port', () => {
    expect(durationMetricAttributes(clientRecord({ method: 'FOO', statusCode: 0, error: 'connection reset' }))).toEqual({
      'http.request.method': '_OTHER',
      'url.scheme': 'http',
      'network.protocol.version': '1.1',
      'server.address': 'backend',
      'server.port': 9000,
      'error.type': 'connection reset',
    });
  });

  it('measures seconds', () => {
    expect(durationSeconds(serverRecord())).toBeCloseTo(0.25, 9);
    expect(durationSeconds(serverRecord({ startTime: [10, 900_000_000], endTime: [11, 100_000_000] }))).toBeCloseTo(0.2, 9);
  });
});

describe('parseHostPort', () => {
  it.each<[string, ReturnType<typeof parseHostPort>]>([
    ['example.com', { address: 'example.com', port: undefined }],
    ['example.com:8080', { address: 'example.com', port: 8080 }],
    ['[2001:db8::1]:443', { address: '2001:db8::1', port: 443 }],
    ['[2001:db8::1]', { address: '2001:db8::1', port: undefined }],
    ['2001:db8::1', undefined],
    ['example.com:http', undefined],
    ['example.com:99999', undefined],
    [':80', undefined],
  ])('%s', (value, expected) => {
    expect(parseHostPort(value)).toEqual(expected);
  });
});

describe('RecordedSpan as the SDK sees it', () => {
  /** The same values as plain own properties and a fresh SpanContext object: the shape the SDK's own spans have. */
  function plainCopy(span: ReadableSpan): ReadableSpan {
    const ctx = span.spanContext();
    const context = { traceId: ctx.traceId, spanId: ctx.spanId, traceFlags: ctx.traceFlags, traceState: ctx.traceState };
    return {
      name: span.name,
      kind: span.kind,
      spanContext: () => context,
      parentSpanContext: span.parentSpanContext === undefined ? undefined : { ...span.parentSpanContext },
      startTime: [...span.startTime],
      endTime: [...span.endTime],
      status: { ...span.status },
      attributes: { ...span.attributes },
      links: [],
      events: [],
      duration: [...span.duration],
      ended: true,
      resource: span.resource,
      instrumentationScope: span.instrumentationScope, // one object for all: exporters group spans by it
      droppedAttributesCount: 0,
      droppedEventsCount: 0,
      droppedLinksCount: 0,
    };
  }

  /** What an OTLP exporter sends for these spans, as bytes. */
  async function exported(exporter: 'proto' | 'json', spans: ReadableSpan[]): Promise<Buffer> {
    const bodies: Buffer[] = [];
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        bodies.push(Buffer.concat(chunks));
        res.writeHead(200, { 'content-type': exporter === 'json' ? 'application/json' : 'application/x-protobuf' }).end(exporter === 'json' ? '{}' : '');
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`;
    const Exporter = exporter === 'proto' ? ProtoTraceExporter : JsonTraceExporter;
    const otlp = new Exporter({ url });
    try {
      const result = await new Promise<ExportResult>((resolve) => otlp.export(spans, resolve));
      expect(result.code).toBe(ExportResultCode.SUCCESS);
    } finally {
      await otlp.shutdown();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    return Buffer.concat(bodies);
  }

  const records: SpanRecord[] = [
    serverRecord(),
    serverRecord({ parentSpanId: PARENT_ID, parentIsRemote: true, traceState: 'vendor=abc,other=1', statusCode: 503, requestBodySize: 2 ** 40 }),
    clientRecord({ parentSpanId: PARENT_ID, statusCode: 0, error: 'connection reset' }),
    clientRecord({ method: 'PROPFIND', target: 'http://origin.test:8081/a?b=c', host: '' }),
    serverRecord({ peerAddress: '/run/app.sock', peerPort: 0, host: '', target: '/caf\u00e9', startTime: [5, 9], endTime: [4, 0] }),
  ];

  it.each(['proto', 'json'] as const)('exports exactly what a plain ReadableSpan with the same values exports (OTLP %s)', async (format) => {
    const spans = records.map((r) => toReadableSpan(r, resource));
    const [recorded, plain] = [await exported(format, spans), await exported(format, spans.map(plainCopy))];
    expect(recorded.length).toBeGreaterThan(500);
    expect(recorded.equals(plain)).toBe(true);
  });

  it('shares what is the same for every span and builds the rest once', () => {
    const [a, b] = [toReadableSpan(serverRecord(), resource), toReadableSpan(clientRecord({ parentSpanId: PARENT_ID }), resource)];
    expect(a.instrumentationScope).toBe(b.instrumentationScope);
    expect(a.status).toBe(b.status); // UNSET, one object
    expect(Object.isFrozen(a.status) && Object.isFrozen(a.links) && Object.isFrozen(a.events)).toBe(true);
    expect(a.spanContext()).toBe(a);
    // Exporters read these more than once (size estimate, then write): one object each.
    expect(b.attributes).toBe(b.attributes);
    expect(b.parentSpanContext).toBe(b.parentSpanContext);
    expect(b.parentSpanContext).toEqual({ traceId: TRACE_ID, spanId: PARENT_ID, traceFlags: 1, isRemote: false, traceState: undefined });
  });
});

describe('server.address from the Host header, remembered between exchanges', () => {
  it.each<[string[], Array<[string, number] | undefined>]>([
    [['a:1', 'b', 'a:1', 'a:1'], [['a', 1], ['b', 80], ['a', 1], ['a', 1]]],
    [['a:1', 'bad host:99999', 'bad host:99999', 'a:1'], [['a', 1], ['10.0.0.2', 8080], ['10.0.0.2', 8080], ['a', 1]]],
    [['[::1]:9', '', '[::1]:9'], [['::1', 9], ['10.0.0.2', 8080], ['::1', 9]]],
  ])('hosts %j', (hosts, expected) => {
    const got = hosts.map((host) => {
      const { attributes } = toReadableSpan(serverRecord({ host }), resource);
      const metric = durationMetricAttributes(clientRecord({ host, peerAddress: '10.0.0.2', peerPort: 8080 }));
      // The client's metric and the server's span agree on the endpoint.
      expect([metric['server.address'], metric['server.port']]).toEqual([attributes['server.address'], attributes['server.port']]);
      return attributes['server.address'] === undefined ? undefined : [attributes['server.address'], attributes['server.port']];
    });
    expect(got).toEqual(expected);
  });
});
