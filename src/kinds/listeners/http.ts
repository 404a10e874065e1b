import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import FindMyWay from 'find-my-way';
import { problem, type Problem } from '../../errors.js';
import { sendJson, sendProblem } from '../../runtime/http-reply.js';
import { answerFor } from '../../runtime/answer.js';
import { parseClientJson } from '../../runtime/client-json.js';
import type { Message, MessageContext } from '../../runtime/message.js';
import type { Outcome } from '../../runtime/outcome.js';
import type { ListenerBindings, ListenerKind, ListenerRuntime, ListenerTelemetry, RouteEntry, RuntimeEnv } from '../contracts.js';
import { checkCors, CorsPolicy, corsSchema, type CorsOptions } from './cors.js';
import { applyLimits, compileTransport, createTransport, parseQuery, rotateTls, tooManyHeaders, transportDocOptions, transportSchema, type TransportOptions } from './transport.js';
import { boundAddress, listen } from '../../runtime/bind.js';

export interface HttpOptions extends TransportOptions {
  kind: 'http';
  maxBodyBytes?: number;
  cors?: CorsOptions;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

const DEFAULT_MAX_BODY = 1024 * 1024;

/**
 * Request headers that describe the HTTP exchange (or carry credentials) rather than the event;
 * every other header travels with the message.
 */
const NOT_FORWARDED = new Set([
  'host', 'connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'content-length', 'expect',
  'authorization', 'cookie', 'proxy-authorization', 'proxy-connection', 'accept', 'accept-encoding', 'accept-language', 'user-agent',
]);

type Router = FindMyWay.Instance<FindMyWay.HTTPVersion.V1>;

/** `POST <path>` → message on the route bound to that path (spec §4). */
export class HttpListener implements ListenerRuntime {
  readonly kind = 'http';
  private readonly server: Server;
  private router: Router = FindMyWay();
  private options: HttpOptions;
  private cors: CorsPolicy | undefined;
  private inFlight = 0;
  private draining = false;
  private idle: (() => void) | undefined;
  private bound = false;
  private readonly telemetry: ListenerTelemetry | undefined;
  /** Route outcomes waiting to be answered at the end of this event-loop turn (see answerSoon). */
  private outcomes: { req: IncomingMessage; res: ServerResponse; outcome: Outcome }[] = [];

  constructor(readonly name: string, options: HttpOptions, private readonly env: RuntimeEnv) {
    this.options = options;
    this.telemetry = env.telemetry?.listener(name);
    this.cors = options.cors ? new CorsPolicy(options.cors) : undefined;
    this.server = createTransport(name, options, (req, res) => this.onRequest(req, res), env.logger);
  }

  async start(): Promise<void> {
    await listen(this.server, this.options.port, this.options.host ?? '0.0.0.0');
    this.bound = true;
    this.server.on('error', (err) => this.env.logger.error({ listener: this.name, err: err.message }, 'listener error'));
  }

  async stop({ drainMs }: { drainMs: number }): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    if (this.inFlight > 0) {
      await Promise.race([new Promise<void>((resolve) => (this.idle = resolve)), delay(drainMs)]);
    }
    this.server.closeAllConnections();
    this.bound = false;
    await closed;
  }

  reconfigure(options: unknown): void {
    const next = options as HttpOptions;
    rotateTls(this.server, this.options.tlsMaterial, next.tlsMaterial);
    applyLimits(this.server, next);
    this.cors = next.cors ? new CorsPolicy(next.cors) : undefined;
    this.options = next;
  }

  bind(bindings: ListenerBindings): void {
    const router = FindMyWay();
    for (const [path, route] of bindings.publish) router.on('POST', path, noop, { route });
    this.router = router;
  }

  address() {
    return boundAddress(this.server);
  }

  health() {
    return this.bound ? { ready: true } : { ready: false, detail: 'not listening' };
  }

  status() {
    return { inFlight: this.inFlight };
  }

