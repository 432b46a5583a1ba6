// bin/rbinder-controller: the operator and the webhook in one process, or the webhook alone with
// --webhook-only.
//
// The operator lives in operator/src/run (compiled: dist/operator/src/run.js) and is loaded when it
// is there: its command-line options join ours (those it marks shared, such as --namespace, are
// registered once and mean the same to both), runOperator() starts it, and its TracedWorkload
// cache answers the webhook's lookups. Without --webhook-only and without the operator, the process
// exits 2.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { V1ResourceRequirements } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import { createLogger, LOG_LEVELS, type Logger, type LogLevel } from '../../tracer/src/log';
import type { ClusterLookups } from './admission';
import { NO_CLUSTER, coreApiFor, kubernetesLookups, loadKubeConfig } from './cluster';
import {
  DEFAULT_CONTROLLER_NAMESPACE,
  DEFAULT_INSTALL_RESOURCES,
  DEFAULT_INSTALL_USER,
  FAILURE_POLICIES,
  PULL_POLICIES,
  defaultInjectionConfig,
  type FailurePolicy,
  type InjectionConfig,
  type PullPolicy,
  type TracedWorkloadLookup,
  type WorkloadSelection,
} from './config';
import { WebhookMetrics } from './metrics';
import { RegistryClient } from './registry/client';
import { DockerKeyring } from './registry/credentials';
import { startWebhookServer, type WebhookServer } from './server';

export interface RegistrySettings {
  /** PEM bundle of extra CAs for registries with a private CA. */
  caFile?: string;
  /** Registries reached over plain HTTP ("host:port", or "host" for any port). */
  insecure: string[];
  /** A docker config.json with the webhook's own registry credentials, tried after the pod's. */
  credentialsFile?: string;
  requestTimeoutMs: number;
  /** Most time one admission request spends on lookups (keep under the webhook's timeoutSeconds). */
  lookupBudgetMs: number;
}

export interface ControllerOptions {
  webhookOnly: boolean;
  port: number;
  bindAddress?: string;
  tlsCertFile: string;
  tlsKeyFile: string;
  certCheckIntervalMs: number;
  kubeconfig?: string;
  injection: InjectionConfig;
  registry: RegistrySettings;
  logLevel: LogLevel;
}

/** Bad command line: print `message` to stderr and exit 2. */
export class UsageError extends Error {
  readonly exitCode = 2;
}

// ---------------------------------------------------------------------------------------------
// What the webhook needs from operator/src/run (its published contract), typed here so that the
// webhook builds whether or not the operator is there.

export interface OperatorCliOption {
  flags: string;
  /** The key commander gives the value (camelCase of the long flag). */
  name: string;
  description: string;
  default?: string | boolean;
  /** Also meaningful to the webhook: registered once. */
  shared?: boolean;
}

/** The operator's TracedWorkload cache as the webhook uses it. */
export interface TracedWorkloadCacheLike {
  /** The webhook's TracedWorkloadLookup (pods stamped `rbinder.io/traced-workload`). */
  lookup: TracedWorkloadLookup;
  /** The TracedWorkload selecting a workload, for unstamped pods; absent in older operators. */
  forWorkload?: WorkloadSelection;
}

export interface OperatorHandle {
  /** The TracedWorkload cache. */
  cache: TracedWorkloadCacheLike;
  healthy(): boolean;
  ready(): boolean;
  stop(): Promise<void>;
}

export interface OperatorModule {
  operatorCliOptions: readonly OperatorCliOption[];
  operatorOptionsFromCli(values: Record<string, unknown>, extra: { logger?: Logger; registry?: Registry }): unknown;
  runOperator(options: unknown): Promise<OperatorHandle>;
  /** The TracedWorkload cache alone, for --webhook-only. */
  createTracedWorkloadCache?(options: { kubeconfig?: string; namespace?: string; logger?: Logger }): Promise<TracedWorkloadCacheLike>;
}

const OPERATOR_MODULE = '../../operator/src/run';

