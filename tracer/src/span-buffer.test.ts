import { describe, expect, it } from 'vitest';
import { decodeSpans } from './span-buffer';

/** One span as the engine encodes it (native/src/addon.cc, spans_to_js). */
function encoded(strings: string[], parent: boolean): Buffer {
  const fixed = Buffer.alloc(88);
  fixed[0] = 2;
  fixed[1] = parent ? 3 : 0;
  fixed[2] = 1;
  Buffer.from('0af7651916cd43dd8448eb211c80319c', 'hex').copy(fixed, 4);
  Buffer.from('b7ad6b7169203331', 'hex').copy(fixed, 20);
  Buffer.from('00f067aa0ba902b7', 'hex').copy(fixed, 28);
  [1764057600, 5, 1764057601, 999999999, 41, 42, 404, 8080, 51234].forEach((v, i) => fixed.writeUInt32LE(v, 36 + 4 * i));
  fixed.writeDoubleLE(2 ** 40, 72);
  fixed.writeDoubleLE(6, 80);
  const parts = strings.map((s) => {
    const bytes = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32LE(bytes.length);
    return Buffer.concat([len, bytes]);
  });
  return Buffer.concat([fixed, ...parts]);
}

const STRINGS = ['k=v', 'GET', '/caf\u00e9?q=1', '1.1', 'example.com:8080', 'curl/8', '10.0.0.2', '10.0.0.1', ''];

describe('decodeSpans', () => {
  it('reads every field of each span in the layout the engine writes', () => {
    const [a, b] = decodeSpans(Buffer.concat([encoded(STRINGS, true), encoded(STRINGS, false)]));
    expect(a).toEqual({
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
    });
    expect(b.parentSpanId).toBe('');
    expect(b.parentIsRemote).toBe(false);
  });

  it('decodes an empty batch to no spans', () => {
    expect(decodeSpans(Buffer.alloc(0))).toEqual([]);
  });

  it('refuses a buffer that ends inside a span instead of inventing fields', () => {
    const whole = encoded(STRINGS, true);
    expect(() => decodeSpans(whole.subarray(0, 50))).toThrow(/50 bytes left, a span has 88/);
    expect(() => decodeSpans(whole.subarray(0, whole.length - 6))).toThrow(/8-byte string runs past its end/);
    expect(() => decodeSpans(whole.subarray(0, whole.length - 3))).toThrow(RangeError);
  });
});
