// The CRD's schema and the operator's types agree: names, defaults, and every status field the
// reconciler writes survives pruning (a pruned field would make each pass rewrite the status).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { injectedPod, OPTIONS, stamped, state, tracedWorkload, workload } from './fixtures';
import { CRD_NAME, GROUP, KIND, PLURAL, VERSION } from './names';
import { reconcile } from './reconcile';

interface Schema {
  type?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema | boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  default?: unknown;
}

const crd = parse(readFileSync(join(__dirname, '..', '..', 'crds', 'tracedworkloads.rbinder.io.yaml'), 'utf8'));
const version = crd.spec.versions[0];
const root: Schema = version.schema.openAPIV3Schema;

/** Paths of `value` that a structural schema would prune. */
function pruned(value: unknown, schema: Schema, path = ''): string[] {
  if (schema['x-kubernetes-preserve-unknown-fields']) return [];
  if (Array.isArray(value)) return value.flatMap((v, i) => (schema.items ? pruned(v, schema.items, `${path}[${i}]`) : []));
  if (value === null || typeof value !== 'object') return [];
  const out: string[] = [];
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const sub = schema.properties?.[k] ?? (typeof schema.additionalProperties === 'object' ? schema.additionalProperties : undefined);
    if (!sub) out.push(`${path}.${k}`);
    else out.push(...pruned(v, sub, `${path}.${k}`));
  }
  return out;
}

describe('CRD', () => {
  it('is tracedworkloads.rbinder.io, v1alpha1, with the status subresource and short name tw', () => {
    expect(crd.metadata.name).toBe(CRD_NAME);
    expect(crd.spec.group).toBe(GROUP);
    expect(crd.spec.names).toMatchObject({ kind: KIND, plural: PLURAL, shortNames: ['tw'] });
    expect(version).toMatchObject({ name: VERSION, served: true, storage: true, subresources: { status: {} } });
    expect(version.additionalPrinterColumns.map((c: { name: string }) => c.name)).toEqual(['Workloads', 'Injected', 'Collector', 'Ready', 'Reason', 'Age']);
  });

  it('keeps every status field the reconciler writes', () => {
    const tw = tracedWorkload('tw', { selector: {}, collector: { provision: {} } });
    const plain = reconcile(state({ tracedWorkloads: [tw], workloads: [workload('Deployment', 'w')] }), OPTIONS).find((a) => a.type === 'status');
    const young = tracedWorkload('young', { selector: {} }, { creationTimestamp: new Date('2026-01-02T00:00:00Z') });
    const w = workload('Deployment', 'w');
    const actions = reconcile(
      state({ tracedWorkloads: [tw, young], workloads: [stamped(w, 'tw', 'x')], pods: [injectedPod(w, 'p', 'tw', 'x', [{ name: 'app', restartCount: 9, waitingReason: 'CrashLoopBackOff' }])] }),
      OPTIONS,
    );
    const statuses = [plain, ...actions].flatMap((a) => (a?.type === 'status' ? [a.status] : []));
    expect(statuses.length).toBeGreaterThan(1);
    for (const s of statuses) expect(pruned(s, root.properties!.status!)).toEqual([]);
  });

  it('keeps the spec fields the types declare', () => {
    const spec = {
      selector: { matchLabels: { a: 'b' }, matchExpressions: [{ key: 'k', operator: 'In', values: ['v'] }] },
      workloads: [{ kind: 'Deployment', name: 'w' }],
      containers: ['app'],
      serviceName: 's',
      propagators: ['tracecontext'],
      sampling: { ratio: 0.5 },
      injectTo: ['*.svc'],
      collector: { protocol: 'grpc', provision: { image: 'i', replicas: 2, resources: { limits: { cpu: '1' } }, exporters: { any: { thing: 1 } }, extensions: { x: {} } } },
      rollout: { automatic: true, rollbackOnCrashLoop: false, crashLoopRestarts: 4 },
    };
    expect(pruned(spec, root.properties!.spec!)).toEqual([]);
  });
});