/** The operator module, or undefined when this build has none. A broken operator is an error. */
export function loadOperator(): OperatorModule | undefined {
  try {
    return require(OPERATOR_MODULE) as OperatorModule;
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e.code === 'MODULE_NOT_FOUND' && e.message?.includes(OPERATOR_MODULE)) return undefined;
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------

function whole(what: string, min = 0): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected ${what}.`);
    return n;
  };
}

function list(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function jsonOf<T>(what: string, check: (v: unknown) => v is T): (value: string) => T {
  return (value: string) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      throw new InvalidArgumentError(`expected ${what} as JSON.`);
    }
    if (!check(parsed)) throw new InvalidArgumentError(`expected ${what} as JSON.`);
    return parsed;
  };
}

const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.length > 0 && v.every((s) => typeof s === 'string' && s !== '');
const isResources = (v: unknown): v is V1ResourceRequirements => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The controller's namespace: $POD_NAMESPACE (downward API), the service account's, or the default. */
function defaultNamespace(env: NodeJS.ProcessEnv): string {
  if (env.POD_NAMESPACE) return env.POD_NAMESPACE;
  try {
    return readFileSync('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8').trim() || DEFAULT_CONTROLLER_NAMESPACE;
  } catch {
    return DEFAULT_CONTROLLER_NAMESPACE;
  }
}

function longFlag(flags: string): string | undefined {
  return /--[a-z0-9-]+/i.exec(flags)?.[0]?.replace(/^--no-/, '--');
}

function buildProgram(write: (text: string) => void, operator: OperatorModule | undefined): Command {
  const program = new Command('rbinder-controller')
    .description('The rbinder operator and its pod-mutating admission webhook (docs/webhook.md).')
    .option('--webhook-only', 'run only the admission webhook, not the operator')
    .option('--port <port>', 'HTTPS port of the webhook', whole('a port number', 0), 9443)
    .option('--bind-address <address>', 'address to listen on (default: all)')
    .option('--tls-cert-file <path>', 'serving certificate (PEM); reloaded when the file changes (default: <cert-dir>/tls.crt)')
    .option('--tls-key-file <path>', 'serving key (PEM); reloaded when the file changes (default: <cert-dir>/tls.key)')
    .option('--cert-dir <dir>', 'directory holding tls.crt and tls.key (the operator writes them there)')
    .option('--cert-check-interval <ms>', 'how often the certificate files are checked for changes', whole('milliseconds', 10), 10_000)
    .option('--kubeconfig <path>', 'kubeconfig file (default: KUBECONFIG, ~/.kube/config, else in-cluster)')
    .option('--namespace <namespace>', "the controller's namespace, never injected (default: $POD_NAMESPACE, else the service account's, else rbinder-system)")
    .option('--exclude-namespaces <list>', 'more namespaces never injected (kube-system always is)', list)
    .requiredOption('--tracer-image <image>', 'the tracer bundle image (holds the installer and the bundle)')
    .addOption(new Option('--tracer-image-pull-policy <policy>', 'imagePullPolicy of the install container').choices(PULL_POLICIES).default('IfNotPresent'))
    .option('--tracer-install-command <json>', 'the installer in the bundle image; the target directory is appended', jsonOf('a non-empty array of strings', isStringArray), ['/rbinder/install'])
    .option('--tracer-mount-path <path>', 'where traced containers see the bundle', '/rbinder')
    .option('--install-resources <json>', 'resources of the install container', jsonOf('resource requirements', isResources), DEFAULT_INSTALL_RESOURCES)
    .option('--install-user <uid>', 'non-root uid of the install container', whole('a non-zero uid', 1), DEFAULT_INSTALL_USER)
    .option('--collector-endpoint <url>', 'OTEL_EXPORTER_OTLP_ENDPOINT for traced containers')
    .option('--otlp-protocol <protocol>', 'OTEL_EXPORTER_OTLP_PROTOCOL for traced containers')
    .option('--propagators <list>', 'OTEL_PROPAGATORS for traced containers', list)
    .option('--sampler <type>', 'OTEL_TRACES_SAMPLER for traced containers')
    .option('--sampler-arg <value>', 'OTEL_TRACES_SAMPLER_ARG for traced containers')
    .option('--inject-to <list>', 'RBINDER_INJECT_TO for traced containers: destinations that may receive trace context', list)
    .option('--tracer-env <NAME=VALUE>', 'another variable for traced containers (repeatable), e.g. RBINDER_MODE=fast', (value: string, previous: Record<string, string> | undefined) => {
      const eq = value.indexOf('=');
      if (eq <= 0) throw new InvalidArgumentError('expected NAME=VALUE.');
      return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
    })
    .addOption(new Option('--failure-policy <policy>', 'when the webhook fails: Ignore admits the pod untraced, Fail rejects it').choices(FAILURE_POLICIES).default('Ignore'))
    .option('--registry-ca-file <path>', 'PEM CA bundle trusted for registries, besides the system roots')
    .option('--insecure-registries <list>', 'registries reached over plain HTTP (host:port, or host for any port)', list)
    .option('--registry-credentials-file <path>', "a docker config.json with the webhook's own registry credentials")
    .option('--registry-timeout <ms>', 'most time for one registry request', whole('milliseconds', 1), 2000)
    .option('--lookup-budget <ms>', 'most time one admission request spends on lookups (keep under timeoutSeconds)', whole('milliseconds', 1), 3000)
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'));

  // The operator's own options; a shared one we already have is the same flag, registered once.
  const known = new Set(program.options.map((o) => o.long));
  for (const o of operator?.operatorCliOptions ?? []) {
    if (known.has(longFlag(o.flags))) continue;
    const option = new Option(o.flags, `${o.description} [operator]`);
    if (o.default !== undefined) option.default(o.default);
    program.addOption(option);
  }
  return program
    .helpOption('-h, --help', 'print this help')
    .exitOverride()
    .configureOutput({ writeOut: write, writeErr: () => {}, outputError: () => {} });
}

interface Flags {
  webhookOnly?: boolean;
  port: number;
  bindAddress?: string;
  tlsCertFile?: string;
  tlsKeyFile?: string;
  certDir?: string;
  certCheckInterval: number;
  kubeconfig?: string;
  namespace?: string;
  excludeNamespaces?: string[];
  tracerImage: string;
  tracerImagePullPolicy: PullPolicy;
  tracerInstallCommand: string[];
  tracerMountPath: string;
  installResources: V1ResourceRequirements;
  installUser: number;
  collectorEndpoint?: string;
  otlpProtocol?: string;
  propagators?: string[];
  sampler?: string;
  samplerArg?: string;
  injectTo?: string[];
  tracerEnv?: Record<string, string>;
  failurePolicy: FailurePolicy;
  registryCaFile?: string;
  insecureRegistries?: string[];
  registryCredentialsFile?: string;
  registryTimeout: number;
  lookupBudget: number;
  logLevel: LogLevel;
}

export interface ParsedCommandLine {
  options: ControllerOptions;
  /** Every value commander parsed, by key (the operator reads its own from here). */
  values: Record<string, unknown>;
}

/** Parses the controller's arguments (without "node" and the script). Throws UsageError. */
export function parseControllerArgs(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  operator: OperatorModule | undefined = undefined,
): ParsedCommandLine | { help: string } {
  let output = '';
  const program = buildProgram((text) => (output += text), operator);
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help') return { help: output };
    throw new UsageError(`rbinder-controller: ${err.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ')}`);
  }
  const f = program.opts<Flags>();
  const tlsCertFile = f.tlsCertFile ?? (f.certDir ? join(f.certDir, 'tls.crt') : undefined);
  const tlsKeyFile = f.tlsKeyFile ?? (f.certDir ? join(f.certDir, 'tls.key') : undefined);
  if (!tlsCertFile || !tlsKeyFile) throw new UsageError('rbinder-controller: the webhook needs --tls-cert-file and --tls-key-file, or --cert-dir');
  if (f.samplerArg !== undefined && f.sampler === undefined) throw new UsageError('rbinder-controller: --sampler-arg needs --sampler');
  const controllerNamespace = f.namespace ?? defaultNamespace(env);
  const excludedNamespaces = f.excludeNamespaces ?? [];
  const injection = defaultInjectionConfig(f.tracerImage, {
    tracerImagePullPolicy: f.tracerImagePullPolicy,
    installCommand: f.tracerInstallCommand,
    mountPath: f.tracerMountPath,
    installResources: f.installResources,
    installUser: f.installUser,
    collectorEndpoint: f.collectorEndpoint,
    otlpProtocol: f.otlpProtocol,
    propagators: f.propagators,
    sampler: f.sampler ? { type: f.sampler, argument: f.samplerArg } : undefined,
    injectTo: f.injectTo,
    extraEnv: f.tracerEnv ?? {},
    controllerNamespace,
    excludedNamespaces,
    failurePolicy: f.failurePolicy,
  });
  const options: ControllerOptions = {
    webhookOnly: f.webhookOnly === true,
    port: f.port,
    bindAddress: f.bindAddress,
    tlsCertFile,
    tlsKeyFile,
    certCheckIntervalMs: f.certCheckInterval,
    kubeconfig: f.kubeconfig,
    injection,
    registry: {
      caFile: f.registryCaFile,
      insecure: f.insecureRegistries ?? [],
      credentialsFile: f.registryCredentialsFile,
      requestTimeoutMs: f.registryTimeout,
      lookupBudgetMs: f.lookupBudget,
    },
    logLevel: f.logLevel,
  };
  // The shared values as the operator expects them (strings, as it parses its own).
  const values = { ...program.opts(), namespace: controllerNamespace, excludeNamespaces: excludedNamespaces.join(',') || undefined };
  return { options, values };
}

