// The benchmark's scenarios: hello (pinned and not), chain, startup, memory (from the hello and
// chain runs) and scaling (connections, threads). Each returns the figures results.json holds.

import { execFile } from 'node:child_process';
import { createServer, connect } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { ensureGoBinary, ensureJavaClasses } from '../e2e/support/build';
import { exitWithin, repoRoot } from '../e2e/support/process';
import { fixturesDir } from '../e2e/support/programs';
import { allCpus, setAffinity } from './lib/proc';
import { sleep, type CountingReceiver } from './lib/receiver';
import { spawnService, startService, type RunningService } from './lib/services';
import { median, mean, rotate, stat } from './lib/stats';
import { runThroughput, type SystemUnderTest, type ThroughputPlan } from './lib/throughput';
import { log } from './lib/tools';
import type { MemoryRow, RunMeasurement, ScalingScenario, Skip, StartupScenario, StartupSummary, ThroughputScenario } from './lib/types';
import { untraced, type AppCommand, type Lang, type Variant } from './lib/variants';

const run = promisify(execFile);

export interface Settings {
  rounds: number;
  durationS: number;
  warmupS: number;
  startupReps: number;
  scalingRounds: number;
  scalingConnections: number[];
  scalingThreads: number[];
  /** CPU work per chain service, µs (untraced, as calibrated). */
  chainWorkUs: number;
  /** Warm-up of the chain (JIT of two runtimes, and the Java agent's own classes), s. */
  chainWarmupS: number;
  /** Sample RSS this long after the load of hello (unpinned) and chain runs, ms. */
  idleAfterMs: number;
}

export interface BenchContext {
  receiver: CountingReceiver;
  /** The traced variants available (untraced is implicit). */
  variants: Variant[];
  settings: Settings;
  skipped: Skip[];
}

const appsDir = join(repoRoot, 'bench', 'apps');

/** The tests' Go server (tracer/test/fixtures/go/server), built once into the cache. */
async function goHelloApp(): Promise<AppCommand> {
  const binary = await ensureGoBinary(join(fixturesDir, 'go', 'server'), 'fixture-go-server');
  return { service: 'bench-hello-go', lang: 'go', argv: [binary] };
}

export function helloApp(): AppCommand {
  return { service: 'bench-hello', lang: 'node', argv: [process.execPath, join(appsDir, 'hello.js')] };
}

/**
 * The JDK HttpServer writes the response head and body in separate writes; without TCP_NODELAY
 * (its default) Nagle holds the body until the client's delayed ACK, 40 ms later, and every
 * figure would measure that timer (about 250 req/s whatever the tracer).
 */
async function javaApp(service: string, env: Record<string, string>): Promise<AppCommand> {
  const classes = await ensureJavaClasses(join(appsDir, 'java'));
  return { service, lang: 'java', argv: ['java', '-Dsun.net.httpserver.nodelay=true', '-cp', classes, 'BenchServer'], env };
}

/** The variants that can run programs in all these languages; the others are recorded as skipped. */
function applicable(ctx: BenchContext, scenario: string, langs: Lang[], variants = ctx.variants): Variant[] {
  return variants.filter((v) => {
    const why = langs.map((l) => v.unsupported(l)).find((r) => r !== null);
    if (why) ctx.skipped.push({ scenario, variant: v.id, reason: why });
    return !why;
  });
}

async function singleService(app: AppCommand, v: Variant, ctx: BenchContext, cpus?: string): Promise<SystemUnderTest> {
  const s = await startService(app, v, ctx.receiver.httpEndpoint, { cpus });
  return { url: `http://127.0.0.1:${s.port}`, services: [s] };
}

function plan(ctx: BenchContext, p: Omit<ThroughputPlan, 'receiver' | 'skipped' | 'rounds' | 'durationS' | 'warmupS'> & Partial<ThroughputPlan>): ThroughputPlan {
  const s = ctx.settings;
  return { rounds: s.rounds, durationS: s.durationS, warmupS: s.warmupS, receiver: ctx.receiver, skipped: ctx.skipped, ...p };
}

// ---- hello ----

