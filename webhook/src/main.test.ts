// The controller's command line, and the real process: bin/rbinder-controller run from a build
// of webhook/src made for the test (dist/ may not hold it), serving over TLS, stopping on SIGTERM.

import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import * as https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Writable } from 'node:stream';
import { Counter } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repoRoot, spawnTracked, terminate, exitWithin, type Tracked } from '../../e2e/support/process';
import { createLogger } from '../../tracer/src/log';
import type { ClusterLookups } from './admission';
import { createCertificateAuthority, issueServingCertificate, type CertificateAuthority } from './certificates';
import type { TracedWorkloadConfig } from './config';
import { parseControllerArgs, startController, UsageError, type ControllerOptions, type OperatorModule, type ParsedCommandLine } from './main';

const run = promisify(execFile);

/** An operator module with the shape of operator/src/run, recording how it is called. */
function fakeOperator() {
  const calls: { options?: Record<string, unknown>; cacheOptions?: Record<string, unknown>; stopped: boolean } = { stopped: false };
  const state = { healthy: true, ready: true };
  const workloads: Record<string, TracedWorkloadConfig> = { 'shop/web': { serviceName: 'storefront', configHash: 'h1' } };
  const lookup = (namespace: string, name: string): TracedWorkloadConfig | undefined => workloads[`${namespace}/${name}`];
  const module: OperatorModule = {
    operatorCliOptions: [
      { flags: '--namespace <ns>', name: 'namespace', description: 'the namespace', shared: true },
      { flags: '--exclude-namespaces <list>', name: 'excludeNamespaces', description: 'never stamped', shared: true },
      { flags: '--cert-dir <dir>', name: 'certDir', description: 'certificates', shared: true },
      { flags: '--no-leader-elect', name: 'leaderElect', description: 'no lease', default: true },
      { flags: '--collector-image <image>', name: 'collectorImage', description: 'collector image', default: 'otelcol:0' },
    ],
    operatorOptionsFromCli: (values, extra) => ({ ...values, ...extra }),
    runOperator: async (options) => {
      calls.options = options as Record<string, unknown>;
      const registry = calls.options.registry as import('prom-client').Registry;
      new Counter({ name: 'rbinder_operator_reconciles_total', help: 'test', registers: [registry] }).inc();
      return { cache: { lookup }, healthy: () => state.healthy, ready: () => state.ready, stop: async () => void (calls.stopped = true) };
    },
    createTracedWorkloadCache: async (options) => {
      calls.cacheOptions = options as Record<string, unknown>;
      return { lookup };
    },
  };
  return { module, calls, state };
}

function silentLog(): ReturnType<typeof createLogger> {
  return createLogger({ level: 'silent', destination: new Writable({ write: (_c, _e, done) => done() }) });
}

function request(port: number, ca: string, method: 'GET' | 'POST', path: string, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, method, path, ca, servername: 'localhost', agent: false, headers: { 'Content-Type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function reviewOf(pod: unknown, namespace = 'default'): string {
  return JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'u-1', kind: { group: '', version: 'v1', kind: 'Pod' }, namespace, operation: 'CREATE', object: pod } });
}

function parseAll(argv: string[], env: NodeJS.ProcessEnv = {}): ParsedCommandLine {
  const parsed = parseControllerArgs(argv, env);
  if ('help' in parsed) throw new Error('unexpected help');
  return parsed;
}
const parse = (argv: string[], env: NodeJS.ProcessEnv = {}): ControllerOptions => parseAll(argv, env).options;

