import type { Batch, Consumer, EachBatchPayload, KafkaMessage } from 'kafkajs';
import type { Logger } from '../../../log.js';
import { Backoff, pause } from '../../../core/backoff.js';
import { decodeValue, isEncoded, nextIncarnation, ORIGINAL, newHeaders, SOURCE_INCARNATION, type Message } from '../../../core/message.js';
import type { BrokerTelemetry, ConsumerLag, Health, SubscribeSpec } from '../../contracts.js';
import type { KafkaSettings } from '../kafka.js';
import { sleep } from '../../../core/within.js';
import { newFetchBudget, withBatchBound } from './codecs.js';
import { undecodable, type StandIn } from './stand-ins.js';
import { InFlightWindow } from '../../../core/in-flight-window.js';
import { kafkaErrorCode, TopicMissing, unknownTopic } from './leaders.js';
import { subscriptionRoundRobin } from './assigner.js';
import { onOffsetReset, type OffsetReset } from './kafkajs.js';

const NO_KEYS: readonly string[] = [];

/** A topic's partition offsets as the cluster answers them now: first and next offsets, and a group's commits (absent: none). */
export interface PartitionOffsets {
  ends: Map<number, { low: bigint; high: bigint }>;
  committed: Map<number, bigint>;
}

/** How often, at most, a route whose record is retried asks the cluster for its partitions' offsets. */
const STALLED_LAG_ASK_MS = 1000;
/** How long a record is in hand before that: the route's first tries (100 ms doubling) are over by then. */
const STALLED_LAG_AFTER_MS = 3000;

type Kafka = InstanceType<typeof import('kafkajs').Kafka>;

/** How long stopping a consumer may wait for the record in hand before leaving it uncommitted. */
const STOP_TIMEOUT_MS = 15000;
/** kafkajs' own retries of one request (a fetch, a commit) before it gives up and the consumer crashes. */
const MAX_RETRY_BACKOFF_MS = 5000;
/** A crashed consumer is started again after 0.5 s, then 1, 2, ... up to 30 s while it keeps crashing. */
const FIRST_RESTART_MS = 500;
const MAX_RESTART_MS = 30000;
/** A route whose topic does not exist yet looks again at least this often: creating it is an operator's minute, and a Metadata request is cheap. */
const MAX_MISSING_TOPIC_LOOK_MS = 5000;
/** Tries of the commit of a batch's handled records that fails retriably (after 300 ms, then doubling: 4.5 s of waits in all). */
const HANDLED_COMMIT_TRIES = 5;
const FIRST_HANDLED_COMMIT_RETRY_MS = 300;
/** kafkajs' errors of a group rebalancing (its isRebalancing): kafkajs rejoins on them, and a commit waits for nothing. */
const REBALANCING = new Set(['REBALANCE_IN_PROGRESS', 'NOT_COORDINATOR_FOR_GROUP', 'ILLEGAL_GENERATION']);

/**
 * One route's consumer group member. Records of a partition are handled one after the other, and
 * an offset is committed only once the handler resolved for it (and every record before it).
 * The handler resolves once its route is done with the record (the route retries its targets),
 * while the member keeps heartbeating; it rejects when the route stops with the record in hand,
 * which is left uncommitted then, as when the member stops or loses the partition.
 *
 * Nothing leaves it dead: whatever kafkajs throws (a coordinator error, a fetch it cannot parse)
 * crashes only the current consumer, and a new one starts with backoff; meanwhile health() says
 * why, for /readyz and /admin/status. A batch no codec can decode reaches it as stand-in records
 * (./codecs.ts): it goes to the route's dead-letter topic, or, without one, its partition stops
 * there and health() says so until the route is rebuilt.
 */
