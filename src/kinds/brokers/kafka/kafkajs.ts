import { createRequire } from 'node:module';
import type * as KafkaJS from 'kafkajs';
import { hostAndPort } from './address.js';
import { unknownTopic } from './leaders.js';
import { batchStandInHeaders, recordStandInHeaders, UndecodableBatch } from './stand-ins.js';
import { sleep } from '../../../core/within.js';
import { BATCH_HEADER_BYTES, compressionOf, isControlBatch as controlBatch, readBatchHeader, RecordCursor, verifyCrc } from '../../../codecs/record-batch.js';
import { ProtocolError, Writer } from '../../../codecs/kafka-protocol/wire.js';

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
const RUNNER = 'kafkajs/src/consumer/runner';
const CONSUMER_GROUP = 'kafkajs/src/consumer/consumerGroup';
const POOL_BUILDER = 'kafkajs/src/cluster/connectionPoolBuilder';
const OFFSET_MANAGER = 'kafkajs/src/consumer/offsetManager';
/** kafkajs' wait before it looks again at requests held back by its in-flight limit (requestQueue/index.js). */
const CHECK_PENDING_REQUESTS_INTERVAL = 10;

const RECORD_DECODER = 'kafkajs/src/protocol/recordBatch/record/v0/decoder';
const BATCH_DECODER = 'kafkajs/src/protocol/recordBatch/v0/decoder';

/** What of kafkajs' Decoder (src/protocol/decoder.js) a record is read with. */
interface RecordReader {
  readInt8(): number;
  readVarInt(): number;
  readVarLong(): unknown;
  /** Null for a length of -1. */
  readVarIntBytes(): Buffer | null;
  readVarIntString(): string | null;
  /** The record's bytes (after its length), which reads past the end do not throw on: they read zeros and short slices. */
  readonly buffer: Buffer;
  /** Where the next read starts in `buffer`. */
  readonly offset: number;
}

/** What kafkajs' batch decoder (src/protocol/recordBatch/v0/decoder.js) hands each record's decoder. */
interface RecordBatchContext {
  firstOffset?: string;
  firstTimestamp?: string;
  magicByte?: number;
  isControlBatch?: boolean;
  timestampType?: number;
  maxTimestamp?: string;
}

/** kafkajs' 64-bit integers (src/utils/long.js), with which it adds a record's deltas to its batch's first offset and timestamp. */
const Long = require('kafkajs/src/utils/long') as { fromValue(v: unknown): { add(v: unknown): { toString(): string } } };
/** A batch's `timestampType` when the cluster set its records' time (src/protocol/timestampTypes.js). */
const LOG_APPEND_TIME = 1;
type HeaderValue = Buffer | null | (Buffer | null)[];

/**
 * One record of a batch, as kafkajs 2.2.4's record decoder reads it and in its shape, in time
 * linear in the headers. kafkajs gathered them with a reduce that spread the whole object into a
 * new one for each header, the square of their number: a record of 8,000 headers (63 KB) held
 * the event loop 61 s, and every route, listener and group member of the process with it (a 1 MB
 * record holds hundreds of thousands). A name read once has its value, a repeated one the list of
 * its values in order. Only a header's own value counts as a first one (kafkajs made `toString` or
 * `constructor` a list of the prototype's function and the value), and `__proto__` is an own
 * property, as kafkajs' spread made it.
 *
 * A record that cannot be read comes back as a stand-in (./stand-ins.ts) at its offset, holding its
 * bytes: a header count below -1, or more headers than the bytes left can hold (each takes two at
 * least: a count near 2^31 looped that many times past the record's end and exhausted the heap),
 * or fields that end before or past the record's end. Throwing instead would fail the whole fetch.
 */
export function decodeRecord(decoder: RecordReader, batchContext: RecordBatchContext = {}) {
  const { firstOffset, firstTimestamp, magicByte, isControlBatch = false, timestampType, maxTimestamp } = batchContext;
  const attributes = decoder.readInt8();
  const timestampDelta = decoder.readVarLong();
  const timestamp = timestampType === LOG_APPEND_TIME && maxTimestamp ? maxTimestamp : Long.fromValue(firstTimestamp).add(timestampDelta).toString();
  const offsetDelta = decoder.readVarInt();
  const offset = Long.fromValue(firstOffset).add(offsetDelta).toString();
  const key = decoder.readVarIntBytes();
  const value = decoder.readVarIntBytes();
  const headers: Record<string, HeaderValue> = {};
  const count = decoder.readVarInt();
  let unreadable = impossibleHeaderCount(count, decoder.buffer.length - decoder.offset);
  for (let i = 0; unreadable === undefined && i < count; i++) {
    const name = String(decoder.readVarIntString());
    const v = decoder.readVarIntBytes();
    const seen = Object.hasOwn(headers, name) ? headers[name]! : undefined;
    if (seen === undefined) {
      // An assignment to `__proto__` would set the object's prototype.
      if (name === '__proto__') Object.defineProperty(headers, name, { value: v, writable: true, enumerable: true, configurable: true });
      else headers[name] = v;
    } else if (Array.isArray(seen)) seen.push(v);
    else headers[name] = [seen, v];
  }
  if (unreadable === undefined && decoder.offset !== decoder.buffer.length) unreadable = `it is ${decoder.buffer.length} bytes long but its fields take ${decoder.offset}`;
  if (unreadable !== undefined) return standIn({ magicByte, attributes, timestamp, offset, isControlRecord: isControlBatch, batchContext }, decoder.buffer, unreadable);
  return { magicByte, attributes, timestamp, offset, key, value, headers, isControlRecord: isControlBatch, batchContext };
}

