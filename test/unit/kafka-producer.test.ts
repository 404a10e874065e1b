import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { ORIGINAL, type Message } from '../../src/core/message.js';
import type { KafkaSettings } from '../../src/kinds/brokers/kafka.js';
import { clientConfig } from '../../src/kinds/brokers/kafka/clients.js';
import { RecordProducer } from '../../src/kinds/brokers/kafka/producer.js';
import { createLogger } from '../../src/log.js';
import { kafkaSettings, kcatConsumeAll, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { KafkaTap } from '../helpers/kafka-tap.js';

/**
 * RecordProducer driven directly against librdkafka's mock cluster: which records its batches
 * gather when publishes arrive in one event-loop turn, read back from the topic with kcat.
 */
const { Partitioners } = kafkajs;

function producerFor(s: KafkaSettings): RecordProducer {
  const log = createLogger('silent');
  return new RecordProducer('k', clientConfig(s, log), s, log, undefined, { acknowledged() {}, failed() {}, unreachable: () => undefined });
}

const message = (key: string, value: unknown): Message => ({ key, value, headers: {}, topic: null, partition: null, offset: null, timestamp: -1 });

/** A key kafkajs' default partitioner (the producer's, for keyed records) sends to `partition` of `count`. */
function keyFor(partition: number, count: number, prefix: string): string {
  const byKey = Partitioners.DefaultPartitioner();
  const partitionMetadata = Array.from({ length: count }, (_, partitionId) => ({ partitionId, leader: 1, replicas: [1], isr: [1], offlineReplicas: [], partitionErrorCode: 0 }));
  for (let i = 0; ; i++) if (byKey({ topic: 't', partitionMetadata, message: { key: `${prefix}-${i}`, value: null } }) === partition) return `${prefix}-${i}`;
}

describe('RecordProducer batches', () => {
  let kafka: KafkaCluster;
  before(async () => {
    kafka = await startKafka({ brokers: 1 });
  });
  after(async () => {
    await kafka?.stop();
  });

  it('stops a batch at the first record of a partition that does not fit maxBatchBytes: a smaller later record of that partition does not overtake it', async () => {
    const topic = kafka.topic('full');
    await kafka.createTopic(topic, 2);
    const producer = producerFor(kafkaSettings(kafka.bootstrap, { maxBatchBytes: 1000 }));
    producer.start();
    try {
      const [a, b] = [keyFor(0, 2, 'a'), keyFor(1, 2, 'b')];
      // The producer learns the topic's partitions (a topic's first record goes alone).
      await producer.publish(topic, message(a, 'first'));
      // In one event-loop turn: 600 bytes for partition 0 start a batch; 600 for partition 1 do not
      // fit beside them; 100 more for partition 1 would, but must follow the 600 of their partition.
      const pad = (n: number) => 'x'.repeat(n);
      const answers = (await Promise.all([
        producer.publish(topic, message(a, { n: 1, pad: pad(600) })),
        producer.publish(topic, message(b, { n: 2, pad: pad(600) })),
        producer.publish(topic, message(b, { n: 3, pad: pad(100) })),
      ])) as { partition: number; offset: string }[];
      assert.deepEqual(
        answers.map((d) => d.partition),
        [0, 1, 1],
      );
      const records = await kcatConsumeAll(kafka.bootstrap, topic);
      const onPartition1 = records.filter((r) => r.partition === 1).sort((x, y) => x.offset - y.offset);
      assert.deepEqual(
        onPartition1.map((r) => JSON.parse(r.value!).n),
        [2, 3],
        'the records of partition 1 in the order they were published',
      );
      assert.deepEqual(
        onPartition1.map((r) => String(r.offset)),
        answers.slice(1).map((d) => d.offset),
        'each at the offset it was answered with',
      );
    } finally {
      await producer.stop();
    }
  });

  it('counts a record as its batch holds it, framing and each value of a repeated header included: small records do not take a batch past maxBatchBytes', async () => {
    // A cluster refuses a batch over its message.max.bytes with every record in it; the mock takes
    // any size, so the tap reads what the producer sends. 600 records of a 9-byte value and a
    // header with two values, lingering together: counting the data alone (9 + 1 + 1 + 1 bytes
    // each) put all 600, 15 KB of records, in one batch for a limit of 10 KB.
    const tap = await KafkaTap.start(kafka.bootstrap);
    const topic = kafka.topic('framed');
    await kafka.createTopic(topic, 1);
    const maxBatchBytes = 10_000;
    const producer = producerFor(kafkaSettings(tap.bootstrap, { maxBatchBytes, maxBatchRecords: 100_000, lingerMs: 200 }));
    producer.start();
    try {
      await producer.publish(topic, message('k', 'first'));
      const seen = tap.produces.length;
      // A consumed record copied as it was: header h twice (core/message.ts, OriginalRecord).
      const copied = (n: number): Message => {
        const value = { n };
        const original = { value: Buffer.from(JSON.stringify(value)), key: null, headers: { h: [Buffer.from('a'), Buffer.from('b')] }, decoded: { value, key: null, headers: { h: 'b' } } };
        return { ...message('', value), key: null, headers: { h: 'b' }, [ORIGINAL]: original };
      };
      await Promise.all(Array.from({ length: 600 }, (_, n) => producer.publish(topic, copied(100 + n))));
      const batches = tap.producesTo(topic, seen).flatMap((p) => p.batches);
      assert.equal(
        batches.reduce((sum, b) => sum + b.records, 0),
        600,
      );
      for (const b of batches) assert.ok(b.recordBytes <= maxBatchBytes, `a batch of ${b.records} records holds ${b.recordBytes} bytes of them, over maxBatchBytes ${maxBatchBytes}`);
      assert.deepEqual(tap.problems, []);
    } finally {
      await producer.stop();
      await tap.stop();
    }
  });
});
