/**
 * CloudEvents 1.0 (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/spec.md) as
 * eventgate carries it: a message is a CloudEvent when its headers hold the attributes under the
 * Kafka protocol binding's names (`ce_<attribute>`, datacontenttype as `content-type`), and its
 * value is the event's data. That one representation is what the Kafka binding puts on the wire in
 * binary mode, so Kafka out and in need no translation, the memory broker keeps attributes as it
 * keeps any header, and `headers` steps can read them. This module converts between it and the
 * HTTP binding (binary, structured and batched modes) and the structured JSON format, and checks
 * attributes as the spec requires.
 */
import { problem, type Problem } from '../core/errors.js';
import { isJsonMediaType, mediaTypeOf, ORIGINAL, newHeaders, type Message } from '../core/message.js';

/** Header prefix of attributes on messages (the Kafka binding's, section 3.2.3). */
export const CE_HEADER_PREFIX = 'ce_';
/** The header holding the version: a message is a CloudEvent exactly when it has one. */
export const CE_SPECVERSION = 'ce_specversion';
export const STRUCTURED_TYPE = 'application/cloudevents+json';
export const BATCH_TYPE = 'application/cloudevents-batch+json';

/** Context attributes of one event (string-valued, as every binding carries them). */
export type CloudEventAttributes = Record<string, string>;

const REQUIRED = ['specversion', 'id', 'source', 'type'] as const;
/**
 * Attribute names: lower-case letters and digits (spec, "Attribute Naming Convention": a MUST).
 * That they "SHOULD NOT exceed 20 characters" is advice to whoever names them, not a rule an
 * event breaks: the SDKs send longer ones (`comexampleextension1` is 20), and they were a 400.
 */
