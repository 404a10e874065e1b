import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import { problem, type Problem } from '../../errors.js';
import { answerFor, errorFrame } from '../../runtime/answer.js';
import type { Delivery, Message, MessageContext } from '../../runtime/message.js';
import type { ListenerBindings, ListenerKind, ListenerRuntime, RouteEntry, RuntimeEnv, Target } from '../contracts.js';

export interface WebSocketOptions {
  kind: 'websocket';
  port: number;
  host?: string;
  maxPayloadBytes?: number;
  maxBufferedBytes?: number;
  maxPendingFrames?: number;
}

const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
const DEFAULT_MAX_BUFFERED = 1024 * 1024;
const DEFAULT_MAX_PENDING = 64;
/** RFC 6455 close codes used here. */
const GOING_AWAY = 1001;
const TRY_AGAIN_LATER = 1013;
/**
 * A slow client's close frame waits behind everything already buffered for it; it gets this long
 * to read them and learn why it is disconnected. Nothing new is queued for it meanwhile.
 */
const SLOW_CLIENT_GRACE_MS = 5000;

interface Client {
  ws: WebSocket;
  path: string;
  remoteAddress: string | undefined;
  /** Frames of this client are handled one after another, so acks and errors keep the client's order. */
  queue: Promise<void>;
  pending: number;
}

/**
 * Clients connect to a route's path. Frames they send on a publish route's path are messages;
 * forward targets push every message to all clients on their path (spec §5).
 */
export class WebSocketListener implements ListenerRuntime {
  readonly kind = 'websocket';
  private readonly server: Server;
  private readonly wss: WebSocketServer;
  private readonly clients = new Map<string, Set<Client>>();
  private bindings: ListenerBindings = { publish: new Map(), forward: new Set() };
  private options: WebSocketOptions;
  private bound = false;
  private draining = false;

  constructor(readonly name: string, options: WebSocketOptions, private readonly env: RuntimeEnv) {
    this.options = options;
    this.server = createServer((_req, res) => {
      res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket' });
      res.end('this listener speaks WebSocket only\n');
    });
    this.wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD });
    this.server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host ?? '0.0.0.0', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.bound = true;
    this.server.on('error', (err) => this.env.logger.error({ listener: this.name, err: err.message }, 'listener error'));
  }

  async stop({ drainMs }: { drainMs: number }): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const all = [...this.clients.values()].flatMap((set) => [...set]);
    // Let frames already received finish (bounded), then say goodbye with 1001.
    await Promise.race([Promise.allSettled(all.map((c) => c.queue)), delay(drainMs)]);
    await Promise.all(all.map((c) => closeClient(c.ws, GOING_AWAY, 'gateway shutting down')));
    this.server.closeAllConnections();
    this.bound = false;
    await closed;
  }

  reconfigure(options: unknown): void {
    this.options = options as WebSocketOptions;
    // ws reads maxPayload per connection from its options object.
    (this.wss.options as { maxPayload: number }).maxPayload = this.options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD;
  }

  bind(bindings: ListenerBindings): void {
    this.bindings = bindings;
    for (const [path, set] of this.clients) {
      if (bindings.publish.has(path) || bindings.forward.has(path)) continue;
      for (const c of set) void closeClient(c.ws, GOING_AWAY, 'route removed');
    }
  }

  address() {
    const a = this.server.address() as AddressInfo | null;
    return a ? { host: a.address, port: a.port } : undefined;
  }

  health() {
    return this.bound ? { ready: true } : { ready: false, detail: 'not listening' };
  }

  status() {
    let clients = 0;
    for (const set of this.clients.values()) clients += set.size;
    return { clients };
  }

  forwardTarget(path: string, { format }: { format: 'value' | 'envelope' }): Target {
    const listener = this;
    return {
      describe: () => `websocket ${this.name}${path}`,
      async send(msg: Message): Promise<Delivery> {
        const set = listener.clients.get(path);
        if (!set || set.size === 0) return { listener: listener.name, path, clients: 0 };
        // Serialised once per message, whatever the number of clients.
        const frame = Buffer.from(format === 'value' ? JSON.stringify(msg.value) : JSON.stringify(envelope(msg)));
        const limit = listener.options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED;
        let sent = 0;
        for (const c of set) {
          if (c.ws.readyState !== 1) continue;
          if (c.ws.bufferedAmount > limit) {
            listener.env.logger.warn({ listener: listener.name, path, remote: c.remoteAddress }, 'client too slow; disconnecting with 1013');
            set.delete(c);
            void closeClient(c.ws, TRY_AGAIN_LATER, 'client too slow', SLOW_CLIENT_GRACE_MS);
            continue;
          }
          c.ws.send(frame, { binary: false });
          sent++;
        }
        return { listener: listener.name, path, clients: sent };
      },
    };
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (this.draining) return refuse(socket, 503, 'Service Unavailable');
    if (!this.bindings.publish.has(path) && !this.bindings.forward.has(path)) return refuse(socket, 404, 'Not Found');
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, path, req));
  }

  private onConnection(ws: WebSocket, path: string, req: IncomingMessage): void {
    const client: Client = { ws, path, remoteAddress: req.socket.remoteAddress, queue: Promise.resolve(), pending: 0 };
    let set = this.clients.get(path);
    if (!set) this.clients.set(path, (set = new Set()));
    set.add(client);
    ws.on('close', () => {
      this.clients.get(path)?.delete(client);
    });
    ws.on('error', (err) => this.env.logger.debug({ listener: this.name, path, err: err.message }, 'client error'));
    const query = parseQuery(req.url ?? '');
    ws.on('message', (data, isBinary) => this.onFrame(client, data, isBinary, query));
  }

  private onFrame(client: Client, data: RawData, isBinary: boolean, query: Record<string, string | string[]>): void {
    const route = this.bindings.publish.get(client.path);
    if (!route) return sendError(client.ws, problem('EG_METHOD_NOT_ALLOWED', `${client.path} only forwards messages to clients; it does not accept them`));
    if (isBinary) return sendError(client.ws, problem('EG_UNSUPPORTED_MEDIA_TYPE', 'binary frames are not accepted; send JSON in text frames'));
    let value: unknown;
    try {
      value = JSON.parse(data.toString());
    } catch (err) {
      return sendError(client.ws, problem('EG_BAD_JSON', `the frame is not valid JSON: ${(err as Error).message}`));
    }
    // Bounded work per client: stop reading its socket while too many frames wait.
    if (++client.pending >= (this.options.maxPendingFrames ?? DEFAULT_MAX_PENDING)) client.ws.pause();
    const msg: Message = { value, key: null, headers: {}, topic: null, partition: null, offset: null, timestamp: Date.now() };
    client.queue = client.queue.then(() => this.publish(client, route, msg, query));
  }

  private async publish(client: Client, route: RouteEntry, msg: Message, query: Record<string, string | string[]>): Promise<void> {
    try {
      const ctx: MessageContext = { route: route.name, path: {}, query, remoteAddress: client.remoteAddress };
      const answer = answerFor(await route.handle(msg, ctx));
      if (client.ws.readyState !== 1) return;
      if (answer.problem) sendError(client.ws, answer.problem);
      else if (route.options.ack) client.ws.send(JSON.stringify({ type: 'ack', ...answer.body }));
    } catch (err) {
      this.env.logger.error({ listener: this.name, route: route.name, err: (err as Error).message }, 'frame failed unexpectedly');
      sendError(client.ws, problem('EG_INTERNAL', 'the gateway failed to handle this frame'));
    } finally {
      if (--client.pending < (this.options.maxPendingFrames ?? DEFAULT_MAX_PENDING)) client.ws.resume();
    }
  }
}

