/**
 * Webhook targets: `to: {http: {url, ...}}` delivers each message as an HTTP request. One
 * keep-alive HTTP client per target (webhook-client.ts, undici) holds a connection per request in
 * flight and reuses them; the target retries what may pass later (timeouts, refused connections, 5xx, 408, 429)
 * with exponential backoff, and answers only when the endpoint accepted (2xx) or the last try
 * failed. It is the only place that retries a webhook: a failed delivery is a 502/504 that the
 * route does not retry again, and that consume routes send to their `deadletter` target.
 */
import { createHash, createHmac, randomUUID } from 'node:crypto';
import { binaryHttpHeaders, CE_SPECVERSION, httpAttributeValue, STRUCTURED_TYPE, toStructured } from '../../codecs/cloudevents.js';
import { problem, type Problem } from '../../core/errors.js';
import { bindingsFor, evaluateNow, evaluateThen, expressionProblem, expressionResultProblem, NOT_SYNC, type Expression } from '../../expr/expression.js';
import { userinfoOf } from '../../config/secrets.js';
import type { Logger } from '../../log.js';
import { captured, newPromise } from '../../core/captured-promise.js';
import {
  hugeNumberAt,
  hugeNumberText,
  payloadContentEncoding,
  resultText as expressionText,
  payloadContentType,
  valuePayload,
  type Delivery,
  type Message,
  type MessageContext,
} from '../../core/message.js';
import { isTlsFailure, tlsReason, UNTRUSTED_CHAIN } from '../tls-failures.js';
import type { KindDoc, Target } from '../contracts.js';
import { mapOf, oneOf, oneOfStrings, type Static, stringMatching, Type } from '../define.js';
import { HttpClient, MAX_ANSWER_HEADER_BYTES, TIMED_OUT, type AnswerListener, type ClientAnswer, type ClientRequest, type Exchange, type RequestSender } from './webhook-client.js';

/** `to: {http: ...}` as written (the schema has checked it). */
export type WebhookOptions = Static<typeof webhookOptions>;

/** The options compiled: expressions compiled, defaults filled in. */
export interface WebhookPlan {
  url: string;
  urlExpr: Expression | undefined;
  method: 'POST' | 'PUT' | 'PATCH';
  headers: [string, Expression][];
  timeoutMs: number;
  attempts: number;
  backoffMs: number;
  maxBackoffMs: number;
  concurrency: number;
  /** Messages with equal values are delivered one at a time, in order. */
  orderBy: Expression | undefined;
  cloudevents: 'binary' | 'structured';
  /** HMAC key of the Standard Webhooks signature. */
  secret: Buffer | undefined;
  /** PEM text of `tls.ca`: the CAs trusted instead of the system's and NODE_EXTRA_CA_CERTS's. */
  ca: string | undefined;
}

export const WEBHOOK_DEFAULTS = { method: 'POST', timeoutMs: 10_000, attempts: 3, backoffMs: 200, maxBackoffMs: 10_000, concurrency: 16, cloudevents: 'binary' } as const;

/**
 * An http(s) URL as `new URL()` reads it: a scheme, a host (a name or a bracketed IPv6 address), an
 * optional port from 1 to 65535 (port 0 parses, but no request can reach it), then anything. Stated in the schema so `validate` reports it where it is written.
 */
const HTTP_URL =
  '^https?://([^\\s/?#@]*@)?([^\\s/?#:@\\[\\]<>^|\\\\%]+|\\[[0-9A-Fa-f:.]+\\])(:(0{0,4}[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])?)?([/?#].*)?$';

/** RFC 9110 token (header names); node:http's checkIsHttpToken. */
const HTTP_TOKEN = /^[\^_`a-zA-Z\-0-9!#$%&'*+.|~]+$/;

export const webhookOptions = Type.Object(
  {
    url: oneOf(
      [
        stringMatching(HTTP_URL, 'an http(s) URL (http://host[:port]/path, port 1–65535)'),
        Type.Object({ expression: Type.String({ minLength: 1, description: 'JSONata expression giving the http(s) URL per message.' }) }, { additionalProperties: false }),
      ],
      { description: 'http(s) URL, or `{expression: <JSONata>}` computing it per message; a `user:password@` in it is sent as Basic authentication.' },
    ),
    method: Type.Optional(oneOfStrings(['POST', 'PUT', 'PATCH'] as const, { default: 'POST', description: 'HTTP method of the requests.' })),
    headers: Type.Optional(
      mapOf(Type.String({ minLength: 1 }), {
        // Checked where it is written: a name HTTP does not allow failed every message at run time.
        propertyNames: { pattern: HTTP_TOKEN.source, title: "an HTTP header name (letters, digits and !#$%&'*+-.^_`|~, no spaces or colons)" },
        description:
          'Header name → JSONata expression for its value (a string literal needs quotes: `\'"Bearer ${TOKEN}"\'`). Text written without them that still compiles, `x-tenant: acme-corp` (the fields `acme - corp`: no value, so no header), is a validate warning (EG_CONFIG_TEXT_EXPRESSION): write `x-tenant: \'"acme-corp"\'`.',
      }),
    ),
    timeoutMs: Type.Optional(
      Type.Integer({
        minimum: 1,
        default: WEBHOOK_DEFAULTS.timeoutMs,
        description:
          'Time one try may take, from sending to the end of the answer. A status line that came in time decides the try, its body late or not: a 2xx is a delivery, a 4xx a refusal, a 429 or 5xx a retry (after its Retry-After).',
      }),
    ),
    retry: Type.Optional(
      Type.Object(
        {
          attempts: Type.Optional(
            Type.Integer({
              minimum: 1,
              maximum: 100,
              default: WEBHOOK_DEFAULTS.attempts,
              description:
                'Tries in all (1: no retry). A request a kept-alive connection lost unanswered as the endpoint closed it idle is sent again once on a new connection, and that is not a try.',
            }),
          ),
          backoffMs: Type.Optional(
            Type.Integer({
              minimum: 0,
              default: WEBHOOK_DEFAULTS.backoffMs,
              description:
                'Wait before the second try; doubled for each further one (with jitter). Larger than `maxBackoffMs` (written, or its default) is a config error at this key: every wait would be `maxBackoffMs`.',
            }),
          ),
          maxBackoffMs: Type.Optional(Type.Integer({ minimum: 0, default: WEBHOOK_DEFAULTS.maxBackoffMs, description: 'Longest wait between tries (also caps Retry-After).' })),
        },
        { additionalProperties: false, description: 'How failed tries (timeouts, refused connections, 408, 429, 5xx) are repeated.' },
      ),
    ),
    concurrency: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 10_000,
        default: WEBHOOK_DEFAULTS.concurrency,
        description:
          "Requests in flight at once (= kept-alive connections); more wait their turn. A consume route whose targets are all webhooks has this many messages of a partition in hand at once: kafka and memory sources commit up to the first not yet done; amqp routes and nats JetStream routes acknowledge each message by itself once done, with at most the broker's `prefetch` in hand; mqtt routes have at most 20 in hand (the Receive Maximum their connection asks for), each acknowledged once it and every earlier one are done, in the order they came (docs/scaling.md). Core NATS subjects hand their targets one message at a time, whatever this says.",
      }),
    ),
    orderBy: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "JSONata expression (e.g. `$key`): messages for which it gives the same value are delivered one after another, in order (a failed one retried before the next). On consume routes it is evaluated on the message as consumed, before the steps (which messages the route may have in hand at once), and again on the message the steps give (the target's own order): read a field no step before changes (a transform), or the two readings differ. The `EG_CONFIG_UNDECLARED_FIELD` warning checks the second reading, against the schema of the route's last validate step.",
      }),
    ),
    cloudevents: Type.Optional(
      oneOfStrings(['binary', 'structured'] as const, {
        default: 'binary',
        description: 'How CloudEvent messages are sent: `ce-*` headers and the data as body, or one application/cloudevents+json body.',
      }),
    ),
    tls: Type.Optional(
      Type.Object(
        {
          ca: Type.String({
            minLength: 1,
            description:
              "PEM file (relative to this config) of the CA(s) or self-signed certificate(s) to trust for this target's https endpoints, instead of the system CAs and NODE_EXTRA_CA_CERTS (one holding no certificate is a config error). Watched: a new file rebuilds the route.",
          }),
        },
        {
          additionalProperties: false,
          description:
            'TLS towards the endpoint: `{ca}`, for an endpoint whose certificate a private CA signed (or a self-signed one). With a fixed `http://` url it is a config error (nothing would use it).',
        },
      ),
    ),
    signature: Type.Optional(
      Type.Object(
        {
          secret: Type.String({
            minLength: 1,
            description:
              '`whsec_<base64>` (standard base64, padded with `=` or not: anything else after `whsec_` is a config error) or any other string, used as its UTF-8 bytes — usually `${WEBHOOK_SECRET}`.',
          }),
        },
        { additionalProperties: false, description: 'Sign requests as Standard Webhooks does (webhook-id, webhook-timestamp, webhook-signature headers).' },
      ),
    ),
  },
  { additionalProperties: false, description: 'Deliver each message to an HTTP endpoint (a webhook).' },
);

