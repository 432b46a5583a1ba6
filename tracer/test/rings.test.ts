// The fast path's rings and the engine's timer that drains them (docs/fast-path.md, "Draining"):
// the timer sleeps until a stub rings its ring's doorbell (an eighth of the ring filled), spans
// are due to JS, or 250 ms pass, instead of polling. An idle tracer must barely wake, and a burst
// that arrives while it sleeps must still find room in the ring. Fast mode only; needs
// futex_waitv (Linux 5.16+), as the test machines have.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOtlpReceiver, type OtlpReceiver } from '../../e2e/support/otlp-receiver';
import { exitWithin, spawnTracked, waitForEngine } from '../../e2e/support/process';
import { countersAtExit, RBINDER, tracerEnv } from './helpers';

const fast = process.env.RBINDER_MODE !== 'ptrace';
/** RB_RING_SLOTS (native/src/stub/abi.h): a ring's size in events of up to 512 bytes. */
const RING_SLOTS = 8192;

/** The timer thread's voluntary context switches so far: one per wake-up from a sleep or wait. */
function timerWakes(pid: number): number {
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    if (readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() !== 'rbinder-timer') continue;
    return Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))![1]);
  }
  throw new Error('no rbinder-timer thread');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!fast)('the rings\' timer', () => {
  it('barely wakes while the program is idle (a polling timer woke every 10-20 ms)', async () => {
    const t = spawnTracked([RBINDER, '--exporter', 'none', '--', 'sleep', '5'], { env: { ...process.env } });
    try {
      await waitForEngine(t.proc.pid, 30_000);
      await sleep(1000);
      const before = timerWakes(t.proc.pid!);
      await sleep(2000);
      const wakes = timerWakes(t.proc.pid!) - before;
      // 250 ms timeouts: 8 in 2 s; polling at 20 ms would be 100.
      expect(wakes).toBeLessThanOrEqual(20);
    } finally {
      t.proc.kill('SIGTERM');
      await exitWithin(t, 30_000);
    }
  });

  it('wakes for a burst that starts while it sleeps: the ring does not fill', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rbinder-rings-'));
    const bin = join(dir, 'http_burst');
    execFileSync('gcc', ['-O2', '-pthread', join(__dirname, 'programs', 'http_burst.c'), '-o', bin]);
    // 1.5 s idle (the timer waits on the doorbells), then 3 s of HTTP requests at full speed.
    const t = spawnTracked([RBINDER, '--exporter', 'none', '--', bin, '3', '1.5'], { env: { ...process.env, RBINDER_LOG_LEVEL: 'debug' } });
    const result = await exitWithin(t, 60_000);
    expect(result?.code, t.stdout() + t.stderr()).toBe(0);
    expect(t.stdout()).toMatch(/^OK \d+$/m);
    const counters = countersAtExit(t.stderr());
    // The burst put many rings' worth of events through (~60k events a second here, a ring's
    // worth in ~140 ms, within one 250 ms timeout), and none was lost on a quiet machine. With
    // the stub's doorbell disabled, 81k of 179k events were lost. On a machine busy with more
    // than the test the timer sometimes falls behind: 1,160 of 141k lost once with the native
    // tests' fuzzer and the suite beside it, 5,029 of 173k (2.9%) once in a fresh-clone CI run
    // (the suite runs two files at a time on 2 cores). Whether the timer was woken late or was
    // short of CPU to drain ~57k events a second is not known yet.
    expect(counters.fastPathEvents, JSON.stringify(counters)).toBeGreaterThan(8 * RING_SLOTS);
    expect(counters.fastPathDropped ?? 0, JSON.stringify(counters)).toBeLessThan(counters.fastPathEvents! / 10);
  });
});

describe.skipIf(!fast)('the rings\' contents', () => {
  const body = 4 << 20;
  /** Runs tracer/test/programs/http_bulk.c in `mode` with a 4 MiB body; the engine's counters at exit. */
  async function bulk(mode: string) {
    const dir = mkdtempSync(join(tmpdir(), 'rbinder-rings-'));
    const bin = join(dir, 'http_bulk');
    execFileSync('gcc', ['-O2', '-pthread', join(__dirname, 'programs', 'http_bulk.c'), '-o', bin]);
    const t = spawnTracked([RBINDER, '--exporter', 'none', '--', bin, String(body), mode], { env: { ...process.env, RBINDER_LOG_LEVEL: 'debug' } });
    const result = await exitWithin(t, 60_000);
    expect(result?.code, t.stdout() + t.stderr()).toBe(0);
    expect(t.stdout()).toMatch(new RegExp(`^OK ${body}$`, 'm'));
    return countersAtExit(t.stderr());
  }

  it('carry a request body of known length as a count, not its bytes', async () => {
    const counters = await bulk('upload');
    // The server takes the 4 MiB body in one recv: one event with its count (13 events in all
    // here). Copied, it was 46 events of up to 64 KiB, and only the first 2 MiB of the call
    // reached the engine as bytes read (the rest as a count of bytes lost).
    expect(counters.fastPathEvents, JSON.stringify(counters)).toBeLessThanOrEqual(24);
    expect(counters.fastPathEventBytes, JSON.stringify(counters)).toBeLessThan(4096);
    expect(counters.bytesRead, JSON.stringify(counters)).toBeGreaterThanOrEqual(body);
  });

  it('carry the chunk data of a chunked request body as a count, the chunk lines as bytes', async () => {
    const counters = await bulk('chunked-upload');
    // One chunk of 4 MiB, written in one call and read in one: its line and the last chunk's are
    // copied, the data counted. Copied whole, the read took 2 MiB of the ring and lost the rest,
    // the end of the body with it, and the connection was abandoned.
    expect(counters.fastPathEventBytes, JSON.stringify(counters)).toBeLessThan(4096);
    expect(counters.connectionsAbandoned, JSON.stringify(counters)).toBe(0);
    expect(counters.bytesRead, JSON.stringify(counters)).toBeGreaterThanOrEqual(body);
  });

  it('carry the chunk data of a chunked response as a count, the chunk lines as bytes', async () => {
    const counters = await bulk('chunked-download');
    expect(counters.fastPathEventBytes, JSON.stringify(counters)).toBeLessThan(4096);
    expect(counters.connectionsAbandoned, JSON.stringify(counters)).toBe(0);
    expect(counters.bytesRead, JSON.stringify(counters)).toBeGreaterThanOrEqual(body);
    expect(counters.bytesWritten, JSON.stringify(counters)).toBeGreaterThanOrEqual(body);
  });

  it('count as moved the bytes of a call that no event carried (past the 2 MiB copy cap)', async () => {
    // A response up to the connection's end: the stub cannot frame it, so the one write and the
    // one recv are copied up to the cap, and the rest reaches the engine as a count of bytes
    // lost. Before that count was added to rbinder.bytes, 2 MiB of the 4 MiB were counted each way.
    const counters = await bulk('eof-download');
    expect(counters.fastPathEventBytes, JSON.stringify(counters)).toBeGreaterThanOrEqual(2 << 20);
    expect(counters.bytesRead, JSON.stringify(counters)).toBeGreaterThanOrEqual(body);
    expect(counters.bytesWritten, JSON.stringify(counters)).toBeGreaterThanOrEqual(body);
  });
});