export async function helloScenario(ctx: BenchContext, pinned: boolean, go = false): Promise<ThroughputScenario> {
  const name = go ? 'hello-go-pinned' : pinned ? 'hello-pinned' : 'hello-unpinned';
  const app = go ? await goHelloApp() : helloApp();
  const server = go ? 'net/http (Go, the fixture server of the tests)' : 'node:http';
  const connections = 16;
  const p = plan(ctx, {
    name,
    deploy: (v) => singleService(app, v, ctx, pinned ? '0' : undefined),
    variants: applicable(ctx, name, [app.lang]),
    path: go ? '/hello' : '/',
    connections,
    wrkThreads: pinned ? 1 : 2,
    wrkCpus: pinned ? '1' : undefined,
    idleAfterMs: pinned ? undefined : ctx.settings.idleAfterMs,
  });
  // Pinned: the server (and its tracer) alone on CPU 0; wrk, the receiver and this harness on CPU 1.
  if (pinned) {
    setAffinity(process.pid, '1');
    setAffinity(ctx.receiver.pid, '1');
  }
  try {
    const outcome = await runThroughput(p);
    return {
      title: go ? 'hello (Go), pinned' : pinned ? 'hello, pinned' : 'hello, unpinned',
      description: pinned
        ? `keep-alive ${server} hello world; server + tracer on CPU 0 (taskset -c 0), wrk -t1 on CPU 1 (with the receiver and the harness)`
        : `keep-alive ${server} hello world; nothing pinned`,
      connections,
      wrkThreads: p.wrkThreads,
      durationS: p.durationS,
      warmupS: p.warmupS,
      pinning: pinned ? { system: '0', load: '1' } : undefined,
      ...outcome,
    };
  } finally {
    if (pinned) {
      setAffinity(process.pid, allCpus());
      setAffinity(ctx.receiver.pid, allCpus());
    }
  }
}

// ---- chain ----

async function calibrate(app: AppCommand, us: number): Promise<number> {
  const [cmd, ...args] = app.argv as [string, ...string[]];
  const { stdout } = await run(cmd, args, { env: { ...process.env, ...app.env, CALIBRATE_US: String(us) }, timeout: 60_000 });
  const m = /^ITERATIONS (\d+)$/m.exec(stdout);
  if (!m) throw new Error(`calibration of ${app.service} printed: ${stdout}`);
  return Number(m[1]);
}

export async function chainScenario(ctx: BenchContext): Promise<{ scenario: ThroughputScenario; iterations: Record<string, number> }> {
  const us = ctx.settings.chainWorkUs;
  const frontBase: AppCommand = { service: 'bench-front', lang: 'node', argv: [process.execPath, join(appsDir, 'front.js')] };
  const backBase = await javaApp('bench-back', {});
  const iterations = { 'bench-front': await calibrate(frontBase, us), 'bench-back': await calibrate(backBase, us) };
  log(`chain: ${us} µs of SHA-256 work = ${iterations['bench-front']} rounds (node), ${iterations['bench-back']} rounds (java)`);
  const back = { ...backBase, env: { THREADS: '16', WORK_ITERATIONS: String(iterations['bench-back']) } };
  const deploy = async (v: Variant): Promise<SystemUnderTest> => {
    const b = await startService(back, v, ctx.receiver.httpEndpoint);
    let f: RunningService & { port: number };
    try {
      f = await startService(frontBase, v, ctx.receiver.httpEndpoint, {
        extraEnv: { WORK_ITERATIONS: String(iterations['bench-front']), BACK_URL: `http://127.0.0.1:${b.port}` },
      });
    } catch (err) {
      await b.stop();
      throw err;
    }
    return { url: `http://127.0.0.1:${f.port}`, services: [b, f] };
  };
  const connections = 16;
  const p = plan(ctx, {
    name: 'chain',
    deploy,
    variants: applicable(ctx, 'chain', ['node', 'java']),
    path: '/chain',
    connections,
    wrkThreads: 2,
    warmupS: ctx.settings.warmupS > 0 ? Math.max(ctx.settings.chainWarmupS, ctx.settings.warmupS) : 0,
    idleAfterMs: ctx.settings.idleAfterMs,
  });
  const outcome = await runThroughput(p);
  return {
    iterations,
    scenario: {
      title: 'chain (node → java)',
      description:
        `wrk → bench-front (node:http) → bench-back (JDK HttpServer, 16 threads), each doing ~${us} µs of CPU work per request ` +
        `(SHA-256 rounds over 1 KiB, calibrated at the start of the run; no sleep); nothing pinned`,
      connections,
      wrkThreads: 2,
      durationS: p.durationS,
      warmupS: p.warmupS,
      ...outcome,
    },
  };
}