/**
 * Keys of broker and listener targets, which an `http` target does not take: its options go
 * inside `http` (the target schema forbids them beside it).
 */
export const NOT_WEBHOOK_KEYS = ['topic', 'key', 'path', 'format', 'auth', 'cloudevents', 'qos'] as const;

export const webhookDoc: KindDoc = {
  summary:
    "Delivers each message to an HTTP endpoint. The body is the value as JSON (a string value as text); CloudEvent messages go in binary mode (`ce-*` headers) or, with `cloudevents: structured`, as `application/cloudevents+json`. Each request carries the message's `traceparent` (and its `tracestate`, unless that is over 512 characters or not printable ASCII) and the `headers` the target computes. A 2xx answer is a delivery; timeouts, refused connections, 408, 429 (honouring `Retry-After`) and 5xx are retried with exponential backoff up to `retry.attempts`; other 4xx and 3xx are final (redirects are not followed: the detail names the `Location`). Only then does the route answer: an HTTP publish route answers 200 after the endpoint did (502/504 when the last try failed), and a consume route commits the message after a 2xx, or sends it to its `deadletter` target after the last try. Requests in flight are bounded by `concurrency` over reused keep-alive connections, and a consume route whose targets are all webhooks has that many messages of a partition in hand at once (Kafka and memory: offsets committed up to the first not yet done; AMQP and NATS JetStream: each message acknowledged by itself, at most `prefetch` in hand; MQTT: at most 20 in hand, each acknowledged once it and every message before it are done, in the order they came; not core NATS, one at a time; a reload that changes it applies once the messages in hand are done, the subscription kept: a Kafka member, an AMQP channel, a JetStream consumer's read, an MQTT connection); `orderBy` (e.g. `orderBy: $key`) delivers messages with the same value one at a time, in order, and others meanwhile. With `signature`, requests are signed as [Standard Webhooks](https://www.standardwebhooks.com) specifies. Every answer is counted in `eventgate_webhook_requests_total{route,target,result}` (`target`: the webhook's place in the route's `to`, from 0).",
  example:
    'routes:\n  - name: orders-to-crm\n    from: {broker: kafka, topic: orders}\n    to:\n      http:\n        url: https://crm.example.com/hooks/orders\n        headers: {authorization: \'"Bearer ${CRM_TOKEN}"\'}\n        timeoutMs: 5000\n        retry: {attempts: 5, backoffMs: 500}\n        concurrency: 32\n        orderBy: $key\n        signature: {secret: "${WEBHOOK_SECRET}"}   # quoted: inside {...} YAML needs it\n    deadletter: {broker: kafka, topic: orders-undeliverable}',
};

/** Counts each try's answer: `2xx`, `3xx`, `4xx`, `5xx`, `timeout` or `connection` (refused, reset, DNS; also a request resent after a kept-alive connection was lost). */
export interface WebhookCounters {
  answered(result: WebhookResult): void;
}
export const WEBHOOK_RESULTS = ['2xx', '3xx', '4xx', '5xx', 'timeout', 'connection'] as const;
export type WebhookResult = (typeof WEBHOOK_RESULTS)[number];

/** How one try ended; a failed one's `status` is the endpoint's answer, when it answered. */
type Attempt = { ok: true; status: number } | { ok: false; retry: boolean; retryAfterMs?: number; problem: Problem; result: WebhookResult; status?: number };

/** A webhook target of one route. `close()` releases its kept-alive connections. */
export class WebhookTarget implements Target {
  private readonly client: RequestSender;
  /** Every slot made (at most `concurrency`), and those not in use. */
  private readonly slots: Slot[] = [];
  private readonly free: Slot[] = [];
  /** Tries waiting for a free slot. */
  private readonly waiting: Flight[] = [];
  /** Per orderBy value, the tail of its chain of deliveries. */
  private readonly lanes = new Map<string, Promise<unknown>>();
  private closed = false;
  /** Set by close(refuseLater): messages that come after are refused untried (refusesLater's comment). */
  private refusing = false;
  /** Wakes each retry waiting out its backoff: close() ends the waits. */
  private readonly sleeping = new Set<() => void>();
  /** The endpoint of a fixed `url`, parsed once (a WebhookError when it cannot be, reported per message). */
  private readonly fixed: Endpoint | WebhookError | undefined;

