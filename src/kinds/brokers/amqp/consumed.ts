/**
 * What an AMQP delivery becomes as a consumed message (toMessage): its header table as the
 * message's string headers, and its `timestamp` property as the message's time. Both come from
 * whoever published to the server, so each field type of the table (AMQP 0-9-1 §4.2.5.5, as
 * amqplib decodes it) gets a text that keeps its whole value.
 */

import type { ConsumeMessage } from 'amqplib';
import { fromAmqpHeaders } from '../../../codecs/cloudevents.js';
import { CONTENT_ENCODING, newHeaders, payloadMessage, type Message } from '../../../core/message.js';
import { PROPERTY_HEADERS } from './publisher.js';
import { TYPED_FIELDS, typedFieldsOf, type TypedFields } from './field-table.js';

/** A message consumed from AMQP with typed header fields keeps them here (a symbol: steps' spreads carry it, JSON and expressions never see it). */
export type WithTypedFields = Message & { [TYPED_FIELDS]?: TypedFields };

/** The latest time a JavaScript Date holds (year 275760), in milliseconds since the epoch. */
const LAST_DATE_MS = 8.64e15;

/**
 * A delivery's `timestamp` property (whole seconds) in milliseconds, or undefined when it has none
 * or one past any date: AMQP allows up to 2^64 - 1 seconds, which no target can write back
 * (AMQP's own publisher, Kafka's int64 milliseconds) and every publish of it failed, for ever.
 */
export function consumedTime(seconds: unknown): number | undefined {
  if (typeof seconds !== 'number' || !(seconds >= 0)) return undefined;
  const ms = seconds * 1000;
  return ms <= LAST_DATE_MS ? ms : undefined;
}

/**
 * A header table as one string per name. A string is itself; a number or boolean its text (a 64-bit
 * integer, signed or not, its exact decimal digits: field-table.ts reads them past 2^53); a byte
 * array its bytes as UTF-8; a decimal its digits with the point (`3.14`); a timestamp its seconds;
 * an array or a nested table its JSON text, with decimals, unsigned 64-bit integers and 64-bit
 * integers or timestamps past 2^53 as strings (digits), other timestamps as seconds and byte
 * arrays as base64 inside. An array is one value in AMQP, not a repeated header: all of it is
 * kept. A void value (no value at all) is left out, as a header without a value.
 */
export function headerStrings(table: Readonly<Record<string, unknown>> | undefined): Record<string, string> {
  const out = newHeaders();
  if (!table) return out;
  for (const name of Object.keys(table)) {
    const v = table[name];
    if (v === undefined || v === null) continue;
    out[name] = typeof v === 'string' ? v : Buffer.isBuffer(v) ? v.toString('utf8') : typeof v !== 'object' ? String(v) : (taggedText(v) ?? JSON.stringify(plain(v)));
  }
  return out;
}

/** amqplib's `{'!': 'decimal' | 'timestamp', value}` as text, or undefined for any other object. */
function taggedText(v: object): string | undefined {
  const t = v as { '!'?: unknown; value?: unknown };
  if (t['!'] === 'decimal') {
    const { places, digits } = t.value as { places: number; digits: number };
    const text = String(digits).padStart(places + 1, '0');
    return places === 0 ? text : `${text.slice(0, text.length - places)}.${text.slice(text.length - places)}`;
  }
  if (t['!'] === 'timestamp') return String(t.value);
  return undefined;
}

/** A value inside an array or table as JSON holds it: bytes as base64, decimals as strings, timestamps as seconds. */
function plain(v: unknown): unknown {
  // An unsigned 64-bit field ('L') is a BigInt, which JSON has no number for: its digits as a string.
  if (typeof v === 'bigint') return String(v);
  if (v === null || typeof v !== 'object') return v;
  if (Buffer.isBuffer(v)) return v.toString('base64');
  if (Array.isArray(v)) return v.map(plain);
  const tagged = taggedText(v);
  if (tagged !== undefined) return (v as { '!': string })['!'] === 'timestamp' ? plain((v as { value: unknown }).value) : tagged;
  const out = newHeaders<unknown>();
  for (const k of Object.keys(v)) out[k] = plain((v as Record<string, unknown>)[k]);
  return out;
}

