// The webhook over real HTTPS (certificates made in the test): real AdmissionReview documents,
// bad bodies, the failure policy, certificate reload, metrics, and a pod whose command comes from
// a real registry behind Basic auth through its imagePullSecret.

import * as https from 'node:https';
import { mkdtemp, rm, writeFile, rename } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { V1Pod, V1Secret } from '@kubernetes/client-node';
import { applyPatch, type Operation } from 'fast-json-patch';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pushImage } from '../../e2e/registry/oci';
import { startRegistry, type TestRegistry } from '../../e2e/registry/registry';
import { createLogger } from '../../tracer/src/log';
import type { AdmissionReview, ClusterLookups, EntrypointSource } from './admission';
import { createCertificateAuthority, issueServingCertificate, type CertificateAuthority, type PemCertificate } from './certificates';
import { defaultInjectionConfig, type InjectionConfig } from './config';
import type { ImageEntrypoints } from './entrypoint';
import { WebhookMetrics } from './metrics';
import { RegistryClient } from './registry/client';
import { startWebhookServer, type WebhookServer, type WebhookServerOptions } from './server';

let dir: string;
let ca: CertificateAuthority;
let leaf: PemCertificate;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'rbinder-webhook-test-'));
  ca = await createCertificateAuthority({ commonName: 'webhook test CA' });
  leaf = await issueServingCertificate(ca, { commonName: 'webhook', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
});
afterAll(() => rm(dir, { recursive: true, force: true }));

interface Reply {
  status: number;
  body: string;
  json: () => unknown;
  fingerprint: string;
}

/** One request on a new TLS connection (so a reloaded certificate shows), trusting the test CA. */
function call(port: number, method: 'GET' | 'POST', path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, method, path, ca: [ca.certificate], servername: 'localhost', agent: false, headers: { 'Content-Type': 'application/json', ...headers } },
      (res) => {
        const fingerprint = (res.socket as import('node:tls').TLSSocket).getPeerCertificate().fingerprint256;
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text, json: () => JSON.parse(text), fingerprint }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function logSink(): { lines: Record<string, unknown>[]; log: ReturnType<typeof createLogger> } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { lines, log: createLogger({ level: 'debug', destination }) };
}

const noImages: EntrypointSource = {
  entrypoints: () => Promise.reject(new Error('no registry in this test')),
};

function cluster(overrides: Partial<ClusterLookups> = {}): ClusterLookups {
  return {
    namespaceLabels: async (ns): Promise<Record<string, string>> => (ns === 'shop' ? { 'rbinder.io/inject': 'enabled' } : {}),
    secret: async () => undefined,
    serviceAccountPullSecrets: async () => [],
    ...overrides,
  };
}

const servers: WebhookServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function start(
  overrides: Partial<Omit<WebhookServerOptions, 'config'>> & { config?: Partial<InjectionConfig> } = {},
  files: { cert: string; key: string } = { cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key') },
): Promise<{ server: WebhookServer; metrics: WebhookMetrics; lines: Record<string, unknown>[] }> {
  await writeFile(files.cert, leaf.certificate);
  await writeFile(files.key, leaf.privateKey);
  const { lines, log } = logSink();
  const metrics = new WebhookMetrics();
  const { config, ...rest } = overrides;
  const server = await startWebhookServer({
    port: 0,
    host: '127.0.0.1',
    certFile: files.cert,
    keyFile: files.key,
    config: defaultInjectionConfig('tracer:1', { collectorEndpoint: 'http://collector:4318', ...config }),
    cluster: cluster(),
    registry: noImages,
    lookupBudgetMs: 3000,
    log,
    metrics,
    ...rest,
  });
  servers.push(server);
  return { server, metrics, lines };
}

function pod(extra: Partial<V1Pod['spec']> = {}, annotations?: Record<string, string>): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'web-1', namespace: 'shop', ...(annotations ? { annotations } : {}) },
    spec: { containers: [{ name: 'app', image: 'shop/web:1', command: ['/web'], args: ['-v'] }], ...extra },
  };
}

