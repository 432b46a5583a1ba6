// A finished exchange as the engine hands it over, for the export tests: a server span of GET /
// lasting 20 ms, from 127.0.0.1. Each test overrides the fields it is about. (Not part of the
// tracer: only tests import it.)

import type { SpanRecord } from '../records';

export const FIXTURE_TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
export const FIXTURE_SPAN_ID = '00f067aa0ba902b7';

export function spanRecord(overrides: Partial<SpanRecord> = {}): SpanRecord {
  return {
    kind: 1,
    traceId: FIXTURE_TRACE_ID,
    spanId: FIXTURE_SPAN_ID,
    parentSpanId: '',
    parentIsRemote: false,
    traceFlags: 1,
    traceState: '',
    startTime: [1700000000, 0],
    endTime: [1700000000, 20_000_000],
    pid: 42,
    tid: 42,
    method: 'GET',
    target: '/',
    statusCode: 200,
    protocolVersion: '1.1',
    host: 'localhost:8000',
    userAgent: '',
    peerAddress: '127.0.0.1',
    peerPort: 50000,
    localAddress: '127.0.0.1',
    localPort: 8000,
    requestBodySize: 0,
    responseBodySize: 0,
    error: '',
    ...overrides,
  };
}

const RECORD_FIELDS: Array<keyof SpanRecord> = [
  'kind', 'traceId', 'spanId', 'parentSpanId', 'parentIsRemote', 'traceFlags', 'traceState', 'startTime', 'endTime',
  'pid', 'tid', 'method', 'target', 'statusCode', 'protocolVersion', 'host', 'userAgent', 'peerAddress', 'peerPort',
  'localAddress', 'localPort', 'requestBodySize', 'responseBodySize', 'error', 'otlp', 'metricSeries',
];

/** A plain object with every field of a record (a decoded record reads them through getters, which `{ ...r }` does not copy). */
export function plainRecord(record: SpanRecord): SpanRecord {
  return Object.fromEntries(RECORD_FIELDS.map((f) => [f, record[f]])) as unknown as SpanRecord;
}
