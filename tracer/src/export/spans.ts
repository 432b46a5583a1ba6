// SpanRecord → ReadableSpan, following the stable OpenTelemetry HTTP semantic conventions.
// The result is a small read-only object with the ReadableSpan shape (RecordedSpan): no live SDK
// Span and its bookkeeping, because the way from record to exporter is the tracer's main
// per-request cost once syscalls are cheap (bench/pipeline/ measures it).

import { isIP } from 'node:net';
import { SpanKind, SpanStatusCode, type Attributes, type HrTime, type Link, type SpanContext, type SpanStatus } from '@opentelemetry/api';
import { TraceState, hrTimeDuration, type InstrumentationScope } from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan, TimedEvent } from '@opentelemetry/sdk-trace';
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_REQUEST_METHOD_ORIGINAL,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_NETWORK_PEER_PORT,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_NETWORK_TRANSPORT,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_URL_FULL,
  ATTR_URL_PATH,
  ATTR_URL_QUERY,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
  HTTP_REQUEST_METHOD_VALUE_OTHER,
  NETWORK_TRANSPORT_VALUE_UNIX,
} from '@opentelemetry/semantic-conventions';
import { rbinderVersion } from '../config';
import type { SpanRecord } from '../records';

// Incubating semconv names, copied rather than imported from the unstable entry point.
export const ATTR_HTTP_REQUEST_BODY_SIZE = 'http.request.body.size';
export const ATTR_HTTP_RESPONSE_BODY_SIZE = 'http.response.body.size';
export const ATTR_THREAD_ID = 'thread.id';

/** The methods semconv knows; any other is reported as "_OTHER" (keeps cardinality bounded). */
const KNOWN_METHODS: ReadonlySet<string> = new Set([
  'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH',
]);

const DEFAULT_HTTP_PORT = 80;

let scope: InstrumentationScope | undefined;

/** Shared by every span (one object), so exporters group all spans under one scope. */
export function instrumentationScope(): InstrumentationScope {
  scope ??= { name: 'rbinder', version: rbinderVersion() };
  return scope;
}

const NO_LINKS: Link[] = Object.freeze([]) as unknown as Link[];
const NO_EVENTS: TimedEvent[] = Object.freeze([]) as unknown as TimedEvent[];
const STATUS_UNSET: SpanStatus = Object.freeze({ code: SpanStatusCode.UNSET });
const STATUS_ERROR: SpanStatus = Object.freeze({ code: SpanStatusCode.ERROR });

/**
 * The span for one HTTP exchange seen by the engine.
 *
 * Spans wait in the BatchSpanProcessor's queue (up to a whole export batch, i.e. for a while), so
 * the GC copies and marks everything they hold: a span keeps as little as it can. The biggest
 * parts, the attributes and the parent's context, are derived from the record when an exporter
 * first reads them (then kept): they are made just before the export and die young, and only the
 * record waits in the queue; the name, the ids and the OTLP bytes are read from the record each
 * time (a record from the engine reads them from its batch's buffer, tracer/src/span-buffer.ts).
 * What is the same for every span lives on the prototype (scope, no events or links, zero drop
 * counts), the status of an exchange without a transport error is one of two shared objects, and
 * the span is its own SpanContext (spanContext() returns the span).
 * Read-only: the SDK and exporters only read spans, and the record is not changed once handed over.
 */
export class RecordedSpan implements ReadableSpan, SpanContext {
  readonly kind: SpanKind;
  readonly traceFlags: number;
  readonly traceState: TraceState | undefined;
  readonly startTime: HrTime;
  readonly endTime: HrTime;
  readonly status: SpanStatus;
  readonly resource: Resource;
  private readonly record: SpanRecord;
  /** False when the engine's OTLP bytes must not stand for this span (its tracestate, below). */
  private readonly engineBytes: boolean;
  private builtAttributes: Attributes | undefined = undefined;
  private builtParent: SpanContext | undefined = undefined;

