// AdmissionReview v1 in, AdmissionReview v1 out: validates the request, gathers what mutatePod
// needs (namespace labels, pull secrets, image entrypoints within a deadline), and turns the
// mutation, or the handler's own failure, into the response the API server expects.

import type { V1Pod, V1Secret } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { FailurePolicy, InjectionConfig, TracedWorkloadLookup, WorkloadSelection } from './config';
import type { ImageEntrypoints, ImageLookup } from './entrypoint';
import type { RequestResult } from './metrics';
import { imagesToResolve, mutatePod, type ImageRequest, type PodContext } from './mutate';
import type { RegistryCredential } from './registry/credentials';
import { DockerKeyring } from './registry/credentials';
import { parseImageReference } from './registry/reference';

export const ADMISSION_API_VERSION = 'admission.k8s.io/v1';

export interface GroupVersionKind {
  group: string;
  version: string;
  kind: string;
}

export interface AdmissionRequest {
  uid: string;
  kind: GroupVersionKind;
  resource?: { group: string; version: string; resource: string };
  subResource?: string;
  name?: string;
  namespace?: string;
  operation: 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';
  object?: unknown;
  dryRun?: boolean;
}

export interface AdmissionResponse {
  uid: string;
  allowed: boolean;
  patchType?: 'JSONPatch';
  /** base64 of the JSON patch. */
  patch?: string;
  warnings?: string[];
  status?: { code: number; message: string };
}

export interface AdmissionReview {
  apiVersion: typeof ADMISSION_API_VERSION;
  kind: 'AdmissionReview';
  request?: AdmissionRequest;
  response?: AdmissionResponse;
}

/** A request that is not an AdmissionReview v1 we can answer: HTTP 400 with this message. */
export class BadRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BadRequestError';
  }
}

/** The cluster as the webhook sees it. Production backs these with the API server; tests with data. */
export interface ClusterLookups {
  /** The namespace's labels; undefined if it does not exist. */
  namespaceLabels(namespace: string): Promise<Record<string, string> | undefined>;
  /** A Secret of the pod's namespace (for imagePullSecrets); undefined if it does not exist. */
  secret(namespace: string, name: string): Promise<V1Secret | undefined>;
  /** The imagePullSecrets names of a ServiceAccount; [] if it has none or does not exist. */
  serviceAccountPullSecrets(namespace: string, serviceAccount: string): Promise<string[]>;
  /** The operator's TracedWorkload cache. */
  tracedWorkload?: TracedWorkloadLookup;
  /** The TracedWorkload selecting a workload, for unstamped pods (the cache's `forWorkload`). */
  workloadSelection?: WorkloadSelection;
}

export interface EntrypointSource {
  entrypoints(image: string, credentials: RegistryCredential[], signal?: AbortSignal): Promise<ImageEntrypoints>;
}

export interface ReviewDependencies {
  config: InjectionConfig;
  cluster: ClusterLookups;
  registry: EntrypointSource;
  /** Credentials of the webhook itself (a docker config file), tried after the pod's. */
  ownCredentials?: DockerKeyring;
  /** Most time spent on secrets and registry lookups for one request; keep well under timeoutSeconds. */
  lookupBudgetMs: number;
  log: Logger;
}

export interface ReviewOutcome {
  response: AdmissionResponse;
  result: RequestResult;
  reason: string;
  injected: string[];
  selectedBy?: string;
}

/** Checks the shape of the request body and returns its request; throws BadRequestError. */
export function parseAdmissionReview(body: unknown): AdmissionRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new BadRequestError('expected a JSON object (an AdmissionReview)');
  }
  const review = body as Record<string, unknown>;
  if (review.kind !== 'AdmissionReview') throw new BadRequestError(`expected kind AdmissionReview, got ${JSON.stringify(review.kind ?? null)}`);
  if (review.apiVersion !== ADMISSION_API_VERSION) {
    throw new BadRequestError(`expected apiVersion ${ADMISSION_API_VERSION}, got ${JSON.stringify(review.apiVersion ?? null)} (set admissionReviewVersions: [v1])`);
  }
  const request = review.request as Record<string, unknown> | undefined;
  if (typeof request !== 'object' || request === null) throw new BadRequestError('the AdmissionReview has no request');
  if (typeof request.uid !== 'string' || request.uid === '') throw new BadRequestError('the AdmissionReview request has no uid');
  const kind = request.kind as Partial<GroupVersionKind> | undefined;
  if (typeof kind?.kind !== 'string') throw new BadRequestError('the AdmissionReview request has no kind');
  if (typeof request.operation !== 'string') throw new BadRequestError('the AdmissionReview request has no operation');
  return request as unknown as AdmissionRequest;
}

export function reviewResponse(response: AdmissionResponse): AdmissionReview {
  return { apiVersion: ADMISSION_API_VERSION, kind: 'AdmissionReview', response };
}

/** Kubernetes asks to keep warnings under 120 characters; the pod's annotation has the full text. */
const MAX_WARNING = 120;
export function shortWarning(text: string): string {
  return text.length <= MAX_WARNING ? text : `${text.slice(0, MAX_WARNING - 1)}…`;
}

