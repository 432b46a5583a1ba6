// Engine batches → OpenTelemetry SDK: spans through BatchSpanProcessors to the configured
// exporters, HTTP duration histograms and the engine's counters through a MeterProvider.
// Nothing here throws into the caller, and shutdown is bounded: the traced program's exit must
// never wait on an unreachable collector for longer than --flush-timeout.

import { SpanKind, isValidSpanId, isValidTraceId, type Histogram, type Meter, type ObservableCounter } from '@opentelemetry/api';
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace';
import { rbinderVersion, type TracerConfig } from '../config';
import { log as defaultLogger, type Logger } from '../log';
import type { Batch, EngineStats, SpanRecord } from '../records';
import { BufferedSpanRecord } from '../span-buffer';
import { ExportBacklog, ExportPressure } from './backlog';
import { routeOpenTelemetryDiagnostics } from './diagnostics';
import { createMetricExporter, createSpanExporter } from './exporters';
import { ExportFailureStreak, FailureLoggingMetricExporter, FailureLoggingSpanExporter, describeError } from './failure-logging';
import { HttpDurationProducer, HttpDurationRecorder, HttpDurationSeries, createHttpDurationHistograms, histogramShapeOf, mergingScopes } from './http-metrics';
import { ProcessResources } from './resource';
import { durationMetricAttributes, durationSeconds, toReadableSpan } from './spans';

export interface Telemetry {
  /** Takes one engine batch: process records first, then spans. Never throws. */
  onBatch(batch: Batch): void;
  /** Flushes spans and metrics once; resolves within timeoutMs even if exports hang. Never rejects. */
  shutdown(timeoutMs: number): Promise<void>;
}

export interface TelemetryDeps {
  /** The engine's counters, read at each metric collection. */
  engineStats: () => EngineStats;
  /** Defaults to rbinder's stderr log. */
  logger?: Logger;
  /** Export fell behind (true) or caught up (false): the engine sheds new traces meanwhile (backlog.ts). */
  onExportBehind?: (behind: boolean) => void;
}

export { HTTP_DURATION_BUCKETS } from './http-metrics';

const SAMPLED = 1;

export function createTelemetry(config: TracerConfig, deps: TelemetryDeps): Telemetry {
  return new TelemetryPipeline(config, deps);
}

class TelemetryPipeline implements Telemetry {
  private readonly logger: Logger;
  private readonly resources: ProcessResources;
  private readonly spanProcessors: SpanProcessor[];
  /** One per span processor, in the same order. */
  private readonly backlogs: ExportBacklog[] = [];
  private readonly pressure: ExportPressure;
  /** Spans a full processor queue dropped. */
  private queueDropped = 0;
  private readonly engineStats: () => EngineStats;
  private readonly meterProvider: MeterProvider | undefined;
  /** Request durations: rbinder's own aggregation, or the SDK's instruments where a reader asks for another (http-metrics.ts). */
  private readonly httpDurations: HttpDurationRecorder | { server: Histogram; client: Histogram } | undefined;
  private shutdownOnce: Promise<void> | undefined;
  private badRecords = 0;

  constructor(config: TracerConfig, deps: TelemetryDeps) {
    // The caller has applied config.logLevel and logged config.warnings (see main.ts).
    this.logger = deps.logger ?? defaultLogger;
    routeOpenTelemetryDiagnostics(this.logger);
    this.resources = new ProcessResources(config);

    this.engineStats = deps.engineStats;
    this.spanProcessors = this.buildEach('traces', config.traces.exporters, (kind) => {
      const { exporter, destination } = createSpanExporter(kind, config);
      const backlog = new ExportBacklog(config.batch.maxQueueSize, () => this.pressure.update());
      const processor = new BatchSpanProcessor({
        exporter: backlog.wrap(
          new FailureLoggingSpanExporter(exporter, new ExportFailureStreak(this.logger, 'traces', destination), this.logger),
        ),
        ...config.batch,
      });
      this.backlogs.push(backlog);
      return processor;
    });
    this.pressure = new ExportPressure(this.backlogs, (behind, first) => {
      const queued = Math.max(...this.backlogs.map((b) => b.queued));
      if (first) {
        this.logger.warn(
          { queued, maxQueueSize: config.batch.maxQueueSize, exportPriority: config.exportPriority },
          'span export is behind: traces that start here are not sampled until it catches up (load shedding)',
        );
      } else {
        this.logger.debug({ queued }, behind ? 'span export is behind again' : 'span export caught up');
      }
      try {
        deps.onExportBehind?.(behind);
      } catch (err) {
        this.logger.debug({ error: describeError(err) }, 'cannot tell the engine about the export backlog');
      }
    });

    const metrics = this.buildEach('metrics', config.metrics.exporters, (kind) => {
      const { exporter, destination } = createMetricExporter(kind, config);
      const logged = new FailureLoggingMetricExporter(exporter, new ExportFailureStreak(this.logger, 'metrics', destination), this.logger);
      const shape = histogramShapeOf(logged);
      const producer = shape && new HttpDurationProducer(shape, this.resources.base, { name: 'rbinder', version: rbinderVersion() });
      const reader = new PeriodicExportingMetricReader({
        exporter: mergingScopes(logged),
        exportIntervalMillis: config.metrics.exportIntervalMillis,
        exportTimeoutMillis: config.metrics.exportTimeoutMillis,
        metricProducers: producer ? [producer] : [],
      });
      return { reader, producer };
    });
    if (metrics.length > 0) {
      this.meterProvider = new MeterProvider({ resource: this.resources.base, readers: metrics.map((m) => m.reader) });
      const meter = this.meterProvider.getMeter('rbinder', rbinderVersion());
      const producers = metrics.flatMap((m) => (m.producer ? [m.producer] : []));
      // A reader whose exporter wants another histogram (exponential, say) gets the SDK's
      // instruments, and then so do all: an exchange is recorded in one place only.
      this.httpDurations =
        producers.length === metrics.length ? new HttpDurationRecorder(new HttpDurationSeries(), producers) : createHttpDurationHistograms(meter);
      observeEngineStats(meter, deps.engineStats, () => this.queueDropped, this.logger);
    }
  }

