import type { V1Lease } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { decideLease, DEFAULT_TIMING } from './leader';

const lease = (holderIdentity: string, renewTime = '2026-01-01T00:00:00.000000Z', leaseTransitions = 0): V1Lease => ({
  metadata: { name: 'rbinder-controller', resourceVersion: '7' },
  spec: { holderIdentity, leaseDurationSeconds: 15, renewTime: renewTime as never, leaseTransitions },
});

describe('decideLease', () => {
  it('creates a lease that does not exist', () => {
    const { decision } = decideLease(undefined, 'me', 1_000, undefined, DEFAULT_TIMING);
    expect(decision).toMatchObject({ action: 'create', spec: { holderIdentity: 'me', leaseDurationSeconds: 15, leaseTransitions: 0 } });
  });

  it('renews its own lease', () => {
    const { decision } = decideLease(lease('me'), 'me', 1_000, undefined, DEFAULT_TIMING);
    expect(decision).toMatchObject({ action: 'update', acquired: false, spec: { holderIdentity: 'me' } });
  });

  it("waits while another holder's record keeps changing, by the local clock", () => {
    const first = decideLease(lease('other'), 'me', 0, undefined, DEFAULT_TIMING);
    expect(first.decision.action).toBe('wait');
    // Same record 10 s later: not expired yet (15 s).
    const second = decideLease(lease('other'), 'me', 10_000, first.observed, DEFAULT_TIMING);
    expect(second.decision.action).toBe('wait');
    // Renewed at 14 s: the clock restarts.
    const third = decideLease(lease('other', '2026-01-01T00:00:14.000000Z'), 'me', 14_000, second.observed, DEFAULT_TIMING);
    expect(third.decision.action).toBe('wait');
    expect(decideLease(lease('other', '2026-01-01T00:00:14.000000Z'), 'me', 28_000, third.observed, DEFAULT_TIMING).decision.action).toBe('wait');
  });

  it('takes over a lease not renewed for its duration, counting the transition', () => {
    const first = decideLease(lease('other', undefined, 4), 'me', 0, undefined, DEFAULT_TIMING);
    const { decision } = decideLease(lease('other', undefined, 4), 'me', 15_001, first.observed, DEFAULT_TIMING);
    expect(decision).toMatchObject({ action: 'update', acquired: true, spec: { holderIdentity: 'me', leaseTransitions: 5 } });
  });

  it('takes a released lease (no holder) at once', () => {
    expect(decideLease(lease(''), 'me', 0, undefined, DEFAULT_TIMING).decision).toMatchObject({ action: 'update', acquired: true });
  });
});
