/**
 * Kafka RecordBatch v2 (magic 2), the on-disk and on-wire format of records since Kafka 0.11:
 * https://kafka.apache.org/documentation/#recordbatch. Decoding keeps every header field, so a
 * batch rebuilt with edited records keeps its producer id, epoch, base sequence and record count
 * (idempotent and transactional producers depend on them) and its compression codec; the CRC-32C
 * is computed afresh over the new bytes.
 */
import { newHeaders } from '../core/message.js';
import { crc32c } from './crc32c.js';
import { codecOf, compress, decompress, DecompressedTooLarge, snappyFraming } from './compression.js';
import { ProtocolError, Reader, Writer } from './kafka-protocol/wire.js';

/** Compresses and decompresses a records section with the codec a batch's attributes name (bits 0-2). */
export interface BatchCompression {
  /** `like`: the records section as the client compressed it, whose framing a rebuilt one keeps. */
  compress(codec: number, data: Buffer, like?: Buffer): Promise<Buffer>;
  /** Fails with DecompressedTooLarge beyond `maxBytes` (default: compression.ts's DEFAULT_MAX_DECOMPRESSED_BYTES). */
  decompress(codec: number, data: Buffer, maxBytes?: number): Promise<Buffer>;
}

export interface RecordHeader {
  key: string;
  value: Buffer | null;
}

export interface KafkaRecord {
  attributes: number;
  timestampDelta: number;
  offsetDelta: number;
  key: Buffer | null;
  value: Buffer | null;
  headers: RecordHeader[];
}

/** The fixed fields of a batch, as read. */
export interface BatchHeader {
  baseOffset: bigint;
  partitionLeaderEpoch: number;
  magic: number;
  crc: number;
  attributes: number;
  lastOffsetDelta: number;
  baseTimestamp: bigint;
  maxTimestamp: bigint;
  producerId: bigint;
  producerEpoch: number;
  baseSequence: number;
  recordCount: number;
}

/** One batch of a records field: its header and where its (possibly compressed) records lie. */
export interface RawBatch extends BatchHeader {
  /** The whole batch as it arrived. */
  bytes: Buffer;
  /** The records section (compressed when `compression` is not 0). */
  recordsSection: Buffer;
}

export interface RecordBatch extends BatchHeader {
  records: KafkaRecord[];
}

/** Size of the fixed part of a v2 batch, up to and including the record count. */
export const BATCH_HEADER_BYTES = 61;
/** Where the CRC-covered part begins (the attributes field). */
const CRC_FROM = 21;

export function compressionOf(attributes: number): number {
  return attributes & 0x07;
}

export function isControlBatch(attributes: number): boolean {
  return (attributes & 0x20) !== 0;
}

/**
 * Splits a produce request's records field into its batches, checking each one's magic (and its
 * CRC, unless `checkCrc` is false: a batch forwarded as it came is checked by the broker anyway).
 * Throws ProtocolError for anything that is not a well-formed v2 batch: the proxy cannot look
 * into the older message formats, and a client that sends them to a governed topic is refused.
 */
export function splitBatches(records: Buffer, { checkCrc = true }: { checkCrc?: boolean } = {}): RawBatch[] {
  const out: RawBatch[] = [];
  let at = 0;
  while (at < records.length) {
    if (records.length - at < 17) throw new ProtocolError('truncated record batch');
    const batchLength = records.readInt32BE(at + 8);
    const end = at + 12 + batchLength;
    if (batchLength < BATCH_HEADER_BYTES - 12 || end > records.length) throw new ProtocolError(`record batch length ${batchLength} does not fit the ${records.length - at} bytes left`);
    const bytes = records.subarray(at, end);
    const header = readBatchHeader(bytes);
    if (header.magic !== 2) throw new ProtocolError(`message format v${header.magic} is not supported (only record batches, magic 2)`);
    const batch = { ...header, bytes, recordsSection: bytes.subarray(BATCH_HEADER_BYTES) };
    if (checkCrc) verifyCrc(batch);
    out.push(batch);
    at = end;
  }
  return out;
}

