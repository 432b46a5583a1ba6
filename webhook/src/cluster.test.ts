// The API-backed lookups with the real @kubernetes/client-node against a small fake API server.

import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { coreApiFor, kubernetesLookups, type CoreApi } from './cluster';

const objects: Record<string, unknown> = {
  '/api/v1/namespaces/shop': { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { 'rbinder.io/inject': 'enabled' } } },
  '/api/v1/namespaces/bare': { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bare' } },
  '/api/v1/namespaces/shop/serviceaccounts/api': { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'api' }, imagePullSecrets: [{ name: 'regcred' }] },
  '/api/v1/namespaces/shop/secrets/regcred': { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'regcred' }, type: 'kubernetes.io/dockerconfigjson', data: { '.dockerconfigjson': 'e30=' } },
};

let server: http.Server;
let api: CoreApi;
const seen: string[] = [];

beforeAll(async () => {
  server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    seen.push(path);
    if (path === '/api/v1/namespaces/slow') return; // never answers
    if (path === '/api/v1/namespaces/broken') {
      res.writeHead(500, { 'Content-Type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: 500, message: 'etcd is sad' }));
      return;
    }
    const object = objects[path];
    res.writeHead(object ? 200 : 404, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(object ?? { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404 }));
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
    users: [{ name: 'me', token: 'x' }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'me' }],
    currentContext: 'fake',
  });
  api = await coreApiFor(kc);
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((done) => server.close(done));
});

describe('kubernetesLookups', () => {
  it('reads namespace labels, ServiceAccount pull secrets and secrets; not found is undefined', async () => {
    const lookups = kubernetesLookups(api);
    expect(await lookups.namespaceLabels('shop')).toEqual({ 'rbinder.io/inject': 'enabled' });
    expect(await lookups.namespaceLabels('bare')).toEqual({});
    expect(await lookups.namespaceLabels('missing')).toBeUndefined();
    expect(await lookups.serviceAccountPullSecrets('shop', 'api')).toEqual(['regcred']);
    expect(await lookups.serviceAccountPullSecrets('shop', 'default')).toEqual([]);
    expect((await lookups.secret('shop', 'regcred'))?.data).toEqual({ '.dockerconfigjson': 'e30=' });
    expect(await lookups.secret('shop', 'nope')).toBeUndefined();
  });

  it('reuses answers within the time to live and shares concurrent reads', async () => {
    let now = 0;
    const lookups = kubernetesLookups(api, { cacheTtlMs: 1000, now: () => now });
    seen.length = 0;
    await Promise.all([lookups.namespaceLabels('shop'), lookups.namespaceLabels('shop')]);
    await lookups.namespaceLabels('shop');
    expect(seen).toEqual(['/api/v1/namespaces/shop']);
    now = 1001;
    await lookups.namespaceLabels('shop');
    expect(seen).toHaveLength(2);
  });

  it('fails on server errors and slow answers, and does not remember the failure', async () => {
    const lookups = kubernetesLookups(api, { timeoutMs: 100 });
    await expect(lookups.namespaceLabels('broken')).rejects.toThrow(/500/);
    await expect(lookups.namespaceLabels('slow')).rejects.toThrow('reading ns/slow from the API server took over 100 ms');
    seen.length = 0;
    await expect(lookups.namespaceLabels('broken')).rejects.toThrow();
    expect(seen).toEqual(['/api/v1/namespaces/broken']);
  });
});
