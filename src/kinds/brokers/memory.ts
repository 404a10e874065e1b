import { randomBytes } from 'node:crypto';
import { Backoff, pause } from '../../core/backoff.js';
import { approxMessageBytes } from '../../core/heap-size.js';
import { FLOOD_LOG_INTERVAL_MS, RateLimitedWarning } from '../../core/rate-limited-warning.js';
import { InFlightWindow } from '../../core/in-flight-window.js';
import { detachOriginal, liveOriginal, offsetText, ORIGINAL, SET_AS_CONSUMED, SOURCE_INCARNATION, type Delivery, type Message } from '../../core/message.js';
import {
  FOREIGN_POSITIONS,
  holdsNothing,
  namesNoPartitionOf,
  type BrokerRuntime,
  type BrokerTelemetry,
  type ConsumerLag,
  type Retained,
  type RetainedChunk,
  type RuntimeEnv,
  type SubscribeSpec,
  type Subscription,
} from '../contracts.js';
import { defineBroker, kindOptions, Type, type Static } from '../define.js';

const DEFAULT_RETAIN = 1000;
/** Slots a topic's ring starts with (a power of two). */
const MIN_RING = 16;
/** Estimated heap (heap-size.ts) one topic's retained messages may take. */
const DEFAULT_RETAIN_BYTES = 32 * 1024 * 1024;
/** Estimated heap all topics of one memory broker may take together. */
const DEFAULT_MAX_BYTES = 128 * 1024 * 1024;
/** Topics one memory broker may hold (a topic expression may name a new one per message). */
const DEFAULT_MAX_TOPICS = 10_000;
/** The longest topic name, as Kafka's. */
const MAX_TOPIC_NAME = 249;
/**
 * Messages the pumps hand out in one turn of the event loop. A message's handling and the publish
 * it makes are promise callbacks, so a route that feeds a topic it reads (or routes feeding each
 * other) never left the microtask queue: sockets, timers and signals waited for ever, SIGTERM too.
 */
const DISPATCHES_PER_TURN = 1000;

const options = kindOptions('memory', {
  retain: Type.Optional(Type.Integer({ minimum: 1, default: DEFAULT_RETAIN, description: 'Messages kept per topic for groups that have not read them yet.' })),
  retainBytes: Type.Optional(Type.Integer({ minimum: 1024, default: DEFAULT_RETAIN_BYTES, description: 'Estimated heap the retained messages of one topic may take; the oldest go first.' })),
  maxBytes: Type.Optional(
    Type.Integer({ minimum: 1024, default: DEFAULT_MAX_BYTES, description: 'Estimated heap all topics of this broker may take together; over it, the largest topic drops its oldest messages.' }),
  ),
  maxTopics: Type.Optional(
    Type.Integer({
      minimum: 1,
      default: DEFAULT_MAX_TOPICS,
      description:
        'Topics this broker may hold. A new topic over it (a topic expression names one per message) replaces the oldest topic no route reads, with a warning (`memory topic no route reads was dropped to make room for a new one (maxTopics)`: the first at once, then at most one line every 10 s, `topics` counting the topics it stands for and `dropped` their messages, so a client naming a new topic per request does not write a line per request); when every topic is read, the publish fails (503).',
    }),
  ),
});
type MemoryOptions = Static<typeof options>;

interface Member {
  route: string;
  handler: (msg: Message) => Promise<void>;
  /** Handlings of this member not yet settled (stop() waits for them). */
  inFlight: number;
  /** Called once `inFlight` drops to 0. */
  idle: (() => void)[];
  stopped: boolean;
  spec: SubscribeSpec;
}

/**
 * A consumer group: one committed position, messages shared round-robin between its members. Up
 * to the window's capacity are in hand at once (core/in-flight-window.ts): the `inFlight` of the
 * latest member (a route a reload rebuilt with another webhook `concurrency`): a member asking for
 * another capacity makes the group finish what it has in hand, then go on in a window of that
 * capacity (resize). `next` is the committed position, `dispatched` the next message to hand out.
 */
