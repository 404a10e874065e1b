/**
 * Kafka's five compression codecs, both directions, on plain bytes: what a record batch's
 * `records` section holds when bits 0-2 of its attributes name a codec. Used by the kafka broker
 * (registered into kafkajs) and by the Kafka-protocol listener, which rebuilds batches itself.
 *
 * Libraries (all install from the npm registry alone, no install script; see docs/scaling.md):
 * - gzip: node:zlib.
 * - snappy: `snappy` (napi-rs, prebuilt binaries as optional dependencies) for raw blocks; the
 *   xerial framing that Java clients write is a 16-byte header plus length-prefixed raw blocks,
 *   read and written here.
 * - lz4: `lz4-napi` (napi-rs over lz4_flex): the LZ4 frame format, as record batches (magic 2) carry it.
 * - zstd: `@toondepauw/node-zstd` (napi-rs over libzstd): frames with or without a content size,
 *   so streamed frames from librdkafka and Java decode too.
 * Native bindings load on first use, so a platform without a prebuilt binary fails only where that
 * codec is used, with a CodecError saying so, never at start-up.
 *
 * Decompression is bounded (`maxBytes`): a few kilobytes of zstd or gzip can stand for gigabytes of
 * zeros. gzip stops inflating at the bound (zlib's maxOutputLength); for snappy, lz4 and zstd the
 * most a section can decompress to is read from its framing before anything is decompressed
 * (snappy's length preamble; lz4 and zstd frames' content size, or their block count times the
 * largest block), so a bomb costs no memory at all. Either way it fails with DecompressedTooLarge.
 */
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import { gunzip as gunzipCb, gzip as gzipCb, type ZlibOptions } from 'node:zlib';

export const CODECS = ['none', 'gzip', 'snappy', 'lz4', 'zstd'] as const;
export type CodecName = (typeof CODECS)[number];

/** Kafka's codec ids (record batch attributes & 0x07). */
export const CODEC_IDS: Readonly<Record<CodecName, number>> = { none: 0, gzip: 1, snappy: 2, lz4: 3, zstd: 4 };

/** The codec a record batch's attributes name; undefined for ids Kafka does not define (5-7). */
export function codecOf(attributes: number): CodecName | undefined {
  return CODECS[attributes & 0x07];
}

export interface CompressOptions {
  /** Snappy only: `raw` (default; what librdkafka, kafkajs and Go clients write) or `xerial` (what Java clients write). */
  snappyFraming?: SnappyFraming;
}

export type SnappyFraming = 'raw' | 'xerial';

export interface DecompressOptions {
  /** Most bytes the section may decompress to (default DEFAULT_MAX_DECOMPRESSED_BYTES). */
  maxBytes?: number;
}

/**
 * 64 MiB. A batch is at most Kafka's message.max.bytes (1 MiB by default) compressed, and real
 * records rarely shrink more than 10-20x; librdkafka bounds the same thing by
 * receive.message.max.bytes (100 MB).
 */
export const DEFAULT_MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024;

/** A codec could not compress or decompress (corrupt input, or its native binding is missing here). */
export class CodecError extends Error {
  override readonly name: string = 'CodecError';
  constructor(
    readonly codec: CodecName,
    readonly direction: 'compress' | 'decompress',
    reason: string,
  ) {
    super(`${codec} ${direction} failed: ${reason}`);
  }
}

/** The section would decompress to more than the bound allows (a decompression bomb, or a bound set too low). */
export class DecompressedTooLarge extends CodecError {
  override readonly name = 'DecompressedTooLarge';
  constructor(
    codec: CodecName,
    readonly limit: number,
    /** What the framing says it holds, when it says (gzip does not: it stops at the limit). */
    readonly claimed: number | undefined,
    what = 'the records',
  ) {
    super(codec, 'decompress', `${what} would decompress to ${claimed === undefined ? 'more than' : `up to ${claimed} bytes, more than`} the limit of ${limit} bytes`);
  }
}

