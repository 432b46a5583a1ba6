// Correlation accuracy: how often rbinder gives an outbound request's CLIENT span the right
// parent, measured against ground truth.
//
// Each app is a fixture server (tracer/test/fixtures) run under bin/rbinder. The harness sends it
// `GET /call?id=<k>&url=<sink>/hello?id=<k>`: the app makes the outbound GET with its language's
// standard client, so the id travels from the inbound request into the outbound URL. The CLIENT
// span whose url.query has id=k must be the child of the SERVER span whose url.query has id=k.
// The sink is an untraced HTTP server in this process; it also records whether each outbound
// request came on a new connection or a reused one.
//
//   npx tsc -p . && node dist/bench/accuracy/accuracy.js [--quick] [--requests N]
//     [--concurrency 1,16] [--apps go,node-await,...] [--env NAME=VALUE]... [--json FILE]
//
// Results and their explanation: docs/propagation.md.

import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import os from 'node:os';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../../e2e/support/otlp-receiver';
import { startServer, type ServerKind } from '../../e2e/support/programs';
import { RBINDER, tracerEnv } from '../../tracer/test/helpers';

const SERVER = 2;
const CLIENT = 3;

export interface AppSpec {
  /** The fixture server that runs under the tracer. */
  server: ServerKind;
  /** What it is, for the report. */
  description: string;
  /** Extra query parameters of /call, e.g. "&client=urlconnection". */
  extraQuery: string;
}

export const APPS = {
  'java-httpclient': {
    server: 'java',
    description: 'JDK HttpServer, fixed pool of 8 threads; java.net.http.HttpClient (HTTP/1.1)',
    extraQuery: '',
  },
  'java-urlconnection': {
    server: 'java',
    description: 'JDK HttpServer, fixed pool of 8 threads; HttpURLConnection',
    extraQuery: '&client=urlconnection',
  },
  'python-threading': {
    server: 'python',
    description: 'ThreadingHTTPServer (a thread per connection); urllib.request',
    extraQuery: '',
  },
  node: {
    server: 'node',
    description: 'node:http server; node:http client called in the request callback',
    extraQuery: '',
  },
  'node-await': {
    server: 'node',
    description: 'node:http server; await setTimeout(5 ms), then the node:http client',
    extraQuery: '&delay=5',
  },
  go: {
    server: 'go',
    description: 'net/http server; http.Get (DefaultTransport)',
    extraQuery: '',
  },
} as const satisfies Record<string, AppSpec>;

export type AppName = keyof typeof APPS;
export const APP_NAMES = Object.keys(APPS) as AppName[];

export interface AccuracyOptions {
  /** Default: every app in APPS. */
  apps?: readonly AppName[];
  /** Concurrent connections from the load generator; default [1, 16]. */
  concurrency?: readonly number[];
  /** Measured requests per app and concurrency; default 200. */
  requests?: number;
  /**
   * Unmeasured requests sent at each concurrency before the measured ones, so that connection
   * pools and the JIT are warm; default max(10, 2 × concurrency).
   */
  warmup?: number;
  /** How long to wait for the spans of one run; default 30 s. */
  spanTimeoutMs?: number;
  /** Added to the tracer's environment, e.g. { RBINDER_PTRACE_PREDICT: '0' }. */
  tracerEnv?: Record<string, string>;
  /** Progress messages; default none. */
  log?: (message: string) => void;
}

