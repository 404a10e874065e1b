import type { ConfirmChannel } from 'amqplib';
import { TurnBuffer } from '../turn-buffer.js';
import { tooLarge } from './size-limit.js';
import { Refused } from '../acknowledgement.js';
import { problem } from '../../../core/errors.js';
import type { TypedFields } from './field-table.js';

/** Called once per publish: with nothing on the server's basic.ack, with an error on basic.nack or when the channel closes first. */
export type Settle = (err?: Error | null) => void;

/** What a publish carries besides its body (the properties the gateway sets). */
export interface PublishProperties {
  mandatory: boolean;
  persistent: boolean;
  /** The headers table, but for `content-type` and `content-encoding`, which are `contentType` and `contentEncoding`. */
  headers: Record<string, string>;
  messageId: string;
  /** The content_type property: the message's `content-type` header where it has one. */
  contentType: string;
  /** The content_encoding property (`gzip`, ...), when the message has one that still describes its body. */
  contentEncoding?: string | undefined;
  /** Seconds since the epoch. */
  timestamp: number;
  /** A consumed AMQP message's typed header fields: written again as they came while a header's text is the one read. */
  typed?: TypedFields | undefined;
}

/** The parts of amqplib's channel and connection this writes through (not in its types). */
interface Internals {
  ch: number;
  pushConfirmCallback(cb: Settle): void;
  connection: {
    stream: { write(chunk: Buffer): boolean; destroyed?: boolean };
    frameMax: number;
    sentSinceLastCheck: boolean;
  };
}

const FRAME_METHOD = 1;
const FRAME_HEADER = 2;
const FRAME_BODY = 3;
const FRAME_END = 0xce;
/** Frame type, channel, size before the payload; FRAME_END after it. */
const FRAME_OVERHEAD = 8;
/** basic.publish: class 60, method 40. */
const BASIC_PUBLISH = 0x003c0028;
/** Content header of class 60 (basic), weight 0. */
const BASIC_HEADER = 0x003c0000;
// Property flags, in the order their values follow (AMQP 0-9-1 basic properties).
const CONTENT_TYPE = 0x8000;
const HEADERS = 0x2000;
const DELIVERY_MODE = 0x1000;
const PRIORITY = 0x0800;
const CORRELATION_ID = 0x0400;
const REPLY_TO = 0x0200;
const EXPIRATION = 0x0100;
const MESSAGE_ID = 0x0080;
const TIMESTAMP = 0x0040;
const TYPE = 0x0020;
const USER_ID = 0x0010;
const APP_ID = 0x0008;

/**
 * The AMQP properties a message carries as headers, under the names Spring AMQP's header mapper
 * gives them (`amqp_correlationId`, ...; `priority` as Spring Integration names it), which bridges
 * built on it (Spring Cloud Stream, Spring Integration) read and write: read from a consumed
 * message's properties (consumed.ts), written back to the properties on publish (PUBLISHED_AS).
 * `amqp_messageId` is read only: a published message's message_id is the gateway's own (it
 * correlates a basic.return), so that header stays in the table. A consumed user_id is
 * `amqp_receivedUserId`, read only too, as in Spring: RabbitMQ takes a publish's user_id only when
 * it is the connection's own user, so a copy made under another login would be refused; a publish
 * sets user_id from `amqp_userId`.
 */
export const PROPERTY_HEADERS = {
  correlationId: 'amqp_correlationId',
  replyTo: 'amqp_replyTo',
  type: 'amqp_type',
  appId: 'amqp_appId',
  messageId: 'amqp_messageId',
  userId: 'amqp_receivedUserId',
  priority: 'priority',
  expiration: 'amqp_expiration',
} as const;

/** The header a publish sets the user_id property from (Spring AMQP's `AmqpHeaders.USER_ID`). */
export const USER_ID_HEADER = 'amqp_userId';

/** The headers a publish sends as properties (when their values fit), in the properties' order. */
const PUBLISHED_AS = {
  priority: PROPERTY_HEADERS.priority,
  correlationId: PROPERTY_HEADERS.correlationId,
  replyTo: PROPERTY_HEADERS.replyTo,
  expiration: PROPERTY_HEADERS.expiration,
  type: PROPERTY_HEADERS.type,
  userId: USER_ID_HEADER,
  appId: PROPERTY_HEADERS.appId,
} as const;

/** A message's properties taken from its headers: each one's bytes as it is written (undefined: not sent, the header stays in the table). */
interface HeaderProperties {
  priority?: Buffer | undefined;
  correlationId?: Buffer | undefined;
  replyTo?: Buffer | undefined;
  expiration?: Buffer | undefined;
  type?: Buffer | undefined;
  userId?: Buffer | undefined;
  appId?: Buffer | undefined;
}

