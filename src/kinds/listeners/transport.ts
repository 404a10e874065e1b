import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { Http2SecureServer, Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { createRequire } from 'node:module';
import { Server as NetServerClass, type Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { problem, problemBody, type Problem } from '../../core/errors.js';
import { sendProblem } from './http-reply.js';
import { FLOOD_LOG_INTERVAL_MS, RateLimitedWarning } from '../../core/rate-limited-warning.js';
import type { Logger } from '../../log.js';
import { DEFAULT_MAX_JSON_DEPTH, DEFAULT_MAX_PARSED_BYTES } from './client-json.js';
import { answerAndCloseLingering, closeLingering, lingerWhenClosed, lingeringClosed } from './lingering-close.js';
import { certificateAndKeyProblem, pemCertificatesProblem } from '../pem.js';
import { type ListenerCompileContext, STOP_REASON } from '../contracts.js';
import { Type, type Static } from '../define.js';
import type { TObject } from '@sinclair/typebox';

/**
 * The socket side shared by the http and websocket listeners: a plain or TLS server with bounds
 * on everything a client sends before a route sees it (header size and count, how long headers
 * and the whole request may take, connections at once).
 */

/** What the TLS files held, read (and watched) when the config was compiled. */
export interface TlsMaterial {
  cert: string;
  key: string;
  ca?: string;
}

/** Safe defaults for every input bound (docs/security.md lists them). */
export const TRANSPORT_DEFAULTS = {
  /** node's default; larger headers get 431. */
  maxHeaderBytes: 16 * 1024,
  /** Apache's LimitRequestFields; more headers get 431. */
  maxHeaders: 100,
  /** Slowloris bound: the headers must arrive within this (node's default is 60 s). */
  headersTimeoutMs: 10_000,
  /** The whole request, body included (node's default is 5 min). */
  requestTimeoutMs: 30_000,
  /**
   * Above the idle timeout of the load balancers in front (AWS ALB: 60 s), so the proxy closes an
   * idle connection first: node's 5 s raced clients reusing a connection just as it was closed.
   */
  keepAliveTimeoutMs: 65_000,
  maxConnections: 10_000,
  maxJsonDepth: DEFAULT_MAX_JSON_DEPTH,
  maxParsedBytes: DEFAULT_MAX_PARSED_BYTES,
} as const;

/** How often node checks header/request timeouts (its default, 30 s, would make them that coarse). */
const TIMEOUT_CHECK_INTERVAL_MS = 1000;
/** Dropped connections are logged at most this often, so a flood does not flood the log too. */
const DROP_LOG_INTERVAL_MS = FLOOD_LOG_INTERVAL_MS;

/** The `tls` option of a listener that serves TLS (http, websocket, kafka): certificate, key, and a CA for mutual TLS. */
export function tlsServerOption(description: string) {
  return Type.Optional(
    Type.Object(
      {
        cert: Type.String({ minLength: 1, description: 'PEM certificate (chain) file.' }),
        key: Type.String({ minLength: 1, description: 'PEM private key file.' }),
        ca: Type.Optional(
          Type.String({
            minLength: 1,
            description:
              "PEM CA bundle: clients must present a certificate it signed (mutual TLS). A change to the file applies to open connections too: those of clients it no longer trusts are closed (WebSocket 1008, an event stream's `eventgate.end` 403, others once their answers are sent).",
          }),
        ),
      },
      { additionalProperties: false, description },
    ),
  );
}

/** The options of every listener with a socket of its own (http, websocket): address, TLS and input bounds. */
export const transportOptions = {
  port: Type.Integer({ minimum: 0, maximum: 65535, description: 'TCP port (0: any free port, see /admin/status).' }),
  host: Type.Optional(Type.String({ minLength: 1, default: '0.0.0.0', description: 'Bind address (an empty one, which node reads as every interface, is refused: leave the key out).' })),
  tls: tlsServerOption('Serve TLS (https/wss). Files are relative to gateway.yaml and watched: a renewed certificate is used for new connections without a restart.'),
  maxHeaderBytes: Type.Optional(
    Type.Integer({ minimum: 1024, maximum: 1024 * 1024, default: TRANSPORT_DEFAULTS.maxHeaderBytes, description: 'Largest request head (request line and headers); larger: 431.' }),
  ),
  maxHeaders: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, default: TRANSPORT_DEFAULTS.maxHeaders, description: 'Most request headers; more: 431.' })),
  headersTimeoutMs: Type.Optional(
    Type.Integer({
      minimum: 1,
      default: TRANSPORT_DEFAULTS.headersTimeoutMs,
      description:
        'Time a client has to send the request headers; then 408 and the connection is closed. With `tls`, the TLS handshake has this long too (node allows 120 s), then the connection is closed.',
    }),
  ),
  requestTimeoutMs: Type.Optional(
    Type.Integer({ minimum: 1, default: TRANSPORT_DEFAULTS.requestTimeoutMs, description: 'Time a client has to send the whole request; then 408. Open WebSocket connections are not affected.' }),
  ),
  keepAliveTimeoutMs: Type.Optional(
    Type.Integer({
      minimum: 1,
      default: TRANSPORT_DEFAULTS.keepAliveTimeoutMs,
      description:
        "How long an idle keep-alive connection stays open for the client's next request (advertised as `Keep-Alive: timeout=`). Keep it above the idle timeout of a proxy or load balancer in front (AWS ALB: 60 s), so that the proxy, not the gateway, closes an idle connection: a client that sends on a connection the server is closing at that moment gets a reset, not an answer.",
    }),
  ),
  maxConnections: Type.Optional(
    Type.Integer({
      minimum: 1,
      default: TRANSPORT_DEFAULTS.maxConnections,
      description: 'Open connections at once; further ones are closed as they arrive (logged at most every 10 s, counted in `eventgate_listener_connections_dropped_total`).',
    }),
  ),
  maxJsonDepth: Type.Optional(
    Type.Integer({ minimum: 1, maximum: 100_000, default: TRANSPORT_DEFAULTS.maxJsonDepth, description: 'Deepest nesting of JSON arrays/objects accepted in a body or frame; deeper: 400.' }),
  ),
  maxParsedBytes: Type.Optional(
    Type.Integer({
      minimum: 1024,
      default: TRANSPORT_DEFAULTS.maxParsedBytes,
      description: 'Largest estimated heap size of a parsed body or frame (2 bytes per byte, 72 per array/object); larger: 413, refused before parsing.',
    }),
  ),
};

