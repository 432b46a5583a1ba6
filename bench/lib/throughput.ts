// The throughput experiment every load scenario shares. Each round runs
//   untraced, V1, untraced, V2, ..., untraced, Vn, untraced
// (the traced variants in an order rotated every round), each run on a fresh start of the system
// with a warm-up, and compares every traced run with the mean of the untraced runs on either side
// of it: slow drift of a noisy machine hits both sides of the ratio alike.

import type { CountingReceiver } from './receiver';
import { sleep } from './receiver';
import { cpuUs } from './proc';
import { sample, threadCpuBetween, type RunningService } from './services';
import { mean, median, rotate, stat } from './stats';
import { log } from './tools';
import type { RunMeasurement, ServiceMeasurement, Skip, Stat, VariantSummary } from './types';
import { DIRECT_CALLS, untraced, type Variant } from './variants';
import { runWrk } from './wrk';

export interface SystemUnderTest {
  url: string;
  /** In start order; stopped in reverse (the entry service first). */
  services: RunningService[];
}

export interface ThroughputPlan {
  name: string;
  /** Starts the whole system as `variant` runs it. */
  deploy(variant: Variant): Promise<SystemUnderTest>;
  /** Traced variants (the untraced baseline is added). */
  variants: Variant[];
  path: string;
  connections: number;
  wrkThreads: number;
  durationS: number;
  warmupS: number;
  rounds: number;
  wrkCpus?: string;
  /** Also sample RSS this long after the load ends (the memory figures). */
  idleAfterMs?: number;
  receiver: CountingReceiver;
  skipped: Skip[];
}

export interface ThroughputOutcome {
  runs: RunMeasurement[];
  variants: VariantSummary[];
}

async function measureRun(plan: ThroughputPlan, variant: Variant, round: number): Promise<RunMeasurement> {
  const spans0 = plan.receiver.spans();
  const sys = await plan.deploy(variant);
  const wrk = { connections: plan.connections, threads: plan.wrkThreads, cpus: plan.wrkCpus, url: `${sys.url}${plan.path}` };
  const svc = sys.services;
  let result: Omit<RunMeasurement, 'services' | 'spans'> & { services: Omit<ServiceMeasurement, 'stops'>[] };
  const receiverPid = [plan.receiver.pid];
  try {
    await sleep(200);
    const idle = svc.map(sample);
    const warm = plan.warmupS > 0 ? await runWrk({ ...wrk, durationS: plan.warmupS }) : undefined;
    const peak = svc.map(() => ({ tracer: 0, app: 0 }));
    const watch = (): void =>
      svc.forEach((s, i) => {
        const now = sample(s);
        const p = peak[i] as { tracer: number; app: number };
        p.tracer = Math.max(p.tracer, now.tracerRssKb);
        p.app = Math.max(p.app, now.appRssKb);
      });
    const before = svc.map(sample);
    const receiverBefore = cpuUs(receiverPid);
    const timer = setInterval(watch, 250);
    let w;
    try {
      w = await runWrk({ ...wrk, durationS: plan.durationS });
    } finally {
      clearInterval(timer);
    }
    const after = svc.map(sample);
    const receiverCpu = cpuUs(receiverPid) - receiverBefore;
    watch();
    let idleAfter: ReturnType<typeof sample>[] | undefined;
    if (plan.idleAfterMs) {
      await sleep(plan.idleAfterMs);
      idleAfter = svc.map(sample);
    }
    result = {
      variant: variant.id,
      round,
      requests: w.requests,
      rps: w.rps,
      lifetimeRequests: w.requests + (warm?.requests ?? 0),
      errors: w.errors + (warm?.errors ?? 0),
      latencyUs: w.latencyUs,
      receiverCpuUs: receiverCpu,
      services: svc.map((s, i) => {
        const b = before[i] as ReturnType<typeof sample>;
        const a = after[i] as ReturnType<typeof sample>;
        const p = peak[i] as { tracer: number; app: number };
        const id = idle[i] as ReturnType<typeof sample>;
        return {
          service: s.service,
          tracerCpuUs: a.tracerCpuUs - b.tracerCpuUs,
          tracerThreadCpuUs: threadCpuBetween(b.tracerThreadCpuUs, a.tracerThreadCpuUs),
          appCpuUs: a.appCpuUs - b.appCpuUs,
          tracerRssKb: variant.externalTracer ? { idle: id.tracerRssKb, load: p.tracer, idleAfter: idleAfter?.[i]?.tracerRssKb } : null,
          appRssKb: { idle: id.appRssKb, load: p.app, idleAfter: idleAfter?.[i]?.appRssKb },
        };
      }),
    };
  } catch (err) {
    await Promise.all([...svc].reverse().map((s) => s.stop()));
    throw err;
  }
  const stopped: Awaited<ReturnType<RunningService['stop']>>[] = [];
  for (const s of [...svc].reverse()) stopped.unshift(await s.stop());
  await plan.receiver.settle();
  return {
    ...result,
    services: result.services.map((m, i) => ({ ...m, stops: stopped[i]?.stops })),
    spans: plan.receiver.spans() - spans0,
  };
}

