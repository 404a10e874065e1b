import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import type { Message } from '../../src/core/message.js';
import type { KafkaSettings } from '../../src/kinds/brokers/kafka.js';
import { clientConfig } from '../../src/kinds/brokers/kafka/clients.js';
import { RecordProducer } from '../../src/kinds/brokers/kafka/producer.js';
import { createLogger } from '../../src/log.js';
import { kafkaSettings, kcatConsumeAll, startKafka, type KafkaCluster } from '../helpers/kafka.js';

/**
 * RecordProducer driven directly against librdkafka's mock cluster: which records its batches
 * gather when publishes arrive in one event-loop turn, read back from the topic with kcat.
 */
const { Partitioners } = kafkajs;

function producerFor(s: KafkaSettings): RecordProducer {
  const log = createLogger('silent');
  return new RecordProducer('k', clientConfig(s, log), s, log, undefined, { acknowledged() {}, failed() {} });
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
});