describe('parseControllerArgs', () => {
  const base = ['--webhook-only', '--tls-cert-file', 'c.pem', '--tls-key-file', 'k.pem', '--tracer-image', 'tracer:1'];

  it('has defaults for everything but the tracer image and the certificate', () => {
    const o = parse(base, { POD_NAMESPACE: 'observability' });
    expect(o).toMatchObject({ webhookOnly: true, port: 9443, certCheckIntervalMs: 10_000, logLevel: 'info', tlsCertFile: 'c.pem', tlsKeyFile: 'k.pem' });
    expect(o.injection).toMatchObject({
      tracerImage: 'tracer:1',
      tracerImagePullPolicy: 'IfNotPresent',
      installCommand: ['/rbinder/install'],
      mountPath: '/rbinder',
      controllerNamespace: 'observability',
      failurePolicy: 'Ignore',
      installUser: 65532,
    });
    expect(o.registry).toEqual({ caFile: undefined, insecure: [], credentialsFile: undefined, requestTimeoutMs: 2000, lookupBudgetMs: 3000 });
  });

  it('reads every flag', () => {
    const o = parse([
      ...base,
      '--port', '8443',
      '--bind-address', '127.0.0.1',
      '--tracer-image-pull-policy', 'Always',
      '--tracer-install-command', '["/install","--quiet"]',
      '--install-resources', '{"requests":{"cpu":"5m"}}',
      '--install-user', '1000',
      '--collector-endpoint', 'http://collector:4318',
      '--otlp-protocol', 'grpc',
      '--propagators', 'tracecontext, b3',
      '--sampler', 'parentbased_traceidratio',
      '--sampler-arg', '0.5',
      '--inject-to', '*.svc,10.0.0.0/8',
      '--tracer-env', 'RBINDER_MODE=fast',
      '--tracer-env', 'RBINDER_FLUSH_TIMEOUT=1000',
      '--namespace', 'rb',
      '--exclude-namespaces', 'infra,monitoring',
      '--kubeconfig', '/etc/kube.conf',
      '--failure-policy', 'Fail',
      '--registry-ca-file', '/etc/ca.pem',
      '--insecure-registries', 'registry.local:5000',
      '--registry-credentials-file', '/etc/docker.json',
      '--registry-timeout', '1500',
      '--lookup-budget', '2500',
      '--log-level', 'debug',
    ]);
    expect(o).toMatchObject({ port: 8443, bindAddress: '127.0.0.1', logLevel: 'debug', kubeconfig: '/etc/kube.conf' });
    expect(o.injection).toMatchObject({
      tracerImagePullPolicy: 'Always',
      installCommand: ['/install', '--quiet'],
      installResources: { requests: { cpu: '5m' } },
      installUser: 1000,
      collectorEndpoint: 'http://collector:4318',
      otlpProtocol: 'grpc',
      propagators: ['tracecontext', 'b3'],
      sampler: { type: 'parentbased_traceidratio', argument: '0.5' },
      injectTo: ['*.svc', '10.0.0.0/8'],
      extraEnv: { RBINDER_MODE: 'fast', RBINDER_FLUSH_TIMEOUT: '1000' },
      controllerNamespace: 'rb',
      excludedNamespaces: ['infra', 'monitoring'],
      failurePolicy: 'Fail',
    });
    expect(o.registry).toEqual({ caFile: '/etc/ca.pem', insecure: ['registry.local:5000'], credentialsFile: '/etc/docker.json', requestTimeoutMs: 1500, lookupBudgetMs: 2500 });
  });

  it.each<[string, string[], RegExp]>([
    ['no tracer image', ['--webhook-only', '--tls-cert-file', 'c', '--tls-key-file', 'k'], /required option '--tracer-image <image>' not specified/],
    ['no certificate', ['--webhook-only', '--tracer-image', 't'], /the webhook needs --tls-cert-file and --tls-key-file, or --cert-dir/],
    ['half a certificate', ['--tracer-image', 't', '--tls-cert-file', 'c'], /the webhook needs --tls-cert-file and --tls-key-file, or --cert-dir/],
    ['a bad failure policy', [...base, '--failure-policy', 'ignore'], /Allowed choices are Ignore, Fail/],
    ['a bad port', [...base, '--port', '-1'], /expected a port number/],
    ['a bad install command', [...base, '--tracer-install-command', '/install'], /expected a non-empty array of strings as JSON/],
    ['a sampler argument without a sampler', [...base, '--sampler-arg', '0.1'], /--sampler-arg needs --sampler/],
    ['an unknown flag', [...base, '--frobnicate'], /unknown option '--frobnicate'/],
  ])('refuses %s', (_name, argv, message) => {
    expect(() => parseControllerArgs(argv, {})).toThrow(UsageError);
    expect(() => parseControllerArgs(argv, {})).toThrow(message);
  });

  it('finds the certificate in --cert-dir', () => {
    expect(parse(['--tracer-image', 't', '--cert-dir', '/certs'])).toMatchObject({ webhookOnly: false, tlsCertFile: '/certs/tls.crt', tlsKeyFile: '/certs/tls.key' });
    expect(parse(['--tracer-image', 't', '--cert-dir', '/certs', '--tls-key-file', '/k'])).toMatchObject({ tlsCertFile: '/certs/tls.crt', tlsKeyFile: '/k' });
  });

  it("registers the operator's options, the shared ones once, and hands it their values", () => {
    const operator = fakeOperator();
    const parsed = parseControllerArgs(
      ['--tracer-image', 't', '--cert-dir', '/certs', '--namespace', 'rb', '--exclude-namespaces', 'a,b', '--collector-image', 'otelcol:1', '--no-leader-elect'],
      {},
      operator.module,
    );
    if ('help' in parsed) throw new Error('unexpected help');
    expect(parsed.options.injection).toMatchObject({ controllerNamespace: 'rb', excludedNamespaces: ['a', 'b'] });
    expect(parsed.values).toMatchObject({ namespace: 'rb', excludeNamespaces: 'a,b', certDir: '/certs', collectorImage: 'otelcol:1', leaderElect: false });
    const help = parseControllerArgs(['--help'], {}, operator.module);
    expect('help' in help && help.help).toMatch(/--collector-image <image>\s+collector image \[operator\]/);
    expect('help' in help && help.help.match(/--namespace </g)).toHaveLength(1);
  });

  it('prints help', () => {
    const parsed = parseControllerArgs(['--help'], {});
    expect('help' in parsed && parsed.help).toContain('--webhook-only');
  });
});

