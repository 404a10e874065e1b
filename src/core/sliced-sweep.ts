/**
 * Visits every item of a list a slice per event-loop turn, so that a sweep over many connections
 * (pings, heartbeats: a write each, ~20 µs) never holds the loop long: messages forwarded
 * meanwhile go out between slices. 5,000 clients in one turn held them back ~110 ms.
 */
export const ITEMS_PER_TURN = 500;

export class SlicedSweep<T> {
  private next: NodeJS.Immediate | undefined;

  constructor(private readonly visit: (item: T) => void) {}

  /** Whether a sweep is still going (its next slice waits for a turn). */
  get running(): boolean {
    return this.next !== undefined;
  }

  /**
   * Visits `items`, as they are now, ITEMS_PER_TURN per turn, the first slice at once. Each is
   * visited once even if it moves within the collection meanwhile; one added later is left to the
   * next sweep. Ignored while a sweep is still going (a short interval over very many clients).
   */
  start(items: readonly T[]): void {
    if (this.next !== undefined) return;
    let at = 0;
    const slice = () => {
      this.next = undefined;
      const end = Math.min(at + ITEMS_PER_TURN, items.length);
      while (at < end) this.visit(items[at++]!);
      if (at < items.length) this.next = setImmediate(slice);
    };
    slice();
  }

  /** Stops a sweep still going. */
  stop(): void {
    clearImmediate(this.next);
    this.next = undefined;
  }
}
