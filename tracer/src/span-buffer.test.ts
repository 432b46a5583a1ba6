import { isValidSpanId, isValidTraceId } from '@opentelemetry/api';
import { describe, expect, it } from 'vitest';
import type { SpanRecord } from './records';
import { BufferedSpanRecord, StringTable, decodeSpans } from './span-buffer';

/** A u32 length, then the bytes. */
function lengthPrefixed(bytes: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(bytes.length);
  return Buffer.concat([len, bytes]);
}

const OTLP = Buffer.from([0x0a, 0x10, 0xff]);

/** One span as the engine encodes it (native/src/addon.cc, spans_to_js). */
function encoded(strings: string[], parent: boolean, otlp: Buffer = Buffer.alloc(0)): Buffer {
  const fixed = Buffer.alloc(92);
  fixed[0] = 2;
  fixed[1] = parent ? 3 : 0;
  fixed[2] = 1;
  Buffer.from('0af7651916cd43dd8448eb211c80319c', 'hex').copy(fixed, 4);
  Buffer.from('b7ad6b7169203331', 'hex').copy(fixed, 20);
  Buffer.from('00f067aa0ba902b7', 'hex').copy(fixed, 28);
  [1764057600, 5, 1764057601, 999999999, 41, 42, 404, 8080, 51234].forEach((v, i) => fixed.writeUInt32LE(v, 36 + 4 * i));
  fixed.writeDoubleLE(2 ** 40, 72);
  fixed.writeDoubleLE(6, 80);
  fixed.writeUInt32LE(77, 88);
  return Buffer.concat([fixed, ...strings.map((s) => lengthPrefixed(Buffer.from(s, 'utf8'))), lengthPrefixed(otlp)]);
}

const FIELDS: Array<keyof SpanRecord> = [
  'kind', 'traceId', 'spanId', 'parentSpanId', 'parentIsRemote', 'traceFlags', 'startTime', 'endTime', 'pid', 'tid',
  'statusCode', 'peerPort', 'localPort', 'requestBodySize', 'responseBodySize', 'traceState', 'method', 'target',
  'protocolVersion', 'host', 'userAgent', 'peerAddress', 'localAddress', 'error', 'otlp', 'metricSeries',
];

const STRINGS = ['k=v', 'GET', '/caf\u00e9?q=1', '1.1', 'example.com:8080', 'curl/8', '10.0.0.2', '10.0.0.1', ''];

describe('decodeSpans', () => {
  it('reads every field of each span in the layout the engine writes', () => {
    const [a, b] = decodeSpans(Buffer.concat([encoded(STRINGS, true, OTLP), encoded(STRINGS, false)]));
    // Every field, through the getters of the record's class too (read twice: the second from what the first kept).
    for (let read = 0; read < 2; read++) expect(Object.fromEntries(FIELDS.map((f) => [f, a[f]]))).toEqual({
      kind: 2,
      traceId: '0af7651916cd43dd8448eb211c80319c',
      spanId: 'b7ad6b7169203331',
      parentSpanId: '00f067aa0ba902b7',
      parentIsRemote: true,
      traceFlags: 1,
      startTime: [1764057600, 5],
      endTime: [1764057601, 999999999],
      pid: 41,
      tid: 42,
      statusCode: 404,
      peerPort: 8080,
      localPort: 51234,
      requestBodySize: 2 ** 40,
      responseBodySize: 6,
      traceState: 'k=v',
      method: 'GET',
      target: '/caf\u00e9?q=1',
      protocolVersion: '1.1',
      host: 'example.com:8080',
      userAgent: 'curl/8',
      peerAddress: '10.0.0.2',
      localAddress: '10.0.0.1',
      error: '',
      otlp: OTLP,
      metricSeries: 77,
    });
    expect(b.otlp).toBeUndefined();
    expect(b.parentSpanId).toBe('');
    expect(b.parentIsRemote).toBe(false);
  });

  it('decodes an empty batch to no spans', () => {
    expect(decodeSpans(Buffer.alloc(0))).toEqual([]);
  });

  it('refuses a buffer that ends inside a span instead of inventing fields', () => {
    const whole = encoded(STRINGS, true, OTLP);
    const otlpAt = whole.length - 4 - OTLP.length;
    expect(() => decodeSpans(whole.subarray(0, 50))).toThrow(/50 bytes left, a span has 92/);
    expect(() => decodeSpans(whole.subarray(0, otlpAt - 6))).toThrow(/8-byte string runs past its end/);
    expect(() => decodeSpans(whole.subarray(0, otlpAt - 3))).toThrow(RangeError);
    expect(() => decodeSpans(whole.subarray(0, whole.length - 1))).toThrow(/a 3-byte OTLP message runs past its end/);
    expect(() => decodeSpans(whole.subarray(0, otlpAt + 2))).toThrow(/OTLP message length at offset \d+ runs past its end/);
  });
});

/** Spans with the given ids, strings and body sizes, in the engine's layout. */
function encodedWith(ids: { trace: Buffer; span: Buffer; parent?: Buffer }, strings: Array<string | Buffer>, sizes: [number, number] = [0, 6]): Buffer {
  const fixed = Buffer.alloc(92);
  fixed[0] = 1;
  fixed[1] = ids.parent ? 1 : 0;
  fixed[2] = 1;
  ids.trace.copy(fixed, 4);
  ids.span.copy(fixed, 20);
  ids.parent?.copy(fixed, 28);
  fixed.writeDoubleLE(sizes[0], 72);
  fixed.writeDoubleLE(sizes[1], 80);
  const parts = strings.map((s) => lengthPrefixed(typeof s === 'string' ? Buffer.from(s, 'utf8') : s));
  return Buffer.concat([fixed, ...parts, lengthPrefixed(Buffer.alloc(0))]);
}

