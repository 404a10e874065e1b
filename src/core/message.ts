import { isUtf8 } from 'node:buffer';
/** The unit that flows through a route (spec §3). Immutable by convention: steps return new messages. */
export interface Message {
  value: unknown;
  key: string | null;
  headers: Record<string, string>;
  topic: string | null;
  partition: number | null;
  offset: string | null;
  /** Milliseconds since the epoch. */
  timestamp: number;
  /** The record's bytes, when the message was read from a broker that has them (see OriginalRecord). */
  [ORIGINAL]?: OriginalRecord;
  /** Set on an HTTP request refused from its head: its body was never read, so `value` stands for nothing. */
  [BODY_NOT_READ]?: true;
  /** When its publisher said the message is of no use any more (EXPIRES_AT), in milliseconds since the epoch. */
  [EXPIRES_AT]?: number;
  /** Headers a step set to the value the consumed message had for them (SET_AS_CONSUMED). */
  [SET_AS_CONSUMED]?: ReadonlySet<string>;
  /** Which incarnation of its partition the record is of, when its subscription saw the source made again (SOURCE_INCARNATION). */
  [SOURCE_INCARNATION]?: number;
}

/**
 * A numeric offset or sequence number as a message's `offset` text. Not `String(n)`: V8 keeps what
 * that makes in its number-to-string cache, an old-generation table, so under load every offset
 * string outlived a dozen scavenges and was promoted (~25 B a message, a mark-compact every few
 * seconds). `toFixed(0)` writes the same digits for any integer below 2^53, outside the cache.
 */
export function offsetText(n: number): string {
  return n.toFixed(0);
}

/**
 * Where a message keeps the bytes it was read from. A symbol: steps' spreads (`{...msg, value}`)
 * carry it along, while JSON, logs, the tap and expressions never see it.
 */
export const ORIGINAL: unique symbol = Symbol('eventgate.original');

/**
 * A consumed message's expiry, as its publisher set it (MQTT 5's Message Expiry Interval, as the
 * server still had it to run when it sent the message). A symbol, as ORIGINAL: steps' spreads carry
 * it along to the targets, while expressions and the tap never see it.
 */
export const EXPIRES_AT: unique symbol = Symbol('eventgate.expiresAt');

/**
 * The names (as spelled) of the headers a step set to the very value the consumed message came with
 * (MessageContext.consumed): the route's own, sent, where a header as consumed is told apart from
 * a step's by its value (withoutConsumedInstructions). Only those: a step's other headers differ
 * from the consumed ones by their value. A symbol, as ORIGINAL: steps' spreads carry it along.
 */
export const SET_AS_CONSUMED: unique symbol = Symbol('eventgate.setAsConsumed');

/** Marks a request's message made from its head alone (judged by auth before its body was read). */
export const BODY_NOT_READ: unique symbol = Symbol('eventgate.bodyNotRead');

/**
 * The value as the tap and `log.payloads` show it: a request refused from its head has none, and
 * says so (`bodyNotRead`), rather than a `null` a client could have sent (spec-checklist 1849).
 */
export function shownValue(m: Message): { value: unknown } | { bodyNotRead: true } {
  return m[BODY_NOT_READ] ? { bodyNotRead: true } : { value: m.value };
}

/**
 * A consumed record as it was on the wire, and what the message was made of it. A field of the
 * message that is still the very one made from the bytes (`===`: steps never change a message in
 * place, they return a new one) was not changed by any step, so a broker target writes the
 * original bytes again: binary values, invalid UTF-8, `{ "a" : 1.0 }` and repeated headers stay
 * as they were, byte for byte.
 */
export interface OriginalRecord {
  value: Buffer | null;
  key: Buffer | null;
  /** Header values by name; a name repeated in the record has all its values, in order (null: a Kafka header without a value). */
  headers: Readonly<Record<string, Buffer | null | readonly (Buffer | null)[]>>;
  /** What the message's value, key and headers were made of these bytes. */
  decoded: { value: unknown; key: string | null; headers: Readonly<Record<string, string>> };
  /**
   * The value's bytes were read by a listener that refuses a JSON object giving a member name
   * twice (parseClientJson): a validate step does not scan them for one again.
   */
  namesChecked?: true;
}

