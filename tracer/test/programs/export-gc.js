// Runs the tracer's JS export path (engine span buffers -> decodeSpans -> spans -> OTLP serializer)
// over many batches with full GCs between rounds, while no batch is alive: what the tracer does
// under steady load. Run with node --expose-gc --trace-deopt; tracer/test/optimized-code.test.ts
// reads what V8 deoptimized. Argument: the repository root (its dist/ must be built).
const path = require('node:path');
const root = process.argv[2];
const dist = (p) => require(path.join(root, 'dist', 'tracer', 'src', p));
const { loadNative } = dist('native');
const { decodeSpans } = dist('span-buffer');
const { toReadableSpan } = dist('export/spans');
const { OtlpSpanSerializer } = dist('export/otlp-serializer');
const { HttpDurationProducer, HttpDurationRecorder, HttpDurationSeries, HTTP_DURATION_BUCKETS } = dist('export/http-metrics');
const { resourceFromAttributes } = require(path.join(root, 'node_modules', '@opentelemetry', 'resources'));

const native = loadNative();
const resource = resourceFromAttributes({ 'service.name': 'export-gc' });
const record = (i) => ({
  kind: 1 + (i % 2), traceId: '0af7651916cd43dd8448eb211c80319c', spanId: `b7ad6b71692033${(10 + (i % 90)).toString()}`,
  parentSpanId: i % 2 ? 'b7ad6b7169203331' : '', parentIsRemote: false, traceFlags: 1,
  startTime: [1764057600, 5 + i], endTime: [1764057601, 7 + i], pid: 4242, tid: 4242, statusCode: 200, peerPort: 41000 + (i % 16),
  localPort: 8080, requestBodySize: 0, responseBodySize: 6, traceState: '', method: 'GET', target: `/hello/${i % 7}`,
  protocolVersion: '1.1', host: 'localhost:8080', userAgent: 'wrk', peerAddress: '127.0.0.1', localAddress: '127.0.0.1', error: '',
});
const records = Array.from({ length: 16 }, (_, i) => record(i));
// Unsampled exchanges (OTEL_TRACES_SAMPLER=always_off, or a ratio) go to the request metrics only,
// and no record of theirs outlives its batch; the sampled ones become spans and are serialized.
const unsampled = records.map((r) => ({ ...r, traceFlags: 0 }));
const shape = { temporality: 1, boundaries: HTTP_DURATION_BUCKETS, recordMinMax: true, drop: false };
const recorder = new HttpDurationRecorder(new HttpDurationSeries(), [new HttpDurationProducer(shape, resource, { name: 'rbinder' })]);
let bytes = 0;
let counted = 0;
for (let round = 0; round < 8; round++) {
  for (let i = 0; i < 400; i++) {
    const spans = decodeSpans(native.spanBufferOf(records)).map((r) => toReadableSpan(r, resource));
    bytes += OtlpSpanSerializer.serializeRequest(spans).length;
    for (const r of decodeSpans(native.spanBufferOf(unsampled, false))) {
      recorder.record(r);
      counted++;
    }
  }
  globalThis.gc();
  globalThis.gc();
}
console.log(`serialized ${bytes} bytes, counted ${counted} exchanges`);
