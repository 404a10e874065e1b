import { randomFillSync } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Attributes, Context, Span, SpanContext, SpanKind, Tracer } from '@opentelemetry/api';
import { isUtf8 } from 'node:buffer';
import { ORIGINAL, type Delivery, type Message, type TracedRoute } from '../core/message.js';
import type { Outcome } from '../core/outcome.js';
import type { BrokerSpanFacts } from '../kinds/contracts.js';
import { filledPath, pathParameters } from '../kinds/listeners/route-paths.js';

/** W3C Trace Context headers (https://www.w3.org/TR/trace-context/). */
export const TRACEPARENT = 'traceparent';

type OtelApi = typeof import('@opentelemetry/api');

/**
 * Where the OpenTelemetry API (1.x, any copy of it) keeps what an SDK registers. The API itself
 * (45 module files, ~1.2 MB of an idle gateway's RSS) is loaded only once a tracer provider is
 * there: an SDK registered at any time (usually `node --import ./otel.js`) is seen at the next
 * message, as before.
 */
const OTEL_GLOBAL = Symbol.for('opentelemetry.js.api.1');
let otel: { api: OtelApi; tracer: Tracer; noopProvider: unknown } | undefined;

/** The API, loaded the first time a tracer provider is registered; the tracer is resolved through its global on every startSpan. */
function otelApi(): NonNullable<typeof otel> {
  if (otel === undefined) {
    const api = createRequire(import.meta.url)('@opentelemetry/api') as OtelApi;
    // What the global API answers when no SDK is registered: a fresh proxy's delegate is the no-op provider.
    otel = { api, tracer: api.trace.getTracer('eventgate'), noopProvider: new api.ProxyTracerProvider().getDelegate() };
  }
  return otel;
}

/** Whether an SDK's tracer provider is registered: a property read per message while none is. */
function sdkRegistered(): boolean {
  if ((globalThis as { [OTEL_GLOBAL]?: { trace?: unknown } })[OTEL_GLOBAL]?.trace === undefined) return false;
  const { api, noopProvider } = otelApi();
  const provider = api.trace.getTracerProvider();
  return !(provider instanceof api.ProxyTracerProvider && provider.getDelegate() === noopProvider);
}

/** The span of every message when no SDK is registered: not recording, ending it does nothing. */
const NON_RECORDING: Pick<Span, 'isRecording' | 'setAttribute' | 'setStatus' | 'end'> = {
  isRecording: () => false,
  setAttribute() {
    return this as Span;
  },
  setStatus() {
    return this as Span;
  },
  end() {},
};

/** version "-" trace-id "-" parent-id "-" flags (§3.2); a later version may append "-" fields. */
const VERSION_00 = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const LATER_VERSION = /^(?!ff)[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/** The span context an incoming `traceparent` names, or undefined when it is absent or malformed (then a new trace starts). */
export function parseTraceparent(header: string | undefined): SpanContext | undefined {
  if (header === undefined) return undefined;
  let h = header;
  if (!VERSION_00.test(h)) {
    h = h.trim();
    // Version ff is forbidden; version 00 has exactly four fields.
    if (h.startsWith('00-') ? !VERSION_00.test(h) : !LATER_VERSION.test(h)) return undefined;
  }
  const traceId = h.slice(3, 35);
  const spanId = h.slice(36, 52);
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId, spanId, traceFlags: parseInt(h.slice(53, 55), 16), isRemote: true };
}

export function formatTraceparent(sc: Pick<SpanContext, 'traceId' | 'spanId' | 'traceFlags'>): string {
  // TraceFlags.SAMPLED is 1.
  return `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & 1 ? '01' : '00'}`;
}

/**
 * New traces' `traceparent`s are made ahead, a pool at a time: the CSPRNG fills one buffer, which
 * is written as hex into a buffer laid out as ready-made `00-<trace-id>-<span-id>-01` headers, read
 * back as one string. A message's header is one slice of it, where a hex conversion per message (a
 * native call and a malloc) put it together from four pieces: a rope of six strings, which a memory
 * topic then kept with every retained message and the scavenger copied (docs/performance.md). A
 * pool's bytes are never used twice.
 */
