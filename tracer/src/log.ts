// rbinder's own log. The traced program shares stderr with us, so we stay quiet by default
// (level "warn") and every line is a JSON object named "rbinder" that is easy to tell apart.

import type { DestinationStream, Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const DEFAULT_LOG_LEVEL: LogLevel = 'warn';

export type { Logger };

export function isLogLevel(value: string): value is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

/** RBINDER_LOG_LEVEL when it names a level, else the default (config.ts reports a bad value). */
export function logLevelFromEnv(env: NodeJS.ProcessEnv): LogLevel {
  const raw = env.RBINDER_LOG_LEVEL?.trim().toLowerCase();
  return raw !== undefined && isLogLevel(raw) ? raw : DEFAULT_LOG_LEVEL;
}

export interface LoggerOptions {
  level?: LogLevel;
  /** Where lines go; defaults to fd 2 written synchronously, so nothing is lost at exit. */
  destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const pino = require('pino') as typeof import('pino');
  return pino(
    {
      name: 'rbinder',
      level: options.level ?? DEFAULT_LOG_LEVEL,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      // "level":"warn" reads better than "level":40 when mixed into an app's stderr.
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination ?? pino.destination({ dest: 2, sync: true }),
  );
}

let level: LogLevel = logLevelFromEnv(process.env);
let logger: Logger | undefined;

/**
 * The process-wide logger, created at its first use: loading pino takes ~15 ms, and the traced
 * program starts only after what comes before it in main.ts has run. Its level can be changed by
 * --log-level (see setLogLevel).
 */
export const log: Logger = new Proxy({} as Logger, {
  get(_, key) {
    logger ??= createLogger({ level });
    const value = Reflect.get(logger, key, logger) as unknown;
    return typeof value === 'function' ? value.bind(logger) : value;
  },
  set(_, key, value) {
    logger ??= createLogger({ level });
    return Reflect.set(logger, key, value, logger);
  },
});

export function setLogLevel(next: LogLevel): void {
  level = next;
  if (logger) logger.level = next;
}