/** Why a record cannot hold `count` headers in the `left` bytes after its value (each takes two at least), or undefined when it can. -1 is none (kafkajs' null array). */
function impossibleHeaderCount(count: number, left: number): string | undefined {
  if (count < -1) return `its header count is ${count}`;
  if (count > left / MIN_HEADER_BYTES) return `it claims ${count} headers in the ${left} bytes after its value (a header takes ${MIN_HEADER_BYTES} at least)`;
  return undefined;
}

/** A record's stand-in: its offset, timestamp and attributes as read, no key, and as value the record as its batch holds it (its length first). */
function standIn<R extends object>(record: R, bytes: Buffer, reason: string) {
  return { ...record, key: null, value: new Writer().varint(bytes.length).raw(bytes).finish(), headers: recordStandInHeaders(reason) };
}

/** A header's name and value lengths, one byte each at the least (an empty name, a null value). */
const MIN_HEADER_BYTES = 2;

/** What of kafkajs' Decoder (src/protocol/decoder.js) a fetch response's records are read from. */
interface FetchReader {
  readonly buffer: Buffer;
  readonly offset: number;
  forward(bytes: number): void;
}

const Decoder = require('kafkajs/src/protocol/decoder') as new (buffer: Buffer) => RecordReader;
/** kafkajs' codec table lookup (src/protocol/message/compression), which codecs.ts fills. */
const { lookupCodecByAttributes } = require('kafkajs/src/protocol/message/compression') as {
  lookupCodecByAttributes(attributes: number): { decompress(data: Buffer): Promise<Buffer> } | null;
};
/** kafkajs' fetch decoder ends a partition's records quietly at this error: the tail of a fetch cut by its byte limit. */
const { KafkaJSPartialMessageError } = require('kafkajs/src/errors') as { KafkaJSPartialMessageError: new (message: string) => Error };
/** A batch's fields before its length field: its base offset (int64) and the length (int32). */
const LOG_OVERHEAD = 12;
const TRANSACTIONAL = 0x10;
const TIMESTAMP_TYPE = 0x08;

/** Whether the fetch being decoded checks its batches' CRC-32C: codecs.ts answers it per consumer (`consumer.checkCrcs`). */
let checksCrcs: () => boolean = () => true;

/** Sets who says whether a fetch's batches are checked (codecs.ts, which knows the consumer whose fetch is decoded). */
export function decideCrcChecks(decide: () => boolean): void {
  checksCrcs = decide;
}

/**
 * One record batch (magic 2) of a fetch response, in the shape kafkajs 2.2.4's batch decoder
 * (src/protocol/recordBatch/v0/decoder.js) gives it, read with the gateway's codec
 * (src/codecs/record-batch.ts, the kafka listener's). kafkajs trusted the batch's counts: a record
 * count above the records the batch holds, or a record length past its end, read past the end and
 * threw RangeError, failing the whole fetch (the consumer crashed and fetched it again, for ever);
 * an offset delta was taken as read, putting a record (and its commit) at a wrong offset. Here the
 * records must fill the section exactly as the count says, and their offset deltas rise and stay
 * within the batch's `lastOffsetDelta`, as Kafka's own consumer checks them, and its bytes match its
 * CRC-32C (unless the consumer's `checkCrcs` is false); a batch that fails,
 * or that no codec can decompress (UndecodableBatch from codecs.ts), is handed over as stand-ins
 * (./stand-ins.ts), the rest of the fetch going on. Each record is read by decodeRecord above,
 * which stands in a record it cannot read on its own.
 */
