// Command line and environment → TracerConfig.
//
// Precedence: flag > environment > default. A bad flag value is a usage error (the user typed it
// and is there to read the message); a bad environment value is a warning and the default, as the
// OpenTelemetry SDKs do, because env usually comes from a pod spec and the program must still run.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_LOG_LEVEL, LOG_LEVELS, isLogLevel, type LogLevel } from './log';

export const EXPORTER_KINDS = ['otlp', 'console'] as const;
export type ExporterKind = (typeof EXPORTER_KINDS)[number];

export const OTLP_PROTOCOLS = ['grpc', 'http/protobuf', 'http/json'] as const;
export type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];

export const PROPAGATORS = ['tracecontext', 'baggage', 'b3', 'b3multi'] as const;
export type PropagatorName = (typeof PROPAGATORS)[number];

export const TRACER_MODES = ['fast', 'ptrace'] as const;
export type TracerMode = (typeof TRACER_MODES)[number];

/**
 * The CPU priority of the tracer's export work (its JavaScript thread and V8's helper threads):
 * idle (SCHED_IDLE: only CPU time the program leaves unused) or normal. The engine threads, which
 * the program waits for, always run at normal priority. See docs/architecture.md.
 */
export const EXPORT_PRIORITIES = ['idle', 'normal'] as const;
export type ExportPriority = (typeof EXPORT_PRIORITIES)[number];
/** RBINDER_SPAN_ENCODING: `engine` encodes sampled spans as OTLP protobuf in C++ (docs/decisions/0005);
 * `sdk` leaves it to the SDK serializer (slower; the same bytes). */
export const SPAN_ENCODINGS = ['engine', 'sdk'] as const;
export type SpanEncoding = (typeof SPAN_ENCODINGS)[number];

export const SAMPLER_TYPES = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
] as const;
export type SamplerType = (typeof SAMPLER_TYPES)[number];

export interface SamplerConfig {
  type: SamplerType;
  /** Sampling probability in [0, 1]; 1 for the types that take no ratio. */
  ratio: number;
}

/** OTEL_BSP_* settings for the BatchSpanProcessor (the 2.x SDK no longer reads them itself). */
export interface BatchConfig {
  scheduledDelayMillis: number;
  exportTimeoutMillis: number;
  maxQueueSize: number;
  maxExportBatchSize: number;
}

export interface SignalConfig {
  /** Empty: the signal is not exported ("none"). */
  exporters: ExporterKind[];
  protocol: OtlpProtocol;
}

export interface MetricsConfig extends SignalConfig {
  /** OTEL_METRIC_EXPORT_INTERVAL / OTEL_METRIC_EXPORT_TIMEOUT. */
  exportIntervalMillis: number;
  exportTimeoutMillis: number;
}

export interface TracerConfig {
  /** The program and its arguments, exactly as given (with --command-by-arch: the ARGS only). */
  command: string[];
  /** --command-by-arch: the program comes from RBINDER_COMMAND_<ARCH> (see tracer/src/arch-command.ts). */
  commandByArch: boolean;
  /** The environment the program gets: rbinder's own, unchanged. */
  env: NodeJS.ProcessEnv;
  /** --service-name or OTEL_SERVICE_NAME; undefined lets the resource decide (see export/resource.ts). */
  serviceName: string | undefined;
  traces: SignalConfig;
  metrics: MetricsConfig;
  /**
   * --endpoint (an OTLP base URL) when given. Endpoints from OTEL_EXPORTER_OTLP_* are not copied
   * here: the OTLP exporters read those themselves, with their per-signal rules.
   */
  endpoint: string | undefined;
  batch: BatchConfig;
  propagators: PropagatorName[];
  /** RBINDER_INJECT_TO / --inject-to entries, unparsed. */
  injectTo: string[];
  mode: TracerMode;
  exportPriority: ExportPriority;
  /** RBINDER_SPAN_ENCODING: who writes a span's OTLP protobuf bytes, the engine or (slower) the SDK. */
  spanEncoding: SpanEncoding;
  /** Most time spent flushing telemetry at exit. */
  flushTimeoutMillis: number;
  logLevel: LogLevel;
  sampler: SamplerConfig;
  /** Bad environment values that were replaced by defaults; log them once the log level is set. */
  warnings: string[];
}

/** Bad command line: print `message` to stderr and exit with `exitCode`. */
export class UsageError extends Error {
  readonly exitCode = 2;
  constructor(problem: string) {
    super(`rbinder: ${problem}\n${USAGE_HINT}`);
    this.name = 'UsageError';
  }
}

