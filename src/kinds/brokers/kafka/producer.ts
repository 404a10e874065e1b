import kafkajs, { producerWithCluster, type ProducerCluster } from './kafkajs.js';
import type { ICustomPartitioner, IHeaders, KafkaConfig, Message as KafkaRecord, PartitionMetadata, Producer, RecordMetadata, RetryOptions } from 'kafkajs';
import { CODEC_IDS } from '../../../codecs/compression.js';
import type { Logger } from '../../../log.js';
import { ORIGINAL, sentHeaders, newHeaders, valuePayload, type Delivery, type Message, type OriginalRecord } from '../../../core/message.js';
import type { BrokerTelemetry } from '../../contracts.js';
import type { KafkaSettings } from '../kafka.js';
import { sleep } from '../../../core/within.js';
import { AckDeadlines, LateWrite, NotConnected, Refused, type AckTimeout, type Deadline } from '../acknowledgement.js';
import { problem, type Problem } from '../../../core/errors.js';
import { type LeaderGroup, LeaderMoved, leaderMoved, leaderOf, TopicMissing, unknownTopic } from './leaders.js';
import { lateAnswerMs, produceError } from './produce-request.js';
import { AllAnswered, allAnswered } from './answered.js';

const { Kafka, Partitioners } = kafkajs;

const ACKS = { all: -1, leader: 1, none: 0 } as const;
/** Batches in flight at most: the usual one, and one beside it while that one is slow. */
const MAX_LANES = 2;
/**
 * How long a batch is out before a second may leave beside it: far above a produce round trip
 * (~1 ms), below kafkajs' first retry (100 ms after a failure). A second batch beside every one
 * splits the load into smaller produce requests, each with kafkajs' fixed cost, and measured no
 * faster (docs/performance.md, "ninth session").
 */
const SLOW_MS = 200;
/**
 * The wait before records a partition did not take go again, doubled on each try up to the
 * maximum (kafkajs' own retry times): a partition that stays broken is not asked in a loop.
 */
const PARTITION_RETRY_MS = 100;
const PARTITION_RETRY_MAX_MS = 1000;
/** Kafka's errors that say the metadata's leader is out of date (kafkajs' staleMetadata). */
const STALE_LEADER = new Set(['NOT_LEADER_FOR_PARTITION', 'LEADER_NOT_AVAILABLE', 'UNKNOWN_TOPIC_OR_PARTITION']);

/** A record as the producer hands it to kafkajs, with the send it belongs to for the partitioner's checks (./leaders.ts, ./answered.ts). */
type Routed = KafkaRecord & { [GROUP]: Send | undefined };
/** One `sendBatch`: the leader its records go to, and how many of them no deadline has answered yet. */
interface Send extends LeaderGroup {
  unanswered: number;
}
const GROUP = Symbol('leader group');

interface Pending {
  /** performance.now() when it was published, for lingerMs (a batch leaves lingerMs after its oldest record); 0 without lingerMs. */
  at: number;
  topic: string;
  record: Routed;
  resolve(d: Delivery): void;
  reject(err: Error): void;
  /** Its place among the acknowledgement deadlines; `settled` once answered either way. */
  deadline: Deadline;
  /** Sent in a produce request of its own: its batch was refused as a whole (see refusalOf). */
  alone?: boolean;
  /** How many times its partition did not take it while others of its produce request did (see partlyTaken). */
  resent?: number;
  /** Bytes of its key, value and headers, for producer.maxBatchBytes. */
  bytes: number;
  /** Once its deadline answered it 503 while it was still out: its real outcome (AckTimeout.late). */
  late?: LateWrite;
}

/** The records of the partitions that did not take theirs, per "topic/partition", in batch order, with the partition's error code. */
type NotTaken = Map<string, { records: Pending[]; code: number }>;

/** What the producer tells its broker (a produce request went through, or the cluster may be down), and asks of it. */
export interface ProducerEvents {
  acknowledged(): void;
  failed(): void;
  /** Why the cluster is out of reach, when the broker's probe found it so (else undefined: connecting, or reachable). */
  unreachable(): string | undefined;
}

/**
 * The broker's publishing side. Publishes are gathered for `lingerMs` and sent as one produce
 * request per leader broker, each answering only its own records (./leaders.ts), one batch in flight, and a second beside it only while that one is slow
 * to be answered (a broker down, kafkajs retrying), never two holding the same partition: each
 * record's partition is chosen before its batch leaves, and a record whose partition has a batch
 * in flight waits for the next one, which keeps the records of a key in order (and the offsets
 * told per record right) even when kafkajs retries. Each publish has its own `ackTimeoutMs` deadline (one timer serves them all), so a caller gets an
 * answer in time whatever the cluster does, and never a success for a record Kafka did not take.
 */
