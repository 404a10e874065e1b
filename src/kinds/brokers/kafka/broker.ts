import kafkajs from './kafkajs.js';
import type { Admin, KafkaConfig } from 'kafkajs';
import type { Logger } from '../../../log.js';
import type { Delivery, Message } from '../../../core/message.js';
import type { BrokerRuntime, BrokerSpanFacts, BrokerTelemetry, ConsumerLag, Health, Retained, RuntimeEnv, SubscribeSpec, Subscription } from '../../contracts.js';
import { BROKER_CONNECTING } from '../../contracts.js';
import { KAFKA_PORTS, serverAddressOf } from '../server-url.js';
import type { KafkaSettings } from '../kafka.js';
import { clientConfig, HeldSockets } from './clients.js';
import { sleep } from '../../../core/within.js';
import { RecordProducer } from './producer.js';
import { RetainedReader } from './replay.js';
import { KafkaSubscription, type PartitionOffsets } from './subscription.js';
import { FirstConnection } from '../first-connection.js';
import { leavesOnStop } from '../acknowledgement.js';
import { kafkaTopicProblem } from './topics.js';

const { Kafka } = kafkajs;
type Kafka = InstanceType<typeof Kafka>;

const MAX_BACKOFF_MS = 5000;

/**
 * A Kafka cluster, through kafkajs: a producer (./producer.ts), one consumer group member per
 * consume route (./subscription.ts), a reader of retained records for event-stream resumes
 * (./replay.ts), and a health probe that tells /readyz whether the cluster
 * answers.
 */
export class KafkaBroker implements BrokerRuntime {
  readonly kind = 'kafka';
  private readonly log: Logger;
  private readonly consumerClient: Kafka;
  private readonly producer: RecordProducer;
  /** Reads topics again for reconnecting event-stream clients, without a consumer group. */
  private readonly retainedReader: RetainedReader;
  /** The health probe's client; made again at the next probe when a reload changed its request timeout (ackTimeoutMs). */
  private admin: Admin;
  private adminTimeoutMs: number;
  private adminConnected = false;
  /** The brokers the cluster named at the probe's last answer (`host:port`): a round that met one of them down asks the others. */
  private knownBrokers: readonly string[] = [];
  private readonly base: KafkaConfig;
  private state: { ready: boolean; detail: string } = { ready: false, detail: BROKER_CONNECTING };
  private readonly firstConnection = new FirstConnection();
  /** The sockets of the probe's client and of its asks (anyBrokerAnswers), closed at stop: a stopped broker holds none (spec-checklist 2103). */
  private readonly probeSockets = new HeldSockets();
  private readonly askSockets = new HeldSockets();
  private probeTimer: NodeJS.Timeout | undefined;
  private probing: Promise<void> | undefined;
  private stopped = false;
  private readonly subscriptions = new Set<KafkaSubscription>();
  /** What begins a consumed record's identity (sourceIdentity): a broker's name may hold any character, a NATS header value may not. */
  private readonly identityPrefix: string;
  /** Producer and consumer errors, for eventgate_kafka_*_errors_total. */
  private readonly telemetry: BrokerTelemetry | undefined;

  /** The first bootstrap server: it names the cluster; each write goes to its partition's leader, which no span knows ahead. */
  get spanFacts(): BrokerSpanFacts {
    return { server: serverAddressOf(this.settings.brokers[0]!, KAFKA_PORTS) };
  }

  constructor(
    readonly name: string,
    private settings: KafkaSettings,
    env: RuntimeEnv,
  ) {
    this.log = env.logger.child({ broker: name });
    this.identityPrefix = `kafka/${encodeURIComponent(name)}/`;
    this.telemetry = env.telemetry?.broker(name, 'kafka');
    const base = (this.base = clientConfig(settings, this.log));
    this.producer = new RecordProducer(name, base, settings, this.log, this.telemetry, {
      acknowledged: () => this.markReady(),
      failed: () => void this.probe(),
      unreachable: () => (this.state.ready || this.state.detail === 'connecting' ? undefined : this.state.detail),
    });
    // Consumers keep kafkajs' patient retries; the probe asks once and reports.
    this.consumerClient = new Kafka({ ...base, retry: { initialRetryTime: 300, maxRetryTime: MAX_BACKOFF_MS, retries: 10 } });
    // The replay retries itself, within its own deadline: kafkajs' retries only bridge a blip.
    this.retainedReader = new RetainedReader(new Kafka({ ...base, retry: { initialRetryTime: 100, maxRetryTime: 1000, retries: 3 } }), settings, this.log);
    this.adminTimeoutMs = adminTimeoutMs(settings);
    this.admin = this.newAdmin();
  }

  private newAdmin(): Admin {
    return new Kafka({ ...this.base, requestTimeout: this.adminTimeoutMs, retry: { retries: 0 }, socketFactory: this.probeSockets.factory }).admin({ retry: { retries: 0 } });
  }