  constructor(record: SpanRecord, resource: Resource) {
    this.kind = record.kind === SpanKind.SERVER ? SpanKind.SERVER : SpanKind.CLIENT;
    this.traceFlags = record.traceFlags;
    this.traceState = record.traceState === '' ? undefined : new TraceState(record.traceState);
    this.startTime = record.startTime;
    // A clock step between the two timestamps must not give a negative duration.
    this.endTime = compareHrTime(record.endTime, record.startTime) < 0 ? record.startTime : record.endTime;
    this.status = spanStatus(record);
    this.resource = resource;
    this.record = record;
    // The engine writes tracestate as received; the SDK writes TraceState's serialization, which
    // drops invalid members: the engine's bytes stand only where the two agree.
    this.engineBytes = this.traceState === undefined || this.traceState.serialize() === record.traceState;
  }

  // Read from the record when asked: the OTLP protobuf exporter, which takes the engine's bytes
  // (otlp-serializer.ts), never asks for these, and the record reads them from its buffer.
  get name(): string {
    const method = normalizeMethod(this.record.method);
    return method === HTTP_REQUEST_METHOD_VALUE_OTHER ? 'HTTP' : method;
  }

  get traceId(): string {
    return this.record.traceId;
  }

  get spanId(): string {
    return this.record.spanId;
  }

  /** This span as an OTLP `Span` message, when the engine made it (SpanRecord.otlp). */
  get otlp(): Uint8Array | undefined {
    return this.engineBytes ? this.record.otlp : undefined;
  }

  get attributes(): Attributes {
    return (this.builtAttributes ??= spanAttributes(this.record, normalizeMethod(this.record.method)));
  }

  get parentSpanContext(): SpanContext | undefined {
    const record = this.record;
    if (record.parentSpanId === '') return undefined;
    return (this.builtParent ??= {
      traceId: record.traceId,
      spanId: record.parentSpanId,
      traceFlags: record.traceFlags,
      isRemote: record.parentIsRemote,
      traceState: this.traceState,
    });
  }

  spanContext(): SpanContext {
    return this;
  }

  get duration(): HrTime {
    return hrTimeDuration(this.startTime, this.endTime);
  }

  get instrumentationScope(): InstrumentationScope {
    return instrumentationScope();
  }

  get ended(): boolean {
    return true;
  }

  get links(): Link[] {
    return NO_LINKS;
  }

  get events(): TimedEvent[] {
    return NO_EVENTS;
  }

  get droppedAttributesCount(): number {
    return 0;
  }

  get droppedEventsCount(): number {
    return 0;
  }

  get droppedLinksCount(): number {
    return 0;
  }
}

export function toReadableSpan(record: SpanRecord, resource: Resource): ReadableSpan {
  return new RecordedSpan(record, resource);
}

/** Method as semconv wants it: known methods as sent (case-sensitive), else "_OTHER". */
export function normalizeMethod(method: string): string {
  return KNOWN_METHODS.has(method) ? method : HTTP_REQUEST_METHOD_VALUE_OTHER;
}

/** Error per semconv: 5xx on servers, 4xx–5xx on clients, and any exchange that did not complete. */
export function isErrorStatus(record: SpanRecord): boolean {
  const limit = record.kind === SpanKind.SERVER ? 500 : 400;
  return record.statusCode >= limit && record.statusCode < 600;
}

/** error.type: why the exchange failed ("connection reset") or the failing status code, else undefined. */
export function errorType(record: SpanRecord): string | undefined {
  if (record.error !== '') return record.error;
  return isErrorStatus(record) ? String(record.statusCode) : undefined;
}

function spanStatus(record: SpanRecord): SpanStatus {
  // The status code alone explains an HTTP error, so only transport errors get a message.
  if (record.error !== '') return { code: SpanStatusCode.ERROR, message: record.error };
  return isErrorStatus(record) ? STATUS_ERROR : STATUS_UNSET;
}

export interface ServerEndpoint {
  address: string;
  port: number | undefined;
}

/** A parsed request-target (RFC 9112 §3.2). */
interface RequestTarget {
  path?: string;
  query?: string;
  /** Set for absolute-form (proxy requests) and authority-form (CONNECT). */
  authority?: ServerEndpoint;
  /** The absolute URL, for absolute-form targets. */
  full?: string;
  scheme?: string;
}