  /** An exporter that cannot be built is skipped: the program runs untraced rather than not at all. */
  private buildEach<K, T>(signal: string, kinds: K[], build: (kind: K) => T): T[] {
    const built: T[] = [];
    for (const kind of kinds) {
      try {
        built.push(build(kind));
      } catch (err) {
        this.logger.error({ signal, exporter: kind, error: describeError(err) }, 'cannot create exporter; this signal is not exported there');
      }
    }
    return built;
  }

  onBatch(batch: Batch): void {
    if (this.shutdownOnce !== undefined) return;
    try {
      for (const process of batch.processes) this.resources.resourceFor(process);
      for (const record of batch.spans) this.onSpan(record);
    } catch (err) {
      this.reportBadRecord(err);
    }
    this.pressure.update();
  }

  private onSpan(record: SpanRecord): void {
    try {
      // Metrics count every exchange, sampled or not, as SDK instrumentations do.
      if (this.httpDurations instanceof HttpDurationRecorder) {
        this.httpDurations.record(record);
      } else if (this.httpDurations !== undefined) {
        const histogram = record.kind === SpanKind.SERVER ? this.httpDurations.server : this.httpDurations.client;
        histogram.record(durationSeconds(record), durationMetricAttributes(record));
      }
      if (this.spanProcessors.length === 0 || (record.traceFlags & SAMPLED) === 0) return;
      if (!(record instanceof BufferedSpanRecord ? record.hasValidIds() : hasValidIds(record))) {
        throw new Error(`invalid span context ${record.traceId}/${record.spanId} (parent "${record.parentSpanId}")`);
      }
      const span = toReadableSpan(record, this.resources.resourceForPid(record.pid));
      for (let i = 0; i < this.spanProcessors.length; i++) {
        if (this.backlogs[i].admit()) this.spanProcessors[i].onEnd(span);
        else this.queueDropped++;
      }
    } catch (err) {
      this.reportBadRecord(err);
    }
  }

  /** A record we cannot export is a tracer bug: say so once, then count. */
  private reportBadRecord(err: unknown): void {
    if (this.badRecords++ === 0) {
      this.logger.warn({ error: describeError(err) }, 'span record dropped; later ones are counted, not logged');
    }
  }

  shutdown(timeoutMs: number): Promise<void> {
    this.shutdownOnce ??= this.flushAndStop(timeoutMs);
    return this.shutdownOnce;
  }

  private async flushAndStop(timeoutMs: number): Promise<void> {
    const stopping = Promise.allSettled([
      ...this.spanProcessors.map((p) => Promise.resolve().then(() => p.shutdown())),
      Promise.resolve().then(() => this.meterProvider?.shutdown()),
    ]);
    let timer: NodeJS.Timeout | undefined;
    // Kept referenced on purpose: the caller is waiting to exit with the program's status,
    // so this promise must settle even if nothing else keeps the event loop alive.
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), Math.max(0, timeoutMs));
    });
    try {
      const outcome = await Promise.race([stopping.then(() => 'done' as const), deadline]);
      if (outcome === 'timeout') {
        this.logger.warn({ timeoutMs }, 'telemetry not fully flushed before the flush timeout; the rest is dropped');
      }
      if (this.badRecords > 1) this.logger.warn({ count: this.badRecords }, 'span records dropped');
      this.reportShedding();
    } catch (err) {
      this.logger.debug({ error: describeError(err) }, 'telemetry shutdown failed');
    } finally {
      clearTimeout(timer);
    }
  }

  /** What load shedding and full queues cost over the whole run, once, at the end. */
  private reportShedding(): void {
    let stats: EngineStats | undefined;
    try {
      stats = this.engineStats();
    } catch {
      // the engine is gone: its counters with it
    }
    const tracesShed = stats?.tracesShed ?? 0;
    const spansDropped = (stats?.spansDropped ?? 0) + this.queueDropped;
    if (tracesShed > 0 || spansDropped > 0) {
      this.logger.warn({ tracesShed, spansDropped }, 'export fell behind: traces were shed or spans dropped (docs/architecture.md, "Load shedding")');
    }
  }
}

