import type { Problem } from '../../core/errors.js';
import type { Logger } from '../../log.js';
import { newHeaders, type Delivery, type Message } from '../../core/message.js';
import type { BrokerTelemetry, Health, StopOptions, Subscription } from '../contracts.js';

/**
 * What the MQTT, AMQP and NATS brokers share about acknowledgements: a publish either gets the
 * server's acknowledgement within `ackTimeoutMs` or fails (HTTP 503, never a hang); a consumed
 * message is acknowledged to the server only once its route accepted it (the route retries its
 * targets until then), and left unacknowledged, for the server to deliver again, when it is not.
 */

export class AckTimeout extends Error {
  /**
   * The write's own outcome, where the client keeps it out after the deadline (kafka): its delivery
   * if the server took it after all, undefined if it failed or was lost. A consume route waits for
   * it before trying the message again, so an answer that only came late writes no second copy.
   */
  late?: LateWrite;

  constructor(broker: string, ms: number) {
    super(`no acknowledgement from broker '${broker}' within ${ms} ms; ${MAY_HAVE_REACHED}`);
  }
}

/**
 * What a 503 says of a message that was sent and not acknowledged (its deadline passed, or the
 * connection went while the acknowledgement was awaited): the server may have it all the same, so
 * a client that sends it again may store it twice. Without it such a 503 read as one for a message
 * never sent (`broker 'b' is not connected`), which a client could retry as safe.
 */
export const MAY_HAVE_REACHED = 'the message may still have reached it (sending it again may store it twice)';

/**
 * The connection or channel closed while a sent message awaited its acknowledgement (`what`
 * closed): AckTimeout's ambiguity, not NotConnected's nothing sent.
 */
export class LostUnacknowledged extends Error {
  constructor(what: string) {
    super(`${what} before the acknowledgement came; ${MAY_HAVE_REACHED}`);
  }
}

/** Not told yet (LateWrite). */
const UNTOLD = Symbol('untold');

/**
 * A write its deadline answered 503 while the client kept it out (AckTimeout.late): its real
 * outcome, `tell`-ed once known (a delivery if the server took it, undefined if not). Costs one
 * object per publish that timed out; only a caller that `wait`s (a consume route, before it
 * tries again) gets a promise, and a backstop: past `backstopMs` without an answer the write
 * counts as lost, so the route is not held for ever.
 */
export class LateWrite {
  private told: Delivery | undefined | typeof UNTOLD = UNTOLD;
  private waiter: { resolve(d: Delivery | undefined): void; backstop: NodeJS.Timeout } | undefined;
  private promise: Promise<Delivery | undefined> | undefined;

  constructor(private readonly backstopMs: number) {}

  tell(d: Delivery | undefined): void {
    if (this.told !== UNTOLD) return;
    this.told = d;
    if (this.waiter) {
      clearTimeout(this.waiter.backstop);
      this.waiter.resolve(d);
    }
  }

  wait(): Promise<Delivery | undefined> {
    if (this.told !== UNTOLD) return Promise.resolve(this.told);
    this.promise ??= new Promise((resolve) => {
      const backstop = setTimeout(() => this.tell(undefined), this.backstopMs);
      backstop.unref();
      this.waiter = { resolve, backstop };
    });
    return this.promise;
  }
}

export class NotConnected extends Error {
  constructor(broker: string, detail: string) {
    super(`broker '${broker}' is not connected (${detail})`);
  }
}

/** RabbitMQ's connection.blocked (a memory or disk alarm): the connection is up and takes no publish until the server lifts it. */
export class BlockedByServer extends Error {
  constructor(broker: string, reason: string) {
    super(`broker '${broker}' is connected but blocked by the server (${reason}): it takes no message until the server lifts the block`);
  }
}

/**
 * The broker refused the message itself (Kafka: too large, or invalid for the topic): sending it
 * again cannot help, so it is answered with `problem` (a 4xx) rather than 503, and a consume route
 * dead-letters it instead of retrying it for ever.
 */
