import { createRequire } from 'node:module';
import type * as KafkaJS from 'kafkajs';

const require = createRequire(import.meta.url);

/** What kafkajs' producer groups a produce request's records with (2.2.4, pinned: src/producer/groupMessagesPerPartition.js). */
type Grouping = (args: {
  topic: string;
  partitionMetadata: unknown[];
  messages: unknown[];
  partitioner: (args: { topic: string; partitionMetadata: unknown[]; message: unknown }) => number;
}) => Record<number, unknown[]>;

const GROUPING = 'kafkajs/src/producer/groupMessagesPerPartition';

/**
 * The records of a topic by partition, in their order: kafkajs' own result, in linear time.
 * kafkajs' version copies a partition's whole list into a new object for every record it adds
 * (`Object.assign(result, {[p]: [...current, message]})`), so a produce request costs the square of
 * the records per partition in time and garbage, and sticky partitioning puts all of a batch's
 * keyless records in one partition (docs/performance.md, "wave 2, eighth session").
 */
export const groupMessagesPerPartition: Grouping = ({ topic, partitionMetadata, messages, partitioner }) => {
  const grouped: Record<number, unknown[]> = {};
  if (partitionMetadata.length === 0) return grouped;
  for (const message of messages) {
    const partition = partitioner({ topic, partitionMetadata, message });
    const list = grouped[partition];
    if (list === undefined) grouped[partition] = [message];
    else list.push(message);
  }
  return grouped;
};

/** kafkajs' own grouping, which the gateway's replaces (kept for the test that compares the two). */
export let kafkajsGrouping: Grouping | undefined;
/** False when kafkajs' producer had been loaded before this module, with its own grouping. */
export let groupingReplaced = false;

/**
 * kafkajs as every module of the gateway loads it: its producer takes the grouping above, which
 * must be in the module cache before kafkajs' producer module reads it (once, as it loads). So
 * kafkajs is loaded here and only here; elsewhere only its types are imported.
 */
function load(): typeof KafkaJS {
  const path = require.resolve(GROUPING);
  groupingReplaced = require.cache[require.resolve('kafkajs/src/producer/sendMessages')] === undefined;
  kafkajsGrouping = require(path) as Grouping;
  require.cache[path]!.exports = groupMessagesPerPartition;
  return require('kafkajs') as typeof KafkaJS;
}

const kafkajs = load();
export default kafkajs;
