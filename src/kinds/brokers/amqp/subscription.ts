/**
 * An amqp broker's consume routes: each reads one queue on a channel of its own, at most
 * `prefetch` unacknowledged, and acknowledges a delivery only after every target accepted it.
 */

import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import type { Logger } from '../../../log.js';
import type { Message } from '../../../core/message.js';
import type { BrokerTelemetry, Health, SubscribeSpec } from '../../contracts.js';
import { handOver, Relay } from '../acknowledgement.js';
import { InFlightWindow } from '../../../core/in-flight-window.js';
import type { AmqpSettings } from '../amqp.js';
import { type Binding, bindingMatches, exchangeTypeOf, leaveBindings, serverOf, unbindLeft } from './bindings.js';
import { within } from '../../../core/within.js';
import { RECONNECT_POLICY, reconnectBackoff } from '../../../core/backoff.js';
import { RepairPace } from './repair-pace.js';
import { toMessage } from './consumed.js';
import { declaredOtherwise, declaredOtherwiseState, dropConnection } from './connection.js';
import { MissingTopology, notFoundOn } from '../missing-topology.js';
import type { DeclaredQueues } from './declared-queues.js';

const NO_KEYS: readonly string[] = [];
const NOTHING = (): void => undefined;

/** The server said a route's queue does not exist (404 on its passive declare): the route waits for it. */
class QueueMissing extends Error {}

/** The server has the route's declared queue otherwise (406 to its declare: other arguments): the route waits, declaring it again. */
class QueueOtherwise extends Error {}

/**
 * One consume route. Its queue is a queue the config declares (`queues:`) when `from.topic` names
 * one; otherwise `from.topic` is a routing-key pattern on the broker's exchange, and the route's
 * group names a durable queue bound with it (a per-instance group gets an exclusive queue that
 * goes away with the connection). Up to `inFlight` messages (a webhook route's `concurrency`)
 * are handled at once, those sharing an order key (`orderBy`) one after the other, in order, and
 * the server holds back more than `prefetch` unacknowledged: min(prefetch, concurrency) in hand.
 * Each is acknowledged, by its own delivery tag (AMQP allows them out of order), only after every
 * target accepted it.
 */
export class AmqpSubscription {
  private channel: Channel | undefined;
  private stopping = false;
  /** Deliveries are started in order, each once the window has room (and its order keys are known). */
  private chain: Promise<unknown> = Promise.resolve();
  /** The messages in hand on the current channel: up to `spec.inFlight`, ordered by `spec.orderKeys`. */
  private window = new InFlightWindow<ConsumeMessage>(1);
  /** Counts hand-overs: the deliveries after one start in a window of the new route's size, once the old route's are done. */
  private turn = 0;
  /** The channel whose basic.consume is not answered yet: its close is open()'s failure, not a consumer lost. */
  private starting: Channel | undefined;
  /** Deliveries on the current channel not acknowledged yet (at most `prefetch`). */
  private held = 0;
  /** Messages ready in the queue (not delivered to any consumer), as of the last poll; undefined before the first. */
  private ready: number | undefined;
  private poll: NodeJS.Timeout | undefined;
  /** The connection the route consumes on: set by attach, cleared by detach (the connection was lost). */
  private conn: ChannelModel | undefined;
  private readonly backoff = reconnectBackoff();
  /** The queue of `queues` this route reads, while it does not exist on the server. */
  private readonly queueMissing: MissingTopology;
  /** The route messages go to: a reload's rebuilt route takes its predecessor's place (handOver). */
  private readonly relay: Relay;

  constructor(
    private readonly broker: string,
    private readonly settings: AmqpSettings,
    public spec: SubscribeSpec,
    handler: (msg: Message) => Promise<void>,
    private readonly log: Logger,
    private readonly telemetry: BrokerTelemetry | undefined,
    private readonly declaredQueues: DeclaredQueues,
    /** Every binding of a queue on a server that a running broker or route of this process holds: unbinding leaves them. */
    private readonly keptBindings: (server: string, queue: string) => Binding[],
  ) {
    this.relay = new Relay(handler);
    this.queueMissing = new MissingTopology(log, `amqp queue '${spec.topic}'`);
  }

