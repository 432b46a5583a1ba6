import * as os from 'node:os';
import type { Resource } from '@opentelemetry/resources';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { rbinderVersion } from '../config';
import { ProcessResources, type ResourceConfig } from './resource';

const config: ResourceConfig = { serviceName: undefined, command: ['/usr/local/bin/python3', 'app.py'], mode: 'ptrace' };

const python = { pid: 42, ppid: 1, executablePath: '/usr/bin/python3.12', commandArgs: ['python3', 'app.py', '-v'] };

async function settled(resource: Resource): Promise<Resource> {
  await resource.waitForAsyncAttributes?.(); // host.id is read asynchronously
  return resource;
}

describe('ProcessResources', () => {
  beforeEach(() => {
    vi.stubEnv('OTEL_RESOURCE_ATTRIBUTES', undefined);
    vi.stubEnv('OTEL_SERVICE_NAME', undefined);
  });
  afterEach(() => {
    vi.unstubAllEnvs();
  });

  it('describes the process, host, OS, SDK and tracer', async () => {
    const resources = new ProcessResources(config);
    const { attributes } = await settled(resources.resourceFor(python));
    expect(attributes).toMatchObject({
      'service.name': 'python3',
      'process.pid': 42,
      'process.parent_pid': 1,
      'process.executable.name': 'python3.12',
      'process.executable.path': '/usr/bin/python3.12',
      'process.command_args': ['python3', 'app.py', '-v'],
      'host.name': os.hostname(),
      'os.type': 'linux',
      'telemetry.sdk.language': 'nodejs',
      'telemetry.sdk.name': 'opentelemetry',
      'telemetry.distro.name': 'rbinder',
      'telemetry.distro.version': rbinderVersion(),
      'rbinder.tracer.mode': 'ptrace',
    });
    expect(attributes['host.arch']).toEqual(expect.any(String));
    expect(attributes['telemetry.sdk.version']).toEqual(expect.any(String));
  });

  it('caches one resource per process, replaced by a new image after exec', () => {
    const resources = new ProcessResources(config);
    const first = resources.resourceFor(python);
    expect(resources.resourceForPid(42)).toBe(first);
    expect(resources.resourceForPid(42)).toBe(first);
    const afterExec = resources.resourceFor({ ...python, executablePath: '/bin/sh', commandArgs: ['sh', '-c', 'x'] });
    expect(afterExec).not.toBe(first);
    expect(resources.resourceForPid(42)).toBe(afterExec);
  });

  it('gives a pid without a process record what is known, then the full one once it arrives', async () => {
    const resources = new ProcessResources(config);
    const early = await settled(resources.resourceForPid(77));
    expect(early.attributes).toMatchObject({ 'process.pid': 77, 'service.name': 'python3' });
    expect(early.attributes['process.executable.name']).toBeUndefined();
    expect(resources.resourceForPid(77)).toBe(early);
    const full = resources.resourceFor({ ...python, pid: 77 });
    expect(resources.resourceForPid(77)).toBe(full);
  });

  it.each<[string, Partial<ResourceConfig>, Record<string, string>, string]>([
    ['COMMAND basename by default', {}, {}, 'python3'],
    ['service.name in OTEL_RESOURCE_ATTRIBUTES over the basename', {}, { OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attrs' }, 'from-attrs'],
    ['OTEL_SERVICE_NAME over OTEL_RESOURCE_ATTRIBUTES', {}, { OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attrs', OTEL_SERVICE_NAME: 'from-env' }, 'from-env'],
    ['config (--service-name) over everything', { serviceName: 'from-flag' }, { OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attrs', OTEL_SERVICE_NAME: 'from-env' }, 'from-flag'],
  ])('service.name: %s', async (_name, overrides, env, expected) => {
    for (const [key, value] of Object.entries(env)) vi.stubEnv(key, value);
    const resources = new ProcessResources({ ...config, ...overrides });
    expect((await settled(resources.resourceFor(python))).attributes['service.name']).toBe(expected);
    expect((await settled(resources.base)).attributes['service.name']).toBe(expected);
  });

  it('adds OTEL_RESOURCE_ATTRIBUTES (percent-decoded, as the SDK does)', async () => {
    vi.stubEnv('OTEL_RESOURCE_ATTRIBUTES', 'deployment.environment.name=prod,k8s.pod.name=web%2D1');
    const resources = new ProcessResources({ ...config, mode: 'fast' });
    expect((await settled(resources.resourceFor(python))).attributes).toMatchObject({
      'deployment.environment.name': 'prod',
      'k8s.pod.name': 'web-1',
      'rbinder.tracer.mode': 'fast',
    });
  });

  it('does not describe the tracer itself as the process in its metrics resource', async () => {
    const { attributes } = await settled(new ProcessResources(config).base);
    expect(attributes['process.pid']).toBeUndefined();
  });
});