/** Priorities as the one octet written: 0 to 255, written in decimal digits. */
const PRIORITIES = new Map(Array.from({ length: 256 }, (_, n) => [String(n), Buffer.from([n])]));

/**
 * The property header `name` (a PUBLISHED_AS value) has the value `v` as, or undefined when it
 * cannot be that property: a string over 255 bytes (AMQP's short string), a priority that is not
 * 0 to 255, an expiration that is not a whole number of milliseconds (RabbitMQ closes the channel
 * for one, 406 PRECONDITION_FAILED): such a header goes in the table as any other.
 */
function propertyBytes(name: string, v: string): Buffer | undefined {
  if (name === PROPERTY_HEADERS.priority) return PRIORITIES.get(v);
  if (name === PROPERTY_HEADERS.expiration && !/^[0-9]{1,10}$/.test(v)) return undefined;
  return shortString(v);
}

/** The properties a message's headers give, or undefined when it has none of those headers (most messages: nothing made per publish). */
function headerProperties(headers: Record<string, string>): HeaderProperties | undefined {
  let out: HeaderProperties | undefined;
  for (const property in PUBLISHED_AS) {
    const name = PUBLISHED_AS[property as keyof typeof PUBLISHED_AS];
    const v = headers[name];
    if (v === undefined) continue;
    const bytes = propertyBytes(name, v);
    if (bytes) (out ??= {})[property as keyof HeaderProperties] = bytes;
  }
  return out;
}

/** Whether header `k` goes as its property (that property's bytes are there), not in the table. */
function sentAsProperty(k: string, props: HeaderProperties): boolean {
  for (const property in PUBLISHED_AS) if (PUBLISHED_AS[property as keyof typeof PUBLISHED_AS] === k) return props[property as keyof HeaderProperties] !== undefined;
  return false;
}

/** The user_id a publish of these headers carries (its `amqp_userId`, when it fits a short string), for the broker's check. */
export function userIdOf(headers: Record<string, string>): string | undefined {
  const v = headers[USER_ID_HEADER];
  return v !== undefined && Buffer.byteLength(v) <= 255 ? v : undefined;
}
const NONE: HeaderProperties = {};

/** The typed field header `name` was read from, while its value is still the text read (no step changed it); else undefined (a long string of the value). */
function typedField(typed: TypedFields, name: string, value: string): Buffer | undefined {
  const bytes = typed.bytes[name];
  return bytes !== undefined && typed.text[name] === value ? bytes : undefined;
}

/** The header sent as the content_type property rather than in the headers table. */
const CONTENT_TYPE_HEADER = 'content-type';
const CONTENT_ENCODING_HEADER = 'content-encoding';
const CONTENT_ENCODING = 0x4000;
/** Encoded exchange/routing-key pairs and header names kept (a topic expression may produce many: each cache starts over past this). */
const MAX_CACHED = 1024;

/** `text` as a short string (length byte, then its UTF-8), optionally followed by `tail`; undefined when over 255 bytes. */
function shortString(text: string, tail?: number): Buffer | undefined {
  const len = Buffer.byteLength(text);
  if (len > 255) return undefined;
  const b = Buffer.allocUnsafe(1 + len + (tail === undefined ? 0 : 1));
  b[0] = len;
  b.write(text, 1);
  if (tail !== undefined) b[1 + len] = tail;
  return b;
}

/** Bytes encoded once and kept by their text, in a map that starts over past MAX_CACHED entries. */
function cachedBytes(cache: Map<string, Buffer | undefined>, key: string, encode: () => Buffer | undefined): Buffer | undefined {
  let b = cache.get(key);
  if (b === undefined && !cache.has(key)) {
    b = encode();
    if (cache.size >= MAX_CACHED) cache.clear();
    cache.set(key, b);
  }
  return b;
}

/**
 * basic.publish frames written straight to an amqplib connection's socket, for a confirm channel
 * that publishes nothing else. amqplib encodes each message's three frames through its generic
 * encoders (a fields object, the headers table through a scratch buffer, three allocations and
 * copies) and hands them to the socket through the channel's own stream and the connection's
 * multiplexer: one stream write per message on each. Here a turn's messages are encoded into one
 * buffer and leave in one socket write at the end of the turn. amqplib still owns the channel:
 * `pushConfirmCallback` puts each publish's callback in its window of unconfirmed delivery tags,
 * in the order the frames are written (the order the server numbers them), so its confirm
 * handling — basic.ack and basic.nack, `multiple` or not, and failing every callback when the
 * channel closes — settles these publishes as it settles its own.
 */
