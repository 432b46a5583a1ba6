// What an image runs, from its registry over the OCI distribution API: the manifest (or the
// image index and each Linux platform's manifest), then each config blob's Entrypoint and Cmd.
//
// Auth follows the registry's challenge: anonymous first, then a bearer token from its token
// service (anonymous or with the pod's credentials, as Docker Hub, GHCR, GCR/AR, ECR, Quay do), or
// Basic auth. Results are cached by digest, which is immutable; a tag's digest is remembered for a
// short time; failures of the network kind are remembered briefly so a burst of pods during a
// registry outage is not slowed down by one timeout each. Every call has a short timeout, and the
// whole lookup a deadline (the admission request's budget).
//
// The cache is shared by all namespaces, but a cached answer is given only to credentials (or to
// anonymous callers) that the registry has let read the repository recently: a pod must not learn
// a private image's command from another namespace's lookup.

import { createHash } from 'node:crypto';
import type { ImageEntrypoints, Platform, PlatformEntrypoint } from '../entrypoint';
import type { RegistryCredential } from './credentials';
import { HttpClient, HttpError, type HttpResponse } from './http';
import { parseImageReference, type ImageReference } from './reference';

export type RegistryErrorKind =
  | 'invalid_reference'
  | 'auth'
  | 'not_found'
  | 'rate_limited'
  | 'unavailable'
  | 'timeout'
  | 'tls'
  | 'network'
  | 'protocol';

export class RegistryError extends Error {
  constructor(
    readonly kind: RegistryErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'RegistryError';
  }
}

export type LookupResult = 'cache_hit' | 'fetched' | 'error';

export interface RegistryClientOptions {
  /** PEM CA certificates to trust besides Node's roots (registries with a private CA). */
  extraCa?: string;
  /** Registries ("host:port", or "host" for any port) reached over plain HTTP. */
  insecureRegistries?: string[];
  /** Most time for one HTTP request. */
  requestTimeoutMs?: number;
  /** How long a tag's digest is trusted. */
  tagTtlMs?: number;
  /** How long a set of credentials that could read a repository may use the cache for it. */
  accessTtlMs?: number;
  /** How long a timeout/network/TLS/5xx/429 failure is remembered. */
  errorTtlMs?: number;
  /** Entries per cache. */
  maxCacheEntries?: number;
  userAgent?: string;
  /** Called once per lookup with how it was answered. */
  onLookup?: (result: LookupResult) => void;
  /** Called once per failed lookup. */
  onError?: (kind: RegistryErrorKind) => void;
  /** The clock, for tests. */
  now?: () => number;
}

const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;
const ACCEPT = [MEDIA.ociIndex, MEDIA.dockerList, MEDIA.ociManifest, MEDIA.dockerManifest].join(', ');

const MAX_MANIFEST_BYTES = 4 << 20;
const MAX_CONFIG_BYTES = 8 << 20;
const MAX_TOKEN_BYTES = 1 << 20;
const TRANSIENT: ReadonlySet<RegistryErrorKind> = new Set(['timeout', 'network', 'tls', 'unavailable', 'rate_limited']);

/** A bounded map that forgets the least recently used entry; entries may expire. */
class Cache<V> {
  private readonly map = new Map<string, { value: V; expires: number }>();
  constructor(
    private readonly max: number,
    private readonly now: () => number,
  ) {}

  get(key: string): V | undefined {
    const hit = this.map.get(key);
    if (!hit) return undefined;
    this.map.delete(key);
    if (hit.expires <= this.now()) return undefined;
    this.map.set(key, hit);
    return hit.value;
  }

  set(key: string, value: V, ttlMs = Infinity): void {
    this.map.delete(key);
    this.map.set(key, { value, expires: this.now() + ttlMs });
    while (this.map.size > this.max) this.map.delete(this.map.keys().next().value!);
  }

  delete(key: string): void {
    this.map.delete(key);
  }
}

interface Challenge {
  scheme: 'bearer' | 'basic';
  params: Record<string, string>;
}

/** The state of one lookup: which registry, which credentials, the Authorization that works. */
interface Session {
  ref: ImageReference;
  base: string;
  credentials: RegistryCredential[];
  credentialsKey: string;
  authorization?: string;
  signal?: AbortSignal;
  /** Whether anything had to be fetched (for the cache_hit/fetched count). */
  fetched: boolean;
}