function hasValidIds(record: SpanRecord): boolean {
  return isValidTraceId(record.traceId) && isValidSpanId(record.spanId) && (record.parentSpanId === '' || isValidSpanId(record.parentSpanId));
}

/** The engine's counters as metrics: name, description, unit. */
const ENGINE_COUNTERS = {
  stops: ['rbinder.syscall.stops', 'Syscall stops of the traced processes, by syscall and entry/exit.', '{stop}'],
  bytes: ['rbinder.bytes', 'Bytes the traced processes read and wrote on tracked connections.', 'By'],
  tracked: ['rbinder.connections.tracked', 'Connections tracked.', '{connection}'],
  abandoned: ['rbinder.connections.abandoned', 'Connections whose tracking was dropped after an internal error (fail open).', '{connection}'],
  notHttp: ['rbinder.connections.not_http', 'Connections whose first bytes were not HTTP/1.x.', '{connection}'],
  parseErrors: ['rbinder.parse.errors', 'HTTP parse errors.', '{error}'],
  spansDropped: ['rbinder.spans.dropped', 'Finished exchanges lost before export: engine batches JS could not take (spans and request metrics), spans a full export queue could not hold.', '{span}'],
  tracesShed: ['rbinder.traces.shed', 'Traces not sampled here because span export was behind (load shedding).', '{trace}'],
  traps: ['rbinder.fastpath.traps', 'Syscalls the fast path handled in the traced processes after a SIGSYS trap, without a ptrace stop (--mode fast).', '{syscall}'],
  direct: ['rbinder.fastpath.direct_calls', 'Syscalls the fast path handled through a patched call site, without a signal (--mode fast).', '{syscall}'],
  callSites: ['rbinder.fastpath.call_sites', 'Call sites the tracer checked for patching, by verdict (approved, refused).', '{site}'],
  upcalls: ['rbinder.fastpath.upcalls', 'Round trips from the fast path to the tracer: header injections and execs (--mode fast).', '{upcall}'],
  eventsDropped: ['rbinder.fastpath.events.dropped', 'Syscall events the fast path lost to a full ring (--mode fast).', '{event}'],
} as const;

/** The engine's own counters, read once per collection whatever the number of instruments. */
function observeEngineStats(meter: Meter, engineStats: () => EngineStats, queueDropped: () => number, logger: Logger): void {
  const c = Object.fromEntries(
    Object.entries(ENGINE_COUNTERS).map(([key, [name, description, unit]]) => [key, meter.createObservableCounter(name, { description, unit })]),
  ) as Record<keyof typeof ENGINE_COUNTERS, ObservableCounter>;
  meter.addBatchObservableCallback(
    (result) => {
      let stats: EngineStats;
      try {
        stats = engineStats();
      } catch (err) {
        logger.debug({ error: describeError(err) }, 'engine stats unavailable');
        return;
      }
      for (const [syscall, count] of Object.entries(stats.stops)) result.observe(c.stops, count, { syscall });
      result.observe(c.bytes, stats.bytesRead, { direction: 'read' });
      result.observe(c.bytes, stats.bytesWritten, { direction: 'written' });
      result.observe(c.tracked, stats.connectionsTracked);
      result.observe(c.abandoned, stats.connectionsAbandoned);
      result.observe(c.notHttp, stats.connectionsNotHttp);
      result.observe(c.parseErrors, stats.parseErrors);
      result.observe(c.spansDropped, stats.spansDropped + queueDropped());
      result.observe(c.tracesShed, stats.tracesShed ?? 0);
      if (stats.fastPathProcesses) {
        result.observe(c.traps, stats.fastPathTraps ?? 0);
        result.observe(c.direct, stats.fastPathDirect ?? 0);
        result.observe(c.callSites, stats.callSitesApproved ?? 0, { verdict: 'approved' });
        result.observe(c.callSites, stats.callSitesRefused ?? 0, { verdict: 'refused' });
        result.observe(c.upcalls, stats.fastPathUpcalls ?? 0);
        result.observe(c.eventsDropped, stats.fastPathDropped ?? 0);
      }
    },
    Object.values(c),
  );
}
