// A real Kubernetes control plane for the e2e tests: etcd + kube-apiserver +
// kube-controller-manager on loopback (cluster.sh), built from the Go module proxy and cached
// (build.sh). With RBINDER_E2E_KUBECONFIG set, nothing is started and that cluster is used
// instead (e.g. a kind cluster made by kind.sh where Docker exists).

import { Health, KubeConfig } from '@kubernetes/client-node';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { exitWithin, spawnTracked, terminate } from '../support/process';

const scriptsDir = resolve(__dirname);
const clusterScript = join(scriptsDir, 'cluster.sh');
const buildScript = join(scriptsDir, 'build.sh');

export type Component = 'etcd' | 'kube-apiserver' | 'kube-controller-manager' | 'helm';

export interface StartClusterOptions {
  /** State dir (certs, etcd data, logs). Default: a new temp dir, deleted by stop() unless kept. */
  dir?: string;
  /** Time allowed for building missing binaries (a cold Kubernetes build takes tens of minutes). Default 90 min. */
  buildTimeoutMs?: number;
  /** Time allowed from start to ready (binaries already built). Default 3 min. */
  startTimeoutMs?: number;
  /** Keep the state dir after stop(). Default: true when RBINDER_E2E_KEEP=1 or `dir` was given. */
  keep?: boolean;
  /** Where build progress and start-up lines go. Default: process.stderr. */
  log?: (line: string) => void;
}

export interface Cluster {
  /** Admin kubeconfig (identity in system:masters). */
  kubeconfigPath: string;
  kubeConfig: KubeConfig;
  /** https://127.0.0.1:<port> for the local control plane. */
  apiserverUrl: string;
  /** The cluster CA, base64 of the PEM: kubeconfig's certificate-authority-data, a webhook's caBundle format. */
  caData: string;
  /** The cluster CA as PEM text. */
  caPem: string;
  /** true when RBINDER_E2E_KUBECONFIG named the cluster (nothing was started here). */
  external: boolean;
  /** State dir of the local control plane (undefined for an external cluster). */
  dir?: string;
  /** false for an external cluster unless RBINDER_E2E_RESTART_APISERVER gives a command. */
  canRestartApiServer: boolean;
  /** Log file of a local component (etcd, kube-apiserver, kube-controller-manager). */
  logPath(component: Exclude<Component, 'helm'>): string | undefined;
  /**
   * Stops kube-apiserver and starts it again (same port, certs and etcd, so all data stays) and
   * resolves once /readyz answers ok.
   */
  restartApiServer(): Promise<void>;
  /** Stops everything started (idempotent); deletes the state dir unless kept. */
  stop(): Promise<void>;
}

function defaultLog(line: string): void {
  process.stderr.write(`${line}\n`);
}

/**
 * Runs one of the scripts here; its stderr lines go to `log` as they come. Rejects on a non-zero
 * exit or after timeoutMs (killing it), quoting the end of its output.
 */
async function runScript(
  argv: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
  log: (line: string) => void,
): Promise<string> {
  const t = spawnTracked(['bash', ...argv], { env: { ...process.env, ...env } });
  let partial = '';
  t.proc.stderr?.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) log(line);
  });
  const what = argv.map((a) => a.replace(`${scriptsDir}/`, '')).join(' ');
  const result = await exitWithin(t, timeoutMs);
  if (partial) log(partial);
  if (!result) {
    await terminate(t, 5_000);
    throw new Error(`${what}: no result after ${Math.round(timeoutMs / 1000)} s\n${t.stderr().slice(-3000)}`);
  }
  if (result.code !== 0) {
    throw new Error(`${what} failed (${result.code ?? result.signal})\n${t.stderr().slice(-3000)}`);
  }
  return t.stdout();
}

/**
 * Builds the missing pinned binaries (the first Kubernetes build takes tens of minutes; progress
 * goes to `log`) and returns their paths in the cache.
 */
export async function ensureClusterBinaries(
  components: Component[] = ['etcd', 'kube-apiserver', 'kube-controller-manager'],
  opts: Pick<StartClusterOptions, 'buildTimeoutMs' | 'log'> = {},
): Promise<Record<Component, string>> {
  const log = opts.log ?? defaultLog;
  await runScript([buildScript, ...components], {}, opts.buildTimeoutMs ?? 90 * 60_000, log);
  const out = await runScript([buildScript, '--paths'], {}, 30_000, log);
  const paths = {} as Record<Component, string>;
  for (const line of out.trim().split('\n')) {
    const eq = line.indexOf('=');
    paths[line.slice(0, eq) as Component] = line.slice(eq + 1);
  }
  return paths;
}

