// mutatePod: the webhook's pure core. From a pod, its namespace's labels, the configuration and
// what the registry said about its images, to a JSON patch (computed from the difference between
// the pod and a mutated copy) or the reason why the pod is left alone.
//
// Two steps share one plan: `imagesToResolve` says which images the registry must be asked about
// (the handler does that I/O, with a deadline), then `mutatePod` uses the answers.

import type { V1Container, V1Pod, V1SecurityContext, V1Volume } from '@kubernetes/client-node';
import { compare, type Operation } from 'fast-json-patch';
import {
  effectiveTelemetry,
  launcherFile,
  type InjectionConfig,
  type SelectableWorkloadKind,
  type TracedWorkloadConfig,
  type TracedWorkloadLookup,
  type WorkloadSelection,
} from './config';
import {
  commandAnnotation,
  needsImageLookup,
  resolveContainerCommand,
  type ContainerCommand,
  type ImageLookup,
  type PinnedPlatform,
} from './entrypoint';
import { tracedContainerEnv } from './env';
import {
  ALWAYS_EXCLUDED_NAMESPACES,
  ANNOTATION_CONFIG_HASH,
  ANNOTATION_CONTAINER_NAMES,
  ANNOTATION_INJECT,
  ANNOTATION_INJECTED,
  ANNOTATION_SKIPPED,
  ANNOTATION_TRACED_WORKLOAD,
  BUNDLE_VOLUME,
  INSTALL_CONTAINER,
  LABEL_ARCH,
  LABEL_INJECT,
  LABEL_INJECT_ENABLED,
  TRACER_PER_ARCH_FLAG,
} from './names';
import { owningWorkloads, serviceName } from './workload';

export interface PodContext {
  /** The namespace of the request (a pod being created need not carry metadata.namespace). */
  namespace: string;
  /** The namespace's labels; undefined when they could not be read. */
  namespaceLabels: Record<string, string> | undefined;
  config: InjectionConfig;
  /** Finds the configuration of the TracedWorkload named by `rbinder.io/traced-workload`. */
  tracedWorkload?: TracedWorkloadLookup;
  /**
   * Finds the TracedWorkload selecting the pod's owning Deployment/StatefulSet/DaemonSet, for pods
   * without `rbinder.io/traced-workload` (the operator leaves templates alone when automatic
   * rollout is off). Such a pod is treated as stamped by that TracedWorkload.
   */
  workloadSelection?: WorkloadSelection;
}

export interface MutationInput extends PodContext {
  /** The registry's answers, by image reference as written in the pod. */
  images?: ReadonlyMap<string, ImageLookup>;
}

/**
 * `injected`: at least one container now runs under the tracer. `skipped`: the pod was selected but
 * nothing could be injected (the pod's `rbinder.io/skipped` annotation says why). `ignored`: not
 * selected, excluded or already injected; the pod is not changed at all.
 */
export type MutationResult = 'injected' | 'skipped' | 'ignored';

export interface PodMutation {
  result: MutationResult;
  /** "" when every chosen container was injected; else why the pod, or some of its containers, were not. */
  reason: string;
  /** Containers that now run under the tracer. */
  injected: string[];
  /** RFC 6902 operations against the pod as received; empty when nothing changes. */
  patch: Operation[];
  /** For the admission response (kubectl prints them). */
  warnings: string[];
  /** Which rule selected the pod, e.g. "namespace label rbinder.io/inject=enabled"; absent when none did. */
  selectedBy?: string;
}

/** A container the registry must be asked about. */
export interface ImageRequest {
  container: string;
  image: string;
}

/** The decision before any registry lookup. */
type Plan =
  | { selected: false; reason: string; annotate: boolean; warnings: string[]; stamp?: Record<string, string> }
  | {
      selected: true;
      selectedBy: string;
      workload: TracedWorkloadConfig | undefined;
      /** Annotations to add: the stamp of a TracedWorkload found through the pod's owner. */
      stamp: Record<string, string> | undefined;
      /** Chosen containers that may be injected, in pod order. */
      containers: V1Container[];
      /** Chosen containers that cannot be, and why. */
      refused: { name: string; reason: string }[];
      pinned: PinnedPlatform | undefined;
      warnings: string[];
    };

/** The images whose config decides what a chosen container runs. */
export function imagesToResolve(pod: V1Pod, context: PodContext): ImageRequest[] {
  const plan = planPod(pod, context);
  if (!plan.selected) return [];
  const annotations = pod.metadata?.annotations ?? {};
  return plan.containers
    .filter((c) => needsImageLookup(c, annotations[commandAnnotation(c.name)]))
    .filter((c): c is V1Container & { image: string } => typeof c.image === 'string' && c.image !== '')
    .map((c) => ({ container: c.name, image: c.image }));
}

