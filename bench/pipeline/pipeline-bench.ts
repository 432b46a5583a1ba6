// CPU per span of the tracer's JS export pipeline: engine span buffers → decodeSpans →
// createTelemetry(...).onBatch → BatchSpanProcessor → the OTLP http/protobuf exporter, to a local
// sink in a child process (bench/pipeline/sink.ts), whose CPU is not measured.
//
//   node dist/bench/pipeline/pipeline-bench.js run [--impl DIR] [--variant server|client]
//        [--rate SPANS_PER_S|max] [--warmup N] [--spans N] [--windows K]
//   node dist/bench/pipeline/pipeline-bench.js compare --impls name=DIR,name=DIR [--runs R]
//        [--variants server,client] [--rates 20000,max] [--spans N] [--windows K]
//   node dist/bench/pipeline/pipeline-bench.js ab --impls name=DIR,name=DIR [--pairs P]
//        [--variants server,client] [--rates 20000,max] [--spans N]
//   node dist/bench/pipeline/pipeline-bench.js check --impls name=DIR,name=DIR
//
// DIR is a compiled tree holding tracer/src/export/pipeline.js (default: this repo's dist/), so a
// copy of an earlier build can be measured against the current one, e.g. before a change:
//   mkdir -p /tmp/before/dist && cp -r dist/tracer /tmp/before/dist/ && cp package.json /tmp/before/ \
//     && ln -s "$PWD/node_modules" /tmp/before/node_modules
// (package.json for the version in the resource and scope, so that outputs compare equal). In
// `ab`, a side can carry its own tracer environment: name=DIR|OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512;
// `run --env NAME=VALUE,…` does the same for one run. Profiles: run under node --cpu-prof and
// summarise with profile-summary.js. `compare` runs the
// implementations in alternating child processes (A B A B …) so that machine noise hits both;
// `ab` keeps one warmed-up process per implementation and alternates their windows (A B B A …),
// each window paired with its neighbour in time, which cancels most of a shared machine's drift.
// `check` exports a fixed set of unusual records through each implementation (OTLP JSON and
// protobuf) and compares what arrives, metrics included (timestamps aside).
//
// Measured per window, after a warm-up, from the first batch fed until the sink has received
// every span fed: the main thread's CPU (/proc/self/task/PID/schedstat, ns), the whole process's
// (process.cpuUsage: includes V8's GC helper threads), and the main thread's GC pauses.

import { fork, spawn } from 'node:child_process';
import * as path from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TracerConfig } from '../../tracer/src/config';
import type { Telemetry, TelemetryDeps } from '../../tracer/src/export/pipeline';
import type { Logger } from '../../tracer/src/log';
import type { Batch, EngineStats, SpanRecord } from '../../tracer/src/records';
import { BENCH_PID, BENCH_PROCESS, Prng, batches, encodeSpans, rawSpan, type RawSpan, type Variant } from './records';
import type { SinkCounts, SinkMessage } from './sink';

const REPO_DIST = path.resolve(__dirname, '..', '..');
const PER_BATCH = 512;
/** Default window and warm-up, in spans: whole multiples of the export batch (512 by default,
 * 4096 before), so that no timer flush is needed; openSession checks the batch in force. */
const WINDOW_SPANS = 49 * 4096;
const WARMUP_SPANS = 20 * 4096;

interface Impl {
  createTelemetry(config: TracerConfig, deps: TelemetryDeps): Telemetry;
  parseCommandLine(argv: string[], env: NodeJS.ProcessEnv): TracerConfig | { help: string } | { version: string };
  decodeSpans(buf: Buffer): SpanRecord[];
  createLogger(options: { level?: string }): Logger;
}

function loadImpl(dir: string): Impl {
  const src = path.join(path.resolve(dir), 'tracer', 'src');
  /* eslint-disable @typescript-eslint/no-require-imports */
  return {
    createTelemetry: (require(path.join(src, 'export', 'pipeline.js')) as typeof import('../../tracer/src/export/pipeline')).createTelemetry,
    parseCommandLine: (require(path.join(src, 'config.js')) as typeof import('../../tracer/src/config')).parseCommandLine as Impl['parseCommandLine'],
    decodeSpans: (require(path.join(src, 'span-buffer.js')) as typeof import('../../tracer/src/span-buffer')).decodeSpans,
    createLogger: (require(path.join(src, 'log.js')) as typeof import('../../tracer/src/log')).createLogger as Impl['createLogger'],
  };
}

