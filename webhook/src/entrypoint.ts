// What a container would run, so that the tracer can run it instead: the pod's command and args,
// else the image's Entrypoint and Cmd combined by the rules the kubelet (and Tekton) follow.
//
// Kubernetes expands $(VAR) in command and args. The image's Entrypoint/Cmd never went through
// that expansion, so once copied into the pod spec every "$" of theirs is doubled ("$$" expands
// to "$"); the pod's own command and args keep their meaning and are copied as they are.

import type { V1Container } from '@kubernetes/client-node';
import { ANNOTATION_COMMAND_PREFIX } from './names';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** The parts of one platform's image config that decide what runs. */
export interface PlatformEntrypoint {
  platform: Platform;
  /** Digest of that platform's image manifest. */
  digest: string;
  entrypoint: string[];
  cmd: string[];
}

/** What the registry said about an image: one entry, or one per platform of an image index. */
export interface ImageEntrypoints {
  /** The image's manifest or index digest. */
  digest: string;
  /** True when the reference named an image index (multi-platform). */
  index: boolean;
  platforms: PlatformEntrypoint[];
}

/** The registry's answer for one image, or why there is none. */
export type ImageLookup = { image: ImageEntrypoints } | { error: string };

export type ContainerCommand =
  /** One argv for every node: the tracer runs `launcher -- ...argv`. */
  | { kind: 'argv'; argv: string[]; source: CommandSource }
  /**
   * The image's platforms start different programs and the node is not known at admission: the
   * tracer picks `byArch[<its arch>]` (JSON in RBINDER_COMMAND_<key>) and appends `args`.
   */
  | { kind: 'per-arch'; byArch: Record<string, string[]>; args: string[] }
  | { kind: 'unknown'; reason: string };

export type CommandSource = 'annotation' | 'pod' | 'image';

/** A node architecture the pod is pinned to (kubernetes.io/arch), when it is. */
export interface PinnedPlatform {
  architecture: string;
  variant?: string;
}

/** Doubles every "$" so that Kubernetes' $(VAR) expansion gives the text back unchanged. */
export function escapeExpansion(text: string): string {
  return text.replaceAll('$', () => '$$');
}

export function commandAnnotation(container: string): string {
  return `${ANNOTATION_COMMAND_PREFIX}${container}`;
}

/** The override annotation's argv, or why it is unusable. */
export function parseCommandOverride(raw: string, annotation: string): string[] | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return { error: `annotation ${annotation} is not valid JSON (expected an array of strings)` };
  }
  if (!Array.isArray(value) || value.length === 0 || !value.every((v): v is string => typeof v === 'string')) {
    return { error: `annotation ${annotation} must be a non-empty JSON array of strings` };
  }
  if (value[0] === '') return { error: `annotation ${annotation}: the program name is empty` };
  return value;
}

/** Whether the container needs the registry to know its command. */
export function needsImageLookup(container: V1Container, overrideAnnotation: string | undefined): boolean {
  return overrideAnnotation === undefined && !(container.command && container.command.length > 0);
}

export interface CommandInput {
  container: V1Container;
  /** The raw `rbinder.io/command.<container>` annotation, if present. */
  override?: string;
  /** The registry's answer for the container's image, when it was asked. */
  image?: ImageLookup;
  pinned?: PinnedPlatform;
}

/**
 * The container's command, in this order: the override annotation (as if it were the container's
 * `command`), the container's `command`, the image's config (Tekton's rules: no Entrypoint → Cmd;
 * no args → Entrypoint+Cmd; args → Entrypoint + args).
 */
export function resolveContainerCommand(input: CommandInput): ContainerCommand {
  const { container } = input;
  const args = container.args ?? [];
  if (input.override !== undefined) {
    const annotation = commandAnnotation(container.name);
    const override = parseCommandOverride(input.override, annotation);
    if ('error' in override) return { kind: 'unknown', reason: override.error };
    return { kind: 'argv', argv: [...override, ...args], source: 'annotation' };
  }
  if (container.command && container.command.length > 0) {
    return { kind: 'argv', argv: [...container.command, ...args], source: 'pod' };
  }
  if (!input.image) return { kind: 'unknown', reason: `the image ${container.image ?? '(none)'} was not looked up` };
  if ('error' in input.image) return { kind: 'unknown', reason: input.image.error };

  const linux = input.image.image.platforms.filter(isRunnableLinux);
  if (linux.length === 0) return { kind: 'unknown', reason: `the image ${container.image} has no linux platform` };
  let candidates = linux;
  if (input.pinned) {
    const pinned = input.pinned;
    candidates = linux.filter(
      (p) => p.platform.architecture === pinned.architecture && (!pinned.variant || p.platform.variant === pinned.variant),
    );
    if (candidates.length === 0) {
      const want = pinned.variant ? `${pinned.architecture}/${pinned.variant}` : pinned.architecture;
      return { kind: 'unknown', reason: `the image ${container.image} has no linux/${want} platform, where the pod is pinned` };
    }
  }

  const perPlatform: { platform: Platform; argv: string[] }[] = [];
  for (const p of candidates) {
    const argv = imageArgv(p, args);
    if (argv.length === 0 || argv[0] === '') {
      return { kind: 'unknown', reason: `the image ${container.image} (${platformName(p.platform)}) has neither Entrypoint nor Cmd` };
    }
    perPlatform.push({ platform: p.platform, argv });
  }
  const first = perPlatform[0]!.argv;
  if (perPlatform.every((p) => sameArgv(p.argv, first))) return { kind: 'argv', argv: first, source: 'image' };

  // Different programs per platform: the image part goes to the tracer per arch, the pod's args
  // stay in the pod spec (so that Kubernetes still expands their $(VAR) references).
  const keys = archKeys(perPlatform.map((p) => p.platform));
  const byArch: Record<string, string[]> = {};
  perPlatform.forEach((p, i) => {
    byArch[keys[i]!] = args.length > 0 ? p.argv.slice(0, p.argv.length - args.length) : p.argv;
  });
  return { kind: 'per-arch', byArch, args };
}

/** Entrypoint and Cmd as the runtime combines them, escaped; the pod's args (unescaped) replace Cmd. */
function imageArgv(p: PlatformEntrypoint, args: string[]): string[] {
  const entrypoint = p.entrypoint.map(escapeExpansion);
  if (args.length > 0) return [...entrypoint, ...args];
  return [...entrypoint, ...p.cmd.map(escapeExpansion)];
}

/** Platforms a Linux node could run: attestation manifests ("unknown/unknown") are not images. */
function isRunnableLinux(p: PlatformEntrypoint): boolean {
  return p.platform.os === 'linux' && p.platform.architecture !== 'unknown' && p.platform.architecture !== '';
}

function sameArgv(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export function platformName(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/**
 * The RBINDER_COMMAND_ suffix for each platform: the architecture in upper case ("AMD64",
 * "ARM64", "PPC64LE"), plus "_<VARIANT>" where two platforms share an architecture ("ARM_V7").
 */
export function archKeys(platforms: Platform[]): string[] {
  const count = new Map<string, number>();
  for (const p of platforms) count.set(p.architecture, (count.get(p.architecture) ?? 0) + 1);
  return platforms.map((p) => {
    const base = envKeyPart(p.architecture);
    return (count.get(p.architecture) ?? 0) > 1 && p.variant ? `${base}_${envKeyPart(p.variant)}` : base;
  });
}

function envKeyPart(text: string): string {
  return text.toUpperCase().replace(/[^A-Z0-9]/g, '_');
}
