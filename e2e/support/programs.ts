// Typed launchers for the test programs in tracer/test/fixtures, with or without the tracer:
// `wrap` is put in front of the program's argv, e.g. ['bin/rbinder', '--'].
//
// Go programs are built with ensureGoBinary; Java ones are compiled once with ensureJavaClasses
// and run as `java -cp <classes> Server` (about 0.35 s to listen, against about 1.1 s for the
// single-file launch `java Server.java`, which compiles on every start).

import { join } from 'node:path';
import { ensureGoBinary, ensureJavaClasses } from './build';
import { repoRoot, spawnTracked, terminate, waitForStdout, exitWithin, killGroup, type ExitResult } from './process';
import type { ChildProcess } from 'node:child_process';

export type { ExitResult } from './process';

export type Lang = 'node' | 'python' | 'java' | 'go';
export type ServerKind = Lang | 'python-forking';
export type Fixture = `${ServerKind}-server` | `${Lang}-client` | 'python-pipeline-client' | 'node-not-http';

export const fixturesDir = join(repoRoot, 'tracer', 'test', 'fixtures');

export interface ProgramOptions {
  /** argv prefix, e.g. ['bin/rbinder', '--']; relative paths resolve against the repo root. */
  wrap?: string[];
  /** Added to the environment (which is otherwise inherited). */
  env?: Record<string, string>;
  /** Default: the repo root. */
  cwd?: string;
}

export interface RunningServer {
  port: number;
  /** "http://127.0.0.1:PORT" */
  url: string;
  /** The spawned process: the tracer when wrapped, else the server. */
  proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** SIGTERM, then wait (SIGKILL to the process group after graceMs); the exit of proc. */
  stop(graceMs?: number): Promise<ExitResult>;
}

export interface RunResult extends ExitResult {
  stdout: string;
  stderr: string;
  /** Killed (SIGKILL to its process group) after timeoutMs. */
  timedOut: boolean;
}

/** The argv that runs a fixture (building it first if needed). */
export async function fixtureCommand(fixture: Fixture): Promise<string[]> {
  const node = process.execPath;
  switch (fixture) {
    case 'node-server':
      return [node, join(fixturesDir, 'node', 'server.js')];
    case 'node-client':
      return [node, join(fixturesDir, 'node', 'client.js')];
    case 'node-not-http':
      return [node, join(fixturesDir, 'node', 'not_http.js')];
    case 'python-server':
      return ['python3', join(fixturesDir, 'python', 'server.py')];
    case 'python-forking-server':
      return ['python3', join(fixturesDir, 'python', 'forking_server.py')];
    case 'python-client':
      return ['python3', join(fixturesDir, 'python', 'client.py')];
    case 'python-pipeline-client':
      return ['python3', join(fixturesDir, 'python', 'pipeline_client.py')];
    case 'java-server':
      return ['java', '-cp', await ensureJavaClasses(join(fixturesDir, 'java')), 'Server'];
    case 'java-client':
      return ['java', '-cp', await ensureJavaClasses(join(fixturesDir, 'java')), 'Client'];
    case 'go-server':
      return [await ensureGoBinary(join(fixturesDir, 'go', 'server'), 'fixture-go-server')];
    case 'go-client':
      return [await ensureGoBinary(join(fixturesDir, 'go', 'client'), 'fixture-go-client')];
  }
}

/** Starts a fixture server on an ephemeral port and waits for its "LISTENING <port>" line. */
export async function startServer(kind: ServerKind, opts: ProgramOptions & { startTimeoutMs?: number } = {}): Promise<RunningServer> {
  const argv = [...(opts.wrap ?? []), ...(await fixtureCommand(`${kind}-server`)), '0'];
  const t = spawnTracked(argv, { cwd: opts.cwd, env: { ...process.env, ...opts.env } });
  let port: number;
  try {
    const m = await waitForStdout(t, /^LISTENING (\d+)$/m, opts.startTimeoutMs ?? 30_000, `${kind} server`);
    port = Number(m[1]);
  } catch (err) {
    if (t.proc.pid !== undefined) killGroup(t.proc.pid, 'SIGKILL');
    throw err;
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    proc: t.proc,
    stdout: t.stdout,
    stderr: t.stderr,
    stop: (graceMs) => terminate(t, graceMs),
  };
}

/** Runs a fixture (e.g. a client) to completion. */
export async function runFixture(fixture: Fixture, args: string[], opts: ProgramOptions & { timeoutMs?: number } = {}): Promise<RunResult> {
  const argv = [...(opts.wrap ?? []), ...(await fixtureCommand(fixture)), ...args];
  const t = spawnTracked(argv, { cwd: opts.cwd, env: { ...process.env, ...opts.env } });
  let result = await exitWithin(t, opts.timeoutMs ?? 60_000);
  const timedOut = result === undefined;
  if (!result) {
    if (t.proc.pid !== undefined) killGroup(t.proc.pid, 'SIGKILL');
    result = await t.exited;
  }
  return { ...result, stdout: t.stdout(), stderr: t.stderr(), timedOut };
}

/**
 * Runs a client fixture: args are `URL [METHOD] [BODYFILE] [--count N] [--chunked]`. Each
 * response is printed as a line `STATUS <code> LENGTH <n> SHA256 <hex>`; see parseResponses.
 */
export function runClient(lang: Lang, args: string[], opts: ProgramOptions & { timeoutMs?: number } = {}): Promise<RunResult> {
  return runFixture(`${lang}-client`, args, opts);
}

export interface ClientResponse {
  status: number;
  length: number;
  sha256: string;
}

/** The responses a client fixture (or pipeline_client.py) printed, in order. */
export function parseResponses(stdout: string): ClientResponse[] {
  return [...stdout.matchAll(/^STATUS (\d+) LENGTH (\d+) SHA256 ([0-9a-f]{64})$/gm)].map((m) => ({
    status: Number(m[1]),
    length: Number(m[2]),
    sha256: m[3] ?? '',
  }));
}

/** The body of GET /chunked?size=n, as every fixture server produces it. */
export function chunkedBody(n: number): Buffer {
  const pattern = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/';
  return Buffer.from(pattern.repeat(Math.ceil(n / pattern.length)).slice(0, n));
}
