// Smoke run of the benchmark harness: hello (unpinned) with 1 s runs and one round, untraced vs
// rbinder --mode ptrace vs the bare ptrace loop. It checks that the harness works and its results
// have the expected shape; the figures themselves (and the targets) live in docs/benchmarks.md.

import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { receiverBinary } from '../e2e/support/otlp-receiver';
import { ensureApt, ensureBarePtrace } from './lib/tools';
import { runBenchmarks } from './run';

const outDir = mkdtempSync(join(tmpdir(), 'rbinder-bench-'));
// Builds and installs (cached) under the hook timeout, so the test's own time is the measuring.
beforeAll(async () => {
  await Promise.all([receiverBinary(), ensureApt('wrk', 'wrk'), ensureBarePtrace()]);
}, 300_000);
afterAll(() => rmSync(outDir, { recursive: true, force: true }));

it('measures hello untraced, under rbinder and under the bare loop', async () => {
  const r = await runBenchmarks({
    quick: true,
    scenarios: ['hello-unpinned'],
    variants: ['rbinder-ptrace', 'bare-entry'],
    outDir,
    updateDocs: false,
    settings: { rounds: 1, durationS: 1, warmupS: 0 },
  });

  const hello = r.scenarios.helloUnpinned;
  expect(hello).toBeDefined();
  expect(hello?.variants.map((v) => v.variant)).toEqual(['untraced', 'rbinder-ptrace', 'bare-entry']);
  expect(hello?.runs.map((x) => x.variant)).toEqual(['untraced', 'rbinder-ptrace', 'untraced', 'bare-entry', 'untraced']);
  for (const v of hello?.variants ?? []) {
    expect(v.rps.median, v.variant).toBeGreaterThan(0);
    expect(v.ratio.median, v.variant).toBeGreaterThan(0);
    expect(v.p99Us.median, v.variant).toBeGreaterThan(0);
    expect(v.errors, v.variant).toBe(0);
  }
  const rbinder = hello?.variants.find((v) => v.variant === 'rbinder-ptrace');
  const bare = hello?.variants.find((v) => v.variant === 'bare-entry');
  // Both tracers counted their stops; rbinder also exported spans and used CPU of its own.
  expect(rbinder?.stopsPerRequest?.total.median).toBeGreaterThan(0);
  expect(bare?.stopsPerRequest?.total.median).toBeGreaterThan(0);
  expect(rbinder?.spansPerRequest.median).toBeGreaterThan(0);
  expect(rbinder?.tracerCpuUsPerRequest.median).toBeGreaterThan(0);
  // Its CPU by thread: the engine's loop served the stops, and no thread used more than the whole.
  const byThread = rbinder?.tracerCpuUsPerRequestByThread ?? {};
  expect(byThread['rbinder-engine']).toBeGreaterThan(0);
  for (const us of Object.values(byThread)) expect(us).toBeLessThanOrEqual((rbinder?.tracerCpuUsPerRequest.max ?? 0) + 0.1);
  expect(readFileSync(join(outDir, 'summary.md'), 'utf8')).toMatch(/### Tracer CPU by thread\n[\s\S]*\| hello unpinned \| .* \| .*rbinder-engine \d/);

  const memory = r.scenarios.memory ?? [];
  const rbinderMemory = memory.find((m) => m.variant === 'rbinder-ptrace');
  expect(rbinderMemory?.tracerLoadMiB).toBeGreaterThan(0);
  expect(memory.find((m) => m.variant === 'untraced')?.appLoadMiB).toBeGreaterThan(0);

  expect(r.machine.nproc).toBeGreaterThan(0);
  expect(r.skipped).toEqual([]);
  const written = JSON.parse(readFileSync(join(outDir, 'results.json'), 'utf8')) as typeof r;
  expect(written.scenarios.helloUnpinned?.variants).toHaveLength(3);
  expect(readFileSync(join(outDir, 'chart.svg'), 'utf8')).toMatch(/^<svg [^>]*>[\s\S]*<\/svg>\n$/);
  expect(existsSync(join(outDir, 'summary.md'))).toBe(true);
}, 120_000);