/** The fixed fields of the batch `bytes` begins with (at least BATCH_HEADER_BYTES long; its magic unchecked). */
export function readBatchHeader(bytes: Buffer): BatchHeader {
  const r = new Reader(bytes);
  const baseOffset = r.int64();
  r.skip(4); // batchLength, read by whoever found the batch's end
  return {
    baseOffset,
    partitionLeaderEpoch: r.int32(),
    magic: r.int8(),
    crc: r.uint32(),
    attributes: r.int16(),
    lastOffsetDelta: r.int32(),
    baseTimestamp: r.int64(),
    maxTimestamp: r.int64(),
    producerId: r.int64(),
    producerEpoch: r.int16(),
    baseSequence: r.int32(),
    recordCount: r.int32(),
  };
}

/**
 * Throws CorruptBatch when the batch's bytes (from its attributes on) do not match the CRC-32C it
 * holds: bytes changed after their producer wrote them. Kafka's broker answers such a batch
 * CORRUPT_MESSAGE, and Java's consumer (`check.crcs`) fails on it.
 */
export function verifyCrc(batch: Pick<RawBatch, 'bytes' | 'crc'>): void {
  const actual = crc32c(batch.bytes.subarray(CRC_FROM)) >>> 0;
  if (actual !== batch.crc) throw new CorruptBatch(`record batch CRC mismatch (${batch.crc.toString(16)} stored, ${actual.toString(16)} computed)`);
}

/** A batch whose bytes do not match its CRC-32C (verifyCrc). */
export class CorruptBatch extends ProtocolError {
  override name = 'CorruptBatch';
}

/** Reads a batch's records, decompressing them with its own codec. */
export async function decodeRecords(batch: RawBatch, compression: BatchCompression): Promise<KafkaRecord[]> {
  const codec = compressionOf(batch.attributes);
  const data = codec === 0 ? batch.recordsSection : await compression.decompress(codec, batch.recordsSection);
  return readRecords(data, batch.recordCount);
}

/**
 * A record's header count below 0: a Kafka broker refuses it on produce (Java's DefaultRecord:
 * "Found invalid number of record headers"), so the listener does too, rather than read it as none.
 */
function negativeHeaderCount(record: number, count: number): ProtocolError {
  return new ProtocolError(`record ${record} has a header count of ${count}`);
}

/** Shared by every record without headers (most of them): one array less per record. */
const NO_HEADERS: RecordHeader[] = Object.freeze([]) as unknown as RecordHeader[];

export function readRecords(data: Buffer, count: number): KafkaRecord[] {
  const r = new Reader(data);
  const records: KafkaRecord[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const length = r.varint();
    const end = r.offset + length;
    if (length < 0 || end > data.length) throw new ProtocolError(`record ${i} length ${length} runs past its batch`);
    const record: KafkaRecord = {
      attributes: r.int8(),
      timestampDelta: r.varlong(),
      offsetDelta: r.varint(),
      key: varBytes(r),
      value: varBytes(r),
      headers: NO_HEADERS,
    };
    const headerCount = r.varint();
    if (headerCount < 0) throw negativeHeaderCount(i, headerCount);
    if (headerCount > 0) record.headers = [];
    for (let h = 0; h < headerCount; h++) {
      const key = varBytes(r);
      if (key === null) throw new ProtocolError(`record ${i} has a header with a null key`);
      record.headers.push({ key: key.toString('utf8'), value: varBytes(r) });
    }
    if (r.offset !== end) throw new ProtocolError(`record ${i} is ${length} bytes long but its fields take ${r.offset - (end - length)}`);
    records[i] = record;
  }
  if (r.remaining !== 0) throw new ProtocolError(`${r.remaining} bytes after the last of ${count} records`);
  return records;
}

/**
 * Reads a records section one record at a time without building anything: each field is a
 * position in `data` (start -1 for null). The validate path uses it instead of readRecords(), which
 * costs an object and a Buffer view per key and value; readRecords() is for batches to rebuild.
 * Checks the same things readRecords() does, with the same errors.
 */
