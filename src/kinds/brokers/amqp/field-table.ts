import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { newHeaders } from '../../../core/message.js';

/**
 * AMQP field tables (a message's headers), read exactly. amqplib 2.3 throws on a field type it
 * does not know, inside its frame parser: the connection fails, RabbitMQ delivers the message
 * again on the next one, and the broker — every route and publish on it — flapped for ever over
 * one message some other publisher sent (RabbitMQ accepts and passes on 'L', unsigned 64-bit,
 * which amqplib lacks). It also rounds 64-bit integers and timestamps past 2^53, and a field named
 * `__proto__` became the table's prototype rather than a field. So amqplib's table decoder is
 * replaced before amqplib loads (defs.js takes it from codec.js when it loads) by decodeTable,
 * from the AMQP 0-9-1 grammar with RabbitMQ's field types (§4.2.5.5 and RabbitMQ's errata).
 */

const require = createRequire(import.meta.url);

let installed = false;

/** Replaces amqplib's table decoder. Call before anything loads amqplib (the broker's start). */
export function installTableDecoder(): void {
  if (installed) return;
  installed = true;
  // amqplib's package exports keep lib/ private: its file by path (the same module its defs.js requires).
  const codec = require(join(dirname(require.resolve('amqplib')), 'lib', 'codec.js')) as { decodeFields(slice: Buffer): Record<string, unknown> };
  codec.decodeFields = decodeTable;
}

/** What a field of a type nobody knows becomes: the rest of its table cannot be found past it. */
export const UNREADABLE_PREFIX = 'unreadable AMQP field type';

/**
 * A field table as amqplib represents one (decimals and timestamps as `{'!': type, value}`), but
 * with every value exact: a signed 64-bit integer ('l') or a timestamp ('T') past 2^53 is a
 * BigInt (amqplib rounds them to a JavaScript number: 2^62 became 4611686018427388000), 'L' always
 * one. A field named `__proto__` is a field like any other, not the table's prototype. A field
 * whose type is unknown, or that runs past the table's end, ends the table: it becomes the text
 * `unreadable AMQP field type 'Z'` (nothing says how long its value is, so the fields after it are
 * left out). It is the decoder of every table (measured as fast as amqplib's: docs/scaling.md).
 */
export function decodeTable(slice: Buffer): Record<string, unknown> {
  const fields = newHeaders<unknown>();
  const r = new Reader(slice);
  const end = slice.length;
  let typed: Record<string, Buffer> | undefined;
  while (r.at < end) {
    const keyLen = slice[r.at++]!;
    const key = slice.toString('utf8', r.at, r.at + keyLen);
    r.at += keyLen;
    const at = r.at;
    const v = r.value();
    fields[key] = v;
    if (r.failed) break;
    // A field of another type than a long string: its bytes, to be written again as they came (TYPED_FIELDS).
    if (slice[at] !== 0x53 && v !== null) (typed ??= newHeaders<Buffer>())[key] = Buffer.from(slice.subarray(at, r.at));
  }
  // Not enumerable: the table's fields stay what amqplib's decoder gave (a spread, a JSON text of it).
  if (typed) Object.defineProperty(fields, TYPED_FIELDS, { value: typed });
  return fields;
}

/**
 * Where a decoded table keeps, by name, the encoded bytes (type tag and value) of its fields that
 * are not long strings: a number, a boolean, a timestamp, a decimal, a byte array, an array or a
 * nested table. A consumed message keeps them (TypedFields) so an AMQP target writes such a
 * header again with its own type while no step changed its text, where a long string of its text
 * would change its type (RabbitMQ's delayed-message exchange reads `x-delay` as a number only).
 */
export const TYPED_FIELDS: unique symbol = Symbol('eventgate.amqp.typedFields');

/** A consumed message's typed header fields: their bytes, and the text each header had when read (the same text now: not changed by a step). */
export interface TypedFields {
  readonly bytes: Readonly<Record<string, Buffer>>;
  readonly text: Readonly<Record<string, string>>;
}

/** A table's typed fields (decodeTable), or undefined for a table of long strings only. */
export function typedFieldsOf(table: unknown): Readonly<Record<string, Buffer>> | undefined {
  return table === null || typeof table !== 'object' ? undefined : (table as { [TYPED_FIELDS]?: Record<string, Buffer> })[TYPED_FIELDS];
}