/**
 * The client request a message arrived with (an HTTP request, or a WebSocket's handshake), for
 * steps that check who sent it. One object per request or per connection, so a step may cache
 * what it concluded about it (an auth step verifies a WebSocket client's token once, not per frame).
 */
export interface RequestMeta {
  /** Lower-cased header names, as node parses them. */
  headers: Readonly<Record<string, string | string[] | undefined>>;
  query: Readonly<Record<string, string | string[]>>;
  remoteAddress: string | undefined;
}

/** Who sent a message, as an auth step established it: `$principal` and `$claims` in expressions. */
export interface Identity {
  principal: string | undefined;
  claims: Record<string, unknown> | undefined;
}

/** Where the message entered, for expression bindings ($path, $query) and logs. */
export interface MessageContext {
  route: string;
  path?: Record<string, string>;
  query?: Record<string, string | string[]>;
  /** Client address, for rate limits and logs. */
  remoteAddress?: string;
  /** The client request, on routes from a listener; absent on consume routes. */
  request?: RequestMeta;
  /**
   * Set by an auth step once it accepted the credentials: the one field a step writes, because
   * the identity belongs to the request rather than to the message (it is never sent on).
   */
  identity?: Identity;
  /** Set by a validate step that names AsyncAPI messages: which message (and channel) the value is. */
  asyncapi?: { message: string | null; channel: string | null };
  /**
   * Set by a step that lets an invalid message through tagged (validate with onInvalid: tag): its
   * validation errors. The route reports them on the outcome, so nobody parses the tag header back.
   */
  tagged?: readonly string[];
  /**
   * A kafka listener's record on a route that forwards its batch (no `to`), which has no ORIGINAL:
   * the bytes `value` was decoded from, `buf[start, end)` (the request's memory, read only while
   * the chain runs), which go upstream as they are unless a step changes the value. A validate
   * step reads the member names they repeat (steps/validate.ts).
   */
  valueBytes?: { value: unknown; buf: Buffer; start: number; end: number };
  /**
   * On a consume route's retry of a fan-out that failed: per target, what took the message on an
   * earlier attempt (Problem.took). Those targets are not sent it again; the others are.
   */
  took?: readonly (Delivery | undefined)[];
  /**
   * On a consume route that names what it writes after it (targets that take message ids, a signed
   * webhook, a cloudevent step that wraps): the route's name and the consumed message's identity
   * in its source (BrokerRuntime.sourceIdentity), the same on every try and every redelivery of
   * that message. Broker targets make their `PublishOptions.messageId` of it.
   */
  source?: string;
  /**
   * On a consume route: the consumed message's headers as they came, which a step's changes leave
   * alone. Broker targets and dead-letter writes compare with them what a broker takes as
   * instructions for the publish (BrokerRuntime.publishInstruction): those still as consumed are not sent.
   */
  consumed?: Readonly<Record<string, string>>;
  /**
   * Drawn for a message without `source` (from a listener, MQTT, AMQP, a core NATS subject) by the
   * first that names it: a cloudevent step's wrap (its `id`), a signed webhook target's first
   * request (its `webhook-id`). The consume route's own retries of the message keep it, so they
   * send the same id (a receiver that took it and answered late can tell).
   */
  deliveryId?: string;
  /**
   * The route's span of this message, set only while an SDK records it (route.ts check()): broker
   * targets make the PRODUCER span of each write its child. Absent without an SDK.
   */
  span?: TracedRoute;
  /**
   * Headers for the HTTP answer to the request the message came in (names lower case, then
   * values): a ratelimit step's RateLimit fields. Set by a step; an http listener writes them.
   */
  replyHeaders?: string[];
}

/** A route's span of a message as its targets see it (runtime/trace.ts's MessageSpan): the OpenTelemetry context that names it, and its `traceparent`. */
export interface TracedRoute {
  readonly context: object | undefined;
  readonly traceparent: string;
}