  constructor(
    private readonly plan: WebhookPlan,
    private readonly counters: WebhookCounters | undefined,
    private readonly logger: Logger,
    private readonly route: string,
    /** The target's place among its route's targets: two signed targets of a route send one message with two ids. */
    private readonly place: number,
    /** Text as it may be logged: the config's secrets (a URL whose path is a token) redacted. */
    private readonly shown: (text: string) => string = (text) => text,
    /** What sends the requests instead of HTTP (a config test's recorder). */
    sender?: RequestSender,
  ) {
    this.fixed = plan.urlExpr ? undefined : parseEndpoint(plan.url);
    // One connection per request in flight (the slots bound them), kept alive between them.
    this.client = sender ?? new HttpClient(plan.concurrency, this.fixed instanceof WebhookError ? undefined : this.fixed?.origin, plan.ca);
  }

  /** Requests in flight at once; consume routes whose targets are webhooks hand them this many messages of a partition at once. */
  get concurrency(): number {
    return this.plan.concurrency;
  }

  /** Whether the target signs its requests: its `webhook-id` is then made of the consumed message's identity (MessageContext.source). */
  get signs(): boolean {
    return this.plan.secret !== undefined;
  }

  /** Whether the target keeps an order (`orderBy`). */
  get ordered(): boolean {
    return this.plan.orderBy !== undefined;
  }

  send(msg: Message, ctx: MessageContext): Promise<Delivery> {
    if (!this.plan.orderBy) return this.deliver(msg, ctx);
    return this.laneOf(msg, ctx).then((lane) => (lane === undefined ? this.deliver(msg, ctx) : this.inLane(lane, msg, ctx)));
  }

  /** The message's `orderBy` value as a string, undefined when it has none (no order to keep). Rejects when the expression fails. */
  async laneOf(msg: Message, ctx: MessageContext): Promise<string | undefined> {
    const orderBy = this.plan.orderBy;
    if (!orderBy) return undefined;
    const v = await evaluate(orderBy, msg.value, bindingsFor(msg, ctx), 'orderBy');
    return v === undefined || v === null ? undefined : resultText(v, 'orderBy', Buffer.isBuffer(msg.value));
  }

  /** Delivers after every earlier message of the same lane settled (delivered or failed). */
  private inLane(lane: string, msg: Message, ctx: MessageContext): Promise<Delivery> {
    const before = this.lanes.get(lane) ?? Promise.resolve();
    const mine = before.then(() => this.deliver(msg, ctx));
    const tail = mine.then(
      () => undefined,
      () => undefined,
    );
    this.lanes.set(lane, tail);
    void tail.then(() => {
      if (this.lanes.get(lane) === tail) this.lanes.delete(lane);
    });
    return mine;
  }

  /**
   * Cuts the tries in flight and the retries' waits. With `refuseLater` (a route leaving its group
   * whose endpoint answers nothing: whenNothingSettles) a message that comes after is refused at
   * once, not tried on an endpoint that hangs, one timeout after another. Without it one that comes
   * after is still tried: an HTTP request whose body was still arriving when a reload retired its
   * route is finished on that route (spec §6).
   */
  close(refuseLater = false): void {
    this.closed = true;
    if (refuseLater) this.refusing = true;
    for (const wake of [...this.sleeping]) wake();
    for (const slot of this.slots) {
      clearTimeout(slot.timer);
      slot.timer = undefined;
    }
    this.client.close();
  }

  /**
   * Prepares the request once, then tries it. A first try that succeeds (every delivery's path)
   * costs one promise, one Flight and no timer or closure of its own; retries take the slow road.
   */
  private deliver(msg: Message, ctx: MessageContext): Promise<Delivery> {
    let request: PreparedRequest | Promise<PreparedRequest>;
    try {
      request = this.prepare(msg, ctx);
    } catch (err) {
      return Promise.reject(err);
    }
    return request instanceof Promise ? request.then((r) => this.tries(r)) : this.tries(request);
  }

  private tries(request: PreparedRequest): Promise<Delivery> {
    const delivered = newPromise<Delivery>();
    this.tryOnce(new Flight(this, request, captured.resolve, captured.reject));
    return delivered;
  }

  /** One try of `flight` in a free slot, or once one is free (`concurrency` tries are in flight). */
  private tryOnce(flight: Flight): void {
    // A route leaving its group hands messages on after close() cut its tries: each one waited out
    // timeoutMs on the endpoint that hangs, one message after another, and the leave with them.
    if (this.refusing) return this.ended(flight, { ok: false, retry: false, result: 'connection', problem: notTried(flight.request.display) });
    let slot = this.free.pop();
    if (!slot && this.slots.length < this.plan.concurrency) this.slots.push((slot = new Slot(this.slots.length)));
    if (slot) this.attempt(slot, flight);
    else this.waiting.push(flight);
  }

  /** How a try of `flight` ended: the first settles the message's promise (retry() goes on after a failure), a retry tells retry(). */
  private ended(flight: Flight, a: Attempt): void {
    const onRetry = flight.onRetry;
    if (onRetry) {
      flight.onRetry = undefined;
      onRetry(a);
    } else if (a.ok) flight.resolve({ endpoint: flight.request.display, status: a.status, attempts: 1 });
    else this.retry(flight, a).then(flight.resolve, flight.reject);
  }