const NINE = (target: string, host = 'h'): string[] => ['', 'GET', target, '1.1', host, 'ua', '10.0.0.2', '10.0.0.1', ''];

describe('decodeSpans: ids and numbers', () => {
  it('writes ids as lower-case hex, as Buffer.toString("hex") does, for every byte value', () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const spans: Buffer[] = [];
    for (let i = 0; i < 256; i += 16) {
      spans.push(encodedWith({ trace: all.subarray(i, i + 16), span: all.subarray(i, i + 8), parent: all.subarray(i + 8, i + 16) }, NINE('/')));
    }
    const decoded = decodeSpans(Buffer.concat(spans));
    decoded.forEach((span, n) => {
      const i = n * 16;
      expect(span.traceId).toBe(all.toString('hex', i, i + 16));
      expect(span.spanId).toBe(all.toString('hex', i, i + 8));
      expect(span.parentSpanId).toBe(all.toString('hex', i + 8, i + 16));
    });
  });

  it('calls ids invalid exactly when the SDK would call their hex invalid', () => {
    const zero16 = Buffer.alloc(16);
    const one16 = Buffer.alloc(16);
    one16[15] = 1;
    const cases = [zero16, one16, Buffer.from('80000000000000000000000000000000', 'hex')];
    for (const trace of cases) {
      for (const span of [zero16.subarray(0, 8), one16.subarray(8), Buffer.from('8000000000000000', 'hex')]) {
        for (const parent of [undefined, zero16.subarray(0, 8), one16.subarray(8)]) {
          const [record] = decodeSpans(encodedWith({ trace, span, parent }, NINE('/')));
          const sdk = isValidTraceId(record.traceId) && isValidSpanId(record.spanId) && (record.parentSpanId === '' || isValidSpanId(record.parentSpanId));
          expect((record as BufferedSpanRecord).hasValidIds()).toBe(sdk);
        }
      }
    }
  });

  it.each([[0, 6], [17, 2 ** 31], [0.5, 2 ** 40], [2 ** 53, 1e300]])('keeps body sizes %s and %s exactly', (request, response) => {
    const zero = Buffer.alloc(16, 1);
    const [span] = decodeSpans(encodedWith({ trace: zero, span: zero }, NINE('/'), [request, response]));
    expect([span.requestBodySize, span.responseBodySize]).toEqual([request, response]);
  });
});

describe('StringTable', () => {
  const ids = { trace: Buffer.alloc(16, 7), span: Buffer.alloc(8, 7) };
  const targets = (buf: Buffer, table: StringTable): string[] => decodeSpans(buf, table).map((s) => s.target);

  it('tells apart strings that land in the same slot (same length, same sampled bytes)', () => {
    // Length 12: the slot depends on bytes 0, 3, 6, 8 and 11 only; these differ at byte 1.
    const a = '/aaaaaaaaaaa';
    const b = '/baaaaaaaaaa';
    const table = new StringTable();
    const buf = Buffer.concat([a, b, a, a, b, b, a].map((t) => encodedWith(ids, NINE(t))));
    expect(targets(buf, table)).toEqual([a, b, a, a, b, b, a]);
  });

  it('decodes UTF-8 exactly, including bytes that are not valid UTF-8, and never answers them from an ASCII entry', () => {
    const table = new StringTable();
    const invalid = Buffer.from([0x2f, 0xff, 0x61]); // "/", an invalid byte, "a"
    const texts: Array<string | Buffer> = ['/caf\u00e9', '/cafe', '/caf\u00e9', invalid, '/\u00ffa', invalid, '/xa'];
    const buf = Buffer.concat(texts.map((t) => encodedWith(ids, NINE(t as string).map((s, k) => (k === 2 ? t : s)))));
    expect(targets(buf, table)).toEqual(['/caf\u00e9', '/cafe', '/caf\u00e9', '/\ufffda', '/\u00ffa', '/\ufffda', '/xa']);
  });

  it('decodes long strings without keeping them', () => {
    const table = new StringTable();
    const long = `/${'x'.repeat(StringTable.MAX_LENGTH + 10)}`;
    const longer = `${long}y`;
    expect(targets(Buffer.concat([long, longer, long].map((t) => encodedWith(ids, NINE(t)))), table)).toEqual([long, longer, long]);
  });

  it('gives every field of many spans exactly what Buffer.toString gives, whatever the slots hold', () => {
    // Short strings over a tiny alphabet collide in slots all the time; some are not ASCII.
    let seed = 12345;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const alphabet = ['a', 'b', '/', '.', '\u00e9', '1'];
    const word = (): string => Array.from({ length: random(14) }, () => alphabet[random(alphabet.length)]).join('');
    const table = new StringTable();
    const expected: string[][] = [];
    const buffers: Buffer[] = [];
    for (let i = 0; i < 3000; i++) {
      const strings = Array.from({ length: 9 }, word);
      expected.push(strings);
      buffers.push(encodedWith(ids, strings));
    }
    const decoded = decodeSpans(Buffer.concat(buffers), table).map((s) => [
      s.traceState, s.method, s.target, s.protocolVersion, s.host, s.userAgent, s.peerAddress, s.localAddress, s.error,
    ]);
    expect(decoded).toEqual(expected);
  });
});
