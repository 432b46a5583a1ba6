// bin/rbinder-controller: the operator and the webhook in one process, or the webhook alone with
// --webhook-only. The operator (operator/src/run) starts the webhook through the context it is
// given, passing its informer-backed TracedWorkload lookup.

import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { V1ResourceRequirements } from '@kubernetes/client-node';
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
  tlsCertFile?: string;
  tlsKeyFile?: string;
  certCheckIntervalMs: number;
  injection: InjectionConfig;
  registry: RegistrySettings;
  logLevel: LogLevel;
}

/** Bad command line: print `message` to stderr and exit 2. */
export class UsageError extends Error {
  readonly exitCode = 2;
}

export interface RunningWebhook {
  server: WebhookServer;
  metrics: WebhookMetrics;
  /** Finishes in-flight requests and releases everything. */
  close(): Promise<void>;
}

/** What operator/src/run receives. */
export interface OperatorContext {
  options: ControllerOptions;
  log: Logger;
  /** Starts the webhook in this process, with the operator's lookups (its TracedWorkload cache). */
  startWebhook(lookups?: { tracedWorkload?: TracedWorkloadLookup }): Promise<RunningWebhook>;
  /** Aborted on SIGTERM or SIGINT: stop, then resolve run() with the exit status. */
  signal: AbortSignal;
}

export interface OperatorModule {
  run(context: OperatorContext): Promise<number>;
}

const OPERATOR_MODULE = '../../operator/src/run';

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

function buildProgram(write: (text: string) => void): Command {
  return new Command('rbinder-controller')
    .description('The rbinder operator and its pod-mutating admission webhook (docs/webhook.md).')
    .option('--webhook-only', 'run only the admission webhook, not the operator')
    .option('--port <port>', 'HTTPS port of the webhook', whole('a port number', 0), 9443)
    .option('--bind-address <address>', 'address to listen on (default: all)')
    .option('--tls-cert-file <path>', 'serving certificate (PEM); reloaded when the file changes')
    .option('--tls-key-file <path>', 'serving key (PEM); reloaded when the file changes')
    .option('--cert-check-interval <ms>', 'how often the certificate files are checked for changes', whole('milliseconds', 10), 10_000)
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
    .option('--controller-namespace <namespace>', "the controller's namespace, never injected (default: $POD_NAMESPACE, else the service account's, else rbinder-system)")
    .option('--excluded-namespaces <list>', 'more namespaces never injected (kube-system always is)', list)
    .addOption(new Option('--failure-policy <policy>', 'when the webhook fails: Ignore admits the pod untraced, Fail rejects it').choices(FAILURE_POLICIES).default('Ignore'))
    .option('--registry-ca-file <path>', 'PEM CA bundle trusted for registries, besides the system roots')
    .option('--insecure-registries <list>', 'registries reached over plain HTTP (host:port, or host for any port)', list)
    .option('--registry-credentials-file <path>', "a docker config.json with the webhook's own registry credentials")
    .option('--registry-timeout <ms>', 'most time for one registry request', whole('milliseconds', 1), 2000)
    .option('--lookup-budget <ms>', 'most time one admission request spends on lookups (keep under timeoutSeconds)', whole('milliseconds', 1), 3000)
    .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
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
  certCheckInterval: number;
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
  controllerNamespace?: string;
  excludedNamespaces?: string[];
  failurePolicy: FailurePolicy;
  registryCaFile?: string;
  insecureRegistries?: string[];
  registryCredentialsFile?: string;
  registryTimeout: number;
  lookupBudget: number;
  logLevel: LogLevel;
}

