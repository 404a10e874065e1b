/**
 * A nats broker's consume routes: a core subscription (at most once), handing its messages to the
 * route one at a time, in order, or a JetStream durable consumer (at least once, each message
 * acknowledged after every target accepted it), with up to `inFlight` (a webhook route's
 * `concurrency`) in hand at once, those sharing an order key (`orderBy`) one after the other.
 */

import type { ConsumerConfig, ConsumerInfo, ConsumerMessages, JetStreamManager, JsMsg, NatsConnection, Subscription } from 'nats';
import type { Logger } from '../../../log.js';
import { nextIncarnation, SOURCE_INCARNATION, type Message } from '../../../core/message.js';
import type { BrokerTelemetry, Health, SubscribeSpec } from '../../contracts.js';
import { handOver, Relay } from '../acknowledgement.js';
import { InFlightWindow } from '../../../core/in-flight-window.js';
import type { NatsSettings } from '../nats.js';
import { reconnectBackoff } from '../../../core/backoff.js';
import { FLOOD_LOG_INTERVAL_MS, RateLimitedWarning } from '../../../core/rate-limited-warning.js';
import { sleep } from '../../../core/within.js';
import { MissingTopology, notFoundOn } from '../missing-topology.js';
import { coreMessage, consumedHeaders, streamMessage, type ConsumedHeaders } from './consumed.js';
import { lib } from './lib.js';
import { consumerName, streamFor, subjectsOverlap } from './subjects.js';
import { handledKey, holdHandled, type HandledHold } from './handled.js';

/** What a subscription needs of its broker: the streams the broker declared, and their state. */
export interface StreamHost {
  readonly name: string;
  connected(): boolean;
  streamProblem(name: string): string | undefined;
  streamManager(): JetStreamManager | undefined;
  streamSeen(name: string, created: string): void;
  streamGone(name: string, detail: string): void;
  takeSourceEnd(route: string, topic: string, created: string): number | undefined;
}

/** What a core message waiting for its route costs beyond its payload (measured: ~300 bytes), counted against `corePendingBytes`. */
const HELD_MESSAGE_BYTES = 512;

const NO_KEYS: readonly string[] = [];
const NOTHING = (): void => undefined;

/** A JetStream acknowledgement's payload. */
const ACK = new TextEncoder().encode('+ACK');
/** A negative acknowledgement: delivered again at once, after those the consumer already queued for redelivery. */
const NAK = new TextEncoder().encode('-NAK');
/**
 * A negative acknowledgement due in a nanosecond: nats-server takes the message off its redelivery
 * queue (where one that outlived its ack wait waits) and makes it due again now. The plain NAK
 * sent after it then queues it anew, in the order the route gives its messages back.
 */
const NAK_REQUEUED = new TextEncoder().encode('-NAK {"delay":1}');

/** A JetStream consumer's unacknowledged messages, in pulls (`prefetch`): room for windows lost with connections, and for other instances sharing it. */
const MAX_ACK_PENDING_WINDOWS = 10;

/**
 * How long a consumer another instance made again for its own subject must show no reader (no
 * pull waiting, nothing delivered or acknowledged) before a route that left it to that instance
 * takes it back. A live reader always has a pull waiting (the client pulls again before its
 * batch is in), so this only tells a stopped instance from a quiet subject.
 */
const UNREAD_FOR_MS = 5000;

/**
 * How long a route waiting for another instance's reader, finding the group's consumer gone, gives
 * another waiting instance to make it again (its take-back deletes, then adds: one round trip).
 */
const TAKE_BACK_ADDS_WITHIN_MS = 1000;

/** How long a JetStream route is done with every message it had before it asks its consumer for the lag (lookAtLagWhenQuiet). */
const LAG_LOOK_AFTER_MS = 1000;

/** The group's consumer reads another subject, made again for it by another instance (putConsumer). */
class ReadElsewhere extends Error {}

/**
 * One consume route: a JetStream consumer (durable, named after the group; a per-instance group
 * gets one that the server removes once idle) when the subject is a stream's, else a core
 * subscription (a queue group unless per instance). Core messages are handled one at a time, in
 * order; JetStream ones up to `spec.inFlight` at once (JetStream acknowledges each message by
 * itself), at most `prefetch` pulled.
 */