export async function decodeBatch(fetchReader: FetchReader) {
  const { buffer, offset: from } = fetchReader;
  if (buffer.length - from < LOG_OVERHEAD) throw new KafkaJSPartialMessageError(`Tried to decode a partial record batch: ${buffer.length - from} bytes left`);
  const length = buffer.readInt32BE(from + 8);
  // Nothing after it can be found; a partial tail would end the fetch quietly, and the next fetch at it again.
  if (length < 0) throw new ProtocolError(`a record batch claims a length of ${length}; the fetch cannot be read past it`);
  if (buffer.length - from - LOG_OVERHEAD < length) {
    throw new KafkaJSPartialMessageError(`Tried to decode a partial record batch: remainingBytes(${buffer.length - from - LOG_OVERHEAD}) < recordBatchLength(${length})`);
  }
  fetchReader.forward(LOG_OVERHEAD + length);
  const bytes = buffer.subarray(from, from + LOG_OVERHEAD + length);
  // Shorter than a batch's header: nothing after it can be found (kafkajs read past it and threw).
  if (bytes.length < BATCH_HEADER_BYTES) throw new ProtocolError(`a record batch of ${length} bytes is shorter than its header; the fetch cannot be read past it`);
  const header = readBatchHeader(bytes);
  // kafkajs' fetch decoder looks at the first batch's magic only; an older message after it cannot be read as a batch.
  if (header.magic !== 2) throw new ProtocolError(`a message of format v${header.magic} follows record batches in one fetch; it is not read as one`);
  const { attributes, lastOffsetDelta, recordCount } = header;
  const context = {
    firstOffset: String(header.baseOffset),
    firstTimestamp: String(header.baseTimestamp),
    partitionLeaderEpoch: header.partitionLeaderEpoch,
    inTransaction: (attributes & TRANSACTIONAL) !== 0,
    isControlBatch: controlBatch(attributes),
    lastOffsetDelta,
    producerId: String(header.producerId),
    producerEpoch: header.producerEpoch,
    firstSequence: header.baseSequence,
    maxTimestamp: String(header.maxTimestamp),
    timestampType: (attributes & TIMESTAMP_TYPE) !== 0 ? LOG_APPEND_TIME : 0,
  };
  const recordContext = { ...context, magicByte: header.magic };
  let section = bytes.subarray(BATCH_HEADER_BYTES);
  try {
    // As Java's consumer does by default (`check.crcs`); kafkajs never checked it.
    if (checksCrcs()) verifyCrc({ bytes, crc: header.crc });
    if (compressionOf(attributes) !== 0) {
      // kafkajs read a compressed batch claiming no records as none, without decompressing it.
      if (recordCount === 0) return { ...context, records: [] };
      const codec = lookupCodecByAttributes(attributes);
      if (codec === null) throw new UndecodableBatch(`the batch names codec id ${compressionOf(attributes)}, which this consumer does not know`);
      section = await codec.decompress(section);
    }
    const cursor = new RecordCursor(section, recordCount);
    const records: ReturnType<typeof decodeRecord>[] = [];
    let before = -1;
    while (cursor.nextFrame()) {
      const delta = cursor.offsetDelta;
      if (delta > lastOffsetDelta) throw new ProtocolError(`record ${cursor.index}'s offset delta ${delta} is past the batch's last, ${lastOffsetDelta}`);
      if (delta <= before) throw new ProtocolError(`record ${cursor.index}'s offset delta ${delta} does not follow the record before it (${before})`);
      before = delta;
      records.push(decodeRecord(new Decoder(section.subarray(cursor.recordStart, cursor.recordEnd)), recordContext));
    }
    return { ...context, records };
  } catch (err) {
    if (!(err instanceof UndecodableBatch) && !(err instanceof ProtocolError)) throw err;
    return { ...context, records: batchStandIns(bytes, recordContext, err.message, lastDeltaBound(buffer, from + bytes.length, header.baseOffset)) };
  }
}

/**
 * A batch's stand-ins: one at its first offset carrying the batch as the cluster sent it (a copy:
 * a dead-letter write may outlive the fetch), and one at its last offset, so that committing it
 * moves past the whole batch. Not one per record the batch claims: the count may be what is wrong.
 */
function batchStandIns(bytes: Buffer, context: RecordBatchContext & { lastOffsetDelta: number }, reason: string, bound: number | undefined) {
  // The header's last offset delta is one of the fields that failed (a damaged one committed far
  // past the batch, or, negative, short of it): the next batch of the fetch says where this one ends.
  const lastOffsetDelta = bound !== undefined && (context.lastOffsetDelta < 0 || context.lastOffsetDelta > bound) ? bound : context.lastOffsetDelta;
  const headers = batchStandInHeaders(reason, Long.fromValue(context.firstOffset).add(Math.max(lastOffsetDelta, 0)).toString());
  const timestamp = context.timestampType === LOG_APPEND_TIME ? context.maxTimestamp : context.firstTimestamp;
  const at = (delta: number, value: Buffer | null) => ({
    magicByte: context.magicByte,
    attributes: 0,
    timestamp,
    offset: Long.fromValue(context.firstOffset).add(delta).toString(),
    key: null,
    value,
    headers,
    // Seen by the consumer whatever the batch was (kafkajs' Batch drops control records).
    isControlRecord: false,
    batchContext: context,
  });
  const standIns = [at(0, Buffer.from(bytes))];
  if (lastOffsetDelta > 0) standIns.push(at(lastOffsetDelta, null));
  return standIns;
}

/**
 * The most a batch ending at `end` of the fetch's records can span past its first offset: up to one
 * before the base offset of the batch after it (whole or a cut tail: 8 bytes tell it), or
 * undefined when it is the fetch's last or that offset is not after its own.
 */