const POOL_HEADERS = 128;
/** `00-` + 32 + `-` + 16 + `-01`. */
const HEADER_LENGTH = 55;
/** Random bytes of a header: 16 of trace id, 8 of span id. */
const ID_BYTES = 24;
const random = Buffer.allocUnsafe(POOL_HEADERS * ID_BYTES);
const headers = Buffer.alloc(POOL_HEADERS * HEADER_LENGTH);
for (let o = 0; o < headers.length; o += HEADER_LENGTH) {
  headers.write('00-', o, 'latin1');
  headers.write('-', o + 35, 'latin1');
  headers.write('-01', o + 52, 'latin1');
}
const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');
let pool = '';
let poolAt = 0;

/** The next unused ready-made header of the pool (trace id at [3, 35), span id at [36, 52)). */
function nextHeader(): string {
  if (poolAt === pool.length) {
    randomFillSync(random);
    for (let r = 0; r < random.length; r += ID_BYTES) {
      // All-zero ids are invalid (W3C Trace Context §3.2.2.3): such a draw (2^-64) is drawn again.
      while (allZero(random, r, r + 16) || allZero(random, r + 16, r + ID_BYTES)) randomFillSync(random, r, ID_BYTES);
    }
    // Written by hand: toString('hex') and a join of the pieces cost about twice as much per header.
    for (let k = 0, r = 0; k < POOL_HEADERS; k++) {
      const base = k * HEADER_LENGTH;
      for (let o = base + 3; o < base + 35; o += 2) writeHex(random[r++]!, o);
      for (let o = base + 36; o < base + 52; o += 2) writeHex(random[r++]!, o);
    }
    pool = headers.toString('latin1');
    poolAt = 0;
  }
  const header = pool.slice(poolAt, poolAt + HEADER_LENGTH);
  poolAt += HEADER_LENGTH;
  return header;
}

function writeHex(byte: number, at: number): void {
  headers[at] = HEX_DIGITS[byte >> 4]!;
  headers[at + 1] = HEX_DIGITS[byte & 15]!;
}

function allZero(b: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (b[i] !== 0) return false;
  return true;
}

/** The gateway's span for one message on one route. */
export interface MessageSpan {
  readonly span: Pick<Span, 'isRecording' | 'setAttribute' | 'setStatus' | 'end'>;
  readonly traceId: string;
  /** The `traceparent` the message carries onwards: the incoming trace id (or a new one) with this span's id. */
  readonly traceparent: string;
  /** Set only when an SDK made the span, so instrumentations below (e.g. a Kafka client's) nest under it. */
  readonly context: Context | undefined;
}

/**
 * A MessageSpan. Its trace id is read from its `traceparent` (where every form of the header has it)
 * when something asks, which only logs about a failed message do, rather than sliced out for every message.
 */
class Spanned implements MessageSpan {
  constructor(
    readonly span: MessageSpan['span'],
    readonly traceparent: string,
    readonly context: Context | undefined,
  ) {}

  get traceId(): string {
    return this.traceparent.slice(3, 35);
  }
}

/** The span of a message that is not traced on its own (a record of a Kafka produce request). */
export const UNTRACED: MessageSpan = new Spanned(NON_RECORDING, '', undefined);

export interface SpanTemplate {
  name: string;
  kind: SpanKind;
  attributes: Attributes;
  /** A consume route's source, for the attributes of each message (consumedAttributes). */
  source: SpanSource | undefined;
  /** An http listener's publish route: its path template, for each request's attributes (requestAttributes). */
  http?: HttpSpanSource;
}

/** The http listener a publish route's requests come from, and the route's path there. */
export interface HttpSpanSource {
  /** The route's path as configured (`/orders/:region`): the conventions' `http.route`. */
  route: string;
  /** `https` while the listener serves TLS; read per request, since a reload may rebind the listener with or without it. */
  scheme(): string;
}

