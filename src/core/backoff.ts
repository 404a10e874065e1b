/**
 * The one retry policy of the gateway: capped exponential backoff between attempts at one
 * message. Consume routes own retrying (RouteRuntime.consume, src/runtime/route.ts); a broker
 * retries nothing a route gave back, except to hand it to the next consumer where nothing else
 * would deliver it again (docs/architecture.md, "Retries and dead-lettering").
 */
export const RETRY_POLICY = { firstDelayMs: 100, maxDelayMs: 5000 } as const;

/**
 * Connections, not messages: reopening a broker connection, a consume channel or consumer, or
 * declaring a broker's topology again (AMQP, NATS) waits by this policy between tries.
 */
export const RECONNECT_POLICY = { firstDelayMs: 250, maxDelayMs: 5000 } as const;

export class Backoff {
  private next: number;

  constructor(
    private readonly first: number = RETRY_POLICY.firstDelayMs,
    private readonly max: number = RETRY_POLICY.maxDelayMs,
  ) {
    this.next = first;
  }

  /** The delay before the next attempt; each call doubles the one after, up to the cap. */
  delay(): number {
    const d = this.next;
    this.next = Math.min(d * 2, this.max);
    return d;
  }

  reset(): void {
    this.next = this.first;
  }
}

/** A Backoff by RECONNECT_POLICY. */
export function reconnectBackoff(): Backoff {
  return new Backoff(RECONNECT_POLICY.firstDelayMs, RECONNECT_POLICY.maxDelayMs);
}

/** Resolves after `ms`, or as soon as `cut` settles (a stop: the timer is cleared then). */
export function pause(ms: number, cut?: Promise<unknown>): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    cut?.then(done, done);
  });
}