export async function runThroughput(plan: ThroughputPlan): Promise<ThroughputOutcome> {
  const runs: RunMeasurement[] = [];
  let traced = [...plan.variants];
  for (let round = 0; round < plan.rounds; round++) {
    const order = rotate(traced, round);
    const seq: Variant[] = [untraced];
    for (const v of order) seq.push(v, untraced);
    for (const v of seq) {
      if (v !== untraced && !traced.includes(v)) continue; // failed earlier in this round
      log(`${plan.name}: round ${round + 1}/${plan.rounds} ${v.id}`);
      try {
        const m = await measureRun(plan, v, round);
        log(`  ${Math.round(m.rps)} req/s, p99 ${(m.latencyUs.p99 / 1000).toFixed(2)} ms, ${m.errors} errors, ${m.spans} spans`);
        runs.push(m);
      } catch (err) {
        if (v === untraced) throw err;
        const reason = `failed: ${(err as Error).message.split('\n').slice(0, 6).join(' | ')}`;
        log(`  ${v.id} ${reason}`);
        plan.skipped.push({ scenario: plan.name, variant: v.id, reason });
        traced = traced.filter((t) => t !== v);
        runs.push({ ...emptyRun(v.id, round) }); // keeps the alternation readable in runs[]
      }
    }
  }
  const ok = runs.filter((r) => r.requests > 0 || r.variant === untraced.id);
  return { runs: ok, variants: summarize(runs, [untraced, ...plan.variants]) };
}

function emptyRun(variant: string, round: number): RunMeasurement {
  const z = { mean: NaN, p50: NaN, p90: NaN, p99: NaN, max: NaN };
  return { variant, round, requests: 0, rps: NaN, lifetimeRequests: 0, errors: 0, latencyUs: z, services: [], spans: 0, receiverCpuUs: 0 };
}

