import type { Logger } from '../../log.js';
import type { Message } from '../../core/message.js';
import type { BrokerTelemetry } from '../contracts.js';

/**
 * What the MQTT, AMQP and NATS brokers share about acknowledgements: a publish either gets the
 * server's acknowledgement within `ackTimeoutMs` or fails (HTTP 503, never a hang); a consumed
 * message is acknowledged to the server only once its route accepted it (the route retries its
 * targets until then), and left unacknowledged, for the server to deliver again, when it is not.
 */

export class AckTimeout extends Error {
  constructor(broker: string, ms: number) {
    super(`no acknowledgement from broker '${broker}' within ${ms} ms`);
  }
}

export class NotConnected extends Error {
  constructor(broker: string, detail: string) {
    super(`broker '${broker}' is not connected (${detail})`);
  }
}

/** `pending`, or an AckTimeout after `ms`, whichever comes first (the timer never keeps the process alive). */
export function ackWithin<T>(pending: Promise<T>, ms: number, broker: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new AckTimeout(broker, ms)), ms);
    timer.unref();
  });
  return Promise.race([pending, timeout]).finally(() => clearTimeout(timer));
}

export interface HandOver {
  route: string;
  log: Logger;
  telemetry: BrokerTelemetry | undefined;
  /** True once the subscription stops: the message is then left unacknowledged for the server to deliver again. */
  stopping(): boolean;
  /** Called while a handler runs longer than `keepAliveMs`, for servers that redeliver a message held too long (JetStream's ack wait). */
  keepAlive?: { everyMs: number; beat(): void };
}

/**
 * Offers `msg` to the route. Resolves true when the route accepted it (the caller then
 * acknowledges it to the server), false when the subscription stops first or the route gave it
 * back (the caller leaves it unacknowledged, so the server delivers it again). No retry here: the
 * route is the one owner of retries (core/backoff.ts) — it retries failed targets and dead-letters
 * what can never pass, and rejects only when it stops with the message in hand, by which time
 * its subscription is stopping too.
 */
export async function handOver(msg: Message, handler: (msg: Message) => Promise<void>, o: HandOver): Promise<boolean> {
  if (o.stopping()) return false;
  const beat = o.keepAlive ? setInterval(o.keepAlive.beat, o.keepAlive.everyMs) : undefined;
  try {
    await handler(msg);
    return true;
  } catch (err) {
    // A give-back while the subscription still runs is not the route's contract: say so.
    if (!o.stopping()) {
      o.telemetry?.consumerError(o.route);
      o.log.error({ topic: msg.topic, err: (err as Error).message }, 'message given back by its route while its subscription runs; left unacknowledged for the server to deliver again');
    }
    return false;
  } finally {
    clearInterval(beat);
  }
}

/** Headers as a message carries them: one string per name (the last, when a protocol allows repeats). */
export function singleValued(entries: Iterable<[string, unknown]>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, v] of entries) {
    if (v === undefined || v === null) continue;
    const last = Array.isArray(v) ? v[v.length - 1] : v;
    out[name] = Buffer.isBuffer(last) ? last.toString('utf8') : typeof last === 'object' ? JSON.stringify(last) : String(last);
  }
  return out;
}