function review(object: unknown, overrides: Record<string, unknown> = {}): string {
  return JSON.stringify({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: '705ab4f5-6393-11e8-b7cc-42010a800002',
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      requestResource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'shop',
      operation: 'CREATE',
      userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller' },
      object,
      oldObject: null,
      dryRun: false,
      options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
      ...overrides,
    },
  });
}

function patchOf(r: AdmissionReview): Operation[] {
  return JSON.parse(Buffer.from(r.response!.patch!, 'base64').toString('utf8')) as Operation[];
}

describe('POST /mutate--v1-pod', () => {
  it('answers a pod CREATE with a JSON patch that injects the tracer', async () => {
    const { server, lines } = await start();
    const p = pod();
    const res = await call(server.port, 'POST', '/mutate--v1-pod', review(p));
    expect(res.status).toBe(200);
    const answer = res.json() as AdmissionReview;
    expect(answer).toMatchObject({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: { uid: '705ab4f5-6393-11e8-b7cc-42010a800002', allowed: true, patchType: 'JSONPatch' } });
    expect(answer.response!.warnings).toBeUndefined();
    const out = applyPatch(structuredClone(p), patchOf(answer)).newDocument;
    expect(out.spec!.containers[0]!.command).toEqual(['/rbinder/bin/rbinder', '--', '/web', '-v']);
    expect(out.metadata!.annotations!['rbinder.io/injected']).toBe('app');
    expect(lines.find((l) => l.msg === 'pod injected')).toMatchObject({ level: 'info', namespace: 'shop', pod: 'web-1', result: 'injected', injected: ['app'] });
  });

  it('admits an already injected pod unchanged', async () => {
    const { server } = await start();
    const first = (await call(server.port, 'POST', '/mutate--v1-pod', review(pod()))).json() as AdmissionReview;
    const injected = applyPatch(pod(), patchOf(first)).newDocument;
    const second = (await call(server.port, 'POST', '/mutate--v1-pod', review(injected))).json() as AdmissionReview;
    expect(second.response).toEqual({ uid: '705ab4f5-6393-11e8-b7cc-42010a800002', allowed: true });
  });

  it('admits pods of other namespaces, other kinds and other operations unchanged', async () => {
    const { server } = await start();
    const other = (await call(server.port, 'POST', '/mutate--v1-pod', review(pod(), { namespace: 'elsewhere' }))).json() as AdmissionReview;
    expect(other.response).toEqual({ uid: expect.any(String), allowed: true });
    const update = (await call(server.port, 'POST', '/mutate--v1-pod', review(pod(), { operation: 'UPDATE' }))).json() as AdmissionReview;
    expect(update.response).toEqual({ uid: expect.any(String), allowed: true });
    const deployment = (await call(server.port, 'POST', '/mutate--v1-pod', review({}, { kind: { group: 'apps', version: 'v1', kind: 'Deployment' } }))).json() as AdmissionReview;
    expect(deployment.response).toEqual({ uid: expect.any(String), allowed: true });
  });

  it.each<[string, string | Buffer, RegExp]>([
    ['malformed JSON', '{"apiVersion": "admission.k8s.io/v1", ', /^malformed JSON: /],
    ['a JSON array', '[1,2]', /^expected a JSON object \(an AdmissionReview\)/],
    ['the wrong kind', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'Pod' }), /^expected kind AdmissionReview, got "Pod"/],
    ['admission v1beta1', JSON.stringify({ apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: {} }), /expected apiVersion admission.k8s.io\/v1, got "admission.k8s.io\/v1beta1"/],
    ['no request', JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }), /has no request/],
    ['no uid', review(pod(), { uid: '' }), /has no uid/],
    ['a body over 3 MiB', Buffer.alloc(3 * 1024 * 1024 + 10, 0x20), /^request body exceeds the limit of 3145728 bytes/],
  ])('answers 400 to %s', async (_name, body, message) => {
    const { server, metrics } = await start();
    const res = await call(server.port, 'POST', '/mutate--v1-pod', body);
    expect(res.status).toBe(400);
    expect((res.json() as { error: string }).error).toMatch(message);
    expect(await metrics.requests.get()).toMatchObject({ values: expect.arrayContaining([{ value: 1, labels: { result: 'invalid' } }]) });
  });

  it('still serves after bad requests', async () => {
    const { server } = await start();
    await call(server.port, 'POST', '/mutate--v1-pod', '{{{');
    await call(server.port, 'POST', '/mutate--v1-pod', Buffer.alloc(4 << 20));
    expect((await call(server.port, 'POST', '/mutate--v1-pod', review(pod()))).status).toBe(200);
  });

  it('admits the pod with a warning when the handler itself fails (failurePolicy Ignore)', async () => {
    const { server, metrics, lines } = await start({
      cluster: cluster({
        tracedWorkload: () => {
          throw new Error('informer cache exploded');
        },
      }),
    });
    const res = await call(server.port, 'POST', '/mutate--v1-pod', review(pod({}, { 'rbinder.io/traced-workload': 'web' })));
    expect(res.status).toBe(200);
    expect((res.json() as AdmissionReview).response).toEqual({
      uid: '705ab4f5-6393-11e8-b7cc-42010a800002',
      allowed: true,
      warnings: ['rbinder: pod admitted without tracing: informer cache exploded'],
    });
    expect(lines.find((l) => l.msg === 'admission review failed')).toMatchObject({ level: 'error' });
    expect(await metrics.requests.get()).toMatchObject({ values: expect.arrayContaining([{ value: 1, labels: { result: 'error' } }]) });
  });

  it('rejects the pod when the handler fails under failurePolicy Fail', async () => {
    const { server } = await start({
      config: { failurePolicy: 'Fail' },
      cluster: cluster({ tracedWorkload: () => { throw new Error('boom'); } }),
    });
    const res = await call(server.port, 'POST', '/mutate--v1-pod', review(pod({}, { 'rbinder.io/traced-workload': 'web' })));
    expect((res.json() as AdmissionReview).response).toEqual({ uid: expect.any(String), allowed: false, status: { code: 500, message: 'rbinder webhook: boom' } });
  });

  it('admits with a warning when the request carries no pod', async () => {
    const { server } = await start();
    const res = await call(server.port, 'POST', '/mutate--v1-pod', review({ kind: 'Pod' }));
    expect((res.json() as AdmissionReview).response).toMatchObject({ allowed: true, warnings: ['rbinder: pod admitted without tracing: the request carries no pod with spec.containers'] });
  });

  it('says, in warnings and on the pod, why a container whose command is unknown is not traced', async () => {
    const { server } = await start({
      registry: { entrypoints: () => Promise.reject(new Error('shop/web:1: the registry refused access (401)')) },
    });
    const p = pod({ containers: [{ name: 'app', image: 'shop/web:1' }] });
    const answer = (await call(server.port, 'POST', '/mutate--v1-pod', review(p))).json() as AdmissionReview;
    expect(answer.response!.allowed).toBe(true);
    expect(answer.response!.warnings).toEqual([
      'rbinder: pod not traced: container app: command unknown: shop/web:1: the registry refused access (401)',
      'container app is not traced: shop/web:1: the registry refused access (401)',
    ]);
    const out = applyPatch(structuredClone(p), patchOf(answer)).newDocument;
    expect(out.spec).toEqual(p.spec);
    expect(out.metadata!.annotations!['rbinder.io/skipped']).toBe('container app: command unknown: shop/web:1: the registry refused access (401)');
  });

  it('finishes in-flight requests on close, then stops accepting', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    const slow: EntrypointSource = {
      entrypoints: async (): Promise<ImageEntrypoints> => {
        entered();
        await gate;
        return { digest: 'sha256:x', index: false, platforms: [{ platform: { os: 'linux', architecture: 'amd64' }, digest: 'sha256:x', entrypoint: ['/img'], cmd: [] }] };
      },
    };
    const { server } = await start({ registry: slow });
    const pending = call(server.port, 'POST', '/mutate--v1-pod', review(pod({ containers: [{ name: 'app', image: 'shop/web:1' }] })));
    await inside;
    const closed = server.close();
    await expect(call(server.port, 'GET', '/healthz')).rejects.toThrow(/ECONNREFUSED/);
    release();
    const res = await pending;
    expect(res.status).toBe(200);
    expect((res.json() as AdmissionReview).response!.patchType).toBe('JSONPatch');
    await closed;
  });
});