  /** Why the last try to start consuming failed, other than a missing queue; undefined once it consumes. */
  private startProblem: string | undefined;

  /**
   * Not ready while the queue it reads is missing, or while the server refuses what the route
   * needs to consume (a 406 to its queue's declare: the queue exists with other arguments); its
   * broker's own state is the broker's.
   */
  health(): Health {
    const missing = this.queueMissing.health();
    if (!missing.ready || this.startProblem === undefined) return missing;
    return { ready: false, detail: `consumer could not start, retrying: ${this.startProblem}` };
  }

  private get server(): string {
    return serverOf(this.settings.url);
  }

  /** The binding a pattern route gives its group's durable queue; undefined for a declared queue's route or a per-instance one. */
  private boundBinding(): Binding | undefined {
    if (Object.hasOwn(this.settings.queues, this.spec.topic) || this.spec.perInstance === true) return undefined;
    return { exchange: this.settings.exchange.name, routingKey: this.spec.topic };
  }

  /** The bind in flight after a returned publish. */
  private rebinding: Promise<void> | undefined;
  /** When a returned publish binds the queue again, and whether doing so helps (checklist 5130). */
  private readonly rebinds = new RepairPace();

  /**
   * The server returned publish number `n` (routing key `key`, AMQP headers `headers`, on
   * `exchange`) as unroutable. When this route's pattern matches it, its queue lost that binding
   * on the server (RabbitMQ drops a queue's bindings with their exchange: one deleted and made again
   * by another client before a publish of the gateway found it missing), and nothing else would
   * tell before a reconnect: the route consumes on, from a queue nothing reaches. Bound again on a
   * channel of its own (a refusal closes only that one), as DeclaredQueues declares its queues again.
   */
  unroutable(conn: ChannelModel, exchange: string, key: string, headers: Readonly<Record<string, unknown>>, n: number, published: () => number): void {
    const binding = this.spec.perInstance === true ? { exchange: this.settings.exchange.name, routingKey: this.spec.topic } : this.boundBinding();
    if (binding === undefined || this.stopping || this.conn !== conn || this.channel === undefined) return;
    if (binding.exchange !== exchange || !bindingMatches(exchangeTypeOf(this.settings.exchange), binding, key, headers)) return;
    const asked = this.rebinds.returned(n, this.rebinding !== undefined);
    if (asked.futile)
      this.log.warn(
        { queue: this.spec.group, binding, routingKey: key },
        `amqp queue '${this.spec.group}' was bound again, and a publish for its route's pattern sent after that still came back unroutable: the exchange on the server does not route it there (another type than the config's '${exchangeTypeOf(this.settings.exchange)}'?); bound again at most every ${RECONNECT_POLICY.maxDelayMs} ms from now on`,
      );
    if (!asked.repair) return;
    this.rebinding = this.rebind(conn, binding, published).finally(() => (this.rebinding = undefined));
  }

  private async rebind(conn: ChannelModel, binding: Binding, published: () => number): Promise<void> {
    const queue = this.spec.group;
    let ch: Channel | undefined;
    try {
      ch = await conn.createChannel();
      ch.on('error', NOTHING);
      await ch.bindQueue(queue, binding.exchange, binding.routingKey);
    } catch (err) {
      const wait = this.rebinds.refused();
      this.log.warn(
        { queue, err: (err as Error).message, retryInMs: wait },
        `amqp queue '${queue}' took no publish for its route's pattern (its binding removed on the server?) and binding it again was refused; tried again on a later unroutable publish`,
      );
      return;
    } finally {
      await ch?.close().catch(() => undefined);
    }
    this.rebinds.repaired(published());
    if (this.rebinds.futile) return;
    this.log.warn({ queue, binding }, `amqp queue '${queue}' took no publish for its route's pattern (its binding removed on the server, as when its exchange is deleted and made again); bound again`);
  }

