// The tracer never alters an application byte: the same exchanges traced and untraced must move
// exactly the same bytes, and the spans must still come out right.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOtlpReceiver, type OtlpReceiver } from '../../e2e/support/otlp-receiver';
import { runFixture, startServer, type Fixture, type RunningServer, type ServerKind } from '../../e2e/support/programs';
import { RBINDER, tracerEnv } from './helpers';

let receiver: OtlpReceiver;
let bodyFile: string;
const BODY_SIZE = 5 * 1024 * 1024;

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  const dir = mkdtempSync(join(tmpdir(), 'rbinder-traffic-'));
  bodyFile = join(dir, 'body.bin');
  const body = Buffer.alloc(BODY_SIZE);
  for (let i = 0; i < body.length; i++) body[i] = (i * 31 + (i >> 9)) & 0xff;
  writeFileSync(bodyFile, body);
});
afterAll(async () => {
  await receiver?.stop();
});

/** Runs `fixture args` against `server` twice, untraced and with both sides traced; returns both outputs. */
async function bothWays(kind: ServerKind, fixture: Fixture, args: (url: string) => string[], service: string) {
  const outputs: string[] = [];
  for (const traced of [false, true]) {
    const wrap = traced ? [RBINDER, '--'] : [];
    const env = traced ? { ...tracerEnv(receiver), OTEL_SERVICE_NAME: service } : {};
    const server: RunningServer = await startServer(kind, { wrap, env });
    try {
      const run = await runFixture(fixture, args(server.url), { wrap, env, timeoutMs: 90_000 });
      expect(run.code, run.stderr).toBe(0);
      outputs.push(run.stdout);
    } finally {
      await server.stop();
    }
  }
  return { untraced: outputs[0], traced: outputs[1] };
}

const sizeOf = (out: string) => Number(/LENGTH (\d+)/.exec(out)?.[1]);