/** The transport options as compiled: the TLS files' contents are read (and watched) at load. */
export type TransportOptions = Static<TObject<typeof transportOptions>> & { tlsMaterial?: TlsMaterial };

/** Reads the TLS files (watched) and checks they make a usable context, so a bad pair is a diagnostic, not a failed bind. */
export function compileTransport<O extends TransportOptions>(options: O, ctx: ListenerCompileContext): O | undefined {
  let ok = true;
  const headersTimeout = options.headersTimeoutMs ?? TRANSPORT_DEFAULTS.headersTimeoutMs;
  const requestTimeout = options.requestTimeoutMs ?? TRANSPORT_DEFAULTS.requestTimeoutMs;
  if (headersTimeout > requestTimeout) {
    ctx.report(['headersTimeoutMs'], 'EG_CONFIG_SCHEMA', `headersTimeoutMs (${headersTimeout}) must not be larger than requestTimeoutMs (${requestTimeout})`);
    ok = false;
  }
  if (!options.tls) return ok ? options : undefined;
  const material = compileTls(options.tls, ctx);
  return ok && material ? { ...options, tlsMaterial: material } : undefined;
}

/** Reads a `tls` option's files (watched) and checks they make a usable context; undefined when they do not (reported). */
export function compileTls(tls: { cert: string; key: string; ca?: string }, ctx: Pick<ListenerCompileContext, 'readFile' | 'report'>): TlsMaterial | undefined {
  const cert = ctx.readFile(tls.cert, ['tls', 'cert']);
  const key = ctx.readFile(tls.key, ['tls', 'key']);
  const ca = tls.ca === undefined ? undefined : ctx.readFile(tls.ca, ['tls', 'ca']);
  if (cert === undefined || key === undefined || (tls.ca !== undefined && ca === undefined)) return undefined;
  const material: TlsMaterial = ca === undefined ? { cert, key } : { cert, key, ca };
  // Node ignores a CA file without a certificate in it: no client certificate would then be trusted.
  const caProblem = ca === undefined ? undefined : pemCertificatesProblem(ca);
  if (caProblem !== undefined) {
    ctx.report(['tls', 'ca'], 'EG_CONFIG_FILE', `CA file '${tls.ca}' cannot be used: ${caProblem}`);
    return undefined;
  }
  const problem = certificateAndKeyProblem(cert, key);
  if (problem !== undefined) {
    const what = problem.at === 'cert' ? `TLS certificate '${tls.cert}'` : problem.at === 'key' ? `TLS key '${tls.key}'` : `TLS certificate '${tls.cert}' and key '${tls.key}'`;
    ctx.report(problem.at === undefined ? ['tls'] : ['tls', problem.at], 'EG_CONFIG_FILE', `${what} cannot be used: ${problem.message}`);
    return undefined;
  }
  return material;
}