const STATS: EngineStats = {
  stops: { 'read.enter': 1, 'writev.enter': 1 },
  bytesRead: 0,
  bytesWritten: 0,
  connectionsTracked: 16,
  connectionsAbandoned: 0,
  connectionsNotHttp: 0,
  parseErrors: 0,
  spansDropped: 0,
  headersInjected: 0,
  injectionsSkipped: 0,
  contextsPresent: 0,
};

function configFor(impl: Impl, endpoint: string, protocol = 'http/protobuf', env: NodeJS.ProcessEnv = {}): TracerConfig {
  // Keep the runner's own OTEL_* out of what the SDK reads from process.env.
  for (const name of Object.keys(process.env)) if (name.startsWith('OTEL_')) delete process.env[name];
  const config = impl.parseCommandLine(['--endpoint', endpoint, '--protocol', protocol, '--service-name', 'hello', 'node', 'hello.js'], env);
  if (!('command' in config)) throw new Error('cannot build the tracer config');
  return config;
}

// --- options ----------------------------------------------------------------------------------

function option(args: string[], name: string, fallback: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}

// --- run: one implementation, one variant and rate, K windows -----------------------------------

interface WindowResult {
  spans: number;
  /** Main thread on-CPU time per span, µs. */
  mainUs: number;
  /** Whole process (all threads) user+system per span, µs. */
  processUs: number;
  /** Main-thread GC pause time per span, µs. */
  gcUs: number;
  wallMs: number;
  spansPerSecond: number;
}

interface RunResult {
  impl: string;
  variant: Variant;
  rate: string;
  windows: WindowResult[];
  sink: SinkCounts;
}

function mainThreadCpuNs(): number {
  const text = fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8');
  return Number(text.split(' ')[0]);
}

async function startSink(protobuf: boolean): Promise<{ url: string; counts: () => SinkCounts; next: () => Promise<void>; stop: () => void }> {
  const child = fork(path.join(__dirname, 'sink.js'), protobuf ? ['--protobuf'] : [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: [] });
  let counts: SinkCounts = { traceRequests: 0, traceBytes: 0, spans: 0, metricRequests: 0, metricBytes: 0, digest: '' };
  let waiters: Array<() => void> = [];
  const url = await new Promise<string>((resolve, reject) => {
    child.once('error', reject);
    child.on('message', (m: SinkMessage) => {
      if (m.type === 'listening') resolve(m.url);
      else {
        counts = m.counts;
        const wake = waiters;
        waiters = [];
        for (const w of wake) w();
      }
    });
  });
  return {
    url,
    counts: () => counts,
    next: () => new Promise<void>((resolve) => waiters.push(resolve)),
    stop: () => child.disconnect(),
  };
}

interface Session {
  /** Feeds one window's spans and waits until the sink has them all. */
  window(): Promise<WindowResult>;
  /** Shuts the pipeline down (metrics flushed), checks that every span arrived. */
  finish(): Promise<SinkCounts>;
}

/**
 * One implementation, variant and rate: the pipeline set up and warmed up. The window's engine
 * buffers are generated once, before the first window, and fed again for every window, so that
 * the harness makes no garbage of its own while a window is measured.
 */