/** The outcome for one app at one concurrency. */
export interface RowResult {
  app: AppName;
  description: string;
  concurrency: number;
  /** Requests sent. */
  requests: number;
  /** Answered 200 with the sink's body. */
  responsesOk: number;
  /** Requests with exactly one SERVER and one CLIENT span carrying their id. */
  matched: number;
  /** CLIENT span's parent is the SERVER span of the same request. */
  correct: number;
  /** CLIENT span without parent: a new trace. */
  roots: number;
  /** CLIENT span whose parent is some other span. */
  wrong: number;
  /** Requests without a matched pair of spans (a span missing or duplicated). */
  missing: number;
  /** correct / requests. */
  correctShare: number;
  /** Of `wrong`: the parent is the SERVER span of another request of this run. */
  wrongIsOtherRequest: number;
  /**
   * Of `wrong`: the parent is the context last set on the writing thread before the write, by
   * that thread reading another request's head, or by it reading the response to an earlier
   * outbound request it wrote (which restores that request's parent). I.e. the rule did what it
   * says, on a thread whose context had moved on.
   */
  wrongIsWritersLastContext: number;
  /** Of `wrong`: the parent request's SERVER span had already ended when the outbound write began (a stale context). */
  wrongParentEnded: number;
  /** Of matched: the outbound request was written by the thread that read the inbound one. */
  sameThread: number;
  /** Of matched: written by a thread that read no inbound request in this run (e.g. a client library's worker). */
  writtenByNonReader: number;
  /** Of matched: the outbound request was the first on its connection (the app connected for it). */
  newConnection: number;
  /** Of matched and newConnection: correct. */
  correctNewConnection: number;
  /** Of matched: another request's head was read (by any thread) between this request's read and its outbound write. */
  interleaved: number;
  /** Of matched and interleaved: correct. */
  correctInterleaved: number;
  /** Of matched and not interleaved: correct. */
  correctNotInterleaved: number;
  /**
   * What-if, computed from the same spans: the heuristic "open requests" of docs/propagation.md
   * ("Improving the hard cases"). If the writing thread has exactly one request open (read, not
   * yet answered): that one. If it has none: the process's only open request if there is exactly
   * one, else no parent. If it has several: the thread context, as today.
   */
  openRequests: { correct: number; roots: number; wrong: number };
  /** Distinct thread ids that read the inbound requests / wrote the outbound ones. */
  serverThreads: number;
  clientThreads: number;
  /** Wall time of the run (requests only). */
  durationMs: number;
}

export interface MachineInfo {
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  kernel: string;
  node: string;
  java: string;
  go: string;
  python: string;
}

export interface AccuracyResult {
  date: string;
  machine: MachineInfo;
  /** warmup: per concurrency; undefined = max(10, 2 × concurrency). */
  options: { apps: AppName[]; concurrency: number[]; requests: number; warmup?: number; tracerEnv: Record<string, string> };
  rows: RowResult[];
}

// ---- load generation ----

interface Answer {
  ok: boolean;
}

function get(agent: http.Agent, url: string): Promise<Answer> {
  return new Promise((done) => {
    const req = http.get(url, { agent, timeout: 60_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => done({ ok: res.statusCode === 200 && Buffer.concat(chunks).toString() === 'hello\n' }));
      res.on('error', () => done({ ok: false }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => done({ ok: false }));
  });
}

/** Sends urls with `concurrency` requests in flight on as many keep-alive connections. */
async function drive(urls: string[], concurrency: number): Promise<Answer[]> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const answers: Answer[] = new Array<Answer>(urls.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < urls.length; i = next++) answers[i] = await get(agent, urls[i] ?? '');
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, urls.length) }, worker));
  agent.destroy();
  return answers;
}

function callUrl(appUrl: string, spec: AppSpec, sinkUrl: string, id: string): string {
  const target = `${sinkUrl}/hello?id=${id}`;
  return `${appUrl}/call?id=${id}${spec.extraQuery}&url=${encodeURIComponent(target)}`;
}

/** The untraced server the apps call: answers "hello\n" and notes, per id, whether its request opened the connection. */
interface Sink {
  url: string;
  /** id → the request was the first on its connection. */
  fresh: Map<string, boolean>;
  stop(): Promise<void>;
}

async function startSink(): Promise<Sink> {
  const served = new WeakMap<Socket, number>();
  const fresh = new Map<string, boolean>();
  const server = http.createServer((req, res) => {
    const before = served.get(req.socket) ?? 0;
    served.set(req.socket, before + 1);
    const id = new URL(req.url ?? '/', 'http://sink').searchParams.get('id');
    if (id !== null) fresh.set(id, before === 0);
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 6 });
    res.end('hello\n');
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    fresh,
    stop: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}

// ---- matching ----

const str = (v: unknown): string => (typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v));

/** The id a span's request carried: url.query's id parameter (url.full as a fallback). */
export function spanRequestId(s: ReceivedSpan): string | undefined {
  let query = str(s.attributes['url.query']);
  if (!query) {
    const full = str(s.attributes['url.full']);
    const q = full.indexOf('?');
    if (q >= 0) query = full.slice(q + 1);
  }
  return new URLSearchParams(query).get('id') ?? undefined;
}

function byId(spans: ReceivedSpan[], kind: number, wanted: ReadonlySet<string>): Map<string, ReceivedSpan[]> {
  const out = new Map<string, ReceivedSpan[]>();
  for (const s of spans) {
    if (s.kind !== kind) continue;
    const id = spanRequestId(s);
    if (id === undefined || !wanted.has(id)) continue;
    const list = out.get(id) ?? [];
    list.push(s);
    out.set(id, list);
  }
  return out;
}

