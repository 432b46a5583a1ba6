// The shape of bench/results/results.json: what one harness run measured. Times in µs unless the
// name says otherwise, memory in KiB, ratios traced/untraced from the same round.

/** median and spread over rounds (values in round order). */
export interface Stat {
  median: number;
  min: number;
  max: number;
  values: number[];
}

/** One traced service's own figures in one run (a chain run has one per service). */
export interface ServiceMeasurement {
  service: string;
  /** CPU time over the measured window: the external tracer process (rbinder, strace, bare loop), 0 when there is none. */
  tracerCpuUs: number;
  /** The same by the tracer's thread names (bench/lib/proc.ts threadCpuUs); absent in results of older runs. */
  tracerThreadCpuUs?: Record<string, number>;
  /** CPU time over the measured window of the program (with an in-process SDK when there is one). */
  appCpuUs: number;
  /** RSS of the external tracer process: after start (idle), peak under load, and 1 s after the load (idle after). */
  tracerRssKb: { idle: number; load: number; idleAfter?: number } | null;
  /** RSS of the program (sum over its processes). */
  appRssKb: { idle: number; load: number; idleAfter?: number };
  /** Syscall stops as the tracer counted them over the whole run (rbinder: engine counters; bare loop: enter/exit). */
  stops?: Record<string, number>;
}

/** One wrk run against one start of the system under test. */
export interface RunMeasurement {
  variant: string;
  round: number;
  /** Requests completed in the measured window, and per second. */
  requests: number;
  rps: number;
  /** Requests over the system's whole life (warm-up included): the denominator of stops per request. */
  lifetimeRequests: number;
  errors: number;
  latencyUs: { mean: number; p50: number; p90: number; p99: number; max: number };
  services: ServiceMeasurement[];
  /** Spans the receiver got from this run (all services), flushed at exit. */
  spans: number;
  /** CPU the local OTLP receiver spent over the measured window (decoding, printing JSON): export cost paid outside the traced processes. */
  receiverCpuUs: number;
}

/** A variant's figures in one throughput scenario (or one scaling point). */
export interface VariantSummary {
  variant: string;
  rounds: number;
  rps: Stat;
  /** rps / mean of the untraced runs just before and after it. */
  ratio: Stat;
  /** p50 and p99 latency / the same of the neighbouring untraced runs. */
  p50Ratio: Stat;
  p99Ratio: Stat;
  p50Us: Stat;
  p99Us: Stat;
  /** CPU per request in the measured window: external tracer, program, and the two added up minus the untraced program's. */
  tracerCpuUsPerRequest: Stat;
  /** Median over rounds of the tracer CPU per request by thread name ("service thread" in a chain). */
  tracerCpuUsPerRequestByThread?: Record<string, number>;
  appCpuUsPerRequest: Stat;
  addedCpuUsPerRequest: Stat;
  /** Stops per request served (whole run), per service and summed; absent when the tracer does not count them. */
  stopsPerRequest?: { total: Stat; byService: Record<string, Stat>; bySyscall: Record<string, number> };
  spansPerRequest: Stat;
  receiverCpuUsPerRequest: Stat;
  errors: number;
}

export interface ThroughputScenario {
  title: string;
  description: string;
  connections: number;
  wrkThreads: number;
  durationS: number;
  warmupS: number;
  /** The taskset CPU lists, when pinned. */
  pinning?: { system: string; load: string };
  variants: VariantSummary[];
  runs: RunMeasurement[];
}

export interface StartupSummary {
  variant: string;
  ms: Stat;
  /** traced − mean of the neighbouring untraced starts. */
  deltaMs: Stat;
}

export interface StartupScenario {
  description: string;
  apps: { app: string; variants: StartupSummary[] }[];
}

export interface MemoryRow {
  scenario: string;
  service: string;
  variant: string;
  /** External tracer RSS, MiB: idle after start, peak under load, idle after the load. */
  tracerIdleMiB?: number;
  tracerLoadMiB?: number;
  tracerIdleAfterMiB?: number;
  /** Program RSS under load, MiB, and its difference from the untraced program's (same scenario). */
  appLoadMiB: number;
  appDeltaMiB: number;
}

export interface ScalingPoint {
  /** The connections (wrk -c) or the program's threads. */
  x: number;
  variants: VariantSummary[];
}

export interface ScalingScenario {
  description: string;
  xLabel: string;
  points: ScalingPoint[];
}

export interface VariantInfo {
  id: string;
  label: string;
  description: string;
}

export interface Skip {
  scenario: string;
  variant?: string;
  reason: string;
}

export interface BenchResults {
  schema: 1;
  quick: boolean;
  startedAt: string;
  finishedAt: string;
  machine: {
    nproc: number;
    cpuModel: string;
    kernel: string;
    memGiB: number;
    lscpu: string;
    loadAverageStart: number[];
    loadAverageEnd: number[];
    tools: Record<string, string>;
  };
  settings: { rounds: number; durationS: number; warmupS: number; startupReps: number };
  variants: VariantInfo[];
  /** Calibration of the chain's CPU work: SHA-256 rounds per request per service. */
  chainWork?: { targetUsPerService: number; iterations: Record<string, number> };
  scenarios: {
    helloPinned?: ThroughputScenario;
    helloUnpinned?: ThroughputScenario;
    helloGoPinned?: ThroughputScenario;
    chain?: ThroughputScenario;
    startup?: StartupScenario;
    memory?: MemoryRow[];
    scalingConnections?: ScalingScenario;
    scalingThreads?: ScalingScenario;
  };
  skipped: Skip[];
}