async function openSession(args: string[]): Promise<Session> {
  const implDir = option(args, 'impl', REPO_DIST);
  const variant = option(args, 'variant', 'server') as Variant;
  const rateText = option(args, 'rate', '20000');
  const rate = rateText === 'max' ? 0 : Number(rateText);
  const warmup = Number(option(args, 'warmup', String(WARMUP_SPANS)));
  const spansPerWindow = Number(option(args, 'spans', String(WINDOW_SPANS)));

  // --env NAME=VALUE,…: the tracer's environment (e.g. OTEL_BSP_MAX_EXPORT_BATCH_SIZE=512).
  const env = Object.fromEntries(
    option(args, 'env', '')
      .split(',')
      .filter((kv) => kv !== '')
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
  );
  const impl = loadImpl(implDir);
  // The export batch this implementation and environment use (OTEL_BSP_MAX_EXPORT_BATCH_SIZE).
  const exportBatch = configFor(impl, 'http://127.0.0.1:1', 'http/protobuf', env).batch.maxExportBatchSize;
  if (warmup % exportBatch !== 0 || spansPerWindow % exportBatch !== 0) throw new Error(`--warmup and --spans must be multiples of the export batch, ${exportBatch}`);
  const sink = await startSink(true);
  const telemetry = impl.createTelemetry(configFor(impl, sink.url, 'http/protobuf', env), { engineStats: () => STATS, logger: impl.createLogger({ level: 'warn' }) });
  telemetry.onBatch({ processes: [BENCH_PROCESS], spans: [] });

  let gcMs = 0;
  const gcObserver = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) gcMs += entry.duration;
  });
  gcObserver.observe({ entryTypes: ['gc'] });

  let fed = 0;
  const seed = 0x9e3779b9 ^ (variant === 'server' ? 1 : 2);
  /** Feeds the buffers at `rate` spans/s (0: as fast as the export keeps up), then waits for all to arrive. */
  const feed = async (buffers: Buffer[]): Promise<void> => {
    const intervalMs = rate > 0 ? (PER_BATCH / rate) * 1000 : 0;
    const started = performance.now();
    for (let i = 0; i < buffers.length; i++) {
      if (rate > 0) {
        const due = started + i * intervalMs;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      } else {
        // Backpressure: never more than half the span queue waiting, so nothing is dropped.
        while (fed - sink.counts().spans > 32_768) await sink.next();
        if (i % 8 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
      // As tracer/src/native.ts does with each engine batch.
      const batch: Batch = { processes: [], spans: impl.decodeSpans(buffers[i]) };
      telemetry.onBatch(batch);
      fed += PER_BATCH;
    }
    const deadline = Date.now() + 60_000;
    while (sink.counts().spans < fed) {
      if (Date.now() > deadline) throw new Error(`only ${sink.counts().spans} of ${fed} spans arrived`);
      await Promise.race([sink.next(), new Promise((resolve) => setTimeout(resolve, 1000))]);
    }
  };

  await feed(batches(variant, 0, warmup / PER_BATCH, PER_BATCH, seed));
  const windowBuffers = batches(variant, warmup, spansPerWindow / PER_BATCH, PER_BATCH, seed + 1);
  // The harness's garbage (generating the buffers) is not the pipeline's: collect it now when
  // the runner allows (compare and ab run their children with --expose-gc).
  (globalThis as { gc?: () => void }).gc?.();

  return {
    async window() {
      await new Promise((resolve) => setTimeout(resolve, 100));
      const gc0 = gcMs;
      const cpu0 = process.cpuUsage();
      const main0 = mainThreadCpuNs();
      const t0 = performance.now();
      await feed(windowBuffers);
      const main1 = mainThreadCpuNs();
      const cpu1 = process.cpuUsage(cpu0);
      const wallMs = performance.now() - t0;
      await new Promise((resolve) => setTimeout(resolve, 20)); // late gc entries
      return {
        spans: spansPerWindow,
        mainUs: (main1 - main0) / 1000 / spansPerWindow,
        processUs: (cpu1.user + cpu1.system) / spansPerWindow,
        gcUs: ((gcMs - gc0) * 1000) / spansPerWindow,
        wallMs,
        spansPerSecond: spansPerWindow / (wallMs / 1000),
      };
    },
    async finish() {
      gcObserver.disconnect();
      await telemetry.shutdown(10_000);
      // Metrics are flushed at shutdown: wait for that request too.
      const deadline = Date.now() + 10_000;
      while (sink.counts().metricRequests === 0 && Date.now() < deadline) await Promise.race([sink.next(), new Promise((r) => setTimeout(r, 500))]);
      const counts = sink.counts();
      sink.stop();
      if (counts.spans !== fed) throw new Error(`sink received ${counts.spans} spans, ${fed} were fed`);
      if (counts.metricRequests === 0) throw new Error('no metrics arrived');
      return counts;
    },
  };
}

async function run(args: string[]): Promise<RunResult> {
  const session = await openSession(args);
  const results: WindowResult[] = [];
  for (let w = 0; w < Number(option(args, 'windows', '3')); w++) results.push(await session.window());
  const sink = await session.finish();
  return { impl: option(args, 'impl', REPO_DIST), variant: option(args, 'variant', 'server') as Variant, rate: option(args, 'rate', '20000'), windows: results, sink };
}

/** A session driven over IPC by `ab`: "window" runs one, "finish" ends it. */
async function serve(args: string[]): Promise<void> {
  const session = await openSession(args);
  process.send?.({ type: 'ready' });
  process.on('message', (m: { type: string }) => {
    void (async () => {
      try {
        if (m.type === 'window') process.send?.({ type: 'window', result: await session.window() });
        else if (m.type === 'finish') {
          process.send?.({ type: 'finished', sink: await session.finish() });
          process.exit(0);
        }
      } catch (err) {
        console.error(err);
        process.exit(1);
      }
    })();
  });
}

// --- compare: alternate implementations in child processes -------------------------------------

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function runChild(args: string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--expose-gc', __filename, 'run', ...args, '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => {
      const last = out.trim().split('\n').pop() ?? '';
      if (code !== 0) reject(new Error(`run ${args.join(' ')} exited with ${code}: ${out}`));
      else resolve(JSON.parse(last) as RunResult);
    });
  });
}

