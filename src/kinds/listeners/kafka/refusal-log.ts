/**
 * The log of refused produce requests (INVALID_RECORD, or NOT_ENOUGH_REPLICAS when a dead-letter
 * topic did not acknowledge): a client is told only an error code, and with acks=0 nothing at all,
 * so the log is where an operator sees that a producer sends what a route refuses. A bad producer
 * can send thousands of such requests a second: per route, the first refusal is logged at once,
 * then at most one line per interval, counting the requests refused since (`refused`) and naming
 * the last one.
 */

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
export const REFUSAL_LOG_INTERVAL_MS = 10_000;

interface RouteWindow {
  /** Requests refused since the last line. */
  refused: number;
  last: RefusedRequest | undefined;
  timer: NodeJS.Timeout;
}

export class RefusalLog {
  private readonly windows = new Map<string, RouteWindow>();

  constructor(private readonly warn: (fields: Record<string, unknown>, message: string) => void) {}

  refused(r: RefusedRequest): void {
    const window = this.windows.get(r.route);
    if (window) {
      window.refused++;
      window.last = r;
      return;
    }
    this.line(r, 1);
    const timer = setInterval(() => this.tick(r.route), REFUSAL_LOG_INTERVAL_MS);
    timer.unref();
    this.windows.set(r.route, { refused: 0, last: undefined, timer });
  }

  /** Logs what was counted and not logged yet (the listener stops). */
  flush(): void {
    for (const route of [...this.windows.keys()]) {
      const window = this.windows.get(route)!;
      clearInterval(window.timer);
      this.windows.delete(route);
      if (window.last) this.line(window.last, window.refused);
    }
  }

  /** An interval ended: one line for the requests refused in it, or none and the route's window closes. */
  private tick(route: string): void {
    const window = this.windows.get(route)!;
    if (!window.last) {
      clearInterval(window.timer);
      this.windows.delete(route);
      return;
    }
    this.line(window.last, window.refused);
    window.refused = 0;
    window.last = undefined;
  }

  private line(r: RefusedRequest, refused: number): void {
    this.warn({ ...r, refused, intervalMs: REFUSAL_LOG_INTERVAL_MS }, 'kafka produce request refused');
  }
}
