import type kafkajs from 'kafkajs';
import type { Logger } from '../../../log.js';
import type { Message } from '../../../core/message.js';
import { FOREIGN_POSITIONS, namesNoPartitionOf, type Retained, type RetainedChunk } from '../../contracts.js';
import type { KafkaSettings } from '../kafka.js';
import { Backoff } from '../../../core/backoff.js';
import { sleep } from '../../../core/within.js';
import { withBatchBound } from './codecs.js';
import { undecodable } from './stand-ins.js';
import { Batch, READ_COMMITTED, readingCluster, type FetchedBatch, type ReadingCluster } from './kafkajs.js';
import { leaderOf, TopicMissing, unknownTopic } from './leaders.js';
import { toMessage } from './subscription.js';

type Kafka = InstanceType<typeof kafkajs.Kafka>;

/** At most this many records are read back per call; older ones count as no longer retained. */
export const MAX_REPLAY_RECORDS = 10_000;
const AHEAD = 'Last-Event-ID is past the end of the topic (it was created again since); resuming from the oldest retained event';
const NO_LONGER_RETAINED = `some events after Last-Event-ID are no longer retained by the Kafka cluster (or are more than ${MAX_REPLAY_RECORDS} records back); resuming from the oldest retained event`;
/**
 * A replay's start (the offsets), or one of its reads (a Fetch round, with its retries), that takes
 * longer gives up (the client streams from now). The time the client takes to read what a round
 * read is not counted: a slow reader's replay takes as long as it reads.
 */
const REPLAY_TIMEOUT_MS = 30_000;
/**
 * What one Fetch may return, per partition and in all (a larger first batch still comes whole).
 * A replay holds a round of them per client while the client reads it: kafkajs' consumer
 * defaults (10 MiB in all) let 200 clients resuming at once hold 2 GB.
 */
const MAX_BYTES_PER_PARTITION = 1024 * 1024;
const MAX_BYTES = 1024 * 1024;
/** Between attempts after a leader moved or a connection broke (metadata is fetched again meanwhile). */
const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 1000;

/**
 * Reads a topic again after given offsets, up to the end offsets it has now: what an event-stream
 * client missed while it was disconnected. No consumer group: the end offsets come from ListOffsets
 * and the records from Fetch requests to each partition's leader, through a kafkajs Cluster of the
 * reader's own (kafkajs' connections, TLS, SASL and metadata; the broker's client settings).
 * Nothing is committed, no group is joined (no wait for a rebalance, no group left behind on the
 * cluster, no Group ACL needed). The Cluster stays connected between replays, so a resume costs
 * two ListOffsets and the Fetch requests, and its metadata is fetched again when a leader moved.
 * A replay reads a Fetch round at a time, as its caller asks for them (Retained.chunks): it holds
 * one round's records (MAX_BYTES per leader), not every record it will hand over.
 */
export class RetainedReader {
  private cluster: Promise<ReadingCluster> | undefined;
  private stopped = false;
  /** Replays under way, given up when the broker stops (so none makes a request, or reconnects, after). */
  private readonly running = new Set<Replay>();

  constructor(
    private readonly client: Kafka,
    private readonly settings: KafkaSettings,
    private readonly log: Logger,
  ) {}

  /**
   * `topic` after the offsets in `after` (per partition, the last offset the client saw), up to
   * its end offsets of the moment; partitions not named in `after` from their oldest retained
   * record. Resolves once the offsets are known; the records are fetched a round at a time as
   * the chunks are asked for. Rejects (or a chunk does) when the cluster cannot be read within
   * REPLAY_TIMEOUT_MS.
   */
  async read(topic: string, after: ReadonlyMap<number, bigint>): Promise<Retained> {
    const replay = new Replay(this.settings, topic, after, this.log);
    this.running.add(replay);
    try {
      const { gap, forget, ends, partitions } = await this.within(
        replay,
        this.connected().then((cluster) => replay.start(cluster)),
      );
      return { gap, forget, ends, partitions, chunks: this.chunks(replay), close: () => this.forget(replay) };
    } catch (err) {
      this.running.delete(replay);
      throw err;
    }
  }

  /** The replay's Fetch rounds, one per chunk asked for; ended early (a client gone), it is forgotten. */
  private async *chunks(replay: Replay): AsyncGenerator<RetainedChunk> {
    try {
      while (!replay.done) yield await this.within(replay, replay.round());
      replay.finish();
    } finally {
      await this.forget(replay);
    }
  }

