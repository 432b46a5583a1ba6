// The test registry helpers against the real docker-registry: what they push can be read back,
// and each auth mode refuses what it should.

import { afterAll, describe, expect, it } from 'vitest';
import { assembleImage, pushImage, pushMultiArch, request, tarball } from './oci';
import { startRegistry, type TestRegistry } from './registry';

const started: TestRegistry[] = [];
async function registry(options: Parameters<typeof startRegistry>[0] = {}): Promise<TestRegistry> {
  const r = await startRegistry(options);
  started.push(r);
  return r;
}
afterAll(async () => {
  await Promise.all(started.map((r) => r.stop()));
});

const MANIFEST_ACCEPT = 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json';

describe('oci assembly', () => {
  it('writes a tarball whose header checksum and sizes are valid ustar', () => {
    const tar = tarball({ 'a/b.txt': 'hello' });
    expect(tar.length).toBe(512 + 512 + 1024);
    const header = tar.subarray(0, 512);
    expect(header.toString('ascii', 0, 7)).toBe('a/b.txt');
    expect(parseInt(header.toString('ascii', 124, 135), 8)).toBe(5);
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : header[i]!;
    expect(parseInt(header.toString('ascii', 148, 154), 8)).toBe(sum);
    expect(tar.toString('utf8', 512, 517)).toBe('hello');
  });

  it('gives the config its Entrypoint and Cmd, and null when asked', () => {
    const image = assembleImage({ entrypoint: ['/bin/app'], cmd: null });
    const config = JSON.parse(image.blobs[1]!.body.toString()) as { config: Record<string, unknown> };
    expect(config.config).toEqual({ Entrypoint: ['/bin/app'], Cmd: null });
  });
});

describe('docker-registry', () => {
  it('serves what was pushed: an image and a multi-arch index', async () => {
    const r = await registry();
    const digest = await pushImage(r.target, 'team/app', 'v1', { entrypoint: ['/app'], cmd: ['--port', '8080'] });
    const got = await request(`${r.url}/v2/team/app/manifests/v1`, { headers: { Accept: MANIFEST_ACCEPT } });
    expect(got.status).toBe(200);
    expect(got.headers['docker-content-digest']).toBe(digest);

    const index = await pushMultiArch(r.target, 'team/multi', 'v1', [
      { architecture: 'amd64', entrypoint: ['/amd64'] },
      { architecture: 'arm64', variant: 'v8', entrypoint: ['/arm64'] },
    ]);
    const list = await request(`${r.url}/v2/team/multi/manifests/v1`, { headers: { Accept: MANIFEST_ACCEPT } });
    expect(list.headers['docker-content-digest']).toBe(index);
    const manifests = (JSON.parse(list.body.toString()) as { manifests: { platform: { architecture: string } }[] }).manifests;
    expect(manifests.map((m) => m.platform.architecture)).toEqual(['amd64', 'arm64']);
  });

  it('with htpasswd, refuses anonymous reads and accepts the user', async () => {
    const r = await registry({ auth: { kind: 'htpasswd', users: [{ username: 'alice', password: 's3cret' }] } });
    await pushImage(r.target, 'private/app', 'v1', { entrypoint: ['/app'] });
    const anonymous = await request(`${r.url}/v2/private/app/manifests/v1`, { headers: { Accept: MANIFEST_ACCEPT } });
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers['www-authenticate']).toMatch(/^Basic realm="rbinder-test"/);
    const basic = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;
    const ok = await request(`${r.url}/v2/private/app/manifests/v1`, { headers: { Accept: MANIFEST_ACCEPT, Authorization: basic } });
    expect(ok.status).toBe(200);
  });

  it('with a token service, grants anonymous pulls of public repositories only', async () => {
    const r = await registry({
      auth: { kind: 'token', users: [{ username: 'admin', password: 'pw' }, { username: 'bob', password: 'pw2' }], rules: [{ prefix: 'public/', pull: 'anonymous' }, { prefix: 'private/', pull: ['bob'] }] },
    });
    await pushImage(r.target, 'public/app', 'v1', { entrypoint: ['/app'] });
    await pushImage(r.target, 'private/app', 'v1', { entrypoint: ['/app'] });
    const challenge = await request(`${r.url}/v2/public/app/manifests/v1`, { headers: { Accept: MANIFEST_ACCEPT } });
    expect(challenge.status).toBe(401);
    expect(challenge.headers['www-authenticate']).toContain(`realm="${r.tokenService!.url}/token"`);

    const token = async (scope: string, user?: string): Promise<string> => {
      const headers: Record<string, string> = user ? { Authorization: `Basic ${Buffer.from(user).toString('base64')}` } : {};
      const res = await request(`${r.tokenService!.url}/token?service=rbinder-test-registry&scope=${scope}`, { headers });
      return (JSON.parse(res.body.toString()) as { token: string }).token;
    };
    const get = async (repo: string, bearer: string): Promise<number> =>
      (await request(`${r.url}/v2/${repo}/manifests/v1`, { headers: { Accept: MANIFEST_ACCEPT, Authorization: `Bearer ${bearer}` } })).status;
    expect(await get('public/app', await token('repository:public/app:pull'))).toBe(200);
    expect(await get('private/app', await token('repository:private/app:pull'))).toBe(401);
    expect(await get('private/app', await token('repository:private/app:pull', 'bob:pw2'))).toBe(200);
  });

  it('serves HTTPS with a certificate of its own test CA', async () => {
    const r = await registry({ tls: true });
    expect(r.url).toMatch(/^https:/);
    await pushImage(r.target, 'tls/app', 'v1', { entrypoint: ['/app'] });
    const res = await request(`${r.url}/v2/tls/app/manifests/v1`, { headers: { Accept: MANIFEST_ACCEPT }, ca: r.ca });
    expect(res.status).toBe(200);
    await expect(request(`${r.url}/v2/`)).rejects.toThrow(/self[- ]signed|unable to verify|certificate/i);
  });
});