/** Scores the spans of one run against the ids it sent. */
export function score(
  app: AppName,
  concurrency: number,
  ids: string[],
  answers: Answer[],
  spans: ReceivedSpan[],
  durationMs: number,
  freshConnection: ReadonlyMap<string, boolean> = new Map(),
): RowResult {
  const wanted = new Set(ids);
  const servers = byId(spans, SERVER, wanted);
  const clients = byId(spans, CLIENT, wanted);
  const serverBySpanId = new Map<string, ReceivedSpan>();
  for (const list of servers.values()) for (const s of list) serverBySpanId.set(s.spanId, s);
  const serverStarts = [...serverBySpanId.values()].sort((a, b) => (a.startTimeUnixNano < b.startTimeUnixNano ? -1 : 1));

  const row: RowResult = {
    app,
    description: APPS[app].description,
    concurrency,
    requests: ids.length,
    responsesOk: answers.filter((a) => a.ok).length,
    matched: 0,
    correct: 0,
    roots: 0,
    wrong: 0,
    missing: 0,
    correctShare: 0,
    wrongIsOtherRequest: 0,
    wrongIsWritersLastContext: 0,
    wrongParentEnded: 0,
    sameThread: 0,
    writtenByNonReader: 0,
    newConnection: 0,
    correctNewConnection: 0,
    interleaved: 0,
    correctInterleaved: 0,
    correctNotInterleaved: 0,
    openRequests: { correct: 0, roots: 0, wrong: 0 },
    serverThreads: 0,
    clientThreads: 0,
    durationMs,
  };
  const serverThreads = new Set<string>();
  const clientThreads = new Set<string>();
  const readers = new Set(serverStarts.map((s) => str(s.attributes['thread.id'])));
  const allClients = [...clients.values()].flat();
  for (const id of ids) {
    const s = servers.get(id);
    const c = clients.get(id);
    if (s?.length !== 1 || c?.length !== 1) {
      row.missing++;
      continue;
    }
    const [server, client] = [s[0] as ReceivedSpan, c[0] as ReceivedSpan];
    row.matched++;
    const readBy = str(server.attributes['thread.id']);
    const writtenBy = str(client.attributes['thread.id']);
    serverThreads.add(readBy);
    clientThreads.add(writtenBy);
    if (readBy !== '' && readBy === writtenBy) row.sameThread++;
    if (!readers.has(writtenBy)) row.writtenByNonReader++;
    // Heads of other requests read between this one's read and its outbound write.
    const between = serverStarts.filter(
      (o) => o !== server && o.startTimeUnixNano > server.startTimeUnixNano && o.startTimeUnixNano < client.startTimeUnixNano,
    );
    const interleaved = between.length > 0;
    if (interleaved) row.interleaved++;
    const guess = openRequestsGuess(writtenBy, client.startTimeUnixNano, serverStarts) ?? client.parentSpanId;
    if (guess === '') row.openRequests.roots++;
    else if (guess === server.spanId) row.openRequests.correct++;
    else row.openRequests.wrong++;
    const fresh = freshConnection.get(id) === true;
    if (fresh) row.newConnection++;
    if (client.parentSpanId === server.spanId) {
      row.correct++;
      if (fresh) row.correctNewConnection++;
      if (interleaved) row.correctInterleaved++;
      else row.correctNotInterleaved++;
    } else if (client.parentSpanId === '') {
      row.roots++;
    } else {
      row.wrong++;
      const parent = serverBySpanId.get(client.parentSpanId);
      if (parent) row.wrongIsOtherRequest++;
      if (parent && parent.endTimeUnixNano < client.startTimeUnixNano) row.wrongParentEnded++;
      if (lastContextOn(writtenBy, client.startTimeUnixNano, serverStarts, allClients) === client.parentSpanId) {
        row.wrongIsWritersLastContext++;
      }
    }
  }
  row.serverThreads = serverThreads.size;
  row.clientThreads = clientThreads.size;
  row.correctShare = row.requests === 0 ? 0 : row.correct / row.requests;
  return row;
}

/**
 * The span id the thread context of `thread` held just before `at`, as the engine sets it: the
 * SERVER span of the last request head read on that thread, or, if later, the parent of the last
 * CLIENT span written on that thread whose response was read (its caller restored).
 */
