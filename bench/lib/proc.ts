// What the harness reads from /proc: process trees, CPU time and RSS, and CPU affinity.

import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

interface ProcStat {
  comm: string;
  ppid: number;
  /** utime + stime of all the process's threads (of the one thread, for a task's stat), µs. */
  cpuUs: number;
}

function readStat(pid: number, path = `/proc/${pid}/stat`): ProcStat | null {
  try {
    const text = readFileSync(path, 'utf8');
    // comm (field 2) may hold spaces and parentheses: the fields after it start past the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
    return { comm: text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')), ppid: Number(fields[1]), cpuUs: (ticks * 1e6) / CLOCK_TICKS };
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

/**
 * CPU time (µs) of every thread of the given processes, summed by thread name with trailing digits
 * dropped (a pool's "worker1", "worker2" count as "worker"): which of the tracer's threads the
 * cost is on (rbinder: the JS thread "node", the upcall thread "rbinder-engine", the ring drain
 * "rbinder-timer", V8's helpers). A thread that exits between two samples takes its time with it.
 */
export function threadCpuUs(pids: number[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const pid of pids) {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // gone
    }
    for (const tid of tids) {
      const stat = readStat(Number(tid), `/proc/${pid}/task/${tid}/stat`);
      if (!stat) continue;
      const name = stat.comm.replace(/\d+$/, '') || stat.comm;
      out.set(name, (out.get(name) ?? 0) + stat.cpuUs);
    }
  }
  return out;
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