describe('health, readiness, metrics', () => {
  it('serves /healthz, /readyz and a 404 for anything else', async () => {
    const { server } = await start();
    expect(await call(server.port, 'GET', '/healthz')).toMatchObject({ status: 200, body: 'ok' });
    expect(await call(server.port, 'GET', '/readyz')).toMatchObject({ status: 200, body: 'ok' });
    const other = await call(server.port, 'GET', '/mutate');
    expect(other.status).toBe(404);
  });

  it('answers 503 while what shares the process is unhealthy or not ready', async () => {
    let healthy = false;
    let ready = false;
    const { server } = await start({ healthy: () => healthy, ready: () => ready });
    expect(await call(server.port, 'GET', '/healthz')).toMatchObject({ status: 503, body: 'unhealthy' });
    expect(await call(server.port, 'GET', '/readyz')).toMatchObject({ status: 503, body: 'not ready' });
    healthy = ready = true;
    expect((await call(server.port, 'GET', '/healthz')).status).toBe(200);
    expect((await call(server.port, 'GET', '/readyz')).status).toBe(200);
  });

  it('exposes request counts by result, the latency histogram, image lookups and certificate expiry', async () => {
    const registry = new RegistryClient({ insecureRegistries: ['127.0.0.1'] });
    const metrics = new WebhookMetrics();
    const { server } = await start({
      metrics,
      registry: {
        entrypoints: (image, creds, signal) => {
          metrics.onLookup('cache_hit');
          return registry.entrypoints(image, creds, signal);
        },
      },
    });
    await call(server.port, 'POST', '/mutate--v1-pod', review(pod()));
    await call(server.port, 'POST', '/mutate--v1-pod', review(pod(), { namespace: 'elsewhere' }));
    await call(server.port, 'POST', '/mutate--v1-pod', 'nope');
    const text = (await call(server.port, 'GET', '/metrics')).body;
    registry.close();
    expect(text).toContain('rbinder_webhook_admission_requests_total{result="injected"} 1');
    expect(text).toContain('rbinder_webhook_admission_requests_total{result="ignored"} 1');
    expect(text).toContain('rbinder_webhook_admission_requests_total{result="invalid"} 1');
    expect(text).toContain('rbinder_webhook_admission_requests_total{result="error"} 0');
    expect(text).toMatch(/rbinder_webhook_mutation_duration_seconds_bucket\{le="0\.1",result="injected"\} 1/);
    expect(text).toContain('rbinder_webhook_mutation_duration_seconds_count{result="injected"} 1');
    expect(text).toContain('rbinder_webhook_image_lookups_total{result="fetched"} 0');
    expect(text).toMatch(/rbinder_webhook_certificate_expiry_timestamp_seconds \d{10}/);
  });
});