/** TLS server options for `material`: a client certificate is required when it has a CA (mutual TLS). */
export function tlsServerOptions(m: TlsMaterial): { cert: string; key: string; ca?: string; requestCert?: boolean; rejectUnauthorized?: boolean } {
  return { ...m, ...(m.ca !== undefined ? { requestCert: true, rejectUnauthorized: true } : {}) };
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * The most streams a client may have open at once on one HTTP/2 connection (nginx's
 * http2_max_concurrent_streams is 128): node's own bound is none (2^32-1), and each open stream is
 * a request the gateway holds. Far above what a page opens (its event streams and its POSTs).
 */
export const HTTP2_MAX_STREAMS = 128;
/** Pseudo-header fields an HTTP/2 request carries on top of its headers (`:method`, `:path`, `:scheme`, `:authority`). */
const HTTP2_PSEUDO_HEADERS = 4;

/**
 * An http or https server with the options' bounds applied. `answered` is told the status of the
 * answers given without a request object (malformed or oversized heads, timeouts, CONNECT), which
 * never reach `handler`: the http listener counts them with the rest of its answers.
 */
export function createTransport(listener: string, options: TransportOptions, handler: Handler, logger: Logger, allow: string, answered?: (status: number) => void, http2 = false): Server {
  const httpOptions = {
    maxHeaderSize: options.maxHeaderBytes ?? TRANSPORT_DEFAULTS.maxHeaderBytes,
    headersTimeout: options.headersTimeoutMs ?? TRANSPORT_DEFAULTS.headersTimeoutMs,
    requestTimeout: options.requestTimeoutMs ?? TRANSPORT_DEFAULTS.requestTimeoutMs,
    connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS,
    // Node would answer a request without Host with a bare 400; the listeners refuse it as problem+json (refuseHostless).
    requireHostHeader: false,
  };
  const m = options.tlsMaterial;
  // The TLS handshake comes before the headers: bounded by the same time (node's own bound is 120 s,
  // which let a client that connects and sends nothing hold a connection twelve times as long).
  const server: Server =
    m && http2
      ? createH2(options, m, handler, httpOptions)
      : m
        ? (createHttpsServer({ ...httpOptions, ...tlsServerOptions(m), handshakeTimeout: httpOptions.headersTimeout }, handler) as unknown as Server)
        : createHttpServer(httpOptions, handler);
  applyLimits(server, options);
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => answerClientError(err, socket, answered));
  // An HTTP/2 CONNECT is a stream with a response object, not a raw socket (RFC 9113 §8.5).
  server.on('connect', (req: IncomingMessage, socket: Duplex) =>
    req.httpVersionMajor === 2 ? refuseConnectStream(socket as unknown as ServerResponse, allow, answered) : refuseConnect(socket, allow, answered),
  );
  const drops = new RateLimitedWarning<undefined>(DROP_LOG_INTERVAL_MS, (_, dropped) =>
    logger.warn({ listener, maxConnections: server.maxConnections, dropped }, 'connection limit reached; closing new connections'),
  );
  server.on('drop', () => drops.occurred(undefined));
  server.on('close', () => drops.close());
  // Other TLS handshake failures (a client that speaks plain HTTP, a port scan) are the client's
  // problem. One that refuses the certificate is most likely the listener's: said, rate-limited.
  const refusals = new RateLimitedWarning<{ reason: string; remote: string | undefined }>(FLOOD_LOG_INTERVAL_MS, (last, refused) =>
    logger.warn(
      { listener, ...last, refused, intervalMs: FLOOD_LOG_INTERVAL_MS },
      "a client refused the listener's TLS certificate (does it trust its issuer, is the chain complete, has it expired?)",
    ),
  );
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!refusesCertificate(err)) return logger.debug({ listener, err: err.message }, 'TLS handshake failed');
    refusals.occurred({ reason: (err as { reason?: string }).reason ?? err.code ?? err.message, remote: (socket as Socket | undefined)?.remoteAddress });
  });
  server.on('close', () => refusals.close());
  return server;
}

