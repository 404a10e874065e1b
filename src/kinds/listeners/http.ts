import { ServerResponse, type IncomingMessage, type Server } from 'node:http';
import type { Http2ServerRequest, Http2Session, ServerHttp2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Server as TlsServer, type TLSSocket } from 'node:tls';
import { finished as flushed } from 'node:stream/promises';
import type FindMyWayModule from 'find-my-way';
import { problem, type Problem } from '../../core/errors.js';
import { sendJson, sendJsonText, sendProblem } from './http-reply.js';
import { answerFor, deliveredJson, repeatedAnswer } from '../../core/answer.js';
import { parseClientJson } from './client-json.js';
import { clientPayloadOriginal, isJsonMedia, mediaTypeOf, ORIGINAL, type Message, type MessageContext, type RequestMeta } from '../../core/message.js';
import type { Outcome } from '../../core/outcome.js';
import { admitThroughCurrent, type ListenerBindings, type ListenerRuntime, type ListenerTelemetry, type RouteEntry, type RuntimeEnv, STOP_REASON } from '../contracts.js';
import { checkCors, CorsPolicy, corsOptions, ForeignOriginLog } from './cors.js';
import {
  applyLimits,
  compileTransport,
  createTransport,
  hostless,
  isHttp2,
  parseQuery,
  refusesCertificate,
  rotateTls,
  stoppingProblem,
  stopAccepting,
  tooManyHeaders,
  transportOptions,
  TRANSPORT_DEFAULTS,
  type TransportOptions,
} from './transport.js';
import { defineListener, kindOptions, Type, type Static } from '../define.js';
import { boundAddress, listen } from './bind.js';
import { decodeBatch, httpMode } from '../../codecs/cloudevents.js';
import { conflictingContentTypes, decodeEvent, forwardedHeaders, handleBatch, headMessage, refusedMediaType, requestMessage } from './http-request.js';
import type { Admission, Gate, ReplaySource, Target } from '../contracts.js';
import { SSE_DEFAULTS, STREAM_HEADERS, SseStreams, wantsEventStream, type SseFormat } from './sse.js';
import { bundled } from '../../core/bundled.js';
import { pathParameters, RoutePathClaims, routePathProblem } from './route-paths.js';
import { ACCEPTED_CODINGS, contentCodings, decodeBody, type ContentCoding } from '../../core/content-coding.js';
import { LINGER_MS, lingeringClosed, lingerWhenClosed } from './lingering-close.js';
import { clientTrustChanged, trustedBy } from './client-certificates.js';

const FindMyWay = bundled<typeof FindMyWayModule>('find-my-way');

const DEFAULT_MAX_BODY = 1024 * 1024;

const options = kindOptions('http', {
  ...transportOptions,
  http2: Type.Optional(
    Type.Boolean({
      default: false,
      description:
        "Serve HTTP/2 too (needs `tls`): clients that offer `h2` in the TLS handshake (browsers, `curl --http2`) get it, the others HTTP/1.1 on the same port. Over HTTP/2 a browser's requests to the listener share one connection, so open event streams no longer use up the six connections it opens per host:port (docs/http-edge.md). Every request is handled as over HTTP/1.1, with the same bounds: at most 128 streams at once per connection; `maxHeaderBytes` bounds the header list as HTTP/2 counts it (name + value + 32 bytes per field), advertised to clients as SETTINGS_MAX_HEADER_LIST_SIZE; on shutdown each connection gets a GOAWAY and its streams in flight finish. Changing it rebinds the listener.",
    }),
  ),
  maxBodyBytes: Type.Optional(
    Type.Integer({ minimum: 1, default: DEFAULT_MAX_BODY, description: 'Largest accepted body, and for a compressed body also the most it may decompress to; larger: 413.' }),
  ),
  cors: Type.Optional(corsOptions),
  events: Type.Optional(
    Type.Object(
      {
        heartbeatMs: Type.Optional(
          Type.Integer({
            minimum: 100,
            default: SSE_DEFAULTS.heartbeatMs,
            description:
              'A comment line is sent this often on every stream, so proxies keep idle streams open. A heartbeat also cuts off a client being replayed (a resume) that is over `maxBufferedBytes` and has taken nothing for `replayStallTimeoutMs`, as a slow client.',
          }),
        ),
        maxBufferedBytes: Type.Optional(
          Type.Integer({
            minimum: 1024,
            default: SSE_DEFAULTS.maxBufferedBytes,
            description:
              "Per-client bound on events written but not yet read; a client over it is disconnected (it reconnects and resumes; counted in `eventgate_slow_clients_disconnected_total`). Checked before each event, on what earlier event-loop turns left unread: the events of one turn go to all clients of a path as one shared buffer and count once written, so a burst larger than the bound does not cut off a client that keeps up. A resume's replay (and the live events held behind it) is written as fast as the client reads it, whatever its size; live events held meanwhile count against the bound.",
          }),
        ),
        replayStallTimeoutMs: Type.Optional(
          Type.Integer({
            minimum: 1000,
            default: SSE_DEFAULTS.replayStallTimeoutMs,
            description:
              "How long a client being replayed (a resume with `Last-Event-ID`) may stay over `maxBufferedBytes` having taken nothing before it is cut off as a slow client (checked at each heartbeat, so within `heartbeatMs` after; its replay ends with it). What a client reads shows only in steps (the kernel takes more once about half the socket's send buffer, up to a few MB, has drained), so a short value cuts off slow readers that do read; the default is nginx's `send_timeout`.",
          }),
        ),
        retryMs: Type.Optional(
          Type.Integer({
            minimum: 0,
            default: SSE_DEFAULTS.retryMs,
            description: 'Reconnection delay sent to clients (`retry:`): at the start of each stream, and to the streams open when a reload changes it.',
          }),
        ),
      },
      { additionalProperties: false, description: 'Server-Sent Events streams on the paths routes forward to (see the summary).' },
    ),
  ),
});
/** The options as compiled (TLS files read). */
export type HttpOptions = Static<typeof options> & TransportOptions;

const utf8 = new TextDecoder('utf-8', { fatal: true });

type Router = FindMyWayModule.Instance<FindMyWayModule.HTTPVersion.V1>;

/** `POST <path>` → message on the route bound to that path (spec §4). */
export class HttpListener implements ListenerRuntime {
  readonly kind = 'http';
  private readonly server: Server;
  private router: Router = FindMyWay();
  /**
   * Publish routes whose path has no parameters, by the exact request path: a request for exactly
   * such a path is the router's answer too (a static path wins over parametric ones), found
   * without the router's walk and decoding; any other path (parameters, `%`-escapes) asks the router.
   */
  private staticPublish = new Map<string, RouteEntry>();
  private options: HttpOptions;
  private cors: CorsPolicy | undefined;
  /** Requests refused for their origin, said (the page's fetch only fails). */
  private readonly foreignOrigins: ForeignOriginLog;
  /** Requests not yet answered (an event stream leaves the count once opened): what a drain waits for. */
  private inFlight = 0;
  /**
   * Open connections, for the drain timeout to find the requests still unanswered (each one's
   * current response). Kept per connection, not per request: a Set entry per request cost the
   * http-kafka benchmark ~12 µs of CPU per request (docs/performance.md, sixteenth session).
   */
  private readonly sockets = new Set<Socket>();
  /** HTTP/2 connections (`http2: true`), for the drain's GOAWAY and its end. */
  private readonly sessions = new Set<Http2Session>();
  /**
   * HTTP/2 requests not yet answered, for the drain timeout (giveUp): their streams share a
   * connection, so the per-connection lookup of HTTP/1.1 (unsent()) cannot find them.
   */
  private readonly h2InFlight = new Set<ServerResponse>();
  /** Responses the drain timeout answered (giveUp): a later outcome for them changes nothing. */
  private readonly givenUp = new WeakSet<ServerResponse>();
  /**
   * Requests not taken on, nothing of them published: read while draining (refused at the end of
   * the loop turn, refuseDraining) or behind an answer that closes the connection (never answered).
   * The drain timeout does not answer them as if they might have been delivered.
   * A guard no test can reach on node 20: giveUp runs in a timer's callback, or when nothing is in
   * flight (a refusal still to come counts as in flight), and node reads requests only in the
   * loop's poll phase, whose setImmediate callbacks (the check phase) run before the next timer.
   * Behind a closing answer, unsent() already leaves them out, except on a connection whose
   * writing side has ended, where nothing giveUp writes is sent (it would only be counted).
   */
  private readonly notTaken = new WeakSet<ServerResponse>();
  private draining = false;
  /** Why it is draining (shutdown or a reload), for what arrives meanwhile. */
  private stopReason: string = STOP_REASON.shutdown;
  /** The drain's whole budget, for the answer of a request it leaves unanswered (stop() gets only what is left of it). */
  private drainMs = 0;