export class NatsSubscription {
  private stopping = false;
  private running: Promise<void> | undefined;
  private close: (() => void) | undefined;
  /** Resolves when the route stops: a read waiting for room in its window goes on, to collect what its client holds. */
  private readonly stopped: Promise<void>;
  private stoppedNow!: () => void;
  /** Messages the JetStream consumer has not delivered yet, plus the one in hand; unknown for core subscriptions. */
  lag: number | undefined;
  /** JetStream messages this route took into hand: a look at the lag meant for a quiet route is dropped once one more came. */
  private deliveries = 0;
  private lagLook: NodeJS.Timeout | undefined;
  /**
   * Stream sequences of the JetStream messages this route's consumer acknowledged lately, to know a
   * redelivered copy: the consumer's memory, which a reload's next subscription of it takes on (./handled.ts).
   */
  private handled: HandledHold | undefined;
  /** When the stream this route read last was created. */
  private handledOf: string | undefined;
  /**
   * Set once this route read a stream made again (another creation time than the one it read
   * before): the messages after carry it (SOURCE_INCARNATION), so an event stream's ids follow the
   * new stream's sequences, numbered from 1 again, instead of staying at the old one's.
   */
  private incarnation: number | undefined;
  /** Said once that an existing consumer keeps its own start (putConsumer). */
  private saidKept = false;
  /** Whether sayReplaced warned that an operator's max_deliver or backoff on the consumer was replaced. */
  private saidReplaced = false;
  /** The stream this route reads, while it is missing (or its broker could not declare it). */
  private readonly streamMissing: MissingTopology;
  /** Ends the wait for the stream early, when the broker finds it. */
  private wake: (() => void) | undefined;
  /** The route messages go to: a reload's rebuilt route takes its predecessor's place (handOver). */
  private readonly relay: Relay;
  /** Counts hand-overs: the JetStream messages after one start in a window of the new route's size, once the old route's are done. */
  private turn = 0;
  /** This route made or took its group's consumer for its subject: a subject found changed since is another instance's config (putConsumer). */
  private hadConsumer = false;
  /** The stream's last sequence when this route first read it (and the stream's creation): where a consumer it makes again for its new subject starts at the latest (recreatedFrom). */
  private startedAt: { created: string; lastSeq: number } | undefined;
  /** While the group's consumer reads another instance's subject: why this route waits, and what the consumer last showed of its reader, since when. */
  private elsewhere: { detail: string; seen: string; since: number } | undefined;
  constructor(
    private readonly broker: StreamHost,
    private settings: NatsSettings,
    private spec: SubscribeSpec,
    handler: (msg: Message) => Promise<void>,
    private readonly log: Logger,
    private readonly telemetry: BrokerTelemetry | undefined,
  ) {
    this.relay = new Relay(handler);
    this.stopped = new Promise<void>((resolve) => (this.stoppedNow = resolve));
    this.streamMissing = new MissingTopology(log, `nats stream '${streamFor(settings, spec.topic)?.[0] ?? spec.topic}'`);
  }

  /**
   * Why the last try to start reading failed while connected: the server refused the consumer or
   * the read (`maximum consumers limit reached`; a work-queue stream takes one consumer per
   * subject: `filtered consumer not unique on workqueue stream`). The route reads nothing
   * meanwhile, and said ready it would hide that. Undefined once it reads.
   */
  private startProblem: string | undefined;

  /**
   * Not ready while the stream it reads is missing, its group's consumer reads another instance's
   * subject, or the server refuses the route's consumer (`maximum consumers limit reached`); the
   * connection's state is the broker's.
   */
  health(): Health {
    const elsewhere = this.elsewhere?.detail;
    if (elsewhere !== undefined) return { ready: false, detail: elsewhere };
    const missing = this.streamMissing.health();
    if (!missing.ready || this.startProblem === undefined) return missing;
    return { ready: false, detail: `consumer could not start, retrying: ${this.startProblem}` };
  }

  /** The broker has stream `name` now: a route waiting for it tries at once. */
  streamFound(name: string): void {
    if (streamFor(this.settings, this.spec.topic)?.[0] === name) this.wake?.();
  }

  get route(): string {
    return this.spec.route;
  }

  get topic(): string {
    return this.spec.topic;
  }

  /** The broker was reconfigured in place (only keys read per message changed: `corePendingBytes`). */
  reconfigure(settings: NatsSettings): void {
    this.settings = settings;
  }

  attach(nc: NatsConnection): void {
    if (this.running || this.stopping) return;
    const stream = streamFor(this.settings, this.spec.topic);
    this.running = stream ? this.consumeStream(nc, stream[0]) : this.consumeCore(nc);
  }

