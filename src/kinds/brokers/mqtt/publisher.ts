import { Readable } from 'node:stream';
import type { MqttClient } from 'mqtt';
import { CE_HEADER_PREFIX, CE_SPECVERSION } from '../../../codecs/cloudevents.js';
import { problem } from '../../../core/errors.js';
import { LostUnacknowledged, Refused } from '../acknowledgement.js';
import { TurnBuffer } from '../turn-buffer.js';
import { AckFramer, PUBACK, PUBREC } from './acks.js';
import type { Qos } from '../../contracts.js';

/** What mqtt.js keeps per packet id awaiting an acknowledgement (`MqttClient.outgoing`, public). */
interface Outgoing {
  volatile: boolean;
  cmd: 'publish';
  cb(err?: Error): void;
}

/**
 * One publish handed to the publisher, and for QoS 1 and 2 its entry in mqtt.js's table of
 * packets in flight (volatile, so mqtt.js fails it when the connection closes). The caller's
 * subclass is the rest of the publish (its promise, its deadline): one object per publish.
 */
export abstract class Flight implements Outgoing {
  readonly volatile = true;
  readonly cmd = 'publish';
  /** Set as it is encoded: which acknowledgement it awaits. */
  qos: 0 | 1 | 2 = 0;
  /** QoS 2: the PUBREC came and the PUBREL went, the PUBCOMP is awaited. */
  released = false;
  /** The publisher whose window it holds a place in, until it ends. */
  holder: MqttPublisher | undefined;
  /** When the message expires (Message's EXPIRES_AT), if its publisher said so: over MQTT 5 its Message Expiry Interval is what is left of it as it is encoded. */
  expiresAt: number | undefined = undefined;

  /** Whether the publish was answered already (its deadline passed): a publish still waiting for the window is then dropped. */
  abstract readonly settled: boolean;

  /** Called once: with nothing when the server acknowledged it (QoS 0: once written), with the error otherwise. */
  protected abstract settle(err?: Error): void;

  /** The exchange is over: its place in the window is free, and the publish settled. */
  end(err?: Error): void {
    const holder = this.holder;
    this.holder = undefined;
    if (holder) holder.inflight--;
    this.settle(err);
    holder?.release();
  }

  /** For mqtt.js, which calls it unbound (an acknowledgement it reads, the connection closing). */
  get cb(): (err?: Error) => void {
    // mqtt.js's words when the connection closes with the publish in flight: it was written (or about to be), so the server may have it.
    return (err) => this.end(err?.message === 'Connection closed' ? new LostUnacknowledged('the connection closed') : (err ?? undefined));
  }
}

/** mqtt.js's error for an acknowledgement's reason code (MQTT 5): `Publish error: <reason>`, with the code. */
export type Refusal = (reasonCode: number) => Error;

interface Writable {
  write(chunk: Buffer, cb?: (err?: Error | null) => void): boolean;
  destroyed?: boolean;
}

/** Topics whose encoded form is kept (a topic expression may produce many: the cache starts over past this). */
const MAX_CACHED_TOPICS = 1024;
/** Marks a connection's stream whose acknowledgements the publisher reads. */
const READING = Symbol('eventgate.mqtt.readingAcks');
/** MQTT's largest remaining length (a 4-byte variable byte integer). */
const MAX_REMAINING = 268_435_455;

/**
 * MQTT 5's reason code "Packet too large", which mosquitto puts in the PUBACK or PUBREC of a
 * message over its `message_size_limit` (one it then drops): the client's problem (413), not an
 * outage a retry could end. (On MQTT 3.1.1 mosquitto acknowledges such a message as taken.)
 */
const PACKET_TOO_LARGE = 0x95;

/** The header written as MQTT 5's Content Type property (the CloudEvents binding's `datacontenttype`), not as a user property. */
const CONTENT_TYPE_HEADER = 'content-type';

const varIntSize = (n: number) => (n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4);

function writeVarInt(buf: Buffer, at: number, n: number): number {
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    buf[at++] = byte;
  } while (n > 0);
  return at;
}

