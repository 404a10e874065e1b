import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CodecError,
  CODEC_IDS,
  compress,
  DecompressedTooLarge,
  decompress,
  DEFAULT_MAX_DECOMPRESSED_BYTES,
  lz4Bound,
  snappyFraming,
  zstdBound,
  type CodecName,
  type CompressOptions,
} from '../../src/codecs/compression.js';
import { batchCompression, decompressBudget } from '../../src/codecs/record-batch.js';
import { kcatConsume, kcatProduce, startKafka, testClient, type KafkaCluster } from '../helpers/kafka.js';
import { tempDir } from '../helpers/reaper.js';

const { CompressionCodecs } = kafkajs;
const COMPRESSED = ['gzip', 'snappy', 'lz4', 'zstd'] as const satisfies readonly CodecName[];

/**
 * kafkajs serves as the record-batch parser around the codec under test: what it hands a codec is
 * exactly a batch's compressed records section, so this table entry both captures librdkafka's
 * bytes and decodes them with src/codecs/compression.ts.
 */
const captured = new Map<CodecName, Buffer[]>();
let writeOptions: CompressOptions = {};
for (const codec of COMPRESSED) {
  (CompressionCodecs as unknown as Record<number, unknown>)[CODEC_IDS[codec]] = () => ({
    compress: (encoder: { buffer: Buffer }) => compress(codec, encoder.buffer, writeOptions),
    decompress: (data: Buffer) => {
      captured.set(codec, [...(captured.get(codec) ?? []), Buffer.from(data)]);
      return decompress(codec, data);
    },
  });
}

const values = (codec: string, n: number) => Array.from({ length: n }, (_, i) => JSON.stringify({ n: i, codec, pad: 'x'.repeat(40 + (i % 13)) }));

describe('Kafka compression codecs, against librdkafka (kcat)', () => {
  let kafka: KafkaCluster;

  /** Every value on `topic`, read from the beginning by a kafkajs consumer using the codecs under test. */
  async function readWithCodecs(topic: string, count: number): Promise<string[]> {
    const consumer = testClient(kafka.bootstrap).consumer({ groupId: kafka.topic('codec-reader'), maxWaitTimeInMs: 100 });
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      const seen: string[] = [];
      let done!: () => void;
      let failed!: (err: Error) => void;
      const all = new Promise<void>((resolve, reject) => ((done = resolve), (failed = reject)));
      consumer.on(consumer.events.CRASH, (e) => failed(e.payload.error));
      await consumer.run({
        eachMessage: async ({ message }) => {
          seen.push(message.value!.toString());
          if (seen.length === count) done();
        },
      });
      await all;
      return seen;
    } finally {
      await consumer.disconnect();
    }
  }

  async function writeWithCodecs(topic: string, codec: CodecName, vals: string[]): Promise<void> {
    const producer = testClient(kafka.bootstrap).producer();
    await producer.connect();
    try {
      await producer.send({ topic, compression: CODEC_IDS[codec], messages: vals.map((value) => ({ value })) });
    } finally {
      await producer.disconnect();
    }
  }

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
  });
  after(async () => {
    await kafka?.stop();
  });

  for (const codec of COMPRESSED) {
    it(`decodes the ${codec} batches kcat -z ${codec} writes, every record in order`, async () => {
      const topic = kafka.topic(`kcat-${codec}`);
      await kafka.createTopic(topic, 1);
      const sent = values(codec, 30);
      await kcatProduce(
        kafka.bootstrap,
        topic,
        sent.map((value) => ({ value })),
        { compression: codec },
      );
      assert.deepEqual(await readWithCodecs(topic, sent.length), sent);
      assert.ok((captured.get(codec) ?? []).length > 0, `kcat wrote ${codec} batches (the codec was asked to decode them)`);
    });

    it(`writes ${codec} batches that kcat reads back`, async () => {
      const topic = kafka.topic(`gw-${codec}`);
      await kafka.createTopic(topic, 1);
      const sent = values(codec, 30);
      await writeWithCodecs(topic, codec, sent);
      const read = await kcatConsume(kafka.bootstrap, topic, sent.length);
      assert.deepEqual(
        read.map((r) => r.value),
        sent,
      );
    });
  }

  it('takes librdkafka snappy as raw blocks, and reads the same blocks in xerial framing as Java writes them (one chunk or several)', async () => {
    const raw = captured.get('snappy')?.[0];
    assert.ok(raw, 'a kcat snappy batch was captured by the test above');
    assert.equal(snappyFraming(raw), 'raw');
    const plain = await decompress('snappy', raw);
    // xerial: magic \x82SNAPPY\0, version 1, compatible version 1, then (int32 length, raw block)*.
    const header = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00, 0, 0, 0, 1, 0, 0, 0, 1]);
    const chunk = (block: Buffer) => Buffer.concat([Buffer.from([0, 0, (block.length >> 8) & 0xff, block.length & 0xff]), block]);
    const one = Buffer.concat([header, chunk(raw)]);
    const two = Buffer.concat([header, chunk(raw), chunk(raw)]);
    assert.equal(snappyFraming(one), 'xerial');
    assert.deepEqual(await decompress('snappy', one), plain);
    assert.deepEqual(await decompress('snappy', two), Buffer.concat([plain, plain]));
  });

  it('writes xerial-framed snappy that kcat reads back', async () => {
    const topic = kafka.topic('gw-xerial');
    await kafka.createTopic(topic, 1);
    const sent = values('xerial', 30);
    writeOptions = { snappyFraming: 'xerial' };
    try {
      await writeWithCodecs(topic, 'snappy', sent);
    } finally {
      writeOptions = {};
    }
    const read = await kcatConsume(kafka.bootstrap, topic, sent.length);
    assert.deepEqual(
      read.map((r) => r.value),
      sent,
    );
  });
});

