/**
 * The primitive types of the Kafka protocol (https://kafka.apache.org/protocol#protocol_types):
 * big-endian integers, zig-zag varints, strings and byte arrays with int16/int32 or (in flexible
 * versions) unsigned-varint lengths, and tagged fields. A Reader throws ProtocolError on anything
 * that runs past the end of its buffer, so one bad frame fails as one error, never as a crash.
 */

export class ProtocolError extends Error {}

export class Reader {
  offset: number;

  constructor(
    readonly buf: Buffer,
    offset = 0,
    readonly end = buf.length,
  ) {
    this.offset = offset;
  }

  get remaining(): number {
    return this.end - this.offset;
  }

  private need(n: number): number {
    const at = this.offset;
    if (n < 0 || at + n > this.end) throw new ProtocolError(`truncated: needs ${n} bytes at ${at}, has ${this.end - at}`);
    this.offset = at + n;
    return at;
  }

  int8(): number {
    return this.buf.readInt8(this.need(1));
  }

  int16(): number {
    return this.buf.readInt16BE(this.need(2));
  }

  int32(): number {
    return this.buf.readInt32BE(this.need(4));
  }

  uint32(): number {
    return this.buf.readUInt32BE(this.need(4));
  }

  int64(): bigint {
    return this.buf.readBigInt64BE(this.need(8));
  }

  skip(n: number): void {
    this.need(n);
  }

  /** Unsigned LEB128 varint (at most 5 bytes for 32 bits). */
  uvarint(): number {
    let value = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      const b = this.buf[this.need(1)]!;
      value += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return value;
    }
    throw new ProtocolError('varint longer than 5 bytes');
  }

  /** Zig-zag signed varint (32-bit). */
  varint(): number {
    const u = this.uvarint();
    return u % 2 === 0 ? u / 2 : -(u + 1) / 2;
  }

  /** Zig-zag signed varlong (64-bit), as a number: record timestamp deltas and offsets fit in 2^53. */
  varlong(): number {
    let value = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      const b = this.buf[this.need(1)]!;
      value |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return Number((value >> 1n) ^ -(value & 1n));
    }
    throw new ProtocolError('varlong longer than 10 bytes');
  }

  bytes(n: number): Buffer {
    const at = this.need(n);
    return this.buf.subarray(at, at + n);
  }

  string(): string {
    const n = this.int16();
    if (n < 0) throw new ProtocolError('null where a string is required');
    return this.bytes(n).toString('utf8');
  }

  nullableString(): string | null {
    const n = this.int16();
    return n < 0 ? null : this.bytes(n).toString('utf8');
  }

  compactString(): string {
    const s = this.compactNullableString();
    if (s === null) throw new ProtocolError('null where a string is required');
    return s;
  }

  compactNullableString(): string | null {
    const n = this.uvarint() - 1;
    return n < 0 ? null : this.bytes(n).toString('utf8');
  }

  /** int32-length byte array; null for length -1. */
  nullableBytes(): Buffer | null {
    const n = this.int32();
    return n < 0 ? null : this.bytes(n);
  }

  compactNullableBytes(): Buffer | null {
    const n = this.uvarint() - 1;
    return n < 0 ? null : this.bytes(n);
  }

  /** int32 array length; -1 (null) reads as 0. */
  arrayLength(): number {
    const n = this.int32();
    if (n > this.remaining) throw new ProtocolError(`array of ${n} entries in ${this.remaining} bytes`);
    return Math.max(n, 0);
  }

  compactArrayLength(): number {
    const n = this.uvarint() - 1;
    if (n > this.remaining) throw new ProtocolError(`array of ${n} entries in ${this.remaining} bytes`);
    return Math.max(n, 0);
  }

  /** Skips a tagged-field section (flexible versions): none of them matter to the proxy. */
  skipTaggedFields(): void {
    const count = this.uvarint();
    for (let i = 0; i < count; i++) {
      this.uvarint();
      this.skip(this.uvarint());
    }
  }
}

/** Appends primitives to a growing list of chunks; `finish()` concatenates once. */
export class Writer {
  private chunks: Buffer[] = [];
  private scratch = Buffer.allocUnsafe(16);
  length = 0;

  raw(buf: Buffer): this {
    this.chunks.push(buf);
    this.length += buf.length;
    return this;
  }

  private fixed(n: number, write: (b: Buffer) => void): this {
    const b = Buffer.allocUnsafe(n);
    write(b);
    return this.raw(b);
  }

  int8(v: number): this {
    return this.fixed(1, (b) => b.writeInt8(v));
  }

  int16(v: number): this {
    return this.fixed(2, (b) => b.writeInt16BE(v));
  }

  int32(v: number): this {
    return this.fixed(4, (b) => b.writeInt32BE(v));
  }

  uint32(v: number): this {
    return this.fixed(4, (b) => b.writeUInt32BE(v));
  }

  int64(v: bigint): this {
    return this.fixed(8, (b) => b.writeBigInt64BE(v));
  }

  uvarint(v: number): this {
    let n = 0;
    while (v >= 0x80) {
      this.scratch[n++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.scratch[n++] = v;
    return this.raw(Buffer.from(this.scratch.subarray(0, n)));
  }

  varint(v: number): this {
    return this.uvarint(v >= 0 ? v * 2 : -v * 2 - 1);
  }

  varlong(v: number): this {
    let z = BigInt(v);
    z = (z << 1n) ^ (z >> 63n);
    z = BigInt.asUintN(64, z);
    let n = 0;
    while (z >= 0x80n) {
      this.scratch[n++] = Number(z & 0x7fn) | 0x80;
      z >>= 7n;
    }
    this.scratch[n++] = Number(z);
    return this.raw(Buffer.from(this.scratch.subarray(0, n)));
  }

  string(s: string): this {
    const b = Buffer.from(s, 'utf8');
    return this.int16(b.length).raw(b);
  }

  nullableString(s: string | null): this {
    return s === null ? this.int16(-1) : this.string(s);
  }

  compactNullableString(s: string | null): this {
    if (s === null) return this.uvarint(0);
    const b = Buffer.from(s, 'utf8');
    return this.uvarint(b.length + 1).raw(b);
  }

  nullableBytes(b: Buffer | null): this {
    return b === null ? this.int32(-1) : this.int32(b.length).raw(b);
  }

  compactNullableBytes(b: Buffer | null): this {
    return b === null ? this.uvarint(0) : this.uvarint(b.length + 1).raw(b);
  }

  finish(): Buffer {
    return this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.length);
  }
}

/** A complete frame: the int32 size prefix, then `body`. */
export function frame(body: Buffer): Buffer {
  const size = Buffer.allocUnsafe(4);
  size.writeInt32BE(body.length);
  return Buffer.concat([size, body]);
}