/** The pod's kubernetes.io/arch, when its nodeSelector or required node affinity allows only one. */
export function pinnedPlatform(pod: V1Pod): PinnedPlatform | undefined {
  const fromSelector = pod.spec?.nodeSelector?.[LABEL_ARCH];
  if (fromSelector) return { architecture: fromSelector };
  const terms = pod.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms ?? [];
  if (terms.length === 0) return undefined;
  const perTerm = terms.map((term) => {
    const exprs = (term.matchExpressions ?? []).filter((e) => e.key === LABEL_ARCH && e.operator === 'In');
    const values = exprs.map((e) => e.values ?? []).find((v) => v.length === 1);
    return values?.[0];
  });
  const first = perTerm[0];
  return first !== undefined && perTerm.every((a) => a === first) ? { architecture: first } : undefined;
}

function planPod(pod: V1Pod, context: PodContext): Plan {
  const { config, namespace } = context;
  const annotations = pod.metadata?.annotations ?? {};
  const warnings: string[] = [];
  const ignore = (reason: string): Plan => ({ selected: false, reason, annotate: false, warnings });
  const refuse = (reason: string): Plan => ({ selected: false, reason, annotate: true, warnings });

  const excluded = new Set([...ALWAYS_EXCLUDED_NAMESPACES, config.controllerNamespace, ...config.excludedNamespaces]);
  if (excluded.has(namespace)) return ignore(`namespace ${namespace} is excluded`);
  if (isInjected(pod)) return ignore('already injected');

  const optIn = parseInjectAnnotation(annotations[ANNOTATION_INJECT], warnings);
  if (optIn === false) {
    // A pod of a workload the operator stamped says why it is not traced, so the rollout can
    // count it as current; a pod nobody selected just passes.
    const why = `opted out by annotation ${ANNOTATION_INJECT}=false`;
    return annotations[ANNOTATION_TRACED_WORKLOAD] ? refuse(why) : ignore(why);
  }

  let workload: TracedWorkloadConfig | undefined;
  const workloadName = annotations[ANNOTATION_TRACED_WORKLOAD]?.trim();
  let selectedBy: string | undefined;
  let stamp: Record<string, string> | undefined;
  if (workloadName) {
    workload = context.tracedWorkload?.(namespace, workloadName);
    if (workload) selectedBy = `TracedWorkload ${workloadName}`;
  } else if (context.workloadSelection) {
    // No stamp (automatic rollout off): the TracedWorkload selecting the pod's owner, if any. The
    // pod gets the stamp its template would have had, so the operator counts it as current.
    const found = selectionByOwner(pod, namespace, context.workloadSelection);
    if (found) {
      workload = found.config;
      selectedBy = `TracedWorkload ${found.name} (selects ${found.owner.kind} ${found.owner.name})`;
      stamp = { [ANNOTATION_TRACED_WORKLOAD]: found.name };
      if (found.config.configHash) stamp[ANNOTATION_CONFIG_HASH] = found.config.configHash;
    }
  }
  if (!selectedBy && optIn === true) selectedBy = `annotation ${ANNOTATION_INJECT}=true`;
  if (!selectedBy && context.namespaceLabels?.[LABEL_INJECT] === LABEL_INJECT_ENABLED) {
    selectedBy = `namespace label ${LABEL_INJECT}=${LABEL_INJECT_ENABLED}`;
  }
  if (!selectedBy) {
    // The operator meant this pod to be traced: say on the pod why it is not.
    if (workloadName) return refuse(`TracedWorkload ${namespace}/${workloadName} not found`);
    return ignore('not selected');
  }
  if (workloadName && !workload) {
    warnings.push(`TracedWorkload ${namespace}/${workloadName} is not known to the webhook; using the cluster defaults`);
  }
  if (pod.spec?.os?.name && pod.spec.os.name !== 'linux') return { ...refuse(`pods for ${pod.spec.os.name} nodes cannot be traced`), stamp };

  const { chosen, refused } = chooseContainers(pod, workload, warnings);
  const injectable: V1Container[] = [];
  const mountPath = config.mountPath.replace(/\/+$/, '');
  const launcher = launcherFile(config);
  for (const c of chosen) {
    if (c.command?.[0] === launcher) {
      refused.push({ name: c.name, reason: 'already runs under the tracer' });
    } else if ((c.volumeMounts ?? []).some((m) => overlaps(m.mountPath, mountPath))) {
      refused.push({ name: c.name, reason: `a volume is already mounted at or around ${mountPath}` });
    } else {
      injectable.push(c);
      warnings.push(...ptraceWarnings(pod, c));
    }
  }
  return { selected: true, selectedBy, workload, stamp, containers: injectable, refused, pinned: pinnedPlatform(pod), warnings };
}

