// Registry credentials from image pull secrets, matched to an image the way the kubelet's keyring
// does (pkg/credentialprovider): keys are "host[:port][/path]", hosts may hold "*" globs per label,
// the port must match, the path is a prefix; more specific keys are tried first.

import type { V1Secret } from '@kubernetes/client-node';
import type { ImageReference } from './reference';

export interface RegistryCredential {
  username?: string;
  password?: string;
  /** OAuth2 refresh token (e.g. Azure ACR), exchanged at the token endpoint. */
  identityToken?: string;
  /** A bearer token to send as it is. */
  registryToken?: string;
  /** Where it came from, for messages: "secret team-a/regcred". */
  source: string;
}

interface KeyringEntry {
  key: string;
  host: string;
  port: string;
  path: string;
  credential: RegistryCredential;
}

const DOCKER_HUB_KEY_HOST = 'index.docker.io';

/** Credentials by registry key, for one pod (its pull secrets, its ServiceAccount's, the webhook's own). */
export class DockerKeyring {
  private readonly entries: KeyringEntry[] = [];

  /** Adds a docker config ({"auths": {...}} or the older flat form); returns the problems found, if any. */
  addDockerConfig(json: string, source: string): string[] {
    let parsed: unknown;
    try {
      parsed = JSON.parse(json);
    } catch {
      return [`${source}: not valid JSON`];
    }
    if (!isObject(parsed)) return [`${source}: not a docker config object`];
    const auths = isObject(parsed.auths) ? parsed.auths : parsed;
    const problems: string[] = [];
    for (const [key, value] of Object.entries(auths)) {
      if (!isObject(value)) continue;
      const credential = credentialOf(value, source);
      if (!credential) {
        problems.push(`${source}: entry ${key} has no usable credentials`);
        continue;
      }
      const entry = parseKey(key);
      if (entry) this.entries.push({ ...entry, key, credential });
    }
    // Longest keys first, as the kubelet does, so that "host/team" wins over "host".
    this.entries.sort((a, b) => `${b.host}${b.path}`.length - `${a.host}${a.path}`.length);
    return problems;
  }

  /** Adds a kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg Secret. */
  addSecret(secret: V1Secret, source: string): string[] {
    const data = secret.data ?? {};
    const encoded = data['.dockerconfigjson'] ?? data['.dockercfg'];
    if (encoded === undefined) return [`${source}: neither .dockerconfigjson nor .dockercfg in the secret`];
    return this.addDockerConfig(Buffer.from(encoded, 'base64').toString('utf8'), source);
  }

  get size(): number {
    return this.entries.length;
  }

  /** The credentials that apply to the image, most specific first. */
  lookup(ref: Pick<ImageReference, 'registry' | 'repository'>): RegistryCredential[] {
    const { host, port } = splitHostPort(ref.registry);
    const path = `/${ref.repository}`;
    const matches = this.entries.filter((e) => e.port === port && hostMatches(e.host, host) && pathMatches(e.path, path));
    if (matches.length > 0) return matches.map((e) => e.credential);
    if (ref.registry === 'docker.io') {
      return this.entries.filter((e) => e.host === DOCKER_HUB_KEY_HOST && e.port === '').map((e) => e.credential);
    }
    return [];
  }
}

function credentialOf(value: Record<string, unknown>, source: string): RegistryCredential | undefined {
  const str = (k: string): string | undefined => (typeof value[k] === 'string' && value[k] !== '' ? (value[k] as string) : undefined);
  let username = str('username');
  let password = str('password');
  const auth = str('auth');
  if (auth && (username === undefined || password === undefined)) {
    const decoded = Buffer.from(auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0) {
      username = decoded.slice(0, colon);
      password = decoded.slice(colon + 1);
    }
  }
  const identityToken = str('identitytoken');
  const registryToken = str('registrytoken');
  if (!username && !identityToken && !registryToken) return undefined;
  return { username, password, identityToken, registryToken, source };
}

/** "https://host:port/path/" → parts; "/v1/" and "/v2/" paths mean the whole registry. */
function parseKey(key: string): Omit<KeyringEntry, 'key' | 'credential'> | undefined {
  let rest = key.trim().replace(/^[a-z]+:\/\//i, '');
  if (rest === '') return undefined;
  const slash = rest.indexOf('/');
  const hostPort = slash >= 0 ? rest.slice(0, slash) : rest;
  rest = slash >= 0 ? rest.slice(slash) : '';
  if (/^\/v[12]\//.test(rest) || /^\/v[12]$/.test(rest)) rest = rest.slice(3);
  rest = rest.replace(/\/+$/, '');
  const { host, port } = splitHostPort(hostPort.toLowerCase());
  return { host, port, path: rest };
}

function splitHostPort(hostPort: string): { host: string; port: string } {
  const m = /^(.*?)(?::(\d+))?$/.exec(hostPort)!;
  return { host: m[1]!.toLowerCase(), port: m[2] ?? '' };
}

/** Per-label glob match ("*.example.com" matches "a.example.com", not "a.b.example.com"). */
function hostMatches(pattern: string, host: string): boolean {
  const p = pattern.split('.');
  const h = host.split('.');
  if (p.length !== h.length) return false;
  return p.every((label, i) => globMatch(label, h[i]!));
}

function globMatch(pattern: string, text: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^.]*').replace(/\?/g, '[^.]')}$`);
  return re.test(text);
}

function pathMatches(prefix: string, path: string): boolean {
  return prefix === '' || path === prefix || path.startsWith(`${prefix}/`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
