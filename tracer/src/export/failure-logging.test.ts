import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { PushMetricExporter, ResourceMetrics } from '@opentelemetry/sdk-metrics';
import { AggregationTemporality, InstrumentType } from '@opentelemetry/sdk-metrics';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../log';
import { ExportFailureStreak, FailureLoggingMetricExporter, FailureLoggingSpanExporter, describeError } from './failure-logging';

interface LogLine {
  level: string;
  msg: string;
  [key: string]: unknown;
}

function capture() {
  const lines: LogLine[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (line: string) => lines.push(JSON.parse(line) as LogLine) } });
  return { logger, lines, warnings: () => lines.filter((l) => l.level === 'warn') };
}

const SUCCESS: ExportResult = { code: ExportResultCode.SUCCESS };
const FAILED = (message: string): ExportResult => ({ code: ExportResultCode.FAILED, error: new Error(message) });

/** Answers each export with the next scripted behaviour. */
function scriptedSpanExporter(script: Array<ExportResult | 'throw'>): SpanExporter {
  let i = 0;
  return {
    export(_spans, done) {
      const next = script[i++] ?? SUCCESS;
      if (next === 'throw') throw new Error('exporter bug');
      done(next);
    },
    shutdown: () => Promise.reject(new Error('shutdown failed')),
    forceFlush: () => Promise.reject(new Error('flush failed')),
  };
}

async function exportOnce(exporter: SpanExporter): Promise<ExportResult> {
  return new Promise((resolve) => exporter.export([] as ReadableSpan[], resolve));
}

describe('FailureLoggingSpanExporter', () => {
  it('warns once per streak and once on recovery, streak after streak', async () => {
    const { logger, warnings } = capture();
    const exporter = new FailureLoggingSpanExporter(
      scriptedSpanExporter([FAILED('ECONNREFUSED'), FAILED('ECONNREFUSED'), FAILED('timeout'), SUCCESS, SUCCESS, FAILED('503'), SUCCESS]),
      new ExportFailureStreak(logger, 'traces', 'http://collector:4318/v1/traces'),
      logger,
    );
    const results = [];
    for (let i = 0; i < 7; i++) results.push((await exportOnce(exporter)).code);
    expect(results).toEqual([1, 1, 1, 0, 0, 1, 0]);
    expect(warnings().map((l) => [l.msg.split(';')[0], l.error ?? l.failedExports])).toEqual([
      ['traces export failed', 'ECONNREFUSED'],
      ['export recovered', 3],
      ['traces export failed', '503'],
      ['export recovered', 1],
    ]);
    expect(warnings()[0].endpoint).toBe('http://collector:4318/v1/traces');
  });

  it('turns a throwing exporter into a failed result, and never rejects on flush or shutdown', async () => {
    const { logger, warnings } = capture();
    const exporter = new FailureLoggingSpanExporter(scriptedSpanExporter(['throw']), new ExportFailureStreak(logger, 'traces', 'x'), logger);
    const result = await exportOnce(exporter);
    expect(result.code).toBe(ExportResultCode.FAILED);
    expect(result.error?.message).toBe('exporter bug');
    expect(warnings()).toHaveLength(1);
    await expect(exporter.forceFlush()).resolves.toBeUndefined();
    await expect(exporter.shutdown()).resolves.toBeUndefined();
  });

  it('reports an exporter that both calls back and throws only once', async () => {
    const { logger, lines } = capture();
    const inner: SpanExporter = {
      export(_spans, done) {
        done(FAILED('first'));
        throw new Error('second');
      },
      shutdown: () => Promise.resolve(),
    };
    const exporter = new FailureLoggingSpanExporter(inner, new ExportFailureStreak(logger, 'traces', 'x'), logger);
    const calls: ExportResult[] = [];
    exporter.export([], (r) => calls.push(r));
    expect(calls).toHaveLength(1);
    expect(lines.filter((l) => /export failed/.test(l.msg))).toHaveLength(1);
  });
});

describe('FailureLoggingMetricExporter', () => {
  it('keeps the inner exporter temporality and aggregation choices', () => {
    const { logger } = capture();
    const inner: PushMetricExporter = {
      export: (_m, done) => done(SUCCESS),
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve(),
      selectAggregationTemporality: () => AggregationTemporality.DELTA,
    };
    const exporter = new FailureLoggingMetricExporter(inner, new ExportFailureStreak(logger, 'metrics', 'x'), logger);
    expect(exporter.selectAggregationTemporality?.(InstrumentType.COUNTER)).toBe(AggregationTemporality.DELTA);
    expect(exporter.selectAggregation).toBeUndefined();
  });

  it('logs failure and recovery like the span exporter', async () => {
    const { logger, warnings } = capture();
    const script = [FAILED('refused'), SUCCESS];
    const inner: PushMetricExporter = {
      export: (_m, done) => done(script.shift() ?? SUCCESS),
      forceFlush: () => Promise.reject(new Error('x')),
      shutdown: () => Promise.reject(new Error('x')),
    };
    const exporter = new FailureLoggingMetricExporter(inner, new ExportFailureStreak(logger, 'metrics', 'http://c/v1/metrics'), logger);
    for (let i = 0; i < 2; i++) await new Promise((resolve) => exporter.export({} as ResourceMetrics, resolve));
    expect(warnings().map((l) => l.msg)).toEqual(['metrics export failed; further failures are not logged until an export succeeds', 'export recovered']);
    await expect(exporter.shutdown()).resolves.toBeUndefined();
  });
});

describe('describeError', () => {
  it.each<[unknown, string]>([
    [new Error('connect ECONNREFUSED 127.0.0.1:4318'), 'connect ECONNREFUSED 127.0.0.1:4318'],
    [Object.assign(new Error('Bad Request'), { code: 400 }), 'Bad Request (400)'],
    [Object.assign(new Error('Unexpected status 400'), { code: 400 }), 'Unexpected status 400'],
    ['plain string', 'plain string'],
    [undefined, 'unknown error'],
  ])('%s', (error, expected) => {
    expect(describeError(error)).toBe(expected);
  });
});