export class Refused extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail);
  }
}

/** A publish's place among the deadlines: whoever settles the publish first sets `settled`. */
export interface Deadline {
  settled: boolean;
}

/** What a deadline tells when it passes first: a publish object of its own (`AckDeadlines.track`). */
export interface Expiring {
  expire(err: AckTimeout): void;
}

/**
 * One deadline, linked into its broker's list of unsettled publishes in the order they were made.
 * Settling it unlinks it at once and drops what it would tell (the publish, its message and
 * promise): under load a publish is answered within milliseconds, and nothing of it may stay
 * reachable after that — an entry that stayed queued until its deadline passed (up to
 * `ackTimeoutMs`, every publish of the last few seconds) outlived two scavenges, was promoted to
 * the old generation, and cost the process a full mark-compact every couple of seconds.
 */
class Entry implements Deadline {
  prev: Entry = this;
  next: Entry = this;

  constructor(
    /** `performance.now()` milliseconds, rounded up: a small integer, stored without a heap number. */
    readonly at: number,
    private target: ((err: AckTimeout) => void) | Expiring | undefined,
  ) {}

  get settled(): boolean {
    return this.target === undefined;
  }

  set settled(settled: boolean) {
    if (settled && this.target !== undefined) {
      this.target = undefined;
      this.unlink();
    }
  }

  unlink(): void {
    this.prev.next = this.next;
    this.next.prev = this.prev;
    this.prev = this;
    this.next = this;
  }

  /** Tells the publish, once, unless it was settled first. */
  expire(err: AckTimeout): void {
    const target = this.target;
    this.target = undefined;
    this.unlink();
    if (typeof target === 'function') target(err);
    else target?.expire(err);
  }
}

/**
 * The acknowledgement deadlines of one broker's publishes: each publish's promise, or an
 * AckTimeout after `ms`, whichever comes first. Every publish of a broker gets the same `ms`, so
 * deadlines come in the order publishes were made: one list (oldest first) and one timer serve
 * them all, where a timer, a race and the promises around them per publish were a measurable
 * share of its cost. The timer waits for the oldest unsettled publish; when it fires it expires
 * what is due and waits for the next. The timer never keeps the process alive.
 */
export class AckDeadlines {
  /** The list's sentinel: `head.next` is the oldest unsettled publish, `head.prev` the newest. */
  private readonly head = new Entry(0, undefined);
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly ms: number,
    private readonly broker: string,
  ) {}

  /** Whether a publish still waits here, neither answered nor expired (both unlink it at once). */
  get waiting(): boolean {
    return this.head.next !== this.head;
  }

  /** `onExpire` runs when the deadline passes first (to forget what waits for the acknowledgement). */
  within<T>(pending: Promise<T>, onExpire?: () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry = this.add((err) => {
        onExpire?.();
        reject(err);
      });
      pending.then(
        (v) => {
          entry.settled = true;
          resolve(v);
        },
        (err) => {
          entry.settled = true;
          reject(err);
        },
      );
    });
  }

  /**
   * A deadline without a promise around it, for publishes settled by a callback: `expire` runs
   * with the AckTimeout if the deadline passes while `settled` is still false (the caller sets it
   * when the acknowledgement or an error comes first, and ignores whatever comes after).
   */
  add(expire: (err: AckTimeout) => void): Deadline {
    return this.queued(new Entry(Math.ceil(performance.now()) + this.ms, expire));
  }

  /** The same for a publish object that is told itself (no callback made per publish). */
  track(publish: Expiring): Deadline {
    return this.queued(new Entry(Math.ceil(performance.now()) + this.ms, publish));
  }

  private queued(entry: Entry): Deadline {
    const head = this.head;
    entry.prev = head.prev;
    entry.next = head;
    head.prev.next = entry;
    head.prev = entry;
    if (!this.timer) this.arm(entry.at);
    return entry;
  }

  private arm(at: number): void {
    // Whole milliseconds (node truncates a fraction, and would wake a millisecond early).
    this.timer = setTimeout(this.due, Math.max(1, Math.ceil(at - performance.now())));
    this.timer.unref();
  }

  /** Expires what is past its deadline, then waits for the oldest publish still unanswered. */
  private readonly due = (): void => {
    this.timer = undefined;
    const head = this.head;
    const now = performance.now();
    let e = head.next;
    while (e !== head && e.at <= now) {
      e.expire(new AckTimeout(this.broker, this.ms));
      e = head.next;
    }
    if (e !== head) this.arm(e.at);
  };
}