const USAGE = '[options] [--] COMMAND [ARGS...]';
const USAGE_HINT = `usage: rbinder ${USAGE} (see 'rbinder --help')`;

const DEFAULTS = {
  exporter: 'otlp',
  protocol: 'http/protobuf' as OtlpProtocol,
  propagators: 'tracecontext,baggage',
  mode: 'fast' as TracerMode,
  exportPriority: 'idle' as ExportPriority,
  flushTimeoutMillis: 5000,
  sampler: 'parentbased_always_on' as SamplerType,
  // The SDK defaults for the BatchSpanProcessor and the PeriodicExportingMetricReader, but for
  // the queue: one tracer exports every request of a whole process (thousands of spans a second),
  // and the SDK's 2048 dropped spans above ~5k spans/s. Batches are the SDK's 512: with 4096,
  // spans waited seconds in the queue at ~1k spans/s, and the larger heap cost each of the chain's
  // tracers 3-15 us of JavaScript CPU per request and ~8 MB of RSS; at ~50k spans/s 512 costs
  // ~1-2 us more per request (docs/benchmarks.md, 2026-12-06).
  batch: { scheduledDelayMillis: 5000, exportTimeoutMillis: 30000, maxQueueSize: 65536, maxExportBatchSize: 512 },
  metricExportIntervalMillis: 60000,
  metricExportTimeoutMillis: 30000,
};

const HELP_AFTER = `
The -- is needed only when COMMAND starts with "-"; everything after COMMAND goes to it.

Environment (a flag wins over its variable):
  OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES     service name, resource attributes
  OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER     otlp | console | none
  OTEL_EXPORTER_OTLP_[TRACES_|METRICS_]ENDPOINT, _PROTOCOL, _HEADERS, _TIMEOUT, _COMPRESSION
  OTEL_PROPAGATORS, OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG
  OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_EXPORT_TIMEOUT, OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE
  OTEL_METRIC_EXPORT_INTERVAL, OTEL_METRIC_EXPORT_TIMEOUT
  RBINDER_INJECT_TO, RBINDER_MODE, RBINDER_EXPORT_PRIORITY, RBINDER_FLUSH_TIMEOUT, RBINDER_LOG_LEVEL
  RBINDER_SPAN_ENCODING                           engine | sdk (who encodes OTLP protobuf spans)
`;

/** Raw flag values as commander returns them (list flags already validated). */
interface Flags {
  serviceName?: string;
  exporter?: ExporterKind[];
  endpoint?: string;
  protocol?: OtlpProtocol;
  propagators?: PropagatorName[];
  injectTo?: string;
  mode?: TracerMode;
  exportPriority?: ExportPriority;
  flushTimeout?: number;
  logLevel?: LogLevel;
  commandByArch?: boolean;
}

/**
 * Parses rbinder's arguments (argv without "node" and the script: process.argv.slice(2)).
 * Throws UsageError on bad input.
 */
export function parseCommandLine(
  argv: string[],
  env: NodeJS.ProcessEnv,
): TracerConfig | { help: string } | { version: string } {
  let output = '';
  const program = buildProgram((text) => {
    output += text;
  });
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help') return { help: output };
    if (err.code === 'commander.version') return { version: output.trim() };
    if (err.code === 'commander.missingArgument') throw new UsageError('missing COMMAND to run');
    // One line, even when commander appends "(Did you mean ...?)" on its own line.
    throw new UsageError(err.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' '));
  }
  const command = program.args;
  const flags = program.opts<Flags>();
  if (!flags.commandByArch && (command.length === 0 || command[0] === '')) throw new UsageError('missing COMMAND to run');
  return resolveConfig(command, flags, env);
}

