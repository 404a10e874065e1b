import type { ConnectionOptions } from 'node:tls';
import kafkajs from 'kafkajs';
import type {
  Admin,
  Consumer,
  EachMessagePayload,
  ICustomPartitioner,
  KafkaConfig,
  KafkaMessage,
  LogEntry,
  Message as KafkaRecord,
  Producer,
  RetryOptions,
  SASLOptions,
} from 'kafkajs';
import snappyCodec from 'kafkajs-snappy';

// kafkajs is CommonJS: its named exports come through the default import.
const { CompressionCodecs, CompressionTypes, Kafka, KafkaJSError, logLevel, Partitioners } = kafkajs;
type Kafka = InstanceType<typeof Kafka>;
import type { Logger } from '../../log.js';
import { decodeValue, encodeValue, type Delivery, type Message } from '../../core/message.js';
import type { BrokerCompileContext, BrokerRuntime, BrokerTelemetry, ConsumerLag, Health, RuntimeEnv, SubscribeSpec, Subscription } from '../contracts.js';

import { defineBroker } from '../define.js';
import { kafkaDoc, kafkaOptions, type KafkaOptions } from './kafka-options.js';

// kafkajs ships gzip; snappy (pure JS, from kafkajs' author) also lets us read topics other clients compress with it.
CompressionCodecs[CompressionTypes.Snappy] = snappyCodec;

/** The options compiled: broker lists split, files read, defaults filled in. What the runtime gets. */
export interface KafkaSettings {
  brokers: string[];
  clientId: string;
  ssl: ConnectionOptions | boolean;
  sasl: SASLOptions | undefined;
  connectionTimeoutMs: number;
  healthCheckIntervalMs: number;
  producer: Required<NonNullable<KafkaOptions['producer']>>;
  consumer: Required<NonNullable<KafkaOptions['consumer']>>;
}

const PRODUCER_DEFAULTS: KafkaSettings['producer'] = { acks: 'all', lingerMs: 5, maxBatchRecords: 1000, compression: 'none', idempotent: false, ackTimeoutMs: 5000 };
const CONSUMER_DEFAULTS: KafkaSettings['consumer'] = {
  fromBeginning: false,
  sessionTimeoutMs: 30000,
  heartbeatIntervalMs: 3000,
  rebalanceTimeoutMs: 60000,
  maxWaitMs: 1000,
  partitionsConsumedConcurrently: 1,
};
const ACKS = { all: -1, leader: 1, none: 0 } as const;
const COMPRESSION = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP, snappy: CompressionTypes.Snappy } as const;
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[^\s:/[\]]+):(\d{1,5})$/;
const LEGAL_TOPIC = /^[A-Za-z0-9._-]{1,249}$/;
/** How long stopping a consumer may wait for the record in hand before leaving it uncommitted. */
const STOP_TIMEOUT_MS = 15000;
const MAX_BACKOFF_MS = 5000;

