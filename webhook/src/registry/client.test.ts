// Entrypoint lookups against a real registry (Debian's docker-registry, started per suite): images
// and indexes assembled by the test, public, behind Basic auth with a dockerconfigjson pull secret,
// behind a bearer-token service, over HTTPS with a private CA.

import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { V1Secret } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushImage, pushMultiArch } from '../../../e2e/registry/oci';
import { startRegistry, type TestRegistry } from '../../../e2e/registry/registry';
import { RegistryClient, RegistryError, parseChallenge, type LookupResult, type RegistryClientOptions } from './client';
import { DockerKeyring } from './credentials';

function dockerConfigSecret(registry: string, username: string, password: string): V1Secret {
  const config = { auths: { [registry]: { username, password, auth: Buffer.from(`${username}:${password}`).toString('base64') } } };
  return { type: 'kubernetes.io/dockerconfigjson', data: { '.dockerconfigjson': Buffer.from(JSON.stringify(config)).toString('base64') } };
}

interface Counted {
  client: RegistryClient;
  lookups: LookupResult[];
  errors: string[];
}
const clients: RegistryClient[] = [];
function newClient(options: RegistryClientOptions): Counted {
  const lookups: LookupResult[] = [];
  const errors: string[] = [];
  const client = new RegistryClient({ requestTimeoutMs: 3000, ...options, onLookup: (r) => lookups.push(r), onError: (k) => errors.push(k) });
  clients.push(client);
  return { client, lookups, errors };
}
afterAll(() => clients.forEach((c) => c.close()));

async function rejection(p: Promise<unknown>): Promise<RegistryError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(RegistryError);
    return err as RegistryError;
  }
  throw new Error('expected a RegistryError');
}