function isOriginForm(target: string): boolean {
  return target.startsWith('/') || target === '*';
}

function parseTarget(target: string, method: string): RequestTarget {
  if (isOriginForm(target)) {
    const q = target.indexOf('?');
    return q < 0 ? { path: target } : { path: target.slice(0, q), query: target.slice(q + 1) };
  }
  if (method === 'CONNECT') {
    const authority = parseHostPort(target);
    return authority ? { authority } : {};
  }
  try {
    const url = new URL(target);
    const scheme = url.protocol.slice(0, -1);
    return {
      path: url.pathname,
      query: url.search === '' ? undefined : url.search.slice(1),
      authority: { address: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: url.port === '' ? defaultPort(scheme) : Number(url.port) },
      full: target,
      scheme,
    };
  } catch {
    return { path: target };
  }
}

function defaultPort(scheme: string): number | undefined {
  return scheme === 'http' ? 80 : scheme === 'https' ? 443 : undefined;
}

/** "host", "host:port", "[v6]" or "[v6]:port" (a Host header or CONNECT target); undefined if malformed. */
export function parseHostPort(value: string): ServerEndpoint | undefined {
  let address: string;
  let portText: string | undefined;
  if (value.startsWith('[')) {
    const close = value.indexOf(']');
    if (close < 0) return undefined;
    address = value.slice(1, close);
    const rest = value.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) return undefined;
    portText = rest === '' ? undefined : rest.slice(1);
  } else {
    const colon = value.indexOf(':');
    if (colon !== value.lastIndexOf(':')) return undefined; // bare IPv6 is not a valid Host
    address = colon < 0 ? value : value.slice(0, colon);
    portText = colon < 0 ? undefined : value.slice(colon + 1);
  }
  if (address === '') return undefined;
  if (portText === undefined || portText === '') return { address, port: undefined };
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) return undefined;
  return { address, port: Number(portText) };
}

/**
 * server.address/port. Both kinds prefer the request's own authority (absolute-form target, else
 * Host header, whose missing port means 80); without one, a server span describes this end of
 * the connection and a client span the peer it connected to.
 */
export function serverEndpoint(record: SpanRecord, target?: RequestTarget): ServerEndpoint | undefined {
  // Only absolute-form and authority-form targets name a server; origin-form ("/…") needs no parse.
  const fromTarget = target !== undefined ? target.authority : isOriginForm(record.target) ? undefined : parseTarget(record.target, record.method).authority;
  if (fromTarget) return fromTarget;
  const fromHost = record.host === '' ? undefined : hostEndpoint(record.host);
  if (fromHost) return fromHost;
  const [address, port] =
    record.kind === SpanKind.SERVER ? [record.localAddress, record.localPort] : [record.peerAddress, record.peerPort];
  if (address === '' || isUnixSocket(address, port)) return undefined;
  return { address, port: port > 0 ? port : undefined };
}

// The last Host header parsed and its endpoint: consecutive exchanges mostly carry the same one
// (span-buffer.ts even hands over the same string object), and a span's metric needs it again.
let lastHost = '';
let lastHostEndpoint: ServerEndpoint | undefined;

/** server.address/port from a Host header (a missing port means 80); undefined if malformed. Shared: read only. */
function hostEndpoint(host: string): ServerEndpoint | undefined {
  if (host !== lastHost) {
    const parsed = parseHostPort(host);
    lastHostEndpoint = parsed && Object.freeze({ address: parsed.address, port: parsed.port ?? DEFAULT_HTTP_PORT });
    lastHost = host;
  }
  return lastHostEndpoint;
}

function isUnixSocket(address: string, port: number): boolean {
  return port === 0 && isIP(address) === 0;
}

function authorityText(endpoint: ServerEndpoint): string {
  const host = endpoint.address.includes(':') ? `[${endpoint.address}]` : endpoint.address;
  return endpoint.port === undefined || endpoint.port === DEFAULT_HTTP_PORT ? host : `${host}:${endpoint.port}`;
}

