// Summarises a V8 .cpuprofile (node --cpu-prof) of pipeline-bench.ts: self time by function and
// by area (OTLP serializer, metrics, span building, decoding, GC, …), idle time left out.
//
//   node --cpu-prof --cpu-prof-dir=/tmp/prof dist/bench/pipeline/pipeline-bench.js run …
//   node dist/bench/pipeline/profile-summary.js /tmp/prof/CPU.….cpuprofile [--top 40]

import * as fs from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Area of a frame, by its file (first match wins). */
const AREAS: Array<[string, RegExp]> = [
  ['otlp serializer (otlp-transformer)', /otlp-transformer/],
  ['otlp http transport/exporter base', /otlp-exporter-base|exporter-trace-otlp/],
  ['metrics SDK (record path)', /sdk-metrics/],
  ['BatchSpanProcessor / sdk-trace', /sdk-trace/],
  ['@opentelemetry/core, api, resources', /@opentelemetry\/(core|api|resources)/],
  ['span building (export/spans.js)', /tracer\/src\/export\/spans/],
  ['pipeline (export/pipeline.js)', /tracer\/src\/export\/pipeline/],
  ['decode (span-buffer.js)', /tracer\/src\/span-buffer/],
  ['bench harness', /bench\/pipeline/],
  ['node internals', /^node:/],
];

/** Functions whose inclusive time is reported. */
const ENTRY_POINTS = [
  'onBatch',
  'decodeSpans',
  'onSpan',
  'recordDurations',
  'record',
  'toReadableSpan',
  'RecordedSpan',
  'spanAttributes',
  'durationMetricAttributes',
  'onEnd',
  'serializeTraceExportRequest',
  'hexToBinary',
  'writeAttributes',
  'hashAttributes',
  'send',
];

function main(): void {
  const file = process.argv[2];
  const topIndex = process.argv.indexOf('--top');
  const top = topIndex > 0 ? Number(process.argv[topIndex + 1]) : 30;
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));

  const byFunction = new Map<string, number>();
  const byArea = new Map<string, number>();
  let total = 0;
  for (const [id, us] of self) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    if (functionName === '(idle)') continue;
    total += us;
    const shortUrl = url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*?\/(dist|orig)\//, '$1/');
    const key = `${functionName || '(anonymous)'} ${shortUrl}:${lineNumber + 1}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
    let area = 'other';
    if (functionName === '(garbage collector)') area = 'GC (main thread)';
    else if (functionName === '(program)') area = '(program): V8/native, unattributed';
    else if (url === '') area = `native/builtin: ${functionName}`;
    else area = AREAS.find(([, re]) => re.test(url))?.[0] ?? `other: ${shortUrl}`;
    byArea.set(area, (byArea.get(area) ?? 0) + us);
  }
  const pct = (us: number): string => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
  console.log(`busy (non-idle) samples: ${(total / 1000).toFixed(0)} ms\n\nby area:`);
  for (const [area, us] of [...byArea].sort((a, b) => b[1] - a[1])) console.log(`  ${pct(us)}  ${(us / 1000).toFixed(0).padStart(6)} ms  ${area}`);
  // Inclusive time of the main entry points (a function's own samples and its callees').
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const inclusive = new Map<string, number>();
  for (const [id, us] of self) {
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const { functionName } = byId.get(at)!.callFrame;
      if (ENTRY_POINTS.includes(functionName) && !seen.has(functionName)) {
        seen.add(functionName);
        inclusive.set(functionName, (inclusive.get(functionName) ?? 0) + us);
      }
    }
  }
  console.log('\ninclusive:');
  for (const name of ENTRY_POINTS) if (inclusive.has(name)) console.log(`  ${pct(inclusive.get(name)!)}  ${name}`);
  console.log(`\ntop ${top} functions (self):`);
  for (const [fn, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`  ${pct(us)}  ${fn}`);
}

main();