interface Group {
  name: string;
  next: number;
  dispatched: number;
  window: InFlightWindow<number>;
  /** The window's callback after each message: commits what became committable. */
  settled: () => void;
  /** Goes on pumping, once a message in hand settled (the pump waits for room). */
  wake: () => void;
  members: Member[];
  turn: number;
  pumping: boolean;
  /** The capacity a member joined with when it differs from the window's: the pump hands out nothing until the window is resized. */
  resizeTo?: number;
  /**
   * Messages retention dropped before this group read them, since the last `fell behind` line: a
   * slow route skips some at every message it takes, so the line is said at once, then at most
   * every FLOOD_LOG_INTERVAL_MS with the sum.
   */
  skipped: number;
  fellBehind?: RateLimitedWarning<string>;
}

/**
 * A topic's retained messages, addressed by offset, in a ring whose capacity is a power of two:
 * appending and dropping the oldest are O(1) and, once the ring has grown to the topic's size,
 * allocate nothing. (A splice per publish made every publish on a full topic cost O(retain); an
 * array compacted by slicing every 1,024 drops made and grew two new arrays that often, which the
 * young-generation collector then copied, docs/performance.md.)
 */
class Topic {
  private items: (Message | undefined)[] = new Array(MIN_RING);
  /** Estimated heap size of each retained message, in the same slots as `items`. */
  private sizes = new Float64Array(MIN_RING);
  /** Slot of the oldest retained message. */
  private head = 0;
  /** How many messages are retained. */
  size = 0;
  /** Estimated heap size of the retained messages. */
  bytes = 0;
  /** Offset of the oldest retained message. */
  first = 0;
  readonly groups = new Map<string, Group>();

  constructor(
    readonly name: string,
    /** This topic among every topic of its broker's life (one evicted and made again is another): for sourceIdentity. */
    readonly incarnation: string,
  ) {}

  get end(): number {
    return this.first + this.size;
  }

  /** The message at `offset`, which must be in [first, end). */
  at(offset: number): Message {
    return this.items[(this.head + offset - this.first) & (this.items.length - 1)]!;
  }

  push(msg: Message, size: number): void {
    if (this.size === this.items.length) this.resize(this.items.length * 2);
    const slot = (this.head + this.size) & (this.items.length - 1);
    this.items[slot] = msg;
    this.sizes[slot] = size;
    this.size++;
    this.bytes += size;
  }

  /** Drops the `n` oldest messages; returns the bytes freed. */
  dropOldest(n: number): number {
    const mask = this.items.length - 1;
    let freed = 0;
    for (let i = 0; i < n; i++) {
      freed += this.sizes[this.head]!;
      this.items[this.head] = undefined;
      this.head = (this.head + 1) & mask;
    }
    this.size -= n;
    this.bytes -= freed;
    this.first += n;
    // A topic whose retention shrank (a reload) gives the room back.
    if (this.items.length > MIN_RING && this.size * 4 < this.items.length) this.resize(Math.max(MIN_RING, this.items.length / 2));
    return freed;
  }

  /** Moves the retained messages, oldest first, into a ring of `capacity` slots (a power of two, at least `size`). */
  private resize(capacity: number): void {
    const items: (Message | undefined)[] = new Array(capacity);
    const sizes = new Float64Array(capacity);
    const mask = this.items.length - 1;
    for (let i = 0; i < this.size; i++) {
      const slot = (this.head + i) & mask;
      items[i] = this.items[slot];
      sizes[i] = this.sizes[slot]!;
    }
    this.items = items;
    this.sizes = sizes;
    this.head = 0;
  }
}

/**
 * In-process topics with bounded retention. Each group sees every message once, in order, and
 * a message counts as consumed only when its handler resolves (at-least-once, like Kafka).
 */