  /** Never fails: an unreachable cluster makes the broker not ready, and it keeps trying. */
  async start(): Promise<void> {
    this.producer.start();
    void this.probe();
    this.probeEvery(this.settings.healthCheckIntervalMs);
  }

  private probeEvery(ms: number): void {
    clearInterval(this.probeTimer);
    this.probeTimer = setInterval(() => void this.probe(), ms);
    this.probeTimer.unref();
  }

  /** Stops consumers (committing), flushes what is queued (bounded by the ack timeout), disconnects. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.probeTimer);
    // An ask waiting on a silent server would hold its socket up to the request timeout: its answer no longer matters.
    this.askSockets.closeAll('the broker is stopping');
    await Promise.allSettled([...this.subscriptions].map((s) => s.stop()));
    // The probe's client is let go gracefully, within a bound; what it still holds then (a request in flight) is cut.
    const admin = Promise.race([this.admin.disconnect().catch(() => undefined), sleep(this.settings.connectionTimeoutMs)]).then(() => this.probeSockets.closeAll('the broker is stopping'));
    await Promise.all([this.producer.stop(), admin, this.retainedReader.stop()]);
  }

  /**
   * A reload changed only keys read per produce request (`producer.ackTimeoutMs`, `acks`,
   * `lingerMs`, `maxBatchRecords`, `maxBatchBytes`, `compression`) or the probe's period (the
   * kind's canReconfigure): the producer, the consumer group members and their connections stay.
   * The probe's client, whose request timeout follows ackTimeoutMs, is made again at its next round.
   */
  reconfigure(options: unknown): void {
    const next = options as KafkaSettings;
    const before = this.settings;
    this.settings = next;
    this.producer.reconfigure(next);
    if (next.healthCheckIntervalMs !== before.healthCheckIntervalMs && this.probeTimer !== undefined && !this.stopped) this.probeEvery(next.healthCheckIntervalMs);
  }

  health(): Health {
    return this.state;
  }

  /** The first time the cluster answered the probe or acknowledged a publish. */
  connectedOnce(until: Promise<unknown>): true | Promise<void> {
    return this.firstConnection.when(until);
  }

  topicProblem(topic: string): string | undefined {
    return kafkaTopicProblem(topic);
  }

  publish(topic: string, msg: Message): Promise<Delivery> {
    return this.producer.publish(topic, msg);
  }

  /** What an event-stream client missed: the topic read again after `after` (./replay.ts). */
  retained(topic: string, after: ReadonlyMap<number, bigint>): Promise<Retained> {
    return this.retainedReader.read(topic, after);
  }