  /** After a failed first try: retries with backoff until one passes, one fails for good, or the tries are used up. */
  private async retry(flight: Flight, first: Extract<Attempt, { ok: false }>): Promise<Delivery> {
    const request = flight.request;
    let backoff = this.plan.backoffMs;
    let result: Attempt = first;
    /** What the endpoint last answered, whichever try it was (a dead-letter copy's `endpointStatus`). */
    let endpointStatus: number | undefined;
    for (let attempt = 1; ; attempt++) {
      if (attempt > 1)
        result = await new Promise<Attempt>((resolve) => {
          flight.onRetry = resolve;
          this.tryOnce(flight);
        });
      if (result.ok) return { endpoint: request.display, status: result.status, attempts: attempt };
      if (result.status !== undefined) endpointStatus = result.status;
      if (!result.retry || attempt >= this.plan.attempts || this.closed) {
        const p = result.problem;
        const detail = `${p.detail}${attempt > 1 ? ` (after ${attempt} tries)` : ''}${flight.mayHaveReached && p.code !== 'EG_SHUTTING_DOWN' ? `; ${MAY_HAVE_REACHED_ENDPOINT}` : ''}`;
        // flight.tries: the tries that went out (a message refused untried, notTried(), made none).
        throw new WebhookError({ ...p, detail, attempts: flight.tries, ...(endpointStatus === undefined ? {} : { endpointStatus }) });
      }
      const wait = Math.min(result.retryAfterMs ?? jitter(backoff), this.plan.maxBackoffMs);
      this.logger.debug({ route: this.route, endpoint: this.shown(request.display), attempt, waitMs: wait, detail: this.shown(result.problem.detail) }, 'webhook try failed; retrying');
      await this.sleep(wait);
      // The route stopped meanwhile (shutdown, a reload replacing it): it waits for tries in flight, not
      // for a backoff (a Retry-After of minutes held a reload that long). Its tries and last answer
      // are told as a failed delivery's are (a problem answer's `attempts`, `endpointStatus`).
      if (this.closed) {
        const cut = problem('EG_SHUTTING_DOWN', `the route stopped while waiting to try ${request.display} again: not delivered (${result.problem.detail})`);
        throw new WebhookError({ ...cut, attempts: flight.tries, ...(endpointStatus === undefined ? {} : { endpointStatus }) });
      }
      backoff = Math.min(backoff * 2, this.plan.maxBackoffMs);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleeping.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleeping.add(wake);
    });
  }

  /** The slot goes to the next try waiting for one (after this callback's stack: never inside the HTTP client's), else back to the free ones. */
  private release(slot: Slot): void {
    const next = this.waiting.shift();
    if (next) queueMicrotask(() => this.attempt(slot, next));
    else this.free.push(slot);
  }

  /**
   * URL, headers and body, computed once per message (the same for every try, signature
   * included); synchronously when no expression needs JSONata's own evaluator (no expression at
   * all, or literals, field paths, `&`, `$string(...)` and the other shapes of expr/fast-path.ts).
   */
  private prepare(msg: Message, ctx: MessageContext): PreparedRequest | Promise<PreparedRequest> {
    const plan = this.plan;
    if (plan.urlExpr === undefined && plan.headers.length === 0) return this.build(msg, ctx, this.fixed, NO_HEADERS);
    let endpoint = this.fixed;
    if (plan.urlExpr) {
      const v = evaluateNow(plan.urlExpr, msg, ctx);
      if (v === NOT_SYNC) return this.prepareComputed(msg, ctx);
      endpoint = computedEndpoint(v, plan.urlExpr);
    }
    const computed: [string, string][] = [];
    for (const [name, expr] of plan.headers) {
      const v = evaluateNow(expr, msg, ctx);
      if (v === NOT_SYNC) return this.prepareComputed(msg, ctx);
      if (v !== undefined) computed.push([name, resultText(v, `headers.${name}`, Buffer.isBuffer(msg.value))]);
    }
    return this.build(msg, ctx, endpoint, computed);
  }

  /** prepare() with the expressions of `url` and `headers` evaluated for this message. */
  private async prepareComputed(msg: Message, ctx: MessageContext): Promise<PreparedRequest> {
    const bindings = bindingsFor(msg, ctx);
    let endpoint = this.fixed;
    if (this.plan.urlExpr) {
      endpoint = computedEndpoint(await evaluate(this.plan.urlExpr, msg.value, bindings, 'url'), this.plan.urlExpr);
    }
    const computed: [string, string][] = [];
    for (const [name, expr] of this.plan.headers) {
      const v = await evaluate(expr, msg.value, bindings, `headers.${name}`);
      if (v !== undefined) computed.push([name, resultText(v, `headers.${name}`, Buffer.isBuffer(msg.value))]);
    }
    return this.build(msg, ctx, endpoint, computed);
  }

  private build(msg: Message, ctx: MessageContext, endpoint: Endpoint | WebhookError | undefined, computed: readonly [string, string][]): PreparedRequest {
    if (!endpoint) throw new WebhookError(problem('EG_EXPRESSION_FAILED', `'${this.plan.url}' is not a valid URL`));
    if (endpoint instanceof WebhookError) throw endpoint;
    // Name, value, name, value, ... as the client takes them: lower-case names; a computed header
    // replaces one of the same name, as node:http's setHeader did.
    const headers: string[] = [];
    let body: string | Buffer;
    const isEvent = msg.headers[CE_SPECVERSION] !== undefined;
    if (isEvent && this.plan.cloudevents === 'structured') {
      body = JSON.stringify(toStructured(msg));
      headers.push('content-type', STRUCTURED_TYPE);
    } else if (isEvent && msg.value === null) {
      // An event without data (a null value, as the structured form leaves `data` out for it) has
      // no body in binary mode, as the SDKs send it and the http listener reads it; the body `null`
      // was data the event never had (the text "null" under text/plain), and the content-type a
      // datacontenttype it never had.
      body = '';
      for (const [name, value] of Object.entries(binaryHttpHeaders(msg.headers))) headers.push(name.toLowerCase(), String(value));
      const type = msg.headers['content-type'];
      if (type !== undefined) headers.push('content-type', type);
    } else {
      // Binary data (a structured event's data_base64) goes as the bytes it is, and so does a
      // consumed record no step changed (core/message.ts, valuePayload).
      body = valuePayload(msg);
      if (isEvent) for (const [name, value] of Object.entries(binaryHttpHeaders(msg.headers))) headers.push(name.toLowerCase(), String(value));
      headers.push('content-type', payloadContentType(msg, body, 'text/plain; charset=utf-8'));
      // A consumed body compressed as it came (AMQP content_encoding, a content-encoding header) says so, while no step changed it.
      const encoding = payloadContentEncoding(msg);
      if (encoding !== undefined) headers.push('content-encoding', encoding);
    }
    const traceparent = msg.headers.traceparent;
    if (traceparent !== undefined) headers.push('traceparent', traceparent);
    const tracestate = msg.headers.tracestate;
    if (tracestate !== undefined && PROPAGATED_TRACESTATE.test(tracestate)) headers.push('tracestate', tracestate);
    // Before the computed headers: an `authorization` among them replaces it.
    if (endpoint.authorization !== undefined) headers.push('authorization', endpoint.authorization);
    for (const [name, value] of computed) {
      const lower = name.toLowerCase();
      // The client's data (a CR/LF it sent to inject a header): its message is invalid, not the expression.
      // One test per value for the common case; which fault it is only once it has one.
      if (NOT_PLAIN_HEADER_CHAR.test(value) && HEADER_CONTROL_CHAR.test(value)) {
        throw new WebhookError(invalidValue(`headers.${name}`, `control characters (such as CR or LF), which HTTP does not allow in a header`));
      }
      if (CLIENT_FRAMING.has(lower) && !(lower === 'connection' && (value === 'close' || value === 'keep-alive')))
        throw new WebhookError(problem('EG_EXPRESSION_FAILED', `headers.${name}: the HTTP client frames requests itself; ${name} cannot be set (connection may be 'close' or 'keep-alive')`));
      for (let i = 0; i < headers.length; i += 2) {
        if (headers[i] === lower) {
          headers.splice(i, 2);
          break;
        }
      }
      if (lower !== 'content-length') headers.push(lower, value);
    }
    const bytes = typeof body === 'string' ? Buffer.from(body) : body;
    if (this.plan.secret) {
      // Standard Webhooks: the id stays the same across retries, so receivers can deduplicate
      // (resign() gives a retry its own timestamp; these three headers stay last for it).
      // A CloudEvent's id as its ce-id header carries it: a header's bytes beyond ASCII are read as
      // Latin-1 by receivers (node, Python), so an id signed as UTF-8 verified nowhere.
      const ceId = msg.headers.ce_id;
      const id = ceId !== undefined ? httpAttributeValue(ceId) : webhookIdOf(`${ctx.source ?? (ctx.deliveryId ??= randomUUID())}:${this.place}`);
      const timestamp = Math.floor(Date.now() / 1000);
      const signature = createHmac('sha256', this.plan.secret).update(`${id}.${timestamp}.`).update(bytes).digest('base64');
      headers.push('webhook-id', id, 'webhook-timestamp', String(timestamp), 'webhook-signature', `v1,${signature}`);
    }
    for (let i = 1; i < headers.length; i += 2) {
      const value = headers[i]!;
      if (!NOT_PLAIN_HEADER_CHAR.test(value)) continue;
      // Values from the message (content-type, tracestate) are checked as node:http would.
      if (HEADER_CONTROL_CHAR.test(value)) {
        throw new WebhookError(problem('EG_INVALID_MESSAGE', `header '${headers[i - 1]}' has control characters (such as CR or LF), which HTTP does not allow in a header`));
      }
      // Every value beyond ASCII goes as its UTF-8 bytes (the client writes a character per byte),
      // as curl and Go send one: a receiver reads every such value one way. Written as Latin-1
      // while every character is one, `zoë` went as one byte and `zoë 東京` as UTF-8, and no
      // receiver could tell which a byte meant.
      headers[i] = Buffer.from(value, 'utf8').toString('latin1');
    }
    return { origin: endpoint.origin, path: endpoint.path, method: this.plan.method, headers, body: bytes, headersTimeout: 0, bodyTimeout: 0, blocking: false, display: endpoint.display };
  }

  /**
   * Sends the flight's request from `slot`; the try ends with an answer or no connection
   * (answered()) or when its time is up (expire()), whichever comes first, and the slot is
   * released before the flight learns how it ended.
   */
  private attempt(slot: Slot, flight: Flight): void {
    const ticket = ++flight.tries;
    if (ticket > 1 && this.plan.secret) this.resign(flight.request);
    flight.exchange = undefined;
    // The gateway's own start-up work (loading the HTTP client) is not the endpoint's time.
    this.client.load?.();
    // Armed before the request is made: a client that fails at once calls back before request() returns.
    this.arm(slot, flight);
    try {
      const exchange = this.client.request(flight.request, flight, ticket, slot.lane);
      if (slot.flight === flight && flight.tries === ticket) flight.exchange = exchange;
    } catch (err) {
      this.answered(flight, ticket, err as Error, undefined);
    }
  }

  /**
   * Signs a retry at its own time. Standard Webhooks receivers refuse a `webhook-timestamp` more
   * than 5 minutes off (replay protection), and retries may go on longer than that (`attempts`,
   * `maxBackoffMs`, Retry-After): signed once, those tries were refused. The id stays the same.
   */
  private resign(request: PreparedRequest): void {
    const h = request.headers;
    const at = h.length - 6;
    if (h[at] !== 'webhook-id' || h[at + 2] !== 'webhook-timestamp') return;
    const timestamp = String(Math.floor(Date.now() / 1000));
    if (h[at + 3] === timestamp) return;
    const signature = createHmac('sha256', this.plan.secret!)
      .update(`${h[at + 1]}.${timestamp}.`)
      .update(request.body)
      .digest('base64');
    h[at + 3] = timestamp;
    h[at + 5] = `v1,${signature}`;
  }

  /** The HTTP client's answer (or error) for try `ticket` of `flight` (Flight.answered). */
  answered(flight: Flight, ticket: number, err: (Error & { code?: string }) | undefined, answer: ClientAnswer | undefined): void {
    const slot = flight.slot;
    // Once the timer ended this try (and the slot went on to another), an aborted request does not call back; be sure anyway.
    if (ticket !== flight.tries || slot === undefined || slot.flight !== flight) return;
    if (err === TIMED_OUT) return this.expire(slot, flight);
    // A TLS alert (the endpoint refused our certificate, or the lack of one, after a TLS 1.3 handshake) is a refusal before any request was read.
    // So is an HTTP/2 frame: an h2c-only endpoint reads no HTTP/1.1 request.
    const sent = flight.exchange?.sent === true;
    if (answer === undefined && sent && !isTlsFailure(err) && !http2Answer(err)) flight.mayHaveReached = true;
    slot.flight = undefined;
    flight.slot = undefined;
    flight.exchange = undefined;
    this.release(slot);
    // close() cut the try (the route is stopping): the endpoint did not fail, and may have taken it.
    if (answer === undefined && this.closed) return this.ended(flight, { ok: false, retry: false, result: 'connection', problem: cutShort(flight.request.display) });
    const a: Attempt = answer
      ? classify(answer, flight.request.display)
      : { ok: false, retry: true, result: 'connection', problem: problem('EG_WEBHOOK_FAILED', unanswered(flight.request.display, err, this.plan.ca !== undefined, sent)) };
    this.counters?.answered(a.ok ? '2xx' : a.result);
    this.ended(flight, a);
  }

  /**
   * A request lost on a kept-alive connection (closed or reset before any answer) went out again:
   * not a try, but a request the endpoint may have read, counted as `connection`. Uncounted, the
   * requests counted fell short of those the endpoint saw, and an endpoint that read requests and
   * then reset their connections showed no failure at all.
   */
  resent(): void {
    this.counters?.answered('connection');
  }

  /** The try in flight in `slot` took longer than timeoutMs: it is cut and counts as failed (retried). */
  private expire(slot: Slot, flight: Flight): void {
    slot.flight = undefined;
    flight.slot = undefined;
    const exchange = flight.exchange;
    flight.exchange = undefined;
    const answer = exchange?.answer;
    if (answer === undefined && exchange?.sent) flight.mayHaveReached = true;
    exchange?.abort();
    this.release(slot);
    if (answer !== undefined) {
      // The endpoint answered in time; only the body after its status line is late (stalled,
      // endless). The status decides: a 2xx is a delivery (retrying would deliver it twice), a 4xx
      // a refusal, a 429 or 503 is retried after its Retry-After.
      const a = classify(answer, flight.request.display);
      this.counters?.answered(a.ok ? '2xx' : a.result);
      return this.ended(flight, a);
    }
    this.counters?.answered('timeout');
    const display = flight.request.display;
    this.ended(flight, { ok: false, retry: true, result: 'timeout', problem: problem('EG_WEBHOOK_TIMEOUT', `${display} did not answer within ${this.plan.timeoutMs} ms`) });
  }

  /**
   * Starts the try's clock. Each slot has one timer, armed lazily: it is left running when a try
   * ends, and when it fires it ends the try in flight if that one's time is up, or sets itself for
   * the rest of that try's time (or stops, the slot being free). A delivery therefore costs no
   * timer of its own; a slot's timer fires about once per timeoutMs while the slot is busy.
   */
  private arm(slot: Slot, flight: Flight): void {
    slot.flight = flight;
    flight.slot = slot;
    slot.deadline = performance.now() + this.plan.timeoutMs;
    if (slot.timer === undefined) slot.timer = setTimeout(this.expired, this.plan.timeoutMs, slot).unref();
  }

  private readonly expired = (slot: Slot): void => {
    slot.timer = undefined;
    const flight = slot.flight;
    if (flight === undefined) return;
    const left = slot.deadline - performance.now();
    if (left > 0) {
      slot.timer = setTimeout(this.expired, Math.ceil(left), slot).unref();
      return;
    }
    // Node runs due timers before it reads its sockets: a process that could not run for a while
    // (starved of CPU, a long pause) found the endpoint's answer, come in time, unread, took the
    // try for a timeout and sent the message again (the endpoint had it twice). So the sockets are
    // read first, and the try ends as a timeout only if no answer was there.
    setImmediate(this.expireUnanswered, slot, flight, flight.tries);
  };

  /** expired()'s end, after the sockets were read: the try `ticket` of `flight`, still in `slot` unanswered, timed out. */
  private readonly expireUnanswered = (slot: Slot, flight: Flight, ticket: number): void => {
    if (slot.flight !== flight || flight.tries !== ticket) return;
    this.expire(slot, flight);
  };
}