export class RecordCursor {
  index = -1;
  attributes = 0;
  timestampDelta = 0;
  keyStart = -1;
  keyEnd = -1;
  valueStart = -1;
  valueEnd = -1;
  /** The current record's offset from its batch's base offset. */
  offsetDelta = 0;
  /** Where the current record's bytes (after its length) begin and end in `data`. */
  recordStart = 0;
  recordEnd = 0;
  /** Where the current record's first header starts, and how many it has. */
  headersStart = 0;
  headerCount = 0;
  private at = 0;

  constructor(
    readonly data: Buffer,
    readonly count: number,
  ) {
    if (count < 0) throw new ProtocolError(`record count ${count} is negative`);
  }

  /** Moves to the next record; false after the last one. */
  next(): boolean {
    if (!this.frame()) return false;
    const i = this.index;
    this.keyEnd = this.field();
    this.keyStart = this.keyEnd < 0 ? -1 : this.keyEnd - this.lastLength;
    this.valueEnd = this.field();
    this.valueStart = this.valueEnd < 0 ? -1 : this.valueEnd - this.lastLength;
    const headerCount = this.varint();
    if (headerCount < 0) throw negativeHeaderCount(i, headerCount);
    this.headerCount = headerCount;
    this.headersStart = this.at;
    for (let h = 0; h < headerCount; h++) {
      if (this.field() < 0) throw new ProtocolError(`record ${i} has a header with a null key`);
      this.field();
    }
    if (this.at !== this.recordEnd) throw new ProtocolError(`record ${i} is ${this.recordEnd - this.recordStart} bytes long but its fields take ${this.at - this.recordStart}`);
    return true;
  }

  /**
   * Moves to the next record reading only its frame: its length, attributes, timestamp and offset
   * deltas (`recordStart`/`recordEnd` say where its bytes lie); its key, value and headers are the
   * caller's to read (a consumer takes a record it cannot read for one record it cannot deliver).
   * False after the last one.
   */
  nextFrame(): boolean {
    if (!this.frame()) return false;
    this.at = this.recordEnd;
    return true;
  }

  /**
   * next() and nextFrame()'s common part: the next record's length and deltas, `at` left after
   * them. False after the last one. Throws ProtocolError when the records do not fill the section
   * as the count says: fewer records than the count (the section ends first), more (bytes after
   * the last), a record running past the section's end or too short for its deltas.
   */
  private frame(): boolean {
    const data = this.data;
    const i = ++this.index;
    if (i >= this.count) {
      if (this.at !== data.length) throw new ProtocolError(`${data.length - this.at} bytes after the last of ${this.count} records`);
      return false;
    }
    if (this.at >= data.length) throw new ProtocolError(`the batch claims ${this.count} records but holds ${i}`);
    const length = this.varint();
    const end = this.at + length;
    if (length < 0 || end > data.length) throw new ProtocolError(`record ${i} length ${length} runs past its batch`);
    this.recordStart = this.at;
    this.recordEnd = end;
    if (length > 0) {
      this.attributes = (data[this.at++]! << 24) >> 24;
      this.timestampDelta = this.varlong();
      this.offsetDelta = this.varint();
    }
    if (length === 0 || this.at > end) throw new ProtocolError(`record ${i} is ${length} bytes long, too short for its offset delta`);
    return true;
  }

  /** The current record's headers as a message has them: UTF-8 strings, the last of repeated names. */
  headers(): Record<string, string> {
    const data = this.data;
    const out = newHeaders();
    const saved = this.at;
    this.at = this.headersStart;
    for (let h = 0; h < this.headerCount; h++) {
      const keyEnd = this.field();
      const key = data.toString('utf8', keyEnd - this.lastLength, keyEnd);
      const valueEnd = this.field();
      out[key] = valueEnd < 0 ? '' : data.toString('utf8', valueEnd - this.lastLength, valueEnd);
    }
    this.at = saved;
    return out;
  }

