import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type * as Ws from 'ws';
import type FindMyWayModule from 'find-my-way';
import type { WebSocket, RawData, WebSocketServer as WsServer } from 'ws';
import { bundled } from '../../core/bundled.js';
import { problem, type Problem } from '../../core/errors.js';
import { answerFor, errorFrame } from '../../core/answer.js';
import { expireAt } from '../../core/expiry.js';
import { FLOOD_LOG_INTERVAL_MS, RateLimitedWarning } from '../../core/rate-limited-warning.js';
import { sendProblem } from './http-reply.js';
import { parseClientJson } from './client-json.js';
import { envelopeJson, ORIGINAL, valueJson, clientPayloadOriginal, type Delivery, type Message, type MessageContext, type RequestMeta } from '../../core/message.js';
import { clientTrustChanged, trustedBy } from './client-certificates.js';
import {
  admitThroughCurrent,
  type Admission,
  type Gate,
  type ListenerBindings,
  type ListenerRuntime,
  type ListenerTelemetry,
  type RouteEntry,
  type RuntimeEnv,
  STOP_REASON,
  type Target,
  WS_FRAME_FAILURE_CODES,
  type WsFrameFailureCode,
} from '../contracts.js';
import {
  applyLimits,
  compileTransport,
  createTransport,
  parseQuery,
  rawResponse,
  refusesCertificate,
  rotateTls,
  stopAccepting,
  stoppingProblem,
  tooManyHeaders,
  transportOptions,
  type TransportOptions,
} from './transport.js';
import { defineListener, kindOptions, oneOf, Type, type Static } from '../define.js';
import { boundAddress, listen } from './bind.js';
import { attributesOf, CE_SPECVERSION, decodeFrameEvent, toStructured } from '../../codecs/cloudevents.js';
import type { PacedWriter } from './paced-write.js';
import { PathBatch, type BatchClient } from './write-batch.js';
import { chosenSubprotocol, malformedHandshake } from './ws-handshake.js';
import { answerAndCloseLingering } from './lingering-close.js';
import { hearOnlyCloseAnswer } from './ws-close-answer.js';
import { canWriteRaw, textFrame, writeFrames } from './ws-frames.js';
import { frameBound, setFrameBound } from './ws-frame-bound.js';
import { pathParameters, RoutePathClaims, routePathProblem, sameRoutePath } from './route-paths.js';
import { ForwardRooms, type RoomClient, type RoomMember } from './ws-rooms.js';
import { allowsOrigin, anyOriginLiteral, checkOriginList, ForeignOriginLog, originList } from './cors.js';
import { SlicedSweep } from '../../core/sliced-sweep.js';

const { WebSocketServer, WebSocket: WsSocket } = bundled<typeof Ws>('ws');
const FindMyWay = bundled<typeof FindMyWayModule>('find-my-way');
type Router = FindMyWayModule.Instance<FindMyWayModule.HTTPVersion.V1>;
const noop = () => undefined;
/** Path parameters of a client whose path has none (most clients): one frozen object for all of them. */
const NO_PARAMS: Record<string, string> = Object.freeze(Object.create(null) as Record<string, string>);

const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/**
 * ws keeps a connection's bound as a 32-bit integer (`maxPayload | 0`): 2^32 + 1 became a bound of
 * 1 byte, and 2^31 to 2^32 - 1 none at all.
 */
const MAX_MAX_PAYLOAD = 2 ** 31 - 1;
const DEFAULT_MAX_BUFFERED = 1024 * 1024;
const DEFAULT_MAX_PENDING = 64;
const DEFAULT_PING_INTERVAL = 30_000;

const options = kindOptions('websocket', {
  ...transportOptions,
  maxPayloadBytes: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: MAX_MAX_PAYLOAD,
      default: DEFAULT_MAX_PAYLOAD,
      description:
        'Largest frame a client may send (a message sent in fragments counts whole: its fragments together; at most 2147483647, 2 GiB less a byte); a larger one closes the connection with 1009 (reason `a frame over maxPayloadBytes (N bytes)`, a fragmented message too), once the frames it sent before are answered. A reload that changes it holds the clients already connected to the new bound from their next frame on.',
    }),
  ),
  maxBufferedBytes: Type.Optional(
    Type.Integer({
      minimum: 1,
      default: DEFAULT_MAX_BUFFERED,
      description:
        'Per-client send buffer bound: forwarded messages, acks and error frames all count; a client over it is disconnected with 1013 (counted in `eventgate_slow_clients_disconnected_total`). Checked before anything more is sent to a client, on what earlier event-loop turns left unread; the messages of one turn go to all clients of a path as one shared buffer and count once written, so a burst larger than the bound does not cut off a client that keeps up.',
    }),
  ),
  maxPendingFrames: Type.Optional(
    Type.Integer({ minimum: 1, default: DEFAULT_MAX_PENDING, description: 'Frames a client may have in processing; beyond that its socket is paused (TCP backpressure).' }),
  ),
  pingIntervalMs: Type.Optional(
    Type.Integer({
      minimum: 0,
      default: DEFAULT_PING_INTERVAL,
      description:
        'Every client is pinged this often, so proxies and load balancers keep idle connections open; a client that has not answered (pong) by the next ping is disconnected, so a peer gone without closing frees its connection; one with frames still in processing is not (it is there, and its pong may wait unread behind them: see maxPendingFrames). 0: no pings.',
    }),
  ),
  origins: Type.Optional(
    oneOf([anyOriginLiteral, originList], {
      description:
        'Origins (scheme://host[:port]) browsers may connect from, or "*" (default; `["*"]` is read as "*"); compared as browsers send them (any case, a default port or none, a Unicode host name or its punycode; an app\'s web view or a browser extension by its own scheme, `capacitor://localhost`, `chrome-extension://<id>`, in any case, its port as written (such a scheme has no default port); `null`, which any page can send, cannot be listed; an entry with a user, path, query or fragment, or no valid host, is a config error, and so is a wildcard such as `https://*.example.com`: list each origin, even one alone `[https://app.example.com]`). A foreign Origin is refused with 403 before the upgrade; clients that send no Origin (non-browsers) are not affected. A reload that takes an origin off the list closes its open connections with 1008.',
    }),
  ),
});
/** The options as compiled (TLS files read). */
export type WebSocketOptions = Static<typeof options> & TransportOptions;
/** RFC 6455 close codes used here. */
const GOING_AWAY = 1001;
const POLICY_VIOLATION = 1008;
const TRY_AGAIN_LATER = 1013;
const SLOW_CLIENT = 'client too slow';
/** Private-use close code (RFC 6455 §7.4.2), after HTTP 401: the credential the client connected with has expired; reconnect with a fresh one. */
const CREDENTIAL_EXPIRED = 4401;
/**
 * A slow client's close frame waits behind everything already buffered for it; it gets this long
 * to read them and learn why it is disconnected. Nothing new is queued for it meanwhile.
 */
const SLOW_CLIENT_GRACE_MS = 5000;
/** Where a client's first frame queues behind. */
const SETTLED: Promise<void> = Promise.resolve();

/**
 * A client, from its handshake on. It is also the handshake's RequestMeta, which auth steps verify
 * (once, then cached per request object) for every frame. What a connection holds is what an idle
 * client costs (the `memory` scenario, docs/performance.md): one object here rather than a client,
 * a request and a promise, no closures per connection (the socket's events go to shared handlers),
 * and the peer address read from the socket only when something asks for it (node keeps it on the
 * socket once read).
 */