function lastDeltaBound(records: Buffer, end: number, baseOffset: bigint): number | undefined {
  if (records.length - end < 8) return undefined;
  const room = records.readBigInt64BE(end) - baseOffset - 1n;
  if (room < 0n) return undefined;
  return room > 0x7fffffffn ? 0x7fffffff : Number(room);
}

const FILTER_ABORTED = 'kafkajs/src/consumer/filterAbortedMessages';

/** A fetched record as kafkajs' Batch filters it (src/consumer/batch.js): its offset, key, and its batch's producer and flags. */
interface FetchedRecord {
  offset: string;
  key: Buffer | null;
  isControlRecord: boolean;
  batchContext: { producerId: string; inTransaction: boolean };
}

/** A transaction of the fetched range that its producer aborted, as a Fetch response lists it. */
interface AbortedTransaction {
  producerId: string;
  firstOffset: string;
}

/** A control record's type, the int16 after its key's version: 0 is ABORT (1 is COMMIT). */
const ABORT = 0;

/**
 * The fetched records a read_committed consumer may see, as Kafka's own consumer chooses them
 * (its Fetcher: aborted transactions by first offset, every one begun at or before a record's
 * offset counting for it; a producer's records in a transaction skipped until its ABORT marker).
 * kafkajs 2.2.4 took one aborted transaction per record, in the order the broker lists them (that
 * of their markers), so a transaction begun before another but aborted after it, or two begun
 * before the fetch's first record, had their records delivered; and it took any record whose key
 * is the four bytes 0 (an integer key 0, as Java's IntegerSerializer writes it) for an ABORT
 * marker, which delivered that record and the rest of its aborted transaction. Control records stay in
 * (kafkajs' Batch drops them next and reads its last offset from them).
 */
export function filterAbortedMessages<M extends FetchedRecord>({ messages, abortedTransactions }: { messages: M[]; abortedTransactions?: AbortedTransaction[] | null }): M[] {
  if (!abortedTransactions || abortedTransactions.length === 0) return messages;
  const pending = [...abortedTransactions].sort((a, b) => (BigInt(a.firstOffset) < BigInt(b.firstOffset) ? -1 : BigInt(a.firstOffset) > BigInt(b.firstOffset) ? 1 : 0));
  let next = 0;
  const aborting = new Set<string>();
  return messages.filter((message) => {
    const offset = BigInt(message.offset);
    while (next < pending.length && BigInt(pending[next]!.firstOffset) <= offset) aborting.add(pending[next++]!.producerId);
    const { producerId, inTransaction } = message.batchContext;
    if (message.isControlRecord) {
      if (message.key !== null && message.key.length >= 4 && message.key.readInt16BE(2) === ABORT) aborting.delete(producerId);
      return true;
    }
    return !(inTransaction && aborting.has(producerId));
  });
}

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

/** What of kafkajs' consumer runner the fix below reads and calls (2.2.4, pinned: src/consumer/runner.js). */
interface Runner {
  running: boolean;
  fetchManager: { stop(): Promise<void> };
  fetch(nodeId: number): Promise<unknown[]>;
}

/**
 * kafkajs 2.2.4's `Runner.fetch` without its endless loop at a stop. A fetcher whose broker went
 * away (or left the cluster's metadata) ends the fetch manager's round with a rebalance of its
 * fetchers: it stops the others, waiting for their requests in flight, and starts new ones. A
 * consumer stopped meanwhile (`disconnect()`, a gateway's shutdown or reload) found the old
 * fetchers already stopping and went on to wait for the round to end; the new fetchers then
 * called `fetch`, which answers an empty list at once while the runner is not running, in a loop
 * of promises that never let the event loop turn: a core at 100 % and a process that never
 * stopped (its stop timeouts are timers). Here such a call stops the fetchers it came from, as
 * the runner's own stop does, so the round ends and the stop completes.
 */
function stoppingFetchers(fetch: Runner['fetch']): Runner['fetch'] {
  return function (this: Runner, nodeId: number) {
    if (!this.running) void this.fetchManager.stop();
    return fetch.call(this, nodeId);
  };
}

/** What of kafkajs' consumer group the fix below reads and calls (2.2.4, pinned: src/consumer/consumerGroup.js). */
interface ConsumerGroup {
  groupId: string;
  memberId: string;
  cluster: {
    refreshMetadata(): Promise<void>;
    fetchTopicsOffset(topics: { topic: string; fromBeginning: boolean; partitions: { partition: number }[] }[]): Promise<{ partitions: { offset: string }[] }[]>;
  };
  offsetManager: { nextOffset(topic: string, partition: number): { toString(): string } };
  preferredReadReplicasPerTopicPartition: Record<string, Record<number, number> | undefined>;
  topicConfigurations: Record<string, { fromBeginning?: boolean } | undefined>;
  recoverFromFetch(e: unknown): Promise<void>;
  recoverFromOffsetOutOfRange(e: { topic: string; partition: number }): Promise<void>;
}