export class MemoryBroker implements BrokerRuntime {
  readonly kind = 'memory';
  private readonly topics = new Map<string, Topic>();
  private retain: number;
  private retainBytes: number;
  private maxBytes: number;
  private maxTopics: number;
  /** Estimated heap size of every topic's retained messages. */
  private bytes = 0;
  private stopped = false;
  /** Messages handed out since the event loop last had a turn (see DISPATCHES_PER_TURN). */
  private dispatchedThisTurn = 0;
  private readonly newTurn = () => {
    this.dispatchedThisTurn = 0;
  };
  private readonly telemetry: BrokerTelemetry | undefined;
  /**
   * This broker's life (random): its topics, and their offsets, begin again with a new one (a
   * restart, a reload that replaces the broker), so a consumed message's identity names it.
   */
  private readonly incarnation = randomBytes(6).toString('base64url');
  /** Topics made so far (the number in each Topic's incarnation). */
  private topicsMade = 0;
  /** settle() waiting for the groups to move on: told after each message a group settles. */
  private progressWaiters: (() => void)[] = [];
  /** Messages of the topics evicted since the last eviction line (evictTopic). */
  private messagesEvicted = 0;
  /**
   * One line per eviction at maxTopics would let a client naming a new topic per request (a topic
   * expression reading its input) write a warning per request: the flood warnings' bound instead,
   * `topics` counting the evictions a line stands for, `dropped` their retained messages.
   */
  private readonly topicEvicted = new RateLimitedWarning<{ topic: string; for: string }>(FLOOD_LOG_INTERVAL_MS, (last, count) => {
    this.env.logger.warn(
      { broker: this.name, topic: last.topic, for: last.for, topics: count, dropped: this.messagesEvicted, maxTopics: this.maxTopics, intervalMs: FLOOD_LOG_INTERVAL_MS },
      'memory topic no route reads was dropped to make room for a new one (maxTopics)',
    );
    this.messagesEvicted = 0;
  });

  constructor(
    readonly name: string,
    options: MemoryOptions,
    private readonly env: RuntimeEnv,
  ) {
    this.retain = options.retain ?? DEFAULT_RETAIN;
    this.retainBytes = options.retainBytes ?? DEFAULT_RETAIN_BYTES;
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
    this.maxTopics = options.maxTopics ?? DEFAULT_MAX_TOPICS;
    this.telemetry = env.telemetry?.broker(name, 'memory');
  }

  async start(): Promise<void> {}

  async stop(): Promise<void> {
    this.stopped = true;
    this.topicEvicted.close();
    const inFlight: Promise<void>[] = [];
    for (const t of this.topics.values())
      for (const g of t.groups.values()) {
        g.fellBehind?.close();
        inFlight.push(g.window.idle());
      }
    await Promise.allSettled(inFlight);
  }

  /**
   * Resolves once no consumer group with a member has anything left to handle: the shutdown's
   * wait (bounded by the drain timeout) for what this broker answered 2xx for and no route took
   * yet, since nothing outside the process would deliver it again.
   */
  async settle(): Promise<void> {
    while (this.undelivered() > 0) await new Promise<void>((r) => this.progressWaiters.push(r));
  }

  /** Messages the groups that have a member have not handled yet (the ones in hand included). */
  private undelivered(): number {
    let n = 0;
    for (const t of this.topics.values()) for (const g of t.groups.values()) if (g.members.length > 0) n += t.end - Math.max(g.next, t.first);
    return n;
  }

  reconfigure(options: unknown): void {
    const o = options as MemoryOptions;
    this.retain = o.retain ?? DEFAULT_RETAIN;
    this.retainBytes = o.retainBytes ?? DEFAULT_RETAIN_BYTES;
    this.maxBytes = o.maxBytes ?? DEFAULT_MAX_BYTES;
    this.maxTopics = o.maxTopics ?? DEFAULT_MAX_TOPICS;
    for (const t of this.topics.values()) this.trim(t);
    this.trimGlobal();
  }

  health() {
    return { ready: true };
  }

  /**
   * Offsets are numbered anew in each life of this broker (a restart, another instance): an
   * event-stream id of another life is another source's, not positions to read after, which
   * skipped, without a word, what the topic holds up to them. (A topic a route reads is never
   * evicted, so within one life its offsets go on.)
   */
  positionScope(): string {
    return this.incarnation;
  }

