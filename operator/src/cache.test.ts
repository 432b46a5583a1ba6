import { describe, expect, it } from 'vitest';
import { selectingTracedWorkload } from './cache';
import { NOW, tracedWorkload } from './fixtures';

describe('selectingTracedWorkload (the webhook lookup for unstamped pods)', () => {
  const manual = tracedWorkload('manual', { selector: {} }, { status: { workloads: [{ kind: 'Deployment', name: 'web', state: 'RestartNeeded' }] } });
  const lost = tracedWorkload('lost', { selector: {} }, { status: { workloads: [{ kind: 'Deployment', name: 'web', state: 'Conflict' }, { kind: 'Deployment', name: 'api', state: 'RolledBack' }] } });

  it('finds the TracedWorkload that applies to the workload', () => {
    expect(selectingTracedWorkload([lost, manual], 'Deployment', 'web')?.metadata.name).toBe('manual');
  });
  it('not one that lost it, rolled it back, or is being deleted', () => {
    expect(selectingTracedWorkload([lost], 'Deployment', 'web')).toBeUndefined();
    expect(selectingTracedWorkload([lost], 'Deployment', 'api')).toBeUndefined();
    expect(selectingTracedWorkload([{ ...manual, metadata: { ...manual.metadata, deletionTimestamp: NOW } }], 'Deployment', 'web')).toBeUndefined();
    expect(selectingTracedWorkload([manual], 'StatefulSet', 'web')).toBeUndefined();
  });
});
