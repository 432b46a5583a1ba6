// The OTLP/HTTP sink of pipeline-bench.ts, run as a child process (fork) so that its CPU stays out
// of the measured process. Answers 200 to every POST, counts requests and bytes per path and, for
// http/protobuf traces, the spans in each request plus an order-independent digest of them (each
// span's bytes together with its resource's and scope's), so that two runs can be compared for
// identical content whatever their batch boundaries. Reports to the parent over IPC.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SinkCounts {
  traceRequests: number;
  traceBytes: number;
  spans: number;
  metricRequests: number;
  metricBytes: number;
  /** Sum (mod 2^64) of the first 8 bytes of sha256(resource ‖ scope ‖ span) over all spans, hex. */
  digest: string;
}

export type SinkMessage = { type: 'listening'; url: string } | { type: 'counts'; counts: SinkCounts };

/** One protobuf field: number, wire type, and for LEN fields the payload's [start, end). */
interface Field {
  field: number;
  wire: number;
  start: number;
  end: number;
}

function* fields(buf: Buffer, start: number, end: number): Generator<Field> {
  let at = start;
  const varint = (): number => {
    let value = 0;
    let shift = 0;
    for (;;) {
      const b = buf[at++];
      value += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return value;
      shift += 7;
    }
  };
  while (at < end) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    switch (wire) {
      case 0:
        varint();
        yield { field, wire, start: at, end: at };
        break;
      case 1:
        at += 8;
        yield { field, wire, start: at - 8, end: at };
        break;
      case 2: {
        const n = varint();
        yield { field, wire, start: at, end: at + n };
        at += n;
        break;
      }
      case 5:
        at += 4;
        yield { field, wire, start: at - 4, end: at };
        break;
      default:
        throw new Error(`unsupported wire type ${wire}`);
    }
  }
}

const MASK64 = (1n << 64n) - 1n;

/** Counts the spans of an ExportTraceServiceRequest and adds them to the digest. */
function traceSpans(body: Buffer, digest: { sum: bigint }): number {
  let spans = 0;
  for (const rs of fields(body, 0, body.length)) {
    if (rs.field !== 1 || rs.wire !== 2) continue;
    let resource: Buffer = Buffer.alloc(0);
    for (const f of fields(body, rs.start, rs.end)) {
      if (f.field === 1 && f.wire === 2) resource = body.subarray(f.start, f.end);
      if (f.field !== 2 || f.wire !== 2) continue;
      let scope: Buffer = Buffer.alloc(0);
      for (const s of fields(body, f.start, f.end)) {
        if (s.field === 1 && s.wire === 2) scope = body.subarray(s.start, s.end);
        if (s.field !== 2 || s.wire !== 2) continue;
        spans++;
        const h = crypto.createHash('sha256').update(resource).update(scope).update(body.subarray(s.start, s.end)).digest();
        digest.sum = (digest.sum + h.readBigUInt64LE(0)) & MASK64;
      }
    }
  }
  return spans;
}

function main(): void {
  const decode = process.argv.includes('--protobuf');
  const counts: SinkCounts = { traceRequests: 0, traceBytes: 0, spans: 0, metricRequests: 0, metricBytes: 0, digest: '' };
  const digest = { sum: 0n };
  const send = (message: SinkMessage): void => {
    process.send?.(message);
  };
  const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      if (req.url === '/v1/traces') {
        counts.traceRequests++;
        counts.traceBytes += body.length;
        if (decode) counts.spans += traceSpans(body, digest);
      } else if (req.url === '/v1/metrics') {
        counts.metricRequests++;
        counts.metricBytes += body.length;
      }
      // An empty body is a valid (empty) Export*ServiceResponse in protobuf.
      res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': '0' }).end();
      counts.digest = digest.sum.toString(16).padStart(16, '0');
      send({ type: 'counts', counts: { ...counts } });
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address() as AddressInfo;
    send({ type: 'listening', url: `http://127.0.0.1:${port}` });
  });
  process.on('disconnect', () => process.exit(0));
}

if (require.main === module) main();