describe('RegistryClient against a public plain-HTTP registry', () => {
  let r: TestRegistry;
  let singleDigest: string;
  beforeAll(async () => {
    r = await startRegistry();
    singleDigest = await pushImage(r.target, 'team/app', 'v1', { entrypoint: ['/app', '--serve'], cmd: ['--port', '8080'] });
    await pushImage(r.target, 'team/cmd-only', 'v1', { entrypoint: null, cmd: ['python3', 'app.py'], docker: true });
    await pushMultiArch(
      r.target,
      'team/multi',
      'v1',
      [
        { architecture: 'amd64', entrypoint: ['/bin/server-amd64'], cmd: ['-v'] },
        { architecture: 'arm64', variant: 'v8', entrypoint: ['/bin/server-arm64'], cmd: ['-v'] },
      ],
      { attestation: true },
    );
    await pushMultiArch(r.target, 'team/docker-list', 'v1', [{ architecture: 'amd64', entrypoint: ['/same'] }, { architecture: 'arm64', entrypoint: ['/same'] }], { docker: true });
  });
  afterAll(() => r.stop());

  it('reads Entrypoint and Cmd of a single-platform image, then answers from the cache', async () => {
    const { client, lookups } = newClient({ insecureRegistries: [r.host] });
    const first = await client.entrypoints(`${r.host}/team/app:v1`);
    expect(first).toEqual({
      digest: singleDigest,
      index: false,
      platforms: [{ platform: { os: 'linux', architecture: 'amd64' }, digest: singleDigest, entrypoint: ['/app', '--serve'], cmd: ['--port', '8080'] }],
    });
    expect(await client.entrypoints(`${r.host}/team/app:v1`)).toEqual(first);
    expect(await client.entrypoints(`${r.host}/team/app@${singleDigest}`)).toEqual(first);
    expect(lookups).toEqual(['fetched', 'cache_hit', 'cache_hit']);
  });

  it('refetches a tag after its time to live, and keeps digests', async () => {
    let now = 1_000_000;
    const { client, lookups } = newClient({ insecureRegistries: [r.host], tagTtlMs: 1000, now: () => now });
    await client.entrypoints(`${r.host}/team/app:v1`);
    now += 999;
    await client.entrypoints(`${r.host}/team/app:v1`);
    now += 2;
    await client.entrypoints(`${r.host}/team/app:v1`);
    expect(lookups).toEqual(['fetched', 'cache_hit', 'fetched']);
  });

  it('reads a Docker v2 image without Entrypoint', async () => {
    const { client } = newClient({ insecureRegistries: [r.host] });
    const image = await client.entrypoints(`${r.host}/team/cmd-only:v1`);
    expect(image.platforms[0]).toMatchObject({ entrypoint: [], cmd: ['python3', 'app.py'] });
  });

  it('follows an image index to every linux platform and leaves out attestations', async () => {
    const { client } = newClient({ insecureRegistries: [r.host] });
    const image = await client.entrypoints(`${r.host}/team/multi:v1`);
    expect(image.index).toBe(true);
    expect(image.platforms.map((p) => [p.platform, p.entrypoint])).toEqual([
      [{ os: 'linux', architecture: 'amd64' }, ['/bin/server-amd64']],
      [{ os: 'linux', architecture: 'arm64', variant: 'v8' }, ['/bin/server-arm64']],
    ]);
    const list = await client.entrypoints(`${r.host}/team/docker-list:v1`);
    expect(list.platforms.map((p) => p.entrypoint)).toEqual([['/same'], ['/same']]);
  });

  it('shares one lookup between concurrent callers', async () => {
    const { client, lookups } = newClient({ insecureRegistries: [r.host] });
    const [a, b] = await Promise.all([client.entrypoints(`${r.host}/team/multi:v1`), client.entrypoints(`${r.host}/team/multi:v1`)]);
    expect(a).toBe(b);
    expect(lookups).toEqual(['fetched']);
  });

  it('says when a repository or tag does not exist', async () => {
    const { client, errors } = newClient({ insecureRegistries: [r.host] });
    const err = await rejection(client.entrypoints(`${r.host}/team/app:nope`));
    expect(err.kind).toBe('not_found');
    expect(err.message).toContain(`${r.host}/team/app:nope: manifest not found (404)`);
    expect(errors).toEqual(['not_found']);
  });

  it('reaches a plain-HTTP registry only when it is on the insecure list, and says so', async () => {
    const { client } = newClient({});
    const err = await rejection(client.entrypoints(`${r.host}/team/app:v1`));
    expect(err.kind).toBe('tls');
    expect(err.message).toContain(`list ${r.host} in the insecure registries`);
    const anyPort = newClient({ insecureRegistries: ['127.0.0.1'] });
    await expect(anyPort.client.entrypoints(`${r.host}/team/app:v1`)).resolves.toBeDefined();
  });

  it('rejects a malformed reference without asking anyone', async () => {
    const { client, errors } = newClient({});
    const err = await rejection(client.entrypoints('Bad Image!'));
    expect(err.kind).toBe('invalid_reference');
    expect(errors).toEqual(['invalid_reference']);
  });
});