class Client implements BatchClient, RoomClient, RequestMeta {
  /** Set once the upgrade is done. */
  ws!: WebSocket;
  /** Forwarded frames larger than a slice go to its socket through it, as it drains (paced-write.ts); made when first needed. */
  paced: PacedWriter | undefined = undefined;
  /** Frames of this client are handled one after another, so acks and errors keep the client's order; made with the first frame. */
  queue: Promise<void> | undefined = undefined;
  /** Data frames (text or binary) received on this connection: the `frame` number of each one's answer. */
  frames = 0;
  /** Frames received and not yet answered (published, acked or refused): bounded by maxPendingFrames. */
  pending = 0;
  /** Frames queued whose handling has not started (behind the one being handled). */
  waiting = 0;
  /** A frame is being handled and has no outcome yet. */
  handling = false;
  /** The drain gave up: frames still queued are answered "not published", never handled. */
  cut = false;
  /** Disconnected for exceeding its send bound: nothing more is read from or queued for it. */
  evicted = false;
  /** To be closed once the frames it sent are answered (closeWhenAnswered): nothing more is read from it. */
  closing = false;
  /** Closes the connection when its credential expires (a JWT's exp). */
  expiry: NodeJS.Timeout | undefined = undefined;
  /** Pinged and not answered yet: still so at the next ping, the client is gone. */
  awaitingPong = false;
  batchSkip = 0;
  batchEpoch = -1;
  /** Its room, on a path with parameters (ws-rooms.ts). */
  member: RoomMember | undefined = undefined;

  constructor(
    readonly listener: WebSocketListener,
    /** The route path the client connected to, as the bindings spell it (`/rooms/:room`): its key in the listener's maps (bind() may respell it). */
    public path: string,
    /** Parameters of that path (`$path` in expressions). */
    public params: Record<string, string>,
    readonly headers: RequestMeta['headers'],
    readonly query: RequestMeta['query'],
    /** Trace context of the handshake request (W3C traceparent/tracestate): each frame's message continues it. */
    readonly trace: Record<string, string> | undefined,
    /** Its connection: a wss one is judged again when a reload changes `tls.ca` (client-certificates.ts). */
    readonly socket: Duplex,
  ) {}

  get remoteAddress(): string | undefined {
    return (this.socket as Socket).remoteAddress;
  }
}

/** The client of each connection, for the socket events' shared handlers (`this` is the WebSocket). */
const clientOf = new WeakMap<WebSocket, Client>();
/** What broke a connection, as ws's frame parser said it (its close frame's reason): kept off Client, which every idle connection holds. */
const failureOf = new WeakMap<Client, string>();

function onClientClose(this: WebSocket, code: number): void {
  const c = clientOf.get(this);
  if (c) c.listener.left(c, code);
}

function onClientError(this: WebSocket, err: Error): void {
  const c = clientOf.get(this);
  if (!c) return;
  if (!failureOf.has(c)) failureOf.set(c, err.message);
  c.listener.env.logger.debug({ listener: c.listener.name, path: c.path, err: err.message }, 'client error');
}

function onClientPong(this: WebSocket): void {
  const c = clientOf.get(this);
  if (c) c.awaitingPong = false;
}

function onClientMessage(this: WebSocket, data: RawData, isBinary: boolean): void {
  const c = clientOf.get(this);
  if (c) c.listener.frame(c, data, isBinary);
}

/**
 * The codes ws fails a connection with when a frame breaks it: a protocol error, a text frame not
 * UTF-8, a message in more than MAX_FRAGMENTS fragments (or a flood of tiny chunks), a frame over
 * maxPayloadBytes.
 */
const FRAME_FAILURES: ReadonlySet<number> = new Set<number>(WS_FRAME_FAILURE_CODES);
/** ws's bound on one message's fragments (its default, named here for the close frame's reason). */
const MAX_FRAGMENTS = 16 * 1024;
/** Client address and code pairs with a frame-failure log window of their own at once; past it, new ones share one. */
const FRAME_FAILURE_LOG_MAX_WINDOWS = 64;

/** What a `client sent a frame that fails the connection` line says of the last connection it stands for. */
interface FrameFailure {
  path: string;
  remote: string | undefined;
  code: WsFrameFailureCode;
  reason: string;
}

/**
 * ws fails a connection from its frame parser, at once, when a frame breaks it (FRAME_FAILURES).
 * The frames read before that one are still being published: their acks and error frames go out
 * first and the close after them, or the client could not tell which were delivered. ws reads
 * nothing more meanwhile. ws closes with a bare code; the close frame says why (ws emits the
 * parser's error right after asking to close, so the close waits a tick for it).
 */
class ClientSocket extends WsSocket {
  override close(code?: number, data?: string | Buffer): void {
    const c = clientOf.get(this);
    if (c === undefined || c.evicted || code === undefined || !FRAME_FAILURES.has(code)) return super.close(code, data);
    // (With data, ws echoes a close frame the client sent with one of these codes, or the gateway
    // closes with 1008 for a reason of its own.)
    // The bound the frame failed (the listener's, unless ws kept the one it opened with:
    // setFrameBound), read now: a reload while the frames before it are answered may change it.
    const bound = frameBound(this) || c.listener.maxPayloadBytes;
    const close = () => {
      if (data !== undefined) return super.close(code, data);
      const reason = failureReason(c, code, bound);
      c.listener.frameFailed(c, code as WsFrameFailureCode, reason);
      super.close(code, reason);
    };
    if (c.queue !== undefined && c.pending > 0) void c.queue.then(close);
    else if (data === undefined) process.nextTick(close);
    else close();
  }
}

/**
 * A close frame's reason is at most 123 bytes (RFC 6455 §5.5); ws's messages are shorter. `bound`:
 * the frame bound the connection was held to when ws failed it (a 1009).
 */
function failureReason(c: Client, code: number, bound: number): string {
  if (code === 1009) return `a frame over maxPayloadBytes (${bound} bytes)`;
  if (code === 1008 && failureOf.get(c) === 'Too many message fragments') return `a message in more than ${MAX_FRAGMENTS} fragments`;
  const reason = failureOf.get(c) ?? (code === 1007 ? 'a text frame that is not UTF-8' : 'protocol error');
  return Buffer.byteLength(reason) <= 123 ? reason : 'protocol error';
}

/**
 * Clients connect to a route's path. Frames they send on a publish route's path are messages;
 * forward targets push every message to all clients on their path (spec §5).
 */
export class WebSocketListener implements ListenerRuntime {
  readonly kind = 'websocket';
  private readonly server: Server;
  private readonly wss: WsServer;
  private readonly clients = new Map<string, Set<Client>>();
  /** Per forward path: the frames of the current event-loop turn, written to each client at its end. */
  private readonly batches = new Map<string, PathBatch<Client, Buffer>>();
  /** The clients of paths with parameters by their values, for forwards that fill them from the message. */
  private readonly rooms = new ForwardRooms();
  /** Clients evicted with a frame in hand: their 1013 waits for its answer (evict()); the drain counts them. */
  private readonly evicting = new Set<Client>();
  private bindings: ListenerBindings = { publish: new Map(), forward: new Set() };
  /**
   * Route paths without parameters, by themselves: a request for exactly such a path needs no
   * router walk, and its clients share the bindings' string (10,000 clients of a path keep one
   * string rather than each a slice of its request line).
   */
  private exact = new Map<string, string>();
  /** Route paths by request path, for the other paths (parameters, `%`-escapes). */
  private router: Router = FindMyWay();
  /**
   * A forward path spelled differently from a path before it that matches the same requests
   * (`/rooms/:id` and `/rooms/:room`) → that path, the clients' key; and back.
   */
  private forwardAlias = new Map<string, string>();
  private aliasedForward = new Map<string, string>();
  private options: WebSocketOptions;
  private bound = false;
  private draining = false;
  /** Why it is draining (shutdown or a reload), for what arrives meanwhile. */
  private stopReason: string = STOP_REASON.shutdown;
  /** The drain's whole budget, for the answer of a frame it leaves unanswered (stop() gets only what is left of it). */
  private drainMs = 0;
  /** Settles when the server has closed (set when draining starts). */
  private closed: Promise<void> | undefined;
  private readonly telemetry: ListenerTelemetry | undefined;
  /** Pings every client each pingIntervalMs. */
  private pinger: NodeJS.Timeout | undefined;
  /** Pings the clients a slice per turn (pingAll). */
  private readonly pingSweep = new SlicedSweep<Client>((c) => this.ping(c));
  /** The lines of frameFailed(): one per client address and close code each FLOOD_LOG_INTERVAL_MS at most, with the count. */
  private readonly frameFailureLog: RateLimitedWarning<FrameFailure>;
  /** Handshakes refused for their origin, said (the page sees only 1006). */
  private readonly foreignOrigins: ForeignOriginLog;

