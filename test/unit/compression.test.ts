import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { CodecError, CODEC_IDS, compress, decompress, snappyFraming, type CodecName, type CompressOptions } from '../../src/codecs/compression.js';
import { kcatConsume, kcatProduce, startKafka, testClient, type KafkaCluster } from '../helpers/kafka.js';

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
      await kcatProduce(kafka.bootstrap, topic, sent.map((value) => ({ value })), { compression: codec });
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
