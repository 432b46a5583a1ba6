// Exporter factory. The OTLP exporters read OTEL_EXPORTER_OTLP_* (endpoints, headers, timeout,
// compression, certificates, temporality) themselves; we pass an option only where a flag
// overrode the environment, so the SDK's precedence rules stay the SDK's.
//
// Each protocol's package is loaded only when chosen: gRPC alone adds ~50 ms of startup.

import { ConsoleMetricExporter, type PushMetricExporter } from '@opentelemetry/sdk-metrics';
import { ConsoleSpanExporter, type SpanExporter } from '@opentelemetry/sdk-trace';
import { OTLPExporterBase } from '@opentelemetry/otlp-exporter-base';
import { TraceExporterMetricsHelper } from '@opentelemetry/otlp-transformer';
import type { ExporterKind, OtlpProtocol, TracerConfig } from '../config';
import { OtlpSpanSerializer } from './otlp-serializer';

export type Signal = 'traces' | 'metrics';

const DEFAULT_HTTP_BASE = 'http://localhost:4318';
const DEFAULT_GRPC_BASE = 'http://localhost:4317';

/**
 * The URL the exporter sends to, resolved as the SDK does (flag > per-signal env > env + path >
 * default). `explicit` is set only when it must be passed in code, i.e. when --endpoint was given.
 */
export function otlpEndpoint(
  signal: Signal,
  protocol: OtlpProtocol,
  flagEndpoint: string | undefined,
  env: NodeJS.ProcessEnv,
): { url: string; explicit: string | undefined } {
  // The HTTP exporters want the full URL when it is configured in code, gRPC the base.
  const withPath = (base: string): string => (protocol === 'grpc' ? base : `${base.replace(/\/+$/, '')}/v1/${signal}`);
  if (flagEndpoint !== undefined) {
    const url = withPath(flagEndpoint);
    return { url, explicit: url };
  }
  const specific = env[`OTEL_EXPORTER_OTLP_${signal.toUpperCase()}_ENDPOINT`]?.trim();
  if (specific) return { url: specific, explicit: undefined };
  const general = env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim();
  if (general) return { url: withPath(general), explicit: undefined };
  return { url: withPath(protocol === 'grpc' ? DEFAULT_GRPC_BASE : DEFAULT_HTTP_BASE), explicit: undefined };
}

export interface CreatedExporter<E> {
  exporter: E;
  /** For log lines: the URL, or "console". */
  destination: string;
}

export function createSpanExporter(kind: ExporterKind, config: TracerConfig): CreatedExporter<SpanExporter> {
  if (kind === 'console') return { exporter: new ConsoleSpanExporter(), destination: 'console' };
  const { protocol } = config.traces;
  const { url, explicit } = otlpEndpoint('traces', protocol, config.endpoint, config.env);
  const options = explicit === undefined ? {} : { url: explicit };
  let exporter: SpanExporter;
  switch (protocol) {
    // The SDK's OTLPTraceExporter for these two protocols, but with OtlpSpanSerializer, which
    // puts the bytes the engine already encoded into the request (docs/decisions/0005).
    case 'grpc': {
      const m = require('@opentelemetry/otlp-grpc-exporter-base') as typeof import('@opentelemetry/otlp-grpc-exporter-base');
      const delegate = m.createOtlpGrpcExportDelegate(
        m.convertLegacyOtlpGrpcOptions(options, 'TRACES'),
        OtlpSpanSerializer,
        'otlp_grpc_span_exporter',
        TraceExporterMetricsHelper,
        undefined,
        'TraceExportService',
        '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
      );
      exporter = new OTLPExporterBase(delegate);
      break;
    }
    case 'http/protobuf': {
      // A subpath export, which this project's module resolution ("node") cannot type: typed by its file.
      const m = require('@opentelemetry/otlp-exporter-base/node-http') as typeof import('@opentelemetry/otlp-exporter-base/build/src/index-node-http');
      const delegate = m.createOtlpHttpExportDelegate(
        m.convertLegacyHttpOptions(options, 'TRACES', 'v1/traces', { 'Content-Type': 'application/x-protobuf' }),
        OtlpSpanSerializer,
        'otlp_http_span_exporter',
        TraceExporterMetricsHelper,
        undefined,
      );
      exporter = new OTLPExporterBase(delegate);
      break;
    }
    case 'http/json': {
      const m = require('@opentelemetry/exporter-trace-otlp-http') as typeof import('@opentelemetry/exporter-trace-otlp-http');
      exporter = new m.OTLPTraceExporter(options);
      break;
    }
  }
  return { exporter, destination: url };
}

export function createMetricExporter(kind: ExporterKind, config: TracerConfig): CreatedExporter<PushMetricExporter> {
  if (kind === 'console') return { exporter: new ConsoleMetricExporter(), destination: 'console' };
  const { protocol } = config.metrics;
  const { url, explicit } = otlpEndpoint('metrics', protocol, config.endpoint, config.env);
  const options = explicit === undefined ? {} : { url: explicit };
  let exporter: PushMetricExporter;
  switch (protocol) {
    case 'grpc': {
      const m = require('@opentelemetry/exporter-metrics-otlp-grpc') as typeof import('@opentelemetry/exporter-metrics-otlp-grpc');
      exporter = new m.OTLPMetricExporter(options);
      break;
    }
    case 'http/protobuf': {
      const m = require('@opentelemetry/exporter-metrics-otlp-proto') as typeof import('@opentelemetry/exporter-metrics-otlp-proto');
      exporter = new m.OTLPMetricExporter(options);
      break;
    }
    case 'http/json': {
      const m = require('@opentelemetry/exporter-metrics-otlp-http') as typeof import('@opentelemetry/exporter-metrics-otlp-http');
      exporter = new m.OTLPMetricExporter(options);
      break;
    }
  }
  return { exporter, destination: url };
}
