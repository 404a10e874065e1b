import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Transform } from 'node:stream';

/**
 * A TCP proxy in front of a listener that can cut every connection (as a network failure or a
 * load balancer would) and hold new ones until released: a way to make a real client reconnect.
 */
export class TcpProxy {
  private readonly sockets = new Set<Socket>();
  private held: (() => void)[] | undefined;
  /** Each connection's way back (upstream → client), for holdReplies(). */
  private readonly replies = new Map<Socket, Socket>();
  private constructor(private readonly server: Server) {}

  /** `toServer`: a stream each connection's client bytes pass through on their way to the server (one per connection). */
  static async start(targetPort: number, options: { toServer?: () => Transform } = {}): Promise<TcpProxy> {
    const server = createServer();
    const proxy = new TcpProxy(server);
    server.on('connection', (client) => {
      proxy.sockets.add(client);
      client.on('close', () => proxy.sockets.delete(client));
      client.on('error', () => client.destroy());
      client.pause();
      const go = () => {
        if (client.destroyed) return;
        const upstream = connect(targetPort, '127.0.0.1');
        proxy.sockets.add(upstream);
        upstream.on('close', () => (proxy.sockets.delete(upstream), client.destroy()));
        upstream.on('error', () => upstream.destroy());
        client.on('close', () => upstream.destroy());
        if (options.toServer) client.pipe(options.toServer()).pipe(upstream);
        else client.pipe(upstream);
        upstream.pipe(client);
        proxy.replies.set(upstream, client);
        upstream.on('close', () => proxy.replies.delete(upstream));
        client.resume();
      };
      if (proxy.held) proxy.held.push(go);
      else go();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return proxy;
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  /**
   * Stops passing what the server sends on the open connections (what the client sends still
   * goes): it waits in the proxy, and a cutAndHold() then loses it, as a network path that dies
   * with data in flight does.
   */
  holdReplies(): void {
    for (const [upstream, client] of this.replies) {
      upstream.unpipe(client);
      upstream.pause();
    }
  }

  /** Passes what the server sends again, what holdReplies() held first. */
  releaseReplies(): void {
    for (const [upstream, client] of this.replies) {
      upstream.pipe(client);
      upstream.resume();
    }
  }

  /** Cuts every open connection; new ones wait until release(). */
  cutAndHold(): void {
    this.held = [];
    for (const s of this.sockets) s.destroy();
  }

  release(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const go of held) go();
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}
