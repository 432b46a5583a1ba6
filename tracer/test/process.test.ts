// Process semantics: under rbinder a program starts, runs and ends as it would without it.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOtlpReceiver, type OtlpReceiver } from '../../e2e/support/otlp-receiver';
import { exitWithin, spawnTracked, waitForSignalHandlers, waitForStdout } from '../../e2e/support/process';
import { fixturesDir, startServer } from '../../e2e/support/programs';
import { RBINDER, tracerEnv } from './helpers';

const programs = join(__dirname, 'programs');
const quiet = { OTEL_TRACES_EXPORTER: 'none', OTEL_METRICS_EXPORTER: 'none' };

function run(argv: string[], opts: { input?: string; env?: Record<string, string> } = {}) {
  const r = spawnSync(argv[0], argv.slice(1), {
    input: opts.input ?? '',
    env: { ...process.env, ...opts.env },
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

let receiver: OtlpReceiver;
beforeAll(async () => {
  receiver = await startOtlpReceiver();
});
afterAll(async () => {
  await receiver?.stop();
});

describe('exit status', () => {
  it("is the program's exit code", () => {
    expect(run([RBINDER, '--', 'sh', '-c', 'exit 7'], { env: quiet }).code).toBe(7);
    expect(run([RBINDER, 'sh', '-c', 'exit 0'], { env: quiet }).code).toBe(0);
  });

  it('is 128+N when the program is killed by signal N', () => {
    expect(run([RBINDER, '--', 'sh', '-c', 'kill -KILL $$'], { env: quiet }).code).toBe(137);
    expect(run([RBINDER, '--', 'sh', '-c', 'kill -SEGV $$'], { env: quiet }).code).toBe(139);
  });

  it('is 127 with a message naming a missing program, 126 for one that cannot be executed', () => {
    const missing = run([RBINDER, '--', 'no-such-program-xyz', 'arg'], { env: quiet });
    expect(missing.code).toBe(127);
    expect(missing.stderr).toContain('no-such-program-xyz');
    const dir = mkdtempSync(join(tmpdir(), 'rbinder-exec-'));
    const file = join(dir, 'not-executable');
    writeFileSync(file, '#!/bin/sh\necho hi\n');
    chmodSync(file, 0o644);
    const denied = run([RBINDER, '--', file], { env: quiet });
    expect(denied.code).toBe(126);
    expect(denied.stderr).toContain(file);
    const garbage = join(dir, 'garbage');
    writeFileSync(garbage, Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 0, 0]));
    chmodSync(garbage, 0o755);
    const badFormat = run([RBINDER, '--', garbage], { env: quiet });
    expect(badFormat.code).toBe(126);
    expect(badFormat.stderr).toContain(garbage);
  });

  it('is 2 with a usage line for a bad command line', () => {
    const r = run([RBINDER, '--exporter', 'bogus', '--', 'true'], { env: quiet });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/usage: rbinder/);
    expect(run([RBINDER], { env: quiet }).code).toBe(2);
  });
});

describe('what the program sees', () => {
  it('the same argv, environment, stdin, descriptors and signal state as without rbinder', () => {
    const argv = ['python3', join(programs, 'describe_self.py'), 'a b', '--flag', ''];
    const env = { ...quiet, SOME_SETTING: 'x=y z', EXIT_WITH: '5' };
    const plain = run(argv, { input: 'line one\nline two\n', env });
    const traced = run([RBINDER, ...argv], { input: 'line one\nline two\n', env });
    expect(plain.code).toBe(5);
    expect(traced.code).toBe(5);
    expect(traced.stdout).toBe(plain.stdout);
    expect(traced.stdout).toContain('ENV SOME_SETTING x=y z');
    expect(traced.stdout).toContain('STDIN line one\nline two\n');
  });

  it('options after the program name belong to the program', () => {
    const r = run([RBINDER, 'python3', join(programs, 'describe_self.py'), '--service-name', 'x', '-v'], { env: quiet });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("ARGV ['--service-name', 'x', '-v']");
  });
});

