// What the harness reads from /proc: process trees, CPU time and RSS, and CPU affinity.

import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

interface ProcStat {
  ppid: number;
  /** utime + stime of all the process's threads, µs. */
  cpuUs: number;
}

function readStat(pid: number): ProcStat | null {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: the fields after it start past the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
    return { ppid: Number(fields[1]), cpuUs: (ticks * 1e6) / CLOCK_TICKS };
  } catch {
    return null; // gone
  }
}

/** All descendants of pid (processes, not threads), found through their parent pids. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    const child = Number(name);
    if (!Number.isInteger(child)) continue;
    const stat = readStat(child);
    if (!stat) continue;
    const list = children.get(stat.ppid) ?? [];
    list.push(child);
    children.set(stat.ppid, list);
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    for (const c of children.get(queue.shift() as number) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

export function cpuUs(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + (readStat(pid)?.cpuUs ?? 0), 0);
}

export function rssKb(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      sum += Number(m?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return sum;
}

/** Sets the CPU affinity of every thread of pid (taskset -a -p). */
export function setAffinity(pid: number, cpus: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}

export function allCpus(): string {
  return execFileSync('sh', ['-c', 'echo 0-$(($(nproc --all) - 1))'], { encoding: 'utf8' }).trim();
}
