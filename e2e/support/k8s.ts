// Helpers shared by the end-to-end suites (e2e/*.e2e.test.ts).
import { createServer } from 'node:net';
import { errorText } from '../../operator/src/kube';

/** Thrown inside eventually()'s fn to stop polling at once (e.g. the controller died). */
export class Fatal extends Error {}

/**
 * Polls fn until it returns something other than undefined/false; after timeoutMs throws with
 * `what`, the last error, and `context()` (e.g. where a log is).
 */
export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 60_000,
  options: { intervalMs?: number; context?: () => string } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      if (err instanceof Fatal) throw err;
      lastError = err;
    }
    if (Date.now() > deadline) {
      const last = lastError ? ` (last error: ${errorText(lastError)})` : '';
      throw new Error(`${what}: not within ${timeoutMs} ms${last}${options.context ? `; ${options.context()}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 250));
  }
}

/** A TCP port on loopback that nothing listens on right now (bound, then closed). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const address = server.address();
  await new Promise((done) => server.close(done));
  if (!address || typeof address === 'string') throw new Error('no port');
  return address.port;
}
