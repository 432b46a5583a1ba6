// See demo/run.sh. Prints each trace as an indented tree of spans.
import { startOtlpReceiver, type ReceivedSpan } from '../e2e/support/otlp-receiver';
import { startServer } from '../e2e/support/programs';
import { join } from 'node:path';
import { repoRoot } from '../e2e/support/process';

const RBINDER = join(repoRoot, 'bin', 'rbinder');

function printTree(spans: ReceivedSpan[]): void {
  const byParent = new Map<string, ReceivedSpan[]>();
  const ids = new Set(spans.map((s) => s.spanId));
  for (const s of spans) {
    const key = ids.has(s.parentSpanId) ? s.parentSpanId : '';
    byParent.set(key, [...(byParent.get(key) ?? []), s]);
  }
  const kind = (k: number) => (k === 2 ? 'SERVER' : k === 3 ? 'CLIENT' : String(k));
  const walk = (parent: string, depth: number) => {
    for (const s of (byParent.get(parent) ?? []).sort((a, b) => Number(a.startTimeUnixNano - b.startTimeUnixNano))) {
      const ms = Number(s.endTimeUnixNano - s.startTimeUnixNano) / 1e6;
      const target = `${s.attributes['url.path'] ?? ''}${s.attributes['url.query'] ? `?${s.attributes['url.query']}` : ''}`;
      console.log(
        `${'  '.repeat(depth)}${String(s.resource['service.name']).padEnd(9)} ${kind(s.kind).padEnd(6)} ${s.name} ${target} ` +
          `→ ${s.attributes['http.response.status_code'] ?? '-'}  ${ms.toFixed(2)} ms  span ${s.spanId}`,
      );
      walk(s.spanId, depth + 1);
    }
  };
  walk('', 1);
}

async function main(): Promise<void> {
  const receiver = await startOtlpReceiver();
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.httpEndpoint, OTEL_BSP_SCHEDULE_DELAY: '200', OTEL_METRICS_EXPORTER: 'none' };
  console.log(`OTLP receiver on ${receiver.httpEndpoint}; starting python backend and node frontend under rbinder...`);
  const backend = await startServer('python', { wrap: [RBINDER, '--service-name', 'backend', '--'], env });
  const frontend = await startServer('node', { wrap: [RBINDER, '--service-name', 'frontend', '--'], env });
  try {
    const call = `${frontend.url}/call?url=${encodeURIComponent(`${backend.url}/hello`)}`;
    console.log(`\n$ curl '${call}'`);
    console.log((await (await fetch(call)).text()).trim());
    console.log(`$ curl -H 'traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' '${frontend.url}/status/503'`);
    await (
      await fetch(`${frontend.url}/status/503`, { headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' } })
    ).text();
    const spans = await receiver.waitFor((all) => all.length >= 4, 15_000);
    const traces = new Map<string, ReceivedSpan[]>();
    for (const s of spans) traces.set(s.traceId, [...(traces.get(s.traceId) ?? []), s]);
    for (const [traceId, members] of traces) {
      console.log(`\ntrace ${traceId}`);
      printTree(members);
    }
    console.log(
      "\nNeither service forwards trace headers: rbinder injected traceparent into the frontend's\n" +
        "outbound request, so the backend's span joined the trace of the request that caused it.",
    );
  } finally {
    await frontend.stop();
    await backend.stop();
    await receiver.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
