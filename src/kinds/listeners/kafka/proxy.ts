/**
 * The Kafka-protocol listener: a proxy that Kafka clients take for the cluster. Clients bootstrap
 * on `port`; every upstream broker gets a local port of its own (`port + 1 + n` in the order the
 * proxy learns of them, `brokerPorts` to pin one, or ephemeral ports when `port` is 0), and
 * Metadata/FindCoordinator responses name those ports, so every connection a client opens comes
 * through the proxy. Each client connection has its own upstream connection (to a bootstrap
 * server, or to the broker its port stands for); see connection.ts for what happens on it.
 */
import { createServer, isIP, connect as netConnect, type Server, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { connect as tlsConnect, createServer as createTlsServer, type ConnectionOptions, type TLSSocket } from 'node:tls';
import type { BrokerAddress, RequestHeader } from '../../../codecs/kafka-protocol/messages.js';
import { decompressBudget, type BatchCompression } from '../../../codecs/record-batch.js';
import { boundAddress, listen } from '../bind.js';
import { rotateTls, TRANSPORT_DEFAULTS, tlsServerOptions, type TlsMaterial } from '../transport.js';
import { clientTrustChanged, trustedBy } from '../client-certificates.js';
import type { Health, ListenerBindings, ListenerRuntime, ListenerTelemetry, RouteEntry, RuntimeEnv } from '../../contracts.js';
import { hostAndPort } from '../../brokers/kafka/address.js';
import { ProxyConnection, type ConnectionHost } from './connection.js';
import { governProduce, type Governed } from './govern.js';
import { refusalLog, type RefusedRequest } from './refusal-log.js';
import { FLOOD_LOG_INTERVAL_MS, RateLimitedWarning } from '../../../core/rate-limited-warning.js';

/** Connections refused at maxConnections are logged at most this often (as the http listeners do). */
const DROP_LOG_INTERVAL_MS = FLOOD_LOG_INTERVAL_MS;

/**
 * Connections closed for the same reason are logged at most this often: a broker that is down
 * makes every client that reconnects to its port close again (librdkafka retries within a second),
 * and a misconfigured fleet sends the same bad request again and again.
 */
const CLOSE_LOG_INTERVAL_MS = FLOOD_LOG_INTERVAL_MS;
/**
 * Reasons with a window of their own at once: a client's reasons carry numbers it chooses (a
 * frame's size, an API key), so past this many a flood of garbage counts in one shared window.
 */
const CLOSE_LOG_MAX_REASONS = 64;
/** Of those, the windows of one client address's bad requests: one client's garbage leaves the rest to the others. */
const CLOSE_LOG_MAX_REASONS_PER_CLIENT = 16;

/** What a `kafka client connection closed` line says about the last connection it stands for. */
interface ClosedConnection {
  remoteAddress: string | undefined;
  side: 'client' | 'upstream';
  reason: string;
}

/**
 * The window a closed connection counts in: its side and reason, so that each kind of problem (each
 * broker that is down, each kind of bad request) is logged at once when first seen, and only its
 * repeats are counted into later lines. A bad request's window is also its client address's, so
 * the same bad request from two clients names each.
 */
function closeLogKey(side: 'client' | 'upstream', reason: string, client?: string): string {
  return client === undefined ? `${side}:${reason}` : `${side}:${client}:${reason}`;
}

/** The listener's options once compiled: the upstream broker's addresses and TLS settings resolved. */
export interface KafkaProxySettings {
  upstream: string;
  host: string;
  port: number;
  advertisedHost: string | undefined;
  /** Node id → local port, for brokers whose port must not depend on discovery order. */
  brokerPorts: Record<string, number>;
  maxRequestBytes: number;
  /** Client connections at once, all ports together. */
  maxConnections: number;
  /** A client connection with nothing read, written or in flight for this long is closed (Kafka's connections.max.idle.ms). */
  connectionsMaxIdleMs: number;
  /** How long a client's upstream connection stays open after it left, for the answers it is owed (ProxyConnection). */
  answersAfterClientLeftMs: number;
  /** The upstream broker's bootstrap servers (`host:port`). */
  bootstrap: string[];
  /** TLS towards clients (the listener's `tls`, files read), or undefined for plaintext. */
  serverTls: TlsMaterial | undefined;
  /** TLS to the upstream brokers (the broker's `ssl`), or false. */
  tls: ConnectionOptions | false;
}

interface BrokerPort {
  nodeId: number;
  port: number;
  /** Where the broker is, as the cluster's metadata last said. */
  upstream: { host: string; port: number };
  server: Server;
  ready: Promise<void>;
  error: string | undefined;
}

export class KafkaProxyListener implements ListenerRuntime {
  readonly kind = 'kafka';
  private readonly bootstrapServer: Server;
  private readonly brokers = new Map<number, BrokerPort>();
  private readonly clients = new Set<ProxyConnection>();
  private routes: ReadonlyMap<string, RouteEntry> = new Map();
  private settings: KafkaProxySettings;
  private nextBootstrap = 0;
  private bound = false;
  /** stop() began: a connection to a broker port bound during its drain is closed at once. */
  private stopping = false;
  private closedByProxy = 0;
  private readonly telemetry: ListenerTelemetry | undefined;
  private readonly refusals: RateLimitedWarning<RefusedRequest>;
  private readonly drops: RateLimitedWarning<undefined>;
  private readonly closes: RateLimitedWarning<ClosedConnection>;

  constructor(
    readonly name: string,
    settings: KafkaProxySettings,
    private readonly env: RuntimeEnv,
    private readonly compression: BatchCompression,
  ) {
    this.settings = settings;
    this.telemetry = env.telemetry?.listener(name);
    this.refusals = refusalLog((fields, message) => env.logger.warn({ listener: name, ...fields }, message));
    this.drops = new RateLimitedWarning<undefined>(DROP_LOG_INTERVAL_MS, (_, dropped) =>
      env.logger.warn({ listener: name, maxConnections: this.settings.maxConnections, dropped }, 'connection limit reached; closing new connections'),
    );
    this.closes = new RateLimitedWarning<ClosedConnection>(
      CLOSE_LOG_INTERVAL_MS,
      (c, closed) =>
        env.logger.warn(
          { listener: name, remoteAddress: c.remoteAddress, side: c.side, reason: c.reason, closed, intervalMs: CLOSE_LOG_INTERVAL_MS },
          c.side === 'client' ? 'kafka client connection closed: bad request' : 'kafka client connection closed: upstream problem',
        ),
      CLOSE_LOG_MAX_REASONS,
      CLOSE_LOG_MAX_REASONS_PER_CLIENT,
    );
    this.bootstrapServer = this.createServer((socket) => this.accept(socket, undefined));
  }

  async start(): Promise<void> {
    this.stopping = false;
    await listen(this.bootstrapServer, this.settings.port, this.settings.host);
    this.bound = true;
    // Once bound, as the http listeners and the broker ports do: a failed bind is the start's own
    // error (the reload's diagnostic at the listener's line), not a second, raw `listener error` line.
    this.bootstrapServer.on('error', (err) => this.env.logger.error({ listener: this.name, err: err.message }, 'listener error'));
  }

  async stop({ drainMs }: { drainMs: number }): Promise<void> {
    this.stopping = true;
    const closed = closeServers(this.servers());
    // Requests in flight get their answers, up to drainMs: each connection takes no more requests
    // and closes once it owes none; those still open then are cut off.
    for (const c of this.clients) c.drain();
    const deadline = Date.now() + drainMs;
    while (this.clients.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of [...this.clients]) c.end();
    // A broker port bound since (a Metadata answer the drain let through: advertise), or whose
    // bind was under way when the drain began, is closed too: it held its port after a reload
    // retired the listener.
    await Promise.all([...this.brokers.values()].map((b) => b.ready));
    const boundSince = closeServers(this.servers());
    this.refusals.close();
    this.drops.close();
    this.closes.close();
    await Promise.all([closed, boundSince]);
    this.bound = false;
  }

  reconfigure(options: unknown): void {
    const next = options as KafkaProxySettings;
    for (const server of this.servers()) {
      rotateTls(server, this.settings.serverTls, next.serverTls);
      if (next.serverTls) server.maxConnections = next.maxConnections;
    }
    if (clientTrustChanged(this.settings.serverTls, next.serverTls)) this.drainUntrustedCertificates(trustedBy(next.serverTls!.ca!));
    if (next.connectionsMaxIdleMs !== this.settings.connectionsMaxIdleMs) for (const conn of this.clients) conn.closeWhenIdleFor(next.connectionsMaxIdleMs);
    this.settings = next;
  }

  /**
   * A reload changed `tls.ca`: clients whose certificate it no longer trusts are drained (their
   * requests already read are answered, then the connection closes), as a stop does, so their
   * reconnection meets the new CA.
   */
  private drainUntrustedCertificates(trusted: (socket: Socket) => boolean): void {
    for (const conn of this.clients) {
      if (trusted(conn.client)) continue;
      this.env.logger.info({ listener: this.name, remote: conn.client.remoteAddress }, 'client certificate no longer trusted after reload; closing its connection');
      conn.drain();
    }
  }

  private servers(): Server[] {
    return [this.bootstrapServer, ...[...this.brokers.values()].map((b) => b.server)];
  }

  /** A plain or (with `tls`) TLS server; a client that fails the handshake is its own problem, logged at debug. */
  private createServer(accept: (socket: Socket) => void): Server {
    const m = this.settings.serverTls;
    // Paused until the connection has its own read buffer (ProxyConnection, readIntoBuffer).
    if (!m) return createServer({ pauseOnConnect: true }, accept);
    // The handshake has the http listeners' bound for a request's head (node's own is 120 s).
    const server = createTlsServer({ ...tlsServerOptions(m), handshakeTimeout: TRANSPORT_DEFAULTS.headersTimeoutMs }, accept);
    // accept() sees a TLS client only once its handshake is done: node's own count bounds the ones
    // still shaking hands (per port), which would otherwise be held 120 s each, uncounted.
    server.maxConnections = this.settings.maxConnections;
    server.on('drop', () => this.connectionDropped());
    // node leaves a socket whose handshake failed or timed out open: it is of no use to anyone.
    server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
      this.env.logger.debug({ listener: this.name, err: err.message }, 'TLS handshake failed');
      socket.destroy();
    });
    return server;
  }

  bind(bindings: ListenerBindings): void {
    this.routes = bindings.publish;
  }

  address(): { host: string; port: number } | undefined {
    return boundAddress(this.bootstrapServer);
  }

  health(): Health {
    if (!this.bound) return { ready: false, detail: 'not bound' };
    const failed = [...this.brokers.values()].filter((b) => b.error);
    if (failed.length > 0) return { ready: false, detail: failed.map((b) => `broker ${b.nodeId}: ${b.error}`).join('; ') };
    return { ready: true };
  }

  status(): Record<string, unknown> {
    return {
      upstream: this.settings.upstream,
      advertisedHost: this.advertisedHost(),
      ports: [...this.brokers.values()]
        .sort((a, b) => a.nodeId - b.nodeId)
        .map((b) => ({ nodeId: b.nodeId, port: b.port, upstream: `${b.upstream.host}:${b.upstream.port}`, ...(b.error ? { error: b.error } : {}) })),
      connections: this.clients.size,
      // Requests read from clients and not yet answered to them (at most MAX_REQUESTS_IN_FLIGHT per connection, plus what its last read brought).
      requestsInFlight: [...this.clients].reduce((n, c) => n + c.inFlight, 0),
      closedByProxy: this.closedByProxy,
      routes: [...this.routes.keys()],
    };
  }

  connections(): number {
    return this.clients.size;
  }

  private advertisedHost(): string {
    const { advertisedHost, host } = this.settings;
    if (advertisedHost) return advertisedHost;
    return host === '0.0.0.0' || host === '::' ? hostname() : host;
  }

  // ---- connections ------------------------------------------------------------------------------

  private accept(client: Socket, broker: BrokerPort | undefined): void {
    // Once stop() began, only a broker port bound by a Metadata answer of its drain still accepts: a connection it would not drain.
    if (this.stopping) {
      client.destroy();
      return;
    }
    // Before its connection to the cluster is made: without a bound, clients that connect and send
    // nothing held two file descriptors each for ever, until the process could open no more.
    if (this.clients.size >= this.settings.maxConnections) {
      client.destroy();
      this.connectionDropped();
      return;
    }
    const target = broker ? broker.upstream : this.pickBootstrap();
    const upstream = this.connectUpstream(target);
    const conn = new ProxyConnection(client, upstream, this.host(client), !this.settings.serverTls);
    conn.closeWhenIdleFor(this.settings.connectionsMaxIdleMs);
    this.clients.add(conn);
  }

  /** A new connection closed at maxConnections (by accept, or by node on a TLS port): logged, rate-limited, and counted. */
  private connectionDropped(): void {
    this.drops.occurred(undefined);
    this.telemetry?.connectionDropped();
  }

  private pickBootstrap(): { host: string; port: number } {
    const list = this.settings.bootstrap;
    return hostAndPort(list[this.nextBootstrap++ % list.length]!);
  }

  private connectUpstream(to: { host: string; port: number }): Socket {
    const tls = this.settings.tls;
    // SNI carries host names only (RFC 6066); an IP address is still checked against the certificate.
    const servername = tls ? (tls.servername ?? (isIP(to.host) ? undefined : to.host)) : undefined;
    const socket = tls ? tlsConnect({ ...tls, host: to.host, port: to.port, servername }) : netConnect({ host: to.host, port: to.port });
    socket.setNoDelay(true);
    return socket;
  }

  private host(client: Socket): ConnectionHost {
    const remoteAddress = client.remoteAddress;
    return {
      maxFrameBytes: () => this.settings.maxRequestBytes,
      answersAfterClientLeftMs: () => this.settings.answersAfterClientLeftMs,
      advertise: (brokers) => this.advertise(brokers),
      govern: (header: RequestHeader, body: Buffer): Governed | Promise<Governed> =>
        // A request's records may not decompress to more than a request may carry (a compression bomb is refused).
        governProduce(header, body, {
          route: (topic) => this.routes.get(topic),
          compression: decompressBudget(this.compression, this.settings.maxRequestBytes),
          remoteAddress,
          broker: this.settings.upstream,
          warn: (fields, message) => this.env.logger.warn({ listener: this.name, ...fields }, message),
          refused: (refusal) => this.refusals.occurred(refusal, refusal.route),
        }),
      governs: (topic) => this.routes.has(topic),
      closed: (conn, problem) => {
        this.clients.delete(conn);
        if (!problem) return;
        this.closedByProxy++;
        this.telemetry?.kafkaConnectionClosed(problem.side === 'client' ? 'bad_request' : 'upstream');
        // A bad request's reason is the client's to choose: its windows are its own, within a bound per address.
        const client = problem.side === 'client' ? (remoteAddress ?? '') : undefined;
        this.closes.occurred({ remoteAddress, side: problem.side, reason: problem.reason }, closeLogKey(problem.side, problem.reason, client), client);
      },
    };
  }

  // ---- broker ports -----------------------------------------------------------------------------

  /** Binds a port for every broker not seen before; answers where clients should reach each one. */
  private async advertise(brokers: BrokerAddress[]): Promise<(b: BrokerAddress) => { host: string; port: number }> {
    const ready: Promise<void>[] = [];
    for (const b of [...brokers].sort((x, y) => x.nodeId - y.nodeId)) {
      const known = this.brokers.get(b.nodeId);
      if (known) {
        if (known.upstream.host !== b.host || known.upstream.port !== b.port) {
          this.env.logger.info({ listener: this.name, nodeId: b.nodeId, from: known.upstream, to: { host: b.host, port: b.port } }, 'kafka broker moved; new connections follow it');
          known.upstream = { host: b.host, port: b.port };
        }
        ready.push(known.ready);
      } else ready.push(this.openBrokerPort(b).ready);
    }
    await Promise.all(ready);
    const host = this.advertisedHost();
    return (b) => ({ host, port: this.brokers.get(b.nodeId)!.port });
  }

  private openBrokerPort(b: BrokerAddress): BrokerPort {
    const pinned = this.settings.brokerPorts[String(b.nodeId)];
    const base = this.settings.port;
    const sequential = pinned === undefined && base !== 0;
    const free = (from: number): number => {
      const taken = new Set([...this.brokers.values()].filter((x) => x !== entry).map((x) => x.port));
      let p = from;
      while (taken.has(p) || Object.values(this.settings.brokerPorts).includes(p)) p++;
      return p;
    };
    const server = this.createServer((socket) => this.accept(socket, entry));
    const entry: BrokerPort = { nodeId: b.nodeId, port: pinned ?? 0, upstream: { host: b.host, port: b.port }, server, ready: Promise.resolve(), error: undefined };
    if (sequential) entry.port = free(base + 1 + this.brokers.size);
    // A sequential port another process or listener holds (the gateway's own http listener on
    // port + 1, say) is skipped, as the docs promise: metadata must never name a port that is not
    // this proxy's, or clients would speak Kafka to whatever holds it. Pinned ports are not moved.
    const bind = async (tries: number): Promise<void> => {
      try {
        await listen(server, entry.port, this.settings.host);
      } catch (err) {
        if (!sequential || tries <= 1 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || entry.port >= 65535) throw err;
        entry.port = free(entry.port + 1);
        await bind(tries - 1);
      }
    };
    entry.ready = bind(100).then(
      () => {
        entry.port = boundAddress(server)!.port;
        this.env.logger.info({ listener: this.name, nodeId: b.nodeId, port: entry.port, upstream: `${b.host}:${b.port}` }, 'kafka broker port bound');
        // Attached once bound: a port skipped on the way is not an error of the listener.
        server.on('error', (err) => this.env.logger.error({ listener: this.name, nodeId: b.nodeId, err: err.message }, 'listener error'));
      },
      (err: Error) => {
        entry.error = `cannot bind port ${entry.port}: ${err.message}`;
        this.env.logger.error({ listener: this.name, nodeId: b.nodeId, port: entry.port, err: err.message }, 'kafka broker port could not be bound');
      },
    );
    this.brokers.set(b.nodeId, entry);
    return entry;
  }
}

/** Closes those of `servers` still listening; settles once they all have. */
function closeServers(servers: Server[]): Promise<unknown> {
  return Promise.all(servers.map((s) => new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()))));
}