/** One target's acknowledgement, as listed in the HTTP 200 body. */
export type Delivery =
  | { broker: string; topic: string; partition: number; offset: string }
  | { listener: string; path: string; clients: number }
  /** A webhook: the endpoint (without its query string), its 2xx status, and how many tries it took. */
  | { endpoint: string; status: number; attempts: number };

/**
 * `original` on buffers of its own: a consumed record's bytes are slices of the whole fetch
 * response, which a message kept for long (a memory topic's retention) must not hold on to.
 */
export function detachOriginal(original: OriginalRecord): OriginalRecord {
  const value = detached(original.value);
  const key = detached(original.key);
  let headers = original.headers;
  for (const _ in headers) {
    const copies = newHeaders<Buffer | null | readonly (Buffer | null)[]>();
    for (const [name, v] of Object.entries(original.headers)) copies[name] = Array.isArray(v) ? v.map(copied) : copied(v as Buffer | null);
    headers = copies;
    break;
  }
  // Nothing to copy (a body a client published: its own buffer, no raw headers): the record itself, which nobody changes.
  if (value === original.value && key === original.key && headers === original.headers) return original;
  return original.namesChecked ? { value, key, headers, decoded: original.decoded, namesChecked: true } : { value, key, headers, decoded: original.decoded };
}

/** A header's value copied; a Kafka header without one (null) stays so. */
function copied(b: Buffer | null): Buffer | null {
  return b === null ? null : Buffer.from(b);
}

/** A buffer about its own size (a client's request, a broker's packet) as it is; a slice of a larger one copied. */
function detached(b: Buffer | null): Buffer | null {
  return b === null || b.buffer.byteLength <= b.length + DETACH_SLACK ? b : Buffer.from(b);
}

/** How many bytes more than its own a kept buffer may hold on to (a slice of a larger read is copied). */
const DETACH_SLACK = 4096;

/**
 * A new, empty header object: every header map built key by key starts here, then takes its
 * names by plain assignment. Any protocol lets a header be named `__proto__` (an HTTP token, an
 * MQTT user property, a Kafka, NATS or AMQP header, an AMQP table's field): assigned on a plain
 * object, that name reaches Object.prototype's `__proto__` setter, which sets the object's
 * prototype (a string value is ignored) and the header is lost. A header object's prototype is
 * HeaderMap's, an empty object without a prototype: no setter to reach, no inherited names
 * (`constructor`, `toString`), so `__proto__` is an own header like any other, which reads,
 * spreads, `for in` and JSON see. A spread (`{...headers}`) keeps it in a plain object;
 * `Object.assign` onto a plain object does not: copy with copyHeaders.
 */
export function newHeaders<V = string>(): Record<string, V> {
  return new HeaderMap() as Record<string, V>;
}

/**
 * `new HeaderMap()` costs what `{}` does (fast properties, V8's constructor slack tracking);
 * `Object.setPrototypeOf({}, null)` took ~150 ns more per HTTP request (forwardedHeaders and
 * headersWith), `Object.create(null)` makes a dictionary, slow for every reader.
 */
const HeaderMap = function HeaderMap() {} as unknown as new () => Record<string, unknown>;
HeaderMap.prototype = Object.create(null);

/** A copy of `headers` that a step may change (newHeaders). */
export function copyHeaders<V>(headers: Readonly<Record<string, V>>): Record<string, V> {
  const out = newHeaders<V>();
  for (const name in headers) out[name] = headers[name]!;
  return out;
}

export function withValue(msg: Message, value: unknown): Message {
  return { ...msg, value };
}

/**
 * `headers` with one header set, as a new object. Copied key by key: in V8 `{...headers, [name]: v}`
 * (and a spread followed by an assignment) cost about 1 µs, ten times this, on a path every
 * message takes (route spans, dead-letter headers).
 */
export function headersWith(headers: Readonly<Record<string, string>>, name: string, value: string): Record<string, string> {
  const out = copyHeaders(headers);
  out[name] = value;
  return out;
}

export function withHeaders(msg: Message, headers: Record<string, string>): Message {
  return { ...msg, headers };
}

