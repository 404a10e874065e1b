import { RECONNECT_POLICY, reconnectBackoff } from '../../../core/backoff.js';

/** What a returned publish asks of a repair (a queue bound or declared again): nothing, or a repair now; `futile` once, the first time one did not help. */
export interface RepairAsked {
  repair: boolean;
  futile: boolean;
}

/**
 * When a queue is repaired after a publish for it came back unroutable (a routing-key route's
 * queue bound again, a declared queue declared again), for one queue. A publish sent before the
 * last repair asks for none (its return says nothing new). One sent after a repair that still
 * comes back says the repair does not help (the exchange on the server routes otherwise, such as
 * a direct one where the config reads a topic exchange): told once (`futile`), and the repairs
 * that follow wait 250 ms doubling to 5 s, where each return was a repair and a warning
 * (review-c-s55, checklist 5130 and 5133). A return more than twice the longest wait after the
 * last repair is news (the exchange made again once more): repaired at once, and told.
 */
export class RepairPace {
  /** Publishes numbered up to this one were sent before the last repair: their returns say nothing new. */
  private coveredUpTo = 0;
  private notBefore = 0;
  private readonly backoff = reconnectBackoff();
  /** When the last repair went through, if one did. */
  private repairedAt: number | undefined;
  /** A repair did not help: the repairs since are not told one by one. */
  futile = false;

  /** The server returned publish number `n`; `inFlight`: a repair of the queue is under way. */
  returned(n: number, inFlight: boolean): RepairAsked {
    if (inFlight || n <= this.coveredUpTo) return { repair: false, futile: false };
    let futile = false;
    if (this.repairedAt !== undefined && Date.now() - this.repairedAt > 2 * RECONNECT_POLICY.maxDelayMs) {
      this.backoff.reset();
      this.futile = false;
    } else if (this.repairedAt !== undefined && !this.futile) futile = this.futile = true;
    return { repair: Date.now() >= this.notBefore, futile };
  }

  /** What came back is news after all (the caller saw the queue deleted once more): the next repair is told, and the backoff starts over. */
  afresh(): void {
    this.backoff.reset();
    this.futile = false;
  }

  /** The repair was refused: the next waits (backoff). Returns the wait, in ms. */
  refused(): number {
    const wait = this.backoff.delay();
    this.notBefore = Date.now() + wait;
    return wait;
  }

  /** How long the next repair waits from now, in ms. */
  waitMs(): number {
    return Math.max(0, this.notBefore - Date.now());
  }

  /**
   * The repair went through after publishes numbered up to `published` were sent. Not reset: the
   * next waits (250 ms doubling to 5 s) in case this one did not help either.
   */
  repaired(published: number): void {
    this.notBefore = Date.now() + this.backoff.delay();
    this.repairedAt = Date.now();
    // Publishes sent from now on reach the queue; those sent before may still come back.
    this.coveredUpTo = published;
  }
}
