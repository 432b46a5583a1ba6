// The native launcher (native/src/launcher/): it starts the program before Node boots, but only
// for command lines rbinder's own parser accepts in fast mode; everything else is Node's as before.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOtlpReceiver, type OtlpReceiver } from '../../e2e/support/otlp-receiver';
import { exitWithin, repoRoot, spawnTracked, waitForStdout } from '../../e2e/support/process';
import { startServer } from '../../e2e/support/programs';
import { parseCommandLine, type TracerConfig } from '../src/config';
import { resolveExecutable } from '../src/spawn';
import { RBINDER, tracerEnv } from './helpers';

const LAUNCHER = join(repoRoot, 'native', 'build', 'Release', 'rbinder-launch');
const notExecutable = join(mkdtempSync(join(tmpdir(), 'rbinder-launch-')), 'plain-file');
writeFileSync(notExecutable, '#!/bin/sh\n', { mode: 0o644 });

type Plan = { launch: true; file: string; command: string[] } | { launch: false; reason: string };

function plan(args: string[], env: Record<string, string> = {}): Plan {
  const base = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  const r = spawnSync(LAUNCHER, ['--plan', ...args], { env: { ...base, ...env }, encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Plan;
}

describe('which command lines the launcher starts itself', () => {
  // [rbinder arguments, environment, whether the launcher may start the program itself]
  const cases: [string[], Record<string, string>, boolean][] = [
    [['--', 'true'], {}, true],
    [['true', '--mode', 'ptrace'], {}, true],
    [['--service-name', 'orders', '--', 'sh', '-c', 'exit 0'], {}, true],
    [['--service-name=orders', 'true'], {}, true],
    [['--service-name', '-x', 'true'], {}, true],
    [['--exporter', 'otlp,console', 'true'], {}, true],
    [['--exporter', ' None ', 'true'], {}, true],
    [['--exporter', 'none,otlp', 'true'], {}, false],
    [['--exporter', 'bogus', '--', 'true'], {}, false],
    [['--exporter', '', 'true'], {}, false],
    [['--endpoint', 'http://collector:4318', 'true'], {}, true],
    [['--endpoint', 'https://otel.observability.svc.cluster.local:4318/base', 'true'], {}, true],
    [['--endpoint', 'http://10.0.0.7:4318', 'true'], {}, true],
    [['--endpoint', 'http://[::1]:4318', 'true'], {}, true],
    [['--endpoint', 'HTTP://Collector:4318', 'true'], {}, true],
    [['--endpoint', 'http://cafe', 'true'], {}, true],
    [['--endpoint', 'http://1.2.3.256', 'true'], {}, false],
    [['--endpoint', 'http://collector:99999', 'true'], {}, false],
    [['--endpoint', 'ftp://collector', 'true'], {}, false],
    [['--endpoint', 'collector:4318', 'true'], {}, false],
    [['--endpoint', 'http://', 'true'], {}, false],
    [['--protocol', 'grpc', 'true'], {}, true],
    [['--protocol', 'GRPC', 'true'], {}, false],
    [['--propagators', 'tracecontext,b3', 'true'], {}, true],
    [['--propagators', 'none', 'true'], {}, true],
    [['--propagators', 'jaeger', 'true'], {}, false],
    [['--inject-to', '10.0.0.0/8,.svc,*', 'true'], {}, true],
    [['--inject-to', 'none', 'true'], {}, true],
    [['--inject-to', '10.0.0.0/99', 'true'], {}, false],
    [['true'], { RBINDER_INJECT_TO: '10.0.0.0/99' }, false],
    [['--flush-timeout', '250', 'true'], {}, true],
    [['--flush-timeout', '-1', 'true'], {}, false],
    [['--flush-timeout', '1.5', 'true'], {}, false],
    [['--log-level', 'debug', 'true'], {}, true],
    [['--log-level', 'loud', 'true'], {}, false],
    [['--mode', 'fast', 'true'], {}, true],
    [['--mode', 'ptrace', 'true'], {}, false],
    [['--mode', 'turbo', 'true'], {}, false],
    [['true'], { RBINDER_MODE: 'ptrace' }, false],
    [['true'], { RBINDER_MODE: ' Fast ' }, true],
    [['true'], { RBINDER_MODE: 'bogus' }, false],
    [['--mode', 'fast', 'true'], { RBINDER_MODE: 'ptrace' }, true],
    [['--export-priority', 'normal', 'true'], {}, true],
    [['--export-priority=idle', 'true'], {}, true],
    [['--export-priority', 'Idle', 'true'], {}, false],
    [['--export-priority', 'high', 'true'], {}, false],
    [['true'], { RBINDER_LAUNCHER: '0' }, false],
    [['true'], { RBINDER_FORCE_PROC_NET: '1' }, false],
    [['--command-by-arch', '--', 'x'], {}, false],
    [['--help'], {}, false],
    [['-h'], {}, false],
    [['--version'], {}, false],
    [['--unknown', 'true'], {}, false],
    [['--mode'], {}, false],
    [[], {}, false],
    [['--'], {}, false],
    [['', 'x'], {}, false],
    [['no-such-program-xyz'], {}, false],
    [[notExecutable], {}, false],
    [['/'], {}, false],
  ];

  it.each(cases)('%j %j → %s', (args, env, expected) => {
    const decided = plan(args, env);
    expect(decided.launch, JSON.stringify(decided)).toBe(expected);
    if (!decided.launch) return;
    // What the launcher starts, rbinder's own parser accepts, in fast mode, with the same program.
    const fullEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env };
    const parsed = parseCommandLine(args, fullEnv) as TracerConfig;
    expect(parsed.mode).toBe('fast');
    expect(parsed.command).toEqual(decided.command);
    const resolved = resolveExecutable(parsed.command[0], fullEnv);
    expect(resolved).toEqual({ file: expect.stringMatching(/./) });
    expect(readFileSync((resolved as { file: string }).file)).toEqual(readFileSync(decided.file));
  });

  it('never starts a program for a command line the parser rejects', () => {
    // Values near the edges of what each check accepts: the launcher may refuse what the parser
    // takes, never the other way round.
    const values: [string, string[]][] = [
      ['--exporter', ['otlp', 'OTLP', 'otlp,', ',', 'otlp,,console', 'none,none', 'console;otlp']],
      ['--endpoint', ['http://a', 'http://a.b-c.d:1', 'http://0x7f.1', 'http://999', 'http://[fe80::1]', 'http://[::g]', 'http://a b', 'https://u@h', 'http://h:', 'http://h:0', 'http://-h']],
      ['--propagators', ['b3multi', 'B3,tracecontext', 'baggage,none', ' , b3']],
      ['--inject-to', ['*', '.internal', 'svc-a:8080', 'fd00::/8', '10.1.2.3', '1.2.3.4/x', '::1/129']],
      ['--flush-timeout', ['0', ' 12 ', '99999999999999999', '1e3', '']],
    ];
    for (const [option, list] of values) {
      for (const value of list) {
        const args = [option, value, '--', 'true'];
        const decided = plan(args);
        let accepted = true;
        try {
          parseCommandLine(args, { PATH: process.env.PATH });
        } catch {
          accepted = false;
        }
        if (decided.launch) expect(accepted, `${option} ${JSON.stringify(value)}`).toBe(true);
      }
    }
  });
});

describe('a launched program', () => {
  let receiver: OtlpReceiver;
  beforeAll(async () => {
    receiver = await startOtlpReceiver();
  });
  afterAll(async () => {
    await receiver?.stop();
  });

  it("is started by the launcher, as rbinder's own child", async () => {
    const t = spawnTracked([RBINDER, '--exporter', 'none', '--', 'sh', '-c', 'echo PARENT $PPID'], {
      env: { ...process.env, RBINDER_MODE: 'fast', RBINDER_ENGINE_DEBUG: '1' },
    });
    await waitForStdout(t, /PARENT \d+\n/, 20_000, 'sh');
    expect(Number(/PARENT (\d+)/.exec(t.stdout())![1])).toBe(t.proc.pid);
    const exit = await exitWithin(t, 20_000);
    expect(exit?.code).toBe(0);
    expect(t.stderr()).toMatch(/rbinder-launch: started \d+, set up for the fast path/);
    expect(t.stderr()).toMatch(/rbinder-launch: Node boots now: (the program ended|the program is idle)/);
  });

  it('makes Node boot at once when it needs the engine: its outbound request waits, then is traced', async () => {
    const seen: string[] = [];
    const server = createServer((req, res) => {
      seen.push(String(req.headers.traceparent ?? ''));
      res.end('ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const t = spawnTracked([RBINDER, '--service-name', 'launched-client', '--', 'curl', '-sS', `http://127.0.0.1:${port}/first`], {
        env: { ...process.env, ...tracerEnv(receiver), RBINDER_MODE: 'fast', RBINDER_ENGINE_DEBUG: '1' },
      });
      const exit = await exitWithin(t, 30_000);
      expect(exit?.code, t.stderr()).toBe(0);
      expect(t.stdout()).toBe('ok');
      expect(t.stderr()).toMatch(/rbinder-launch: Node boots now: an upcall is waiting/);
      expect(seen[0]).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      const spans = await receiver.waitFor((all) => all.some((s) => s.resource['service.name'] === 'launched-client'), 20_000);
      const span = spans.find((s) => s.resource['service.name'] === 'launched-client')!;
      expect(seen[0]).toContain(span.spanId);
      expect(span.attributes).toMatchObject({ 'url.path': '/first', 'http.response.status_code': 200 });
    } finally {
      server.close();
    }
  });

  it('gets SIGTERM when rbinder dies before it can pass signals on', async () => {
    // Not spawnTracked: it kills the whole process group once rbinder has exited.
    const script = `echo PID $$; exec python3 ${join(__dirname, 'programs', 'signals.py')}`;
    const proc = spawn(RBINDER, ['--exporter', 'none', '--', 'sh', '-c', script], {
      env: { ...process.env, RBINDER_MODE: 'fast' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    proc.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
    const ready = new Promise<void>((resolve) =>
      proc.stdout!.setEncoding('utf8').on('data', (s: string) => {
        out += s;
        if (out.includes('READY')) resolve();
      }),
    );
    // The program shares rbinder's stdout: the pipe closes when the program has exited too.
    const closed = new Promise<void>((resolve) => proc.stdout!.on('close', () => resolve()));
    try {
      await ready;
      proc.kill('SIGKILL');
      await closed;
      expect(out, err).toContain('GOT SIGTERM');
    } finally {
      const pid = /PID (\d+)/.exec(out)?.[1];
      if (pid) spawnSync('kill', ['-KILL', pid]);
    }
  });

  it('is traced the same when Node starts it instead (RBINDER_LAUNCHER=0)', async () => {
    const server = await startServer('python', {
      wrap: [RBINDER, '--service-name', 'not-launched', '--mode', 'fast', '--'],
      env: { ...tracerEnv(receiver), RBINDER_LAUNCHER: '0', RBINDER_ENGINE_DEBUG: '1' },
    });
    try {
      expect(server.stderr()).toContain('rbinder-launch: left to Node: RBINDER_LAUNCHER=0');
      await (await fetch(`${server.url}/hello?by=node`)).text();
      const spans = await receiver.waitFor((all) => all.some((s) => s.resource['service.name'] === 'not-launched'), 20_000);
      const span = spans.find((s) => s.resource['service.name'] === 'not-launched')!;
      expect(span.resource['rbinder.tracer.mode']).toBe('fast');
      expect(span.attributes).toMatchObject({ 'url.query': 'by=node', 'http.response.status_code': 200 });
    } finally {
      await server.stop();
    }
  });
});

describe("the tracer's own Node", () => {
  const dir = mkdtempSync(join(tmpdir(), 'rbinder-node-options-'));
  const preload = join(dir, 'preload.js');
  writeFileSync(preload, 'process.stderr.write(`PRELOADED BY ${process.argv[1] ?? "-e"}\\n`);\n');
  const program = 'console.log(`NODE_OPTIONS=${process.env.NODE_OPTIONS} KEPT=${process.env.RBINDER_PROGRAM_NODE_OPTIONS ?? "-"}`)';

  it.each([['launched', {}], ['started by Node', { RBINDER_LAUNCHER: '0' }]])(
    "runs without the program's NODE_OPTIONS, which the program still gets (%s)",
    async (_how, env) => {
      const t = spawnTracked([RBINDER, '--exporter', 'none', '--', 'node', '-e', program], {
        env: { ...process.env, ...env, RBINDER_MODE: 'fast', NODE_OPTIONS: `--require ${preload}` },
      });
      const exit = await exitWithin(t, 30_000);
      expect(exit?.code, t.stderr()).toBe(0);
      expect(t.stdout()).toBe(`NODE_OPTIONS=--require ${preload} KEPT=-\n`);
      // The program's preload ran once, in the program; never in rbinder.js.
      expect(t.stderr().match(/PRELOADED BY .*/g)).toEqual(['PRELOADED BY -e']);
    },
  );

  // The tracer's command line, read by the program from /proc once the launcher has become Node.
  const readParent =
    'for i in $(seq 200); do c=$(tr "\\0" " " < /proc/$PPID/cmdline); case "$c" in *rbinder.js*) echo "CMD $c"; exit 0;; esac; sleep 0.05; done; echo TIMEOUT';

  it.each([
    [{}, /^CMD \S*node --max-semi-space-size=4 --heap-growing-percent=25 --single-threaded --no-memory-reducer \S*rbinder\.js /],
    [{ RBINDER_NODE_FLAGS: ' --max-old-space-size=300 ' }, /^CMD \S*node --max-old-space-size=300 \S*rbinder\.js /],
    [{ RBINDER_NODE_FLAGS: '' }, /^CMD \S*node \S*rbinder\.js /],
  ])('gets its V8 flags from RBINDER_NODE_FLAGS or the defaults (%j)', async (env, expected) => {
    const t = spawnTracked([RBINDER, '--exporter', 'none', '--', 'sh', '-c', readParent], {
      env: { ...process.env, ...env, RBINDER_MODE: 'fast' },
    });
    const exit = await exitWithin(t, 30_000);
    expect(exit?.code, t.stderr()).toBe(0);
    expect(t.stdout()).toMatch(expected);
  });
});