  /**
   * A core subscription. The client reads its socket as fast as the server sends and queues what
   * the route has not taken yet, without bound, while the server never sees a slow consumer: a
   * route whose targets stall held every message published meanwhile (200,000 messages of 1 KB
   * took 300 MB, growing). So messages wait here as the bytes that came, decoded only when their
   * turn comes, up to `corePendingBytes`; past that they are dropped, said and counted: core NATS
   * is at most once, and nats-server drops for a slow consumer too.
   */
  private consumeCore(nc: NatsConnection): Promise<void> {
    const queue: { data: Buffer; subject: string; headers: ConsumedHeaders; at: number }[] = [];
    let head = 0;
    let pending = 0;
    let pumping: Promise<void> | undefined;
    // Said at once, then at most every 10 s with the count since.
    const drops = new RateLimitedWarning<number>(FLOOD_LOG_INTERVAL_MS, (pendingBytes, dropped) =>
      this.log.warn({ dropped, pendingBytes, corePendingBytes: this.settings.corePendingBytes }, 'nats core messages dropped: the route is corePendingBytes behind its subscription'),
    );
    const pump = async () => {
      while (head < queue.length && !this.stopping) {
        const m = queue[head]!;
        queue[head++] = undefined!;
        await handOver(coreMessage(m.data, m.subject, m.headers, m.at), this.relay, this.handOverOptions());
        pending -= m.data.length + HELD_MESSAGE_BYTES;
        // Drop the handled front now and then, so a queue that never empties does not grow.
        if (head > 1024 && head * 2 > queue.length) {
          queue.splice(0, head);
          head = 0;
        }
      }
      queue.length = head = 0;
      pumping = undefined;
    };
    const sub = nc.subscribe(this.spec.topic, {
      ...(this.spec.perInstance ? {} : { queue: this.spec.group }),
      callback: (err, m) => {
        if (err || this.stopping) return;
        const size = m.data.length + HELD_MESSAGE_BYTES;
        // Read per message: a reload may change it in place (NatsBroker.reconfigure).
        if (pending > 0 && pending + size > this.settings.corePendingBytes) {
          this.telemetry?.consumerError(this.spec.route);
          drops.occurred(pending);
          return;
        }
        pending += size;
        // Copied: the client's message data is a view of its read buffer.
        queue.push({ data: Buffer.from(m.data), subject: m.subject, headers: consumedHeaders(m), at: Date.now() });
        pumping ??= pump();
      },
    });
    this.close = () => {
      sub.unsubscribe();
      drops.close();
    };
    // Said once nats-server answered a PING sent after the SUB, so it has the subscription: said
    // at once, a message published right after "consumer ready" could still find no subscriber
    // and be gone (seen under load). A connection lost meanwhile resubscribes when it is back.
    nc.flush().then(
      () => {
        if (!this.stopping) this.log.info({ subject: this.spec.topic, queue: this.spec.perInstance ? undefined : this.spec.group }, 'consumer ready');
      },
      () => undefined,
    );
    // Ends once unsubscribed and the message in hand is done (those queued behind it are not handed over once stopping).
    return sub.closed.then(() => pumping);
  }