export class RegistryClient {
  private readonly http: HttpClient;
  private readonly now: () => number;
  private readonly insecure: Set<string>;
  private readonly tagTtlMs: number;
  private readonly errorTtlMs: number;
  /** "registry/repo@digest" → result (content-addressed, so kept until evicted). */
  private readonly byDigest: Cache<ImageEntrypoints>;
  /** "registry/repo@digest" of one platform's manifest → that platform's entrypoint. */
  private readonly platformByDigest: Cache<PlatformEntrypoint>;
  /** "registry/repo:tag" → digest. */
  private readonly tags: Cache<string>;
  /** Recent transient failures by lookup key. */
  private readonly failures: Cache<RegistryError>;
  /** "host/repo|credentials" → Authorization header that worked. */
  private readonly authorizations: Cache<string>;
  /** "registry/repo|credentials" that the registry let read the repository. */
  private readonly access: Cache<true>;
  private readonly accessTtlMs: number;
  private readonly inFlight = new Map<string, Promise<ImageEntrypoints>>();

  constructor(private readonly options: RegistryClientOptions = {}) {
    this.now = options.now ?? Date.now;
    const max = options.maxCacheEntries ?? 2000;
    this.byDigest = new Cache(max, this.now);
    this.platformByDigest = new Cache(max, this.now);
    this.tags = new Cache(max, this.now);
    this.failures = new Cache(max, this.now);
    this.authorizations = new Cache(max, this.now);
    this.access = new Cache(max, this.now);
    this.accessTtlMs = options.accessTtlMs ?? 5 * 60_000;
    this.tagTtlMs = options.tagTtlMs ?? 60_000;
    this.errorTtlMs = options.errorTtlMs ?? 10_000;
    this.insecure = new Set((options.insecureRegistries ?? []).map((r) => r.trim().toLowerCase()).filter(Boolean));
    this.http = new HttpClient({
      extraCa: options.extraCa,
      timeoutMs: options.requestTimeoutMs ?? 2000,
      userAgent: options.userAgent ?? 'rbinder-webhook',
    });
  }

  close(): void {
    this.http.close();
  }