  /**
   * One consumer group member for the route. A route a reload rebuilds, asking the same of this
   * broker (sameSubscription), takes it over (handOver): the member stays in its group, so the
   * group neither rebalances nor waits for a new member. Stopped, it commits and leaves the group.
   */
  subscribe(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Subscription {
    const log = this.log.child({ route: spec.route, group: spec.group, topic: spec.topic });
    const sub = new KafkaSubscription(this.consumerClient, this.settings, spec, handler, log, this.telemetry, (group, topic) => this.partitionOffsets(group, topic));
    this.subscriptions.add(sub);
    sub.start();
    return leavesOnStop(this.subscriptions, sub);
  }

  /**
   * A consumed record's identity: this broker's name, the topic, partition and offset, and the
   * record's timestamp, which tells a topic deleted and made again (its offsets start at 0 again)
   * from the one before. Known from the first record on: the cluster's id, which named it before,
   * comes only in a metadata answer, and kafkajs gives none while any topic of the cluster reports
   * an error, so records went without one before the first answer or while such a topic lasted
   * (spec-checklist 98). The name is also the same on every replica of a deployment.
   */
  sourceIdentity(msg: Message): string | undefined {
    if (msg.offset === null) return undefined;
    return `${this.identityPrefix}${msg.topic}/${msg.partition}/${msg.offset}/${msg.timestamp}`;
  }

  /** What each subscription last learnt about its partitions (read by /metrics; no request to the cluster). */
  consumerLag(): ConsumerLag[] {
    return [...this.subscriptions].flatMap((s) => s.lag());
  }

  /** A topic's first and next offsets and a group's commits, through the probe's client (connected once the cluster answered). */
  private async partitionOffsets(group: string, topic: string): Promise<PartitionOffsets> {
    if (!this.adminConnected) throw new Error('the cluster has not answered the health probe yet');
    const [ends, commits] = await Promise.all([this.admin.fetchTopicOffsets(topic), this.admin.fetchOffsets({ groupId: group, topics: [topic] })]);
    const committed = new Map<number, bigint>();
    for (const { partition, offset } of commits[0]?.partitions ?? []) if (BigInt(offset) >= 0n) committed.set(partition, BigInt(offset));
    return { ends: new Map(ends.map((e) => [e.partition, { low: BigInt(e.low), high: BigInt(e.high) }])), committed };
  }

  // ---- health ------------------------------------------------------------------------------

  /** Asks the cluster for its metadata; a fresh connection after each failure, so recovery is noticed. */
  private probe(): Promise<void> {
    if (this.probing || this.stopped) return this.probing ?? Promise.resolve();
    this.probing = (async () => {
      try {
        const timeout = adminTimeoutMs(this.settings);
        if (timeout !== this.adminTimeoutMs) {
          if (this.adminConnected) await this.admin.disconnect().catch(() => undefined);
          this.adminConnected = false;
          this.adminTimeoutMs = timeout;
          this.admin = this.newAdmin();
        }
        // describeCluster asks for every topic's metadata, and kafkajs throws on the first topic or
        // partition error in the answer (a partition whose leader is offline, a topic being deleted):
        // a cluster that answered is reachable, whatever one of its topics says.
        const cluster = await this.askCluster().catch(async (err: unknown) => {
          if (answeredWithError(err)) return undefined;
          // kafkajs sends the request to a broker of its metadata drawn at random, and (re)connects
          // through the next bootstrap server in the list: either can be a broker that is down. While
          // one broker of three was down, a third of the rounds failed and every instance's /readyz
          // flapped (spec-checklist 2066, 2100). The cluster answers when any of its brokers does.
          if (await this.anyBrokerAnswers()) return undefined;
          throw err;
        });
        if (cluster) this.knownBrokers = cluster.brokers.map(({ host, port }) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`));
        this.markReady();
        // A producer whose connect gave up (the cluster was down) connects again now that it answers.
        this.producer.start();
      } catch (err) {
        this.markDown((err as Error).message);
        if (this.adminConnected) await this.admin.disconnect().catch(() => undefined);
        this.adminConnected = false;
      }
    })().finally(() => (this.probing = undefined));
    return this.probing;
  }

  /** The probe's request, through its client (connected again after a failed round). Undefined once stopped. */
  private async askCluster(): Promise<Awaited<ReturnType<Admin['describeCluster']>> | undefined> {
    if (!this.adminConnected) {
      await this.admin.connect();
      this.adminConnected = true;
    }
    if (this.stopped) return void (await this.admin.disconnect());
    return this.admin.describeCluster();
  }

  /**
   * Whether any broker the cluster last named, or a bootstrap server, takes a connection of its own
   * (kafkajs' connect asks it its ApiVersions, and authenticates), each by a client of its own that
   * asks nothing else. All at once: asked in turn, brokers that drop packets (no refusal) would each
   * add connectionTimeoutMs, and a cluster wholly out of reach would be told several rounds late.
   */
  private async anyBrokerAnswers(): Promise<boolean> {
    if (this.stopped) return false;
    const addresses = [...new Set([...this.knownBrokers, ...this.settings.brokers])];
    return (await Promise.all(addresses.map((address) => this.brokerAnswers(address)))).includes(true);
  }

  private async brokerAnswers(address: string): Promise<boolean> {
    const one = new Kafka({ ...this.base, brokers: [address], requestTimeout: this.adminTimeoutMs, retry: { retries: 0 }, socketFactory: this.askSockets.factory }).admin({
      retry: { retries: 0 },
    });
    try {
      await one.connect();
      return true;
    } catch {
      return false;
    } finally {
      await one.disconnect().catch(() => undefined);
    }
  }

  private markReady(): void {
    if (this.state.ready || this.stopped) return;
    this.state = { ready: true, detail: 'connected' };
    this.firstConnection.connected();
    this.log.info({ brokers: this.settings.brokers }, 'kafka broker connected');
  }

  private markDown(reason: string): void {
    if (this.stopped) return;
    // Logged once per outage (and once when the first attempt fails), not at every probe.
    const news = this.state.ready || this.state.detail === 'connecting';
    this.state = { ready: false, detail: `unreachable: ${reason}` };
    this.producer.refuseUnsent(this.state.detail);
    if (news) this.log.warn({ brokers: this.settings.brokers, err: reason }, 'kafka broker unreachable');
  }
}

/** The probe's request timeout: the ack timeout, at least a second. */
function adminTimeoutMs(settings: KafkaSettings): number {
  return Math.max(settings.producer.ackTimeoutMs, 1000);
}

/** A Kafka error code in an answer (kafkajs' KafkaJSProtocolError, also inside a retry wrapper), not a failure to get one. */
function answeredWithError(err: unknown): boolean {
  const e = err as { name?: string; originalError?: { name?: string } } | undefined;
  return e?.name === 'KafkaJSProtocolError' || e?.originalError?.name === 'KafkaJSProtocolError';
}