  /**
   * One request, start to end, with callbacks rather than async functions: on a small message every
   * promise and microtask hop is a measurable share of the request (docs/performance.md), so the
   * route's promise is the only one.
   */
  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    this.inFlight++;
    try {
      this.serve(req, res);
    } catch (err) {
      this.failed(req, res, err);
    }
  }

  /** Every request ends through exactly one of finished(), refuse() or failed(). */
  private finished(res: ServerResponse): void {
    this.telemetry?.httpResponse(res.statusCode);
    if (--this.inFlight === 0 && this.idle) this.idle();
  }

  private refuse(res: ServerResponse, p: Problem): void {
    sendProblem(res, p);
    this.finished(res);
  }

  private failed(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    // A client that goes away mid-body (or is cut off by requestTimeoutMs) is not the gateway's fault; logging it as an error would let any client flood the log.
    if (req.destroyed && (err as NodeJS.ErrnoException).code === 'ECONNRESET') {
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
    if (this.draining) {
      res.setHeader('connection', 'close');
      return this.refuse(res, problem('EG_SHUTTING_DOWN', 'the gateway is shutting down; retry on another instance'));
    }
    const tooMany = tooManyHeaders(req, this.options);
    if (tooMany) {
      res.setHeader('connection', 'close');
      return this.refuse(res, tooMany);
    }
    const refused = this.cors?.apply(req, res);
    if (refused) return this.refuse(res, refused);
    const found = this.router.find('POST', pathname);
    if (!found) return this.refuse(res, problem('EG_NOT_FOUND', `no route for ${pathname}`));
    if (this.cors && CorsPolicy.isPreflight(req)) {
      this.cors.preflight(res);
      return this.finished(res);
    }
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      return this.refuse(res, problem('EG_METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${pathname}; use POST`));
    }
    const route = (found.store as { route: RouteEntry }).route;

    const contentType = (req.headers['content-type'] ?? 'application/json').split(';')[0]!.trim().toLowerCase();
    const isJson = contentType === 'application/json' || (contentType.startsWith('application/') && contentType.endsWith('+json'));
    if (!isJson && contentType !== 'text/plain') {
      return this.refuse(res, problem('EG_UNSUPPORTED_MEDIA_TYPE', `content type '${contentType}' is not accepted; send application/json (or application/*+json, or text/plain for a string value)`));
    }
    const max = this.options.maxBodyBytes ?? DEFAULT_MAX_BODY;
    const declared = Number(req.headers['content-length']);
    if (declared > max) {
      res.setHeader('connection', 'close');
      return this.refuse(res, problem('EG_PAYLOAD_TOO_LARGE', `the body has ${declared} bytes; this listener accepts at most ${max}`));
    }
    readBody(
      req,
      max,
      (body) => {
        try {
          this.dispatch(req, res, route, body, isJson, found.params, q === -1 ? '' : url.slice(q + 1));
        } catch (err) {
          this.failed(req, res, err);
        }
      },
      (err) => this.failed(req, res, err),
    );
  }

  private dispatch(req: IncomingMessage, res: ServerResponse, route: RouteEntry, body: Buffer | undefined, isJson: boolean, params: Record<string, string | undefined>, search: string): void {
    if (body === undefined) {
      res.setHeader('connection', 'close');
      return this.refuse(res, problem('EG_PAYLOAD_TOO_LARGE', `the body is over ${this.options.maxBodyBytes ?? DEFAULT_MAX_BODY} bytes`));
    }
    let value: unknown;
    if (isJson) {
      const parsed = parseClientJson(body, 'body', this.options.maxJsonDepth, this.options.maxParsedBytes);
      if (!parsed.ok) return this.refuse(res, parsed.problem);
      value = parsed.value;
    } else {
      try {
        value = utf8.decode(body);
      } catch {
        return this.refuse(res, problem('EG_BAD_REQUEST', 'the text/plain body is not valid UTF-8'));
      }
    }

    const msg: Message = { value, key: null, headers: forwardedHeaders(req), topic: null, partition: null, offset: null, timestamp: Date.now() };
    const query = parseQuery(search);
    const remoteAddress = req.socket.remoteAddress;
    const ctx: MessageContext = { route: route.name, path: copyParams(params), query, remoteAddress, request: { headers: req.headers, query, remoteAddress } };
    route.handle(msg, ctx).then(
      (outcome) => this.answerSoon(req, res, outcome),
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
  private answerSoon(req: IncomingMessage, res: ServerResponse, outcome: Outcome): void {
    if (this.outcomes.push({ req, res, outcome }) === 1) setImmediate(this.answerAll);
  }

  private readonly answerAll = (): void => {
    const batch = this.outcomes;
    this.outcomes = [];
    for (const { req, res, outcome } of batch) this.answer(req, res, outcome);
  };

  private answer(req: IncomingMessage, res: ServerResponse, outcome: Outcome): void {
    try {
      const answer = answerFor(outcome);
      if (answer.problem) sendProblem(res, answer.problem);
      else sendJson(res, answer.status, answer.body);
    } catch (err) {
      return this.failed(req, res, err);
    }
    this.finished(res);
  }
}

function noop(): void {}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

function forwardedHeaders(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  const raw = req.headers;
  for (const name in raw) {
    if (NOT_FORWARDED.has(name)) continue;
    const v = raw[name];
    if (v !== undefined) out[name] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

/** What $path is when the route has no parameters; frozen, since every such request shares them. */
const NO_PARAMS: Record<string, string> = Object.freeze(Object.create(null) as Record<string, string>);

function copyParams(params: Record<string, string | undefined>): Record<string, string> {
  for (const _ in params) return { ...params } as Record<string, string>;
  return NO_PARAMS;
}

/**
 * Reads at most `max` bytes, then calls `done` once: with the body, or with undefined when it is
 * larger (the rest is drained, not buffered). `failed` is called instead if the request errors first.
 */
function readBody(req: IncomingMessage, max: number, done: (body: Buffer | undefined) => void, failed: (err: Error) => void): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let settled = false;
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > max) {
      req.removeAllListeners('data');
      req.resume();
      settled = true;
      done(undefined);
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (settled) return;
    settled = true;
    done(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
  });
  req.on('error', (err) => {
    if (settled) return;
    settled = true;
    failed(err);
  });
}

export const httpListener: ListenerKind<HttpOptions> = {
  kind: 'http',
  acceptsPublish: true,
  acceptsForward: false,
  socketOptions: ['port', 'host', 'tls'],
  // The router decides: it refuses a second path that matches the same requests.
  samePath(a, b) {
    const router = FindMyWay();
    router.on('POST', a, noop);
    try {
      router.on('POST', b, noop);
      return false;
    } catch {
      return true;
    }
  },
  checkPath(path) {
    try {
      FindMyWay().on('POST', path, noop);
      return undefined;
    } catch (err) {
      return (err as Error).message;
    }
  },
  schema: {
    type: 'object',
    additionalProperties: false,
    required: ['kind', 'port'],
    properties: {
      kind: { const: 'http' },
      port: { type: 'integer', minimum: 0, maximum: 65535, description: '0 picks a free port (see /admin/status).' },
      host: { type: 'string', default: '0.0.0.0' },
      maxBodyBytes: { type: 'integer', minimum: 1, default: DEFAULT_MAX_BODY },
      cors: corsSchema,
      ...transportSchema,
    },
  },
  compile(options, ctx) {
    const corsOk = options.cors ? checkCors(options.cors, ctx) : true;
    const compiled = compileTransport(options, ctx);
    return corsOk ? compiled : undefined;
  },
  doc: {
    summary:
      'Accepts `POST <path>` for every route `from: {listener, path}` on it. Paths may have parameters (`/rooms/:room`), bound as `$path`; the query string is `$query`. Bodies are JSON (`application/json`, `application/*+json`, or no content type) or, with `text/plain`, a string value. Request headers travel with the message, except hop-by-hop, credential and content-negotiation headers (`host`, `connection`, `content-length`, `authorization`, `cookie`, `accept*`, `user-agent`, ...). ' +
      'Every input is bounded (body, head size, header count, time to send, connections, JSON depth) with safe defaults; JSON bodies with `__proto__` keys, invalid UTF-8 or numbers beyond a double are refused with 400 (docs/security.md). With `tls` it serves HTTPS; with `cors`, browsers on the listed origins may call it, and browser requests from other origins are refused with 403.',
    example: 'listeners:\n  api:\n    kind: http\n    port: 8443\n    maxBodyBytes: 65536\n    tls: {cert: certs/api.pem, key: certs/api-key.pem}\n    cors:\n      origins: [https://app.example.com]\n      headers: [content-type, authorization]',
    options: {
      port: 'TCP port (0: any free port)',
      host: 'bind address (default 0.0.0.0)',
      maxBodyBytes: 'largest accepted body, default 1 MiB (larger: 413)',
      cors: '`{origins: [..] | "*", methods (default [POST]), headers (default [content-type, authorization]), exposeHeaders (default [retry-after]), credentials (default false), maxAge (default 600 s)}`; preflight OPTIONS requests are answered 204',
      ...transportDocOptions,
    },
  },
  create: (name, options, env) => new HttpListener(name, options, env),
};