/** The cluster through the API server, or none (with a warning) when no kubeconfig is to be found. */
async function clusterLookups(log: Logger, kubeconfig: string | undefined): Promise<ClusterLookups> {
  try {
    const kc = await loadKubeConfig(kubeconfig);
    log.info({ server: kc.getCurrentCluster()?.server }, 'reading namespaces and pull secrets from the API server');
    return kubernetesLookups(await coreApiFor(kc));
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'no Kubernetes API: namespace labels and imagePullSecrets are not available');
    return NO_CLUSTER;
  }
}

export interface RunningWebhook {
  server: WebhookServer;
  /** Finishes in-flight requests and releases everything. */
  close(): Promise<void>;
}

export interface WebhookExtras {
  /** Instead of the API server (tests). */
  cluster?: ClusterLookups;
  tracedWorkload?: TracedWorkloadLookup;
  workloadSelection?: WorkloadSelection;
  healthy?: () => boolean;
  ready?: () => boolean;
}

/** Starts the webhook server with everything it needs. */
export async function startWebhook(options: ControllerOptions, log: Logger, metrics: WebhookMetrics, extras: WebhookExtras = {}): Promise<RunningWebhook> {
  const { registry: settings } = options;
  const ownCredentials = new DockerKeyring();
  if (settings.credentialsFile) {
    for (const problem of ownCredentials.addDockerConfig(readFileSync(settings.credentialsFile, 'utf8'), `file ${settings.credentialsFile}`)) log.warn(problem);
  }
  const registry = new RegistryClient({
    extraCa: settings.caFile ? readFileSync(settings.caFile, 'utf8') : undefined,
    insecureRegistries: settings.insecure,
    requestTimeoutMs: settings.requestTimeoutMs,
    onLookup: metrics.onLookup,
    onError: metrics.onRegistryError,
  });
  try {
    const base = extras.cluster ?? (await clusterLookups(log, options.kubeconfig));
    const cluster: ClusterLookups = { ...base };
    if (extras.tracedWorkload) cluster.tracedWorkload = extras.tracedWorkload;
    if (extras.workloadSelection) cluster.workloadSelection = extras.workloadSelection;
    const server = await startWebhookServer({
      port: options.port,
      host: options.bindAddress,
      certFile: options.tlsCertFile,
      keyFile: options.tlsKeyFile,
      certCheckIntervalMs: options.certCheckIntervalMs,
      config: options.injection,
      cluster,
      registry,
      ownCredentials: ownCredentials.size > 0 ? ownCredentials : undefined,
      lookupBudgetMs: settings.lookupBudgetMs,
      log,
      metrics,
      healthy: extras.healthy,
      ready: extras.ready,
    });
    return {
      server,
      close: async () => {
        await server.close();
        registry.close();
      },
    };
  } catch (err) {
    registry.close();
    throw err;
  }
}

