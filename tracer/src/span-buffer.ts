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
//                 protocol version, host, user agent, peer address, local address, error;
//                 then a u32 byte length and the span's OTLP protobuf `Span` message, made by
//                 native/src/engine/otlp.cc (length 0: not made, e.g. unsampled or not asked for)
import type { HttpSpanKind, SpanRecord } from './records';

const FIXED = 88;
const HAS_PARENT = 1;
const PARENT_REMOTE = 2;

function u32(buf: Buffer, at: number): number {
  return (buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16)) + buf[at + 3] * 0x1000000;
}

/** A body size: small integers as such (a double would be boxed in every record that holds it). */
function size(buf: Buffer, at: number): number {
  const value = buf.readDoubleLE(at);
  const int = value | 0;
  return int === value ? int : value;
}

// Lower-case hex digits (as char codes) of each byte's high and low half.
const HEX_HI = new Uint8Array(256);
const HEX_LO = new Uint8Array(256);
for (let b = 0; b < 256; b++) {
  HEX_HI[b] = '0123456789abcdef'.charCodeAt(b >> 4);
  HEX_LO[b] = '0123456789abcdef'.charCodeAt(b & 15);
}

/**
 * Lower-case hex of buf[at, at + 8), as buf.toString('hex') gives it: built in one go from char
 * codes, about three times faster than the native call for ids this short.
 */
function hex8(buf: Buffer, at: number): string {
  const b0 = buf[at], b1 = buf[at + 1], b2 = buf[at + 2], b3 = buf[at + 3];
  const b4 = buf[at + 4], b5 = buf[at + 5], b6 = buf[at + 6], b7 = buf[at + 7];
  return String.fromCharCode(
    HEX_HI[b0], HEX_LO[b0], HEX_HI[b1], HEX_LO[b1], HEX_HI[b2], HEX_LO[b2], HEX_HI[b3], HEX_LO[b3],
    HEX_HI[b4], HEX_LO[b4], HEX_HI[b5], HEX_LO[b5], HEX_HI[b6], HEX_LO[b6], HEX_HI[b7], HEX_LO[b7],
  );
}

/** Lower-case hex of buf[at, at + 16). */
function hex16(buf: Buffer, at: number): string {
  const b0 = buf[at], b1 = buf[at + 1], b2 = buf[at + 2], b3 = buf[at + 3];
  const b4 = buf[at + 4], b5 = buf[at + 5], b6 = buf[at + 6], b7 = buf[at + 7];
  const b8 = buf[at + 8], b9 = buf[at + 9], b10 = buf[at + 10], b11 = buf[at + 11];
  const b12 = buf[at + 12], b13 = buf[at + 13], b14 = buf[at + 14], b15 = buf[at + 15];
  return String.fromCharCode(
    HEX_HI[b0], HEX_LO[b0], HEX_HI[b1], HEX_LO[b1], HEX_HI[b2], HEX_LO[b2], HEX_HI[b3], HEX_LO[b3],
    HEX_HI[b4], HEX_LO[b4], HEX_HI[b5], HEX_LO[b5], HEX_HI[b6], HEX_LO[b6], HEX_HI[b7], HEX_LO[b7],
    HEX_HI[b8], HEX_LO[b8], HEX_HI[b9], HEX_LO[b9], HEX_HI[b10], HEX_LO[b10], HEX_HI[b11], HEX_LO[b11],
    HEX_HI[b12], HEX_LO[b12], HEX_HI[b13], HEX_LO[b13], HEX_HI[b14], HEX_LO[b14], HEX_HI[b15], HEX_LO[b15],
  );
}

/**
 * Short ASCII strings seen recently, found again by their bytes. Most of a span's strings repeat
 * from one request to the next (method, Host, user agent, addresses, often the path): decoding
 * them once and sharing the string saves a native call per field, and the spans waiting in the
 * export queue then hold one copy instead of one each (less for the GC to copy and mark).
 * Direct-mapped and bounded: a slot holds the last string that hashed there.
 */
export class StringTable {
  static readonly SLOTS = 1024;
  static readonly MAX_LENGTH = 128;
  private readonly slots: string[] = new Array<string>(StringTable.SLOTS).fill('');