function compileKafka(o: KafkaOptions, ctx: BrokerCompileContext): KafkaSettings | undefined {
  let ok = true;
  // `brokers: ${KAFKA_BROKERS}` with KAFKA_BROKERS=a:9092,b:9092 is one string holding a list: split it.
  const entries = typeof o.brokers === 'string' ? [o.brokers] : o.brokers;
  const brokers: string[] = [];
  entries.forEach((entry, i) => {
    const at = typeof o.brokers === 'string' ? ['brokers'] : ['brokers', i];
    const parts = entry.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (parts.length === 0) {
      ctx.report(at, 'EG_CONFIG_SCHEMA', `no broker address here: expected host:port, or a comma-separated list of them`);
      ok = false;
    }
    for (const p of parts) {
      const m = HOST_PORT.exec(p);
      if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
        ctx.report(at, 'EG_CONFIG_SCHEMA', `'${p}' is not a broker address: expected host:port`);
        ok = false;
      } else brokers.push(p);
    }
  });
  let ssl: KafkaSettings['ssl'] = o.ssl ?? false;
  if (typeof o.ssl === 'object') {
    const tls: ConnectionOptions = {};
    for (const file of ['ca', 'cert', 'key'] as const) {
      const name = o.ssl[file];
      if (name === undefined) continue;
      const text = ctx.readFile(name, ['ssl', file]);
      if (text === undefined) ok = false;
      else tls[file] = text;
    }
    if (o.ssl.passphrase !== undefined) tls.passphrase = o.ssl.passphrase;
    if (o.ssl.servername !== undefined) tls.servername = o.ssl.servername;
    if (o.ssl.rejectUnauthorized !== undefined) tls.rejectUnauthorized = o.ssl.rejectUnauthorized;
    if ((tls.cert === undefined) !== (tls.key === undefined) && ok) {
      ctx.report(['ssl'], 'EG_CONFIG_SCHEMA', `a client certificate needs both 'cert' and 'key'`);
      ok = false;
    }
    ssl = tls;
  }
  const producer = { ...PRODUCER_DEFAULTS, ...o.producer };
  const consumer = { ...CONSUMER_DEFAULTS, ...o.consumer };
  if (producer.idempotent && producer.acks !== 'all') {
    ctx.report(['producer', 'idempotent'], 'EG_CONFIG_SCHEMA', `an idempotent producer needs acks: all (acks is '${producer.acks}')`);
    ok = false;
  }
  if (consumer.heartbeatIntervalMs >= consumer.sessionTimeoutMs) {
    ctx.report(['consumer', 'heartbeatIntervalMs'], 'EG_CONFIG_SCHEMA', `heartbeatIntervalMs (${consumer.heartbeatIntervalMs}) must be lower than sessionTimeoutMs (${consumer.sessionTimeoutMs}); a third of it is usual`);
    ok = false;
  }
  if (!ok) return undefined;
  return {
    brokers,
    clientId: o.clientId ?? 'eventgate',
    ssl,
    sasl: o.sasl as SASLOptions | undefined,
    connectionTimeoutMs: o.connectionTimeoutMs ?? 3000,
    healthCheckIntervalMs: o.healthCheckIntervalMs ?? 2000,
    producer,
    consumer,
  };
}

/** kafkajs' connection attempts: one line each while a cluster is down. The broker's own lines tell the outage. */
const CHATTY = new Set(['Connection', 'BrokerPool']);