/** The largest integer a JavaScript number holds exactly, as a BigInt. */
const MAX_EXACT = BigInt(Number.MAX_SAFE_INTEGER);

/** A 64-bit integer as a number where that is exact, else as the BigInt itself. */
function exact(n: bigint): number | bigint {
  return n <= MAX_EXACT && n >= -MAX_EXACT ? Number(n) : n;
}

class Reader {
  at = 0;
  failed = false;

  constructor(private readonly b: Buffer) {}

  /** The next tagged value; on a type nobody knows or a value past the end, the text saying so (and `failed`). */
  value(): unknown {
    const b = this.b;
    const tag = b[this.at++] ?? 0;
    const v = this.typed(tag);
    if (v !== UNREADABLE) return v;
    this.failed = true;
    return `${UNREADABLE_PREFIX} '${String.fromCharCode(tag)}'`;
  }

  /** Whether `n` more bytes are in the table; moves past them when they are. */
  private has(n: number): boolean {
    if (this.at + n > this.b.length) return false;
    this.at += n;
    return true;
  }

  private typed(tag: number): unknown {
    const b = this.b;
    const at = this.at;
    switch (tag) {
      case 0x53 /* S */:
        {
          if (!this.has(4)) return UNREADABLE;
          const len = b.readUInt32BE(at);
          if (!this.has(len)) return UNREADABLE;
          return b.toString('utf8', at + 4, at + 4 + len);
        }
      case 0x74 /* t */:
        return this.has(1) ? b[at] !== 0 : UNREADABLE;
      case 0x62 /* b */:
        return this.has(1) ? b.readInt8(at) : UNREADABLE;
      case 0x42 /* B */:
        return this.has(1) ? b[at] : UNREADABLE;
      case 0x73 /* s */:
        return this.has(2) ? b.readInt16BE(at) : UNREADABLE;
      case 0x75 /* u */:
        return this.has(2) ? b.readUInt16BE(at) : UNREADABLE;
      case 0x49 /* I */:
        return this.has(4) ? b.readInt32BE(at) : UNREADABLE;
      case 0x69 /* i */:
        return this.has(4) ? b.readUInt32BE(at) : UNREADABLE;
      case 0x6c /* l */:
        return this.has(8) ? exact(b.readBigInt64BE(at)) : UNREADABLE;
      case 0x4c /* L */:
        return this.has(8) ? b.readBigUInt64BE(at) : UNREADABLE;
      case 0x66 /* f */:
        return this.has(4) ? b.readFloatBE(at) : UNREADABLE;
      case 0x64 /* d */:
        return this.has(8) ? b.readDoubleBE(at) : UNREADABLE;
      case 0x44 /* D */:
        return this.has(5) ? { '!': 'decimal', value: { places: b[at], digits: b.readUInt32BE(at + 1) } } : UNREADABLE;
      case 0x54 /* T */:
        return this.has(8) ? { '!': 'timestamp', value: exact(b.readBigUInt64BE(at)) } : UNREADABLE;
      case 0x56 /* V */:
        return null;
      case 0x78 /* x */:
        {
          if (!this.has(4)) return UNREADABLE;
          const len = b.readUInt32BE(at);
          if (!this.has(len)) return UNREADABLE;
          return b.subarray(at + 4, at + 4 + len);
        }
      case 0x46 /* F */:
        {
          if (!this.has(4)) return UNREADABLE;
          const len = b.readUInt32BE(at);
          if (!this.has(len)) return UNREADABLE;
          return decodeTable(b.subarray(at + 4, at + 4 + len));
        }
      case 0x41 /* A */:
        {
          if (!this.has(4)) return UNREADABLE;
          const len = b.readUInt32BE(at);
          if (!this.has(len)) return UNREADABLE;
          const items = new Reader(b.subarray(at + 4, at + 4 + len));
          const out: unknown[] = [];
          while (items.at < len && !items.failed) out.push(items.value());
          return out;
        }
      default:
        return UNREADABLE;
    }
  }
}

/** What typed() gives for a value it cannot read. */
const UNREADABLE: unique symbol = Symbol('unreadable');
