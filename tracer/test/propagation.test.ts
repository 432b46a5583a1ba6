// Context propagation: services that forward no headers still give one trace, because rbinder
// injects the context into their outbound requests by rewriting the write syscall.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../../e2e/support/otlp-receiver';
import { exitWithin, spawnTracked, waitForStdout } from '../../e2e/support/process';
import { runFixture, startServer, type RunningServer } from '../../e2e/support/programs';
import { RBINDER, tracerEnv } from './helpers';

const SERVER = 2;
const CLIENT = 3;
const programs = join(__dirname, 'programs');

let receiver: OtlpReceiver;
beforeAll(async () => {
  receiver = await startOtlpReceiver();
});
afterAll(async () => {
  await receiver?.stop();
});

const service = (s: ReceivedSpan) => String(s.resource['service.name']);

describe('a chain of three services in three languages, none forwarding headers', () => {
  let python: RunningServer;
  let java: RunningServer;
  let node: RunningServer;
  const traced = (name: string) => ({
    wrap: [RBINDER, '--service-name', name, '--'],
    env: tracerEnv(receiver),
  });

  beforeAll(async () => {
    python = await startServer('python', traced('chain-python'));
    java = await startServer('java', traced('chain-java'));
    node = await startServer('node', traced('chain-node'));
  });
  afterAll(async () => {
    await Promise.all([node?.stop(), java?.stop(), python?.stop()]);
  });

  const chainUrl = () => {
    // Java's HttpURLConnection does its I/O on the request thread (see docs/propagation.md for
    // java.net.http.HttpClient, which hands requests to its selector thread).
    const toPython = `${python.url}/hello`;
    const toJava = `${java.url}/call?client=urlconnection&url=${encodeURIComponent(toPython)}`;
    return `${node.url}/call?url=${encodeURIComponent(toJava)}`;
  };

  async function oneTrace(headers: Record<string, string>): Promise<ReceivedSpan[]> {
    receiver.clear();
    const res = await fetch(chainUrl(), { headers });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('hello\n'); // the response is what python said, unchanged
    const spans = await receiver.waitFor((all) => all.filter((s) => service(s).startsWith('chain-')).length >= 5, 20_000);
    return spans.filter((s) => service(s).startsWith('chain-'));
  }

  function expectChain(spans: ReceivedSpan[]): ReceivedSpan[] {
    expect(new Set(spans.map((s) => s.traceId)).size).toBe(1);
    const find = (svc: string, kind: number) => {
      const found = spans.filter((s) => service(s) === svc && s.kind === kind);
      expect(found, `${svc} kind ${kind}`).toHaveLength(1);
      return found[0];
    };
    const chain = [
      find('chain-node', SERVER),
      find('chain-node', CLIENT),
      find('chain-java', SERVER),
      find('chain-java', CLIENT),
      find('chain-python', SERVER),
    ];
    for (let i = 1; i < chain.length; i++) {
      expect(chain[i].parentSpanId, `${service(chain[i])} ${chain[i].kind}`).toBe(chain[i - 1].spanId);
    }
    return chain;
  }

  it('a request without traceparent yields exactly one trace: server → client → server → client → server', async () => {
    const chain = expectChain(await oneTrace({}));
    expect(chain[0].parentSpanId).toBe('');
  });

  it('a request with traceparent continues that trace through all three services', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const chain = expectChain(await oneTrace({ traceparent: `00-${traceId}-00f067aa0ba902b7-01` }));
    expect(chain[0].traceId).toBe(traceId);
    expect(chain[0].parentSpanId).toBe('00f067aa0ba902b7');
  });
});

interface Exchange {
  sent: Buffer;
  received: Buffer;
}

/** What the server received must be what the client wrote plus exactly one injected header block. */
function injectedBlock(e: Exchange): string {
  const headEnd = e.sent.indexOf('\r\n\r\n') + 2;
  const extra = e.received.length - e.sent.length;
  expect(extra).toBeGreaterThanOrEqual(0);
  expect(e.received.subarray(0, headEnd).equals(e.sent.subarray(0, headEnd))).toBe(true);
  expect(e.received.subarray(headEnd + extra).equals(e.sent.subarray(headEnd))).toBe(true);
  return e.received.subarray(headEnd, headEnd + extra).toString('latin1');
}