export interface RunningController {
  webhook: RunningWebhook;
  operator?: OperatorHandle;
  /** Stops the webhook (finishing in-flight requests), then the operator. */
  close(): Promise<void>;
}

/** Waits for files the operator writes (the serving certificate on first start). */
async function waitForFiles(files: string[], log: Logger, signal: AbortSignal): Promise<void> {
  let said = false;
  while (!files.every((f) => existsSync(f))) {
    if (signal.aborted) throw new Error('stopped while waiting for the serving certificate');
    if (!said) log.info({ files }, 'waiting for the operator to write the serving certificate');
    said = true;
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * Starts the operator (unless webhookOnly) and the webhook, wired together: one metrics registry,
 * the operator's TracedWorkload cache as the webhook's lookup, its health in /healthz and /readyz.
 */
export async function startController(
  parsed: ParsedCommandLine,
  log: Logger,
  operator: OperatorModule | undefined,
  signal: AbortSignal = new AbortController().signal,
  extras: Pick<WebhookExtras, 'cluster'> = {},
): Promise<RunningController> {
  const { options, values } = parsed;
  const metrics = new WebhookMetrics({ processMetrics: true });
  if (options.webhookOnly) {
    let tracedWorkload: TracedWorkloadLookup | undefined;
    let workloadSelection: WorkloadSelection | undefined;
    if (operator?.createTracedWorkloadCache) {
      try {
        const cache = await operator.createTracedWorkloadCache({ kubeconfig: options.kubeconfig, namespace: options.injection.controllerNamespace, logger: log });
        tracedWorkload = cache.lookup;
        workloadSelection = cache.forWorkload;
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'no TracedWorkload cache: pods stamped by the operator get the cluster defaults');
      }
    }
    const webhook = await startWebhook(options, log, metrics, { ...extras, tracedWorkload, workloadSelection });
    return { webhook, close: () => webhook.close() };
  }

  if (!operator) throw new UsageError('rbinder-controller: the operator is not available yet; run with --webhook-only');
  const handle = await operator.runOperator(operator.operatorOptionsFromCli(values, { logger: log, registry: metrics.registry }));
  try {
    await waitForFiles([options.tlsCertFile, options.tlsKeyFile], log, signal);
    const webhook = await startWebhook(options, log, metrics, {
      ...extras,
      tracedWorkload: handle.cache.lookup,
      workloadSelection: handle.cache.forWorkload,
      healthy: () => handle.healthy(),
      ready: () => handle.ready(),
    });
    return {
      webhook,
      operator: handle,
      close: async () => {
        await webhook.close();
        await handle.stop();
      },
    };
  } catch (err) {
    await handle.stop();
    throw err;
  }
}

/** Runs the controller until SIGTERM/SIGINT; resolves with the exit status. */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env, operator: OperatorModule | undefined = loadOperator()): Promise<number> {
  let parsed: ReturnType<typeof parseControllerArgs>;
  try {
    parsed = parseControllerArgs(argv, env, operator);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message}\n(see 'rbinder-controller --help')\n`);
    return err.exitCode;
  }
  if ('help' in parsed) {
    process.stdout.write(parsed.help);
    return 0;
  }
  if (!parsed.options.webhookOnly && !operator) {
    process.stderr.write('rbinder-controller: the operator is not available yet; run with --webhook-only\n');
    return 2;
  }
  const log = createLogger({ level: parsed.options.logLevel }).child({ component: 'controller' });
  process.on('unhandledRejection', (reason) => log.error({ err: reason }, 'unhandled promise rejection'));

  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    log.info({ signal }, 'stopping');
    stop.abort();
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const stopped = new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve(), { once: true }));

  let controller: RunningController;
  try {
    controller = await startController(parsed, log, operator, stop.signal);
  } catch (err) {
    log.fatal({ err }, 'cannot start the controller');
    return 1;
  }
  await stopped;
  await controller.close();
  return 0;
}

/** The entry of bin/rbinder-controller. */
export function cli(argv: string[]): void {
  main(argv).then(
    (status) => process.exit(status),
    (err: unknown) => {
      process.stderr.write(`rbinder-controller: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(70);
    },
  );
}

if (require.main === module) cli(process.argv.slice(2));
