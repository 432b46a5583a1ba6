// Finding the program as execvp would, so a missing or non-executable one gets the shell's exit
// codes (127, 126) and a message naming it before anything is traced.
import * as fs from 'node:fs';
import * as path from 'node:path';

export type Resolution = { file: string } | { exitCode: 126 | 127; message: string };

export function resolveExecutable(command: string, env: NodeJS.ProcessEnv, cwd = process.cwd()): Resolution {
  if (command.includes('/')) return checkExecutable(path.resolve(cwd, command), command);
  const dirs = (env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':');
  let notExecutable: Resolution | undefined;
  for (const dir of dirs) {
    const candidate = path.resolve(cwd, dir === '' ? '.' : dir, command);
    const result = checkExecutable(candidate, command);
    if ('file' in result) return result;
    if (result.exitCode === 126) notExecutable ??= result;
  }
  return notExecutable ?? { exitCode: 127, message: `rbinder: ${command}: command not found` };
}

function checkExecutable(file: string, command: string): Resolution {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    return { exitCode: 127, message: `rbinder: ${command}: No such file or directory` };
  }
  if (stat.isDirectory()) return { exitCode: 126, message: `rbinder: ${command}: Is a directory` };
  try {
    fs.accessSync(file, fs.constants.X_OK);
  } catch {
    return { exitCode: 126, message: `rbinder: ${command}: Permission denied` };
  }
  return { file };
}

/** The environment as execve wants it. */
export function envArray(env: NodeJS.ProcessEnv): string[] {
  return Object.entries(env)
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([k, v]) => `${k}=${v}`);
}

/** Exit status of rbinder for the program's end, as a shell reports it. */
export function exitStatus(code: number | null, signal: number | null): number {
  if (code !== null) return code;
  if (signal !== null) return 128 + signal;
  return 1;
}

/** Set by bin/rbinder before Node starts: the descriptors rbinder was given. */
export const INHERITED_FDS_VARIABLE = 'RBINDER_INHERITED_FDS';

/**
 * The descriptors to pass on: stdio, and those bin/rbinder recorded as "fd:inode" that still name
 * the same file. Node marks every inherited descriptor close-on-exec at startup, so this cannot be
 * read back once Node runs; anonymous inodes (epoll, eventfd) are never passed, since Node's own
 * look the same.
 */
export function inheritedFds(env: NodeJS.ProcessEnv): number[] {
  const fds = new Set([0, 1, 2]);
  for (const entry of (env[INHERITED_FDS_VARIABLE] ?? '').split(/\s+/)) {
    const match = /^(\d+):(\d+)$/.exec(entry);
    if (!match) continue;
    const fd = Number(match[1]);
    try {
      if (fs.fstatSync(fd).ino !== Number(match[2])) continue;
      if (fs.readlinkSync(`/proc/self/fd/${fd}`).startsWith('anon_inode:')) continue;
      fds.add(fd);
    } catch {
      // closed since: nothing to pass
    }
  }
  return [...fds].sort((a, b) => a - b);
}

/** Set by the launcher (native/src/launcher/main.cc) when it started the program itself. */
export const LAUNCHED_VARIABLE = 'RBINDER_LAUNCHED';

/** A program the launcher started and set up for the fast path, for the engine to adopt. */
export interface LaunchedProgram {
  pid: number;
  /** The trap filter's user-notification listener, inherited. */
  listenerFd: number;
  /** The memfd of the program's shared region (the ring), inherited. */
  regionFd: number;
}

/** RBINDER_LAUNCHED="pid,listener,region", or undefined when Node is to start the program. */
export function launchedProgram(env: NodeJS.ProcessEnv): LaunchedProgram | undefined {
  const match = /^(\d+),(\d+),(\d+)$/.exec(env[LAUNCHED_VARIABLE] ?? '');
  if (!match) return undefined;
  return { pid: Number(match[1]), listenerFd: Number(match[2]), regionFd: Number(match[3]) };
}

/**
 * The program's NODE_OPTIONS, kept aside by the launcher: the tracer's own Node runs without them
 * (a --require of the program's agent would load into the tracer too).
 */
export const PROGRAM_NODE_OPTIONS_VARIABLE = 'RBINDER_PROGRAM_NODE_OPTIONS';

/** The program's environment: rbinder's own, less what bin/rbinder added for itself. */
export function programEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const copy = { ...env };
  delete copy[INHERITED_FDS_VARIABLE];
  delete copy[LAUNCHED_VARIABLE];
  const nodeOptions = copy[PROGRAM_NODE_OPTIONS_VARIABLE];
  delete copy[PROGRAM_NODE_OPTIONS_VARIABLE];
  if (nodeOptions !== undefined) copy.NODE_OPTIONS = nodeOptions;
  return copy;
}