  get urlScheme(): string {
    return this.options.tls === undefined ? 'http' : 'https';
  }
  private idle: (() => void) | undefined;
  /** Settles when the server has closed (set when draining starts). */
  private closed: Promise<void> | undefined;
  private bound = false;
  private readonly telemetry: ListenerTelemetry | undefined;
  /** Event streams of the paths routes forward to (GET with Accept: text/event-stream). */
  private readonly streams: SseStreams;
  private bindings: ListenerBindings = { publish: new Map(), forward: new Set() };
  /**
   * Route outcomes waiting to be answered at the end of this event-loop turn (see answerSoon), four
   * entries per request (request, response, outcome, the headers steps set for the answer) rather
   * than an object per request.
   */
  private outcomes: (IncomingMessage | ServerResponse | Outcome | string[] | undefined)[] = [];

  constructor(
    readonly name: string,
    options: HttpOptions,
    private readonly env: RuntimeEnv,
  ) {
    this.options = options;
    this.telemetry = env.telemetry?.listener(name);
    this.cors = options.cors ? new CorsPolicy(options.cors) : undefined;
    this.foreignOrigins = new ForeignOriginLog(env.logger, name, 'cors.origins');
    this.streams = new SseStreams(name, { ...SSE_DEFAULTS, ...options.events }, env.logger, () => this.telemetry?.slowClientDisconnected());
    this.server = createTransport(
      name,
      options,
      (req, res) => this.onRequest(req, res),
      env.logger,
      // What a CONNECT is told the listener serves: HEAD too, on event stream paths (621).
      'GET, HEAD, POST',
      (status) => this.telemetry?.httpResponse(status),
      options.http2 === true,
    );
    // createTransport logs these (rate-limited); the count is the listener's, as its answers are.
    this.server.on('drop', () => this.telemetry?.connectionDropped());
    // A page whose browser does not trust the certificate sees only a failed connection: counted here (createTransport says it).
    this.server.on('tlsClientError', (err: NodeJS.ErrnoException) => {
      if (refusesCertificate(err)) this.telemetry?.tlsCertificateRefused();
    });
    // `Expect: 100-continue` (curl sends it with a body over 1 MiB): node would send the 100 at once;
    // it goes out only once the body is to be read, so a request refused on its head alone (404,
    // 405, 413, 415, ...) is answered before the client uploads the body (RFC 9110 §10.1.1).
    this.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
      (req as ExpectingRequest)[EXPECTS] = 'continue';
      this.onRequest(req, res);
    });
    // Another expectation: a 417 problem, where node's own has no body. node's HTTP/2 code takes
    // `100-continue` only so spelled; the value is case-insensitive (RFC 9110 §10.1.1), as its HTTP/1.1 code reads it.
    this.server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
      (req as ExpectingRequest)[EXPECTS] = CONTINUE_EXPECTATION.test(String(req.headers.expect)) ? 'continue' : 'unmet';
      this.onRequest(req, res);
    });
    if (isHttp2(this.server)) {
      this.server.on('session', (session: ServerHttp2Session) => {
        this.sessions.add(session);
        session.once('close', () => this.sessions.delete(session));
        // node's HTTP/1.1 code closes idle connections after keepAliveTimeoutMs; its HTTP/2 code never does.
        session.setTimeout(this.options.keepAliveTimeoutMs ?? TRANSPORT_DEFAULTS.keepAliveTimeoutMs, () => session.close());
        // As node's headersTimeout does on HTTP/1.1: a connection that sends no request in time is closed.
        const noRequest = setTimeout(() => session.close(), this.options.headersTimeoutMs ?? TRANSPORT_DEFAULTS.headersTimeoutMs).unref();
        session.once('stream', () => clearTimeout(noRequest));
        session.once('close', () => clearTimeout(noRequest));
        // A client's protocol error or reset is its own; node ends the session.
        session.on('error', (err: Error) => this.env.logger.debug({ listener: this.name, err: err.message }, 'HTTP/2 session failed'));
      });
    }
    // A TLS server's requests arrive on the TLS socket, which 'secureConnection' hands over.
    this.server.on(this.server instanceof TlsServer ? 'secureConnection' : 'connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  async start(): Promise<void> {
    await listen(this.server, this.options.port, this.options.host ?? '0.0.0.0');
    this.bound = true;
    this.server.on('error', (err) => this.env.logger.error({ listener: this.name, err: err.message }, 'listener error'));
  }

  /**
   * Shutdown's first phase: stop accepting, and let the requests in flight finish (bounded). Event
   * streams stay open, so what forward routes still deliver while the rest of the gateway drains
   * reaches them (as websocket clients, spec §7); stop() ends them.
   */
  async quiesce({ drainMs, reason = STOP_REASON.shutdown }: { drainMs: number; reason?: string }): Promise<void> {
    if (!this.draining) {
      this.draining = true;
      this.stopReason = reason;
      this.drainMs = drainMs;
      this.closed = new Promise<void>((resolve) => stopAccepting(this.server, resolve));
      for (const socket of this.sockets) if ((socket as TLSSocket).alpnProtocol !== 'h2') lingerWhenClosed(socket);
      // GOAWAY: the client opens no new stream on the connection (it goes to a new one, elsewhere);
      // those in flight finish, and the connection closes once its last stream has.
      for (const session of this.sessions) session.close();
    }
    if (this.inFlight > 0) {
      await Promise.race([new Promise<void>((resolve) => (this.idle = resolve)), delay(drainMs)]);
    }
  }

  async stop({ drainMs, reason = STOP_REASON.shutdown }: { drainMs: number; reason?: string }): Promise<void> {
    await this.quiesce({ drainMs, reason });
    await this.giveUp(reason);
    // Streams never finish on their own: end them so the browsers reconnect (to another instance).
    this.streams.closeAll();
    if (this.sessions.size > 0) await sessionsClosed(this.sessions);
    // An HTTP/2 server has no closeAllConnections(): what is left (HTTP/1.1 connections, sessions
    // whose client stopped reading) is closed by hand.
    if (typeof this.server.closeAllConnections === 'function') this.server.closeAllConnections();
    else for (const socket of this.sockets) socket.destroy();
    // http's own close() now finds no connection to close: it stops node's timer that checks request
    // timeouts, which kept the server referenced. A second 'close' event it may emit finds no listener.
    this.server.close();
    this.foreignOrigins.close();
    this.bound = false;
    await this.closed;
  }

  /**
   * The drain's end: every request the listener started gets exactly one answer, in the order node
   * sends them. A client that pipelines (several requests written before any answer) has them all
   * started at once, their answers queued by node behind the one its connection is writing now
   * (unsent()). Those whose outcome is in keep it (delivered: 200, failed: its error); those still
   * unanswered get a 503 rather than a closed connection: the client learns the gateway gave up,
   * and whether its message may have been taken (its target may still acknowledge it after this,
   * so a retry can duplicate it) or its body had not all arrived (nothing published). Only a
   * connection's last answer says `connection: close`: node sends nothing queued behind one that
   * does. The answers are flushed (bounded) before the connections are closed.
   */
  private async giveUp(reason: string): Promise<void> {
    const { drainMs } = this;
    // Outcomes already in (a broker's flush on stop acknowledged them) are answered as they are, not given up on.
    if (this.outcomes.length > 0) this.answerAll();
    let gaveUp = 0;
    for (const socket of this.sockets) {
      const waiting = unsent(socket);
      for (let i = 0; i < waiting.length; i++) {
        const res = waiting[i]!;
        if (res.headersSent || res.destroyed || this.givenUp.has(res) || this.notTaken.has(res)) continue;
        if (i === waiting.length - 1) res.setHeader('connection', 'close');
        // A body still arriving was never published; a whole one may be with its target.
        const fate = res.req.complete ? 'its message may or may not have been delivered' : 'its body had not all arrived, so nothing of it was published';
        // As refuse() answers: sent first, so finished() counts it among the listener's answers.
        this.refuse(res, problem('EG_SHUTTING_DOWN', `${reason}; the request did not finish within drainTimeoutMs (${drainMs} ms): ${fate}`));
        this.givenUp.add(res);
        gaveUp++;
      }
    }
    for (const res of this.h2InFlight) {
      if (res.headersSent || this.givenUp.has(res) || this.notTaken.has(res)) continue;
      const fate =
        !(res.req as { aborted?: boolean }).aborted && res.req.readableEnded ? 'its message may or may not have been delivered' : 'its body had not all arrived, so nothing of it was published';
      this.refuse(res, problem('EG_SHUTTING_DOWN', `${reason}; the request did not finish within drainTimeoutMs (${drainMs} ms): ${fate}`));
      this.givenUp.add(res);
      gaveUp++;
    }
    if (gaveUp > 0) this.env.logger.warn({ listener: this.name, requests: gaveUp, drainMs }, 'requests still in flight at the drain timeout were answered 503');
    await allSent([...this.sockets]);
  }

  reconfigure(options: unknown): void {
    const next = options as HttpOptions;
    rotateTls(this.server, this.options.tlsMaterial, next.tlsMaterial);
    if (clientTrustChanged(this.options.tlsMaterial, next.tlsMaterial)) this.dropUntrustedCertificates(trustedBy(next.tlsMaterial!.ca!));
    applyLimits(this.server, next);
    const cors = next.cors ? new CorsPolicy(next.cors) : undefined;
    this.cors = cors;
    this.streams.reconfigure({ ...SSE_DEFAULTS, ...next.events });
    // Without cors any origin may call the listener; with it, streams of origins taken off end.
    if (cors && JSON.stringify(next.cors) !== JSON.stringify(this.options.cors)) this.streams.endForeignOrigins((origin) => cors.allows(origin));
    this.options = next;
  }

  /**
   * A reload changed `tls.ca`: connections of clients whose certificate it no longer trusts are
   * closed, as a revoked key ends what it opened. Their event streams end (403, `eventgate.end`);
   * an HTTP/2 connection gets a GOAWAY; an HTTP/1.1 one closes now when idle, else after the answer
   * it owes (`connection: close`), so no request in flight loses its answer.
   */
  private dropUntrustedCertificates(trusted: (socket: Duplex | null) => boolean): void {
    this.streams.endUntrustedCertificates(trusted);
    for (const session of this.sessions) {
      if (trusted(session.socket)) continue;
      this.env.logger.info({ listener: this.name, remote: session.socket.remoteAddress }, 'client certificate no longer trusted after reload; closing its connection');
      session.close();
    }
    for (const socket of this.sockets) {
      if ((socket as TLSSocket).alpnProtocol === 'h2' || trusted(socket)) continue;
      this.env.logger.info({ listener: this.name, remote: socket.remoteAddress }, 'client certificate no longer trusted after reload; closing its connection');
      const last = unsent(socket as HttpSocket).at(-1);
      if (last === undefined) socket.end();
      else if (!last.headersSent) last.setHeader('connection', 'close');
      else last.once('finish', () => socket.end());
    }
  }

  bind(bindings: ListenerBindings): void {
    const before = this.bindings;
    const router = FindMyWay();
    const staticPublish = new Map<string, RouteEntry>();
    for (const [path, route] of bindings.publish) {
      router.on('POST', path, noop, { route });
      if (!/[:*(%]/.test(path)) staticPublish.set(path, route);
    }
    for (const path of bindings.forward) router.on('GET', path, noop, { stream: path });
    this.router = router;
    this.staticPublish = staticPublish;
    this.bindings = bindings;
    // Streams on paths still forwarded to stay open through the reload; the others end.
    this.streams.retain(bindings.forward, bindings.sharedForward ?? new Set(), bindings.replay ?? new Map());
    // Streams whose path's auth changed are checked again: a key revoked by a reload ends them.
    for (const path of bindings.forward) {
      const gate = bindings.forwardAuth?.get(path);
      // A new path may have taken the streams of one whose parameters it renames (SseStreams.retain).
      if (before.forwardAuth?.get(path) !== gate || !before.forward.has(path)) this.streams.recheck(path, gate);
    }
  }

  connections(): number {
    return this.streams.count();
  }

  forwardTarget(path: string, { format, route, sourceKey }: { format: SseFormat; route: string; sourceKey: string | undefined }): Target {
    return this.streams.target(path, format, route, sourceKey);
  }

  address() {
    return boundAddress(this.server);
  }

  health() {
    return this.bound ? { ready: true } : { ready: false, detail: 'not listening' };
  }

  status() {
    return {
      inFlight: this.inFlight,
      eventStreams: this.streams.count(),
      eventStreamPaths: this.streams.countByPath(),
      slowStreamsClosed: this.streams.slowClientsClosed,
      eventStreamReplays: this.streams.replays,
    };
  }

  /**
   * One request, start to end, with callbacks rather than async functions: on a small message every
   * promise and microtask hop is a measurable share of the request (docs/performance.md), so the
   * route's promise is the only one.
   */
  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    this.inFlight++;
    if (req.httpVersionMajor === 2) return this.onStream(req, res);
    // Pipelined behind an answer still to be sent: node queues this one's answer, where only the
    // drain (unsent()) needs to find it. A request on its own is the connection's current one.
    const socket = req.socket as HttpSocket;
    if (socket._httpMessage !== res ? !queueBehind(socket, res) : socket.writableEnded) {
      // Behind an answer that closes the connection (a 400, 413 or 431 refusal, sent already, the
      // connection ending, when node got to this request after it; or an event stream, which never
      // ends on its own, serveStream): node sends nothing after it,
      // so this one is not taken on (RFC 9112 §9.6), or its message would be published with no
      // answer. The client, told `close`, sends it again on a new connection.
      res.shouldKeepAlive = false;
      this.notTaken.add(res);
      // Its body is discarded as it arrives: unread, it would be held, and past 16 KiB node would stop reading the connection.
      req.resume();
      // Behind a stream, node would read on for as long as the stream lasts, holding every such
      // request: answers that write nothing never make it pause. Past a few, the connection goes.
      const behind = socket[BEHIND_STREAM];
      if (behind !== undefined && (socket[BEHIND_STREAM] = behind + 1) > MAX_BEHIND_STREAM) socket.destroy();
      return this.finished(res);
    }
    try {
      this.serve(req, res);
    } catch (err) {
      this.failed(req, res, err);
    }
  }

  /**
   * A request on an HTTP/2 stream: no pipelining (each request has its stream), so none of the
   * connection bookkeeping above; node bounds the time to send it on HTTP/1.1 only.
   */
  private onStream(req: IncomingMessage, res: ServerResponse): void {
    this.h2InFlight.add(res);
    if (!req.readableEnded) {
      const bound = setTimeout(() => this.streamTimedOut(req as ReadingRequest), this.options.requestTimeoutMs ?? TRANSPORT_DEFAULTS.requestTimeoutMs).unref();
      res.once('close', () => clearTimeout(bound));
      res.once('finish', () => clearTimeout(bound));
    }
    try {
      this.serve(req, res);
    } catch (err) {
      this.failed(req, res, err);
    }
  }

  /**
   * requestTimeoutMs on HTTP/2: a body still arriving is not taken (408). What still arrives is
   * discarded (no longer counted toward maxBodyBytes, which would answer a second time), and node
   * closes the stream once the answer is out (RST_STREAM CANCEL), as HTTP/1.1's timeout closes
   * the connection; the connection goes on.
   */
  private streamTimedOut(req: ReadingRequest): void {
    const p = req[PENDING];
    if (p === undefined) {
      // Not read yet: its verdict is awaited (a key set being fetched). HTTP/1.1's timeout answers
      // such a request 408; this one gets it once admitted (a refusal comes first), unless the
      // client had sent it all (END_STREAM) in time. The timer does not fire again.
      if (!(req as unknown as Http2ServerRequest).stream.state.remoteClose) (req as TimedOutRequest)[TIMED_OUT] = true;
      return;
    }
    if (p.settled || p.res.headersSent) return;
    p.settled = true;
    this.bodyTimedOut(req, p.res);
  }

  /** A body not received in time on HTTP/2: what still arrives is discarded, and the answer is 408. */
  private bodyTimedOut(req: IncomingMessage, res: ServerResponse): void {
    req.removeListener('data', onBodyData);
    req.resume();
    this.refuse(res, problem('EG_REQUEST_TIMEOUT', 'the request was not received in time'));
  }

  /**
   * Every request ends through finished(), refuse(), failed() or answer(); one that shutdown
   * answered already (giveUp) is past them all, so a late outcome changes nothing.
   */
  private finished(res: ServerResponse): void {
    if (this.draining && this.givenUp.has(res)) return;
    if (this.h2InFlight.size !== 0) this.h2InFlight.delete(res);
    // A client that went away before it was answered got no answer: res.statusCode would read 200.
    if (res.headersSent) this.telemetry?.httpResponse(res.statusCode);
    if (--this.inFlight === 0 && this.idle) this.idle();
  }

  private refuse(res: ServerResponse, p: Problem): void {
    if (this.draining && this.givenUp.has(res)) return;
    // Refused before its body was read (404, 405, 415): a connection that closes after the answer
    // (the client sent `Connection: close`) would be reset while the body still arrives, and the
    // client would get a send error instead of the answer. Kept alive, node reads the body away itself.
    if (!res.req.complete && res.req.httpVersionMajor !== 2) lingerWhenClosed(res.req.socket);
    // Refused before its 100 (Continue): the client sends no body, or sends it anyway after a wait.
    // Either way the connection cannot be read on (RFC 9110 §10.1.1: say so), so it closes.
    if ((res.req as ExpectingRequest)[EXPECTS] !== undefined) closeAfter(res);
    sendProblem(res, p);
    this.finished(res);
  }

  private failed(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    if (this.draining && this.givenUp.has(res)) return;
    // A client that goes away mid-body (or is cut off by requestTimeoutMs) is not the gateway's fault; logging it as an error would let any client flood the log.
    if ((req.destroyed || (req as { aborted?: boolean }).aborted) && (err as NodeJS.ErrnoException).code === 'ECONNRESET') {
      this.env.logger.debug({ listener: this.name, remote: req.socket.remoteAddress }, 'client went away before sending the whole request');
    } else {
      this.env.logger.error({ listener: this.name, err: (err as Error).message }, 'request failed unexpectedly');
      if (!res.headersSent) sendProblem(res, problem('EG_INTERNAL', 'the gateway failed to handle this request'));
    }
    this.finished(res);
  }

  private serve(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const pathname = q === -1 ? url : url.slice(0, q);
    // CORS first: a page can read a refusal, the drain's 503 included, only with the CORS headers;
    // without them its fetch fails with 'Failed to fetch'.
    const refused = this.cors?.apply(req, res);
    if (this.draining) {
      this.notTaken.add(res);
      return void setImmediate(() => this.refuseDraining(res));
    }
    const tooMany = tooManyHeaders(req, this.options) ?? hostless(req);
    if (tooMany) {
      closeAfter(res);
      return this.refuse(res, tooMany);
    }
    if ((req as ExpectingRequest)[EXPECTS] === 'unmet') {
      closeAfter(res);
      return this.refuse(res, problem('EG_EXPECTATION_FAILED', `Expect: ${String(req.headers.expect).slice(0, 100)} cannot be met; only 100-continue is`));
    }
    if (refused) {
      this.foreignOrigins.refused(String(req.headers.origin), pathname, req.socket.remoteAddress);
      return this.refuse(res, refused);
    }
    // A preflight from an allowed origin is answered on any path, as a listener-wide CORS policy
    // is in Express (`app.use(cors())`) and KrakenD: the request that follows gets its 404 with
    // the CORS headers, which the page can read; a preflight's 404 it could not ('Failed to fetch').
    // An event stream's path also allows Last-Event-ID (a fetch-based stream client resuming).
    if (this.cors && CorsPolicy.isPreflight(req)) {
      this.cors.preflight(req, res, this.isStreamPath(pathname));
      return this.finished(res);
    }
    // HEAD as GET without the body (RFC 9110 §9.3.2): a monitor checks a stream's path, its auth included, without opening it.
    if (req.method === 'GET' || req.method === 'HEAD') {
      const stream = this.router.find('GET', pathname);
      if (stream) return this.serveStream(req, res, (stream.store as { stream: string }).stream, url, q, stream.params);
    }
    const exact = this.staticPublish.get(pathname);
    const found = exact ? undefined : this.router.find('POST', pathname);
    if (!exact && !found) {
      const stream = this.router.find('GET', pathname);
      if (!stream) return this.refuse(res, problem('EG_NOT_FOUND', `no route for ${pathname}`));
      // A known path with the wrong method is a 405 (spec §4), not a 404 that says it does not exist;
      // told only to a client the target's auth admits, as the stream's 406 is.
      return this.afterForwardAuth(req, res, (stream.store as { stream: string }).stream, url, q, () => {
        res.setHeader('allow', 'GET, HEAD');
        this.refuse(res, problem('EG_METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${pathname}; it is an event stream: GET it with Accept: text/event-stream`));
      });
    }
    if (req.method !== 'POST') {
      const stream = this.isStreamPath(pathname);
      res.setHeader('allow', stream ? 'GET, HEAD, POST' : 'POST');
      return this.refuse(res, problem('EG_METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${pathname}; use POST${stream ? ' (or GET with Accept: text/event-stream)' : ''}`));
    }
    const route = exact ?? (found!.store as { route: RouteEntry }).route;
    const params = found ? found.params : NO_PARAMS;
    const query = parseQuery(q === -1 ? '' : url.slice(q + 1));
    const request: RequestMeta = { headers: req.headers, query, remoteAddress: req.socket.remoteAddress };
    // A chain that begins with `auth` judges the client from the head, as a WebSocket handshake is
    // judged: a client without credentials gets its 401 before anything of its body is read or
    // judged (its type, coding, size, JSON), and no second verification when the chain runs. On a
    // route whose chain begins otherwise admitHead is absent, and nothing of this is built.
    const admitted = route.admitHead?.(request, () => headMessage(forwardedHeaders(req.headers, req.rawHeaders)));
    if (admitted === undefined) return this.serveBody(req, res, route, params, request);
    admitted.then(
      (refusal) => {
        if (refusal) return this.refuseUnauthenticated(res, refusal);
        // A client gone while its credentials were checked: its request ended unread, and no 'end'
        // or 'error' would reach readBody's listeners now, so the request would stay in flight for good.
        if (req.destroyed) return this.failed(req, res, Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
        // The drain may have begun while the credentials were checked (a key set being fetched).
        if (this.draining) return this.refuseDraining(res);
        if ((req as TimedOutRequest)[TIMED_OUT]) return this.bodyTimedOut(req, res);
        try {
          // So may a reload that replaced the route: the request starts over with what is on its path
          // now, as a WebSocket handshake is judged again. The replaced route would send it to its old
          // targets after the reload was done, or through ones it closed: it had no message in hand to wait for.
          if (this.publishRoute(pathname) !== route) return this.serve(req, res);
          this.serveBody(req, res, route, params, request);
        } catch (err) {
          this.failed(req, res, err);
        }
      },
      (err) => this.failed(req, res, err),
    );
  }

  /**
   * An auth refusal from the head: the body is not read. One that came with the head is dropped
   * with the request, and the connection goes on. One still to come would be read away by node to
   * keep the connection (as long as requestTimeoutMs, for a client that holds no credential), so
   * its connection closes after the answer, lingering. Decided at the end of the loop turn, once
   * node has parsed all that arrived with the head (`complete` is not yet set when the verdict is).
   */
  private refuseUnauthenticated(res: ServerResponse, refusal: Problem): void {
    setImmediate(() => {
      if (!res.req.complete) closeAfter(res);
      this.refuse(res, refusal);
    });
  }

  /** A publish request past its path, method and (a chain beginning with `auth`) credentials: its body's framing, type and size, then the body. */
  private serveBody(req: IncomingMessage, res: ServerResponse, route: RouteEntry, params: Record<string, string | undefined>, request: RequestMeta): void {
    // node's parser reads a chunked body's framing and drops any coding before `chunked`
    // (`gzip, chunked`): read as uncoded, it would be published as something it is not (RFC 9112 §6.1).
    const te = req.headers['transfer-encoding'];
    if (te !== undefined && te.trim().toLowerCase() !== 'chunked') {
      return this.refuse(res, problem('EG_TRANSFER_CODING_UNSUPPORTED', `transfer coding '${te.slice(0, 100)}' is not supported; send the body chunked, or compress it with Content-Encoding`));
    }
    const conflict = conflictingContentTypes(req.rawHeaders);
    if (conflict) return this.refuse(res, conflict);
    const contentType = mediaTypeOf(req.headers['content-type'] ?? 'application/json');
    const isJson = isJsonMedia(contentType);
    if (!isJson) {
      const refused = refusedMediaType(contentType, req.headers);
      if (refused) return this.refuse(res, refused);
    }
    const coded = contentCodings(req.headers['content-encoding']);
    if (!coded.ok) {
      res.setHeader('accept-encoding', ACCEPTED_CODINGS);
      return this.refuse(res, coded.problem);
    }
    const max = this.options.maxBodyBytes ?? DEFAULT_MAX_BODY;
    const declared = Number(req.headers['content-length']);
    if (declared > max) {
      closeAfter(res);
      return this.refuse(res, problem('EG_PAYLOAD_TOO_LARGE', `the body has ${declared} bytes; this listener accepts at most ${max}`));
    }
    const codings = coded.codings.length === 0 ? undefined : coded.codings;
    if ((req as ExpectingRequest)[EXPECTS] === 'continue') {
      (req as ExpectingRequest)[EXPECTS] = undefined;
      res.writeContinue();
    }
    readBody(req, { listener: this, res, route, isJson, contentType, codings, params, request, max, first: undefined, chunks: undefined, size: 0, settled: false });
  }

  /**
   * A request arriving while the listener drains is not taken on. Its refusal waits for the end of
   * the loop turn, when node has read every request of the bytes that brought it: the client should
   * go elsewhere (`connection: close`), but only a connection's last answer may say so, since node
   * sends nothing queued behind it (a pipelining client's refusals after it would go unanswered).
   */
  private refuseDraining(res: ServerResponse): void {
    if (unsent(res.req.socket as HttpSocket).at(-1) === res) res.setHeader('connection', 'close');
    this.refuse(res, stoppingProblem(this.stopReason, 'retry'));
  }

  /** The route publishing on `pathname` now, if any. */
  private publishRoute(pathname: string): RouteEntry | undefined {
    return this.staticPublish.get(pathname) ?? (this.router.find('POST', pathname)?.store as { route: RouteEntry } | undefined)?.route;
  }

  /** Whether `GET pathname` is an event stream; asked only off the publish path, which stays one lookup. */
  private isStreamPath(pathname: string): boolean {
    return this.router.find('GET', pathname) !== null;
  }

  /** The body is in (undefined: it was larger than maxBodyBytes), or reading it failed; see readBody. */
  bodyRead(req: IncomingMessage, p: PendingBody, body: Buffer | undefined, err?: Error): void {
    if (err) return this.failed(req, p.res, err);
    if (p.codings !== undefined && body !== undefined) {
      const { codings } = p;
      p.codings = undefined;
      return void decodeBody(body, codings, p.max).then(
        (decoded) => (decoded.ok ? this.bodyRead(req, p, decoded.body) : this.refuse(p.res, decoded.problem)),
        (e) => this.failed(req, p.res, e),
      );
    }
    try {
      this.dispatch(req, p.res, p.route, body, p.isJson, p.contentType, p.params, p.request);
    } catch (e) {
      this.failed(req, p.res, e);
    }
  }

  /**
   * `answer` (a 405 or 406 that says the path is an event stream) for a client the forward
   * target's `auth` admits; its refusal for one it does not. Authentication comes before method and
   * content negotiation (RFC 9110 orders them so): told the path streams, a client without
   * credentials would learn what the auth guards.
   */
  private afterForwardAuth(req: IncomingMessage, res: ServerResponse, path: string, url: string, q: number, answer: () => void): void {
    const gates = (): Gate[] => {
      const gate = this.bindings.forwardAuth?.get(path);
      return gate ? [gate] : [];
    };
    if (gates().length === 0) return answer();
    const request: RequestMeta = { headers: req.headers, query: parseQuery(q === -1 ? '' : url.slice(q + 1)), remoteAddress: req.socket.remoteAddress };
    admitThroughCurrent(gates, request).then(
      (admission) => (admission.ok ? answer() : this.refuseStream(res, path, admission.problem)),
      (err) => this.failed(req, res, err),
    );
  }

  /** A refusal of a forward target's auth; one it could not judge (its key set out of reach) is the operator's to know of. */
  private refuseStream(res: ServerResponse, path: string, refusal: Problem): void {
    if (refusal.logDetail) this.env.logger.warn({ listener: this.name, path, status: refusal.status, where: refusal.logDetail }, 'event stream refused');
    this.refuse(res, refusal);
  }

  /**
   * `GET` on a forward path: an event stream, for clients that ask for one and pass the checks a
   * WebSocket subscriber of the path would (the target's `auth`).
   */
  private serveStream(req: IncomingMessage, res: ServerResponse, path: string, url: string, q: number, params: Readonly<Record<string, string | undefined>>): void {
    if (!wantsEventStream(req)) {
      return this.afterForwardAuth(req, res, path, url, q, () => {
        res.setHeader('allow', this.bindings.publish.has(path) ? 'GET, HEAD, POST' : 'GET, HEAD');
        this.refuse(res, problem('EG_NOT_ACCEPTABLE', `${path} is an event stream: send Accept: text/event-stream`));
      });
    }
    // A stream is its connection's last answer (`Connection: close`): it never finishes on its own,
    // and node sends nothing queued behind it until it does. Marked now, before node parses what a
    // client pipelined behind the GET, so none of that is taken on (onRequest): it would be
    // published with no answer. The connection closes when the stream (or a refusal of it) ends.
    const head = req.method === 'HEAD';
    if (req.httpVersionMajor !== 2 && !head) {
      res.shouldKeepAlive = false;
      (req.socket as HttpSocket)[BEHIND_STREAM] = 0;
    }
    const query = parseQuery(q === -1 ? '' : url.slice(q + 1));
    const request: RequestMeta = { headers: req.headers, query, remoteAddress: req.socket.remoteAddress };
    const gates = (): Gate[] => {
      const gate = this.bindings.forwardAuth?.get(path);
      return gate ? [gate] : [];
    };
    const admitted: Promise<Admission> = admitThroughCurrent(gates, request);
    admitted.then(
      (admission) => {
        if (!admission.ok) return this.refuseStream(res, path, admission.problem);
        // The drain may have begun while the credentials were checked (a key set fetched from an
        // identity provider): refused as the drain refuses a request, to come again elsewhere.
        if (this.draining) return this.refuseDraining(res);
        // A reload may have removed the path meanwhile.
        if (!this.bindings.forward.has(path)) return this.refuse(res, problem('EG_NOT_FOUND', `no route for ${path}`));
        if (head) {
          res.writeHead(200, STREAM_HEADERS).end();
          return this.finished(res);
        }
        const sources: ReadonlyMap<string, ReplaySource> | undefined = this.bindings.replay?.get(path);
        this.streams.open(req, res, path, sources, { request, until: admission.until }, params);
        // The stream outlives the request: it is answered (200) and no longer in flight for a drain.
        this.finished(res);
      },
      (err) => this.failed(req, res, err),
    );
  }

  private dispatch(
    req: IncomingMessage,
    res: ServerResponse,
    route: RouteEntry,
    body: Buffer | undefined,
    isJson: boolean,
    contentType: string,
    params: Record<string, string | undefined>,
    request: RequestMeta,
  ): void {
    if (body === undefined) {
      closeAfter(res);
      return this.refuse(res, problem('EG_PAYLOAD_TOO_LARGE', `the body is over ${this.options.maxBodyBytes ?? DEFAULT_MAX_BODY} bytes`));
    }
    // CloudEvents (HTTP protocol binding): attributes become the message's ce_ headers, data its value.
    const mode = httpMode(contentType, req.headers);
    // A binary-mode event without data (a heartbeat; the SDK's HTTP.binary sends it with its JSON
    // content type and no body) has no value, as a structured one without `data`. An empty body
    // is no JSON, so nothing else could be meant; text and bytes may be empty data.
    const noData = isJson && body.length === 0 && mode === 'binary';
    let value: unknown;
    if (noData) {
      value = null;
    } else if (isJson) {
      const parsed = parseClientJson(body, 'body', this.options.maxJsonDepth, this.options.maxParsedBytes);
      if (!parsed.ok) return this.refuse(res, parsed.problem);
      value = parsed.value;
    } else if (contentType !== 'text/plain') {
      value = body; // a binary-mode CloudEvent's data as bytes (see serve())
    } else {
      try {
        value = utf8.decode(body);
      } catch {
        return this.refuse(res, problem('EG_BAD_REQUEST', 'the text/plain body is not valid UTF-8'));
      }
    }

    let headers = forwardedHeaders(req.headers, req.rawHeaders);
    // `request` as the head's auth judged it (admitHead), whose verdict the auth steps remember for it.
    const ctx: MessageContext = { route: route.name, path: copyParams(params), query: request.query, remoteAddress: request.remoteAddress, request };
    if (mode === 'batch') {
      const batch = decodeBatch(value, headers);
      if (!batch.ok) return this.refuse(res, batch.problem);
      const msgs = batch.events.map((e) => requestMessage(e.value, e.headers));
      return void handleBatch(route, msgs, ctx).then(
        ({ outcome }) => this.answerSoon(req, res, outcome, ctx),
        (err) => this.failed(req, res, err),
      );
    }
    if (mode !== undefined) {
      const event = decodeEvent(mode, value, headers, req.rawHeaders);
      if (!event.ok) return this.refuse(res, event.problem);
      headers = event.headers;
      value = event.value;
    }
    // A JSON body goes on to brokers as the client wrote it where no step changes the value (a structured CloudEvent's value is its data).
    const original = isJson && mode !== 'structured' && !noData ? clientPayloadOriginal(body, value, headers) : undefined;
    const msg: Message = { value, key: null, headers, topic: null, partition: null, offset: null, timestamp: Date.now(), [ORIGINAL]: original };
    const outcome = route.handleNow ? route.handleNow(msg, ctx) : route.handle(msg, ctx);
    if (!(outcome instanceof Promise)) return this.answerSoon(req, res, outcome, ctx);
    outcome.then(
      (o) => this.answerSoon(req, res, o, ctx),
      (err) => this.failed(req, res, err),
    );
  }

  /**
   * Answers are written together at the end of the event-loop turn (setImmediate runs after the
   * loop has read every socket that was ready): with many clients the loop reads all their
   * requests, then writes all the answers, instead of alternating a read and a write per request.
   * On the http-memory benchmark this took a third off the server's CPU per request (both user and
   * system time) and raised throughput by ~40 % (docs/performance.md); an answer waits at most
   * for the rest of one loop turn.
   */
  private answerSoon(req: IncomingMessage, res: ServerResponse, outcome: Outcome, ctx?: MessageContext): void {
    // With what steps want said in the answer (a ratelimit step's RateLimit fields).
    if (this.outcomes.push(req, res, outcome, ctx?.replyHeaders) === 4) setImmediate(this.answerAll);
  }

  private readonly answerAll = (): void => {
    const batch = this.outcomes;
    this.outcomes = [];
    for (let i = 0; i < batch.length; i += 4) this.answer(batch[i] as IncomingMessage, batch[i + 1] as ServerResponse, batch[i + 2] as Outcome, batch[i + 3] as string[] | undefined);
  };

  /** `extra`: headers (names, values) steps set for the answer (MessageContext.replyHeaders). */
  private answer(req: IncomingMessage, res: ServerResponse, outcome: Outcome, extra?: readonly string[]): void {
    if (this.draining && this.givenUp.has(res)) return;
    try {
      if (outcome.outcome === 'delivered') {
        const same = repeatedAnswer(outcome.deliveries, outcome.tagged);
        if (same) sendJsonText(res, 200, same.text, 'application/json', same.bytes, extra);
        else sendJsonText(res, 200, deliveredJson(outcome.deliveries, outcome.tagged), 'application/json', undefined, extra);
        return this.finished(res);
      }
      const answer = answerFor(outcome);
      if (extra !== undefined) for (let i = 0; i + 1 < extra.length; i += 2) res.setHeader(extra[i]!, extra[i + 1]!);
      if (answer.problem) sendProblem(res, answer.problem);
      else sendJson(res, answer.status, answer.body);
    } catch (err) {
      return this.failed(req, res, err);
    }
    this.finished(res);
  }
}

function noop(): void {}

/**
 * node's link from a connection to the answer it is writing (`_httpMessage`), ours to those queued
 * behind it, and on a connection whose last answer is an event stream, how many requests came behind it.
 */
type HttpSocket = Socket & { _httpMessage?: unknown; [QUEUED]?: ServerResponse[]; [BEHIND_STREAM]?: number };
type SendingResponse = ServerResponse & { _last?: boolean };

const QUEUED = Symbol('eventgate.queuedResponses');

/** A request that sent `Expect`: 100-continue not answered yet (cleared once the 100 is sent), or another expectation. */
type ExpectingRequest = IncomingMessage & { [EXPECTS]?: 'continue' | 'unmet' };
const EXPECTS = Symbol('eventgate.expects');
/** `Expect: 100-continue` in any case, as node's HTTP/1.1 parser matches it (lib/_http_server.js, continueExpression). */
const CONTINUE_EXPECTATION = /(?:^|\W)100-continue(?:$|\W)/i;
const BEHIND_STREAM = Symbol('eventgate.requestsBehindStream');

/**
 * The most requests a connection may pipeline behind its event stream (none taken on): past it the
 * connection is closed, stream and all, so what a client makes the gateway hold stays bounded.
 * The listener's summary below and docs/http-edge.md state it.
 */
const MAX_BEHIND_STREAM = 16;

/**
 * Remembers an answer node queued behind the connection's current one (a pipelining client),
 * forgetting those already sent: they are sent in order, so they lead the list. False when the
 * answer just ahead of it closes the connection: node will never send this one.
 */
function queueBehind(socket: HttpSocket, res: ServerResponse): boolean {
  const queued = (socket[QUEUED] ??= []);
  while (queued.length > 0 && queued[0]!.writableFinished) queued.shift();
  const ahead = (queued.at(-1) ?? socket._httpMessage) as SendingResponse | null | undefined;
  queued.push(res);
  return !(ahead instanceof ServerResponse && (ahead._last === true || !ahead.shouldKeepAlive));
}

/**
 * The answers node has still to send on a connection, in order: the one it is writing, then those
 * queued behind it; none after one that closes the connection (node sends nothing after it).
 */
function unsent(socket: HttpSocket): SendingResponse[] {
  const current = socket._httpMessage;
  if (!(current instanceof ServerResponse)) return [];
  const list: SendingResponse[] = [current];
  for (const res of socket[QUEUED] ?? []) if (res !== current && !res.writableFinished) list.push(res);
  const closing = list.findIndex((res) => res._last === true || !res.shouldKeepAlive);
  return closing === -1 ? list : list.slice(0, closing + 1);
}

/**
 * Settles once a connection has sent every answer given (so closing it loses none), including the
 * refusals of requests node reads meanwhile. node parses every request in the bytes of a read at
 * once, so the requests still to come are bytes it has not read: it stops reading a connection
 * when a request arrives while 16 KiB of answers wait behind the one being sent, and reads again
 * once they are out, at the loop's next poll; a refusal is written in that turn's check phase
 * (refuseDraining). This cannot wait on events: node's resuming has one, but a read that finds
 * nothing emits nothing, and what the kernel still holds is not visible to node. So a connection
 * counts as done after three loop turns with nothing to send: its last answer may be flushed in a
 * poll phase (the kernel took it late), then this turn's check, the next turn (its poll reads, and
 * its check writes the refusals after this wait's callback) and the one that sees them pass. Turns,
 * not time: a loaded machine does not cut the wait short. An open event stream, or a connection
 * gone, ends the wait.
 */
async function sent(socket: HttpSocket): Promise<void> {
  let last: ServerResponse | undefined;
  for (let turns = 0; !socket.destroyed; ) {
    // Its answer that closes it is out: its lingering close (lingering-close.ts) ends it once the client has read them.
    const lingering = lingeringClosed(socket);
    if (lingering) return lingering;
    const next = unsent(socket).at(-1);
    if (next === undefined || !next.headersSent) {
      if (turns++ === 3) return;
      await new Promise(setImmediate);
    } else if (next === last || !next.writableEnded) {
      return;
    } else {
      last = next;
      turns = 0;
      await flushed(next).catch(noop);
    }
  }
}

/** How often the drain's end looks whether its connections still send or read (allSent). */
const FLUSH_LOOK_MS = 100;
/** How many looks in a row must find every connection still before the drain's end closes them: a second's worth. */
const FLUSH_STILL_LOOKS = 10;

/**
 * Waits for every connection to send its answers (sent()) before the drain closes them: as long as
 * any of them still moves (answers go out, requests are read), up to LINGER_MS in all, and a
 * second more once none does (a client that stopped reading). A fixed second from the drain's end
 * reset the clients of a gateway short of CPU then, the answers still on their way lost with the
 * reset (200s of delivered messages among them: docs/spec-checklist.md, point 101). So the second
 * is counted in looks, not time: a starved process looks less often and waits as long in looks.
 * Each look comes after the loop's poll phase, so one whose timer fired late first sees what the
 * kernel took meanwhile.
 */
async function allSent(sockets: readonly HttpSocket[]): Promise<void> {
  let done = false;
  const all = Promise.all(sockets.map(sent)).then(() => {
    done = true;
  });
  const start = Date.now();
  let still = 0;
  let before = sockets.map(activity);
  while (!done) {
    await Promise.race([all, delay(FLUSH_LOOK_MS)]);
    if (!done) await new Promise(setImmediate);
    if (done) return;
    const now = sockets.map(activity);
    still = now.some((a, i) => a !== before[i]) ? 0 : still + 1;
    before = now;
    if (still >= FLUSH_STILL_LOOKS || Date.now() - start >= LINGER_MS) return;
  }
}

/** What changes while a connection still sends or reads: its answers to send, the bytes it has yet to hand to the kernel, the bytes it read. */
function activity(socket: HttpSocket): string {
  return `${unsent(socket).length}/${socket.writableLength}/${socket.bytesRead}/${socket.destroyed}`;
}

/**
 * Makes `res` its connection's last answer, for a refusal after which the rest of what the client
 * sends cannot be read as requests (a body too large to read, a head that is not valid). The close
 * lingers (lingering-close.ts): a client still sending its body reads the refusal rather than a
 * reset connection.
 */
function closeAfter(res: ServerResponse): void {
  // HTTP/2 forbids connection headers; the refused stream ends alone, its connection goes on.
  if (res.req.httpVersionMajor === 2) return;
  res.setHeader('connection', 'close');
  lingerWhenClosed(res.req.socket);
}

/**
 * Waits for the HTTP/2 connections, told GOAWAY and their event streams ended, to close on their
 * own once their last answers are sent; at most LINGER_MS (a client that stopped reading).
 */
async function sessionsClosed(sessions: ReadonlySet<Http2Session>): Promise<void> {
  const closing = [...sessions].map((s) => (s.closed || s.destroyed ? undefined : new Promise<void>((r) => s.once('close', () => r()))));
  await Promise.race([Promise.all(closing), delay(LINGER_MS)]);
  for (const s of sessions) s.destroy();
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/** What $path is when the route has no parameters; frozen, since every such request shares them. */
const NO_PARAMS: Record<string, string> = Object.freeze(Object.create(null) as Record<string, string>);

function copyParams(params: Record<string, string | undefined>): Record<string, string> {
  for (const _ in params) return { ...params } as Record<string, string>;
  return NO_PARAMS;
}

/**
 * A request whose body is being read, and what dispatch() needs once it is in: one object per
 * request, found by listener functions shared by every request (through `this`, the request),
 * instead of five closures and their context per request (docs/performance.md).
 */
interface PendingBody {
  listener: HttpListener;
  res: ServerResponse;
  route: RouteEntry;
  isJson: boolean;
  contentType: string;
  /** The body's Content-Encoding, undone before dispatch; undefined for a body sent as is. */
  codings: readonly ContentCoding[] | undefined;
  params: Record<string, string | undefined>;
  /** The client's request as the chain's auth steps see it (`ctx.request`). */
  request: RequestMeta;
  max: number;
  /** The first chunk; most bodies are one. */
  first: Buffer | undefined;
  /** Every chunk, once there is a second. */
  chunks: Buffer[] | undefined;
  size: number;
  settled: boolean;
}

const PENDING = Symbol('eventgate.pendingBody');
type ReadingRequest = IncomingMessage & { [PENDING]: PendingBody };
/** An HTTP/2 request whose requestTimeoutMs passed while its verdict was awaited, its body still arriving (streamTimedOut). */
const TIMED_OUT = Symbol('eventgate.timedOut');
type TimedOutRequest = IncomingMessage & { [TIMED_OUT]?: true };

/**
 * Reads at most `p.max` bytes, then calls the listener's bodyRead() once: with the body, or with
 * undefined when it is larger (the rest is drained, not buffered), or with the error if the
 * request errors first.
 */
function readBody(req: IncomingMessage, p: PendingBody): void {
  (req as ReadingRequest)[PENDING] = p;
  req.on('data', onBodyData);
  req.on('end', onBodyEnd);
  req.on('error', onBodyError);
}

function onBodyData(this: ReadingRequest, chunk: Buffer): void {
  const p = this[PENDING];
  p.size += chunk.length;
  if (p.size > p.max) {
    this.removeAllListeners('data');
    this.resume();
    p.settled = true;
    p.listener.bodyRead(this, p, undefined);
    return;
  }
  if (p.first === undefined) p.first = chunk;
  else (p.chunks ??= [p.first]).push(chunk);
}

function onBodyEnd(this: ReadingRequest): void {
  const p = this[PENDING];
  if (p.settled) return;
  // An HTTP/2 stream the client reset mid-body ends its request as if the body were whole (node's compat API).
  if (this.aborted) return onBodyError.call(this, Object.assign(new Error('the client reset the stream before sending the whole body'), { code: 'ECONNRESET' }));
  p.settled = true;
  p.listener.bodyRead(this, p, p.chunks ? Buffer.concat(p.chunks, p.size) : (p.first ?? EMPTY));
}

function onBodyError(this: ReadingRequest, err: Error): void {
  const p = this[PENDING];
  if (p.settled) return;
  p.settled = true;
  p.listener.bodyRead(this, p, undefined, err);
}

const EMPTY = Buffer.alloc(0);

export const httpListener = defineListener({
  options,
  acceptsPublish: true,
  eventsTold: 'a request says itself that it is an event, with `ce-*` headers (binary mode) or content-type application/cloudevents+json (structured mode)',
  acceptsForward: true,
  socketOptions: ['port', 'host', 'tls', 'http2'],
  // The router decides: it refuses a second path that matches the same requests.
  pathClaims: () => new RoutePathClaims(),
  checkPath: routePathProblem,
  pathParameters,
  forwardFillsParameters: true,
  compile(options, ctx) {
    const corsOk = options.cors ? checkCors(options.cors, ctx) : true;
    // Browsers speak HTTP/2 only over TLS (negotiated in its handshake, ALPN); cleartext h2c would
    // reach none of them, and behind a proxy the proxy speaks HTTP/2 to the browsers (docs/http-edge.md).
    const h2Ok = options.http2 !== true || options.tls !== undefined;
    if (!h2Ok) ctx.report(['http2'], 'EG_CONFIG_SCHEMA', 'http2 needs tls: browsers speak HTTP/2 only over TLS (h2, agreed in the TLS handshake); add tls, or remove http2');
    const compiled = compileTransport(options, ctx);
    return corsOk && h2Ok ? compiled : undefined;
  },
  doc: {
    summary:
      "Accepts `POST <path>` for every route `from: {listener, path}` on it. Paths may have parameters (`/rooms/:room`), bound as `$path` (a parameter's value is at most 100 characters, the router's bound: a longer one matches no route, 404); the query string is `$query`. Bodies are JSON (`application/json`, `application/*+json`, or no content type) or, with `text/plain` (UTF-8: another `charset` is a 415), a string value; `Content-Type` lines that disagree are a 400 (node would take the first, a proxy in front perhaps another); lines naming one media type with the same parameters agree however spelled (`application/json` and `application/json; charset=UTF-8`: JSON, and `text/plain` without a charset, is read as UTF-8, and `charset=utf8` or `us-ascii` reads as `utf-8` does). A body may be compressed (`Content-Encoding: gzip`, `deflate` or `br`, as log shippers and telemetry exporters send): it is decoded before anything else sees it, never to more than `maxBodyBytes` (413), and one that is not valid data of its coding is a 400; another coding is a 415 whose `Accept-Encoding` header lists these (a transfer coding other than `chunked`, `Transfer-Encoding: gzip, chunked`, is a 501: compress with `Content-Encoding`). [CloudEvents](https://cloudevents.io) are recognised in every mode of the HTTP binding: binary (`ce-*` headers, the body is the data), structured (`application/cloudevents+json`) and batched (`application/cloudevents-batch+json`, the events handled in order and answered together; on a failure the answer says how many were delivered before it); a missing or malformed required attribute is a 400 `EG_CLOUDEVENT_INVALID` naming it. The attributes travel as the message's `ce_<name>` headers and `$ce` in expressions; the data is the value. A JSON body goes on to brokers and webhooks as the client wrote it (spacing, number spelling, escapes; a leading UTF-8 byte order mark, which JSON may not carry on, is left off) wherever no step changed the value; a transform's result is written as JSON. Request headers travel with the message, except hop-by-hop, credential and content-negotiation headers (`host`, `connection`, `content-length`, `authorization`, `cookie`, `accept*`, `user-agent`, ...) and the fetch metadata browsers add (`sec-*`, `priority`, `dnt`, `upgrade-insecure-requests`); a header value is read as UTF-8 (what curl and Go send for `Jürgen`), one that is not valid UTF-8 as Latin-1 (a byte per character, as Python's urllib and node's own client send `ü`). " +
      "A request with `Expect: 100-continue` (curl sends it with a body over 1 MiB) gets its `100 Continue` only once its head passed what the head alone decides (path, method, the credentials an `auth` step at the head of the route's chain reads, content type and coding, a declared length over `maxBodyBytes`): a refusal comes instead, before the body is sent, and closes the connection; another expectation is a 417. Every input is bounded (body, head size, header count, time to send, connections, JSON depth) with safe defaults; JSON bodies with `__proto__` keys, invalid UTF-8, numbers beyond a double or an object giving a member name twice are refused with 400 (docs/security.md). On shutdown new requests get 503 `EG_SHUTTING_DOWN` while those in flight finish; one still in flight when `admin.drainTimeoutMs` runs out gets that 503 too, its detail saying whether its message may have been delivered or its body had not all arrived. Requests a client pipelines on one connection get one answer each, in order, only the last with `Connection: close`. With `tls` it serves HTTPS, and with `http2: true` HTTP/2 as well to the clients that offer it (one connection for all requests and event streams of a browser; docs/http-edge.md); with `cors`, browsers on the listed origins may call it, and browser requests from other origins are refused with 403. " +
      "A route `to: {listener, path}` on an http listener makes `GET <path>` with `Accept: text/event-stream` a [Server-Sent Events](https://html.spec.whatwg.org/multipage/server-sent-events.html) stream (`EventSource` in browsers, `curl -N`): each message is one event (`data:` the value as JSON, or the envelope / structured CloudEvent with `format`; `event:` the CloudEvent type when there is one, other than one of the gateway's own notices, `eventgate.*`; `id:` the position in the source topic after a tag of that source, `<tag>~<partition>:<offset>`, one pair per partition, the tag four characters of a hash of the broker, the topic and a JetStream subject's stream; on a path several routes feed, `<route>=<tag>~<positions>` per route, `;`-separated). A client that reconnects with `Last-Event-ID` (a new EventSource, which cannot send it: `?lastEventId=` in the URL; the header wins) first gets, through the route's chain, what the broker still retains after that position (memory topics: their `retain` messages; Kafka: what the cluster retains, up to 10 000 records; a NATS JetStream subject: what its stream holds, up to 10 000 messages; MQTT, AMQP and core NATS keep no position, so their events have no id), then the live stream, with no gap and no duplicate; when some of it is no longer retained an `eventgate.resume` event with `gap: true` says so. An id of another source (one a client kept across a reload that changed the route's topic, or across a restart or to another instance from a memory topic, whose offsets begin again with each run and are each instance's own) is no position of this one: the client is sent the source from its oldest retained message, after the same notice; an id without a tag (given before tags, by an earlier release) is read as a position of the route's source. A forward path with parameters (`/events/:room`) is filled from the path parameters of the same names the message has: a message published on `/room/:room` reaches the streams of its own room only, one without them (consumed from a broker) every stream whose path the forward path matches. The target's `auth` is checked before the stream opens (401/403), and before a `406` for a request without that `Accept` or a `405` for another method, which are told only to a client it admits; heartbeat comments keep idle streams open through proxies; over HTTP/1.1 a stream is its connection's last answer (`Connection: close`): nothing a client pipelines behind the `GET` is published, and a connection with more than 16 requests behind its stream is closed; a client that does not read is disconnected once `events.maxBufferedBytes` are waiting for it. Streams stay open through a reload while some route still forwards to their path, the route changed or not (as do those of a path whose parameters it only renames); a stream the gateway ends because its credential expired or was revoked, a reload took its origin off `cors.origins`, or a reload removed its path, gets a last `eventgate.end` event (`{\"status\":401|403|404,\"reason\":...}`), since the browser's reconnect would be refused with a status no page can read.",
    example:
      'listeners:\n  api:\n    kind: http\n    port: 8443\n    maxBodyBytes: 65536\n    tls: {cert: certs/api.pem, key: certs/api-key.pem}\n    cors:\n      origins: [https://app.example.com]\n      headers: [content-type, authorization]\n    events: {heartbeatMs: 15000}\nroutes:\n  # GET https://host:8443/orders/stream with Accept: text/event-stream\n  - name: order-stream\n    from: {broker: local, topic: orders}\n    to: {listener: api, path: /orders/stream}',
  },
  create: (name, options, env) => new HttpListener(name, options, env),
});
