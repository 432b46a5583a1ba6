// The ways the benchmark runs a program: untraced, under rbinder (each mode its CLI offers), with
// OpenTelemetry's own auto-instrumentation (Node SDK or Java agent), under strace, and under the
// bare seccomp+ptrace loop. Each turns a program's argv into the argv that runs it that way.

import type { EngineStats } from '../../tracer/src/records';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../../e2e/support/process';

export const RBINDER = join(repoRoot, 'bin', 'rbinder');

/** The syscalls rbinder traces (native/src/syscall/table.h), for strace -e trace=. */
export const TRACED_SYSCALLS = [
  'read', 'recvfrom', 'readv', 'recvmsg', 'write', 'sendto', 'writev', 'sendmsg', 'sendfile',
  'connect', 'accept', 'accept4', 'close', 'close_range', 'dup', 'dup2', 'dup3', 'fcntl',
];

export type Lang = 'node' | 'java' | 'go';

/** A program to run: argv[0] is `node` or `java`, so SDKs and agents can be put after it. */
export interface AppCommand {
  service: string;
  lang: Lang;
  argv: string[];
  env?: Record<string, string>;
}

export interface Variant {
  id: string;
  label: string;
  description: string;
  /** The tracer is a process of its own whose child is the program (rbinder, strace, bare loop). */
  externalTracer: boolean;
  /** Why it cannot run a program in this language, or null. */
  unsupported(lang: Lang): string | null;
  command(app: AppCommand, otlpHttpEndpoint: string): { argv: string[]; env: Record<string, string> };
}

export interface VariantTools {
  barePtrace?: string;
  otelNodeRegister?: string;
  otelJavaAgent?: string;
  /** Why the OpenTelemetry variant is missing for a language, if it is. */
  otelMissing?: Partial<Record<Lang, string>>;
  strace?: string;
}

/** The modes `bin/rbinder --help` lists for --mode (e.g. ["fast", "ptrace"]). */
export function rbinderModes(): string[] {
  const help = execFileSync(RBINDER, ['--help'], { encoding: 'utf8' });
  const m = /--mode <mode>[\s\S]*?\(choices:([^)]*)\)/.exec(help);
  if (!m?.[1]) return ['ptrace'];
  return [...m[1].matchAll(/"([^"]+)"/g)].map((x) => x[1] as string);
}

const otlpEnv = (endpoint: string): Record<string, string> => ({
  OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
  OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
});

export const untraced: Variant = {
  id: 'untraced',
  label: 'untraced',
  description: 'the program alone',
  externalTracer: false,
  unsupported: () => null,
  command: (app) => ({ argv: app.argv, env: {} }),
};

/** How an rbinder variant differs from the default run of its mode. */
export interface RbinderTweak {
  /** --export-priority instead of the default (idle). */
  exportPriority?: string;
  /** OTEL_TRACES_SAMPLER: `always_off` keeps the traps, the engine, injection and request metrics
   * but no span, so the difference to the default run is what spans cost. */
  sampler?: string;
  /** --exporter none: no span or metric is made or exported (what is left: traps, engine, hand-off to JS). */
  exporterNone?: boolean;
  /** --propagators none: spans made and exported, nothing injected (so no upcall per outbound write). */
  noPropagation?: boolean;
  /** RBINDER_SPAN_ENCODING=sdk: the SDK serializes spans instead of the engine (the cost that saves). */
  sdkEncoding?: boolean;
  /** RBINDER_STUB_CONTEXT=0: the engine decides every outbound request's context (one upcall each),
   * as before the stub decided the plain cases itself (what that saves). */
  engineContext?: boolean;
  /** RBINDER_PATCH_CALL_SITES=0: every socket syscall traps (a signal each), as before the stub
   * patched call sites (what that saves). */
  trapsOnly?: boolean;
  /** OTEL_BSP_MAX_EXPORT_BATCH_SIZE: spans per export request instead of the default. */
  exportBatch?: number;
  /** OTEL_BSP_SCHEDULE_DELAY: ms a partial batch waits before it is exported, instead of the default. */
  exportDelay?: number;
}

/** rbinder in one mode, optionally with a tweak (see RbinderTweak). */
export function rbinderVariant(mode: string, tweak: RbinderTweak = {}): Variant {
  const extra = [
    ...(tweak.exportPriority ? ['--export-priority', tweak.exportPriority] : []),
    ...(tweak.exporterNone ? ['--exporter', 'none'] : []),
    ...(tweak.noPropagation ? ['--propagators', 'none'] : []),
  ];
  const flags = ['--mode', mode, ...extra].join(' ');
  const tweakEnv: Record<string, string> = {
    ...(tweak.sampler ? { OTEL_TRACES_SAMPLER: tweak.sampler } : {}),
    ...(tweak.sdkEncoding ? { RBINDER_SPAN_ENCODING: 'sdk' } : {}),
    ...(tweak.engineContext ? { RBINDER_STUB_CONTEXT: '0' } : {}),
    ...(tweak.trapsOnly ? { RBINDER_PATCH_CALL_SITES: '0' } : {}),
    ...(tweak.exportBatch ? { OTEL_BSP_MAX_EXPORT_BATCH_SIZE: String(tweak.exportBatch) } : {}),
    ...(tweak.exportDelay !== undefined ? { OTEL_BSP_SCHEDULE_DELAY: String(tweak.exportDelay) } : {}),
  };
  const suffix = [
    tweak.exportPriority,
    tweak.sampler && 'unsampled',
    tweak.exporterNone && 'noexport',
    tweak.noPropagation && 'nopropagation',
    tweak.sdkEncoding && 'sdkencoding',
    tweak.engineContext && 'enginecontext',
    tweak.trapsOnly && 'trapsonly',
    tweak.exportBatch && `batch${tweak.exportBatch}`,
    tweak.exportDelay !== undefined && `delay${tweak.exportDelay}`,
  ]
    .filter(Boolean)
    .join('-');
  const envText = Object.entries(tweakEnv).map(([k, v]) => ` ${k}=${v}`).join('');
  return {
    id: suffix ? `rbinder-${mode}-${suffix}` : `rbinder-${mode}`,
    label: `rbinder ${flags}${envText}`,
    description: tweak.exporterNone
      ? `bin/rbinder ${flags}${envText}: no span or metric made or exported`
      : `bin/rbinder ${flags}${envText}, OTLP/HTTP protobuf export to the local receiver (traces and metrics, SDK defaults)`,
    externalTracer: true,
    unsupported: () => null,
    command: (app, endpoint) => ({
      argv: [RBINDER, ...flags.split(' '), '--service-name', app.service, '--', ...app.argv],
      // debug: the engine's counters at exit (one line; nothing is logged per request).
      env: { ...otlpEnv(endpoint), ...tweakEnv, RBINDER_LOG_LEVEL: 'debug' },
    }),
  };
}

