// The names the webhook shares with the operator, the tracer, the chart and the docs
// (DESIGN.md §9). Change one here and there at once, or not at all.

/** Pod annotation "true"/"false"; namespace label value "enabled". */
export const ANNOTATION_INJECT = 'rbinder.io/inject';
export const LABEL_INJECT = 'rbinder.io/inject';
export const LABEL_INJECT_ENABLED = 'enabled';
/** Pod annotation: comma-separated container names to trace. */
export const ANNOTATION_CONTAINER_NAMES = 'rbinder.io/container-names';
/** Pod annotation prefix: `rbinder.io/command.<container>` holds a JSON argv used as that container's command. */
export const ANNOTATION_COMMAND_PREFIX = 'rbinder.io/command.';
/** Pod annotation: service.name for the pod's spans. */
export const ANNOTATION_SERVICE_NAME = 'rbinder.io/service-name';
/** Pod template annotations stamped by the operator. */
export const ANNOTATION_TRACED_WORKLOAD = 'rbinder.io/traced-workload';
export const ANNOTATION_CONFIG_HASH = 'rbinder.io/config-hash';
/** Pod annotations written by the webhook: what it did, or why not. */
export const ANNOTATION_INJECTED = 'rbinder.io/injected';
export const ANNOTATION_SKIPPED = 'rbinder.io/skipped';

/** The AdmissionReview endpoint. */
export const MUTATE_PODS_PATH = '/mutate--v1-pod';

/** What the webhook adds to a pod. */
export const BUNDLE_VOLUME = 'rbinder-bundle';
export const INSTALL_CONTAINER = 'rbinder-install';

/** Namespaces never touched, whatever the configuration says. */
export const ALWAYS_EXCLUDED_NAMESPACES = ['kube-system'];

/** Well-known labels. */
export const LABEL_APP_NAME = 'app.kubernetes.io/name';
export const LABEL_POD_TEMPLATE_HASH = 'pod-template-hash';
export const LABEL_NAMESPACE_NAME = 'kubernetes.io/metadata.name';
export const LABEL_ARCH = 'kubernetes.io/arch';

/** Environment the webhook sets in traced containers (only where the container does not set them). */
export const ENV = {
  serviceName: 'OTEL_SERVICE_NAME',
  endpoint: 'OTEL_EXPORTER_OTLP_ENDPOINT',
  protocol: 'OTEL_EXPORTER_OTLP_PROTOCOL',
  propagators: 'OTEL_PROPAGATORS',
  sampler: 'OTEL_TRACES_SAMPLER',
  samplerArg: 'OTEL_TRACES_SAMPLER_ARG',
  resourceAttributes: 'OTEL_RESOURCE_ATTRIBUTES',
  injectTo: 'RBINDER_INJECT_TO',
  // Downward-API values referenced from OTEL_RESOURCE_ATTRIBUTES as $(NAME); the same names as the
  // OpenTelemetry Operator's, so people who know one know the other.
  podName: 'OTEL_RESOURCE_ATTRIBUTES_POD_NAME',
  podUid: 'OTEL_RESOURCE_ATTRIBUTES_POD_UID',
  nodeName: 'OTEL_RESOURCE_ATTRIBUTES_NODE_NAME',
  /** `RBINDER_COMMAND_<ARCH>`: the program's argv (JSON) per platform, see entrypoint.ts. */
  commandPrefix: 'RBINDER_COMMAND_',
} as const;

/** The tracer flag that makes it take the program from RBINDER_COMMAND_<ARCH> (docs/webhook.md). */
export const TRACER_PER_ARCH_FLAG = '--command-by-arch';