export async function compress(codec: CodecName, data: Uint8Array, options: CompressOptions = {}): Promise<Buffer> {
  try {
    switch (codec) {
      case 'none':
        return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      case 'gzip':
        return await gzip(data);
      case 'snappy':
        return options.snappyFraming === 'xerial' ? await xerialCompress(data) : await native.snappy.compress(asBuffer(data));
      case 'lz4':
        return await native.lz4.compressFrame(data);
      case 'zstd':
        return await zstdEncoder().encode(asBuffer(data));
    }
  } catch (err) {
    throw codecError(codec, 'compress', err);
  }
}

export async function decompress(codec: CodecName, data: Uint8Array, options: DecompressOptions = {}): Promise<Buffer> {
  const limit = options.maxBytes ?? DEFAULT_MAX_DECOMPRESSED_BYTES;
  try {
    let out: Buffer;
    switch (codec) {
      case 'none':
        // Not a decompression: these bytes arrived as they are, within the fetch or request size.
        return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      case 'gzip':
        try {
          out = await gunzip(data, { maxOutputLength: Math.max(1, limit) });
        } catch (err) {
          if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw new DecompressedTooLarge(codec, limit, undefined);
          throw err;
        }
        break;
      case 'snappy':
        if (snappyFraming(data) === 'xerial') out = await xerialDecompress(data, limit);
        else {
          within(codec, snappyLength(asBuffer(data), 0), limit);
          out = (await native.snappy.uncompress(asBuffer(data), { asBuffer: true })) as Buffer;
        }
        break;
      case 'lz4':
        within(codec, lz4Bound(asBuffer(data)), limit);
        out = await native.lz4.decompressFrame(data);
        break;
      case 'zstd':
        within(codec, zstdBound(asBuffer(data)), limit);
        out = await zstdDecoder().decode(asBuffer(data));
        break;
    }
    // The bounds above come from the framing the decoders obey; this is the belt to those braces.
    if (out.length > limit) throw new DecompressedTooLarge(codec, limit, out.length);
    return out;
  } catch (err) {
    throw codecError(codec, 'decompress', err);
  }
}

function within(codec: CodecName, bound: number, limit: number): void {
  if (bound > limit) throw new DecompressedTooLarge(codec, limit, bound);
}

// ---- snappy: raw blocks, or xerial framing ---------------------------------------------------

/** `\x82SNAPPY\0`, then version and minimum compatible version (int32 big-endian each). */
const XERIAL_MAGIC = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00]);
const XERIAL_HEADER_BYTES = 16;
/** snappy-java's default block: what a Java producer puts in one chunk. */
const XERIAL_BLOCK_BYTES = 32 * 1024;

/** How snappy bytes are framed: xerial when they start with its magic (as librdkafka and Java decide), raw otherwise. */
export function snappyFraming(data: Uint8Array): SnappyFraming {
  return data.byteLength >= XERIAL_HEADER_BYTES && asBuffer(data).subarray(0, XERIAL_MAGIC.length).equals(XERIAL_MAGIC) ? 'xerial' : 'raw';
}

async function xerialCompress(data: Uint8Array): Promise<Buffer> {
  const header = Buffer.alloc(XERIAL_HEADER_BYTES);
  XERIAL_MAGIC.copy(header);
  header.writeInt32BE(1, 8);
  header.writeInt32BE(1, 12);
  const parts: Buffer[] = [header];
  const input = asBuffer(data);
  for (let at = 0; at < input.length; at += XERIAL_BLOCK_BYTES) {
    const block = await native.snappy.compress(input.subarray(at, at + XERIAL_BLOCK_BYTES));
    const size = Buffer.alloc(4);
    size.writeInt32BE(block.length);
    parts.push(size, block);
  }
  return Buffer.concat(parts);
}

async function xerialDecompress(data: Uint8Array, limit: number): Promise<Buffer> {
  const input = asBuffer(data);
  const chunks: Buffer[] = [];
  let total = 0;
  let at = XERIAL_HEADER_BYTES;
  while (at < input.length) {
    if (at + 4 > input.length) throw new Error(`xerial chunk header cut short at byte ${at}`);
    const size = input.readInt32BE(at);
    at += 4;
    if (size < 0 || at + size > input.length) throw new Error(`xerial chunk at byte ${at - 4} claims ${size} bytes, ${input.length - at} are left`);
    chunks.push(input.subarray(at, at + size));
    total += snappyLength(input, at);
    at += size;
  }
  within('snappy', total, limit);
  const blocks: Buffer[] = [];
  for (const chunk of chunks) blocks.push((await native.snappy.uncompress(chunk, { asBuffer: true })) as Buffer);
  return Buffer.concat(blocks);
}