/**
 * PUBLISH packets written straight to the connection of an mqtt.js client, and their
 * acknowledgements read from it; mqtt.js keeps everything else: connecting (every transport it
 * supports), keepalive, reconnecting, and any other packet. mqtt.js builds each packet as an
 * object, stores it, and writes it as five to eight small chunks (one `writev` entry each) with a
 * debug call per step, which the profiles showed as most of the gateway's cost per publish. Here
 * the topic's bytes are encoded once, each packet is encoded into a buffer shared by the turn's
 * publishes, and the turn's packets leave in one write at its end. Each publish awaiting its
 * acknowledgement is an entry in mqtt.js's own table of packets in flight (`client.outgoing`), so
 * mqtt.js fails it when the connection closes (a publish never waits on a dead connection); the
 * acknowledgements are read as mqtt.js's handler read them (see `acknowledged`), and any it could
 * handle differently is left to it. The client's `outgoingStore` must be `NO_STORE`: nothing is
 * kept to be sent again on a new connection (the publisher's session is clean; an unacknowledged
 * publish is answered 503).
 */
export class MqttPublisher {
  private readonly topics = new Map<string, Buffer>();
  private readonly out = new TurnBuffer();
  /** QoS 0 publishes of this turn: settled once their bytes are written. */
  private written: Flight[] = [];
  /** Packet ids encoded this turn, awaiting acknowledgement once written. */
  private ids: number[] = [];
  private flushing = false;
  /** A PUBREL was encoded while reading a chunk: the turn's bytes are written once it is read. */
  private releasing = false;
  private nextId = 1;
  /** Packet ids this publisher freed (acknowledged, or never written), reused first: see packetId. */
  private readonly freed: number[] = [];
  /**
   * QoS 1 and 2 publishes the server takes in flight: its Receive Maximum (MQTT 5 CONNACK), else
   * 20 (mosquitto's default `max_inflight_messages`). mosquitto counts QoS 1 publishes against it
   * too (a window for QoS 2 alone still drew "Quota exceeded" in a mixed burst), and refuses a QoS 2 publish beyond it with "Quota exceeded"
   * (MQTT 5) or, on MQTT 3.1.1, drops it behind a PUBREC the client cannot tell from success. So a
   * QoS 2 publish waits until fewer than that many are in flight, and QoS 1 publishes queue behind
   * a waiting one (first come, first sent); QoS 1 alone is not held to it, as mqtt.js never held
   * it: mosquitto takes any number.
   */
  private window = 20;
  /**
   * The largest packet the server takes: its Maximum Packet Size (MQTT 5 CONNACK; mosquitto's
   * `max_packet_size`), else MQTT's own limit. A larger one is refused here (413): sent, it made the
   * server cut the connection, failing every publish in flight on it as an outage (503), and a
   * consume route sent it again for ever.
   */
  private maxPacket = MAX_REMAINING + 5;
  /**
   * The highest QoS the server takes: its Maximum QoS (MQTT 5 CONNACK; mosquitto's `max_qos`), else
   * 2. A publish above it made the server cut the connection (0x9B QoS not supported), failing
   * every publish in flight on it, and a consume route sent it again for ever.
   */
  maxQos: Qos = 2;
  /** Whether the server keeps retained messages (MQTT 5 CONNACK's Retain Available; mosquitto's `retain_available`): a retained publish to one that does not made it cut the connection (0x9A). */
  retainAvailable = true;
  /** QoS 1 and 2 publishes sent and not ended (each Flight frees its place as it ends). */
  inflight = 0;
  /** Publishes waiting for a place in the window, oldest first. */
  private waiting: { qos: 1 | 2; send(): void }[] = [];

  constructor(
    private readonly client: MqttClient,
    private readonly v5: boolean,
    private readonly refusal: Refusal,
  ) {
    client.on('connect', (connack) => {
      this.window = connack.properties?.receiveMaximum ?? 20;
      this.maxPacket = connack.properties?.maximumPacketSize ?? MAX_REMAINING + 5;
      this.maxQos = (connack.properties?.maximumQoS ?? 2) as Qos;
      this.retainAvailable = connack.properties?.retainAvailable ?? true;
      this.readAcks(client.stream as unknown as NodeJS.EventEmitter);
    });
  }