export class RecordProducer {
  private readonly producer: Producer;
  /** kafkajs' cluster behind the producer: its metadata, for a topic's partitions and their leaders. */
  private readonly cluster: ProducerCluster;
  /** Topics the cluster said do not exist, logged once until they do. */
  private readonly missing = new Set<string>();
  private producerConnect: Promise<void> | undefined;
  private producerConnected = false;
  /** The queue waits for the producer's connect (kick): records are handed to kafkajs only once it is connected. */
  private awaitingConnect = false;
  private queue: Pending[] = [];
  /** Bytes of the records queued (Pending.bytes): a batch holds at most producer.maxBatchBytes of them. */
  private queuedBytes = 0;
  /** A send is due: in the next event-loop turn, or lingerMs after the oldest record (`lingering`). */
  private scheduled = false;
  private lingering: NodeJS.Timeout | undefined;
  /** When each batch sent and not answered yet left (performance.now()): at most `lanes`. */
  private readonly out = new Set<{ at: number }>();
  /** Looks again when the batch out becomes slow, so what waits may go beside it. */
  private slow: NodeJS.Timeout | undefined;
  /** The partitions, per topic, that a batch in flight holds; a record for one of them waits. */
  private readonly held = new Map<string, Set<number>>();
  /** A batch in flight whose partitions kafkajs chooses (its topic's partitions were not known yet): it goes alone. */
  private blindInFlight = false;
  /** Each topic's partitions as kafkajs last passed them to the partitioner. */
  private readonly known = new Map<string, PartitionMetadata[]>();
  /** Batches allowed in flight: an idempotent producer keeps kafkajs' one request in flight per broker, so one. */
  private readonly lanes: number;
  private idleWaiters: (() => void)[] = [];
  private stopped = false;
  /** One queue and one timer for every publish's ackTimeoutMs, not a timer per publish. */
  private deadlines: AckDeadlines;
  /** Deadlines of an ackTimeoutMs a reload changed (reconfigure), while publishes still wait in them. */
  private retired: AckDeadlines[] = [];
  /** The ackTimeoutMs the kafkajs client was made with: its request timeout and retries are sized for it, for good. */
  private readonly clientAckMs: number;
  private readonly sticky = new StickyPartitions();
  private readonly byKey = Partitioners.DefaultPartitioner();

  constructor(
    private readonly broker: string,
    base: KafkaConfig,
    private settings: KafkaSettings,
    private readonly log: Logger,
    private readonly telemetry: BrokerTelemetry | undefined,
    private readonly events: ProducerEvents,
  ) {
    const ack = settings.producer.ackTimeoutMs;
    this.clientAckMs = ack;
    this.deadlines = new AckDeadlines(ack, broker);
    this.lanes = settings.producer.idempotent ? 1 : MAX_LANES;
    // The producer's retries fit in the ack timeout; a request is given up only after
    // lateAnswerMs, so an answer that comes after the publish's deadline is still seen (a produce
    // request asks for the lateAnswerMs of its own timeout too: ./produce-request.ts).
    const client = new Kafka({ ...base, requestTimeout: lateAnswerMs(ack), retry: retryWithin(ack) });
    // The partition first chosen for a record stays on it (kafkajs' `partition` field, which its
    // partitioners honour), so a retried batch keeps it and offsets can be told per record. Once a
    // topic's partitions are known (kept here) `take` chooses before the batch leaves; kafkajs
    // chooses only for a topic's first batch.
    // kafkajs calls it for every record of every attempt, after fetching metadata again when it
    // retries: an attempt that would send a record to another broker than its send's leader stops
    // there (./leaders.ts).
    const createPartitioner: ICustomPartitioner = () => (args) => {
      if (this.known.get(args.topic) !== args.partitionMetadata) this.known.set(args.topic, args.partitionMetadata);
      const record = args.message as Routed;
      let partition = record.partition;
      if (partition === undefined || partition >= args.partitionMetadata.length) {
        record.partition = undefined;
        partition = record.partition = this.choose(args.topic, args.partitionMetadata, record);
      }
      const group = record[GROUP];
      if (group !== undefined) {
        // kafkajs retrying a request whose every publish was already answered 503 (./answered.ts).
        if (group.unanswered === 0 && !settings.producer.idempotent) throw new AllAnswered(args.topic, partition);
        const leader = leaderOf(args.partitionMetadata, partition);
        if (group.leader === undefined) group.leader = leader;
        else if (leader !== group.leader) throw new LeaderMoved(args.topic, partition, group.leader, leader);
      }
      return partition;
    };
    ({ producer: this.producer, cluster: this.cluster } = producerWithCluster(client, {
      createPartitioner,
      allowAutoTopicCreation: true,
      idempotent: settings.producer.idempotent,
      maxInFlightRequests: settings.producer.idempotent ? 1 : undefined,
    }));
  }

  /**
   * Connects in the background (again, after a connect that gave up). Until it is connected a
   * publish waits for it, or is refused at once while the cluster is known to be out of reach.
   */
  start(): void {
    if (this.stopped) return;
    void this.ensureProducer().catch(() => undefined);
  }

