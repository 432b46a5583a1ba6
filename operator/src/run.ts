// The operator's entry for bin/rbinder-controller (webhook/src/main.ts registers operatorCliOptions,
// then calls runOperator unless --webhook-only). Contract: docs/operator.md, "Controller process contract".

import { KubeConfig } from '@kubernetes/client-node';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import pino, { type Logger } from 'pino';
import type { Registry } from 'prom-client';
import { TracedWorkloadCache } from './cache';
import { CertificateFiles, CertificateManager } from './certmanager';
import { DAY_MS, defaultPolicy, serviceDnsNames, type CertificatePolicy } from './certificates';
import { Controller } from './controller';
import { DEFAULT_BACKOFF } from './informer';
import { DEFAULT_NAMES, Kube } from './kube';
import { DEFAULT_TIMING, LeaderElector, type LeaderElectionTiming } from './leader';
import { ALWAYS_EXCLUDED_NAMESPACES } from '../../webhook/src/names';

export { TracedWorkloadCache } from './cache';
export type { TracedWorkloadConfig } from './config';

export const DEFAULT_COLLECTOR_IMAGE = 'otel/opentelemetry-collector:0.115.1';
const SERVICE_ACCOUNT_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

export interface OperatorOptions {
  /** A loaded KubeConfig (tests); else `kubeconfig`, else in-cluster, else the default loading rules. */
  kubeConfig?: KubeConfig;
  kubeconfig?: string;
  /** The controller's namespace: lease, certificate Secret; never injected. */
  namespace?: string;
  /** This replica's name in the lease and in events; default POD_NAME or host name + random suffix. */
  identity?: string;
  leaderElect?: boolean;
  leaseName?: string;
  leaderElection?: Partial<LeaderElectionTiming>;
  /** Create, rotate and publish the webhook's certificates (off when cert-manager does it). */
  manageCertificates?: boolean;
  webhookConfigName?: string;
  webhookServiceName?: string;
  /** Out of cluster: the URL the API server calls the webhook at; its host joins the certificate's SANs. */
  webhookUrl?: string;
  certDir?: string;
  certSecretName?: string;
  caLifetimeMs?: number;
  certLifetimeMs?: number;
  /** Fraction of a certificate's lifetime after which it is renewed. */
  certRenewAt?: number;
  /** Time a new CA spends in the caBundle before a certificate it signed is served (default 10 s). */
  caTrustGraceMs?: number;
  collectorImage?: string;
  /** spec.rollout.automatic when a TracedWorkload does not say (and for annotated workloads). */
  automaticRollout?: boolean;
  /** More namespaces never stamped (kube-system and the controller's own always are). */
  excludedNamespaces?: string[];
  resyncMs?: number;
  debounceMs?: number;
  logger?: Logger;
  /** prom-client registry the operator's metrics join (the entry serves /metrics). */
  registry?: Registry;
  /** The webhook's cache, when the entry made it first (see createTracedWorkloadCache). */
  cache?: TracedWorkloadCache;
}

export interface OperatorHandle {
  /** Steps down (releasing the lease), stops every watch and timer. */
  stop(): Promise<void>;
  /** The TracedWorkload lookup the webhook uses. */
  cache: TracedWorkloadCache;
  isLeader(): boolean;
  /** Liveness: false only if the operator is wedged (a leader whose last pass is long overdue). */
  healthy(): boolean;
  /** Readiness: the TracedWorkload cache has synced (the webhook can answer). */
  ready(): boolean;
  /** The leader's controller (undefined when not leading); tests use it. */
  controller(): Controller | undefined;
  certificates(): CertificateManager | undefined;
}

/** Extra flags of bin/rbinder-controller for the operator. `name` is the camelCase key commander gives. */
export interface OperatorCliOption {
  flags: string;
  name: string;
  description: string;
  default?: string | boolean;
  /** Also meaningful to the webhook (register once). */
  shared?: boolean;
}

