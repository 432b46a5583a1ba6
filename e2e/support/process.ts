// Child-process plumbing shared by the support helpers: spawning in a process group that is
// killed if the test process exits, output capture, exit waiting.

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { dirname, join, resolve } from 'node:path';

/** The repository root: the nearest folder above this file with a package.json (works from dist/ too). */
export const repoRoot = findRepoRoot(resolve(__dirname));

function findRepoRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) return resolve(start, '..', '..');
  }
}

export interface ExitResult {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Process groups still alive; SIGKILLed if the test process exits first. */
const live = new Set<number>();
process.on('exit', () => {
  for (const pgid of live) killGroup(pgid, 'SIGKILL');
});

export function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // already gone
  }
}

export interface Tracked {
  proc: ChildProcess;
  /** Everything written to stdout / stderr so far. */
  stdout(): string;
  stderr(): string;
  /** Settles when the process has exited and its output is drained. */
  exited: Promise<ExitResult>;
}

/**
 * Spawns argv in its own process group (so its whole tree can be killed, e.g. a tracer and its
 * tracees, or forked workers) and records its output. Relative paths in argv[0] resolve against
 * the repo root, the default cwd.
 */
export function spawnTracked(argv: string[], opts: SpawnOptions = {}): Tracked {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('empty command');
  const proc = spawn(cmd, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'], ...opts, detached: true });
  let out = '';
  let err = '';
  proc.stdout?.setEncoding('utf8').on('data', (s: string) => (out += s));
  proc.stderr?.setEncoding('utf8').on('data', (s: string) => (err += s));
  const pid = proc.pid;
  if (pid !== undefined) live.add(pid);
  const exited = new Promise<ExitResult>((done) => {
    proc.on('error', (e) => {
      err += `spawn ${cmd}: ${e.message}\n`;
      done({ code: null, signal: null });
    });
    proc.on('exit', () => {
      // Leftovers of a finished program (orphaned children) would keep its pipes open.
      if (pid !== undefined) killGroup(pid, 'SIGKILL');
    });
    proc.on('close', (code, signal) => done({ code, signal })); // exited and output drained
  }).finally(() => {
    if (pid !== undefined) live.delete(pid);
  });
  return { proc, stdout: () => out, stderr: () => err, exited };
}

/** Resolves with the exit, or with undefined after timeoutMs. */
export function exitWithin(t: Tracked, timeoutMs: number): Promise<ExitResult | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((done) => (timer = setTimeout(() => done(undefined), timeoutMs)));
  return Promise.race([t.exited, timeout]).finally(() => clearTimeout(timer));
}

/** SIGTERM to the process, then SIGKILL to its whole group if it is still there after graceMs. */
export async function terminate(t: Tracked, graceMs = 10_000): Promise<ExitResult> {
  if (t.proc.exitCode === null && t.proc.signalCode === null) t.proc.kill('SIGTERM');
  const result = await exitWithin(t, graceMs);
  if (result) return result;
  if (t.proc.pid !== undefined) killGroup(t.proc.pid, 'SIGKILL');
  return t.exited;
}

/**
 * Resolves with the first match of `pattern` in the process's stdout; rejects if the process
 * exits or timeoutMs passes first, quoting its output.
 */
export function waitForStdout(t: Tracked, pattern: RegExp, timeoutMs: number, what: string): Promise<RegExpExecArray> {
  return new Promise((done, fail) => {
    const check = (): boolean => {
      const m = pattern.exec(t.stdout());
      if (m) finish(() => done(m));
      return m !== null;
    };
    const timer = setTimeout(() => finish(() => fail(new Error(`${what}: nothing matching ${pattern} in ${timeoutMs} ms${describe(t)}`))), timeoutMs);
    const finish = (settle: () => void): void => {
      clearTimeout(timer);
      t.proc.stdout?.off('data', check);
      settle();
    };
    if (check()) return;
    t.proc.stdout?.on('data', check);
    void t.exited.then((r) => {
      if (!check()) finish(() => fail(new Error(`${what}: exited (${r.code ?? r.signal}) before ${pattern}${describe(t)}`)));
    });
  });
}

/**
 * Resolves once the process has handlers for all of `signals` installed after its last exec
 * (from /proc/PID/status). For rbinder: the native launcher (and the sh script before it) exec
 * Node, which installs its own handlers only once booted; until then a signal sent to rbinder
 * takes its default action (docs/decisions/0004-native-launcher.md).
 */
export async function waitForSignalHandlers(t: Tracked, signals: NodeJS.Signals[], timeoutMs: number): Promise<void> {
  const pid = t.proc.pid;
  if (pid === undefined) throw new Error('the process did not start');
  const wanted = signals.reduce((bits, s) => bits | (1n << BigInt(osConstants.signals[s] - 1)), 0n);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let status = '';
    try {
      status = readFileSync(`/proc/${pid}/status`, 'utf8');
    } catch {
      // reaped already
    }
    if (status === '' || /^State:\s*Z/m.test(status)) throw new Error(`process ${pid} exited before it handled ${signals.join(', ')}${describe(t)}`);
    const name = /^Name:\s*(.*)$/m.exec(status)?.[1] ?? '';
    const caught = BigInt(`0x${/^SigCgt:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0'}`);
    if (!name.startsWith('rbinder') && (caught & wanted) === wanted) return;
    if (Date.now() > deadline) throw new Error(`process ${pid} (${name}) did not handle ${signals.join(', ')} in ${timeoutMs} ms${describe(t)}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * Resolves once rbinder process `pid` runs its engine (a thread named rbinder-engine). With the
 * native launcher the program starts first, and its stub learns the configuration (whether it
 * decides trace context, whether call sites may be patched) only when the engine takes it over.
 */
export async function waitForEngine(pid: number | undefined, timeoutMs: number): Promise<void> {
  if (pid === undefined) throw new Error('the process did not start');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let tasks: string[] = [];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      throw new Error(`process ${pid} exited before its engine started`);
    }
    for (const task of tasks) {
      try {
        if (readFileSync(`/proc/${pid}/task/${task}/comm`, 'utf8').trim() === 'rbinder-engine') return;
      } catch {
        // that thread ended meanwhile
      }
    }
    if (Date.now() > deadline) throw new Error(`process ${pid} did not start its engine in ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function describe(t: Tracked): string {
  return `\n--- stdout ---\n${t.stdout().slice(-4000)}\n--- stderr ---\n${t.stderr().slice(-4000)}`;
}
