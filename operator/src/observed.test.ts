import type { V1Deployment, V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { STAMP_FIELD_MANAGER } from './names';
import { crashLoopingContainer, observePod, observeWorkload, ownedTemplateAnnotationKeys } from './observed';

const applied = (manager: string, keys: string[], operation = 'Apply') => ({
  manager,
  operation,
  apiVersion: 'apps/v1',
  fieldsType: 'FieldsV1',
  fieldsV1: { 'f:spec': { 'f:template': { 'f:metadata': { 'f:annotations': Object.fromEntries(keys.map((k) => [`f:${k}`, {}])) } } } },
});

describe('observeWorkload', () => {
  it("reads the operator's stamp from managedFields, not from the annotations alone", () => {
    const d: V1Deployment = {
      metadata: { name: 'web', namespace: 'shop', managedFields: [applied(STAMP_FIELD_MANAGER, ['rbinder.io/config-hash', 'rbinder.io/inject']), applied('kubectl', ['rbinder.io/inject', 'team'], 'Update')] },
      spec: { selector: {}, template: { metadata: { annotations: { 'rbinder.io/config-hash': 'h', 'rbinder.io/inject': 'true', team: 'a' } } } },
    };
    const w = observeWorkload('Deployment', d);
    expect(w.stamp).toEqual({ 'rbinder.io/config-hash': 'h', 'rbinder.io/inject': 'true' });
    expect(ownedTemplateAnnotationKeys(d.metadata!.managedFields, 'kubectl')).toEqual([]); // only Apply entries count
  });
  it('knows an OnDelete StatefulSet', () => {
    expect(observeWorkload('StatefulSet', { metadata: { name: 'db' }, spec: { selector: {}, serviceName: 'db', template: {}, updateStrategy: { type: 'OnDelete' } } }).onDelete).toBe(true);
  });
});

describe('observePod', () => {
  const pod = (owner: { kind: string; name: string }, hash?: string): V1Pod => ({
    metadata: { name: 'p', namespace: 'shop', labels: hash ? { 'pod-template-hash': hash } : {}, ownerReferences: [{ apiVersion: 'apps/v1', kind: owner.kind, name: owner.name, uid: 'u', controller: true }] },
    status: {
      initContainerStatuses: [{ name: 'rbinder-install', image: 'i', imageID: '', ready: true, restartCount: 0 }],
      containerStatuses: [{ name: 'app', image: 'i', imageID: '', ready: false, restartCount: 5, state: { waiting: { reason: 'CrashLoopBackOff' } }, lastState: { terminated: { exitCode: 1 } } }],
    },
  });
  it('finds the Deployment through its ReplicaSet', () => {
    expect(observePod(pod({ kind: 'ReplicaSet', name: 'web-5d8f' }, '5d8f')).workload).toEqual({ kind: 'Deployment', name: 'web' });
    expect(observePod(pod({ kind: 'StatefulSet', name: 'db' })).workload).toEqual({ kind: 'StatefulSet', name: 'db' });
    expect(observePod(pod({ kind: 'Job', name: 'j' })).workload).toBeUndefined();
  });
  it('finds crash-looping containers, init containers included', () => {
    const p = observePod(pod({ kind: 'StatefulSet', name: 'db' }));
    expect(crashLoopingContainer(p, 3)?.name).toBe('app');
    expect(crashLoopingContainer(p, 6)).toBeUndefined();
    const init = { ...p, containers: [{ name: 'rbinder-install', restartCount: 3, lastExitCode: 2 }] };
    expect(crashLoopingContainer(init, 3)?.name).toBe('rbinder-install');
  });
});
