// Starting and stopping one program the way a variant runs it, and telling its tracer's processes
// from the program's.

import { exitWithin, spawnTracked, terminate, waitForStdout, type Tracked } from '../../e2e/support/process';
import { cpuUs, descendants, rssKb, threadCpuUs } from './proc';
import { parseStops, type AppCommand, type Variant } from './variants';

export interface RunningService {
  service: string;
  variant: Variant;
  tracked: Tracked;
  /** The spawned process: the tracer when there is an external one, else the program. */
  pid: number;
  /** The external tracer's process (empty without one). */
  tracerPids(): number[];
  /** The program's processes. */
  appPids(): number[];
  /** SIGTERM to the program, then its exit (and the tracer's, after flushing); the stops it counted. */
  stop(): Promise<{ stderr: string; stops?: Record<string, number> }>;
}

export interface SpawnOptions {
  /** taskset CPU list for the tracer and program together. */
  cpus?: string;
  /** Passed to the program as PORT and argv[1] (0 = ephemeral). */
  port?: number;
  extraEnv?: Record<string, string>;
}

/** Spawns the program as `variant` runs it, without waiting for it to listen. */
export function spawnService(app: AppCommand, variant: Variant, otlpEndpoint: string, o: SpawnOptions = {}): RunningService {
  const port = String(o.port ?? 0);
  const { argv, env } = variant.command({ ...app, argv: [...app.argv, port] }, otlpEndpoint);
  const full = o.cpus ? ['taskset', '-c', o.cpus, ...argv] : argv; // taskset execs: same pid
  const tracked = spawnTracked(full, {
    env: { ...process.env, ...app.env, ...env, ...o.extraEnv, PORT: port },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pid = tracked.proc.pid;
  if (pid === undefined) throw new Error(`cannot spawn ${full.join(' ')}`);
  const appPids = (): number[] => (variant.externalTracer ? descendants(pid) : [pid, ...descendants(pid)]);
  return {
    service: app.service,
    variant,
    tracked,
    pid,
    tracerPids: () => (variant.externalTracer ? [pid] : []),
    appPids,
    async stop() {
      for (const p of variant.externalTracer ? appPids() : [pid]) {
        try {
          process.kill(p, 'SIGTERM');
        } catch {
          // already gone
        }
      }
      if (!(await exitWithin(tracked, 20_000))) await terminate(tracked, 1_000);
      const stderr = tracked.stderr();
      return { stderr, stops: parseStops(stderr) };
    },
  };
}

/** Spawns the program and waits for its "LISTENING <port>" line. */
export async function startService(app: AppCommand, variant: Variant, otlpEndpoint: string, o: SpawnOptions = {}): Promise<RunningService & { port: number }> {
  const s = spawnService(app, variant, otlpEndpoint, o);
  try {
    const m = await waitForStdout(s.tracked, /^LISTENING (\d+)$/m, 120_000, `${app.service} (${variant.id})`);
    return { ...s, port: Number(m[1]) };
  } catch (err) {
    await terminate(s.tracked, 1_000);
    throw err;
  }
}

/** CPU time and RSS of a service's tracer and program right now. */
export function sample(s: RunningService): {
  tracerCpuUs: number;
  tracerThreadCpuUs: Map<string, number>;
  appCpuUs: number;
  tracerRssKb: number;
  appRssKb: number;
} {
  const tracer = s.tracerPids();
  const app = s.appPids();
  return { tracerCpuUs: cpuUs(tracer), tracerThreadCpuUs: threadCpuUs(tracer), appCpuUs: cpuUs(app), tracerRssKb: rssKb(tracer), appRssKb: rssKb(app) };
}

/** CPU each tracer thread name used between two samples, µs (names that used none left out). */
export function threadCpuBetween(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, us] of after) {
    const used = us - (before.get(name) ?? 0);
    if (used > 0) out[name] = used;
  }
  return out;
}