  constructor(
    readonly name: string,
    options: WebSocketOptions,
    readonly env: RuntimeEnv,
  ) {
    this.options = options;
    this.telemetry = env.telemetry?.listener(name);
    this.frameFailureLog = new RateLimitedWarning<FrameFailure>(
      FLOOD_LOG_INTERVAL_MS,
      (f, closed) => env.logger.info({ listener: name, ...f, closed, intervalMs: FLOOD_LOG_INTERVAL_MS }, 'client sent a frame that fails the connection; disconnecting'),
      FRAME_FAILURE_LOG_MAX_WINDOWS,
    );
    this.foreignOrigins = new ForeignOriginLog(env.logger, name, 'origins');
    this.server = createTransport(
      name,
      options,
      (_req, res) => {
        res.setHeader('upgrade', 'websocket');
        this.telemetry?.httpResponse(426);
        sendProblem(res, problem('EG_UPGRADE_REQUIRED', 'this listener speaks WebSocket only: connect with a WebSocket client to a route path'));
      },
      env.logger,
      'GET',
      // Its HTTP answers (refused handshakes, 426, malformed heads) count as the http listener's do:
      // a page only sees 1006 for a refused handshake, so this is where an operator sees why.
      (status) => this.telemetry?.httpResponse(status),
    );
    // createTransport logs these (rate-limited); the count is the listener's.
    this.server.on('drop', () => this.telemetry?.connectionDropped());
    // A page whose browser does not trust the certificate sees only a failed connection: counted here (createTransport says it).
    this.server.on('tlsClientError', (err: NodeJS.ErrnoException) => {
      if (refusesCertificate(err)) this.telemetry?.tlsCertificateRefused();
    });
    // clientTracking off: ws would keep its own set of clients and a close handler per connection; the listener has its own.
    this.wss = new WebSocketServer({
      noServer: true,
      clientTracking: false,
      perMessageDeflate: false,
      maxPayload: options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD,
      maxFragments: MAX_FRAGMENTS,
      handleProtocols: chosenSubprotocol,
      WebSocket: ClientSocket,
    });
    this.server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
  }

  async start(): Promise<void> {
    await listen(this.server, this.options.port, this.options.host ?? '0.0.0.0');
    this.bound = true;
    this.schedulePings();
    this.server.on('error', (err) => this.env.logger.error({ listener: this.name, err: err.message }, 'listener error'));
  }

  /**
   * Shutdown's first phase: stop accepting connections and frames, and let the frames already
   * received finish (bounded). Clients stay connected, so what forward routes still deliver while
   * the rest of the gateway drains reaches them; stop() says goodbye.
   */
  async quiesce({ drainMs, reason = STOP_REASON.shutdown }: { drainMs: number; reason?: string }): Promise<void> {
    if (!this.draining) {
      this.draining = true;
      this.stopReason = reason;
      this.drainMs = drainMs;
      clearInterval(this.pinger);
      this.pingSweep.stop();
      // Not server.close(): it closes the idle connections too, and a handshake sent on one kept
      // after a 426 met a closed connection instead of its 503 (point 715); stop() closes them.
      this.closed = new Promise<void>((resolve) => stopAccepting(this.server, resolve));
    }
    const all = [...[...this.clients.values()].flatMap((set) => [...set]), ...this.evicting];
    // Frames arriving meanwhile are refused (frame()) but queue behind them, so wait until every queue is still.
    const settled = async () => {
      for (;;) {
        const queues = all.map((c) => c.queue);
        await Promise.allSettled(queues);
        if (all.every((c, i) => c.queue === queues[i])) return;
      }
    };
    const gaveUp = await Promise.race([settled().then(() => false), delay(drainMs).then(() => true)]);
    // The drain gave up on the frames in hand: none still queued behind them starts any more (its
    // route may be stopping, and its answer would come after the goodbye), and each is answered
    // "not published" as its turn comes, or by stop() before the goodbye, whichever comes first.
    if (!gaveUp) return;
    let frames = 0;
    let queued = 0;
    for (const c of all) {
      c.cut = true;
      if (c.handling) frames++;
      // An evicted client's queued frames are dropped unanswered (evict()).
      if (!c.evicted) queued += c.waiting;
    }
    if (frames + queued > 0) this.env.logger.warn({ listener: this.name, frames, queued, drainMs }, 'frames still in flight at the drain timeout; those queued behind them are not published');
  }

  /** The answer to a frame the drain timeout cut from its client's queue: never published. */
  private notPublished(): Problem {
    return problem('EG_SHUTTING_DOWN', `${this.stopReason}; the frame was not published: it waited behind one that did not finish within drainTimeoutMs (${this.drainMs} ms); send it again`);
  }

  async stop({ drainMs, reason = STOP_REASON.shutdown }: { drainMs: number; reason?: string }): Promise<void> {
    await this.quiesce({ drainMs, reason });
    // What was forwarded goes out before the goodbye.
    for (const batch of this.batches.values()) batch.flush();
    this.rooms.flushAll();
    const all = [...[...this.clients.values()].flatMap((set) => [...set]), ...this.evicting];
    // A frame the drain timeout left unanswered gets its answer before the goodbye, as every frame
    // gets one: its message may still be taken. So do the frames still queued behind it, never
    // published. In the same turn as the close, so no late answer comes between (one after the
    // close is dropped).
    const gaveUp = problem('EG_SHUTTING_DOWN', `${this.stopReason}; the frame did not finish within drainTimeoutMs (${this.drainMs} ms): its message may or may not have been delivered`);
    let frames = 0;
    let queued = 0;
    for (const c of all) {
      c.cut = true;
      // Frames are handled in the order received: the waiting ones are the last received, the one
      // in hand is just before them.
      const first = c.frames - c.waiting + 1;
      if (c.handling) {
        this.sendError(c, gaveUp, first - 1);
        frames++;
      }
      // An evicted client's queued frames are dropped unanswered, never published (evict()).
      if (c.evicted) continue;
      for (let n = first; n <= c.frames; n++, queued++) this.sendError(c, this.notPublished(), n);
    }
    if (frames + queued > 0) this.env.logger.warn({ listener: this.name, frames, queued, drainMs: this.drainMs }, 'frames still in flight at the drain timeout were answered 503');
    await Promise.all(all.map((c) => (c.evicted ? closeClient(c, TRY_AGAIN_LATER, SLOW_CLIENT, SLOW_CLIENT_GRACE_MS) : closeClient(c, GOING_AWAY, reason))));
    this.server.closeAllConnections();
    this.frameFailureLog.close();
    this.foreignOrigins.close();
    this.bound = false;
    await this.closed;
  }

  reconfigure(options: unknown): void {
    const next = options as WebSocketOptions;
    rotateTls(this.server, this.options.tlsMaterial, next.tlsMaterial);
    if (clientTrustChanged(this.options.tlsMaterial, next.tlsMaterial)) this.dropUntrustedCertificates(trustedBy(next.tlsMaterial!.ca!));
    applyLimits(this.server, next);
    const repinging = next.pingIntervalMs !== this.options.pingIntervalMs;
    const reorigined = JSON.stringify(next.origins ?? '*') !== JSON.stringify(this.options.origins ?? '*');
    this.options = next;
    if (reorigined) this.dropForeignOrigins();
    if (repinging && this.bound && !this.draining) this.schedulePings();
    // ws reads maxPayload from its options object as a connection opens, and keeps it for that
    // connection: the clients already connected are held to a changed bound here.
    const maxPayload = this.options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD;
    const rebound = (this.wss.options as { maxPayload: number }).maxPayload !== maxPayload;
    (this.wss.options as { maxPayload: number }).maxPayload = maxPayload;
    if (rebound) this.reboundFrames(maxPayload);
  }