describe('signals', () => {
  it('forwards SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH and SIGTERM to the program', async () => {
    const t = spawnTracked([RBINDER, '--', 'python3', join(programs, 'signals.py')], { env: { ...process.env, ...quiet } });
    await waitForStdout(t, /READY/, 30_000, 'signals.py');
    // The launcher may start the program before Node boots: signals are forwarded once Node has
    // its handlers (a signal sent before that ends rbinder; the program then gets SIGTERM).
    await waitForSignalHandlers(t, ['SIGHUP', 'SIGINT', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH', 'SIGTERM'], 30_000);
    const pid = t.proc.pid!;
    for (const sig of ['SIGHUP', 'SIGINT', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'] as const) {
      process.kill(pid, sig);
      await waitForStdout(t, new RegExp(`GOT ${sig}`), 10_000, sig);
    }
    process.kill(pid, 'SIGTERM');
    const exit = await exitWithin(t, 20_000);
    expect(t.stdout()).toContain('GOT SIGTERM');
    expect(exit?.code).toBe(0);
  });
});

describe('process trees', () => {
  it('follows a pre-forking server whose workers serve on threads: spans from both workers', async () => {
    const server = await startServer('python-forking', {
      wrap: [RBINDER, '--'],
      env: { ...tracerEnv(receiver), OTEL_SERVICE_NAME: 'forking' },
    });
    const workers = new Set<string>();
    try {
      for (let i = 0; i < 40 && workers.size < 2; i++) {
        const res = await fetch(`${server.url}/hello`, { headers: { connection: 'close' } });
        await res.text();
        workers.add(res.headers.get('x-worker-pid') ?? '');
      }
      expect(workers.size).toBe(2);
      const spans = await receiver.waitFor(
        (all) => new Set(all.filter((s) => s.resource['service.name'] === 'forking').map((s) => s.resource['process.pid'])).size >= 2,
        20_000,
      );
      const pids = new Set(spans.filter((s) => s.resource['service.name'] === 'forking').map((s) => String(s.resource['process.pid'])));
      expect(pids).toEqual(workers);
    } finally {
      const exit = await server.stop();
      expect(exit.code).toBe(0);
    }
  });

  it('follows a shell that execs the server: the resource describes the new image', async () => {
    const script = join(fixturesDir, 'python', 'server.py');
    const t = spawnTracked([RBINDER, '--', 'sh', '-c', `exec python3 ${script} 0`], {
      env: { ...process.env, ...tracerEnv(receiver) },
    });
    try {
      const port = Number((await waitForStdout(t, /LISTENING (\d+)/, 30_000, 'sh -c exec python3'))[1]);
      await (await fetch(`http://127.0.0.1:${port}/hello`)).text();
      // The service name defaults to the program rbinder was given (sh); the process is python.
      const spans = await receiver.waitFor((all) => all.some((s) => s.resource['service.name'] === 'sh'), 20_000);
      const span = spans.find((s) => s.resource['service.name'] === 'sh')!;
      expect(String(span.resource['process.executable.name'])).toMatch(/^python3/);
      expect(span.resource['process.command_args']).toContain(script);
    } finally {
      t.proc.kill('SIGTERM');
      await exitWithin(t, 10_000);
    }
  });
});

describe('child processes', () => {
  it('keeps tracing a server after it starts children with vfork (posix_spawn, subprocess): every request a span of its own process', async () => {
    const t = spawnTracked([RBINDER, '--', 'python3', join(programs, 'spawning_server.py'), '0'], {
      env: { ...process.env, ...tracerEnv(receiver), OTEL_SERVICE_NAME: 'spawning' },
    });
    try {
      const port = Number((await waitForStdout(t, /LISTENING (\d+)/, 30_000, 'spawning_server.py'))[1]);
      const paths = [...Array(5).fill('/hello'), '/spawn', ...Array(5).fill('/hello'), '/spawn', ...Array(5).fill('/hello')];
      for (const path of paths) {
        const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { connection: 'close' } });
        expect(await res.text()).toBe('hello\n');
      }
      const mine = (all: Awaited<ReturnType<OtlpReceiver['waitFor']>>) =>
        all.filter((s) => s.resource['service.name'] === 'spawning' && s.kind === 2);
      const spans = mine(await receiver.waitFor((all) => mine(all).length >= paths.length, 20_000));
      expect(spans.map((s) => s.attributes['url.path']).sort()).toEqual([...paths].sort());
      // All from the server: none lost to, or attributed to, the children's images.
      expect(new Set(spans.map((s) => s.resource['process.executable.name'])).size).toBe(1);
      expect(new Set(spans.map((s) => s.resource['process.pid'])).size).toBe(1);
    } finally {
      t.proc.kill('SIGTERM');
      await exitWithin(t, 10_000);
    }
  });
});

describe('as PID 1', () => {
  it('reaps orphans of the traced program (in a new PID namespace)', () => {
    const script = '(sleep 0.2 &); sleep 0.8; echo "pid1=$(cat /proc/1/comm)"; ' +
      'echo "zombies=$(cat /proc/[0-9]*/stat 2>/dev/null | awk \'$3 == "Z"\' | wc -l)"; exit 4';
    const r = run(['unshare', '--fork', '--pid', '--mount-proc', RBINDER, '--', 'sh', '-c', script], { env: quiet });
    expect(r.stdout, r.stderr).toContain('pid1=node');
    expect(r.stdout).toContain('zombies=0');
    expect(r.code).toBe(4);
  });
});

describe('exit with telemetry pending', () => {
  it('flushes within the flush timeout even when the collector never answers', async () => {
    // A collector that accepts connections and never replies.
    const sockets: net.Socket[] = [];
    const blackHole = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => blackHole.listen(0, '127.0.0.1', r));
    const port = (blackHole.address() as net.AddressInfo).port;
    const backend = await startServer('node');
    try {
      const started = Date.now();
      const t = spawnTracked(
        [RBINDER, '--flush-timeout', '1500', '--', 'curl', '-s', '-o', '/dev/null', `${backend.url}/hello`],
        { env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, OTEL_METRICS_EXPORTER: 'none' } },
      );
      const exit = await exitWithin(t, 20_000);
      expect(exit?.code).toBe(0);
      expect(Date.now() - started).toBeLessThan(8_000);
    } finally {
      for (const s of sockets) s.destroy();
      blackHole.close();
      await backend.stop();
    }
  });
});

