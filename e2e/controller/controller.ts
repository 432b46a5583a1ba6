// The real bin/rbinder-controller (operator + webhook in one process) run out of cluster as a child
// process for e2e/controller.e2e.test.ts: spawned in its own process group (killed if the test
// process exits), its stderr (JSON log lines) kept for failure reports.

import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { freePort } from '../support/k8s';
import { exitWithin, killGroup, repoRoot, spawnTracked, terminate, type ExitResult, type Tracked } from '../support/process';

export interface ControllerSettings {
  kubeconfigPath: string;
  /** The controller's namespace (lease, certificate Secret; never injected). */
  namespace: string;
  certDir: string;
  tracerImage: string;
  collectorEndpoint: string;
  /** Loopback port of the webhook; a free one when not given. */
  port?: number;
  extraArgs?: string[];
}

export interface ControllerProcess {
  tracked: Tracked;
  port: number;
  /** https://127.0.0.1:<port>: the base of the URL the API server calls. */
  baseUrl: string;
  argv: string[];
  /** Everything the process wrote to stderr (its JSON log) so far. */
  log(): string;
  /** The last `chars` characters of stdout and stderr, for failure messages. */
  tail(chars?: number): string;
  /** Log lines (parsed JSON) so far. */
  lines(): Record<string, unknown>[];
  running(): boolean;
  /** GET path over HTTPS, trusting the CA the operator wrote into certDir. */
  get(path: string): Promise<{ status: number; body: string }>;
  /** SIGTERM, then the exit (SIGKILL to the group after graceMs). */
  stop(graceMs?: number): Promise<ExitResult>;
  /** SIGKILL to the whole group (cleanup). */
  kill(): void;
}


export async function spawnController(settings: ControllerSettings): Promise<ControllerProcess> {
  const port = settings.port ?? (await freePort());
  const baseUrl = `https://127.0.0.1:${port}`;
  const argv = [
    process.execPath,
    join(repoRoot, 'bin/rbinder-controller'),
    '--kubeconfig', settings.kubeconfigPath,
    '--namespace', settings.namespace,
    '--port', String(port),
    '--bind-address', '127.0.0.1',
    '--cert-dir', settings.certDir,
    '--cert-check-interval', '500',
    '--webhook-url', baseUrl,
    '--tracer-image', settings.tracerImage,
    '--collector-endpoint', settings.collectorEndpoint,
    '--resync-period', '30s',
    '--log-level', 'debug',
    ...(settings.extraArgs ?? []),
  ];
  // No KUBERNETES_SERVICE_HOST or POD_* from the test's environment: out of cluster, as documented.
  const env = { ...process.env };
  for (const k of ['KUBERNETES_SERVICE_HOST', 'KUBERNETES_SERVICE_PORT', 'POD_NAMESPACE', 'POD_NAME', 'KUBECONFIG']) delete env[k];
  const tracked = spawnTracked(argv, { env });
  const running = (): boolean => tracked.proc.exitCode === null && tracked.proc.signalCode === null;
  return {
    tracked,
    port,
    baseUrl,
    argv,
    log: () => tracked.stderr(),
    tail: (chars = 6000) => `\n--- controller stdout ---\n${tracked.stdout().slice(-2000)}\n--- controller stderr (last ${chars} chars) ---\n${tracked.stderr().slice(-chars)}`,
    lines: () =>
      tracked
        .stderr()
        .split('\n')
        .flatMap((l) => {
          try {
            return [JSON.parse(l) as Record<string, unknown>];
          } catch {
            return [];
          }
        }),
    running,
    get: (path) => httpsGet(`${baseUrl}${path}`, settings.certDir),
    stop: (graceMs = 20_000) => terminate(tracked, graceMs),
    kill: () => {
      if (tracked.proc.pid !== undefined) killGroup(tracked.proc.pid, 'SIGKILL');
    },
  };
}

function httpsGet(url: string, certDir: string): Promise<{ status: number; body: string }> {
  const caFile = join(certDir, 'ca.crt');
  if (!existsSync(caFile)) return Promise.reject(new Error(`${caFile} not written yet`));
  const ca = readFileSync(caFile);
  return new Promise((done, fail) => {
    const req = request(url, { ca, timeout: 3_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => done({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: timeout`)));
    req.on('error', fail);
    req.end();
  });
}

/** Resolves with the exit when the process ends within timeoutMs, else undefined. */
export function exitedWithin(c: ControllerProcess, timeoutMs: number): Promise<ExitResult | undefined> {
  return exitWithin(c.tracked, timeoutMs);
}