/** Path of the pinned helm binary, built first if needed. */
export async function helmBinary(opts: Pick<StartClusterOptions, 'buildTimeoutMs' | 'log'> = {}): Promise<string> {
  return (await ensureClusterBinaries(['helm'], opts)).helm;
}

async function readEnvFile(path: string): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  for (const line of (await readFile(path, 'utf8')).split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return env;
}

/** Starts the local control plane, or wraps the cluster named by RBINDER_E2E_KUBECONFIG. */
export async function startCluster(opts: StartClusterOptions = {}): Promise<Cluster> {
  const external = process.env.RBINDER_E2E_KUBECONFIG;
  if (external) return externalCluster(external, opts);

  const log = opts.log ?? defaultLog;
  await ensureClusterBinaries(undefined, opts); // its own, long timeout
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'rbinder-cluster.')));
  const keep = opts.keep ?? (opts.dir !== undefined || process.env.RBINDER_E2E_KEEP === '1');
  const env = {
    RBINDER_CLUSTER_DIR: dir,
    RBINDER_CLUSTER_OWNER_PID: String(process.pid),
    RBINDER_CLUSTER_WATCHDOG_PURGE: keep ? '' : '1',
  };

  // Stop the daemons if this process exits without stop() (the watchdog in cluster.sh covers a kill).
  let stopped = false;
  const onExit = (): void => {
    if (stopped) return;
    try {
      execFileSync('bash', [clusterScript, 'stop'], { env: { ...process.env, ...env }, stdio: 'ignore', timeout: 60_000 });
    } catch {
      // best effort
    }
  };
  process.on('exit', onExit);
  const stop = async (): Promise<void> => {
    if (stopped) return;
    await runScript([clusterScript, 'stop', ...(keep ? [] : ['--purge'])], env, 120_000, log);
    stopped = true;
    process.off('exit', onExit);
    if (keep) log(`[rbinder-cluster] kept ${dir}`);
  };

  try {
    await runScript([clusterScript, 'start'], env, opts.startTimeoutMs ?? 180_000, log);
  } catch (err) {
    await stop().catch(() => undefined);
    if (!keep) await rm(dir, { recursive: true, force: true });
    throw err;
  }
  const info = await readEnvFile(join(dir, 'cluster.env'));
  const kubeconfigPath = info.KUBECONFIG ?? join(dir, 'admin.kubeconfig');
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(kubeconfigPath);
  const caPem = await readFile(join(dir, 'pki', 'ca.crt'), 'utf8');
  return {
    kubeconfigPath,
    kubeConfig,
    apiserverUrl: info.APISERVER_URL ?? '',
    caData: Buffer.from(caPem).toString('base64'),
    caPem,
    external: false,
    dir,
    canRestartApiServer: true,
    logPath: (component) => join(dir, 'logs', `${component}.log`),
    restartApiServer: async () => {
      await runScript([clusterScript, 'restart-apiserver'], env, 180_000, log);
    },
    stop,
  };
}

async function externalCluster(kubeconfigPath: string, opts: StartClusterOptions): Promise<Cluster> {
  const log = opts.log ?? defaultLog;
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(kubeconfigPath);
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster) throw new Error(`RBINDER_E2E_KUBECONFIG=${kubeconfigPath}: no current cluster`);
  let caPem = '';
  if (cluster.caData) caPem = Buffer.from(cluster.caData, 'base64').toString('utf8');
  else if (cluster.caFile && existsSync(cluster.caFile)) caPem = await readFile(cluster.caFile, 'utf8');
  const restartCommand = process.env.RBINDER_E2E_RESTART_APISERVER;
  log(`[rbinder-cluster] using the cluster of RBINDER_E2E_KUBECONFIG: ${cluster.server}`);
  return {
    kubeconfigPath,
    kubeConfig,
    apiserverUrl: cluster.server,
    caData: Buffer.from(caPem).toString('base64'),
    caPem,
    external: true,
    canRestartApiServer: Boolean(restartCommand),
    logPath: () => undefined,
    restartApiServer: async () => {
      if (!restartCommand) throw new Error('restartApiServer on an external cluster needs RBINDER_E2E_RESTART_APISERVER (see e2e/cluster/kind.sh)');
      await runScript(['-c', restartCommand], {}, 180_000, log);
      await waitReadyz(kubeConfig, 180_000);
    },
    stop: async () => undefined, // not ours to stop
  };
}

/** Polls GET /readyz through kubeConfig until it answers ok. */
async function waitReadyz(kubeConfig: KubeConfig, timeoutMs: number): Promise<void> {
  const health = new Health(kubeConfig);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await health.readyz({ timeout: 5_000 }).catch(() => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`/readyz not ok after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 1_000));
  }
}