  /** Creates (or updates) the consumer, then reads it; starts over after anything that ends the read. */
  private async consumeStream(nc: NatsConnection, stream: string): Promise<void> {
    const name = consumerName(this.spec.group, this.spec.instanceId);
    const backoff = reconnectBackoff();
    while (!this.stopping) {
      let failure: Error | undefined;
      /** The read began ("consumer ready"): a failure after it stopped a consumer that ran. */
      let reading = false;
      /** Connected as the try began: a try that met an outage failed for it (the broker says so), not for the consumer. */
      const connectedAtStart = this.broker.connected();
      /** The message this read acknowledged last: its acknowledgement is confirmed on stop (settle). */
      let lastAcked: JsMsg | undefined;
      /** Every message this read holds unacknowledged (in hand, waiting for its key or for room, given back), by stream sequence: its latest copy, given back in order on stop (settle). */
      const unacked = new Map<number, JsMsg>();
      /** The messages in hand (up to `spec.inFlight`), and by stream sequence whether each was taken, for a copy JetStream sends meanwhile. */
      let window = new InFlightWindow<number>(this.spec.inFlight ?? 1);
      const inHand = new Map<number, Promise<boolean>>();
      /** What the consumer had left to deliver as of the latest message it delivered. */
      let pending = 0;
      let turn = this.turn;
      /** Hands `m` to the route, keeping it alive meanwhile, and acknowledges it once taken. */
      const take = async (m: JsMsg): Promise<boolean> => {
        const accepted = await handOver(this.stamped(streamMessage(m)), this.relay, {
          ...this.handOverOptions(),
          // JetStream redelivers a message held past ack_wait: tell it we are still at it.
          keepAlive: { everyMs: Math.max(100, Math.floor(this.settings.ackWaitMs / 3)), beat: () => m.working() },
        });
        // Not accepted (stopping): no ack, so the consumer delivers it again after ack_wait.
        if (accepted) {
          m.ack();
          lastAcked = m;
          this.handled?.sequences.add(m.seq);
          unacked.delete(m.seq);
        }
        return accepted;
      };
      // The stream missing (or not declared): only this route waits, said once per change.
      const missing = this.broker.streamProblem(stream);
      const jsm = this.broker.streamManager();
      if (missing !== undefined || jsm === undefined) {
        const wait = backoff.delay();
        this.streamMissing.missing(missing ?? `stream '${stream}' not ready on broker '${this.broker.name}'`, wait);
        await this.sleepUnlessWoken(wait);
        continue;
      }
      try {
        // The stream may have been made again since the broker declared it (its messages numbered from 1 again).
        const { created, state } = await jsm.streams.info(stream);
        this.broker.streamSeen(stream, created);
        if (this.startedAt?.created !== created) {
          // Looked at before the reload's swap, when it did (markSourceEnd): the instance's own publishes since come after it (spec-checklist 2162).
          const before = this.broker.takeSourceEnd(this.spec.route, this.spec.topic, created);
          this.startedAt = { created, lastSeq: Math.min(state.last_seq, before ?? Number.POSITIVE_INFINITY) };
        }
        // Per creation: sequences the old stream's messages had are the new one's too, and a
        // redelivered copy of a message never handled here (its pull lost with a connection) was
        // acknowledged unread.
        if (this.handled?.key !== handledKey(stream, created, name)) {
          this.handled?.release();
          this.handled = holdHandled(stream, created, name);
        }
        if (this.handledOf !== undefined && created !== this.handledOf) this.incarnation = nextIncarnation();
        this.handledOf = created;
        await this.putConsumer(jsm, stream, name);
        if (this.stopping) return; // putConsumer left the consumer as it was
        const consumer = await nc.jetstream().consumers.get(stream, name);
        // abort_on_missing_resource: a consumer (or its stream) deleted on the server ends the read,
        // and the loop makes it again; without it the client pulled a deleted consumer for ever, the
        // route silent and ready.
        const messages = await consumer.consume({ max_messages: this.settings.prefetch, abort_on_missing_resource: true });
        this.close = () => this.endPull(nc, messages);
        if (this.stopping) {
          // Not awaited: the client ends the read through its own queue, which only an iteration
          // runs; awaited with none, this stop (and a SIGTERM's shutdown) waited for ever.
          void messages.close();
          return;
        }
        this.streamMissing.found();
        this.elsewhere = undefined;
        this.startProblem = undefined;
        reading = true;
        this.log.info({ stream, consumer: name, subject: this.spec.topic }, 'consumer ready');
        backoff.reset();
        for await (const m of messages) {
          // A copy JetStream sent again while the first waited behind a message the targets held
          // past ackWaitMs: only the one in hand is kept alive (working()), the ones pulled behind it
          // are redelivered into the same buffer. The route took the first: acknowledge the copy.
          // The same for a consumer made again (putConsumer, from the oldest message handled here).
          if (this.handled?.sequences.has(m.seq)) {
            m.ack();
            lastAcked = m;
            continue;
          }
          // The latest copy: nats-server takes a negative acknowledgement only for a message's latest delivery.
          unacked.set(m.seq, m);
          // A copy of a message in hand: acknowledged once the route took the first.
          const held = inHand.get(m.seq);
          if (held) {
            void held.then((taken) => taken && m.ack());
            continue;
          }
          // Stopping: the read goes on only to collect what the client still holds, given back once the route's are (settle).
          if (this.stopping) continue;
          if (turn !== this.turn) {
            // Handed over: the old route's messages end before the new route's start, in a window of its size.
            await window.idle();
            turn = this.turn;
            window = new InFlightWindow<number>(this.spec.inFlight ?? 1);
          }
          const room = window.room();
          if (room) await Promise.race([room, this.stopped]);
          if (this.stopping) continue;
          pending = m.info.pending;
          this.lag = pending + inHand.size + 1;
          this.deliveries++;
          const orderKeys = window.capacity > 1 ? this.spec.orderKeys : undefined;
          const keys = orderKeys ? await Promise.resolve(orderKeys(streamMessage(m))).catch(() => NO_KEYS) : NO_KEYS;
          let settle!: (taken: boolean) => void;
          inHand.set(m.seq, new Promise<boolean>((r) => (settle = r)));
          window.start(
            m.seq,
            keys,
            () =>
              take(m).then((taken) => {
                inHand.delete(m.seq);
                // Acknowledged out of order: what is left is the latest count plus those still in hand.
                this.lag = pending + inHand.size;
                if (inHand.size === 0) this.lookAtLagWhenQuiet(jsm, stream, name, inHand);
                settle(taken);
                return taken;
              }),
            NOTHING,
          );
        }
        if (this.stopping) await this.dropPulls(jsm, stream, name);
        await window.idle();
      } catch (err) {
        await window.idle();
        if (!this.stopping) {
          // Deleted under the read: counted below once it is known not to be another instance's doing.
          if (!(err instanceof ReadElsewhere) && !this.deletedUnderRead(err as Error)) this.telemetry?.consumerError(this.spec.route);
          failure = err as Error;
        }
      }
      if (this.stopping) return this.settle(nc, lastAcked, unacked);
      // After a failure, or a read that ended by itself.
      const wait = backoff.delay();
      if (failure instanceof ReadElsewhere) {
        await this.sleepUnlessWoken(wait);
        continue;
      }
      // The stream deleted since the broker declared it: this route waits for it, as for one missing at the start.
      if (failure && /stream not found/i.test(failure.message)) {
        const detail = notFoundOn('stream', stream, this.broker.name, failure.message);
        this.streamMissing.missing(detail, wait);
        this.broker.streamGone(stream, detail);
      } else if (failure && this.deletedUnderRead(failure)) {
        // Made again for another subject by another instance (a rolling update), it is no failure:
        // the next round says what it is (ReadElsewhere). Looked at after the wait, by which that
        // instance has made it again.
        await sleep(wait);
        if (!(await this.readsAnotherSubject(jsm, stream, name))) {
          this.telemetry?.consumerError(this.spec.route);
          this.log.warn({ err: failure.message }, 'nats consumer stopped; starting it again');
        }
        continue;
      } else if (failure && !reading && connectedAtStart && this.broker.connected()) {
        // Refused before it read (a consumer over the stream's max_consumers, ...): the route is
        // not ready until a try succeeds, as an amqp consumer the server refuses is.
        this.startProblem = failure.message;
        this.log.error({ err: failure.message, retryInMs: wait }, 'nats consumer could not start; retrying');
      } else if (failure) this.log.warn({ err: failure.message, retryInMs: wait }, 'nats consumer stopped; starting it again');
      await sleep(wait);
    }
  }