describe('Kafka compression codecs, on their own', () => {
  it('round-trips 200 KiB through every codec, across lz4 blocks and xerial chunks', async () => {
    // Half random (incompressible), half repetitive: both kinds of block.
    const data = Buffer.concat([randomBytes(100 * 1024), Buffer.alloc(100 * 1024, 'eventgate ')]);
    for (const codec of ['none', ...COMPRESSED] as const) {
      assert.deepEqual(await decompress(codec, await compress(codec, data)), data, codec);
    }
    const xerial = await compress('snappy', data, { snappyFraming: 'xerial' });
    assert.equal(snappyFraming(xerial), 'xerial');
    assert.deepEqual(await decompress('snappy', xerial), data);
  });

  it('answers corrupt input with a CodecError naming the codec, never a crash', async () => {
    const garbage = Buffer.from('this is not compressed at all, whatever the attributes say');
    for (const codec of COMPRESSED) {
      await assert.rejects(decompress(codec, garbage), (err: unknown) => err instanceof CodecError && err.codec === codec && err.message.startsWith(`${codec} decompress failed:`));
    }
    const header = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00, 0, 0, 0, 1, 0, 0, 0, 1]);
    await assert.rejects(decompress('snappy', Buffer.concat([header, Buffer.from([0, 0, 1, 0, 1, 2, 3])])), /xerial chunk at byte 16 claims 256 bytes, 3 are left/);
  });
});