/** A raw snappy block's preamble: its uncompressed length, a little-endian base-128 varint (at most 32 bits). */
function snappyLength(b: Buffer, at: number): number {
  let n = 0;
  for (let i = 0; i < 5; i++) {
    if (at + i >= b.length) throw new Error('snappy block cut short in its length preamble');
    const byte = b[at + i]!;
    n += (byte & 0x7f) * 2 ** (7 * i);
    if ((byte & 0x80) === 0) return n;
  }
  throw new Error('snappy length preamble longer than 5 bytes');
}

// ---- lz4 and zstd: the most a frame can decompress to, from its framing alone ------------------

const LZ4_MAGIC = 0x184d2204;
/** Skippable frames (lz4 and zstd share the range): magic, 4-byte length, data nobody decodes. */
const isSkippable = (magic: number) => (magic & 0xfffffff0) === 0x184d2a50;
const LZ4_BLOCK_MAX = [0, 0, 0, 0, 64 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024];

/** A read position in a buffer of frames; reading past its end is "<codec> frame cut short". */
class FrameCursor {
  at = 0;
  constructor(
    readonly b: Buffer,
    private readonly codec: string,
  ) {}

  need(n: number): void {
    if (this.at + n > this.b.length) throw new Error(`${this.codec} frame cut short at byte ${this.at}`);
  }
}

/**
 * The most the frames of `b` decompress to: skippable frames passed over, and for each frame
 * (read by `frame`, the cursor just past its magic) its content size when it gives one, else the
 * sum over its blocks, whichever is smaller. Malformed framing throws.
 */
function boundOfFrames(b: Buffer, codec: string, magic: number, frame: (c: FrameCursor) => { contentSize: number | undefined; blocks: number }): number {
  const c = new FrameCursor(b, codec);
  let total = 0;
  while (c.at < b.length) {
    c.need(4);
    const m = b.readUInt32LE(c.at);
    c.at += 4;
    if (isSkippable(m)) {
      c.need(4);
      c.at += 4 + b.readUInt32LE(c.at);
      continue;
    }
    if (m !== magic) throw new Error(`not a ${codec} frame at byte ${c.at - 4}`);
    const { contentSize, blocks } = frame(c);
    total += contentSize === undefined ? blocks : Math.min(contentSize, blocks);
  }
  return total;
}

/**
 * Upper bound of what LZ4 frames (https://github.com/lz4/lz4/blob/dev/doc/lz4_Frame_format.md)
 * decompress to: a stored block counts its own size, a compressed one at most the frame's block size.
 */
export function lz4Bound(b: Buffer): number {
  return boundOfFrames(b, 'lz4', LZ4_MAGIC, (c) => {
    c.need(2);
    const flg = b[c.at]!;
    const blockMax = LZ4_BLOCK_MAX[(b[c.at + 1]! >> 4) & 0x07]!;
    c.at += 2;
    if (blockMax === 0) throw new Error('lz4 frame names no valid block size');
    let contentSize: number | undefined;
    if (flg & 0x08) {
      c.need(8);
      contentSize = Number(b.readBigUInt64LE(c.at));
      c.at += 8;
    }
    if (flg & 0x01) c.at += 4; // dictionary id
    c.at += 1; // header checksum
    let blocks = 0;
    for (;;) {
      c.need(4);
      const word = b.readUInt32LE(c.at);
      c.at += 4;
      if (word === 0) break; // end mark
      const size = word & 0x7fffffff;
      // LZ4 yields at most 255 bytes per byte read (a length byte of 255), so a short block of a
      // frame with 4 MiB blocks (lz4_flex's default) is not taken for 4 MiB.
      blocks += word & 0x80000000 ? size : Math.min(blockMax, size * 255);
      c.at += size + (flg & 0x10 ? 4 : 0);
    }
    if (flg & 0x04) c.at += 4; // content checksum
    return { contentSize, blocks };
  });
}

const ZSTD_MAGIC = 0xfd2fb528;
const ZSTD_BLOCK_MAX = 128 * 1024;