  /** The UTF-8 text of buf[start, start + n): the same string object as last time for repeated ASCII. */
  text(buf: Buffer, start: number, n: number): string {
    if (n === 0) return '';
    if (n > StringTable.MAX_LENGTH) return buf.toString('utf8', start, start + n);
    const end = start + n - 1;
    const slot =
      (n * 31 + buf[start] * 17 + buf[start + (n >> 2)] * 13 + buf[start + (n >> 1)] * 7 + buf[end - (n >> 2)] * 5 + buf[end]) &
      (StringTable.SLOTS - 1);
    const cached = this.slots[slot];
    if (cached.length === n) {
      let i = 0;
      while (i < n && buf[start + i] === cached.charCodeAt(i)) i++;
      if (i === n) return cached;
    }
    const text = buf.toString('utf8', start, start + n);
    // Kept only when it has one char per byte: then every char is ASCII (its byte) or U+FFFD (an
    // invalid byte, which no byte can equal), so a lookup that matches every byte matches ASCII
    // only, whose UTF-8 decoding is exactly this string.
    if (text.length === n) this.slots[slot] = text;
    return text;
  }
}

const strings = new StringTable();
const EMPTY = Buffer.alloc(0);

/**
 * Where decodeSpans is in a buffer: one object for the whole run, not closures or an object per
 * call. V8's optimized code depends weakly on the maps (hidden classes) of the objects it handles;
 * the map of an object that lives only during a call dies at a full GC when no such object is
 * alive, and V8 then throws the code away, to compile it again for the next batch. On the chain
 * benchmark that happened at every full GC (several a second).
 */
class Cursor {
  buf: Buffer = EMPTY;
  table: StringTable = strings;
  at = 0;
  /** The byte length of the last field read. */
  n = 0;

  reset(buf: Buffer, table: StringTable): void {
    this.buf = buf;
    this.table = table;
    this.at = 0;
    this.n = 0;
  }

  /** The next u32-length-prefixed field: returns where its bytes start, sets n, moves past it. */
  field(what: string): number {
    const buf = this.buf;
    const at = this.at;
    if (at + 4 > buf.length) throw new RangeError(`span buffer: ${what} length at offset ${at} runs past its end`);
    const n = u32(buf, at);
    if (at + 4 + n > buf.length) throw new Error(`span buffer: a ${n}-byte ${what} runs past its end`);
    this.n = n;
    this.at = at + 4 + n;
    return at + 4;
  }

  text(): string {
    const start = this.field('string');
    return this.table.text(this.buf, start, this.n);
  }

  otlpBytes(): Uint8Array | undefined {
    const start = this.field('OTLP message');
    return this.n === 0 ? undefined : this.buf.subarray(start, start + this.n);
  }
}

const cursor = new Cursor();

export function decodeSpans(buf: Buffer, table: StringTable = strings): SpanRecord[] {
  const spans: SpanRecord[] = [];
  const c = cursor;
  c.reset(buf, table);
  while (c.at < buf.length) {
    if (buf.length - c.at < FIXED) throw new Error(`span buffer: ${buf.length - c.at} bytes left, a span has ${FIXED}`);
    const base = c.at;
    const bits = buf[base + 1];
    c.at = base + FIXED;
    spans.push({
      kind: buf[base] as HttpSpanKind,
      traceId: hex16(buf, base + 4),
      spanId: hex8(buf, base + 20),
      parentSpanId: bits & HAS_PARENT ? hex8(buf, base + 28) : '',
      parentIsRemote: (bits & PARENT_REMOTE) !== 0,
      traceFlags: buf[base + 2],
      startTime: [u32(buf, base + 36), u32(buf, base + 40)],
      endTime: [u32(buf, base + 44), u32(buf, base + 48)],
      pid: u32(buf, base + 52),
      tid: u32(buf, base + 56),
      statusCode: u32(buf, base + 60),
      peerPort: u32(buf, base + 64),
      localPort: u32(buf, base + 68),
      requestBodySize: size(buf, base + 72),
      responseBodySize: size(buf, base + 80),
      traceState: c.text(),
      method: c.text(),
      target: c.text(),
      protocolVersion: c.text(),
      host: c.text(),
      userAgent: c.text(),
      peerAddress: c.text(),
      localAddress: c.text(),
      error: c.text(),
      otlp: c.otlpBytes(),
    });
  }
  c.reset(EMPTY, strings); // not to keep the batch's buffer alive
  return spans;
}
