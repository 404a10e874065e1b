import kafkajs from './kafkajs.js';
import type { ICustomPartitioner, IHeaders, KafkaConfig, Message as KafkaRecord, PartitionMetadata, Producer, RetryOptions } from 'kafkajs';
import { CODEC_IDS } from '../../../codecs/compression.js';
import type { Logger } from '../../../log.js';
import { ORIGINAL, valuePayload, type Delivery, type Message, type OriginalRecord } from '../../../core/message.js';
import type { BrokerTelemetry } from '../../contracts.js';
import type { KafkaSettings } from '../kafka.js';
import { sleep } from './clients.js';
import { AckDeadlines, type AckTimeout, type Deadline } from '../acknowledgement.js';

const { Kafka, Partitioners } = kafkajs;

const ACKS = { all: -1, leader: 1, none: 0 } as const;

interface Pending {
  /** performance.now() when it was published: a batch leaves lingerMs after its oldest record. */
  at: number;
  topic: string;
  record: KafkaRecord;
  resolve(d: Delivery): void;
  reject(err: Error): void;
  /** Its place among the acknowledgement deadlines; `settled` once answered either way. */
  deadline: Deadline;
}

/** What the producer tells its broker: a produce request went through, or the cluster may be down. */
export interface ProducerEvents {
  acknowledged(): void;
  failed(): void;
}

/**
 * The broker's publishing side. Publishes are gathered for `lingerMs` and sent as one produce
 * request per broker node; one batch is in flight at a time, which keeps records of a key in order
 * even when kafkajs retries. Each publish has its own `ackTimeoutMs` deadline (one timer serves them all), so a caller gets an
 * answer in time whatever the cluster does, and never a success for a record Kafka did not take.
 */
export class RecordProducer {
  private readonly producer: Producer;
  private producerConnect: Promise<void> | undefined;
  private producerConnected = false;
  private queue: Pending[] = [];
  private flushing = false;
  private idleWaiters: (() => void)[] = [];
  /** Ends the linger wait early when the next batch is full. */
  private batchFull: (() => void) | undefined;
  private stopped = false;
  /** One queue and one timer for every publish's ackTimeoutMs, not a timer per publish. */
  private readonly deadlines: AckDeadlines;
  private readonly sticky = new StickyPartitions();

  constructor(
    private readonly broker: string,
    base: KafkaConfig,
    private readonly settings: KafkaSettings,
    private readonly log: Logger,
    private readonly telemetry: BrokerTelemetry | undefined,
    private readonly events: ProducerEvents,
  ) {
    const ack = settings.producer.ackTimeoutMs;
    this.deadlines = new AckDeadlines(ack, broker);
    // The producer's requests and retries fit in the ack timeout.
    const client = new Kafka({ ...base, requestTimeout: Math.max(ack, 1000), retry: retryWithin(ack) });
    // The partition first chosen for a record stays on it (kafkajs' `partition` field, which its
    // partitioners honour), so a retried batch keeps it and offsets can be told per record.
    // Records with a key go where its hash says (kafkajs' default, the Java client's murmur2);
    // those without one go to one partition per batch, the next available one each batch (sticky
    // partitioning, as Kafka's own producer does since 2.4, KIP-480): one produce request per
    // batch instead of one per broker, while successive batches still spread over the partitions.
    const sticky = this.sticky;
    const createPartitioner: ICustomPartitioner = () => {
      const choose = Partitioners.DefaultPartitioner();
      return (args) => {
        const record = args.message;
        const known = record.partition;
        if (known !== undefined && known < args.partitionMetadata.length) return known;
        record.partition = undefined;
        return (record.partition = record.key === null || record.key === undefined ? sticky.partition(args.topic, args.partitionMetadata) : choose(args));
      };
    };
    this.producer = client.producer({
      createPartitioner,
      allowAutoTopicCreation: true,
      idempotent: settings.producer.idempotent,
      maxInFlightRequests: settings.producer.idempotent ? 1 : undefined,
    });
  }

  /** Connects in the background; publishing before that just waits for it. */
  start(): void {
    void this.ensureProducer().catch(() => undefined);
  }

