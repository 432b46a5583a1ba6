// Runs the Go OTLP receiver (e2e/otlp-receiver) for a test and gives typed, flattened views of
// what it received.
//
// Ids: the receiver (Go side) already writes traceId/spanId/parentSpanId as lowercase hex, as in
// the OTLP/JSON mapping (protojson alone would give base64), so they are used here as they come;
// an absent id is "". 64-bit integers arrive as strings: times become bigint, attribute and
// data-point integers become number (exact up to 2^53).

import { join } from 'node:path';
import { ensureGoBinary } from './build';
import { repoRoot, spawnTracked, terminate, waitForStdout, type ExitResult, type Tracked } from './process';

export type OtlpProtocol = 'http/protobuf' | 'http/json' | 'grpc';
export type Signal = 'traces' | 'metrics';

/** An OTLP AnyValue as plain data; kvlist values become objects, bytes stay base64. */
export type AttrValue = string | number | boolean | null | AttrValue[] | { [key: string]: AttrValue };
export type Attributes = Record<string, AttrValue>;

/** One export request, as the receiver printed it. */
export interface ReceivedRequest {
  signal: Signal;
  protocol: OtlpProtocol;
  /** HTTP headers or gRPC metadata, lowercase names, repeated values joined with ", ". */
  headers: Record<string, string>;
  /** The request in OTLP/JSON (ids in hex); absent if it could not be decoded. */
  body?: OtlpTracesJson | OtlpMetricsJson;
  /** Answered 503 / Unavailable because of failFirst. */
  rejected?: boolean;
  /** Why the request could not be decoded (it was answered 400 / InvalidArgument). */
  error?: string;
}

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** "" for a root span. */
  parentSpanId: string;
  traceState: string;
  name: string;
  /** As in OTLP: 1 INTERNAL, 2 SERVER, 3 CLIENT, 4 PRODUCER, 5 CONSUMER (0 unspecified). */
  kind: number;
  startTimeUnixNano: bigint;
  endTimeUnixNano: bigint;
  attributes: Attributes;
  /** code as in OTLP: 0 UNSET, 1 OK, 2 ERROR. */
  status: { code: number; message: string };
  events: { name: string; timeUnixNano: bigint; attributes: Attributes }[];
  links: { traceId: string; spanId: string; attributes: Attributes }[];
  resource: Attributes;
  scope: string;
  scopeVersion: string;
  protocol: OtlpProtocol;
}

/** One data point of a metric. */
export interface ReceivedMetricPoint {
  name: string;
  unit: string;
  type: 'gauge' | 'sum' | 'histogram' | 'exponentialHistogram' | 'summary';
  attributes: Attributes;
  timeUnixNano: bigint;
  /** gauge and sum: the value. */
  value?: number;
  /** histograms and summaries. */
  count?: number;
  sum?: number;
  /** explicit-bucket histograms. */
  bucketCounts?: number[];
  explicitBounds?: number[];
  resource: Attributes;
  scope: string;
  protocol: OtlpProtocol;
}

export interface OtlpReceiver {
  /** Base URL for OTLP/HTTP exporters, e.g. "http://127.0.0.1:43211" (paths /v1/traces, /v1/metrics). */
  httpEndpoint: string;
  /** "http://127.0.0.1:PORT" for OTLP/gRPC exporters. */
  grpcEndpoint: string;
  httpPort: number;
  grpcPort: number;
  /** Spans of every accepted request, in arrival order. */
  spans(): ReceivedSpan[];
  /** Data points of every accepted metrics request, in arrival order. */
  metrics(): ReceivedMetricPoint[];
  /** Every request, including rejected and undecodable ones. */
  requests(): ReceivedRequest[];
  /** Resolves with spans() once predicate(spans()) is true; rejects after timeoutMs listing what came. */
  waitFor(predicate: (spans: ReceivedSpan[]) => boolean, timeoutMs?: number): Promise<ReceivedSpan[]>;
  waitForMetrics(predicate: (points: ReceivedMetricPoint[]) => boolean, timeoutMs?: number): Promise<ReceivedMetricPoint[]>;
  /** Forgets everything received so far. */
  clear(): void;
  /** The receiver's stderr so far. */
  stderr(): string;
  stop(): Promise<ExitResult>;
}