describe('RegistryClient with Basic auth (htpasswd) and a dockerconfigjson pull secret', () => {
  let r: TestRegistry;
  beforeAll(async () => {
    r = await startRegistry({ auth: { kind: 'htpasswd', users: [{ username: 'alice', password: 's3cret' }] } });
    await pushImage(r.target, 'private/app', 'v2', { entrypoint: ['/private'], cmd: [] });
  });
  afterAll(() => r.stop());

  it('uses the credentials that match the registry', async () => {
    const keyring = new DockerKeyring();
    expect(keyring.addSecret(dockerConfigSecret(r.host, 'alice', 's3cret'), 'secret team/regcred')).toEqual([]);
    const { client } = newClient({ insecureRegistries: [r.host] });
    const image = await client.entrypoints(`${r.host}/private/app:v2`, keyring.lookup({ registry: r.host, repository: 'private/app' }));
    expect(image.platforms[0]!.entrypoint).toEqual(['/private']);
  });

  it('says that no pull secret matched when there are no credentials', async () => {
    const { client } = newClient({ insecureRegistries: [r.host] });
    const err = await rejection(client.entrypoints(`${r.host}/private/app:v2`, []));
    expect(err.kind).toBe('auth');
    expect(err.message).toContain(`the registry refused access (401); no imagePullSecret of the pod or its ServiceAccount has credentials for ${r.host}`);
  });

  it('answers from the cache only to credentials the registry let read the repository', async () => {
    const keyring = new DockerKeyring();
    keyring.addSecret(dockerConfigSecret(r.host, 'alice', 's3cret'), 'secret team-a/regcred');
    const { client, lookups } = newClient({ insecureRegistries: [r.host] });
    const credentials = keyring.lookup({ registry: r.host, repository: 'private/app' });
    await client.entrypoints(`${r.host}/private/app:v2`, credentials);
    await client.entrypoints(`${r.host}/private/app:v2`, credentials);
    // Another namespace, without a pull secret: the cache must not answer for the registry.
    const err = await rejection(client.entrypoints(`${r.host}/private/app:v2`, []));
    expect(err.kind).toBe('auth');
    expect(lookups).toEqual(['fetched', 'cache_hit', 'error']);
  });

  it('names the secret whose credentials were refused', async () => {
    const keyring = new DockerKeyring();
    keyring.addSecret(dockerConfigSecret(`https://${r.host}/v1/`, 'alice', 'wrong'), 'secret team/stale');
    const { client } = newClient({ insecureRegistries: [r.host] });
    const err = await rejection(client.entrypoints(`${r.host}/private/app:v2`, keyring.lookup({ registry: r.host, repository: 'private/app' })));
    expect(err.kind).toBe('auth');
    expect(err.message).toContain('tried secret team/stale (401)');
  });
});

describe('RegistryClient with a bearer-token service', () => {
  let r: TestRegistry;
  beforeAll(async () => {
    r = await startRegistry({
      auth: {
        kind: 'token',
        users: [{ username: 'admin', password: 'admin-pw' }, { username: 'bob', password: 'bob-pw' }],
        rules: [
          { prefix: 'public/', pull: 'anonymous' },
          { prefix: 'private/', pull: ['bob'] },
        ],
      },
    });
    await pushImage(r.target, 'public/web', 'v1', { entrypoint: ['/web'] });
    await pushMultiArch(r.target, 'private/api', 'v1', [
      { architecture: 'amd64', entrypoint: ['/api'] },
      { architecture: 'arm64', entrypoint: ['/api'] },
    ]);
  });
  afterAll(() => r.stop());

  const tokenHost = (): string => new URL(r.tokenService!.url).host;

  it('pulls public images with an anonymous token', async () => {
    const { client } = newClient({ insecureRegistries: [r.host] });
    const image = await client.entrypoints(`${r.host}/public/web:v1`);
    expect(image.platforms[0]!.entrypoint).toEqual(['/web']);
    expect(r.tokenService!.requests.at(-1)).toMatchObject({ user: 'anonymous', scope: ['repository:public/web:pull'], granted: ['public/web:pull'] });
  });

  it('gets a token with the pull secret for private images, and reuses it for every request of the lookup', async () => {
    const keyring = new DockerKeyring();
    keyring.addSecret(dockerConfigSecret(r.host, 'bob', 'bob-pw'), 'secret team/bob');
    const { client } = newClient({ insecureRegistries: [r.host, tokenHost()] });
    const before = r.tokenService!.requests.length;
    const image = await client.entrypoints(`${r.host}/private/api:v1`, keyring.lookup({ registry: r.host, repository: 'private/api' }));
    expect(image.platforms.map((p) => p.entrypoint)).toEqual([['/api'], ['/api']]);
    const tokens = r.tokenService!.requests.slice(before);
    expect(tokens).toEqual([{ user: 'bob', scope: ['repository:private/api:pull'], granted: ['private/api:pull'] }]);
  });

  it('does not send credentials to a plain-HTTP token service that is not on the insecure list', async () => {
    const keyring = new DockerKeyring();
    keyring.addSecret(dockerConfigSecret(r.host, 'bob', 'bob-pw'), 'secret team/bob');
    const { client } = newClient({ insecureRegistries: [r.host] });
    const before = r.tokenService!.requests.length;
    const err = await rejection(client.entrypoints(`${r.host}/private/api:v1`, keyring.lookup({ registry: r.host, repository: 'private/api' })));
    expect(err.kind).toBe('auth');
    expect(err.message).toContain('not sent to the plain-HTTP token service');
    expect(r.tokenService!.requests.slice(before).map((t) => t.user)).toEqual(['anonymous']);
  });

  it('fails a private image without credentials', async () => {
    const { client } = newClient({ insecureRegistries: [r.host] });
    const err = await rejection(client.entrypoints(`${r.host}/private/api:v1`));
    expect(err.kind).toBe('auth');
  });
});