/**
 * The TLS alerts by which a client ends a handshake because it does not accept the listener's
 * certificate (a browser that does not trust a self-signed one or its issuer, a chain without its
 * intermediate, an expired one): the client's page sees only a failed connection, so the listener
 * says it and counts it (`eventgate_listener_tls_certificate_refusals_total`).
 */
const CERTIFICATE_REFUSED = /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(?:CERTIFICATE_UNKNOWN|UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_EXPIRED|CERTIFICATE_REVOKED|UNSUPPORTED_CERTIFICATE)$/;

/** Whether a listener's `tlsClientError` is the client refusing the listener's certificate. */
export function refusesCertificate(err: NodeJS.ErrnoException): boolean {
  return typeof err.code === 'string' && CERTIFICATE_REFUSED.test(err.code);
}

/**
 * An HTTP/2 server (ALPN `h2`) that serves HTTP/1.1 too (`allowHTTP1`: ALPN `http/1.1`, or none),
 * its HTTP/1.1 connections through node's http server code with the same bounds as a plain https
 * listener's. Its requests arrive as Http2ServerRequest/Response, whose API is the part of
 * IncomingMessage/ServerResponse the listener uses (HttpListener handles what differs).
 */
function createH2(options: TransportOptions, m: TlsMaterial, handler: Handler, httpOptions: { headersTimeout: number; connectionsCheckingInterval: number }): Server {
  // node:http2 loads here, for a listener with `http2: true` only: at the top it cost every process ~3 ms of CPU (validate's too).
  const { createSecureServer: createHttp2Server } = createRequire(import.meta.url)('node:http2') as typeof import('node:http2');
  const server = createHttp2Server(
    {
      ...tlsServerOptions(m),
      allowHTTP1: true,
      handshakeTimeout: httpOptions.headersTimeout,
      // node resets a stream with more header fields than this (ENHANCE_YOUR_CALM); one more than
      // maxHeaders lets tooManyHeaders() answer 431 with a body, as on HTTP/1.1.
      maxHeaderListPairs: h2HeaderPairs(options),
      settings: h2Settings(options),
    },
    handler as unknown as (req: Http2ServerRequest, res: Http2ServerResponse) => void,
  );
  // Read by node's HTTP/1.1 code for the connections that speak it (the options above are HTTP/2's).
  Object.assign(server, { connectionsCheckingInterval: httpOptions.connectionsCheckingInterval, requireHostHeader: false });
  return server as unknown as Server;
}

