import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/**
 * AMQP field tables (a message's headers) that amqplib cannot read. amqplib 2.3 throws on a field
 * type it does not know, inside its frame parser: the connection fails, RabbitMQ delivers the
 * message again on the next one, and the broker — every route and publish on it — flapped for
 * ever over one message some other publisher sent. RabbitMQ accepts and passes on 'L' (unsigned
 * 64-bit), which amqplib lacks. So amqplib's table decoder is wrapped before amqplib loads
 * (defs.js takes it from codec.js when it loads): a table it cannot read is read here instead,
 * from the AMQP 0-9-1 grammar with RabbitMQ's field types (§4.2.5.5 and RabbitMQ's errata).
 */

const require = createRequire(import.meta.url);

let installed = false;

/** Wraps amqplib's table decoder. Call before anything loads amqplib (the broker's start). */
export function installTableDecoder(): void {
  if (installed) return;
  installed = true;
  // amqplib's package exports keep lib/ private: its file by path (the same module its defs.js requires).
  const codec = require(join(dirname(require.resolve('amqplib')), 'lib', 'codec.js')) as { decodeFields(slice: Buffer): Record<string, unknown> };
  const strict = codec.decodeFields;
  codec.decodeFields = (slice: Buffer) => {
    try {
      return strict(slice);
    } catch {
      return decodeTable(slice);
    }
  };
}

/** What a field of a type nobody knows becomes: the rest of its table cannot be found past it. */
export const UNREADABLE_PREFIX = 'unreadable AMQP field type';

/**
 * A field table as amqplib represents one (decimals and timestamps as `{'!': type, value}`), with
 * 'L' as a BigInt (exact past 2^53). A field whose type is unknown, or that runs past the table's
 * end, ends the table: it becomes the text `unreadable AMQP field type 'Z'` (nothing says how long
 * its value is, so the fields after it are left out).
 */
export function decodeTable(slice: Buffer): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  const r = new Reader(slice);
  while (r.at < slice.length) {
    const keyLen = slice[r.at++]!;
    const key = slice.toString('utf8', r.at, r.at + keyLen);
    r.at += keyLen;
    const v = r.value();
    // defineProperty: a field named __proto__ is a header like any other, not the object's prototype.
    Object.defineProperty(fields, key, { value: v, enumerable: true, writable: true, configurable: true });
    if (r.failed) break;
  }
  return fields;
}

class Reader {
  at = 0;
  failed = false;

  constructor(private readonly b: Buffer) {}

  value(): unknown {
    const b = this.b;
    const tag = String.fromCharCode(b[this.at++] ?? 0);
    try {
      return this.typed(tag);
    } catch {
      this.failed = true;
      return `${UNREADABLE_PREFIX} '${tag}'`;
    }
  }

  private typed(tag: string): unknown {
    const b = this.b;
    const at = this.at;
    const take = (n: number) => {
      if (this.at + n > b.length) throw new RangeError('past the end of the table');
      this.at += n;
    };
    switch (tag) {
      case 't':
        take(1);
        return b[at] !== 0;
      case 'b':
        take(1);
        return b.readInt8(at);
      case 'B':
        take(1);
        return b.readUInt8(at);
      case 's':
        take(2);
        return b.readInt16BE(at);
      case 'u':
        take(2);
        return b.readUInt16BE(at);
      case 'I':
        take(4);
        return b.readInt32BE(at);
      case 'i':
        take(4);
        return b.readUInt32BE(at);
      case 'l':
        take(8);
        return Number(b.readBigInt64BE(at));
      case 'L':
        take(8);
        return b.readBigUInt64BE(at);
      case 'f':
        take(4);
        return b.readFloatBE(at);
      case 'd':
        take(8);
        return b.readDoubleBE(at);
      case 'D':
        take(5);
        return { '!': 'decimal', value: { places: b[at], digits: b.readUInt32BE(at + 1) } };
      case 'T':
        take(8);
        return { '!': 'timestamp', value: Number(b.readBigUInt64BE(at)) };
      case 'V':
        return null;
      case 'S':
      case 'x': {
        take(4);
        const len = b.readUInt32BE(at);
        take(len);
        return tag === 'S' ? b.toString('utf8', at + 4, at + 4 + len) : b.subarray(at + 4, at + 4 + len);
      }
      case 'F': {
        take(4);
        const len = b.readUInt32BE(at);
        take(len);
        return decodeTable(b.subarray(at + 4, at + 4 + len));
      }
      case 'A': {
        take(4);
        const len = b.readUInt32BE(at);
        take(len);
        const items = new Reader(b.subarray(at + 4, at + 4 + len));
        const out: unknown[] = [];
        while (items.at < len && !items.failed) out.push(items.value());
        return out;
      }
      default:
        throw new TypeError(`unknown field type '${tag}'`);
    }
  }
}