/**
 * What a target writes for the message's value: the consumed record's own bytes when no step
 * changed the value (binary, invalid UTF-8 and JSON as its producer spelled it stay as they were),
 * raw bytes as they are (an undecodable batch, a CloudEvent's data_base64), otherwise encodeValue's
 * text. A Kafka tombstone (null bytes) is Kafka's own matter: its producer checks for it first.
 */
export function valuePayload(msg: Message): Buffer | string {
  const original = msg[ORIGINAL];
  if (original && original.value !== null && original.decoded.value === msg.value) return original.value;
  if (Buffer.isBuffer(msg.value)) return msg.value;
  // A CloudEvent's data is written as its datacontenttype says (Kafka binding §3.2.2, HTTP §3.1.1):
  // a string with a JSON type is a JSON string. As bare text, "hello" was no JSON at all (the SDK's
  // Kafka binding failed on it) and "123" came back from the topic as the number 123.
  if (typeof msg.value === 'string' && msg.headers.ce_specversion !== undefined && isJsonMediaType(msg.headers['content-type'])) return JSON.stringify(msg.value);
  // A CloudEvent without data whose datacontenttype is not JSON has no payload: `null` was the
  // text "null" to every reader of that type. (With a JSON type, or none, `null` reads back as no
  // data, where an empty payload would read back as the string "".)
  if (msg.value === null && msg.headers.ce_specversion !== undefined && msg.headers['content-type'] !== undefined && !isJsonMediaType(msg.headers['content-type'])) return '';
  return encodeValue(msg.value ?? null);
}

/** The header that says how the bytes a message came with are compressed (AMQP's content_encoding, HTTP's Content-Encoding). */
export const CONTENT_ENCODING = 'content-encoding';

/**
 * The message's `content-encoding` (`gzip`, ...) where it still describes what valuePayload
 * writes: the bytes the message came with, which no step changed. Once a step made a new value,
 * the bytes written are that value's, and a header claiming gzip for them would be false.
 */
export function payloadContentEncoding(msg: Message): string | undefined {
  const encoding = msg.headers[CONTENT_ENCODING];
  if (encoding === undefined) return undefined;
  const original = msg[ORIGINAL];
  return original !== undefined && original.value !== null && original.decoded.value === msg.value ? encoding : undefined;
}

/**
 * The headers a broker target sends with the message: its own, less a `content-encoding` that no
 * longer describes the payload (payloadContentEncoding). The same object when nothing is left out.
 */
export function sentHeaders(msg: Message): Readonly<Record<string, string>> {
  const headers = msg.headers;
  if (headers[CONTENT_ENCODING] === undefined || payloadContentEncoding(msg) !== undefined) return headers;
  const out = newHeaders();
  for (const name in headers) if (name !== CONTENT_ENCODING) out[name] = headers[name]!;
  return out;
}

/**
 * The content type of what valuePayload writes for `msg`: its own `content-type` where that still
 * names it — a CloudEvent's datacontenttype, bytes sent as they came, a value still of the kind
 * its type says (a string that arrived as text/csv) — else what the value is: bytes, `textType`
 * for a string, JSON otherwise. A step that made a string of a JSON body, or an object of a text
 * one, changed what the body is, and the type it arrived with would misname it. Consumed bytes
 * that are not UTF-8, sent as they came, are bytes too: their value is text made of them (U+FFFD
 * for what is not), and `text/plain; charset=utf-8` had a webhook's framework decode them so.
 */
export function payloadContentType(msg: Message, payload: Buffer | string, textType: string): string {
  const own = msg.headers['content-type'];
  const value = msg.value;
  if (own !== undefined && (Buffer.isBuffer(payload) || msg.headers.ce_specversion !== undefined || isJsonMediaType(own) === (typeof value !== 'string'))) return own;
  if (Buffer.isBuffer(value) || (Buffer.isBuffer(payload) && !isUtf8(payload))) return 'application/octet-stream';
  return typeof value === 'string' ? textType : 'application/json';
}

/**
 * A content type's media type, lower-cased and without parameters. The usual `application/json`
 * is returned as it is: splitting, trimming and lower-casing it cost ~0.1 µs a request.
 */
export function mediaTypeOf(contentType: string): string {
  return contentType === 'application/json' ? contentType : contentType.split(';')[0]!.trim().toLowerCase();
}