/** kafkajs logs through pino, one JSON line like every other; its errors are mostly transient, hence warn. */
function kafkajsLogs(logger: Logger): KafkaConfig['logCreator'] {
  return () =>
    ({ namespace, level, log }: LogEntry) => {
      const { message, timestamp: _t, logger: _l, stack: _s, ...extra } = log;
      const fields = { kafkajs: namespace, ...extra };
      if (CHATTY.has(namespace)) logger.debug(fields, `kafkajs: ${message}`);
      else if (level === logLevel.ERROR || level === logLevel.WARN) logger.warn(fields, `kafkajs: ${message}`);
      else if (level === logLevel.INFO) logger.info(fields, `kafkajs: ${message}`);
      else logger.debug(fields, `kafkajs: ${message}`);
    };
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

interface Pending {
  /** performance.now() when it was published: a batch leaves lingerMs after its oldest record. */
  at: number;
  topic: string;
  record: KafkaRecord;
  resolve(d: Delivery): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
  settled: boolean;
}

class AckTimeout extends Error {
  constructor(broker: string, ms: number) {
    super(`no acknowledgement from broker '${broker}' within ${ms} ms`);
  }
}

/**
 * A Kafka cluster, through kafkajs. Publishes are gathered for `lingerMs` and sent as one produce
 * request per broker node; one batch is in flight at a time, which keeps records of a key in order
 * even when kafkajs retries. Each publish races its own `ackTimeoutMs` timer, so a caller gets an
 * answer in time whatever the cluster does, and never a success for a record Kafka did not take.
 */
export class KafkaBroker implements BrokerRuntime {
  readonly kind = 'kafka';
  private readonly log: Logger;
  private readonly producerClient: Kafka;
  private readonly consumerClient: Kafka;
  private readonly producer: Producer;
  private readonly admin: Admin;
  private producerConnect: Promise<void> | undefined;
  private producerConnected = false;
  private adminConnected = false;
  private queue: Pending[] = [];
  private flushing = false;
  private idleWaiters: (() => void)[] = [];
  /** Ends the linger wait early when the next batch is full. */
  private batchFull: (() => void) | undefined;
  private state: { ready: boolean; detail: string } = { ready: false, detail: 'connecting' };
  private probeTimer: NodeJS.Timeout | undefined;
  private probing: Promise<void> | undefined;
  private stopped = false;
  private readonly subscriptions = new Set<KafkaSubscription>();
  /** Producer and consumer errors, for eventgate_kafka_*_errors_total. */
  private readonly telemetry: BrokerTelemetry | undefined;
  /** The partition kafkajs chose for each record, so a retried batch keeps it and offsets can be told per record. */
  private readonly partitionOf = new WeakMap<object, number>();

  constructor(readonly name: string, readonly settings: KafkaSettings, env: RuntimeEnv) {
    this.log = env.logger.child({ broker: name });
    this.telemetry = env.telemetry?.broker(name, 'kafka');
    const base: KafkaConfig = {
      clientId: settings.clientId,
      brokers: settings.brokers,
      ssl: settings.ssl,
      sasl: settings.sasl,
      connectionTimeout: settings.connectionTimeoutMs,
      logLevel: logLevel.WARN,
      logCreator: kafkajsLogs(this.log),
    };
    const ack = settings.producer.ackTimeoutMs;
    // The producer's requests and retries fit in the ack timeout; consumers keep kafkajs' patient defaults.
    this.producerClient = new Kafka({ ...base, requestTimeout: Math.max(ack, 1000), retry: retryWithin(ack) });
    this.consumerClient = new Kafka({ ...base, retry: { initialRetryTime: 300, maxRetryTime: MAX_BACKOFF_MS, retries: 10 } });
    const partitionOf = this.partitionOf;
    const createPartitioner: ICustomPartitioner = () => {
      const choose = Partitioners.DefaultPartitioner();
      return (args) => {
        const known = partitionOf.get(args.message);
        if (known !== undefined && known < args.partitionMetadata.length) return known;
        const p = choose(args);
        partitionOf.set(args.message, p);
        return p;
      };
    };
    this.producer = this.producerClient.producer({
      createPartitioner,
      allowAutoTopicCreation: true,
      idempotent: settings.producer.idempotent,
      maxInFlightRequests: settings.producer.idempotent ? 1 : undefined,
    });
    this.admin = this.producerClient.admin({ retry: { retries: 0 } });
  }

  /** Never fails: an unreachable cluster makes the broker not ready, and it keeps trying. */
  async start(): Promise<void> {
    void this.ensureProducer().catch(() => undefined);
    void this.probe();
    this.probeTimer = setInterval(() => void this.probe(), this.settings.healthCheckIntervalMs);
    this.probeTimer.unref();
  }

  /** Flushes what is queued (bounded by the ack timeout), stops consumers (committing), disconnects. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.probeTimer);
    await Promise.allSettled([...this.subscriptions].map((s) => s.stop()));
    this.kick();
    await Promise.race([this.idle(), sleep(this.settings.producer.ackTimeoutMs + 500)]);
    // A connect still retrying against an unreachable cluster is not worth waiting for.
    const disconnect = Promise.allSettled([this.producer.disconnect(), this.admin.disconnect()]);
    await Promise.race([disconnect, sleep(this.settings.connectionTimeoutMs)]);
  }

  /** Never called: canReconfigure() says no, so a changed kafka broker is replaced. */
  reconfigure(): void {}

  health(): Health {
    return this.state;
  }

  topicProblem(topic: string): string | undefined {
    if (!LEGAL_TOPIC.test(topic) || topic === '.' || topic === '..') return 'Kafka topic names are 1 to 249 characters among A-Z a-z 0-9 . _ -';
    return undefined;
  }

  publish(topic: string, msg: Message): Promise<Delivery> {
    if (this.stopped) return Promise.reject(new Error(`broker '${this.name}' is stopped`));
    return new Promise<Delivery>((resolve, reject) => {
      const record: KafkaRecord = {
        key: msg.key,
        value: encodeValue(msg.value ?? null),
        headers: msg.headers,
        timestamp: msg.timestamp ? String(msg.timestamp) : undefined,
      };
      const p: Pending = { at: performance.now(), topic, record, resolve, reject, settled: false, timer: undefined as unknown as NodeJS.Timeout };
      p.timer = setTimeout(() => {
        if (p.settled) return;
        p.settled = true;
        this.telemetry?.producerError();
        reject(new AckTimeout(this.name, this.settings.producer.ackTimeoutMs));
        void this.probe();
      }, this.settings.producer.ackTimeoutMs);
      this.queue.push(p);
      if (this.queue.length >= this.settings.producer.maxBatchRecords) this.batchFull?.();
      this.kick();
    });
  }

  subscribe(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Subscription {
    const sub = new KafkaSubscription(this.consumerClient, this.settings, spec, handler, this.log.child({ route: spec.route, group: spec.group, topic: spec.topic }), this.telemetry);
    this.subscriptions.add(sub);
    sub.start();
    return {
      stop: async () => {
        await sub.stop();
        this.subscriptions.delete(sub);
      },
    };
  }

  /** What each subscription last learnt about its partitions (read by /metrics; no request to the cluster). */
  consumerLag(): ConsumerLag[] {
    return [...this.subscriptions].flatMap((s) => s.lag());
  }

  // ---- producing ---------------------------------------------------------------------------

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
   * when it is full or lingerMs after its oldest record (as Kafka's own producer does).
   */
  private async flush(): Promise<void> {
    while (this.queue.length > 0) {
      const wait = this.settings.producer.lingerMs - (performance.now() - this.queue[0]!.at);
      if (wait >= 1 && this.queue.length < this.settings.producer.maxBatchRecords && !this.stopped) {
        await new Promise<void>((r) => {
          const timer = setTimeout(r, wait);
          this.batchFull = () => (clearTimeout(timer), r());
        });
        this.batchFull = undefined;
      }
      const batch = this.queue.splice(0, this.settings.producer.maxBatchRecords).filter((p) => !p.settled);
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
    try {
      await this.ensureProducer();
      const acks = ACKS[this.settings.producer.acks];
      const results = await this.producer.sendBatch({
        acks,
        timeout: this.settings.producer.ackTimeoutMs,
        compression: COMPRESSION[this.settings.producer.compression],
        topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
      });
      const base = new Map<string, bigint>();
      for (const r of results) base.set(`${r.topicName}\0${r.partition}`, BigInt(r.baseOffset ?? '-1'));
      // Records of one partition are sent in batch order, so the n-th gets baseOffset + n.
      const seen = new Map<string, bigint>();
      for (const p of batch) {
        const partition = this.partitionOf.get(p.record) ?? -1;
        const k = `${p.topic}\0${partition}`;
        const n = seen.get(k) ?? 0n;
        seen.set(k, n + 1n);
        const b = base.get(k);
        const offset = acks === 0 || b === undefined || b < 0n ? '-1' : String(b + n);
        settle(p, { broker: this.name, topic: p.topic, partition, offset });
      }
      this.markReady();
    } catch (err) {
      const e = err as Error;
      this.log.warn({ records: batch.length, err: e.message }, 'produce failed');
      for (const p of batch) if (settle(p, undefined, e)) this.telemetry?.producerError();
      void this.probe();
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

  // ---- health ------------------------------------------------------------------------------

  /** Asks the cluster for its metadata; a fresh connection after each failure, so recovery is noticed. */
  private probe(): Promise<void> {
    if (this.probing || this.stopped) return this.probing ?? Promise.resolve();
    this.probing = (async () => {
      try {
        if (!this.adminConnected) {
          await this.admin.connect();
          this.adminConnected = true;
        }
        if (this.stopped) return void (await this.admin.disconnect());
        await this.admin.describeCluster();
        this.markReady();
      } catch (err) {
        this.markDown((err as Error).message);
        if (this.adminConnected) await this.admin.disconnect().catch(() => undefined);
        this.adminConnected = false;
      }
    })().finally(() => (this.probing = undefined));
    return this.probing;
  }

  private markReady(): void {
    if (this.state.ready || this.stopped) return;
    this.state = { ready: true, detail: 'connected' };
    this.log.info({ brokers: this.settings.brokers }, 'kafka broker connected');
  }

  private markDown(reason: string): void {
    if (this.stopped) return;
    // Logged once per outage (and once when the first attempt fails), not at every probe.
    const news = this.state.ready || this.state.detail === 'connecting';
    this.state = { ready: false, detail: `unreachable: ${reason}` };
    if (news) this.log.warn({ brokers: this.settings.brokers, err: reason }, 'kafka broker unreachable');
  }
}

/** False when the publish was already answered (its ack timeout fired first). */
function settle(p: Pending, delivery: Delivery | undefined, err?: Error): boolean {
  if (p.settled) return false;
  p.settled = true;
  clearTimeout(p.timer);
  if (delivery) p.resolve(delivery);
  else p.reject(err ?? new Error('not delivered'));
  return true;
}

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
class KafkaSubscription {
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

export const kafkaBroker = defineBroker<typeof kafkaOptions, KafkaSettings>({
  options: kafkaOptions,
  doc: kafkaDoc,
  compile: compileKafka,
  // Connections, producer and consumer groups are built from every option: a change means a new client.
  canReconfigure: () => false,
  create: (name, settings, env) => new KafkaBroker(name, settings, env),
});