  /** A consumed message's identity: its topic's incarnation (this broker's life, the topic's) and its offset. */
  sourceIdentity(msg: Message): string | undefined {
    const topic = msg.topic === null ? undefined : this.topics.get(msg.topic);
    return topic === undefined || msg.offset === null ? undefined : `memory/${topic.incarnation}/${msg.offset}`;
  }

  /** A topic a topic expression named: any name up to Kafka's length. */
  topicProblem(topic: string): string | undefined {
    return topic.length > MAX_TOPIC_NAME ? `longer than ${MAX_TOPIC_NAME} characters` : undefined;
  }

  /** Per route: messages from the group's position (the one in hand included) to the end of the topic. */
  consumerLag(): ConsumerLag[] {
    const out: ConsumerLag[] = [];
    for (const [topic, t] of this.topics) {
      for (const g of t.groups.values()) {
        const lag = t.end - Math.max(g.next, t.first);
        for (const route of new Set(g.members.map((m) => m.route))) out.push({ route, topic, partition: 0, lag });
      }
    }
    return out;
  }

  /** Appending cannot fail or wait, so the promise is already settled (no async function on the hot path). */
  publish(topicName: string, msg: Message): Promise<Delivery> {
    return Promise.resolve(this.publishNow(topicName, msg));
  }

  /** What route targets call: the append, with no promise at all. */
  publishNow(topicName: string, msg: Message): Delivery {
    const topic = this.topic(topicName, true);
    const offset = offsetText(topic.end);
    const stored: Message = { ...msg, topic: topicName, partition: 0, offset, timestamp: msg.timestamp >= 0 ? msg.timestamp : Date.now() };
    // Bytes no field is made of any more (a transform replaced the value) are not retained.
    const original = liveOriginal(msg);
    if (original) stored[ORIGINAL] = detachOriginal(original);
    else if (msg[ORIGINAL]) stored[ORIGINAL] = undefined;
    // The writing route's steps' mark: to the route reading the topic such a header is one it consumed.
    if (msg[SET_AS_CONSUMED]) stored[SET_AS_CONSUMED] = undefined;
    // The writing route's source's incarnation (a Kafka topic or JetStream stream it saw made
    // again): the route reading this topic reads its offsets, which no incarnation of that source numbers.
    if (msg[SOURCE_INCARNATION] !== undefined) stored[SOURCE_INCARNATION] = undefined;
    const size = approxMessageBytes(stored);
    topic.push(stored, size);
    this.bytes += size;
    this.trim(topic);
    this.trimGlobal();
    // A topic nobody consumes (a publish route's) needs no iterator over its groups on each publish.
    if (topic.groups.size > 0) for (const group of topic.groups.values()) if (!group.pumping) this.pump(topic, group);
    return { broker: this.name, topic: topicName, partition: 0, offset };
  }

  /** Memory topics have one partition (0): what is retained after `after.get(0)`. */
  retained(topicName: string, after: ReadonlyMap<number, bigint>): Promise<Retained> {
    const topic = this.topic(topicName);
    const seen = after.get(0);
    const wanted = seen === undefined ? topic.first : Number(seen) + 1;
    // A position past the topic's end was never this topic's (the gateway restarted, so its memory
    // topics began again at 0): reading after it would skip, without a word, every event the
    // topic now has. Such a client resumes from the oldest retained event, and is told so.
    const ahead = wanted > topic.end;
    const from = ahead ? topic.first : Math.max(wanted, topic.first);
    return Promise.resolve({
      chunks: retainedSlices(topic, from, topic.end),
      // Slices of the topic's own messages, taken as asked for: nothing to release.
      close: holdsNothing,
      forget: [...after.keys()].filter((p) => p !== 0 || ahead),
      ends: new Map(topic.end > 0 ? [[0, BigInt(topic.end - 1)]] : []),
      partitions: [0],
      gap: ahead
        ? 'Last-Event-ID is past the end of the topic (the gateway restarted since, and its memory topics began again); resuming from the oldest retained event'
        : namesNoPartitionOf(after, (p) => p === 0)
          ? FOREIGN_POSITIONS
          : wanted < topic.first
            ? "some events after Last-Event-ID are no longer retained by the memory broker (its 'retain' and 'retainBytes'); resuming from the oldest retained event"
            : undefined,
    });
  }