  /** `msg` with the incarnation of its stream, once the route read one made again. */
  private stamped(msg: Message): Message {
    if (this.incarnation !== undefined) msg[SOURCE_INCARNATION] = this.incarnation;
    return msg;
  }

  /**
   * A delivery tells the consumer's undelivered count as of that delivery. Where several readers
   * share the consumer (instances, or routes of one group) what was left then may have gone to
   * another, and the route's lag stayed there for as long as no message came to it (1 on one
   * instance of two after every message was delivered). So a route done with every message it
   * had asks the consumer itself, once, when no other message came within LAG_LOOK_AFTER_MS.
   */
  private lookAtLagWhenQuiet(jsm: JetStreamManager, stream: string, name: string, inHand: ReadonlyMap<number, unknown>): void {
    clearTimeout(this.lagLook);
    const seen = this.deliveries;
    const current = () => !this.stopping && this.deliveries === seen;
    this.lagLook = setTimeout(() => {
      if (!current()) return;
      jsm.consumers.info(stream, name).then(
        (info) => {
          if (current()) this.lag = info.num_pending + inHand.size;
        },
        // Not answered (the connection lost, the consumer deleted): the read finds out for itself; the lag stays as it was.
        () => undefined,
      );
    }, LAG_LOOK_AFTER_MS);
    this.lagLook.unref();
  }

