// The OTLP protobuf serializer of the span exporters (http/protobuf and grpc): the SDK's own
// transport, retries and configuration, with spans whose bytes the engine already encoded put into
// the request as they are (native/src/engine/otlp.cc; why: docs/decisions/0005-native-span-encoding.md).
//
// The request is what the SDK's ProtobufTraceSerializer writes for the same spans, byte for byte:
// spans grouped by resource, then by instrumentation scope, in the order they come. The resource
// and scope messages are taken from the SDK's own serialization of one span of the group (once per
// resource object), and a span without engine bytes (another kind of ReadableSpan, or a record the
// engine left to JS) is serialized by the SDK alone and its message taken from that request; a
// batch without any engine bytes goes to the SDK's serializer whole.

import type { InstrumentationScope } from '@opentelemetry/core';
import { ProtobufTraceSerializer, type IExportTraceServiceResponse, type ISerializer } from '@opentelemetry/otlp-transformer';
import type { Resource } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';

/** A span that may carry its own OTLP `Span` message (RecordedSpan does, spans.ts). */
interface MaybeEncoded {
  readonly otlp?: Uint8Array;
}

/** What a one-span request made by the SDK holds around the span. */
interface Frame {
  /** ResourceSpans.resource, tag and length included. */
  resource: Uint8Array;
  /** ResourceSpans fields after its scope spans (schema_url). */
  resourceTail: Uint8Array;
  /** ScopeSpans.scope, tag and length included. */
  scope: Uint8Array;
  /** ScopeSpans fields after its spans (schema_url). */
  scopeTail: Uint8Array;
  /** The Span message (no tag, no length). */
  span: Uint8Array;
}

interface Field {
  number: number;
  /** Where the field starts (its tag) and ends. */
  start: number;
  end: number;
  /** For length-delimited fields: where the payload starts. */
  payload: number;
}

function readVarint(buf: Uint8Array, at: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (let i = at; i < buf.length && i < at + 10; i++) {
    value += (buf[i] & 0x7f) * scale;
    if (buf[i] < 0x80) return [value, i + 1];
    scale *= 128;
  }
  throw new Error('OTLP serializer: a varint runs past its message');
}

function* fields(buf: Uint8Array, start: number, end: number): Generator<Field> {
  let at = start;
  while (at < end) {
    const [tag, afterTag] = readVarint(buf, at);
    const wire = tag & 7;
    let payload = afterTag;
    let next: number;
    if (wire === 0) next = readVarint(buf, afterTag)[1];
    else if (wire === 1) next = afterTag + 8;
    else if (wire === 5) next = afterTag + 4;
    else if (wire === 2) {
      const [length, afterLength] = readVarint(buf, afterTag);
      payload = afterLength;
      next = afterLength + length;
    } else throw new Error(`OTLP serializer: wire type ${wire} unexpected`);
    if (next > end) throw new Error('OTLP serializer: a field runs past its message');
    yield { number: tag >>> 3, start: at, end: next, payload };
    at = next;
  }
}

