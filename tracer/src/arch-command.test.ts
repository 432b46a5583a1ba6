import { describe, expect, it } from 'vitest';
import { commandForArch, ociPlatform } from './arch-command';

describe('commandForArch', () => {
  const env = {
    PATH: '/bin',
    RBINDER_COMMAND_AMD64: '["/app/server-amd64","--port","80"]',
    RBINDER_COMMAND_ARM64: '["/app/server-arm64"]',
    RBINDER_COMMAND_ARM_V7: '["/app/server-armv7"]',
  };

  it('picks the variable for the machine and appends the arguments', () => {
    const r = commandForArch(env, ['-v'], { arch: 'AMD64' });
    expect(r).toEqual({ argv: ['/app/server-amd64', '--port', '80', '-v'], env: { PATH: '/bin' } });
  });

  it('prefers the variant-specific variable', () => {
    const r = commandForArch(env, [], { arch: 'ARM', variant: 'V7' });
    expect('argv' in r && r.argv).toEqual(['/app/server-armv7']);
  });

  it('names what is set when nothing fits', () => {
    const r = commandForArch(env, [], { arch: 'S390X' });
    expect('error' in r && r.error).toMatch(/RBINDER_COMMAND_S390X.*set: RBINDER_COMMAND_AMD64, RBINDER_COMMAND_ARM64/);
  });

  it('rejects malformed values and an empty command without arguments', () => {
    expect('error' in commandForArch({ RBINDER_COMMAND_AMD64: 'server' }, [], { arch: 'AMD64' })).toBe(true);
    expect('error' in commandForArch({ RBINDER_COMMAND_AMD64: '[1]' }, [], { arch: 'AMD64' })).toBe(true);
    expect('error' in commandForArch({ RBINDER_COMMAND_AMD64: '[]' }, [], { arch: 'AMD64' })).toBe(true);
    expect(commandForArch({ RBINDER_COMMAND_AMD64: '[]' }, ['/bin/app'], { arch: 'AMD64' })).toMatchObject({ argv: ['/bin/app'] });
  });

  it('maps Node architectures to OCI names', () => {
    expect(ociPlatform('x64')).toEqual({ arch: 'AMD64' });
    expect(ociPlatform('arm64')).toEqual({ arch: 'ARM64' });
    expect(ociPlatform('arm', '6')).toEqual({ arch: 'ARM', variant: 'V6' });
  });
});