export class KafkaSubscription {
  private consumer: Consumer | undefined;
  private stopping = false;
  private wake: () => void = () => undefined;
  private readonly stopped: Promise<void>;
  /**
   * The handler's calls in progress, counted per handler: a new one after each hand-over
   * (handOver), which waits for its predecessor's to end.
   */
  private turn: HandlerTurn = { held: 0, idle: undefined };
  private loop: Promise<void> | undefined;
  /** Whether stop() must wait for the consumer: only once it may hold partitions. */
  private phase: 'connecting' | 'consuming' = 'connecting';
  /** Why the consumer is not consuming (it crashed and waits to start again), or undefined. */
  private problem: string | undefined;
  /**
   * Whether the warning that the route's topic is missing was logged since the consumer last
   * consumed: it looks again every 5 s at most, and a topic created a day later was 17,000 lines.
   */
  private toldMissing = false;
  /**
   * From the consumer's start, and from each rebalance, until its first fetch after joining: the
   * member waits for the group to give it partitions (up to the session timeout after a restart).
   * Said in /admin/status, not in /readyz: a 503 at every rebalance would take the instance out of
   * rotation while it serves its other routes and listeners (spec §7's readiness is listeners bound
   * and brokers connected).
   */
  private joining = true;
  /** Partitions stopped at a batch nobody can decode (no dead-letter topic), with why. */
  private readonly halted = new Map<number, string>();
  /** Per assigned partition: its high watermark as of the last fetched batch, and the lag it gave. */
  private readonly highWatermarks = new Map<number, bigint>();
  private readonly lags = new Map<number, number>();
  /** Per assigned partition: the offset of the next record to handle, as of the last one handled. */
  private readonly positions = new Map<number, bigint>();
  /** The partitions the group gave this member at its last join. */
  private assigned = new Set<number>();
  private lastLagAsk = 0;
  /** An ask of the partitions' offsets is out: the next waits for its answer (a cluster slower than STALLED_LAG_ASK_MS would have them pile up). */
  private askingLag = false;
  /** A commit made while a record is in hand (commitDoneWhileInHand) is out: the next beat makes none. */
  private committing = false;
  /**
   * Per partition: the commit past a transaction marker fetched alone, while kafkajs may still
   * retry it (it never rejects). The partition's next batch waits for it: a retry landing after a
   * later commit moved the group's offset back, and the records after the marker came again after
   * a restart or a rebalance.
   */
  private readonly markerCommits = new Map<number, Promise<void>>();
  private readonly fromBeginning: boolean;
  /** The member the group made of the current consumer (at its last join): offset resets are told per member. */
  private memberId: string | undefined;
  /**
   * The topic's incarnation since it was seen missing (deleted, to be created again: every
   * partition counts from 0 again), and per partition since a fetch found its offset past the
   * partition's end (the topic made again between two fetches, or its offsets set back): the
   * records after either carry it (SOURCE_INCARNATION), so an event stream's ids follow the new
   * offsets instead of staying at the old ones.
   */
  private topicIncarnation: number | undefined;
  private readonly partitionIncarnations = new Map<number, number>();

  constructor(
    private readonly client: Kafka,
    private readonly settings: KafkaSettings,
    private spec: SubscribeSpec,
    private handler: (msg: Message) => Promise<void>,
    private readonly log: Logger,
    private readonly telemetry: BrokerTelemetry | undefined,
    /** Asks the cluster for the topic's offsets (the broker's admin client); lag while a record is retried comes from it. */
    private readonly askOffsets?: (group: string, topic: string) => Promise<PartitionOffsets>,
  ) {
    this.stopped = new Promise((r) => (this.wake = r));
    // Route, then broker, then at-least-once: a group's partitions without a committed offset start at the oldest record.
    this.fromBeginning = (spec.startFrom ?? settings.consumer.startFrom ?? spec.defaultStartFrom ?? 'earliest') === 'earliest';
  }

  start(): void {
    // Every consumer of this loop decodes its fetches under the broker's bound on decompressed batches.
    this.loop = withBatchBound(this.settings.consumer, () => this.run());
  }