/** The broker a consume route reads: its kind, the topic (or pattern) it subscribes to, and its consumer group where the kind has groups (kafka). */
export interface SpanSource {
  kind: string;
  topic: string;
  group?: string;
  /** The broker's part (BrokerRuntime.spanFacts): its server, and for RabbitMQ the exchange. */
  facts?: BrokerSpanFacts;
}

/** OpenTelemetry's `messaging.system` values for the kinds it names (RabbitMQ for amqp); the others keep the kind's name. */
const MESSAGING_SYSTEM: Record<string, string> = { amqp: 'rabbitmq' };

/**
 * Built once per route, so starting a span builds no strings. A consume route's span also carries
 * the messaging semantic conventions' attributes of a process span (a backend groups such spans by
 * them), with the topic as the route subscribes to it; each message's own (the concrete topic, its
 * partition, offset, id) are added when the span records (consumedAttributes). The span keeps the
 * name `route <name>`: it covers the whole route (steps and writes), and users filter on it.
 */
export function spanTemplate(route: string, source: SpanSource | undefined, http?: HttpSpanSource): SpanTemplate {
  // SpanKind.CONSUMER is 4, SpanKind.SERVER 1 (the API is not loaded to read them).
  if (source === undefined) {
    const attributes: Attributes = { 'eventgate.route': route };
    if (http) {
      // OpenTelemetry's HTTP server conventions: a publish is always a POST.
      attributes['http.request.method'] = 'POST';
      attributes['http.route'] = http.route;
      // A path without parameters is every request's `url.path`; one with them is filled per request (requestAttributes).
      if (pathParameters(http.route).length === 0) attributes['url.path'] = http.route;
    }
    return { name: `route ${route}`, kind: 1 as SpanKind, attributes, source, http };
  }
  const attributes: Attributes = {
    'eventgate.route': route,
    'messaging.system': MESSAGING_SYSTEM[source.kind] ?? source.kind,
    'messaging.operation.type': 'process',
    'messaging.operation.name': 'process',
  };
  if (source.kind === 'amqp') {
    // RabbitMQ's conventions: the exchange is the destination (when the config says which one the
    // queue is bound on), the routing key each message's own; the route reads its queue (or pattern).
    const exchange = source.facts?.consumeDestination?.(source.topic);
    if (exchange !== undefined) attributes['messaging.destination.name'] = exchange;
    attributes['messaging.destination.subscription.name'] = source.topic;
  } else attributes['messaging.destination.name'] = source.topic;
  if (source.group !== undefined) attributes['messaging.consumer.group.name'] = source.group;
  serverAttributes(attributes, source.facts);
  return { name: `route ${route}`, kind: 4 as SpanKind, attributes, source };
}

/** Kinds with partitions (a JetStream message's and write's partition 0 is the gateway's stand-in, MQTT and AMQP have none). */
const PARTITIONED = new Set(['kafka', 'memory']);

/**
 * The attributes of one consumed message on its route's span, which the caller checked records
 * (nothing here runs without an SDK): the topic it came from where the route subscribes to a
 * pattern (the pattern becomes `messaging.destination.template`), its partition, and what the
 * conventions name per kind.
 */