/** Whether a media type (as mediaTypeOf gives it) is JSON: application/json or application/*+json. */
export function isJsonMedia(type: string): boolean {
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

/** Whether a content type names JSON, with or without parameters; none: no. */
export function isJsonMediaType(contentType: string | undefined): boolean {
  return contentType !== undefined && isJsonMedia(mediaTypeOf(contentType));
}

/**
 * A value as it goes into JSON for clients (WebSocket frames, event stream data, envelopes): bytes,
 * which JSON has no type for, as a base64 string (as CloudEvents' data_base64, protobuf's JSON
 * mapping and Go write them) rather than Buffer's own `{"type":"Buffer","data":[...]}`.
 */
export function jsonValue(value: unknown): unknown {
  return Buffer.isBuffer(value) ? value.toString('base64') : (value ?? null);
}

/**
 * The value as JSON text for clients (WebSocket frames, event stream data): the JSON it came with
 * while no step changed it, as valuePayload writes it to brokers and webhooks, so an integer past
 * 2^53 or a `1.0` reaches a client as its producer wrote it, not rounded or respelled by
 * JSON.stringify of the parsed value; else jsonValue's JSON. Only bytes that are JSON text
 * qualify: a number or object/array parsed from them (a string may have been plain text), valid
 * UTF-8 (a text frame must be), outer whitespace and a byte-order mark left out.
 */
export function valueJson(msg: Message): string {
  const original = msg[ORIGINAL];
  const value = msg.value;
  if (
    original !== undefined &&
    original.value !== null &&
    original.decoded.value === value &&
    (typeof value === 'number' || (typeof value === 'object' && value !== null && !Buffer.isBuffer(value)))
  ) {
    const bytes = original.value;
    // A byte-order mark, which the listeners take before JSON (as browsers' JSON readers do), is no JSON text.
    let start = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
    let end = bytes.length;
    while (start < end && isJsonSpace(bytes[start]!)) start++;
    while (end > start && isJsonSpace(bytes[end - 1]!)) end--;
    if (start < end && isUtf8(bytes.subarray(start, end))) return bytes.toString('utf8', start, end);
  }
  return JSON.stringify(jsonValue(value));
}

function isJsonSpace(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}

/**
 * A message as the `envelope` format gives it to clients, with the value as valueJson writes it;
 * `ce`, a CloudEvent's attributes, after the rest.
 */
export function envelopeJson(msg: Message, ce: Readonly<Record<string, string>> | undefined): string {
  const head = JSON.stringify({ topic: msg.topic, partition: msg.partition, offset: msg.offset, key: msg.key, headers: msg.headers });
  return `${head.slice(0, -1)},"value":${valueJson(msg)},"timestamp":${JSON.stringify(msg.timestamp) ?? 'null'}${ce ? `,"ce":${JSON.stringify(ce)}` : ''}}`;
}

/**
 * A value an expression made of a value of bytes (`{"data": $}`), with those bytes inside it as
 * base64 strings, as jsonValue writes bytes: JSON would write a Buffer inside an object as
 * `{"type":"Buffer","data":[...]}`. The value itself, when it is the bytes, stays bytes.
 */
export function bytesInsideAsBase64(value: unknown): unknown {
  if (Buffer.isBuffer(value) || value === null || typeof value !== 'object') return value;
  return inside(value);
}

function inside(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return value.toString('base64');
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(inside);
  // fromEntries defines each key as an own property: a `__proto__` key stays a key.
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, inside(v)]));
}

/**
 * An expression's result as the text of a header, a key or an attribute: a string as it is,
 * anything else as JSON, with bytes (a binary CloudEvent's data, `$` or `{"data": $}`) as base64,
 * as jsonValue writes them (the bytes themselves as their base64 text, unquoted), not as Buffer's own `{"type":"Buffer","data":[...]}`. Only an input
 * of bytes can put bytes in a result (JSONata makes none): `fromBytes` says whether it was.
 */
export function resultText(v: unknown, fromBytes: boolean): string {
  if (typeof v === 'string') return v;
  if (!fromBytes) return JSON.stringify(v);
  // The bytes themselves are their base64 text, as a string result is used as it is.
  return Buffer.isBuffer(v) ? v.toString('base64') : JSON.stringify(bytesInsideAsBase64(v));
}

