// Leader election with a coordination.k8s.io/v1 Lease, as client-go does it: every write is an
// update conditional on the resourceVersion read, so two candidates never both win; expiry is
// judged by the time this replica last saw the record change (not by the holder's clock).

import { V1MicroTime, type V1Lease, type V1LeaseSpec } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { errorText, isConflict, isNotFound, type Kube } from './kube';

export interface LeaderElectionTiming {
  /** How long a lease not renewed stays the holder's. */
  leaseDurationMs: number;
  /** The leader gives up when it could not renew for this long (less than leaseDuration). */
  renewDeadlineMs: number;
  /** Time between attempts to acquire or renew. */
  retryPeriodMs: number;
}

export const DEFAULT_TIMING: LeaderElectionTiming = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 };

/** The record as last seen, and when (local monotonic-ish clock). */
export interface Observation {
  record: string;
  at: number;
}

export type LeaseDecision =
  | { action: 'create'; spec: V1LeaseSpec }
  | { action: 'update'; spec: V1LeaseSpec; acquired: boolean }
  | { action: 'wait'; holder: string; reason: string };

function recordKey(spec: V1LeaseSpec | undefined): string {
  return JSON.stringify([spec?.holderIdentity ?? '', String(spec?.renewTime ?? ''), spec?.leaseDurationSeconds ?? 0, spec?.leaseTransitions ?? 0]);
}

/**
 * What to do with the lease as read (undefined: it does not exist). `observation` is updated by the
 * caller from the returned `observed`.
 */
export function decideLease(
  lease: V1Lease | undefined,
  identity: string,
  now: number,
  previous: Observation | undefined,
  timing: LeaderElectionTiming,
): { decision: LeaseDecision; observed: Observation } {
  const durationSeconds = Math.ceil(timing.leaseDurationMs / 1000);
  const micro = new V1MicroTime(now);
  if (!lease) {
    const spec: V1LeaseSpec = { holderIdentity: identity, leaseDurationSeconds: durationSeconds, acquireTime: micro, renewTime: micro, leaseTransitions: 0 };
    return { decision: { action: 'create', spec }, observed: { record: recordKey(spec), at: now } };
  }
  const spec = lease.spec ?? {};
  const key = recordKey(spec);
  const observed = previous && previous.record === key ? previous : { record: key, at: now };
  const holder = spec.holderIdentity ?? '';
  if (holder === identity) {
    return { decision: { action: 'update', acquired: false, spec: { ...spec, renewTime: micro, leaseDurationSeconds: durationSeconds } }, observed };
  }
  const held = holder !== '' && observed.at + (spec.leaseDurationSeconds ?? durationSeconds) * 1000 > now;
  if (held) return { decision: { action: 'wait', holder, reason: 'held by another replica' }, observed };
  return {
    decision: {
      action: 'update',
      acquired: true,
      spec: { holderIdentity: identity, leaseDurationSeconds: durationSeconds, acquireTime: micro, renewTime: micro, leaseTransitions: (spec.leaseTransitions ?? 0) + (holder ? 1 : 0) },
    },
    observed,
  };
}

export interface LeaderCallbacks {
  onStartedLeading(): Promise<void> | void;
  onStoppedLeading(): Promise<void> | void;
}

const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });

export class LeaderElector {
  private observation: Observation | undefined;
  private lease: V1Lease | undefined;
  private leading = false;
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(
    private readonly kube: Kube,
    private readonly leaseName: string,
    private readonly identity: string,
    private readonly callbacks: LeaderCallbacks,
    private readonly logger: Logger,
    private readonly timing: LeaderElectionTiming = DEFAULT_TIMING,
    private readonly clock: () => number = Date.now,
  ) {}

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** One attempt to acquire or renew. true: this replica holds the lease now. */
  async tryAcquireOrRenew(): Promise<boolean> {
    let current: V1Lease | undefined;
    try {
      current = await this.kube.getLease(this.leaseName);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    const now = this.clock();
    const { decision, observed } = decideLease(current, this.identity, now, this.observation, this.timing);
    this.observation = observed;
    if (decision.action === 'wait') return false;
    try {
      if (decision.action === 'create') {
        this.lease = await this.kube.createLease({ metadata: { name: this.leaseName, namespace: this.kube.options.namespace }, spec: decision.spec });
      } else {
        this.lease = await this.kube.updateLease({ ...current!, spec: decision.spec });
      }
    } catch (err) {
      // Someone else wrote first: they won this round.
      if (isConflict(err)) return false; // 409 Conflict on update, AlreadyExists on create
      throw err;
    }
    this.observation = { record: recordKey(this.lease.spec), at: now };
    if (decision.action === 'update' && decision.acquired) this.logger.info({ lease: this.leaseName }, 'acquired the lease');
    if (decision.action === 'create') this.logger.info({ lease: this.leaseName }, 'created and acquired the lease');
    return true;
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      // Candidate.
      let won = false;
      try {
        won = await this.tryAcquireOrRenew();
      } catch (err) {
        this.logger.warn({ err: errorText(err) }, 'leader election: lease not readable');
      }
      if (!won) {
        await sleep(this.timing.retryPeriodMs, signal);
        continue;
      }
      this.leading = true;
      try {
        await this.callbacks.onStartedLeading();
      } catch (err) {
        // Not able to lead: step down and try again as a candidate (the lease is still ours for a while).
        this.logger.error({ err: errorText(err) }, 'starting the operator failed; stepping down');
        this.leading = false;
        await this.stepDown();
        await sleep(this.timing.retryPeriodMs, signal);
        continue;
      }
      // Leader: renew until a renewal fails for renewDeadline, or we stop.
      let lastRenew = this.clock();
      while (!signal.aborted) {
        await sleep(this.timing.retryPeriodMs, signal);
        if (signal.aborted) break;
        try {
          if (await this.tryAcquireOrRenew()) {
            lastRenew = this.clock();
            continue;
          }
          this.logger.warn('leader election: the lease was taken over');
          break;
        } catch (err) {
          this.logger.warn({ err: errorText(err) }, 'leader election: renewal failed');
        }
        if (this.clock() - lastRenew > this.timing.renewDeadlineMs) {
          this.logger.error('leader election: could not renew within the deadline; stepping down');
          break;
        }
      }
      this.leading = false;
      await this.stepDown();
    }
  }

  private async stepDown(): Promise<void> {
    try {
      await this.callbacks.onStoppedLeading();
    } catch (err) {
      this.logger.error({ err: errorText(err) }, 'stopping the operator failed');
    }
  }

  /** Stops campaigning; a leader steps down and releases the lease so another replica takes over at once. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
    if (this.lease && this.lease.spec?.holderIdentity === this.identity) {
      try {
        const current = await this.kube.getLease(this.leaseName);
        if (current.spec?.holderIdentity === this.identity) {
          await this.kube.updateLease({ ...current, spec: { ...current.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: new V1MicroTime(this.clock()) } });
          this.logger.info({ lease: this.leaseName }, 'released the lease');
        }
      } catch (err) {
        this.logger.warn({ err: errorText(err) }, 'releasing the lease failed; it expires by itself');
      }
      this.lease = undefined;
    }
  }
}
