// Patched call sites (docs/fast-path.md, "Patched call sites"): real programs whose socket
// syscalls go from trapping to direct calls into the stub while they serve. Every byte and every
// span must be as without patching; in fast mode the calls must really go direct.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOtlpReceiver, type OtlpReceiver } from '../../e2e/support/otlp-receiver';
import { ensureGoBinary } from '../../e2e/support/build';
import { exitWithin, spawnTracked, waitForEngine } from '../../e2e/support/process';
import { parseResponses, runClient, startServer, type ServerKind } from '../../e2e/support/programs';
import { countersAtExit, RBINDER, tracerEnv } from './helpers';

const programs = join(__dirname, 'programs');
const fast = process.env.RBINDER_MODE !== 'ptrace';
const REQUESTS = 40;

let receiver: OtlpReceiver;
beforeAll(async () => {
  receiver = await startOtlpReceiver();
});
afterAll(async () => {
  await receiver?.stop();
});

/**
 * Starts a `kind` server under rbinder as `service`, serves two batches of REQUESTS GETs (the
 * first ones are served before the verdicts arrive, the second batch after), checks every
 * response and that every request became a SERVER span; returns the engine's counters at exit.
 */
async function serveTwice(kind: ServerKind, service: string, extraEnv: Record<string, string> = {}) {
  const env = { ...tracerEnv(receiver), OTEL_SERVICE_NAME: service, RBINDER_LOG_LEVEL: 'debug', ...extraEnv };
  const server = await startServer(kind, { wrap: [RBINDER, '--'], env });
  await waitForEngine(server.proc.pid, 30_000);
  let stderr = '';
  try {
    for (let batch = 0; batch < 2; batch++) {
      const run = await runClient('node', [`${server.url}/hello`, 'GET', '--count', String(REQUESTS)], { timeoutMs: 60_000 });
      expect(run.code, run.stderr).toBe(0);
      const responses = parseResponses(run.stdout);
      expect(responses).toHaveLength(REQUESTS);
      expect(new Set(responses.map((r) => `${r.status} ${r.length} ${r.sha256}`)).size).toBe(1);
      expect(responses[0]?.status).toBe(200);
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
  } finally {
    expect((await server.stop()).code).toBe(0);
    stderr = server.stderr();
  }
  const served = (all: Awaited<ReturnType<OtlpReceiver['waitFor']>>) =>
    all.filter((s) => s.resource['service.name'] === service && s.kind === 2);
  expect(served(await receiver.waitFor((all) => served(all).length >= 2 * REQUESTS))).toHaveLength(2 * REQUESTS);
  return countersAtExit(stderr);
}

/** Runs `argv` (a program printing "OK <messages>") under rbinder without export; returns the
 * message count and, in fast mode, the engine's counters at exit. */
async function runCounted(argv: string[]) {
  const t = spawnTracked([RBINDER, '--exporter', 'none', '--', ...argv], { env: { ...process.env, RBINDER_LOG_LEVEL: 'debug' } });
  const result = await exitWithin(t, 120_000);
  expect(result?.code, t.stdout() + t.stderr()).toBe(0);
  const messages = Number(/^OK (\d+)$/m.exec(t.stdout())?.[1]);
  expect(messages).toBeGreaterThan(1000);
  return { messages, counters: fast ? countersAtExit(t.stderr()) : undefined };
}

describe('patched call sites', () => {
  // Go: its Syscall6 is patched (the stub runs on the thread's signal stack, not the goroutine's).
  for (const kind of ['node', 'python', 'java', 'go'] as const) {
    for (const patch of [true, false]) {
      it(`${kind} server${patch ? '' : ', RBINDER_PATCH_CALL_SITES=0'}: every request answered and traced; ${patch ? 'in fast mode its socket calls go direct' : 'no call goes direct'}`, async () => {
        const counters = await serveTwice(kind, `sites-${kind}-${patch ? 'patched' : 'trapped'}`, patch ? {} : { RBINDER_PATCH_CALL_SITES: '0' });
        if (fast && patch) {
          expect(counters.callSitesApproved, JSON.stringify(counters)).toBeGreaterThan(0);
          // The second batch at least: its reads and writes go direct, more than one per request.
          expect(counters.fastPathDirect, JSON.stringify(counters)).toBeGreaterThan(REQUESTS);
        } else {
          expect(counters.fastPathDirect ?? 0).toBe(0);
          expect(counters.callSitesApproved ?? 0).toBe(0);
        }
      });
    }
  }

  it('Go, stripped: 16 goroutines move every byte intact through its patched Syscall6 while preemption and profiling signals land and children are spawned with vfork (3 s)', async () => {
    const storm = await ensureGoBinary(join(programs, 'go_storm'), 'go-storm', { stripped: true });
    expect(execFileSync('readelf', ['-S', '-W', storm], { encoding: 'utf8' })).not.toMatch(/\.symtab/); // no symbols to go by
    const { messages, counters } = await runCounted([storm, '16', '3']);
    if (counters) {
      // Four socket or pipe calls per message, all through one site (Syscall6).
      expect(counters.callSitesApproved, JSON.stringify(counters)).toBeGreaterThan(0);
      expect(counters.fastPathDirect, JSON.stringify(counters)).toBeGreaterThan(2 * messages);
    }
  });

  it('8 threads and a fork child move every byte intact while their call sites are patched (3 s of socket and pipe calls)', async () => {
    const { messages, counters } = await runCounted(['python3', join(programs, 'socket_storm.py'), '8', '3']);
    if (counters) {
      // Four socket or pipe calls per message; the sites are patched within about a second (the
      // launcher lets rbinder's Node boot once the program pauses, after 1 s at the latest).
      expect(counters.callSitesApproved, JSON.stringify(counters)).toBeGreaterThan(0);
      expect(counters.fastPathDirect, JSON.stringify(counters)).toBeGreaterThan(messages);
    }
  });

  // The same C program built against glibc and musl (musl-gcc, apt musl-tools): glibc's wrappers
  // are patched; musl's libc.so is stripped, so no symbol vouches for its syscall sites, and they
  // keep trapping. Every message must arrive intact either way.
  for (const libc of ['glibc', 'musl'] as const) {
    it(`a C program on ${libc}: every message intact; ${libc === 'glibc' ? 'its read and write go direct' : 'its syscalls keep trapping'}`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'rbinder-pingpong-'));
      const bin = join(dir, `pingpong-${libc}`);
      execFileSync(libc === 'glibc' ? 'gcc' : 'musl-gcc', ['-O2', '-pthread', join(programs, 'pingpong.c'), '-o', bin]);
      const { messages, counters } = await runCounted([bin, '3']);
      if (counters) {
        if (libc === 'glibc') {
          expect(counters.fastPathDirect, JSON.stringify(counters)).toBeGreaterThan(messages);
        } else {
          expect(counters.callSitesApproved ?? 0, JSON.stringify(counters)).toBe(0);
          expect(counters.fastPathDirect ?? 0).toBe(0);
        }
      }
    });
  }
});