  /** Flushes what is queued (bounded by the ack timeout), then disconnects. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.kick();
    await Promise.race([this.idle(), sleep(this.settings.producer.ackTimeoutMs + 500)]);
    // A connect still retrying against an unreachable cluster is not worth waiting for.
    await Promise.race([this.producer.disconnect().catch(() => undefined), sleep(this.settings.connectionTimeoutMs)]);
  }

  publish(topic: string, msg: Message): Promise<Delivery> {
    if (this.stopped) return Promise.reject(new Error(`broker '${this.broker}' is stopped`));
    return new Promise<Delivery>((resolve, reject) => {
      const original = msg[ORIGINAL];
      const record: KafkaRecord = {
        // A consumed record's own bytes where no step changed the field (core/message.ts, OriginalRecord).
        key: original && original.decoded.key === msg.key ? original.key : msg.key,
        // Raw bytes (a dead-lettered batch that could not be decoded) travel as they are.
        value: original && original.decoded.value === msg.value ? original.value : valuePayload(msg),
        headers: original ? originalHeaders(msg.headers, original) : msg.headers,
        timestamp: msg.timestamp ? String(msg.timestamp) : undefined,
      };
      const deadline = this.deadlines.add((err: AckTimeout) => {
        this.telemetry?.producerError();
        reject(err);
        this.events.failed();
      });
      this.queue.push({ at: performance.now(), topic, record, resolve, reject, deadline });
      if (this.queue.length >= this.settings.producer.maxBatchRecords) this.batchFull?.();
      this.kick();
    });
  }

  /** Starts the send loop unless it runs: it takes whatever is queued, batch after batch. */
  private kick(): void {
    if (this.flushing) return;
    this.flushing = true;
    void this.flush().finally(() => {
      this.flushing = false;
      if (this.queue.length > 0) this.kick();
      else for (const w of this.idleWaiters.splice(0)) w();
    });
  }