/**
 * A fetch answered UNKNOWN_TOPIC_OR_PARTITION: the topic may have been deleted. kafkajs 2.2.4
 * refreshes its metadata and rejoins the group at each such answer, whatever the metadata says, so
 * a deleted topic kept the member rejoining (3 s each on the mock), the group rebalancing with it,
 * /readyz ready and the log full of kafkajs' "re-joining" (spec-checklist 1504, 1540). Here the
 * metadata is asked first: when it does not have the topic either, the consumer crashes with that
 * answer, not retried, and the subscription waits for the topic as for one missing at its start
 * (./subscription.ts). When the topic is there (a partition that moved), kafkajs goes on as before.
 */
export class TopicGone extends Error {
  static readonly said = 'a fetch and the metadata answered that the topic does not exist';
  readonly retriable = false;
  constructor(override readonly cause: Error) {
    super(`${TopicGone.said}: ${cause.message}`);
    this.name = 'TopicGone';
  }
}

function topicGoneOnFetch(recover: ConsumerGroup['recoverFromFetch']): ConsumerGroup['recoverFromFetch'] {
  return async function (this: ConsumerGroup, e: unknown) {
    if ((e as { type?: unknown }).type === 'UNKNOWN_TOPIC_OR_PARTITION') {
      try {
        await this.cluster.refreshMetadata();
      } catch (err) {
        if (unknownTopic(err)) throw new TopicGone(err as Error);
        throw err;
      }
    }
    return recover.call(this, e);
  };
}

/** A partition whose group offset the cluster answered OFFSET_OUT_OF_RANGE, moved to its start position by kafkajs. */
export interface OffsetReset {
  groupId: string;
  memberId: string;
  topic: string;
  partition: number;
  /** Where the member was to read next: the group's commit, or past the last record it read (undefined: not known). */
  from: string | undefined;
  /** The partition's first and next offsets, asked after the move (undefined when that failed). */
  earliest: string | undefined;
  latest: string | undefined;
  /** Where kafkajs moved it: the earliest offset (startFrom: earliest) or the latest. */
  fromBeginning: boolean;
}

const offsetResetListeners = new Set<(reset: OffsetReset) => void>();

/** Calls `listener` for each offset reset of any consumer in the process; returns its removal. */
export function onOffsetReset(listener: (reset: OffsetReset) => void): () => void {
  offsetResetListeners.add(listener);
  return () => offsetResetListeners.delete(listener);
}

/**
 * kafkajs 2.2.4 answers a fetch out of range (the group's offset expired by retention, or past
 * the end of a recreated topic or one reset by hand) by moving the partition to its start position
 * and logging only `Offset out of range, resetting to default offset`: not from where, to where, nor
 * that records were removed before the route read them. Here the move is the same; then the
 * partition's offsets are asked and the routes are told (./subscription.ts logs and counts it).
 */
function offsetResetTold(recover: ConsumerGroup['recoverFromOffsetOutOfRange']): ConsumerGroup['recoverFromOffsetOutOfRange'] {
  return async function (this: ConsumerGroup, e) {
    // Fetching from a follower, kafkajs only tries the leader again: nothing moves.
    const fromFollower = typeof this.preferredReadReplicasPerTopicPartition[e.topic]?.[e.partition] === 'number';
    let from: string | undefined;
    try {
      from = this.offsetManager.nextOffset(e.topic, e.partition).toString();
    } catch {
      // Not known: the move is made all the same, and told without it.
    }
    await recover.call(this, e);
    if (fromFollower || offsetResetListeners.size === 0) return;
    const { topic, partition } = e;
    const ask = (fromBeginning: boolean) =>
      this.cluster.fetchTopicsOffset([{ topic, fromBeginning, partitions: [{ partition }] }]).then(
        (answer) => answer[0]?.partitions[0]?.offset,
        () => undefined,
      );
    const [earliest, latest] = await Promise.all([ask(true), ask(false)]);
    const fromBeginning = this.topicConfigurations[topic]?.fromBeginning === true;
    for (const listener of offsetResetListeners) listener({ groupId: this.groupId, memberId: this.memberId, topic, partition, from, earliest, latest, fromBeginning });
  };
}

/** What of kafkajs' offset manager the fix below reads and sets (2.2.4, pinned: src/consumer/offsetManager/index.js). */
interface OffsetManager {
  groupId: string;
  coordinator: unknown;
  cluster: CoordinatorCluster;
  commitOffsets(offsets?: unknown): Promise<void>;
}

/** What of kafkajs' Cluster a single coordinator look-up uses (2.2.4, pinned: src/cluster/index.js, brokerPool.js). */
interface CoordinatorCluster {
  brokerPool: {
    /**
     * Connects to each known broker in a random order and calls `callback` with it until one
     * answers; null when none did. It throws at the first broker it cannot connect to (its
     * findBroker is outside its try): one refusal or connectionTimeout, not one per broker.
     */
    withBroker(callback: (args: { broker: CoordinatorAsker }) => Promise<FoundCoordinator>): Promise<FoundCoordinator | null>;
  };
  findBroker(args: { nodeId: number }): Promise<unknown>;
}