function lastContextOn(thread: string, at: bigint, servers: ReceivedSpan[], clients: ReceivedSpan[]): string | undefined {
  let best: { time: bigint; context: string } | undefined;
  const consider = (time: bigint, context: string): void => {
    if (time < at && (!best || time > best.time)) best = { time, context };
  };
  for (const s of servers) if (str(s.attributes['thread.id']) === thread) consider(s.startTimeUnixNano, s.spanId);
  for (const c of clients) if (str(c.attributes['thread.id']) === thread && c.parentSpanId) consider(c.endTimeUnixNano, c.parentSpanId);
  return best?.context;
}

/**
 * The parent the "open requests" heuristic would choose for a write by `thread` at `at`: a span
 * id, "" for none, or undefined for "the thread context, as today".
 */
function openRequestsGuess(thread: string, at: bigint, servers: ReceivedSpan[]): string | undefined {
  const open = servers.filter((s) => s.startTimeUnixNano < at && s.endTimeUnixNano > at);
  const onThread = open.filter((s) => str(s.attributes['thread.id']) === thread);
  if (onThread.length === 1) return onThread[0]?.spanId;
  if (onThread.length > 1) return undefined;
  return open.length === 1 ? (open[0]?.spanId ?? '') : '';
}

// ---- runs ----

function serviceOf(s: ReceivedSpan): string {
  return str(s.resource['service.name']);
}

async function collect(receiver: OtlpReceiver, service: string, prefix: string, n: number, timeoutMs: number): Promise<ReceivedSpan[]> {
  const mine = (all: ReceivedSpan[]): ReceivedSpan[] =>
    all.filter((s) => serviceOf(s) === service && (spanRequestId(s) ?? '').startsWith(prefix));
  const complete = (all: ReceivedSpan[]): boolean => {
    const m = mine(all);
    return m.filter((s) => s.kind === SERVER).length >= n && m.filter((s) => s.kind === CLIENT).length >= n;
  };
  try {
    return mine(await receiver.waitFor(complete, timeoutMs));
  } catch {
    return mine(receiver.spans()); // some never came: scored as missing
  }
}

async function runApp(
  app: AppName,
  receiver: OtlpReceiver,
  sink: Sink,
  opts: Required<Pick<AccuracyOptions, 'concurrency' | 'requests' | 'spanTimeoutMs' | 'log' | 'tracerEnv'>> & { warmup?: number },
): Promise<RowResult[]> {
  const spec: AppSpec = APPS[app];
  const service = `accuracy-${app}`;
  const server = await startServer(spec.server, {
    wrap: [RBINDER, '--service-name', service, '--'],
    env: { ...tracerEnv(receiver), ...opts.tracerEnv },
    startTimeoutMs: 60_000,
  });
  const url = (id: string): string => callUrl(server.url, spec, sink.url, id);
  const rows: RowResult[] = [];
  try {
    for (const concurrency of opts.concurrency) {
      const warmup = opts.warmup ?? Math.max(10, 2 * concurrency);
      if (warmup > 0) {
        const ids = Array.from({ length: warmup }, (_, k) => `w${concurrency}r${k}`);
        await drive(ids.map(url), concurrency);
        await collect(receiver, service, `w${concurrency}r`, warmup, opts.spanTimeoutMs);
      }
      receiver.clear();
      const prefix = `c${concurrency}r`;
      const ids = Array.from({ length: opts.requests }, (_, k) => `${prefix}${k}`);
      const started = performance.now();
      const answers = await drive(ids.map(url), concurrency);
      const durationMs = performance.now() - started;
      const spans = await collect(receiver, service, prefix, ids.length, opts.spanTimeoutMs);
      const row = score(app, concurrency, ids, answers, spans, durationMs, sink.fresh);
      opts.log(
        `${app} c=${concurrency}: ${row.correct}/${row.requests} correct, ${row.roots} roots, ${row.wrong} wrong, ` +
          `${row.missing} missing (${Math.round(durationMs)} ms)`,
      );
      rows.push(row);
    }
  } finally {
    await server.stop();
  }
  return rows;
}

/** The first match of pattern in what `cmd args` prints (stdout or stderr), else "unknown". */
function version(cmd: string, args: string[], pattern: RegExp): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return pattern.exec(`${r.stdout ?? ''}${r.stderr ?? ''}`)?.[1] ?? 'unknown';
}

export function machineInfo(): MachineInfo {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    java: version('java', ['-version'], /version "([^"]+)"/),
    go: version('go', ['version'], /go version (\S+)/),
    python: version('python3', ['--version'], /Python (\S+)/),
  };
}

