/**
 * An mqtt broker's consume routes: each a connection (and, shared or persistent, a session) of its
 * own, acknowledging a QoS 1 or 2 message only once the route accepted it.
 */

import type { IPublishPacket } from 'mqtt';
import type { Logger } from '../../../log.js';
import { fromMqttProperties } from '../../../codecs/cloudevents.js';
import { EXPIRES_AT, payloadMessage, type Message } from '../../../core/message.js';
import type { BrokerTelemetry, Health, Qos, StopOptions, SubscribeSpec } from '../../contracts.js';
import { reconnectBackoff } from '../../../core/backoff.js';
import { handOver, Relay, repeatedHeaders, singleValued } from '../acknowledgement.js';
import { InFlightWindow } from '../../../core/in-flight-window.js';
import type { MqttSettings } from '../mqtt.js';
import { acknowledgement, PUBACK, PUBREC } from './acks.js';
import { ACKNOWLEDGED_BY_ROUTE, clientOptions, disconnect, keepWhileReading, Link, serverAnswers, whileHeard, type MqttLib } from './connection.js';
import { countLive, leftSessions } from './sessions.js';
import { SHARED_SUBSCRIPTIONS_NOT_SUPPORTED, sharingUnavailable, UNSHARED_FIX, type ConnackProperties } from './shared-subscriptions.js';
import { qosFor, sharable } from './topics.js';

/**
 * Messages a consume route's connection takes from mqtt.js's packet loop before the route handled
 * them. mqtt.js reads the next packet only once the one before was let go of, so the route must
 * not hold the loop while it holds a message: the PINGRESP behind it would go unread and mqtt.js
 * would give the connection up after 1.5 × keepaliveSeconds. Past this many the loop is held again
 * (memory stays bounded); on MQTT 5 the route asks the server for no more QoS 1 and 2 messages in
 * flight than this (Receive Maximum), on MQTT 3.1.1 the server's own window bounds them
 * (mosquitto's `max_inflight_messages`, 20 by default). Only a flood of QoS 0 messages, which no
 * window bounds, reaches it.
 */
const MAX_IN_HAND = 100;

/**
 * The Receive Maximum a consume route's MQTT 5 connection asks for: mosquitto's default window
 * (`max_inflight_messages`), which it otherwise keeps to on MQTT 5 too, and well under
 * MAX_IN_HAND. mosquitto 2.0 lets a client's Receive Maximum raise its window (100 asked, 100 sent).
 * Also the most messages a route handles at once (a webhook's `concurrency` above it is cut to
 * it): past the server's window, the one acknowledgement the route holds back stops it sending more.
 */
const RECEIVE_MAXIMUM = 20;

const NO_KEYS: readonly string[] = [];

/** A message in the window, in the order it came: what its acknowledgement needs once it and every earlier one settled. */
interface Held {
  readonly packet: IPublishPacket;
  /** The connection it came on. */
  readonly generation: number;
  /** A copy (DUP) of one the route took already: only its acknowledgement went missing. */
  repeat: boolean;
  /** Whether to acknowledge it: the route took it (or it is a repeat). */
  take: boolean;
  /** When its MQTT 5 Message Expiry Interval, as the server sent it, ends (toMessage's EXPIRES_AT); none for a repeat or a message without one. */
  expiresAt?: number;
}

/**
 * One consume route's connection. A QoS 1 or 2 message is acknowledged — PUBACK, or PUBREC for
 * QoS 2 — only once the route accepted it, so a message in hand when the gateway stops, crashes or
 * loses the connection is sent again by the server to the route's persistent session. mqtt.js
 * hands each message over (`customHandleAcks`, QoS 0 through `handleMessage`) and is told at once
 * to send no acknowledgement and read on (up to MAX_IN_HAND messages in hand), so its keepalive
 * sees the PINGRESPs behind a message the route holds. The route handles one message at a time,
 * or, when its targets are all webhooks, up to min(`spec.inFlight`, RECEIVE_MAXIMUM) at once
 * (those sharing an order key one after the other: core/in-flight-window.ts); either way it
 * writes each acknowledgement itself, in the order the messages came (MQTT 3.1.1 and 5 §4.6), on
 * the connection each came on: one that finished early waits for every earlier one, so a crash
 * never leaves a later message acknowledged behind an earlier one in hand. A PUBREL (QoS 2) is
 * answered PUBCOMP by mqtt.js.
 */