/** What the handler answers when it fails: admit unchanged (Ignore) or reject (Fail). */
export function failureResponse(uid: string, policy: FailurePolicy, message: string): AdmissionResponse {
  if (policy === 'Fail') return { uid, allowed: false, status: { code: 500, message: `rbinder webhook: ${message}` } };
  return { uid, allowed: true, warnings: [shortWarning(`rbinder: pod admitted without tracing: ${message}`)] };
}

/** Answers one AdmissionReview request. Never throws: its own failures follow the failure policy. */
export async function reviewPodRequest(request: AdmissionRequest, deps: ReviewDependencies): Promise<ReviewOutcome> {
  const { uid } = request;
  const allow = (reason: string): ReviewOutcome => ({ response: { uid, allowed: true }, result: 'ignored', reason, injected: [] });
  const isPod = request.kind.group === '' && request.kind.kind === 'Pod';
  if (!isPod) return allow(`not a pod (${request.kind.group || 'core'}/${request.kind.kind})`);
  if (request.operation !== 'CREATE' || request.subResource) return allow(`operation ${request.operation}${request.subResource ? ` on ${request.subResource}` : ''}`);

  try {
    const pod = request.object as V1Pod | undefined;
    if (typeof pod !== 'object' || pod === null || !Array.isArray(pod.spec?.containers)) {
      throw new Error('the request carries no pod with spec.containers');
    }
    const namespace = request.namespace || pod.metadata?.namespace || 'default';
    const warnings: string[] = [];
    let namespaceLabels: Record<string, string> | undefined;
    try {
      namespaceLabels = await deps.cluster.namespaceLabels(namespace);
    } catch (err) {
      deps.log.warn({ err, namespace }, 'cannot read namespace labels');
      warnings.push(`rbinder: cannot read the labels of namespace ${namespace}: ${(err as Error).message}`);
    }
    const context: PodContext = {
      namespace,
      namespaceLabels,
      config: deps.config,
      tracedWorkload: deps.cluster.tracedWorkload,
      workloadSelection: deps.cluster.workloadSelection,
    };
    const wanted = imagesToResolve(pod, context);
    const images = wanted.length > 0 ? await resolveImages(pod, namespace, wanted, deps, warnings) : undefined;
    const mutation = mutatePod(pod, { ...context, images });
    const response: AdmissionResponse = { uid, allowed: true };
    if (mutation.patch.length > 0) {
      response.patchType = 'JSONPatch';
      response.patch = Buffer.from(JSON.stringify(mutation.patch)).toString('base64');
    }
    const all = [...warnings, ...mutation.warnings].map(shortWarning);
    if (all.length > 0) response.warnings = all;
    return { response, result: mutation.result, reason: mutation.reason, injected: mutation.injected, selectedBy: mutation.selectedBy };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    deps.log.error({ err, uid }, 'admission review failed');
    return { response: failureResponse(uid, deps.config.failurePolicy, message), result: 'error', reason: message, injected: [] };
  }
}

/** The registry's answer for each wanted image, with the pod's pull credentials, within the lookup budget. */
async function resolveImages(
  pod: V1Pod,
  namespace: string,
  wanted: ImageRequest[],
  deps: ReviewDependencies,
  warnings: string[],
): Promise<Map<string, ImageLookup>> {
  const signal = AbortSignal.timeout(deps.lookupBudgetMs);
  const keyring = await podKeyring(pod, namespace, deps, warnings);
  const images = new Map<string, ImageLookup>();
  await Promise.all(
    [...new Set(wanted.map((w) => w.image))].map(async (image) => {
      try {
        const ref = parseImageReference(image);
        const credentials = [...keyring.lookup(ref), ...(deps.ownCredentials?.lookup(ref) ?? [])];
        images.set(image, { image: await deps.registry.entrypoints(image, credentials, signal) });
      } catch (err) {
        images.set(image, { error: (err as Error).message });
      }
    }),
  );
  return images;
}

/** Credentials from the pod's imagePullSecrets, then its ServiceAccount's (the kubelet uses the pod's; the SA's are usually copied there). */
async function podKeyring(pod: V1Pod, namespace: string, deps: ReviewDependencies, warnings: string[]): Promise<DockerKeyring> {
  const keyring = new DockerKeyring();
  const names = (pod.spec?.imagePullSecrets ?? []).map((s) => s.name).filter((n): n is string => !!n);
  const serviceAccount = pod.spec?.serviceAccountName || 'default';
  try {
    names.push(...(await deps.cluster.serviceAccountPullSecrets(namespace, serviceAccount)));
  } catch (err) {
    deps.log.warn({ err, namespace, serviceAccount }, 'cannot read the ServiceAccount');
  }
  for (const name of [...new Set(names)]) {
    const source = `secret ${namespace}/${name}`;
    try {
      const secret = await deps.cluster.secret(namespace, name);
      if (!secret) {
        warnings.push(`rbinder: imagePullSecret ${name} not found`);
        continue;
      }
      for (const problem of keyring.addSecret(secret, source)) deps.log.warn({ namespace, secret: name }, problem);
    } catch (err) {
      deps.log.warn({ err, namespace, secret: name }, 'cannot read imagePullSecret');
    }
  }
  return keyring;
}