describe('RegistryClient over HTTPS with a private CA', () => {
  let r: TestRegistry;
  beforeAll(async () => {
    r = await startRegistry({ tls: true });
    await pushImage(r.target, 'secure/app', 'v1', { entrypoint: ['/secure'] });
  });
  afterAll(() => r.stop());

  it('trusts the registry with the CA bundle, and not without it', async () => {
    const trusting = newClient({ extraCa: r.ca });
    expect((await trusting.client.entrypoints(`${r.host}/secure/app:v1`)).platforms[0]!.entrypoint).toEqual(['/secure']);
    const strict = newClient({});
    const err = await rejection(strict.client.entrypoints(`${r.host}/secure/app:v1`));
    expect(err.kind).toBe('tls');
    expect(err.message).toMatch(/TLS failed: .*(self[- ]signed|unable to verify|local issuer)/i);
  });
});

describe('RegistryClient deadlines', () => {
  let server: http.Server;
  let host: string;
  let hits = 0;
  beforeAll(async () => {
    // Accepts and never answers.
    server = http.createServer(() => {
      hits++;
    });
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((done) => server.close(done));
  });

  it('gives up after the request timeout and remembers the failure for a while', async () => {
    const { client, errors } = newClient({ insecureRegistries: [host], requestTimeoutMs: 200, errorTtlMs: 60_000 });
    const started = Date.now();
    const err = await rejection(client.entrypoints(`${host}/slow/app:v1`));
    expect(err.kind).toBe('timeout');
    expect(Date.now() - started).toBeLessThan(2000);
    const again = Date.now();
    expect((await rejection(client.entrypoints(`${host}/slow/app:v1`))).kind).toBe('timeout');
    expect(Date.now() - again).toBeLessThan(50);
    expect(hits).toBe(1);
    expect(errors).toEqual(['timeout', 'timeout']);
  });

  it('stops at the caller deadline', async () => {
    const { client } = newClient({ insecureRegistries: [host], requestTimeoutMs: 10_000 });
    const started = Date.now();
    const err = await rejection(client.entrypoints(`${host}/slow/other:v1`, [], AbortSignal.timeout(150)));
    expect(err.kind).toBe('timeout');
    expect(err.message).toContain('deadline exceeded');
    expect(Date.now() - started).toBeLessThan(2000);
  });
});

describe('parseChallenge', () => {
  it.each([
    ['Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"', 'bearer', { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/nginx:pull' }],
    ['Basic realm="Registry Realm"', 'basic', { realm: 'Registry Realm' }],
    ['bearer realm=https://x/token, service=x', 'bearer', { realm: 'https://x/token', service: 'x' }],
  ])('%s', (header, scheme, params) => {
    expect(parseChallenge(header)).toEqual({ scheme, params });
  });

  it('ignores schemes it cannot answer', () => {
    expect(parseChallenge('Negotiate abc')).toBeUndefined();
    expect(parseChallenge(undefined)).toBeUndefined();
  });
});
