import { randomBytes } from 'node:crypto';
import { notConnectedDetail } from '../not-connected.js';
import { isTlsFailure } from '../../tls-failures.js';
import type { ChannelModel, ConsumeMessage } from 'amqplib';
import type { Logger } from '../../../log.js';
import { payloadContentEncoding, payloadContentType, valuePayload, type Delivery, type Message } from '../../../core/message.js';
import type { BrokerRuntime, BrokerSpanFacts, BrokerTelemetry, ConsumerLag, Health, RuntimeEnv, SubscribeSpec, Subscription } from '../../contracts.js';
import { BROKER_CONNECTING } from '../../contracts.js';
import { AMQP_PORTS, serverAddressOf } from '../server-url.js';
import { captured, newPromise } from '../../../core/captured-promise.js';
import { AckDeadlines, BlockedByServer, LateWrite, type AckTimeout, type Deadline, type Expiring, LostUnacknowledged, leavesOnStop, NotConnected, TopicDeliveries } from '../acknowledgement.js';
import { resetGivenUp } from '../given-up.js';
import { SIZE_REFUSAL, tooLarge } from './size-limit.js';
import type { AmqpSettings } from '../amqp.js';
import { type Binding, leaveBindings, serverOf, unbindLeft, vhostOf } from './bindings.js';
import { within } from '../../../core/within.js';
import { reconnectBackoff } from '../../../core/backoff.js';
import { AmqpPublisher, userIdOf } from './publisher.js';
import { USER_ID_REFUSAL, userIdRefused } from './user-id.js';
import { FirstConnection } from '../first-connection.js';
import { installTableDecoder, TYPED_FIELDS } from './field-table.js';
import type { WithTypedFields } from './consumed.js';
import { routingKeyProblem } from './routing-keys.js';
import { bindQueue, DeclaredQueues, declaredBindings, declareQueue } from './declared-queues.js';
import {
  channelClosedByServer,
  closedByServer,
  connectFailure,
  declaredOtherwise,
  declaredOtherwiseState,
  dropConnection,
  refusedOnChannel,
  RESET_WITH_ITS_PAIR,
  resetConnection,
  socketOf,
} from './connection.js';
import { AmqpSubscription } from './subscription.js';