  /**
   * Reads the acknowledgements of this connection's publishes before mqtt.js does (AckFramer): its
   * 'data' events pass through the framer, which hands mqtt.js the rest. Installed once the
   * connection is accepted: until the CONNACK nothing was published, so no acknowledgement came.
   */
  private readAcks(stream: NodeJS.EventEmitter & { [READING]?: true }): void {
    if (stream[READING]) return;
    stream[READING] = true;
    const emit = stream.emit;
    // PUBRELs leave as soon as the chunk is read, as mqtt.js sent them: each holds a place in the QoS 2 window until its PUBCOMP.
    const sendReleases = () => {
      if (this.releasing) {
        this.releasing = false;
        this.flush();
      }
    };
    const framer = new AckFramer(
      this.v5,
      (type, id, rc) => this.acknowledged(type, id, rc),
      (bytes) => emit.call(stream, 'data', bytes),
    );
    stream.emit = function (this: NodeJS.EventEmitter, event: string | symbol, ...args: unknown[]): boolean {
      if (event !== 'data') return emit.call(this, event, ...args);
      const chunk = args[0];
      framer.read(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array));
      sendReleases();
      return true;
    };
  }

  /**
   * What mqtt.js's handler did for an acknowledgement of one of ours, the one it expected (anything
   * else is left to mqtt.js): PUBACK (QoS 1) and PUBCOMP (QoS 2) settle it, PUBREC (QoS 2) is
   * answered with PUBREL, and a reason code other than success or "no matching subscribers" fails it.
   */
  private acknowledged(type: number, id: number, rc: number): boolean {
    const outgoing = this.client.outgoing as Record<number, Outgoing | undefined>;
    const p = outgoing[id];
    if (!(p instanceof Flight) || (type === PUBACK ? p.qos !== 1 : p.qos !== 2 || (type === PUBREC) === p.released)) return false;
    const refused = rc !== 0 && rc !== 0x10;
    if (type === PUBREC && !refused) {
      p.released = true;
      const buf = this.out.room(4);
      const at = this.out.at;
      buf[at] = 0x62; // PUBREL
      buf[at + 1] = 2;
      buf.writeUInt16BE(id, at + 2);
      this.out.commit(at + 4);
      this.releasing = true;
      return true;
    }
    delete outgoing[id];
    this.freed.push(id);
    p.end(refused ? (rc === PACKET_TOO_LARGE ? tooLargeForServer() : this.refusal(rc)) : undefined);
    // mqtt.js's end() waits for this before closing the connection.
    if (this.client.disconnecting && Object.keys(outgoing).length === 0) this.client.emit('outgoingEmpty');
    return true;
  }

  /**
   * Encodes a PUBLISH of `payload` to `topic` into this turn's write: on MQTT 5, `headers` as user
   * properties, except `content-type` as the Content Type property and a CloudEvent's `ce_<attr>`
   * as `<attr>` (the CloudEvents MQTT binding's binary mode); MQTT 3.1.1 has no properties.
   * `flight` ends once it is acknowledged (QoS 0: written) or fails. Throws when it cannot be sent
   * (too large, no packet id free); `flight` then never ends.
   */
  publish(topic: string, payload: Buffer | string, qos: 0 | 1 | 2, retain: boolean, headers: Record<string, string> | undefined, flight: Flight): void {
    if (qos === 0) return this.encode(topic, payload, 0, retain, headers, flight);
    if (qos === 2 ? this.inflight >= this.window : this.waiting.length > 0) {
      // Encoded once its turn comes, unless its deadline passed meanwhile; an error then ends it.
      this.waiting.push({
        qos,
        send: () => {
          // Never sent: a publish its deadline answered meanwhile ends here (its late outcome: not taken).
          if (flight.settled) return flight.end(new Error('not sent: its acknowledgement deadline passed while it waited for the window'));
          try {
            this.start(topic, payload, qos, retain, headers, flight);
          } catch (err) {
            flight.end(err as Error);
          }
        },
      });
      return;
    }
    this.start(topic, payload, qos, retain, headers, flight);
  }

  /** A QoS 1 or 2 publish takes its place in the window until it ends. */
  private start(topic: string, payload: Buffer | string, qos: 1 | 2, retain: boolean, headers: Record<string, string> | undefined, flight: Flight): void {
    this.encode(topic, payload, qos, retain, headers, flight);
    this.inflight++;
    flight.holder = this;
  }

  private encode(topic: string, payload: Buffer | string, qos: 0 | 1 | 2, retain: boolean, headers: Record<string, string> | undefined, flight: Flight): void {
    const name = this.topic(topic);
    const payloadBytes = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
    let props = -1;
    // A CloudEvent goes in the MQTT binding's binary mode: its `ce_<attr>` headers as user properties named `<attr>`.
    const unprefixed = this.v5 && headers !== undefined && headers[CE_SPECVERSION] !== undefined;
    // MQTT 5 §3.3.2.3.3: a message passed on carries what is left of its interval (at least 1 s: 0 would not be an expiry).
    const expiry = this.v5 && flight.expiresAt !== undefined ? Math.max(1, Math.ceil((flight.expiresAt - Date.now()) / 1000)) : undefined;
    if (this.v5) {
      props = expiry === undefined ? 0 : 5;
      if (headers) {
        for (const k in headers) {
          const kl = Buffer.byteLength(k);
          const vl = Buffer.byteLength(headers[k]!);
          if (kl > 65_535 || vl > 65_535) throw new Error(`header '${k.slice(0, 64)}' is too long for an MQTT user property (65535 bytes each for name and value)`);
          if (k === CONTENT_TYPE_HEADER) props += 3 + vl;
          else props += 5 + kl + vl - (unprefixed && k.startsWith(CE_HEADER_PREFIX) ? CE_HEADER_PREFIX.length : 0);
        }
      }
    }
    const remaining = name.length + (qos > 0 ? 2 : 0) + (props >= 0 ? varIntSize(props) + props : 0) + payloadBytes;
    if (remaining > MAX_REMAINING) throw new Error(`a ${payloadBytes}-byte message is larger than an MQTT packet can be`);
    const size = 1 + varIntSize(remaining) + remaining;
    if (size > this.maxPacket) throw tooLarge(payloadBytes, size, this.maxPacket);
    const id = qos > 0 ? this.packetId() : 0;
    const buf = this.out.room(size);
    let at = this.out.at;
    buf[at++] = 0x30 | (qos << 1) | (retain ? 1 : 0);
    at = writeVarInt(buf, at, remaining);
    at += name.copy(buf, at);
    if (qos > 0) at = buf.writeUInt16BE(id, at);
    if (props >= 0) {
      at = writeVarInt(buf, at, props);
      if (expiry !== undefined) {
        buf[at++] = 0x02; // Message Expiry Interval
        at = buf.writeUInt32BE(expiry, at);
      }
      if (headers) {
        for (const k in headers) {
          if (k === CONTENT_TYPE_HEADER) {
            buf[at++] = 0x03; // Content Type
            at = writeString(buf, at, headers[k]!);
            continue;
          }
          if (unprefixed && k.startsWith(CE_HEADER_PREFIX)) at = writeUnprefixedName(buf, at, k);
          else {
            buf[at++] = 0x26; // User Property
            at = writeString(buf, at, k);
          }
          at = writeString(buf, at, headers[k]!);
        }
      }
    }
    at += typeof payload === 'string' ? buf.write(payload, at) : payload.copy(buf, at);
    this.out.commit(at);
    flight.qos = qos;
    if (qos > 0) {
      (this.client.outgoing as Record<number, Outgoing>)[id] = flight;
      this.ids.push(id);
    } else this.written.push(flight);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => this.flush());
    }
  }

  /** Sends the waiting publishes whose turn has come: QoS 1 at once, QoS 2 while the window has room. */
  release(): void {
    while (this.waiting.length > 0 && (this.waiting[0]!.qos === 1 || this.inflight < this.window)) this.waiting.shift()!.send();
  }

  /** A topic's length-prefixed UTF-8, encoded once. */
  private topic(topic: string): Buffer {
    let b = this.topics.get(topic);
    if (!b) {
      const len = Buffer.byteLength(topic);
      b = Buffer.allocUnsafe(2 + len);
      b.writeUInt16BE(len, 0);
      b.write(topic, 2);
      if (this.topics.size >= MAX_CACHED_TOPICS) this.topics.clear();
      this.topics.set(topic, b);
    }
    return b;
  }

  /**
   * The next packet id no publish in flight holds (ids stay taken until acknowledged or the
   * connection closes). The ids acknowledgements freed come first, the last freed first (MQTT lets
   * an id be used again once its acknowledgement is processed): the ids in use then stay as few
   * and as small as the publishes in flight. mqtt.js's table of packets in flight is an object
   * keyed by id, which V8 stores as a plain array while its keys are dense and as a hash table
   * once they spread over 1..65535; ids taken in turn spread them, and writing and deleting each
   * entry was then a quarter of the encoder's cost.
   */
  private packetId(): number {
    const outgoing = this.client.outgoing;
    const freed = this.freed;
    while (freed.length > 0) {
      const id = freed.pop()!;
      if (outgoing[id] === undefined) return id;
    }
    for (let tries = 0; tries < 65_535; tries++) {
      const id = this.nextId;
      this.nextId = id === 65_535 ? 1 : id + 1;
      if (outgoing[id] === undefined) return id;
    }
    throw new Error('65535 publishes are awaiting acknowledgement on this connection');
  }

  /** Writes the turn's packets, or fails their publishes when the connection is gone meanwhile. */
  private flush(): void {
    this.flushing = false;
    const chunks = this.out.take();
    const written = this.written;
    this.written = [];
    const ids = this.ids;
    this.ids = [];
    const stream = this.client.stream as unknown as Writable | undefined;
    if (!stream || stream.destroyed || !this.client.connected) {
      const err = new Error('connection closed before the message was written');
      for (const f of written) f.end(err);
      // Never written, so no acknowledgement will come (mqtt.js fails only what it holds when a connection closes, and these may be for the next one).
      const outgoing = this.client.outgoing as Record<number, Outgoing | undefined>;
      for (const id of ids) {
        const e = outgoing[id];
        delete outgoing[id];
        this.freed.push(id);
        if (e instanceof Flight) e.end(err);
      }
      return;
    }
    for (let i = 0; i < chunks.length; i++) {
      const last = i === chunks.length - 1;
      stream.write(
        chunks[i]!,
        last && written.length > 0
          ? (err) => {
              for (const f of written) f.end(err ?? undefined);
            }
          : undefined,
      );
    }
  }
}

