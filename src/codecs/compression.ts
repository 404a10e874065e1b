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
 */
import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import { gunzip as gunzipCb, gzip as gzipCb } from 'node:zlib';

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

/** A codec could not compress or decompress (corrupt input, or its native binding is missing here). */
export class CodecError extends Error {
  override readonly name = 'CodecError';
  constructor(
    readonly codec: CodecName,
    readonly direction: 'compress' | 'decompress',
    reason: string,
  ) {
    super(`${codec} ${direction} failed: ${reason}`);
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

export async function decompress(codec: CodecName, data: Uint8Array): Promise<Buffer> {
  try {
    switch (codec) {
      case 'none':
        return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      case 'gzip':
        return await gunzip(data);
      case 'snappy':
        return snappyFraming(data) === 'xerial' ? await xerialDecompress(data) : await native.snappy.uncompress(asBuffer(data), { asBuffer: true }) as Buffer;
      case 'lz4':
        return await native.lz4.decompressFrame(data);
      case 'zstd':
        return await zstdDecoder().decode(asBuffer(data));
    }
  } catch (err) {
    throw codecError(codec, 'decompress', err);
  }
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

async function xerialDecompress(data: Uint8Array): Promise<Buffer> {
  const input = asBuffer(data);
  const blocks: Buffer[] = [];
  let at = XERIAL_HEADER_BYTES;
  while (at < input.length) {
    if (at + 4 > input.length) throw new Error(`xerial chunk header cut short at byte ${at}`);
    const size = input.readInt32BE(at);
    at += 4;
    if (size < 0 || at + size > input.length) throw new Error(`xerial chunk at byte ${at - 4} claims ${size} bytes, ${input.length - at} are left`);
    blocks.push((await native.snappy.uncompress(input.subarray(at, at + size), { asBuffer: true })) as Buffer);
    at += size;
  }
  return Buffer.concat(blocks);
}

// ---- the libraries ---------------------------------------------------------------------------

const gzip = promisify(gzipCb);
const gunzip = promisify(gunzipCb);

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
const zstdEncoder = () => (encoder ??= new (native.zstd.Encoder)(3));
const zstdDecoder = () => (decoder ??= new (native.zstd.Decoder)());

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

function codecError(codec: CodecName, direction: 'compress' | 'decompress', err: unknown): CodecError {
  if (err instanceof CodecError) return err;
  return new CodecError(codec, direction, err instanceof Error ? err.message : String(err));
}
