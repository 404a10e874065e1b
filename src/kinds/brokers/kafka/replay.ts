import { randomUUID } from 'node:crypto';
import type kafkajs from 'kafkajs';
import type { Logger } from '../../../log.js';
import type { Message } from '../../../core/message.js';
import type { Retained } from '../../contracts.js';
import type { KafkaSettings } from '../kafka.js';
import { newFetchBudget, undecodable, withBatchBound } from './codecs.js';
import { toMessage } from './subscription.js';

type Kafka = InstanceType<typeof kafkajs.Kafka>;

/** At most this many records are read back per call; older ones count as no longer retained. */
export const MAX_REPLAY_RECORDS = 10_000;
const AHEAD = 'Last-Event-ID is past the end of the topic (it was created again since); resuming from the oldest retained event';
const NO_LONGER_RETAINED = `some events after Last-Event-ID are no longer retained by the Kafka cluster (or are more than ${MAX_REPLAY_RECORDS} records back); resuming from the oldest retained event`;
/** A replay that has not reached the end offsets by then gives up (the client streams from now). */
const REPLAY_TIMEOUT_MS = 30_000;

/**
 * Reads `topic` again after the given offsets, up to the end offsets it has now: what an
 * event-stream client missed while it was disconnected. A throwaway consumer (its own group id,
 * nothing committed) seeks each partition and reads until its end offset. Partitions not named
 * in `after` are read from their oldest retained record. Batches decompress within the broker's
 * `consumer.maxBatchBytes`, as the routes' own consumers do; records of a batch that cannot be
 * decoded are left out and named in `gap` (the live route dead-letters or stops on them).
 */
export function readRetained(client: Kafka, settings: KafkaSettings, topic: string, after: ReadonlyMap<number, bigint>, log: Logger): Promise<Retained> {
  return withBatchBound(settings.consumer.maxBatchBytes, () => read(client, settings, topic, after, log));
}

async function read(client: Kafka, settings: KafkaSettings, topic: string, after: ReadonlyMap<number, bigint>, log: Logger): Promise<Retained> {
  const admin = client.admin();
  await admin.connect();
  let ends: { partition: number; high: bigint; low: bigint }[];
  try {
    ends = (await admin.fetchTopicOffsets(topic)).map((p) => ({ partition: p.partition, high: BigInt(p.high), low: BigInt(p.low) }));
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
  let truncated = false;
  let ahead = false;
  const budget = BigInt(Math.max(1, Math.floor(MAX_REPLAY_RECORDS / Math.max(1, ends.length))));
  const wanted = new Map<number, { from: bigint; end: bigint }>();
  for (const { partition, high, low } of ends) {
    const seen = after.get(partition);
    let from = seen === undefined ? low : seen + 1n;
    // Past the partition's end: the topic was deleted and created again since that id was given.
    // Reading after it would skip every record it has now without a word; resume from the oldest.
    if (from > high) {
      ahead = true;
      from = low;
    }
    if (from < low) {
      truncated = true;
      from = low;
    }
    if (high - from > budget) {
      truncated = true;
      from = high - budget;
    }
    if (from < high) wanted.set(partition, { from, end: high });
  }
  if (wanted.size === 0) return { messages: [], gap: [ahead ? AHEAD : '', truncated ? NO_LONGER_RETAINED : ''].filter(Boolean).join('; ') || undefined };

  const c = settings.consumer;
  const consumer = client.consumer({
    groupId: `eventgate-replay-${randomUUID()}`,
    sessionTimeout: c.sessionTimeoutMs,
    heartbeatInterval: c.heartbeatIntervalMs,
    rebalanceTimeout: c.rebalanceTimeoutMs,
    maxWaitTimeInMs: c.maxWaitMs,
  });
  consumer.on(consumer.events.FETCH_START, newFetchBudget);
  const messages: Message[] = [];
  const undecoded: string[] = [];
  /** Partitions whose last record read was a stand-in for an undecodable batch (one note per run of them). */
  const inUndecodable = new Set<number>();
  const pending = new Set(wanted.keys());
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`replay of ${topic} did not reach the end offsets within ${REPLAY_TIMEOUT_MS} ms`)), REPLAY_TIMEOUT_MS);
      /** A partition read up to `offset`: done once that is its end offset's predecessor. */
      const reached = (partition: number, offset: bigint) => {
        const w = wanted.get(partition);
        if (w && offset + 1n >= w.end) pending.delete(partition);
        if (pending.size === 0) {
          clearTimeout(timer);
          resolve();
        }
      };
      // Records kafkajs reads but never hands over still take offsets: a transaction's marker (the
      // last offset of a partition a transactional producer wrote), aborted records. A batch's last
      // offset counts as read once every record of it that was handed over was (none, for a batch of
      // markers only), or the replay would wait for the marker to its timeout and give up.
      const handed = new Map<number, number>();
      consumer.on(consumer.events.START_BATCH_PROCESS, ({ payload }) => handed.set(payload.partition, 0));
      consumer.on(consumer.events.END_BATCH_PROCESS, ({ payload }) => {
        if (handed.get(payload.partition) === payload.batchSize && pending.has(payload.partition)) reached(payload.partition, BigInt(payload.lastOffset));
      });
      consumer
        .run({
          autoCommit: false,
          eachMessage: async ({ partition, message }) => {
            handed.set(partition, (handed.get(partition) ?? 0) + 1);
            const w = wanted.get(partition);
            if (!w || !pending.has(partition)) return;
            const offset = BigInt(message.offset);
            if (offset >= w.from && offset < w.end) {
              const broken = undecodable(message);
              if (!broken) {
                inUndecodable.delete(partition);
                messages.push(toMessage(topic, partition, message));
              } else if (!inUndecodable.has(partition)) {
                inUndecodable.add(partition);
                undecoded.push(`partition ${partition} from offset ${offset} (${broken.reason})`);
              }
            }
            reached(partition, offset);
          },
        })
        .then(() => {
          for (const [partition, w] of wanted) consumer.seek({ topic, partition, offset: String(w.from) });
        }, reject);
    });
  } finally {
    await consumer.disconnect().catch((err: Error) => log.debug({ topic, err: err.message }, 'replay consumer did not disconnect cleanly'));
  }
  if (undecoded.length > 0) log.warn({ topic, batches: undecoded }, 'replay left out record batches it cannot decode');
  const gaps = [ahead ? AHEAD : '', truncated ? NO_LONGER_RETAINED : '', undecoded.length > 0 ? `events in record batches the gateway cannot decode are left out: ${undecoded.join('; ')}` : ''];
  return { messages, gap: gaps.filter(Boolean).join('; ') || undefined };
}