function tooLarge(payloadBytes: number, packetBytes: number, max: number): Refused {
  return new Refused(
    problem(
      'EG_PAYLOAD_TOO_LARGE',
      `the message (${payloadBytes} bytes; ${packetBytes} as an MQTT packet) is larger than the MQTT server takes (Maximum Packet Size ${max} bytes, its max_packet_size)`,
    ),
  );
}

function tooLargeForServer(): Refused {
  return new Refused(problem('EG_PAYLOAD_TOO_LARGE', 'the MQTT server refused the message as too large (reason code 0x95, Packet too large: its message_size_limit)'));
}

function writeString(buf: Buffer, at: number, s: string): number {
  const len = buf.write(s, at + 2);
  buf.writeUInt16BE(len, at);
  return at + 2 + len;
}

/**
 * A User Property's id and name for a `ce_<attr>` header: `<attr>`, written without slicing the
 * name (a string per attribute per message): the whole header name goes where the id and length
 * go, and its three prefix bytes are then overwritten by them.
 */
function writeUnprefixedName(buf: Buffer, at: number, header: string): number {
  const len = buf.write(header, at) - CE_HEADER_PREFIX.length;
  buf[at] = 0x26; // User Property
  buf.writeUInt16BE(len, at + 1);
  return at + 3 + len;
}

/**
 * An `outgoingStore` for the publishing client that stores nothing: the packets written by
 * MqttPublisher are not mqtt.js's to send again, and `del` (called on every acknowledgement)
 * must succeed for packets it never saw (the default store answers those with an Error).
 */
export const NO_STORE = {
  put(_packet: unknown, cb?: () => void) {
    cb?.();
    return NO_STORE;
  },
  get(_packet: unknown, cb: (err?: Error) => void) {
    cb(new Error('no stored packets'));
    return NO_STORE;
  },
  del(_packet: unknown, cb?: (err: Error | null) => void) {
    cb?.(null);
    return NO_STORE;
  },
  createStream() {
    // An empty object stream: mqtt.js reads it to resend stored packets after a reconnect.
    return emptyStream();
  },
  close(cb?: () => void) {
    cb?.();
  },
};

function emptyStream(): Readable {
  return new Readable({
    objectMode: true,
    read() {
      this.push(null);
    },
  });
}