/**
 * Why a try got no answer: no connection (refused, DNS, TLS), or one the endpoint ended or broke before its answer was complete.
 * `sent`: the request went out on the connection (Exchange.sent).
 */
function unanswered(display: string, err: (Error & { code?: string }) | undefined, ownCa: boolean, sent: boolean): string {
  const code = err?.code;
  // undici ends a 101 unasked (`bad upgrade`; one without an Upgrade header, and a status below 100,
  // fail its own assertions): the endpoint answered, with what is no answer to a POST.
  if ((code === 'UND_ERR_SOCKET' && err!.message === 'bad upgrade') || (code === 'ERR_ASSERTION' && /assert\(upgrade\)/.test(err!.message)))
    return `${display} answered 101 Switching Protocols to a request that asked for no protocol switch, so no answer to it came`;
  if (code === 'ERR_ASSERTION' && /statusCode >= 100/.test(err!.message)) return `${display} sent an answer the HTTP client could not read (a status below 100, which HTTP has not)`;
  if (code === 'ERR_ASSERTION') return `${display} sent an answer the HTTP client failed on (${code}: ${err!.message.split('\n')[0]})`;
  if (code === 'UND_ERR_SOCKET') return `${display} closed the connection before a complete answer (${code}: ${err!.message})`;
  // After the request went out, a reset is the endpoint's doing (it read the request, or some of it):
  // `could not be reached` beside `the message may still have reached it` said both.
  if (sent && (code === 'ECONNRESET' || code === 'EPIPE')) return `${display} reset the connection before a complete answer (${code})`;
  if (code === 'UND_ERR_HEADERS_OVERFLOW')
    return `${display} sent an answer whose headers are over ${MAX_ANSWER_HEADER_BYTES / 1024 / 1024} MiB, more than the HTTP client reads (${code}), so its status is not known`;
  if (code?.startsWith('HPE_') || (code?.startsWith('UND_ERR_') && code !== 'UND_ERR_CONNECT_TIMEOUT'))
    return `${display} sent an answer the HTTP client could not read (${code}: ${err!.message})${http2Answer(err) ? H2C_HINT : ''}`;
  // undici's parser error for bytes that are no HTTP answer (`garbage`, an SSH banner) has no code: the endpoint was reached all the same.
  if (err?.name === 'HTTPParserError') return `${display} sent an answer the HTTP client could not read (${err.message})${http2Answer(err) ? H2C_HINT : ''}`;
  // A bare OpenSSL code (DEPTH_ZERO_SELF_SIGNED_CERT) did not say that the endpoint is there and where the fix is.
  if (isTlsFailure(err)) return `${display} could not be reached: the TLS handshake failed (${code}: ${tlsReason(err!)})${tlsHint(code!, ownCa)}`;
  return `${display} could not be reached: ${code ?? err?.message}`;
}

