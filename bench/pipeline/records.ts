// Synthetic engine batches for pipeline-bench.ts: span records encoded exactly as the engine hands
// them to JS (tracer/src/span-buffer.ts describes the layout), from a seeded PRNG so that every
// implementation under comparison sees the same bytes.

import { loadNative, type NativeAddon } from '../../tracer/src/native';

/** A record's fields in the engine's encoding (ids as raw bytes). */
export interface RawSpan {
  kind: 1 | 2;
  traceId: Buffer;
  spanId: Buffer;
  parentSpanId: Buffer | undefined;
  parentIsRemote: boolean;
  traceFlags: number;
  start: [number, number];
  end: [number, number];
  pid: number;
  tid: number;
  statusCode: number;
  peerPort: number;
  localPort: number;
  requestBodySize: number;
  responseBodySize: number;
  traceState: string;
  method: string;
  target: string;
  protocolVersion: string;
  host: string;
  userAgent: string;
  peerAddress: string;
  localAddress: string;
  error: string;
}

/**
 * The batch buffer of these spans, made by the engine's own encoder (the addon's spanBufferOf):
 * with the OTLP bytes the engine adds for sampled spans when the tracer exports OTLP protobuf,
 * unless RBINDER_BENCH_OTLP=0 (the JS-only serialization, for comparison).
 */
export function encodeSpans(spans: RawSpan[]): Buffer {
  const hex = (b: Buffer | undefined): string => (b ? b.toString('hex') : '');
  const records = spans.map((s) => ({
    ...s,
    traceId: hex(s.traceId),
    spanId: hex(s.spanId),
    parentSpanId: hex(s.parentSpanId),
    startTime: s.start,
    endTime: s.end,
  }));
  return loadNative().spanBufferOf(records as unknown as Parameters<NativeAddon['spanBufferOf']>[0], process.env.RBINDER_BENCH_OTLP !== '0');
}

/** xorshift32: deterministic ids and jitter. */
export class Prng {
  constructor(private state: number) {}
  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.state;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i += 4) b.writeUInt32LE(this.next(), i);
    return b;
  }
  below(n: number): number {
    return this.next() % n;
  }
}

export type Variant = 'server' | 'client';

const BASE_SECONDS = 1_760_000_000;
export const BENCH_PID = 4242;

export const BENCH_PROCESS = {
  pid: BENCH_PID,
  ppid: 1,
  executablePath: '/usr/local/bin/node',
  commandArgs: ['node', 'hello.js'],
  mode: 'fast' as const,
};

function time(ns: number): [number, number] {
  return [BASE_SECONDS + Math.floor(ns / 1e9), ns % 1e9];
}

/**
 * The i-th span of a variant.
 * server: what a keep-alive node:http hello world serves to wrk -c16 (GET /hello, 200, 6-byte
 *   body, 16 client connections, no traceparent: roots).
 * client: a service's outbound calls, each the child of a local server span (same trace),
 *   from 16 threads over 16 pooled connections, with a JSON response body.
 */
export function rawSpan(variant: Variant, i: number, rng: Prng): RawSpan {
  const startNs = i * 50_000 + rng.below(20_000);
  const durationNs = 60_000 + rng.below(400_000);
  const conn = rng.below(16);
  if (variant === 'server') {
    return {
      kind: 1,
      traceId: rng.bytes(16),
      spanId: rng.bytes(8),
      parentSpanId: undefined,
      parentIsRemote: false,
      traceFlags: 1,
      start: time(startNs),
      end: time(startNs + durationNs),
      pid: BENCH_PID,
      tid: BENCH_PID,
      statusCode: 200,
      peerPort: 40_000 + conn,
      localPort: 8080,
      requestBodySize: 0,
      responseBodySize: 6,
      traceState: '',
      method: 'GET',
      target: '/hello',
      protocolVersion: '1.1',
      host: 'localhost:8080',
      userAgent: 'Go-http-client/1.1',
      peerAddress: '127.0.0.1',
      localAddress: '127.0.0.1',
      error: '',
    };
  }
  return {
    kind: 2,
    traceId: rng.bytes(16),
    spanId: rng.bytes(8),
    parentSpanId: rng.bytes(8),
    parentIsRemote: false,
    traceFlags: 1,
    start: time(startNs),
    end: time(startNs + durationNs),
    pid: BENCH_PID,
    tid: BENCH_PID + 1 + conn,
    statusCode: 200,
    peerPort: 9000,
    localPort: 41_000 + conn,
    requestBodySize: 0,
    responseBodySize: 1000 + rng.below(400),
    traceState: '',
    method: 'GET',
    target: `/api/items/${rng.below(1000)}?limit=10`,
    protocolVersion: '1.1',
    host: 'inventory:9000',
    userAgent: 'Java-http-client/17.0.12',
    peerAddress: '10.0.0.5',
    localAddress: '10.0.0.2',
    error: '',
  };
}

/** Engine batches of `perBatch` spans, numbered from `first`. */
export function batches(variant: Variant, first: number, count: number, perBatch: number, seed: number): Buffer[] {
  const rng = new Prng(seed);
  const out: Buffer[] = [];
  for (let b = 0; b < count; b++) {
    const spans: RawSpan[] = [];
    for (let j = 0; j < perBatch; j++) spans.push(rawSpan(variant, first + b * perBatch + j, rng));
    out.push(encodeSpans(spans));
  }
  return out;
}