/** The SDK's request for this one span, taken apart. */
function frameOf(span: ReadableSpan): Frame {
  const request = ProtobufTraceSerializer.serializeRequest([span]);
  if (request === undefined) throw new Error('OTLP serializer: the SDK serialized nothing');
  const frame: Partial<Frame> = {};
  const resourceTail: Uint8Array[] = [];
  const scopeTail: Uint8Array[] = [];
  for (const resourceSpans of fields(request, 0, request.length)) {
    for (const f of fields(request, resourceSpans.payload, resourceSpans.end)) {
      if (f.number === 1) frame.resource = request.subarray(f.start, f.end);
      else if (f.number !== 2) resourceTail.push(request.subarray(f.start, f.end));
      else {
        for (const g of fields(request, f.payload, f.end)) {
          if (g.number === 1) frame.scope = request.subarray(g.start, g.end);
          else if (g.number === 2) frame.span = request.subarray(g.payload, g.end);
          else scopeTail.push(request.subarray(g.start, g.end));
        }
      }
    }
  }
  if (!frame.span) throw new Error('OTLP serializer: no span in the SDK request');
  return {
    resource: frame.resource ?? new Uint8Array(0),
    resourceTail: Buffer.concat(resourceTail),
    scope: frame.scope ?? new Uint8Array(0),
    scopeTail: Buffer.concat(scopeTail),
    span: frame.span,
  };
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

function writeVarint(out: Uint8Array, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  out[at++] = n;
  return at;
}

/** Copies bytes to out at `at`; returns where they end. A function of the module rather than a
 * closure made per request: V8 (--trace-opt) optimized the closure again for every few requests. */
function put(out: Uint8Array, at: number, bytes: Uint8Array): number {
  out.set(bytes, at);
  return at + bytes.length;
}

interface ScopeGroup {
  scope: Uint8Array;
  scopeTail: Uint8Array;
  spans: Uint8Array[];
  size: number;
}

interface ResourceGroup {
  resource: Uint8Array;
  resourceTail: Uint8Array;
  scopes: Map<InstrumentationScope, ScopeGroup>;
  size: number;
}

/** A resource's and a scope's messages, from the first span seen with them. */
const resourceFrames = new WeakMap<Resource, { resource: Uint8Array; resourceTail: Uint8Array }>();
const scopeFrames = new WeakMap<InstrumentationScope, { scope: Uint8Array; scopeTail: Uint8Array }>();

/** The ISerializer the span exporters get instead of the SDK's ProtobufTraceSerializer. */
export const OtlpSpanSerializer: ISerializer<ReadableSpan[], IExportTraceServiceResponse> = {
  serializeRequest(spans: ReadableSpan[]): Uint8Array | undefined {
    // Nothing the engine encoded (e.g. RBINDER_SPAN_ENCODING=sdk): the SDK's batch serializer.
    if (!spans.some((span) => (span as MaybeEncoded).otlp !== undefined)) return ProtobufTraceSerializer.serializeRequest(spans);
    const groups = new Map<Resource, ResourceGroup>();
    for (const span of spans) {
      let frame: Frame | undefined;
      const encoded = (span as MaybeEncoded).otlp;
      const body = encoded ?? (frame = frameOf(span)).span;
      let group = groups.get(span.resource);
      if (!group) {
        let parts = resourceFrames.get(span.resource);
        if (!parts) {
          parts = frame ??= frameOf(span);
          // Attributes still to come from async detectors would change the message: not kept.
          if (!span.resource.asyncAttributesPending) resourceFrames.set(span.resource, { resource: parts.resource, resourceTail: parts.resourceTail });
        }
        group = { resource: parts.resource, resourceTail: parts.resourceTail, scopes: new Map(), size: 0 };
        groups.set(span.resource, group);
      }
      const scopeKey = span.instrumentationScope;
      let scope = group.scopes.get(scopeKey);
      if (!scope) {
        let parts = scopeFrames.get(scopeKey);
        if (!parts) {
          parts = frame ??= frameOf(span);
          scopeFrames.set(scopeKey, { scope: parts.scope, scopeTail: parts.scopeTail });
        }
        scope = { scope: parts.scope, scopeTail: parts.scopeTail, spans: [], size: parts.scope.length + parts.scopeTail.length };
        group.scopes.set(scopeKey, scope);
      }
      scope.spans.push(body);
      scope.size += 1 + varintSize(body.length) + body.length;
    }

    let total = 0;
    for (const group of groups.values()) {
      group.size = group.resource.length + group.resourceTail.length;
      for (const scope of group.scopes.values()) group.size += 1 + varintSize(scope.size) + scope.size;
      total += 1 + varintSize(group.size) + group.size;
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const group of groups.values()) {
      out[at++] = 0x0a; // ExportTraceServiceRequest.resource_spans
      at = writeVarint(out, at, group.size);
      at = put(out, at, group.resource);
      for (const scope of group.scopes.values()) {
        out[at++] = 0x12; // ResourceSpans.scope_spans
        at = writeVarint(out, at, scope.size);
        at = put(out, at, scope.scope);
        for (const span of scope.spans) {
          out[at++] = 0x12; // ScopeSpans.spans
          at = writeVarint(out, at, span.length);
          at = put(out, at, span);
        }
        at = put(out, at, scope.scopeTail);
      }
      at = put(out, at, group.resourceTail);
    }
    return out;
  },

  deserializeResponse(data: Uint8Array): IExportTraceServiceResponse {
    return ProtobufTraceSerializer.deserializeResponse(data);
  },
};
