// --command-by-arch: a multi-arch image whose platforms start different programs gets one
// RBINDER_COMMAND_<ARCH>[_<VARIANT>] variable per platform from the webhook (docs/webhook.md), and
// the launcher picks the one for the machine it runs on.

const PREFIX = 'RBINDER_COMMAND_';

/** OCI architecture (and variant) names for Node's process.arch. */
export function ociPlatform(arch: string = process.arch, armVersion?: string): { arch: string; variant?: string } {
  switch (arch) {
    case 'x64':
      return { arch: 'AMD64' };
    case 'arm64':
      return { arch: 'ARM64' };
    case 'arm':
      return { arch: 'ARM', variant: `V${armVersion ?? (process.config.variables as { arm_version?: string }).arm_version ?? '7'}` };
    case 'ia32':
      return { arch: '386' };
    case 'ppc64':
      return { arch: 'PPC64LE' };
    case 's390x':
      return { arch: 'S390X' };
    case 'riscv64':
      return { arch: 'RISCV64' };
    case 'loong64':
      return { arch: 'LOONG64' };
    default:
      return { arch: arch.toUpperCase() };
  }
}

export type ArchCommand = { argv: string[]; env: NodeJS.ProcessEnv } | { error: string };

/**
 * The program's argv for this machine: RBINDER_COMMAND_<ARCH>_<VARIANT>, else RBINDER_COMMAND_<ARCH>
 * (a JSON array of strings), followed by `args`; and the environment without RBINDER_COMMAND_*.
 */
export function commandForArch(env: NodeJS.ProcessEnv, args: string[], platform = ociPlatform()): ArchCommand {
  const names = [
    ...(platform.variant ? [`${PREFIX}${platform.arch}_${platform.variant}`] : []),
    `${PREFIX}${platform.arch}`,
  ];
  const set = Object.keys(env).filter((k) => k.startsWith(PREFIX));
  const name = names.find((n) => env[n] !== undefined);
  if (!name) {
    return { error: `rbinder: no command for this machine (${names.join(' or ')}); set: ${set.join(', ') || 'none'}` };
  }
  let prefix: unknown;
  try {
    prefix = JSON.parse(env[name] ?? '');
  } catch {
    return { error: `rbinder: ${name} is not a JSON array of strings` };
  }
  if (!Array.isArray(prefix) || !prefix.every((p) => typeof p === 'string')) {
    return { error: `rbinder: ${name} is not a JSON array of strings` };
  }
  const argv = [...(prefix as string[]), ...args];
  if (argv.length === 0) return { error: `rbinder: ${name} is empty and no arguments follow` };
  const rest = { ...env };
  for (const k of set) delete rest[k];
  return { argv, env: rest };
}