export interface ReceiverOptions {
  /** Refuse the first N export requests (HTTP 503 / gRPC Unavailable). */
  failFirst?: number;
}

const receiverDir = join(repoRoot, 'e2e', 'otlp-receiver');

/** Builds (cached) the receiver and returns the binary's path. */
export function receiverBinary(): Promise<string> {
  return ensureGoBinary(receiverDir, 'otlp-receiver');
}

export async function startOtlpReceiver(opts: ReceiverOptions = {}): Promise<OtlpReceiver> {
  const bin = await receiverBinary();
  const args = ['-http', '0', '-grpc', '0', '-fail-first', String(opts.failFirst ?? 0), '-exit-on-stdin-eof'];
  const t = spawnTracked([bin, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const [line] = await waitForStdout(t, /^\{.*"http":\d+.*\}$/m, 15_000, 'otlp-receiver');
  const ports = JSON.parse(line) as { http: number; grpc: number };
  return new Receiver(t, ports.http, ports.grpc);
}

class Receiver implements OtlpReceiver {
  readonly httpEndpoint: string;
  readonly grpcEndpoint: string;
  private received: ReceivedRequest[] = [];
  private parsedUpTo = 0; // offset in stdout of the first unparsed line
  private listeners = new Set<() => void>();

  constructor(
    private readonly t: Tracked,
    readonly httpPort: number,
    readonly grpcPort: number,
  ) {
    this.httpEndpoint = `http://127.0.0.1:${httpPort}`;
    this.grpcEndpoint = `http://127.0.0.1:${grpcPort}`;
    this.parsedUpTo = t.stdout().indexOf('\n') + 1; // skip the ports line
    t.proc.stdout?.on('data', () => {
      if (this.parse()) for (const l of this.listeners) l();
    });
    this.parse();
  }

  /** Parses complete new lines of stdout; true if there were any. */
  private parse(): boolean {
    const out = this.t.stdout();
    const end = out.lastIndexOf('\n') + 1;
    if (end <= this.parsedUpTo) return false;
    for (const line of out.slice(this.parsedUpTo, end).split('\n')) {
      if (line.trim()) this.received.push(JSON.parse(line) as ReceivedRequest);
    }
    this.parsedUpTo = end;
    return true;
  }

  requests(): ReceivedRequest[] {
    return [...this.received];
  }

  spans(): ReceivedSpan[] {
    return this.accepted('traces').flatMap((r) => flattenSpans(r.body as OtlpTracesJson, r.protocol));
  }

  metrics(): ReceivedMetricPoint[] {
    return this.accepted('metrics').flatMap((r) => flattenMetrics(r.body as OtlpMetricsJson, r.protocol));
  }

  private accepted(signal: Signal): ReceivedRequest[] {
    return this.received.filter((r) => r.signal === signal && !r.rejected && !r.error && r.body);
  }

  waitFor(predicate: (spans: ReceivedSpan[]) => boolean, timeoutMs = 10_000): Promise<ReceivedSpan[]> {
    return this.waitUntil(() => this.spans(), predicate, timeoutMs, (spans) => spans.map(describeSpan));
  }

  waitForMetrics(predicate: (points: ReceivedMetricPoint[]) => boolean, timeoutMs = 10_000): Promise<ReceivedMetricPoint[]> {
    return this.waitUntil(() => this.metrics(), predicate, timeoutMs, (points) => points.map(describePoint));
  }

  private waitUntil<T>(get: () => T[], predicate: (items: T[]) => boolean, timeoutMs: number, describe: (items: T[]) => string[]): Promise<T[]> {
    return new Promise((done, fail) => {
      const check = (): boolean => {
        const items = get();
        if (!predicate(items)) return false;
        finish();
        done(items);
        return true;
      };
      const timer = setTimeout(() => {
        finish();
        const items = get();
        const rejected = this.received.filter((r) => r.rejected || r.error).length;
        fail(
          new Error(
            `OTLP receiver: condition not met in ${timeoutMs} ms; ${this.received.length} requests ` +
              `(${rejected} rejected/undecodable), ${items.length} items:\n  ${describe(items).join('\n  ') || '(none)'}` +
              (this.t.stderr() ? `\nreceiver stderr:\n${this.t.stderr()}` : ''),
          ),
        );
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      if (!check()) this.listeners.add(check);
    });
  }

  clear(): void {
    this.parse();
    this.received = [];
  }

  stderr(): string {
    return this.t.stderr();
  }

  stop(): Promise<ExitResult> {
    this.t.proc.stdin?.end();
    return terminate(this.t, 5_000);
  }
}

function describeSpan(s: ReceivedSpan): string {
  const parent = s.parentSpanId ? ` parent=${s.parentSpanId}` : '';
  return `${s.name} kind=${s.kind} trace=${s.traceId} span=${s.spanId}${parent} status=${s.status.code} via ${s.protocol} ${JSON.stringify(s.attributes)}`;
}

function describePoint(p: ReceivedMetricPoint): string {
  return `${p.name} ${p.type} value=${p.value ?? ''} count=${p.count ?? ''} sum=${p.sum ?? ''} ${JSON.stringify(p.attributes)}`;
}

// ---- OTLP/JSON shapes (only the fields used here; protojson omits default values) ----

type Int64 = string | number;

export interface OtlpAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: Int64;
  doubleValue?: number | string; // "NaN", "Infinity" as strings
  arrayValue?: { values?: OtlpAnyValue[] };
  kvlistValue?: { values?: OtlpKeyValue[] };
  bytesValue?: string;
}
export interface OtlpKeyValue {
  key: string;
  value?: OtlpAnyValue;
}
interface OtlpResource {
  attributes?: OtlpKeyValue[];
}
interface OtlpScope {
  name?: string;
  version?: string;
}
interface OtlpSpan {
  traceId?: string;
  spanId?: string;
  parentSpanId?: string;
  traceState?: string;
  name?: string;
  kind?: number;
  startTimeUnixNano?: Int64;
  endTimeUnixNano?: Int64;
  attributes?: OtlpKeyValue[];
  status?: { code?: number; message?: string };
  events?: { name?: string; timeUnixNano?: Int64; attributes?: OtlpKeyValue[] }[];
  links?: { traceId?: string; spanId?: string; attributes?: OtlpKeyValue[] }[];
}
export interface OtlpTracesJson {
  resourceSpans?: { resource?: OtlpResource; scopeSpans?: { scope?: OtlpScope; spans?: OtlpSpan[] }[] }[];
}
interface OtlpDataPoint {
  attributes?: OtlpKeyValue[];
  timeUnixNano?: Int64;
  asInt?: Int64;
  asDouble?: number | string;
  count?: Int64;
  sum?: number | string;
  bucketCounts?: Int64[];
  explicitBounds?: number[];
}
interface OtlpMetric {
  name?: string;
  unit?: string;
  gauge?: { dataPoints?: OtlpDataPoint[] };
  sum?: { dataPoints?: OtlpDataPoint[] };
  histogram?: { dataPoints?: OtlpDataPoint[] };
  exponentialHistogram?: { dataPoints?: OtlpDataPoint[] };
  summary?: { dataPoints?: OtlpDataPoint[] };
}
export interface OtlpMetricsJson {
  resourceMetrics?: { resource?: OtlpResource; scopeMetrics?: { scope?: OtlpScope; metrics?: OtlpMetric[] }[] }[];
}

// ---- flattening ----

export function anyValue(v: OtlpAnyValue | undefined): AttrValue {
  if (!v) return null;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return Number(v.doubleValue);
  if (v.arrayValue !== undefined) return (v.arrayValue.values ?? []).map(anyValue);
  if (v.kvlistValue !== undefined) return attributes(v.kvlistValue.values);
  if (v.bytesValue !== undefined) return v.bytesValue;
  return null;
}

export function attributes(kvs: OtlpKeyValue[] | undefined): Attributes {
  const out: Attributes = {};
  for (const kv of kvs ?? []) out[kv.key] = anyValue(kv.value);
  return out;
}

const num = (v: Int64 | undefined): number | undefined => (v === undefined ? undefined : Number(v));

function flattenSpans(body: OtlpTracesJson, protocol: OtlpProtocol): ReceivedSpan[] {
  return (body.resourceSpans ?? []).flatMap((rs) =>
    (rs.scopeSpans ?? []).flatMap((ss) =>
      (ss.spans ?? []).map(
        (s): ReceivedSpan => ({
          traceId: s.traceId ?? '',
          spanId: s.spanId ?? '',
          parentSpanId: s.parentSpanId ?? '',
          traceState: s.traceState ?? '',
          name: s.name ?? '',
          kind: s.kind ?? 0,
          startTimeUnixNano: BigInt(s.startTimeUnixNano ?? 0),
          endTimeUnixNano: BigInt(s.endTimeUnixNano ?? 0),
          attributes: attributes(s.attributes),
          status: { code: s.status?.code ?? 0, message: s.status?.message ?? '' },
          events: (s.events ?? []).map((e) => ({
            name: e.name ?? '',
            timeUnixNano: BigInt(e.timeUnixNano ?? 0),
            attributes: attributes(e.attributes),
          })),
          links: (s.links ?? []).map((l) => ({ traceId: l.traceId ?? '', spanId: l.spanId ?? '', attributes: attributes(l.attributes) })),
          resource: attributes(rs.resource?.attributes),
          scope: ss.scope?.name ?? '',
          scopeVersion: ss.scope?.version ?? '',
          protocol,
        }),
      ),
    ),
  );
}

const metricTypes = ['gauge', 'sum', 'histogram', 'exponentialHistogram', 'summary'] as const;

function flattenMetrics(body: OtlpMetricsJson, protocol: OtlpProtocol): ReceivedMetricPoint[] {
  return (body.resourceMetrics ?? []).flatMap((rm) =>
    (rm.scopeMetrics ?? []).flatMap((sm) =>
      (sm.metrics ?? []).flatMap((m) => {
        const type = metricTypes.find((t) => m[t] !== undefined);
        if (!type) return [];
        return (m[type]?.dataPoints ?? []).map(
          (p): ReceivedMetricPoint => ({
            name: m.name ?? '',
            unit: m.unit ?? '',
            type,
            attributes: attributes(p.attributes),
            timeUnixNano: BigInt(p.timeUnixNano ?? 0),
            value: num(p.asInt ?? p.asDouble) ?? (type === 'gauge' || type === 'sum' ? 0 : undefined),
            count: type === 'gauge' || type === 'sum' ? undefined : (num(p.count) ?? 0),
            sum: num(p.sum),
            bucketCounts: p.bucketCounts?.map(Number),
            explicitBounds: p.explicitBounds,
            resource: attributes(rm.resource?.attributes),
            scope: sm.scope?.name ?? '',
            protocol,
          }),
        );
      }),
    ),
  );
}

/** Runs the receiver binary's client mode: exports its fixed test request (see e2e/otlp-receiver/client.go). */
export async function sendTestExport(signal: Signal, protocol: OtlpProtocol, endpoint: string, opts: { gzip?: boolean } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const flag = signal === 'traces' ? '-send-test-span' : '-send-test-metric';
  const t = spawnTracked([await receiverBinary(), flag, protocol, ...(opts.gzip ? ['-gzip'] : []), endpoint]);
  const { code } = await t.exited;
  return { code, stdout: t.stdout(), stderr: t.stderr() };
}