  /** The binding this running route holds on `queue`, if any. */
  bindingOf(queue: string): Binding | undefined {
    return !this.stopping && this.spec.group === queue ? this.boundBinding() : undefined;
  }

  attach(conn: ChannelModel): void {
    if (this.stopping) return;
    this.conn = conn;
    void this.open(conn).catch((err: Error) => {
      this.telemetry?.consumerError(this.spec.route);
      const wait = this.backoff.delay();
      if (err instanceof QueueMissing) this.queueMissing.missing(notFoundOn('queue', this.spec.topic, this.broker, err.message), wait);
      else if (err instanceof QueueOtherwise) {
        const state = declaredOtherwiseState(err.message);
        this.queueMissing.missing(`queue '${this.spec.topic}' on broker '${this.broker}' is ${state}: ${err.message}`, wait, `${state} on the server`);
      } else {
        this.startProblem = err.message;
        this.log.error({ err: err.message, retryInMs: wait }, 'amqp consumer could not start; retrying');
      }
      // A channel error (e.g. a queue that does not exist) closes only the channel: try again on the same connection.
      this.reopen(conn, wait);
    });
  }

  detach(): void {
    this.conn = undefined;
    this.channel = undefined;
    // The server requeues what the dead channel held.
    this.held = 0;
    clearInterval(this.poll);
  }

  /**
   * The channel closed. When the connection lives on, the server closed it (a delivery held past
   * its `consumer_timeout`, 30 min by default, while the targets refused it; a consumer it
   * cancelled, see open()): it requeued what the channel held, and the route would otherwise
   * consume nothing until the next reconnect. A lost connection closes its channels too; the
   * broker attaches again on the next connection.
   */
  private closed(ch: Channel, conn: ChannelModel): void {
    if (this.channel !== ch) return;
    // A basic.consume the server refused (the queue in exclusive use, no read permission) closed
    // it: open()'s failure tries again (attach). A second try from here doubled the tries at each
    // refusal, and once the server took them, each was a consumer of its own.
    if (this.starting === ch) {
      this.channel = undefined;
      return;
    }
    this.channel = undefined;
    this.held = 0;
    clearInterval(this.poll);
    if (this.stopping) return;
    this.reopen(conn, this.backoff.delay(), (wait) => {
      // Only now is it sure the connection outlived the channel.
      this.telemetry?.consumerCrash(this.spec.route);
      this.log.warn({ retriedAfterMs: wait }, 'amqp consume channel closed while the connection lives; opening another');
    });
  }

  /** Opens a channel again on `conn` after `wait` ms, unless the route stopped or the connection went in the meantime. */
  private reopen(conn: ChannelModel, wait: number, reopening?: (waitedMs: number) => void): void {
    setTimeout(() => {
      if (this.stopping || this.channel || this.conn !== conn) return;
      reopening?.(wait);
      this.attach(conn);
    }, wait).unref();
  }

  /**
   * What waits for this route: the queue's ready messages (shared by every instance consuming it)
   * plus the ones this instance holds. Undefined until the queue was polled once.
   */
  lag(): number | undefined {
    return this.ready === undefined ? undefined : this.ready + this.held;
  }

  /** Asks for the queue's depth every `lagPollMs` (passive declare: one round trip, nothing created), one request at a time. */
  private pollDepth(ch: Channel, queue: string): void {
    let asking = false;
    const ask = () => {
      if (asking || this.channel !== ch) return;
      asking = true;
      ch.checkQueue(queue)
        .then(
          (q) => {
            if (this.channel === ch) this.ready = q.messageCount;
          },
          () => undefined,
        )
        .finally(() => (asking = false));
    };
    clearInterval(this.poll);
    this.poll = setInterval(ask, this.settings.lagPollMs);
    this.poll.unref();
    ask();
  }