/** Runs every app at every concurrency and scores the CLIENT spans' parents. */
export async function runAccuracy(options: AccuracyOptions = {}): Promise<AccuracyResult> {
  const opts = {
    apps: [...(options.apps ?? APP_NAMES)],
    concurrency: [...(options.concurrency ?? [1, 16])],
    requests: options.requests ?? 200,
    warmup: options.warmup,
    spanTimeoutMs: options.spanTimeoutMs ?? 30_000,
    tracerEnv: options.tracerEnv ?? {},
    log: options.log ?? ((): void => undefined),
  };
  const receiver = await startOtlpReceiver();
  const rows: RowResult[] = [];
  let sink: Sink | undefined;
  try {
    sink = await startSink();
    for (const app of opts.apps) rows.push(...(await runApp(app, receiver, sink, opts)));
  } finally {
    await sink?.stop();
    await receiver.stop();
  }
  return {
    date: new Date().toISOString(),
    machine: machineInfo(),
    options: { apps: opts.apps, concurrency: opts.concurrency, requests: opts.requests, warmup: opts.warmup, tracerEnv: opts.tracerEnv },
    rows,
  };
}

// ---- report ----

const pct = (n: number, of: number): string => (of === 0 ? '–' : `${((100 * n) / of).toFixed(1)}%`);

/** The results as two Markdown tables: accuracy, then the mechanism behind it. */
export function formatTable(result: AccuracyResult): string {
  const lines = [
    '| app | concurrency | correct | roots | wrong parent | missing | what-if "open requests": correct / roots / wrong |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of result.rows) {
    const h = r.openRequests;
    lines.push(
      `| ${r.app} | ${r.concurrency} | ${pct(r.correct, r.requests)} (${r.correct}/${r.requests}) | ${r.roots} | ${r.wrong} | ${r.missing} | ` +
        `${pct(h.correct, r.matched)} / ${h.roots} / ${h.wrong} |`,
    );
  }
  lines.push(
    '',
    '| app | concurrency | written by the reading thread | by a thread that read nothing | wrong = writer\'s last context | wrong, parent already ended | interleaved | correct if interleaved | correct if not | on a new connection | correct if new |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  );
  for (const r of result.rows) {
    const notInterleaved = r.matched - r.interleaved;
    lines.push(
      `| ${r.app} | ${r.concurrency} | ${pct(r.sameThread, r.matched)} | ${pct(r.writtenByNonReader, r.matched)} | ` +
        `${r.wrongIsWritersLastContext}/${r.wrong} | ${r.wrongParentEnded}/${r.wrong} | ${pct(r.interleaved, r.matched)} | ` +
        `${pct(r.correctInterleaved, r.interleaved)} | ${pct(r.correctNotInterleaved, notInterleaved)} | ` +
        `${pct(r.newConnection, r.matched)} | ${pct(r.correctNewConnection, r.newConnection)} |`,
    );
  }
  const m = result.machine;
  lines.push(
    '',
    `${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, Linux ${m.kernel}; node ${m.node}, java ${m.java}, ${m.go}, python ${m.python}; ` +
      `${result.options.requests} requests per row, after ${result.options.warmup ?? 'max(10, 2 × concurrency)'} unmeasured warm-up requests` +
      `${Object.keys(result.options.tracerEnv).length > 0 ? `; tracer env ${Object.entries(result.options.tracerEnv).map(([k, v]) => `${k}=${v}`).join(' ')}` : ''}.`,
  );
  return lines.join('\n');
}

function parseArgs(argv: string[]): { options: AccuracyOptions; json?: string } {
  const options: AccuracyOptions = { log: (m) => process.stderr.write(`${m}\n`) };
  let json: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    switch (arg) {
      case '--quick':
        options.requests ??= 40;
        break;
      case '--requests':
        options.requests = Number(value());
        break;
      case '--concurrency':
        options.concurrency = value().split(',').map(Number);
        break;
      case '--apps': {
        const apps = value().split(',');
        for (const a of apps) if (!(a in APPS)) throw new Error(`unknown app ${a} (known: ${APP_NAMES.join(', ')})`);
        options.apps = apps as AppName[];
        break;
      }
      case '--env': {
        const [name, ...rest] = value().split('=');
        if (!name || rest.length === 0) throw new Error('--env needs NAME=VALUE');
        options.tracerEnv = { ...options.tracerEnv, [name]: rest.join('=') };
        break;
      }
      case '--json':
        json = value();
        break;
      default:
        throw new Error(`unknown argument ${arg}`);
    }
  }
  return { options, json };
}

async function main(): Promise<void> {
  const { options, json } = parseArgs(process.argv.slice(2));
  const result = await runAccuracy(options);
  if (json) writeFileSync(json, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${formatTable(result)}\n`);
}

if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