export class MqttSubscription {
  readonly link: Link;
  /** The broker's settings; a reload that changes only keys applied in place hands the new ones over (reconfigure). */
  private settings: MqttSettings;
  private readonly clientId: string;
  private readonly persistent: boolean;
  /** The Session Expiry Interval its connections give the server: MQTT 5 only (leftSessions' `expirySeconds`). */
  private readonly expirySeconds: number | undefined;
  private readonly filter: string;
  /** Connections emptying the sessions this route's predecessors left (see leftSessions). */
  private readonly adoptions: MqttSubscription[] = [];
  private stopping = false;
  /** Set while a route a reload removed leaves its group (leaveGroup): a reconnect meanwhile subscribes no more. */
  private retiring = false;
  /** Counted in liveSessions (a persistent session, until stop()). */
  private live: boolean;
  /** Messages start in order, each once the window has room and its order keys are known. */
  private chain: Promise<unknown> = Promise.resolve();
  /**
   * The messages in hand: a window per connection and per hand-over, the next one starting once
   * the last is idle, so acknowledgements keep the order messages came in across both, and a new
   * connection's repeats (DUP) find what the old one's messages settled.
   */
  private window = new InFlightWindow<Held>(1);
  /** The connection and the hand-over the window is for (none yet: the first message makes it). */
  private windowGeneration = -1;
  private windowTurn = 0;
  /** Counts hand-overs (a reload may change `inFlight` and `orderKeys`). */
  private turn = 0;
  /** The current window's messages in the order they came, not yet acknowledged (released in order). */
  private readonly unreleased: Held[] = [];
  /** Connections so far: an acknowledgement is sent only on the connection the message came on. */
  private generation = 0;
  /** The connection that began the server's session: messages from earlier ones belong to a session gone. */
  private sessionSince = 0;
  /**
   * Packet ids of messages the route accepted whose exchange with the server is not finished:
   * QoS 1 accepted while the connection was down (no PUBACK went out), QoS 2 PUBRECed and waiting
   * for PUBREL. The server sends those again (DUP) after a reconnect: they are acknowledged
   * without being handled a second time.
   */
  private readonly settled = new Set<number>();
  /**
   * Packet ids of QoS 1 and 2 messages the route gave back, left unacknowledged, in the server's
   * current session: it holds them until a connection takes them (leftSessions' `givenBack`: a
   * session holding some is not ended). Per session, not per connection: a leave whose connection
   * closes after a give-back still leaves them with the server. An id goes once the route took the
   * message the server sent again (DUP), its acknowledgement written or not (a connection that
   * closed first: the server holds it still, but for a repeat only); all go when a connect finds
   * the session gone. Each with when it stops counting (givenBackHeld): its MQTT 5 Message Expiry
   * Interval's end, after which the server sends it no more; Infinity without one.
   */
  private readonly givenBack = new Map<number, number>();
  /** Messages received and not yet acknowledged (or, at QoS 0, not yet handled): the route's lag. */
  unacknowledged = 0;
  /** Messages received so far: a retiring route (leaveGroup) takes what comes until a round trip brings none. */
  private received = 0;
  /** Lets mqtt.js read the next packet: held while MAX_IN_HAND messages are in hand. */
  private readOn: (() => void) | undefined;
  /** The QoS this route subscribes with: its own `from.qos`, else the broker's for its filter. */
  private readonly qos: Qos;
  /**
   * Why the server refused the subscription in its last SUBACK (the reason code named), until a
   * SUBACK grants it: the route is not ready meanwhile (/readyz). It asks again on the same
   * connection by the reconnect policy (an ACL put right on the server needs no reconnect), and at
   * each reconnect; a reload that changes the route's subscription subscribes afresh (one that
   * takes it over, handOver, keeps asking here). Also why it did not ask: a server whose CONNACK
   * says it has no shared subscriptions (sharingUnavailable), until a connect says otherwise.
   */
  private refused: string | undefined;
  private readonly refusedBackoff = reconnectBackoff();
  private retryTimer: NodeJS.Timeout | undefined;
  /** The QoS the server last granted below the one asked for, so the warning is logged once. */
  private downgraded: number | undefined;
  /** The route messages go to: a reload's rebuilt route takes its predecessor's place (handOver). */
  private readonly relay: Relay;