const ATTRIBUTE_NAME = /^[a-z0-9]+$/;
/** RFC 3339 date-time (section 5.6), as `time` must be; its numbers' ranges are checked by isRfc3339. */
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;
/** RFC 2046 media type with optional parameters. */
const MEDIA_TYPE = /^[A-Za-z0-9!#$&^_.+-]+\/[A-Za-z0-9!#$&^_.+-]+(\s*;.*)?$/;
/** Standard base64 with padding (RFC 4648 §4), as `data_base64` holds binary data. */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Whether `text` is standard base64 with padding (RFC 4648 §4): Buffer.from would skip what is not, without a word. */
export function isPaddedBase64(text: string): boolean {
  return BASE64.test(text);
}
/** Absolute URI (RFC 3986 scheme ':' ...), as `dataschema` must be. */
const ABSOLUTE_URI = /^[A-Za-z][A-Za-z0-9+.-]*:[^\s]*$/;

/** The attributes of a CloudEvent message (`$ce` in expressions), or undefined for a plain message. */
export function attributesOf(headers: Readonly<Record<string, string>>): CloudEventAttributes | undefined {
  if (headers[CE_SPECVERSION] === undefined) return undefined;
  // A header map (newHeaders): a `ce___proto__` header is kept as the attribute `__proto__`, which
  // the checks then refuse by name, instead of vanishing into a plain object's prototype setter.
  const out: CloudEventAttributes = newHeaders();
  for (const name in headers) {
    if (name.startsWith(CE_HEADER_PREFIX)) out[name.slice(CE_HEADER_PREFIX.length)] = headers[name]!;
  }
  const ct = headers['content-type'];
  if (ct !== undefined) out.datacontenttype = ct;
  return out;
}

/** Characters a CloudEvents String may not hold: C0 and C1 controls, DEL, unpaired surrogates. */
const DISALLOWED_CHARS = /[\u0000-\u001f\u007f-\u009f]|\p{Cs}/u;

/**
 * Why `attrs` is not a valid CloudEvent, one line per attribute (`'id' is missing`), or an empty
 * list. `at` prefixes each line (the index of an event in a batch).
 */
export function attributeErrors(attrs: Readonly<Record<string, unknown>>, at = ''): string[] {
  const errors: string[] = [];
  const bad = (name: string, why: string) => errors.push(`${at}'${name}' ${why}`);
  for (const name of REQUIRED) {
    const v = attrs[name];
    if (v === undefined || v === null) bad(name, 'is missing (a required CloudEvents attribute)');
    else if (typeof v !== 'string' || v === '') bad(name, 'must be a non-empty string');
  }
  if (typeof attrs.specversion === 'string' && attrs.specversion !== '1.0') bad('specversion', `is '${attrs.specversion}'; only CloudEvents 1.0 is supported`);
  if (typeof attrs.source === 'string' && /\s/.test(attrs.source)) bad('source', 'must be a URI-reference (no spaces)');
  const optional: Record<string, [(v: string) => boolean, string]> = {
    time: [isRfc3339, 'must be an RFC 3339 timestamp such as 2026-12-01T17:00:00Z'],
    datacontenttype: [(v) => MEDIA_TYPE.test(v), 'must be a media type such as application/json'],
    dataschema: [(v) => ABSOLUTE_URI.test(v), 'must be an absolute URI'],
    subject: [(v) => v !== '', 'must be a non-empty string'],
  };
  for (const [name, [valid, why]] of Object.entries(optional)) {
    const v = attrs[name];
    if (v === undefined) continue;
    if (typeof v !== 'string' || !valid(v)) bad(name, why);
  }
  for (const name of Object.keys(attrs)) {
    if (!ATTRIBUTE_NAME.test(name)) bad(name, 'is not a valid attribute name (lower-case letters and digits only)');
    else if (!REQUIRED.includes(name as (typeof REQUIRED)[number]) && !(name in optional) && !isScalar(attrs[name])) bad(name, 'must be a string, number or boolean');
    // CloudEvents' String type disallows control characters and lone surrogates (spec, "Type
    // System"): a type or id with a line break passed here and then broke binary-mode headers
    // and SSE event lines on the way out, long after the producer was told 200.
    else if (typeof attrs[name] === 'string' && DISALLOWED_CHARS.test(attrs[name] as string)) bad(name, 'must not contain control characters or lone surrogates (a CloudEvents String)');
  }
  return errors;
}

/**
 * Whether `v` is an RFC 3339 date-time: its shape, and each number within its range (section 5.7:
 * months 1 to 12, the days of the month, hours to 23, a leap second's 60). The shape alone let
 * `2026-13-45T99:99:99Z` through with a 200, to consumers whose own date parsers then fail on it.
 */
function isRfc3339(v: string): boolean {
  const m = RFC3339.exec(v);
  if (m === null) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const daysInMonth = month === 2 ? (leap ? 29 : 28) : [4, 6, 9, 11].includes(month) ? 30 : 31;
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 60) return false;
  return m[7] === undefined || (Number(m[7]) <= 23 && Number(m[8]) <= 59);
}

function isScalar(v: unknown): boolean {
  return typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));
}

function invalid(errors: string[], detail?: string): Problem {
  return problem('EG_CLOUDEVENT_INVALID', detail ?? (errors.length === 1 ? `not a valid CloudEvent: ${errors[0]}` : `not a valid CloudEvent: ${errors.length} problems`), { errors });
}