async function compare(args: string[]): Promise<void> {
  const impls = option(args, 'impls', `current=${REPO_DIST}`)
    .split(',')
    .map((s) => {
      const [name, dir] = s.split('=');
      return { name, dir };
    });
  const runs = Number(option(args, 'runs', '5'));
  const variants = option(args, 'variants', 'server,client').split(',');
  const rates = option(args, 'rates', '20000,max').split(',');
  const pass = ['--env', option(args, 'env', ''), '--spans', option(args, 'spans', String(WINDOW_SPANS)), '--windows', option(args, 'windows', '3'), '--warmup', option(args, 'warmup', String(WARMUP_SPANS))];
  const all: Array<RunResult & { name: string }> = [];
  for (let r = 0; r < runs; r++) {
    for (const variant of variants) {
      for (const rate of rates) {
        // Alternate the order each round as well.
        const order = r % 2 === 0 ? impls : [...impls].reverse();
        for (const impl of order) {
          const result = await runChild(['--impl', impl.dir, '--variant', variant, '--rate', rate, ...pass]);
          all.push({ ...result, name: impl.name });
          const w = result.windows.map((x) => x.mainUs.toFixed(2)).join(' ');
          process.stderr.write(`round ${r + 1} ${variant} ${rate} ${impl.name}: main µs/span ${w}  digest ${result.sink.digest}\n`);
        }
      }
    }
  }
  console.log('\n| variant | rate | impl | main thread µs/span median [min–max] | process µs/span median [min–max] | main-thread GC µs/span median | spans/s (max) | digest |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const variant of variants) {
    for (const rate of rates) {
      for (const impl of impls) {
        const rs = all.filter((x) => x.variant === variant && x.rate === rate && x.name === impl.name);
        const ws = rs.flatMap((x) => x.windows);
        const fmt = (xs: number[]): string => `${median(xs).toFixed(2)} [${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}]`;
        const digests = [...new Set(rs.map((x) => x.sink.digest))].join(',');
        console.log(
          `| ${variant} | ${rate} | ${impl.name} | ${fmt(ws.map((w) => w.mainUs))} | ${fmt(ws.map((w) => w.processUs))} | ${median(ws.map((w) => w.gcUs)).toFixed(2)} | ${median(ws.map((w) => w.spansPerSecond)).toFixed(0)} | ${digests} |`,
        );
      }
    }
  }
  const outFile = option(args, 'out', '');
  if (outFile) fs.writeFileSync(outFile, JSON.stringify(all, null, 1));
}

// --- ab: two implementations in two long-lived processes, windows alternating A B B A … --------

interface Served {
  window(): Promise<WindowResult>;
  finish(): Promise<SinkCounts>;
}