describe('injection on the wire', () => {
  let echo: ReturnType<typeof spawnTracked>;
  let address: string;
  beforeAll(async () => {
    echo = spawnTracked(['python3', join(programs, 'raw_echo_server.py'), '0']);
    address = `127.0.0.1:${(await waitForStdout(echo, /LISTENING (\d+)/, 20_000, 'raw echo server'))[1]}`;
  });
  afterAll(async () => {
    echo.proc.kill('SIGKILL');
    await exitWithin(echo, 5_000);
  });

  async function runClient(mode: string, name: string, extraEnv: Record<string, string> = {}): Promise<Exchange[]> {
    const t = spawnTracked([RBINDER, '--service-name', name, '--', 'python3', join(programs, 'inject_client.py'), mode, address], {
      env: { ...process.env, ...tracerEnv(receiver), ...extraEnv },
    });
    const exit = await exitWithin(t, 60_000);
    expect(exit?.code, t.stderr()).toBe(0);
    return t
      .stdout()
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { sent: string; received: string })
      .map((e) => ({ sent: Buffer.from(e.sent, 'base64'), received: Buffer.from(e.received, 'base64') }));
  }

  it.each([
    ['sndbuf', '4 KB SO_SNDBUF, a 200 KB request head in one send'],
    ['nonblocking', 'a non-blocking client retrying partial sends of a 200 KB head and 100 KB body'],
    ['writev', 'writev with 64 iovecs'],
    ['sendmsg', 'sendmsg with 64 iovecs'],
    ['pieces', 'a head written in 7 small writes'],
  ])('%s: %s — the server sees the original bytes plus one traceparent line', async (mode) => {
    const name = `wire-${mode}`;
    const [exchange] = await runClient(mode, name);
    const block = injectedBlock(exchange);
    const match = /^traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-01\r\n$/.exec(block);
    expect(match, JSON.stringify(block)).not.toBeNull();
    // The injected context is the client span's own.
    const spans = await receiver.waitFor((all) => all.some((s) => service(s) === name && s.kind === CLIENT), 20_000);
    const client = spans.find((s) => service(s) === name && s.kind === CLIENT)!;
    expect(client.traceId).toBe(match![1]);
    expect(client.spanId).toBe(match![2]);
  });

  it('keep-alive reuse: each request on one connection gets its own context', async () => {
    const exchanges = await runClient('keepalive', 'wire-keepalive');
    expect(exchanges).toHaveLength(3);
    const ids = exchanges.map((e) => /traceparent: 00-(\w+)-(\w+)-01/.exec(injectedBlock(e))![2]);
    expect(new Set(ids).size).toBe(3);
    const spans = await receiver.waitFor(
      (all) => all.filter((s) => service(s) === 'wire-keepalive' && s.kind === CLIENT).length >= 3,
      20_000,
    );
    const clientIds = new Set(spans.filter((s) => service(s) === 'wire-keepalive').map((s) => s.spanId));
    for (const id of ids) expect(clientIds.has(id)).toBe(true);
  });

  it('a request that already carries traceparent or b3 is not injected twice, and its context is honoured', async () => {
    for (const [mode, name] of [
      ['present', 'wire-present'],
      ['b3present', 'wire-b3present'],
    ]) {
      const [exchange] = await runClient(mode, name, { OTEL_PROPAGATORS: 'tracecontext,b3' });
      expect(exchange.received.equals(exchange.sent)).toBe(true);
      const spans = await receiver.waitFor((all) => all.some((s) => service(s) === name && s.kind === CLIENT), 20_000);
      const client = spans.find((s) => service(s) === name && s.kind === CLIENT)!;
      expect(client.traceId).toBe('11111111111111111111111111111111');
      expect(client.parentSpanId).toBe('2222222222222222');
    }
  });

  it('b3 and b3multi propagators inject their headers', async () => {
    const [exchange] = await runClient('writev', 'wire-b3', { OTEL_PROPAGATORS: 'b3,b3multi' });
    const block = injectedBlock(exchange);
    expect(block).toMatch(/^b3: [0-9a-f]{32}-[0-9a-f]{16}-1\r\nX-B3-TraceId: [0-9a-f]{32}\r\nX-B3-SpanId: [0-9a-f]{16}\r\nX-B3-Sampled: 1\r\n$/);
  });

  it('tracestate and baggage of the inbound request travel with the context', async () => {
    const server = await startServer('node', { wrap: [RBINDER, '--service-name', 'carrier', '--'], env: tracerEnv(receiver) });
    try {
      const traceId = '0af7651916cd43dd8448eb211c80319c';
      const res = await fetch(`${server.url}/call?url=${encodeURIComponent(`http://${address}/downstream`)}`, {
        headers: {
          traceparent: `00-${traceId}-b7ad6b7169203331-01`,
          tracestate: 'vendor=opaque,other=1',
          baggage: 'tenant=acme',
        },
      });
      const seen = await res.text(); // the echo server's view of the outbound request
      const tp = /\r\ntraceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-01\r\n/.exec(seen);
      expect(tp, seen).not.toBeNull();
      expect(tp![1]).toBe(traceId);
      expect(seen).toContain('\r\ntracestate: vendor=opaque,other=1\r\n');
      expect(seen).toContain('\r\nbaggage: tenant=acme\r\n');
      const spans = await receiver.waitFor((all) => all.some((s) => service(s) === 'carrier' && s.kind === CLIENT), 20_000);
      expect(spans.find((s) => service(s) === 'carrier' && s.kind === CLIENT)?.spanId).toBe(tp![2]);
    } finally {
      await server.stop();
    }
  });

  it('sampling is parent-based and the sampled flag travels', async () => {
    const [exchange] = await runClient('writev', 'wire-unsampled', { OTEL_TRACES_SAMPLER: 'always_off' });
    expect(injectedBlock(exchange)).toMatch(/^traceparent: 00-[0-9a-f]{32}-[0-9a-f]{16}-00\r\n$/);
    const server = await startServer('python', {
      wrap: [RBINDER, '--service-name', 'sampled-child', '--'],
      env: { ...tracerEnv(receiver), OTEL_TRACES_SAMPLER: 'parentbased_always_on' },
    });
    try {
      const notSampled = '00-1234567890abcdef1234567890abcdef-1234567890abcdef-00';
      const sampled = '00-fedcba0987654321fedcba0987654321-1234567890abcdef-01';
      await (await fetch(`${server.url}/hello`, { headers: { traceparent: notSampled } })).text();
      await (await fetch(`${server.url}/hello`, { headers: { traceparent: sampled } })).text();
      const spans = await receiver.waitFor((all) => all.some((s) => service(s) === 'sampled-child'), 20_000);
      await new Promise((r) => setTimeout(r, 500));
      const mine = receiver.spans().filter((s) => service(s) === 'sampled-child');
      expect(mine.map((s) => s.traceId)).toEqual(['fedcba0987654321fedcba0987654321']);
      expect(spans.filter((s) => service(s) === 'wire-unsampled')).toHaveLength(0);
    } finally {
      await server.stop();
    }
  });

  it('works where process_vm_readv/writev are refused (containerd default profile): /proc/PID/mem', async () => {
    const [exchange] = await runClient('sendmsg', 'wire-proc-mem', { RBINDER_FORCE_PROC_MEM: '1' });
    expect(injectedBlock(exchange)).toMatch(/^traceparent: 00-[0-9a-f]{32}-[0-9a-f]{16}-01\r\n$/);
    const spans = await receiver.waitFor((all) => all.some((s) => service(s) === 'wire-proc-mem' && s.kind === CLIENT), 20_000);
    expect(spans.find((s) => service(s) === 'wire-proc-mem' && s.kind === CLIENT)?.attributes['http.response.status_code']).toBe(200);
  });

  it('respects the destination allow-list', async () => {
    const [exchange] = await runClient('writev', 'wire-denied', { RBINDER_INJECT_TO: '10.0.0.0/8,.example.com' });
    expect(exchange.received.equals(exchange.sent)).toBe(true);
    const [allowed] = await runClient('writev', 'wire-allowed', { RBINDER_INJECT_TO: '127.0.0.0/8' });
    expect(injectedBlock(allowed)).toMatch(/^traceparent: /);
  });
});

describe('bytes that are not HTTP are never modified', () => {
  it('non-HTTP traffic that starts like "GET " passes untouched', async () => {
    const plain = await runFixture('node-not-http', []);
    const traced = await runFixture('node-not-http', [], { wrap: [RBINDER, '--'], env: tracerEnv(receiver) });
    expect(traced.code, traced.stderr).toBe(0);
    expect(traced.stdout).toBe(plain.stdout);
  });

  it('TLS: an HTTPS request through the tracer reaches the server byte for byte', async () => {
    const t = spawnTracked([RBINDER, '--', process.execPath, join(programs, 'tls_pair.js')], {
      env: { ...process.env, ...tracerEnv(receiver), OTEL_SERVICE_NAME: 'tls' },
    });
    const exit = await exitWithin(t, 60_000);
    expect(exit?.code, t.stderr()).toBe(0);
    expect(t.stdout()).toMatch(/^SERVER_SAW (.+)\nCLIENT_SENT \1\n/);
    await new Promise((r) => setTimeout(r, 500));
    expect(receiver.spans().filter((s) => service(s) === 'tls')).toHaveLength(0);
  });
});