describe('startController', () => {
  let dir: string;
  let ca: CertificateAuthority;
  let leaf: { certificate: string; privateKey: string };
  const cluster: ClusterLookups = { namespaceLabels: async () => ({}), secret: async () => undefined, serviceAccountPullSecrets: async () => [] };
  const stampedPod = { metadata: { name: 'web-1', annotations: { 'rbinder.io/traced-workload': 'web' } }, spec: { containers: [{ name: 'app', image: 'app:1', command: ['/app'] }] } };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rbinder-start-controller-'));
    ca = await createCertificateAuthority({ commonName: 'start controller CA' });
    leaf = await issueServingCertificate(ca, { commonName: 'webhook', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  function parsedFor(argv: string[], operator: OperatorModule): ParsedCommandLine {
    const parsed = parseControllerArgs(['--tracer-image', 'tracer:1', '--port', '0', '--bind-address', '127.0.0.1', ...argv], {}, operator);
    if ('help' in parsed) throw new Error('unexpected help');
    return parsed;
  }

  it("runs the operator, waits for the certificate it writes, and serves its TracedWorkloads' configuration", async () => {
    const certDir = join(dir, 'operator');
    await mkdir(certDir);
    const operator = fakeOperator();
    const log = silentLog();
    // The operator writes the serving certificate a moment after it starts.
    setTimeout(() => {
      void writeFile(join(certDir, 'tls.key'), leaf.privateKey).then(() => writeFile(join(certDir, 'tls.crt'), leaf.certificate));
    }, 300);
    const controller = await startController(parsedFor(['--cert-dir', certDir, '--namespace', 'rb'], operator.module), log, operator.module, undefined, { cluster });
    try {
      expect(operator.calls.options).toMatchObject({ namespace: 'rb', certDir, logger: log, collectorImage: 'otelcol:0', leaderElect: true });
      const port = controller.webhook.server.port;
      const answer = JSON.parse((await request(port, ca.certificate, 'POST', '/mutate--v1-pod', reviewOf(stampedPod, 'shop'))).body) as { response: { patch: string } };
      expect(Buffer.from(answer.response.patch, 'base64').toString()).toContain('{"name":"OTEL_SERVICE_NAME","value":"storefront"}');
      expect((await request(port, ca.certificate, 'GET', '/readyz')).status).toBe(200);
      operator.state.ready = false;
      expect((await request(port, ca.certificate, 'GET', '/readyz')).status).toBe(503);
      operator.state.healthy = false;
      expect((await request(port, ca.certificate, 'GET', '/healthz')).status).toBe(503);
      const metrics = (await request(port, ca.certificate, 'GET', '/metrics')).body;
      expect(metrics).toContain('rbinder_operator_reconciles_total 1');
      expect(metrics).toContain('rbinder_webhook_admission_requests_total{result="injected"} 1');
    } finally {
      await controller.close();
    }
    expect(operator.calls.stopped).toBe(true);
  });

  it('with --webhook-only, uses the TracedWorkload cache alone and does not run the operator', async () => {
    await writeFile(join(dir, 'tls.crt'), leaf.certificate);
    await writeFile(join(dir, 'tls.key'), leaf.privateKey);
    const operator = fakeOperator();
    const controller = await startController(parsedFor(['--webhook-only', '--cert-dir', dir, '--namespace', 'rb'], operator.module), silentLog(), operator.module, undefined, { cluster });
    try {
      expect(operator.calls.options).toBeUndefined();
      expect(operator.calls.cacheOptions).toMatchObject({ namespace: 'rb' });
      const answer = JSON.parse((await request(controller.webhook.server.port, ca.certificate, 'POST', '/mutate--v1-pod', reviewOf(stampedPod, 'shop'))).body) as { response: { patch: string } };
      expect(Buffer.from(answer.response.patch, 'base64').toString()).toContain('storefront');
    } finally {
      await controller.close();
    }
  });
});

describe('bin/rbinder-controller', () => {
  let dir: string;
  let ca: CertificateAuthority;
  let controller: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'rbinder-controller-test-'));
    // A build of the webhook laid out as in the package: bin/ next to dist/.
    await writeFile(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        extends: join(repoRoot, 'tsconfig.json'),
        compilerOptions: { outDir: join(dir, 'dist'), rootDir: repoRoot, noCheck: true, sourceMap: false, typeRoots: [join(repoRoot, 'node_modules', '@types')] },
        include: [join(repoRoot, 'webhook', 'src', 'main.ts')],
        exclude: [],
      }),
    );
    await run(join(repoRoot, 'node_modules', '.bin', 'tsc'), ['-p', join(dir, 'tsconfig.json')], { maxBuffer: 16 << 20 });
    await mkdir(join(dir, 'bin'));
    controller = join(dir, 'bin', 'rbinder-controller');
    await copyFile(join(repoRoot, 'bin', 'rbinder-controller'), controller);
    await symlink(join(repoRoot, 'node_modules'), join(dir, 'node_modules'));

    ca = await createCertificateAuthority({ commonName: 'controller test CA' });
    const leaf = await issueServingCertificate(ca, { commonName: 'webhook', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    await writeFile(join(dir, 'tls.crt'), leaf.certificate);
    await writeFile(join(dir, 'tls.key'), leaf.privateKey);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  // No cluster: the controller must do without one (warns, and reads nothing).
  const env = (): NodeJS.ProcessEnv => ({ PATH: process.env.PATH, HOME: dir, KUBECONFIG: join(dir, 'no-kubeconfig') });

  async function waitForLog(t: Tracked, msg: string): Promise<Record<string, unknown>> {
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      for (const line of t.stderr().split('\n')) {
        if (!line.startsWith('{')) continue;
        const entry = JSON.parse(line) as Record<string, unknown>;
        if (entry.msg === msg) return entry;
      }
      if (t.proc.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`no "${msg}" log line; stderr:\n${t.stderr()}`);
  }

  function post(port: number, body: string): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port, method: 'POST', path: '/mutate--v1-pod', ca: ca.certificate, servername: 'localhost', headers: { 'Content-Type': 'application/json' } }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  it('serves the webhook with --webhook-only and exits 0 on SIGTERM', async () => {
    const t = spawnTracked(
      [controller, '--webhook-only', '--port', '0', '--bind-address', '127.0.0.1', '--tls-cert-file', join(dir, 'tls.crt'), '--tls-key-file', join(dir, 'tls.key'), '--tracer-image', 'tracer:1', '--log-level', 'debug'],
      { env: env() },
    );
    try {
      const listening = await waitForLog(t, 'webhook listening');
      expect(listening).toMatchObject({ name: 'rbinder', component: 'controller', level: 'info', path: '/mutate--v1-pod', failurePolicy: 'Ignore' });
      const pod = { metadata: { name: 'p', annotations: { 'rbinder.io/inject': 'true' } }, spec: { containers: [{ name: 'app', image: 'app:1', command: ['/app'] }] } };
      const review = { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 'u-1', kind: { group: '', version: 'v1', kind: 'Pod' }, namespace: 'default', operation: 'CREATE', object: pod } };
      const res = await post(listening.port as number, JSON.stringify(review));
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toMatchObject({ response: { uid: 'u-1', allowed: true, patchType: 'JSONPatch' } });
      expect((await post(listening.port as number, '{oops')).status).toBe(400);
    } finally {
      const exit = await terminate(t, 10_000);
      expect(exit).toEqual({ code: 0, signal: null });
    }
    await waitForLog(t, 'webhook closed');
    expect(t.stderr()).toContain('no Kubernetes API');
  });

  it('exits 2 without --webhook-only when the build has no operator', async () => {
    const t = spawnTracked([controller, '--tracer-image', 'tracer:1', '--cert-dir', dir], { env: env() });
    expect(await exitWithin(t, 20_000)).toEqual({ code: 2, signal: null });
    expect(t.stderr()).toContain('rbinder-controller: the operator is not available yet; run with --webhook-only');
  });

  it('exits 2 with a usage message on a bad command line, and 1 when the certificate cannot be read', async () => {
    const usage = spawnTracked([controller, '--webhook-only', '--tracer-image', 't'], { env: env() });
    expect(await exitWithin(usage, 20_000)).toEqual({ code: 2, signal: null });
    expect(usage.stderr()).toContain('the webhook needs --tls-cert-file and --tls-key-file, or --cert-dir');

    const missing = spawnTracked([controller, '--webhook-only', '--tracer-image', 't', '--tls-cert-file', join(dir, 'nope.crt'), '--tls-key-file', join(dir, 'nope.key')], { env: env() });
    expect(await exitWithin(missing, 20_000)).toEqual({ code: 1, signal: null });
    expect(missing.stderr()).toContain('cannot start the controller');
  });
});
