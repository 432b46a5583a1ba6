// Load shedding, JavaScript side. When spans arrive faster than an exporter sends them (the CPUs
// are busy and --export-priority idle leaves export only what the program does not use, or the
// collector is slow), a BatchSpanProcessor's queue fills and the SDK drops whatever arrives next:
// random spans of random traces. Instead, once a queue is half full the engine is told that export
// is behind, and it stops sampling traces that would start here (native/src/engine/tracker.h):
// fewer traces, each whole, also in the services downstream, which get the unsampled flag. When
// every queue is down to an eighth, sampling resumes. Spans of traces sampled upstream still come;
// a full queue drops them here, counted (rbinder.spans.dropped), as the SDK would.

import type { ExportResult } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';

/** The spans one BatchSpanProcessor holds: handed to it and not yet to its exporter. */
export class ExportBacklog {
  private held = 0;

  constructor(
    /** The processor's maxQueueSize. */
    readonly capacity: number,
    private readonly changed: () => void,
  ) {}

  get queued(): number {
    return this.held;
  }

  /** A span is about to go to the processor: false when its queue is full (drop the span). */
  admit(): boolean {
    if (this.held >= this.capacity) return false;
    this.held++;
    return true;
  }

  /** The processor handed `n` spans to its exporter. */
  sent(n: number): void {
    this.held = Math.max(0, this.held - n);
    this.changed();
  }

  /** The exporter between the processor and `exporter`, counting what leaves the queue. */
  wrap(exporter: SpanExporter): SpanExporter {
    return {
      export: (spans: ReadableSpan[], done: (result: ExportResult) => void): void => {
        this.sent(spans.length);
        exporter.export(spans, done);
      },
      shutdown: () => exporter.shutdown(),
      forceFlush: () => exporter.forceFlush?.() ?? Promise.resolve(),
    };
  }
}

/** Whether export is behind, over all processors, with hysteresis; reports each change once. */
export class ExportPressure {
  private behind = false;
  private everBehind = false;

  constructor(
    private readonly backlogs: readonly ExportBacklog[],
    private readonly report: (behind: boolean, first: boolean) => void,
  ) {}

  /** Re-evaluates after spans were queued or sent. */
  update(): void {
    const next = this.behind
      ? this.backlogs.some((b) => b.queued > b.capacity / 8)
      : this.backlogs.some((b) => b.queued >= b.capacity / 2);
    if (next === this.behind) return;
    this.behind = next;
    const first = next && !this.everBehind;
    if (next) this.everBehind = true;
    this.report(next, first);
  }
}