  /**
   * The Entrypoint and Cmd of every Linux platform of `image`. Throws RegistryError. Concurrent
   * lookups of the same image with the same credentials share one set of requests.
   */
  async entrypoints(image: string, credentials: RegistryCredential[] = [], signal?: AbortSignal): Promise<ImageEntrypoints> {
    let ref: ImageReference;
    try {
      ref = parseImageReference(image);
    } catch (err) {
      this.options.onError?.('invalid_reference');
      this.options.onLookup?.('error');
      throw new RegistryError('invalid_reference', (err as Error).message);
    }
    const credentialsKey = credentials.map((c) => `${c.source}:${c.username ?? ''}`).join(',');
    const key = `${ref.canonical}|${credentialsKey}`;
    const running = this.inFlight.get(key);
    if (running) return running;
    const lookup = this.lookup(ref, credentials, credentialsKey, key, signal).finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, lookup);
    return lookup;
  }

  private async lookup(
    ref: ImageReference,
    credentials: RegistryCredential[],
    credentialsKey: string,
    key: string,
    signal: AbortSignal | undefined,
  ): Promise<ImageEntrypoints> {
    const recent = this.failures.get(key);
    if (recent) {
      this.options.onError?.(recent.kind);
      this.options.onLookup?.('error');
      throw recent;
    }
    const session: Session = {
      ref,
      base: `${this.schemeFor(ref)}://${ref.apiHost}/v2/${ref.repository}`,
      credentials,
      credentialsKey,
      authorization: this.authorizations.get(authKey(ref, credentialsKey)),
      signal,
      fetched: false,
    };
    try {
      const result = await this.resolve(session);
      this.options.onLookup?.(session.fetched ? 'fetched' : 'cache_hit');
      return result;
    } catch (err) {
      const error = toRegistryError(err, ref);
      if (TRANSIENT.has(error.kind)) this.failures.set(key, error, this.errorTtlMs);
      this.options.onError?.(error.kind);
      this.options.onLookup?.('error');
      throw error;
    }
  }

  private schemeFor(ref: ImageReference): 'http' | 'https' {
    const host = ref.apiHost.toLowerCase();
    return this.insecure.has(host) || this.insecure.has(host.replace(/:\d+$/, '')) ? 'http' : 'https';
  }

  private async resolve(session: Session): Promise<ImageEntrypoints> {
    const { ref } = session;
    const repoKey = `${ref.registry}/${ref.repository}`;
    const accessKey = `${repoKey}|${session.credentialsKey}`;
    const digest = ref.digest ?? this.tags.get(`${repoKey}:${ref.tag}`);
    if (digest && this.access.get(accessKey)) {
      const cached = this.byDigest.get(`${repoKey}@${digest}`);
      if (cached) return cached;
    }

    // Fetching the manifest also proves that these credentials may read the repository.
    const manifest = await this.fetchManifest(session, ref.digest ?? ref.tag!);
    this.access.set(accessKey, true, this.accessTtlMs);
    if (ref.tag && !ref.digest) this.tags.set(`${repoKey}:${ref.tag}`, manifest.digest, this.tagTtlMs);
    const known = this.byDigest.get(`${repoKey}@${manifest.digest}`);
    if (known) return known;

    let result: ImageEntrypoints;
    if (manifest.mediaType === MEDIA.ociIndex || manifest.mediaType === MEDIA.dockerList) {
      const entries = (asArray(manifest.json.manifests) ?? []).filter(isObject);
      const wanted = entries.filter((m) => {
        const p = isObject(m.platform) ? m.platform : undefined;
        return !p || (p.os === 'linux' && p.architecture !== 'unknown');
      });
      if (wanted.length === 0) throw new RegistryError('protocol', `${ref.canonical}: the image index lists no linux image`);
      const platforms = await Promise.all(
        wanted.map((m) => this.platformEntrypoint(session, stringField(m, 'digest', ref), platformOf(m.platform))),
      );
      result = { digest: manifest.digest, index: true, platforms: platforms.filter((p) => p.platform.os === 'linux') };
    } else {
      result = { digest: manifest.digest, index: false, platforms: [await this.fromImageManifest(session, manifest.json, manifest.digest)] };
    }
    this.byDigest.set(`${repoKey}@${manifest.digest}`, result);
    return result;
  }

  private async platformEntrypoint(session: Session, digest: string, platform: Platform | undefined): Promise<PlatformEntrypoint> {
    const key = `${session.ref.registry}/${session.ref.repository}@${digest}`;
    const cached = this.platformByDigest.get(key);
    if (cached) return cached;
    const manifest = await this.fetchManifest(session, digest);
    if (manifest.mediaType === MEDIA.ociIndex || manifest.mediaType === MEDIA.dockerList) {
      throw new RegistryError('protocol', `${session.ref.canonical}: nested image indexes are not supported`);
    }
    const entry = await this.fromImageManifest(session, manifest.json, digest, platform);
    this.platformByDigest.set(key, entry);
    return entry;
  }

  private async fromImageManifest(
    session: Session,
    json: Record<string, unknown>,
    digest: string,
    platform?: Platform,
  ): Promise<PlatformEntrypoint> {
    const { ref } = session;
    const config = isObject(json.config) ? json.config : undefined;
    if (!config) throw new RegistryError('protocol', `${ref.canonical}: the manifest has no config`);
    const mediaType = typeof config.mediaType === 'string' ? config.mediaType : '';
    if (mediaType !== MEDIA.ociConfig && mediaType !== MEDIA.dockerConfig) {
      throw new RegistryError('protocol', `${ref.canonical}: not a container image (config media type "${mediaType}")`);
    }
    const configDigest = stringField(config, 'digest', ref);
    const res = await this.get(session, `${session.base}/blobs/${configDigest}`, { Accept: mediaType }, MAX_CONFIG_BYTES, 'image config');
    verifyDigest(res.body, configDigest, ref, 'image config');
    const blob = parseJson(res.body, ref, 'image config');
    const inner = isObject(blob.config) ? blob.config : {};
    return {
      platform: platform ?? { os: str(blob.os), architecture: str(blob.architecture), ...(blob.variant ? { variant: str(blob.variant) } : {}) },
      digest,
      entrypoint: stringArray(inner.Entrypoint, ref, 'Entrypoint'),
      cmd: stringArray(inner.Cmd, ref, 'Cmd'),
    };
  }

  private async fetchManifest(
    session: Session,
    reference: string,
  ): Promise<{ digest: string; mediaType: string; json: Record<string, unknown> }> {
    const { ref } = session;
    const res = await this.get(session, `${session.base}/manifests/${reference}`, { Accept: ACCEPT }, MAX_MANIFEST_BYTES, 'manifest');
    const computed = `sha256:${createHash('sha256').update(res.body).digest('hex')}`;
    if (reference.includes(':')) verifyDigest(res.body, reference, ref, 'manifest');
    const json = parseJson(res.body, ref, 'manifest');
    const header = String(res.headers['content-type'] ?? '').split(';')[0]!.trim();
    const mediaType = typeof json.mediaType === 'string' && json.mediaType !== '' ? json.mediaType : header;
    if (mediaType === MEDIA.dockerSchema1 || mediaType === MEDIA.dockerSchema1Signed || json.schemaVersion === 1) {
      throw new RegistryError('protocol', `${ref.canonical}: Docker schema 1 manifests are not supported`);
    }
    if (![MEDIA.ociIndex, MEDIA.dockerList, MEDIA.ociManifest, MEDIA.dockerManifest].includes(mediaType as never)) {
      // OCI allows mediaType to be absent; tell an index from a manifest by its fields.
      if (Array.isArray(json.manifests)) return { digest: computed, mediaType: MEDIA.ociIndex, json };
      if (isObject(json.config)) return { digest: computed, mediaType: MEDIA.ociManifest, json };
      throw new RegistryError('protocol', `${ref.canonical}: unexpected manifest media type "${mediaType}"`);
    }
    return { digest: reference.includes(':') ? reference : computed, mediaType, json };
  }

  /** GET with the session's authorization, answering the registry's challenge once if needed. */
  private async get(session: Session, url: string, headers: Record<string, string>, maxBodyBytes: number, what: string): Promise<HttpResponse> {
    session.fetched = true;
    const send = (authorization: string | undefined): Promise<HttpResponse> =>
      this.http.request(url, {
        headers: authorization ? { ...headers, Authorization: authorization } : headers,
        maxBodyBytes,
        signal: session.signal,
      });
    let res = await send(session.authorization);
    if (res.status === 401) {
      const challenge = parseChallenge(res.headers['www-authenticate']);
      const tried: string[] = [];
      for (const credential of [...session.credentials, undefined]) {
        const authorization = await this.authorize(session, challenge, credential, tried);
        if (authorization === undefined) continue;
        res = await send(authorization);
        if (res.status !== 401 && res.status !== 403) {
          session.authorization = authorization;
          this.authorizations.set(authKey(session.ref, session.credentialsKey), authorization, 5 * 60_000);
          break;
        }
        tried.push(`${credential?.source ?? 'anonymous'} (${res.status})`);
      }
      if (res.status === 401 || res.status === 403) throw authError(session, res.status, tried);
    }
    if (res.status === 403) throw authError(session, 403, []);
    if (res.status === 200) return res;
    throw statusError(res, session.ref, what);
  }

  /** The Authorization header for one credential (undefined: anonymous), or undefined if it cannot answer the challenge. */
  private async authorize(session: Session, challenge: Challenge | undefined, credential: RegistryCredential | undefined, tried: string[]): Promise<string | undefined> {
    const { ref } = session;
    if (!challenge) return credential?.username ? basic(credential) : undefined;
    if (challenge.scheme === 'basic') return credential?.username && credential.password !== undefined ? basic(credential) : undefined;
    if (credential?.registryToken) return `Bearer ${credential.registryToken}`;

    const realm = challenge.params.realm;
    if (!realm) throw new RegistryError('protocol', `${ref.canonical}: bearer challenge without realm`);
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm);
    } catch {
      throw new RegistryError('protocol', `${ref.canonical}: bad token realm "${realm}"`);
    }
    if (credential && realmUrl.protocol !== 'https:' && this.schemeFor({ ...ref, apiHost: realmUrl.host }) !== 'http') {
      tried.push(`${credential.source} (not sent to the plain-HTTP token service ${realmUrl.origin})`);
      return undefined;
    }
    const scope = `repository:${ref.repository}:pull`;
    let res: HttpResponse;
    if (credential?.identityToken) {
      const form = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: credential.identityToken,
        service: challenge.params.service ?? '',
        scope,
        client_id: 'rbinder',
      });
      res = await this.http.request(realmUrl.toString(), {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: form.toString(),
        maxBodyBytes: MAX_TOKEN_BYTES,
        signal: session.signal,
      });
    } else {
      if (challenge.params.service) realmUrl.searchParams.set('service', challenge.params.service);
      realmUrl.searchParams.set('scope', scope);
      res = await this.http.request(realmUrl.toString(), {
        headers: credential?.username ? { Authorization: basic(credential) } : {},
        maxBodyBytes: MAX_TOKEN_BYTES,
        signal: session.signal,
      });
    }
    if (res.status === 401 || res.status === 403) {
      tried.push(`${credential?.source ?? 'anonymous'} (token service: ${res.status})`);
      return undefined;
    }
    if (res.status !== 200) throw statusError(res, ref, 'token');
    const body = parseJson(res.body, ref, 'token response');
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : '';
    if (!token) throw new RegistryError('protocol', `${ref.canonical}: the token service answered without a token`);
    return `Bearer ${token}`;
  }
}

