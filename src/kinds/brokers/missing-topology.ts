import type { Logger } from '../../log.js';
import type { Health } from '../contracts.js';

/**
 * A queue (amqp) or stream (nats JetStream) that must exist on the server and does not, as what
 * waits for it says: only the routes that read it stop (not ready, the reason in /readyz), while
 * the broker, its other routes and its publishes elsewhere go on. Whoever waits tries again with
 * backoff and logs once per change of state, not once per try.
 */
export class MissingTopology {
  private problem: string | undefined;

  constructor(
    private readonly log: Logger,
    /** What is waited for, as the log names it: `amqp queue 'ghost'`. */
    private readonly what: string,
  ) {}

  /** It is missing (again, or for another reason; `state` says how, for the log): said once per distinct reason. */
  missing(detail: string, retryInMs: number, state = 'not found'): void {
    if (detail !== this.problem) this.log.warn({ detail, retryInMs }, `${this.what} ${state}; waiting for it (tried again with backoff)`);
    this.problem = detail;
  }

  /** It exists: said once, when it was missing before. */
  found(): void {
    if (this.problem !== undefined) this.log.info(`${this.what} found`);
    this.problem = undefined;
  }

  /** Why it is missing, or undefined. */
  get detail(): string | undefined {
    return this.problem;
  }

  health(): Health {
    return this.problem === undefined ? { ready: true } : { ready: false, detail: this.problem };
  }
}

/** How /readyz (the part before the server's words) and a 503 name what is missing. */
export function notFoundOn(what: 'queue' | 'stream', name: string, broker: string, why?: string): string {
  return `${what} '${name}' not found on broker '${broker}'${why === undefined ? '' : `: ${why}`}`;
}
