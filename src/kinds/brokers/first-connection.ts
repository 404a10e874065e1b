/**
 * A broker's first connection, for BrokerRuntime.connectedOnce(): `true` from the moment it is
 * made, a promise of it until then. Later losses and reconnections change nothing here: what a
 * route does during an outage of a broker that was connected is its retry policy's business.
 */
export class FirstConnection {
  private made = false;
  /** Who waits: each removed when its `until` settles, so a route stopped meanwhile is not kept by a broker that never connects. */
  private readonly waiting = new Set<() => void>();

  /** Called on every connection the broker makes; only the first counts. */
  connected(): void {
    if (this.made) return;
    this.made = true;
    for (const resolve of this.waiting) resolve();
    this.waiting.clear();
  }

  /** True once the broker has connected; else a promise that resolves when it does, and never once `until` settled first. */
  when(until: Promise<unknown>): true | Promise<void> {
    if (this.made) return true;
    return new Promise<void>((resolve) => {
      this.waiting.add(resolve);
      const forget = () => this.waiting.delete(resolve);
      until.then(forget, forget);
    });
  }
}