async function startServed(args: string[]): Promise<Served> {
  const child = fork(__filename, ['serve', ...args], { execArgv: ['--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let pending: ((m: { type: string; result?: WindowResult; sink?: SinkCounts }) => void) | undefined;
  const next = (): Promise<{ type: string; result?: WindowResult; sink?: SinkCounts }> => new Promise((resolve) => (pending = resolve));
  child.on('message', (m: { type: string; result?: WindowResult; sink?: SinkCounts }) => pending?.(m));
  child.on('exit', (code) => {
    if (code !== 0) throw new Error(`serve ${args.join(' ')} exited with ${code}`);
  });
  await next(); // ready
  return {
    async window() {
      const reply = next();
      child.send({ type: 'window' });
      return (await reply).result!;
    },
    async finish() {
      const reply = next();
      child.send({ type: 'finish' });
      return (await reply).sink!;
    },
  };
}

async function ab(args: string[]): Promise<void> {
  // name=DIR, or name=DIR|NAME=VALUE;NAME=VALUE to give that side its own tracer environment.
  const impls = option(args, 'impls', '')
    .split(',')
    .map((s) => {
      const [name, rest] = [s.slice(0, s.indexOf('=')), s.slice(s.indexOf('=') + 1)];
      const [dir, env] = rest.split('|');
      return { name, dir, env: env?.replaceAll(';', ',') };
    });
  if (impls.length !== 2) throw new Error('ab wants --impls a=DIR,b=DIR');
  const pairs = Number(option(args, 'pairs', '6'));
  const variants = option(args, 'variants', 'server,client').split(',');
  const rates = option(args, 'rates', '20000,max').split(',');
  const pass = ['--env', option(args, 'env', ''), '--spans', option(args, 'spans', String(WINDOW_SPANS)), '--warmup', option(args, 'warmup', String(WARMUP_SPANS))];
  const fmt = (xs: number[]): string => `${median(xs).toFixed(2)} [${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}]`;
  const rows: string[] = [];
  const all: unknown[] = [];
  for (const variant of variants) {
    for (const rate of rates) {
      const served: Served[] = [];
      for (const impl of impls) {
        const env = impl.env !== undefined ? ['--env', impl.env] : [];
        served.push(await startServed(['--impl', impl.dir, '--variant', variant, '--rate', rate, ...env, ...pass]));
      }
      const results: WindowResult[][] = [[], []];
      for (let p = 0; p < pairs; p++) {
        const order = p % 2 === 0 ? [0, 1] : [1, 0];
        for (const i of order) results[i].push(await served[i].window());
        process.stderr.write(
          `${variant} ${rate} pair ${p + 1}: ${impls[0].name} ${results[0][p].mainUs.toFixed(2)}  ${impls[1].name} ${results[1][p].mainUs.toFixed(2)} µs/span (main thread)\n`,
        );
      }
      const sinks = [await served[0].finish(), await served[1].finish()];
      const ratios = results[0].map((a, p) => results[1][p].mainUs / a.mainUs);
      const diffs = results[0].map((a, p) => results[1][p].mainUs - a.mainUs);
      all.push({ variant, rate, impls, results, sinks });
      for (let i = 0; i < 2; i++) {
        const ws = results[i];
        rows.push(
          `| ${variant} | ${rate} | ${impls[i].name} | ${fmt(ws.map((w) => w.mainUs))} | ${fmt(ws.map((w) => w.processUs))} | ${median(ws.map((w) => w.gcUs)).toFixed(2)} | ${median(ws.map((w) => w.spansPerSecond)).toFixed(0)} | ${sinks[i].digest} |`,
        );
      }
      rows.push(`| ${variant} | ${rate} | ${impls[1].name} − ${impls[0].name}, paired | ${fmt(diffs)} (ratio ${fmt(ratios)}) | | | | |`);
    }
  }
  console.log(`\n| variant | rate | impl | main thread µs/span median [min–max] | process µs/span median [min–max] | main-thread GC µs/span median | spans/s | digest |`);
  console.log('|---|---|---|---|---|---|---|---|');
  for (const row of rows) console.log(row);
  const outFile = option(args, 'out', '');
  if (outFile) fs.writeFileSync(outFile, JSON.stringify(all, null, 1));
}

// --- check: the same records through each implementation, compared -------------------------------

/** Records that take every branch of the record → span/metric mapping. */
function checkRecords(): RawSpan[] {
  const rng = new Prng(12345);
  const spans: RawSpan[] = [];
  const server = (i: number, o: Partial<RawSpan>): void => void spans.push({ ...rawSpan('server', i, rng), ...o });
  const client = (i: number, o: Partial<RawSpan>): void => void spans.push({ ...rawSpan('client', i, rng), ...o });
  for (let i = 0; i < 40; i++) server(i, {});
  for (let i = 0; i < 40; i++) client(i, {});
  server(100, { parentSpanId: rng.bytes(8), parentIsRemote: true, traceState: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7', method: 'POST', target: '/orders?id=7', statusCode: 503, requestBodySize: 2 ** 40 });
  client(101, { statusCode: 0, error: 'connection reset', responseBodySize: 0 });
  client(102, { target: 'http://example.com:8081/x?y=1', host: 'example.com:8081' });
  client(103, { target: 'https://[2001:db8::1]/secure', host: '' });
  client(104, { method: 'CONNECT', target: 'example.com:443', host: 'example.com:443' });
  server(105, { method: 'PROPFIND', target: '/dav' });
  server(106, { method: 'get', target: '/lower' });
  server(107, { peerAddress: '/run/app.sock', peerPort: 0, localAddress: '/run/app.sock', localPort: 0, host: '' });
  server(108, { peerAddress: '::1', localAddress: '::1', host: '[::1]:8080' });
  server(109, { host: '' });
  client(110, { host: '' });
  client(111, { host: 'backend' });
  server(112, { traceFlags: 0 });
  client(113, { statusCode: 404 });
  server(114, { statusCode: 404 });
  server(115, { protocolVersion: '1.0', userAgent: '' });
  server(116, { start: [1_760_000_100, 5], end: [1_760_000_099, 7] });
  server(117, { pid: 999, tid: 1000 });
  server(118, { target: '/caf\u00e9?q=\u00fc', userAgent: 'Agent \u00e9' });
  server(119, { method: 'OPTIONS', target: '*' });
  server(120, { statusCode: 0, error: 'connection closed' });
  server(121, { spanId: Buffer.alloc(8) }); // invalid: dropped with a warning
  client(122, { parentIsRemote: true, traceState: 'a=b' });
  server(123, { host: 'bad host:99999' });
  client(124, { statusCode: 500, peerAddress: '', peerPort: 0 });
  server(125, { method: 'PATCH', statusCode: 201, requestBodySize: 17, responseBodySize: 0 });
  for (let i = 200; i < 240; i++) server(i, { method: i % 3 === 0 ? 'POST' : 'GET', statusCode: i % 5 === 0 ? 500 : 200 });
  for (let i = 300; i < 340; i++) client(i, { host: i % 2 ? 'inventory:9000' : 'pricing:9001', statusCode: i % 7 === 0 ? 429 : 200 });
  return spans;
}

/** Replaces what differs between any two runs (clock readings) by a fixed value. */
function normalize(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalize);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, /^(startTimeUnixNano|timeUnixNano)$/.test(k) && !('spanId' in (value as object)) ? 'T' : normalize(v)]),
    );
  }
  return value;
}