  /**
   * The current record's key, value and headers as views of `data` (no copy: the caller owns
   * `data` for as long as the views live). Headers by name, a repeated name with all its values in
   * order, a header without a value null (OriginalRecord's shape).
   */
  fieldBytes(): { key: Buffer | null; value: Buffer | null; headers: Record<string, Buffer | null | (Buffer | null)[]> } {
    const data = this.data;
    const view = (start: number, end: number) => (start < 0 ? null : data.subarray(start, end));
    const headers = newHeaders<Buffer | null | (Buffer | null)[]>();
    const saved = this.at;
    this.at = this.headersStart;
    for (let h = 0; h < this.headerCount; h++) {
      const keyEnd = this.field();
      const key = data.toString('utf8', keyEnd - this.lastLength, keyEnd);
      const valueEnd = this.field();
      const value = view(valueEnd < 0 ? -1 : valueEnd - this.lastLength, valueEnd);
      const before = headers[key];
      if (before === undefined) headers[key] = value;
      else if (Array.isArray(before)) before.push(value);
      else headers[key] = [before, value];
    }
    this.at = saved;
    return { key: view(this.keyStart, this.keyEnd), value: view(this.valueStart, this.valueEnd), headers };
  }

  /**
   * Whether the current record has a header named `lowerName` (ASCII, lower case) in any case,
   * read from its bytes: a batch that must lose such a header is rebuilt, one without goes on as it is.
   */
  hasHeaderNamed(lowerName: Buffer): boolean {
    if (this.headerCount === 0) return false;
    const data = this.data;
    const saved = this.at;
    this.at = this.headersStart;
    let found = false;
    for (let h = 0; h < this.headerCount && !found; h++) {
      const keyEnd = this.field();
      if (this.lastLength === lowerName.length) {
        found = true;
        for (let i = 0, at = keyEnd - this.lastLength; i < lowerName.length; i++, at++) {
          const b = data[at]!;
          if ((b >= 0x41 && b <= 0x5a ? b + 32 : b) !== lowerName[i]) {
            found = false;
            break;
          }
        }
      }
      this.field();
    }
    this.at = saved;
    return found;
  }

  private lastLength = 0;

  /** Skips a varint-length field; returns where it ends (-1 for null) and sets lastLength. */
  private field(): number {
    const n = this.varint();
    if (n < 0) return -1;
    const end = this.at + n;
    if (end > this.data.length) throw new ProtocolError(`truncated: needs ${n} bytes at ${this.at}, has ${this.data.length - this.at}`);
    this.at = end;
    this.lastLength = n;
    return end;
  }

  private byte(): number {
    const b = this.data[this.at];
    if (b === undefined) throw new ProtocolError(`truncated: needs 1 bytes at ${this.at}, has 0`);
    this.at++;
    return b;
  }

  /** Zig-zag varint (32-bit), as Reader.varint(). Most fields of a small record take one byte. */
  private varint(): number {
    const data = this.data;
    let at = this.at;
    let u = 0;
    let scale = 1;
    for (let n = 0; n < 5; n++) {
      const b = data[at++];
      if (b === undefined) throw new ProtocolError(`truncated: needs 1 bytes at ${at - 1}, has 0`);
      u += (b & 0x7f) * scale;
      if (b < 0x80) {
        this.at = at;
        return u < 0x80000000 ? (u >>> 1) ^ -(u & 1) : u % 2 === 0 ? u / 2 : -(u + 1) / 2;
      }
      scale *= 128;
    }
    throw new ProtocolError('varint longer than 5 bytes');
  }

  /** Zig-zag varlong, as Reader.varlong(): numbers while exact (7 bytes, 49 bits), BigInt beyond. */
  private varlong(): number {
    const first = this.data[this.at];
    // One byte (timestamp deltas under 64 ms): no loop, no powers.
    if (first !== undefined && first < 0x80) {
      this.at++;
      return (first >>> 1) ^ -(first & 1);
    }
    const from = this.at;
    let u = 0;
    for (let shift = 0; shift < 49; shift += 7) {
      const b = this.byte();
      u += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return u % 2 === 0 ? u / 2 : -(u + 1) / 2;
    }
    this.at = from;
    const r = new Reader(this.data, from);
    const v = r.varlong();
    this.at = r.offset;
    return v;
  }
}

