import { describe, expect, it } from 'vitest';
import { UsageError, exportsOtlpProtobufSpans, parseCommandLine, rbinderVersion, type TracerConfig } from './config';

function parse(argv: string[], env: NodeJS.ProcessEnv = {}): TracerConfig {
  const result = parseCommandLine(argv, env);
  if (!('command' in result)) throw new Error(`expected a config, got ${JSON.stringify(result)}`);
  return result;
}

function usageError(argv: string[], env: NodeJS.ProcessEnv = {}): UsageError {
  try {
    parseCommandLine(argv, env);
  } catch (err) {
    if (err instanceof UsageError) return err;
    throw err;
  }
  throw new Error(`expected a usage error for ${JSON.stringify(argv)}`);
}

describe('parseCommandLine: command', () => {
  it.each<[string, string[], string[], Partial<TracerConfig>]>([
    ['options after COMMAND belong to it', ['python3', 'app.py', '-v'], ['python3', 'app.py', '-v'], {}],
    ['-- lets COMMAND start with -', ['--', '-weird'], ['-weird'], {}],
    ['options, then --', ['--service-name', 'x', '--', 'node', 's.js'], ['node', 's.js'], { serviceName: 'x' }],
    ['options without --', ['--mode', 'fast', 'node', 's.js'], ['node', 's.js'], { mode: 'fast' }],
    ['--opt=value form', ['--service-name=y', 'curl', 'http://x/'], ['curl', 'http://x/'], { serviceName: 'y' }],
    ['rbinder flags after COMMAND go to COMMAND', ['node', '--service-name', 'z'], ['node', '--service-name', 'z'], {}],
    ['a -- after COMMAND goes to COMMAND', ['node', '--', 'x'], ['node', '--', 'x'], {}],
    ['--help after COMMAND goes to COMMAND', ['python3', '--help'], ['python3', '--help'], {}],
  ])('%s', (_name, argv, command, expected) => {
    const config = parse(argv);
    expect(config.command).toEqual(command);
    expect(config).toMatchObject(expected);
  });

  it('passes the environment to the program unchanged (a copy)', () => {
    const env = { PATH: '/bin', OTEL_SERVICE_NAME: 's', RBINDER_MODE: 'fast' };
    const config = parse(['true'], env);
    expect(config.env).toEqual(env);
    expect(config.env).not.toBe(env);
  });

  it('answers --help and --version without a command', () => {
    const help = parseCommandLine(['--help'], {});
    expect(help).toHaveProperty('help');
    expect((help as { help: string }).help).toContain('Usage: rbinder [options] [--] COMMAND [ARGS...]');
    expect((help as { help: string }).help).toContain('OTEL_TRACES_SAMPLER');
    expect(parseCommandLine(['-h'], {})).toHaveProperty('help');
    expect(parseCommandLine(['--version'], {})).toEqual({ version: rbinderVersion() });
    expect(rbinderVersion()).toMatch(/^\d+\.\d+\.\d+/);
  });
});

describe('parseCommandLine: defaults', () => {
  it('uses the documented defaults', () => {
    const config = parse(['app']);
    expect(config).toMatchObject({
      serviceName: undefined,
      traces: { exporters: ['otlp'], protocol: 'http/protobuf' },
      metrics: { exporters: ['otlp'], protocol: 'http/protobuf', exportIntervalMillis: 60000, exportTimeoutMillis: 30000 },
      endpoint: undefined,
      batch: { scheduledDelayMillis: 5000, exportTimeoutMillis: 30000, maxQueueSize: 65536, maxExportBatchSize: 512 },
      propagators: ['tracecontext', 'baggage'],
      injectTo: [],
      mode: 'fast',
      exportPriority: 'idle',
      spanEncoding: 'engine',
      flushTimeoutMillis: 5000,
      logLevel: 'warn',
      sampler: { type: 'parentbased_always_on', ratio: 1 },
      warnings: [],
    });
  });
});