/**
 * What the gateway tells HTTP/2 clients of its bounds (SETTINGS): streams at once, and the header
 * list size (RFC 9113 §6.5.2), which node also enforces by resetting the stream (ENHANCE_YOUR_CALM),
 * an answer a client cannot read. Twice maxHeaderBytes, so that a head between the two gets the
 * 431 with a body HTTP/1.1 gets (tooManyHeaders); past it, the reset is the outer bound.
 */
function h2Settings(options: TransportOptions): { maxConcurrentStreams: number; maxHeaderListSize: number } {
  return { maxConcurrentStreams: HTTP2_MAX_STREAMS, maxHeaderListSize: 2 * (options.maxHeaderBytes ?? TRANSPORT_DEFAULTS.maxHeaderBytes) };
}

function h2HeaderPairs(options: TransportOptions): number {
  return (options.maxHeaders ?? TRANSPORT_DEFAULTS.maxHeaders) + HTTP2_PSEUDO_HEADERS + 1;
}

/** Bounds that can change without a new socket (all but the port, host and TLS switch). */
export function applyLimits(server: Server, options: TransportOptions): void {
  // node keeps reading these properties for new connections / its periodic timeout check.
  (server as Server & { maxHeaderSize: number }).maxHeaderSize = options.maxHeaderBytes ?? TRANSPORT_DEFAULTS.maxHeaderBytes;
  server.headersTimeout = options.headersTimeoutMs ?? TRANSPORT_DEFAULTS.headersTimeoutMs;
  server.requestTimeout = options.requestTimeoutMs ?? TRANSPORT_DEFAULTS.requestTimeoutMs;
  // node silently ignores headers beyond maxHeadersCount; one more lets tooManyHeaders() notice and refuse.
  server.maxHeadersCount = (options.maxHeaders ?? TRANSPORT_DEFAULTS.maxHeaders) + 1;
  server.maxConnections = options.maxConnections ?? TRANSPORT_DEFAULTS.maxConnections;
  server.keepAliveTimeout = options.keepAliveTimeoutMs ?? TRANSPORT_DEFAULTS.keepAliveTimeoutMs;
  setHandshakeTimeout(server, server.headersTimeout);
  if (isHttp2(server)) {
    // New sessions get the new bounds; open ones are told the new SETTINGS.
    const h2 = server as unknown as Http2SecureServer;
    h2.updateSettings(h2Settings(options));
    const symbol = Object.getOwnPropertySymbols(server).find((s) => s.description === 'options');
    const own = symbol === undefined ? undefined : ((server as unknown as Record<symbol, { maxHeaderListPairs?: number }>)[symbol] ?? undefined);
    if (own !== undefined) own.maxHeaderListPairs = h2HeaderPairs(options);
  }
}

/** Whether `server` is an HTTP/2 one (an http listener with `http2: true`). */
export function isHttp2(server: NetServer): boolean {
  return typeof (server as unknown as Http2SecureServer).updateSettings === 'function';
}

/**
 * node reads a TLS server's handshake timeout for each new connection from a property that only
 * the `handshakeTimeout` option sets (no setter): found by its symbol's name, so a reload that
 * changes headersTimeoutMs bounds handshakes by the new value too.
 */
function setHandshakeTimeout(server: Server, ms: number): void {
  const symbol = Object.getOwnPropertySymbols(server).find((s) => s.description === 'handshake-timeout');
  if (symbol !== undefined) (server as unknown as Record<symbol, unknown>)[symbol] = ms;
}

/** A changed certificate (same files, new content) applies to new connections; open ones keep theirs. */
export function rotateTls(server: NetServer, before: TlsMaterial | undefined, after: TlsMaterial | undefined): void {
  if (!after || !before) return; // switching TLS on or off changes the socket: the listener is rebound instead
  if (before.cert === after.cert && before.key === after.key && before.ca === after.ca) return;
  (server as unknown as HttpsServer).setSecureContext(after);
}

