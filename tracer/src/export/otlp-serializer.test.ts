// The engine's OTLP span bytes (native/src/engine/otlp.cc) and OtlpSpanSerializer against the
// SDK's own ProtobufTraceSerializer: every request must be the same bytes.
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { loadNative } from '../native';
import type { SpanRecord } from '../records';
import { decodeSpans } from '../span-buffer';
import { OtlpSpanSerializer } from './otlp-serializer';
import { RecordedSpan } from './spans';
import { plainRecord } from './record-fixture';

type Input = Omit<SpanRecord, 'otlp' | 'method' | 'target' | 'host' | 'userAgent' | 'peerAddress' | 'error' | 'traceState'> & {
  // Buffers stand for bytes that are not valid UTF-8.
  method: string | Buffer;
  target: string | Buffer;
  host: string | Buffer;
  userAgent: string | Buffer;
  peerAddress: string | Buffer;
  error: string | Buffer;
  traceState: string | Buffer;
};

const native = loadNative();

function record(overrides: Partial<Input> = {}): Input {
  return {
    kind: 1,
    traceId: '0af7651916cd43dd8448eb211c80319c',
    spanId: 'b7ad6b7169203331',
    parentSpanId: '',
    parentIsRemote: false,
    traceFlags: 1,
    traceState: '',
    startTime: [1764900000, 123456789],
    endTime: [1764900000, 987654321],
    pid: 42,
    tid: 43,
    method: 'GET',
    target: '/hello',
    statusCode: 200,
    protocolVersion: '1.1',
    host: 'localhost:8080',
    userAgent: 'curl/8.5.0',
    peerAddress: '127.0.0.1',
    peerPort: 50000,
    localAddress: '127.0.0.1',
    localPort: 8080,
    requestBodySize: 0,
    responseBodySize: 6,
    error: '',
    ...overrides,
  };
}

const resourceA = resourceFromAttributes({ 'service.name': 'a', 'process.pid': 42, 'process.command_args': ['node', 'server.js'] });
const resourceB = resourceFromAttributes({ 'service.name': 'b', 'host.name': 'hé', 'process.pid': 7 });

function decoded(inputs: Input[]): SpanRecord[] {
  return decodeSpans(native.spanBufferOf(inputs as unknown as SpanRecord[]));
}

function spansOf(records: SpanRecord[], resources: Resource[] = [resourceA]): RecordedSpan[] {
  return records.map((r, i) => new RecordedSpan(r, resources[i % resources.length]));
}

/** The same spans with the engine's bytes taken away: what the SDK alone would export. */
function withoutEngineBytes(records: SpanRecord[], resources: Resource[] = [resourceA]): ReadableSpan[] {
  return spansOf(records.map((r) => ({ ...plainRecord(r), otlp: undefined })), resources);
}

function expectSameAsSdk(records: SpanRecord[], resources?: Resource[]): void {
  const ours = OtlpSpanSerializer.serializeRequest(spansOf(records, resources));
  const sdk = ProtobufTraceSerializer.serializeRequest(withoutEngineBytes(records, resources));
  expect(Buffer.from(ours as Uint8Array).toString('hex')).toBe(Buffer.from(sdk as Uint8Array).toString('hex'));
}

