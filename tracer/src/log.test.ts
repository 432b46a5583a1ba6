import { describe, expect, it } from 'vitest';
import { createLogger, logLevelFromEnv } from './log';

describe('log', () => {
  it('writes one JSON line per message, named rbinder, with a readable level', () => {
    const lines: string[] = [];
    const logger = createLogger({ level: 'info', destination: { write: (line: string) => lines.push(line) } });
    logger.info({ endpoint: 'http://c' }, 'hello');
    logger.debug('hidden');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0])).toMatchObject({ name: 'rbinder', level: 'info', msg: 'hello', endpoint: 'http://c', pid: process.pid });
  });

  it('is quiet by default', () => {
    const lines: string[] = [];
    const logger = createLogger({ destination: { write: (line: string) => lines.push(line) } });
    logger.info('not shown');
    logger.warn('shown');
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['shown']);
  });

  it.each<[NodeJS.ProcessEnv, string]>([
    [{}, 'warn'],
    [{ RBINDER_LOG_LEVEL: 'debug' }, 'debug'],
    [{ RBINDER_LOG_LEVEL: ' Info ' }, 'info'],
    [{ RBINDER_LOG_LEVEL: 'loud' }, 'warn'],
  ])('level from %j', (env, level) => {
    expect(logLevelFromEnv(env)).toBe(level);
  });
});
