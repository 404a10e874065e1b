/**
 * The webhook target's HTTP client: undici (the client behind Node's own fetch), one per target,
 * keeping up to `concurrency` connections alive per origin with one request at a time on each: a
 * Client per slot for the origin of a fixed URL, an Agent (a Pool per origin) for URLs computed per message. node:http's client (ClientRequest, the Agent's bookkeeping, the IncomingMessage stream)
 * cost more CPU per request than the rest of a delivery's path; undici's dispatch API costs a
 * fraction of it and leaves HTTP/1.1 framing (chunked answers, 1xx, close-delimited bodies,
 * connection reuse) to a client that is maintained for it. A delivery needs only the status, the
 * `Retry-After` header and, for a failure, the beginning of the body; a 2xx body is read and
 * dropped so the connection can be reused.
 */
import { TLSSocket } from 'node:tls';
import type { buildConnector, Dispatcher } from 'undici';
import { whenUsed } from '../when-used.js';

/** undici is loaded with the first webhook target: a gateway without one pays neither its memory nor its start-up time. */
const undici = whenUsed<typeof import('undici')>(import.meta.url, 'undici');

/**
 * The TLS alert an endpoint sent on a connection still open, by the connection's addresses and
 * ports (connectionKey). Over TLS 1.3 the client's handshake ends before the server has judged its certificate, so an
 * endpoint that requires one (mutual TLS, which webhook targets do not speak) refuses the connection
 * after the request went out: the socket has the alert (`ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED`)
 * first, but undici fails the request with its own `other side closed`, which read as an endpoint
 * that closed the connection and may have taken the message.
 */
const tlsAlerts = new Map<string, Error>();
let defaultConnector: buildConnector.connector | undefined;

/**
 * undici's own connector (its defaults; with `ca`, trusting those CAs instead of the system's),
 * noting the TLS alerts of each connection (tlsAlerts).
 */
function connectorFor(ca: string | undefined): buildConnector.connector {
  let base: buildConnector.connector | undefined;
  return (options, callback) => {
    base ??= ca === undefined ? (defaultConnector ??= undici().buildConnector({})) : undici().buildConnector({ ca });
    base(options, (err, socket) => {
      if (socket instanceof TLSSocket) {
        const key = connectionKey(socket);
        socket.on('error', (e: Error & { code?: string }) => {
          if (e.code?.startsWith('ERR_SSL_') && !tlsAlerts.has(key)) tlsAlerts.set(key, e);
        });
        // After the request's own error, which undici gives before the socket's close.
        socket.once('close', () => setImmediate(() => tlsAlerts.delete(key)));
      }
      (callback as (err: Error | null, socket: unknown) => void)(err, socket);
    });
  };
}

interface SocketEnds {
  localAddress?: string;
  localPort?: number;
  remoteAddress?: string;
  remotePort?: number;
}

/**
 * One connection's key, from the socket or from the copy of its ends undici's error carries. Both
 * ends: Linux may give one local port to two connections to different endpoints at once, and one
 * endpoint's alert would be told of the other's failure. Reading them at connect also keeps them
 * on the socket (node caches them) for undici's copy after the close.
 */
function connectionKey(s: SocketEnds): string {
  return `${s.localAddress}:${s.localPort}>${s.remoteAddress}:${s.remotePort}`;
}

/** The TLS alert behind undici's `other side closed` (or a reset), when the endpoint sent one. */
function tlsAlertBehind(err: Error & { code?: string; socket?: SocketEnds }): Error | undefined {
  if (tlsAlerts.size === 0 || !CLOSED_UNANSWERED.has(err.code!) || err.socket === undefined) return undefined;
  return tlsAlerts.get(connectionKey(err.socket));
}

/**
 * A request as the target prepared it: header names in lower case, values checked. It is also
 * what undici's dispatch() is given (the timeouts are the target's own), so a try makes no
 * options object of its own, and every try of a message sends the same one.
 */
export interface ClientRequest {
  /** `http(s)://host:port`. */
  readonly origin: string;
  /** Path and query string. */
  readonly path: string;
  readonly method: 'POST' | 'PUT' | 'PATCH';
  /** Name, value, name, value, ... */
  readonly headers: string[];
  readonly body: Buffer;
  readonly headersTimeout: 0;
  readonly bodyTimeout: 0;
  /**
   * false: a connection carries one request at a time anyway (`pipelining: 1`), and a blocking
   * request costs undici one more pass of its dispatch loop per answer (to unblock it).
   */
  readonly blocking: false;
}

/** A complete answer: its status, `Retry-After`, and (for non-2xx answers) up to MAX_TEXT characters of its body. */
export interface ClientAnswer {
  readonly status: number;
  readonly retryAfter: string | undefined;
  /** `Location` of a 3xx answer (redirects are not followed). */
  readonly location: string | undefined;
  readonly text: string;
}

/**
 * Told how a request ended: an answer, or why there is none (the error's `code` when it has one).
 * An object rather than a callback, so a try needs no closure; `ticket` is the one request() was
 * given, so a listener making several requests one after the other knows which one ended.
 */
