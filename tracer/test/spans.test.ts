// Real servers and clients in four languages under bin/rbinder, exporting to a real OTLP receiver:
// the spans must describe what happened on the wire, by the OTel HTTP semantic conventions.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../../e2e/support/otlp-receiver';
import { runFixture, startServer, type Lang } from '../../e2e/support/programs';
import { RBINDER, tracerEnv } from './helpers';

const SERVER = 2;
const CLIENT = 3;
const ERROR = 2;

let receiver: OtlpReceiver;
beforeAll(async () => {
  receiver = await startOtlpReceiver();
});
afterAll(async () => {
  await receiver?.stop();
});

const byTrace = (spans: ReceivedSpan[], traceId: string) => spans.filter((s) => s.traceId === traceId);

const languages: { lang: Lang; protocol: 'http/protobuf' | 'http/json' | 'grpc' }[] = [
  { lang: 'node', protocol: 'http/protobuf' },
  { lang: 'python', protocol: 'http/json' },
  { lang: 'java', protocol: 'grpc' },
  { lang: 'go', protocol: 'http/protobuf' },
];

describe.each(languages)('$lang server under rbinder ($protocol export)', ({ lang, protocol }) => {
  it('turns each served request into a SERVER span with semconv attributes', async () => {
    const service = `${lang}-server-${protocol.replace('/', '-')}`;
    const server = await startServer(lang, {
      wrap: [RBINDER, '--'],
      env: {
        ...tracerEnv(receiver, protocol),
        OTEL_SERVICE_NAME: service,
        OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=test,team=platform',
      },
    });
    try {
      const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
      const parent = '00f067aa0ba902b7';
      const hello = await fetch(`${server.url}/hello?name=x&y=1`, {
        headers: { traceparent: `00-${traceId}-${parent}-01`, 'user-agent': 'rbinder-test/1' },
      });
      expect(await hello.text()).toBe('hello\n');
      const failed = await fetch(`${server.url}/status/503`);
      expect(failed.status).toBe(503);
      await failed.arrayBuffer();
      const body = Buffer.alloc(100_000, 'x');
      const echo = await fetch(`${server.url}/echo`, { method: 'POST', body });
      expect(Buffer.from(await echo.arrayBuffer()).equals(body)).toBe(true);

      const spans = await receiver.waitFor(
        (all) => all.filter((s) => s.resource['service.name'] === service).length >= 3,
        20_000,
      );
      const mine = spans.filter((s) => s.resource['service.name'] === service);
      const helloSpan = mine.find((s) => s.attributes['url.path'] === '/hello');
      expect(helloSpan).toBeDefined();
      const h = helloSpan!;
      expect(h.kind).toBe(SERVER);
      expect(h.name).toBe('GET');
      // An inbound traceparent continues that trace.
      expect(h.traceId).toBe(traceId);
      expect(h.parentSpanId).toBe(parent);
      expect(h.attributes).toMatchObject({
        'http.request.method': 'GET',
        'url.path': '/hello',
        'url.query': 'name=x&y=1',
        'url.scheme': 'http',
        'http.response.status_code': 200,
        'server.address': '127.0.0.1',
        'server.port': server.port,
        'client.address': '127.0.0.1',
        'network.peer.address': '127.0.0.1',
        'network.protocol.version': '1.1',
        'user_agent.original': 'rbinder-test/1',
      });
      expect(typeof h.attributes['network.peer.port']).toBe('number');
      expect(h.status.code).not.toBe(ERROR);
      expect(h.endTimeUnixNano).toBeGreaterThan(h.startTimeUnixNano);
      expect(h.resource).toMatchObject({
        'service.name': service,
        'deployment.environment.name': 'test',
        team: 'platform',
        'host.name': expect.any(String),
        'process.pid': expect.any(Number),
        'process.executable.name': expect.any(String),
        'process.command_args': expect.any(Array),
      });
      expect(h.protocol).toBe(protocol);

      const failedSpan = mine.find((s) => s.attributes['url.path'] === '/status/503');
      expect(failedSpan?.attributes['http.response.status_code']).toBe(503);
      expect(failedSpan?.status.code).toBe(ERROR);
      expect(failedSpan?.attributes['error.type']).toBe('503');

      const echoSpan = mine.find((s) => s.attributes['url.path'] === '/echo');
      expect(echoSpan?.name).toBe('POST');
      expect(echoSpan?.attributes['http.request.body.size']).toBe(body.length);
      expect(echoSpan?.attributes['http.response.body.size']).toBe(body.length);
      // Without a traceparent a request starts a new trace.
      expect(echoSpan?.parentSpanId).toBe('');
      expect(echoSpan?.traceId).not.toBe(traceId);
    } finally {
      await server.stop();
    }
  });

  it('turns each sent request into a CLIENT span', async () => {
    const server = await startServer('node');
    const service = `${lang}-client`;
    try {
      const ok = await runFixture(`${lang}-client`, [`${server.url}/hello?q=1`], {
        wrap: [RBINDER, '--'],
        env: { ...tracerEnv(receiver, protocol), OTEL_SERVICE_NAME: service },
      });
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stdout).toContain('STATUS 200');
      const notFound = await runFixture(`${lang}-client`, [`${server.url}/status/404`], {
        wrap: [RBINDER, '--'],
        env: { ...tracerEnv(receiver, protocol), OTEL_SERVICE_NAME: service },
      });
      expect(notFound.stdout).toContain('STATUS 404');

      const spans = await receiver.waitFor(
        (all) => all.filter((s) => s.resource['service.name'] === service).length >= 2,
        20_000,
      );
      const mine = spans.filter((s) => s.resource['service.name'] === service);
      const hello = mine.find((s) => s.attributes['url.path'] === '/hello');
      expect(hello?.kind).toBe(CLIENT);
      expect(hello?.name).toBe('GET');
      expect(hello?.attributes).toMatchObject({
        'http.request.method': 'GET',
        'http.response.status_code': 200,
        'server.address': '127.0.0.1',
        'server.port': server.port,
        'network.peer.address': '127.0.0.1',
        'network.peer.port': server.port,
        'url.full': `http://127.0.0.1:${server.port}/hello?q=1`,
      });
      expect(hello?.parentSpanId).toBe('');
      const missing = mine.find((s) => s.attributes['url.path'] === '/status/404');
      // 4xx is an error for a client.
      expect(missing?.status.code).toBe(ERROR);
      expect(missing?.attributes['error.type']).toBe('404');
    } finally {
      await server.stop();
    }
  });
});