  /**
   * A reload changed only keys read per produce request (the kind's canReconfigure): the next
   * publish and the next batch use them. Publishes already made keep the deadline they were
   * given, in the old AckDeadlines, whose timer runs until they are answered; until then the
   * produce requests ask the cluster (and kafkajs) to wait for the longest of them (coveredAckMs).
   */
  reconfigure(settings: KafkaSettings): void {
    const ack = settings.producer.ackTimeoutMs;
    if (ack !== this.deadlines.ms) {
      this.retired.push(this.deadlines);
      this.deadlines = new AckDeadlines(ack, this.broker);
    }
    this.settings = settings;
    // A batch lingering under the former lingerMs, maxBatchRecords or maxBatchBytes is scheduled
    // again by the new ones: lingerMs counted from its oldest record, and at once when now full.
    if (this.lingering !== undefined) {
      clearTimeout(this.lingering);
      this.lingering = undefined;
      this.scheduled = false;
      this.kick();
    }
  }

  /**
   * The longest ackTimeoutMs a publish still waiting may have: the one in force, or an earlier one
   * (a reload changed it) while publishes made under it wait. A produce request's `timeout` is
   * this, and kafkajs' request timeout its lateAnswerMs, so no request is given up (and sent
   * again) before the deadline of a record in it answered 503.
   */
  private coveredAckMs(): number {
    const ack = this.settings.producer.ackTimeoutMs;
    if (this.retired.length === 0) return ack;
    this.retired = this.retired.filter((d) => d.waiting);
    return Math.max(ack, ...this.retired.map((d) => d.ms));
  }

  /** Flushes what is queued (bounded by the ack timeout), then disconnects. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // What lingers goes now.
    if (this.lingering) this.sendNow();
    else this.kick();
    await Promise.race([this.idle(), sleep(this.coveredAckMs() + 500)]);
    // A connect still retrying against an unreachable cluster is not worth waiting for.
    await Promise.race([this.producer.disconnect().catch(() => undefined), sleep(this.settings.connectionTimeoutMs)]);
  }

  publish(topic: string, msg: Message): Promise<Delivery> {
    if (this.stopped) return Promise.reject(new Error(`broker '${this.broker}' is stopped`));
    if (!this.producerConnected) {
      // Never handed to kafkajs while its producer is not connected, so a refusal is final: nothing
      // of it can be written after the 503 (spec-checklist 2276). Refused at once when the cluster
      // is known to be out of reach; otherwise it waits here for the connect under way.
      void this.ensureProducer().catch(() => undefined);
      const down = this.events.unreachable();
      if (down !== undefined) {
        this.telemetry?.producerError();
        return Promise.reject(new NotConnected(this.broker, down));
      }
    }
    return new Promise<Delivery>((resolve, reject) => {
      const original = msg[ORIGINAL];
      const record: Routed = {
        // A consumed record's own bytes where no step changed the field (core/message.ts, OriginalRecord).
        key: original && original.decoded.key === msg.key ? original.key : msg.key,
        // Raw bytes (a dead-lettered batch that could not be decoded) travel as they are.
        value: original && original.decoded.value === msg.value ? original.value : valuePayload(msg),
        // Less a content-encoding that no longer describes the value (a step changed it).
        headers: original ? originalHeaders(sentHeaders(msg), original) : sentHeaders(msg),
        // The message's own time (a consumed record's CreateTime, 0 included); kafkajs stamps one without.
        timestamp: msg.timestamp >= 0 ? String(msg.timestamp) : undefined,
        [GROUP]: undefined,
      };
      const deadline = this.deadlines.add((err: AckTimeout) => {
        const send = record[GROUP];
        if (send === undefined && !this.producerConnected) {
          // Still waiting here for the producer's connect: never handed over, so nothing may have reached the cluster.
          this.telemetry?.producerError();
          reject(new NotConnected(this.broker, this.events.unreachable() ?? 'connecting'));
          return;
        }
        if (send !== undefined) send.unanswered--;
        // Its produce request may still be answered (kafkajs' request timeout, lateAnswerMs).
        err.late = pending.late = new LateWrite(this.stuckMs());
        this.telemetry?.producerError();
        reject(err);
        this.events.failed();
      });
      const bytes = recordBytes(record);
      // Only lingerMs needs the time (a clock read costs ~0.3 µs on the bench machine, a VM).
      const at = this.settings.producer.lingerMs > 0 ? performance.now() : 0;
      const pending: Pending = { at, topic, record, resolve, reject, deadline, bytes };
      this.queue.push(pending);
      this.queuedBytes += bytes;
      if (this.lingering && this.batchFull()) this.sendNow();
      this.kick();
    });
  }

  /**
   * How long a send may take before the next batch goes anyway: kafkajs' request timeout, a retry,
   * a reconnect. The client's request timeout and retries stay those of the ackTimeoutMs it was
   * made with (clientAckMs) when a reload changed it: the longer of the two counts.
   */
  private stuckMs(): number {
    const ack = Math.max(this.clientAckMs, this.coveredAckMs());
    return lateAnswerMs(ack) + ack + this.settings.connectionTimeoutMs;
  }

