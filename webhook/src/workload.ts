// Which workload a pod belongs to, read from its controller ownerReference alone: admission is no
// time for API calls, and the names Kubernetes gives pods make the Deployment's name derivable.

import type { V1Pod } from '@kubernetes/client-node';
import { ANNOTATION_SERVICE_NAME, LABEL_APP_NAME, LABEL_POD_TEMPLATE_HASH } from './names';

export type WorkloadKind = 'Deployment' | 'ReplicaSet' | 'StatefulSet' | 'DaemonSet' | 'Job' | 'CronJob' | 'ReplicationController';

export interface Workload {
  kind: WorkloadKind;
  name: string;
}

/** OpenTelemetry semantic-convention resource attribute for each kind's name. */
const NAME_ATTRIBUTE: Record<WorkloadKind, string> = {
  Deployment: 'k8s.deployment.name',
  ReplicaSet: 'k8s.replicaset.name',
  StatefulSet: 'k8s.statefulset.name',
  DaemonSet: 'k8s.daemonset.name',
  Job: 'k8s.job.name',
  CronJob: 'k8s.cronjob.name',
  ReplicationController: 'k8s.replicationcontroller.name',
};

/**
 * The pod's workloads, innermost first: a Deployment's pod gives [ReplicaSet, Deployment] (the
 * Deployment's name is the ReplicaSet's less its "-<pod-template-hash>" suffix).
 */
export function owningWorkloads(pod: V1Pod): Workload[] {
  const owner = pod.metadata?.ownerReferences?.find((ref) => ref.controller) ?? pod.metadata?.ownerReferences?.[0];
  if (!owner?.name) return [];
  switch (owner.kind) {
    case 'ReplicaSet': {
      const hash = pod.metadata?.labels?.[LABEL_POD_TEMPLATE_HASH];
      const suffix = hash ? `-${hash}` : undefined;
      const out: Workload[] = [{ kind: 'ReplicaSet', name: owner.name }];
      if (suffix && owner.name.endsWith(suffix) && owner.name.length > suffix.length) {
        out.push({ kind: 'Deployment', name: owner.name.slice(0, -suffix.length) });
      }
      return out;
    }
    case 'StatefulSet':
    case 'DaemonSet':
    case 'Job':
    case 'ReplicationController':
      return [{ kind: owner.kind, name: owner.name }];
    default:
      return [];
  }
}

/** `k8s.<kind>.name` attributes for the pod's workloads. */
export function workloadAttributes(workloads: Workload[]): [string, string][] {
  return workloads.map((w) => [NAME_ATTRIBUTE[w.kind], w.name]);
}

/**
 * service.name for the pod: the `rbinder.io/service-name` annotation, else the TracedWorkload's
 * setting, else the `app.kubernetes.io/name` label, else the outermost workload's name, else the
 * pod's own name (or generateName less its trailing "-"). A container's own OTEL_SERVICE_NAME
 * still wins over all of these (the webhook never overrides env).
 */
export function serviceName(pod: V1Pod, workloads: Workload[], fromWorkloadConfig?: string): string | undefined {
  const annotated = pod.metadata?.annotations?.[ANNOTATION_SERVICE_NAME]?.trim();
  if (annotated) return annotated;
  if (fromWorkloadConfig) return fromWorkloadConfig;
  const label = pod.metadata?.labels?.[LABEL_APP_NAME]?.trim();
  if (label) return label;
  const outermost = workloads[workloads.length - 1];
  if (outermost) return outermost.name;
  if (pod.metadata?.name) return pod.metadata.name;
  const generated = pod.metadata?.generateName?.replace(/-+$/, '');
  return generated || undefined;
}