/** Per-variant figures; `runs` in execution order (so each traced run's neighbours are its baselines). */
export function summarize(runs: RunMeasurement[], variants: Variant[]): VariantSummary[] {
  const out: VariantSummary[] = [];
  const isBase = (r: RunMeasurement | undefined): r is RunMeasurement => r?.variant === untraced.id && r.requests > 0;
  for (const v of variants) {
    const mine: { run: RunMeasurement; base: RunMeasurement[] }[] = [];
    runs.forEach((r, i) => {
      if (r.variant !== v.id || !(r.requests > 0)) return;
      if (v === untraced) {
        const sameRound = runs.filter((x) => isBase(x) && x.round === r.round);
        mine.push({ run: r, base: sameRound });
      } else {
        mine.push({ run: r, base: [runs[i - 1], runs[i + 1]].filter(isBase) });
      }
    });
    if (mine.length === 0) continue;
    const baseOf = (f: (r: RunMeasurement) => number) => (x: { base: RunMeasurement[] }) =>
      v === untraced ? median(x.base.map(f)) : mean(x.base.map(f));
    const ratio = (f: (r: RunMeasurement) => number): Stat => stat(mine.map((x) => f(x.run) / baseOf(f)(x)));
    const perReq = (r: RunMeasurement, f: (s: ServiceMeasurement) => number): number =>
      r.services.reduce((sum, s) => sum + f(s), 0) / r.requests;
    const appPerReq = (r: RunMeasurement): number => perReq(r, (s) => s.appCpuUs);
    const withStops = mine.filter((x) => x.run.services.length > 0 && x.run.services.every((s) => s.stops));
    let stopsPerRequest: VariantSummary['stopsPerRequest'];
    if (withStops.length > 0) {
      // Calls through a patched call site ("fast.direct") are listed by syscall but are no stop or trap.
      const total = (s: ServiceMeasurement): number =>
        Object.entries(s.stops ?? {}).reduce((a, [k, b]) => (k === DIRECT_CALLS ? a : a + b), 0);
      const byService: Record<string, Stat> = {};
      for (const name of withStops[0]?.run.services.map((s) => s.service) ?? []) {
        byService[name] = stat(withStops.map((x) => total(x.run.services.find((s) => s.service === name) as ServiceMeasurement) / x.run.lifetimeRequests));
      }
      const bySyscall: Record<string, number> = {};
      const multi = (withStops[0]?.run.services.length ?? 0) > 1;
      let lifetime = 0;
      for (const x of withStops) {
        lifetime += x.run.lifetimeRequests;
        for (const s of x.run.services) {
          for (const [k, n] of Object.entries(s.stops ?? {})) {
            const key = multi ? `${s.service} ${k}` : k;
            bySyscall[key] = (bySyscall[key] ?? 0) + n;
          }
        }
      }
      for (const k of Object.keys(bySyscall)) bySyscall[k] = round3((bySyscall[k] as number) / lifetime);
      stopsPerRequest = {
        total: stat(withStops.map((x) => x.run.services.reduce((a, s) => a + total(s), 0) / x.run.lifetimeRequests)),
        byService,
        bySyscall,
      };
    }
    out.push({
      variant: v.id,
      rounds: mine.length,
      rps: stat(mine.map((x) => x.run.rps)),
      ratio: ratio((r) => r.rps),
      p50Ratio: ratio((r) => r.latencyUs.p50),
      p99Ratio: ratio((r) => r.latencyUs.p99),
      p50Us: stat(mine.map((x) => x.run.latencyUs.p50)),
      p99Us: stat(mine.map((x) => x.run.latencyUs.p99)),
      tracerCpuUsPerRequest: stat(mine.map((x) => perReq(x.run, (s) => s.tracerCpuUs))),
      tracerCpuUsPerRequestByThread: byThreadPerRequest(mine.map((x) => x.run)),
      appCpuUsPerRequest: stat(mine.map((x) => appPerReq(x.run))),
      addedCpuUsPerRequest: stat(mine.map((x) => perReq(x.run, (s) => s.tracerCpuUs + s.appCpuUs) - baseOf(appPerReq)(x))),
      stopsPerRequest,
      spansPerRequest: stat(mine.map((x) => x.run.spans / x.run.lifetimeRequests)),
      receiverCpuUsPerRequest: stat(mine.map((x) => x.run.receiverCpuUs / x.run.requests)),
      errors: mine.reduce((a, x) => a + x.run.errors, 0),
    });
  }
  return out;
}

/**
 * Median over the runs of each tracer thread's CPU per request ("service thread" when several
 * services are traced); undefined when no run has a tracer process.
 */
function byThreadPerRequest(runs: RunMeasurement[]): Record<string, number> | undefined {
  const multi = (runs[0]?.services.length ?? 0) > 1;
  const perRun = runs.map((r) => {
    const m = new Map<string, number>();
    for (const s of r.services)
      for (const [name, us] of Object.entries(s.tracerThreadCpuUs ?? {})) {
        const key = multi ? `${s.service} ${name}` : name;
        m.set(key, (m.get(key) ?? 0) + us / r.requests);
      }
    return m;
  });
  const names = new Set(perRun.flatMap((m) => [...m.keys()]));
  if (names.size === 0) return undefined;
  const out: Record<string, number> = {};
  for (const name of names) out[name] = Math.round(median(perRun.map((m) => m.get(name) ?? 0)) * 10) / 10;
  return out;
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}
