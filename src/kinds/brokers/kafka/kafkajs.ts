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
const REQUEST_QUEUE = 'kafkajs/src/network/requestQueue';
/** kafkajs' wait before it looks again at requests held back by its in-flight limit (requestQueue/index.js). */
const CHECK_PENDING_REQUESTS_INTERVAL = 10;

/** What of kafkajs' per-connection request queue the fix below reads and sets (2.2.4, pinned). */
interface RequestQueue {
  pending: unknown[];
  throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  checkPendingRequests(): void;
  scheduleCheckPendingRequests(): void;
}

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

/**
 * kafkajs 2.2.4's `scheduleCheckPendingRequests` without its endless timer: with nothing held back
 * and no throttling it still set a timer with a negative delay (1 ms), whose callback looked at the
 * empty queue and set the next one, so every connection to a broker woke the event loop a thousand
 * times a second for as long as it was open, idle or not (tulios/kafkajs#1556, #1704). Here that
 * case sets no timer: a request held back by the in-flight limit is looked at again when a
 * response frees a place (fulfillRequest) and, as before, every 10 ms while any waits; a
 * throttled connection is looked at again when its throttle ends, as before.
 */
function scheduleCheckPendingRequests(this: RequestQueue): void {
  if (this.throttleCheckTimeoutId) return;
  let scheduleAt = this.throttledUntil - Date.now();
  if (this.pending.length > 0) scheduleAt = scheduleAt > 0 ? scheduleAt : CHECK_PENDING_REQUESTS_INTERVAL;
  else if (scheduleAt <= 0) return;
  this.throttleCheckTimeoutId = setTimeout(() => {
    this.throttleCheckTimeoutId = null;
    this.checkPendingRequests();
  }, scheduleAt);
}

/** kafkajs' own grouping, which the gateway's replaces (kept for the test that compares the two). */
export let kafkajsGrouping: Grouping | undefined;
/** False when kafkajs' producer had been loaded before this module, with its own grouping. */
export let groupingReplaced = false;

/**
 * kafkajs as every module of the gateway loads it: its connections take the timer fix above, and
 * its producer the grouping, which must be in the module cache before kafkajs' producer module
 * reads it (once, as it loads). So
 * kafkajs is loaded here and only here; elsewhere only its types are imported.
 */
function load(): typeof KafkaJS {
  const path = require.resolve(GROUPING);
  groupingReplaced = require.cache[require.resolve('kafkajs/src/producer/sendMessages')] === undefined;
  kafkajsGrouping = require(path) as Grouping;
  require.cache[path]!.exports = groupMessagesPerPartition;
  (require(REQUEST_QUEUE) as { prototype: RequestQueue }).prototype.scheduleCheckPendingRequests = scheduleCheckPendingRequests;
  return require('kafkajs') as typeof KafkaJS;
}

const kafkajs = load();
export default kafkajs;

/** What of a producer's kafkajs Cluster (2.2.4, pinned: src/cluster/index.js) the gateway uses: its metadata, fetched per topic on demand. */
export interface ProducerCluster {
  /** Adds the topics to those the cluster keeps metadata for, fetching it (one Metadata request) when one is new. */
  addMultipleTargetTopics(topics: string[]): Promise<void>;
  /** The topic's partitions (partitionId, leader, ...) as last fetched; empty when not known. */
  findTopicPartitionMetadata(topic: string): KafkaJS.PartitionMetadata[];
  /** Fetches the metadata of every topic it keeps again (one Metadata request). */
  refreshMetadata(): Promise<void>;
}

/**
 * A kafkajs producer and the Cluster it sends through, which kafkajs keeps private: `client.producer`
 * builds it with the client's own `createCluster` (a property under a private symbol), wrapped
 * here for that one call.
 */
export function producerWithCluster(client: KafkaJS.Kafka, config: KafkaJS.ProducerConfig): { producer: KafkaJS.Producer; cluster: ProducerCluster } {
  const owner = client as unknown as Record<symbol, (options: object) => ProducerCluster>;
  const key = Object.getOwnPropertySymbols(owner).find((s) => s.description === 'private:Kafka:createCluster');
  if (key === undefined) throw new Error('kafkajs: no private:Kafka:createCluster on the client (the gateway needs kafkajs 2.2.4)');
  const createCluster = owner[key]!;
  let cluster: ProducerCluster | undefined;
  owner[key] = (options) => (cluster = createCluster(options));
  try {
    const producer = client.producer(config);
    return { producer, cluster: cluster! };
  } finally {
    owner[key] = createCluster;
  }
}
