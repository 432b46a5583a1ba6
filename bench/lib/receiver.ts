// The OTLP receiver every traced variant exports to: the same Go receiver as the tests
// (e2e/otlp-receiver, built by e2e/support), run with -count-only: it counts each protobuf export
// request's spans on the wire without decoding it (e2e/otlp-receiver/wire.go) and prints only the
// count. It shares the machine's CPUs with the services: converting every span to JSON (what the
// tests need) cost it about 0.7 of a CPU at 15k spans/s, and decoding the request ~10 µs per span.

import { receiverBinary } from '../../e2e/support/otlp-receiver';
import { spawnTracked, terminate, waitForStdout, type Tracked } from '../../e2e/support/process';

export interface CountingReceiver {
  httpEndpoint: string;
  pid: number;
  /** Spans received so far (all accepted trace export requests). */
  spans(): number;
  /** Resolves once no output came for quietMs (or after maxMs): the exports in flight are in. */
  settle(quietMs?: number, maxMs?: number): Promise<void>;
  stop(): Promise<void>;
}

const SPAN_COUNT = /"spans":(\d+)/g;

export async function startCountingReceiver(): Promise<CountingReceiver> {
  const t: Tracked = spawnTracked([await receiverBinary(), '-http', '0', '-grpc', '0', '-count-only', '-exit-on-stdin-eof'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  // spawnTracked accumulates stdout; count from our own listener and let the port line be parsed first.
  const [line] = await waitForStdout(t, /^\{.*"http":\d+.*\}$/m, 30_000, 'otlp-receiver');
  const { http } = JSON.parse(line) as { http: number };
  t.proc.stdout?.removeAllListeners('data'); // stop keeping a copy of everything
  let spans = 0;
  let carry = '';
  let lastData = Date.now();
  t.proc.stdout?.on('data', (chunk: string) => {
    lastData = Date.now();
    const lines = (carry + chunk).split('\n');
    carry = lines.pop() ?? ''; // an unfinished line waits for the rest
    for (const line of lines) for (const m of line.matchAll(SPAN_COUNT)) spans += Number(m[1]);
  });
  return {
    httpEndpoint: `http://127.0.0.1:${http}`,
    pid: t.proc.pid as number,
    spans: () => spans,
    async settle(quietMs = 300, maxMs = 5_000) {
      const start = Date.now();
      while (Date.now() - lastData < quietMs && Date.now() - start < maxMs) await sleep(50);
    },
    async stop() {
      t.proc.stdin?.end();
      await terminate(t, 5_000);
    },
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}