  /**
   * `redeclare`: a queue the broker declares (`declare: true`) that the passive declare finds
   * missing was deleted on the server since the broker connected: the route declares it again, as
   * the broker does at connect (arguments and bindings), and opens again, once per call.
   */
  private async open(conn: ChannelModel, redeclare = true): Promise<void> {
    const ch = await conn.createChannel();
    // Before the route consumes on it, what fails is told by open()'s caller (a missing queue once per change, not per try).
    ch.on('error', (err: Error) => {
      if (this.channel === ch) this.log.warn({ err: err.message }, 'amqp consume channel error');
    });
    ch.on('close', () => this.closed(ch, conn));
    await ch.prefetch(this.settings.prefetch);
    let queue = this.spec.topic;
    if (Object.hasOwn(this.settings.queues, queue) && this.declaredQueues.otherwise(queue) !== undefined) {
      // The server has it otherwise (406 to the broker's declare, as after a reload changed its
      // arguments): consuming it as it is would take the old queue for the new. The route waits,
      // declaring it again with backoff (attach()): it goes through once the queue is deleted.
      await ch.close().catch(() => undefined);
      await this.declaredQueues.again(conn, queue).catch((err: Error) => {
        const words = declaredOtherwise(err);
        throw words === undefined ? new QueueMissing(`declaring it failed: ${err.message}`) : new QueueOtherwise(words);
      });
      return this.open(conn, false);
    }
    if (Object.hasOwn(this.settings.queues, queue)) {
      // The server's words when the queue is missing, else undefined. After a re-declare that
      // failed half-way (the queue declared, a binding refused) the queue is there, maybe unbound:
      // declared again in full rather than found.
      const missing = this.declaredQueues.unfinished(queue)
        ? await ch.close().then(
            () => 'declaring it again did not finish',
            () => 'declaring it again did not finish',
          )
        : await ch.checkQueue(queue).then(
            () => undefined,
            (err: Error) => {
              if (/NOT.FOUND/.test(err.message)) return err.message;
              throw err;
            },
          );
      // The 404 closed the channel. A queue that must exist already (declare: false): only this
      // route waits for it, trying again with backoff (attach()). One the broker declares was
      // deleted since it connected: without this the route would wait until the next reconnect.
      if (missing !== undefined) {
        if (!this.settings.queues[queue]!.declare || !redeclare) throw new QueueMissing(missing);
        await this.declaredQueues.again(conn, queue).catch((err: Error) => {
          throw new QueueMissing(`it was deleted on the server, and declaring it again failed: ${err.message}`);
        });
        return this.open(conn, false);
      }
    } else {
      // A routing-key pattern: the group's queue, bound to the broker's exchange.
      const perInstance = this.spec.perInstance === true;
      queue = this.spec.group;
      await ch.assertQueue(queue, perInstance ? { exclusive: true, autoDelete: true, durable: false } : { durable: true, expires: this.settings.routeQueueExpiresMs });
      await ch.bindQueue(queue, this.settings.exchange.name, this.spec.topic);
      // A predecessor of the group with another pattern (a reload changed `from.topic`) left its own bound.
      if (!perInstance) await unbindLeft(conn, this.server, queue, this.keptBindings(this.server, queue), this.log);
    }
    if (this.stopping) {
      await ch.close().catch(() => undefined);
      return;
    }
    this.channel = ch;
    this.held = 0;
    this.starting = ch;
    // A window per channel: one that gave a message back (the channel died with it in hand) takes no more.
    let window = (this.window = new InFlightWindow<ConsumeMessage>(this.spec.inFlight ?? 1));
    let turn = this.turn;
    const start = async (m: ConsumeMessage): Promise<void> => {
      if (turn !== this.turn) {
        // Handed over: the old route's messages end before the new route's start, in a window of its size.
        await window.idle();
        turn = this.turn;
        window = this.window = new InFlightWindow<ConsumeMessage>(this.spec.inFlight ?? 1);
      }
      await window.room();
      const msg = toMessage(m);
      const orderKeys = window.capacity > 1 ? this.spec.orderKeys : undefined;
      const keys = orderKeys ? await Promise.resolve(orderKeys(msg)).catch(() => NO_KEYS) : NO_KEYS;
      window.start(m, keys, () => this.deliver(ch, m, msg), NOTHING);
    };
    await ch.consume(queue, (m) => {
      if (m === null) {
        // Nothing more comes on this consumer: close the channel (requeueing what it holds), and closed() opens another.
        this.log.warn('consumer cancelled by the server (queue deleted?)');
        void ch.close().catch(() => undefined);
        return;
      }
      this.held++;
      this.chain = this.chain.then(() => start(m));
    });
    this.starting = undefined;
    this.pollDepth(ch, queue);
    this.backoff.reset();
    this.queueMissing.found();
    this.startProblem = undefined;
    this.log.info({ queue }, 'consumer ready');
  }