  constructor(
    private readonly lib: MqttLib,
    settings: MqttSettings,
    public spec: SubscribeSpec,
    handler: (msg: Message) => Promise<void>,
    private readonly log: Logger,
    private readonly telemetry: BrokerTelemetry | undefined,
    /** The client id of a session left by a predecessor (see leftSessions), which this connection empties instead of subscribing. */
    private readonly adopted?: string,
  ) {
    this.settings = settings;
    this.relay = new Relay(handler);
    this.qos = spec.qos ?? qosFor(settings, spec.topic);
    // A per-instance group (WebSocket forwards) wants live messages only: a plain subscription, a clean session.
    const perInstance = spec.perInstance === true;
    const persistent = settings.persistentSessions && !perInstance;
    const clientId = adopted ?? (perInstance ? `${settings.clientId}-${spec.group}` : `${settings.clientId}-${spec.route}`);
    this.clientId = clientId;
    this.persistent = persistent;
    this.expirySeconds = settings.protocolVersion === 5 ? settings.sessionExpirySeconds : undefined;
    const client = lib.connect(settings.url, clientOptions(settings, clientId, persistent, RECEIVE_MAXIMUM));
    this.link = new Link(client, log, adopted ? `route ${spec.route}, session ${adopted} left by a reload` : `route ${spec.route}`);
    keepWhileReading(
      client,
      () => ({ read: this.received, held: this.readOn !== undefined }),
      () => serverAnswers(lib, settings),
      log,
    );
    const filter = settings.sharedSubscriptions && !perInstance && sharable(spec.topic) ? `$share/${spec.group}/${spec.topic}` : spec.topic;
    this.filter = filter;
    this.live = persistent;
    if (persistent) countLive(settings.url, clientId, filter, 1);
    client.on('close', () => {
      this.generation++;
      // The next connect subscribes anyway.
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    });
    client.on('connect', (connack) => this.connected(connack.sessionPresent, connack));
    // mqtt.js honours the `customHandleAcks` option for MQTT 5 only, but reads it from `options` at
    // each packet; set here it applies on MQTT 3.1.1 connections too. Answered with an error, mqtt.js
    // sends no PUBACK or PUBREC (nor stores a QoS 2 message) and reads on: the route acknowledges.
    client.options.customHandleAcks = (_topic, _payload, packet: IPublishPacket, ack) => {
      this.receive(packet, this.generation, () => ack(ACKNOWLEDGED_BY_ROUTE));
    };
    // QoS 0 only: with customHandleAcks answered with an error, mqtt.js calls it for no other message.
    client.handleMessage = (packet: IPublishPacket, callback: (err?: Error) => void) => this.receive(packet, this.generation, callback);
    client.on('packetreceive', (packet) => {
      // QoS 2: the server released the message (mqtt.js answers PUBCOMP); it sends that id no more.
      if (packet.cmd === 'pubrel' && packet.messageId !== undefined) this.settled.delete(packet.messageId);
    });
  }

