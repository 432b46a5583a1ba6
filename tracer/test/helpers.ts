// Shared bits of the tracer integration tests.
import { join } from 'node:path';
import type { OtlpReceiver } from '../../e2e/support/otlp-receiver';
import { repoRoot } from '../../e2e/support/process';

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