  /**
   * Schedules the next batch unless one is due or no lane is free. What arrives meanwhile joins
   * it: it leaves lingerMs after its oldest record or when full (as Kafka's own producer does);
   * with lingerMs 0 (the default) in the next event-loop turn, carrying what arrived in this one
   * and while every lane was busy ("group commit"): no added latency when the gateway is idle,
   * and batches that grow with the load.
   */
  private kick(): void {
    if (this.scheduled || this.queue.length === 0) return;
    if (!this.producerConnected) {
      // Nothing goes to kafkajs before its producer is connected: a send while its connect() is
      // under way would be queued inside kafkajs, out of the deadlines' reach.
      if (this.awaitingConnect) return;
      this.awaitingConnect = true;
      this.ensureProducer().then(
        () => {
          this.awaitingConnect = false;
          this.kick();
        },
        (err: Error) => {
          this.awaitingConnect = false;
          this.refuseUnsent(err.message);
        },
      );
      return;
    }
    if (!this.laneFree()) return;
    this.scheduled = true;
    const linger = this.settings.producer.lingerMs;
    const wait = linger > 0 ? linger - (performance.now() - this.queue[0]!.at) : 0;
    if (wait >= 1 && !this.batchFull() && !this.stopped) this.lingering = setTimeout(() => this.sendNow(), wait);
    else setImmediate(() => this.sendNow());
  }

  /** Enough is queued for a full batch (maxBatchRecords or maxBatchBytes): lingering longer adds nothing. */
  private batchFull(): boolean {
    return this.queue.length >= this.settings.producer.maxBatchRecords || this.queuedBytes >= this.settings.producer.maxBatchBytes;
  }

  /**
   * One batch in flight, and a second beside it only once the first has been out SLOW_MS (a broker
   * that does not answer, kafkajs retrying): records for other partitions then go meanwhile.
   */
  private laneFree(): boolean {
    if (this.blindInFlight || this.out.size >= this.lanes) return false;
    if (this.out.size === 0) return true;
    // The batch out is not slow yet: the timer set when that was last found looks again (every
    // publish asked this while a batch was out, each with a clock read).
    if (this.slow !== undefined) return false;
    let oldest = Number.POSITIVE_INFINITY;
    for (const b of this.out) oldest = Math.min(oldest, b.at);
    const wait = SLOW_MS - (performance.now() - oldest);
    if (wait <= 0) return true;
    this.slow ??= setTimeout(() => {
      this.slow = undefined;
      this.kick();
    }, wait);
    return false;
  }

  /** Sends batches while lanes are free and queued records are free to go. */
  private sendNow(): void {
    if (!this.scheduled) return;
    this.scheduled = false;
    clearTimeout(this.lingering);
    this.lingering = undefined;
    while (this.queue.length > 0 && this.laneFree()) {
      const batch = this.take();
      if (batch === undefined) break;
      const sent = { at: performance.now() };
      this.out.add(sent);
      this.blindInFlight = batch.blind;
      this.hold(batch.partitions);
      // kafkajs bounds its requests and retries; this is a backstop so one stuck send cannot stall the gateway.
      let guard: NodeJS.Timeout | undefined;
      const stuck = new Promise<'stuck'>((r) => (guard = setTimeout(() => r('stuck'), this.stuckMs())));
      void Promise.race([this.send(batch.records, batch.blind).then(() => 'sent' as const), stuck]).then((outcome) => {
        clearTimeout(guard);
        if (outcome === 'stuck') this.log.warn({ records: batch.records.length }, 'a produce request has not settled; sending the next batch');
        this.out.delete(sent);
        clearTimeout(this.slow);
        this.slow = undefined;
        if (batch.blind) this.blindInFlight = false;
        this.release(batch.partitions);
        this.kick();
        this.settleIdle();
      });
    }
    this.settleIdle();
  }

  /** A batch leaves: records for its partitions wait until it is answered (release). */
  private hold(partitions: Map<string, Set<number>>): void {
    for (const [topic, ps] of partitions) {
      let held = this.held.get(topic);
      if (!held) this.held.set(topic, (held = new Set()));
      for (const p of ps) held.add(p);
    }
  }

  /** The batch was answered (or given up on as stuck): its partitions are free again. */
  private release(partitions: Map<string, Set<number>>): void {
    for (const [topic, ps] of partitions) {
      const held = this.held.get(topic)!;
      for (const p of ps) held.delete(p);
    }
  }