function buildProgram(write: (text: string) => void): Command {
  return (
    new Command('rbinder')
      .usage(USAGE)
      .description('Run COMMAND and trace its HTTP/1.x traffic as OpenTelemetry spans and metrics.')
      .argument('[command...]', 'the program to trace and its arguments')
      // Options after COMMAND belong to the program: `rbinder python3 app.py -v`.
      .passThroughOptions()
      .option('--service-name <name>', 'service.name of the spans (OTEL_SERVICE_NAME; default: COMMAND basename)')
      .addOption(
        new Option('--exporter <list>', 'where traces and metrics go: otlp, console or none (OTEL_TRACES_EXPORTER, OTEL_METRICS_EXPORTER; default: otlp)')
          .argParser((value: string) => parseExporterList(value, (p) => { throw new InvalidArgumentError(p); })),
      )
      .addOption(
        new Option('--endpoint <url>', 'OTLP base URL, e.g. http://collector:4318 (OTEL_EXPORTER_OTLP_ENDPOINT)')
          .argParser(parseEndpointFlag),
      )
      .addOption(
        new Option('--protocol <protocol>', 'OTLP protocol (OTEL_EXPORTER_OTLP_PROTOCOL; default: http/protobuf)')
          .choices(OTLP_PROTOCOLS),
      )
      .addOption(
        new Option('--propagators <list>', 'context propagation formats: tracecontext, baggage, b3, b3multi or none (OTEL_PROPAGATORS; default: tracecontext,baggage)')
          .argParser((value: string) => parsePropagatorList(value, (p) => { throw new InvalidArgumentError(p); })),
      )
      .option('--inject-to <list>', 'destinations that may receive trace context headers (RBINDER_INJECT_TO)')
      .option(
        '--command-by-arch',
        "take the program from RBINDER_COMMAND_<ARCH>[_<VARIANT>] (a JSON array) for this machine's architecture; ARGS follow it",
      )
      .addOption(new Option('--mode <mode>', 'how syscalls are seen: fast (an in-process stub, ptrace stops where it cannot be set up) or ptrace (RBINDER_MODE; default: fast)').choices(TRACER_MODES))
      .addOption(
        new Option(
          '--export-priority <priority>',
          'CPU priority of span and metric export: idle (only CPU time the program leaves unused) or normal (RBINDER_EXPORT_PRIORITY; default: idle)',
        ).choices(EXPORT_PRIORITIES),
      )
      .addOption(
        new Option('--flush-timeout <ms>', 'most time spent flushing telemetry at exit (RBINDER_FLUSH_TIMEOUT; default: 5000)')
          .argParser((value: string) => {
            const ms = parseMillis(value);
            if (ms === undefined) throw new InvalidArgumentError('expected a whole number of milliseconds.');
            return ms;
          }),
      )
      .addOption(new Option('--log-level <level>', "rbinder's own log level on stderr (RBINDER_LOG_LEVEL; default: warn)").choices(LOG_LEVELS))
      .version(rbinderVersion(), '-V, --version', 'print the version')
      .helpOption('-h, --help', 'print this help')
      .addHelpText('after', HELP_AFTER)
      .showSuggestionAfterError(true)
      .exitOverride()
      .configureOutput({ writeOut: write, writeErr: () => {}, outputError: () => {} })
  );
}