describe('one trace across traced services', () => {
  it('a server span becomes the parent of the client span it makes on the same thread', async () => {
    // node → python, both traced: the node server's outbound call is a child of its server span
    // (context follows data). Propagation across the hop is propagation.test.ts's subject.
    const backend = await startServer('python', {
      wrap: [RBINDER, '--'],
      env: { ...tracerEnv(receiver, 'http/protobuf'), OTEL_SERVICE_NAME: 'chain-backend' },
    });
    const frontend = await startServer('node', {
      wrap: [RBINDER, '--'],
      env: { ...tracerEnv(receiver, 'http/protobuf'), OTEL_SERVICE_NAME: 'chain-frontend' },
    });
    try {
      const res = await fetch(`${frontend.url}/call?url=${encodeURIComponent(`${backend.url}/hello`)}`);
      expect(res.status).toBe(200);
      await res.text();
      // Both: the server span ends after the client span, and may come in a later export.
      const spans = await receiver.waitFor(
        (all) =>
          all.some((s) => s.resource['service.name'] === 'chain-frontend' && s.kind === CLIENT) &&
          all.some((s) => s.resource['service.name'] === 'chain-frontend' && s.kind === SERVER),
        20_000,
      );
      const server = spans.find((s) => s.resource['service.name'] === 'chain-frontend' && s.kind === SERVER);
      const client = spans.find((s) => s.resource['service.name'] === 'chain-frontend' && s.kind === CLIENT);
      expect(server).toBeDefined();
      expect(client?.traceId).toBe(server?.traceId);
      expect(client?.parentSpanId).toBe(server?.spanId);
      expect(byTrace(spans, server!.traceId).length).toBeGreaterThanOrEqual(2);
    } finally {
      await frontend.stop();
      await backend.stop();
    }
  });
});

describe('metrics', () => {
  it('exports http.server.request.duration and the tracer counters over OTLP', async () => {
    const server = await startServer('node', {
      wrap: [RBINDER, '--'],
      env: { ...tracerEnv(receiver, 'http/protobuf'), OTEL_SERVICE_NAME: 'metrics-server', OTEL_METRIC_EXPORT_INTERVAL: '500' },
    });
    try {
      for (let i = 0; i < 3; i++) await (await fetch(`${server.url}/hello`)).text();
      const points = await receiver.waitForMetrics(
        (all) =>
          all.some((p) => p.name === 'http.server.request.duration' && p.resource['service.name'] === 'metrics-server' && (p.count ?? 0) >= 3) &&
          // ptrace mode counts its stops; the fast path counts the syscalls its stub handled.
          all.some((p) => p.name === ((process.env.RBINDER_MODE ?? 'fast') === 'fast' ? 'rbinder.fastpath.traps' : 'rbinder.syscall.stops')),
        20_000,
      );
      const duration = points.filter((p) => p.name === 'http.server.request.duration' && p.resource['service.name'] === 'metrics-server');
      expect(duration.at(-1)?.attributes).toMatchObject({ 'http.request.method': 'GET', 'http.response.status_code': 200 });
      expect(points.some((p) => p.name === 'rbinder.connections.tracked' && (p.value ?? 0) >= 1)).toBe(true);
    } finally {
      await server.stop();
    }
  });
});

