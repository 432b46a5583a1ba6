// A real OCI registry for tests: Debian's docker-registry (CNCF distribution 2.8), configured per
// test in a temporary directory on 127.0.0.1, optionally behind TLS (a test CA), htpasswd Basic
// auth, or a bearer-token service run in the test process (the flow Docker Hub and GHCR use).
//
// The binaries come from apt (docker-registry; htpasswd from apache2-utils, for bcrypt). When one
// is missing and we are root, they are installed once, under a lock so parallel workers wait for
// each other; otherwise the error says what to install.

import { execFile } from 'node:child_process';
import { createPrivateKey, randomBytes, sign, X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as http from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { createCertificateAuthority, issueServingCertificate, type CertificateAuthority } from '../../webhook/src/certificates';
import { request, type PushTarget } from './oci';
import { spawnTracked, terminate, type Tracked } from '../support/process';

const run = promisify(execFile);

export const REGISTRY_BINARY = '/usr/bin/docker-registry';
export const HTPASSWD_BINARY = '/usr/bin/htpasswd';
/** The apt packages these helpers need (CI installs them up front). */
export const APT_PACKAGES = ['docker-registry', 'apache2-utils'];

let installing: Promise<void> | undefined;

/** Installs docker-registry and apache2-utils with apt if a binary is missing; a no-op when both exist. */
export function ensureRegistryTools(): Promise<void> {
  if (existsSync(REGISTRY_BINARY) && existsSync(HTPASSWD_BINARY)) return Promise.resolve();
  installing ??= (async () => {
    if (process.getuid?.() !== 0) {
      throw new Error(`${REGISTRY_BINARY} or ${HTPASSWD_BINARY} is missing: apt-get install -y ${APT_PACKAGES.join(' ')}`);
    }
    // One apt at a time across test workers; the second one finds the binaries installed.
    const script = [
      `[ -x ${REGISTRY_BINARY} ] && [ -x ${HTPASSWD_BINARY} ] && exit 0`,
      `apt-get install -y -qq ${APT_PACKAGES.join(' ')} >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq ${APT_PACKAGES.join(' ')}; }`,
    ].join('\n');
    try {
      await run('flock', ['/tmp/rbinder-apt.lock', 'sh', '-c', script], {
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
        maxBuffer: 16 << 20,
        timeout: 600_000,
      });
    } catch (err) {
      installing = undefined;
      const e = err as { stderr?: string; message: string };
      throw new Error(`installing ${APT_PACKAGES.join(' ')} failed: ${e.stderr || e.message}`);
    }
  })();
  return installing;
}

/** A port free at the time of asking (the registry binds it right after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface User {
  username: string;
  password: string;
}

export interface TokenAccessRule {
  /** Repository name prefix, e.g. "public/". */
  prefix: string;
  /** Who may pull: "anonymous" (everyone) or a list of usernames. */
  pull: 'anonymous' | string[];
}

export type RegistryAuth =
  | { kind: 'htpasswd'; users: User[] }
  | {
      kind: 'token';
      users: User[];
      /** Pull rules; the first user may always pull and push. */
      rules: TokenAccessRule[];
    };

export interface RegistryOptions {
  auth?: RegistryAuth;
  /** Serve HTTPS with a certificate from a new test CA (see `ca`). */
  tls?: boolean;
}

export interface TestRegistry {
  /** "127.0.0.1:PORT": the registry part of image references. */
  host: string;
  /** "http://127.0.0.1:PORT" or "https://...". */
  url: string;
  /** The test CA (PEM) when tls is on. */
  ca?: string;
  /** Where to push (with the first user's credentials when auth is on). */
  target: PushTarget;
  /** The token service, when auth.kind is "token". */
  tokenService?: TokenService;
  stop(): Promise<void>;
}