/** The reply code of a channel.close for a resource the user may not use. */
const ACCESS_REFUSED = 403;

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
  /** The user_id property it carries: what tells the message the server refused for it when it closes the channel. */
  userId: string | undefined;
  /** amqplib's confirm callback: nothing on basic.ack, an error on basic.nack or when the channel closes first. */
  readonly confirmed: (err?: Error | null) => void;

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
  ) {
    // Assigned here, not as a class field: the bundle keeps function names (esbuild `keepNames`,
    // scripts/bundle-app.js), which wraps a field's arrow in a `__name` call, an
    // Object.defineProperty on each publish's closure (~0.35 µs); a member assignment names nothing.
    this.confirmed = (err) => this.settle(err ? this.broker.failureOf(err, this.bytes, this.userId) : undefined);
  }

  /** Once its deadline answered it while its confirm was still due: its real outcome, for AckTimeout.late. */
  private late: LateWrite | undefined;

  /** Settles the publish (once: whatever comes after the first is ignored, but told as a late outcome). */
  settle(err?: Error): void {
    if (this.settled) {
      const late = this.late;
      if (late === undefined) return;
      this.late = undefined;
      this.broker.forget(this.n, false);
      late.tell(err ? undefined : this.broker.deliveries.of(this.key));
      return;
    }
    this.settled = true;
    if (this.deadline) this.deadline.settled = true;
    this.broker.forget(this.n, err !== undefined);
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
 * A RabbitMQ (AMQP 0-9-1) server through amqplib. Two connections per broker: one for the topology
 * and a channel per consume route, one for the confirm channel publishes go out on (RabbitMQ's
 * flow control blocks a connection that publishes, reading nothing more of it, acks included, so a
 * memory or disk alarm would stop the consume routes that drain its queues too). amqplib does not
 * reconnect: this class does, with backoff, re-declaring the topology and restarting every route's
 * consumer.
 */
export class AmqpBroker implements BrokerRuntime {
  readonly kind = 'amqp';
  private readonly log: Logger;
  private readonly telemetry: BrokerTelemetry | undefined;
  private connection: ChannelModel | undefined;
  /** The connection the publish channel is on (the class comment says why it is another); lost with `connection`. */
  private publishConnection: ChannelModel | undefined;
  private publisher: AmqpPublisher | undefined;
  private state: Health = { ready: false, detail: BROKER_CONNECTING };
  /** Why the server holds the publish connection back (connection.blocked), until it says unblocked. */
  private blockedFor: string | undefined;
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
  /** The failure last logged: a server down or a login refused for an hour is one warning, not one per try (docs/scaling.md). */
  private loggedFailure: string | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** Each connection being opened, by its abort: stop() ends them rather than leave one to open after it returned. */
  private readonly opening = new Set<AbortController>();
  /** A connect() or reopenPublishing() under way: stop() waits for it (bounded by connectTimeoutMs). */
  private readonly connecting = new Set<Promise<void>>();
  private readonly subscriptions = new Set<AmqpSubscription>();
  /**
   * Publishes awaiting a confirm or a basic.return, by their number (`n`, which their message id
   * ends with): a number key costs nothing to hash, where the id, a string built per publish, was
   * flattened and hashed for its key.
   */
  private readonly confirms = new Map<number, Publish>();
  /** What publishes answer, per topic. */
  readonly deliveries: TopicDeliveries;
  private nextId = 0;
  /**
   * What every message id of this broker starts with: its name and 64 random bits, new for each
   * broker a start or a reload makes. The number after it restarts at 1 with each of them, and a
   * consumer that drops a message whose message_id it saw before (the idempotent-consumer habit)
   * dropped the messages of a restarted gateway, or of a second instance, as repeats.
   */
  private readonly idPrefix: string;
  private open!: typeof import('amqplib')['connect'];
  /**
   * The server's `max_message_size`, once it refused a message over it (the only way it tells):
   * larger bodies are refused before they are sent from then on, as sending one closes the publish
   * channel and fails every publish in flight on it. Kept across reconnects: the server's limit
   * changes only with its config; a gateway reload or restart learns it again.
   */
  private maxMessageSize: number | undefined;
  /**
   * The user the server authenticated the connection as, once it refused a publish's user_id for
   * not being it (the only way it tells; a user with the impersonator tag may set any): a publish
   * with another user_id is refused before it is sent from then on, as sending one closes the
   * publish channel and fails every publish in flight on it. Kept as maxMessageSize is.
   */
  private authenticatedUser: string | undefined;
  /** The server's words for the user_id it refused last (what that publish's 400 says). */
  private userIdRefusal: { userId: string; words: string } | undefined;
  /**
   * The publish channel the server closed for what one message asked (over its size limit; a 403
   * ACCESS_REFUSED, an exchange the user may not write to): a new one is opened on the same
   * connection, the consume routes' channels left be, and why it needs one.
   */
  private refusedOn: { channel: unknown; why: string } | undefined;
  /** The server's words when it closed the publish channel (`403 ACCESS_REFUSED - ...`): what the publishes it failed are told. */
  private publishClosedBy: string | undefined;
  /** A connection this broker closed itself to connect again, and why (what /readyz says meanwhile, rather than `unreachable`). */
  private closedFor: { conn: ChannelModel; why: string } | undefined;

  /** Publishes waiting for the server's acknowledgement, each until `ackTimeoutMs`. */
  private deadlines: AckDeadlines;
  /** Declares a queue of `queues` deleted on the server again, for its route or after an unroutable publish. */
  private readonly declaredQueues: DeclaredQueues;

  /**
   * The exchange as the destination (OpenTelemetry's RabbitMQ conventions): a write's is the
   * broker's exchange; a consume route's, the exchange its queue is bound on (a pattern route's
   * queue: the broker's exchange; a queue of `queues`: its bindings' one exchange, the default
   * exchange `""` with none, undefined with several).
   */
  get spanFacts(): BrokerSpanFacts {
    const s = this.settings;
    return {
      server: serverAddressOf(s.url, AMQP_PORTS),
      sendDestination: s.exchange.name,
      consumeDestination(topic: string) {
        const queue = Object.hasOwn(s.queues, topic) ? s.queues[topic]! : undefined;
        if (queue === undefined) return s.exchange.name;
        const exchanges = new Set(queue.bindings.map((b) => b.exchange ?? s.exchange.name));
        return exchanges.size === 0 ? '' : exchanges.size === 1 ? [...exchanges][0] : undefined;
      },
    };
  }

  constructor(
    readonly name: string,
    public settings: AmqpSettings,
    env: RuntimeEnv,
  ) {
    this.deadlines = new AckDeadlines(settings.ackTimeoutMs, name);
    this.deliveries = new TopicDeliveries(name);
    this.server = serverOf(settings.url);
    this.vhost = vhostOf(settings.url);
    this.log = env.logger.child({ broker: name });
    this.telemetry = env.telemetry?.broker(name, 'amqp');
    this.declaredQueues = new DeclaredQueues(settings, this.log, () => this.nextId);
    // A message id is a short string (255 bytes): a name too long to fit beside the rest is left out.
    this.idPrefix = `${Buffer.byteLength(name) <= 200 ? `${name}-` : ''}${randomBytes(8).toString('hex')}-`;
  }

  /** Never fails: an unreachable server makes the broker not ready, and it keeps trying. */
  async start(): Promise<void> {
    // Loaded when a broker starts, so commands that start none (validate, schema) never load it;
    // its table decoder wrapped first (field-table.ts), as amqplib takes it when it loads.
    installTableDecoder();
    const { connect } = await import('amqplib');
    this.open = connect;
    liveBrokers.add(this);
    this.underWay(this.connect());
  }

  /** Keeps `work` (a connect or a reopen, neither of which rejects) for stop() until it settles. */
  private underWay(work: Promise<void>): void {
    this.connecting.add(work);
    void work.finally(() => this.connecting.delete(work)).catch(() => undefined);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    liveBrokers.delete(this);
    clearTimeout(this.retryTimer);
    // A connection being opened (a reconnect, the publish connection again) is ended now, and what
    // was connecting is waited for: it closes what it opened, so none is left on the server, nor
    // opens there, after stop() returned. Bounded: past connectTimeoutMs it closes it once it opens.
    for (const abort of this.opening) abort.abort();
    if (this.connecting.size > 0) await within(Promise.allSettled(this.connecting), this.settings.connectTimeoutMs);
    await Promise.allSettled([...this.subscriptions].map((s) => s.stop()));
    // Wait (bounded) for confirms in flight, then close.
    const deadline = Date.now() + this.settings.ackTimeoutMs;
    while (this.confirms.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const conn = this.connection;
    const publishing = this.publishConnection;
    const closing = (async () => {
      await this.leaveDeclaredBindings();
      this.topologyOn = undefined;
      await Promise.all([conn?.close().catch(() => undefined), publishing?.close().catch(() => undefined)]);
    })();
    if (conn && (await within(closing, this.settings.connectTimeoutMs)) === 'late') {
      this.log.warn({ waitedMs: this.settings.connectTimeoutMs }, 'amqp server did not answer the connection close within connectTimeoutMs; dropping the connection');
      dropConnection(conn);
      if (publishing) dropConnection(publishing);
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

  /**
   * A reload changed only keys read per publish (`ackTimeoutMs`, `persistent`, `mandatory`: the
   * kind's canReconfigure): the next publish uses them. Publishes already out keep the deadline
   * they were given, in the old AckDeadlines, whose timer runs until they are answered.
   */
  reconfigure(options: unknown): void {
    const next = options as AmqpSettings;
    if (next.ackTimeoutMs !== this.settings.ackTimeoutMs) this.deadlines = new AckDeadlines(next.ackTimeoutMs, this.name);
    this.settings = next;
  }

  health(): Health {
    return this.state;
  }

  /** Set by holdUntilCommit() until commit(): the queues of `queues` are declared without their bindings. */
  private held = false;
  /** While held, the queues the last connect found on the server otherwise (not declared, so not to be bound at the commit). */
  private heldOtherwise: ReadonlyMap<string, string> | undefined;

  holdUntilCommit(): void {
    this.held = true;
  }

  /**
   * The reload that built this broker commits: its queues' bindings go on the server now, before
   * the routes move to it, and what the replaced broker left on them goes once they are in place.
   * Held, a binding such as `ca` beside the running broker's `us` routed a publish the running
   * config answers 503 (unroutable) into the queue while the reload built, and kept it there when
   * the reload was then rejected. Not connected yet: its connect binds them. A binding refused
   * here (its exchange missing), or not answered within connectTimeoutMs (the reload waits for
   * it), is retried as at a connect: the connection is made again.
   */
  async commit(): Promise<void> {
    if (!this.held) return;
    this.held = false;
    const conn = this.topologyOn;
    const otherwise = this.heldOtherwise;
    this.heldOtherwise = undefined;
    if (conn === undefined || otherwise === undefined || this.stopped) return;
    let failure: string | undefined;
    const binding = this.bindHeld(conn, otherwise).catch((err: Error) => {
      failure = err.message;
    });
    if ((await within(binding, this.settings.connectTimeoutMs)) === 'late') failure = `not answered within connectTimeoutMs (${this.settings.connectTimeoutMs} ms)`;
    if (failure === undefined) return;
    this.log.warn({ err: failure }, "amqp bindings not made at the reload's commit; connecting again to declare the topology");
    dropConnection(conn);
  }

  /** Binds the declared queues a held connect left unbound (all but those the server has `otherwise`), then as bindingsInPlace. */
  private async bindHeld(conn: ChannelModel, otherwise: ReadonlyMap<string, string>): Promise<void> {
    const ch = await conn.createChannel();
    // A refusal is bindQueue's rejection; unheard, amqplib's 'error' event would close the connection.
    ch.on('error', () => undefined);
    try {
      for (const [name, q] of Object.entries(this.settings.queues)) if (q.declare && !otherwise.has(name)) await bindQueue(ch, name, q, this.settings);
    } finally {
      await ch.close().catch(() => undefined);
    }
    await this.bindingsInPlace(conn);
  }

  /** What a replaced broker of this process left on the declared queues goes, now that their bindings are in place. */
  private async bindingsInPlace(conn: ChannelModel): Promise<void> {
    await Promise.all(Object.keys(this.settings.queues).map((q) => (this.declares(q) ? unbindLeft(conn, this.server, q, keptBindings(this.server, q), this.log) : undefined)));
    await this.unbindUndeclared(conn);
  }

  /** The server refused the login, a TLS handshake or a declare at the last connect (not a missing exchange or queue: those may come). */
  private refused: string | undefined;

  refusal(): string | undefined {
    return this.refused;
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
    // `content-type` and `content-encoding` are sent as the content_type and content_encoding properties, short strings.
    if (name === 'content-type' && Buffer.byteLength(value) > 255) return 'an AMQP content type (the content-type header) is at most 255 bytes';
    return name === 'content-encoding' && Buffer.byteLength(value) > 255 ? 'an AMQP content encoding (the content-encoding header) is at most 255 bytes' : undefined;
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    /** This connect's connection, once open: closed when the connect fails after it opened. */
    let opened: ChannelModel | undefined;
    try {
      const conn = (opened = await this.openConnection(''));
      conn.on('close', (err?: Error) => {
        const own = this.closedFor?.conn === conn ? this.closedFor.why : undefined;
        if (own !== undefined) this.closedFor = undefined;
        this.lost(closedByServer(err, this.vhost) ?? own ?? 'unreachable: connection closed');
      });
      // Held (a reload builds this broker beside the running one): the queues without their bindings, until commit().
      const bind = !this.held;
      const otherwise = await declareTopology(conn, this.settings, bind);
      for (const [queue, words] of otherwise)
        this.log.warn(
          { queue, err: words },
          `amqp queue '${queue}' ${declaredOtherwiseState(words) === 'refused as declared' ? 'was refused as declared (an argument or property the server does not take for it)' : 'is on the server otherwise than declared'}; the routes that read it wait (declaring it again with backoff), publishes and other routes go on`,
        );
      // Every declared queue is there and bound again: a route's re-declare that failed half-way is made good.
      this.declaredQueues.declaredAll(otherwise);
      this.topologyOn = conn;
      this.declaredOnce = true;
      if (bind) await this.bindingsInPlace(conn);
      // The reload committed while the queues were declared: their bindings now.
      else if (!this.held) await this.bindHeld(conn, otherwise);
      else this.heldOtherwise = otherwise;
      const [publishing, publisher] = await this.openPublishing(conn);
      if (this.stopped) {
        await Promise.all([conn.close().catch(() => undefined), publishing.close().catch(() => undefined)]);
        return;
      }
      this.connection = conn;
      this.publishConnection = publishing;
      this.publisher = publisher;
      this.backoff.reset();
      this.loggedFailure = undefined;
      this.refused = undefined;
      this.state = { ready: true };
      this.firstConnection.connected();
      this.log.info('amqp connected');
      for (const s of this.subscriptions) s.attach(conn);
    } catch (err) {
      this.topologyOn = undefined;
      // A declare refused (an exchange that must exist and does not) fails the connect on a
      // connection still open: left so, each retry added one more on the server. Closed before the
      // retry (lost() ignores its close: the broker has no connection), not waited for: over a
      // path that died meanwhile its CloseOk would not come, and the retry would wait with it.
      if (opened !== undefined && opened !== this.connection) void opened.close().catch(() => undefined);
      // stop() ended it (the connect aborted, the publish connection not opened): nothing failed.
      if (this.stopped) return;
      const why = connectFailure(err as Error, this.settings);
      const refused = /ACCESS.REFUSED/.test(why) ? 'login' : isTlsFailure(err) ? 'tls' : undefined;
      // The server refused a declare or check (an exchange or queue that must exist and does
      // not, a queue it has with other arguments, a name it keeps for itself): it is there and
      // took the login, the topology is not right. Else the connection itself failed.
      const onChannel = /NOT.FOUND/.test(why) || refusedOnChannel(err);
      const detail = onChannel ? `topology not ready: ${why}` : ((refused === undefined ? closedByServer(err, this.vhost) : undefined) ?? notConnectedDetail(why, refused, err));
      this.state = { ready: false, detail };
      // For good: a login or TLS handshake turned down, a declare refused (not a missing exchange, which may come).
      this.refused = /NOT.FOUND/.test(why) ? undefined : refusedOnChannel(err) ? `the server refused a declare: ${why}` : refused !== undefined ? detail : undefined;
      const wait = this.backoff.delay();
      if (why !== this.loggedFailure) this.log.warn({ err: why, retryInMs: wait }, 'amqp connect failed; retrying');
      this.loggedFailure = why;
      this.retry(wait);
    }
  }

  /** A connection to the server, named in its management UI `eventgate <broker><suffix>`, with its error handler. */
  private async openConnection(suffix: string): Promise<ChannelModel> {
    if (this.stopped) throw new Error(`broker '${this.name}' is stopped`);
    const abort = new AbortController();
    this.opening.add(abort);
    let conn: ChannelModel;
    // amqplib passes its options on to net.connect or tls.connect: the signal (not in its types) lets stop() destroy the socket, the handshake failing at once.
    const options = {
      ...(this.settings.tls ?? {}),
      timeout: this.settings.connectTimeoutMs,
      signal: abort.signal,
      clientProperties: { connection_name: `eventgate ${this.name}${suffix}` },
    };
    try {
      conn = await this.open(this.settings.url, options);
    } finally {
      this.opening.delete(abort);
    }
    conn.on('error', (err: Error) => {
      // amqplib ends the socket of a connection its heartbeat gives up (a FIN) right after this
      // event: reset it first, so what it had not delivered never reaches the server (given-up.ts).
      if (err.message === 'Heartbeat timeout') resetGivenUp(socketOf(conn));
      // lost() reset it with the other connection, which it logged.
      if (err.message === RESET_WITH_ITS_PAIR) return;
      this.log.warn({ err: err.message, ...(suffix === '' ? {} : { connection: 'publish' }) }, 'amqp connection error');
    });
    return conn;
  }

  /**
   * The publish connection beside `conn` and its confirm channel. `conn` closing takes it down (a
   * reconnect opens both again); it closing alone is opened again, the consume routes left be. On a
   * failure here `conn` is closed too, for a reconnect.
   */
  private async openPublishing(conn: ChannelModel): Promise<[ChannelModel, AmqpPublisher]> {
    let publishing: ChannelModel | undefined;
    /** The server's words when it closed this connection (a channel over its limit: 530 NOT_ALLOWED), for the reconnect's reason. */
    let closedWith: Error | undefined;
    try {
      const opened = (publishing = await this.openConnection(' publish'));
      opened.on('close', (err?: Error) => {
        closedWith = err;
        if (this.publishConnection !== opened || this.stopped) return;
        // An operator's close_connection, a lost socket: only the publishes in flight went with it.
        const why = `${closedByServer(err, this.vhost) ?? 'unreachable: connection closed'} (the publish connection)`;
        this.publishConnection = undefined;
        this.publisher = undefined;
        this.blockedFor = undefined;
        this.state = { ready: false, detail: why };
        this.log.warn({ reason: why }, 'amqp publish connection lost; opening it again');
        for (const c of this.confirms.values()) c.settle(new LostUnacknowledged(`the connection was lost (${why})`));
        this.underWay(this.reopenPublishing(conn));
      });
      opened.on('blocked', (reason: string) => {
        if (this.publishConnection !== opened) return;
        this.blockedFor = reason;
        this.state = { ready: false, detail: `blocked by the server: ${reason}` };
      });
      opened.on('unblocked', () => {
        this.blockedFor = undefined;
        if (this.publishConnection === opened) this.state = { ready: true };
      });
      return [opened, await this.openPublisher(conn, opened)];
    } catch (err) {
      const said = closedByServer(closedWith, this.vhost) ?? closedByServer(err as Error, this.vhost);
      if (said !== undefined) this.closedFor = { conn, why: `${said} (the publish connection)` };
      // At a stop, the broker's live connection is stop()'s to close (after it took its bindings back).
      const closeConn = !(this.stopped && this.connection === conn);
      await Promise.all([publishing?.close().catch(() => undefined), closeConn ? conn.close().catch(() => undefined) : undefined]);
      throw err;
    }
  }

  /** The publish connection again, after it closed alone; failing, `conn` is closed for a reconnect. */
  private async reopenPublishing(conn: ChannelModel): Promise<void> {
    const [publishing, publisher] = await this.openPublishing(conn).catch((err: Error) => {
      if (!this.stopped) this.log.warn({ err: err.message }, 'amqp publish connection could not be opened again; reconnecting');
      return [];
    });
    if (publishing === undefined || publisher === undefined) return;
    if (this.connection !== conn || this.stopped) {
      await publishing.close().catch(() => undefined);
      return;
    }
    this.publishConnection = publishing;
    this.publisher = publisher;
    this.state = { ready: true };
    this.log.info('amqp publish connection opened again');
  }

  /** The confirm channel publishes go out on (on `publishing`), with its handlers; `conn` is the broker's other connection. */
  private async openPublisher(conn: ChannelModel, publishing: ChannelModel): Promise<AmqpPublisher> {
    const channel = await publishing.createConfirmChannel();
    channel.on('error', (err: Error) => {
      // Emitted before amqplib fails the publishes in flight on the channel (failureOf names these words).
      this.publishClosedBy = channelClosedByServer(err);
      const size = SIZE_REFUSAL.exec(err.message);
      if (size) {
        this.maxMessageSize = Number(size[2]);
        this.refusedOn = { channel, why: 'the server closed the last one for a message over its max_message_size' };
        this.log.warn(
          { err: err.message, maxMessageSize: this.maxMessageSize },
          'amqp server refused a message over its max_message_size (closing the publish channel); larger ones are refused before they are sent from now on',
        );
        return;
      }
      const claimed = USER_ID_REFUSAL.exec(err.message);
      if (claimed) {
        this.authenticatedUser = claimed[2];
        this.userIdRefusal = { userId: claimed[1]!, words: this.publishClosedBy ?? err.message };
        this.refusedOn = { channel, why: "the server closed the last one for a message whose user_id was not the connection's user" };
        this.log.warn(
          { err: err.message, user: this.authenticatedUser },
          "amqp server refused a message's user_id (closing the publish channel); messages with another user_id are refused before they are sent from now on",
        );
        return;
      }
      // A publish the user may not make (no write permission on the exchange): reconnecting would
      // change nothing, and would close every consume route's channel, their messages in hand
      // delivered again, at each such publish.
      if ((err as { code?: unknown }).code === ACCESS_REFUSED) this.refusedOn = { channel, why: `the server closed the last one: ${this.publishClosedBy ?? err.message}` };
      this.log.warn({ err: err.message }, 'amqp publish channel error');
    });
    channel.on('return', (m: ConsumeMessage) => {
      const c = this.publishOf(m.properties.messageId);
      if (!c) return;
      c.settle(new Unroutable(this.name, c.exchange, c.key));
      // A declared queue whose binding matches the key was deleted on the server, perhaps one no route reads (nothing else would notice before a reconnect).
      if (this.connection === conn && !this.stopped) {
        const headers = m.properties.headers ?? {};
        this.declaredQueues.unroutable(conn, c.exchange, c.key, headers, c.n);
        // A routing-key route's queue loses its binding the same way (its exchange deleted and made again).
        for (const s of this.subscriptions) s.unroutable(conn, c.exchange, c.key, headers, c.n, () => this.nextId);
      }
    });
    channel.on('close', () => {
      // A closing connection closes its channels first, then says 'close': by the microtask, the
      // publish connection's own handler (or lost()) has taken it out of use, and nothing is left to do here.
      queueMicrotask(() => this.publishChannelClosed(conn, publishing, channel));
    });
    const out = new AmqpPublisher(channel);
    out.maxBody = this.maxMessageSize ?? Number.POSITIVE_INFINITY;
    this.publishClosedBy = undefined;
    return out;
  }

  /** The publish channel closed while its connection lives: a new one, or a reconnect. */
  private publishChannelClosed(conn: ChannelModel, publishing: ChannelModel, channel: object): void {
    if (this.connection !== conn || this.publishConnection !== publishing || this.stopped) return;
    // Only the publish channel went, for what one message asked: a new one, leaving the consume routes' channels be.
    const refused = this.refusedOn;
    if (refused?.channel === channel) {
      this.refusedOn = undefined;
      void this.reopenPublisher(conn, refused.why);
    }
    // Another channel the server closed (e.g. publishing to an exchange deleted meanwhile) while
    // the connection lives: connect again, declaring the exchange, queues and bindings again.
    else {
      // (Not when the connection itself went: its channels close first, with no words of the server's.)
      const why = this.publishClosedBy === undefined ? 'reconnecting: the publish channel closed' : `reconnecting: the server closed the publish channel (${this.publishClosedBy})`;
      if (this.publishClosedBy !== undefined) this.closedFor = { conn, why };
      // Until that close is answered (lost()), a publish would go out on the closed channel, on the
      // publish connection that lives on: the server closes that connection for it (504 CHANNEL_ERROR).
      this.publisher = undefined;
      this.state = { ready: false, detail: why };
      void conn.close().catch(() => undefined);
    }
  }

  private async reopenPublisher(conn: ChannelModel, why: string): Promise<void> {
    this.publisher = undefined;
    this.state = { ready: false, detail: `opening a new publish channel (${why})` };
    const publishing = this.publishConnection;
    if (publishing === undefined) return;
    try {
      const publisher = await this.openPublisher(conn, publishing);
      if (this.connection !== conn || this.publishConnection !== publishing || this.stopped) return;
      this.publisher = publisher;
      this.state = { ready: true };
      this.log.info('amqp publish channel opened again');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'amqp publish channel could not be opened again; reconnecting');
      // The publish connection's close opens it again (and, failing, the other one).
      void publishing.close().catch(() => undefined);
    }
  }

  /** What a publish failed with, as its caller is told: the message the server found too large is refused (413), not an outage. */
  failureOf(err: Error, bytes: number, userId?: string): Error {
    // RabbitMQ nacks a message when one queue it was routed to refused it (`x-overflow: reject-publish`
    // at its `x-max-length`, a quorum queue without a leader): the other queues keep their copies.
    if (err.message === 'message nacked')
      return new Error(
        `broker '${this.name}' refused the message (basic.nack: a queue it was routed to refused it, such as one at its x-max-length with x-overflow reject-publish; other queues bound for it may hold it, and take it again if it is sent again)`,
      );
    const max = this.maxMessageSize;
    if (err.message !== 'channel closed') return err;
    if (max !== undefined && bytes > max) return tooLarge(bytes, max);
    const user = this.authenticatedUser;
    if (user !== undefined && userId !== undefined && userId !== user) {
      const refusal = this.userIdRefusal;
      return userIdRefused(userId, user, refusal?.userId === userId ? refusal.words : undefined);
    }
    // amqplib's word for a confirm the closing channel will never get (a lost connection, the server closing it).
    const said = this.publishClosedBy;
    return new LostUnacknowledged(said === undefined ? 'the publish channel closed' : `the server closed the publish channel (${said})`);
  }

  /** The connection closed; `detail` says why, as /readyz and the 503s show it (`unreachable: ...`, `closed by the server: ...`). */
  private lost(detail: string): void {
    if (this.stopped || !this.connection) return;
    this.connection = undefined;
    const publishing = this.publishConnection;
    this.publishConnection = undefined;
    this.publisher = undefined;
    this.topologyOn = undefined;
    this.blockedFor = undefined;
    this.state = { ready: false, detail };
    this.log.warn({ reason: detail }, 'amqp connection lost; reconnecting');
    // Publishes awaiting a confirm on the dead channel will never get one (RabbitMQ may have taken them all the same).
    for (const c of this.confirms.values()) c.settle(new LostUnacknowledged(`the connection was lost (${detail})`));
    // Reset, not closed: the publishes still in its path were answered 503 above, and a close
    // (a FIN) would leave them to reach a server the path comes back to, stored after their
    // 503 (given-up.ts). Its own heartbeat gives it up too, but maybe only after the path healed.
    // After the 503s: its channel's close fails them too, in words that do not say why.
    if (publishing) resetConnection(publishing);
    for (const s of this.subscriptions) s.detach();
    this.retry();
  }

  private retry(wait = this.backoff.delay()): void {
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => this.underWay(this.connect()), wait);
    this.retryTimer.unref();
  }

  publish(topic: string, msg: Message): Promise<Delivery> {
    if (this.stopped) return Promise.reject(new Error(`broker '${this.name}' is stopped`));
    const userId = userIdOf(msg.headers);
    // A user_id the server refused already is the message's problem, whatever the connection's state: refused before it is sent (no channel closed again, no publish beside it failed).
    if (userId !== undefined && this.authenticatedUser !== undefined && userId !== this.authenticatedUser) {
      this.telemetry?.producerError();
      return Promise.reject(userIdRefused(userId, this.authenticatedUser));
    }
    const out = this.publisher;
    if (!out || !this.state.ready) {
      this.telemetry?.producerError();
      return Promise.reject(this.blockedFor !== undefined ? new BlockedByServer(this.name, this.blockedFor) : new NotConnected(this.name, this.state.detail ?? 'connecting'));
    }
    const exchange = this.settings.exchange.name;
    const n = ++this.nextId;
    const id = `${this.idPrefix}${n}`;
    const promise = newPromise<Delivery>();
    const p = new Publish(this, id, n, exchange, topic, captured.resolve, captured.reject);
    p.deadline = this.deadlines.track(p);
    this.confirms.set(n, p);
    p.userId = userId;
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
          typed: (msg as WithTypedFields)[TYPED_FIELDS],
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
    this.confirms.set(p.n, p);
  }

  /** A publish settled: it no longer waits for a confirm or a basic.return. */
  forget(n: number, failed: boolean): void {
    this.confirms.delete(n);
    if (failed) this.telemetry?.producerError();
  }

  /** The publish awaiting an answer whose message id a basic.return carries (one of this broker's: `<idPrefix><n>`). */
  private publishOf(messageId: unknown): Publish | undefined {
    if (typeof messageId !== 'string' || !messageId.startsWith(this.idPrefix)) return undefined;
    const c = this.confirms.get(Number(messageId.slice(this.idPrefix.length)));
    return c?.id === messageId ? c : undefined;
  }

  /** Per consume route: messages ready in its queue as of the last poll, plus those it holds unacknowledged. */
  consumerLag(): ConsumerLag[] {
    return [...this.subscriptions].flatMap((s) => {
      const lag = s.lag();
      return lag === undefined ? [] : [{ route: s.spec.route, topic: s.spec.topic, partition: 0, lag }];
    });
  }

  subscribe(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Subscription {
    const sub = new AmqpSubscription(this.name, this.settings, spec, handler, this.log.child({ route: spec.route, topic: spec.topic }), this.telemetry, this.declaredQueues, keptBindings);
    this.subscriptions.add(sub);
    if (this.connection) sub.attach(this.connection);
    return leavesOnStop(this.subscriptions, sub);
  }
}

/**
 * The exchange (unless built in) and the queues the config declares, with their bindings unless
 * `bind` is false (a broker a reload builds: AmqpBroker.commit binds them). Resolves
 * with the queues the server has otherwise (406 PRECONDITION_FAILED: other arguments, as after a
 * reload that changed them), in the server's words: like a missing `declare: false` queue, such a
 * queue stops only the routes that read it. It took the whole broker down before, every publish
 * 503, until the queue was deleted or the config put back.
 */
async function declareTopology(conn: ChannelModel, s: AmqpSettings, bind: boolean): Promise<Map<string, string>> {
  const otherwise = new Map<string, string>();
  // A refusal is the failing call's rejection; unheard, amqplib's 'error' event would close the connection.
  const declaring = async () => (await conn.createChannel()).on('error', () => undefined);
  let ch = await declaring();
  try {
    if (!builtInExchange(s.exchange.name)) {
      if (s.exchange.declare) await ch.assertExchange(s.exchange.name, s.exchange.type, { durable: true });
      // One that must exist already is checked as queues are: publishing to a missing one closed the
      // channel, and with it the connection and every consume route's channel, at each publish.
      else await ch.checkExchange(s.exchange.name);
    }
    // A queue that must exist already (declare: false) is the business of the routes that read it
    // (AmqpSubscription.open): missing, it stops only them, not the broker's publishes and other routes.
    for (const [name, q] of Object.entries(s.queues)) {
      if (!q.declare) continue;
      try {
        await declareQueue(ch, name, q, s, bind);
      } catch (err) {
        const words = declaredOtherwise(err);
        if (words === undefined) throw err;
        otherwise.set(name, words);
        // The refusal closed the channel: the next queues on a new one.
        ch = await declaring();
      }
    }
  } finally {
    await ch.close().catch(() => undefined);
  }
  return otherwise;
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