  /**
   * A reload changed maxPayloadBytes: the clients already connected are held to it from their next
   * frame on, so a bound lowered against a flood of large frames holds for them too, and one raised
   * for larger frames does not close them for frames under it.
   */
  private reboundFrames(bytes: number): void {
    let kept = 0;
    for (const set of this.clients.values()) for (const c of set) if (!setFrameBound(c.ws, bytes)) kept++;
    if (kept > 0)
      this.env.logger.warn(
        { listener: this.name, clients: kept, maxPayloadBytes: bytes },
        'maxPayloadBytes changed, but some connected clients keep the bound they connected with (ws internals not as expected); it applies to them when they reconnect',
      );
  }

  /**
   * A reload changed `origins`: the clients a page of an origin no longer listed opened are
   * disconnected (1008), as those whose key a reload revoked are, so that taking a site off the
   * list cuts off the tabs it has open, not only its next ones.
   */
  private dropForeignOrigins(): void {
    const origins = this.options.origins ?? '*';
    for (const set of this.clients.values()) {
      for (const c of [...set]) {
        const origin = c.headers.origin;
        if (typeof origin !== 'string' || allowsOrigin(origins, origin)) continue;
        this.env.logger.info({ listener: this.name, path: c.path, remote: c.remoteAddress, origin }, 'client origin no longer allowed after reload; disconnecting');
        this.leave(c);
        this.closeWhenAnswered(c, POLICY_VIOLATION, 'origin no longer allowed (a reload changed origins)');
      }
    }
  }

  /** A reload changed `tls.ca`: clients whose certificate it no longer trusts are disconnected (1008), as revoked keys are. */
  private dropUntrustedCertificates(trusted: (socket: Duplex) => boolean): void {
    for (const set of this.clients.values()) {
      for (const c of [...set]) {
        if (trusted(c.socket)) continue;
        this.env.logger.info({ listener: this.name, path: c.path, remote: c.remoteAddress }, 'client certificate no longer trusted after reload; disconnecting');
        this.leave(c);
        // As for an origin or a credential a reload revoked: the frames it sent are answered first.
        this.closeWhenAnswered(c, POLICY_VIOLATION, 'client certificate no longer trusted (a reload changed tls.ca)');
      }
    }
  }