/** Starts a registry; `stop()` kills it and removes its storage. */
export async function startRegistry(options: RegistryOptions = {}): Promise<TestRegistry> {
  await ensureRegistryTools();
  const dir = await mkdtemp(join(tmpdir(), 'rbinder-registry-'));
  let tokenService: TokenService | undefined;
  let proc: Tracked | undefined;
  try {
    let ca: CertificateAuthority | undefined;
    const httpConfig: Record<string, unknown> = { secret: randomBytes(16).toString('hex'), headers: { 'X-Content-Type-Options': ['nosniff'] } };
    if (options.tls) {
      ca = await createCertificateAuthority({ commonName: 'rbinder test registry CA' });
      const leaf = await issueServingCertificate(ca, { commonName: 'registry', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'] });
      await writeFile(join(dir, 'tls.crt'), leaf.certificate);
      await writeFile(join(dir, 'tls.key'), leaf.privateKey);
      httpConfig.tls = { certificate: join(dir, 'tls.crt'), key: join(dir, 'tls.key') };
    }

    let auth: Record<string, unknown> | undefined;
    let authorization: PushTarget['authorization'];
    const admin = options.auth?.users[0];
    if (options.auth?.kind === 'htpasswd') {
      const lines: string[] = [];
      for (const user of options.auth.users) {
        // -B: bcrypt, the only scheme distribution accepts; -C 4: the cheapest cost, tests only.
        const { stdout } = await run(HTPASSWD_BINARY, ['-nbBC', '4', user.username, user.password]);
        lines.push(stdout.trim());
      }
      await writeFile(join(dir, 'htpasswd'), `${lines.join('\n')}\n`);
      auth = { htpasswd: { realm: 'rbinder-test', path: join(dir, 'htpasswd') } };
      if (admin) authorization = async () => `Basic ${Buffer.from(`${admin.username}:${admin.password}`).toString('base64')}`;
    } else if (options.auth?.kind === 'token') {
      tokenService = await startTokenService(options.auth.users, options.auth.rules);
      await writeFile(join(dir, 'token-ca.crt'), tokenService.certificate);
      auth = {
        token: {
          realm: `${tokenService.url}/token`,
          service: tokenService.service,
          issuer: tokenService.issuer,
          rootcertbundle: join(dir, 'token-ca.crt'),
        },
      };
      const service = tokenService;
      authorization = async (repository) => `Bearer ${service.mint(repository, ['pull', 'push'], admin?.username ?? 'admin')}`;
    }

    // The port is free when asked and bound a moment later; retry if another process took it.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const config = {
        version: 0.1,
        log: { level: 'warn', accesslog: { disabled: true } },
        storage: { filesystem: { rootdirectory: join(dir, 'storage') }, delete: { enabled: true } },
        http: { ...httpConfig, addr: `127.0.0.1:${port}` },
        ...(auth ? { auth } : {}),
      };
      await writeFile(join(dir, 'config.yml'), stringify(config));
      proc = spawnTracked([REGISTRY_BINARY, 'serve', join(dir, 'config.yml')], { cwd: dir });
      const host = `127.0.0.1:${port}`;
      const url = `${options.tls ? 'https' : 'http'}://${host}`;
      const ready = await waitReady(url, ca?.certificate, proc);
      if (ready === true) {
        const started = proc;
        const target: PushTarget = { url, ca: ca?.certificate, authorization };
        return {
          host,
          url,
          ca: ca?.certificate,
          target,
          tokenService,
          stop: async () => {
            await terminate(started, 5_000);
            await tokenService?.close();
            await rm(dir, { recursive: true, force: true });
          },
        };
      }
      await terminate(proc, 2_000);
      if (attempt >= 3 || !/address already in use/i.test(ready)) throw new Error(`docker-registry did not start: ${ready}`);
    }
  } catch (err) {
    if (proc) await terminate(proc, 2_000);
    await tokenService?.close();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** true once GET /v2/ answers (200 or 401); else the registry's output explaining why not. */
async function waitReady(url: string, ca: string | undefined, proc: Tracked): Promise<true | string> {
  const deadline = Date.now() + 15_000;
  let exited = false;
  void proc.exited.then(() => (exited = true));
  while (Date.now() < deadline) {
    if (exited) return proc.stderr() || proc.stdout() || 'exited';
    try {
      const res = await request(`${url}/v2/`, { ca });
      if (res.status === 200 || res.status === 401) return true;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return `no answer on ${url} within 15 s\n${proc.stderr()}`;
}

// ---------------------------------------------------------------------------------------------
// A token service as in the distribution "token" auth spec: GET /token?service=&scope= with
// optional Basic credentials answers {"token", "expires_in"}; the JWT is ES256-signed with a key
// whose (self-signed) certificate is the registry's rootcertbundle and travels in the x5c header.

export interface TokenService {
  url: string;
  service: string;
  issuer: string;
  /** PEM certificate of the signing key. */
  certificate: string;
  /** Requests answered, by outcome, for assertions. */
  requests: { user: string; scope: string[]; granted: string[] }[];
  /** A token for `repository` with these actions (the test's own pushes). */
  mint(repository: string, actions: string[], subject: string): string;
  close(): Promise<void>;
}

export async function startTokenService(users: User[], rules: TokenAccessRule[]): Promise<TokenService> {
  const ca = await createCertificateAuthority({ commonName: 'rbinder test token issuer' });
  const key = createPrivateKey(ca.privateKey);
  const der = new X509Certificate(ca.certificate).raw.toString('base64');
  const service = 'rbinder-test-registry';
  const issuer = 'rbinder-test-issuer';
  const admin = users[0]?.username;
  const requests: TokenService['requests'] = [];

  const b64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');
  const mint = (access: { type: string; name: string; actions: string[] }[], subject: string): string => {
    const now = Math.floor(Date.now() / 1000);
    const header = b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT', x5c: [der] }));
    const claims = b64url(
      JSON.stringify({ iss: issuer, sub: subject, aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access }),
    );
    const signature = sign('sha256', Buffer.from(`${header}.${claims}`), { key, dsaEncoding: 'ieee-p1363' });
    return `${header}.${claims}.${b64url(signature)}`;
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== '/token') {
      res.writeHead(404).end();
      return;
    }
    let user = 'anonymous';
    const header = req.headers.authorization;
    if (header?.startsWith('Basic ')) {
      const [name, ...rest] = Buffer.from(header.slice(6), 'base64').toString('utf8').split(':');
      const found = users.find((u) => u.username === name && u.password === rest.join(':'));
      if (!found) {
        res.writeHead(401, { 'Content-Type': 'application/json' }).end(JSON.stringify({ details: 'bad credentials' }));
        requests.push({ user: `${name} (rejected)`, scope: url.searchParams.getAll('scope'), granted: [] });
        return;
      }
      user = found.username;
    }
    const access: { type: string; name: string; actions: string[] }[] = [];
    for (const scope of url.searchParams.getAll('scope')) {
      const [type, name, actions] = scope.split(':');
      if (type !== 'repository' || !name || !actions) continue;
      const wanted = actions.split(',');
      const rule = rules.find((r) => name.startsWith(r.prefix));
      const mayPull = user === admin || (rule !== undefined && (rule.pull === 'anonymous' || rule.pull.includes(user)));
      const granted = wanted.filter((a) => (a === 'pull' ? mayPull : user === admin));
      if (granted.length > 0) access.push({ type, name, actions: granted });
    }
    requests.push({ user, scope: url.searchParams.getAll('scope'), granted: access.map((a) => `${a.name}:${a.actions.join(',')}`) });
    // As Docker Hub does: a token is always issued; it simply grants nothing it may not.
    const token = mint(access, user);
    res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() }));
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    service,
    issuer,
    certificate: ca.certificate,
    requests,
    mint: (repository, actions, subject) => mint([{ type: 'repository', name: repository, actions }], subject),
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}
