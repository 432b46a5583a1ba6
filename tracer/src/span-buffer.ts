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
//       88     4  u32: the exchange's request-metric series id (0: none; native/src/addon.cc)
//       92     …  strings, each a u32 byte length then UTF-8: trace state, method, target,
//                 protocol version, host, user agent, peer address, local address, error;
//                 then a u32 byte length and the span's OTLP protobuf `Span` message, made by
//                 native/src/engine/otlp.cc (length 0: not made, e.g. unsampled or not asked for)
import type { HrTime, HttpSpanKind, SpanRecord } from './records';

const FIXED = 92;
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

/** The strings of a record, in buffer order, then its OTLP message. */
const TRACE_STATE = 0, METHOD = 1, TARGET = 2, PROTOCOL_VERSION = 3, HOST = 4, USER_AGENT = 5;
const PEER_ADDRESS = 6, LOCAL_ADDRESS = 7, ERROR = 8, OTLP = 9;
const FIELDS = 10;

/**
 * One span record, read from the batch's buffer as it is asked for. Its numbers are read at once;
 * its ids and strings when first read: counting an exchange in the request metrics needs none of
 * them (the engine's series id stands for the fields the attributes come from), and exporting a
 * span the engine encoded needs only its OTLP bytes. The buffer is the batch's, which the spans'
 * OTLP bytes keep alive anyway until they are exported. Read-only, like every SpanRecord.
 */
export class BufferedSpanRecord implements SpanRecord {
  readonly kind: HttpSpanKind;
  readonly parentIsRemote: boolean;
  readonly traceFlags: number;
  readonly startTime: HrTime;
  readonly endTime: HrTime;
  readonly pid: number;
  readonly tid: number;
  readonly statusCode: number;
  readonly peerPort: number;
  readonly localPort: number;
  readonly requestBodySize: number;
  readonly responseBodySize: number;
  readonly metricSeries: number;
  private readonly buf: Buffer;
  private readonly table: StringTable;
  private readonly base: number;
  /** Where the OTLP message's length is (the last field). */
  private readonly otlpAt: number;
  /** Decoded strings, made at the first non-empty one read. */
  private texts: string[] | undefined = undefined;

  constructor(buf: Buffer, base: number, otlpAt: number, table: StringTable) {
    this.buf = buf;
    this.table = table;
    this.base = base;
    this.otlpAt = otlpAt;
    this.kind = buf[base] as HttpSpanKind;
    this.parentIsRemote = (buf[base + 1] & PARENT_REMOTE) !== 0;
    this.traceFlags = buf[base + 2];
    this.startTime = [u32(buf, base + 36), u32(buf, base + 40)];
    this.endTime = [u32(buf, base + 44), u32(buf, base + 48)];
    this.pid = u32(buf, base + 52);
    this.tid = u32(buf, base + 56);
    this.statusCode = u32(buf, base + 60);
    this.peerPort = u32(buf, base + 64);
    this.localPort = u32(buf, base + 68);
    this.requestBodySize = size(buf, base + 72);
    this.responseBodySize = size(buf, base + 80);
    this.metricSeries = u32(buf, base + 88);
  }

  get traceId(): string {
    return hex16(this.buf, this.base + 4);
  }
  get spanId(): string {
    return hex8(this.buf, this.base + 20);
  }
  get parentSpanId(): string {
    return this.buf[this.base + 1] & HAS_PARENT ? hex8(this.buf, this.base + 28) : '';
  }
  get traceState(): string {
    return this.text(TRACE_STATE);
  }
  get method(): string {
    return this.text(METHOD);
  }
  get target(): string {
    return this.text(TARGET);
  }
  get protocolVersion(): string {
    return this.text(PROTOCOL_VERSION);
  }
  get host(): string {
    return this.text(HOST);
  }
  get userAgent(): string {
    return this.text(USER_AGENT);
  }
  get peerAddress(): string {
    return this.text(PEER_ADDRESS);
  }
  get localAddress(): string {
    return this.text(LOCAL_ADDRESS);
  }
  get error(): string {
    return this.text(ERROR);
  }
  get otlp(): Uint8Array | undefined {
    const n = u32(this.buf, this.otlpAt);
    return n === 0 ? undefined : this.buf.subarray(this.otlpAt + 4, this.otlpAt + 4 + n);
  }

