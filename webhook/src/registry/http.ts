// A small HTTP(S) client for registry calls: a timeout per request and an overall deadline (an
// AbortSignal), bounded bodies, redirects (blob downloads go to a CDN; the Authorization header
// is not sent to another origin), extra trusted CAs, keep-alive connections.

import * as http from 'node:http';
import * as https from 'node:https';
import * as tls from 'node:tls';

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The URL that answered, after redirects. */
  url: string;
}

export type HttpFailure = 'timeout' | 'tls' | 'network' | 'too-large' | 'redirects' | 'aborted';

export class HttpError extends Error {
  constructor(
    readonly kind: HttpFailure,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export interface HttpClientOptions {
  /** PEM certificates trusted in addition to Node's bundled roots. */
  extraCa?: string;
  timeoutMs: number;
  userAgent: string;
}

export interface RequestOptions {
  method?: 'GET' | 'HEAD' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  signal?: AbortSignal;
  /** Larger bodies fail with "too-large". */
  maxBodyBytes: number;
}

const MAX_REDIRECTS = 5;
const TLS_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'EPROTO',
]);

export class HttpClient {
  private readonly httpsAgent: https.Agent;
  private readonly httpAgent: http.Agent;

  constructor(private readonly options: HttpClientOptions) {
    const ca = options.extraCa ? [...tls.rootCertificates, options.extraCa] : undefined;
    this.httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 16, ca, minVersion: 'TLSv1.2' });
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  }

  async request(url: string, options: RequestOptions): Promise<HttpResponse> {
    let current = new URL(url);
    const headers = { ...options.headers };
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const res = await this.once(current, { ...options, headers });
      const location = res.headers.location;
      if (![301, 302, 303, 307, 308].includes(res.status) || !location) return res;
      const next = new URL(location, current);
      // Signed CDN URLs reject (or would leak) the registry's credentials.
      if (next.origin !== current.origin) delete headers.Authorization;
      current = next;
    }
    throw new HttpError('redirects', `more than ${MAX_REDIRECTS} redirects from ${url}`);
  }

  close(): void {
    this.httpsAgent.destroy();
    this.httpAgent.destroy();
  }

  private once(url: URL, options: RequestOptions): Promise<HttpResponse> {
    const secure = url.protocol === 'https:';
    const lib = secure ? https : http;
    const where = `${options.method ?? 'GET'} ${url.origin}${url.pathname}`;
    return new Promise<HttpResponse>((resolve, reject) => {
      if (options.signal?.aborted) {
        reject(new HttpError('aborted', `${where}: deadline exceeded before the request`));
        return;
      }
      let settled = false;
      const fail = (err: HttpError): void => {
        if (settled) return;
        settled = true;
        cleanup();
        req.destroy();
        reject(err);
      };
      const onAbort = (): void => fail(new HttpError('aborted', `${where}: deadline exceeded`));
      const timer = setTimeout(() => fail(new HttpError('timeout', `${where}: no answer within ${this.options.timeoutMs} ms`)), this.options.timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
      };
      options.signal?.addEventListener('abort', onAbort, { once: true });

      const req = lib.request(
        url,
        {
          method: options.method ?? 'GET',
          agent: secure ? this.httpsAgent : this.httpAgent,
          headers: { 'User-Agent': this.options.userAgent, ...options.headers },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > options.maxBodyBytes) {
              fail(new HttpError('too-large', `${where}: response larger than ${options.maxBodyBytes} bytes`));
              return;
            }
            chunks.push(chunk);
          });
          res.on('error', (err) => fail(classify(err, where)));
          res.on('end', () => {
            if (settled) return;
            settled = true;
            cleanup();
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), url: url.toString() });
          });
        },
      );
      req.on('error', (err) => fail(classify(err, where)));
      req.end(options.body);
    });
  }
}

function classify(err: Error & { code?: string }, where: string): HttpError {
  const code = err.code ?? '';
  if (TLS_CODES.has(code) || /certificate|ssl|tls/i.test(err.message)) {
    return new HttpError('tls', `${where}: TLS failed: ${err.message}${code ? ` (${code})` : ''}`);
  }
  return new HttpError('network', `${where}: ${err.message}${code && !err.message.includes(code) ? ` (${code})` : ''}`);
}
