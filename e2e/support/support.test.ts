// Proves the test support works on its own, without the tracer: the OTLP receiver over every
// protocol, and every fixture server against every fixture client.

import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startCountingReceiver } from '../../bench/lib/receiver';
import { spanRecord } from '../../tracer/src/export/record-fixture';
import { toReadableSpan } from '../../tracer/src/export/spans';
import { sendTestExport, startOtlpReceiver, type OtlpProtocol, type OtlpReceiver } from './otlp-receiver';
import {
  chunkedBody,
  fixtureCommand,
  parseResponses,
  runClient,
  runFixture,
  startServer,
  type ClientResponse,
  type Lang,
  type RunningServer,
  type ServerKind,
} from './programs';

const BUILD_TIMEOUT = 300_000; // a first, uncached Go build of the receiver (grpc) is slow
const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');
const response = (status: number, body: Buffer | string = ''): ClientResponse => ({
  status,
  length: Buffer.byteLength(body),
  sha256: sha256(body),
});

describe('OTLP receiver', () => {
  let rx: OtlpReceiver;
  beforeAll(async () => {
    rx = await startOtlpReceiver();
  }, BUILD_TIMEOUT);
  afterAll(async () => {
    expect(await rx.stop()).toEqual({ code: 0, signal: null });
  });
  beforeEach(() => rx.clear());

  it('decodes a hand-built OTLP/JSON request (hex ids, gzip) and answers in JSON', async () => {
    const body = {
      resourceSpans: [
        {
          resource: { attributes: [{ key: 'service.name', value: { stringValue: 'hand-built' } }] },
          scopeSpans: [
            {
              scope: { name: 'manual' },
              spans: [
                {
                  traceId: '5B8EFFF798038103D269B633813FC60C', // upper case on purpose
                  spanId: 'eee19b7ec3c1b174',
                  name: 'client span',
                  kind: 3,
                  startTimeUnixNano: '1544712660000000000',
                  endTimeUnixNano: 1544712661000000000, // numbers are accepted too
                  attributes: [
                    { key: 'n', value: { intValue: '42' } },
                    { key: 'kv', value: { kvlistValue: { values: [{ key: 'a', value: { boolValue: false } }] } } },
                  ],
                  someFutureField: true, // unknown fields are ignored
                },
              ],
            },
          ],
        },
      ],
    };
    const res = await fetch(`${rx.httpEndpoint}/v1/traces`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', 'x-test-header': 'yes' },
      body: gzipSync(JSON.stringify(body)),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toEqual({});

    const [span] = await rx.waitFor((spans) => spans.length === 1);
    expect(span).toEqual({
      traceId: '5b8efff798038103d269b633813fc60c',
      spanId: 'eee19b7ec3c1b174',
      parentSpanId: '',
      traceState: '',
      name: 'client span',
      kind: 3,
      startTimeUnixNano: 1544712660000000000n,
      endTimeUnixNano: 1544712661000000000n,
      attributes: { n: 42, kv: { a: false } },
      status: { code: 0, message: '' },
      events: [],
      links: [],
      resource: { 'service.name': 'hand-built' },
      scope: 'manual',
      scopeVersion: '',
      protocol: 'http/json',
    });
    const [req] = rx.requests();
    expect(req?.headers).toMatchObject({ 'x-test-header': 'yes', 'content-encoding': 'gzip' });
  });

  it('refuses what is not OTLP', async () => {
    const post = (path: string, type: string, body: string) =>
      fetch(`${rx.httpEndpoint}${path}`, { method: 'POST', headers: { 'content-type': type }, body });
    expect((await post('/v1/traces', 'text/plain', 'x')).status).toBe(415);
    expect((await post('/v1/logs', 'application/json', '{}')).status).toBe(404);
    expect((await post('/v1/traces', 'application/json', '{"resourceSpans": 3}')).status).toBe(400);
    expect((await fetch(`${rx.httpEndpoint}/v1/traces`)).status).toBe(405);
    expect(rx.spans()).toEqual([]);
    expect(rx.requests().map((r) => r.error !== undefined)).toEqual([true]);
  });

  const protocols: OtlpProtocol[] = ['http/protobuf', 'http/json', 'grpc'];
  for (const protocol of protocols) {
    for (const gzip of [false, true]) {
      it(`receives the Go client's test span and metrics over ${protocol}${gzip ? ' with gzip' : ''}`, async () => {
        const endpoint = protocol === 'grpc' ? rx.grpcEndpoint : rx.httpEndpoint;
        for (const signal of ['traces', 'metrics'] as const) {
          const sent = await sendTestExport(signal, protocol, endpoint, { gzip });
          expect(sent, sent.stderr).toMatchObject({ code: 0, stdout: 'OK\n' });
        }
        const [span] = await rx.waitFor((spans) => spans.length === 1);
        expect(span).toMatchObject({
          traceId: '0102030405060708090a0b0c0d0e0f10',
          spanId: '1112131415161718',
          parentSpanId: '2122232425262728',
          name: 'GET /test',
          kind: 2,
          startTimeUnixNano: 1700000000000000000n,
          endTimeUnixNano: 1700000000001500000n,
          attributes: {
            'http.request.method': 'GET',
            'http.response.status_code': 500,
            'test.bool': true,
            'test.double': 0.5,
            'test.array': ['a', 'b'],
          },
          status: { code: 2, message: 'test error' },
          resource: { 'service.name': 'otlp-receiver-test' },
          scope: 'rbinder.test',
          scopeVersion: '1.0',
          protocol,
        });
        const points = await rx.waitForMetrics((p) => p.length === 3);
        expect(points.map(({ name, type, value, count, sum, attributes }) => ({ name, type, value, count, sum, attributes }))).toEqual([
          { name: 'test.requests', type: 'sum', value: 3, count: undefined, sum: undefined, attributes: { 'http.route': '/test' } },
          { name: 'test.temperature', type: 'gauge', value: 21.5, count: undefined, sum: undefined, attributes: {} },
          { name: 'test.duration', type: 'histogram', value: undefined, count: 2, sum: 3.5, attributes: { 'http.route': '/test' } },
        ]);
        expect(points[2]).toMatchObject({ bucketCounts: [0, 2, 0], explicitBounds: [1, 5], resource: { 'service.name': 'otlp-receiver-test' } });
        expect(rx.requests().every((r) => r.protocol === protocol)).toBe(true);
      });
    }
  }

  it('waitFor rejects with a list of what was received', async () => {
    await sendTestExport('traces', 'grpc', rx.grpcEndpoint);
    await expect(rx.waitFor((spans) => spans.some((s) => s.name === 'never'), 300)).rejects.toThrow(
      /1 requests \(0 rejected\/undecodable\), 1 items:\n {2}GET \/test kind=2 trace=0102030405060708090a0b0c0d0e0f10/,
    );
  });

  it('refuses the first N exports with -fail-first', async () => {
    const failing = await startOtlpReceiver({ failFirst: 2 });
    try {
      const http = await sendTestExport('traces', 'http/protobuf', failing.httpEndpoint);
      expect(http.code).toBe(1);
      expect(http.stderr).toContain('HTTP 503');
      const grpc = await sendTestExport('traces', 'grpc', failing.grpcEndpoint);
      expect(grpc.code).toBe(1);
      expect(grpc.stderr).toContain('code = Unavailable');
      expect((await sendTestExport('traces', 'grpc', failing.grpcEndpoint)).code).toBe(0);
      await failing.waitFor((spans) => spans.length === 1);
      expect(failing.requests().map((r) => r.rejected ?? false)).toEqual([true, true, false]);
    } finally {
      await failing.stop();
    }
  });
});

describe('OTLP receiver, -count-only (the benchmark\'s)', () => {
  it('counts the spans of protobuf requests on the wire (gzip too) and refuses a malformed one', async () => {
    const rx = await startCountingReceiver();
    try {
      // 7 spans under two resources, serialized by the SDK (3 + 4).
      const spans = [1, 2, 3, 4, 5, 6, 7].map((i) =>
        toReadableSpan(
          spanRecord({ spanId: `00000000000000${i.toString(16).padStart(2, '0')}`, pid: i <= 3 ? 1 : 2 }),
          resourceFromAttributes({ 'service.name': i <= 3 ? 'a' : 'b' }),
        ),
      );
      const body = Buffer.from(ProtobufTraceSerializer.serializeRequest(spans)!);
      const post = (bytes: Buffer, headers: Record<string, string> = {}) =>
        fetch(`${rx.httpEndpoint}/v1/traces`, { method: 'POST', headers: { 'content-type': 'application/x-protobuf', ...headers }, body: bytes });
      expect((await post(body)).status).toBe(200);
      expect((await post(gzipSync(body), { 'content-encoding': 'gzip' })).status).toBe(200);
      expect((await post(body.subarray(0, body.length - 3))).status).toBe(400);
      await rx.settle();
      expect(rx.spans()).toBe(14);
    } finally {
      await rx.stop();
    }
  }, BUILD_TIMEOUT);
});

describe('fixture programs', () => {
  const servers: ServerKind[] = ['node', 'python', 'java', 'go', 'python-forking'];
  const clients: Lang[] = ['node', 'python', 'java', 'go'];
  let upstream: RunningServer; // what GET /call calls
  let dir: string;
  let bigFile: string;
  let big: Buffer;

  beforeAll(async () => {
    // Build everything once up front, so no single test pays for it.
    await Promise.all((['java-server', 'go-server', 'go-client'] as const).map(fixtureCommand));
    upstream = await startServer('go');
    dir = mkdtempSync(join(tmpdir(), 'rbinder-support-'));
    bigFile = join(dir, 'big.bin');
    big = randomBytes(5 * 1024 * 1024);
    writeFileSync(bigFile, big);
  }, BUILD_TIMEOUT);
  afterAll(async () => {
    await upstream?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  describe.each(servers)('%s server', (kind) => {
    let server: RunningServer;
    beforeAll(async () => {
      server = await startServer(kind);
    }, 60_000);
    afterAll(() => server?.stop());

    // Concurrent: the clients overlap with each other's start-up (a JVM takes ~0.6 s per run).
    it.concurrent.for(clients)('serves every route to the %s client', { timeout: 60_000 }, async (lang, { expect }) => {
      const expectations: [string[], ClientResponse[]][] = [
        [[`${server.url}/hello`, '--count', '3'], [response(200, 'hello\n'), response(200, 'hello\n'), response(200, 'hello\n')]],
        [[`${server.url}/status/404`], [response(404)]],
        [[`${server.url}/status/204`], [response(204)]],
        [[`${server.url}/echo`, 'POST', bigFile], [response(200, big)]],
        [[`${server.url}/echo`, 'POST', bigFile, '--chunked'], [response(200, big)]],
        [[`${server.url}/chunked?size=100000`], [response(200, chunkedBody(100_000))]],
        [[`${server.url}/call?url=${encodeURIComponent(`${upstream.url}/chunked?size=3000`)}`], [response(200, chunkedBody(3000))]],
        [[`${server.url}/call?url=${encodeURIComponent(`${upstream.url}/status/503`)}`], [response(503)]],
      ];
      for (const [args, expected] of expectations) {
        const run = await runClient(lang, args);
        expect({ args, code: run.code, responses: parseResponses(run.stdout) }, run.stderr).toEqual({ args, code: 0, responses: expected });
      }
    });

    it('answers 3 pipelined requests in order', async () => {
      const run = await runFixture('python-pipeline-client', [`127.0.0.1:${server.port}`]);
      expect(run.code, run.stderr).toBe(0);
      expect(parseResponses(run.stdout)).toEqual([response(200, 'hello\n'), response(404), response(200, chunkedBody(20_000))]);
    });

    it('exits 0 on SIGTERM', async () => {
      expect(await server.stop()).toEqual({ code: 0, signal: null });
    });
  });

  it('the forking server answers from 2 worker processes', async () => {
    const server = await startServer('python-forking');
    try {
      const pids = new Set<string>();
      for (let i = 0; i < 10; i++) pids.add(await workerPid(`${server.url}/hello`));
      expect(pids.size).toBe(2);
      expect(pids).not.toContain(String(server.proc.pid));
    } finally {
      await server.stop();
    }
  });

  it('runs a program under a wrapper (wrap)', async () => {
    const server = await startServer('node', { wrap: ['env', '--'], env: { EXTRA: '1' } });
    const run = await runClient('go', [`${server.url}/hello`], { wrap: ['env'] });
    expect(parseResponses(run.stdout)).toEqual([response(200, 'hello\n')]);
    expect(await server.stop()).toEqual({ code: 0, signal: null });
  });

  it('not_http.js: both sides receive exactly what the other sent', async () => {
    const run = await runFixture('node-not-http', []);
    expect(run.code, run.stderr).toBe(0);
    const line = (name: string): string => new RegExp(`^${name} (\\d+ [0-9a-f]{64})$`, 'm').exec(run.stdout)?.[1] ?? `no ${name}`;
    expect(line('SERVER_RECEIVED')).toBe(line('CLIENT_SENT'));
    expect(line('CLIENT_RECEIVED')).toBe(line('SERVER_SENT'));
  });
});

/** GET on a new connection; the X-Worker-Pid response header. */
function workerPid(url: string): Promise<string> {
  return new Promise((done, fail) => {
    get(url, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => done(String(res.headers['x-worker-pid'])));
    }).on('error', fail);
  });
}
