import { describe, expect, it } from 'vitest';
import { canonicalJson, collectorName, DEFAULT_PROPAGATORS, hashOf, rolloutSettings, tracedWorkloadConfig } from './config';
import { tracedWorkload } from './fixtures';

describe('tracedWorkloadConfig', () => {
  it('maps the spec to what the webhook injects', () => {
    const config = tracedWorkloadConfig(
      tracedWorkload('tw', {
        selector: {},
        containers: ['app'],
        serviceName: 'checkout',
        propagators: ['tracecontext', 'b3'],
        sampling: { ratio: 0.1 },
        injectTo: ['*.svc.cluster.local'],
        collector: { endpoint: 'http://otel.obs:4317', protocol: 'grpc' },
      }),
    );
    expect(config).toEqual({
      serviceName: 'checkout',
      containers: ['app'],
      propagators: ['tracecontext', 'b3'],
      sampler: { type: 'parentbased_traceidratio', argument: '0.1' },
      injectTo: ['*.svc.cluster.local'],
      collectorEndpoint: 'http://otel.obs:4317',
      otlpProtocol: 'grpc',
      configHash: expect.stringMatching(/^[0-9a-f]{16}$/),
    });
  });

  it('defaults: all containers, default propagators, always-on parent-based sampling, the cluster collector', () => {
    const config = tracedWorkloadConfig(tracedWorkload('tw', { selector: {} }));
    expect(config).toMatchObject({ containers: undefined, propagators: DEFAULT_PROPAGATORS, sampler: { type: 'parentbased_always_on' }, collectorEndpoint: undefined });
  });

  it('points at the provisioned collector Service', () => {
    expect(tracedWorkloadConfig(tracedWorkload('tw', { selector: {}, collector: { provision: {} } })).collectorEndpoint).toBe('http://tw-collector.shop.svc:4318');
    expect(tracedWorkloadConfig(tracedWorkload('tw', { selector: {}, collector: { provision: {}, protocol: 'grpc' } })).collectorEndpoint).toBe('http://tw-collector.shop.svc:4317');
  });

  it('hashes what pods get, not what they do not (rollout settings, selection, collector replicas)', () => {
    const base = tracedWorkloadConfig(tracedWorkload('tw', { selector: {}, collector: { provision: { replicas: 1 } } })).configHash;
    expect(tracedWorkloadConfig(tracedWorkload('tw', { selector: { matchLabels: { a: 'b' } }, collector: { provision: { replicas: 3 } }, rollout: { automatic: false } })).configHash).toBe(base);
    expect(tracedWorkloadConfig(tracedWorkload('tw', { selector: {}, sampling: { ratio: 0.5 }, collector: { provision: {} } })).configHash).not.toBe(base);
  });
});

describe('helpers', () => {
  it('canonicalJson sorts keys and drops undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: undefined, c: [1, { z: 1, y: 2 }] } })).toBe('{"a":{"c":[1,{"y":2,"z":1}]},"b":1}');
    expect(hashOf({ a: 1, b: 2 })).toBe(hashOf({ b: 2, a: 1 }));
  });
  it('collector names stay valid DNS labels', () => {
    expect(collectorName('tw')).toBe('tw-collector');
    const long = collectorName('x'.repeat(60));
    expect(long.length).toBeLessThanOrEqual(63);
    expect(long).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  });
  it('rollout settings fall back to the operator default', () => {
    expect(rolloutSettings(tracedWorkload('tw', { selector: {} }), false)).toEqual({ automatic: false, rollbackOnCrashLoop: true, crashLoopRestarts: 3 });
    expect(rolloutSettings(tracedWorkload('tw', { selector: {}, rollout: { automatic: true, crashLoopRestarts: 5 } }), false)).toMatchObject({ automatic: true, crashLoopRestarts: 5 });
  });
});