/** `cmd` (zstd, lz4, gzip: implementations independent of ours) fed `input` on stdin, as a stream: no content size in the frame. */
const tool = (cmd: string, args: string[], input: Buffer) => execFileSync(cmd, args, { input, maxBuffer: 64 * 1024 * 1024 });
/** `cmd` compressing a file: the tools then know the size and write it in the frame. */
function toolOnFile(cmd: string, args: string[], input: Buffer): Buffer {
  const dir = tempDir('eg-codec');
  try {
    writeFileSync(join(dir, 'in'), input);
    return execFileSync(cmd, [...args, join(dir, 'in')], { maxBuffer: 64 * 1024 * 1024 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const MiB = 1024 * 1024;

describe('Kafka compression codecs: decompressed size bound', () => {
  // Just over the default bound: a bigger bomb proves nothing more, and costs each codec and tool its size in CPU.
  const zeros = Buffer.alloc(65 * MiB);
  const tooLarge = (codec: CodecName, limit: number, claimed?: (n: number | undefined) => boolean) => (err: unknown) =>
    err instanceof DecompressedTooLarge &&
    err instanceof CodecError &&
    err.codec === codec &&
    err.limit === limit &&
    (claimed ? claimed(err.claimed) : true) &&
    err.message.startsWith(`${codec} decompress failed: the records would decompress to `);

  it('defaults to 64 MiB and refuses 65 MiB of zeros in each codec, as other tools compress it', async () => {
    assert.equal(DEFAULT_MAX_DECOMPRESSED_BYTES, 64 * MiB);
    // A frame with no content size (the tools read a pipe): the bound comes from the block headers.
    const zstd = tool('zstd', ['-c', '-q'], zeros);
    assert.ok(zstdBound(zstd) >= zeros.length);
    await assert.rejects(
      decompress('zstd', zstd),
      tooLarge('zstd', 64 * MiB, (n) => n! >= zeros.length),
    );
    const lz4 = tool('lz4', ['-c', '-q'], zeros);
    assert.ok(lz4Bound(lz4) >= zeros.length);
    await assert.rejects(
      decompress('lz4', lz4),
      tooLarge('lz4', 64 * MiB, (n) => n! >= zeros.length),
    );
    // gzip says nothing of its size: inflating stops at the bound.
    const gzip = tool('gzip', ['-c'], zeros);
    await assert.rejects(
      decompress('gzip', gzip),
      tooLarge('gzip', 64 * MiB, (n) => n === undefined),
    );
    // snappy's preamble says the size; ours compresses, the bound is checked before decoding.
    const snappy = await compress('snappy', zeros);
    await assert.rejects(
      decompress('snappy', snappy),
      tooLarge('snappy', 64 * MiB, (n) => n === zeros.length),
    );
    const xerial = await compress('snappy', zeros, { snappyFraming: 'xerial' });
    await assert.rejects(
      decompress('snappy', xerial),
      tooLarge('snappy', 64 * MiB, (n) => n === zeros.length),
    );
  });

  it('takes a section that decompresses to exactly maxBytes, and refuses it one byte lower', async () => {
    const data = Buffer.concat([randomBytes(64 * 1024), Buffer.alloc(200 * 1024, 'eventgate ')]);
    const vectors: [CodecName, Buffer][] = [
      ['gzip', tool('gzip', ['-c'], data)],
      ['snappy', await compress('snappy', data)],
      ['snappy', await compress('snappy', data, { snappyFraming: 'xerial' })],
      // With the content size in the frame (as the tools write for files): the bound is exact.
      ['lz4', toolOnFile('lz4', ['-c', '-q', '--content-size'], data)],
      ['zstd', toolOnFile('zstd', ['-c', '-q'], data)],
    ];
    for (const [codec, z] of vectors) {
      assert.deepEqual(await decompress(codec, z, { maxBytes: data.length }), data, codec);
      await assert.rejects(decompress(codec, z, { maxBytes: data.length - 1 }), tooLarge(codec, data.length - 1), codec);
    }
  });

  it('bounds what our own lz4 and zstd write (no content size) to within a block of the truth', async () => {
    const data = Buffer.alloc(3 * MiB + 12345, 'abc');
    for (const [codec, bound] of [
      ['lz4', lz4Bound],
      ['zstd', zstdBound],
    ] as const) {
      const z = await compress(codec, data);
      const b = bound(z);
      assert.ok(b >= data.length && b <= data.length + 4 * MiB, `${codec}: ${b} for ${data.length}`);
      assert.deepEqual(await decompress(codec, z, { maxBytes: b }), data);
    }
  });

  it('refuses a snappy block whose preamble claims a gigabyte before decoding it', async () => {
    // Preamble 2^30 as a varint, then a 4-byte literal: a lie no decoder gets to see.
    const lie = Buffer.from([0x80, 0x80, 0x80, 0x80, 0x04, 0x0c, 0x61, 0x62, 0x63, 0x64]);
    await assert.rejects(
      decompress('snappy', lie),
      tooLarge('snappy', 64 * MiB, (n) => n === 2 ** 30),
    );
  });

  it('answers malformed lz4 and zstd framing with a CodecError, not a bound', async () => {
    const zstd = tool('zstd', ['-c', '-q'], Buffer.alloc(MiB));
    await assert.rejects(decompress('zstd', zstd.subarray(0, 10)), (err: unknown) => err instanceof CodecError && !(err instanceof DecompressedTooLarge) && /zstd frame cut short/.test(err.message));
    await assert.rejects(decompress('zstd', zstd.subarray(0, zstd.length - 2)), (err: unknown) => err instanceof CodecError && !(err instanceof DecompressedTooLarge));
    const lz4 = tool('lz4', ['-c', '-q'], Buffer.alloc(MiB));
    await assert.rejects(decompress('lz4', lz4.subarray(0, 9)), (err: unknown) => err instanceof CodecError && !(err instanceof DecompressedTooLarge) && /lz4 frame cut short/.test(err.message));
  });

  it("bounds one produce request's batches together (decompressBudget): many small bombs are one big one", async () => {
    const part = await compress('gzip', Buffer.alloc(600 * 1024));
    const one = decompressBudget(batchCompression, MiB);
    assert.equal((await one.decompress(CODEC_IDS.gzip, part)).length, 600 * 1024);
    await assert.rejects(
      one.decompress(CODEC_IDS.gzip, part),
      (err: unknown) => err instanceof DecompressedTooLarge && err.message === "gzip decompress failed: this request's records would decompress to more than the limit of 1048576 bytes",
    );
    // Batches asked for at once are decompressed one after the other, each within what is left.
    const together = decompressBudget(batchCompression, MiB);
    const results = await Promise.allSettled([together.decompress(CODEC_IDS.gzip, part), together.decompress(CODEC_IDS.gzip, part), together.decompress(CODEC_IDS.gzip, part)]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'rejected'],
    );
    // A single batch over the whole bound says what it claims.
    const big = await compress('zstd', Buffer.alloc(2 * MiB));
    await assert.rejects(
      decompressBudget(batchCompression, MiB).decompress(CODEC_IDS.zstd, big),
      /^DecompressedTooLarge: zstd decompress failed: the records would decompress to up to \d+ bytes, more than the limit of 1048576 bytes$/,
    );
  });
});