export const operatorCliOptions: readonly OperatorCliOption[] = [
  { flags: '--kubeconfig <path>', name: 'kubeconfig', description: 'kubeconfig file (default: in-cluster config, else KUBECONFIG/~/.kube/config)', shared: true },
  { flags: '--namespace <ns>', name: 'namespace', description: "the controller's namespace (lease, certificate Secret; never injected) (default: POD_NAMESPACE, the service account's, else rbinder-system)", shared: true },
  { flags: '--no-leader-elect', name: 'leaderElect', description: 'run the operator without a lease (only with one replica)', default: true },
  { flags: '--leader-election-id <name>', name: 'leaderElectionId', description: 'name of the coordination.k8s.io Lease', default: DEFAULT_NAMES.lease },
  { flags: '--webhook-config-name <name>', name: 'webhookConfigName', description: 'MutatingWebhookConfiguration whose caBundle the operator keeps current', default: DEFAULT_NAMES.webhookConfig, shared: true },
  { flags: '--webhook-service-name <name>', name: 'webhookServiceName', description: "the webhook's Service (serving certificate names <name>.<namespace>.svc)", default: 'rbinder-webhook', shared: true },
  { flags: '--webhook-url <url>', name: 'webhookUrl', description: 'out of cluster: the URL the API server calls; its host (and 127.0.0.1, localhost) join the certificate names', shared: true },
  { flags: '--cert-dir <dir>', name: 'certDir', description: 'where tls.crt, tls.key and ca.crt are written from the certificate Secret (the webhook reloads them)', shared: true },
  { flags: '--cert-secret-name <name>', name: 'certSecretName', description: 'Secret holding the CA and serving certificate', default: DEFAULT_NAMES.certSecret, shared: true },
  { flags: '--no-manage-certificates', name: 'manageCertificates', description: 'leave certificates to someone else (cert-manager)', default: true },
  { flags: '--cert-lifetime <duration>', name: 'certLifetime', description: 'serving certificate lifetime (renewed at 2/3), e.g. 90d, 12h', default: '90d' },
  { flags: '--ca-lifetime <duration>', name: 'caLifetime', description: 'CA lifetime (renewed at 2/3)', default: '1825d' },
  { flags: '--collector-image <image>', name: 'collectorImage', description: 'OpenTelemetry Collector image for provisioned collectors', default: DEFAULT_COLLECTOR_IMAGE },
  { flags: '--disable-rollout-default', name: 'disableRolloutDefault', description: 'do not restart workloads unless their TracedWorkload sets spec.rollout.automatic: true', default: false },
  { flags: '--exclude-namespaces <list>', name: 'excludeNamespaces', description: 'comma-separated namespaces never stamped (kube-system and the controller namespace always are)', shared: true },
  { flags: '--resync-period <duration>', name: 'resyncPeriod', description: 'full reconcile at least this often', default: '5m' },
];

/** "90d", "12h", "30m", "45s", "500ms" → milliseconds. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(text);
  if (!m) throw new Error(`not a duration: "${text}" (use e.g. 90d, 12h, 30m, 45s, 500ms)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: DAY_MS }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Math.round(Number(m[1]) * unit);
}

/** Operator options from the values commander parsed for operatorCliOptions. */
export function operatorOptionsFromCli(values: Record<string, unknown>, extra: Pick<OperatorOptions, 'logger' | 'registry' | 'cache'> = {}): OperatorOptions {
  const str = (k: string): string | undefined => (typeof values[k] === 'string' && values[k] !== '' ? (values[k] as string) : undefined);
  return {
    kubeconfig: str('kubeconfig'),
    namespace: str('namespace'),
    leaderElect: values.leaderElect !== false,
    leaseName: str('leaderElectionId'),
    webhookConfigName: str('webhookConfigName'),
    webhookServiceName: str('webhookServiceName'),
    webhookUrl: str('webhookUrl'),
    certDir: str('certDir'),
    certSecretName: str('certSecretName'),
    manageCertificates: values.manageCertificates !== false,
    certLifetimeMs: str('certLifetime') ? parseDuration(str('certLifetime')!) : undefined,
    caLifetimeMs: str('caLifetime') ? parseDuration(str('caLifetime')!) : undefined,
    collectorImage: str('collectorImage'),
    automaticRollout: values.disableRolloutDefault !== true,
    excludedNamespaces: str('excludeNamespaces')?.split(',').map((s) => s.trim()).filter(Boolean),
    resyncMs: str('resyncPeriod') ? parseDuration(str('resyncPeriod')!) : undefined,
    ...extra,
  };
}

export function loadKubeConfig(options: Pick<OperatorOptions, 'kubeConfig' | 'kubeconfig'>): KubeConfig {
  if (options.kubeConfig) return options.kubeConfig;
  const kc = new KubeConfig();
  if (options.kubeconfig) kc.loadFromFile(options.kubeconfig);
  else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster();
  else kc.loadFromDefault();
  return kc;
}

export function controllerNamespace(explicit?: string): string {
  if (explicit) return explicit;
  if (process.env.POD_NAMESPACE) return process.env.POD_NAMESPACE;
  try {
    return readFileSync(SERVICE_ACCOUNT_NAMESPACE_FILE, 'utf8').trim();
  } catch {
    return 'rbinder-system';
  }
}

function defaultIdentity(): string {
  return process.env.POD_NAME || `${hostname()}_${randomUUID().slice(0, 8)}`;
}

/** The names the API server may call the webhook by. */
export function certificateNames(options: Pick<OperatorOptions, 'webhookServiceName' | 'webhookUrl'>, namespace: string, inCluster: boolean): { dnsNames: string[]; ipAddresses: string[] } {
  const dnsNames = serviceDnsNames(options.webhookServiceName ?? 'rbinder-webhook', namespace);
  const ipAddresses: string[] = [];
  if (!inCluster || options.webhookUrl) {
    dnsNames.push('localhost');
    ipAddresses.push('127.0.0.1');
  }
  if (options.webhookUrl) {
    const host = new URL(options.webhookUrl).hostname.replace(/^\[|\]$/g, '');
    if (/^[\d.]+$/.test(host) || host.includes(':')) {
      if (!ipAddresses.includes(host)) ipAddresses.push(host);
    } else if (!dnsNames.includes(host)) dnsNames.push(host);
  }
  return { dnsNames, ipAddresses };
}

