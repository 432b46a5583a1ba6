// Records the native engine hands to JS, in batches. Plain data, shaped so the export side turns
// them into OTLP spans without per-span SDK bookkeeping (see docs/architecture.md).

/** [seconds, nanoseconds] since the Unix epoch, as @opentelemetry/api's HrTime. */
export type HrTime = [number, number];

/** SpanKind values as in @opentelemetry/api: SERVER = 1, CLIENT = 2. */
export type HttpSpanKind = 1 | 2;

export interface SpanRecord {
  kind: HttpSpanKind;
  /** 32 hex chars. */
  traceId: string;
  /** 16 hex chars. */
  spanId: string;
  /** 16 hex chars, or "" for a root span. */
  parentSpanId: string;
  /** True when the parent came from an inbound header (another process). */
  parentIsRemote: boolean;
  /** W3C trace flags (bit 0: sampled). */
  traceFlags: number;
  /** tracestate carried with the context ("" if none). */
  traceState: string;
  startTime: HrTime;
  endTime: HrTime;
  /** Process (thread group id) and thread that did the I/O. */
  pid: number;
  tid: number;
  method: string;
  /** request-target as sent: "/path?query", or absolute-form for proxies. */
  target: string;
  /** 0 when no response was seen (connection closed or reset first). */
  statusCode: number;
  /** "1.0" or "1.1". */
  protocolVersion: string;
  /** Host header ("" if none). */
  host: string;
  userAgent: string;
  /** The other end of the TCP connection (network.peer.*). For AF_UNIX: the socket path, port 0. */
  peerAddress: string;
  peerPort: number;
  /** This end of the connection. */
  localAddress: string;
  localPort: number;
  requestBodySize: number;
  responseBodySize: number;
  /** "" when the exchange completed; otherwise why it did not ("connection reset", "connection closed"). */
  error: string;
  /**
   * The span as an OTLP protobuf `Span` message, encoded by the engine as the SDK would encode
   * it (native/src/engine/otlp.cc), when the engine was asked to and could; a view into the
   * batch's buffer. tracer/src/export/otlp-serializer.ts puts it into export requests as is.
   */
  otlp?: Uint8Array;
  /**
   * The engine's id for the request-metric series of this exchange (native/src/addon.cc,
   * MetricSeriesIds): records with the same id agree on every field the metric's attributes come
   * from. 0 or absent: no id (tracer/src/export/http-metrics.ts then keys the series itself).
   */
  metricSeries?: number;
}

/** Sent once per process image (at start and after every exec), before its spans. */
export interface ProcessRecord {
  pid: number;
  ppid: number;
  /** Absolute path of the executable (/proc/PID/exe). */
  executablePath: string;
  /** argv of the image. */
  commandArgs: string[];
  /** How this process's syscalls are seen: the fast path's in-process stub, or ptrace stops
   * (--mode ptrace, or a process the fast path could not be set up in). */
  mode?: 'fast' | 'ptrace';
}

/** The traced program's main process ended. */
export interface ExitRecord {
  /** Exit code if it exited, else null. */
  code: number | null;
  /** Signal number if it was killed by a signal, else null. */
  signal: number | null;
  /** Set when the engine itself failed (the program was killed with it). */
  engineError?: string;
  /** Set when the program could not be started (errno name and message). */
  spawnError?: { errno: number; message: string };
}

export interface Batch {
  processes: ProcessRecord[];
  spans: SpanRecord[];
  exit?: ExitRecord;
}

/** Counters kept by the engine (monotonic since start). */
export interface EngineStats {
  /** Ptrace stops by syscall name (entry and exit counted separately: "read.enter", "read.exit"). */
  stops: Record<string, number>;
  bytesRead: number;
  bytesWritten: number;
  connectionsTracked: number;
  connectionsAbandoned: number;
  connectionsNotHttp: number;
  parseErrors: number;
  spansDropped: number;
  /** Traces not sampled here because export was behind (load shedding). */
  tracesShed?: number;
  /** Spans whose OTLP protobuf bytes the engine made (the rest, if exported, the SDK serialized). */
  spansEncoded?: number;
  /** Outbound requests that got trace context injected. */
  headersInjected: number;
  /** Outbound requests left alone: destination not allowed, or no room to rewrite. */
  injectionsSkipped: number;
  /** Outbound requests that already carried trace context (the program propagates itself). */
  contextsPresent: number;
  /** --mode fast: syscalls the in-process stub handled, its round trips to the engine, the ring
   * events the engine consumed and those lost to a full ring, the processes set up or not. */
  fastPathTraps?: number;
  /** --mode fast: syscalls that reached the stub through a patched call site (no signal), and the
   * call sites the engine approved for patching or refused (docs/fast-path.md, "Patched call sites"). */
  fastPathDirect?: number;
  callSitesApproved?: number;
  callSitesRefused?: number;
  fastPathUpcalls?: number;
  fastPathEvents?: number;
  /** --mode fast: the data those events carried, mostly bytes the program read and wrote (a body
   * of known length goes as a count, not copied: docs/fast-path.md, "Bodies as counts"). */
  fastPathEventBytes?: number;
  fastPathDropped?: number;
  fastPathProcesses?: number;
  fastPathFallbacks?: number;
  /** --mode fast, trace context decided in the stub without an upcall (docs/fast-path.md): SERVER
   * spans whose ids it drew, outbound requests it injected into, and parents it chose that the
   * engine's rule would not have (0 unless threads race on one connection). */
  stubContexts?: number;
  stubInjections?: number;
  stubMismatches?: number;
}