interface FoundCoordinator {
  coordinator: { nodeId: number };
}
interface CoordinatorAsker {
  /** One FindCoordinator request, not retried; throws the broker's error answer. */
  findGroupCoordinator(args: { groupId: string; coordinatorType: number }): Promise<FoundCoordinator>;
}

/** Kafka's FindCoordinator key type of a consumer group. */
const GROUP_COORDINATOR = 0;

/**
 * The group's coordinator, asked once (one FindCoordinator to each known broker until one answers,
 * stopping at the first broker that cannot be reached: withBroker above), or undefined when none
 * could say; the caller then throws the NOT_COORDINATOR answer, as kafkajs alone did. kafkajs'
 * `cluster.findGroupCoordinator` retries with the consumer's retry (10 tries, nested in another
 * 10), which inside a batch holds its heartbeats back for as long as the coordinator is not
 * available (spec-checklist 2669).
 */
async function coordinatorAskedOnce(cluster: CoordinatorCluster, groupId: string): Promise<unknown> {
  try {
    const found = await cluster.brokerPool.withBroker(({ broker }) => broker.findGroupCoordinator({ groupId, coordinatorType: GROUP_COORDINATOR }));
    return found === null ? undefined : await cluster.findBroker({ nodeId: found.coordinator.nodeId });
  } catch {
    return undefined;
  }
}

/** Tries of one commit the broker answers NOT_COORDINATOR (16): the group's coordinator is looked up again before each next one. */
const COMMIT_COORDINATOR_TRIES = 3;
const COMMIT_COORDINATOR_WAIT_MS = 200;

/**
 * kafkajs 2.2.4's commit that finds its group's coordinator again when the broker it asked answers
 * NOT_COORDINATOR (the coordinator moved: a broker restarted, the offsets topic's leader moved).
 * kafkajs only refreshed its metadata and threw, which it reads as a rebalance: the member joined
 * its group again and every record handled since the last commit was delivered again (a second's
 * worth per route at each coordinator move, spec-checklist 2460). Kafka's own clients look the
 * coordinator up and send the commit again, keeping the membership; so does this, a few times,
 * asking for the coordinator once before each. Any other failure, the last try's, or a look-up that
 * found no coordinator throws the NOT_COORDINATOR answer as before, which kafkajs rejoins on.
 */
function commitToMovedCoordinator(commit: OffsetManager['commitOffsets']): OffsetManager['commitOffsets'] {
  return async function (this: OffsetManager, offsets) {
    for (let tries = 1; ; tries++) {
      try {
        return await commit.call(this, offsets);
      } catch (e) {
        if ((e as { type?: unknown }).type !== 'NOT_COORDINATOR_FOR_GROUP' || tries >= COMMIT_COORDINATOR_TRIES) throw e;
        await sleep(COMMIT_COORDINATOR_WAIT_MS * tries);
        const coordinator = await coordinatorAskedOnce(this.cluster, this.groupId);
        if (coordinator === undefined) throw e;
        this.coordinator = coordinator;
      }
    }
  };
}

/** What of kafkajs' consumer group the fix below reads and sets (2.2.4, pinned: src/consumer/consumerGroup.js). */
interface HeartbeatingGroup {
  groupId: string;
  coordinator: unknown;
  cluster: CoordinatorCluster;
  /** Undefined until the member's first sync. */
  offsetManager: { coordinator: unknown } | undefined;
  heartbeat(args: { interval: number }): Promise<void>;
}

/**
 * kafkajs 2.2.4's heartbeat that finds its group's coordinator again when the broker it asked
 * answers NOT_COORDINATOR, as the commit above does. kafkajs read that answer as a rebalance: the
 * member committed and joined its group again, and a group's leader joining again rebalances the
 * whole group on a real cluster (spec-checklist 2471). Kafka's own clients look the coordinator up
 * and go on. Here it is asked once and the heartbeat sent again; a look-up that found none, or any
 * other failure, throws as before (kafkajs rejoins).
 */
function heartbeatToMovedCoordinator(heartbeat: HeartbeatingGroup['heartbeat']): HeartbeatingGroup['heartbeat'] {
  return async function (this: HeartbeatingGroup, args) {
    try {
      return await heartbeat.call(this, args);
    } catch (e) {
      if ((e as { type?: unknown }).type !== 'NOT_COORDINATOR_FOR_GROUP') throw e;
      const coordinator = await coordinatorAskedOnce(this.cluster, this.groupId);
      if (coordinator === undefined) throw e;
      this.coordinator = coordinator;
      if (this.offsetManager) this.offsetManager.coordinator = coordinator;
      return await heartbeat.call(this, args);
    }
  };
}