async function dump(args: string[]): Promise<void> {
  const impl = loadImpl(option(args, 'impl', REPO_DIST));
  const protocol = option(args, 'protocol', 'http/json');
  const bodies: Array<{ path: string; body: string }> = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      bodies.push({ path: req.url ?? '', body: protocol === 'http/json' ? body.toString('utf8') : body.toString('base64') });
      res.writeHead(200, { 'content-type': protocol === 'http/json' ? 'application/json' : 'application/x-protobuf' }).end(protocol === 'http/json' ? '{}' : '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const warnings: string[] = [];
  const logger = impl.createLogger({ level: 'warn' });
  const telemetry = impl.createTelemetry(configFor(impl, url, protocol), {
    engineStats: () => STATS,
    logger: new Proxy(logger, {
      get: (target, key) => (key === 'warn' ? (...a: unknown[]) => void warnings.push(JSON.stringify(a)) : Reflect.get(target, key, target)),
    }),
  });
  const records = checkRecords();
  // Two engine batches, the second with a process record arriving late for pid 999.
  telemetry.onBatch({ processes: [BENCH_PROCESS], spans: impl.decodeSpans(encodeSpans(records.slice(0, 100))) });
  telemetry.onBatch({
    processes: [{ pid: 999, ppid: BENCH_PID, executablePath: '/usr/bin/python3', commandArgs: ['python3', 'w.py'], mode: 'ptrace' }],
    spans: impl.decodeSpans(encodeSpans(records.slice(100))),
  });
  await telemetry.shutdown(10_000);
  server.close();
  const traces = bodies.filter((b) => b.path === '/v1/traces').map((b) => (protocol === 'http/json' ? JSON.parse(b.body) : b.body));
  const metrics = bodies.filter((b) => b.path === '/v1/metrics').map((b) => (protocol === 'http/json' ? normalize(JSON.parse(b.body)) : '(protobuf metrics not compared)'));
  await new Promise<void>((resolve) => process.stdout.write(JSON.stringify({ traces, metrics, warnings: warnings.length }) + '\n', () => resolve()));
}

async function check(args: string[]): Promise<void> {
  const impls = option(args, 'impls', `current=${REPO_DIST}`).split(',').map((s) => s.split('='));
  let same = true;
  for (const protocol of ['http/json', 'http/protobuf']) {
    const outputs: string[] = [];
    for (const [name, dir] of impls) {
      const out = await new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, [__filename, 'dump', '--impl', dir, '--protocol', protocol], { stdio: ['ignore', 'pipe', 'inherit'] });
        let text = '';
        child.stdout.on('data', (d: Buffer) => (text += d.toString()));
        child.on('exit', (code) => (code === 0 ? resolve(text.trim()) : reject(new Error(`dump ${name} failed`))));
      });
      outputs.push(out);
      const parsed = JSON.parse(out) as { traces: unknown[]; metrics: unknown[]; warnings: number };
      console.log(`${protocol} ${name}: ${parsed.traces.length} trace request(s), ${parsed.metrics.length} metric request(s), ${parsed.warnings} warning(s), ${out.length} chars`);
    }
    for (let i = 1; i < outputs.length; i++) {
      const equal = outputs[i] === outputs[0];
      same &&= equal;
      console.log(`${protocol}: ${impls[i][0]} ${equal ? 'IDENTICAL to' : 'DIFFERS from'} ${impls[0][0]}`);
      if (!equal) {
        const dir = fs.mkdtempSync('/tmp/pipeline-check-');
        outputs.forEach((o, j) => fs.writeFileSync(path.join(dir, `${impls[j][0]}.json`), JSON.stringify(JSON.parse(o), null, 1)));
        console.log(`  outputs written to ${dir}`);
      }
    }
  }
  if (!same) process.exitCode = 1;
}