/** The headers of a message carrying `attrs` (and the headers it had that are not attributes). */
export function withAttributes(headers: Readonly<Record<string, string>>, attrs: Readonly<Record<string, unknown>>): Record<string, string> {
  const out = newHeaders();
  for (const name in headers) if (!name.startsWith(CE_HEADER_PREFIX) && name !== 'content-type') out[name] = headers[name]!;
  for (const [name, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    out[name === 'datacontenttype' ? 'content-type' : CE_HEADER_PREFIX + name] = String(v);
  }
  return out;
}

// ---- HTTP binding (https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md)

export type HttpMode = 'binary' | 'structured' | 'batch';

/** Which mode an HTTP request uses, or undefined when it is not a CloudEvent. */
export function httpMode(contentType: string, headers: Readonly<Record<string, string | string[] | undefined>>): HttpMode | undefined {
  if (contentType === STRUCTURED_TYPE) return 'structured';
  if (contentType === BATCH_TYPE) return 'batch';
  if (headers['ce-specversion'] !== undefined) return 'binary';
  return undefined;
}

/**
 * Binary mode: the request's `ce-*` headers become attributes (percent-decoded, §3.1.3.2) and
 * `content-type` the datacontenttype; the body is the data. `headers` are the request headers the
 * message would carry; the result replaces the `ce-*` ones with their message form.
 */
export function decodeBinary(headers: Readonly<Record<string, string>>, rawHeaders?: readonly string[]): { ok: true; headers: Record<string, string> } | { ok: false; problem: Problem } {
  const attrs = newHeaders(); // a `ce-__proto__` header is an attribute named `__proto__`, refused by name
  const rest = newHeaders();
  const errors: string[] = rawHeaders === undefined ? [] : repeatedAttributes(rawHeaders);
  for (const name in headers) {
    if (!name.startsWith('ce-')) {
      if (name !== 'content-type') rest[name] = headers[name]!;
      continue;
    }
    const attr = name.slice(3);
    try {
      attrs[attr] = decodeURIComponent(unquoted(headers[name]!));
    } catch {
      errors.push(`'${attr}' is not valid percent-encoded UTF-8`);
    }
  }
  if (headers['content-type'] !== undefined) attrs.datacontenttype = headers['content-type'];
  errors.push(...attributeErrors(attrs));
  if (errors.length > 0) return { ok: false, problem: invalid(errors) };
  return { ok: true, headers: withAttributes(rest, attrs) };
}

/**
 * A header value with the quoting of an RFC 7230 quoted-string (§3.2.6) undone, which the HTTP and
 * NATS bindings (§3.1.3.2) say a receiver MUST do before percent-decoding: earlier versions of them
 * had senders quote values with spaces, so `"order 1"` kept its quotes as part of the attribute.
 */
function unquoted(v: string): string {
  return v.length >= 2 && v.charCodeAt(0) === 0x22 && v.charCodeAt(v.length - 1) === 0x22 ? v.slice(1, -1).replace(/\\(.)/g, '$1') : v;
}

/**
 * An error for each attribute sent in more than one `ce-` header line (`rawHeaders`: node's
 * request.rawHeaders). Each attribute is one header (HTTP binding §3.1.3.1); node joins repeats
 * with `, `, so two `ce-id` lines made the id `a, b`, one neither line gave.
 */
function repeatedAttributes(rawHeaders: readonly string[]): string[] {
  let seen: Map<string, number> | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length < 4 || (name.charCodeAt(0) | 0x20) !== 0x63 || (name.charCodeAt(1) | 0x20) !== 0x65 || name.charCodeAt(2) !== 0x2d) continue;
    seen ??= new Map();
    const lower = name.toLowerCase();
    seen.set(lower, (seen.get(lower) ?? 0) + 1);
  }
  const errors: string[] = [];
  for (const [name, n] of seen ?? []) if (n > 1) errors.push(`'${name.slice(3)}' is given in ${n} ${name} headers; send each attribute in one header`);
  return errors;
}

/** One event of a structured or batched request: the message's headers (attributes included) and value (the data). */
export interface DecodedEvent {
  headers: Record<string, string>;
  value: unknown;
}

/**
 * Structured mode: `body` is the parsed JSON event format (§3 of the JSON format spec); `headers`
 * are the request headers the message would carry besides the attributes.
 */