const PROPERTY_NAMES = Object.keys(PROPERTY_HEADERS) as (keyof typeof PROPERTY_HEADERS)[];

/** The AMQP binding's names of the `time` attribute (its `cloudEvents_` prefix, and `cloudEvents:` before v1.0.2). */
const TIME_ATTRIBUTES = new Set(['cloudEvents_time', 'cloudEvents:time']);
/** An attribute in the AMQP binding's names, and the name it has. */
const BINDING_ATTRIBUTE = /^cloudEvents[_:](.*)$/;
/** The spec's own attributes: none is of the Binary type, so bytes sent for one are its text (UTF-8), not base64. */
const CORE_ATTRIBUTES = new Set(['specversion', 'id', 'source', 'type', 'datacontenttype', 'dataschema', 'subject', 'time']);

/**
 * A binary-mode CloudEvent's attributes sent in the AMQP types the binding maps CloudEvents types
 * to, as their canonical strings (CloudEvents, "Type System"), which a receiver MUST read as well
 * as the string form: `time` as an AMQP timestamp its RFC 3339 text (as the timestamp's seconds it
 * was `$ce.time` "1764608400", and a webhook's `ce-time` no CloudEvents reader takes); an
 * extension sent as AMQP binary (a Binary attribute) its base64 text (read as UTF-8, bytes that are
 * no text were lost). The spec's own attributes have no Binary type: bytes for one stay its text.
 */
function attributeValues(headers: Record<string, string>, table: Readonly<Record<string, unknown>> | undefined): void {
  if (table === undefined) return;
  for (const name in table) {
    const attribute = BINDING_ATTRIBUTE.exec(name)?.[1];
    if (attribute === undefined) continue;
    const v = table[name] as { '!'?: unknown; value?: unknown } | undefined;
    if (Buffer.isBuffer(v)) {
      if (!CORE_ATTRIBUTES.has(attribute)) headers[name] = v.toString('base64');
    } else if (TIME_ATTRIBUTES.has(name) && v !== undefined && v !== null && typeof v === 'object' && v['!'] === 'timestamp') {
      const ms = consumedTime(v.value);
      if (ms !== undefined) headers[name] = new Date(ms).toISOString().replace('.000Z', 'Z');
    }
  }
}

export function toMessage(m: ConsumeMessage): Message {
  const headers = headerStrings(m.properties.headers);
  attributeValues(headers, m.properties.headers);
  // The content_type property is the message's content type (a structured CloudEvent's
  // application/cloudevents+json); a `content-type` header, as earlier eventgate versions sent it, wins.
  const contentType = m.properties.contentType as unknown;
  if (headers['content-type'] === undefined && typeof contentType === 'string' && contentType !== '') headers['content-type'] = contentType;
  // content_encoding (gzip, ...) as HTTP names it; the publisher maps the header back to the property.
  const contentEncoding = m.properties.contentEncoding as unknown;
  if (headers[CONTENT_ENCODING] === undefined && typeof contentEncoding === 'string' && contentEncoding !== '') headers[CONTENT_ENCODING] = contentEncoding;
  // message_id, correlation_id, reply_to, type, app_id, user_id, priority and expiration as Spring AMQP's header mapper names them (publisher.ts); a header of that name wins.
  const p = m.properties as unknown as Record<string, unknown>;
  for (const property of PROPERTY_NAMES) {
    const v = p[property];
    const name = PROPERTY_HEADERS[property];
    if (headers[name] !== undefined) continue;
    if (typeof v === 'string' && v !== '') headers[name] = v;
    // The priority octet, in digits.
    else if (typeof v === 'number') headers[name] = String(v);
  }
  const msg: WithTypedFields = payloadMessage(m.content, {
    // A binary-mode CloudEvent in the AMQP binding's names (cloudEvents_<name>) as the gateway's (ce_<name>).
    headers: fromAmqpHeaders(headers),
    topic: m.fields.routingKey,
    partition: null,
    offset: null,
    timestamp: consumedTime(m.properties.timestamp) ?? Date.now(),
  });
  const typed = typedFieldsOf(m.properties.headers);
  if (typed) {
    const text = newHeaders<string>();
    for (const name in typed) if (headers[name] !== undefined) text[name] = headers[name]!;
    msg[TYPED_FIELDS] = { bytes: typed, text };
  }
  return msg;
}
