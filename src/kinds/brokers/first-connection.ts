/**
 * A broker's first connection, for BrokerRuntime.connectedOnce(): `true` from the moment it is
 * made, a promise of it until then. Later losses and reconnections change nothing here: what a
 * route does during an outage of a broker that was connected is its retry policy's business.
 */
export class FirstConnection {
  private made = false;
  private opened: (() => void) | undefined;
  private pending: Promise<void> | undefined;

  /** Called on every connection the broker makes; only the first counts. */
  connected(): void {
    this.made = true;
    this.opened?.();
  }

  /** True once the broker has connected; else a promise that resolves when it does (pending for ever if it never does). */
  when(): true | Promise<void> {
    if (this.made) return true;
    this.pending ??= new Promise<void>((r) => (this.opened = r));
    return this.pending;
  }
}
