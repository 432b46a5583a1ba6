import type { V1ConfigMap, V1Deployment, V1Service } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { COLLECTOR_CONFIG_KEY, collectorAvailable, desiredCollectorObjects } from './collector';
import { tracedWorkload } from './fixtures';
import { ANNOTATION_APPLIED_HASH, ANNOTATION_COLLECTOR_CONFIG_HASH, ANNOTATION_INJECT } from './names';

const options = { defaultImage: 'otel/opentelemetry-collector:default' };

describe('desiredCollectorObjects', () => {
  it('provisions nothing without spec.collector.provision', () => {
    expect(desiredCollectorObjects(tracedWorkload('tw', { selector: {} }), options)).toEqual([]);
    expect(desiredCollectorObjects(tracedWorkload('tw', { selector: {}, collector: { endpoint: 'http://x:4318' } }), options)).toEqual([]);
  });

  const tw = tracedWorkload('tw', {
    selector: {},
    collector: { provision: { image: 'my/collector:1', replicas: 2, exporters: { 'otlp/tempo': { endpoint: 'tempo:4317', tls: { insecure: true } } }, extensions: { pprof: {} } } },
  });
  const [cm, deployment, service] = desiredCollectorObjects(tw, options) as [V1ConfigMap, V1Deployment, V1Service];

  it('configures OTLP receivers, memory_limiter then batch, and the exporters as written (no YAML anchors)', () => {
    const text = cm.data![COLLECTOR_CONFIG_KEY]!;
    expect(text).not.toMatch(/[&*]a\d/);
    const config = parse(text);
    expect(config.receivers.otlp.protocols).toEqual({ grpc: { endpoint: '0.0.0.0:4317' }, http: { endpoint: '0.0.0.0:4318' } });
    expect(config.exporters).toEqual({ 'otlp/tempo': { endpoint: 'tempo:4317', tls: { insecure: true } } });
    for (const p of ['traces', 'metrics']) expect(config.service.pipelines[p]).toEqual({ receivers: ['otlp'], processors: ['memory_limiter', 'batch'], exporters: ['otlp/tempo'] });
    expect(config.service.extensions.sort()).toEqual(['health_check', 'pprof']);
  });

  it('uses the debug exporter when none is given', () => {
    const [plain] = desiredCollectorObjects(tracedWorkload('tw', { selector: {}, collector: { provision: {} } }), options) as [V1ConfigMap];
    expect(parse(plain.data![COLLECTOR_CONFIG_KEY]!).exporters).toEqual({ debug: { verbosity: 'basic' } });
  });

  it('runs the image with the mounted config; its pods are never traced and restart when the config changes', () => {
    const pod = deployment.spec!.template;
    expect(deployment.spec!.replicas).toBe(2);
    expect(pod.spec!.containers[0]!.image).toBe('my/collector:1');
    expect(pod.spec!.containers[0]!.args).toEqual(['--config=/conf/collector.yaml']);
    expect(pod.metadata!.annotations![ANNOTATION_INJECT]).toBe('false');
    expect(deployment.spec!.selector.matchLabels).toEqual(service.spec!.selector);
    const other = desiredCollectorObjects(tracedWorkload('tw', { selector: {}, collector: { provision: { image: 'my/collector:1', replicas: 2 } } }), options)[1] as V1Deployment;
    expect(other.spec!.template.metadata!.annotations![ANNOTATION_COLLECTOR_CONFIG_HASH]).not.toBe(pod.metadata!.annotations![ANNOTATION_COLLECTOR_CONFIG_HASH]);
  });

  it('marks each object with the hash of its content', () => {
    for (const o of [cm, deployment, service]) expect(o.metadata!.annotations![ANNOTATION_APPLIED_HASH]).toMatch(/^[0-9a-f]{16}$/);
    const again = desiredCollectorObjects(tw, options);
    expect(again.map((o) => o.metadata!.annotations![ANNOTATION_APPLIED_HASH])).toEqual([cm, deployment, service].map((o) => o.metadata!.annotations![ANNOTATION_APPLIED_HASH]));
  });
});

describe('collectorAvailable', () => {
  const d = (status: V1Deployment['status'], generation = 2): V1Deployment => ({ metadata: { generation }, spec: { replicas: 2, selector: {}, template: {} }, status });
  it.each([
    ['missing', undefined, false],
    ['not yet observed', d({ observedGeneration: 1, availableReplicas: 2, updatedReplicas: 2 }), false],
    ['partly available', d({ observedGeneration: 2, availableReplicas: 1, updatedReplicas: 2 }), false],
    ['available', d({ observedGeneration: 2, availableReplicas: 2, updatedReplicas: 2 }), true],
  ])('%s', (_name, deployment, ready) => expect(collectorAvailable(deployment).ready).toBe(ready));
});
