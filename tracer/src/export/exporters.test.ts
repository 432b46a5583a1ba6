import { ConsoleMetricExporter } from '@opentelemetry/sdk-metrics';
import { ConsoleSpanExporter } from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { OTLP_PROTOCOLS, parseCommandLine, type OtlpProtocol, type TracerConfig } from '../config';
import { createMetricExporter, createSpanExporter, otlpEndpoint, type Signal } from './exporters';

describe('otlpEndpoint', () => {
  it.each<[string, Signal, OtlpProtocol, string | undefined, NodeJS.ProcessEnv, string, string | undefined]>([
    ['default http', 'traces', 'http/protobuf', undefined, {}, 'http://localhost:4318/v1/traces', undefined],
    ['default grpc', 'metrics', 'grpc', undefined, {}, 'http://localhost:4317', undefined],
    ['env base gets the signal path (http)', 'metrics', 'http/json', undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/' }, 'http://c:4318/v1/metrics', undefined],
    ['env base is used as-is (grpc)', 'traces', 'grpc', undefined, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4317' }, 'http://c:4317', undefined],
    ['per-signal env is used as-is', 'traces', 'http/protobuf', undefined,
      { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t:1234/custom' }, 'http://t:1234/custom', undefined],
    ['flag wins and is passed in code, with the path (http)', 'traces', 'http/protobuf', 'http://f:4318',
      { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t:1234/custom' }, 'http://f:4318/v1/traces', 'http://f:4318/v1/traces'],
    ['flag with a base path (http)', 'metrics', 'http/json', 'https://f/otlp/', {}, 'https://f/otlp/v1/metrics', 'https://f/otlp/v1/metrics'],
    ['flag as the base (grpc)', 'traces', 'grpc', 'http://f:4317', {}, 'http://f:4317', 'http://f:4317'],
  ])('%s', (_name, signal, protocol, flag, env, url, explicit) => {
    expect(otlpEndpoint(signal, protocol, flag, env)).toEqual({ url, explicit });
  });
});

function config(flags: string[]): TracerConfig {
  const parsed = parseCommandLine([...flags, 'app'], {});
  if (!('command' in parsed)) throw new Error('expected a config');
  return parsed;
}

describe('exporter factory', () => {
  it.each(OTLP_PROTOCOLS)('builds the OTLP %s exporters', async (protocol) => {
    const c = config(['--protocol', protocol, '--endpoint', 'http://127.0.0.1:9']);
    const spans = createSpanExporter('otlp', c);
    const metrics = createMetricExporter('otlp', c);
    expect(spans.destination).toBe(protocol === 'grpc' ? 'http://127.0.0.1:9' : 'http://127.0.0.1:9/v1/traces');
    expect(metrics.destination).toBe(protocol === 'grpc' ? 'http://127.0.0.1:9' : 'http://127.0.0.1:9/v1/metrics');
    // http/json: the SDK's exporter; protobuf and grpc: the SDK's base with OtlpSpanSerializer.
    expect(spans.exporter.constructor.name).toBe(protocol === 'http/json' ? 'OTLPTraceExporter' : 'OTLPExporterBase');
    expect(metrics.exporter.constructor.name).toBe('OTLPMetricExporter');
    await spans.exporter.shutdown();
    await metrics.exporter.shutdown();
  });

  it('builds console exporters', () => {
    const c = config([]);
    expect(createSpanExporter('console', c)).toEqual({ exporter: expect.any(ConsoleSpanExporter), destination: 'console' });
    expect(createMetricExporter('console', c)).toEqual({ exporter: expect.any(ConsoleMetricExporter), destination: 'console' });
  });
});
