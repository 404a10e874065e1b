import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import kafkajs, { groupingReplaced, groupMessagesPerPartition, kafkajsGrouping } from '../../src/kinds/brokers/kafka/kafkajs.js';

const require = createRequire(import.meta.url);

/**
 * kafkajs' producer groups a produce request's records by partition with the gateway's linear
 * grouping (kinds/brokers/kafka/kafkajs.ts), which gives exactly what kafkajs' own did.
 */
describe("kafkajs' record grouping", () => {
  it('is the one kafkajs loads its producer with', () => {
    assert.equal(typeof kafkajs.Kafka, 'function');
    assert.equal(groupingReplaced, true);
    assert.equal(require('kafkajs/src/producer/groupMessagesPerPartition'), groupMessagesPerPartition);
    assert.notEqual(kafkajsGrouping, groupMessagesPerPartition);
  });

  it("gives kafkajs' own result: the same partitions in the same order, the same records in theirs, one partitioner call per record", () => {
    const partitionMetadata = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map((partitionId) => ({ partitionId, leader: 1 }));
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (const count of [0, 1, 2, 25, 94, 500]) {
      for (const spread of [1, 3, 12]) {
        const messages = Array.from({ length: count }, (_, i) => ({ key: `k${i}`, value: `{"n":${i}}`, partition: Math.floor(random() * spread) }));
        const calls: unknown[][][] = [[], []];
        const partitioner = (which: number) => (args: { topic: string; partitionMetadata: unknown[]; message: unknown }) => {
          calls[which]!.push([args.topic, args.partitionMetadata, args.message]);
          return (args.message as { partition: number }).partition;
        };
        const theirs = kafkajsGrouping!({ topic: 'orders', partitionMetadata, messages, partitioner: partitioner(0) });
        const ours = groupMessagesPerPartition({ topic: 'orders', partitionMetadata, messages, partitioner: partitioner(1) });
        assert.deepEqual(Object.keys(ours), Object.keys(theirs));
        for (const p of Object.keys(theirs)) {
          const a = theirs[Number(p)]!;
          const b = ours[Number(p)]!;
          assert.equal(b.length, a.length);
          for (let i = 0; i < a.length; i++) assert.equal(b[i], a[i], `partition ${p}, record ${i}`);
        }
        assert.equal(calls[1]!.length, count);
        for (let i = 0; i < count; i++) for (let j = 0; j < 3; j++) assert.equal(calls[1]![i]![j], calls[0]![i]![j]);
      }
    }
  });

  it('groups nothing without partition metadata, as kafkajs does', () => {
    const args = { topic: 'orders', partitionMetadata: [], messages: [{ value: 'x' }], partitioner: () => 0 };
    assert.deepEqual(groupMessagesPerPartition(args), kafkajsGrouping!(args));
    assert.deepEqual(groupMessagesPerPartition(args), {});
  });
});