export function otelVariant(tools: VariantTools): Variant {
  return {
    id: 'otel',
    label: 'OTel auto-instr.',
    description:
      'OpenTelemetry auto-instrumentation in the process: Node `--require @opentelemetry/auto-instrumentations-node/register`, ' +
      'Java `-javaagent:opentelemetry-javaagent.jar`; traces over OTLP/HTTP protobuf to the local receiver (metrics and logs off)',
    externalTracer: false,
    unsupported: (lang) => {
      if (lang === 'node' && !tools.otelNodeRegister) return tools.otelMissing?.node ?? 'not installed';
      if (lang === 'java' && !tools.otelJavaAgent) return tools.otelMissing?.java ?? 'not installed';
      if (lang === 'go') return 'OpenTelemetry has no auto-instrumentation for a Go binary (only its SDK, compiled in)';
      return null;
    },
    command: (app, endpoint) => {
      const [runtime, ...rest] = app.argv as [string, ...string[]];
      const env = {
        ...otlpEnv(endpoint),
        OTEL_SERVICE_NAME: app.service,
        OTEL_TRACES_EXPORTER: 'otlp',
        OTEL_METRICS_EXPORTER: 'none',
        OTEL_LOGS_EXPORTER: 'none',
        // No cloud detectors: they probe metadata addresses off this machine.
        OTEL_NODE_RESOURCE_DETECTORS: 'env,host,os,process',
        OTEL_RESOURCE_PROVIDERS_AWS_ENABLED: 'false',
        OTEL_RESOURCE_PROVIDERS_GCP_ENABLED: 'false',
        OTEL_RESOURCE_PROVIDERS_AZURE_ENABLED: 'false',
      };
      const hook = app.lang === 'node' ? ['--require', tools.otelNodeRegister as string] : [`-javaagent:${tools.otelJavaAgent as string}`];
      return { argv: [runtime, ...hook, ...rest], env };
    },
  };
}

export function straceVariant(strace: string): Variant {
  return {
    id: 'strace',
    label: 'strace',
    description: `strace -f --seccomp-bpf -e trace=<rbinder's syscalls> -o /dev/null`,
    externalTracer: true,
    unsupported: () => null,
    command: (app) => ({
      argv: [strace, '-f', '--seccomp-bpf', '-e', `trace=${TRACED_SYSCALLS.join(',')}`, '-o', '/dev/null', ...app.argv],
      env: {},
    }),
  };
}

export function bareVariant(bin: string, stops: 'entry' | 'entry-exit'): Variant {
  return {
    id: `bare-${stops}`,
    label: `bare loop (${stops === 'entry' ? 'entry' : 'entry+exit'})`,
    description: `bench/bare/bare-ptrace.c: seccomp RET_TRACE on rbinder's syscalls, a waitpid loop that only resumes (${
      stops === 'entry' ? 'PTRACE_CONT at the seccomp stop' : 'PTRACE_SYSCALL at the seccomp stop, then the exit stop'
    })`,
    externalTracer: true,
    unsupported: () => null,
    command: (app) => ({ argv: [bin, stops, ...app.argv], env: { BARE_PTRACE_STATS: '1' } }),
  };
}

/** The key under which parseStops lists the fast path's calls through patched call sites: shown
 * per request, but no stop or trap (a function call into the stub, no signal). */
export const DIRECT_CALLS = 'fast.direct';

/** The stops a tracer reported on its stderr at exit: rbinder's engine counters or the bare loop's
 * line. For rbinder's fast path, its stub's traps and its round trips to the tracer count too
 * ("fast.trap", "fast.upcall"): each is a cost the program pays instead of a ptrace stop. */
export function parseStops(stderr: string): Record<string, number> | undefined {
  for (const line of stderr.split('\n').reverse()) {
    if (line.includes('engine counters at exit')) {
      try {
        const stats = (JSON.parse(line) as { stats?: Partial<EngineStats> }).stats ?? {};
        const stops = { ...(stats.stops ?? {}) };
        if (stats.fastPathProcesses) {
          stops['fast.trap'] = stats.fastPathTraps ?? 0;
          stops['fast.upcall'] = stats.fastPathUpcalls ?? 0;
          stops[DIRECT_CALLS] = stats.fastPathDirect ?? 0;
        }
        return stops;
      } catch {
        return undefined;
      }
    }
    const bare = /^\{"enter":(\d+),"exit":(\d+)\}$/.exec(line.trim());
    if (bare) return { enter: Number(bare[1]), exit: Number(bare[2]) };
  }
  return undefined;
}