  private idle(): Promise<void> {
    if (!this.flushing && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /**
   * One batch in flight at a time; what arrives meanwhile becomes the next batch, which leaves
   * when it is full or lingerMs after its oldest record (as Kafka's own producer does). With
   * lingerMs 0 (the default) a batch leaves as soon as the one before it is answered, with what
   * arrived meanwhile and in the current event-loop turn ("group commit"): no added latency when
   * the gateway is idle, and batches that grow with the load.
   */
  private async flush(): Promise<void> {
    while (this.queue.length > 0) {
      const linger = this.settings.producer.lingerMs;
      if (linger === 0 && !this.stopped) await new Promise<void>((r) => setImmediate(r));
      const wait = linger - (performance.now() - this.queue[0]!.at);
      if (wait >= 1 && this.queue.length < this.settings.producer.maxBatchRecords && !this.stopped) {
        await new Promise<void>((r) => {
          const timer = setTimeout(r, wait);
          this.batchFull = () => (clearTimeout(timer), r());
        });
        this.batchFull = undefined;
      }
      const batch = this.queue.splice(0, this.settings.producer.maxBatchRecords).filter((p) => !p.deadline.settled);
      if (batch.length === 0) continue;
      // kafkajs bounds its requests and retries; this is a backstop so one stuck send cannot stall the gateway.
      let guard: NodeJS.Timeout | undefined;
      const stuck = new Promise<'stuck'>((r) => (guard = setTimeout(() => r('stuck'), 2 * this.settings.producer.ackTimeoutMs + this.settings.connectionTimeoutMs)));
      const outcome = await Promise.race([this.send(batch).then(() => 'sent' as const), stuck]);
      clearTimeout(guard);
      if (outcome === 'stuck') this.log.warn({ records: batch.length }, 'a produce request has not settled; sending the next batch');
    }
  }

  private async send(batch: Pending[]): Promise<void> {
    const byTopic = new Map<string, KafkaRecord[]>();
    for (const p of batch) {
      let list = byTopic.get(p.topic);
      if (!list) byTopic.set(p.topic, (list = []));
      list.push(p.record);
    }
    this.sticky.nextBatch();
    try {
      await this.ensureProducer();
      const acks = ACKS[this.settings.producer.acks];
      const results = await this.producer.sendBatch({
        acks,
        timeout: this.settings.producer.ackTimeoutMs,
        // kafkajs' compression types are Kafka's codec ids; every codec is registered (./codecs.ts).
        compression: CODEC_IDS[this.settings.producer.compression],
        topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
      });
      // Records of one partition are sent in batch order, so the n-th gets baseOffset + n: the
      // next offset of each partition, per topic, counted on as its records are settled.
      const next = new Map<string, (bigint | undefined)[]>();
      if (acks !== 0)
        for (const r of results) {
          const b = BigInt(r.baseOffset ?? '-1');
          if (b < 0n) continue;
          let partitions = next.get(r.topicName);
          if (!partitions) next.set(r.topicName, (partitions = []));
          partitions[r.partition] = b;
        }
      for (const p of batch) {
        const partition = p.record.partition ?? -1;
        const partitions = next.get(p.topic);
        const at = partitions?.[partition];
        if (at !== undefined) partitions![partition] = at + 1n;
        settle(p, { broker: this.broker, topic: p.topic, partition, offset: at === undefined ? '-1' : String(at) });
      }
      this.events.acknowledged();
    } catch (err) {
      const e = err as Error;
      this.log.warn({ records: batch.length, err: e.message }, 'produce failed');
      for (const p of batch) if (settle(p, undefined, e)) this.telemetry?.producerError();
      this.events.failed();
    }
  }

  private ensureProducer(): Promise<void> {
    if (this.producerConnected) return Promise.resolve();
    this.producerConnect ??= this.producer.connect().then(
      () => {
        this.producerConnected = true;
        // Connected after stop() gave up waiting for it: let go at once.
        if (this.stopped) void this.producer.disconnect().catch(() => undefined);
      },
      (err: Error) => {
        this.producerConnect = undefined;
        throw err;
      },
    );
    return this.producerConnect;
  }
}

/** The partition of each topic that the current batch's records without a key go to. */
class StickyPartitions {
  private batch = 0;
  private readonly chosen = new Map<string, { batch: number; partition: number; turn: number }>();

  nextBatch(): void {
    this.batch++;
  }

  partition(topic: string, partitions: PartitionMetadata[]): number {
    let c = this.chosen.get(topic);
    if (!c) this.chosen.set(topic, (c = { batch: -1, partition: 0, turn: Math.floor(Math.random() * 0x7fffffff) }));
    if (c.batch !== this.batch || c.partition >= partitions.length) {
      const available = partitions.filter((p) => p.leader >= 0);
      c.turn = (c.turn + 1) & 0x7fffffff;
      c.partition = available.length > 0 ? available[c.turn % available.length]!.partitionId : c.turn % partitions.length;
      c.batch = this.batch;
    }
    return c.partition;
  }
}

/** False when the publish was already answered (its ack timeout fired first). */
function settle(p: Pending, delivery: Delivery | undefined, err?: Error): boolean {
  if (p.deadline.settled) return false;
  p.deadline.settled = true;
  if (delivery) p.resolve(delivery);
  else p.reject(err ?? new Error('not delivered'));
  return true;
}

/** kafkajs retries a send until roughly `budgetMs` has passed, so a failed batch releases the lane in time. */
function retryWithin(budgetMs: number): RetryOptions {
  const initialRetryTime = 100;
  const maxRetryTime = 1000;
  let retries = 0;
  for (let wait = initialRetryTime, spent = 0; spent < budgetMs; wait = Math.min(wait * 2, maxRetryTime)) {
    spent += wait;
    retries++;
  }
  return { initialRetryTime, maxRetryTime, retries: Math.max(1, retries) };
}

/**
 * The message's headers, each as the consumed record had it (bytes, and every value of a repeated
 * name) unless a step set it to something else; headers steps added go as text, removed ones not at all.
 */
function originalHeaders(headers: Record<string, string>, original: OriginalRecord): IHeaders {
  const out: IHeaders = {};
  for (const name in headers) {
    const v = headers[name]!;
    const raw = original.headers[name];
    out[name] = raw !== undefined && original.decoded.headers[name] === v ? (raw as Buffer | Buffer[]) : v;
  }
  return out;
}