/** What kafkajs' clusters build their connections to a broker with (2.2.4, pinned: src/cluster/connectionPoolBuilder.js). */
type PoolBuilder = (options: { brokers: unknown } & Record<string, unknown>) => {
  build(destination?: { host?: string; port?: number; rack?: string }): Promise<unknown>;
};

/**
 * kafkajs 2.2.4's connection builder with bootstrap servers read as Kafka's clients read them. It
 * took a bootstrap server's host and port as `entry.split(':')[0]` and `[1]`, so an IPv6 literal
 * (`[::1]:9092`, the only way to write one with a port) was dialled as the host `[`
 * (`getaddrinfo ENOTFOUND [`) and the cluster was never reached. Here the seed broker (the one
 * asked for no host: brokers found in the cluster's metadata come with theirs) is picked in turn
 * from the list, as kafkajs does, and read by hostAndPort.
 */
function seedBrokersReadWhole(builder: PoolBuilder): PoolBuilder {
  return (options) => {
    const inner = builder(options);
    const list = options.brokers;
    let index = 0;
    return {
      build(destination = {}) {
        // A list given as a function, or none, goes to kafkajs' own checks and reading.
        if (destination.host || !Array.isArray(list) || list.length === 0 || typeof list[0] !== 'string') return inner.build(destination);
        return inner.build({ ...destination, ...hostAndPort(list[index++ % list.length] as string) });
      },
    };
  };
}

/** kafkajs' own filter of aborted transactions' records, which the gateway's replaces (kept for the test that compares the two). */
export let kafkajsAbortedFilter: typeof filterAbortedMessages | undefined;
/** kafkajs' own record decoder, which the gateway's replaces (kept for the test that compares the two). */
export let kafkajsRecordDecoder: typeof decodeRecord | undefined;
/** kafkajs' own batch decoder, which the gateway's replaces (kept for the test that compares the two). */
export let kafkajsBatchDecoder: typeof decodeBatch | undefined;
/** kafkajs' own grouping, which the gateway's replaces (kept for the test that compares the two). */
export let kafkajsGrouping: Grouping | undefined;
/** False when kafkajs' producer had been loaded before this module, with its own grouping. */
export let groupingReplaced = false;

/**
 * kafkajs as every module of the gateway loads it: its connections take the timer fix above and
 * their bootstrap servers' reading, its consumers the fix of their stop, of a deleted topic and of a moved coordinator's commit and heartbeat and the word of an offset reset, its batches' decoding the gateway's codec, its records' the linear one and their filter of aborted transactions Kafka's, and its producer the grouping, which must be in the module cache before kafkajs' producer module
 * reads it (once, as it loads). So
 * kafkajs is loaded here and only here; elsewhere only its types are imported.
 */
