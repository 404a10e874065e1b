import kafkajs from 'kafkajs';
import type { Consumer, EachMessagePayload, KafkaMessage } from 'kafkajs';
import type { Logger } from '../../../log.js';
import { decodeValue, type Message } from '../../../runtime/message.js';
import type { BrokerTelemetry, ConsumerLag, SubscribeSpec } from '../../contracts.js';
import type { KafkaSettings } from '../kafka.js';
import { sleep } from './clients.js';

const { KafkaJSError } = kafkajs;
type Kafka = InstanceType<typeof kafkajs.Kafka>;

/** How long stopping a consumer may wait for the record in hand before leaving it uncommitted. */
const STOP_TIMEOUT_MS = 15000;
const MAX_BACKOFF_MS = 5000;

/** Thrown into kafkajs to give up the record in hand without committing it. */
class GiveUp extends KafkaJSError {
  constructor(reason: string) {
    super(reason, { retriable: true });
  }
}

/**
 * One route's consumer group member. Records of a partition are handled one after the other, and
 * kafkajs commits an offset only once the handler resolved for it (and every record before it).
 * A handler that throws gets the same record again, with backoff, while the member keeps
 * heartbeating; the record is left uncommitted only when the member stops or loses the partition.
 */
export class KafkaSubscription {
  private consumer: Consumer | undefined;
  private stopping = false;
  private wake: () => void = () => undefined;
  private readonly stopped: Promise<void>;
  private loop: Promise<void> | undefined;
  private restartBackoff = 500;
  /** Whether stop() must wait for the loop: only once a consumer may hold partitions. */
  private phase: 'connecting' | 'consuming' = 'connecting';
  /** Per assigned partition: its high watermark as of the last fetched batch, and the lag it gave. */
  private readonly highWatermarks = new Map<number, bigint>();
  private readonly lags = new Map<number, number>();

  constructor(
    private readonly client: Kafka,
    private readonly settings: KafkaSettings,
    private readonly spec: SubscribeSpec,
    private readonly handler: (msg: Message) => Promise<void>,
    private readonly log: Logger,
    private readonly telemetry: BrokerTelemetry | undefined,
  ) {
    this.stopped = new Promise((r) => (this.wake = r));
  }

  start(): void {
    this.loop = this.run();
  }

  /**
   * Records between the group's position and the partition's high watermark, as of the last
   * record handled: the record in hand counts until it is committed. Partitions that have had no
   * record since this member joined are not reported (their lag is not known without a request).
   */
  lag(): ConsumerLag[] {
    return [...this.lags].map(([partition, lag]) => ({ route: this.spec.route, topic: this.spec.topic, partition, lag }));
  }

  private noteLag(partition: number, nextOffset: bigint): void {
    const hw = this.highWatermarks.get(partition);
    if (hw !== undefined) this.lags.set(partition, Number(hw > nextOffset ? hw - nextOffset : 0n));
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.lags.clear();
    this.wake();
    const done = (async () => {
      // Still connecting (the cluster unreachable): nothing consumed, nothing to commit; the loop
      // lets go of that consumer when its connect attempt ends. Joining or consuming: wait for it.
      if (this.phase !== 'connecting') await this.loop;
      // kafkajs finishes the record in hand, commits what was handled, and leaves the group.
      await this.consumer?.disconnect();
    })();
    const outcome = await Promise.race([done.then(() => 'done' as const, () => 'done' as const), sleep(STOP_TIMEOUT_MS).then(() => 'late' as const)]);
    if (outcome === 'late') this.log.warn({ waitedMs: STOP_TIMEOUT_MS }, 'consumer did not stop in time; its record in hand stays uncommitted and will be delivered again');
    else if (this.phase === 'consuming') this.log.info('consumer stopped; offsets committed');
    else this.log.info('consumer stopped before it could join its group');
  }