export function tooManyHeaders(req: IncomingMessage, options: TransportOptions): Problem | undefined {
  const max = options.maxHeaders ?? TRANSPORT_DEFAULTS.maxHeaders;
  if (req.httpVersionMajor === 2) return h2HeadersProblem(req.rawHeaders, max, options.maxHeaderBytes ?? TRANSPORT_DEFAULTS.maxHeaderBytes);
  if (req.rawHeaders.length / 2 <= max) return undefined;
  return problem('EG_HEADERS_TOO_LARGE', `the request has more than ${max} headers`);
}

/**
 * An HTTP/2 request's head bounds, answered 431 with a body as on HTTP/1.1: node resets streams
 * only past them (h2Settings, maxHeaderListPairs). The size is counted as RFC 9113 §6.5.2 counts
 * it (name + value + 32 per field, pseudo-headers included); pseudo-headers are no headers.
 */
function h2HeadersProblem(raw: readonly string[], max: number, maxBytes: number): Problem | undefined {
  let fields = 0;
  let bytes = 0;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.charCodeAt(0) !== 58) fields++;
    bytes += raw[i]!.length + raw[i + 1]!.length + 32;
  }
  if (fields > max) return problem('EG_HEADERS_TOO_LARGE', `the request has more than ${max} headers`);
  if (bytes > maxBytes)
    return problem('EG_HEADERS_TOO_LARGE', `the request's header list is larger than this listener accepts (${maxBytes} bytes, counted as HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE counts it)`);
  return undefined;
}

/**
 * Answers what node's parser rejects before there is a request (oversized or malformed heads,
 * timeouts) with the same problem+json body every other error gets, then closes the connection.
 *
 * A pipelining client's requests before the bad bytes may still be waiting for their answers
 * (their messages on their way to a broker): the refusal waits behind them, or the client would
 * read it as the answer to the first of them, a 400 for a message that was published, and lose
 * the answers to the others with the connection. (Their answers come without the client's help;
 * an error in a request still arriving, a bad chunk or a timeout, is answered at once.) Bytes after a request with `Connection: close`
 * (node: `Data after Connection: close`) are no request at all (RFC 9112 §9.6: nothing after it
 * is processed): they get no answer, and the connection ends after that request's answer. An
 * error in the body of a request answered before its body arrived gets no second answer either.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Socket, answered?: (status: number) => void): void {
  const s = socket as ParsingSocket;
  // Answered already, and closing: what the client still sends is discarded, not parsed (a timeout can still fire).
  if (lingeringClosed(socket) || s[REFUSAL_WAITING]) return;
  const current = s._httpMessage;
  if (err.code === 'HPE_CLOSED_CONNECTION') {
    // node ends the connection after the answer to the request that asked it to; behind an event stream, now.
    if (current?.headersSent && !current.writableEnded) socket.destroy();
    // Till then nothing more is read, as behind a refusal that waits (below).
    else readNoMore(socket);
    return;
  }
  // https servers pass failed TLS handshakes here too: an HTTP answer on a connection with no
  // session would never be sent (it waits to be encrypted), and lingering held the socket 5 s more.
  if (err.code === 'ECONNRESET' || tlsHandshakeFailure(err) || !socket.writable) {
    socket.destroy();
    return;
  }
  // An answer that never ends (an event stream) or is half written: nothing can be sent after it.
  if (current?.headersSent && !current.writableEnded) {
    socket.destroy();
    return;
  }
  // The error is in the body of a request answered already (refused on its head, a 404 or 415, and
  // then its chunked body broke or stalled): it had its one answer. A 400 after it would be taken
  // for the answer to the client's next request; the connection just closes.
  if (answeredWhileArriving(s, current)) {
    closeLingering(socket);
    return;
  }
  // Its request is all in (the error is in bytes after it): its answer comes without the client's
  // help. One whose request is still arriving is what the error is about (a bad chunk, a timeout).
  if (current?.req.complete) {
    s[REFUSAL_WAITING] = true;
    readNoMore(socket);
    let once = false;
    const next = () => {
      if (once) return;
      once = true;
      s[REFUSAL_WAITING] = undefined;
      // node hands the connection to the next queued answer on 'finish' (its listener comes first);
      // after one that closes the connection, node ends it: nothing more to send.
      if (socket.writable && !socket.destroyed) answerClientError(err, socket, answered);
    };
    current.once('finish', next);
    current.once('close', next);
    return;
  }
  const p =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? problem('EG_HEADERS_TOO_LARGE', 'the request head is larger than this listener accepts')
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? problem('EG_REQUEST_TIMEOUT', 'the request was not received in time')
        : problem('EG_BAD_REQUEST', 'the request is not valid HTTP/1.1');
  // The client may still be sending (the rest of a head too large, a body): a close with its bytes
  // unread would reset the connection, and the answer with it (lingering-close.ts).
  socket.write(rawResponse(p));
  closeLingering(socket);
  answered?.(p.status);
}

/**
 * Whether the request node's parser is reading (whose bytes the error is in) had its answer before
 * it all arrived: it is the one being answered, or answered already (node sends the answers in
 * order, so a request still arriving with no answer being sent has had its answer).
 */