  subscribe(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Subscription {
    const topic = this.topic(spec.topic);
    let group = topic.groups.get(spec.group);
    const capacity = spec.inFlight ?? 1;
    if (!group) {
      // A new group starts at the end, as a Kafka group with auto.offset.reset=latest would.
      const next = (spec.startFrom ?? spec.defaultStartFrom) === 'earliest' ? topic.first : topic.end;
      group = this.newGroup(topic, spec.group, next, capacity);
      topic.groups.set(spec.group, group);
    }
    // A route rebuilt by a reload joins its group before the old one leaves: its concurrency applies
    // once what the group has in hand is done (lowered to 1, the order the user asked for holds from then on).
    group.resizeTo = capacity === group.window.capacity ? undefined : capacity;
    const g = group;
    let member = this.join(topic, g, spec, handler);
    return {
      stop: () => this.leave(g, member),
      // The rebuilt route takes the old one's place in one step: what the old one gives back goes to
      // it, never finding the group empty (the window would break and start again from the committed position).
      handOver: (next, nextHandler) => {
        // Out of the group first (leave's first, synchronous part): the pump that join() runs must not hand the old one anything.
        const left = this.leave(g, member);
        // Another window (webhook concurrency) or order keys (orderBy) added or removed: the new one starts
        // once the old member's messages in hand are done, so none of the new route's overtakes them.
        const nextCapacity = next.inFlight ?? 1;
        if (nextCapacity !== g.window.capacity || (next.orderKeys === undefined) !== (member.spec.orderKeys === undefined)) g.resizeTo = nextCapacity;
        member = this.join(topic, g, next, nextHandler);
        return left;
      },
    };
  }

  /** A member joins `group` and the pump hands it what the group has to hand out. */
  private join(topic: Topic, group: Group, spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Member {
    const member: Member = { route: spec.route, handler, inFlight: 0, idle: [], stopped: false, spec };
    group.members.push(member);
    this.pump(topic, group);
    return member;
  }

  /** A member leaves its group: resolves once its handlings settled. */
  private async leave(group: Group, member: Member): Promise<void> {
    member.stopped = true;
    group.members = group.members.filter((m) => m !== member);
    if (member.inFlight > 0) await new Promise<void>((r) => member.idle.push(r));
  }

  /** The topic, created if new; a publish makes room for it first (a route's own topics always get one). */
  private topic(name: string, publishing = false): Topic {
    let t = this.topics.get(name);
    if (!t) {
      if (publishing && this.topics.size >= this.maxTopics) this.evictTopic(name);
      t = new Topic(name, `${this.incarnation}.${(this.topicsMade++).toString(36)}`);
      this.topics.set(name, t);
    }
    return t;
  }

  /**
   * Room for topic `wanted` at `maxTopics`: the oldest topic no consumer group reads goes, with
   * its retained messages (what a later `startFrom: earliest` or an event stream's resume could
   * have replayed). With every topic read, nothing may go: the publish fails.
   */
  private evictTopic(wanted: string): void {
    for (const t of this.topics.values()) {
      if (t.groups.size > 0) continue;
      this.topics.delete(t.name);
      this.bytes -= t.bytes;
      this.messagesEvicted += t.size;
      this.topicEvicted.occurred({ topic: t.name, for: wanted });
      return;
    }
    // A publish the broker refused (503), counted as any broker's (eventgate_memory_producer_errors_total).
    this.telemetry?.producerError();
    throw new Error(`memory broker '${this.name}' holds its maxTopics (${this.maxTopics}) topics, each read by a route: no room for topic '${wanted}'`);
  }

  /**
   * Retention: at most `retain` messages and `retainBytes` per topic. The newest message always
   * stays (a message larger than the bound is still delivered, then dropped first).
   */
  private trim(topic: Topic): void {
    const excess = topic.size - this.retain;
    if (excess > 0) this.bytes -= topic.dropOldest(excess);
    while (topic.bytes > this.retainBytes && topic.size > 1) this.bytes -= topic.dropOldest(1);
  }

  /**
   * The broker-wide cap: over `maxBytes`, the largest topic gives up its oldest messages first. A
   * topic some route reads keeps its newest message (it may not be handed out yet); one nobody
   * reads may lose its last too.
   */
  private trimGlobal(): void {
    while (this.bytes > this.maxBytes) {
      let largest: Topic | undefined;
      for (const t of this.topics.values()) if ((t.size > 1 || (t.size === 1 && t.groups.size === 0)) && (!largest || t.bytes > largest.bytes)) largest = t;
      if (!largest) return;
      this.bytes -= largest.dropOldest(1);
    }
  }

  /**
   * Hands the group's messages out in order, up to the window's capacity at once, and moves the
   * committed position over the prefix that is done. A message whose handler gives it back (its
   * route stopped with it in hand; the route owns retries) is offered again, to whichever member
   * is there, after a pause; with no member left the window stops, and the next member starts
   * again from the committed position. Synchronous while the window has room and no order keys
   * are computed (every message's path): no promise per message or per wait; `pumping` stays set
   * while it waits for room, a broken window to empty or a message's order keys.
   */
  private pump(topic: Topic, group: Group): void {
    if (group.pumping) return;
    group.pumping = true;
    this.pumpOn(topic, group);
  }

  /**
   * pump()'s loop, `pumping` being set. It runs inside a publish or a message's settling: a
   * failure (none is expected) stops this pump, not them, and the next publish starts it again
   * (as when the loop was an async function whose rejection nobody awaited).
   */
  private pumpOn(topic: Topic, group: Group): void {
    try {
      this.pumpLoop(topic, group);
    } catch (err) {
      group.pumping = false;
      this.env.logger.error({ broker: this.name, topic: topic.name, err: (err as Error).message }, 'memory topic consumer stopped; the next message starts it again');
    }
  }

  private pumpLoop(topic: Topic, group: Group): void {
    for (;;) {
      const window = group.window;
      if (window.broken || group.resizeTo !== undefined) {
        void this.restart(topic, group);
        return;
      }
      if (this.stopped || group.members.length === 0 || group.dispatched >= topic.end) break;
      if (!window.hasRoom()) {
        window.onSettled(group.wake);
        return;
      }
      if (group.dispatched < topic.first) {
        this.fellBehind(topic, group, topic.first - group.dispatched);
        group.dispatched = topic.first;
        if (window.size === 0) group.next = topic.first;
      }
      if (this.dispatchedThisTurn++ === 0) setImmediate(this.newTurn);
      else if (this.dispatchedThisTurn > DISPATCHES_PER_TURN) {
        // Go on after the event loop's turn (newTurn, queued first, runs before this); `pumping` stays set.
        setImmediate(() => this.pumpOn(topic, group));
        return;
      }
      const offset = group.dispatched++;
      const msg = topic.at(offset);
      const member = group.members[group.turn++ % group.members.length]!;
      const orderKeys = member.spec.orderKeys;
      if (orderKeys && window.capacity > 1) {
        void this.startKeyed(topic, group, member, msg, offset, orderKeys);
        return;
      }
      window.start(offset, NO_KEYS, () => this.consumeOne(group, member, msg), group.settled);
    }
    group.pumping = false;
  }

  /**
   * `skipped` messages retention dropped before `group` read them: lost to its route (the publisher
   * had its 2xx), so logged, naming the route, and counted in `eventgate_memory_consumer_errors_total`.
   */
  private fellBehind(topic: Topic, group: Group, skipped: number): void {
    const route = group.members[group.turn % group.members.length]!.route;
    this.telemetry?.consumerError(route, skipped);
    group.skipped += skipped;
    group.fellBehind ??= new RateLimitedWarning<string>(FLOOD_LOG_INTERVAL_MS, (lastRoute) => {
      this.env.logger.warn(
        { broker: this.name, topic: topic.name, route: lastRoute, group: group.name, skipped: group.skipped, retain: this.retain, retainBytes: this.retainBytes, intervalMs: FLOOD_LOG_INTERVAL_MS },
        'consumer group fell behind retention; oldest messages were dropped',
      );
      group.skipped = 0;
    });
    group.fellBehind.occurred(route);
  }

  /**
   * The pump after a message was given back, or to resize the window: once the window is empty
   * (idle() never rejects), a new one of the latest member's capacity from the committed position
   * (after a resize alone, that is where the pump stood: every message handed out was settled).
   */
  private async restart(topic: Topic, group: Group): Promise<void> {
    await group.window.idle();
    group.resizeTo = undefined;
    group.dispatched = group.next;
    this.newWindow(topic, group, group.members.at(-1)?.spec.inFlight ?? 1);
    this.pumpOn(topic, group);
  }

  /**
   * One message whose order keys are computed first (they may need JSONata's evaluator), then the
   * pump goes on. Keys that cannot be computed keep the message in no order, as a value its
   * `orderBy` cannot give does: it is already dispatched, and skipping it would lose it.
   */
  private async startKeyed(topic: Topic, group: Group, member: Member, msg: Message, offset: number, orderKeys: NonNullable<SubscribeSpec['orderKeys']>): Promise<void> {
    let keys: readonly string[];
    try {
      keys = await orderKeys(msg);
    } catch (err) {
      this.env.logger.warn({ broker: this.name, topic: topic.name, offset, err: (err as Error).message }, 'order keys of a message could not be computed; it is delivered in no order');
      keys = NO_KEYS;
    }
    group.window.start(offset, keys, () => this.consumeOne(group, member, msg), group.settled);
    this.pumpOn(topic, group);
  }

  /** A group at `next`, with the callbacks its pump and windows use for every message. */
  private newGroup(topic: Topic, name: string, next: number, capacity: number): Group {
    const group: Group = { name, next, dispatched: next, window: new InFlightWindow(capacity), settled: NOTHING, wake: NOTHING, members: [], turn: 0, pumping: false, skipped: 0 };
    // Told inside the settling of a message: the loop goes on after it, as an await would.
    const again = () => this.pumpOn(topic, group);
    group.wake = () => queueMicrotask(again);
    this.newWindow(topic, group, capacity);
    return group;
  }

  /** A new window for `group`, with its one `settled` callback: commits what became committable. */
  private newWindow(topic: Topic, group: Group, capacity: number): void {
    const window = new InFlightWindow<number>(capacity);
    group.window = window;
    group.settled = () => {
      const done = window.committable();
      if (done !== undefined && window === group.window) group.next = Math.max(group.next, done + 1);
      if (window.broken) this.pump(topic, group);
      if (this.progressWaiters.length > 0) for (const r of this.progressWaiters.splice(0)) r();
    };
  }

  /**
   * One message to `first` (then to whichever member is there, while handlers give it back); false
   * when no member is left. The first try is one promise callback: it is every message's path.
   */
  private consumeOne(group: Group, first: Member, msg: Message): Promise<boolean> {
    if (first.stopped || this.stopped) return NOT_CONSUMED;
    return this.handle(first, msg).then(
      () => {
        left(first);
        return true;
      },
      (err) => {
        left(first);
        return this.consumeAgain(group, first, msg, err);
      },
    );
  }

  /** `member.handler(msg)`, counted in the member's handlings (stop() waits for them): the caller calls left() once it settled. */
  private handle(member: Member, msg: Message): Promise<void> {
    member.inFlight++;
    try {
      return member.handler(msg);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** handle() with left() when it settles. */
  private handled(member: Member, msg: Message): Promise<void> {
    const handling = this.handle(member, msg);
    handling.then(
      () => left(member),
      () => left(member),
    );
    return handling;
  }

  /** After a failed handling: the same policy of pauses, the message to whichever member is there. */
  private async consumeAgain(group: Group, failed: Member, msg: Message, error: unknown): Promise<boolean> {
    const backoff = new Backoff();
    let member: Member | undefined = failed;
    let err = error;
    for (;;) {
      // A route gives a message back only when it stops with it in hand (the route owns retries):
      // that is a hand-over to the next member, not an error. Anything else is, and waits the same policy.
      if (!member.stopped && !this.stopped) {
        this.telemetry?.consumerError(member.route);
        this.env.logger.error({ broker: this.name, topic: msg.topic, offset: msg.offset, err: (err as Error).message }, 'message not consumed; retrying');
      }
      await pause(backoff.delay());
      member = group.members.length > 0 ? group.members[group.turn++ % group.members.length] : undefined;
      if (!member || member.stopped || this.stopped) return false;
      try {
        await this.handled(member, msg);
        return true;
      } catch (e) {
        err = e;
      }
    }
  }
}

/** A handling of `member` settled: stop() may be waiting for the last one. */
function left(member: Member): void {
  if (--member.inFlight === 0 && member.idle.length > 0) for (const r of member.idle.splice(0)) r();
}

const NOT_CONSUMED = Promise.resolve(false);
const NOTHING = (): void => undefined;
const NO_KEYS: readonly string[] = [];

export const memoryBroker = defineBroker({
  options,
  doc: {
    summary:
      'In-process topics: the embedded default, no broker to install. A message published to a memory topic reaches every route reading it, once per consumer group, handed out in order (a route whose webhook `concurrency` is above 1, 16 by default, has that many in hand at once, so a retried one arrives after later ones: `orderBy` or `concurrency: 1` keeps the order). Retention is bounded by count (`retain` messages per topic) and by estimated heap size (`retainBytes` per topic, `maxBytes` for the whole broker: 2 bytes per character, 72 per array or object); a group that falls further behind skips the oldest (the publishes were answered 2xx all the same: nothing is refused), each skipped message counted in `eventgate_memory_consumer_errors_total{route}` and said in the log (`consumer group fell behind retention`, with the `route` and the count `skipped`: at once, then at most every 10 s with the sum). Topics live as long as the process (they survive hot reloads; on shutdown the routes reading them first handle what they hold, within `admin.drainTimeoutMs`, and what is left then is logged as lost), up to `maxTopics`: a topic expression that names a new topic beyond it replaces the oldest topic no route reads. A topic name is at most 249 characters. The broker hands out at most 1000 messages per turn of the event loop, so routes that feed a topic they read (on purpose, a retry loop, or by mistake) never keep the gateway from answering requests, probes and SIGTERM.',
    example: 'brokers:\n  local:\n    kind: memory\n    retain: 1000',
  },
  inProcess: true,
  // Only retention can change, and it can change in place: topics and group positions survive.
  canReconfigure: () => true,
  inPlaceOptions: 'all',
  // The undecodable closure is never read (no batches); a new window or order keys take effect
  // once what the group has in hand is done (handOver's resize), as for a route that subscribes again.
  handOverTakes: ['inFlight', 'ordered', 'deadletter'],
  create: (name, options, env) => new MemoryBroker(name, options, env),
});

/** What one chunk of a memory topic's replay holds at most (estimated heap; at least one message). */
const REPLAY_CHUNK_BYTES = 1024 * 1024;

/**
 * A memory topic's messages in [from, end) as Retained chunks, sliced when asked for: the topic
 * holds them anyway, but a replay that copied them all at once held them twice over, and what its
 * chain made of them, per client. Messages the topic let go meanwhile (its bounds) are told of.
 */
async function* retainedSlices(topic: Topic, from: number, end: number): AsyncGenerator<RetainedChunk> {
  let next = from;
  while (next < end) {
    let gap: string | undefined;
    if (next < topic.first) {
      gap = "some events were let go by the memory broker while they were replayed (its 'retain' and 'retainBytes'); resuming from the oldest retained event";
      next = topic.first;
      if (next >= end) return yield { messages: [], gap };
    }
    const messages: Message[] = [];
    let bytes = 0;
    while (next < end && (messages.length === 0 || bytes < REPLAY_CHUNK_BYTES)) {
      const m = topic.at(next++);
      messages.push(m);
      bytes += approxMessageBytes(m);
    }
    yield { messages, gap };
  }
}