// Records the engine encodes itself, each unusual in one way.
const ENCODED: Array<[string, Partial<Input>]> = [
  ['a plain server span', {}],
  ['a client span', { kind: 2, peerAddress: '10.0.0.7', peerPort: 8081, localPort: 50000, host: 'back:8081' }],
  ['a client span without Host', { kind: 2, host: '', peerAddress: '10.0.0.7', peerPort: 80 }],
  ['a client span to an IPv6 peer', { kind: 2, host: '', peerAddress: '::1', peerPort: 8081 }],
  ['a remote parent', { parentSpanId: '00f067aa0ba902b7', parentIsRemote: true }],
  ['a local parent', { kind: 2, parentSpanId: '00f067aa0ba902b7' }],
  ['an unsampled-looking flag byte', { traceFlags: 0xff }],
  ['a tracestate', { traceState: 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE' }],
  ['a query', { target: '/search?q=1&r=%20' }],
  ['an empty query', { target: '/p?' }],
  ['an asterisk target', { method: 'OPTIONS', target: '*' }],
  ['an unknown method', { method: 'PURGE' }],
  ['an empty method', { method: '' }],
  ['a lower-case method', { method: 'get' }],
  ['CONNECT with an authority', { kind: 2, method: 'CONNECT', target: 'example.com:443' }],
  ['CONNECT with a bad authority', { kind: 2, method: 'CONNECT', target: 'a:b:c' }],
  ['CONNECT with a v6 authority', { kind: 2, method: 'CONNECT', target: '[2001:db8::1]:8443' }],
  ['Host with a v6 address', { host: '[::1]:8080' }],
  ['Host with a v6 address and no port', { kind: 2, host: '[::1]' }],
  ['Host on port 80', { kind: 2, host: 'example.com:80' }],
  ['a malformed Host', { host: 'a:b:c' }],
  ['a Host with a bad port', { host: 'example.com:99999' }],
  ['a Host with letters in the port', { host: 'example.com:8o' }],
  ['a Host ending in a colon', { kind: 2, host: 'example.com:' }],
  ['a Host of a lone bracket', { host: '[::1' }],
  ['a server without Host or local address', { host: '', localAddress: '' }],
  ['a server without Host, on port 0 of an IPv4 address', { host: '', localPort: 0 }],
  ['a unix socket peer', { host: '', peerAddress: '/run/app.sock', peerPort: 0, localAddress: '/run/app.sock', localPort: 0 }],
  ['an abstract unix socket', { kind: 2, host: '', peerAddress: '@app', peerPort: 0 }],
  ['no peer', { peerAddress: '', peerPort: 0 }],
  ['no status (reset)', { statusCode: 0, error: 'connection reset' }],
  ['a server 500', { statusCode: 500 }],
  ['a server 404', { statusCode: 404 }],
  ['a client 404', { kind: 2, statusCode: 404 }],
  ['a 600 status', { statusCode: 600 }],
  ['HTTP/1.0 without user agent', { protocolVersion: '1.0', userAgent: '' }],
  ['UTF-8 text', { userAgent: 'naïve/1.0 🚀', target: '/é?ü=1' }],
  ['body sizes', { requestBodySize: 1, responseBodySize: 2 ** 40 + 3 }],
  ['a body size past int64', { responseBodySize: 2 ** 64 }],
  ['an end before the start', { endTime: [1764899999, 5] }],
  ['a start in the next second', { startTime: [1764900001, 0], endTime: [1764900001, 999999999] }],
  ['a long string', { userAgent: 'x'.repeat(300), target: `/${'p'.repeat(200)}` }],
];

// Records the engine leaves to the SDK.
const LEFT_TO_JS: Array<[string, Partial<Input>]> = [
  ['an absolute-form target', { kind: 2, target: 'http://example.com:8080/a?b=1' }],
  ['an absolute-form target that is no URL', { target: 'nonsense' }],
  ['bytes that are not UTF-8', { userAgent: Buffer.from([0x61, 0xff, 0x62]) }],
  ['an overlong UTF-8 form', { target: Buffer.from([0x2f, 0xc0, 0xaf]) }],
  ['a surrogate in UTF-8', { host: Buffer.from([0xed, 0xa0, 0x80]) }],
  ['an IPv6 local address on port 0', { host: '', localAddress: '::1', localPort: 0 }],
];

describe('the engine OTLP span bytes', () => {
  it.each(ENCODED)('encodes %s as the SDK does', (_, overrides) => {
    const records = decoded([record(overrides)]);
    expect(records[0].otlp?.length).toBeGreaterThan(0);
    expectSameAsSdk(records);
  });

  it.each(LEFT_TO_JS)('leaves %s to the SDK, and the request is still the same', (_, overrides) => {
    const records = decoded([record(overrides)]);
    expect(records[0].otlp).toBeUndefined();
    expectSameAsSdk(records);
  });

  it('encodes only sampled spans, and only when asked', () => {
    expect(decoded([record({ traceFlags: 0 })])[0].otlp).toBeUndefined();
    expect(decodeSpans(native.spanBufferOf([record() as unknown as SpanRecord], false))[0].otlp).toBeUndefined();
  });

  it('drops its bytes where the SDK would rewrite the tracestate', () => {
    const [r] = decoded([record({ traceState: 'ok=1,BAD KEY=2' })]);
    expect(r.otlp).toBeDefined();
    expect(new RecordedSpan(r, resourceA).otlp).toBeUndefined();
    expectSameAsSdk([r]);
  });

  it('keeps the other fields of the record as they were', () => {
    const input = record({ kind: 2, parentSpanId: '00f067aa0ba902b7', parentIsRemote: true, traceState: 'a=b' });
    const [r] = decoded([input]);
    expect({ ...plainRecord(r), otlp: undefined, metricSeries: undefined }).toEqual({ ...input, otlp: undefined });
  });
});

describe('OtlpSpanSerializer', () => {
  it('writes the same request as the SDK for a batch of every kind of record, over two resources', () => {
    const records = decoded([...ENCODED, ...LEFT_TO_JS].map(([, o]) => record(o)));
    expectSameAsSdk(records, [resourceA, resourceB, resourceB]);
  });

  it('takes spans that are not the engine’s (another ReadableSpan) through the SDK', () => {
    const [mine, other] = decoded([record(), record({ spanId: '1111111111111111' })]);
    const foreign = { ...new RecordedSpan({ ...plainRecord(other), otlp: undefined }, resourceB) } as unknown as ReadableSpan;
    const sdkSpan = new RecordedSpan({ ...plainRecord(other), otlp: undefined }, resourceB);
    Object.assign(foreign, {
      name: sdkSpan.name,
      attributes: sdkSpan.attributes,
      spanContext: () => sdkSpan.spanContext(),
      parentSpanContext: sdkSpan.parentSpanContext,
      instrumentationScope: sdkSpan.instrumentationScope,
      events: [],
      links: [],
      duration: sdkSpan.duration,
      ended: true,
    });
    const mixed = [new RecordedSpan(mine, resourceA), foreign];
    const ours = OtlpSpanSerializer.serializeRequest(mixed) as Uint8Array;
    const sdk = ProtobufTraceSerializer.serializeRequest([new RecordedSpan({ ...plainRecord(mine), otlp: undefined }, resourceA), foreign]) as Uint8Array;
    expect(Buffer.from(ours).equals(Buffer.from(sdk))).toBe(true);
  });

  it('writes the same request as the SDK for random records (seeded)', () => {
    let seed = 12345;
    const next = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const pick = <T>(xs: T[]): T => xs[next(xs.length)];
    const inputs: Input[] = [];
    for (let i = 0; i < 400; i++) {
      inputs.push(
        record({
          kind: pick([1, 2] as const),
          spanId: (i + 1).toString(16).padStart(16, '0'),
          parentSpanId: pick(['', '00f067aa0ba902b7']),
          parentIsRemote: next(2) === 1,
          traceState: pick(['', 'a=1', 'vendor@x=y,b=2']),
          method: pick(['GET', 'POST', 'PURGE', 'CONNECT', 'delete']),
          target: pick(['/', '/a?b', '*', 'host:1', 'http://h/x', '/ü']),
          statusCode: pick([0, 200, 301, 404, 503]),
          host: pick(['', 'h', 'h:81', '[::1]:9', 'x:y:z']),
          userAgent: pick(['', 'ua']),
          peerAddress: pick(['', '10.1.2.3', '/s.sock', '::ffff:1.2.3.4']),
          peerPort: pick([0, 80, 65535]),
          localAddress: pick(['', '10.1.2.4']),
          localPort: pick([0, 8080]),
          requestBodySize: pick([0, 5]),
          error: pick(['', '', 'connection closed']),
          endTime: [1764900000, next(1e9)],
        }),
      );
    }
    const records = decoded(inputs);
    expect(records.filter((r) => r.otlp !== undefined).length).toBeGreaterThan(100);
    expectSameAsSdk(records, [resourceA, resourceB]);
  });

  it('writes an empty request for no spans, as the SDK does', () => {
    expect(OtlpSpanSerializer.serializeRequest([])).toEqual(ProtobufTraceSerializer.serializeRequest([]));
  });
});