export function decodeStructured(body: unknown, headers: Readonly<Record<string, string>>, at = ''): { ok: true; event: DecodedEvent } | { ok: false; errors: string[] } {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return { ok: false, errors: [`${at}a structured CloudEvent must be a JSON object`] };
  const { data, data_base64: base64, ...given } = body as Record<string, unknown>;
  // An attribute whose value is null is unset (JSON format §2.2: `"subject": null` is the spec's
  // own example); a 400 refused such events. fromEntries keeps a `__proto__` member an attribute.
  const attrs = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== null));
  const errors = attributeErrors(attrs, at);
  // Binary data (JSON format §3.1.2) becomes the bytes it encodes: the message's value is a Buffer.
  let bytes: Buffer | undefined;
  if (base64 !== undefined) {
    if (data !== undefined) errors.push(`${at}'data' and 'data_base64' are both given; an event has one or the other`);
    else if (typeof base64 !== 'string' || !BASE64.test(base64)) errors.push(`${at}'data_base64' must be a base64 string (RFC 4648)`);
    else bytes = Buffer.from(base64, 'base64');
  }
  // JSON format §3.1.1: data of a type that is not JSON is its text; `{"a":1}` said to be
  // application/xml went on as a body no XML reader takes, and as structured `data` no writer may give.
  const type = attrs.datacontenttype;
  if (data !== undefined && data !== null && typeof data !== 'string' && typeof type === 'string' && !isJsonMediaType(type)) {
    errors.push(`${at}'data' must be a string for a datacontenttype that is not JSON (${type}); send JSON data as application/json, bytes as data_base64`);
  }
  if (errors.length > 0) return { ok: false, errors };
  const rest = newHeaders();
  for (const name in headers) if (name !== 'content-type' && !name.startsWith('ce-')) rest[name] = headers[name]!;
  if (attrs.datacontenttype === undefined && data !== undefined) attrs.datacontenttype = 'application/json';
  if (attrs.datacontenttype === undefined && bytes !== undefined) attrs.datacontenttype = 'application/octet-stream';
  return { ok: true, event: { headers: withAttributes(rest, attrs), value: bytes ?? (data === undefined ? null : data) } };
}

/** Batched mode: a JSON array of structured events. Every event is checked before any is accepted. */
export function decodeBatch(body: unknown, headers: Readonly<Record<string, string>>): { ok: true; events: DecodedEvent[] } | { ok: false; problem: Problem } {
  if (!Array.isArray(body)) return { ok: false, problem: invalid(['a CloudEvents batch must be a JSON array of events']) };
  const events: DecodedEvent[] = [];
  const errors: string[] = [];
  body.forEach((item, i) => {
    const r = decodeStructured(item, headers, `[${i}] `);
    if (r.ok) events.push(r.event);
    else errors.push(...r.errors);
  });
  if (errors.length > 0) return { ok: false, problem: invalid(errors) };
  return { ok: true, events };
}

/**
 * A WebSocket frame read as a structured event by its route's agreement (`from.cloudevents:
 * structured`): `value` the frame's JSON, `headers` what its message carries besides (the trace
 * context). The WebSocket binding sends one event per message and has no batch format, so an
 * array is told so, not only that it is no object.
 */
export function decodeFrameEvent(value: unknown, headers: Readonly<Record<string, string>>): { ok: true; headers: Record<string, string>; value: unknown } | { ok: false; problem: Problem } {
  if (Array.isArray(value)) return { ok: false, problem: invalid(['a frame holds one structured CloudEvent, not a batch (a JSON array): send each event in a frame of its own']) };
  const r = decodeStructured(value, headers);
  return r.ok ? { ok: true, headers: r.event.headers, value: r.event.value } : { ok: false, problem: invalid(r.errors) };
}

/** The 400 `EG_CLOUDEVENT_INVALID` of `errors`; `detail` replaces the summary made of them. */
export function structuredProblem(errors: string[], detail?: string): Problem {
  return invalid(errors, detail);
}

/** The structured JSON form of a CloudEvent message: its attributes and its value as `data`, or binary data (a Buffer) as `data_base64`. */
export function toStructured(msg: Pick<Message, 'headers' | 'value'>): Record<string, unknown> {
  const event: Record<string, unknown> = { ...attributesOf(msg.headers) };
  if (Buffer.isBuffer(msg.value)) event.data_base64 = msg.value.toString('base64');
  else if (msg.value !== null && msg.value !== undefined) event.data = msg.value;
  return event;
}