export function consumedAttributes(s: MessageSpan, source: SpanSource, msg: Message): void {
  const span = s.span;
  // An AMQP message's topic is its routing key (below), not a destination.
  if (msg.topic !== null && msg.topic !== source.topic && source.kind !== 'amqp') {
    span.setAttribute('messaging.destination.name', msg.topic);
    span.setAttribute('messaging.destination.template', source.topic);
  }
  if (msg.partition !== null && PARTITIONED.has(source.kind)) span.setAttribute('messaging.destination.partition.id', String(msg.partition));
  const size = bodySize(msg);
  if (size !== undefined) span.setAttribute('messaging.message.body.size', size);
  switch (source.kind) {
    case 'kafka': {
      if (msg.offset !== null) span.setAttribute('messaging.kafka.offset', Number(msg.offset));
      const key = textKey(msg);
      if (key !== undefined) span.setAttribute('messaging.kafka.message.key', key);
      if (msg.value === null) span.setAttribute('messaging.kafka.message.tombstone', true);
      break;
    }
    case 'amqp': {
      if (msg.topic !== null) span.setAttribute('messaging.rabbitmq.destination.routing_key', msg.topic);
      // The message_id property, as consumed.ts names it.
      const id = msg.headers.amqp_messageId;
      if (id !== undefined) span.setAttribute('messaging.message.id', id);
      break;
    }
    case 'nats': {
      const id = msg.headers['Nats-Msg-Id'] ?? msg.headers['nats-msg-id'];
      if (id !== undefined) span.setAttribute('messaging.message.id', id);
      break;
    }
  }
}

/**
 * The attributes of one HTTP publish on its route's span, which the caller checked records
 * (nothing here runs without an SDK): the scheme, and on a path with parameters the path requested,
 * written again from its parameters (percent-encoded as a URL path has them).
 */
export function requestAttributes(s: MessageSpan, http: HttpSpanSource, params: Readonly<Record<string, string>> | undefined): void {
  const span = s.span;
  span.setAttribute('url.scheme', http.scheme());
  if (params !== undefined && pathParameters(http.route).length > 0) span.setAttribute('url.path', filledPath(http.route, params));
}

/**
 * The size of the payload as the broker held it, when the message still has its bytes: its
 * ORIGINAL's while the value is the one read from them (as valuePayload writes them), not while
 * only its key is (a Kafka record a step gave a new value, stored so by a memory topic).
 */
function bodySize(msg: Message): number | undefined {
  const original = msg[ORIGINAL];
  if (original?.value && original.decoded.value === msg.value) return original.value.length;
  return Buffer.isBuffer(msg.value) ? msg.value.length : undefined;
}

/**
 * A message's key when it is text: not the consumed record's bytes that are not UTF-8, while the
 * key is still the one read from them (a target's `key` makes a new, text one; the Kafka producer
 * writes the bytes under the same condition).
 */
function textKey(msg: Message): string | undefined {
  if (msg.key === null) return undefined;
  const original = msg[ORIGINAL];
  return original?.key && original.decoded.key === msg.key && !isUtf8(original.key) ? undefined : msg.key;
}

/** What every PRODUCER span of one route target has: built once per target. */
export interface SendTemplate {
  /**
   * `send <topic>` for a topic written in the config, `send <exchange>` for RabbitMQ; undefined for
   * a topic expression or the default exchange (`send` alone: a name per computed topic would be unbounded).
   */
  name: string | undefined;
  kind: string;
  attributes: Attributes;
  /** Whether each write's topic is its `messaging.destination.name` (not for RabbitMQ, whose destination is the exchange, in `attributes`). */
  topicIsDestination: boolean;
}

/** A target's (or, with `deadletter`, a dead-letter topic's) PRODUCER spans' template. */
export function sendTemplate(broker: { name: string; kind: string; spanFacts?: BrokerSpanFacts }, topic: string | undefined, deadletter = false): SendTemplate {
  const attributes: Attributes = {
    'messaging.system': MESSAGING_SYSTEM[broker.kind] ?? broker.kind,
    'messaging.operation.type': 'send',
    'messaging.operation.name': 'send',
    'eventgate.broker': broker.name,
  };
  if (deadletter) attributes['eventgate.deadletter'] = true;
  const facts = broker.spanFacts;
  serverAttributes(attributes, facts);
  const exchange = facts?.sendDestination;
  if (exchange === undefined) return { name: topic === undefined ? undefined : `send ${topic}`, kind: broker.kind, attributes, topicIsDestination: true };
  attributes['messaging.destination.name'] = exchange;
  return { name: exchange === '' ? undefined : `send ${exchange}`, kind: broker.kind, attributes, topicIsDestination: false };
}

