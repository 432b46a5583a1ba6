// The native engine's surface, declared once; loading says every path it tried when it fails.
import * as path from 'node:path';
import { log } from './log';
import type { Batch, EngineStats, ExitRecord, ProcessRecord, SpanRecord } from './records';
import { decodeSpans } from './span-buffer';
import type { LaunchedProgram } from './spawn';

// The engine's SamplerType enumerates the sampler names in the order of config.ts's SAMPLER_TYPES.
export { SAMPLER_TYPES } from './config';

export interface EngineOptions {
  /** Resolved path of the program to execute. */
  file: string;
  /** Its argv, argv[0] included. */
  argv: string[];
  /** Its environment as "K=V" strings. */
  env: string[];
  sampler: { type: number; ratio: number };
  /** Use the in-process fast path where it can be set up (--mode fast). */
  fast: boolean;
  /** --export-priority idle: every thread but the engine's gets SCHED_IDLE once the program runs. */
  idleExport: boolean;
  /** Propagation formats as bits (tracecontext 1, baggage 2, b3 4, b3multi 8). */
  propagators: number;
  /** Inject trace context into outbound requests at all. */
  inject: boolean;
  /** Destinations injection is allowed to: CIDRs, host suffixes, "*". */
  injectTo: string[];
  /** Descriptors rbinder inherited (Node marks them close-on-exec); the program inherits them too. */
  inheritFds: number[];
  /** Sampled spans also carry their OTLP protobuf encoding (SpanRecord.otlp). */
  otlpSpans?: boolean;
  /** Adopt this program, started by the launcher, instead of starting one (file, argv, env unused). */
  launched?: LaunchedProgram;
}

export interface NativeAddon {
  /**
   * Forks and execs the program under the tracer (or adopts the launched one); returns its pid.
   * Throws naming the failed call.
   */
  startEngine(options: EngineOptions, onBatch: (batch: Batch) => void): number;
  engineStats(): EngineStats;
  /** Span export fell behind (true) or caught up (false): the engine sheds new traces meanwhile. */
  setExportBehind(behind: boolean): void;
  isForegroundOfTerminal(): boolean;
  /** For tests and benchmarks: the span buffer the engine would hand over for these records
   * (span-buffer.ts), with the OTLP bytes of sampled ones unless `otlp` is false. */
  spanBufferOf(records: Array<Omit<SpanRecord, 'otlp'>>, otlp?: boolean): Buffer;
}

/** Where the addon may be: next to the sources (development) or in an installed package. */
function candidatePaths(): string[] {
  const packageRoot = findPackageRoot(__dirname);
  const fromEnv = process.env.RBINDER_NATIVE_ADDON;
  return [
    ...(fromEnv ? [fromEnv] : []),
    path.join(packageRoot, 'native', 'build', 'Release', 'rbinder_native.node'),
    path.join(packageRoot, 'native', 'build', 'Debug', 'rbinder_native.node'),
  ];
}

function findPackageRoot(start: string): string {
  let dir = start;
  for (;;) {
    try {
      require.resolve(path.join(dir, 'package.json'));
      return dir;
    } catch {
      const parent = path.dirname(dir);
      if (parent === dir) return start;
      dir = parent;
    }
  }
}

/**
 * What the addon itself delivers: onBatch(spans, processes, exit), the spans still in their buffer
 * (span-buffer.ts), an ArrayBuffer; processes and exit undefined when there are none. Positional
 * and an ArrayBuffer because V8 throws away the code it optimized for an object or Buffer made
 * through N-API each time such an object's map dies, at full GCs (native/src/addon.cc, call_js).
 */
interface RawAddon extends Omit<NativeAddon, 'startEngine' | 'spanBufferOf'> {
  startEngine(
    options: EngineOptions,
    onBatch: (spans: ArrayBuffer, processes: ProcessRecord[] | undefined, exit: ExitRecord | undefined) => void,
  ): number;
  spanBufferOf(records: Array<Omit<SpanRecord, 'otlp'>>, otlp: boolean): ArrayBuffer;
}

/** The processes of a batch without any (most): shared, never changed. */
const NO_PROCESSES: ProcessRecord[] = [];

function withDecodedSpans(raw: RawAddon): NativeAddon {
  return {
    startEngine: (options, onBatch) =>
      raw.startEngine(options, (buffer, processes, exit) => {
        let spans: SpanRecord[] = [];
        try {
          spans = decodeSpans(Buffer.from(buffer));
        } catch (err) {
          // An engine bug: lose these spans, never the batch's processes or the program's exit.
          log.error({ error: (err as Error).message }, 'span batch from the engine dropped');
        }
        onBatch({ processes: processes ?? NO_PROCESSES, spans, exit });
      }),
    engineStats: () => raw.engineStats(),
    setExportBehind: (behind) => raw.setExportBehind(behind),
    isForegroundOfTerminal: () => raw.isForegroundOfTerminal(),
    spanBufferOf: (records, otlp = true) => Buffer.from(raw.spanBufferOf(records, otlp)),
  };
}

let cached: NativeAddon | undefined;

export function loadNative(): NativeAddon {
  if (cached) return cached;
  const failures: string[] = [];
  for (const candidate of candidatePaths()) {
    try {
      cached = withDecodedSpans(require(candidate) as RawAddon);
      return cached;
    } catch (err) {
      failures.push(`  ${candidate}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(
    `cannot load the rbinder native engine; tried:\n${failures.join('\n')}\n` +
      `(build it with "npm run build:native")`,
  );
}