function varBytes(r: Reader): Buffer | null {
  const n = r.varint();
  return n < 0 ? null : r.bytes(n);
}

export function writeRecords(records: readonly KafkaRecord[]): Buffer {
  const w = new Writer();
  for (const rec of records) {
    const body = new Writer();
    body.int8(rec.attributes).varlong(rec.timestampDelta).varint(rec.offsetDelta);
    writeVarBytes(body, rec.key);
    writeVarBytes(body, rec.value);
    body.varint(rec.headers.length);
    for (const h of rec.headers) {
      writeVarBytes(body, Buffer.from(h.key, 'utf8'));
      writeVarBytes(body, h.value);
    }
    w.varint(body.length).raw(body.finish());
  }
  return w.finish();
}

function writeVarBytes(w: Writer, b: Buffer | null): void {
  if (b === null) w.varint(-1);
  else w.varint(b.length).raw(b);
}

/**
 * Encodes a batch with `header`'s fields (producer id, epoch, base sequence, timestamps, codec)
 * around `records`, compressing them with the header's codec and computing the CRC-32C.
 * The record count must not change: sequence numbers of idempotent producers count records.
 */
export async function encodeBatch(header: BatchHeader & { recordsSection?: Buffer }, records: readonly KafkaRecord[], compression: BatchCompression): Promise<Buffer> {
  if (records.length !== header.recordCount) throw new Error(`a rebuilt batch must keep its ${header.recordCount} records (has ${records.length})`);
  const codec = compressionOf(header.attributes);
  const plain = writeRecords(records);
  const section = codec === 0 ? plain : await compression.compress(codec, plain, header.recordsSection);
  const out = Buffer.allocUnsafe(BATCH_HEADER_BYTES + section.length);
  out.writeBigInt64BE(header.baseOffset, 0);
  out.writeInt32BE(BATCH_HEADER_BYTES - 12 + section.length, 8);
  out.writeInt32BE(header.partitionLeaderEpoch, 12);
  out.writeInt8(2, 16);
  out.writeInt16BE(header.attributes, 21);
  out.writeInt32BE(header.lastOffsetDelta, 23);
  out.writeBigInt64BE(header.baseTimestamp, 27);
  out.writeBigInt64BE(header.maxTimestamp, 35);
  out.writeBigInt64BE(header.producerId, 43);
  out.writeInt16BE(header.producerEpoch, 51);
  out.writeInt32BE(header.baseSequence, 53);
  out.writeInt32BE(header.recordCount, 57);
  section.copy(out, BATCH_HEADER_BYTES);
  out.writeUInt32BE(crc32c(out.subarray(CRC_FROM)) >>> 0, 17);
  return out;
}

/**
 * Each batch is rebuilt with its own codec (src/codecs/compression.ts); a snappy batch keeps its
 * framing too (xerial from Java clients, raw blocks from the others).
 */
export const batchCompression: BatchCompression = {
  compress(codec, data, like) {
    const name = codecOf(codec);
    if (name === undefined) return Promise.reject(new ProtocolError(`unknown compression codec ${codec}`));
    return compress(name, data, name === 'snappy' && like ? { snappyFraming: snappyFraming(like) } : {});
  },
  decompress(codec, data, maxBytes) {
    const name = codecOf(codec);
    if (name === undefined) return Promise.reject(new ProtocolError(`unknown compression codec ${codec}`));
    return decompress(name, data, { maxBytes });
  },
};

/**
 * `compression` with one bound on everything it decompresses, for one produce request: its
 * batches may not decompress to more than `maxBytes` together, however many there are (many small
 * bombs, each under a per-batch bound, are still one big one). Decompressions run one after the
 * other, each bounded by what is left, so the bytes held never pass `maxBytes`.
 */