  /**
   * The next batch: the queued records whose partition no batch in flight holds, in queue order,
   * up to maxBatchRecords and maxBatchBytes (a larger record alone), each with its partition
   * chosen; the others stay queued in their order.
   * A topic whose partitions are not known yet is left to kafkajs' partitioner, in a batch that
   * goes alone (it holds every partition).
   */
  private take(): { records: Pending[]; partitions: Map<string, Set<number>>; blind: boolean } | undefined {
    const { maxBatchRecords: max, maxBatchBytes } = this.settings.producer;
    let bytes = 0;
    const records: Pending[] = [];
    const rest: Pending[] = [];
    const partitions = new Map<string, Set<number>>();
    let blind = false;
    /** A record of a refused batch goes in a produce request of its own (see notSent). */
    let single = false;
    let full = false;
    this.sticky.nextBatch();
    for (const p of this.queue) {
      if (p.deadline.settled) {
        // Answered 503 and put back (its partition did not take it, or its leader moved): not written.
        p.late?.tell(undefined);
        continue;
      }
      // Once a record does not fit, none after it joins: a smaller one of its partition would overtake it.
      if (full || (records.length > 0 && (records.length >= max || single || p.alone || bytes + p.bytes > maxBatchBytes))) {
        full = true;
        rest.push(p);
        continue;
      }
      const known = this.known.get(p.topic);
      if (known === undefined || known.length === 0) {
        if (this.out.size > 0) rest.push(p);
        else (blind = true), records.push(p), (bytes += p.bytes);
        continue;
      }
      const held = this.held.get(p.topic);
      let partition = p.record.partition;
      if (partition === undefined || partition >= known.length) {
        partition = this.choose(p.topic, known, p.record, held);
        if (partition < 0) {
          rest.push(p);
          continue;
        }
        p.record.partition = partition;
      }
      if (held?.has(partition)) {
        rest.push(p);
        continue;
      }
      let mine = partitions.get(p.topic);
      if (!mine) partitions.set(p.topic, (mine = new Set()));
      mine.add(partition);
      records.push(p);
      bytes += p.bytes;
      single = p.alone === true;
    }
    this.queue = rest;
    this.queuedBytes = 0;
    for (const p of rest) this.queuedBytes += p.bytes;
    return records.length === 0 ? undefined : { records, partitions, blind };
  }

  /**
   * A record's partition: where its key's hash says (kafkajs' default, the Java client's murmur2);
   * without a key one partition per batch, the next available one each batch and none a batch in
   * flight holds (sticky partitioning, as Kafka's own producer does since 2.4, KIP-480): one
   * produce request per batch instead of one per broker, while successive batches still spread
   * over the partitions. -1: every partition is held.
   */
  private choose(topic: string, partitionMetadata: PartitionMetadata[], record: KafkaRecord, held?: Set<number>): number {
    if (record.key === null || record.key === undefined) return this.sticky.partition(topic, partitionMetadata, held);
    return this.byKey({ topic, partitionMetadata, message: record });
  }