  /**
   * Each connect. Subscribes every time, even when the server kept the session: a server restart
   * may restore a session without its shared subscriptions (mosquitto does), and subscribing again
   * is harmless. A connection emptying a session left by a reload unsubscribes it instead. A server
   * whose CONNACK says it has no shared subscriptions is not asked for one (it would refuse it).
   */
  private connected(sessionPresent: boolean, connack: ConnackProperties): void {
    const client = this.link.client;
    const filter = this.filter;
    // A new session: the server will send nothing again, so nothing it sends is a repeat, nor will
    // it send again what earlier connections' messages still in hand carry.
    if (!sessionPresent) {
      this.settled.clear();
      this.givenBack.clear();
      this.sessionSince = this.generation;
    }
    if (this.retiring) return;
    const adopted = this.adopted;
    if (adopted) {
      // The server queues nothing more for the left session; what it holds still comes, and is taken like any message.
      client.unsubscribe(filter, (err) => {
        if (err) this.log.warn({ err: err.message, filter, session: adopted }, 'mqtt unsubscribe of a session left by a reload refused');
        else this.log.info({ filter, session: adopted }, 'mqtt session left by a reload unsubscribed; taking what the server still holds for it');
      });
      return;
    }
    const unshared = sharingUnavailable(connack, filter);
    if (unshared !== undefined) {
      this.telemetry?.consumerError(this.spec.route);
      if (unshared !== this.refused) this.log.warn({ filter }, `mqtt consume route not subscribed: ${unshared}`);
      this.refused = unshared;
      return;
    }
    this.subscribe();
    if (this.persistent) this.dropReplacedFilter();
  }

  private subscribe(): void {
    const filter = this.filter;
    const qos = this.qos;
    // MQTT 5 Retain Handling 1: the server's retained messages come with a new subscription only,
    // not again each time this one is renewed (every connect, a reload's new route on the same
    // session): with 0, mosquitto sent a topic's retained message again each time, one more copy
    // on every target. MQTT 3.1.1 has no such option.
    const options = this.settings.protocolVersion === 5 ? { qos, rh: 1 as const } : { qos };
    this.link.client.subscribe(filter, options, (err, granted) => {
      // A SUBACK refusal (0x80 and up) arrives as an error carrying the packet; an error without one is the connection's (closed before the SUBACK).
      const code = err ? (err as { packet?: { granted?: unknown[] } }).packet?.granted?.[0] : granted?.[0]?.qos;
      if (typeof code === 'number' && code >= 0x80) return this.refuse(filter, code);
      if (err) {
        this.telemetry?.consumerError(this.spec.route);
        this.log.error({ err: err.message, filter }, 'mqtt subscribe refused');
        return;
      }
      if (this.refused !== undefined) this.log.info({ filter }, 'mqtt subscription granted after a refusal');
      this.refused = undefined;
      this.refusedBackoff.reset();
      if (typeof code === 'number' && code < qos && code !== this.downgraded)
        this.log.warn({ filter, qos, granted: code }, `mqtt server granted the subscription at QoS ${code}, below the ${qos} asked for: messages come at most at QoS ${code}`);
      this.downgraded = typeof code === 'number' && code < qos ? code : undefined;
      this.log.info({ filter, qos }, 'consumer ready');
      if (this.persistent) this.adoptLeftSessions();
    });
  }

