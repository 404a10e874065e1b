import { headerJson } from './header-json.js';
import { EXPIRES_AT, newHeaders, type Message } from './message.js';

/**
 * Header on every message sent to a dead-letter topic, whichever path sent it (a validate step
 * with `onInvalid: deadletter`, a consume route that cannot deliver a message, a broker that
 * cannot decode a record): why, as compact JSON `{ts, route, status, code, detail, errors}`, with
 * `attempts` and `endpointStatus` after a consume route's failed tries, and `target` (last) when
 * one of its targets failed (DeadletterCause).
 */
export const DEADLETTER_HEADER = '_eventgate_error';

export interface DeadletterCause {
  /** HTTP-like status of the problem (400 invalid, 503 broker unavailable, ...). */
  status: number | undefined;
  code: string;
  detail: string;
  errors: readonly string[];
  /**
   * A consume route's failure to deliver: the tries made of the message to the target that failed
   * (a webhook's own HTTP tries, else the route's), and a webhook endpoint's last HTTP status
   * (Problem.endpointStatus). Absent for what no target was tried with (an invalid message, an
   * undecodable record).
   */
  attempts?: number;
  endpointStatus?: number;
  /** The failing target's place in the route's `to` (Problem.target), when a target failed. */
  target?: number;
}

/**
 * `msg` as a dead-letter topic receives it: the one set of headers every dead-letter path writes.
 * `headerProblem` is the dead-letter broker's (BrokerRuntime.headerProblem): headers it cannot
 * carry are left out, and named in `droppedHeaders`, so the message still reaches the dead-letter
 * topic (which exists for messages nothing else takes) instead of being refused there for ever.
 */
export function deadletterMessage(msg: Message, route: string, cause: DeadletterCause, headerProblem?: (name: string, value: string) => string | undefined): Message {
  const headers = newHeaders();
  const dropped: string[] = [];
  for (const name in msg.headers) {
    const value = msg.headers[name]!;
    if (headerProblem?.(name, value) === undefined) headers[name] = value;
    else dropped.push(name);
  }
  const why = {
    ts: new Date().toISOString(),
    route,
    status: cause.status,
    code: cause.code,
    detail: cause.detail,
    errors: cause.errors,
    // Fields added after the first six: readers of those find them unchanged.
    ...(cause.attempts === undefined ? {} : { attempts: cause.attempts }),
    ...(cause.endpointStatus === undefined ? {} : { endpointStatus: cause.endpointStatus }),
    ...(dropped.length > 0 ? { droppedHeaders: dropped } : {}),
    ...(cause.target === undefined ? {} : { target: cause.target }),
  };
  headers[DEADLETTER_HEADER] = headerJson(why);
  // A copy kept to be looked at does not expire as the message would have (EXPIRES_AT).
  if (msg[EXPIRES_AT] === undefined) return { ...msg, headers };
  const { [EXPIRES_AT]: _expired, ...kept } = msg;
  return { ...kept, headers };
}