/** `server.address` and `server.port` of the broker's first configured server (BrokerSpanFacts.server). */
function serverAttributes(attributes: Attributes, facts: BrokerSpanFacts | undefined): void {
  const server = facts?.server;
  if (server === undefined) return;
  attributes['server.address'] = server.address;
  if (server.port !== undefined) attributes['server.port'] = server.port;
}

/** The PRODUCER span of one write, and the `traceparent` the written message carries (naming it). */
export interface SendSpan {
  readonly span: Span;
  readonly traceparent: string;
  readonly kind: string;
}

/**
 * Starts the PRODUCER span of a write to `topic`, a child of the route's span `parent`, which the
 * caller checked records (a route's span records only with an SDK: without one nothing here runs).
 * Undefined when the provider made no span of its own or the sampler dropped it: the message then
 * names the route's span, which is recorded, not one no backend will have (and, unsampled, the
 * next route's parent-based sampler would drop the rest of the trace).
 */
export function startSendSpan(parent: TracedRoute, t: SendTemplate, topic: string, msg: Message): SendSpan | undefined {
  const { tracer } = otelApi();
  // SpanKind.PRODUCER is 3.
  const span = tracer.startSpan(t.name ?? 'send', { kind: 3 as SpanKind, attributes: t.attributes }, parent.context as Context | undefined);
  const sc = span.spanContext();
  if (sc.spanId === ZERO_SPAN || sc.traceId === ZERO_TRACE || !span.isRecording()) {
    span.end();
    return undefined;
  }
  if (t.topicIsDestination) span.setAttribute('messaging.destination.name', topic);
  if (t.kind === 'kafka') {
    const key = textKey(msg);
    if (key !== undefined) span.setAttribute('messaging.kafka.message.key', key);
    if (msg.value === null) span.setAttribute('messaging.kafka.message.tombstone', true);
  } else if (t.kind === 'amqp') span.setAttribute('messaging.rabbitmq.destination.routing_key', topic);
  return { span, traceparent: formatTraceparent(sc), kind: t.kind };
}

/** Ends a PRODUCER span once the broker answered: where it put the message, or the write's failure (status ERROR). */
export function endSendSpan(s: SendSpan, delivery: Delivery | undefined, failure?: { code: string; detail: string }): void {
  const span = s.span;
  if (delivery !== undefined && 'partition' in delivery && PARTITIONED.has(s.kind)) {
    span.setAttribute('messaging.destination.partition.id', String(delivery.partition));
    // With `acks: none` the cluster names no offset (-1).
    if (s.kind === 'kafka' && delivery.offset !== '-1') span.setAttribute('messaging.kafka.offset', Number(delivery.offset));
  }
  if (failure) {
    span.setAttribute('error.type', failure.code);
    // SpanStatusCode.ERROR is 2.
    span.setStatus({ code: 2, message: failure.detail });
  }
  span.end();
}

/** Ends `send` with the answer to its write, whichever way it goes, and passes the answer on. */
export function endedWithWrite(send: SendSpan, written: Promise<Delivery>, failure: (err: unknown) => { code: string; detail: string }): Promise<Delivery> {
  return written.then(
    (d) => {
      endSendSpan(send, d);
      return d;
    },
    (err) => {
      endSendSpan(send, undefined, failure(err));
      throw err;
    },
  );
}

/**
 * Starts the span of one message: a child of the incoming `traceparent` when there is a valid
 * one, else the root of a new trace. With an SDK registered the SDK picks the ids and the sampling
 * decision; without one the span ids are made here, so every message leaves with a fresh span id
 * either way, and a new trace is marked sampled so downstream parent-based samplers keep it.
 */