  /** Retained.close: the replay makes no request after, and stop() has nothing of it to give up. */
  private forget(replay: Replay): Promise<void> {
    replay.expired = true;
    this.running.delete(replay);
    return Promise.resolve();
  }

  /** `step` of `replay`, given up after REPLAY_TIMEOUT_MS (the replay makes no request after). */
  private async within<T>(replay: Replay, step: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        replay.expired = true;
        reject(new Error(`replay of ${replay.topic} did not reach the end offsets within ${REPLAY_TIMEOUT_MS} ms`));
      }, REPLAY_TIMEOUT_MS);
    });
    try {
      return await Promise.race([step, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const replay of this.running) replay.expired = true;
    const cluster = await this.cluster?.catch(() => undefined);
    await cluster?.disconnect().catch(() => undefined);
  }

  /** The reader's Cluster, connected on first use (and again after a failed connect). */
  private connected(): Promise<ReadingCluster> {
    if (this.stopped) return Promise.reject(new Error('the kafka broker is stopping'));
    this.cluster ??= (async () => {
      const cluster = readingCluster(this.client);
      try {
        await cluster.connect();
      } catch (err) {
        await cluster.disconnect().catch(() => undefined);
        throw err;
      }
      return cluster;
    })();
    const attempt = this.cluster;
    attempt.catch(() => {
      if (this.cluster === attempt) this.cluster = undefined;
    });
    return attempt;
  }
}

/** A partition to read: from where, up to (not including) which offset. */
interface Range {
  from: bigint;
  end: bigint;
}

/** One read of a topic: the offsets, then fetch rounds (one request per leader), as asked for, until every partition reached its end. */
class Replay {
  /** Set when the reader gave up on it: no request is started after. */
  expired = false;
  private truncated = false;
  private ahead = false;
  private foreign = false;
  /** Partitions of the client's id that are not this topic's positions (Retained.forget). */
  private readonly forget: number[] = [];
  /** The current round's records, and what it found missing (handed over as its chunk). */
  private messages: Message[] = [];
  private undecoded: string[] = [];
  /** Every undecodable batch or record the replay left out, for one log line when it is done. */
  private readonly leftOut: string[] = [];
  /** Partitions whose last record read was a stand-in for an undecodable batch (one note per run of them; a record's has its own). */
  private readonly inUndecodable = new Set<number>();
  private readonly wanted = new Map<number, Range>();
  /** The next offset to fetch of each partition not yet read to its end. */
  private readonly position = new Map<number, bigint>();
  private readonly backoff = new Backoff(FIRST_RETRY_MS, MAX_RETRY_MS);

  private cluster!: ReadingCluster;

  constructor(
    private readonly settings: KafkaSettings,
    readonly topic: string,
    private readonly after: ReadonlyMap<number, bigint>,
    private readonly log: Logger,
  ) {}

  /** Whether every partition was read to its end. */
  get done(): boolean {
    return this.position.size === 0;
  }

  /** The offsets, and where each partition's read starts: what is known before the first record is read. */
  async start(cluster: ReadingCluster): Promise<Pick<Retained, 'gap' | 'forget' | 'ends' | 'partitions'>> {
    this.cluster = cluster;
    this.check();
    try {
      await this.cluster.addTargetTopic(this.topic);
    } catch (err) {
      if (unknownTopic(err)) throw new TopicMissing(this.topic);
      throw err;
    }
    await this.cluster.refreshMetadataIfNecessary();
    const ends = await this.retrying(() => this.offsets());
    this.plan(ends);
    const gaps = [this.ahead ? AHEAD : '', this.foreign ? FOREIGN_POSITIONS : '', this.truncated ? NO_LONGER_RETAINED : ''];
    // What a round finds no longer retained is told with its chunk, once.
    this.truncated = false;
    // The last record each partition's read may reach: before its end offset (the last stable offset).
    const last = new Map(ends.filter((e) => e.high > 0n).map((e) => [e.partition, e.high - 1n] as const));
    return { gap: gaps.filter(Boolean).join('; ') || undefined, forget: this.forget, ends: last, partitions: ends.map((e) => e.partition) };
  }