function resolveConfig(command: string[], flags: Flags, env: NodeJS.ProcessEnv): TracerConfig {
  const warnings: string[] = [];
  const warn = (message: string): void => {
    warnings.push(message);
  };
  const fromEnv = new EnvReader(env, warn);

  const envExporters = (name: string): ExporterKind[] =>
    fromEnv.parsed(name, (raw, problem) => parseExporterList(raw, problem)) ?? parseExporterList(DEFAULTS.exporter, fail);

  // Read at most once, and only when needed, so a bad value is reported once or not at all.
  const generalProtocol = once(() => fromEnv.oneOf('OTEL_EXPORTER_OTLP_PROTOCOL', OTLP_PROTOCOLS));
  const protocolFor = (signal: 'TRACES' | 'METRICS'): OtlpProtocol =>
    flags.protocol ??
    fromEnv.oneOf(`OTEL_EXPORTER_OTLP_${signal}_PROTOCOL`, OTLP_PROTOCOLS) ??
    generalProtocol() ??
    DEFAULTS.protocol;

  // The OTel spec makes the metric export timeout at most the interval; keep that true here too.
  const metricExportIntervalMillis = fromEnv.positiveInt('OTEL_METRIC_EXPORT_INTERVAL') ?? DEFAULTS.metricExportIntervalMillis;
  const metricExportTimeoutMillis = Math.min(
    fromEnv.positiveInt('OTEL_METRIC_EXPORT_TIMEOUT') ?? DEFAULTS.metricExportTimeoutMillis,
    metricExportIntervalMillis,
  );

  const batch: BatchConfig = {
    scheduledDelayMillis: fromEnv.nonNegativeInt('OTEL_BSP_SCHEDULE_DELAY') ?? DEFAULTS.batch.scheduledDelayMillis,
    exportTimeoutMillis: fromEnv.positiveInt('OTEL_BSP_EXPORT_TIMEOUT') ?? DEFAULTS.batch.exportTimeoutMillis,
    maxQueueSize: fromEnv.positiveInt('OTEL_BSP_MAX_QUEUE_SIZE') ?? DEFAULTS.batch.maxQueueSize,
    maxExportBatchSize: fromEnv.positiveInt('OTEL_BSP_MAX_EXPORT_BATCH_SIZE') ?? DEFAULTS.batch.maxExportBatchSize,
  };
  if (batch.maxExportBatchSize > batch.maxQueueSize) {
    warn(`OTEL_BSP_MAX_EXPORT_BATCH_SIZE (${batch.maxExportBatchSize}) exceeds OTEL_BSP_MAX_QUEUE_SIZE; using ${batch.maxQueueSize}`);
    batch.maxExportBatchSize = batch.maxQueueSize;
  }

  const envLogLevel = fromEnv.string('RBINDER_LOG_LEVEL')?.toLowerCase();
  let logLevel: LogLevel = flags.logLevel ?? DEFAULT_LOG_LEVEL;
  if (flags.logLevel === undefined && envLogLevel !== undefined) {
    if (isLogLevel(envLogLevel)) logLevel = envLogLevel;
    else warn(`RBINDER_LOG_LEVEL="${envLogLevel}" is not one of ${LOG_LEVELS.join(', ')}; using ${DEFAULT_LOG_LEVEL}`);
  }

  return {
    command,
    commandByArch: flags.commandByArch ?? false,
    env: { ...env },
    serviceName: flags.serviceName || fromEnv.string('OTEL_SERVICE_NAME'),
    traces: { exporters: flags.exporter ?? envExporters('OTEL_TRACES_EXPORTER'), protocol: protocolFor('TRACES') },
    metrics: {
      // --exporter speaks for both signals: `--exporter none` means no network traffic at all.
      exporters: flags.exporter ?? envExporters('OTEL_METRICS_EXPORTER'),
      protocol: protocolFor('METRICS'),
      exportIntervalMillis: metricExportIntervalMillis,
      exportTimeoutMillis: metricExportTimeoutMillis,
    },
    endpoint: flags.endpoint,
    batch,
    propagators:
      flags.propagators ??
      fromEnv.parsed('OTEL_PROPAGATORS', (raw, problem) => parsePropagatorList(raw, problem)) ??
      parsePropagatorList(DEFAULTS.propagators, fail),
    injectTo: splitList(flags.injectTo ?? fromEnv.string('RBINDER_INJECT_TO') ?? ''),
    mode: flags.mode ?? fromEnv.oneOf('RBINDER_MODE', TRACER_MODES) ?? DEFAULTS.mode,
    exportPriority: flags.exportPriority ?? fromEnv.oneOf('RBINDER_EXPORT_PRIORITY', EXPORT_PRIORITIES) ?? DEFAULTS.exportPriority,
    spanEncoding: fromEnv.oneOf('RBINDER_SPAN_ENCODING', SPAN_ENCODINGS) ?? 'engine',
    flushTimeoutMillis:
      flags.flushTimeout ?? fromEnv.nonNegativeInt('RBINDER_FLUSH_TIMEOUT') ?? DEFAULTS.flushTimeoutMillis,
    logLevel,
    sampler: parseSampler(env, warn),
    warnings,
  };
}

/** OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, with the SDK's fallbacks (warn, then default). */
export function parseSampler(env: NodeJS.ProcessEnv, warn: (message: string) => void): SamplerConfig {
  const rawType = envValue(env, 'OTEL_TRACES_SAMPLER')?.toLowerCase();
  let type: SamplerType = DEFAULTS.sampler;
  if (rawType !== undefined) {
    if ((SAMPLER_TYPES as readonly string[]).includes(rawType)) type = rawType as SamplerType;
    else warn(`OTEL_TRACES_SAMPLER="${rawType}" is not supported (one of ${SAMPLER_TYPES.join(', ')}); using ${type}`);
  }
  if (type !== 'traceidratio' && type !== 'parentbased_traceidratio') return { type, ratio: 1 };
  const rawArg = envValue(env, 'OTEL_TRACES_SAMPLER_ARG');
  if (rawArg === undefined) return { type, ratio: 1 };
  const ratio = Number(rawArg);
  if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) {
    warn(`OTEL_TRACES_SAMPLER_ARG="${rawArg}" is not a number in [0, 1]; using 1`);
    return { type, ratio: 1 };
  }
  return { type, ratio };
}