/** The webhook's TracedWorkload cache alone (for --webhook-only); started, not yet necessarily synced. */
export async function createTracedWorkloadCache(options: Pick<OperatorOptions, 'kubeConfig' | 'kubeconfig' | 'namespace' | 'logger'>): Promise<TracedWorkloadCache> {
  const logger = options.logger ?? pino({ name: 'rbinder-operator' });
  const kube = new Kube(loadKubeConfig(options), { namespace: controllerNamespace(options.namespace), identity: defaultIdentity() });
  const cache = new TracedWorkloadCache(kube, logger.child({ component: 'tracedworkload-cache' }));
  await cache.start();
  return cache;
}

export async function runOperator(options: OperatorOptions): Promise<OperatorHandle> {
  const logger = (options.logger ?? pino({ name: 'rbinder-operator' })).child({ component: 'operator' });
  const kubeConfig = loadKubeConfig(options);
  const namespace = controllerNamespace(options.namespace);
  const identity = options.identity ?? defaultIdentity();
  const kube = new Kube(kubeConfig, { namespace, identity, registry: options.registry });
  const inCluster = !options.kubeConfig && !options.kubeconfig && Boolean(process.env.KUBERNETES_SERVICE_HOST);

  const ownCache = !options.cache;
  const cache = options.cache ?? new TracedWorkloadCache(kube, logger.child({ component: 'tracedworkload-cache' }));
  if (ownCache) await cache.start();

  // Every replica copies the serving certificate into --cert-dir for its webhook server.
  const manageCertificates = options.manageCertificates !== false;
  const secretName = options.certSecretName ?? DEFAULT_NAMES.certSecret;
  let certManager: CertificateManager | undefined;
  const files = manageCertificates ? new CertificateFiles(kube, secretName, options.certDir, logger.child({ component: 'certificate-files' }), () => certManager?.trigger()) : undefined;
  await files?.start();

  const names = certificateNames(options, namespace, inCluster);
  const policy: CertificatePolicy = {
    ...defaultPolicy(names.dnsNames, names.ipAddresses),
    ...(options.caLifetimeMs ? { caLifetimeMs: options.caLifetimeMs } : {}),
    ...(options.certLifetimeMs ? { servingLifetimeMs: options.certLifetimeMs } : {}),
    ...(options.certRenewAt ? { renewAt: options.certRenewAt } : {}),
  };
  const excluded = new Set([...ALWAYS_EXCLUDED_NAMESPACES, namespace, ...(options.excludedNamespaces ?? [])]);

  let controller: Controller | undefined;
  const startLeading = async (): Promise<void> => {
    logger.info({ identity }, 'leading: starting the operator');
    if (files) {
      certManager = new CertificateManager(
        kube,
        files,
        { secretName, webhookConfigName: options.webhookConfigName ?? DEFAULT_NAMES.webhookConfig, policy, trustGraceMs: options.caTrustGraceMs },
        logger.child({ component: 'certificates' }),
      );
      await certManager.start();
    }
    controller = new Controller(
      kube,
      cache,
      {
        excludedNamespaces: excluded,
        automaticRolloutByDefault: options.automaticRollout !== false,
        collectorImage: options.collectorImage ?? DEFAULT_COLLECTOR_IMAGE,
        resyncMs: options.resyncMs ?? 5 * 60_000,
        debounceMs: options.debounceMs ?? 200,
        retryBackoff: DEFAULT_BACKOFF,
        registry: options.registry,
      },
      logger.child({ component: 'controller' }),
    );
    await controller.start();
  };
  const stopLeading = async (): Promise<void> => {
    logger.info('no longer leading: stopping the operator');
    const c = controller;
    const m = certManager;
    controller = undefined;
    certManager = undefined;
    await Promise.all([c?.stop(), m?.stop()]);
  };

  let elector: LeaderElector | undefined;
  let leading = false;
  if (options.leaderElect !== false) {
    elector = new LeaderElector(
      kube,
      options.leaseName ?? DEFAULT_NAMES.lease,
      identity,
      {
        onStartedLeading: async () => {
          leading = true;
          await startLeading();
        },
        onStoppedLeading: async () => {
          leading = false;
          await stopLeading();
        },
      },
      logger.child({ component: 'leader-election' }),
      { ...DEFAULT_TIMING, ...options.leaderElection },
    );
    elector.start();
  } else {
    leading = true;
    await startLeading();
  }

  let stopped = false;
  return {
    cache,
    isLeader: () => leading,
    ready: () => cache.informer.hasSynced,
    healthy: () => {
      if (!controller?.lastPass) return true;
      // A leader passes at least every resync period; three missed mean it is stuck.
      return Date.now() - controller.lastPass.at.getTime() < 3 * (options.resyncMs ?? 5 * 60_000) + 60_000;
    },
    controller: () => controller,
    certificates: () => certManager,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      if (elector) await elector.stop(); // stops leading first, then releases the lease
      else await stopLeading();
      await files?.stop();
      if (ownCache) await cache.stop();
      logger.info('operator stopped');
    },
  };
}
