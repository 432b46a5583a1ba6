import { ExportResultCode } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { ExportBacklog, ExportPressure } from './backlog';

describe('ExportBacklog', () => {
  it('admits up to its capacity and counts what its exporter is handed', async () => {
    let changes = 0;
    const backlog = new ExportBacklog(3, () => changes++);
    expect([backlog.admit(), backlog.admit(), backlog.admit(), backlog.admit()]).toEqual([true, true, true, false]);
    expect(backlog.queued).toBe(3);

    const handed: number[] = [];
    const inner: SpanExporter = {
      export: (spans, done) => {
        handed.push(spans.length);
        done({ code: ExportResultCode.SUCCESS });
      },
      shutdown: () => Promise.resolve(),
    };
    const spans = [{}, {}] as ReadableSpan[];
    const result = await new Promise((resolve) => backlog.wrap(inner).export(spans, resolve));
    expect(result).toEqual({ code: ExportResultCode.SUCCESS });
    expect(handed).toEqual([2]);
    expect(backlog.queued).toBe(1);
    expect(changes).toBe(1);
    expect(backlog.admit()).toBe(true);
    backlog.sent(10); // never below zero
    expect(backlog.queued).toBe(0);
  });
});

describe('ExportPressure', () => {
  it('is behind from half a queue, caught up at an eighth, and reports each change once', () => {
    const a = new ExportBacklog(16, () => undefined);
    const b = new ExportBacklog(16, () => undefined);
    const reports: [boolean, boolean][] = [];
    const pressure = new ExportPressure([a, b], (behind, first) => reports.push([behind, first]));
    const fill = (backlog: ExportBacklog, n: number): void => {
      for (let i = 0; i < n; i++) backlog.admit();
    };

    fill(a, 7);
    pressure.update();
    expect(reports).toEqual([]);
    fill(b, 8); // one queue half full is enough
    pressure.update();
    pressure.update();
    expect(reports).toEqual([[true, true]]);

    b.sent(5); // 3 left in b, but a holds 7: still behind
    pressure.update();
    a.sent(5);
    pressure.update(); // 2 and 3: both above 16/8
    expect(reports).toEqual([[true, true]]);
    a.sent(2);
    b.sent(1);
    pressure.update();
    expect(reports).toEqual([[true, true], [false, false]]);

    fill(a, 8);
    pressure.update();
    expect(reports).toEqual([[true, true], [false, false], [true, false]]);
  });
});