export class AmqpPublisher {
  private readonly ch: number;
  private readonly conn: Internals['connection'];
  private readonly internals: Internals;
  private readonly out = new TurnBuffer();
  private flushing = false;
  /** The last exchange published to as a short string (a broker publishes to one). */
  private exchange: { name: string; bytes: Buffer | undefined } = { name: '', bytes: shortString('') };
  /** Routing keys (topics) as short strings. */
  private readonly keys = new Map<string, Buffer | undefined>();
  /** A header name as a table entry's start (short string, then the 'S' of a long-string value). */
  private readonly names = new Map<string, Buffer | undefined>();
  /** Content types as short strings (the gateway sets one of three). */
  private readonly types = new Map<string, Buffer | undefined>();
  /** The largest body the server takes, once known (its max_message_size): a larger one is refused (413) rather than sent. */
  maxBody = Number.POSITIVE_INFINITY;

  constructor(channel: ConfirmChannel) {
    this.internals = channel as unknown as Internals;
    this.ch = this.internals.ch;
    this.conn = this.internals.connection;
  }

  /**
   * Encodes a message into this turn's write and registers `settle` for its confirm; returns the
   * body's length. Throws (and never calls `settle`) when it cannot be encoded or is over `maxBody`.
   */
  publish(exchange: string, routingKey: string, body: Buffer | string, p: PublishProperties, settle: Settle): number {
    // What repeats from message to message (the exchange and routing key, header names, the content type) is encoded once.
    if (this.exchange.name !== exchange) this.exchange = { name: exchange, bytes: shortString(exchange) };
    const ex = this.exchange.bytes;
    const key = cachedBytes(this.keys, routingKey, () => shortString(routingKey));
    if (!ex || !key) throw new Error('an AMQP exchange name or routing key is at most 255 bytes');
    const type = cachedBytes(this.types, p.contentType, () => shortString(p.contentType));
    if (!type) throw new Error('an AMQP content type is at most 255 bytes');
    const encoding = p.contentEncoding === undefined ? undefined : cachedBytes(this.types, p.contentEncoding, () => shortString(p.contentEncoding!));
    if (p.contentEncoding !== undefined && !encoding) throw new Error('an AMQP content encoding is at most 255 bytes');
    const idLen = Buffer.byteLength(p.messageId);
    if (idLen > 255) throw new Error('an AMQP message id is at most 255 bytes');
    const hp = headerProperties(p.headers);
    const { priority, correlationId, replyTo, expiration, type: type_, userId, appId } = hp ?? NONE;
    const properties = hp
      ? (priority?.length ?? 0) + (correlationId?.length ?? 0) + (replyTo?.length ?? 0) + (expiration?.length ?? 0) + (type_?.length ?? 0) + (userId?.length ?? 0) + (appId?.length ?? 0)
      : 0;
    let table = 0;
    const typed = p.typed;
    for (const k in p.headers) {
      if (k === CONTENT_TYPE_HEADER || k === CONTENT_ENCODING_HEADER || (hp && sentAsProperty(k, hp))) continue;
      const name = cachedBytes(this.names, k, () => shortString(k, 0x53)); // 'S': long string, as amqplib encodes a string in a table
      if (!name) throw new Error(`header '${k.slice(0, 64)}' is too long for an AMQP header name (255 bytes)`);
      const field = typed && typedField(typed, k, p.headers[k]!);
      table += field ? name.length - 1 + field.length : name.length + 4 + Buffer.byteLength(p.headers[k]!);
    }
    const bodyLen = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
    if (bodyLen > this.maxBody) throw tooLarge(bodyLen, this.maxBody);
    const methodSize = 4 + 2 + ex.length + key.length + 1;
    const headerSize = 4 + 8 + 2 + type.length + (encoding ? encoding.length : 0) + (4 + table) + 1 + properties + (1 + idLen) + 8;
    const maxBody = this.conn.frameMax - FRAME_OVERHEAD;
    // The client's problem, which no retry changes (a 503 had consume routes retry it for ever).
    if (headerSize > maxBody) throw new Refused(problem('EG_PAYLOAD_TOO_LARGE', `the message's headers (${table} bytes) do not fit in one AMQP frame (frameMax ${this.conn.frameMax})`));
    const bodyFrames = Math.ceil(bodyLen / maxBody);
    const size = methodSize + headerSize + 2 * FRAME_OVERHEAD + bodyLen + bodyFrames * FRAME_OVERHEAD;
    const buf = this.out.room(size);
    let at = this.out.at;
    // basic.publish
    at = this.frameStart(buf, at, FRAME_METHOD, methodSize);
    at = buf.writeUInt32BE(BASIC_PUBLISH, at);
    at = buf.writeUInt16BE(0, at); // reserved (ticket)
    at += ex.copy(buf, at);
    at += key.copy(buf, at);
    buf[at++] = p.mandatory ? 1 : 0; // mandatory; immediate unset
    buf[at++] = FRAME_END;
    // content header: class, weight, body size, property flags, then the properties in flag order
    at = this.frameStart(buf, at, FRAME_HEADER, headerSize);
    at = buf.writeUInt32BE(BASIC_HEADER, at);
    at = buf.writeUInt32BE(Math.floor(bodyLen / 0x1_0000_0000), at);
    at = buf.writeUInt32BE(bodyLen >>> 0, at);
    at = buf.writeUInt16BE(
      CONTENT_TYPE |
        (encoding ? CONTENT_ENCODING : 0) |
        HEADERS |
        DELIVERY_MODE |
        (priority ? PRIORITY : 0) |
        (correlationId ? CORRELATION_ID : 0) |
        (replyTo ? REPLY_TO : 0) |
        (expiration ? EXPIRATION : 0) |
        MESSAGE_ID |
        TIMESTAMP |
        (type_ ? TYPE : 0) |
        (userId ? USER_ID : 0) |
        (appId ? APP_ID : 0),
      at,
    );
    at += type.copy(buf, at);
    if (encoding) at += encoding.copy(buf, at);
    at = buf.writeUInt32BE(table, at);
    for (const k in p.headers) {
      if (k === CONTENT_TYPE_HEADER || k === CONTENT_ENCODING_HEADER || (hp && sentAsProperty(k, hp))) continue;
      const name = cachedBytes(this.names, k, () => shortString(k, 0x53))!;
      const field = typed && typedField(typed, k, p.headers[k]!);
      if (field) {
        // The name without its 'S', then the field's own type tag and value.
        at += name.copy(buf, at, 0, name.length - 1);
        at += field.copy(buf, at);
        continue;
      }
      at += name.copy(buf, at);
      const vl = buf.write(p.headers[k]!, at + 4);
      buf.writeUInt32BE(vl, at);
      at += 4 + vl;
    }
    buf[at++] = p.persistent ? 2 : 1;
    // The properties in their flags' order: priority, correlation-id, reply-to, expiration, message-id, timestamp, type, user-id, app-id.
    if (priority) at += priority.copy(buf, at);
    if (correlationId) at += correlationId.copy(buf, at);
    if (replyTo) at += replyTo.copy(buf, at);
    if (expiration) at += expiration.copy(buf, at);
    buf[at++] = idLen;
    at += buf.write(p.messageId, at);
    at = buf.writeUInt32BE(Math.floor(p.timestamp / 0x1_0000_0000), at);
    at = buf.writeUInt32BE(p.timestamp >>> 0, at);
    if (type_) at += type_.copy(buf, at);
    if (userId) at += userId.copy(buf, at);
    if (appId) at += appId.copy(buf, at);
    buf[at++] = FRAME_END;
    // body frames of at most frameMax
    if (typeof body === 'string' && bodyFrames === 1) {
      at = this.frameStart(buf, at, FRAME_BODY, bodyLen);
      at += buf.write(body, at);
      buf[at++] = FRAME_END;
    } else {
      const bytes = typeof body === 'string' ? Buffer.from(body) : body;
      for (let from = 0; from < bodyLen; from += maxBody) {
        const n = Math.min(maxBody, bodyLen - from);
        at = this.frameStart(buf, at, FRAME_BODY, n);
        at += bytes.copy(buf, at, from, from + n);
        buf[at++] = FRAME_END;
      }
    }
    this.out.commit(at);
    this.internals.pushConfirmCallback(settle);
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => this.flush());
    }
    return bodyLen;
  }

  private frameStart(buf: Buffer, at: number, type: number, size: number): number {
    buf[at] = type;
    buf.writeUInt16BE(this.ch, at + 1);
    buf.writeUInt32BE(size, at + 3);
    return at + 7;
  }

  /** Writes the turn's frames. On a connection gone meanwhile, amqplib has failed (or will fail) their callbacks as the channel closes. */
  private flush(): void {
    this.flushing = false;
    const chunks = this.out.take();
    if (this.conn.stream.destroyed) return;
    for (const c of chunks) this.conn.stream.write(c);
    // amqplib sends heartbeats only on a connection that sent nothing since its last check.
    this.conn.sentSinceLastCheck = true;
  }
}