/** JSON text of a value as it travels on the wire: strings as they are, everything else as JSON. */
export function encodeValue(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/**
 * decodeValue() of `buf[start, end)` as UTF-8. A value starting with `{` or `[` (most JSON records)
 * goes straight to JSON.parse, without looking for leading whitespace in a string first.
 */
export function decodeValueBytes(buf: Buffer, start: number, end: number): unknown {
  const first = buf[start];
  // No encoding is UTF-8 without Buffer's look-up of the encoding's name (run for every record read).
  const payload = buf.toString(undefined, start, end);
  if (first !== 0x7b && first !== 0x5b) return decodeValue(payload);
  try {
    return JSON.parse(payload);
  } catch {
    return payload;
  }
}

/**
 * The value of a payload consumed from a broker that carries bytes and no key (MQTT, AMQP, NATS),
 * with the bytes kept as the message's ORIGINAL: a copy to any broker is then byte for byte where
 * no step changed the value (bytes that are not UTF-8, JSON as it was written), as Kafka records are.
 */
export function payloadMessage(payload: Buffer, fields: Omit<Message, 'value' | 'key' | typeof ORIGINAL>, repeated?: Readonly<Record<string, readonly Buffer[]>>): Message {
  const value = isEncoded(fields.headers) ? payload : decodeValueBytes(payload, 0, payload.length);
  return { value, key: null, ...fields, [ORIGINAL]: payloadOriginal(payload, value, fields.headers, repeated) };
}

/**
 * The ORIGINAL of a message whose value was decoded from `payload` (and that has no key): a
 * broker's payload, or a JSON body or frame a client published, which then goes on as the client
 * wrote it where no step changed it.
 */
export function payloadOriginal(payload: Buffer, value: unknown, headers: Readonly<Record<string, string>>, repeated?: Readonly<Record<string, readonly Buffer[]>>): OriginalRecord {
  // `repeated`: every value of a header its server's message repeats (an MQTT user property, a
  // NATS header), which the message's headers hold the last of: a Kafka target writes them all.
  return { value: payload, key: null, headers: repeated ?? NO_RAW_HEADERS, decoded: { value, key: null, headers } };
}

/**
 * The ORIGINAL of a client's JSON body or frame, which parseClientJson read (and would have refused
 * with a name given twice). Without a leading byte order mark: the parse ignored it (RFC 8259 §8.1
 * allows that), but none may be sent on, and a consumer would read the bytes as no JSON at all.
 */
export function clientPayloadOriginal(payload: Buffer, value: unknown, headers: Readonly<Record<string, string>>): OriginalRecord {
  const bytes = payload[0] === 0xef && payload[1] === 0xbb && payload[2] === 0xbf ? payload.subarray(3) : payload;
  return { value: bytes, key: null, headers: NO_RAW_HEADERS, decoded: { value, key: null, headers }, namesChecked: true };
}

const NO_RAW_HEADERS: Readonly<Record<string, Buffer>> = Object.freeze({});

/** The message's ORIGINAL while a field of it is still the one decoded from those bytes (else nothing is left to copy). */
export function liveOriginal(msg: Message): OriginalRecord | undefined {
  const o = msg[ORIGINAL];
  if (o === undefined) return undefined;
  if ((o.value !== null && o.decoded.value === msg.value) || (o.key !== null && o.decoded.key === msg.key)) return o;
  for (const name in o.headers) if (o.decoded.headers[name] === msg.headers[name]) return o;
  return undefined;
}

/**
 * Whether a consumed payload is compressed (a `content-encoding` other than `identity`): its value
 * is then its bytes, as they came, not text made of them (gzip is no UTF-8: as a string, the bytes
 * were lost). Steps see a Buffer; a forward shows it as base64, with the header beside it.
 */
export function isEncoded(headers: Readonly<Record<string, string>>): boolean {
  const encoding = headers[CONTENT_ENCODING];
  return encoding !== undefined && encoding !== '' && encoding.toLowerCase() !== 'identity';
}

/**
 * What a number beyond a double is called wherever JSON brings one (an HTTP body, a WebSocket frame,
 * a consumed payload): `at` is its JSON pointer, when known and not the whole value.
 */
export function hugeNumberText(what: string, at?: string): string {
  return `the ${what} has a number too large to represent (over ±1.8e308)${at ? ` at ${at}` : ''}`;
}

/**
 * The JSON pointer of a number in a value JSON.parse made that a double could not hold (`1e400`
 * reads as Infinity, which JSON.stringify writes on as null), or undefined. Recursive while the
 * value nests a few levels (no allocation), iterative past them (a consumed payload may nest
 * thousands deep); the pointer is made only for a value that has such a number.
 */
export function hugeNumberAt(value: unknown): string | undefined {
  if (typeof value === 'number') return value - value === 0 ? undefined : '';
  if (value === null || typeof value !== 'object' || Buffer.isBuffer(value) || allFinite(value, 0)) return undefined;
  return notFinitePointer(value);
}

/** Whether every number in `v` is finite; false also past 32 levels, where notFinitePointer decides. */
function allFinite(v: object, depth: number): boolean {
  if (depth > 32) return false;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const x: unknown = v[i];
      if (typeof x === 'number') {
        if (x - x !== 0) return false;
      } else if (x !== null && typeof x === 'object' && !allFinite(x, depth + 1)) return false;
    }
    return true;
  }
  const o = v as Record<string, unknown>;
  for (const k in o) {
    const x = o[k];
    if (typeof x === 'number') {
      if (x - x !== 0) return false;
    } else if (x !== null && typeof x === 'object' && !allFinite(x, depth + 1)) return false;
  }
  return true;
}

