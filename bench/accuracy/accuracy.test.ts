// Smoke test of the correlation accuracy harness (bench/accuracy/accuracy.ts) in a quick mode:
// the Python threading server is thread-per-request, so every CLIENT span must have the right
// parent when requests come one at a time.
import { describe, expect, it } from 'vitest';
import { formatTable, runAccuracy, type AccuracyResult, type RowResult } from './accuracy';

describe('accuracy harness, quick mode', () => {
  it('scores the python threading server: exact at concurrency 1', { timeout: 180_000 }, async () => {
    const result: AccuracyResult = await runAccuracy({ apps: ['python-threading'], concurrency: [1, 4], requests: 20, warmup: 4 });

    expect(result.rows.map((r) => [r.app, r.concurrency])).toEqual([
      ['python-threading', 1],
      ['python-threading', 4],
    ]);
    for (const row of result.rows) {
      expect(row.requests).toBe(20);
      expect(row.responsesOk).toBe(20);
      // Every request is accounted for exactly once.
      expect(row.correct + row.roots + row.wrong + row.missing).toBe(row.requests);
      expect(row.matched).toBe(row.requests - row.missing);
      expect(row.correctShare).toBeCloseTo(row.correct / row.requests, 10);
      expect(row.correctInterleaved + row.correctNotInterleaved).toBe(row.correct);
      expect(row.serverThreads).toBeGreaterThan(0);
    }

    const sequential = result.rows[0] as RowResult;
    expect(sequential).toMatchObject({ correct: 20, roots: 0, wrong: 0, missing: 0, correctShare: 1 });
    // A thread per connection: the outbound request is written by the thread that read the inbound one.
    expect(sequential.sameThread).toBe(20);
    expect(sequential.writtenByNonReader).toBe(0);
    // urllib opens a connection per request.
    expect(sequential.newConnection).toBe(20);

    expect(result.machine.cpus).toBeGreaterThan(0);
    const table = formatTable(result);
    expect(table).toContain('| python-threading | 1 | 100.0% (20/20) | 0 | 0 | 0 |');
    expect(sequential.openRequests).toEqual({ correct: 20, roots: 0, wrong: 0 });
  });
});
