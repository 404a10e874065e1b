import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Readable, Transform, Writable } from 'node:stream';

/**
 * One proxied connection: the client's socket, the one to the server, where the client's bytes go
 * (the server's socket, or `toServer`'s stream in front of it) and where the server's come from
 * (the server's socket, or `toClient`'s stream behind it).
 */
interface Link {
  client: Socket;
  upstream: Socket;
  into: Writable;
  out: Readable;
  parted?: Parted;
}

/** What a partition holds of one connection until heal(). */
interface Parted {
  /** The client's bytes not yet delivered, and whether its FIN came after them. */
  toServer: Buffer[];
  fin: boolean;
  /** The client reset the connection (RST): its kernel dropped what it had not delivered. */
  reset: boolean;
  toClient: Buffer[];
  /** The server closed its side meanwhile. */
  serverClosed: boolean;
  stop(): void;
}

/** A connection accepted and held until release(): what its client sent meanwhile, and how to let it through. */
interface Held {
  client: Socket;
  go(): void;
}

/**
 * A TCP proxy in front of a listener that can cut every connection (as a network failure or a
 * load balancer would) and hold new ones until released: a way to make a real client reconnect.
 */
export class TcpProxy {
  private readonly sockets = new Set<Socket>();
  private readonly links = new Set<Link>();
  private held: Held[] | undefined;
  /** Connections accepted since the start, whatever became of them. */
  accepted = 0;
  /** refuse(): new connections are closed at once. */
  private refusing = false;
  /** Each connection's way back (the server's bytes → client), for holdReplies(). */
  private readonly replies = new Map<Readable, Socket>();
  private constructor(private readonly server: Server) {}

  /**
   * `toServer`: a stream each connection's client bytes pass through on their way to the server (one per connection).
   * `toClient`: the same for the server's bytes on their way to the client.
   * `host`: the address it listens on (default 127.0.0.1; `::1` to stand for a server reached over IPv6).
   */
  static async start(targetPort: number, options: { toServer?: () => Transform; toClient?: () => Transform; host?: string } = {}): Promise<TcpProxy> {
    const server = createServer();
    const proxy = new TcpProxy(server);
    server.on('connection', (client) => {
      proxy.sockets.add(client);
      proxy.accepted++;
      client.on('close', () => proxy.sockets.delete(client));
      client.on('error', () => client.destroy());
      if (proxy.refusing) return client.destroy();
      // Held: what the client sends is read and kept (so a client that gives up on the connection
      // closes it here, and it never reaches the server), and sent first at release().
      const early: Buffer[] = [];
      const keep = (b: Buffer) => early.push(b);
      const go = () => {
        client.off('data', keep);
        if (client.destroyed) return;
        const upstream = connect(targetPort, '127.0.0.1');
        const into = options.toServer ? options.toServer() : upstream;
        const out = options.toClient ? upstream.pipe(options.toClient()) : upstream;
        const link: Link = { client, upstream, into, out };
        proxy.sockets.add(upstream);
        proxy.links.add(link);
        // In a partition neither side learns of the other's close (heal() settles it).
        upstream.on('close', () => {
          proxy.sockets.delete(upstream);
          proxy.links.delete(link);
          if (link.parted) link.parted.serverClosed = true;
          else client.destroy();
        });
        upstream.on('error', () => upstream.destroy());
        client.on('close', () => {
          if (!link.parted) upstream.destroy();
        });
        for (const b of early) into.write(b);
        if (into !== upstream) client.pipe(into).pipe(upstream);
        else client.pipe(upstream);
        out.pipe(client);
        proxy.replies.set(out, client);
        upstream.on('close', () => proxy.replies.delete(out));
        client.resume();
      };
      if (proxy.held) {
        client.on('data', keep);
        proxy.held.push({ client, go });
      } else go();
    });
    server.listen(0, options.host ?? '127.0.0.1');
    await Promise.race([once(server, 'listening'), once(server, 'error').then(([err]) => Promise.reject(err))]);
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
    for (const [out, client] of this.replies) {
      out.unpipe(client);
      out.pause();
    }
  }

  /** Passes what the server sends again, what holdReplies() held first. */
  releaseReplies(): void {
    for (const [out, client] of this.replies) {
      out.pipe(client);
      out.resume();
    }
  }

  /** New connections wait until release(), accepted (as a load balancer in the path would answer the SYN); the open ones go on. */
  holdNew(): void {
    this.held ??= [];
  }

  /** How many of the connections held until release() their client has not closed. */
  heldOpen(): number {
    return (this.held ?? []).filter((h) => !h.client.destroyed).length;
  }

  /** How many connections are passed on to the server and open now. */
  openLinks(): number {
    return this.links.size;
  }

  /** The client's side of the open connection accepted `n`-th (from 0, of those open now): to cut that one alone, or see its client close it. */
  clientOf(n: number): Socket | undefined {
    return [...this.links][n]?.client;
  }

  /** Cuts every open connection; new ones wait until release(). */
  cutAndHold(): void {
    this.held = [];
    for (const s of this.sockets) s.destroy();
  }

