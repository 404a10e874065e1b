/**
 * The log of refused produce requests (INVALID_RECORD, or NOT_ENOUGH_REPLICAS when a dead-letter
 * topic did not acknowledge): a client is told only an error code, and with acks=0 nothing at all,
 * so the log is where an operator sees that a producer sends what a route refuses. A bad producer
 * can send thousands of such requests a second: per route, the first refusal is logged at once,
 * then at most one line per interval, counting the requests refused since (`refused`) and naming
 * the last one.
 */
import { FLOOD_LOG_INTERVAL_MS, RateLimitedWarning } from '../../../core/rate-limited-warning.js';

/** What a line says about one refused request. */
export interface RefusedRequest {
  route: string;
  topic: string;
  partition: number;
  remoteAddress: string | undefined;
  /** Kafka's error name the client was told (INVALID_RECORD, NOT_ENOUGH_REPLICAS). */
  error: string;
  acks: number;
  reason: string;
}

/** At most one line per route this often, as for connections refused at a listener's limit. */
export const REFUSAL_LOG_INTERVAL_MS = FLOOD_LOG_INTERVAL_MS;

/** The rate-limited log of one listener's refused requests, a window per route; `flush` it when the listener stops. */
export function refusalLog(warn: (fields: Record<string, unknown>, message: string) => void): RateLimitedWarning<RefusedRequest> {
  return new RateLimitedWarning(REFUSAL_LOG_INTERVAL_MS, (r, refused) => warn({ ...r, refused, intervalMs: REFUSAL_LOG_INTERVAL_MS }, 'kafka produce request refused'));
}