describe('descriptor bookkeeping', () => {
  it('follows connections through fcntl(F_DUPFD), dup2, dup and close_range', async () => {
    const t = spawnTracked([RBINDER, '--service-name', 'fd-juggling', '--', 'python3', join(programs, 'fd_juggling.py')], {
      env: { ...process.env, ...tracerEnv(receiver) },
    });
    try {
      const port = Number((await waitForStdout(t, /LISTENING (\d+)/, 30_000, 'fd_juggling.py'))[1]);
      for (const path of ['/dupfd', '/dup2', '/dup']) {
        const res = await fetch(`http://127.0.0.1:${port}${path}`);
        expect(await res.text()).toBe('ok\n');
      }
      // The fourth connection is closed by close_range without a response.
      await fetch(`http://127.0.0.1:${port}/closed`).then(
        (r) => r.text(),
        () => undefined,
      );
      const spans = await receiver.waitFor(
        (all) => all.filter((s) => s.resource['service.name'] === 'fd-juggling').length >= 4,
        20_000,
      );
      const mine = spans.filter((s) => s.resource['service.name'] === 'fd-juggling');
      for (const path of ['/dupfd', '/dup2', '/dup']) {
        expect(mine.find((s) => s.attributes['url.path'] === path)?.attributes['http.response.status_code']).toBe(200);
      }
      const closed = mine.find((s) => s.attributes['url.path'] === '/closed');
      expect(closed?.status.code).toBe(2);
      expect(closed?.attributes['error.type']).toBe('connection closed');
      expect((await exitWithin(t, 10_000))?.code).toBe(0);
    } finally {
      t.proc.kill('SIGKILL');
    }
  });
});

describe('export priority', () => {
  /** Scheduling policy (field 41 of /proc/PID/task/TID/stat) of each thread of the tracer, by name. */
  function policies(pid: number): { name: string; policy: number }[] {
    return readdirSync(`/proc/${pid}/task`).map((tid) => {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from the 3rd on
      return { name: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(), policy: Number(fields[41 - 3]) };
    });
  }
  const SCHED_OTHER = 0;
  const SCHED_IDLE = 5;

  async function threadsOnceRunning(pid: number, settled: (t: { name: string; policy: number }[]) => boolean) {
    let threads = policies(pid);
    for (let i = 0; i < 100 && !settled(threads); i++) {
      await new Promise((r) => setTimeout(r, 50));
      threads = policies(pid);
    }
    return threads;
  }

  it('is idle by default: every tracer thread but the engine and its timer runs SCHED_IDLE, and spans still arrive', async () => {
    const server = await startServer('node', { wrap: [RBINDER, '--service-name', 'idle-export', '--'], env: tracerEnv(receiver) });
    try {
      const pid = server.proc.pid!;
      const isEngine = (t: { name: string }) => t.name === 'rbinder-engine' || t.name === 'rbinder-timer';
      // The timer thread lowers the others when it starts: wait (5 s at most) until it has.
      const threads = await threadsOnceRunning(pid, (ts) => ts.some(isEngine) && ts.every((t) => isEngine(t) || t.policy === SCHED_IDLE));
      const engine = threads.filter(isEngine);
      expect(engine.map((t) => t.name).sort()).toEqual(['rbinder-engine', 'rbinder-timer']);
      expect(engine.every((t) => t.policy === SCHED_OTHER), JSON.stringify(threads)).toBe(true);
      const others = threads.filter((t) => !engine.includes(t));
      expect(others.length).toBeGreaterThan(1); // the JS thread and libuv's
      expect(others.every((t) => t.policy === SCHED_IDLE), JSON.stringify(threads)).toBe(true);
      await (await fetch(`${server.url}/hello?priority=idle`)).text();
      const spans = await receiver.waitFor((all) => all.some((s) => s.attributes['url.query'] === 'priority=idle'), 20_000);
      expect(spans.find((s) => s.attributes['url.query'] === 'priority=idle')!.resource['service.name']).toBe('idle-export');
    } finally {
      await server.stop();
    }
  });

  it('--export-priority normal leaves every thread at normal priority', async () => {
    const server = await startServer('node', { wrap: [RBINDER, '--export-priority', 'normal', '--'], env: { ...quiet } });
    try {
      const pid = server.proc.pid!;
      const threads = await threadsOnceRunning(pid, (ts) => ts.some((t) => t.name === 'rbinder-timer'));
      await new Promise((r) => setTimeout(r, 300)); // when idle, the timer thread lowers the others at its start
      expect(policies(pid).every((t) => t.policy === SCHED_OTHER), JSON.stringify(threads)).toBe(true);
    } finally {
      await server.stop();
    }
  });
});