  /** Closes every new connection at once, as a server that is down would, until release(). */
  refuse(): void {
    this.refusing = true;
  }

  release(): void {
    this.refusing = false;
    const held = this.held ?? [];
    this.held = undefined;
    for (const h of held) h.go();
  }

  /**
   * A network partition: nothing passes either way on the open connections, nothing is closed,
   * and new connections are accepted and held (a SYN answered by the proxy, as a load balancer
   * in the path would), until heal().
   *
   * What the client writes meanwhile is held as not yet delivered: on a real network its kernel
   * keeps those bytes in the socket's send queue and retransmits them until the server
   * acknowledges them — also after the client closed the socket (a FIN only queues behind them),
   * but not after a reset (an RST drops the queue). So on heal() a connection the client closed
   * delivers what it held and then its FIN, as the kernel's retransmissions would once the path
   * is back; one the client reset delivers nothing and the server's side is reset (the server's
   * next packet would be answered with an RST). The client's bytes reach the proxy at once over
   * loopback, so the proxy, not the client's kernel, is where they wait; what decides is only how
   * the client ended the socket, which the proxy sees as 'end' (FIN) or ECONNRESET (RST).
   */
  partition(): void {
    this.held ??= [];
    for (const link of this.links) {
      if (link.parted) continue;
      const { client, out } = link;
      client.unpipe();
      out.unpipe(client);
      const p: Parted = { toServer: [], fin: false, reset: false, toClient: [], serverClosed: false, stop: () => undefined };
      const fromClient = (b: Buffer) => p.toServer.push(b);
      const fromServer = (b: Buffer) => p.toClient.push(b);
      const fin = () => (p.fin = true);
      const reset = (err: NodeJS.ErrnoException) => (p.reset ||= err.code === 'ECONNRESET');
      client.on('data', fromClient).on('end', fin).on('error', reset).resume();
      out.on('data', fromServer).resume();
      p.stop = () => {
        client.off('data', fromClient).off('end', fin).off('error', reset);
        out.off('data', fromServer);
      };
      link.parted = p;
    }
  }

  /**
   * partition() once a client sends `bytes` (in one chunk, which still reaches the server), `fromMs`
   * after this call or later: to start a partition at a given point of a protocol's liveness cycle
   * (an MQTT PINGREQ, an AMQP heartbeat). Watches the connections open now: `parted` once it
   * partitioned; `closed` if each of them closed first (a client that gave its connection up never
   * sends on it, and what it opens next is not what the caller set up, so it is not watched). Fails
   * after `timeoutMs` if neither, rather than leaving the test to the runner's file timeout.
   */
  partitionWhenClientSends(bytes: Buffer, { fromMs = 0, timeoutMs = 30000 } = {}): Promise<'parted' | 'closed'> {
    return new Promise((resolve, reject) => {
      const links = [...this.links];
      const from = Date.now() + fromMs;
      const open = () => links.filter((l) => !l.client.destroyed && this.links.has(l)).length;
      const done = (outcome: 'parted' | 'closed') => {
        clearTimeout(timer);
        for (const [c, look, closed] of watched) c.off('data', look).off('close', closed);
        if (outcome === 'parted') this.partition();
        resolve(outcome);
      };
      const timer = setTimeout(() => {
        for (const [c, look, closed] of watched) c.off('data', look).off('close', closed);
        reject(new Error(`no client sent ${bytes.toString('hex')} within ${timeoutMs} ms: ${links.length} connection(s) watched, ${links.length - open()} of them closed since`));
      }, timeoutMs);
      const watched = links.map(({ client }) => {
        const look = (chunk: Buffer) => {
          if (Date.now() >= from && chunk.includes(bytes)) done('parted');
        };
        const closed = () => {
          if (open() === 0) done('closed');
        };
        client.on('data', look).on('close', closed);
        return [client, look, closed] as const;
      });
      if (links.length > 0 && open() === 0) done('closed');
    });
  }

  /** The bytes partition() holds from the clients, as text (to see that a client's writes are in it). */
  heldFromClients(): string {
    return [...this.links].map((l) => Buffer.concat(l.parted?.toServer ?? []).toString('latin1')).join('');
  }

  /** Ends the partition (see partition()), then lets the connections held meanwhile through. */
  heal(): void {
    for (const link of [...this.links]) {
      const p = link.parted;
      if (!p) continue;
      p.stop();
      link.parted = undefined;
      const { client, upstream, into, out } = link;
      if (p.reset || p.serverClosed) {
        // Nothing more reaches the server: the client's kernel dropped it, or the server is gone.
        if (!upstream.destroyed) upstream.resetAndDestroy();
        client.destroy();
        continue;
      }
      for (const b of p.toServer) into.write(b);
      if (p.fin || client.destroyed) {
        into.end();
        continue;
      }
      for (const b of p.toClient) client.write(b);
      client.pipe(into);
      out.pipe(client);
    }
    this.release();
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}
