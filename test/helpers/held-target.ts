import { once } from 'node:events';
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
  private constructor(private readonly server: ReturnType<typeof createServer>) {}

  static async start(): Promise<HeldTarget> {
    const server = createServer();
    const t = new HeldTarget(server);
    server.on('request', (req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (c: string) => (body += c));
      req.on('end', () => {
        t.bodies.push(body);
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