  /**
   * A reload's rebuilt route asks the same (Subscription.handOver): the consumer goes on in its
   * group (no leave, no join, no rebalance, no pause), and the records it has not yet handed to a
   * route go to `handler`, in order. Records the old handler holds finish there and are committed
   * as always; one it gives back (it stopped with it in hand) is handed to `handler` at once. A
   * window of several records in hand (`inFlight`) lets the old handler's records end before it
   * starts the new one's. Resolves once the old handler holds no record.
   */
  handOver(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Promise<void> {
    this.spec = spec;
    this.handler = handler;
    const old = this.turn;
    this.turn = { held: 0, idle: undefined };
    this.log.info('subscription handed over to the rebuilt route');
    // The rebuilt route has a dead-letter topic: partitions halted at an undecodable batch fetch it
    // again (nothing of it was resolved) and dead-letter it, as a new member would from the commit.
    if (spec.undecodable && this.halted.size > 0) {
      const partitions = [...this.halted.keys()];
      this.halted.clear();
      try {
        this.consumer?.resume([{ topic: spec.topic, partitions }]);
      } catch {
        // A consumer restarting after a crash has not run yet: it fetches from the committed offset, the batch, anyway.
      }
      this.log.info({ partitions }, 'halted partitions resumed: the rebuilt route dead-letters their undecodable batch');
    }
    return old.held === 0 ? Promise.resolve() : new Promise<void>((r) => (old.idle = r));
  }

  health(): Health {
    if (this.problem) return { ready: false, detail: this.problem };
    if (this.halted.size > 0) return { ready: false, detail: [...this.halted.values()].join('; ') };
    if (this.joining) return { ready: true, detail: `joining consumer group '${this.spec.group}': consuming once the group gives this member its partitions` };
    return { ready: true };
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
    this.positions.set(partition, nextOffset);
    const hw = this.highWatermarks.get(partition);
    if (hw !== undefined) this.lags.set(partition, Number(hw > nextOffset ? hw - nextOffset : 0n));
  }

  /**
   * While the route retries a record, the member fetches nothing more (kafkajs' fetcher waits for
   * its batches), so the high watermarks of the last fetch would stand for as long as the target is
   * down: lag read 1 where 8 records waited (spec-checklist 1891). Once a record has been in hand
   * 3 s, at each heartbeat (at most once a second, one ask at a time) the cluster is asked: every
   * assigned partition's end, and the group's commit where this member has handled nothing of a
   * partition since it joined (without one, the partition's first offset when the route starts
   * there; else it stays unreported).
   */
  private askLag(): void {
    const ask = this.askOffsets;
    if (!ask || this.stopping || this.askingLag || Date.now() - this.lastLagAsk < STALLED_LAG_ASK_MS) return;
    this.lastLagAsk = Date.now();
    this.askingLag = true;
    const assigned = this.assigned;
    void ask(this.spec.group, this.spec.topic)
      .then(
        ({ ends, committed }) => {
          if (this.stopping || assigned !== this.assigned) return;
          for (const partition of assigned) {
            const end = ends.get(partition);
            if (end === undefined) continue;
            const position = this.positions.get(partition) ?? committed.get(partition) ?? (this.fromBeginning ? end.low : undefined);
            if (position === undefined) continue;
            const known = this.highWatermarks.get(partition);
            if (known === undefined || end.high > known) this.highWatermarks.set(partition, end.high);
            this.noteLag(partition, position);
          }
        },
        (err: Error) => this.log.debug({ err: err.message }, "asking the partitions' offsets for the lag failed"),
      )
      .finally(() => {
        this.askingLag = false;
      });
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
    })();
    const outcome = await Promise.race([
      done.then(
        () => 'done' as const,
        () => 'done' as const,
      ),
      sleep(STOP_TIMEOUT_MS).then(() => 'late' as const),
    ]);
    if (outcome === 'late') this.log.warn({ waitedMs: STOP_TIMEOUT_MS }, 'consumer did not stop in time; its record in hand stays uncommitted and will be delivered again');
    else if (this.phase === 'consuming') this.log.info('consumer stopped; offsets committed');
    else this.log.info('consumer stopped before it could join its group');
  }

  /**
   * One consumer after the other until the route stops: each runs until it crashes, and the next
   * starts after a backoff that grows while consumers keep crashing without consuming.
   */
  private async run(): Promise<void> {
    const backoff = new Backoff(FIRST_RESTART_MS, MAX_RESTART_MS);
    while (!this.stopping) {
      const consumer = this.create(() => {
        backoff.reset();
        this.toldMissing = false;
      });
      this.consumer = consumer;
      let crashed!: (err: Error) => void;
      const crash = new Promise<Error>((r) => (crashed = r));
      consumer.on(consumer.events.CRASH, (e) => crashed(e.payload.error));
      const untell = onOffsetReset((reset) => this.offsetReset(reset));
      let why: Error;
      try {
        this.phase = 'connecting';
        await consumer.connect();
        if (!this.stopping) await consumer.subscribe({ topics: [this.spec.topic], fromBeginning: this.fromBeginning });
        if (!this.stopping) {
          this.phase = 'consuming';
          const every = this.settings.consumer.commitIntervalMs;
          await consumer.run({
            autoCommit: true,
            // Without an interval or a threshold kafkajs commits only at the end of each fetched
            // batch, and a crash in a batch of thousands of records would deliver them all again.
            autoCommitInterval: every > 0 ? every : null,
            autoCommitThreshold: every > 0 ? null : 1,
            eachBatchAutoResolve: false,
            partitionsConsumedConcurrently: this.settings.consumer.partitionsConsumedConcurrently,
            eachBatch: (payload) => this.handleBatch(payload),
          });
        }
        const ended = await Promise.race([crash, this.stopped.then(() => undefined)]);
        if (ended === undefined) {
          // Graceful: kafkajs finishes the batch in hand, commits what was handled, and leaves the
          // group, so whoever takes the partitions next (a restarted gateway too) joins at once.
          await consumer.disconnect().catch(() => undefined);
          return;
        }
        why = ended;
      } catch (err) {
        why = err as Error;
      } finally {
        untell();
      }
      // kafkajs disconnected a crashed consumer itself (leaving the group); a failed start may still hold connections.
      await consumer.disconnect().catch(() => undefined);
      if (this.stopping) return;
      // State first, cause after ': ': an open /readyz shows only the state (the cause may name hosts).
      const missing = unknownTopic(why);
      if (missing) this.topicIncarnation = nextIncarnation();
      const wait = missing ? Math.min(backoff.delay(), MAX_MISSING_TOPIC_LOOK_MS) : backoff.delay();
      if (missing) {
        // A cluster without auto-create answers a topic it lacks so; kafkajs' words for it
        // ("This server does not host this topic-partition") do not say the topic is missing.
        const said = `${new TopicMissing(this.spec.topic).message}; the route reads it once it does`;
        this.problem = `topic missing, looking again in ${wait} ms: ${said}`;
        // Once, then at debug: /readyz and /admin/status keep counting down each look.
        if (this.toldMissing) this.log.debug({ err: said, retryInMs: wait }, 'consumer waits for its topic to exist; looking again');
        else this.log.warn({ err: said, retryInMs: wait }, 'consumer waits for its topic to exist; looking again');
        this.toldMissing = true;
      } else {
        this.toldMissing = false;
        // Counted here only: a missing topic's looks are not crashes (the route waits, as its /readyz reason says).
        this.telemetry?.consumerCrash(this.spec.route);
        this.problem = `consumer crashed, restarting in ${wait} ms: ${why.message}`;
        this.log.warn({ err: why.message, kafkaError: kafkaErrorCode(why), retryInMs: wait }, 'consumer crashed; starting a new one');
      }
      await pause(wait, this.stopped);
      // The new consumer connects and joins the group, which can take until the crashed member's
      // session runs out (one that could not leave; on the mock, always): said as it is until it
      // consumes, not as a restart still to come.
      if (!missing) this.problem = `consumer crashed and was started again, not consuming yet: ${why.message}`;
    }
  }

  private create(onConsuming: () => void): Consumer {
    const c = this.settings.consumer;
    const consumer = this.client.consumer({
      groupId: this.spec.group,
      sessionTimeout: c.sessionTimeoutMs,
      heartbeatInterval: c.heartbeatIntervalMs,
      rebalanceTimeout: c.rebalanceTimeoutMs,
      maxWaitTimeInMs: c.maxWaitMs,
      allowAutoTopicCreation: true,
      // Each member is given partitions of its own topics only, also in a group whose members read different ones (a rolling update).
      partitionAssigners: [subscriptionRoundRobin],
      // Every crash comes to run(), which starts a fresh consumer: one restart policy, whatever the error.
      retry: { initialRetryTime: 300, maxRetryTime: MAX_RETRY_BACKOFF_MS, retries: 10, restartOnFailure: async () => false },
    });
    let joined = false;
    let joinedOnce = false;
    this.joining = true;
    consumer.on(consumer.events.REBALANCING, () => {
      this.joining = true;
    });
    consumer.on(consumer.events.GROUP_JOIN, (e) => {
      // The consumer's first join is its start; each later one a rebalance the member went through.
      if (joinedOnce) this.telemetry?.consumerRejoin(this.spec.route);
      joinedOnce = true;
      joined = true;
      this.memberId = e.payload.memberId;
      // Lag and halted partitions are reported for the partitions this member holds now.
      const mine = new Set(e.payload.memberAssignment[this.spec.topic] ?? []);
      for (const p of [...this.lags.keys()]) if (!mine.has(p)) this.lags.delete(p);
      this.assigned = mine;
      this.positions.clear();
      for (const p of [...this.halted.keys()]) if (!mine.has(p)) this.halted.delete(p);
      this.log.info({ memberId: e.payload.memberId, partitions: e.payload.memberAssignment[this.spec.topic] ?? [] }, 'consumer joined group');
    });
    consumer.on(consumer.events.FETCH_START, newFetchBudget);
    // A fetched batch of only records kafkajs does not hand over (a transaction's marker, aborted
    // records) never reaches eachBatch, and the lag must count it read too. kafkajs resolves it but
    // commits it only once its commit interval has passed since the last commit, which a quiet
    // partition never reaches, nor at a stop: the group's offset stayed before the marker (lag 1 to
    // Kafka's tools for ever, the marker and aborted records read again after a restart). Committed
    // here, as kafkajs commits at the end of a batch it hands over: every record before it is done.
    // At the batch's start, not its end: kafkajs' own commit of it (once its interval has passed)
    // is not retried, and when it fails the batch's end never comes.
    consumer.on(consumer.events.START_BATCH_PROCESS, ({ payload }) => {
      if (payload.batchSize !== 0 || payload.topic !== this.spec.topic) return;
      const next = BigInt(payload.lastOffset) + 1n;
      this.highWatermarks.set(payload.partition, BigInt(payload.highWatermark));
      this.noteLag(payload.partition, next);
      // After the partition's previous marker commit, if it is still retried: commits of a partition go out in order.
      const partition = payload.partition;
      const before = this.markerCommits.get(partition) ?? Promise.resolve();
      const settled = before
        .then(() => consumer.commitOffsets([{ topic: payload.topic, partition, offset: String(next) }]))
        .catch((err: Error) => this.log.debug({ partition, offset: String(next), err: err.message }, 'commit past a transaction marker failed; the next commit covers it'))
        .finally(() => {
          if (this.markerCommits.get(partition) === settled) this.markerCommits.delete(partition);
        });
      this.markerCommits.set(partition, settled);
    });
    // The first fetch after a join means every assigned partition has its starting offset.
    consumer.on(consumer.events.FETCH, () => {
      if (!joined) return;
      joined = false;
      this.joining = false;
      this.problem = undefined;
      onConsuming();
      this.log.info('consumer ready');
    });
    return consumer;
  }

  /**
   * kafkajs moved a partition of this member to its start position: the group's offset was out of
   * range (./kafkajs.ts). Said with where it was, what the partition holds and what that cost:
   * records removed before the route read them, or retained ones that startFrom: latest skips, are
   * never delivered (an error); an offset past the end only moves back (a warning).
   */
  private offsetReset(r: OffsetReset): void {
    if (r.groupId !== this.spec.group || r.memberId !== this.memberId || r.topic !== this.spec.topic) return;
    this.telemetry?.consumerError(this.spec.route);
    const startFrom = r.fromBeginning ? 'earliest' : 'latest';
    const fields = { partition: r.partition, offset: r.from, earliest: r.earliest, latest: r.latest, startFrom };
    if (r.from === undefined || r.earliest === undefined || r.latest === undefined) {
      this.log.error(
        fields,
        `consumer offset out of range: partition ${r.partition} of ${r.topic}: the group's offset${r.from === undefined ? '' : ` ${r.from}`} is not on the cluster; reading from the partition's ${startFrom} offset (startFrom: ${startFrom}); records between them are not delivered`,
      );
      return;
    }
    const from = BigInt(r.from);
    const earliest = BigInt(r.earliest);
    const latest = BigInt(r.latest);
    const to = r.fromBeginning ? earliest : latest;
    const holds = earliest < latest ? `offsets ${earliest} to ${latest - 1n}` : `no record, its next offset ${latest}`;
    const lost: string[] = [];
    if (from < earliest) lost.push(`records ${from} to ${earliest - 1n} were removed from the cluster (retention, or deleted) before this route read them`);
    const retainedFrom = from > earliest ? from : earliest;
    if (to > retainedFrom) lost.push(`records ${retainedFrom} to ${to - 1n}, still on the cluster, are skipped`);
    if (from > latest) this.partitionIncarnations.set(r.partition, nextIncarnation());
    const past = from > latest ? "; the offset is past the partition's end (the topic was recreated, or the group's offsets were set past it)" : '';
    const said = `partition ${r.partition} of ${r.topic}: the group's offset ${from} is out of range (the partition holds ${holds}); reading from ${to} (startFrom: ${startFrom})${past}`;
    if (lost.length > 0) this.log.error(fields, `consumer offset out of range: ${said}; ${lost.join(', and ')}: not delivered`);
    else this.log.warn(fields, `consumer offset out of range: ${said}`);
  }

  private async handleBatch(payload: EachBatchPayload): Promise<void> {
    const { batch, resolveOffset, heartbeat, commitOffsetsIfNecessary, isRunning, isStale, pause } = payload;
    const { topic, partition } = batch;
    const member: Membership = { heartbeat, commit: () => commitOffsetsIfNecessary() };
    this.highWatermarks.set(partition, BigInt(batch.highWatermark));
    const marker = this.markerCommits.get(partition);
    if (marker) await this.beatingUntil(marker, heartbeat);
    if ((this.spec.inFlight ?? 1) > 1) return this.handleBatchWindowed(payload);
    for (const message of batch.messages) {
      if (!isRunning() || isStale() || this.stopping) return;
      const offset = BigInt(message.offset);
      this.noteLag(partition, offset);
      const broken = undecodable(message);
      const handled = broken ? await this.undecodable(batch, message, broken, member) : await this.each(topic, partition, message, member);
      if (handled === 'halt') {
        pause();
        return;
      }
      if (!handled) return;
      resolveOffset(message.offset);
      this.noteLag(partition, offset + 1n);
      await heartbeat();
      await this.commitIfDue(commitOffsetsIfNecessary, partition);
    }
    // Every record handed over is done; records after them that kafkajs kept back (a transaction's
    // marker) are resolved with the last one, so the partition is read to the batch's last offset.
    this.noteLag(partition, BigInt(batch.lastOffset()) + 1n);
    await this.commitHandled(payload);
  }

  /**
   * Commits what the batch handled and kafkajs has not committed yet. kafkajs commits it at the
   * batch's end once and never again when that commit fails (a coordinator busy loading, say): on
   * a quiet partition the group's offset stayed before handled records (lag to Kafka's tools, the
   * records delivered again after a restart or a rebalance) until another record came. Here a
   * retriable failure is tried again, the membership kept alive between tries; a rebalance, a stop
   * or the last try leaves it to kafkajs' own commit at the batch's end, as before.
   */
  private async commitHandled({ batch, uncommittedOffsets, commitOffsetsIfNecessary, heartbeat, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const { topic, partition } = batch;
    for (let attempt = 1; ; attempt++) {
      // kafkajs keeps its offsets by partition as object keys: a partition here is its number's text.
      const offset = uncommittedOffsets()
        .topics.find((t) => t.topic === topic)
        ?.partitions.find((p) => String(p.partition) === String(partition))?.offset;
      if (offset === undefined) return;
      try {
        await commitOffsetsIfNecessary({ topics: [{ topic, partitions: [{ partition, offset }] }] });
        return;
      } catch (err) {
        const e = err as Error;
        const last = !retriableCommitFailure(e) || attempt === HANDLED_COMMIT_TRIES || !isRunning() || isStale() || this.stopping;
        this.log.debug({ partition, offset, err: e.message, attempt }, last ? 'commit of handled records failed; the next commit covers it' : 'commit of handled records failed; trying again');
        if (last) return;
      }
      await pause(FIRST_HANDLED_COMMIT_RETRY_MS * 2 ** (attempt - 1), this.stopped);
      // A stop kafkajs began itself meanwhile (another partition's loop crashed): no more tries to hold its restart up.
      if (this.stopping || !isRunning() || isStale()) return;
      // Throws while the group rebalances: the batch ends there, and kafkajs rejoins.
      await heartbeat();
    }
  }

  /**
   * The commit kafkajs' interval asks for between records. A retriable failure (a coordinator
   * still loading) is left to the next one and to the batch's end (commitHandled): thrown, it ended
   * the batch, kafkajs tried the commit once more at once and never again, and a quiet partition
   * stayed uncommitted. A rebalance, or a failure not retriable, is thrown as before: kafkajs rejoins.
   */
  private async commitIfDue(commitOffsetsIfNecessary: () => Promise<void>, partition: number): Promise<void> {
    try {
      await commitOffsetsIfNecessary();
    } catch (err) {
      if (!retriableCommitFailure(err as Error)) throw err;
      this.log.debug({ partition, err: (err as Error).message }, "commit between records failed; the next one or the batch's end covers it");
    }
  }

  /**
   * The records of a batch with up to `spec.inFlight` in hand at once (./in-flight-window.ts):
   * offsets are resolved and committed up to the first record not yet handled, records sharing
   * an order key one after the other. A batch that cannot be decoded waits until the window is
   * empty and is then handled alone, as in the one-at-a-time loop.
   */
  private async handleBatchWindowed(payload: EachBatchPayload): Promise<void> {
    const { batch, resolveOffset, heartbeat, commitOffsetsIfNecessary, isRunning, isStale, pause } = payload;
    const { topic, partition } = batch;
    const member: Membership = { heartbeat, commit: () => commitOffsetsIfNecessary() };
    let window = new InFlightWindow<string>(this.spec.inFlight ?? 1);
    let turn = this.turn;
    let orderKeys = this.spec.orderKeys;
    const going = () => isRunning() && !isStale() && !this.stopping && !window.broken;
    // Resolving is bookkeeping (kafkajs commits what was resolved, also when the member stops); committing is a request, made from the loop.
    const settled = () => {
      const offset = window.committable();
      if (offset === undefined) return;
      resolveOffset(offset);
      this.noteLag(partition, BigInt(offset) + 1n);
    };
    const commit = async () => {
      await heartbeat();
      await this.commitIfDue(commitOffsetsIfNecessary, partition);
    };
    try {
      for (const message of batch.messages) {
        await window.room();
        await commit();
        if (!going()) break;
        const broken = undecodable(message);
        if (broken) {
          await window.idle();
          await commit();
          if (!going()) break;
          const handled = await this.undecodable(batch, message, broken, member);
          if (handled === 'halt') {
            pause();
            return;
          }
          if (!handled) break;
          resolveOffset(message.offset);
          await commit();
          continue;
        }
        if (turn !== this.turn) {
          // Handed over (handOver): the old route's records end before the new route's start, in a
          // window of the new route's size with its order keys (a route at 1 takes the rest of the batch one at a time).
          await window.idle();
          turn = this.turn;
          orderKeys = this.spec.orderKeys;
          window = new InFlightWindow<string>(this.spec.inFlight ?? 1);
        }
        const msg = this.stamped(toMessage(topic, partition, message));
        const keys = orderKeys ? await orderKeys(msg) : NO_KEYS;
        // Each record keeps the membership alive while it is retried.
        window.start(
          message.offset,
          keys,
          () =>
            this.persist(
              member,
              () => this.handler(msg),
              (err, retryInMs) => this.log.error({ partition, offset: message.offset, err: err.message, retryInMs }, 'record not consumed; retrying it'),
            ),
          settled,
        );
      }
    } finally {
      await window.idle();
    }
    await commit().catch(() => undefined);
    if (going()) await this.commitHandled(payload);
  }

  /** `msg` with the incarnation of its partition, when the topic or the partition was seen made again. */
  private stamped(msg: Message): Message {
    const incarnation = Math.max(this.topicIncarnation ?? 0, this.partitionIncarnations.get(msg.partition!) ?? 0);
    if (incarnation > 0) msg[SOURCE_INCARNATION] = incarnation;
    return msg;
  }

  /** Waits for `done` (or the stop), keeping the membership alive meanwhile. */
  private async beatingUntil(done: Promise<void>, heartbeat: () => Promise<void>): Promise<void> {
    const beat = setInterval(() => void heartbeat().catch(() => undefined), this.settings.consumer.heartbeatIntervalMs);
    try {
      await Promise.race([done, this.stopped]);
    } finally {
      clearInterval(beat);
    }
  }

  /** Retries the record until the handler takes it; false when the member stops first (left uncommitted). */
  private async each(topic: string, partition: number, message: KafkaMessage, member: Membership): Promise<boolean> {
    const msg = this.stamped(toMessage(topic, partition, message));
    return this.persist(
      member,
      () => this.handler(msg),
      (err, retryInMs) => this.log.error({ partition, offset: message.offset, err: err.message, retryInMs }, 'record not consumed; retrying it'),
    );
  }

  /**
   * A stand-in for what could not be decoded: a record of a batch no codec could decode, or one
   * record that cannot be read. A batch's first stand-in carries the raw batch to the route's
   * dead-letter topic and the others only move the offset past it; a record's carries the record.
   * With no dead-letter topic the partition halts here, loudly, and nothing from there is committed.
   */
  private async undecodable(batch: Batch, message: KafkaMessage, broken: StandIn, member: Membership): Promise<boolean | 'halt'> {
    const { topic, partition } = batch;
    const what = broken.unit === 'batch' ? 'record batch' : 'record';
    if (!this.spec.undecodable) {
      const detail = `partition ${partition} of ${topic} stopped at offset ${message.offset}: a ${what} there cannot be decoded (${broken.reason}); give the route a deadletter topic to move past it`;
      if (!this.halted.has(partition)) {
        this.telemetry?.consumerError(this.spec.route);
        this.log.error({ partition, offset: message.offset, reason: broken.reason }, `consumer stopped on a partition: ${detail}`);
      }
      this.halted.set(partition, detail);
      return 'halt';
    }
    if (!broken.bytes) return true;
    // A batch's stand-in has the batch's first timestamp (its records' deltas are 0), as the cluster stored it; a record's its own.
    const lastOffset = broken.lastOffset ?? message.offset;
    const raw = { unit: broken.unit, topic, partition, offset: message.offset, lastOffset, timestamp: Number(message.timestamp), reason: broken.reason, bytes: broken.bytes };
    let dropped = false;
    const sent = await this.persist(
      member,
      async () => {
        // The route's at each try: a reload's rebuilt route takes the subscription over with its own (handOver).
        const deadletter = this.spec.undecodable;
        if (!deadletter) {
          dropped = true;
          return;
        }
        await deadletter(raw);
        this.log.warn({ partition, offset: raw.offset, lastOffset: raw.lastOffset, reason: raw.reason }, `undecodable ${what} sent to the dead-letter topic`);
      },
      (err, retryInMs) => this.log.error({ partition, offset: message.offset, err: err.message, retryInMs }, `undecodable ${what} not dead-lettered; retrying`),
    );
    // Handed over to a rebuilt route without a dead-letter topic while retrying: the partition halts here.
    return sent && dropped ? this.undecodable(batch, message, broken, member) : sent;
  }

  /**
   * While a record is in hand, the records handled before it (and those of other partitions) are
   * committed as kafkajs' interval says, one commit at a time. The loops commit only between
   * records, so a record retried for as long as its target was down held back the commit of those
   * done before it: filtered, dead-lettered and delivered ones came again after a crash or a
   * rebalance, and Kafka's tools counted them as lag (spec-checklist 2461).
   */
  private commitDoneWhileInHand(member: Membership): void {
    if (this.committing || this.stopping) return;
    this.committing = true;
    void member
      .commit()
      .catch((err: Error) => this.log.debug({ err: err.message }, 'commit while a record is in hand failed; the next one covers it'))
      .finally(() => {
        this.committing = false;
      });
  }

  /**
   * Runs `attempt` until it resolves, heartbeating and committing what is done meanwhile; false when the member stops or loses
   * the partition first. The route retries deliveries itself (core/backoff.ts) and rejects only
   * when it stops with the record in hand — a give-back, by which time this member is stopping
   * (not counted as an error, not retried) or handed over to a rebuilt route (which takes it at once). What is retried here, by the
   * same policy, is the one attempt the route does not retry: sending an undecodable batch to the
   * dead-letter topic (docs/architecture.md, "Retries and dead-lettering").
   */
  private async persist(member: Membership, attempt: () => Promise<void>, failed: (err: Error, retryInMs: number) => void): Promise<boolean> {
    const backoff = new Backoff();
    for (;;) {
      let wait = 0;
      if (this.stopping) return false;
      // A handler may take long (targets retrying with backoff): keep the membership alive meanwhile.
      const since = Date.now();
      const beat = setInterval(() => {
        void member.heartbeat().catch(() => undefined);
        this.commitDoneWhileInHand(member);
        // A record in hand this long (its targets retried): the partitions' lag comes from the cluster meanwhile.
        if (Date.now() - since >= STALLED_LAG_AFTER_MS) this.askLag();
      }, this.settings.consumer.heartbeatIntervalMs);
      const turn = this.turn;
      turn.held++;
      try {
        await attempt();
        return true;
      } catch (err) {
        if (this.stopping) return false;
        // Given back by the route a reload rebuilt (it stopped with the record in hand): its successor takes it now.
        if (turn !== this.turn) continue;
        this.telemetry?.consumerError(this.spec.route);
        wait = backoff.delay();
        failed(err as Error, wait);
      } finally {
        clearInterval(beat);
        if (--turn.held === 0) turn.idle?.();
      }
      await pause(wait, this.stopped);
      if (this.stopping) return false;
      // Throws when the group rebalances: the record stays uncommitted for whoever gets the partition.
      await member.heartbeat();
    }
  }
}

