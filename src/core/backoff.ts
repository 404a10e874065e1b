/**
 * The one retry policy of the gateway: capped exponential backoff between attempts at one
 * message. Consume routes own retrying (src/runtime/consume.ts); a broker only offers a message
 * again when its handler gave it back, and waits by the same policy (docs/architecture.md,
 * "Retries and dead-lettering").
 */
export const RETRY_POLICY = { firstDelayMs: 100, maxDelayMs: 5000 } as const;

export class Backoff {
  private next: number;

  constructor(private readonly first: number = RETRY_POLICY.firstDelayMs, private readonly max: number = RETRY_POLICY.maxDelayMs) {
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