function spanAttributes(record: SpanRecord, method: string): Attributes {
  const target = parseTarget(record.target, record.method);
  const server = serverEndpoint(record, target);
  const attributes: Attributes = {
    [ATTR_HTTP_REQUEST_METHOD]: method,
    [ATTR_URL_SCHEME]: target.scheme ?? 'http',
  };
  if (method !== record.method) attributes[ATTR_HTTP_REQUEST_METHOD_ORIGINAL] = record.method;
  if (target.path !== undefined) attributes[ATTR_URL_PATH] = target.path;
  if (target.query !== undefined) attributes[ATTR_URL_QUERY] = target.query;
  if (record.kind === SpanKind.CLIENT) {
    const full = target.full ?? (server && target.path !== undefined ? `http://${authorityText(server)}${record.target}` : undefined);
    if (full !== undefined) attributes[ATTR_URL_FULL] = full;
  }
  if (record.statusCode > 0) attributes[ATTR_HTTP_RESPONSE_STATUS_CODE] = record.statusCode;
  if (server) {
    attributes[ATTR_SERVER_ADDRESS] = server.address;
    if (server.port !== undefined) attributes[ATTR_SERVER_PORT] = server.port;
  }
  if (record.peerAddress !== '') {
    if (record.kind === SpanKind.SERVER) attributes[ATTR_CLIENT_ADDRESS] = record.peerAddress;
    attributes[ATTR_NETWORK_PEER_ADDRESS] = record.peerAddress;
    if (record.peerPort > 0) attributes[ATTR_NETWORK_PEER_PORT] = record.peerPort;
    if (isUnixSocket(record.peerAddress, record.peerPort)) attributes[ATTR_NETWORK_TRANSPORT] = NETWORK_TRANSPORT_VALUE_UNIX;
  }
  if (record.protocolVersion !== '') attributes[ATTR_NETWORK_PROTOCOL_VERSION] = record.protocolVersion;
  if (record.userAgent !== '') attributes[ATTR_USER_AGENT_ORIGINAL] = record.userAgent;
  if (record.requestBodySize > 0) attributes[ATTR_HTTP_REQUEST_BODY_SIZE] = record.requestBodySize;
  if (record.responseBodySize > 0) attributes[ATTR_HTTP_RESPONSE_BODY_SIZE] = record.responseBodySize;
  attributes[ATTR_THREAD_ID] = record.tid;
  const error = errorType(record);
  if (error !== undefined) attributes[ATTR_ERROR_TYPE] = error;
  return attributes;
}

/**
 * Attributes of http.{server,client}.request.duration for one exchange: the semconv "required"
 * and "conditionally required" ones (server.* only for clients: it is opt-in on servers).
 */
export function durationMetricAttributes(record: SpanRecord): Attributes {
  const attributes: Attributes = {
    [ATTR_HTTP_REQUEST_METHOD]: normalizeMethod(record.method),
    [ATTR_URL_SCHEME]: 'http',
  };
  if (record.statusCode > 0) attributes[ATTR_HTTP_RESPONSE_STATUS_CODE] = record.statusCode;
  if (record.protocolVersion !== '') attributes[ATTR_NETWORK_PROTOCOL_VERSION] = record.protocolVersion;
  if (record.kind === SpanKind.CLIENT) {
    const server = serverEndpoint(record);
    if (server) {
      attributes[ATTR_SERVER_ADDRESS] = server.address;
      if (server.port !== undefined) attributes[ATTR_SERVER_PORT] = server.port;
    }
  }
  const error = errorType(record);
  if (error !== undefined) attributes[ATTR_ERROR_TYPE] = error;
  return attributes;
}

/** Seconds from start to end (0 if the clock stepped back). */
export function durationSeconds(record: SpanRecord): number {
  const seconds = record.endTime[0] - record.startTime[0] + (record.endTime[1] - record.startTime[1]) / 1e9;
  return seconds > 0 ? seconds : 0;
}

function compareHrTime(a: HrTime, b: HrTime): number {
  return a[0] !== b[0] ? a[0] - b[0] : a[1] - b[1];
}
