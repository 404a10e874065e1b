import { EventEmitter, once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A webhook receiver that answers nothing until released: a target that is stuck, so a consume
 * route's backlog builds up at its broker. Then it answers 200 to everything held and everything
 * after, keeping every body it got.
 */
export class HeldTarget {
  readonly bodies: string[] = [];
  private held: ServerResponse[] | undefined = [];
  private readonly arrivals = new EventEmitter();
  private constructor(private readonly server: ReturnType<typeof createServer>) {}

  static async start(): Promise<HeldTarget> {
    const server = createServer();
    const t = new HeldTarget(server);
    server.on('request', (req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (c: string) => (body += c));
      req.on('end', () => {
        t.bodies.push(body);
        t.arrivals.emit('body');
        if (t.held) t.held.push(res);
        else res.end();
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return t;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/`;
  }

  /**
   * Resolves once `n` bodies have arrived, as the last one does; rejects after `timeoutMs` saying
   * how many came. The bound is for a gateway that never sends: a loaded machine took over 5 s to
   * hand a fresh gateway's first message on, so it is wide.
   */
  async waitBodies(n: number, timeoutMs = 30000): Promise<void> {
    if (this.bodies.length >= n) return;
    await new Promise<void>((resolve, reject) => {
      const arrived = () => {
        if (this.bodies.length < n) return;
        clearTimeout(timer);
        this.arrivals.off('body', arrived);
        resolve();
      };
      const timer = setTimeout(() => {
        this.arrivals.off('body', arrived);
        reject(new Error(`the target got ${this.bodies.length} bodies of ${n} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.arrivals.on('body', arrived);
    });
  }

  /** Holds what comes from now on again, until the next release(). */
  hold(): void {
    this.held ??= [];
  }

  release(): void {
    for (const res of this.held ?? []) res.end();
    this.held = undefined;
  }

  async stop(): Promise<void> {
    this.release();
    this.server.closeAllConnections();
    this.server.close();
    await once(this.server, 'close');
  }
}