/**
 * Upper bound of what zstd frames (RFC 8878) decompress to: raw and RLE blocks say their size, a
 * compressed block is at most min(window, 128 KiB).
 */
export function zstdBound(b: Buffer): number {
  return boundOfFrames(b, 'zstd', ZSTD_MAGIC, (c) => {
    c.need(1);
    const fhd = b[c.at++]!;
    const fcsFlag = fhd >> 6;
    const singleSegment = (fhd & 0x20) !== 0;
    let window = Number.POSITIVE_INFINITY;
    if (!singleSegment) {
      c.need(1);
      const wd = b[c.at++]!;
      const base = 2 ** (10 + (wd >> 3));
      window = base + (base / 8) * (wd & 0x07);
    }
    c.at += [0, 1, 2, 4][fhd & 0x03]!; // dictionary id
    const fcsBytes = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!;
    let contentSize: number | undefined;
    if (fcsBytes > 0) {
      c.need(fcsBytes);
      contentSize = fcsBytes === 1 ? b[c.at]! : fcsBytes === 2 ? b.readUInt16LE(c.at) + 256 : fcsBytes === 4 ? b.readUInt32LE(c.at) : Number(b.readBigUInt64LE(c.at));
      c.at += fcsBytes;
    }
    const blockMax = Math.min(singleSegment ? (contentSize ?? 0) : window, ZSTD_BLOCK_MAX);
    let blocks = 0;
    for (;;) {
      c.need(3);
      const header = b.readUIntLE(c.at, 3);
      c.at += 3;
      const type = (header >> 1) & 0x03;
      const size = header >>> 3;
      if (type === 3) throw new Error('zstd block of the reserved type');
      blocks += type === 2 ? blockMax : size;
      c.at += type === 1 ? 1 : size;
      if (header & 0x01) break; // last block
    }
    if (fhd & 0x04) c.at += 4; // content checksum
    return { contentSize, blocks };
  });
}

// ---- the libraries ---------------------------------------------------------------------------

const gzip = promisify(gzipCb);
const gunzip = promisify(gunzipCb) as (data: Uint8Array, options: ZlibOptions) => Promise<Buffer>;

interface SnappyBinding {
  compress(data: Buffer): Promise<Buffer>;
  uncompress(data: Buffer, options: { asBuffer: true }): Promise<Buffer | string>;
}
interface Lz4Binding {
  compressFrame(data: Uint8Array): Promise<Buffer>;
  decompressFrame(data: Uint8Array): Promise<Buffer>;
}
interface ZstdBinding {
  Encoder: new (level: number) => { encode(data: Buffer): Promise<Buffer> };
  Decoder: new () => { decode(data: Buffer): Promise<Buffer> };
}

const require = createRequire(import.meta.url);
/** The native codecs, each loaded on first use (a failed require names the package and platform). */
const native = {
  get snappy() {
    return load<SnappyBinding>('snappy');
  },
  get lz4() {
    return load<Lz4Binding>('lz4-napi');
  },
  get zstd() {
    return load<ZstdBinding>('@toondepauw/node-zstd');
  },
};

const loaded = new Map<string, unknown>();
function load<T>(name: string): T {
  let mod = loaded.get(name);
  if (mod === undefined) {
    try {
      mod = require(name);
    } catch (err) {
      throw new Error(`the ${name} package has no binary for ${process.platform}-${process.arch} here: ${(err as Error).message.split('\n')[0]}`);
    }
    loaded.set(name, mod);
  }
  return mod as T;
}

/** zstd's default level (3), as librdkafka and the Java client use. Encoders and decoders are reusable. */
let encoder: { encode(data: Buffer): Promise<Buffer> } | undefined;
let decoder: { decode(data: Buffer): Promise<Buffer> } | undefined;
const zstdEncoder = () => (encoder ??= new native.zstd.Encoder(3));
const zstdDecoder = () => (decoder ??= new native.zstd.Decoder());

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

function codecError(codec: CodecName, direction: 'compress' | 'decompress', err: unknown): CodecError {
  if (err instanceof CodecError) return err;
  return new CodecError(codec, direction, err instanceof Error ? err.message : String(err));
}