/** hugeNumberAt's walk with places, in document order: each container with its parent and the next key to look at; the pointer spelled only for the number found. */
function notFinitePointer(root: object): string | undefined {
  interface Place {
    o: Record<string, unknown>;
    keys: string[];
    next: number;
    parent: Place | undefined;
    key: string;
  }
  const enter = (v: object, parent: Place | undefined, key: string): Place => ({
    o: v as Record<string, unknown>,
    keys: Array.isArray(v) ? v.map((_, i) => String(i)) : Object.keys(v),
    next: 0,
    parent,
    key,
  });
  for (let place: Place | undefined = enter(root, undefined, ''); place !== undefined; ) {
    if (place.next === place.keys.length) {
      place = place.parent;
      continue;
    }
    const key = place.keys[place.next++]!;
    const x = place.o[key];
    if (typeof x === 'number' && x - x !== 0) {
      const keys = [key];
      for (let p: Place = place; p.parent !== undefined; p = p.parent) keys.push(p.key);
      return keys
        .reverse()
        .map((k) => `/${k.replaceAll('~', '~0').replaceAll('/', '~1')}`)
        .join('');
    }
    if (x !== null && typeof x === 'object') place = enter(x, place, key);
  }
  return undefined;
}

/** The inverse of encodeValue for payloads from brokers: JSON when it parses, otherwise the string. */
export function decodeValue(payload: string): unknown {
  const c = payload.trimStart()[0];
  if (c === '{' || c === '[' || c === '"' || c === '-' || (c !== undefined && c >= '0' && c <= '9') || payload === 'true' || payload === 'false' || payload === 'null') {
    try {
      return JSON.parse(payload);
    } catch {
      return payload;
    }
  }
  return payload;
}

/**
 * A consumed record's incarnation of its partition: set once its subscription has seen the source
 * made again (a Kafka topic deleted and created, its offsets counted from 0 again), a number that
 * only grows in the process (nextIncarnation). Records of one incarnation are numbered apart from
 * another's: an event stream's position for the partition restarts at a newer one, while a record
 * delivered again in the same incarnation (a rebalance) keeps it. A symbol, as ORIGINAL.
 */
export const SOURCE_INCARNATION: unique symbol = Symbol('eventgate.sourceIncarnation');

let incarnations = 0;

/** A new incarnation, above every one given before in this process (kept across reloads). */
export function nextIncarnation(): number {
  return ++incarnations;
}