describe('byte-identical traffic, traced vs untraced', () => {
  it('multi-MB request and response bodies (Content-Length), Go client to Java server', async () => {
    const { untraced, traced } = await bothWays('java', 'go-client', (url) => [`${url}/echo`, 'POST', bodyFile], 'bytes-cl');
    expect(sizeOf(untraced)).toBe(BODY_SIZE);
    expect(traced).toBe(untraced);
    const spans = await receiver.waitFor((all) => all.filter((s) => s.resource['service.name'] === 'bytes-cl').length >= 2);
    const server = spans.find((s) => s.resource['service.name'] === 'bytes-cl' && s.kind === 2);
    expect(server?.attributes['http.request.body.size']).toBe(BODY_SIZE);
    expect(server?.attributes['http.response.body.size']).toBeGreaterThanOrEqual(BODY_SIZE);
  });

  it('chunked request and chunked response bodies, Node client to Python and Go servers', async () => {
    for (const kind of ['python', 'go'] as const) {
      const up = await bothWays(kind, 'node-client', (url) => [`${url}/echo`, 'POST', bodyFile, '--chunked'], `bytes-chunked-up-${kind}`);
      expect(sizeOf(up.untraced)).toBe(BODY_SIZE);
      expect(up.traced).toBe(up.untraced);
      const down = await bothWays(kind, 'python-client', (url) => [`${url}/chunked?size=3000000`], `bytes-chunked-down-${kind}`);
      expect(sizeOf(down.untraced)).toBe(3_000_000);
      expect(down.traced).toBe(down.untraced);
    }
    const spans = await receiver.waitFor(
      (all) => all.some((s) => s.resource['service.name'] === 'bytes-chunked-down-go' && s.kind === 2),
    );
    const chunked = spans.find((s) => s.resource['service.name'] === 'bytes-chunked-down-go' && s.kind === 2);
    expect(chunked?.attributes['http.response.status_code']).toBe(200);
    expect(chunked?.status.code).not.toBe(2);
  });

  it('request bodies: each request on a keep-alive connection gets its header, its body writes cost no upcall', async () => {
    // A 5 MB body written in 64 KB pieces, each its own write syscall: 80 writes per request, of
    // which only the one with the head needs the engine.
    const server = await startServer('node', { wrap: [RBINDER, '--'], env: { ...tracerEnv(receiver), OTEL_SERVICE_NAME: 'bodies-server' } });
    try {
      for (const chunked of [true, false]) {
        const args = [`${server.url}/echo`, 'POST', bodyFile, '--count', '3', '--paced', ...(chunked ? ['--chunked'] : [])];
        const untraced = await runFixture('node-client', args, { timeoutMs: 90_000 });
        const service = `bodies-client-${chunked ? 'chunked' : 'length'}`;
        const traced = await runFixture('node-client', args, {
          wrap: [RBINDER, '--'],
          env: { ...tracerEnv(receiver), OTEL_SERVICE_NAME: service, RBINDER_LOG_LEVEL: 'debug' },
          timeoutMs: 90_000,
        });
        expect(traced.code, traced.stderr).toBe(0);
        expect(sizeOf(untraced.stdout)).toBe(BODY_SIZE);
        expect(traced.stdout).toBe(untraced.stdout);
        const counters = traced.stderr
          .split('\n')
          .filter((line) => line.includes('engine counters at exit'))
          .map(
            (line) =>
              JSON.parse(line) as { stats: { headersInjected: number; fastPathUpcalls?: number; stubInjections?: number } },
          );
        expect(counters).toHaveLength(1);
        const stats = counters[0].stats;
        expect(stats.headersInjected, `${service} ${JSON.stringify(stats)}`).toBe(3);
        if (process.env.RBINDER_MODE !== 'ptrace') {
          // Fast mode: at most one upcall per request head (the engine's answer covers the body that
          // follows). The first head on the connection asks the engine (the peer's address is not
          // known to the stub yet); after a Content-Length body the stub knows where the next head
          // starts and decides it itself; after a chunked one it does not, and asks.
          expect(stats.fastPathUpcalls, `${service} ${JSON.stringify(stats)}`).toBe(chunked ? 3 : 1);
          expect(stats.stubInjections, `${service} ${JSON.stringify(stats)}`).toBe(chunked ? 0 : 2);
        }
        const spans = await receiver.waitFor(
          (all) => all.filter((s) => s.resource['service.name'] === service && s.kind === 3).length >= 3,
        );
        const clients = spans.filter((s) => s.resource['service.name'] === service && s.kind === 3);
        const all = await receiver.waitFor(
          (xs) => clients.every((c) => xs.some((x) => x.resource['service.name'] === 'bodies-server' && x.parentSpanId === c.spanId)),
        );
        for (const c of clients) {
          // The client's own account of its body, most of which it recorded as a count only.
          if (chunked) expect(c.attributes['http.request.body.size']).toBeGreaterThan(BODY_SIZE);
          else expect(c.attributes['http.request.body.size']).toBe(BODY_SIZE);
          expect(c.attributes['http.response.status_code']).toBe(200);
          const callee = all.find((x) => x.resource['service.name'] === 'bodies-server' && x.parentSpanId === c.spanId);
          expect(callee?.traceId).toBe(c.traceId);
          // Chunked: the body as sent, chunk framing included.
          if (chunked) expect(callee?.attributes['http.request.body.size']).toBeGreaterThan(BODY_SIZE);
          else expect(callee?.attributes['http.request.body.size']).toBe(BODY_SIZE);
        }
      }
    } finally {
      await server.stop();
    }
  });

  it('a keep-alive run: one span per request on one connection', async () => {
    const { untraced, traced } = await bothWays('node', 'node-client', (url) => [`${url}/hello`, '--count', '50'], 'bytes-keepalive');
    expect(untraced.match(/STATUS 200/g)).toHaveLength(50);
    expect(traced).toBe(untraced);
    const spans = await receiver.waitFor(
      (all) =>
        all.filter((s) => s.resource['service.name'] === 'bytes-keepalive' && s.kind === 3).length >= 50 &&
        all.filter((s) => s.resource['service.name'] === 'bytes-keepalive' && s.kind === 2).length >= 50,
    );
    const servers = spans.filter((s) => s.resource['service.name'] === 'bytes-keepalive' && s.kind === 2);
    expect(servers).toHaveLength(50);
    // One connection: every request came from the same client port, each with its own trace.
    expect(new Set(servers.map((s) => s.attributes['network.peer.port'])).size).toBe(1);
    expect(new Set(servers.map((s) => s.traceId)).size).toBe(50);
  });

  it('pipelined requests in one write get one span each, answered in order', async () => {
    const { untraced, traced } = await bothWays('python', 'python-pipeline-client', (url) => [url.replace('http://', '')], 'bytes-pipeline');
    expect(untraced.match(/STATUS (\d+)/g)).toEqual(['STATUS 200', 'STATUS 404', 'STATUS 200']);
    expect(traced).toBe(untraced);
    const spans = await receiver.waitFor(
      (all) => all.filter((s) => s.resource['service.name'] === 'bytes-pipeline' && s.kind === 2).length >= 3,
    );
    const servers = spans.filter((s) => s.resource['service.name'] === 'bytes-pipeline' && s.kind === 2);
    const byPath = (path: string) => servers.find((s) => s.attributes['url.path'] === path);
    expect(byPath('/hello')?.attributes['http.response.status_code']).toBe(200);
    expect(byPath('/status/404')?.attributes['http.response.status_code']).toBe(404);
    expect(byPath('/chunked')?.attributes['http.response.status_code']).toBe(200);
    expect(byPath('/chunked')?.attributes['url.query']).toBe('size=20000');
    const clients = spans.filter((s) => s.resource['service.name'] === 'bytes-pipeline' && s.kind === 3);
    expect(clients.length).toBe(3);
  });

  it('non-HTTP bytes that start like "GET " pass untouched and make no span', async () => {
    const untraced = await runFixture('node-not-http', []);
    const traced = await runFixture('node-not-http', [], {
      wrap: [RBINDER, '--'],
      env: { ...tracerEnv(receiver), OTEL_SERVICE_NAME: 'not-http' },
    });
    expect(untraced.code).toBe(0);
    expect(traced.code, traced.stderr).toBe(0);
    expect(traced.stdout).toBe(untraced.stdout);
    expect(traced.stdout).toMatch(/CLIENT_SENT (\d+ \w+)[\s\S]*SERVER_RECEIVED \1/);
    await new Promise((r) => setTimeout(r, 500));
    expect(receiver.spans().filter((s) => s.resource['service.name'] === 'not-http')).toHaveLength(0);
  });
});
