// wrk as the load generator: keep-alive HTTP/1.1, results from bench/wrk/report.lua as JSON.

import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from '../../e2e/support/process';

const run = promisify(execFile);
const REPORTER = join(repoRoot, 'bench', 'wrk', 'report.lua');

export interface WrkOptions {
  url: string;
  connections: number;
  threads: number;
  /** Whole seconds (wrk's unit), at least 1. */
  durationS: number;
  /** taskset CPU list for wrk (pinned scenarios). */
  cpus?: string;
}

export interface WrkResult {
  requests: number;
  durationUs: number;
  rps: number;
  /** Socket errors and non-2xx/3xx answers. */
  errors: number;
  latencyUs: { mean: number; p50: number; p90: number; p99: number; max: number };
}

interface WrkJson {
  requests: number;
  durationUs: number;
  errors: Record<'connect' | 'read' | 'write' | 'status' | 'timeout', number>;
  latencyUs: { mean: number; stdev: number; max: number; p50: number; p90: number; p99: number };
}

export async function runWrk(o: WrkOptions): Promise<WrkResult> {
  const args = ['-t', String(o.threads), '-c', String(o.connections), '-d', `${Math.max(1, Math.round(o.durationS))}s`, '--timeout', '10s', '--latency', '-s', REPORTER, o.url];
  const argv = o.cpus ? ['taskset', '-c', o.cpus, 'wrk', ...args] : ['wrk', ...args];
  const { stdout } = await run(argv[0] as string, argv.slice(1), { timeout: (o.durationS + 60) * 1000, maxBuffer: 1 << 20 });
  const line = /^WRK_JSON (.*)$/m.exec(stdout);
  if (!line?.[1]) throw new Error(`wrk printed no result:\n${stdout}`);
  const j = JSON.parse(line[1]) as WrkJson;
  const e = j.errors;
  return {
    requests: j.requests,
    durationUs: j.durationUs,
    rps: j.durationUs > 0 ? (j.requests * 1e6) / j.durationUs : 0,
    errors: e.connect + e.read + e.write + e.status + e.timeout,
    latencyUs: { mean: j.latencyUs.mean, p50: j.latencyUs.p50, p90: j.latencyUs.p90, p99: j.latencyUs.p99, max: j.latencyUs.max },
  };
}