export function decompressBudget(compression: BatchCompression, maxBytes: number): BatchCompression {
  let left = maxBytes;
  let queue: Promise<unknown> = Promise.resolve();
  return {
    compress: (codec, data, like) => compression.compress(codec, data, like),
    decompress(codec, data, cap) {
      const run = queue.then(async () => {
        const fresh = left === maxBytes;
        try {
          const out = await compression.decompress(codec, data, Math.min(left, cap ?? left));
          left -= out.length;
          return out;
        } catch (err) {
          // Past what earlier batches left over: say the bound is the request's, not this batch's.
          if (err instanceof DecompressedTooLarge && !fresh) throw new DecompressedTooLarge(err.codec, maxBytes, undefined, "this request's records");
          throw err;
        }
      });
      queue = run.catch(() => undefined);
      return run;
    },
  };
}

// ---- A producer's batches --------------------------------------------------------------------

/** A record as a producer hands it over: text goes as UTF-8, a header with several values repeats its name. */
export interface OutgoingRecord {
  key?: Buffer | string | null;
  value: Buffer | string | null;
  headers?: Record<string, Buffer | string | readonly (Buffer | string)[] | undefined>;
  /** Milliseconds since the epoch (or their decimal text); the batch's time when absent. */
  timestamp?: number | string;
}

/** The batch fields a producer sets (idempotent and transactional producers number their records). */
export interface ProducerBatchFields {
  producerId: bigint;
  producerEpoch: number;
  baseSequence: number;
  transactional: boolean;
  /** Kafka's codec id (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd). */
  codec: number;
}

const TRANSACTIONAL = 0x10;

/**
 * Encodes `records` as one v2 batch: record sizes in a first pass, then every field written into
 * one buffer (uncompressed) or into the records section that is then compressed. This is the
 * gateway's producer path (kinds/brokers/kafka/produce-request.ts); kafkajs' encoder built a
 * Buffer per field and an encoder per record and per header.
 */
export function encodeProducerBatch(records: readonly OutgoingRecord[], fields: ProducerBatchFields, compression: BatchCompression): Buffer | Promise<Buffer> {
  const now = Date.now();
  let first = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < records.length; i++) {
    const ts = records[i]!.timestamp;
    const t = ts === undefined || ts === '' ? now : Number(ts);
    stamps[i] = t;
    if (t < first) first = t;
    if (t > max) max = t;
  }
  if (records.length === 0) first = max = now;
  textsSized = 0;
  const sizes = new Array<number>(records.length);
  let section = 0;
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    const body = 1 + varlongSize(stamps[i]! - first) + varintSize(i) + bytesSize(r.key) + bytesSize(r.value) + headersSize(r.headers);
    sizes[i] = body;
    section += varintSize(body) + body;
  }
  const writeSection = (buf: Buffer, from: number): void => {
    textsWritten = 0;
    let at = from;
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!;
      at = putVarint(buf, at, sizes[i]!);
      buf[at++] = 0; // attributes: none are defined for records
      at = putVarlong(buf, at, stamps[i]! - first);
      at = putVarint(buf, at, i);
      at = putBytes(buf, at, r.key);
      at = putBytes(buf, at, r.value);
      at = putHeaders(buf, at, r.headers);
    }
    // The two passes must have met the same fields (a record changed in between would not).
    if (at !== from + section || textsWritten !== textsSized) throw new Error(`record batch encoding: ${at - from} bytes written where ${section} were sized`);
  };
  const attributes = (fields.codec & 0x07) | (fields.transactional ? TRANSACTIONAL : 0);
  const header = (buf: Buffer, sectionLength: number): Buffer => {
    buf.writeBigInt64BE(0n, 0); // base offset: the broker assigns
    buf.writeInt32BE(BATCH_HEADER_BYTES - 12 + sectionLength, 8);
    buf.writeInt32BE(0, 12); // partition leader epoch
    buf[16] = 2; // magic
    buf.writeInt16BE(attributes, 21);
    buf.writeInt32BE(records.length - 1, 23); // last offset delta
    putInt64(buf, 27, first);
    putInt64(buf, 35, max);
    buf.writeBigInt64BE(fields.producerId, 43);
    buf.writeInt16BE(fields.producerEpoch, 51);
    buf.writeInt32BE(fields.baseSequence, 53);
    buf.writeInt32BE(records.length, 57);
    buf.writeUInt32BE(crc32c(buf.subarray(CRC_FROM)) >>> 0, 17);
    return buf;
  };
  if ((fields.codec & 0x07) === 0) {
    const buf = Buffer.allocUnsafe(BATCH_HEADER_BYTES + section);
    writeSection(buf, BATCH_HEADER_BYTES);
    return header(buf, section);
  }
  const plain = Buffer.allocUnsafe(section);
  writeSection(plain, 0);
  return compression.compress(fields.codec & 0x07, plain).then((packed) => {
    const buf = Buffer.allocUnsafe(BATCH_HEADER_BYTES + packed.length);
    packed.copy(buf, BATCH_HEADER_BYTES);
    return header(buf, packed.length);
  });
}