function load(): typeof KafkaJS {
  // Read by kafkajs' Batch and record batch decoder as they load, which its consumer modules below load.
  const aborted = require.resolve(FILTER_ABORTED);
  kafkajsAbortedFilter = require(aborted) as typeof filterAbortedMessages;
  require.cache[aborted]!.exports = filterAbortedMessages;
  const records = require.resolve(RECORD_DECODER);
  kafkajsRecordDecoder = require(records) as typeof decodeRecord;
  require.cache[records]!.exports = decodeRecord;
  // Read by kafkajs' fetch response decoder (src/protocol/requests/fetch/v4/decodeMessages.js) as it loads.
  const batches = require.resolve(BATCH_DECODER);
  kafkajsBatchDecoder = require(batches) as typeof decodeBatch;
  require.cache[batches]!.exports = decodeBatch;
  const path = require.resolve(GROUPING);
  groupingReplaced = require.cache[require.resolve('kafkajs/src/producer/sendMessages')] === undefined;
  kafkajsGrouping = require(path) as Grouping;
  require.cache[path]!.exports = groupMessagesPerPartition;
  (require(REQUEST_QUEUE) as { prototype: RequestQueue }).prototype.scheduleCheckPendingRequests = scheduleCheckPendingRequests;
  const runner = (require(RUNNER) as { prototype: Runner }).prototype;
  runner.fetch = stoppingFetchers(runner.fetch);
  const group = (require(CONSUMER_GROUP) as { prototype: ConsumerGroup }).prototype;
  group.recoverFromFetch = topicGoneOnFetch(group.recoverFromFetch);
  group.recoverFromOffsetOutOfRange = offsetResetTold(group.recoverFromOffsetOutOfRange);
  const offsets = (require(OFFSET_MANAGER) as { prototype: OffsetManager }).prototype;
  offsets.commitOffsets = commitToMovedCoordinator(offsets.commitOffsets);
  const heartbeating = (require(CONSUMER_GROUP) as { prototype: HeartbeatingGroup }).prototype;
  heartbeating.heartbeat = heartbeatToMovedCoordinator(heartbeating.heartbeat);
  // Read by kafkajs' cluster module as it loads, like the grouping.
  const pool = require.resolve(POOL_BUILDER);
  const builder = require(pool) as PoolBuilder;
  require.cache[pool]!.exports = seedBrokersReadWhole(builder);
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

/** kafkajs' private factory of Clusters on a client (2.2.4, pinned: src/index.js), which every producer, consumer and admin is built with. */
type CreateCluster = (options: { metadataMaxAge?: number; allowAutoTopicCreation?: boolean; isolationLevel?: number }) => unknown;

function createClusterKey(client: KafkaJS.Kafka): symbol {
  const key = Object.getOwnPropertySymbols(client).find((s) => s.description === 'private:Kafka:createCluster');
  if (key === undefined) throw new Error('kafkajs: no private:Kafka:createCluster on the client (the gateway needs kafkajs 2.2.4)');
  return key;
}

/**
 * A kafkajs producer and the Cluster it sends through, which kafkajs keeps private: `client.producer`
 * builds it with the client's own `createCluster` (a property under a private symbol), wrapped
 * here for that one call.
 */
export function producerWithCluster(client: KafkaJS.Kafka, config: KafkaJS.ProducerConfig): { producer: KafkaJS.Producer; cluster: ProducerCluster } {
  const owner = client as unknown as Record<symbol, CreateCluster>;
  const key = createClusterKey(client);
  const createCluster = owner[key]!;
  let cluster: ProducerCluster | undefined;
  owner[key] = (options) => (cluster = createCluster(options) as ProducerCluster);
  try {
    const producer = client.producer(config);
    return { producer, cluster: cluster! };
  } finally {
    owner[key] = createCluster;
  }
}

/** Kafka's isolation level of the gateway's consumers (kafkajs' default): records of open or aborted transactions are not read. */
export const READ_COMMITTED = 1;

/** One partition of a Fetch response, as kafkajs decodes it (records, aborted transactions, high watermark). */
export interface FetchedPartition {
  partition: number;
}

/** What of kafkajs' Broker (src/broker/index.js) reading a partition without a consumer group uses. */
export interface ClusterBroker {
  /** One Fetch request; throws (KafkaJSOffsetOutOfRange, NOT_LEADER_FOR_PARTITION, ...) when any partition of it failed. */
  fetch(request: {
    isolationLevel: number;
    maxWaitTime: number;
    minBytes: number;
    maxBytes: number;
    topics: { topic: string; partitions: { partition: number; fetchOffset: string; maxBytes: number }[] }[];
  }): Promise<{ responses: { topicName: string; partitions: FetchedPartition[] }[] }>;
}

/** What of a kafkajs Cluster (src/cluster/index.js) reading a partition without a consumer group uses. */
export interface ReadingCluster {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  /** Adds the topic to those the cluster keeps metadata for, fetching it when it is new. */
  addTargetTopic(topic: string): Promise<void>;
  refreshMetadata(): Promise<void>;
  refreshMetadataIfNecessary(): Promise<void>;
  findTopicPartitionMetadata(topic: string): KafkaJS.PartitionMetadata[];
  /** The broker of that node id, connected (TLS and SASL as the client's config says). */
  findBroker(args: { nodeId: number }): Promise<ClusterBroker>;
  /** ListOffsets to each partition's leader, at the cluster's isolation level: the earliest (fromBeginning) or latest offsets. */
  fetchTopicsOffset(topics: { topic: string; fromBeginning: boolean; partitions: { partition: number }[] }[]): Promise<{ topic: string; partitions: { partition: number; offset: string }[] }[]>;
}

/** A kafkajs Cluster of `client`'s own, for requests no public kafkajs API makes without a consumer group. */
export function readingCluster(client: KafkaJS.Kafka): ReadingCluster {
  const createCluster = (client as unknown as Record<symbol, CreateCluster>)[createClusterKey(client)]!;
  // Reading never creates a topic, and reads what the routes' consumers read: committed records
  // only. Metadata is fetched again after 5 minutes (kafkajs' consumers' default), or when a
  // request finds a leader moved; without an age kafkajs would fetch it before every read.
  return createCluster.call(client, { metadataMaxAge: 300_000, allowAutoTopicCreation: false, isolationLevel: READ_COMMITTED }) as ReadingCluster;
}

/** kafkajs' records of one partition of one fetch, as its consumer sees them (src/consumer/batch.js). */
export interface FetchedBatch {
  /** The records a consumer is handed: at or after the fetch offset, without control records and aborted transactions' records. */
  messages: KafkaJS.KafkaMessage[];
  /** No record at or after the fetch offset, handed over or not. */
  isEmptyIncludingFiltered(): boolean;
  /** Records were fetched, all before the fetch offset: the tail of a batch that compaction thinned. */
  isEmptyDueToLogCompactedMessages(): boolean;
  /** The last offset fetched, records not handed over included (a transaction's marker, aborted records). */
  lastOffset(): string;
}

/** kafkajs' own Batch, which filters a fetched partition's records as its consumer does. */
export const Batch = require('kafkajs/src/consumer/batch') as new (topic: string, fetchedOffset: string, partition: FetchedPartition) => FetchedBatch;