const SELECTABLE_KINDS: ReadonlySet<string> = new Set<SelectableWorkloadKind>(['Deployment', 'StatefulSet', 'DaemonSet']);

/** The TracedWorkload that selects the pod's owning Deployment, StatefulSet or DaemonSet. */
function selectionByOwner(
  pod: V1Pod,
  namespace: string,
  selection: WorkloadSelection,
): { name: string; config: TracedWorkloadConfig; owner: { kind: SelectableWorkloadKind; name: string } } | undefined {
  for (const w of owningWorkloads(pod)) {
    if (!SELECTABLE_KINDS.has(w.kind)) continue;
    const owner = { kind: w.kind as SelectableWorkloadKind, name: w.name };
    const found = selection(namespace, owner.kind, owner.name);
    if (found) return { ...found, owner };
  }
  return undefined;
}

/**
 * Whether the pod already carries the tracer. Judged by what the webhook adds rather than by the
 * `rbinder.io/injected` annotation alone, which a pod spec copied from a running pod also carries.
 */
function isInjected(pod: V1Pod): boolean {
  return (
    (pod.spec?.initContainers ?? []).some((c) => c.name === INSTALL_CONTAINER) ||
    (pod.spec?.volumes ?? []).some((v) => v.name === BUNDLE_VOLUME)
  );
}

function parseInjectAnnotation(value: string | undefined, warnings: string[]): boolean | undefined {
  if (value === undefined) return undefined;
  const v = value.trim().toLowerCase();
  if (v === 'true') return true;
  if (v === 'false') return false;
  warnings.push(`annotation ${ANNOTATION_INJECT}="${value}" is neither "true" nor "false"; ignored`);
  return undefined;
}

/** The app containers to trace: the annotation's list, else the TracedWorkload's, else all. Never init or ephemeral containers. */
function chooseContainers(
  pod: V1Pod,
  workload: TracedWorkloadConfig | undefined,
  warnings: string[],
): { chosen: V1Container[]; refused: { name: string; reason: string }[] } {
  const containers = pod.spec?.containers ?? [];
  const annotation = pod.metadata?.annotations?.[ANNOTATION_CONTAINER_NAMES];
  const names = annotation !== undefined ? splitList(annotation) : (workload?.containers ?? []).filter((n) => n !== '');
  if (names.length === 0) return { chosen: [...containers], refused: [] };
  const wanted = new Set(names);
  const known = new Set(containers.map((c) => c.name));
  const initNames = new Set([...(pod.spec?.initContainers ?? []), ...(pod.spec?.ephemeralContainers ?? [])].map((c) => c.name));
  const refused: { name: string; reason: string }[] = [];
  for (const name of wanted) {
    if (known.has(name)) continue;
    const reason = initNames.has(name) ? 'init and ephemeral containers are never traced' : 'no such container';
    refused.push({ name, reason });
    warnings.push(`container ${name}: ${reason}`);
  }
  return { chosen: containers.filter((c) => wanted.has(c.name)), refused };
}

