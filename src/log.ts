import { pino, type Logger, type Level } from 'pino';

export type { Logger };

/** One JSON object per line on stdout (spec §1). */
export function createLogger(level: Level | 'silent' = 'info'): Logger {
  return pino({ level, base: { service: 'eventgate' }, timestamp: pino.stdTimeFunctions.isoTime, formatters: { level: (label) => ({ level: label }) } });
}