  bind(bindings: ListenerBindings): void {
    const before = this.bindings;
    const router = FindMyWay();
    const forwardAlias = new Map<string, string>();
    const registered = [...bindings.publish.keys()];
    for (const path of registered) router.on('GET', path, noop, path);
    for (const path of bindings.forward) {
      if (bindings.publish.has(path)) continue;
      try {
        router.on('GET', path, noop, path);
        registered.push(path);
      } catch {
        // The router refuses a second spelling of the same requests: its clients are the first one's.
        const same = registered.find((p) => sameRoutePath(p, path));
        if (same !== undefined) forwardAlias.set(path, same);
      }
    }
    const exact = new Map<string, string>();
    for (const path of [...bindings.publish.keys(), ...bindings.forward]) if (!/[:*(%]/.test(path)) exact.set(path, path);
    this.exact = exact;
    this.router = router;
    this.forwardAlias = forwardAlias;
    this.aliasedForward = new Map([...forwardAlias].map(([f, p]) => [p, f]));
    this.bindings = bindings;
    // A forward path a reload made a second spelling of a new publish path (`/rooms/:r`, alone
    // before, now beside a publish route's `/rooms/:x`): its clients are that path's from now on,
    // where forwards look for them (they got nothing more, connected all the same).
    for (const [from, to] of forwardAlias) {
      const set = this.clients.get(from);
      if (set) this.respell(from, to, set);
    }
    // The reverse: a publish path a reload removed whose requests a forward path still matches
    // (`/rooms/:x` gone, `/rooms/:r` kept): its clients stay, as that path's, and are checked
    // against what guards it now.
    const respelled = new Set<Client>();
    for (const [path, set] of [...this.clients]) {
      if (bindings.publish.has(path) || bindings.forward.has(path)) continue;
      const same = registered.find((p) => sameRoutePath(p, path));
      if (same === undefined) continue;
      for (const c of set) respelled.add(c);
      this.respell(path, same, set);
    }
    for (const [path, set] of this.clients) {
      if (!bindings.publish.has(path) && !bindings.forward.has(path)) {
        for (const c of set) this.closeWhenAnswered(c, GOING_AWAY, 'route removed');
        continue;
      }
      // Credentials are checked again when what guards the path changed: a key revoked by a
      // reload disconnects the clients that connected with it.
      const forward = this.aliasedForward.get(path) ?? path;
      const changed = before.publish.get(path) !== bindings.publish.get(path) || before.forwardAuth?.get(forward) !== bindings.forwardAuth?.get(forward);
      if (changed) for (const c of set) void this.recheck(c);
      else for (const c of set) if (respelled.has(c)) void this.recheck(c);
    }
  }

  /**
   * Closes a client once the frames it sent are answered, so it knows which were delivered (as
   * before a 1009 close, or a shutdown's 1001): its route removed by a reload (the frame in hand
   * answered by the route it started on, those behind it 404 "not published"), its credential
   * expired or revoked (those behind it answered by the route's auth: 401), its origin no longer
   * allowed, its client certificate no longer trusted. Nothing more is read from it meanwhile: what it sends after is neither published nor
   * answered. A client that left its path (leave()) gets no forwards meanwhile.
   */
  private closeWhenAnswered(c: Client, code: number, reason: string): void {
    if (c.closing) return;
    c.closing = true;
    c.ws.pause();
    void allAnswered(c).then(() => closeClient(c, code, reason));
  }

  /** Moves the clients of route path `from` to `to`, which matches the same requests, with their parameters' values under `to`'s names. */
  private respell(from: string, to: string, moving: Set<Client>): void {
    // What was queued for them under the old path goes out first.
    this.batches.get(from)?.flush();
    this.rooms.flushPath(from);
    this.batches.delete(from);
    this.clients.delete(from);
    let set = this.clients.get(to);
    if (!set) this.clients.set(to, (set = new Set()));
    const fromNames = this.rooms.namesOf(from);
    const toNames = this.rooms.namesOf(to);
    for (const c of moving) {
      this.rooms.leave(c);
      let params = NO_PARAMS;
      for (let i = 0; i < toNames.length; i++) {
        const value = c.params[fromNames[i] ?? ''];
        if (value === undefined) continue;
        if (params === NO_PARAMS) params = {};
        params[toNames[i]!] = value;
      }
      c.path = to;
      c.params = params;
      set.add(c);
      this.batches.get(to)?.joined(c);
      if (params !== NO_PARAMS) this.rooms.join(c);
    }
  }

  private async recheck(c: Client): Promise<void> {
    const admission = await this.admit(c.path, c).catch(() => undefined);
    if (admission && !admission.ok && (admission.problem.status === 401 || admission.problem.status === 403)) {
      this.env.logger.info({ listener: this.name, path: c.path, remote: c.remoteAddress, status: admission.problem.status }, 'client no longer authorized after reload; disconnecting');
      this.leave(c);
      this.closeWhenAnswered(c, POLICY_VIOLATION, admission.problem.title);
    } else if (admission?.ok) {
      this.expireAt(c, admission.until);
    }
  }

  /** The largest frame a client may send, for the reason of the close of one that sent more. */
  get maxPayloadBytes(): number {
    return this.options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD;
  }

  address() {
    return boundAddress(this.server);
  }

  health() {
    return this.bound ? { ready: true } : { ready: false, detail: 'not listening' };
  }

  /** `paths`: the clients of each route path (as the config spells it; a path with parameters counts all its rooms), so an operator sees where they are. */
  status() {
    const paths: Record<string, number> = {};
    for (const [path, set] of this.clients) if (set.size > 0) paths[path] = set.size;
    return { clients: this.connections(), paths };
  }

  connections(): number {
    let clients = 0;
    for (const set of this.clients.values()) clients += set.size;
    return clients;
  }

  forwardTarget(path: string, { format }: { format: 'value' | 'envelope' | 'cloudevent' }): Target {
    const listener = this;
    // Its parameters, filled from the message's path parameters of the same names (ws-rooms.ts).
    const names = pathParameters(path);
    const serialise = (msg: Message) =>
      Buffer.from(
        format === 'value' ? valueJson(msg) : format === 'cloudevent' && msg.headers[CE_SPECVERSION] !== undefined ? JSON.stringify(toStructured(msg)) : envelopeJson(msg, attributesOf(msg.headers)),
      );
    return {
      async send(msg: Message, ctx: MessageContext): Promise<Delivery> {
        const key = listener.forwardAlias.get(path) ?? path;
        const set = listener.clients.get(key);
        if (!set || set.size === 0) return { listener: listener.name, path, clients: 0 };
        // Serialised and framed once per message, whatever the number of clients, and written to
        // them at the end of the turn together with the turn's other messages (write-batch.ts).
        // A client is in its path's batch and its room's: one is written out before frames are
        // queued in the other, so it gets them in order.
        const rooms = listener.rooms.select(key, names, ctx.path);
        let sent = 0;
        if (rooms === undefined) {
          for (const c of set) if (listener.withinBound(c)) sent++;
          if (sent > 0) {
            const payload = serialise(msg);
            listener.rooms.flushPath(key);
            listener.batch(key).queue(textFrame(payload), payload);
          }
          return { listener: listener.name, path, clients: sent };
        }
        let payload: Buffer | undefined;
        let frame: Buffer | undefined;
        for (const room of rooms) {
          let clients = 0;
          for (const m of room.members) if (listener.withinBound(m.client as Client)) clients++;
          if (clients === 0) continue;
          sent += clients;
          payload ??= serialise(msg);
          frame ??= textFrame(payload);
          const whole = listener.batches.get(key);
          if (whole !== undefined && whole.pending > 0) whole.flush();
          listener.rooms.queue(key, room, frame, payload);
        }
        return { listener: listener.name, path, clients: sent };
      },
    };
  }

  /**
   * Everything about a client is decided before the upgrade, answered as plain HTTP: unknown
   * path 404, too many headers 431, foreign origin 403, and the route's auth steps and the
   * forward targets' auth 401/403, so a refused client never holds a connection.
   */
  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    if (this.draining) return this.refuse(socket, stoppingProblem(this.stopReason, 'retry'));
    const route = this.match(path);
    if (!route) return this.refuse(socket, problem('EG_NOT_FOUND', `no route for ${path}`));
    const tooMany = tooManyHeaders(req, this.options) ?? malformedHandshake(req);
    if (tooMany) return this.refuse(socket, tooMany);
    const origin = req.headers.origin;
    if (origin !== undefined && !allowsOrigin(this.options.origins ?? '*', origin)) {
      this.foreignOrigins.refused(origin, path, req.socket.remoteAddress);
      return this.refuse(socket, problem('EG_ORIGIN_NOT_ALLOWED', `origin ${origin} may not connect to this listener`));
    }
    const client = new Client(this, route.path, route.params, sharedValues(req.headers), parseQuery(q === -1 ? '' : url.slice(q + 1)), handshakeTrace(req), socket);
    // node hands over the socket without an error listener; one must be there while auth is awaited.
    const onError = () => socket.destroy();
    socket.on('error', onError);
    this.admit(route.path, client).then(
      (admission) => {
        socket.off('error', onError);
        if (!admission.ok) {
          // A check that could not be made (an auth step's key set out of reach) is the operator's to know of.
          if (admission.problem.logDetail) this.env.logger.warn({ listener: this.name, path, status: admission.problem.status, where: admission.problem.logDetail }, 'handshake refused');
          return this.refuse(socket, admission.problem);
        }
        // A reload or shutdown may have happened while the credentials were checked.
        if (this.draining) return this.refuse(socket, stoppingProblem(this.stopReason, 'retry'));
        if (this.match(path)?.path !== route.path) return this.refuse(socket, problem('EG_NOT_FOUND', `no route for ${path}`));
        this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, client, admission.until));
      },
      (err) => {
        socket.off('error', onError);
        this.env.logger.error({ listener: this.name, path, err: (err as Error).message }, 'handshake check failed unexpectedly');
        this.refuse(socket, problem('EG_INTERNAL', 'the gateway failed to check this connection'));
      },
    );
  }

  /**
   * The route path a request path is for, and its parameters: the path itself when a route uses
   * it as it is (no router walk, no decoding), else what the router finds (parameters, `%`-escapes).
   */
  private match(path: string): { path: string; params: Record<string, string> } | undefined {
    const exact = this.exact.get(path);
    if (exact !== undefined) return { path: exact, params: NO_PARAMS };
    const found = this.router.find('GET', path);
    if (!found) return undefined;
    let params = NO_PARAMS;
    for (const _ in found.params) {
      params = { ...found.params } as Record<string, string>;
      break;
    }
    return { path: found.store as string, params };
  }

  /** Refuses a handshake (refuse()), counted by its status in `eventgate_http_requests_total`. */
  private refuse(socket: Duplex, p: Problem): void {
    this.telemetry?.httpResponse(p.status);
    refuse(socket, p);
  }

  /** The publish route's client checks, then the forward targets' auth, for a client of route path `path`. */
  private admit(path: string, request: RequestMeta): Promise<Admission> {
    return admitThroughCurrent(() => {
      const gates: Gate[] = [];
      const route = this.bindings.publish.get(path);
      if (route?.admit) gates.push(route as Gate);
      const forward = this.bindings.forwardAuth?.get(this.aliasedForward.get(path) ?? path);
      if (forward) gates.push(forward);
      return gates;
    }, request);
  }

  /**
   * A connection lives no longer than the credential it was admitted with: at `until` it is
   * closed with CREDENTIAL_EXPIRED, so a subscriber whose token expired stops receiving.
   */
  private expireAt(c: Client, until: number | undefined): void {
    expireAt(c, until, () => {
      if (c.ws.readyState !== 1) return;
      this.env.logger.info({ listener: this.name, path: c.path, remote: c.remoteAddress }, 'client credential expired; disconnecting with 4401');
      this.leave(c);
      this.closeWhenAnswered(c, CREDENTIAL_EXPIRED, 'credential expired');
    });
  }

  /** One timer for all clients (no timer per connection: what an idle client costs, docs/performance.md). */
  private schedulePings(): void {
    clearInterval(this.pinger);
    this.pinger = undefined;
    this.pingSweep.stop();
    const every = this.options.pingIntervalMs ?? DEFAULT_PING_INTERVAL;
    if (every > 0) this.pinger = setInterval(() => this.pingAll(), every).unref();
  }

  /**
   * A client's frame failed its connection (ClientSocket): said and counted, as the page sees only
   * the close. Said rate-limited (frameFailureLog): a client that reconnects and sends a bad frame
   * in a loop costs a handshake each, and would otherwise write a line each.
   */
  frameFailed(c: Client, code: WsFrameFailureCode, reason: string): void {
    this.frameFailureLog.occurred({ path: c.path, remote: c.remoteAddress, code, reason }, `${code} ${c.remoteAddress}`, c.remoteAddress);
    this.telemetry?.frameFailure(code);
  }

  /**
   * Pings every client, a slice per event-loop turn (SlicedSweep); one that did not answer the
   * previous ping is cut off (no close frame: it is not listening), which frees its connection (and
   * its place under maxConnections). The clients as the sweep starts, each visited once: one moved
   * to another path by a reload meanwhile (respell) would be met again in its new set, and cut off
   * for not having answered the ping of a moment before.
   */
  private pingAll(): void {
    if (!this.pingSweep.running) this.pingSweep.start([...this.clients.values()].flatMap((set) => [...set]));
  }

  private ping(c: Client): void {
    if (c.evicted || c.ws.readyState !== 1) return;
    // A client with frames in hand is there (it sent them), and its pong may wait unread behind
    // them: its socket is paused at maxPendingFrames, or ws reads nothing more after a frame
    // that fails the connection (ClientSocket). It is pinged again once they are answered.
    if (c.pending > 0) {
      c.awaitingPong = false;
      return;
    }
    if (c.awaitingPong) {
      this.env.logger.info({ listener: this.name, path: c.path, remote: c.remoteAddress }, 'client did not answer a ping; disconnecting');
      this.telemetry?.pingTimedOut();
      this.leave(c);
      c.ws.terminate();
      return;
    }
    c.awaitingPong = true;
    c.ws.ping();
  }

  private batch(path: string): PathBatch<Client, Buffer> {
    let batch = this.batches.get(path);
    if (!batch) this.batches.set(path, (batch = new PathBatch<Client, Buffer>(() => this.clients.get(path) ?? [], writeFrames)));
    return batch;
  }

  /**
   * The per-client bound (`maxBufferedBytes`), checked before anything is queued for a client —
   * forwarded messages, acks and error frames alike — on what its socket still holds from earlier
   * turns and what waits to be handed to it (paced-write.ts). This turn's batch is not counted:
   * one buffer shared by every client of the path, it costs no memory per client, and a client
   * that keeps up is not cut off by one burst larger than the bound (as it never was by one
   * message larger than it); if it does not read it, the next turn finds it over. A client over the bound is disconnected with 1013 instead of being
   * buffered for. Returns whether the client may be sent to.
   */
  private withinBound(c: Client): boolean {
    if (c.evicted || c.ws.readyState !== 1) return false;
    if (c.ws.bufferedAmount + (c.paced?.held ?? 0) > (this.options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED)) {
      this.evict(c);
      return false;
    }
    return true;
  }

  /**
   * Queues an answer (ack, error frame) for a client, after what was forwarded to it before. A
   * client evicted while this frame was in hand still gets its answer, its close frame after it
   * (evict()): a frame without an answer when the close frame comes was then not published.
   */
  private sendTo(c: Client, text: string): boolean {
    if (!this.withinBound(c)) {
      if (!c.evicted || !c.handling || c.ws.readyState !== 1) return false;
      c.ws.send(text);
      return true;
    }
    // (At most one of the two has frames pending: see forwardTarget.)
    this.batches.get(c.path)?.flushClient(c);
    this.rooms.flushClient(c);
    // Behind forwarded frames still waiting to be handed to the socket: as a frame, after them.
    if (c.paced && c.paced.held > 0 && canWriteRaw(c.ws)) c.paced.write(textFrame(Buffer.from(text)));
    else {
      // Through ws's sender (as writeFrames when it cannot write raw): what waits goes first.
      c.paced?.handOver();
      c.ws.send(text);
    }
    return true;
  }

  /**
   * Disconnects a client over its send bound: it leaves its path at once, nothing more is read
   * from it (frames waiting in its queue are dropped unanswered, never published), and it gets
   * SLOW_CLIENT_GRACE_MS to read what is buffered and the close frame before the socket is cut,
   * which frees everything it held. A frame in hand (its route publishing it) is answered first,
   * one small frame past the bound, and the close frame follows: no data frame may come after a
   * close frame, and without its answer the client could not tell whether that frame was
   * published (spec-checklist 1392). The wait is the frame's own (its route's timeouts bound it; the
   * drain, at a shutdown); nothing is forwarded to the client meanwhile.
   */
  private evict(c: Client): void {
    if (c.evicted) return;
    c.evicted = true;
    this.env.logger.warn({ listener: this.name, path: c.path, remote: c.remoteAddress }, 'client too slow; disconnecting with 1013');
    this.telemetry?.slowClientDisconnected();
    this.leave(c);
    c.ws.pause();
    // What still waits to be handed to it, it would not read in time: freed now.
    c.paced?.drop();
    if (!c.handling) {
      void closeClient(c, TRY_AGAIN_LATER, SLOW_CLIENT, SLOW_CLIENT_GRACE_MS);
      return;
    }
    this.evicting.add(c);
    void allAnswered(c).then(() => {
      this.evicting.delete(c);
      return closeClient(c, TRY_AGAIN_LATER, SLOW_CLIENT, SLOW_CLIENT_GRACE_MS);
    });
  }

  private onConnection(ws: WebSocket, client: Client, until: number | undefined): void {
    client.ws = ws;
    this.telemetry?.clientConnected();
    this.expireAt(client, until);
    let set = this.clients.get(client.path);
    if (!set) this.clients.set(client.path, (set = new Set()));
    set.add(client);
    this.batches.get(client.path)?.joined(client);
    if (client.params !== NO_PARAMS) this.rooms.join(client);
    clientOf.set(ws, client);
    ws.on('close', onClientClose);
    ws.on('error', onClientError);
    ws.on('message', onClientMessage);
    ws.on('pong', onClientPong);
  }

  /** The connection closed, with the code ws reports (the client's close frame's; 1005 none in it, 1006 no frame). */
  left(client: Client, code: number): void {
    this.telemetry?.clientClosed(code);
    clearTimeout(client.expiry);
    this.leave(client);
  }

  /** The client leaves its path (and its room): nothing more is forwarded to it. */
  private leave(c: Client): void {
    this.clients.get(c.path)?.delete(c);
    this.rooms.leave(c);
  }

  /** A frame from a client (onClientMessage). */
  frame(client: Client, data: RawData, isBinary: boolean): void {
    // ws may still hand over frames it had already read when the client was evicted; a client
    // being closed (closeWhenAnswered) sent this one after that was decided: neither is taken,
    // nor numbered (stop() numbers the answers of the frames in hand and queued from the count).
    if (client.evicted || client.closing) return;
    const n = ++client.frames;
    // Draining: a frame is not taken on any more, and the client learns it at once (as HTTP's 503),
    // rather than its frame being published with no answer after the 1001 cut it off.
    if (this.draining) return this.enqueue(client, n, () => this.sendError(client, stoppingProblem(this.stopReason, 'send this again'), n));
    const route = this.bindings.publish.get(client.path);
    if (!route) return this.enqueue(client, n, () => this.sendError(client, problem('EG_METHOD_NOT_ALLOWED', `${client.path} only forwards messages to clients; it does not accept them`), n));
    if (isBinary) return this.enqueue(client, n, () => this.sendError(client, binaryFrameRefused(route.options.structured), n));
    const frame = Buffer.isBuffer(data) ? data : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]);
    const parsed = parseClientJson(frame, 'frame', this.options.maxJsonDepth, this.options.maxParsedBytes);
    if (!parsed.ok) {
      const refusal = parsed.problem;
      return this.enqueue(client, n, () => this.sendError(client, refusal, n));
    }
    const timestamp = Date.now();
    // The route is the one in place when the frame's turn comes: a reload may have replaced the
    // one there now while the frame waits behind another, and that one no longer takes messages
    // once the frames it had started are done (it drains only those, then closes). It also says
    // whether the frame is a structured CloudEvent (a reload may have turned that on or off).
    this.enqueue(client, n, () => {
      const current = this.bindings.publish.get(client.path);
      if (!current) return this.sendError(client, problem('EG_NOT_FOUND', `${client.path} no longer has a route (a reload removed it); the frame was not published`), n);
      const headers = client.trace ? { ...client.trace } : {};
      if (current.options.structured) {
        // Its attributes become the message's, its data the value, as an application/cloudevents+json request's do.
        const event = decodeFrameEvent(parsed.value, headers);
        if (!event.ok) return this.sendError(client, event.problem, n);
        return this.publish(client, current, { value: event.value, key: null, headers: event.headers, topic: null, partition: null, offset: null, timestamp }, n);
      }
      // The frame goes on to brokers as the client wrote it where no step changes the value.
      const msg: Message = { value: parsed.value, key: null, headers, topic: null, partition: null, offset: null, timestamp, [ORIGINAL]: clientPayloadOriginal(frame, parsed.value, headers) };
      return this.publish(client, current, msg, n);
    });
  }

  /**
   * Queues a frame's handling after the frames before it (replies keep the client's order).
   * Bounded work per client: while too many frames wait, its socket is paused (TCP backpressure);
   * refusals count too, so a flood of bad frames is held back like a flood of good ones.
   */
  private enqueue(client: Client, n: number, handle: () => void | Promise<void>): void {
    const max = this.options.maxPendingFrames ?? DEFAULT_MAX_PENDING;
    // (Not once its close frame is out: the client's answer to it must be read, see closeClient.)
    if (++client.pending >= max && client.ws.readyState === 1) client.ws.pause();
    client.waiting++;
    client.queue = (client.queue ?? SETTLED)
      .then(() => {
        client.waiting--;
        if (client.evicted) return;
        // (Once stop() said goodbye it has answered them all.)
        if (client.cut) return client.ws.readyState === 1 ? this.sendError(client, this.notPublished(), n) : undefined;
        // publish() clears it as its outcome comes; the other handlers answer at once.
        client.handling = true;
        const handled = handle();
        if (handled === undefined) client.handling = false;
        return handled;
      })
      .catch((err: Error) => this.env.logger.error({ listener: this.name, path: client.path, err: err.message }, 'frame failed unexpectedly'))
      .finally(() => {
        if (--client.pending < max && !client.evicted && !client.closing) client.ws.resume();
      });
  }

  private async publish(client: Client, route: RouteEntry, msg: Message, n: number): Promise<void> {
    // A frame received before its client closed is published all the same: a client that sends and
    // then closes (websocat at the end of its input, a script's last line) means it to be. Its
    // answer has no one to go to (sendTo drops it); only an evicted client's frames are dropped.
    try {
      const ctx: MessageContext = { route: route.name, path: client.params, query: client.query, remoteAddress: client.remoteAddress, request: client };
      const answer = answerFor(await route.handle(msg, ctx));
      // Still in hand while its answer is queued: an answer that finds the client over its bound evicts it, and goes out before the close frame (sendTo).
      if (answer.problem) this.sendError(client, answer.problem, n);
      else if (route.options.ack) this.sendTo(client, JSON.stringify({ type: 'ack', frame: n, ...answer.body }));
      client.handling = false;
    } catch (err) {
      this.env.logger.error({ listener: this.name, route: route.name, err: (err as Error).message }, 'frame failed unexpectedly');
      this.sendError(client, problem('EG_INTERNAL', 'the gateway failed to handle this frame'), n);
      client.handling = false;
    }
  }

  /** An error frame answering the client's frame number `n`. */
  private sendError(client: Client, p: Problem, n: number): void {
    this.telemetry?.errorFrame(p.status);
    this.sendTo(client, errorFrame(p, n));
  }
}