// ---------------------------------------------------------------------------------------------
// Value parsers shared by flags (problem → usage error) and env (problem → warning + default).

type Problem = (message: string) => never;

const fail: Problem = (message) => {
  throw new Error(`rbinder: bad built-in default: ${message}`);
};

/** "otlp,console" → ['otlp', 'console']; "none" → []. */
function parseExporterList(raw: string, problem: Problem): ExporterKind[] {
  return parseEnumList(raw, EXPORTER_KINDS, 'exporter', problem);
}

/** "tracecontext,baggage" → both; "none" → []. */
function parsePropagatorList(raw: string, problem: Problem): PropagatorName[] {
  return parseEnumList(raw, PROPAGATORS, 'propagator', problem);
}

function parseEnumList<T extends string>(raw: string, allowed: readonly T[], what: string, problem: Problem): T[] {
  const names = splitList(raw.toLowerCase());
  if (names.length === 0) problem(`empty ${what} list`);
  if (names.includes('none')) {
    if (names.length > 1) problem(`"none" cannot be combined with other ${what}s`);
    return [];
  }
  for (const name of names) {
    if (!(allowed as readonly string[]).includes(name)) {
      problem(`unknown ${what} "${name}" (expected ${[...allowed, 'none'].join(', ')})`);
    }
  }
  return [...new Set(names)] as T[];
}

function parseEndpointFlag(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError('expected an http:// or https:// URL.');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidArgumentError('expected an http:// or https:// URL.');
  }
  return value;
}

function parseMillis(raw: string): number | undefined {
  if (!/^\s*\d+\s*$/.test(raw)) return undefined;
  const n = Number(raw);
  return Number.isSafeInteger(n) ? n : undefined;
}

function once<T>(compute: () => T): () => T {
  let done = false;
  let value: T;
  return () => {
    if (!done) {
      value = compute();
      done = true;
    }
    return value;
  };
}

function splitList(raw: string): string[] {
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** Per the OTel spec an empty value means unset. */
function envValue(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

/** Reads environment values; a bad one becomes a warning and `undefined` (the caller's default). */
class EnvReader {
  constructor(
    private readonly env: NodeJS.ProcessEnv,
    private readonly warn: (message: string) => void,
  ) {}

  string(name: string): string | undefined {
    return envValue(this.env, name);
  }

  oneOf<T extends string>(name: string, allowed: readonly T[]): T | undefined {
    const raw = this.string(name)?.toLowerCase();
    if (raw === undefined) return undefined;
    if ((allowed as readonly string[]).includes(raw)) return raw as T;
    this.warn(`${name}="${raw}" is not one of ${allowed.join(', ')}; using the default`);
    return undefined;
  }

  nonNegativeInt(name: string): number | undefined {
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    const n = parseMillis(raw);
    if (n === undefined) this.warn(`${name}="${raw}" is not a non-negative integer; using the default`);
    return n;
  }

  positiveInt(name: string): number | undefined {
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    const n = parseMillis(raw);
    if (n === undefined || n === 0) {
      this.warn(`${name}="${raw}" is not a positive integer; using the default`);
      return undefined;
    }
    return n;
  }

  parsed<T>(name: string, parse: (raw: string, problem: Problem) => T): T | undefined {
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    try {
      return parse(raw, (message) => {
        throw new EnvProblem(message);
      });
    } catch (err) {
      if (!(err instanceof EnvProblem)) throw err;
      this.warn(`${name}="${raw}": ${err.message}; using the default`);
      return undefined;
    }
  }
}

class EnvProblem extends Error {}

// ---------------------------------------------------------------------------------------------

let cachedVersion: string | undefined;

/** rbinder's version, from the package.json above this file (source and built layouts differ). */
/** Whether a span exporter sends OTLP protobuf (http/protobuf or grpc): then the engine encodes
 * sampled spans itself (export/otlp-serializer.ts puts those bytes into the requests). */
export function exportsOtlpProtobufSpans(config: TracerConfig): boolean {
  return config.spanEncoding === 'engine' && config.traces.exporters.includes('otlp') && config.traces.protocol !== 'http/json';
}

export function rbinderVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion;
  cachedVersion = '0.0.0';
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'rbinder' && typeof pkg.version === 'string') {
        cachedVersion = pkg.version;
        break;
      }
    } catch {
      // No package.json here: keep walking up.
    }
    if (path.dirname(dir) === dir) break;
  }
  return cachedVersion;
}