function answeredWhileArriving(s: ParsingSocket, current: ServerResponse | null | undefined): boolean {
  const reading = s.parser?.incoming;
  if (!reading || reading.complete) return false;
  return current ? current.req === reading && current.writableEnded : true;
}

/**
 * node's links from a connection to the answer it is sending and to the request its parser reads,
 * and whether a refusal waits behind that answer (answerClientError).
 */
type ParsingSocket = Socket & { _httpMessage?: ServerResponse | null; parser?: { incoming?: IncomingMessage | null } | null; [REFUSAL_WAITING]?: true };
const REFUSAL_WAITING = Symbol('eventgate.refusalWaiting');

/**
 * Stops reading a connection whose parser failed, until its last answer is out. What the client
 * sends meanwhile is no request: read, it was discarded at whatever rate the client sent, for as
 * long as the answers before it took (seconds behind a webhook's tries), past the LINGER_MAX_BYTES
 * a closing connection reads. Unread, it waits in the kernel; the close lingers, so it is read
 * (bounded) then rather than reset with the answers still on their way (lingering-close.ts).
 * The parser is detached first, as closeLingering does: paused while node's parser reads it
 * directly, the socket stopped its handle behind the stream's back, and the lingering close's
 * resume() never read it again.
 */
function readNoMore(socket: Socket): void {
  lingerWhenClosed(socket);
  socket.removeAllListeners('data');
  // A chunk node's own flow control lets through (it resumes sockets it paused) is dropped, and reading stops again.
  socket.on('data', () => socket.pause());
  socket.pause();
}

/** node's errors for a TLS handshake that failed (OpenSSL's, as ERR_SSL_*) or timed out. */
function tlsHandshakeFailure(err: NodeJS.ErrnoException): boolean {
  return err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' || (err.code?.startsWith('ERR_SSL_') ?? false) || (err as { library?: string }).library === 'SSL routines';
}

/**
 * Answers a CONNECT request, which node hands to a 'connect' listener instead of the request
 * handler and, without one, drops with no answer at all. eventgate is no forward proxy: 405 with
 * the methods the server does serve (`allow`), as problem+json, then the connection is closed.
 */
export function refuseConnect(socket: Duplex, allow: string, answered?: (status: number) => void): void {
  const p = connectProblem(allow);
  // node stops reading a CONNECT socket: merely ended, it would never see the client's FIN, and a
  // server with it still open never finishes close() (a shutdown after one CONNECT waited for
  // ever); destroyed once the answer is out, it reset a client that had sent more (a tunnel's first
  // bytes), answer and all. Lingering, it reads on and closes, bounded (lingering-close.ts).
  const writable = socket.writable;
  answerAndCloseLingering(socket as Socket, rawResponse(p));
  if (writable) answered?.(p.status);
}

function connectProblem(allow: string): Problem {
  return problem('EG_METHOD_NOT_ALLOWED', `CONNECT is not supported: this server is not a proxy; use ${allow.replace(/, ([^,]*)$/, ' or $1')}`, { headers: { allow } });
}