/** Characters an HTTP header value of an attribute must percent-encode (HTTP binding §3.1.3.2). */
const NEEDS_ENCODING = /[^\x21-\x7e]|[%"]/;

/** HTTP binary mode: the `ce-*` headers (and content-type) for a CloudEvent message. */
export function binaryHttpHeaders(headers: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name in headers) {
    if (!name.startsWith(CE_HEADER_PREFIX)) continue;
    const v = headers[name]!;
    out[`ce-${name.slice(CE_HEADER_PREFIX.length)}`] = httpAttributeValue(v);
  }
  return out;
}

/** An attribute's value as an HTTP header carries it: printable ASCII as it is, anything else (and `%`, `"`) percent-encoded. */
export function httpAttributeValue(v: string): string {
  return NEEDS_ENCODING.test(v) ? percentEncode(v) : v;
}

function percentEncode(v: string): string {
  let out = '';
  for (const byte of Buffer.from(v, 'utf8')) {
    out += byte >= 0x21 && byte <= 0x7e && byte !== 0x25 && byte !== 0x22 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

// ---- structured mode on brokers (Kafka binding §3.3) -------------------------------------------

/**
 * A message as a structured-mode record: the value is the JSON event, attributes leave the
 * headers, and `content-type` says what the value is. Plain messages are returned unchanged.
 */
export function toStructuredMessage(msg: Message): Message {
  if (msg.headers[CE_SPECVERSION] === undefined) return msg;
  const headers = newHeaders();
  for (const name in msg.headers) if (!name.startsWith(CE_HEADER_PREFIX) && name !== 'content-type') headers[name] = msg.headers[name]!;
  headers['content-type'] = STRUCTURED_TYPE;
  return { ...msg, headers, value: toStructured(msg) };
}

/**
 * A consumed record as a CloudEvent message where it is one; any other record unchanged.
 * Structured mode (`content-type: application/cloudevents+json`) is decoded; a structured record
 * that is not a valid event stays as it is (its value is the JSON it holds), so a validate step
 * can still see it. Binary mode keeps its data as the HTTP listener takes a binary-mode body
 * (see binaryData). `structuredByAgreement` (a route's `from.cloudevents: structured`): a record
 * with no content type, or a JSON one, that is no binary-mode event is decoded as structured too.
 */
export function fromConsumedRecord(msg: Message, structuredByAgreement = false): Message {
  const ct = msg.headers['content-type'];
  // By agreement (`from.cloudevents: structured`; MQTT 3.1.1 has no content type to say so): a JSON payload that is no binary-mode event is read as a structured one.
  if (structuredByAgreement && msg.headers[CE_SPECVERSION] === undefined && (ct === undefined || isJsonMediaType(ct))) return structuredEvent(msg);
  // Neither structured mode nor binary data: the usual record is passed over without lower-casing its type.
  if (ct === undefined || ct === 'application/json') return msg;
  if (msg.headers[CE_SPECVERSION] !== undefined) return binaryData(msg, ct);
  if (!ct.toLowerCase().startsWith(STRUCTURED_TYPE)) return msg;
  return structuredEvent(msg);
}

/** A structured-mode message as the event it holds; one whose value is no valid event stays as it is. */
function structuredEvent(msg: Message): Message {
  const r = decodeStructured(msg.value, msg.headers);
  return r.ok ? { ...msg, headers: r.event.headers, value: r.event.value } : msg;
}

/** A CloudEvent message's data as binaryData reads it (a message the `cloudevent` step just wrapped). */
export function eventData(msg: Message): Message {
  const ct = msg.headers['content-type'];
  return ct === undefined || ct === 'application/json' ? msg : binaryData(msg, ct);
}

/**
 * A binary-mode event's data as the HTTP listener takes it: JSON for a JSON media type, a string
 * for text/plain, otherwise the bytes. A broker client reads every record value as UTF-8 (JSON
 * where it parses), which turned an application/octet-stream event's bytes into text: structured
 * webhooks and `format: cloudevent` streams then sent a lossy `data` string instead of the
 * `data_base64` the same event gets when it comes over HTTP or through a memory topic.
 */
function binaryData(msg: Message, contentType: string): Message {
  if (isJsonMediaType(contentType)) return msg;
  const original = msg[ORIGINAL];
  if (Buffer.isBuffer(msg.value)) return msg;
  // Only the value the record's bytes were read into is read again; a message with a value of its
  // own (a memory topic's, which keeps what was published) is as it was published.
  if (original === undefined || original.value === null || original.decoded.value !== msg.value) return msg;
  if (mediaTypeOf(contentType) === 'text/plain') {
    if (typeof msg.value === 'string') return msg;
    const text = utf8Text(original.value);
    if (text !== undefined) return { ...msg, value: text };
  }
  // A copy: the record's bytes are a slice of the whole fetch response, which a memory topic's
  // retention must not hold on to.
  return { ...msg, value: Buffer.from(original.value) };
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function utf8Text(bytes: Buffer): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

// ---- MQTT 5 binding (https://github.com/cloudevents/spec/blob/main/cloudevents/bindings/mqtt-protocol-binding.md)
//
// Binary mode carries `datacontenttype` as the PUBLISH packet's Content Type property and every
// other attribute as a user property of its own name, unprefixed. The MQTT publisher writes that
// form itself (it encodes packets by hand: src/kinds/brokers/mqtt/publisher.ts); this reads it.

/** What the MQTT binding's binary mode names an attribute: its name, the spec's MUST (lower-case ASCII letters and digits). */
const MQTT_ATTRIBUTE_NAME = /^[a-z0-9]+$/;
/** User properties of a binary-mode event that stay headers: the W3C trace context the gateway itself carries. */
const TRACE_CONTEXT = new Set(['traceparent', 'tracestate']);

/**
 * The headers of a message consumed over MQTT 5, from its user properties and Content Type
 * property. The Content Type is the `content-type` header (a `content-type` user property, as
 * earlier eventgate versions wrote it, is read when there is none). A message with a
 * `specversion` user property and no `ce_specversion` one is a binary-mode CloudEvent: its user
 * properties named as attributes become `ce_<name>` headers (except the trace context), a
 * `datacontenttype` one (the `cloudevents` SDK writes it beside the Content Type) is the content
 * type when nothing else gives one, and other names stay headers. Messages with `ce_` user
 * properties (what eventgate wrote before) are read as they are. `userProperties` is the
 * caller's own copy: it may be returned, changed.
 */
export function fromMqttProperties(userProperties: Record<string, string>, contentType: string | undefined): Record<string, string> {
  let headers = userProperties;
  if (userProperties.specversion !== undefined && userProperties[CE_SPECVERSION] === undefined) {
    headers = newHeaders();
    for (const name in userProperties) {
      const v = userProperties[name]!;
      if (name === 'datacontenttype') continue;
      headers[MQTT_ATTRIBUTE_NAME.test(name) && !TRACE_CONTEXT.has(name) ? CE_HEADER_PREFIX + name : name] = v;
    }
    if (headers['content-type'] === undefined && userProperties.datacontenttype !== undefined) headers['content-type'] = userProperties.datacontenttype;
  }
  if (contentType !== undefined) headers['content-type'] = contentType;
  return headers;
}

// ---- AMQP binding (https://github.com/cloudevents/spec/blob/main/cloudevents/bindings/amqp-protocol-binding.md)
//
// Binary mode names each attribute `cloudEvents_<name>` (`cloudEvents:<name>` before v1.0.2; a
// consumer should read both) among a message's application properties, which a RabbitMQ 0-9-1
// consumer sees as headers: what AMQP 1.0 publishers to RabbitMQ and the CloudEvents SDK's Spring
// AMQP converter send. The gateway itself publishes `ce_` headers, as earlier versions did.

/** An attribute as the AMQP binding names it: the prefix with either separator, then its name (lower-case letters and digits). */
const AMQP_ATTRIBUTE = /^cloudEvents[_:]([a-z0-9]+)$/;

/**
 * The headers of a message consumed over AMQP 0-9-1: a binary-mode CloudEvent in the AMQP
 * binding's names (a `cloudEvents_specversion` or `cloudEvents:specversion` header, and no
 * `ce_specversion`) gets them as `ce_<name>` headers, its `datacontenttype` one the content type
 * when the message has none (`content_type` is the binding's place for it); other headers stay.
 * `headers` is the caller's own: it may be returned, changed.
 */
export function fromAmqpHeaders(headers: Record<string, string>): Record<string, string> {
  if (headers[CE_SPECVERSION] !== undefined || (headers.cloudEvents_specversion === undefined && headers['cloudEvents:specversion'] === undefined)) return headers;
  const out = newHeaders();
  let type: string | undefined;
  for (const name in headers) {
    const v = headers[name]!;
    const attribute = AMQP_ATTRIBUTE.exec(name)?.[1];
    if (attribute === undefined) out[name] = v;
    else if (attribute === 'datacontenttype') type = v;
    else out[CE_HEADER_PREFIX + attribute] = v;
  }
  if (out['content-type'] === undefined && type !== undefined) out['content-type'] = type;
  return out;
}

// ---- NATS binding (https://github.com/cloudevents/spec/blob/main/cloudevents/bindings/nats-protocol-binding.md)
//
// Binary mode (NATS 2.2 headers) names each attribute `ce-<name>`, datacontenttype as
// `ce-datacontenttype`, values percent-encoded as the HTTP binding's; header names are
// case-insensitive. The gateway itself publishes `ce_` headers and `content-type`, as Kafka's binding.

/** An attribute as the NATS binding names it (in any case): `ce-` and its name. */
const NATS_ATTRIBUTE = /^ce-([a-z0-9]+)$/i;

/**
 * The headers of a message consumed over NATS: a binary-mode CloudEvent in the NATS binding's
 * names (a `ce-specversion` header in any case, and no `ce_specversion`) gets them as `ce_<name>`
 * headers, percent-decoded (a value that does not decode is kept as it came), its
 * `ce-datacontenttype` the content type when the message has none; other headers stay. `headers`
 * is the caller's own: it may be returned, changed.
 */
export function fromNatsHeaders(headers: Record<string, string>): Record<string, string> {
  if (headers[CE_SPECVERSION] !== undefined || !hasNatsSpecversion(headers)) return headers;
  const out = newHeaders();
  let type: string | undefined;
  for (const name in headers) {
    const attribute = NATS_ATTRIBUTE.exec(name)?.[1]?.toLowerCase();
    if (attribute === undefined) {
      out[name] = headers[name]!;
      continue;
    }
    const v = natsAttributeValue(headers[name]!);
    if (attribute === 'datacontenttype') type = v;
    else out[CE_HEADER_PREFIX + attribute] = v;
  }
  if (out['content-type'] === undefined && type !== undefined) out['content-type'] = type;
  return out;
}

function hasNatsSpecversion(headers: Readonly<Record<string, string>>): boolean {
  if (headers['ce-specversion'] !== undefined) return true;
  // Go's client writes names as HTTP does (`Ce-Specversion`); most messages have no such header, and a short loop says so.
  for (const name in headers) if (name.length === 14 && name.toLowerCase() === 'ce-specversion') return true;
  return false;
}

/** A NATS header's attribute value: a double-quoted string unquoted (older binding versions), then one round of percent-decoding. */
function natsAttributeValue(raw: string): string {
  const v = unquoted(raw);
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}