describe('load shedding', () => {
  it('stops sampling new traces while span export is behind, and samples again once it caught up', async () => {
    // A collector that holds every export request until released: the span queue fills behind it.
    const held: http.ServerResponse[] = [];
    let holding = true;
    const answer = (res: http.ServerResponse) => res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    const collector = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => (holding ? held.push(res) : answer(res)));
    });
    // The program's peer: records the sampled flag of each request's traceparent.
    const flags: string[] = [];
    let stop = false;
    const peer = http.createServer((req, res) => {
      flags.push(/-(0[01])$/.exec(String(req.headers.traceparent ?? ''))?.[1] ?? 'none');
      res.end(stop ? 'stop' : 'go');
    });
    const listen = (s: http.Server) =>
      new Promise<number>((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as net.AddressInfo).port)));
    const [collectorPort, peerPort] = [await listen(collector), await listen(peer)];
    // One outbound request every 20 ms, each the root of its own trace, until the peer says stop.
    const client = `const http = require('node:http');
      const once = () => http.get('http://127.0.0.1:${peerPort}/', (res) => {
        let body = ''; res.on('data', (c) => (body += c));
        res.on('end', () => { if (body !== 'stop') setTimeout(once, 20); });
      });
      once();`;
    const t = spawnTracked([RBINDER, '--service-name', 'shedding', '--', 'node', '-e', client], {
      env: {
        ...process.env,
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collectorPort}`,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
        OTEL_EXPORTER_OTLP_TIMEOUT: '60000',
        OTEL_METRICS_EXPORTER: 'none',
        OTEL_BSP_MAX_QUEUE_SIZE: '8',
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '4',
        OTEL_BSP_SCHEDULE_DELAY: '50',
        RBINDER_LOG_LEVEL: 'debug',
      },
    });
    const until = async (what: string, done: () => boolean) => {
      for (let i = 0; i < 400 && !done(); i++) await new Promise((r) => setTimeout(r, 50));
      expect(done(), `${what}: ${flags.join(' ')}\n${t.stderr()}`).toBe(true);
    };
    try {
      // Sampled at first; once four spans wait behind the held export, new traces are not sampled.
      await until('sampled, then shed', () => /01( 01)*( 00){5}/.test(flags.join(' ')));
      const shedFrom = flags.indexOf('00');
      expect(flags.slice(0, shedFrom).every((f) => f === '01')).toBe(true);
      expect(held.length).toBeGreaterThan(0);
      holding = false;
      for (const res of held.splice(0)) answer(res);
      // Export catches up: new traces are sampled again.
      await until('sampled again', () => flags.slice(shedFrom).includes('01'));
      stop = true;
      const exit = await exitWithin(t, 30_000);
      expect(exit?.code, t.stderr()).toBe(0);
      const log = t.stderr();
      expect(log).toContain('span export is behind: traces that start here are not sampled until it catches up (load shedding)');
      expect(log).toContain('span export caught up');
      const end = /"tracesShed":(\d+)/.exec(log);
      expect(Number(end?.[1])).toBeGreaterThanOrEqual(5);
    } finally {
      collector.closeAllConnections();
      collector.close();
      peer.close();
    }
  });
});