  /** Connects, joins and starts consuming; retries with backoff until it does or the route stops. */
  private async run(): Promise<void> {
    let backoff = 500;
    while (!this.stopping) {
      const consumer = this.create();
      this.consumer = consumer;
      try {
        this.phase = 'connecting';
        await consumer.connect();
        const fromBeginning = this.spec.fromBeginning ?? this.settings.consumer.fromBeginning;
        if (!this.stopping) await consumer.subscribe({ topics: [this.spec.topic], fromBeginning });
        if (this.stopping) {
          await consumer.disconnect();
          return;
        }
        this.phase = 'consuming';
        await consumer.run({
          autoCommit: true,
          partitionsConsumedConcurrently: this.settings.consumer.partitionsConsumedConcurrently,
          eachMessage: (payload) => this.each(payload),
        });
        return;
      } catch (err) {
        await consumer.disconnect().catch(() => undefined);
        if (this.stopping) break;
        this.telemetry?.consumerError(this.spec.route);
        this.log.warn({ err: (err as Error).message, retryInMs: backoff }, 'consumer could not start; retrying');
        await Promise.race([sleep(backoff), this.stopped]);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS * 2);
      }
    }
  }

  private create(): Consumer {
    const c = this.settings.consumer;
    const consumer = this.client.consumer({
      groupId: this.spec.group,
      sessionTimeout: c.sessionTimeoutMs,
      heartbeatInterval: c.heartbeatIntervalMs,
      rebalanceTimeout: c.rebalanceTimeoutMs,
      maxWaitTimeInMs: c.maxWaitMs,
      allowAutoTopicCreation: true,
    });
    let joined = false;
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      joined = true;
      this.restartBackoff = 500;
      // Lag is reported for the partitions this member holds now.
      const mine = new Set(e.payload.memberAssignment[this.spec.topic] ?? []);
      for (const p of [...this.lags.keys()]) if (!mine.has(p)) this.lags.delete(p);
      this.log.info({ memberId: e.payload.memberId, partitions: e.payload.memberAssignment[this.spec.topic] ?? [] }, 'consumer joined group');
    });
    // The first fetch after a join means every assigned partition has its starting offset.
    consumer.on(consumer.events.FETCH, () => {
      if (!joined) return;
      joined = false;
      this.log.info('consumer ready');
    });
    consumer.on(consumer.events.START_BATCH_PROCESS, (e) => {
      this.highWatermarks.set(e.payload.partition, BigInt(e.payload.highWatermark));
    });
    consumer.on(consumer.events.CRASH, (e) => {
      if (this.stopping) return;
      this.telemetry?.consumerError(this.spec.route);
      this.log.warn({ err: e.payload.error.message, restart: e.payload.restart }, 'consumer crashed');
      // kafkajs restarts after retriable errors by itself; after others (auth, config) we start over.
      if (!e.payload.restart && consumer === this.consumer) {
        const wait = this.restartBackoff;
        this.restartBackoff = Math.min(wait * 2, MAX_BACKOFF_MS * 6);
        this.loop = Promise.race([sleep(wait), this.stopped]).then(() => this.run());
      }
    });
    return consumer;
  }

  private async each({ topic, partition, message, heartbeat }: EachMessagePayload): Promise<void> {
    const msg = toMessage(topic, partition, message);
    const offset = BigInt(message.offset);
    this.noteLag(partition, offset);
    let backoff = 100;
    for (;;) {
      if (this.stopping) throw new GiveUp('consumer stopping');
      // A handler may take long (targets retrying with backoff): keep the membership alive meanwhile.
      const beat = setInterval(() => void heartbeat().catch(() => undefined), this.settings.consumer.heartbeatIntervalMs);
      try {
        await this.handler(msg);
        this.noteLag(partition, offset + 1n);
        return;
      } catch (err) {
        this.telemetry?.consumerError(this.spec.route);
        this.log.error({ partition, offset: message.offset, err: (err as Error).message, retryInMs: backoff }, 'record not consumed; retrying it');
      } finally {
        clearInterval(beat);
      }
      await Promise.race([sleep(backoff), this.stopped]);
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      // Throws when the group rebalances: the record stays uncommitted for whoever gets the partition.
      await heartbeat();
    }
  }
}

function toMessage(topic: string, partition: number, m: KafkaMessage): Message {
  const headers: Record<string, string> = {};
  if (m.headers) {
    for (const [name, v] of Object.entries(m.headers)) {
      if (v === undefined) continue;
      // A header repeated in the record: the last one wins, as in a map.
      headers[name] = String(Array.isArray(v) ? v[v.length - 1] : v);
    }
  }
  return {
    value: m.value === null ? null : decodeValue(m.value.toString('utf8')),
    key: m.key === null || m.key === undefined ? null : m.key.toString('utf8'),
    headers,
    topic,
    partition,
    offset: m.offset,
    timestamp: Number(m.timestamp),
  };
}