// ---- startup ----

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const srv = createServer();
    srv.on('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => done(port));
    });
  });
}

/** One GET /hello on a fresh connection: true on a 200 answer, false if refused or anything else. */
function tryHello(port: number): Promise<boolean> {
  return new Promise((done) => {
    const sock = connect({ host: '127.0.0.1', port });
    let got = '';
    const finish = (ok: boolean): void => {
      sock.destroy();
      done(ok);
    };
    sock.setTimeout(5_000, () => finish(false));
    sock.on('error', () => finish(false));
    sock.on('connect', () => sock.write('GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'));
    sock.on('data', (d) => {
      got += d.toString('latin1');
      if (got.includes('\r\n')) finish(got.startsWith('HTTP/1.1 200'));
    });
    sock.on('end', () => finish(got.startsWith('HTTP/1.1 200')));
  });
}

/** ms from spawn to the first 200 answer, polling with a fresh connection every 2 ms. */
async function timeToFirstResponse(app: AppCommand, v: Variant, ctx: BenchContext): Promise<number> {
  const port = await freePort();
  const t0 = performance.now();
  const s = spawnService(app, v, ctx.receiver.httpEndpoint, { port });
  try {
    let exited = false;
    void s.tracked.exited.then(() => (exited = true));
    while (!(await tryHello(port))) {
      if (exited) throw new Error(`${app.service} (${v.id}) exited before answering:\n${s.tracked.stderr().slice(-2000)}`);
      if (performance.now() - t0 > 120_000) throw new Error(`${app.service} (${v.id}) did not answer in 120 s`);
      await sleep(2);
    }
    return performance.now() - t0;
  } finally {
    await s.stop();
    await exitWithin(s.tracked, 1_000);
  }
}

export async function startupScenario(ctx: BenchContext): Promise<StartupScenario> {
  const apps: AppCommand[] = [helloApp(), await javaApp('bench-java', { THREADS: '16' })];
  const out: StartupScenario = {
    description:
      'time from spawn to the first 200 answer to GET /hello, polled by the harness with a new connection every 2 ms; ' +
      'each traced start between two untraced starts; nothing pinned',
    apps: [],
  };
  for (const app of apps) {
    const name = `startup-${app.lang}`;
    let variants = applicable(ctx, name, [app.lang]);
    const times: { variant: string; ms: number; base: number[] }[] = [];
    for (let rep = 0; rep < ctx.settings.startupReps; rep++) {
      let prev = await timeToFirstResponse(app, untraced, ctx);
      times.push({ variant: untraced.id, ms: prev, base: [] });
      for (const v of rotate(variants, rep)) {
        let ms: number;
        try {
          ms = await timeToFirstResponse(app, v, ctx);
        } catch (err) {
          ctx.skipped.push({ scenario: name, variant: v.id, reason: `failed: ${(err as Error).message.split('\n')[0]}` });
          variants = variants.filter((x) => x !== v);
          continue;
        }
        const next = await timeToFirstResponse(app, untraced, ctx);
        times.push({ variant: v.id, ms, base: [prev, next] }, { variant: untraced.id, ms: next, base: [] });
        prev = next;
      }
      log(`${name}: rep ${rep + 1}/${ctx.settings.startupReps} ${times.slice(-2 * variants.length - 1).map((t) => `${t.variant} ${t.ms.toFixed(0)}`).join(', ')}`);
    }
    const untracedMedian = median(times.filter((t) => t.variant === untraced.id).map((t) => t.ms));
    const summaries: StartupSummary[] = [untraced, ...variants].map((v) => {
      const mine = times.filter((t) => t.variant === v.id);
      return {
        variant: v.id,
        ms: stat(mine.map((t) => t.ms)),
        deltaMs: stat(mine.map((t) => t.ms - (t.base.length ? mean(t.base) : untracedMedian))),
      };
    });
    out.apps.push({ app: app.lang === 'node' ? 'node:http hello' : 'JDK HttpServer (java -cp)', variants: summaries });
  }
  return out;
}

