// The OpenTelemetry Collector provisioned for a TracedWorkload: a ConfigMap with the collector's
// configuration (OTLP receivers, memory_limiter and batch processors, the user's exporters), a
// Deployment running it and a Service in front, all owned by the TracedWorkload. Pure.

import type { KubernetesObject, V1ConfigMap, V1Deployment, V1OwnerReference, V1Service } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { collectorName, hashOf } from './config';
import {
  ANNOTATION_APPLIED_HASH,
  ANNOTATION_COLLECTOR_CONFIG_HASH,
  ANNOTATION_INJECT,
  API_VERSION,
  COLLECTOR_HEALTH_PORT,
  KIND,
  LABEL_APP_NAME,
  LABEL_COMPONENT,
  LABEL_INSTANCE,
  LABEL_MANAGED_BY,
  MANAGED_BY,
  OTLP_GRPC_PORT,
  OTLP_HTTP_PORT,
} from './names';
import type { TracedWorkload } from './types';

export const COLLECTOR_CONFIG_KEY = 'collector.yaml';
export const COLLECTOR_COMPONENT = 'collector';

/** When the user names no exporter, spans are logged by the collector (visible with kubectl logs). */
const DEFAULT_EXPORTERS = { debug: { verbosity: 'basic' } };

export function ownerReference(tw: TracedWorkload): V1OwnerReference {
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    name: tw.metadata.name,
    uid: tw.metadata.uid ?? '',
    controller: true,
    blockOwnerDeletion: true,
  };
}

export function collectorLabels(tw: TracedWorkload): Record<string, string> {
  return {
    [LABEL_APP_NAME]: 'opentelemetry-collector',
    [LABEL_INSTANCE]: tw.metadata.name,
    [LABEL_COMPONENT]: COLLECTOR_COMPONENT,
    [LABEL_MANAGED_BY]: MANAGED_BY,
  };
}

/** The collector's configuration (as an object; the ConfigMap holds it as YAML). */
export function collectorConfig(tw: TracedWorkload): Record<string, unknown> {
  const provision = tw.spec.collector?.provision ?? {};
  const exporters = provision.exporters && Object.keys(provision.exporters).length > 0 ? provision.exporters : DEFAULT_EXPORTERS;
  const exporterNames = Object.keys(exporters);
  const pipeline = (): Record<string, string[]> => ({ receivers: ['otlp'], processors: ['memory_limiter', 'batch'], exporters: exporterNames });
  const extensions = { ...provision.extensions, health_check: { endpoint: `0.0.0.0:${COLLECTOR_HEALTH_PORT}` } };
  return {
    receivers: {
      otlp: {
        protocols: {
          grpc: { endpoint: `0.0.0.0:${OTLP_GRPC_PORT}` },
          http: { endpoint: `0.0.0.0:${OTLP_HTTP_PORT}` },
        },
      },
    },
    processors: {
      // First in the pipeline, so that a flood is refused before it is batched.
      memory_limiter: { check_interval: '1s', limit_percentage: 80, spike_limit_percentage: 25 },
      batch: {},
    },
    exporters,
    extensions,
    service: {
      extensions: Object.keys(extensions),
      pipelines: { traces: pipeline(), metrics: pipeline() },
    },
  };
}

export interface CollectorOptions {
  /** Image when the TracedWorkload names none (--collector-image). */
  defaultImage: string;
}

/** The objects to provision, each carrying the hash of its own content; none without spec.collector.provision. */
export function desiredCollectorObjects(tw: TracedWorkload, options: CollectorOptions): KubernetesObject[] {
  const provision = tw.spec.collector?.provision;
  if (!provision) return [];
  const name = collectorName(tw.metadata.name);
  const namespace = tw.metadata.namespace;
  const labels = collectorLabels(tw);
  const selector = { [LABEL_INSTANCE]: tw.metadata.name, [LABEL_COMPONENT]: COLLECTOR_COMPONENT };
  const meta = { name, namespace, labels, ownerReferences: [ownerReference(tw)] };
  // Plain YAML, no anchors: people read this ConfigMap.
  const configText = stringify(collectorConfig(tw), { aliasDuplicateObjects: false });

  const configMap: V1ConfigMap = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { ...meta }, data: { [COLLECTOR_CONFIG_KEY]: configText } };

  const deployment: V1Deployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { ...meta },
    spec: {
      replicas: provision.replicas ?? 1,
      selector: { matchLabels: selector },
      template: {
        metadata: {
          labels: { ...labels },
          annotations: {
            // Never trace the collector: its export traffic would be traced in turn.
            [ANNOTATION_INJECT]: 'false',
            // A new configuration restarts the collector.
            [ANNOTATION_COLLECTOR_CONFIG_HASH]: hashOf(configText),
          },
        },
        spec: {
          containers: [
            {
              name: 'otel-collector',
              image: provision.image ?? options.defaultImage,
              args: [`--config=/conf/${COLLECTOR_CONFIG_KEY}`],
              ports: [
                { name: 'otlp-grpc', containerPort: OTLP_GRPC_PORT, protocol: 'TCP' },
                { name: 'otlp-http', containerPort: OTLP_HTTP_PORT, protocol: 'TCP' },
                { name: 'health', containerPort: COLLECTOR_HEALTH_PORT, protocol: 'TCP' },
              ],
              readinessProbe: { httpGet: { path: '/', port: COLLECTOR_HEALTH_PORT } },
              livenessProbe: { httpGet: { path: '/', port: COLLECTOR_HEALTH_PORT } },
              resources: provision.resources ?? { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } },
              securityContext: {
                runAsNonRoot: true,
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'] },
              },
              volumeMounts: [{ name: 'config', mountPath: '/conf', readOnly: true }],
            },
          ],
          securityContext: { runAsNonRoot: true, runAsUser: 10001, seccompProfile: { type: 'RuntimeDefault' } },
          volumes: [{ name: 'config', configMap: { name } }],
        },
      },
    },
  };

  const service: V1Service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { ...meta },
    spec: {
      selector,
      ports: [
        { name: 'otlp-grpc', port: OTLP_GRPC_PORT, targetPort: 'otlp-grpc', protocol: 'TCP', appProtocol: 'grpc' },
        { name: 'otlp-http', port: OTLP_HTTP_PORT, targetPort: 'otlp-http', protocol: 'TCP' },
      ],
    },
  };

  return [configMap, deployment, service].map(withAppliedHash);
}

/** Marks the object with the hash of its content, so an unchanged object is not applied again. */
export function withAppliedHash<T extends KubernetesObject>(object: T): T {
  const hash = hashOf(object);
  return { ...object, metadata: { ...object.metadata, annotations: { ...object.metadata?.annotations, [ANNOTATION_APPLIED_HASH]: hash } } };
}

/** Whether a provisioned collector Deployment serves: every desired replica available at the current generation. */
export function collectorAvailable(deployment: V1Deployment | undefined): { ready: boolean; message: string } {
  if (!deployment) return { ready: false, message: 'the collector Deployment does not exist yet' };
  const want = deployment.spec?.replicas ?? 1;
  const status = deployment.status ?? {};
  if ((status.observedGeneration ?? 0) < (deployment.metadata?.generation ?? 0)) return { ready: false, message: 'the collector Deployment is being updated' };
  const available = status.availableReplicas ?? 0;
  const updated = status.updatedReplicas ?? 0;
  if (available >= want && updated >= want) return { ready: true, message: `${available}/${want} collector replicas available` };
  return { ready: false, message: `${available}/${want} collector replicas available` };
}