export interface AnswerListener {
  answered(ticket: number, err: (Error & { code?: string }) | undefined, answer: ClientAnswer | undefined): void;
  /** The request was lost unanswered on a kept-alive connection and is being sent again on a new one (not a try). */
  resent?(ticket: number): void;
}

/**
 * What a sender that is no HTTP client may answer a try with instead of holding it for the
 * target's `timeoutMs`: the try ends as that timer would end it (a config test's endpoint that
 * does not answer, src/testing/recording-endpoints.ts).
 */
export const TIMED_OUT: Error & { code?: string } = Object.assign(new Error('no answer within the timeout'), { code: 'EG_TIMED_OUT' });

/** A request in flight; abort() ends it (its connection is closed) without a callback. */
export interface Exchange {
  /**
   * The request went out on a connection (undici's onConnect: a socket was open and the request
   * written to it), so an endpoint that then failed to answer may have taken it; before that (a
   * refused connection, DNS, TLS) it cannot have.
   */
  readonly sent: boolean;
  /**
   * The answer as far as it came: once its status line and headers did (a status), with the body
   * kept so far; else undefined. A try cut by its timer is judged by it (its body stalled).
   */
  readonly answer: ClientAnswer | undefined;
  abort(): void;
}

/**
 * The most header bytes of an answer the client reads: undici's default is node's 16 KiB
 * (`--max-http-header-size`), past which it fails the request unread. A 200 with 20 KiB of headers
 * (cookies, a long CSP, many `Link`s) was then taken for a broken answer and the message sent again,
 * once per try, to an endpoint that had accepted it each time. Go's client reads up to 10 MB, curl
 * 100 KiB per header; 1 MiB bounds what one connection buffers.
 */
export const MAX_ANSWER_HEADER_BYTES = 1024 * 1024;
/** Body bytes of a failed answer kept for the log (enough for MAX_TEXT characters of UTF-8). */
const MAX_TEXT = 4096;
const ABORTED = new Error('the webhook target gave up on this request');
/** Errors of a connection the other side closed or reset: undici's `other side closed`, a reset, a write to a closed socket. */
const CLOSED_UNANSWERED = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);

/**
 * Where a webhook target sends its requests: the HttpClient below, or a config test's recorder
 * (src/testing/run-tests.ts), which answers in-process so that `eventgate test` calls no URL.
 */
export interface RequestSender {
  /** Sends `req`; the answer (or the error) goes to `listener` with `ticket`. `lane` is the caller's slot. */
  request(req: ClientRequest, listener: AnswerListener, ticket: number, lane: number): Exchange;
  /** Loads what a first request needs, before its try's clock starts (WebhookTarget.attempt). */
  load?(): void;
  close(): void;
}

export class HttpClient implements RequestSender {
  /**
   * Connections to the target's fixed origin, one undici Client per slot of the target (a slot has
   * at most one request in flight): a request goes straight to its connection, without a Pool's
   * search for a free one and its `drain` events (an array spread) after every answer.
   */
  private readonly clients: (Dispatcher | undefined)[] = [];
  /** Per lane, the requests its current connection has answered (0 on a new connection): above 0, the next request reuses it. */
  readonly served: number[] = [];
  /** Pools per origin, for URLs computed per message (made with the first such request). */
  private agent: Dispatcher | undefined;

  /** How connections are opened: with the target's `tls.ca`, when it has one. */
  private readonly connect: buildConnector.connector;

  constructor(
    private readonly connections: number,
    private readonly origin?: string,
    ca?: string,
  ) {
    this.connect = connectorFor(ca);
  }

  /**
   * Loads undici, which the first request would load inside its try's time: 0.3-0.5 s on a loaded
   * machine, against a `timeoutMs` of 1 s (a try taken for a timeout, the message sent again).
   */
  load(): void {
    undici();
  }

  /** Sends `req`; `lane` (0 to connections - 1) names the caller's slot, whose connection a request to the fixed origin takes. */
  request(req: ClientRequest, listener: AnswerListener, ticket: number, lane: number): Exchange {
    if (req.origin !== this.origin) {
      const handler = new AnswerHandler(listener, ticket, undefined, lane);
      (this.agent ??= new (undici().Agent)({ connections: this.connections, pipelining: 1, maxHeaderSize: MAX_ANSWER_HEADER_BYTES, connect: this.connect })).dispatch(req, handler);
      return handler;
    }
    const handler = new AnswerHandler(listener, ticket, this, lane, req);
    this.dispatch(req, handler, lane);
    return handler;
  }

  /** Sends `req` on the lane's connection (a new one when the lane has none). */
  dispatch(req: ClientRequest, handler: Dispatcher.DispatchHandler, lane: number): void {
    let client = this.clients[lane];
    if (client === undefined) {
      client = this.clients[lane] = new (undici().Client)(this.origin!, { pipelining: 1, maxHeaderSize: MAX_ANSWER_HEADER_BYTES, connect: this.connect });
      client.on('connect', () => {
        if (this.clients[lane] === client) this.served[lane] = 0;
      });
    }
    client.dispatch(req, handler);
  }