  /** One Fetch round (one request per leader, retried as fetchRound says): its records, and what it found missing. */
  async round(): Promise<RetainedChunk> {
    this.messages = [];
    this.undecoded = [];
    const wasTruncated = this.truncated;
    await this.fetchRound();
    const gaps = [this.truncated && !wasTruncated ? NO_LONGER_RETAINED : '', this.undecoded.length > 0 ? `events the gateway cannot decode are left out: ${this.undecoded.join('; ')}` : ''];
    this.leftOut.push(...this.undecoded);
    return { messages: this.messages, gap: gaps.filter(Boolean).join('; ') || undefined };
  }

  /** Read to the end: says what it left out. */
  finish(): void {
    if (this.leftOut.length > 0) this.log.warn({ topic: this.topic, batches: this.leftOut }, 'replay left out records it cannot decode');
  }

  /** Each partition's oldest retained offset and end offset (the last stable offset: what read_committed fetches reach). */
  private async offsets(partitions?: number[]): Promise<{ partition: number; low: bigint; high: bigint }[]> {
    const all = partitions ?? this.cluster.findTopicPartitionMetadata(this.topic).map((p) => p.partitionId);
    const list = (fromBeginning: boolean) =>
      this.cluster.fetchTopicsOffset([{ topic: this.topic, fromBeginning, partitions: all.map((partition) => ({ partition })) }]).then((topics) => {
        const found = new Map<number, bigint>();
        for (const t of topics) for (const p of t.partitions) found.set(p.partition, BigInt(p.offset));
        return found;
      });
    const [low, high] = await Promise.all([list(true), list(false)]);
    return all.map((partition) => ({ partition, low: low.get(partition) ?? 0n, high: high.get(partition) ?? 0n }));
  }

  /** Where each partition's read starts: after the client's position, within what is retained and MAX_REPLAY_RECORDS. */
  private plan(ends: { partition: number; low: bigint; high: bigint }[]): void {
    // A partition the topic does not have (an id of another topic, or of the topic before it was created again with fewer).
    for (const p of this.after.keys()) if (!ends.some((e) => e.partition === p)) this.forget.push(p);
    this.foreign = namesNoPartitionOf(this.after, (p) => ends.some((e) => e.partition === p));
    const budget = BigInt(Math.max(1, Math.floor(MAX_REPLAY_RECORDS / Math.max(1, ends.length))));
    for (const { partition, high, low } of ends) {
      const seen = this.after.get(partition);
      let from = seen === undefined ? low : seen + 1n;
      // Past the partition's end: the topic was deleted and created again since that id was given.
      // Reading after it would skip every record it has now without a word; resume from the oldest.
      if (from > high) {
        this.ahead = true;
        this.forget.push(partition);
        from = low;
      }
      if (from < low) {
        this.truncated = true;
        from = low;
      }
      if (high - from > budget) {
        this.truncated = true;
        from = high - budget;
      }
      if (from < high) {
        this.wanted.set(partition, { from, end: high });
        this.position.set(partition, from);
      }
    }
  }

  /**
   * One Fetch per leader of the partitions still to read. A leader that moved (or a connection
   * that broke) makes the round fetch the metadata again and retry after a backoff; a partition
   * whose records were deleted since the offsets were listed resumes at the oldest retained.
   */
  private async fetchRound(): Promise<void> {
    this.check();
    const metadata = this.cluster.findTopicPartitionMetadata(this.topic);
    const byLeader = new Map<number, number[]>();
    let leaderless = false;
    for (const partition of this.position.keys()) {
      const leader = leaderOf(metadata, partition);
      if (leader < 0) leaderless = true;
      else byLeader.set(leader, [...(byLeader.get(leader) ?? []), partition]);
    }
    const results = await Promise.allSettled([...byLeader].map(([nodeId, partitions]) => this.fetch(nodeId, partitions)));
    let stale = leaderless;
    for (const r of results) {
      if (r.status === 'fulfilled') continue;
      const err = r.reason as Error & { partition?: number };
      if (err.name === 'KafkaJSOffsetOutOfRange' && err.partition !== undefined) await this.retrying(() => this.outOfRange(err.partition!, err));
      else if (retriable(err)) {
        stale = true;
        this.log.debug({ topic: this.topic, err: err.message }, 'replay fetch failed; fetching metadata again and retrying');
      } else throw err;
    }
    if (!stale) return this.backoff.reset();
    this.check();
    await this.cluster.refreshMetadata().catch((err: Error) => this.log.debug({ topic: this.topic, err: err.message }, 'replay could not fetch metadata; retrying'));
    await sleep(this.backoff.delay());
  }

