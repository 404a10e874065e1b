import type * as Pino from 'pino';
import type { Logger, Level } from 'pino';
import { bundled } from './core/bundled.js';

// From its bundle, with V8's code cache (src/core/bundled.ts): ~7 ms of CPU where its 30 module files took ~21.
const { destination, pino } = bundled<typeof Pino>('pino');

export type { Logger };

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

/**
 * pino's `isoTime`, the same text, from the UTC getters: V8's Date#toISOString reads ICU's
 * time-zone data although its answer is UTC, which paged ~0.6 MB into every gateway's RSS with
 * its first log line (docs/performance.md). Years 0–9999.
 */
export function isoTime(now = Date.now()): string {
  const d = new Date(now);
  return `,"time":"${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${pad(d.getUTCMilliseconds(), 3)}Z"`;
}

/**
 * One JSON object per line on stdout (spec §1), each written as it is logged, as Node writes its
 * own stdout. pino's default writes in the background (libuv's thread pool) and, on exit, writes
 * what it still holds at once: the last lines (`signal received`, why a start failed) could land
 * before an earlier one still waiting for a thread, or never. The gateway logs little on its
 * message path (failures, and debug lines when asked for), so this costs next to nothing.
 */
export function createLogger(level: Level | 'silent' = 'info', instance?: string): Logger {
  // `instance` (the instance id) on every line: logs of several instances, gathered in one place, tell whose each line is.
  return pino(
    { level, base: { service: 'eventgate', ...(instance === undefined ? {} : { instance }) }, timestamp: () => isoTime(), formatters: { level: (label) => ({ level: label }) } },
    destination({ dest: 1, sync: true }),
  );
}
