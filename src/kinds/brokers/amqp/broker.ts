import { isTlsFailure, notConnectedDetail } from '../not-connected.js';
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import type { Logger } from '../../../log.js';
import { CONTENT_ENCODING, payloadContentEncoding, payloadContentType, payloadMessage, valuePayload, type Delivery, type Message } from '../../../core/message.js';
import type { BrokerRuntime, BrokerTelemetry, ConsumerLag, Health, RuntimeEnv, SubscribeSpec, Subscription } from '../../contracts.js';
import { captured, newPromise } from '../../../core/captured-promise.js';
import { AckDeadlines, LateWrite, type AckTimeout, type Deadline, type Expiring, handOver, LostUnacknowledged, leavesOnStop, NotConnected, Relay, TopicDeliveries } from '../acknowledgement.js';
import { SIZE_REFUSAL, tooLarge } from './size-limit.js';
import type { AmqpSettings } from '../amqp.js';
import { type Binding, leaveBindings, serverOf, unbindLeft, vhostOf } from './bindings.js';
import { within } from '../../../core/within.js';
import { reconnectBackoff } from '../../../core/backoff.js';
import { AmqpPublisher } from './publisher.js';
import { FirstConnection } from '../first-connection.js';
import { consumedTime, headerStrings } from './consumed.js';
import { installTableDecoder } from './field-table.js';
import { routingKeyProblem } from './routing-keys.js';
import { MissingTopology, notFoundOn } from '../missing-topology.js';
import { DeclaredQueues, declaredBindings, declareQueue } from './declared-queues.js';

/**
 * Why a connect failed, in words. amqplib's `connect ETIMEDOUT` is its own: nothing came back
 * within `connectTimeoutMs`, the AMQP handshake included. Something that accepts the TCP
 * connection and says nothing (another kind of server on that port, one still starting) gets
 * it on every retry, and read as a network timeout it sent people looking in the wrong place.
 */
function connectFailure(err: Error, settings: AmqpSettings): string {
  if (err.message !== 'connect ETIMEDOUT') return err.message;
  let where = 'the server';
  try {
    where = new URL(settings.url).host || where;
  } catch {
    /* the URL was checked when the config loaded */
  }
  return `no answer from ${where} within connectTimeoutMs (${settings.connectTimeoutMs} ms), the AMQP handshake included: is it a RabbitMQ (AMQP 0-9-1) port, and is the server up?`;
}

/**
 * What the server said when it closed the connection itself (a connection.close with a reply code:
 * 530 NOT_ALLOWED for a channel over the user's limit or a vhost it does not have, 320
 * CONNECTION_FORCED from an operator or a shutdown), as /readyz and a 503 say it: `closed by the
 * server: 530 NOT_ALLOWED - number of channels ...`. The server is there and said why, which
 * `unreachable` would hide. Undefined for anything else (a socket error, the gateway's own close,
 * a channel the server closed). amqplib words it `Connection closed: 530 (NOT-ALLOWED) with message
 * "NOT_ALLOWED - ..."`, or `Handshake terminated by server: ...` while connecting; RabbitMQ starts
 * the text with the code's name, another server may not.
 */
export function closedByServer(err: unknown, vhost: string): string | undefined {
  if (!(err instanceof Error)) return undefined;
  // Refused at connection.open: amqplib drops the server's words there (RabbitMQ's 530 says which).
  if (err.message.startsWith('Expected ConnectionOpenOk; got <ConnectionClose'))
    return `closed by the server: it refused to open virtual host '${vhost}' (one it does not have, one the user may not use, or a connection limit reached; the server's log says which)`;
  const said = /^(?:Connection closed|Handshake terminated by server): (\d+) \(([A-Z-]+)\) with message "(.*)"$/s.exec(err.message);
  if (!said) return undefined;
  const name = said[2]!.replace(/-/g, '_');
  const text = said[3]!;
  return `closed by the server: ${said[1]} ${text.startsWith(name) ? text : `${name} - ${text}`}`;
}