describe('span encoding', () => {
  // The engine writes the OTLP bytes of sampled spans (docs/decisions/0005), unless told not to;
  // either way the receiver gets the same span. The engine's exit counters say who encoded it.
  it.each([
    ['engine', {}],
    ['sdk', { RBINDER_SPAN_ENCODING: 'sdk' }],
  ])('exports the span when the %s encodes it', async (who, extra) => {
    const name = `encoding-${who}`;
    const server = await startServer('node', {
      wrap: [RBINDER, '--'],
      env: { ...tracerEnv(receiver, 'http/protobuf'), OTEL_SERVICE_NAME: name, RBINDER_LOG_LEVEL: 'debug', ...extra },
    });
    try {
      await (await fetch(`${server.url}/hello?x=1`)).text();
      const spans = await receiver.waitFor((all) => all.some((s) => s.resource['service.name'] === name), 20_000);
      const span = spans.find((s) => s.resource['service.name'] === name)!;
      expect(span.attributes).toMatchObject({ 'url.path': '/hello', 'url.query': 'x=1', 'http.response.status_code': 200 });
    } finally {
      await server.stop();
    }
    const counters = server
      .stderr()
      .split('\n')
      .filter((line) => line.includes('engine counters at exit'))
      .map((line) => JSON.parse(line) as { stats: { spansEncoded: number } });
    expect(counters).toHaveLength(1);
    if (who === 'engine') expect(counters[0].stats.spansEncoded).toBeGreaterThanOrEqual(1);
    else expect(counters[0].stats.spansEncoded).toBe(0);
  });
});

describe('metrics of unsampled requests', () => {
  it('counts every request in http.server.request.duration, also those whose traces are not sampled', async () => {
    const server = await startServer('node', {
      wrap: [RBINDER, '--'],
      env: {
        ...tracerEnv(receiver, 'http/protobuf'),
        OTEL_SERVICE_NAME: 'metrics-unsampled',
        OTEL_METRIC_EXPORT_INTERVAL: '500',
        OTEL_TRACES_SAMPLER: 'always_off',
      },
    });
    try {
      for (let i = 0; i < 4; i++) await (await fetch(`${server.url}/hello`)).text();
      const points = await receiver.waitForMetrics(
        (all) => all.some((p) => p.name === 'http.server.request.duration' && p.resource['service.name'] === 'metrics-unsampled' && (p.count ?? 0) >= 4),
        20_000,
      );
      const duration = points.filter((p) => p.name === 'http.server.request.duration' && p.resource['service.name'] === 'metrics-unsampled');
      expect(duration.at(-1)?.count).toBe(4);
      expect(receiver.spans().filter((s) => s.resource['service.name'] === 'metrics-unsampled')).toEqual([]);
    } finally {
      await server.stop();
    }
  });
});

describe('inside a restrictive container seccomp profile', () => {
  it('traces with /proc alone where pidfd_getfd and process_vm_readv/writev are refused', async () => {
    // containerd's RuntimeDefault profile allows ptrace but not these without CAP_SYS_PTRACE; the
    // variables make rbinder take its /proc fallbacks from the start.
    const server = await startServer('python', {
      wrap: [RBINDER, '--service-name', 'proc-only', '--'],
      env: { ...tracerEnv(receiver), RBINDER_FORCE_PROC_NET: '1', RBINDER_FORCE_PROC_MEM: '1' },
    });
    try {
      await (await fetch(`${server.url}/hello?via=proc`)).text();
      const spans = await receiver.waitFor((all) => all.some((s) => s.resource['service.name'] === 'proc-only'), 20_000);
      const span = spans.find((s) => s.resource['service.name'] === 'proc-only')!;
      expect(span.attributes).toMatchObject({
        'url.path': '/hello',
        'url.query': 'via=proc',
        'http.response.status_code': 200,
        'network.peer.address': '127.0.0.1',
      });
      expect(span.attributes['network.peer.port']).toEqual(expect.any(Number));
      // The fast path needs pidfd_getfd for its shared memory: ptrace stops instead.
      expect(span.resource['rbinder.tracer.mode']).toBe('ptrace');
    } finally {
      await server.stop();
    }
  });
});

describe('the mode', () => {
  it('reports how each process is traced (fast by default)', async () => {
    const mode = process.env.RBINDER_MODE ?? 'fast';
    const server = await startServer('go', {
      wrap: [RBINDER, '--service-name', 'mode-report', '--'],
      env: tracerEnv(receiver),
    });
    try {
      await (await fetch(`${server.url}/hello`)).text();
      const spans = await receiver.waitFor((all) => all.some((s) => s.resource['service.name'] === 'mode-report'), 20_000);
      const span = spans.find((s) => s.resource['service.name'] === 'mode-report')!;
      expect(span.resource['rbinder.tracer.mode']).toBe(mode);
      expect(span.attributes['http.response.status_code']).toBe(200);
    } finally {
      await server.stop();
    }
  });
});