/** Parses the controller's arguments (without "node" and the script). Throws UsageError. */
export function parseControllerArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): ControllerOptions | { help: string } {
  let output = '';
  const program = buildProgram((text) => (output += text));
  try {
    program.parse(argv, { from: 'user' });
  } catch (err) {
    if (!(err instanceof CommanderError)) throw err;
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help') return { help: output };
    throw new UsageError(`rbinder-controller: ${err.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ')}`);
  }
  const f = program.opts<Flags>();
  if (f.webhookOnly && (!f.tlsCertFile || !f.tlsKeyFile)) {
    throw new UsageError('rbinder-controller: --webhook-only needs --tls-cert-file and --tls-key-file');
  }
  if (f.samplerArg !== undefined && f.sampler === undefined) throw new UsageError('rbinder-controller: --sampler-arg needs --sampler');
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
    controllerNamespace: f.controllerNamespace ?? defaultNamespace(env),
    excludedNamespaces: f.excludedNamespaces ?? [],
    failurePolicy: f.failurePolicy,
  });
  return {
    webhookOnly: f.webhookOnly === true,
    port: f.port,
    bindAddress: f.bindAddress,
    tlsCertFile: f.tlsCertFile,
    tlsKeyFile: f.tlsKeyFile,
    certCheckIntervalMs: f.certCheckInterval,
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
}

/** The cluster through the API server, or none (with a warning) when no kubeconfig is to be found. */
async function clusterLookups(log: Logger, tracedWorkload: TracedWorkloadLookup | undefined): Promise<ClusterLookups> {
  try {
    const kc = await loadKubeConfig();
    log.info({ server: kc.getCurrentCluster()?.server }, 'reading namespaces and pull secrets from the API server');
    return kubernetesLookups(await coreApiFor(kc), { tracedWorkload });
  } catch (err) {
    log.warn({ err: (err as Error).message }, 'no Kubernetes API: namespace labels and imagePullSecrets are not available');
    return { ...NO_CLUSTER, tracedWorkload };
  }
}

/** Starts the webhook server with everything it needs. */
export async function startWebhook(
  options: ControllerOptions,
  log: Logger,
  lookups: { cluster?: ClusterLookups; tracedWorkload?: TracedWorkloadLookup } = {},
): Promise<RunningWebhook> {
  if (!options.tlsCertFile || !options.tlsKeyFile) throw new UsageError('rbinder-controller: the webhook needs --tls-cert-file and --tls-key-file');
  const metrics = new WebhookMetrics({ processMetrics: true });
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
    const cluster = lookups.cluster ?? (await clusterLookups(log, lookups.tracedWorkload));
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
    });
    return {
      server,
      metrics,
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

function loadOperator(): OperatorModule | undefined {
  try {
    return require(OPERATOR_MODULE) as OperatorModule;
  } catch (err) {
    const e = err as { code?: string; message?: string };
    // Only the operator itself missing means "not available"; a broken operator is an error.
    if (e.code === 'MODULE_NOT_FOUND' && e.message?.includes(OPERATOR_MODULE)) return undefined;
    throw err;
  }
}

/** Runs the controller until SIGTERM/SIGINT; resolves with the exit status. */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let options: ReturnType<typeof parseControllerArgs>;
  try {
    options = parseControllerArgs(argv, env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message}\n(see 'rbinder-controller --help')\n`);
    return err.exitCode;
  }
  if ('help' in options) {
    process.stdout.write(options.help);
    return 0;
  }
  const log = createLogger({ level: options.logLevel }).child({ component: 'controller' });
  process.on('unhandledRejection', (reason) => log.error({ err: reason }, 'unhandled promise rejection'));

  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    log.info({ signal }, 'stopping');
    stop.abort();
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  const stopped = new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve(), { once: true }));

  if (!options.webhookOnly) {
    const operator = loadOperator();
    if (!operator) {
      process.stderr.write('rbinder-controller: the operator is not available yet; run with --webhook-only\n');
      return 2;
    }
    const opts = options;
    return operator.run({
      options: opts,
      log,
      startWebhook: (lookups = {}) => startWebhook(opts, log, lookups),
      signal: stop.signal,
    });
  }

  let webhook: RunningWebhook;
  try {
    webhook = await startWebhook(options, log);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${err.message}\n`);
      return err.exitCode;
    }
    log.fatal({ err }, 'cannot start the webhook');
    return 1;
  }
  await stopped;
  await webhook.close();
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