/** Bytes of an unsigned LEB128 varint. */
function uvarintSize(u: number): number {
  let n = 1;
  while (u >= 0x80) {
    u = Math.floor(u / 0x80);
    n++;
  }
  return n;
}

const zigzag = (v: number): number => (v >= 0 ? v * 2 : -v * 2 - 1);
const varintSize = (v: number): number => uvarintSize(zigzag(v));
/** Record timestamp deltas are well within 2^52 ms, where zig-zag in doubles is exact. */
const varlongSize = varintSize;

function putUvarint(buf: Buffer, at: number, u: number): number {
  while (u >= 0x80) {
    buf[at++] = (u % 0x80) | 0x80;
    u = Math.floor(u / 0x80);
  }
  buf[at++] = u;
  return at;
}

const putVarint = (buf: Buffer, at: number, v: number): number => putUvarint(buf, at, zigzag(v));
const putVarlong = putVarint;

function putInt64(buf: Buffer, at: number, v: number): void {
  buf.writeInt32BE(Math.floor(v / 0x1_0000_0000), at);
  buf.writeUInt32BE(v >>> 0, at + 4);
}

/** Timestamps of the batch being encoded, each record's read once. */
const stamps: number[] = [];
/** UTF-8 lengths of the batch's texts in the order both passes meet them: each text measured once. */
const texts: number[] = [];
let textsSized = 0;
let textsWritten = 0;

function bytesSize(v: Buffer | string | null | undefined): number {
  if (v === null || v === undefined) return 1;
  let n: number;
  if (typeof v === 'string') texts[textsSized++] = n = Buffer.byteLength(v);
  else n = v.length;
  return varintSize(n) + n;
}

function putBytes(buf: Buffer, at: number, v: Buffer | string | null | undefined): number {
  if (v === null || v === undefined) return putVarint(buf, at, -1);
  if (typeof v === 'string') {
    at = putVarint(buf, at, texts[textsWritten++]!);
    return at + buf.write(v, at); // UTF-8; the buffer was sized for exactly these bytes
  }
  at = putVarint(buf, at, v.length);
  return at + v.copy(buf, at);
}

type OutgoingHeaders = OutgoingRecord['headers'];

function headersSize(headers: OutgoingHeaders): number {
  let count = 0;
  let size = 0;
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined) continue;
    // The name is measured once for each time it is written (putHeaders' order).
    if (Array.isArray(v)) {
      for (const each of v as readonly (Buffer | string)[]) {
        count++;
        size += bytesSize(name) + bytesSize(each);
      }
    } else {
      count++;
      size += bytesSize(name) + bytesSize(v as Buffer | string);
    }
  }
  return varintSize(count) + size;
}

function putHeaders(buf: Buffer, at: number, headers: OutgoingHeaders): number {
  let count = 0;
  for (const name in headers) {
    const v = headers[name];
    if (v !== undefined) count += Array.isArray(v) ? v.length : 1;
  }
  at = putVarint(buf, at, count);
  for (const name in headers) {
    const v = headers[name];
    if (v === undefined) continue;
    if (Array.isArray(v)) {
      for (const each of v as readonly (Buffer | string)[]) at = putBytes(buf, putBytes(buf, at, name), each);
    } else at = putBytes(buf, putBytes(buf, at, name), v as Buffer | string);
  }
  return at;
}