function splitList(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

function overlaps(a: string, b: string): boolean {
  const x = a.replace(/\/+$/, '');
  return x === b || x.startsWith(`${b}/`) || b.startsWith(`${x}/`);
}

/** The tracer needs ptrace and seccomp; a custom profile may forbid them. */
function ptraceWarnings(pod: V1Pod, c: V1Container): string[] {
  const out: string[] = [];
  const seccomp = c.securityContext?.seccompProfile ?? pod.spec?.securityContext?.seccompProfile;
  if (seccomp?.type === 'Localhost') {
    out.push(`container ${c.name}: seccomp profile ${seccomp.localhostProfile ?? 'Localhost'} must allow ptrace and seccomp, or the traced container fails to start`);
  }
  const apparmor = c.securityContext?.appArmorProfile ?? pod.spec?.securityContext?.appArmorProfile;
  const legacy = pod.metadata?.annotations?.[`container.apparmor.security.beta.kubernetes.io/${c.name}`];
  if (apparmor?.type === 'Localhost' || legacy?.startsWith('localhost/')) {
    out.push(`container ${c.name}: a custom AppArmor profile must allow ptrace (trace) of the container's own processes`);
  }
  return out;
}

/** The pod with the tracer injected into its chosen containers, as a patch, or why not. */
export function mutatePod(pod: V1Pod, input: MutationInput): PodMutation {
  const plan = planPod(pod, input);
  if (!plan.selected) {
    if (!plan.annotate) return { result: 'ignored', reason: plan.reason, injected: [], patch: [], warnings: plan.warnings };
    return skippedPod(pod, plan.reason, plan.warnings, plan.stamp);
  }

  const { config } = input;
  const annotations = pod.metadata?.annotations ?? {};
  const warnings = [...plan.warnings];
  const refused = [...plan.refused];
  const commands = new Map<string, ContainerCommand & { kind: 'argv' | 'per-arch' }>();
  for (const c of plan.containers) {
    const image = c.image ? input.images?.get(c.image) : undefined;
    const command = resolveContainerCommand({ container: c, override: annotations[commandAnnotation(c.name)], image, pinned: plan.pinned });
    if (command.kind === 'unknown') {
      refused.push({ name: c.name, reason: `command unknown: ${command.reason}` });
      warnings.push(`container ${c.name} is not traced: ${command.reason}`);
    } else {
      commands.set(c.name, command);
    }
  }
  const reason = refused.map((r) => `container ${r.name}: ${r.reason}`).join('; ');
  if (commands.size === 0) return { ...skippedPod(pod, reason || 'no container to trace', warnings, plan.stamp), selectedBy: plan.selectedBy };

  const mutated = structuredClone(pod);
  const spec = (mutated.spec ??= { containers: [] });
  const namespace = input.namespace;
  const workloads = owningWorkloads(pod);
  const telemetry = effectiveTelemetry(config, plan.workload);
  const service = serviceName(pod, workloads, plan.workload?.serviceName);
  const launcher = launcherFile(config);

  spec.volumes = [...(spec.volumes ?? []), bundleVolume(config)];
  spec.initContainers = [installContainer(config), ...(spec.initContainers ?? [])];
  spec.containers = spec.containers.map((c) => {
    const command = commands.get(c.name);
    if (!command) return c;
    const traced: V1Container = { ...c };
    let commandByArch: Record<string, string[]> | undefined;
    if (command.kind === 'argv') {
      traced.command = [launcher, '--', ...command.argv];
    } else {
      traced.command = [launcher, TRACER_PER_ARCH_FLAG, '--', ...command.args];
      commandByArch = command.byArch;
    }
    delete traced.args;
    traced.volumeMounts = [...(c.volumeMounts ?? []), { name: BUNDLE_VOLUME, mountPath: config.mountPath, readOnly: true }];
    traced.env = tracedContainerEnv({ container: c, namespace, serviceName: service, workloads, telemetry, commandByArch });
    return dropUndefined(traced);
  });

  const injected = [...commands.keys()];
  const meta = (mutated.metadata ??= {});
  meta.annotations = { ...meta.annotations, ...plan.stamp, [ANNOTATION_INJECTED]: injected.join(',') };
  if (reason) meta.annotations[ANNOTATION_SKIPPED] = reason;
  else delete meta.annotations[ANNOTATION_SKIPPED];
  return { result: 'injected', reason, injected, patch: compare(pod, mutated), warnings, selectedBy: plan.selectedBy };
}

function skippedPod(pod: V1Pod, reason: string, warnings: string[], stamp?: Record<string, string>): PodMutation {
  const mutated = structuredClone(pod);
  const meta = (mutated.metadata ??= {});
  meta.annotations = { ...meta.annotations, ...stamp, [ANNOTATION_SKIPPED]: reason };
  delete meta.annotations[ANNOTATION_INJECTED];
  return { result: 'skipped', reason, injected: [], patch: compare(pod, mutated), warnings: [`rbinder: pod not traced: ${reason}`, ...warnings] };
}

function bundleVolume(config: InjectionConfig): V1Volume {
  return { name: BUNDLE_VOLUME, emptyDir: config.volumeSizeLimit ? { sizeLimit: config.volumeSizeLimit } : {} };
}

/** Locked down so that it passes the "restricted" Pod Security Standard and runAsNonRoot policies. */
export function installSecurityContext(uid: number): V1SecurityContext {
  return {
    runAsNonRoot: true,
    runAsUser: uid,
    runAsGroup: uid,
    allowPrivilegeEscalation: false,
    privileged: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

function installContainer(config: InjectionConfig): V1Container {
  return {
    name: INSTALL_CONTAINER,
    image: config.tracerImage,
    imagePullPolicy: config.tracerImagePullPolicy,
    command: [...config.installCommand, config.installMountPath],
    volumeMounts: [{ name: BUNDLE_VOLUME, mountPath: config.installMountPath }],
    resources: structuredClone(config.installResources),
    securityContext: installSecurityContext(config.installUser),
    terminationMessagePolicy: 'FallbackToLogsOnError',
  };
}

/** JSON has no undefined: a key holding it would become a bogus patch operation. */
function dropUndefined<T extends object>(value: T): T {
  for (const key of Object.keys(value) as (keyof T)[]) if (value[key] === undefined) delete value[key];
  return value;
}
