// The engine hands each batch's spans over as one buffer (native/src/addon.cc, spans_to_js):
// building a JS object per span from C++ (two dozen N-API property sets) cost more than the
// rest of the span's way to the exporter. One record per span, little-endian:
//
//   offset  size  field
//        0     1  kind (1 SERVER, 2 CLIENT)
//        1     1  bit 0: has a parent, bit 1: the parent is remote
//        2     1  trace flags
//        3     1  (zero)
//        4    16  trace id        20  8  span id        28  8  parent span id
//       36     8  start: u32 seconds, u32 nanoseconds     44  8  end: the same
//       52    20  u32 each: pid, tid, status code, peer port, local port
//       72    16  f64 each: request body size, response body size
//       88     …  strings, each a u32 byte length then UTF-8: trace state, method, target,
//                 protocol version, host, user agent, peer address, local address, error
import type { HttpSpanKind, SpanRecord } from './records';

const FIXED = 88;
const HAS_PARENT = 1;
const PARENT_REMOTE = 2;

export function decodeSpans(buf: Buffer): SpanRecord[] {
  const spans: SpanRecord[] = [];
  let at = 0;
  const text = (): string => {
    const n = buf.readUInt32LE(at);
    if (at + 4 + n > buf.length) throw new Error(`span buffer: a ${n}-byte string runs past its end`);
    const s = n === 0 ? '' : buf.toString('utf8', at + 4, at + 4 + n);
    at += 4 + n;
    return s;
  };
  while (at < buf.length) {
    if (buf.length - at < FIXED) throw new Error(`span buffer: ${buf.length - at} bytes left, a span has ${FIXED}`);
    const base = at;
    const bits = buf[base + 1];
    at = base + FIXED;
    spans.push({
      kind: buf[base] as HttpSpanKind,
      traceId: buf.toString('hex', base + 4, base + 20),
      spanId: buf.toString('hex', base + 20, base + 28),
      parentSpanId: bits & HAS_PARENT ? buf.toString('hex', base + 28, base + 36) : '',
      parentIsRemote: (bits & PARENT_REMOTE) !== 0,
      traceFlags: buf[base + 2],
      startTime: [buf.readUInt32LE(base + 36), buf.readUInt32LE(base + 40)],
      endTime: [buf.readUInt32LE(base + 44), buf.readUInt32LE(base + 48)],
      pid: buf.readUInt32LE(base + 52),
      tid: buf.readUInt32LE(base + 56),
      statusCode: buf.readUInt32LE(base + 60),
      peerPort: buf.readUInt32LE(base + 64),
      localPort: buf.readUInt32LE(base + 68),
      requestBodySize: buf.readDoubleLE(base + 72),
      responseBodySize: buf.readDoubleLE(base + 80),
      traceState: text(),
      method: text(),
      target: text(),
      protocolVersion: text(),
      host: text(),
      userAgent: text(),
      peerAddress: text(),
      localAddress: text(),
      error: text(),
    });
  }
  return spans;
}