  /**
   * A request to the fixed origin failed (no connection, a reset, a timeout): the lane's next one
   * gets a new Client, as a Pool drops a client whose connection failed rather than reusing it.
   */
  failed(lane: number): void {
    const client = this.clients[lane];
    if (client === undefined) return;
    this.clients[lane] = undefined;
    this.served[lane] = 0;
    // Not from inside the client's own callback.
    setImmediate(() => void client.destroy().catch(() => undefined));
  }

  /** Closes every connection: requests in flight end with an error (the route is stopping and gave them their grace). */
  close(): void {
    for (const d of [...this.clients, this.agent]) void d?.destroy().catch(() => undefined);
  }
}

/**
 * One request's handler in undici's own interface (raw header buffers: its newer one parses every
 * answer's headers into an object first), and the answer it collects: one object per request, with
 * methods rather than a closure per callback.
 */
class AnswerHandler implements Dispatcher.DispatchHandler, ClientAnswer, Exchange {
  status = 0;
  retryAfter: string | undefined = undefined;
  location: string | undefined = undefined;
  text = '';
  private over = false;
  private cut: ((err: Error) => void) | undefined = undefined;
  /** The request went out on a connection that had answered before (a lane's kept-alive one). */
  private reused = false;
  /** Sent again once, on a new connection, after the kept-alive one failed it unanswered. */
  private resent = false;
  /** Body chunks of a non-2xx answer, up to MAX_TEXT bytes. */
  private kept: Buffer[] | undefined = undefined;
  private keptBytes = 0;

  constructor(
    private readonly listener: AnswerListener,
    private readonly ticket: number,
    /** The client whose lane's connection carried the request (undefined: the Agent's). */
    private readonly client: HttpClient | undefined,
    private readonly lane: number,
    /** The request, to send it again (fixed-origin lanes only). */
    private readonly req?: ClientRequest,
  ) {}

  get sent(): boolean {
    return this.cut !== undefined;
  }

  get answer(): ClientAnswer | undefined {
    if (this.status === 0) return undefined;
    this.keepText();
    return this;
  }

  /** The failed answer's body kept so far, as text. */
  private keepText(): void {
    if (this.kept) this.text = Buffer.concat(this.kept).toString('utf8').slice(0, MAX_TEXT);
  }

  onConnect(abort: (err: Error) => void): void {
    this.cut = abort;
    if (this.client !== undefined) this.reused = (this.client.served[this.lane] ?? 0) > 0;
    if (this.over) abort(ABORTED);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[]): boolean {
    this.status = statusCode;
    for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
      const name = rawHeaders[i]!;
      if (name.length === 11 && name.toString('latin1').toLowerCase() === 'retry-after') this.retryAfter = rawHeaders[i + 1]!.toString('latin1');
      else if (name.length === 8 && statusCode < 400 && name.toString('latin1').toLowerCase() === 'location') this.location = rawHeaders[i + 1]!.toString('latin1');
    }
    if (statusCode >= 300) this.kept = [];
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.kept && this.keptBytes < MAX_TEXT) {
      this.kept.push(chunk);
      this.keptBytes += chunk.length;
    }
    return true;
  }

  onComplete(): void {
    if (this.over) return;
    this.over = true;
    if (this.client !== undefined) this.client.served[this.lane] = (this.client.served[this.lane] ?? 0) + 1;
    this.keepText();
    this.listener.answered(this.ticket, undefined, this);
  }

  onError(err: Error): void {
    if (this.over) return;
    this.client?.failed(this.lane);
    const alert = this.status === 0 ? tlsAlertBehind(err) : undefined;
    if (alert) err = alert;
    else if (this.status === 0 && this.reused && !this.resent && CLOSED_UNANSWERED.has((err as { code?: string }).code!)) {
      // The receiver closed the kept-alive connection as this request went out on it (an idle
      // timeout shorter than ours, not announced): it crossed the close unread. Sent once more, on a
      // new connection, and not counted as a try, as Go's net/http does (errServerClosedIdle).
      this.resent = true;
      this.reused = false;
      this.cut = undefined;
      this.client!.dispatch(this.req!, this, this.lane);
      this.listener.resent?.(this.ticket);
      return;
    }
    this.over = true;
    // The status line is the endpoint's word, whatever became of the body after it: a 2xx its
    // acceptance (no reason to send the message again), a 410 its refusal, a 429 its ask to wait
    // Retry-After. Taken as a closed connection, a refusal was retried and said to "may have reached it".
    if (this.status >= 200) this.listener.answered(this.ticket, undefined, this.answer);
    else this.listener.answered(this.ticket, err, undefined);
  }

  abort(): void {
    if (this.over) return;
    this.over = true;
    this.client?.failed(this.lane);
    this.cut?.(ABORTED);
  }
}