/** A commit's failure worth trying again without a rejoin: retriable, and not one of a group rebalancing. */
function retriableCommitFailure(e: Error & { retriable?: boolean; type?: string }): boolean {
  return e.retriable === true && !REBALANCING.has(e.type ?? '');
}

/** What a record in hand keeps alive while it is handled: the membership, and the commit of the records done before it. */
interface Membership {
  heartbeat: () => Promise<void>;
  commit: () => Promise<void>;
}

/** The calls in progress of one handler (KafkaSubscription.handOver waits for its predecessor's to end). */
interface HandlerTurn {
  held: number;
  idle: (() => void) | undefined;
}

export function toMessage(topic: string, partition: number, m: KafkaMessage): Message {
  const headers = newHeaders();
  const rawHeaders = newHeaders<Buffer | null | (Buffer | null)[]>();
  if (m.headers) {
    for (const [name, v] of Object.entries(m.headers)) {
      if (v === undefined) continue;
      // A header repeated in the record: the last one wins, as in a map (the original keeps them all).
      const last = Array.isArray(v) ? v[v.length - 1] : v;
      // A header without a value (null, which kcat's `-H name` and Kafka's clients write) reads as
      // empty, as the kafka listener reads it; the original keeps the null for a Kafka copy.
      headers[name] = last === null || last === undefined ? '' : String(last);
      rawHeaders[name] = v as Buffer | null | (Buffer | null)[];
    }
  }
  // A compressed value (content-encoding) is its bytes (core/message.ts, isEncoded).
  const value = m.value === null ? null : isEncoded(headers) ? m.value : decodeValue(m.value.toString('utf8'));
  const key = m.key === null || m.key === undefined ? null : m.key.toString('utf8');
  return {
    value,
    key,
    headers,
    topic,
    partition,
    offset: m.offset,
    timestamp: Number(m.timestamp),
    // The bytes, so that a copy to a broker is byte for byte where no step changed the record.
    [ORIGINAL]: { value: m.value, key: m.key ?? null, headers: rawHeaders, decoded: { value, key, headers } },
  };
}