export interface HandOver {
  route: string;
  log: Logger;
  telemetry: BrokerTelemetry | undefined;
  /** True once the subscription stops: the message is then left unacknowledged for the server to deliver again. */
  stopping(): boolean;
  /**
   * True while the subscription, stopping for a reload that removed its route, still takes
   * messages (an MQTT route leaving its group): a give-back then is the route's stop's, which the
   * route logs itself, not a failure of a running subscription.
   */
  leaving?(): boolean;
  /** Called while a handler runs longer than `keepAliveMs`, for servers that redeliver a message held too long (JetStream's ack wait). */
  keepAlive?: { everyMs: number; beat(): void };
}

/**
 * Offers `msg` to the route. Resolves true when the route accepted it (the caller then
 * acknowledges it to the server), false when the subscription stops first or the route gave it
 * back (the caller leaves it unacknowledged, so the server delivers it again). No retry here: the
 * route is the one owner of retries (core/backoff.ts) — it retries failed targets and dead-letters
 * what can never pass, and rejects only when it stops with the message in hand, by which time
 * its subscription is stopping too.
 */
export async function handOver(msg: Message, handler: ((msg: Message) => Promise<void>) | Relay, o: HandOver): Promise<boolean> {
  if (o.stopping()) return false;
  const beat = o.keepAlive ? setInterval(o.keepAlive.beat, o.keepAlive.everyMs) : undefined;
  try {
    for (;;) {
      const to = typeof handler === 'function' ? handler : handler.current;
      // Counted in hand on the relay while its handler has it (no promise or closure more per message).
      const relay = to === handler ? undefined : (handler as Relay);
      const generation = relay?.taking();
      try {
        await to(msg);
        return true;
      } catch (err) {
        if (o.stopping()) return false;
        // Given back by a route a reload rebuilt (it stopped with the message in hand): its successor takes it now.
        if (to !== handler && (handler as Relay).current !== to) continue;
        // The route stops and said so; the subscription keeps the message for the server (leftSessions' givenBack).
        if (o.leaving?.()) {
          o.log.info({ topic: msg.topic, err: (err as Error).message }, 'message given back by a route a reload removed, as it leaves its group; left unacknowledged in its session');
          return false;
        }
        // A give-back while the subscription still runs is not the route's contract: say so.
        o.telemetry?.consumerError(o.route);
        o.log.error({ topic: msg.topic, err: (err as Error).message }, 'message given back by its route while its subscription runs; left unacknowledged for the server to deliver again');
        return false;
      } finally {
        if (relay) relay.left(generation!);
      }
    }
  } finally {
    clearInterval(beat);
  }
}

/**
 * The route a subscription hands its messages to (MQTT, NATS, AMQP): a reload's rebuilt route
 * takes its place (Subscription.handOver) while the subscription goes on. Each message goes to the
 * route there when its turn comes (handOver()); those in hand (one, or up to a webhook's
 * `concurrency` on AMQP) finish with the route that took them.
 */
export class Relay {
  /** Handlings in hand that the current handler took, and those earlier handlers took (replace() waits for these). */
  private inHandNow = 0;
  private inHandBefore = 0;
  /** Counts replace()s: a handling is counted in the generation it started in. */
  private generation = 0;
  private waiting: (() => void)[] = [];

  constructor(public current: (msg: Message) => Promise<void>) {}