/** refuseConnect on an HTTP/2 stream: the 405 on its stream, which node then ends; the connection goes on. */
function refuseConnectStream(res: ServerResponse, allow: string, answered?: (status: number) => void): void {
  const p = connectProblem(allow);
  sendProblem(res, p);
  answered?.(p.status);
}

/** The problem for an HTTP/1.1 request without a Host header (RFC 9112 §3.2), or undefined. */
export function hostless(req: IncomingMessage): Problem | undefined {
  if (req.httpVersion !== '1.1') return undefined;
  if (req.headers.host === undefined) return problem('EG_BAD_REQUEST', 'an HTTP/1.1 request must have a Host header');
  // node keeps the first of several Host lines; a proxy in front may have routed by another (RFC 9112 §3.2: a 400).
  return hostLines(req.rawHeaders) > 1 ? problem('EG_BAD_REQUEST', 'an HTTP/1.1 request must have one Host header, not several') : undefined;
}

function hostLines(raw: readonly string[]): number {
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') n++;
  }
  return n;
}

/**
 * The answer to a request, handshake or frame arriving while its listener stops: not taken on. A
 * shutdown sends the client to another instance, a reload that replaces the listener to a new
 * connection (which reaches its successor).
 */
export function stoppingProblem(reason: string, again: 'retry' | 'send this again'): Problem {
  if (reason === STOP_REASON.shutdown) return problem('EG_SHUTTING_DOWN', `the gateway is shutting down; ${again} on another instance`);
  if (reason === STOP_REASON.replace) return problem('EG_SHUTTING_DOWN', `${reason}; ${again} on a new connection`);
  return problem('EG_SHUTTING_DOWN', reason);
}

/** A complete HTTP/1.1 response with a problem+json body, for sockets without a response object. */
export function rawResponse(p: Problem, extraHeaders: Record<string, string> = {}): string {
  const body = JSON.stringify(problemBody(p));
  const headers = { 'content-type': 'application/problem+json', 'content-length': String(Buffer.byteLength(body)), connection: 'close', ...p.headers, ...extraHeaders };
  return `HTTP/1.1 ${p.status} ${p.title}\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}`)
    .join('\r\n')}\r\n\r\n${body}`;
}

const NO_QUERY: Record<string, string | string[]> = Object.freeze(Object.create(null));

/**
 * `a=1&a=2&b=3` → `{a: ["1","2"], b: "3"}` ($query). A null-prototype object, so `__proto__` stays a
 * plain key; the empty query is one shared frozen object.
 */
export function parseQuery(search: string): Record<string, string | string[]> {
  if (search === '') return NO_QUERY;
  const out: Record<string, string | string[]> = Object.create(null);
  for (const [k, v] of new URLSearchParams(search)) {
    const prev = out[k];
    // Appended in place: copying the list for every repeat was quadratic, so a 16 KiB query of
    // `a&a&a&…` held the event loop for ~45 ms before any auth or rate limit could refuse it.
    if (prev === undefined) out[k] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else out[k] = [prev, v];
  }
  return out;
}

/**
 * Stops accepting connections, leaving the open ones to the drain (stop(): giveUp, sent), which
 * closes each once its answers are out. http's own server.close() also closes at once every
 * connection node takes for idle (closeIdleConnections: its parser between two requests, its
 * current answer ended, node 20.20 lib/_http_server.js), though that answer may not be sent yet and
 * the kernel may hold requests node stopped reading (16 KiB of answers waiting): a client that
 * read its answers late got a reset, answers of messages delivered unsent and its next requests
 * unanswered (docs/spec-checklist.md, point 24). net.Server's close(), public, which http's close()
 * calls after that, only closes the listening socket; `closed` is called once the last connection
 * has closed too. The websocket listener's idle connections (kept open after a 426) stay as well,
 * so a handshake sent on one during the drain is answered 503 (point 715) until stop() closes them.
 */
export function stopAccepting(server: NetServer, closed: () => void): void {
  NetServerClass.prototype.close.call(server, () => closed());
}
