// The webhook's HTTPS server: POST /mutate--v1-pod, /healthz, /readyz, /metrics. A thin shell
// around reviewPodRequest: bad bodies get a 400 that says what is wrong, the handler's own failures
// follow the failure policy, and nothing a client sends can take the process down.
//
// The serving certificate is re-read when its files change (a Secret volume is updated in place
// by the kubelet, or the operator rotates it) and swapped in with setSecureContext: connections
// opened afterwards see the new certificate, without a restart.

import { X509Certificate, createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import * as tls from 'node:tls';
import express, { type NextFunction, type Request, type Response } from 'express';
import {
  BadRequestError,
  parseAdmissionReview,
  reviewPodRequest,
  reviewResponse,
  type ReviewDependencies,
} from './admission';
import type { WebhookMetrics } from './metrics';
import { MUTATE_PODS_PATH } from './names';

export const DEFAULT_MAX_BODY_BYTES = 3 << 20;

export interface WebhookServerOptions extends ReviewDependencies {
  port: number;
  /** Listen address; all interfaces when undefined. */
  host?: string;
  certFile: string;
  keyFile: string;
  /** How often the certificate files are checked for changes. */
  certCheckIntervalMs?: number;
  maxBodyBytes?: number;
  /** On close, how long in-flight requests may take before their connections are cut. */
  shutdownGraceMs?: number;
  metrics: WebhookMetrics;
  /** Liveness of what shares the process (the operator); /healthz answers 503 when false. */
  healthy?: () => boolean;
  /** Readiness of what the webhook depends on (the TracedWorkload cache); /readyz answers 503 when false. */
  ready?: () => boolean;
}

export interface WebhookServer {
  /** The port listened on (useful with port 0). */
  readonly port: number;
  /** Re-reads the certificate files now; true if a new certificate was installed. */
  reloadCertificate(): Promise<boolean>;
  /** Stops accepting, lets in-flight requests finish (up to the grace period), resolves when closed. */
  close(): Promise<void>;
}

interface LoadedCertificate {
  cert: Buffer;
  key: Buffer;
  fingerprint: string;
}

const TLS_OPTIONS: tls.SecureContextOptions = { minVersion: 'TLSv1.2' };

async function readCertificate(certFile: string, keyFile: string): Promise<LoadedCertificate> {
  const [cert, key] = await Promise.all([readFile(certFile), readFile(keyFile)]);
  tls.createSecureContext({ ...TLS_OPTIONS, cert, key }); // throws when the pair does not match
  const fingerprint = createHash('sha256').update(cert).update('\0').update(key).digest('hex');
  return { cert, key, fingerprint };
}

function expirySeconds(cert: Buffer): number | undefined {
  try {
    return Math.floor(new Date(new X509Certificate(cert).validTo).getTime() / 1000);
  } catch {
    return undefined;
  }
}

export async function startWebhookServer(options: WebhookServerOptions): Promise<WebhookServer> {
  const { log, metrics } = options;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  let current = await readCertificate(options.certFile, options.keyFile);
  metrics.certificateExpiry.set(expirySeconds(current.cert) ?? 0);
  let closing = false;

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((_req: Request, res: Response, next: NextFunction) => {
    if (closing) res.setHeader('Connection', 'close');
    next();
  });
  app.get('/healthz', (_req, res) => {
    if (options.healthy && !options.healthy()) res.status(503).type('text/plain').send('unhealthy');
    else res.type('text/plain').send('ok');
  });
  app.get('/readyz', (_req, res) => {
    if (closing) res.status(503).type('text/plain').send('shutting down');
    else if (options.ready && !options.ready()) res.status(503).type('text/plain').send('not ready');
    else res.type('text/plain').send('ok');
  });
  app.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.post(
    MUTATE_PODS_PATH,
    // Any content type: the API server sends application/json, and a wrong header is no reason to fail a pod.
    express.json({ limit: maxBodyBytes, type: () => true, strict: true }),
    async (req: Request, res: Response) => {
      const started = process.hrtime.bigint();
      let request;
      try {
        request = parseAdmissionReview(req.body);
      } catch (err) {
        if (!(err instanceof BadRequestError)) throw err;
        return badRequest(res, err.message, 'invalid AdmissionReview');
      }
      const outcome = await reviewPodRequest(request, options);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      metrics.requests.inc({ result: outcome.result });
      metrics.duration.observe({ result: outcome.result }, seconds);
      const pod = request.object as { metadata?: { name?: string; generateName?: string } } | undefined;
      const line = {
        uid: request.uid,
        namespace: request.namespace,
        pod: pod?.metadata?.name || pod?.metadata?.generateName,
        operation: request.operation,
        result: outcome.result,
        selectedBy: outcome.selectedBy,
        reason: outcome.reason || undefined,
        injected: outcome.injected.length > 0 ? outcome.injected : undefined,
        warnings: outcome.response.warnings,
        durationMs: Math.round(seconds * 1e4) / 10,
      };
      // Every pod of the cluster passes through here: only what the webhook did is worth an info line.
      if (outcome.result === 'ignored') log.debug(line, 'pod admitted unchanged');
      else log.info(line, outcome.result === 'error' ? 'webhook failure' : `pod ${outcome.result}`);
      res.json(reviewResponse(outcome.response));
    },
  );
  app.use((_req: Request, res: Response) => {
    res.status(404).json({ error: `not found; the webhook serves POST ${MUTATE_PODS_PATH}, /healthz, /readyz, /metrics` });
  });
  // Express's error handler: body-parser's errors are the client's; anything else is ours.
  app.use((err: Error & { type?: string; status?: number }, _req: Request, res: Response, _next: NextFunction) => {
    switch (err.type) {
      case 'entity.too.large':
        return badRequest(res, `request body exceeds the limit of ${maxBodyBytes} bytes`, 'body too large');
      case 'entity.parse.failed':
        return badRequest(res, `malformed JSON: ${err.message}`, 'malformed JSON');
      case 'encoding.unsupported':
      case 'charset.unsupported':
      case 'request.size.invalid':
      case 'request.aborted':
      case 'stream.encoding.set':
        return badRequest(res, err.message, 'unreadable body');
      default:
        log.error({ err }, 'unexpected error in the webhook');
        if (!res.headersSent) res.status(500).json({ error: 'internal error' });
    }
  });

  function badRequest(res: Response, message: string, what: string): void {
    metrics.requests.inc({ result: 'invalid' });
    log.warn({ problem: message }, `rejected request: ${what}`);
    if (!res.headersSent) res.status(400).json({ error: message });
  }

  const server = https.createServer({ ...TLS_OPTIONS, cert: current.cert, key: current.key }, app);
  server.keepAliveTimeout = 120_000; // longer than the API server's idle timeout, so it closes first
  server.headersTimeout = 15_000;
  server.requestTimeout = 30_000;
  server.on('tlsClientError', (err: Error, socket: Socket) => {
    log.debug({ err: err.message, remote: socket.remoteAddress }, 'TLS handshake failed');
  });
  server.on('clientError', (err: Error, socket: Socket) => {
    log.debug({ err: err.message }, 'client error');
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'webhook server error'));
  const port = (server.address() as AddressInfo).port;
  log.info({ port, host: options.host ?? '*', path: MUTATE_PODS_PATH, failurePolicy: options.config.failurePolicy }, 'webhook listening');

  let reloading: Promise<boolean> | undefined;
  const reloadCertificate = (): Promise<boolean> => {
    reloading ??= (async () => {
      try {
        const next = await readCertificate(options.certFile, options.keyFile);
        if (next.fingerprint === current.fingerprint) return false;
        server.setSecureContext({ ...TLS_OPTIONS, cert: next.cert, key: next.key });
        current = next;
        const expiry = expirySeconds(next.cert);
        metrics.certificateExpiry.set(expiry ?? 0);
        metrics.certificateReloads.inc({ result: 'success' });
        log.info({ notAfter: expiry ? new Date(expiry * 1000).toISOString() : undefined }, 'serving certificate reloaded');
        return true;
      } catch (err) {
        // Mid-rotation the certificate and key may not match yet: keep the old pair, try again later.
        metrics.certificateReloads.inc({ result: 'failure' });
        log.warn({ err: (err as Error).message }, 'cannot reload the serving certificate; keeping the current one');
        return false;
      } finally {
        reloading = undefined;
      }
    })();
    return reloading;
  };
  const timer = setInterval(() => void reloadCertificate(), options.certCheckIntervalMs ?? 10_000);
  timer.unref();

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= new Promise<void>((resolve) => {
      closing = true;
      clearInterval(timer);
      log.info('webhook shutting down: finishing in-flight requests');
      const force = setTimeout(() => {
        log.warn('in-flight requests did not finish in time; closing their connections');
        server.closeAllConnections();
      }, options.shutdownGraceMs ?? 10_000);
      force.unref();
      server.close(() => {
        clearTimeout(force);
        log.info('webhook closed');
        resolve();
      });
      server.closeIdleConnections();
    });
    return closed;
  };

  return { port, reloadCertificate, close };
}