  private idle(): Promise<void> {
    if (this.queue.length === 0 && this.out.size === 0 && !this.scheduled) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private settleIdle(): void {
    if (this.queue.length === 0 && this.out.size === 0 && !this.scheduled) for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * Sends a batch as one `sendBatch` per leader broker (./leaders.ts), each answering its own
   * records: a broker that fails fails only the records it leads. A batch holding topics whose
   * partitions are not known yet (`blind`) first fetches their metadata: a topic the cluster does
   * not have is answered at once, and the others' records get their partitions here.
   */
  private async send(batch: Pending[], blind: boolean): Promise<void> {
    let records = batch;
    try {
      await this.ensureProducer();
      if (blind) records = await this.placeUnknown(batch);
    } catch (err) {
      return this.failed(batch, err as Error);
    }
    const groups = new Map<number, Pending[]>();
    for (const p of records) {
      const known = this.known.get(p.topic);
      const partition = p.record.partition;
      // -2: placed by kafkajs' partitioner, whose first record names the leader.
      const leader = known !== undefined && partition !== undefined ? leaderOf(known, partition) : -2;
      const group = groups.get(leader);
      if (group === undefined) groups.set(leader, [p]);
      else group.push(p);
    }
    if (groups.size === 1) return this.sendTo(records, [...groups.keys()][0]!);
    await Promise.all([...groups].map(([leader, group]) => this.sendTo(group, leader)));
  }

  /**
   * Fetches the metadata of the batch's topics not known yet and places their records on
   * partitions; a topic the cluster does not have fails its records (503, logged once per topic).
   * Returns the records still to send. When the metadata cannot be had (the cluster down), the
   * records go as they are: kafkajs retries, and its partitioner places them.
   */
  private async placeUnknown(batch: Pending[]): Promise<Pending[]> {
    const topics = new Set<string>();
    for (const p of batch) if (!this.known.get(p.topic)?.length) topics.add(p.topic);
    if (topics.size === 0) return batch;
    const missing = new Set<string>();
    await Promise.all(
      [...topics].map(async (topic) => {
        try {
          await this.cluster.addMultipleTargetTopics([topic]);
          const partitions = this.cluster.findTopicPartitionMetadata(topic);
          if (partitions.length > 0) this.known.set(topic, partitions);
          this.missing.delete(topic);
        } catch (err) {
          // Anything else (the cluster unreachable): kafkajs' send retries and says.
          if (unknownTopic(err)) missing.add(topic);
        }
      }),
    );
    const rest: Pending[] = [];
    for (const p of batch) {
      if (missing.has(p.topic)) {
        if (settle(p, undefined, new TopicMissing(p.topic))) this.telemetry?.producerError();
        continue;
      }
      const known = this.known.get(p.topic);
      // In a blind batch no batch is in flight (it goes alone): every partition is free.
      if (known?.length && p.record.partition === undefined) p.record.partition = this.choose(p.topic, known, p.record);
      rest.push(p);
    }
    for (const topic of missing) {
      if (this.missing.has(topic)) continue;
      this.missing.add(topic);
      this.log.warn({ topic }, `topic '${topic}' does not exist on the Kafka cluster; publishes to it are answered 503 until it does`);
    }
    return rest;
  }

  /** One `sendBatch` whose records all go to broker `leader` (-2: to whichever leads the first one kafkajs places). */
  private async sendTo(batch: Pending[], leader: number): Promise<void> {
    const byTopic = new Map<string, KafkaRecord[]>();
    const group: Send = { leader: leader === -2 ? undefined : leader, unanswered: 0 };
    for (const p of batch) {
      p.record[GROUP] = group;
      if (!p.deadline.settled) group.unanswered++;
      let list = byTopic.get(p.topic);
      if (!list) byTopic.set(p.topic, (list = []));
      list.push(p.record);
    }
    let notTaken: NotTaken;
    try {
      const acks = ACKS[this.settings.producer.acks];
      const results = await this.producer.sendBatch({
        acks,
        timeout: this.coveredAckMs(),
        // kafkajs' compression types are Kafka's codec ids; every codec is registered (./codecs.ts).
        compression: CODEC_IDS[this.settings.producer.compression],
        topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
      });
      notTaken = this.settleAnswered(batch, results, acks);
      this.events.acknowledged();
    } catch (err) {
      this.notSent(batch, err as Error);
      return;
    }
    if (notTaken.size > 0) await this.partlyTaken(notTaken);
  }

  /**
   * Settles the records of a produce request from the cluster's answer (one result per partition):
   * a record whose partition took it gets its offset; one whose partition the answer does not name
   * fails (not acknowledged, so no 2xx). Returns the records of the partitions that refused theirs,
   * for partlyTaken().
   */
  private settleAnswered(batch: Pending[], results: RecordMetadata[], acks: number): NotTaken {
    const notTaken: NotTaken = new Map();
    // Records of one partition are sent in batch order, so the n-th gets baseOffset + n: the
    // next offset of each partition, per topic, counted on as its records are settled.
    // null: acknowledged without an offset (-1).
    const next = new Map<string, (bigint | null | undefined)[]>();
    /** The partitions that did not take their records, per topic: their error code (see ./produce-request.ts). */
    let refused: Map<string, Map<number, number>> | undefined;
    if (acks !== 0)
      for (const r of results) {
        if (r.errorCode) {
          refused ??= new Map();
          let codes = refused.get(r.topicName);
          if (!codes) refused.set(r.topicName, (codes = new Map()));
          codes.set(r.partition, r.errorCode);
          continue;
        }
        const b = BigInt(r.baseOffset ?? '-1');
        let partitions = next.get(r.topicName);
        if (!partitions) next.set(r.topicName, (partitions = []));
        partitions[r.partition] = b < 0n ? null : b;
      }
    for (const p of batch) {
      const partition = p.record.partition ?? -1;
      const code = refused?.get(p.topic)?.get(partition);
      if (code !== undefined) {
        const at = `${p.topic}/${partition}`;
        const part = notTaken.get(at);
        if (part) part.records.push(p);
        else notTaken.set(at, { records: [p], code });
        continue;
      }
      const partitions = next.get(p.topic);
      const at = partitions?.[partition];
      if (acks !== 0 && at === undefined) {
        // kafkajs resolved without this partition's answer: the record was not acknowledged, so no 2xx.
        if (settle(p, undefined, new Error(`the Kafka cluster's answer has no result for ${p.topic}/${partition}`))) this.telemetry?.producerError();
        continue;
      }
      if (typeof at === 'bigint') partitions![partition] = at + 1n;
      settle(p, { broker: this.broker, topic: p.topic, partition, offset: typeof at === 'bigint' ? String(at) : '-1' });
    }
    return notTaken;
  }

  /** What becomes of the records of a send that failed as a whole (nothing of it was written, but for a resend given up: see allAnswered). */
  private notSent(batch: Pending[], e: Error): void {
    if (allAnswered(e)) {
      // Every record was answered 503 already; the request that timed out may have been written:
      // unknown, so a consume route waiting for it (AckTimeout.late) tries it again.
      for (const p of batch) p.late?.tell(undefined);
      this.log.warn({ records: batch.length }, 'every publish of a produce request was answered 503 at ackTimeoutMs (a try that went out may have been written): it is not sent again');
      return;
    }
    if (leaderMoved(e)) {
      // Stopped before any request of that attempt left, and every earlier attempt went to the one
      // broker that failed it: nothing was written. Grouped again by the new leaders.
      this.log.info({ records: batch.length, err: e.message }, 'partition leaders moved; sending the records to their new leaders');
      this.requeue(batch, false);
      return;
    }
    const refusal = refusalOf(e);
    if (refusal && batch.length > 1) {
      // Kafka refused each partition's batch as a whole (nothing of it was written) for what may be
      // one record of one of them (a response in which every partition failed is thrown as its
      // first partition's error: ./produce-request.ts): each record is sent again alone, so only
      // a record that is itself refused fails, whichever partitions the request held.
      this.log.warn({ records: batch.length, err: e.message }, 'produce request refused; sending its records one by one');
      this.requeue(batch, true);
      return;
    }
    this.failed(batch, e);
  }

  /**
   * A produce request some of whose partitions took their records (answered) and others did not
   * (./produce-request.ts): only the latter's records are sent again. A partition that failed for
   * the cluster's state (kafkajs' table says retriable: a leader moved, too few replicas in sync, a
   * timeout) has its records put back at the head of the queue after a backoff, once the metadata
   * is fetched again when its leader is in question; the send holds their partitions meanwhile, so
   * later records of them wait behind them. They go again until their ackTimeoutMs deadline answers
   * them 503. A partition that refused its records goes as a whole-request refusal does (notSent).
   */
  private async partlyTaken(notTaken: NotTaken): Promise<void> {
    const again: Pending[] = [];
    const why: string[] = [];
    let stale = false;
    for (const [at, { records, code }] of notTaken) {
      const e = produceError(code);
      if (!e.retriable) {
        this.notSent(records, e);
        continue;
      }
      why.push(`${at}: ${e.type}`);
      stale ||= STALE_LEADER.has(e.type);
      again.push(...records);
    }
    if (again.length === 0) return;
    let attempt = 0;
    for (const p of again) attempt = Math.max(attempt, (p.resent = (p.resent ?? 0) + 1));
    const backoffMs = Math.min(PARTITION_RETRY_MS * 2 ** (attempt - 1), PARTITION_RETRY_MAX_MS);
    this.log.warn({ records: again.length, partitions: why.join(', '), attempt, backoffMs }, 'partitions of a produce request did not take their records; sending those again');
    const topics = new Set(again.map((p) => p.topic));
    await Promise.all([
      sleep(backoffMs),
      stale &&
        this.cluster.refreshMetadata().then(
          () => {
            // The records are grouped by these leaders when they go again.
            for (const topic of topics) {
              const partitions = this.cluster.findTopicPartitionMetadata(topic);
              if (partitions.length > 0) this.known.set(topic, partitions);
            }
          },
          // The cluster unreachable: the next send finds out, kafkajs retrying.
          () => undefined,
        ),
    ]);
    this.requeue(
      again.filter((p) => !p.deadline.settled),
      false,
    );
  }

  /** Puts the records of a send back at the head of the queue, in their order (`alone`: each in a produce request of its own). */
  private requeue(batch: Pending[], alone: boolean): void {
    for (const p of batch) {
      if (alone) p.alone = true;
      this.queuedBytes += p.bytes;
    }
    this.queue.unshift(...batch);
  }

  private failed(batch: Pending[], e: Error): void {
    this.log.warn({ records: batch.length, err: e.message }, 'produce failed');
    const refusal = refusalOf(e);
    // A refused record alone is its own problem (a 4xx, dead-lettered by consume routes), not the cluster's.
    const failure = refusal && batch.length === 1 ? new Refused(refusal(batch[0]!.topic)) : e;
    for (const p of batch) if (settle(p, undefined, failure)) this.telemetry?.producerError();
    if (failure === e) this.events.failed();
  }

  /**
   * Refuses every publish still waiting for the producer's first connect (none was handed to
   * kafkajs): the connect failed, or the broker's probe found the cluster out of reach.
   */
  refuseUnsent(detail: string): void {
    if (this.producerConnected || this.queue.length === 0) return;
    const unsent = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    for (const p of unsent) if (settle(p, undefined, new NotConnected(this.broker, detail))) this.telemetry?.producerError();
    this.settleIdle();
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

  /** -1 when a batch in flight holds every partition (`held`). */
  partition(topic: string, partitions: PartitionMetadata[], held?: Set<number>): number {
    let c = this.chosen.get(topic);
    if (!c) this.chosen.set(topic, (c = { batch: -1, partition: 0, turn: Math.floor(Math.random() * 0x7fffffff) }));
    if (c.batch !== this.batch || c.partition >= partitions.length) {
      const free = held && held.size > 0 ? partitions.filter((p) => !held.has(p.partitionId)) : partitions;
      const available = free.filter((p) => p.leader >= 0);
      const from = available.length > 0 ? available : free;
      c.turn = (c.turn + 1) & 0x7fffffff;
      c.partition = from.length > 0 ? from[c.turn % from.length]!.partitionId : -1;
      c.batch = this.batch;
    }
    return c.partition;
  }
}

/**
 * Kafka's answers that refuse the records themselves rather than tell of the cluster's state:
 * sending them again as they are cannot help. By kafkajs' error type (Kafka's error name).
 */
const REFUSALS: Record<string, (topic: string, why: string) => Problem> = {
  MESSAGE_TOO_LARGE: (topic, why) =>
    problem('EG_PAYLOAD_TOO_LARGE', `the Kafka cluster refused the record as larger than it accepts on topic '${topic}' (the broker's message.max.bytes or the topic's max.message.bytes): ${why}`),
  RECORD_LIST_TOO_LARGE: (topic, why) => problem('EG_PAYLOAD_TOO_LARGE', `the Kafka cluster refused the record as larger than it accepts on topic '${topic}': ${why}`),
  INVALID_RECORD: (topic, why) => problem('EG_INVALID_MESSAGE', `the Kafka cluster refused the record as invalid for topic '${topic}' (a compacted topic needs a key): ${why}`, { errors: [why] }),
  INVALID_TIMESTAMP: (topic, why) =>
    problem('EG_INVALID_MESSAGE', `the Kafka cluster refused the record's timestamp on topic '${topic}' (outside the topic's message.timestamp.difference.max.ms): ${why}`, {
      errors: [why],
    }),
};

/** The problem a refused record is answered with, when `err` (or what it wraps) is such a refusal. */
function refusalOf(err: Error): ((topic: string) => Problem) | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; depth++) {
    const type = (e as { type?: unknown }).type;
    const make = typeof type === 'string' ? REFUSALS[type] : undefined;
    if (make) return (topic) => make(topic, (e as Error).message);
    e = (e as { cause?: unknown; originalError?: unknown }).cause ?? (e as { originalError?: unknown }).originalError;
  }
  return undefined;
}

/**
 * What a record adds to a batch, as producer.maxBatchBytes counts it: its bytes in the record batch
 * (Kafka's record format v2), which a cluster's message.max.bytes bounds: key, value, each header's
 * name and value (a name repeated per value), and each field's length. Small records are mostly
 * framing: counting their data alone let a batch of many of them pass maxBatchBytes twice over.
 * The deltas are not known before the batch is: the most they take is counted (a copied record
 * keeps its own timestamp, which may be far from the batch's first).
 */
function recordBytes(record: KafkaRecord): number {
  let body = RECORD_FIXED_BYTES + lengthAndBytes(record.key) + lengthAndBytes(record.value);
  let headers = 0;
  const all = record.headers;
  // Per record and header on the publish path: no array made for a single value, a name measured once.
  if (all)
    for (const name in all) {
      const v = all[name];
      const nameBytes = lengthAndBytes(name);
      if (Array.isArray(v)) {
        for (const one of v) body += nameBytes + lengthAndBytes(one as Buffer | string | undefined);
        headers += v.length;
      } else {
        body += nameBytes + lengthAndBytes(v as Buffer | string | undefined);
        headers++;
      }
    }
  body += varintBytes(headers);
  return varintBytes(body) + body;
}

/** attributes (1), timestampDelta (a varlong: at most 10), offsetDelta (a varint: at most 5). */
const RECORD_FIXED_BYTES = 1 + 10 + 5;

/** A field with its varint length before it (-1 for null). */
function lengthAndBytes(v: Buffer | string | null | undefined): number {
  const n = v === null || v === undefined ? -1 : typeof v === 'string' ? Buffer.byteLength(v) : v.length;
  return varintBytes(n) + Math.max(n, 0);
}

/** The bytes of a zig-zag varint. */
function varintBytes(n: number): number {
  let u = n >= 0 ? n * 2 : -n * 2 - 1;
  let bytes = 1;
  while (u >= 0x80) (u = Math.floor(u / 0x80)), bytes++;
  return bytes;
}

/** False when the publish was already answered (its ack timeout fired first): its late outcome is told instead. */
function settle(p: Pending, delivery: Delivery | undefined, err?: Error): boolean {
  if (p.deadline.settled) {
    p.late?.tell(delivery);
    return false;
  }
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
  // A body published over HTTP or WebSocket has no raw headers (payloadOriginal): its headers go as they are, uncopied.
  if (!hasKeys(original.headers)) return headers;
  const out: IHeaders = newHeaders<Buffer | Buffer[] | string>();
  for (const name in headers) {
    const v = headers[name]!;
    const raw = original.headers[name];
    out[name] = raw !== undefined && original.decoded.headers[name] === v ? (raw as Buffer | Buffer[]) : v;
  }
  return out;
}

function hasKeys(o: object): boolean {
  for (const _ in o) return true;
  return false;
}