/**
 * Whether the server closed a channel, not the connection, for what was asked on it (404 NOT_FOUND,
 * 406 PRECONDITION_FAILED, 403 ACCESS_REFUSED for a resource): amqplib's `Operation failed:
 * QueueDeclare; 406 (...)` or `Channel closed by server: 404 (...)`, with the reply code.
 */
function refusedOnChannel(err: unknown): boolean {
  return err instanceof Error && /^(?:Operation failed: \w+; |Channel closed by server: )\d+ \(/.test(err.message);
}

/** The server said a route's queue does not exist (404 on its passive declare): the route waits for it. */
class QueueMissing extends Error {}

/** Exchanges every RabbitMQ has; they cannot be declared, only used. */
const builtInExchange = (name: string) => name === '' || name.startsWith('amq.');

class Unroutable extends Error {
  constructor(broker: string, exchange: string, key: string) {
    super(`broker '${broker}': no queue is bound to exchange '${exchange}' for routing key '${key}', so the message would be dropped`);
  }
}

/**
 * One publish until it is answered, in one object: its promise's resolving functions, what a
 * basic.return of it names, and its acknowledgement deadline (a small entry of AckDeadlines,
 * dropped from it once settled). Before, each publish made an executor, three closures around it,
 * a record for basic.return and a Delivery of its own. Whichever comes first answers it: the
 * server's confirm (`confirmed`, the callback amqplib calls on basic.ack or basic.nack, or with an
 * error when the channel closes), a basic.return, a lost connection, or the deadline.
 */
class Publish implements Expiring {
  settled = false;
  deadline: Deadline | undefined;
  /** The body's length, once encoded: what tells the message the server refused as too large when it closes the channel. */
  bytes = 0;
  /** amqplib's confirm callback: nothing on basic.ack, an error on basic.nack or when the channel closes first. */
  readonly confirmed = (err?: Error | null): void => this.settle(err ? this.broker.failureOf(err, this.bytes) : undefined);

  constructor(
    private readonly broker: AmqpBroker,
    /** The message id: what correlates a basic.return. */
    readonly id: string,
    /** Which publish of the broker this is (the number in its id): what tells a return sent before a queue was declared again. */
    readonly n: number,
    readonly exchange: string,
    readonly key: string,
    private readonly resolve: (d: Delivery) => void,
    private readonly reject: (err: Error) => void,
  ) {}

  /** Once its deadline answered it while its confirm was still due: its real outcome, for AckTimeout.late. */
  private late: LateWrite | undefined;

  /** Settles the publish (once: whatever comes after the first is ignored, but told as a late outcome). */
  settle(err?: Error): void {
    if (this.settled) {
      const late = this.late;
      if (late === undefined) return;
      this.late = undefined;
      this.broker.forget(this.id, false);
      late.tell(err ? undefined : this.broker.deliveries.of(this.key));
      return;
    }
    this.settled = true;
    if (this.deadline) this.deadline.settled = true;
    this.broker.forget(this.id, err !== undefined);
    if (err) this.reject(err);
    else this.resolve(this.broker.deliveries.of(this.key));
  }

  expire(err: AckTimeout): void {
    this.settle(err);
    // Its confirm (or basic.return, or the connection's loss, which settles every publish among
    // the confirms; heartbeats bound that) may still come: it stays among the confirms until then.
    err.late = this.late = new LateWrite(this.broker.lateAnswerMs);
    this.broker.awaitLate(this);
  }
}

/**
 * A RabbitMQ (AMQP 0-9-1) server through amqplib. One connection per broker, with a confirm
 * channel for publishing and a channel per consume route. amqplib does not reconnect: this class
 * does, with backoff, re-declaring the topology and restarting every route's consumer.
 */
export class AmqpBroker implements BrokerRuntime {
  readonly kind = 'amqp';
  private readonly log: Logger;
  private readonly telemetry: BrokerTelemetry | undefined;
  private connection: ChannelModel | undefined;
  private publisher: AmqpPublisher | undefined;
  private state: Health = { ready: false, detail: 'connecting' };
  private readonly firstConnection = new FirstConnection();
  private stopped = false;
  /** The server and vhost (serverOf): what bindings are remembered by. */
  readonly server: string;
  /** The virtual host the URL names, as amqplib opens it (`/` for none). */
  private readonly vhost: string;
  /** The connection on which this broker's declared queues have their bindings in place; cleared when it goes. */
  private topologyOn: ChannelModel | undefined;
  /** Whether this broker ever bound its declared queues: one that never connected has nothing on the server to take back. */
  private declaredOnce = false;
  private readonly backoff = reconnectBackoff();
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly subscriptions = new Set<AmqpSubscription>();
  /** Publishes awaiting their confirm, by the message id that correlates a basic.return. */
  private readonly confirms = new Map<string, Publish>();
  /** What publishes answer, per topic. */
  readonly deliveries: TopicDeliveries;
  private nextId = 0;
  private open!: typeof import('amqplib')['connect'];
  /**
   * The server's `max_message_size`, once it refused a message over it (the only way it tells):
   * larger bodies are refused before they are sent from then on, as sending one closes the publish
   * channel and fails every publish in flight on it. Kept across reconnects: the server's limit
   * changes only with its config; a gateway reload or restart learns it again.
   */
  private maxMessageSize: number | undefined;
  /** The server closed the publish channel for a message over its size limit: a new channel is opened on the same connection. */
  private sizeRefusedOn: unknown;

  /** Publishes waiting for the server's acknowledgement, each until `ackTimeoutMs`. */
  private readonly deadlines: AckDeadlines;
  /** Declares a queue of `queues` deleted on the server again, for its route or after an unroutable publish. */
  private readonly declaredQueues: DeclaredQueues;

  constructor(
    readonly name: string,
    readonly settings: AmqpSettings,
    env: RuntimeEnv,
  ) {
    this.deadlines = new AckDeadlines(settings.ackTimeoutMs, name);
    this.deliveries = new TopicDeliveries(name);
    this.server = serverOf(settings.url);
    this.vhost = vhostOf(settings.url);
    this.log = env.logger.child({ broker: name });
    this.telemetry = env.telemetry?.broker(name, 'amqp');
    this.declaredQueues = new DeclaredQueues(settings, this.log, () => this.nextId);
  }

  /** Never fails: an unreachable server makes the broker not ready, and it keeps trying. */
  async start(): Promise<void> {
    // Loaded when a broker starts, so commands that start none (validate, schema) never load it;
    // its table decoder wrapped first (field-table.ts), as amqplib takes it when it loads.
    installTableDecoder();
    const { connect } = await import('amqplib');
    this.open = connect;
    liveBrokers.add(this);
    void this.connect();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    liveBrokers.delete(this);
    clearTimeout(this.retryTimer);
    await Promise.allSettled([...this.subscriptions].map((s) => s.stop()));
    // Wait (bounded) for confirms in flight, then close.
    const deadline = Date.now() + this.settings.ackTimeoutMs;
    while (this.confirms.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const conn = this.connection;
    const closing = (async () => {
      await this.leaveDeclaredBindings();
      this.topologyOn = undefined;
      await conn?.close().catch(() => undefined);
    })();
    if (conn && (await within(closing, this.settings.connectTimeoutMs)) === 'late') {
      this.log.warn({ waitedMs: this.settings.connectTimeoutMs }, 'amqp server did not answer the connection close within connectTimeoutMs; dropping the connection');
      dropConnection(conn);
    }
    this.topologyOn = undefined;
  }

  /** Whether this broker declares `queue`, with its bindings, at every connect. */
  private declares(queue: string): boolean {
    return Object.hasOwn(this.settings.queues, queue) && this.settings.queues[queue]!.declare;
  }

  /**
   * The bindings of `queue` this broker holds: those of the queue when it declares it, and the
   * routing-key patterns of its running consume routes whose group names the queue.
   */
  bindingsOf(queue: string): Binding[] {
    const declared = this.declares(queue) ? declaredBindings(this.settings.queues[queue]!, this.settings) : [];
    return declared.concat([...this.subscriptions].flatMap((s) => s.bindingOf(queue) ?? []));
  }

  /**
   * When another broker of this name runs on the same server, a reload replaced this one (or this
   * one was its replacement, undone before the commit): the bindings of this broker's declared
   * queues that no broker of this process still holds go. The broker that declares the queue now
   * unbinds them once its own bindings are in place: at once when it has connected, else when it
   * does (connect()). When none declares it (the entry removed), this broker unbinds them itself.
   * Any other stop (a shutdown, a failed start, the broker removed or moved to another server)
   * leaves every binding on the server: the queue keeps collecting for the next process.
   */
  private async leaveDeclaredBindings(): Promise<void> {
    if (!this.declaredOnce || ![...liveBrokers].some((b) => b.name === this.name && b.server === this.server)) return;
    const server = this.server;
    const queues = Object.keys(this.settings.queues).filter((q) => this.declares(q) && this.settings.queues[q]!.bindings.length > 0);
    await Promise.all(
      queues.map(async (queue) => {
        leaveBindings(server, queue, declaredBindings(this.settings.queues[queue]!, this.settings));
        const declarers = [...liveBrokers].filter((b) => b.server === server && b.declares(queue));
        if (declarers.length > 0) {
          const bound = declarers.find((b) => b.topologyOn !== undefined);
          if (bound) await unbindLeft(bound.topologyOn!, server, queue, keptBindings(server, queue), bound.log);
          return;
        }
        // Any connection of this process to the server can unbind them (its replacement may be up while this one is not).
        const on = this.topologyOn ?? [...liveBrokers].find((b) => b.server === server && b.topologyOn !== undefined)?.topologyOn;
        if (on) await unbindLeft(on, server, queue, keptBindings(server, queue), this.log);
        else {
          undeclaredOf(server).add(queue);
          this.log.warn(
            { queue, bindings: declaredBindings(this.settings.queues[queue]!, this.settings) },
            'amqp bindings a reload dropped could not be unbound (not connected); unbinding them at the next connect to the server',
          );
        }
      }),
    );
  }

  /**
   * The bindings of queues a reload removed from the config while no broker could reach the server
   * (undeclaredQueues): unbound on this connection, now that it is up, unless a broker declares the
   * queue again meanwhile (its own connect then unbinds what it no longer binds).
   */
  private async unbindUndeclared(conn: ChannelModel): Promise<void> {
    const queues = undeclaredQueues.get(this.server);
    if (!queues) return;
    for (const queue of [...queues]) {
      queues.delete(queue);
      if ([...liveBrokers].some((b) => b.server === this.server && b.declares(queue))) continue;
      await unbindLeft(conn, this.server, queue, keptBindings(this.server, queue), this.log);
    }
  }

  reconfigure(): void {}

  health(): Health {
    return this.state;
  }

  /** The first time the connection was open with the topology declared and the publish channel ready. */
  connectedOnce(until: Promise<unknown>): true | Promise<void> {
    return this.firstConnection.when(until);
  }

  topicProblem(topic: string): string | undefined {
    return routingKeyProblem(topic);
  }

  headerProblem(name: string, value: string): string | undefined {
    if (Buffer.byteLength(name) > 255) return 'an AMQP header name is at most 255 bytes';
    // `content-type` is sent as the content_type property, a short string.
    return name === 'content-type' && Buffer.byteLength(value) > 255 ? 'an AMQP content type (the content-type header) is at most 255 bytes' : undefined;
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    try {
      const conn = await this.open(this.settings.url, { ...(this.settings.tls ?? {}), timeout: this.settings.connectTimeoutMs, clientProperties: { connection_name: `eventgate ${this.name}` } });
      conn.on('error', (err: Error) => this.log.warn({ err: err.message }, 'amqp connection error'));
      conn.on('close', (err?: Error) => this.lost(closedByServer(err, this.vhost) ?? 'unreachable: connection closed'));
      conn.on('blocked', (reason: string) => {
        this.state = { ready: false, detail: `blocked by the server: ${reason}` };
      });
      conn.on('unblocked', () => {
        if (this.connection === conn) this.state = { ready: true };
      });
      await declareTopology(conn, this.settings);
      // Every declared queue is there and bound again: a route's re-declare that failed half-way is made good.
      this.declaredQueues.declaredAll();
      this.topologyOn = conn;
      this.declaredOnce = true;
      // What a replaced broker of this process left on these queues goes now that the new bindings are in place.
      await Promise.all(Object.keys(this.settings.queues).map((q) => (this.declares(q) ? unbindLeft(conn, this.server, q, keptBindings(this.server, q), this.log) : undefined)));
      await this.unbindUndeclared(conn);
      const publisher = await this.openPublisher(conn);
      if (this.stopped) {
        await conn.close().catch(() => undefined);
        return;
      }
      this.connection = conn;
      this.publisher = publisher;
      this.backoff.reset();
      this.state = { ready: true };
      this.firstConnection.connected();
      this.log.info('amqp connected');
      for (const s of this.subscriptions) s.attach(conn);
    } catch (err) {
      this.topologyOn = undefined;
      const why = connectFailure(err as Error, this.settings);
      const refused = /ACCESS.REFUSED/.test(why) ? 'login' : isTlsFailure(err) ? 'tls' : undefined;
      this.state = {
        ready: false,
        // The server refused a declare or check (an exchange or queue that must exist and does
        // not, a queue it has with other arguments, a name it keeps for itself): it is there and
        // took the login, the topology is not right. Else the connection itself failed.
        detail:
          /NOT.FOUND/.test(why) || refusedOnChannel(err) ? `topology not ready: ${why}` : ((refused === undefined ? closedByServer(err, this.vhost) : undefined) ?? notConnectedDetail(why, refused)),
      };
      const wait = this.backoff.delay();
      this.log.warn({ err: why, retryInMs: wait }, 'amqp connect failed; retrying');
      this.retry(wait);
    }
  }

  /** The confirm channel publishes go out on, with its handlers. */
  private async openPublisher(conn: ChannelModel): Promise<AmqpPublisher> {
    const channel = await conn.createConfirmChannel();
    channel.on('error', (err: Error) => {
      const size = SIZE_REFUSAL.exec(err.message);
      if (size) {
        this.maxMessageSize = Number(size[2]);
        this.sizeRefusedOn = channel;
        this.log.warn(
          { err: err.message, maxMessageSize: this.maxMessageSize },
          'amqp server refused a message over its max_message_size (closing the publish channel); larger ones are refused before they are sent from now on',
        );
      } else this.log.warn({ err: err.message }, 'amqp publish channel error');
    });
    channel.on('return', (m: ConsumeMessage) => {
      const c = this.confirms.get(m.properties.messageId as string);
      if (!c) return;
      c.settle(new Unroutable(this.name, c.exchange, c.key));
      // A declared queue whose binding matches the key was deleted on the server, perhaps one no route reads (nothing else would notice before a reconnect).
      if (this.connection === conn && !this.stopped) this.declaredQueues.unroutable(conn, c.exchange, c.key, c.n);
    });
    channel.on('close', () => {
      if (this.connection !== conn || this.stopped) return;
      // Only the publish channel went, for a message over the size limit: a new one, leaving the consume routes' channels be.
      if (this.sizeRefusedOn === channel) {
        this.sizeRefusedOn = undefined;
        void this.reopenPublisher(conn);
      }
      // Another channel the server closed (e.g. publishing to a missing exchange) while the connection lives: connect again.
      else void conn.close().catch(() => undefined);
    });
    const out = new AmqpPublisher(channel);
    out.maxBody = this.maxMessageSize ?? Number.POSITIVE_INFINITY;
    return out;
  }

  private async reopenPublisher(conn: ChannelModel): Promise<void> {
    this.publisher = undefined;
    this.state = { ready: false, detail: 'opening a new publish channel (the server closed the last one for a message over its max_message_size)' };
    try {
      const publisher = await this.openPublisher(conn);
      if (this.connection !== conn || this.stopped) return;
      this.publisher = publisher;
      this.state = { ready: true };
      this.log.info('amqp publish channel opened again');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'amqp publish channel could not be opened again; reconnecting');
      void conn.close().catch(() => undefined);
    }
  }

  /** What a publish failed with, as its caller is told: the message the server found too large is refused (413), not an outage. */
  failureOf(err: Error, bytes: number): Error {
    // RabbitMQ nacks a message when one queue it was routed to refused it (`x-overflow: reject-publish`
    // at its `x-max-length`, a quorum queue without a leader): the other queues keep their copies.
    if (err.message === 'message nacked')
      return new Error(
        `broker '${this.name}' refused the message (basic.nack: a queue it was routed to refused it, such as one at its x-max-length with x-overflow reject-publish; other queues bound for it may hold it, and take it again if it is sent again)`,
      );
    const max = this.maxMessageSize;
    if (err.message !== 'channel closed') return err;
    if (max !== undefined && bytes > max) return tooLarge(bytes, max);
    // amqplib's word for a confirm the closing channel will never get (a lost connection, the server closing it).
    return new LostUnacknowledged('the publish channel closed');
  }

  /** The connection closed; `detail` says why, as /readyz and the 503s show it (`unreachable: ...`, `closed by the server: ...`). */
  private lost(detail: string): void {
    if (this.stopped || !this.connection) return;
    this.connection = undefined;
    this.publisher = undefined;
    this.topologyOn = undefined;
    this.state = { ready: false, detail };
    this.log.warn({ reason: detail }, 'amqp connection lost; reconnecting');
    // Publishes awaiting a confirm on the dead channel will never get one (RabbitMQ may have taken them all the same).
    for (const c of this.confirms.values()) c.settle(new LostUnacknowledged(`the connection was lost (${detail})`));
    for (const s of this.subscriptions) s.detach();
    this.retry();
  }

  private retry(wait = this.backoff.delay()): void {
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => void this.connect(), wait);
    this.retryTimer.unref();
  }

  publish(topic: string, msg: Message): Promise<Delivery> {
    if (this.stopped) return Promise.reject(new Error(`broker '${this.name}' is stopped`));
    const out = this.publisher;
    if (!out || !this.state.ready) {
      this.telemetry?.producerError();
      return Promise.reject(new NotConnected(this.name, this.state.detail ?? 'connecting'));
    }
    const exchange = this.settings.exchange.name;
    const n = ++this.nextId;
    const id = `${this.name}-${n}`;
    const promise = newPromise<Delivery>();
    const p = new Publish(this, id, n, exchange, topic, captured.resolve, captured.reject);
    p.deadline = this.deadlines.track(p);
    this.confirms.set(id, p);
    try {
      // `confirmed` runs on the server's basic.ack (or nack); a basic.return for an unroutable
      // mandatory message comes before its ack and has already settled it.
      const payload = valuePayload(msg);
      p.bytes = out.publish(
        exchange,
        topic,
        payload,
        {
          mandatory: this.settings.mandatory,
          persistent: this.settings.persistent,
          headers: msg.headers,
          messageId: id,
          // The publisher leaves the `content-type` header out of the headers table: this is where it goes.
          contentType: payloadContentType(msg, payload, 'text/plain'),
          // And the `content-encoding` header (left out of the table too), while it still describes the bytes.
          contentEncoding: payloadContentEncoding(msg),
          // The message's own time (a consumed record's, 0 included); AMQP carries whole seconds.
          timestamp: Math.floor((msg.timestamp >= 0 ? msg.timestamp : Date.now()) / 1000),
        },
        p.confirmed,
      );
    } catch (err) {
      p.settle(err as Error);
    }
    return promise;
  }

  /** How long a consume route waits for the confirm of a publish its deadline answered (AckTimeout.late) before it counts it lost. */
  get lateAnswerMs(): number {
    return this.settings.ackTimeoutMs + this.settings.connectTimeoutMs;
  }

  /** A publish its deadline answered: its confirm or basic.return is still correlated until it comes (Publish.late). */
  awaitLate(p: Publish): void {
    this.confirms.set(p.id, p);
  }

  /** A publish settled: it no longer waits for a confirm or a basic.return. */
  forget(id: string, failed: boolean): void {
    this.confirms.delete(id);
    if (failed) this.telemetry?.producerError();
  }

  /** Per consume route: messages ready in its queue as of the last poll, plus those it holds unacknowledged. */
  consumerLag(): ConsumerLag[] {
    return [...this.subscriptions].flatMap((s) => {
      const lag = s.lag();
      return lag === undefined ? [] : [{ route: s.spec.route, topic: s.spec.topic, partition: 0, lag }];
    });
  }

  subscribe(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Subscription {
    const sub = new AmqpSubscription(this.name, this.settings, spec, handler, this.log.child({ route: spec.route, topic: spec.topic }), this.telemetry, this.declaredQueues);
    this.subscriptions.add(sub);
    if (this.connection) sub.attach(this.connection);
    return leavesOnStop(this.subscriptions, sub);
  }
}

/** The exchange (unless built in) and the queues the config declares, with their bindings. */
async function declareTopology(conn: ChannelModel, s: AmqpSettings): Promise<void> {
  const ch = await conn.createChannel();
  try {
    if (!builtInExchange(s.exchange.name)) {
      if (s.exchange.declare) await ch.assertExchange(s.exchange.name, s.exchange.type, { durable: true });
      // One that must exist already is checked as queues are: publishing to a missing one closed the
      // channel, and with it the connection and every consume route's channel, at each publish.
      else await ch.checkExchange(s.exchange.name);
    }
    // A queue that must exist already (declare: false) is the business of the routes that read it
    // (AmqpSubscription.open): missing, it stops only them, not the broker's publishes and other routes.
    for (const [name, q] of Object.entries(s.queues)) if (q.declare) await declareQueue(ch, name, q, s);
  } finally {
    await ch.close().catch(() => undefined);
  }
}

/** The amqp brokers of this process that started and have not stopped. */
const liveBrokers = new Set<AmqpBroker>();

/**
 * Queues whose entry a reload removed while the replaced broker was not connected, by server
 * (serverOf): their bindings (in leftBindings) are unbound at the next connect of a broker to that
 * server (unbindUndeclared). Before, they were left with a warning to remove them by hand, and the
 * server went on routing their messages into a queue nothing reads (fault audit, point 173).
 */
const undeclaredQueues = new Map<string, Set<string>>();

function undeclaredOf(server: string): Set<string> {
  let queues = undeclaredQueues.get(server);
  if (!queues) undeclaredQueues.set(server, (queues = new Set()));
  return queues;
}

/** Every binding of `queue` on `server` that a running broker or consume route of this process holds. */
function keptBindings(server: string, queue: string): Binding[] {
  return [...liveBrokers].filter((b) => b.server === server).flatMap((b) => b.bindingsOf(queue));
}

/**
 * One consume route. Its queue is a queue the config declares (`queues:`) when `from.topic` names
 * one; otherwise `from.topic` is a routing-key pattern on the broker's exchange, and the route's
 * group names a durable queue bound with it (a per-instance group gets an exclusive queue that
 * goes away with the connection). Messages are handled one at a time, in order, with at most
 * `prefetch` unacknowledged; each is acknowledged only after every target accepted it.
 */
class AmqpSubscription {
  private channel: Channel | undefined;
  private stopping = false;
  /** Handling is sequential: each delivery waits for the previous one. */
  private chain: Promise<unknown> = Promise.resolve();
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
      else {
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
      if (!perInstance) await unbindLeft(conn, this.server, queue, keptBindings(this.server, queue), this.log);
    }
    if (this.stopping) {
      await ch.close().catch(() => undefined);
      return;
    }
    this.channel = ch;
    this.held = 0;
    await ch.consume(queue, (m) => {
      if (m === null) {
        // Nothing more comes on this consumer: close the channel (requeueing what it holds), and closed() opens another.
        this.log.warn('consumer cancelled by the server (queue deleted?)');
        void ch.close().catch(() => undefined);
        return;
      }
      this.held++;
      this.chain = this.chain.then(() => this.deliver(ch, m));
    });
    this.pollDepth(ch, queue);
    this.backoff.reset();
    this.queueMissing.found();
    this.startProblem = undefined;
    this.log.info({ queue }, 'consumer ready');
  }

  private async deliver(ch: Channel, m: ConsumeMessage): Promise<void> {
    const msg = toMessage(m);
    const accepted = await handOver(msg, this.relay, { route: this.spec.route, log: this.log, telemetry: this.telemetry, stopping: () => this.stopping || this.channel !== ch });
    // Not accepted: the route stopped, or the channel died (the server then redelivers it by itself).
    if (accepted) {
      try {
        ch.ack(m);
        if (this.channel === ch) this.held--;
      } catch {
        // The channel closed after the route accepted: the server redelivers it (at least once).
      }
    }
  }

  /**
   * A reload's rebuilt route asks the same (Subscription.handOver): the channel and its consumer
   * go on, and the deliveries after the one in hand are the new route's: none goes back to the
   * queue to be delivered again (flagged redelivered, behind what another instance took meanwhile).
   */
  handOver(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Promise<void> {
    this.spec = spec;
    this.log.info('subscription handed over to the rebuilt route');
    return this.relay.replace(handler);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearInterval(this.poll);
    // A pattern route leaves its group's queue bound, collecting for the route's return; a successor with another pattern unbinds it (unbindLeft).
    const bound = this.boundBinding();
    if (bound) leaveBindings(this.server, this.spec.group, [bound]);
    await this.chain;
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

/**
 * Ends a connection at once, without the close handshake a server that stopped answering never
 * completes. With an error: amqplib learns of a socket's end only from 'error' or 'end', and a
 * plain destroy() emits neither, so the broker would never reconnect.
 */
function dropConnection(conn: ChannelModel): void {
  (conn as unknown as { connection?: { stream?: { destroy(err?: Error): void } } }).connection?.stream?.destroy(new Error('the server did not answer a close within connectTimeoutMs'));
}

function toMessage(m: ConsumeMessage): Message {
  const headers = headerStrings(m.properties.headers);
  // The content_type property is the message's content type (a structured CloudEvent's
  // application/cloudevents+json); a `content-type` header, as earlier eventgate versions sent it, wins.
  const contentType = m.properties.contentType as unknown;
  if (headers['content-type'] === undefined && typeof contentType === 'string' && contentType !== '') headers['content-type'] = contentType;
  // content_encoding (gzip, ...) as HTTP names it; the publisher maps the header back to the property.
  const contentEncoding = m.properties.contentEncoding as unknown;
  if (headers[CONTENT_ENCODING] === undefined && typeof contentEncoding === 'string' && contentEncoding !== '') headers[CONTENT_ENCODING] = contentEncoding;
  return payloadMessage(m.content, {
    headers,
    topic: m.fields.routingKey,
    partition: null,
    offset: null,
    timestamp: consumedTime(m.properties.timestamp) ?? Date.now(),
  });
}