  /**
   * Creates the route's consumer on `stream`, or updates it. A new one starts where the route's
   * startFrom says; an existing one goes on from where it is, or, when the route's subject changed,
   * is made again from after the last message it acknowledged.
   */
  private async putConsumer(jsm: JetStreamManager, stream: string, name: string): Promise<void> {
    // A new consumer starts at the stream's oldest message unless the route wants live ones only (as Kafka groups do).
    const startFrom = this.spec.startFrom ?? this.spec.defaultStartFrom ?? 'earliest';
    const wanted = startFrom === 'latest' ? lib.DeliverPolicy.New : lib.DeliverPolicy.All;
    let existing = await consumerInfo(jsm, stream, name);
    if (!existing && this.elsewhere !== undefined && !this.stopping) {
      // Gone while this route waited for another instance's reader: another waiting instance is
      // taking it back, between its delete and its add. Made here from the oldest message this
      // route remembers handling, it had that instance's add refused (`start sequence can not be
      // updated`: a 5 s backoff) and delivered again what that instance had handled (5 of 20
      // take-backs with three instances, 5 messages twice in one: 2163). Looked at again first.
      await this.sleepUnlessWoken(TAKE_BACK_ADDS_WITHIN_MS);
      existing = await consumerInfo(jsm, stream, name);
    }
    // A stopping route reads nothing: a consumer it deleted or made now is one another instance
    // finds changed under it (a stop woke the wait above, and its add refused that take-back's).
    if (this.stopping) return;
    let start: Partial<ConsumerConfig> = { deliver_policy: wanted };
    if (existing && existing.config.filter_subject !== this.spec.topic && this.hadConsumer) this.leaveToOtherReader(existing, stream, name);
    if (existing && existing.config.filter_subject !== this.spec.topic) {
      // The route's subject changed. nats-server 2.9 accepts a new filter_subject in place but
      // then steps over the messages published after it (5 of 5 lost): recreate the consumer,
      // starting right after the last message it had acknowledged.
      // Already gone: another waiting instance takes it back at the same moment (both make it
      // again alike). A failure here left this route waiting out its grown backoff, not ready
      // for a reason no longer true (2065).
      await jsm.consumers.delete(stream, name).catch((err: Error) => {
        if (!/consumer not found/i.test(err.message)) throw err;
      });
      const fromSeq = this.recreatedFrom(existing);
      start = { deliver_policy: lib.DeliverPolicy.StartSequence, opt_start_seq: fromSeq };
      this.log.info(
        { stream, consumer: name, was: existing.config.filter_subject, subject: this.spec.topic, fromSeq, afterAcknowledged: resumeSeq(existing) },
        'the route reads another subject: consumer recreated, going on after the last message it acknowledged, or from where the stream ended when this route started if that is earlier',
      );
    } else if (!existing && this.hadConsumer && this.handled?.sequences.oldest() !== undefined) {
      // This route read the consumer, which is gone now (deleted on the server). Made again at
      // startFrom it handed the stream's every message again (earliest) or lost those not
      // acknowledged yet (latest): it starts at the oldest message the consumer's memory holds
      // (of the last 10,000), and those handled are acknowledged without handing them over. Not
      // for a route that never read it: the memory a removed route left is no reason to skip its
      // startFrom.
      start = { deliver_policy: lib.DeliverPolicy.StartSequence, opt_start_seq: this.handled.sequences.oldest() };
      this.log.warn(
        { stream, consumer: name, fromSeq: start.opt_start_seq },
        "the route's consumer was deleted on the server: made again from the oldest message the route remembers handling; those it handled are not delivered again",
      );
    } else if (!existing) {
      // Made anew at startFrom for a route that never read it: what it delivers is new to the
      // route. The memory a removed route of the same consumer left would acknowledge those
      // messages unsent (an operator who deleted the consumer to read the stream again got none
      // of its newest 10,000).
      this.handled?.sequences.clear();
    } else if (existing && existing.config.deliver_policy !== wanted) {
      // An existing one keeps its own start: nats-server refuses to change it ("deliver policy can
      // not be updated", retried for ever), and its acknowledged position is what the route resumes
      // from, as a Kafka group's committed offsets outrank startFrom.
      const { deliver_policy, opt_start_seq, opt_start_time } = existing.config;
      start = { deliver_policy, opt_start_seq, opt_start_time };
      if (!this.saidKept) {
        this.saidKept = true;
        this.log.info({ stream, consumer: name, startFrom, deliverPolicy: deliver_policy }, 'startFrom applies to a new consumer only: the existing consumer goes on from where it is');
      }
    }
    if (existing) this.sayReplaced(existing, stream, name);
    await jsm.consumers.add(stream, {
      ...(this.spec.perInstance ? { name, inactive_threshold: lib.nanos(300_000) } : { durable_name: name }),
      filter_subject: this.spec.topic,
      ack_policy: lib.AckPolicy.Explicit,
      ...start,
      ack_wait: lib.nanos(this.settings.ackWaitMs),
      // What bounds the route's memory is the pull (consume's `max_messages`). The consumer's cap on
      // unacknowledged messages must leave room beyond it: messages of a pull lost with a
      // connection (a server restart, a network cut) stay unacknowledged until ack_wait, and at
      // `prefetch` they blocked the route's every later pull that long.
      max_ack_pending: this.settings.prefetch * MAX_ACK_PENDING_WINDOWS,
    });
    this.hadConsumer = true;
  }

  /**
   * An operator's delivery limit or backoff on the consumer (made beforehand under the group's
   * name) is replaced by the add that follows: nats-server 2.9 takes the update without a word, and
   * the route retries and dead-letters by itself. Said once, as a warning: the operator's settings
   * are gone.
   */
  private sayReplaced(existing: ConsumerInfo, stream: string, name: string): void {
    const { max_deliver: maxDeliver, backoff } = existing.config;
    if (this.saidReplaced || ((maxDeliver === undefined || maxDeliver <= 0) && (backoff === undefined || backoff.length === 0))) return;
    this.saidReplaced = true;
    this.log.warn(
      { stream, consumer: name, maxDeliver, backoffMs: backoff?.map((n) => n / 1e6) },
      "the consumer's max_deliver and backoff set on the server are replaced by the route's (no delivery limit, no backoff): the route retries and dead-letters by itself",
    );
  }

  /**
   * Where the group's consumer, made again for this route's subject, starts: after the last
   * message it acknowledged (resumeSeq). In a rolling update the instances still on the old
   * subject move that floor on as they read, past the new subject's messages published meanwhile
   * (by the instances already on the new config), which no consumer of the group read: 6 of 6 were
   * lost (2060). So a route that never had the consumer (its subject is another config's) starts
   * no later than after the stream's last message when it started: every message of its subject
   * published since comes, none twice (the old consumer's filter took none of them). Not so for a
   * route taking the consumer back (it read its subject up to the floor itself), nor for a subject
   * that shares messages with the old one (those up to the floor were read).
   */
  private recreatedFrom(existing: ConsumerInfo): number {
    const afterAcknowledged = resumeSeq(existing);
    const theirs = existing.config.filter_subject;
    if (this.hadConsumer || this.startedAt === undefined || !theirs || subjectsOverlap(theirs, this.spec.topic) !== undefined) return afterAcknowledged;
    return Math.min(afterAcknowledged, this.startedAt.lastSeq + 1);
  }

