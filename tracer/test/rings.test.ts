// The fast path's rings and the engine's timer that drains them (docs/fast-path.md, "Draining"):
// the timer sleeps until a stub rings its ring's doorbell (an eighth of the ring filled), spans
// are due to JS, or 250 ms pass, instead of polling. An idle tracer must barely wake, and a burst
// that arrives while it sleeps must still find room in the ring. Fast mode only; needs
// futex_waitv (Linux 5.16+), as the test machines have.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { exitWithin, spawnTracked, waitForEngine } from '../../e2e/support/process';
import { countersAtExit, RBINDER } from './helpers';

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

  it('wakes for a burst that starts while it sleeps: the ring never fills', async () => {
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
    // worth in ~140 ms, within one 250 ms timeout), and none was lost. With the stub's doorbell
    // disabled, 81k of 179k events were lost.
    expect(counters.fastPathEvents, JSON.stringify(counters)).toBeGreaterThan(8 * RING_SLOTS);
    expect(counters.fastPathDropped ?? 0, JSON.stringify(counters)).toBe(0);
  });
});

describe.skipIf(!fast)('the rings\' contents', () => {
  it('carry a request body of known length as a count, not its bytes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rbinder-rings-'));
    const bin = join(dir, 'http_upload');
    execFileSync('gcc', ['-O2', '-pthread', join(__dirname, 'programs', 'http_upload.c'), '-o', bin]);
    const body = 4 << 20;
    const t = spawnTracked([RBINDER, '--exporter', 'none', '--', bin, String(body)], { env: { ...process.env, RBINDER_LOG_LEVEL: 'debug' } });
    const result = await exitWithin(t, 60_000);
    expect(result?.code, t.stdout() + t.stderr()).toBe(0);
    expect(t.stdout()).toMatch(new RegExp(`^OK ${body}$`, 'm'));
    const counters = countersAtExit(t.stderr());
    // The server takes the 4 MiB body in one recv: one event with its count (13 events in all
    // here). Copied, it was 46 events of up to 64 KiB, and only the first 2 MiB of the call
    // reached the engine as bytes read (the rest as a count of bytes lost).
    expect(counters.fastPathEvents, JSON.stringify(counters)).toBeLessThanOrEqual(24);
    expect(counters.bytesRead, JSON.stringify(counters)).toBeGreaterThanOrEqual(body);
  });

  it('count as read the bytes of a call that no event carried (past the 2 MiB copy cap)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rbinder-rings-'));
    const bin = join(dir, 'http_upload');
    execFileSync('gcc', ['-O2', '-pthread', join(__dirname, 'programs', 'http_upload.c'), '-o', bin]);
    const body = 4 << 20;
    // A chunked body has no length the stub knows: the one recv is copied up to the cap, and the
    // rest reaches the engine as a count of bytes lost. Before the count was added to
    // rbinder.bytes, 2 MiB of the 4 MiB read were counted.
    const t = spawnTracked([RBINDER, '--exporter', 'none', '--', bin, String(body), 'chunked'], { env: { ...process.env, RBINDER_LOG_LEVEL: 'debug' } });
    const result = await exitWithin(t, 60_000);
    expect(result?.code, t.stdout() + t.stderr()).toBe(0);
    expect(t.stdout()).toMatch(new RegExp(`^OK ${body}$`, 'm'));
    const counters = countersAtExit(t.stderr());
    expect(counters.bytesRead, JSON.stringify(counters)).toBeGreaterThanOrEqual(body);
    expect(counters.bytesWritten, JSON.stringify(counters)).toBeGreaterThanOrEqual(body);
  });
});