/**
 * The answer to a binary frame. On a route whose frames are CloudEvents, the WebSocket binding
 * sends the JSON format in text frames: a binary frame would be its Avro or Protobuf format.
 */
function binaryFrameRefused(structured: boolean): Problem {
  return structured
    ? problem(
        'EG_UNSUPPORTED_MEDIA_TYPE',
        'binary frames are not accepted; send each CloudEvent in the JSON format, in a text frame (binary frames carry the Avro and Protobuf formats, which this route does not read)',
      )
    : problem('EG_UNSUPPORTED_MEDIA_TYPE', 'binary frames are not accepted; send JSON in text frames');
}

/** Header values seen in handshakes, each kept once (bounded: emptied when full). */
const HEADER_VALUES = new Map<string, string>();
const HEADER_VALUES_MAX = 1024;
/** Longer values (cookies, tokens) are rarely shared between clients. */
const SHARED_VALUE_MAX_LENGTH = 256;

/**
 * The handshake's headers, kept for as long as the client is connected (auth steps check them
 * again after a reload), with the values many clients send alike (host, user-agent, upgrade,
 * accept-language, ...) shared: node makes new strings for every request, which 10,000 idle
 * clients would each keep. sec-websocket-key is unique to each handshake (RFC 6455).
 */
function sharedValues(headers: IncomingMessage['headers']): RequestMeta['headers'] {
  const out: Record<string, string | string[] | undefined> = {};
  for (const name of Object.keys(headers)) {
    const v = headers[name];
    if (typeof v !== 'string' || name === 'sec-websocket-key' || v.length > SHARED_VALUE_MAX_LENGTH) {
      out[name] = v;
      continue;
    }
    let shared = HEADER_VALUES.get(v);
    if (shared === undefined) {
      if (HEADER_VALUES.size >= HEADER_VALUES_MAX) HEADER_VALUES.clear();
      HEADER_VALUES.set(v, v);
      shared = v;
    }
    out[name] = shared;
  }
  return out;
}