  /** Whether the read ended because the consumer this route made or took was deleted on the server. */
  private deletedUnderRead(failure: Error): boolean {
    return this.hadConsumer && /consumer deleted/i.test(failure.message);
  }

  /** Whether the group's consumer, which this route read, reads another subject now (made again by another instance). */
  private async readsAnotherSubject(jsm: JetStreamManager, stream: string, name: string): Promise<boolean> {
    const existing = await consumerInfo(jsm, stream, name).catch(() => undefined);
    return existing !== undefined && existing.config.filter_subject !== this.spec.topic;
  }

  /**
   * The group's consumer, which this route read for its subject, was made again for another
   * subject: by another instance of the gateway with another config (a rolling update that changes
   * the route's subject; this route's own config changing it would be a new route). Made again
   * for this subject, each would take it from the other in turn, each time after the other's
   * acknowledged floor, skipping the messages of both subjects between (1465). So this route
   * leaves it to the other (throws ReadElsewhere, and is not ready meanwhile), and takes it back
   * only once nobody has read it for UNREAD_FOR_MS (that instance stopped): returns then.
   */
  private leaveToOtherReader(existing: ConsumerInfo, stream: string, name: string): void {
    const theirs = existing.config.filter_subject;
    const seen = `${existing.num_waiting}/${existing.delivered.stream_seq}/${existing.ack_floor.stream_seq}`;
    const now = Date.now();
    const before = this.elsewhere;
    if (before !== undefined && existing.num_waiting === 0 && before.seen === seen && now - before.since >= UNREAD_FOR_MS) {
      this.log.warn(
        { stream, consumer: name, subject: this.spec.topic, was: theirs, unreadForMs: now - before.since },
        "no instance reads the group's consumer for the other subject any more: this route takes it back",
      );
      return;
    }
    const detail = `nats consumer '${name}' of stream '${stream}' reads '${theirs}' for another instance of the group (another config): this route, on '${this.spec.topic}', waits until no instance reads it`;
    if (before === undefined) {
      this.log.warn(
        { stream, consumer: name, subject: this.spec.topic, theirs },
        "the group's consumer reads another subject, made again for it by another instance of the group (another config, as in a rolling update): this route leaves it to that instance and takes it back once nobody reads it",
      );
    }
    this.elsewhere = { detail, seen, since: before === undefined || before.seen !== seen || existing.num_waiting > 0 ? now : before.since };
    throw new ReadElsewhere(detail);
  }

  /**
   * Ends the consumer's read on a stop, so that the messages it gives back (settle) go to the next
   * reader of the consumer, in order, and not to this read's pull, still open on nats-server:
   *
   * - Behind what the client holds already: the pulls the client queued among those messages go
   *   out first, while its inbox is still read (a pull sent after the unsubscribe would wait on the
   *   server for an inbox nobody reads), and no pull goes out after it.
   * - A drain, not an unsubscribe: the messages nats-server sent before it saw the unsubscribe still
   *   reach the read (the client answers the PING after them); an unsubscribe dropped them in the
   *   client, unacknowledged until `ackWaitMs` and delivered after newer ones.
   *
   * The read ends once the client handed on every message it holds. nats-server keeps the read's
   * pull requests until it next looks at them (dropPulls).
   */
  private endPull(nc: NatsConnection, messages: ConsumerMessages): void {
    // The client's read has its subscription and its pull, though the ConsumerMessages type does not say them.
    const read = messages as unknown as { sub?: Subscription; pull?: (...args: unknown[]) => void };
    const sub = read.sub;
    if (!sub || typeof read.pull !== 'function' || sub.isClosed() || !this.broker.connected() || nc.isClosed()) {
      // Not awaited: the client ends the read through its own queue, which only an iteration runs.
      void messages.close();
      return;
    }
    // A function in the read's queue runs when the iteration reaches it (the route's loop reads on while stopping).
    (messages as unknown as { push(fn: () => void): void }).push(() => {
      read.pull = NOTHING;
      // Disconnected meanwhile, the drain's PING waits for the connection: the read ends unconfirmed.
      const timer = setTimeout(() => void messages.close(), this.settings.ackTimeoutMs);
      timer.unref();
      const closed = () => {
        clearTimeout(timer);
        void messages.close();
      };
      sub.drain().then(closed, closed);
    });
  }

  /**
   * Has nats-server drop this read's pull requests, once it ended (endPull): it keeps one whose
   * inbox nobody reads until it next looks at it, and nats-server 2.9 then took the next message
   * queued for redelivery (one given back here) off its queue for it, found the inbox unread, and
   * did not queue it again (it came `ackWaitMs` later, after newer ones) but delivered the
   * consumer's latest message again instead (nats-server pull request 5305, 2024). A consumer's
   * info is where it looks at them all.
   */
  private async dropPulls(jsm: JetStreamManager, stream: string, name: string): Promise<void> {
    if (!this.broker.connected()) return;
    await jsm.consumers.info(stream, name).catch(() => undefined);
  }