  /** What isValidTraceId/isValidSpanId would say of the hex ids: hex is all they can be, so
   * only an all-zero id is invalid. */
  hasValidIds(): boolean {
    const buf = this.buf;
    const base = this.base;
    return nonZero(buf, base + 4, 16) && nonZero(buf, base + 20, 8) && (!(buf[base + 1] & HAS_PARENT) || nonZero(buf, base + 28, 8));
  }

  private text(field: number): string {
    const cached = this.texts?.[field];
    if (cached !== undefined) return cached;
    const buf = this.buf;
    let at = this.base + FIXED;
    for (let i = 0; i < field; i++) at += 4 + u32(buf, at);
    const n = u32(buf, at);
    if (n === 0) return '';
    const text = this.table.text(buf, at + 4, n);
    (this.texts ??= new Array<string>(OTLP))[field] = text;
    return text;
  }
}

/**
 * One record kept for the whole run. V8's optimized code that handles records (the decoder, the
 * request metrics, RecordedSpan) depends weakly on their map (hidden class), which their class
 * reaches only through transitions a full GC may clear: while no record is alive, as between the
 * batches of unsampled exchanges, the GC killed the map and V8 threw that code away, to compile it
 * again for the next batch (tracer/test/optimized-code.test.ts). This one, with numbers like a
 * real record's and a string read, so that its fields hold what every record's come to hold, keeps
 * the map alive.
 */
const mapKeepers: SpanRecord[] = [];

function keepRecordMap(): void {
  const buf = Buffer.alloc(FIXED + 4 * FIELDS + 3);
  // Numbers like a real record's: seconds since the epoch are past 2^30 (a double, not a small integer).
  buf[0] = 1;
  buf[2] = 1;
  for (const at of [36, 44]) buf.writeUInt32LE(1_700_000_000, at);
  buf.writeUInt32LE(200, 60);
  buf.writeUInt32LE(3, FIXED + 4 * METHOD);
  buf.write('GET', FIXED + 4 * (METHOD + 1));
  const [record] = decodeSpans(buf);
  if (record.method !== 'GET') throw new Error('span buffer: the kept record reads wrong');
  mapKeepers.push(record);
}

function nonZero(buf: Buffer, at: number, n: number): boolean {
  for (let i = at; i < at + n; i++) if (buf[i] !== 0) return true;
  return false;
}

/**
 * The records of one batch's buffer. Checks the layout whole (every length within the buffer)
 * before handing anything out, so that a record's getters cannot run past its end.
 */
export function decodeSpans(buf: Buffer, table: StringTable = strings): SpanRecord[] {
  const spans: SpanRecord[] = [];
  let at = 0;
  while (at < buf.length) {
    if (buf.length - at < FIXED) throw new Error(`span buffer: ${buf.length - at} bytes left, a span has ${FIXED}`);
    const base = at;
    at += FIXED;
    let otlpAt = at;
    for (let i = 0; i < FIELDS; i++) {
      const what = i === OTLP ? 'OTLP message' : 'string';
      if (at + 4 > buf.length) throw new RangeError(`span buffer: ${what} length at offset ${at} runs past its end`);
      const n = u32(buf, at);
      if (at + 4 + n > buf.length) throw new Error(`span buffer: a ${n}-byte ${what} runs past its end`);
      otlpAt = at;
      at += 4 + n;
    }
    spans.push(new BufferedSpanRecord(buf, base, otlpAt, table));
  }
  return spans;
}

keepRecordMap();
