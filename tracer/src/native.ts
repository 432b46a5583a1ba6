// The native engine's surface, declared once; loading says every path it tried when it fails.
import * as path from 'node:path';
import type { Batch, EngineStats } from './records';

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
  /** Propagation formats as bits (tracecontext 1, baggage 2, b3 4, b3multi 8). */
  propagators: number;
  /** Inject trace context into outbound requests at all. */
  inject: boolean;
  /** Destinations injection is allowed to: CIDRs, host suffixes, "*". */
  injectTo: string[];
  /** Descriptors rbinder inherited (Node marks them close-on-exec); the program inherits them too. */
  inheritFds: number[];
}

export interface NativeAddon {
  /** Forks and execs the program under the tracer; returns its pid. Throws naming the failed call. */
  startEngine(options: EngineOptions, onBatch: (batch: Batch) => void): number;
  engineStats(): EngineStats;
  isForegroundOfTerminal(): boolean;
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

let cached: NativeAddon | undefined;

export function loadNative(): NativeAddon {
  if (cached) return cached;
  const failures: string[] = [];
  for (const candidate of candidatePaths()) {
    try {
      cached = require(candidate) as NativeAddon;
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