  /** A handling starts with `current` (handOver()); the generation to give left(). */
  taking(): number {
    this.inHandNow++;
    return this.generation;
  }

  left(generation: number): void {
    if (generation === this.generation) this.inHandNow--;
    // After the turn's microtasks: the subscription acknowledges a message taken in handOver()'s continuation, before replace() resolves.
    else if (--this.inHandBefore === 0) setImmediate(() => this.waiting.splice(0).forEach((w) => w()));
  }

  /**
   * Later messages go to `handler`; resolves once those in hand left the handler they had (taken,
   * or given back: then handOver() offers them to `handler`). The subscription acknowledges a
   * message taken in the continuation that awaited it first, so before this resolves.
   */
  replace(handler: (msg: Message) => Promise<void>): Promise<void> {
    this.current = handler;
    this.generation++;
    this.inHandBefore += this.inHandNow;
    this.inHandNow = 0;
    return this.inHandBefore === 0 ? Promise.resolve() : new Promise((resolve) => this.waiting.push(resolve));
  }
}

/**
 * The route's handle on a subscription its broker keeps in `subscriptions`: stopping it waits for
 * the message in hand, and only then takes the subscription out: while it finishes, the broker
 * still counts it (its stop() waits for it, health() and consumerLag() report it).
 */
export function leavesOnStop<S extends { stop(options?: StopOptions): Promise<void>; health?(): Health; handOver?: Subscription['handOver'] }>(subscriptions: Set<S>, sub: S): Subscription {
  return {
    stop: async (options) => {
      await sub.stop(options);
      subscriptions.delete(sub);
    },
    ...(sub.health && { health: () => sub.health!() }),
    ...(sub.handOver && { handOver: (spec, handler) => sub.handOver!(spec, handler) }),
  };
}

/**
 * Every value, as bytes, of each name `entries` repeats with text values and `headers` (the
 * message's, made by singleValued) holds, unchanged, as the last of them: the raw headers of the
 * message's ORIGINAL, so a Kafka target writes a repeated MQTT user property or NATS header once
 * per value, as a Kafka → Kafka copy does. Undefined when no name repeats (nearly always).
 */
export function repeatedHeaders(entries: Iterable<[string, unknown]>, headers: Readonly<Record<string, string>>): Record<string, Buffer[]> | undefined {
  let out: Record<string, Buffer[]> | undefined;
  for (const [name, v] of entries) {
    if (!Array.isArray(v) || v.length < 2 || !v.every((one) => typeof one === 'string')) continue;
    if (!Object.hasOwn(headers, name) || headers[name] !== v[v.length - 1]) continue;
    out ??= newHeaders<Buffer[]>();
    out[name] = v.map((one: string) => Buffer.from(one));
  }
  return out;
}

/** Headers as a message carries them: one string per name (the last, when a protocol allows repeats). */
export function singleValued(entries: Iterable<[string, unknown]>): Record<string, string> {
  const out = newHeaders();
  for (const [name, v] of entries) {
    if (v === undefined || v === null) continue;
    const last = Array.isArray(v) ? v[v.length - 1] : v;
    out[name] = Buffer.isBuffer(last) ? last.toString('utf8') : typeof last === 'object' ? JSON.stringify(last) : String(last);
  }
  return out;
}

/**
 * What a publish to a topic answers, for brokers whose acknowledgement names no position (MQTT,
 * AMQP): one frozen object per topic, shared by every publish to it, as nothing in it is per
 * publish and nothing changes a delivery once made. Starts over past 1024 topics (a topic
 * expression may produce many).
 */
export class TopicDeliveries {
  private readonly byTopic = new Map<string, Delivery>();

  constructor(private readonly broker: string) {}

  of(topic: string): Delivery {
    let d = this.byTopic.get(topic);
    if (!d) {
      d = Object.freeze({ broker: this.broker, topic, partition: 0, offset: '-1' });
      if (this.byTopic.size >= 1024) this.byTopic.clear();
      this.byTopic.set(topic, d);
    }
    return d;
  }
}