async function main(): Promise<void> {
  const [command, ...args] = process.argv.slice(2);
  switch (command) {
    case 'run': {
      const result = await run(args);
      if (args.includes('--json')) await new Promise<void>((resolve) => process.stdout.write(JSON.stringify(result) + '\n', () => resolve()));
      else {
        for (const w of result.windows) {
          console.log(
            `${result.variant} rate=${result.rate}: main ${w.mainUs.toFixed(2)} µs/span, process ${w.processUs.toFixed(2)} µs/span, main-thread GC ${w.gcUs.toFixed(2)} µs/span, ${w.spansPerSecond.toFixed(0)} spans/s`,
          );
        }
        console.log(`sink: ${JSON.stringify(result.sink)}`);
      }
      process.exit(0); // the exporters' keep-alive sockets would hold the loop open
      break;
    }
    case 'compare':
      await compare(args);
      break;
    case 'serve':
      await serve(args);
      break;
    case 'ab':
      await ab(args);
      process.exit(0);
      break;
    case 'check':
      await check(args);
      break;
    case 'dump':
      await dump(args);
      process.exit(0);
      break;
    default:
      console.error('usage: pipeline-bench.js run|compare|check [options] (see the comment at the top of bench/pipeline/pipeline-bench.ts)');
      process.exit(2);
  }
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
