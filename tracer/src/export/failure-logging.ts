// Exporter decorators that report export failures without flooding the traced program's stderr:
// one warning when a streak of failures starts, one line when exports work again.
// They never throw: an unreachable collector must not take the tracer (and so the program) down.

import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { ResourceMetrics, PushMetricExporter } from '@opentelemetry/sdk-metrics';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import type { Logger } from '../log';

/** Tracks one exporter's run of consecutive failures. */
export class ExportFailureStreak {
  private failures = 0;

  constructor(
    private readonly logger: Logger,
    /** "traces" or "metrics". */
    private readonly signal: string,
    /** Where the exporter sends (for the log line). */
    private readonly endpoint: string,
  ) {}

  get failing(): boolean {
    return this.failures > 0;
  }

  report(result: ExportResult): void {
    if (result.code === ExportResultCode.SUCCESS) {
      if (this.failures > 0) {
        // At warn, like the failure: whoever saw that one must also see that it is over.
        this.logger.warn(
          { signal: this.signal, endpoint: this.endpoint, failedExports: this.failures },
          'export recovered',
        );
      }
      this.failures = 0;
      return;
    }
    if (this.failures === 0) {
      this.logger.warn(
        { signal: this.signal, endpoint: this.endpoint, error: describeError(result.error) },
        `${this.signal} export failed; further failures are not logged until an export succeeds`,
      );
    } else {
      this.logger.debug({ signal: this.signal, error: describeError(result.error) }, 'export failed again');
    }
    this.failures++;
  }
}

export function describeError(error: unknown): string {
  if (error instanceof Error) {
    // OTLPExporterError carries the HTTP status in `code`.
    const code = (error as { code?: unknown }).code;
    const message = error.message || error.name;
    return code !== undefined && !message.includes(String(code)) ? `${message} (${String(code)})` : message;
  }
  return error === undefined ? 'unknown error' : String(error);
}

function failed(error: unknown): ExportResult {
  return { code: ExportResultCode.FAILED, error: error instanceof Error ? error : new Error(String(error)) };
}

/** Shared shape of the two decorators: both signals export the same way. */
function exportReporting<T>(
  exportFn: (items: T, done: (result: ExportResult) => void) => void,
  items: T,
  streak: ExportFailureStreak,
  resultCallback: (result: ExportResult) => void,
): void {
  let reported = false;
  const done = (result: ExportResult): void => {
    if (reported) return; // an exporter that both throws and calls back must not count twice
    reported = true;
    streak.report(result);
    resultCallback(result);
  };
  try {
    exportFn(items, done);
  } catch (err) {
    done(failed(err));
  }
}

async function quietly(logger: Logger, what: string, action: (() => Promise<void>) | undefined): Promise<void> {
  try {
    await action?.();
  } catch (err) {
    logger.debug({ error: describeError(err) }, `${what} failed`);
  }
}

export class FailureLoggingSpanExporter implements SpanExporter {
  constructor(
    private readonly exporter: SpanExporter,
    private readonly streak: ExportFailureStreak,
    private readonly logger: Logger,
  ) {}

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    exportReporting((s, done) => this.exporter.export(s, done), spans, this.streak, resultCallback);
  }

  forceFlush(): Promise<void> {
    return quietly(this.logger, 'span exporter flush', this.exporter.forceFlush?.bind(this.exporter));
  }

  shutdown(): Promise<void> {
    return quietly(this.logger, 'span exporter shutdown', () => this.exporter.shutdown());
  }
}

export class FailureLoggingMetricExporter implements PushMetricExporter {
  // Forwarded as-is: the reader asks the exporter for temporality (e.g. OTLP's
  // OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE) and aggregation.
  readonly selectAggregationTemporality?: PushMetricExporter['selectAggregationTemporality'];
  readonly selectAggregation?: PushMetricExporter['selectAggregation'];

  constructor(
    private readonly exporter: PushMetricExporter,
    private readonly streak: ExportFailureStreak,
    private readonly logger: Logger,
  ) {
    this.selectAggregationTemporality = exporter.selectAggregationTemporality?.bind(exporter);
    this.selectAggregation = exporter.selectAggregation?.bind(exporter);
  }

  export(metrics: ResourceMetrics, resultCallback: (result: ExportResult) => void): void {
    exportReporting((m, done) => this.exporter.export(m, done), metrics, this.streak, resultCallback);
  }

  forceFlush(): Promise<void> {
    return quietly(this.logger, 'metric exporter flush', () => this.exporter.forceFlush());
  }

  shutdown(): Promise<void> {
    return quietly(this.logger, 'metric exporter shutdown', () => this.exporter.shutdown());
  }
}