/** The handshake's trace context headers, if it had any; the route gives each frame its own span within that trace. */
function handshakeTrace(req: IncomingMessage): Record<string, string> | undefined {
  const { traceparent, tracestate } = req.headers;
  if (typeof traceparent !== 'string') return undefined;
  return typeof tracestate === 'string' ? { traceparent, tracestate } : { traceparent };
}

/**
 * Refuses a handshake with a plain HTTP problem+json answer (and its headers: WWW-Authenticate,
 * Retry-After), closing lingering: the client may have sent more than node read (lingering-close.ts).
 */
function refuse(socket: Duplex, p: Problem): void {
  answerAndCloseLingering(socket as Socket, rawResponse(p));
}

/** Said (at debug) of a client cut at the grace's end: it never answered the close frame, or was not read. */
export const CLOSE_UNANSWERED = 'client did not answer the close frame within the grace; connection cut';

/**
 * Close politely, after what was forwarded to it; a client that does not answer the close
 * handshake within `graceMs` is cut off (which drops whatever it had not read yet, the close frame
 * included).
 */
function closeClient(c: Client, code: number, reason: string, graceMs = 1000): Promise<void> {
  const ws = c.ws;
  if (ws.readyState === 3) return Promise.resolve();
  // The close frame does not go through the pacing: what waits there goes first.
  c.paced?.handOver();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      c.listener.env.logger.debug({ listener: c.listener.name, path: c.path, remote: c.remoteAddress, code, graceMs }, CLOSE_UNANSWERED);
      ws.terminate();
      resolve();
    }, graceMs);
    timer.unref();
    ws.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    ws.close(code, reason);
    // A client paused (evicted, closing, at maxPendingFrames) is read again: its close frame, the
    // answer to this one, ends the connection at once, rather than at graceMs with the client
    // (a browser's `close` event) waiting on it. What else it sent is not taken any more: an
    // evicted client's frames are dropped, and the answers of others' have nowhere to go. An
    // evicted client's are not even parsed (it may have megabytes of a flood in flight): its
    // input is read past ws's parser up to its close frame (ws-close-answer.ts).
    if (!(c.evicted && hearOnlyCloseAnswer(ws))) ws.resume();
  });
}