function envelope(msg: Message): Record<string, unknown> {
  return { topic: msg.topic, partition: msg.partition, offset: msg.offset, key: msg.key, headers: msg.headers, value: msg.value, timestamp: msg.timestamp };
}

function sendError(ws: WebSocket, p: Problem): void {
  if (ws.readyState === 1) ws.send(errorFrame(p));
}

function refuse(socket: Duplex, status: number, text: string): void {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
}

/**
 * Close politely; a client that does not answer the close handshake within `graceMs` is cut off
 * (which drops whatever it had not read yet, the close frame included).
 */
function closeClient(ws: WebSocket, code: number, reason: string, graceMs = 1000): Promise<void> {
  if (ws.readyState === 3) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      ws.terminate();
      resolve();
    }, graceMs);
    timer.unref();
    ws.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    ws.close(code, reason);
  });
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

function parseQuery(url: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = Object.create(null);
  const q = url.indexOf('?');
  if (q === -1) return out;
  for (const [k, v] of new URLSearchParams(url.slice(q + 1))) {
    const prev = out[k];
    out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return out;
}

export const websocketListener: ListenerKind<WebSocketOptions> = {
  kind: 'websocket',
  acceptsPublish: true,
  acceptsForward: true,
  socketOptions: ['port', 'host', 'tls'],
  schema: {
    type: 'object',
    additionalProperties: false,
    required: ['kind', 'port'],
    properties: {
      kind: { const: 'websocket' },
      port: { type: 'integer', minimum: 0, maximum: 65535 },
      host: { type: 'string', default: '0.0.0.0' },
      maxPayloadBytes: { type: 'integer', minimum: 1, default: DEFAULT_MAX_PAYLOAD, description: 'Largest frame a client may send; a larger one closes the connection with 1009.' },
      maxBufferedBytes: { type: 'integer', minimum: 1, default: DEFAULT_MAX_BUFFERED, description: 'Per-client send buffer bound; a client over it is disconnected with 1013.' },
      maxPendingFrames: { type: 'integer', minimum: 1, default: DEFAULT_MAX_PENDING, description: "Frames a client may have waiting; beyond that its socket is paused (TCP backpressure)." },
    },
  },
  doc: {
    summary:
      'Clients connect to a route path (`ws://host:port/<path>`); other paths are refused with 404 before the upgrade. On a publish route every text frame is one JSON message; failures get an error frame and the connection stays open. Forward targets push each message to every client on their path, serialised once. A client whose unsent data exceeds `maxBufferedBytes` is disconnected with close code 1013, so a slow client never blocks others.',
    example: 'listeners:\n  push:\n    kind: websocket\n    port: 8081\n    maxBufferedBytes: 1048576',
    options: {
      port: 'TCP port (0: any free port)',
      host: 'bind address (default 0.0.0.0)',
      maxPayloadBytes: 'largest frame accepted from a client, default 1 MiB (larger: close 1009)',
      maxBufferedBytes: 'per-client send buffer bound, default 1 MiB (over it: close 1013)',
      maxPendingFrames: 'frames a client may have in processing before its socket is paused, default 64',
    },
  },
  create: (name, options, env) => new WebSocketListener(name, options, env),
};
