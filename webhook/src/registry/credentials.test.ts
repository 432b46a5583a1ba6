import { describe, expect, it } from 'vitest';
import { DockerKeyring } from './credentials';

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const entry = (user: string, pass = 'pw'): Record<string, string> => ({ auth: b64(`${user}:${pass}`) });

function keyring(auths: Record<string, unknown>, source = 'secret ns/s'): DockerKeyring {
  const k = new DockerKeyring();
  expect(k.addDockerConfig(JSON.stringify({ auths }), source)).toEqual([]);
  return k;
}
const users = (k: DockerKeyring, registry: string, repository: string): (string | undefined)[] =>
  k.lookup({ registry, repository }).map((c) => c.username);

describe('DockerKeyring', () => {
  it('matches hosts, ports and path prefixes as the kubelet does, most specific first', () => {
    const k = keyring({
      'registry.example.com': entry('host'),
      'registry.example.com/team': entry('team'),
      'https://registry.example.com:5000/': entry('port'),
      '*.gcr.example.com': entry('glob'),
    });
    expect(users(k, 'registry.example.com', 'team/app')).toEqual(['team', 'host']);
    expect(users(k, 'registry.example.com', 'teamx/app')).toEqual(['host']);
    expect(users(k, 'registry.example.com:5000', 'any')).toEqual(['port']);
    expect(users(k, 'eu.gcr.example.com', 'p/app')).toEqual(['glob']);
    expect(users(k, 'a.eu.gcr.example.com', 'p/app')).toEqual([]);
    expect(users(k, 'other.example.com', 'app')).toEqual([]);
  });

  it('uses the Docker Hub key ("https://index.docker.io/v1/") for docker.io images', () => {
    const k = keyring({ 'https://index.docker.io/v1/': entry('hub') });
    expect(users(k, 'docker.io', 'library/nginx')).toEqual(['hub']);
    expect(users(k, 'ghcr.io', 'library/nginx')).toEqual([]);
  });

  it('reads username/password, auth, identitytoken and registrytoken; reports entries without any', () => {
    const k = new DockerKeyring();
    const problems = k.addDockerConfig(
      JSON.stringify({
        auths: {
          'a.io': { username: 'u', password: 'p' },
          'b.io': { auth: b64('user:pa:ss') },
          'c.io': { identitytoken: 'refresh' },
          'd.io': { registrytoken: 'bearer' },
          'e.io': { email: 'x@y' },
        },
      }),
      'secret ns/mixed',
    );
    expect(problems).toEqual(['secret ns/mixed: entry e.io has no usable credentials']);
    expect(k.lookup({ registry: 'b.io', repository: 'x' })[0]).toMatchObject({ username: 'user', password: 'pa:ss', source: 'secret ns/mixed' });
    expect(k.lookup({ registry: 'c.io', repository: 'x' })[0]).toMatchObject({ identityToken: 'refresh' });
    expect(k.lookup({ registry: 'd.io', repository: 'x' })[0]).toMatchObject({ registryToken: 'bearer' });
  });

  it('reads kubernetes.io/dockercfg secrets (the flat, older format)', () => {
    const k = new DockerKeyring();
    const secret = { type: 'kubernetes.io/dockercfg', data: { '.dockercfg': b64(JSON.stringify({ 'old.io': entry('old') })) } };
    expect(k.addSecret(secret, 'secret ns/old')).toEqual([]);
    expect(users(k, 'old.io', 'x')).toEqual(['old']);
  });

  it('reports secrets it cannot use', () => {
    const k = new DockerKeyring();
    expect(k.addSecret({ data: { token: b64('x') } }, 'secret ns/opaque')).toEqual(['secret ns/opaque: neither .dockerconfigjson nor .dockercfg in the secret']);
    expect(k.addDockerConfig('{nope', 'file /etc/x')).toEqual(['file /etc/x: not valid JSON']);
    expect(k.size).toBe(0);
  });
});