describe('exportsOtlpProtobufSpans', () => {
  it.each<[string[], NodeJS.ProcessEnv, boolean]>([
    [[], {}, true],
    [['--protocol', 'grpc'], {}, true],
    [['--protocol', 'http/json'], {}, false],
    [['--exporter', 'console'], {}, false],
    [['--exporter', 'console,otlp'], {}, true],
    [[], { RBINDER_SPAN_ENCODING: 'sdk' }, false],
  ])('%j %j: %s', (flags, env, expected) => {
    expect(exportsOtlpProtobufSpans(parse([...flags, 'app'], env))).toBe(expected);
  });
});

describe('parseCommandLine: flag vs environment', () => {
  it.each<[string, string[], NodeJS.ProcessEnv, Partial<TracerConfig>]>([
    ['service name from env', [], { OTEL_SERVICE_NAME: 'svc' }, { serviceName: 'svc' }],
    ['service name: flag wins', ['--service-name', 'flag'], { OTEL_SERVICE_NAME: 'svc' }, { serviceName: 'flag' }],
    ['exporters from env, per signal', [], { OTEL_TRACES_EXPORTER: 'console', OTEL_METRICS_EXPORTER: 'none' },
      { traces: expect.objectContaining({ exporters: ['console'] }), metrics: expect.objectContaining({ exporters: [] }) }],
    ['--exporter covers both signals', ['--exporter', 'none'], { OTEL_TRACES_EXPORTER: 'console', OTEL_METRICS_EXPORTER: 'otlp' },
      { traces: expect.objectContaining({ exporters: [] }), metrics: expect.objectContaining({ exporters: [] }) }],
    ['exporter lists', ['--exporter', 'otlp,console,otlp'], {},
      { traces: expect.objectContaining({ exporters: ['otlp', 'console'] }) }],
    ['protocol from env, per signal wins', [], { OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: 'http/json' },
      { traces: expect.objectContaining({ protocol: 'grpc' }), metrics: expect.objectContaining({ protocol: 'http/json' }) }],
    ['protocol: flag wins over per-signal env', ['--protocol', 'http/json'], { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'grpc' },
      { traces: expect.objectContaining({ protocol: 'http/json' }), metrics: expect.objectContaining({ protocol: 'http/json' }) }],
    ['endpoint from the flag only (exporters read env)', ['--endpoint', 'http://c:4318'], { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://e:4318' },
      { endpoint: 'http://c:4318' }],
    ['endpoint env is left to the exporters', [], { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://e:4318' }, { endpoint: undefined }],
    ['propagators from env', [], { OTEL_PROPAGATORS: 'b3multi, tracecontext' }, { propagators: ['b3multi', 'tracecontext'] }],
    ['propagators: flag wins', ['--propagators', 'none'], { OTEL_PROPAGATORS: 'b3' }, { propagators: [] }],
    ['inject-to from env, raw entries', [], { RBINDER_INJECT_TO: 'svc-a:8080, *.internal,,' }, { injectTo: ['svc-a:8080', '*.internal'] }],
    ['inject-to: flag wins', ['--inject-to', 'x'], { RBINDER_INJECT_TO: 'y' }, { injectTo: ['x'] }],
    ['mode from env', [], { RBINDER_MODE: 'fast' }, { mode: 'fast' }],
    ['mode: flag wins', ['--mode', 'ptrace'], { RBINDER_MODE: 'fast' }, { mode: 'ptrace' }],
    ['export priority from env', [], { RBINDER_EXPORT_PRIORITY: 'Normal' }, { exportPriority: 'normal' }],
    ['export priority: flag wins', ['--export-priority', 'idle'], { RBINDER_EXPORT_PRIORITY: 'normal' }, { exportPriority: 'idle' }],
    ['bad export priority in env: warning, default', [], { RBINDER_EXPORT_PRIORITY: 'low' },
      { exportPriority: 'idle', warnings: [expect.stringMatching(/RBINDER_EXPORT_PRIORITY="low"/)] }],
    ['span encoding from env', [], { RBINDER_SPAN_ENCODING: 'sdk' }, { spanEncoding: 'sdk' }],
    ['bad span encoding in env: warning, default', [], { RBINDER_SPAN_ENCODING: 'js' },
      { spanEncoding: 'engine', warnings: [expect.stringMatching(/RBINDER_SPAN_ENCODING="js"/)] }],
    ['flush timeout from env', [], { RBINDER_FLUSH_TIMEOUT: '250' }, { flushTimeoutMillis: 250 }],
    ['flush timeout: flag wins', ['--flush-timeout', '0'], { RBINDER_FLUSH_TIMEOUT: '250' }, { flushTimeoutMillis: 0 }],
    ['log level from env', [], { RBINDER_LOG_LEVEL: 'DEBUG' }, { logLevel: 'debug' }],
    ['log level: flag wins', ['--log-level', 'silent'], { RBINDER_LOG_LEVEL: 'debug' }, { logLevel: 'silent' }],
    ['empty env values count as unset', [], { OTEL_SERVICE_NAME: '', RBINDER_MODE: ' ' }, { serviceName: undefined, mode: 'fast', warnings: [] }],
    ['batch settings from OTEL_BSP_*', [],
      { OTEL_BSP_SCHEDULE_DELAY: '100', OTEL_BSP_EXPORT_TIMEOUT: '2000', OTEL_BSP_MAX_QUEUE_SIZE: '10', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '5' },
      { batch: { scheduledDelayMillis: 100, exportTimeoutMillis: 2000, maxQueueSize: 10, maxExportBatchSize: 5 } }],
    ['metric interval from env; timeout clamped to it', [], { OTEL_METRIC_EXPORT_INTERVAL: '1000' },
      { metrics: expect.objectContaining({ exportIntervalMillis: 1000, exportTimeoutMillis: 1000 }) }],
  ])('%s', (_name, flags, env, expected) => {
    expect(parse([...flags, 'app'], env)).toMatchObject(expected);
  });
});

describe('parseCommandLine: sampler', () => {
  it.each<[NodeJS.ProcessEnv, { type: string; ratio: number }, number]>([
    [{}, { type: 'parentbased_always_on', ratio: 1 }, 0],
    [{ OTEL_TRACES_SAMPLER: 'always_off' }, { type: 'always_off', ratio: 1 }, 0],
    [{ OTEL_TRACES_SAMPLER: 'TraceIdRatio', OTEL_TRACES_SAMPLER_ARG: '0.25' }, { type: 'traceidratio', ratio: 0.25 }, 0],
    [{ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio' }, { type: 'parentbased_traceidratio', ratio: 1 }, 0],
    [{ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '1.5' }, { type: 'parentbased_traceidratio', ratio: 1 }, 1],
    [{ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: 'half' }, { type: 'traceidratio', ratio: 1 }, 1],
    [{ OTEL_TRACES_SAMPLER: 'jaeger_remote' }, { type: 'parentbased_always_on', ratio: 1 }, 1],
    [{ OTEL_TRACES_SAMPLER: 'always_on', OTEL_TRACES_SAMPLER_ARG: '0.1' }, { type: 'always_on', ratio: 1 }, 0],
  ])('%j', (env, sampler, warnings) => {
    const config = parse(['app'], env);
    expect(config.sampler).toEqual(sampler);
    expect(config.warnings).toHaveLength(warnings);
  });
});

describe('parseCommandLine: bad input', () => {
  it.each<[string, string[], RegExp]>([
    ['unknown option', ['--bogus', 'app'], /unknown option '--bogus'/],
    ['unknown short option', ['-x', 'app'], /unknown option '-x'/],
    ['misspelt option, with a suggestion on the same line', ['--servce-name', 'x', 'app'], /unknown option '--servce-name' \(Did you mean --service-name\?\)/],
    ['no command', [], /missing COMMAND/],
    ['only --', ['--'], /missing COMMAND/],
    ['only options', ['--mode', 'fast'], /missing COMMAND/],
    ['option missing its value', ['--service-name'], /argument missing/],
    ['bad exporter', ['--exporter', 'zipkin', 'app'], /unknown exporter "zipkin"/],
    ['none mixed with others', ['--exporter', 'none,otlp', 'app'], /"none" cannot be combined/],
    ['bad protocol', ['--protocol', 'http', 'app'], /Allowed choices are grpc, http\/protobuf, http\/json/],
    ['bad propagator', ['--propagators', 'tracecontext,xray', 'app'], /unknown propagator "xray"/],
    ['bad mode', ['--mode', 'ebpf', 'app'], /Allowed choices are fast, ptrace/],
    ['bad export priority', ['--export-priority', 'high', 'app'], /Allowed choices are idle, normal/],
    ['bad flush timeout', ['--flush-timeout', '1.5s', 'app'], /whole number of milliseconds/],
    ['negative flush timeout', ['--flush-timeout', '-1', 'app'], /whole number of milliseconds/],
    ['bad log level', ['--log-level', 'loud', 'app'], /Allowed choices are fatal, error, warn/],
    ['endpoint without scheme', ['--endpoint', 'collector:4317', 'app'], /http:\/\/ or https:\/\/ URL/],
    ['endpoint not a URL', ['--endpoint', 'not a url', 'app'], /http:\/\/ or https:\/\/ URL/],
  ])('%s', (_name, argv, message) => {
    const err = usageError(argv);
    expect(err.exitCode).toBe(2);
    const [line, hint, ...rest] = err.message.split('\n');
    expect(line).toMatch(/^rbinder: /);
    expect(line).toMatch(message);
    expect(hint).toMatch(/^usage: rbinder \[options\] \[--\] COMMAND \[ARGS\.\.\.\] \(see 'rbinder --help'\)$/);
    expect(rest).toEqual([]);
  });

  it.each<[NodeJS.ProcessEnv, Partial<TracerConfig>, RegExp]>([
    [{ OTEL_TRACES_EXPORTER: 'zipkin' }, { traces: expect.objectContaining({ exporters: ['otlp'] }) }, /OTEL_TRACES_EXPORTER="zipkin": unknown exporter/],
    [{ OTEL_EXPORTER_OTLP_PROTOCOL: 'http' }, { traces: expect.objectContaining({ protocol: 'http/protobuf' }) }, /OTEL_EXPORTER_OTLP_PROTOCOL="http"/],
    [{ OTEL_PROPAGATORS: 'xray' }, { propagators: ['tracecontext', 'baggage'] }, /OTEL_PROPAGATORS="xray"/],
    [{ RBINDER_MODE: 'ebpf' }, { mode: 'fast' }, /RBINDER_MODE="ebpf"/],
    [{ RBINDER_FLUSH_TIMEOUT: 'soon' }, { flushTimeoutMillis: 5000 }, /RBINDER_FLUSH_TIMEOUT="soon"/],
    [{ RBINDER_LOG_LEVEL: 'loud' }, { logLevel: 'warn' }, /RBINDER_LOG_LEVEL="loud"/],
    [{ OTEL_BSP_MAX_QUEUE_SIZE: '0' }, { batch: expect.objectContaining({ maxQueueSize: 65536 }) }, /OTEL_BSP_MAX_QUEUE_SIZE="0"/],
  ])('bad environment value %j: warning and default', (env, expected, warning) => {
    const config = parse(['app'], env);
    expect(config).toMatchObject(expected);
    expect(config.warnings).toHaveLength(1);
    expect(config.warnings[0]).toMatch(warning);
  });
});