/**
 * The head of an HTTP/2 SETTINGS or GOAWAY frame on stream 0 (RFC 9113 §4.1: 3 bytes of length, the
 * type, no flags, stream 0): what an endpoint that speaks only HTTP/2 without TLS (h2c, node:http2's
 * createServer) answers an HTTP/1.1 request with, before closing. Its bytes as undici's parser error
 * keeps them (`data`, as text: a length byte above 0x7f is one replacement character).
 */
const HTTP2_FRAME = /^\0\0[\s\S][\x04\x07]\0\0\0\0\0/;
const H2C_HINT = '; that is an HTTP/2 frame: the endpoint takes only HTTP/2 without TLS (h2c), and webhook requests are HTTP/1.1, which it never read';

/** The endpoint answered the request's HTTP/1.1 with HTTP/2 (h2c only): it read no request. */
function http2Answer(err: (Error & { data?: unknown }) | undefined): boolean {
  return err?.name === 'HTTPParserError' && typeof err.data === 'string' && HTTP2_FRAME.test(err.data);
}

/**
 * Where a failed handshake's fix is, when the code says: trusting the endpoint's CA, or naming a host its
 * certificate is for. Every certificate failure said to trust more CAs, which does nothing for a trusted
 * certificate of another name, nor one expired (node's own words say so: `certificate has expired`).
 * `ownCa`: the target has `tls.ca`, which replaces the system's CAs rather than adding to them.
 */