function authKey(ref: ImageReference, credentialsKey: string): string {
  return `${ref.apiHost}/${ref.repository}|${credentialsKey}`;
}

function basic(c: RegistryCredential): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password ?? ''}`).toString('base64')}`;
}

/** Parses `Bearer realm="...",service="...",scope="..."` (or Basic). */
export function parseChallenge(header: string | string[] | undefined): Challenge | undefined {
  const value = Array.isArray(header) ? header.find((h) => /^bearer\s/i.test(h)) ?? header[0] : header;
  if (!value) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/s.exec(value);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'bearer' && scheme !== 'basic') return undefined;
  const params: Record<string, string> = {};
  for (const p of m[2]!.matchAll(/(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g)) {
    params[p[1]!.toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  }
  return { scheme, params };
}

function authError(session: Session, status: number, tried: string[]): RegistryError {
  const { ref } = session;
  const why =
    session.credentials.length === 0
      ? `no imagePullSecret of the pod or its ServiceAccount has credentials for ${ref.registry}`
      : `tried ${tried.join(', ') || session.credentials.map((c) => c.source).join(', ')}`;
  return new RegistryError('auth', `${ref.canonical}: the registry refused access (${status}); ${why}`);
}

function statusError(res: HttpResponse, ref: ImageReference, what: string): RegistryError {
  const detail = registryErrorMessage(res.body);
  const suffix = detail ? `: ${detail}` : '';
  if (res.status === 404) return new RegistryError('not_found', `${ref.canonical}: ${what} not found (404)${suffix}`);
  if (res.status === 429) return new RegistryError('rate_limited', `${ref.canonical}: rate limited by the registry (429)${suffix}`);
  if (res.status >= 500) return new RegistryError('unavailable', `${ref.canonical}: registry error ${res.status} for the ${what}${suffix}`);
  return new RegistryError('protocol', `${ref.canonical}: unexpected status ${res.status} for the ${what}${suffix}`);
}

/** The first message of a distribution API error body ({"errors":[{"code","message"}]}). */
function registryErrorMessage(body: Buffer): string {
  try {
    const json = JSON.parse(body.toString('utf8')) as { errors?: { code?: string; message?: string }[] };
    const first = json.errors?.[0];
    return first ? [first.code, first.message].filter(Boolean).join(' ') : '';
  } catch {
    return '';
  }
}

function toRegistryError(err: unknown, ref: ImageReference): RegistryError {
  if (err instanceof RegistryError) return err;
  if (err instanceof HttpError) {
    const kind: RegistryErrorKind =
      err.kind === 'timeout' || err.kind === 'aborted' ? 'timeout' : err.kind === 'tls' ? 'tls' : err.kind === 'network' ? 'network' : 'protocol';
    // An HTTPS client talking to a plain-HTTP port sees a TLS record of garbage.
    const hint = /wrong version number|packet length too long/i.test(err.message)
      ? ` (a plain-HTTP registry? list ${ref.apiHost} in the insecure registries)`
      : '';
    return new RegistryError(kind, `${ref.canonical}: ${err.message}${hint}`);
  }
  return new RegistryError('protocol', `${ref.canonical}: ${(err as Error)?.message ?? String(err)}`);
}

function verifyDigest(body: Buffer, digest: string, ref: ImageReference, what: string): void {
  const [algorithm, hex] = digest.split(':', 2);
  if (algorithm !== 'sha256') return; // others are legal but rare; trust the transport
  const actual = createHash('sha256').update(body).digest('hex');
  if (actual !== hex) throw new RegistryError('protocol', `${ref.canonical}: ${what} does not match its digest ${digest}`);
}

function parseJson(body: Buffer, ref: ImageReference, what: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(body.toString('utf8'));
    if (isObject(value)) return value;
  } catch {
    // fall through
  }
  throw new RegistryError('protocol', `${ref.canonical}: the ${what} is not a JSON object`);
}

function platformOf(value: unknown): Platform | undefined {
  if (!isObject(value)) return undefined;
  return { os: str(value.os), architecture: str(value.architecture), ...(value.variant ? { variant: str(value.variant) } : {}) };
}

function stringField(obj: Record<string, unknown>, key: string, ref: ImageReference): string {
  const v = obj[key];
  if (typeof v !== 'string' || v === '') throw new RegistryError('protocol', `${ref.canonical}: missing "${key}" in the manifest`);
  return v;
}

function stringArray(value: unknown, ref: ImageReference, what: string): string[] {
  if (value === undefined || value === null) return [];
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return value;
  throw new RegistryError('protocol', `${ref.canonical}: ${what} in the image config is not an array of strings`);
}

function asArray(v: unknown): unknown[] | undefined {
  return Array.isArray(v) ? v : undefined;
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