/** Resolves once a client's frame queue is still: every frame it sent has been answered. */
async function allAnswered(c: Client): Promise<void> {
  for (;;) {
    const queue = c.queue;
    if (queue === undefined) return;
    await queue;
    if (c.queue === queue) return;
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

export const websocketListener = defineListener({
  options,
  acceptsPublish: true,
  acksFrames: true,
  // A frame has no headers: only the route's agreement (`from.cloudevents: structured`) makes it an event.
  eventsByAgreement: true,
  publishersStay: true,
  acceptsForward: true,
  socketOptions: ['port', 'host', 'tls'],
  // Paths with parameters are routed as the http listener routes them: the same checks.
  pathClaims: () => new RoutePathClaims(),
  checkPath: routePathProblem,
  pathParameters,
  forwardFillsParameters: true,
  compile(options, ctx) {
    const originsOk = checkOriginList(options.origins, ['origins'], ctx);
    const compiled = compileTransport(options, ctx);
    return originsOk ? compiled : undefined;
  },
  doc: {
    summary:
      "Clients connect to a route path (`ws://host:port/<path>`); other paths are refused with 404 before the upgrade. Paths may have parameters (`/rooms/:room`, a value of at most 100 characters: a longer one matches no route), bound as `$path` for the frames of a client on such a path, with the handshake's query string as `$query` (a frame's headers are only its trace context, `traceparent`: the handshake's headers are for the route's `auth` and `ratelimit` steps); a forward path with parameters (`/rooms/:room`) is filled from the path parameters of the same names the message has (`to: {listener: L, path}`): a message published on `/room/:room` reaches the clients of its own room only, one without them (consumed from a broker) every client whose path the forward path matches. Handshakes are checked before the upgrade: the route's `auth` steps and a forward target's `auth` answer 401/403, a foreign `Origin` 403, a malformed handshake 400, 405 or 426 (a version other than 13, with `Sec-WebSocket-Version: 13, 8`; a handshake with a body, `Transfer-Encoding` or a `Content-Length` other than 0, is 400: its bytes would be read as frames), all as problem+json; a refusal closes the connection lingering (what the client still sends is read and discarded, for at most 5 s or 64 MiB). A client that offers subprotocols (`Sec-WebSocket-Protocol`) is answered with the first one it offers, so browsers, which refuse a connection that names none, connect; the frames are JSON whatever it names. The CloudEvents WebSocket binding's subprotocols (`cloudevents.json`, `cloudevents.avro`, `cloudevents.proto`) are never chosen: they say every frame is an event in that format, and the gateway's are not (acks, error frames, each forward's `format`); a client offering only those is answered with none, and its library fails the connection (docs/http-edge.md, CloudEvents). Compression (`permessage-deflate`) is not negotiated: a client that offers it gets uncompressed frames (each forwarded message is framed once for all its clients, which compression per connection would undo); put a proxy in front to compress. On a publish route every text frame is one JSON message (it goes on to brokers as the client wrote it wherever no step changed the value, less a leading UTF-8 byte order mark), or, on a route whose `from` says `cloudevents: structured`, one structured CloudEvent in the JSON format, whose attributes become the message's (`$ce`) and whose `data` its value, as an http listener reads an `application/cloudevents+json` body (a frame that is no valid event gets an `EG_CLOUDEVENT_INVALID` error frame naming each attribute; the handshake still agrees to no `cloudevents.*` subprotocol); failures (invalid JSON, too deep, `__proto__` keys, a member name given twice, auth, rate limit, ...) get an error frame and the connection stays open; every answer, an ack or an error frame, carries `\"frame\": N`, the 1-based number of the frame it answers among the data frames (text or binary) the client sent on that connection, so a client pairs answers with its frames even on a route without `ack`, where only failures are answered (`{\"type\":\"error\",\"frame\":3,\"status\":400,...}`); frames a client sent before it closed are published all the same (their answers have no one to go to); a client's frames are handled one after another (so one connection publishes one frame per round trip of its route, the broker's acknowledgement included: a client that needs more opens several connections, each keeping its own order), each by the route in place when its turn comes (one waiting while a reload replaces its route goes to the new route; a reload that removes its path's route closes it with 1001 `route removed` once the frames it sent are answered, the one in hand by the route it started on and those behind it 404 `EG_NOT_FOUND`, not published, reading nothing more from it meanwhile, as do an expired credential's 4401 and a reload's 1008 for a revoked credential or origin); a text frame that is not UTF-8 closes it with 1007 (a frame over `maxPayloadBytes` with 1009, a message in more than 16384 fragments with 1008, one that breaks the protocol, unmasked, of an unknown opcode, a control frame fragmented or over 125 bytes, a close code RFC 6455 does not allow, with 1002; the close frame's reason says why: `a frame over maxPayloadBytes (1048576 bytes)`, `a message in more than 16384 fragments`, `Invalid WebSocket frame: MASK must be set`), once the frames it sent before are answered, acks and error frames alike, so the client knows which were delivered; each such close is logged at info (`client sent a frame that fails the connection; disconnecting`, with the code and reason; at most one line per client address and code each 10 s, its `closed` the closes it stands for) and counted in `eventgate_websocket_frame_failures_total` by code. A client that sends more than 60 pings without reading the pongs is cut without a close frame (1006), as ws guards against a ping flood. On shutdown the frames in flight are answered (one still in flight when `admin.drainTimeoutMs` runs out gets a 503 `EG_SHUTTING_DOWN` error frame: its message may or may not have been delivered; the frames queued behind it are never published, each answered 503 `EG_SHUTTING_DOWN` saying so), frames arriving meanwhile get a 503 `EG_SHUTTING_DOWN` error frame (not published), and every client is closed with 1001 last, once the gateway's messages in flight are finished (what they forward still reaches the clients), consume routes have committed and brokers flushed. Whatever closes a connection (a shutdown, a reload, a broken frame, an expired credential), a frame the client has no answer for when the close frame comes was not published (the gateway had not read it, its socket paused at `maxPendingFrames`, or it was on the wire as the close frame left, and what arrives after that is not taken): it is safe to send again on a new connection; the exception is the client's own close (its frames are published all the same). A 1013 keeps to it too: the frame in hand when the client went over its bound is answered (one small frame past the bound) and the close frame follows, once that frame's route is done with it; the frames behind it are dropped unanswered, never published. With `tls` it serves wss. Forward targets push each message to every client on their path (or of the room of the message), serialised once. Every client is pinged each `pingIntervalMs` (30 s), which keeps idle connections open through proxies and load balancers (nginx and most cloud load balancers close a connection silent for 60 s); one that has not answered by the next ping is disconnected (unless frames it sent are still in processing: its pong may wait unread behind them), so clients gone without a close (a laptop put to sleep, a dropped mobile link) do not hold connections. Browsers and WebSocket libraries answer pings by themselves (a browser reads a ping only after what was sent before it: a tab whose script blocks for two pings while messages keep coming is cut so too). Behind a proxy, keep `pingIntervalMs` below its idle timeout (nginx's `proxy_read_timeout`): a connection the proxy cuts ends without a close frame, logged by no one; every accepted handshake is counted in `eventgate_websocket_connections_total`, whose rise under a flat `eventgate_websocket_clients` shows clients cut and reconnecting. A client whose unsent data (forwarded messages, acks and error frames alike) exceeds `maxBufferedBytes` is disconnected with close code 1013 (after the answer of a frame it had in hand, as above) and nothing more it sends is taken, so a slow or never-reading client never blocks others nor grows the gateway's memory: what it sends until its answer to the close frame (a flooder's frames still in flight) is skipped frame by frame, its payloads neither decoded nor unmasked, and a malformed frame header (unmasked, an unknown opcode, reserved bits set) ends the connection at once. It has 5 s to read what was buffered for it and the close frame (a browser page gets `close` 1013, reason `client too slow`, as soon as it has read them); a page that reads nothing for longer (a tab whose script runs on, a device asleep) is cut off and sees 1006. A forward client gets what is delivered while it is connected: nothing is replayed when it reconnects, so a page treats any close as a gap (an event stream on an http listener resumes with `Last-Event-ID`). A refused handshake (401/403, a foreign `Origin`, 404) reaches a page as an `error` event and `close` 1006: browsers give scripts no status for it (the console shows it; the gateway counts it by status in `eventgate_http_requests_total`, and logs a foreign origin at info), so a page cannot tell it from a network failure; it should back off rather than reconnect at once. docs/http-edge.md (\"WebSockets in a page\") lists every close code and reason a page can get and what its reconnect loop should do.",
    example: 'listeners:\n  push:\n    kind: websocket\n    port: 8081\n    maxBufferedBytes: 1048576',
  },
  create: (name, options, env) => new WebSocketListener(name, options, env),
});
