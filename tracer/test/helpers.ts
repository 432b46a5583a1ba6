// Shared bits of the tracer integration tests.
import { join } from 'node:path';
import { expect } from 'vitest';
import type { OtlpReceiver } from '../../e2e/support/otlp-receiver';
import { repoRoot } from '../../e2e/support/process';
import type { EngineStats } from '../src/records';

/** The tracer CLI other tests rely on. */
export const RBINDER = join(repoRoot, 'bin', 'rbinder');

/** Environment that makes rbinder export promptly to `receiver` over `protocol`. */
export function tracerEnv(
  receiver: OtlpReceiver,
  protocol: 'http/protobuf' | 'http/json' | 'grpc' = 'http/protobuf',
): Record<string, string> {
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: protocol === 'grpc' ? receiver.grpcEndpoint : receiver.httpEndpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
    OTEL_BSP_SCHEDULE_DELAY: '100',
    OTEL_METRIC_EXPORT_INTERVAL: '60000',
  };
}

/** The engine's counters a tracer run with RBINDER_LOG_LEVEL=debug logged at its exit. */
export function countersAtExit(stderr: string): Partial<EngineStats> {
  const line = stderr.split('\n').find((l) => l.includes('engine counters at exit'));
  expect(line, stderr).toBeDefined();
  return (JSON.parse(line!) as { stats: Partial<EngineStats> }).stats;
}
