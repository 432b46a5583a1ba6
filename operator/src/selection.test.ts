import type { V1LabelSelector } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { tracedWorkload, workload } from './fixtures';
import { ANNOTATION_INJECT } from './names';
import { matchesSelector, selectWorkloads } from './selection';

describe('matchesSelector', () => {
  const labels = { app: 'web', tier: 'front', team: 'a' };
  const cases: [string, V1LabelSelector, boolean][] = [
    ['empty selector matches all', {}, true],
    ['matchLabels equal', { matchLabels: { app: 'web' } }, true],
    ['matchLabels differ', { matchLabels: { app: 'db' } }, false],
    ['In', { matchExpressions: [{ key: 'tier', operator: 'In', values: ['front', 'back'] }] }, true],
    ['In, missing key', { matchExpressions: [{ key: 'zone', operator: 'In', values: ['x'] }] }, false],
    ['NotIn', { matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['front'] }] }, false],
    ['NotIn, missing key', { matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['x'] }] }, true],
    ['Exists', { matchExpressions: [{ key: 'team', operator: 'Exists' }] }, true],
    ['DoesNotExist', { matchExpressions: [{ key: 'team', operator: 'DoesNotExist' }] }, false],
    ['all terms must hold', { matchLabels: { app: 'web' }, matchExpressions: [{ key: 'team', operator: 'DoesNotExist' }] }, false],
    ['unknown operator matches nothing', { matchExpressions: [{ key: 'team', operator: 'Gt', values: ['1'] }] }, false],
  ];
  for (const [name, selector, want] of cases) it(name, () => expect(matchesSelector(selector, labels)).toBe(want));
});

describe('selectWorkloads', () => {
  const excluded = new Set(['kube-system']);
  it('matches only in the TracedWorkload namespace', () => {
    const tw = tracedWorkload('tw', { selector: {} });
    const { selection } = selectWorkloads([tw], [workload('Deployment', 'a'), workload('Deployment', 'b', { namespace: 'other' })], excluded);
    expect(selection.get('shop/Deployment/a')).toMatchObject({ by: 'tracedWorkload' });
    expect(selection.get('other/Deployment/b')).toEqual({ by: 'none' });
  });
  it('a TracedWorkload being deleted selects nothing; the annotation still does', () => {
    const tw = tracedWorkload('tw', { selector: {} }, { deletionTimestamp: new Date() });
    const { selection, claims } = selectWorkloads([tw], [workload('Deployment', 'a', { annotations: { [ANNOTATION_INJECT]: 'true' } })], excluded);
    expect(selection.get('shop/Deployment/a')).toEqual({ by: 'annotation' });
    expect(claims.size).toBe(0);
  });
  it('records who lost and who opted out', () => {
    const older = tracedWorkload('older', { selector: {} }, { creationTimestamp: new Date('2025-01-01T00:00:00Z') });
    const newer = tracedWorkload('newer', { selector: {} }, { creationTimestamp: new Date('2025-06-01T00:00:00Z') });
    const { claims } = selectWorkloads([newer, older], [workload('Deployment', 'a'), workload('Deployment', 'b', { annotations: { [ANNOTATION_INJECT]: 'false' } })], excluded);
    expect(claims.get('shop/newer')!.map((c) => [c.workload.name, c.lostTo, c.optedOut])).toEqual([
      ['a', 'older', undefined],
      ['b', undefined, true],
    ]);
    expect(claims.get('shop/older')!.map((c) => [c.workload.name, c.lostTo, c.optedOut])).toEqual([
      ['a', undefined, undefined],
      ['b', undefined, true],
    ]);
  });
  it('ties on age go to the name first in order', () => {
    const a = tracedWorkload('a', { selector: {} });
    const b = tracedWorkload('b', { selector: {} });
    const { selection } = selectWorkloads([b, a], [workload('Deployment', 'x')], excluded);
    const sel = selection.get('shop/Deployment/x');
    expect(sel?.by === 'tracedWorkload' && sel.tracedWorkload.metadata.name).toBe('a');
  });
});