describe('serving certificate reload', () => {
  it('serves a replaced certificate on new connections, without a restart', async () => {
    const files = { cert: join(dir, 'reload.crt'), key: join(dir, 'reload.key') };
    const { server, metrics } = await start({ certCheckIntervalMs: 50 }, files);
    const before = await call(server.port, 'GET', '/healthz');
    const next = await issueServingCertificate(ca, { commonName: 'webhook-2', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
    // As the kubelet updates a Secret volume: new files, swapped in by rename.
    await writeFile(`${files.key}.new`, next.privateKey);
    await writeFile(`${files.cert}.new`, next.certificate);
    await rename(`${files.key}.new`, files.key);
    await rename(`${files.cert}.new`, files.cert);
    const deadline = Date.now() + 5000;
    let after = before;
    while (after.fingerprint === before.fingerprint && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      after = await call(server.port, 'GET', '/healthz');
    }
    expect(after.fingerprint).not.toBe(before.fingerprint);
    expect(after.fingerprint).toBe(new (await import('node:crypto')).X509Certificate(next.certificate).fingerprint256);
    expect(await metrics.certificateReloads.get()).toMatchObject({ values: [{ value: 1, labels: { result: 'success' } }] });
  });

  it('keeps the current certificate while the files do not match', async () => {
    const files = { cert: join(dir, 'half.crt'), key: join(dir, 'half.key') };
    const { server, metrics } = await start({ certCheckIntervalMs: 3_600_000 }, files);
    const before = await call(server.port, 'GET', '/healthz');
    const next = await issueServingCertificate(ca, { commonName: 'webhook-3', dnsNames: ['localhost'] });
    await writeFile(files.cert, next.certificate); // the key is not there yet
    expect(await server.reloadCertificate()).toBe(false);
    expect((await call(server.port, 'GET', '/healthz')).fingerprint).toBe(before.fingerprint);
    expect(await metrics.certificateReloads.get()).toMatchObject({ values: [{ value: 1, labels: { result: 'failure' } }] });
    await writeFile(files.key, next.privateKey);
    expect(await server.reloadCertificate()).toBe(true);
    expect(await server.reloadCertificate()).toBe(false);
  });
});

describe('a pod whose command comes from a private registry', () => {
  let registry: TestRegistry;
  let client: RegistryClient;
  beforeAll(async () => {
    registry = await startRegistry({ auth: { kind: 'htpasswd', users: [{ username: 'ci', password: 'pull-pw' }] } });
    await pushImage(registry.target, 'shop/api', '2.0', { entrypoint: ['/usr/local/bin/api'], cmd: ['--listen', ':8080'] });
    client = new RegistryClient({ insecureRegistries: [registry.host] });
  });
  afterAll(async () => {
    client.close();
    await registry.stop();
  });

  function pullSecret(): V1Secret {
    const config = { auths: { [registry.host]: { auth: Buffer.from('ci:pull-pw').toString('base64') } } };
    return { type: 'kubernetes.io/dockerconfigjson', data: { '.dockerconfigjson': Buffer.from(JSON.stringify(config)).toString('base64') } };
  }

  it.each<[string, Partial<ClusterLookups>, Partial<V1Pod['spec']>]>([
    ["the pod's imagePullSecrets", { secret: async (ns, name) => (ns === 'shop' && name === 'regcred' ? pullSecret() : undefined) }, { imagePullSecrets: [{ name: 'regcred' }] }],
    [
      "its ServiceAccount's imagePullSecrets",
      { serviceAccountPullSecrets: async (ns, sa) => (ns === 'shop' && sa === 'api' ? ['sa-cred'] : []), secret: async (_ns, name) => (name === 'sa-cred' ? pullSecret() : undefined) },
      { serviceAccountName: 'api' },
    ],
  ])('with credentials from %s', async (_name, lookups, spec) => {
    const metrics = new WebhookMetrics();
    const { server } = await start({ cluster: cluster(lookups), metrics, registry: client });
    const p = pod({ containers: [{ name: 'api', image: `${registry.host}/shop/api:2.0`, args: ['--verbose'] }], ...spec });
    const answer = (await call(server.port, 'POST', '/mutate--v1-pod', review(p))).json() as AdmissionReview;
    expect(answer.response!.warnings).toBeUndefined();
    const out = applyPatch(structuredClone(p), patchOf(answer)).newDocument;
    expect(out.spec!.containers[0]!.command).toEqual(['/rbinder/bin/rbinder', '--', '/usr/local/bin/api', '--verbose']);
    expect(out.spec!.containers[0]!.args).toBeUndefined();
  });

  it('without credentials, leaves the container alone and names the registry', async () => {
    const { server } = await start({ registry: client });
    const p = pod({ containers: [{ name: 'api', image: `${registry.host}/shop/api:2.0` }], imagePullSecrets: [{ name: 'missing' }] });
    const answer = (await call(server.port, 'POST', '/mutate--v1-pod', review(p))).json() as AdmissionReview;
    expect(answer.response!.warnings).toContain('rbinder: imagePullSecret missing not found');
    const out = applyPatch(structuredClone(p), patchOf(answer)).newDocument;
    expect(out.spec).toEqual(p.spec);
    expect(out.metadata!.annotations!['rbinder.io/skipped']).toContain(`no imagePullSecret of the pod or its ServiceAccount has credentials for ${registry.host}`);
  });
});