  /** The server refused the subscription in its SUBACK: the route is not ready, said once per reason, until a SUBACK grants it. */
  private refuse(filter: string, code: number): void {
    this.telemetry?.consumerError(this.spec.route);
    // MQTT 3.1.1 has one refusal code, 0x80 "Failure"; MQTT 5 names each.
    const name = this.settings.protocolVersion === 4 ? 'Failure' : (this.lib.ReasonCodes[code as keyof typeof this.lib.ReasonCodes] ?? 'unknown reason');
    const fix = code === SHARED_SUBSCRIPTIONS_NOT_SUPPORTED ? `; ${UNSHARED_FIX}` : '';
    const detail = `the server refused the subscription to '${filter}' (SUBACK reason code 0x${code.toString(16)}, ${name}); asking again${fix}`;
    if (detail !== this.refused)
      this.log.error({ filter, reasonCode: code, reason: name }, `mqtt subscription refused by the server: 0x${code.toString(16)} ${name}; the route receives nothing until it is granted`);
    this.refused = detail;
    if (this.stopping || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.stopping && this.link.client.connected) this.subscribe();
    }, this.refusedBackoff.delay());
  }

  /** Not ready while the server refuses the subscription, or has no shared subscriptions for it. */
  health(): Health {
    return this.refused === undefined ? { ready: true } : { ready: false, detail: this.refused };
  }

  /** A message from mqtt.js, and how to let mqtt.js read on: at once, unless MAX_IN_HAND messages are in hand. */
  private receive(packet: IPublishPacket, generation: number, readOn: () => void): void {
    this.received++;
    this.chain = this.chain.then(() => this.start(packet, generation));
    // Only once the message is on the chain: letting mqtt.js read on can hand over the next
    // message within this call (the socket's next chunk is parsed as the write of this one ends),
    // and it must queue behind this one.
    if (++this.unacknowledged <= MAX_IN_HAND) readOn();
    else this.readOn = readOn;
  }

  /** Puts a message in the window once it has room; resolves once it started (the next message may then start). */
  private async start(packet: IPublishPacket, generation: number): Promise<void> {
    if (this.windowGeneration !== generation || this.windowTurn !== this.turn) {
      // Another connection or a hand-over: the earlier window's messages all settle (and are acknowledged) first.
      await this.window.idle();
      this.windowGeneration = generation;
      this.windowTurn = this.turn;
      this.window = new InFlightWindow<Held>(Math.min(this.spec.inFlight ?? 1, RECEIVE_MAXIMUM));
    }
    const window = this.window;
    const room = window.room();
    if (room) await room;
    const held: Held = { packet, generation, repeat: false, take: false };
    const id = packet.messageId;
    if (packet.qos > 0 && id !== undefined && packet.dup && this.settled.has(id)) {
      // Already accepted by the route: only the acknowledgement went missing.
      held.repeat = held.take = true;
      this.unreleased.push(held);
      window.start(held, NO_KEYS, TAKEN, this.release);
      return;
    }
    const msg = toMessage(packet);
    held.expiresAt = msg[EXPIRES_AT];
    const orderKeys = window.capacity > 1 ? this.spec.orderKeys : undefined;
    const keys = orderKeys ? await Promise.resolve(orderKeys(msg)).catch(() => NO_KEYS) : NO_KEYS;
    this.unreleased.push(held);
    window.start(held, keys, () => this.take(held, msg), this.release);
  }

  /** Hands a message to the route; always resolves true (the window never breaks): `held.take` says whether to acknowledge it. */
  private async take(held: Held, msg: Message): Promise<boolean> {
    held.take = await handOver(msg, this.relay, { route: this.spec.route, log: this.log, telemetry: this.telemetry, stopping: this.isStopping, leaving: this.isLeaving }).catch(() => false);
    return true;
  }

  /** Whether the route holds mqtt.js's reading (MAX_IN_HAND): a leave's waits do not count that silence as the server's (whileHeard). */
  private readonly holdsReading = (): boolean => this.readOn !== undefined;

  /** handOver's `stopping`, made once: an arrow made per message is named by the bundle (keepNames), a defineProperty each. */
  private readonly isStopping = (): boolean => this.stopping;

  /** handOver's `leaving`: a route a reload removed takes what its session holds (leaveGroup); a give-back then is its stop's. */
  private readonly isLeaving = (): boolean => this.retiring && !this.stopping;

  /** After each message settles: acknowledges, in the order they came, those of the window's done prefix. */
  private readonly release = (): void => {
    const last = this.window.committable();
    if (last === undefined) return;
    let held: Held | undefined;
    do {
      held = this.unreleased.shift()!;
      this.acknowledge(held);
      const waiting = this.readOn;
      if (--this.unacknowledged <= MAX_IN_HAND && waiting) {
        this.readOn = undefined;
        waiting();
      }
    } while (held !== last);
  };

  /**
   * A settled message's PUBACK (QoS 1) or PUBREC (QoS 2), written on the connection it came on
   * while that is open; else the server sends it again (DUP) on the next. Not taken (stopping, or
   * given back): no acknowledgement, so the server offers it again at the next connection.
   */
  private acknowledge(held: Held): void {
    const { packet, generation } = held;
    const id = packet.messageId;
    if (packet.qos === 0 || id === undefined) return;
    if (!held.take) {
      // Held by the server for the session, the connection it came on open or not; unless that session is gone.
      if (generation >= this.sessionSince) this.givenBack.set(id, held.expiresAt === undefined ? Infinity : held.expiresAt + EXPIRY_ROUNDING_MS);
      return;
    }
    // Taken: whatever the server still holds of it is a repeat, not a message given back. Unless
    // the session it came in is gone: the id may be a new session's message given back.
    if (generation >= this.sessionSince) this.givenBack.delete(id);
    if (generation !== this.generation) {
      // The connection it came on is gone; the server sends it again on the new one (DUP), and that
      // copy is acknowledged. Unless the session it came in is gone too: nothing comes again, and a
      // later message given the same packet id must not be taken for a repeat. A repeat keeps its
      // id settled: a route held on one message over several reconnects has a copy from each, and
      // the one on the live connection must still find it settled.
      if (!held.repeat && generation >= this.sessionSince) this.settled.add(id);
      return;
    }
    if (packet.qos === 2) this.settled.add(id);
    else if (held.repeat) this.settled.delete(id);
    const stream = this.link.client.stream;
    if (!stream?.writable) return;
    stream.write(acknowledgement(packet.qos === 1 ? PUBACK : PUBREC, id));
  }

  /**
   * The messages the route gave back the server still holds for the session, as when each stops
   * counting (LeftSession's `givenBackUntil`): those whose Message Expiry Interval passed are left
   * out. The server sends an expired message no more, though it was sent once (mosquitto 2.0 drops
   * it as it would send it again; MQTT 5 §3.3.2.3.3 asks only that one not yet sent be dropped):
   * its publisher said it is worth nothing after then, so a session kept for it would hold nothing
   * worth keeping.
   */
  private givenBackHeld(): number[] {
    const now = Date.now();
    return [...this.givenBack.values()].filter((until) => until > now);
  }

  /**
   * Called as it subscribes: its own session, left by a predecessor subscribed to another filter,
   * is unsubscribed from that filter — in the same write, after the SUBSCRIBE, so no message falls
   * between the two (one matching both in that instant comes twice: at least once).
   */
  private dropReplacedFilter(): void {
    const left = leftSessions.get(this.settings.url);
    const session = left?.get(this.clientId);
    if (!session) return;
    left!.delete(this.clientId);
    if (session.filter === this.filter) return;
    this.link.client.unsubscribe(session.filter, (err) => {
      if (err) this.log.warn({ err: err.message, filter: session.filter }, 'mqtt unsubscribe of the filter a reload replaced refused');
      else this.log.info({ filter: session.filter, now: this.filter }, "mqtt consume route's session unsubscribed from the filter a reload replaced");
    });
  }

  /**
   * Called once subscribed (the group's messages come to this session from then on): sessions
   * that routes of this process left under another client id on the same filter are taken over —
   * each unsubscribed (so it takes no more of the group's messages), and what the server still
   * holds for it handed to this route, acknowledged as usual.
   */
  private adoptLeftSessions(): void {
    const left = leftSessions.get(this.settings.url);
    if (!left || this.stopping) return;
    for (const [id, session] of left) {
      if (id === this.clientId || session.filter !== this.filter) continue;
      left.delete(id);
      // Once unsubscribed, a session only gives back what it still held: nothing to warn about again.
      if (!session.unsubscribed)
        this.log.warn(
          { session: id, filter: this.filter },
          'mqtt consume route resumed under another client id: the session it left is unsubscribed, and what the server holds for it taken by this route',
        );
      this.adoptions.push(new MqttSubscription(this.lib, this.settings, this.spec, this.relay.current, this.log, this.telemetry, id));
    }
  }

  /**
   * A reload changed only keys the broker applies in place (MqttBroker.reconfigure): this route's
   * waits on the server as it leaves its group (the UNSUBACK, each round trip) take the new
   * `ackTimeoutMs`, as the broker's next publish does. Before, they kept the value the route
   * subscribed with, however long ago.
   */
  reconfigure(settings: MqttSettings): void {
    this.settings = settings;
    for (const a of this.adoptions) a.reconfigure(settings);
  }

  /**
   * A reload's rebuilt route asks the same (Subscription.handOver): the connection, its session and
   * subscription go on (no reconnect, no session churn, no retained message sent again), and each
   * message after the one in hand is the new route's, acknowledged as always; the connections
   * emptying sessions left by earlier reloads hand over too.
   */
  async handOver(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Promise<void> {
    this.spec = spec;
    this.turn++;
    if (!this.adopted) this.log.info({ clientId: this.clientId }, 'subscription handed over to the rebuilt route');
    await Promise.all([this.relay.replace(handler), ...this.adoptions.map((a) => a.handOver(spec, handler))]);
  }

  /**
   * A reload removed the route for good (StopOptions.retire): its session is about to be ended
   * (endLeftSessions), so first it unsubscribes — once the UNSUBACK came the server routes nothing
   * more to it, and in a shared group the other members get what follows — and the route goes on
   * taking what the server gave or queued for the session before, acknowledged as usual, until
   * two round trips (PINGREQ, PINGRESP) in a row bring no message with nothing in hand: the server
   * sends a queued message as an acknowledgement frees its window, before it reads a PINGREQ
   * written behind that acknowledgement (two, for QoS 2's PUBCOMP, written once the PUBREL came).
   * Before, the route disconnected still subscribed, and what the server gave the session until
   * the reload ended it was lost (14 of 6,600 at ~1,000/s, spec-checklist 1462).
   */
  private async leaveGroup(): Promise<boolean> {
    const client = this.link.client;
    // Not connected: it cannot unsubscribe, and the session is ended as it is.
    if (!client.connected) return false;
    const filter = this.filter;
    this.retiring = true;
    const unsubscribed = new Promise<Error | undefined>((resolve) => client.unsubscribe(filter, (err) => resolve(err ?? undefined)));
    // A server that stopped answering sends no UNSUBACK: the reload does not wait for its keepalive.
    // A busy one sends it behind the messages it sends first, each of which starts the wait over.
    const ms = this.settings.ackTimeoutMs;
    const heard = await whileHeard(client, unsubscribed, ms, this.holdsReading);
    const refused = heard === 'silent' ? new Error(`no UNSUBACK, and nothing else from the server, for ackTimeoutMs (${ms} ms)`) : await unsubscribed;
    if (refused) {
      this.log.warn({ err: refused.message, filter }, 'mqtt consume route a reload removed could not unsubscribe before it stops; its session is ended as it is');
      return false;
    }
    this.log.info({ filter }, 'mqtt consume route a reload removed unsubscribed; taking what the server still holds for its session before it stops');
    for (let quiet = 0; quiet < 2; ) {
      const before = this.received;
      await this.chain;
      await this.window.idle();
      if (!(await this.roundTrip())) return true;
      quiet = this.received === before && this.unacknowledged === 0 ? quiet + 1 : 0;
    }
    return true;
  }

  /**
   * A PINGREQ written behind everything the route wrote so far; true once a PINGRESP came, false if
   * the connection closed first, or the server sent nothing for `ackTimeoutMs` (a server that
   * stopped answering would otherwise hold the reload until the keepalive gave the connection up;
   * one still sending messages ahead of the PINGRESP is waited for, whileHeard). mqtt.js's own
   * keepalive PINGREQ may be answered first: leaveGroup asks for two quiet round trips in a row, so
   * one such early answer alone does not end it.
   */
  private async roundTrip(): Promise<boolean> {
    const client = this.link.client;
    const stream = client.stream;
    if (!client.connected || !stream?.writable) return false;
    let done!: (ok: boolean) => void;
    const outcome = new Promise<boolean>((resolve) => (done = resolve));
    const answered = (packet: { cmd: string }) => {
      if (packet.cmd === 'pingresp') done(true);
    };
    const closed = () => done(false);
    client.on('packetreceive', answered);
    client.on('close', closed);
    stream.write(PINGREQ);
    const heard = await whileHeard(client, outcome, this.settings.ackTimeoutMs, this.holdsReading);
    client.off('packetreceive', answered);
    client.off('close', closed);
    return heard === 'done' && (await outcome);
  }

  async stop(options?: StopOptions): Promise<void> {
    // Messages are still taken while a retiring route leaves its group: only then does it stop
    // (and the route's grace for slow webhook tries begins, StopOptions.taking).
    const leaving = options?.retire === true && this.persistent && !this.adopted && !this.stopping ? this.leaveGroup() : undefined;
    if (leaving) options?.taking?.(leaving);
    const unsubscribed = leaving !== undefined && (await leaving);
    this.stopping = true;
    clearTimeout(this.retryTimer);
    await Promise.allSettled(this.adoptions.map((a) => a.stop()));
    await this.chain;
    await this.window.idle();
    const givenBackUntil = this.givenBackHeld();
    // Disconnect without unsubscribing: a persistent session keeps what arrives until the route is back.
    await disconnect(this.link.client, this.settings, this.log);
    // The session stays on the server: a successor under another client id takes it over.
    if (this.live) countLive(this.settings.url, this.clientId, this.filter, -1);
    this.live = false;
    if (this.persistent) {
      let left = leftSessions.get(this.settings.url);
      if (!left) leftSessions.set(this.settings.url, (left = new Map()));
      left.set(this.clientId, { filter: this.filter, unsubscribed: this.adopted !== undefined || unsubscribed, givenBackUntil, expirySeconds: this.expirySeconds });
    }
  }
}

