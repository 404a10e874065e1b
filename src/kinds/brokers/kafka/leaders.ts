import type { PartitionMetadata } from 'kafkajs';

/**
 * One produce request per leader. kafkajs' `sendBatch` sends one Produce request per broker and
 * fails as a whole when one of them fails, though the others' records were written; and when it
 * retries after a leader change it groups the records anew but skips every broker that answered
 * before, so a record whose partition moved to such a broker is never sent, yet reported sent. So
 * the producer sends each flush as one `sendBatch` per leader, and the partitioner (which kafkajs
 * calls for every record of every attempt) checks that the attempt still goes to that one leader:
 * when it would not, `LeaderMoved` stops the attempt before any request leaves, and the records are
 * grouped again by their new leaders.
 */

/** The leader a send's records must go to, for the partitioner to check: undefined until its first record is placed (a topic whose metadata was not known). */
export interface LeaderGroup {
  leader: number | undefined;
}

/** The leader, per partition id, of a topic's partitions as kafkajs last fetched them; -1 for a partition without one. */
const cache = new WeakMap<PartitionMetadata[], Int32Array>();

export function leaderOf(partitions: PartitionMetadata[], partition: number): number {
  let leaders = cache.get(partitions);
  if (leaders === undefined) {
    let size = 0;
    for (const p of partitions) size = Math.max(size, p.partitionId + 1);
    leaders = new Int32Array(size).fill(-1);
    for (const p of partitions) if (p.leader !== null && p.leader !== undefined) leaders[p.partitionId] = p.leader;
    cache.set(partitions, leaders);
  }
  return partition < leaders.length ? leaders[partition]! : -1;
}

/**
 * Thrown by the partitioner when an attempt would send a record to another broker than its send's
 * leader: not retriable, so kafkajs gives up the attempt, in which no request has left yet.
 */
export class LeaderMoved extends Error {
  readonly retriable = false;
  constructor(topic: string, partition: number, from: number | undefined, to: number) {
    super(`the leader of ${topic}/${partition} is now broker ${to}, not ${from}: the records are grouped again by leader`);
    this.name = 'LeaderMoved';
  }
}

/** Whether `err` (or what it wraps) says a produce attempt was stopped for a leader change. */
export function leaderMoved(err: unknown): boolean {
  return errorChain(err).some((e) => e instanceof LeaderMoved);
}

/**
 * A topic the cluster does not have and will not create: its Metadata answer, to a request that
 * allows creating it, is UNKNOWN_TOPIC_OR_PARTITION (auto.create.topics.enable=false). Its records
 * are answered at once (503, a retry may find it created) rather than after kafkajs' retries.
 */
export class TopicMissing extends Error {
  constructor(readonly topic: string) {
    super(`topic '${topic}' does not exist on the Kafka cluster (which does not create topics on first use: create it, or set the cluster's auto.create.topics.enable)`);
    this.name = 'TopicMissing';
  }
}

/** Whether a Metadata request failed because a topic does not exist. */
export function unknownTopic(err: unknown): boolean {
  return errorChain(err).some((e) => (e as { type?: unknown }).type === 'UNKNOWN_TOPIC_OR_PARTITION');
}

/**
 * The Kafka error code a cluster answered, as `INVALID_REQUEST (42)`, when `err` (or one it wraps)
 * is one: kafkajs' words for a code can fit several causes, and its name and number are what
 * the cluster's logs and docs use.
 */
export function kafkaErrorCode(err: unknown): string | undefined {
  const e = errorChain(err).find((x) => typeof (x as { type?: unknown }).type === 'string' && typeof (x as { code?: unknown }).code === 'number');
  return e && `${(e as unknown as { type: string }).type} (${(e as unknown as { code: number }).code})`;
}

/** `err` and the errors it wraps (kafkajs' `cause` and `originalError`), a few deep. */
export function errorChain(err: unknown): Error[] {
  const chain: Error[] = [];
  for (let e: unknown = err; e instanceof Error && chain.length < 4; ) {
    chain.push(e);
    e = (e as { cause?: unknown }).cause ?? (e as { originalError?: unknown }).originalError;
  }
  return chain;
}
