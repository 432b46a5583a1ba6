// An informer that does not give up: client-node's ListWatch relists by itself after 410 Gone and
// re-watches when a watch ends, but stops on any other error (API server down, connection reset,
// 403). This restarts it with capped exponential backoff and says when the cache first synced.

import type { KubernetesObject, ListWatch } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { errorText } from './kube';

export interface Backoff {
  initialMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000 };

/** The delay before restart number `attempt` (1-based): doubling, capped, with ±20% jitter. */
export function backoffDelay(attempt: number, backoff: Backoff, random: () => number = Math.random): number {
  const base = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.8 + 0.4 * random()));
}

export interface InformerStats {
  /** Restarts after an error. */
  restarts: number;
  /** Full lists (the first, and each after 410 Gone or a restart without a usable resourceVersion). */
  lists: number;
}

export class ResilientInformer<T extends KubernetesObject> {
  readonly stats: InformerStats = { restarts: 0, lists: 0 };
  private attempt = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private syncedResolve!: () => void;
  /** Resolves after the first successful list. */
  readonly synced: Promise<void>;
  private isSynced = false;

  constructor(
    readonly name: string,
    private readonly listWatch: ListWatch<T>,
    private readonly logger: Logger,
    onChange: (kind: 'add' | 'update' | 'delete', object: T) => void,
    private readonly backoff: Backoff = DEFAULT_BACKOFF,
  ) {
    this.synced = new Promise((resolve) => (this.syncedResolve = resolve));
    listWatch.on('add', (o: T) => {
      this.attempt = 0;
      onChange('add', o);
    });
    listWatch.on('update', (o: T) => {
      this.attempt = 0;
      onChange('update', o);
    });
    listWatch.on('delete', (o: T) => {
      this.attempt = 0;
      onChange('delete', o);
    });
    listWatch.on('connect', () => {
      // ListWatch lists only when it has no resourceVersion: count it by looking before it does.
      if (listWatch.latestResourceVersion()) return;
      this.stats.lists++;
      if (this.stats.lists > 1) this.logger.info({ informer: this.name, lists: this.stats.lists }, 'relisting (resourceVersion expired or unknown)');
    });
    listWatch.on('error', (err: unknown) => this.restartLater(err));
  }

  get hasSynced(): boolean {
    return this.isSynced;
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.listWatch.start();
    this.markSyncedIfListed();
  }

  private markSyncedIfListed(): void {
    if (!this.isSynced && this.listWatch.latestResourceVersion()) {
      this.isSynced = true;
      this.syncedResolve();
    }
  }

  private restartLater(err: unknown): void {
    if (this.stopped || this.timer) return;
    this.attempt++;
    this.stats.restarts++;
    const delay = backoffDelay(this.attempt, this.backoff);
    this.logger.warn({ informer: this.name, attempt: this.attempt, delayMs: delay, err: errorText(err) }, 'watch failed; restarting');
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.stopped) return;
      this.listWatch.start().then(
        () => this.markSyncedIfListed(),
        (e: unknown) => this.restartLater(e),
      );
    }, delay);
    this.timer.unref?.();
  }

  list(namespace?: string): readonly T[] {
    return this.listWatch.list(namespace);
  }

  get(name: string, namespace?: string): T | undefined {
    return this.listWatch.get(name, namespace);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.listWatch.stop();
  }
}