  /**
   * handOver's `stopping` for a delivery on `ch`: the route stops, or the channel is no longer this
   * subscription's. Returned, not bound to a name: the bundle (keepNames) names a named arrow, a
   * defineProperty per message.
   */
  private stoppingOrLeft(ch: Channel): () => boolean {
    return () => this.stopping || this.channel !== ch;
  }

  /** Hands one delivery to the route and acknowledges it once taken; false when it was not (left for the server to deliver again). */
  private async deliver(ch: Channel, m: ConsumeMessage, msg: Message): Promise<boolean> {
    const accepted = await handOver(msg, this.relay, { route: this.spec.route, log: this.log, telemetry: this.telemetry, stopping: this.stoppingOrLeft(ch) });
    // Not accepted: the route stopped, or the channel died (the server then redelivers it by itself).
    if (accepted) {
      try {
        ch.ack(m);
        if (this.channel === ch) this.held--;
      } catch {
        // The channel closed after the route accepted: the server redelivers it (at least once).
      }
    }
    return accepted;
  }

  /**
   * A reload's rebuilt route asks the same (Subscription.handOver): the channel and its consumer
   * go on, and the deliveries after the one in hand are the new route's: none goes back to the
   * queue to be delivered again (flagged redelivered, behind what another instance took meanwhile).
   */
  handOver(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Promise<void> {
    this.spec = spec;
    this.turn++;
    this.log.info('subscription handed over to the rebuilt route');
    return this.relay.replace(handler);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.poll);
    // A pattern route leaves its group's queue bound, collecting for the route's return; a successor with another pattern unbinds it (unbindLeft).
    const bound = this.boundBinding();
    if (bound) leaveBindings(this.server, this.spec.group, [bound]);
    // A bind after a returned publish still in flight: a successor with another pattern unbinds
    // this one once this stop is done (unbindLeft), and a bind landing after that left the old
    // pattern bound for good (checklist 5132). A server that does not answer it is dropped, as
    // for the channel close below (a bind it read before it froze may still land: checklist 5170).
    const rebinding = this.rebinding;
    if (rebinding) this.log.info({ queue: this.spec.group }, "amqp route waits for its queue's bind in flight before it stops");
    if (rebinding && (await within(rebinding, this.settings.connectTimeoutMs)) === 'late' && this.conn) {
      this.log.warn({ waitedMs: this.settings.connectTimeoutMs }, 'amqp server did not answer a bind within connectTimeoutMs; dropping the connection');
      dropConnection(this.conn);
    }
    await this.chain;
    await this.window.idle();
    const ch = this.channel;
    this.channel = undefined;
    // Closing the channel hands unacknowledged messages (prefetched, never handled) back to the queue.
    if (!ch) return;
    const conn = this.conn;
    if (
      (await within(
        ch.close().catch(() => undefined),
        this.settings.connectTimeoutMs,
      )) === 'late' &&
      conn
    ) {
      // A server that does not answer (frozen) would hold the reload or shutdown behind this stop
      // for ever; a channel merely abandoned would keep its consumer, and the messages it holds,
      // once the server answers again. Dropping the connection ends both: RabbitMQ requeues what
      // the channel held, and the broker connects again for its other routes.
      this.log.warn({ waitedMs: this.settings.connectTimeoutMs }, 'amqp server did not answer a channel close within connectTimeoutMs; dropping the connection');
      dropConnection(conn);
    }
  }
}
