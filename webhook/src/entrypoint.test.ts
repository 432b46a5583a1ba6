import type { V1Container } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { archKeys, escapeExpansion, resolveContainerCommand, type ImageLookup, type PlatformEntrypoint } from './entrypoint';

const amd64 = { os: 'linux', architecture: 'amd64' };
const arm64 = { os: 'linux', architecture: 'arm64', variant: 'v8' };

function image(...platforms: Omit<PlatformEntrypoint, 'digest'>[]): ImageLookup {
  return { image: { digest: 'sha256:idx', index: platforms.length > 1, platforms: platforms.map((p, i) => ({ ...p, digest: `sha256:${i}` })) } };
}
const single = (entrypoint: string[], cmd: string[]): ImageLookup => image({ platform: amd64, entrypoint, cmd });
const container = (c: Partial<V1Container>): V1Container => ({ name: 'app', image: 'app:1', ...c });

describe('resolveContainerCommand: Tekton rules', () => {
  it.each<[string, Partial<V1Container>, ImageLookup | undefined, string[]]>([
    ['pod command and args', { command: ['/bin/app'], args: ['-v'] }, undefined, ['/bin/app', '-v']],
    ['pod command, image ignored', { command: ['/bin/app'] }, single(['/entry'], ['cmd']), ['/bin/app']],
    ['no args: Entrypoint + Cmd', {}, single(['/entry', 'x'], ['--flag']), ['/entry', 'x', '--flag']],
    ['no Entrypoint: Cmd', {}, single([], ['python3', 'app.py']), ['python3', 'app.py']],
    ['args: Entrypoint + args, Cmd dropped', { args: ['--port', '9090'] }, single(['/entry'], ['--port', '80']), ['/entry', '--port', '9090']],
    ['args and no Entrypoint: args are the command', { args: ['/bin/sh', '-c', 'x'] }, single([], ['ignored']), ['/bin/sh', '-c', 'x']],
    ['empty args are no args', { args: [] }, single(['/entry'], ['c']), ['/entry', 'c']],
    ['empty command is no command', { command: [] }, single(['/entry'], []), ['/entry']],
  ])('%s', (_name, c, lookup, argv) => {
    expect(resolveContainerCommand({ container: container(c), image: lookup })).toMatchObject({ kind: 'argv', argv });
  });

  it('escapes $ in what comes from the image, not in what the pod says', () => {
    const result = resolveContainerCommand({ container: container({ args: ['$(PORT)'] }), image: single(['/entry', 'cost=$5', '$(HOME)'], []) });
    expect(result).toEqual({ kind: 'argv', argv: ['/entry', 'cost=$$5', '$$(HOME)', '$(PORT)'], source: 'image' });
  });

  it('takes the override annotation as the command, with the pod args after it', () => {
    const result = resolveContainerCommand({ container: container({ command: ['/ignored'], args: ['-v'] }), override: '["/real", "serve"]' });
    expect(result).toEqual({ kind: 'argv', argv: ['/real', 'serve', '-v'], source: 'annotation' });
  });

  it.each(['not json', '[]', '"str"', '[1, 2]', '[""]'])('rejects the override %j', (raw) => {
    const result = resolveContainerCommand({ container: container({ command: ['/x'] }), override: raw });
    expect(result).toMatchObject({ kind: 'unknown', reason: expect.stringContaining('rbinder.io/command.app') });
  });

  it('says why when nothing is known', () => {
    expect(resolveContainerCommand({ container: container({}) })).toEqual({ kind: 'unknown', reason: 'the image app:1 was not looked up' });
    expect(resolveContainerCommand({ container: container({}), image: { error: 'registry said 401' } })).toEqual({ kind: 'unknown', reason: 'registry said 401' });
    expect(resolveContainerCommand({ container: container({}), image: single([], []) })).toMatchObject({ reason: expect.stringContaining('neither Entrypoint nor Cmd') });
    expect(resolveContainerCommand({ container: container({}), image: image({ platform: { os: 'windows', architecture: 'amd64' }, entrypoint: ['x'], cmd: [] }) })).toMatchObject({
      reason: 'the image app:1 has no linux platform',
    });
  });
});

describe('resolveContainerCommand: multi-platform images', () => {
  const same = image({ platform: amd64, entrypoint: ['/srv'], cmd: ['-v'] }, { platform: arm64, entrypoint: ['/srv'], cmd: ['-v'] });
  const differ = image(
    { platform: amd64, entrypoint: ['/srv-amd64'], cmd: ['-v'] },
    { platform: arm64, entrypoint: ['/srv-arm64'], cmd: ['-v'] },
    { platform: { os: 'unknown', architecture: 'unknown' }, entrypoint: [], cmd: [] },
  );

  it('uses one argv when every platform runs the same', () => {
    expect(resolveContainerCommand({ container: container({}), image: same })).toEqual({ kind: 'argv', argv: ['/srv', '-v'], source: 'image' });
  });

  it('gives one argv per architecture when they differ', () => {
    expect(resolveContainerCommand({ container: container({}), image: differ })).toEqual({
      kind: 'per-arch',
      byArch: { AMD64: ['/srv-amd64', '-v'], ARM64: ['/srv-arm64', '-v'] },
      args: [],
    });
  });

  it('keeps the pod args out of the per-arch part', () => {
    expect(resolveContainerCommand({ container: container({ args: ['--port', '$(PORT)'] }), image: differ })).toEqual({
      kind: 'per-arch',
      byArch: { AMD64: ['/srv-amd64'], ARM64: ['/srv-arm64'] },
      args: ['--port', '$(PORT)'],
    });
  });

  it('uses the platform the pod is pinned to', () => {
    expect(resolveContainerCommand({ container: container({}), image: differ, pinned: { architecture: 'arm64' } })).toEqual({ kind: 'argv', argv: ['/srv-arm64', '-v'], source: 'image' });
    expect(resolveContainerCommand({ container: container({}), image: differ, pinned: { architecture: 's390x' } })).toMatchObject({ kind: 'unknown', reason: expect.stringContaining('no linux/s390x platform') });
  });

  it('names keys by architecture, adding the variant only where two share one', () => {
    expect(archKeys([amd64, arm64, { os: 'linux', architecture: 'arm', variant: 'v7' }, { os: 'linux', architecture: 'arm', variant: 'v6' }, { os: 'linux', architecture: 'ppc64le' }, { os: 'linux', architecture: '386' }])).toEqual([
      'AMD64',
      'ARM64',
      'ARM_V7',
      'ARM_V6',
      'PPC64LE',
      '386',
    ]);
  });
});

describe('escapeExpansion', () => {
  it('doubles every $', () => {
    expect(escapeExpansion('a$b$$c$(D)')).toBe('a$$b$$$$c$$(D)');
  });
});