export function startMessageSpan(template: SpanTemplate, incoming: string | undefined): MessageSpan {
  if (!sdkRegistered()) return new Spanned(NON_RECORDING, ownTraceparent(incoming), undefined);
  const { api, tracer } = otelApi();
  const { trace, ROOT_CONTEXT } = api;
  const parent = parseTraceparent(incoming);
  const parentContext = parent ? trace.setSpanContext(ROOT_CONTEXT, parent) : ROOT_CONTEXT;
  const span = tracer.startSpan(template.name, { kind: template.kind, attributes: template.attributes }, parentContext);
  const sc = span.spanContext();
  // A provider that hands back the parent's context (or an invalid one) made no span of its own.
  if (sc.spanId === ZERO_SPAN || sc.traceId === ZERO_TRACE || (parent !== undefined && sc.spanId === parent.spanId)) return new Spanned(span, ownHeader(parent), undefined);
  return new Spanned(span, formatTraceparent(sc), trace.setSpan(parentContext, span));
}

/** The `traceparent` of a span made here, when nothing recorded one: the parent's trace (or a new, sampled one) and a new span id. */
function ownHeader(parent: SpanContext | undefined): string {
  const header = nextHeader();
  if (parent) return formatTraceparent({ traceId: parent.traceId, spanId: header.slice(36, 52), traceFlags: parent.traceFlags });
  // A new trace: the header as it was made, marked sampled (flags 01).
  return header;
}

/**
 * ownHeader(parseTraceparent(incoming)). A plain version-00 header (what a route hands
 * the next one through a topic, and what W3C clients send) keeps its first 36 characters (version
 * and trace id) before the new span id and the sampled flag: no span context sliced out of it and
 * put together again for every consumed message.
 */
function ownTraceparent(incoming: string | undefined): string {
  if (incoming === undefined) return nextHeader();
  if (!VERSION_00.test(incoming) || incoming.startsWith(ZERO_TRACE, 3) || incoming.startsWith(ZERO_SPAN, 36)) return ownHeader(parseTraceparent(incoming));
  const header = nextHeader();
  // The flags' last hex digit holds the sampled bit (TraceFlags.SAMPLED).
  const digit = incoming.charCodeAt(54);
  const sampled = ((digit <= 57 ? digit - 48 : digit - 87) & 1) === 1;
  return sampled ? incoming.slice(0, 36) + header.slice(36) : `${incoming.slice(0, 36)}${header.slice(36, 52)}-00`;
}

/** Calls `fn` with the span active (only when an SDK made it; otherwise there is nothing to nest under it). */
export function inSpan<A extends unknown[], R>(s: MessageSpan, fn: (...args: A) => R, thisArg: unknown, ...args: A): R {
  return s.context ? otelApi().api.context.with(s.context, fn, thisArg, ...args) : fn.apply(thisArg, args);
}

/**
 * `http`: the span is an HTTP publish's (SpanTemplate.http): it gets the status the client is
 * answered (answerFor's), and is an error for a 5xx only, as the HTTP server conventions say: a
 * 4xx is the client's error, not the server's.
 */
export function endMessageSpan(s: MessageSpan, outcome: Outcome, http?: HttpSpanSource): void {
  const span = s.span;
  if (span.isRecording()) {
    span.setAttribute('eventgate.outcome', outcome.outcome);
    const problem = outcome.outcome === 'invalid' || outcome.outcome === 'rejected' || outcome.outcome === 'failed' ? outcome.problem : undefined;
    if (http) {
      const status = problem?.status ?? 200;
      span.setAttribute('http.response.status_code', status);
      if (problem) span.setAttribute('eventgate.problem', problem.code);
      if (status >= 500) {
        span.setAttribute('error.type', String(status));
        // SpanStatusCode.ERROR is 2.
        span.setStatus({ code: 2, message: problem!.detail });
      }
    } else if (outcome.outcome === 'failed') span.setStatus({ code: 2, message: outcome.problem.detail });
    else if (problem) span.setAttribute('eventgate.problem', problem.code);
  }
  span.end();
}

/** The trace id of a message's `traceparent`, for logs about it outside its route's span. */
export function traceIdOf(headers: Record<string, string>): string | undefined {
  return parseTraceparent(headers[TRACEPARENT])?.traceId;
}