  /**
   * On stop (a reload's, a shutdown's), once the read ended: gives back every message this read
   * still holds unacknowledged, in stream order, and waits (at most `ackTimeoutMs`) until
   * nats-server has applied that and this route's acknowledgements.
   *
   * Given back, not left to `ackWaitMs`: the messages in hand were kept alive (working()) and the
   * ones pulled behind them were not, so those fell due first, and the next reader had each key's
   * newer messages before its older one. A negative acknowledgement of each, in stream order, queues
   * them for the next reader in that order (NAK_REQUEUED first takes off the queue one already there,
   * having outlived its ack wait).
   *
   * Waited for: an `ack()` is a plain publish, which the server queues for the consumer and applies
   * on its own: a consumer's state read right after can miss it, and a successor that recreates the
   * consumer from its ack floor (putConsumer, a changed subject) got the last message again, or
   * pulled newer messages before the given-back ones were queued. The consumer applies its
   * acknowledgements in order and answers one sent as a request once applied: the last one sent
   * again as a request covers them all (a second acknowledgement changes nothing). A hand-over
   * goes on with the same consumer and read, and gives back nothing.
   */
  private async settle(nc: NatsConnection, lastAcked: JsMsg | undefined, unacked: ReadonlyMap<number, JsMsg>): Promise<void> {
    // Disconnected: what is sent waits in the client until it is back, and so would this.
    if (!this.broker.connected() || nc.isClosed()) return;
    let last: { reply: string; payload: Uint8Array; seq: number } | undefined;
    for (const seq of [...unacked.keys()].sort((a, b) => a - b)) {
      const reply = replyOf(unacked.get(seq)!);
      if (reply === undefined) continue;
      nc.publish(reply, NAK_REQUEUED);
      nc.publish(reply, NAK);
      last = { reply, payload: NAK, seq };
    }
    if (last === undefined && lastAcked !== undefined) {
      const reply = replyOf(lastAcked);
      if (reply !== undefined) last = { reply, payload: ACK, seq: lastAcked.seq };
    }
    if (last === undefined) return;
    try {
      await nc.request(last.reply, last.payload, { timeout: this.settings.ackTimeoutMs });
    } catch (err) {
      // No responders: the consumer is gone (deleted meanwhile), there is no floor left to read.
      if ((err as { code?: string }).code === '503') return;
      this.log.warn(
        { err: (err as Error).message, streamSeq: last.seq },
        'nats-server did not confirm the acknowledgements before the route stopped: a consumer recreated from its ack floor may deliver a message again, and messages given back may come after newer ones',
      );
    }
  }

  private handOverOptions() {
    return { route: this.spec.route, log: this.log, telemetry: this.telemetry, stopping: this.isStopping };
  }

  /** handOver's `stopping`, made once: an arrow made per message is named by the bundle (keepNames), a defineProperty each. */
  private readonly isStopping = (): boolean => this.stopping;

  /** Waits `ms`, or less when the broker finds the stream (streamFound) or the route stops. */
  private sleepUnlessWoken(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.wake === done) this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.wake = done;
    });
  }

  /**
   * A reload's rebuilt route asks the same (Subscription.handOver): the core subscription or the
   * JetStream consumer's read goes on, and the next message is the new route's. A core subject
   * loses nothing between the two routes (an unsubscribe and a subscribe lost what came between).
   */
  handOver(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Promise<void> {
    this.spec = spec;
    this.turn++;
    this.log.info('subscription handed over to the rebuilt route');
    return this.relay.replace(handler);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.lagLook);
    this.stoppedNow();
    this.close?.();
    this.wake?.();
    await this.running;
    this.handled?.release();
  }
}

/**
 * The stream sequence a recreated consumer goes on from: after the last acknowledged message;
 * with none acknowledged, where it started (its delivered mark, or, once it delivered some, its
 * configured start, else the stream's first message: again rather than lost).
 */
function resumeSeq(c: ConsumerInfo): number {
  if (c.ack_floor.consumer_seq > 0) return c.ack_floor.stream_seq + 1;
  if (c.delivered.consumer_seq === 0) return c.delivered.stream_seq + 1;
  return c.config.opt_start_seq ?? 1;
}

/** Where a message's acknowledgements go (`$JS.ACK...`): the client's message has it, though the JsMsg type does not say it. */
function replyOf(m: JsMsg): string | undefined {
  const reply = (m as { reply?: unknown }).reply;
  return typeof reply === 'string' && reply !== '' ? reply : undefined;
}

/** The stream's consumer of that name, or undefined when there is none yet. */
async function consumerInfo(jsm: JetStreamManager, stream: string, name: string): Promise<ConsumerInfo | undefined> {
  try {
    return await jsm.consumers.info(stream, name);
  } catch (err) {
    if (/consumer not found/i.test((err as Error).message)) return undefined;
    throw err;
  }
}