describe.skipIf(!fast)('the rings\' contents, responses', () => {
  let receiver: OtlpReceiver;
  beforeAll(async () => {
    receiver = await startOtlpReceiver();
  });
  afterAll(async () => {
    await receiver?.stop();
  });

  it('carry response bodies of known length and chunk data as counts; HEAD, 304, 204 and 100-continue keep their spans', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rbinder-rings-'));
    const bin = join(dir, 'http_responses');
    execFileSync('gcc', ['-O2', '-pthread', join(__dirname, 'programs', 'http_responses.c'), '-o', bin]);
    const service = 'ring-responses';
    const t = spawnTracked([RBINDER, '--', bin], {
      env: { ...process.env, ...tracerEnv(receiver), OTEL_SERVICE_NAME: service, RBINDER_LOG_LEVEL: 'debug' },
    });
    const result = await exitWithin(t, 60_000);
    expect(result?.code, t.stdout() + t.stderr()).toBe(0);
    expect(t.stdout()).toMatch(/^OK$/m);
    const counters = countersAtExit(t.stderr());
    const big = 4 << 20;
    // Four 4 MiB bodies (one written with its head in one writev, one in chunks, one by sendfile),
    // each written by the server and read by the client: 32 MiB moved, of which the ring carried
    // the heads, the chunk lines and the small bodies (4 KB here). Copied, it carried 2 MiB of the
    // writev and every other byte; and sendfile was not seen at all, so the engine took the next
    // response for body.
    expect(counters.fastPathEventBytes, JSON.stringify(counters)).toBeLessThan(64 * 1024);
    expect(counters.fastPathDropped ?? 0, JSON.stringify(counters)).toBe(0);
    expect(counters.bytesRead, JSON.stringify(counters)).toBeGreaterThanOrEqual(4 * big);
    expect(counters.bytesWritten, JSON.stringify(counters)).toBeGreaterThanOrEqual(4 * big);

    const mine = (all: { resource: Record<string, unknown> }[]) => all.filter((x) => x.resource['service.name'] === service);
    const spans = mine(await receiver.waitFor((all) => mine(all).length >= 18, 20_000));
    // [method, path, status, response body size (absent when 0), request body size]
    const expected: [string, string, number, number | undefined, number | undefined][] = [
      ['HEAD', '/big', 200, undefined, undefined],
      ['GET', '/big', 200, big, undefined],
      ['GET', '/not-modified', 304, undefined, undefined],
      ['GET', '/empty', 204, undefined, undefined],
      ['GET', '/chunked', 200, big + 23, undefined], // the body as sent: 23 bytes of chunk lines
      ['GET', '/file', 200, big, undefined],
      ['GET', '/big', 200, big, undefined],
      ['POST', '/continue', 200, 2, 10],
      ['GET', '/small', 200, 1000, undefined],
    ];
    const byStart = (kind: number) =>
      spans.filter((x) => x.kind === kind).sort((a, b) => (a.startTimeUnixNano < b.startTimeUnixNano ? -1 : 1));
    const clients = byStart(3);
    const servers = byStart(2);
    const summary = (x: (typeof spans)[number]) => [
      x.attributes['http.request.method'],
      x.attributes['url.path'],
      x.attributes['http.response.status_code'],
      x.attributes['http.response.body.size'],
      x.attributes['http.request.body.size'],
    ];
    expect(clients.map(summary)).toEqual(expected);
    expect(servers.map(summary)).toEqual(expected);
    // Each server span is its client span's child: every request carried its traceparent.
    servers.forEach((s, i) => expect(s.parentSpanId).toBe(clients[i].spanId));
    for (const x of spans) expect(x.status.code, JSON.stringify(summary(x))).not.toBe(2);
  });
});