// ---- memory ----

/** RSS figures from the hello-unpinned and chain runs (sampled at start, every 250 ms under load, 1 s after). */
export function memoryRows(scenarios: { name: string; runs: RunMeasurement[] }[]): MemoryRow[] {
  const rows: MemoryRow[] = [];
  const mib = (kb: number): number => Math.round((kb / 1024) * 10) / 10;
  for (const { name, runs } of scenarios) {
    const services = [...new Set(runs.flatMap((r) => r.services.map((s) => s.service)))];
    const variants = [...new Set(runs.map((r) => r.variant))];
    for (const service of services) {
      const of = (variant: string) => runs.filter((r) => r.variant === variant).flatMap((r) => r.services.filter((s) => s.service === service));
      const baseLoad = median(of(untraced.id).map((s) => s.appRssKb.load));
      for (const variant of variants) {
        const ms = of(variant);
        if (ms.length === 0) continue;
        const tracer = ms.map((s) => s.tracerRssKb).filter((t): t is NonNullable<typeof t> => t !== null);
        const appLoad = median(ms.map((s) => s.appRssKb.load));
        rows.push({
          scenario: name,
          service,
          variant,
          tracerIdleMiB: tracer.length ? mib(median(tracer.map((t) => t.idle))) : undefined,
          tracerLoadMiB: tracer.length ? mib(median(tracer.map((t) => t.load))) : undefined,
          tracerIdleAfterMiB: tracer.length && tracer.every((t) => t.idleAfter !== undefined) ? mib(median(tracer.map((t) => t.idleAfter as number))) : undefined,
          appLoadMiB: mib(appLoad),
          appDeltaMiB: mib(appLoad - baseLoad),
        });
      }
    }
  }
  return rows;
}

// ---- scaling ----

export async function scalingConnections(ctx: BenchContext, variants: Variant[]): Promise<ScalingScenario> {
  const app = helloApp();
  const points = [];
  for (const c of ctx.settings.scalingConnections) {
    const outcome = await runThroughput(
      plan(ctx, {
        name: `scaling-connections-${c}`,
        deploy: (v) => singleService(app, v, ctx),
        variants: applicable(ctx, `scaling-connections-${c}`, ['node'], variants),
        path: '/',
        connections: c,
        wrkThreads: Math.min(2, c),
        rounds: ctx.settings.scalingRounds,
      }),
    );
    points.push({ x: c, variants: outcome.variants });
  }
  return { description: 'the hello server (node:http, one thread), wrk -c 1 … 1000 (-t ≤ 2), nothing pinned', xLabel: 'connections', points };
}

export async function scalingThreads(ctx: BenchContext, variants: Variant[]): Promise<ScalingScenario> {
  const points = [];
  const connections = 64;
  for (const t of ctx.settings.scalingThreads) {
    const app = await javaApp('bench-java', { THREADS: String(t) });
    const outcome = await runThroughput(
      plan(ctx, {
        name: `scaling-threads-${t}`,
        deploy: (v) => singleService(app, v, ctx),
        variants: applicable(ctx, `scaling-threads-${t}`, ['java'], variants),
        path: '/hello',
        connections,
        wrkThreads: 2,
        warmupS: ctx.settings.warmupS > 0 ? Math.max(2, ctx.settings.warmupS) : 0,
        rounds: ctx.settings.scalingRounds,
      }),
    );
    points.push({ x: t, variants: outcome.variants });
  }
  return {
    description: `JDK HttpServer GET /hello with a fixed pool of 1 … 64 threads (the threads that read and write the sockets), wrk -c ${connections} -t 2, nothing pinned`,
    xLabel: 'app threads',
    points,
  };
}