function tlsHint(code: string, ownCa: boolean): string {
  if (UNTRUSTED_CHAIN.has(code))
    return ownCa ? '; the target trusts only the CAs of its tls.ca file' : '; the gateway trusts the system CAs and those of NODE_EXTRA_CA_CERTS (or give the CA in tls.ca)';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'HOSTNAME_MISMATCH') return '; the certificate is not for the host the url names';
  if (code === 'ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL') return '; webhook requests are HTTP/1.1, which the endpoint does not take (an HTTP/2-only server)';
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER') return '; the port answered without TLS: is it an http:// endpoint?';
  if (code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED') return '; the endpoint requires a client certificate (mutual TLS), which webhook targets do not present';
  return '';
}

/**
 * What a failure says when a try went out and no answer came (a timeout, a connection closed after
 * the request was written): the endpoint may have taken the message and answered late, or not at
 * all, so a client that sends it again may have it delivered twice. Without it a 504 read as a
 * message the endpoint never got (the broker targets' 503s say the same: MAY_HAVE_REACHED).
 */
export const MAY_HAVE_REACHED_ENDPOINT = 'the message may still have reached it (sending it again may deliver it twice)';

/** A try in flight when the route stopped (shutdown, or a reload replacing the route) and closed its connections. */
function cutShort(display: string): Problem {
  return problem('EG_SHUTTING_DOWN', `the route stopped before ${display} answered: the message may or may not have been delivered`);
}

/** A message that reached the route's webhook after the route stopped and closed its connections: never sent. */
function notTried(display: string): Problem {
  return problem('EG_SHUTTING_DOWN', `the route stopped before ${display} was tried: not delivered`);
}

/**
 * One message's tries, made one after the other: its request, the promise that tells the route,
 * and the slot of the try in flight. One object per message instead of a closure per try and callback.
 */
class Flight implements AnswerListener {
  /** Tries made so far: the ticket of the latest. */
  tries = 0;
  slot: Slot | undefined = undefined;
  exchange: Exchange | undefined = undefined;
  /** Set while retry() waits for a try; the first try settles the promise itself. */
  onRetry: ((a: Attempt) => void) | undefined = undefined;
  /** A try went out and got no answer (a timeout, a connection closed or reset after the request was written): the endpoint may have the message. */
  mayHaveReached = false;

  constructor(
    private readonly target: WebhookTarget,
    readonly request: PreparedRequest,
    readonly resolve: (d: Delivery) => void,
    readonly reject: (err: unknown) => void,
  ) {}

  answered(ticket: number, err: (Error & { code?: string }) | undefined, answer: ClientAnswer | undefined): void {
    this.target.answered(this, ticket, err, answer);
  }

  resent(ticket: number): void {
    if (ticket === this.tries) this.target.resent();
  }
}

/** One of a target's `concurrency` places for a request in flight, with the timer of its tries. */
class Slot {
  constructor(
    /** The slot's place among the target's slots: its connection to a fixed URL's origin. */
    readonly lane: number,
  ) {}

  /** The message whose try is in flight; undefined while none is. */
  flight: Flight | undefined = undefined;
  /** When the try in flight times out (performance.now()). */
  deadline = 0;
  timer: NodeJS.Timeout | undefined = undefined;
}

const NO_HEADERS: readonly [string, string][] = [];

/** What is not a tab or printable ASCII in a header value: a control character, or one to send as UTF-8. */
const NOT_PLAIN_HEADER_CHAR = /[^\t\x20-\x7e]/;
/**
 * A message's `tracestate` that a request carries on: W3C Trace Context's, printable ASCII, and at
 * most the 512 characters OpenTelemetry's propagator reads (it ignores a longer one). Another, a
 * header of a consumed record that anything may have written, is left out: sent, a 20 KB one was
 * answered 431 and the message dropped, and one with a control character failed the message.
 */
const PROPAGATED_TRACESTATE = /^[\x20-\x7e]{1,512}$/;
/** The control characters, which HTTP does not allow in a header value (a tab is allowed). */
const HEADER_CONTROL_CHAR = /[\x00-\x08\x0a-\x1f\x7f]/;
/** Control characters in a URL, which the WHATWG parser would drop (tab, CR, LF) or refuse in a host, rather than send. */
const URL_CONTROL_CHAR = /[\x00-\x1f\x7f]/;

/**
 * A computed header or URL whose value holds control characters: they come from the message (an
 * expression does not make them up), so the message is invalid (400, dead-lettered at once by a
 * consume route), as a header a broker cannot carry is, and the expression has not failed.
 */
function invalidValue(place: string, what: string): Problem {
  const detail = `${place} gave a value with ${what}`;
  return problem('EG_INVALID_MESSAGE', detail, { errors: [detail] });
}

/** Headers that frame an HTTP/1.1 request: the client's to set (it refuses them, `connection` aside). */
const CLIENT_FRAMING = new Set(['connection', 'transfer-encoding', 'keep-alive', 'upgrade', 'expect', 'te']);

/** Where requests go: parsed once for a fixed URL, per message for a computed one. */
interface Endpoint {
  /** `http(s)://host[:port]`: the connection pool's key. */
  origin: string;
  /** Path and query string. */
  path: string;
  /** The URL without query string (which may hold credentials), for logs and answers. */
  display: string;
  /** `Basic ...` from the URL's user and password, when it has them. */
  authorization: string | undefined;
}

function endpointOf(url: URL): Endpoint {
  return { origin: url.origin, path: `${url.pathname}${url.search}`, display: `${url.origin}${url.pathname}`, authorization: basicAuth(url) };
}

/**
 * `https://user:password@host/...` sends them as HTTP Basic authentication, as curl and node:http
 * do; the client takes only the origin, so they were silently dropped (a 401 for every message).
 */
function basicAuth(url: URL): string | undefined {
  if (url.username === '' && url.password === '') return undefined;
  return `Basic ${userinfoOf(url).base64}`;
}

/** What the HTTP client sends (the same object for every try), and the endpoint as logs and answers name it. */
interface PreparedRequest extends ClientRequest {
  readonly display: string;
}

/** The endpoint of a URL an expression gave; throws (the message fails) when it is not an http(s) URL. */
function computedEndpoint(v: unknown, expr: Expression): Endpoint | WebhookError {
  if (typeof v === 'string' && URL_CONTROL_CHAR.test(v)) throw new WebhookError(invalidValue('url', 'control characters (such as CR or LF), which a URL cannot hold'));
  if (typeof v !== 'string' || !/^https?:\/\//.test(v)) throw new WebhookError(expressionResultProblem(expr, `url expression gave ${JSON.stringify(v) ?? 'nothing'}, which is not an http(s) URL`));
  return parseEndpoint(v);
}

function parseEndpoint(url: string): Endpoint | WebhookError {
  try {
    const parsed = new URL(url);
    // The WHATWG parser takes port 0, but no request can reach it: every try would be refused.
    if (parsed.port === '0') return new WebhookError(problem('EG_EXPRESSION_FAILED', `'${url}' names port 0, which no request can reach`));
    return endpointOf(parsed);
  } catch {
    return new WebhookError(problem('EG_EXPRESSION_FAILED', `'${url}' is not a valid URL`));
  }
}

export class WebhookError extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail);
  }
}

