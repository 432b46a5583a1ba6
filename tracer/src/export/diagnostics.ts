// Routes the OpenTelemetry SDK's own diagnostics into rbinder's log.

import { DiagLogLevel, diag, type DiagLogger } from '@opentelemetry/api';
import { setGlobalErrorHandler } from '@opentelemetry/core';
import type { Logger } from '../log';
import { describeError } from './failure-logging';

const DIAG_LEVELS: Record<string, DiagLogLevel> = {
  fatal: DiagLogLevel.ERROR,
  error: DiagLogLevel.ERROR,
  warn: DiagLogLevel.WARN,
  info: DiagLogLevel.INFO,
  // The SDK's own debug level dumps every exported batch; keep that for --log-level trace.
  debug: DiagLogLevel.INFO,
  trace: DiagLogLevel.ALL,
  silent: DiagLogLevel.NONE,
};

export function routeOpenTelemetryDiagnostics(logger: Logger): void {
  const sdkLogger = logger.child({ component: 'opentelemetry' });
  const write =
    (level: 'error' | 'warn' | 'info' | 'debug' | 'trace') =>
    (message: string, ...args: unknown[]): void => {
      if (args.length === 0) sdkLogger[level](message);
      else sdkLogger[level]({ details: args.map((a) => (a instanceof Error ? describeError(a) : a)) }, message);
    };
  const adapter: DiagLogger = {
    error: write('error'),
    warn: write('warn'),
    info: write('info'),
    debug: write('debug'),
    verbose: write('trace'),
  };
  diag.setLogger(adapter, { logLevel: DIAG_LEVELS[logger.level] ?? DiagLogLevel.WARN, suppressOverrideMessage: true });
  // The SDK sends every failed batch here; FailureLogging*Exporter already reported it once per
  // streak, so at warn this would only repeat it for each batch.
  setGlobalErrorHandler((error) => sdkLogger.debug({ error: describeError(error) }, 'OpenTelemetry SDK error'));
}
