// The MutatingWebhookConfiguration that sends pod CREATEs to the webhook. It is installed with
// the controller (chart/manifests); the operator keeps its caBundle current. Its failurePolicy
// comes from the same setting as the handler's behaviour on its own errors.

import type { V1MutatingWebhookConfiguration } from '@kubernetes/client-node';
import type { FailurePolicy } from './config';
import { ALWAYS_EXCLUDED_NAMESPACES, LABEL_NAMESPACE_NAME, MUTATE_PODS_PATH } from './names';

export const WEBHOOK_CONFIGURATION_NAME = 'rbinder-webhook'; // the operator's default and RBAC resourceNames
export const WEBHOOK_NAME = 'pods.rbinder.io';
export const DEFAULT_TIMEOUT_SECONDS = 5;

export interface WebhookConfigurationOptions {
  failurePolicy: FailurePolicy;
  /** The controller's namespace: never sent to the webhook (so the controller can always start). */
  controllerNamespace: string;
  excludedNamespaces?: string[];
  /** How long the API server waits for an answer (1–30); keep it small, pods wait on it. */
  timeoutSeconds?: number;
  /**
   * "Never" by default: the webhook leaves an injected pod alone, so calling it again after other
   * webhooks changed the pod could only trace containers they added (e.g. service-mesh sidecars).
   */
  reinvocationPolicy?: 'Never' | 'IfNeeded';
  /** PEM CA bundle that signed the serving certificate. */
  caBundle?: string;
  /** The webhook's Service (in-cluster), or... */
  service?: { name: string; namespace: string; port?: number };
  /** ...a base URL (e.g. "https://10.0.0.5:9443" for a webhook outside the cluster). */
  url?: string;
  name?: string;
  labels?: Record<string, string>;
}

export function buildMutatingWebhookConfiguration(options: WebhookConfigurationOptions): V1MutatingWebhookConfiguration {
  const timeoutSeconds = options.timeoutSeconds ?? DEFAULT_TIMEOUT_SECONDS;
  if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 1 || timeoutSeconds > 30) {
    throw new RangeError(`timeoutSeconds must be a whole number from 1 to 30, not ${timeoutSeconds}`);
  }
  if (!options.service === !options.url) throw new Error('exactly one of service and url must be given');
  const excluded = [...new Set([...ALWAYS_EXCLUDED_NAMESPACES, options.controllerNamespace, ...(options.excludedNamespaces ?? [])])];
  const caBundle = options.caBundle ? Buffer.from(options.caBundle).toString('base64') : undefined;
  const clientConfig = options.service
    ? { service: { name: options.service.name, namespace: options.service.namespace, path: MUTATE_PODS_PATH, port: options.service.port ?? 443 } }
    : { url: `${options.url!.replace(/\/+$/, '')}${MUTATE_PODS_PATH}` };
  return {
    apiVersion: 'admissionregistration.k8s.io/v1',
    kind: 'MutatingWebhookConfiguration',
    metadata: { name: options.name ?? WEBHOOK_CONFIGURATION_NAME, ...(options.labels ? { labels: options.labels } : {}) },
    webhooks: [
      {
        name: WEBHOOK_NAME,
        admissionReviewVersions: ['v1'],
        clientConfig: { ...clientConfig, ...(caBundle ? { caBundle } : {}) },
        rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }],
        // Selection by annotation and namespace label happens in the handler (the selector cannot
        // say "label OR annotation"); the API server only keeps away what must never be touched.
        namespaceSelector: { matchExpressions: [{ key: LABEL_NAMESPACE_NAME, operator: 'NotIn', values: excluded }] },
        failurePolicy: options.failurePolicy,
        matchPolicy: 'Equivalent',
        sideEffects: 'None',
        timeoutSeconds,
        reinvocationPolicy: options.reinvocationPolicy ?? 'Never',
      },
    ],
  };
}