function classify(answer: ClientAnswer, display: string): Attempt {
  const status = answer.status;
  if (status >= 200 && status < 300) return { ok: true, status };
  const result: WebhookResult = status >= 500 ? '5xx' : status >= 400 ? '4xx' : '3xx';
  const retry = status >= 500 || status === 408 || status === 429;
  // RFC 9110 §15: a status outside 100-599 is invalid, and a client SHOULD process it as a 5xx
  // (undici and node:http pass 600-999 on); said so, or `answered 600` read as a status HTTP has.
  const outside = status >= 600 ? ", a status outside HTTP's 100-599, taken as a server error (5xx) as RFC 9110 §15 asks" : '';
  const retryAfterMs = retryAfterDelay(answer.retryAfter);
  const excerpt = answer.text.trim().slice(0, 200);
  return {
    ok: false,
    retry,
    result,
    status,
    retryAfterMs,
    // A final refusal (most 4xx) is the message's problem, not the endpoint's: retrying later would not help.
    problem: problem(retry ? 'EG_WEBHOOK_FAILED' : 'EG_WEBHOOK_REFUSED', `${display} answered ${status}${outside}${redirect(answer)}${excerpt ? `: ${excerpt}` : ''}`),
  };
}

/** The three forms of an HTTP-date (RFC 9110 §5.6.7): IMF-fixdate, RFC 850 and asctime (the last without a zone: GMT). */
const HTTP_DATE = /^(?:[a-z]{3}, \d{2} [a-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT|[a-z]{6,9}, \d{2}-[a-z]{3}-\d{2} \d{2}:\d{2}:\d{2} GMT|[a-z]{3} [a-z]{3} [ \d]\d \d{2}:\d{2}:\d{2} \d{4})$/i;

/** Where a 3xx answer points (without its query, which may hold a token), so that `url` can be set to it: the client does not follow redirects. */
function redirect(answer: ClientAnswer): string {
  const location = answer.location;
  if (answer.status >= 400 || location === undefined) return '';
  return ` (a redirect to ${location.replace(/[?#].*$/s, '')}, not followed: point url there)`;
}

/**
 * The wait a `Retry-After` header asks for, in ms (RFC 9110 §10.2.3): delay-seconds, or an
 * HTTP-date (a date already past means at once). Both forms are allowed; reading only the first
 * made an endpoint that sends a date be retried after the short backoff instead of when it asked.
 * Anything else is ignored (the backoff applies): V8's Date.parse reads `-1`, `1.5` or `+3` as
 * dates in 2001, which made such a header a retry at once.
 */
export function retryAfterDelay(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  if (!HTTP_DATE.test(text)) return undefined;
  const at = Date.parse(text.endsWith('GMT') ? text : `${text} GMT`);
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

/**
 * An expression's result as the text of a header or a lane. JSON writes a number beyond a double (a
 * copied value's `1e400`, read as Infinity) as null: such a result fails the message instead.
 */
function resultText(v: unknown, what: string, fromBytes: boolean): string {
  if (typeof v === 'string') return v;
  const at = hugeNumberAt(v);
  if (at !== undefined) throw new WebhookError(problem('EG_EXPRESSION_FAILED', `${what} expression failed: ${hugeNumberText('result', at)}`));
  return expressionText(v, fromBytes);
}

async function evaluate(expr: Expression, value: unknown, bindings: Record<string, unknown>, what: string): Promise<unknown> {
  return evaluateThen(
    expr,
    value,
    bindings,
    (v) => v,
    (err) => {
      throw new WebhookError(expressionProblem(`${what} expression`, err));
    },
  );
}

/** Full jitter over the upper half, so many failed deliveries do not retry in lockstep. */
function jitter(ms: number): number {
  return Math.round(ms / 2 + (Math.random() * ms) / 2);
}

/**
 * The `webhook-id` of a message that is no CloudEvent, from `source`: the consumed message's
 * identity in its source where it has one (MessageContext.source: the route, and a Kafka record's
 * cluster, topic, partition, offset and timestamp, a JetStream stream's creation and sequence, a
 * memory topic's life and offset), the same on every try and redelivery; else an id the message's
 * first request drew (MessageContext.deliveryId), the same on the route's own retries of it. Then the
 * target's place in the route. It was `<topic>-<partition>-<offset>`, which a memory topic repeats
 * after every restart (and two brokers' topics of one name at once, a Kafka topic or JetStream stream
 * made again): a receiver deduplicating by id dropped new messages as copies. Hashed: the same
 * length for every source, header-safe, and no broker or topic names sent out.
 */
function webhookIdOf(source: string): string {
  return `msg_${createHash('sha256').update(source).digest('base64url').slice(0, 32)}`;
}

/**
 * Standard base64, its `=` padding correct or left out: what the Standard Webhooks libraries decode
 * a `whsec_` secret as. Padded, every one takes it; unpadded, Java's and PHP's take it as the same
 * bytes (Python's, JS's and Go's refuse it, so no library reads another key from it).
 */
const STANDARD_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;

/**
 * The HMAC key of a `signature.secret`: Standard Webhooks secrets are `whsec_` + base64, any other
 * string is used as its UTF-8 bytes. A `whsec_` secret that is not standard base64 is a reason,
 * not a key: node's decoder skips what it cannot read, so `whsec_` alone or `whsec_!!!!` signed
 * with an empty key (a signature anyone can make), and `-`, `_` or a wrong `=` gave another key
 * than the endpoint's library decodes (or one it refuses).
 */
export function signatureKey(secret: string): Buffer | { invalid: string } {
  if (!secret.startsWith('whsec_')) return Buffer.from(secret, 'utf8');
  const encoded = secret.slice(6);
  if (encoded === '') return { invalid: "is 'whsec_' with nothing after it: the signing key would be empty, and anyone could sign" };
  if (!STANDARD_BASE64.test(encoded)) {
    return {
      invalid: `starts with 'whsec_' but what follows is not base64 (A-Z, a-z, 0-9, '+' and '/', padded with '=' to a multiple of 4 characters or not padded), which the endpoint's Standard Webhooks library decodes it as; give 'whsec_' and the key's base64, or a secret without the prefix (used as its bytes)`,
    };
  }
  return Buffer.from(encoded, 'base64');
}