  /** One Fetch request, its batches decompressed within `consumer.maxBatchBytes` in all, as a consumer's fetch. */
  private async fetch(nodeId: number, partitions: number[]): Promise<void> {
    const broker = await this.cluster.findBroker({ nodeId });
    const asked = new Map(partitions.map((p) => [p, this.position.get(p)!]));
    const { responses } = await withBatchBound(this.settings.consumer, () =>
      broker.fetch({
        isolationLevel: READ_COMMITTED,
        maxWaitTime: this.settings.consumer.maxWaitMs,
        minBytes: 1,
        maxBytes: MAX_BYTES,
        topics: [{ topic: this.topic, partitions: partitions.map((partition) => ({ partition, fetchOffset: String(asked.get(partition)), maxBytes: MAX_BYTES_PER_PARTITION })) }],
      }),
    );
    for (const { topicName, partitions: fetched } of responses) {
      if (topicName !== this.topic) continue;
      for (const data of fetched) {
        const from = asked.get(data.partition);
        if (from !== undefined && this.position.get(data.partition) === from) this.take(data.partition, new Batch(this.topic, String(from), data));
      }
    }
  }

  /** The records of one partition's fetch up to its end offset; the partition moves on past every record fetched, handed over or not. */
  private take(partition: number, batch: FetchedBatch): void {
    // Nothing at or after the fetch offset: nothing to move past (the rest of a fetch decompressed to its bound is fetched again).
    if (batch.isEmptyIncludingFiltered() && !batch.isEmptyDueToLogCompactedMessages()) return;
    const { end } = this.wanted.get(partition)!;
    for (const message of batch.messages) {
      const offset = BigInt(message.offset);
      if (offset >= end) break;
      const broken = undecodable(message);
      if (!broken) {
        this.inUndecodable.delete(partition);
        this.messages.push(toMessage(this.topic, partition, message));
      } else if (broken.unit === 'record') {
        this.inUndecodable.delete(partition);
        this.undecoded.push(`partition ${partition}, the record at offset ${offset} (${broken.reason})`);
      } else if (!this.inUndecodable.has(partition)) {
        this.inUndecodable.add(partition);
        this.undecoded.push(`partition ${partition}, a batch from offset ${offset} (${broken.reason})`);
      }
    }
    // Records kafkajs does not hand over still take offsets: a transaction's marker (the last offset
    // of a partition a transactional producer wrote), aborted records. The read moves past them
    // too, or it would wait for them to its timeout. As kafkajs' consumer does, a fetch of only
    // records before its offset (compaction) moves one past it.
    const next = BigInt(batch.lastOffset()) + 1n;
    if (next >= end) this.position.delete(partition);
    else this.position.set(partition, next);
  }

  /** Records deleted (retention) since the offsets were listed: the partition resumes at the oldest retained one, and the notice says so. */
  private async outOfRange(partition: number, err: Error): Promise<void> {
    const at = this.position.get(partition);
    if (at === undefined) return;
    const [{ low } = { low: 0n }] = await this.offsets([partition]);
    if (at >= low) throw err;
    this.truncated = true;
    if (low >= this.wanted.get(partition)!.end) this.position.delete(partition);
    else this.position.set(partition, low);
  }

  /** Throws once the reader gave up on this replay (its timeout passed, or the broker stops). */
  private check(): void {
    if (this.expired) throw new Error(`replay of ${this.topic} given up`);
  }

  /** `attempt` until it succeeds or fails for good; the metadata is fetched again between attempts. */
  private async retrying<T>(attempt: () => Promise<T>): Promise<T> {
    for (;;) {
      this.check();
      try {
        return await attempt();
      } catch (err) {
        if (!retriable(err) || this.expired) throw err;
        this.log.debug({ topic: this.topic, err: (err as Error).message }, 'replay request failed; fetching metadata again and retrying');
        await this.cluster.refreshMetadata().catch(() => undefined);
        await sleep(this.backoff.delay());
      }
    }
  }
}

/** kafkajs' errors that another attempt may not meet: a leader that moved, a connection that broke, a timeout. */
function retriable(err: unknown): boolean {
  return err instanceof Error && (err as { retriable?: unknown }).retriable === true;
}
