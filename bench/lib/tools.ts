// The third-party things the benchmark runs or compares against, installed on demand into a cache
// outside the repo ($RBINDER_CACHE/bench, else ~/.cache/rbinder/bench) and reused while their
// recipe is unchanged: wrk and strace (apt), the bare ptrace loop (gcc), OpenTelemetry's Node
// auto-instrumentation (npm) and Java agent (Maven Central). Nothing here touches package.json.

import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from '../../e2e/support/process';

const run = promisify(execFile);

/**
 * OpenTelemetry JS, pinned to the 2.x SDK line (experimental packages 0.2xx), the last that runs
 * on Node 20: auto-instrumentations-node 0.82+ and the 0.300+ packages need Node 22.
 */
export const OTEL_NODE_PACKAGES: Record<string, string> = {
  '@opentelemetry/auto-instrumentations-node': '0.81.2',
  '@opentelemetry/sdk-node': '0.223.0',
  '@opentelemetry/exporter-trace-otlp-proto': '0.223.1',
  '@opentelemetry/api': '1.9.1',
};

export const JAVA_AGENT = { group: 'io.opentelemetry.javaagent', artifact: 'opentelemetry-javaagent', version: '2.33.1' };

export function benchCacheDir(): string {
  return process.env.RBINDER_CACHE ? join(process.env.RBINDER_CACHE, 'bench') : join(homedir(), '.cache', 'rbinder', 'bench');
}

export function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

export function which(cmd: string): string | null {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

let aptUpdated = false;

/** Installs a Debian package when `binary` is not on PATH (apt-get update once first). */
export async function ensureApt(pkg: string, binary: string): Promise<string> {
  const found = which(binary);
  if (found) return found;
  log(`installing ${pkg} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (!aptUpdated) {
    await run('apt-get', ['update', '-q'], { env, maxBuffer: 64 << 20 });
    aptUpdated = true;
  }
  await run('apt-get', ['install', '-y', '-q', pkg], { env, maxBuffer: 64 << 20 });
  const installed = which(binary);
  if (!installed) throw new Error(`apt-get install ${pkg} did not provide ${binary}`);
  return installed;
}

function shortHash(...parts: string[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex').slice(0, 12);
}

function tempName(final: string): string {
  return `${final}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** bench/bare/bare-ptrace.c built with gcc -O2, cached by source and compiler version. */
export async function ensureBarePtrace(): Promise<string> {
  const src = join(repoRoot, 'bench', 'bare', 'bare-ptrace.c');
  const { stdout: gccVersion } = await run('gcc', ['--version']);
  const bin = join(benchCacheDir(), `bare-ptrace-${shortHash(await readFile(src, 'utf8'), gccVersion)}`);
  if (existsSync(bin)) return bin;
  await mkdir(benchCacheDir(), { recursive: true });
  const tmp = tempName(bin);
  await run('gcc', ['-O2', '-Wall', '-o', tmp, src]);
  await rename(tmp, bin);
  return bin;
}

/** Installs OTEL_NODE_PACKAGES into the cache; returns the path of the `--require` register module. */
export async function ensureOtelNode(): Promise<string> {
  const specs = Object.entries(OTEL_NODE_PACKAGES).map(([name, version]) => `${name}@${version}`);
  const dir = join(benchCacheDir(), `otel-node-${shortHash(...specs)}`);
  const register = join(dir, 'node_modules', '@opentelemetry', 'auto-instrumentations-node', 'build', 'src', 'register.js');
  if (existsSync(register)) return register;
  log(`installing ${specs.join(' ')} into ${dir}`);
  await mkdir(benchCacheDir(), { recursive: true });
  const tmp = tempName(dir);
  try {
    await run('npm', ['install', '--prefix', tmp, '--no-audit', '--no-fund', '--ignore-scripts', '--loglevel', 'error', ...specs], {
      maxBuffer: 64 << 20,
    });
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    if (!existsSync(register)) throw err;
  }
  return register;
}

/** Fetches the OpenTelemetry Java agent jar from Maven Central with mvn dependency:copy. */
export async function ensureJavaAgent(): Promise<string> {
  const dir = join(benchCacheDir(), 'otel-java');
  const jar = join(dir, `${JAVA_AGENT.artifact}-${JAVA_AGENT.version}.jar`);
  if (existsSync(jar)) return jar;
  log(`fetching ${JAVA_AGENT.artifact} ${JAVA_AGENT.version} with mvn dependency:copy`);
  const tmp = tempName(dir);
  await mkdir(tmp, { recursive: true });
  try {
    await run(
      'mvn',
      ['-B', '-q', 'dependency:copy', `-Dartifact=${JAVA_AGENT.group}:${JAVA_AGENT.artifact}:${JAVA_AGENT.version}`, `-DoutputDirectory=${tmp}`],
      { cwd: tmp, maxBuffer: 64 << 20 },
    );
    await mkdir(dir, { recursive: true });
    await rename(join(tmp, `${JAVA_AGENT.artifact}-${JAVA_AGENT.version}.jar`), jar);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return jar;
}

/** The first line of a command's output (stdout, else stderr), or "" (for the machine description). */
export function versionOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0]?.trim() ?? '';
}