/**
 * A second more than a given-back message's Message Expiry Interval says before it stops counting:
 * the server sends the interval left in whole seconds, rounded down (mosquitto 2.0 sent 56 with
 * 56.4 left), so the interval read can end up to a second before the server's.
 */
const EXPIRY_ROUNDING_MS = 1000;

/** An MQTT PINGREQ packet (MQTT 3.1.1 and 5 §3.12): fixed header only. */
const PINGREQ = Buffer.from([0xc0, 0]);

/** A repeat's handling: nothing to do but acknowledge it in its turn. */
const TAKEN = (): Promise<boolean> => Promise.resolve(true);

/**
 * A received PUBLISH as a message: its user properties and Content Type (MQTT 5) as headers, as the
 * CloudEvents MQTT binding reads them (fromMqttProperties); its Message Expiry Interval, the time the
 * server said it had left, as when it expires (EXPIRES_AT), for an MQTT target to send on what is left.
 */
function toMessage(packet: IPublishPacket): Message {
  const props = packet.properties;
  const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
  const entries = props?.userProperties ? Object.entries(props.userProperties) : [];
  const headers = props ? fromMqttProperties(singleValued(entries), props.contentType) : {};
  const repeated = entries.length > 0 ? repeatedHeaders(entries, headers) : undefined;
  const now = Date.now();
  const expiry = props?.messageExpiryInterval;
  const fields = { headers, topic: packet.topic, partition: null, offset: null, timestamp: now };
  return payloadMessage(payload, expiry === undefined ? fields : { ...fields, [EXPIRES_AT]: now + expiry * 1000 }, repeated);
}
