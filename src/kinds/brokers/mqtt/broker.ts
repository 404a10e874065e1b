import type { IClientOptions, IPublishPacket, IStore, MqttClient } from 'mqtt';
import type { Logger } from '../../../log.js';
import { fromMqttProperties } from '../../../codecs/cloudevents.js';
import { captured, newPromise } from '../../../core/captured-promise.js';
import { within } from '../../../core/within.js';
import { payloadContentType, payloadMessage, sentHeaders, valuePayload, type Delivery, type Message } from '../../../core/message.js';
import type { BrokerRuntime, BrokerTelemetry, ConsumerLag, Health, PublishOptions, Qos, RuntimeEnv, SubscribeSpec, Subscription } from '../../contracts.js';
import { reconnectBackoff } from '../../../core/backoff.js';
import { AckDeadlines, LateWrite, type AckTimeout, type Deadline, type Expiring, handOver, leavesOnStop, NotConnected, Relay, singleValued, TopicDeliveries } from '../acknowledgement.js';
import type { MqttSettings } from '../mqtt.js';
import { Flight, MqttPublisher, NO_STORE } from './publisher.js';
import { acknowledgement, PUBACK, PUBREC } from './acks.js';
import { FirstConnection } from '../first-connection.js';
import { isTlsFailure, notConnectedDetail } from '../not-connected.js';
import { mqttStringProblem, publishTopicProblem, topicMatches } from './topics.js';

/** The QoS for a topic when the route names none: the first `qosByTopic` filter that matches it, else the broker's `qos`. */
function qosFor(settings: MqttSettings, topic: string): Qos {
  for (const [filter, qos] of settings.qosByTopic) if (topicMatches(filter, topic)) return qos;
  return settings.qos;
}

/**
 * One publish until it is answered, in one object: its promise's resolving functions and its
 * flight through the publisher (mqtt.js's entry in flight), told by its acknowledgement deadline
 * (a small entry of AckDeadlines, dropped from it once settled). Whichever comes first answers it:
 * the acknowledgement, an error, or the deadline.
 */
class Publish extends Flight implements Expiring {
  settled = false;
  deadline: Deadline | undefined;
  /** Once its deadline answered it while mqtt.js still had it out: its real outcome, for AckTimeout.late. */
  private late: LateWrite | undefined;

  constructor(
    private readonly broker: MqttBroker,
    private readonly topic: string,
    private readonly resolve: (d: Delivery) => void,
    private readonly reject: (err: Error) => void,
  ) {
    super();
  }

  protected settle(err?: Error): void {
    if (this.settled) {
      // The acknowledgement (or the loss) of a publish its deadline answered first.
      this.late?.tell(err ? undefined : this.broker.deliveries.of(this.topic));
      return;
    }
    this.settled = true;
    if (this.deadline) this.deadline.settled = true;
    if (err) {
      this.broker.failed();
      this.reject(err);
    } else this.resolve(this.broker.deliveries.of(this.topic));
  }

  expire(err: AckTimeout): void {
    // mqtt.js keeps it out until its PUBACK or PUBCOMP, or the connection's loss (keepalive bounds that).
    err.late = this.late = new LateWrite(this.broker.lateAnswerMs);
    this.settle(err);
  }
}

/** The client library, loaded when the first mqtt broker starts (commands that start none, such as validate, never load it). */
type MqttLib = typeof import('mqtt');
let lib: MqttLib | undefined;
const loadMqtt = async (): Promise<MqttLib> => (lib ??= await import('mqtt'));

/**
 * What a consume route's connection tells mqtt.js for every QoS 1 and 2 message: no PUBACK or
 * PUBREC from mqtt.js, read on. The route sends the acknowledgement itself once it accepted the
 * message (see MqttSubscription). mqtt.js emits it as an 'error' event, which Link ignores: one
 * instance for all, so no stack is captured per message.
 */
class AcknowledgedByRoute extends Error {
  constructor() {
    super('acknowledged by the consume route once it accepted the message');
  }
}
const ACKNOWLEDGED_BY_ROUTE = new AcknowledgedByRoute();

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
 */
const RECEIVE_MAXIMUM = 20;

/** CONNACK codes that turn the login down: 3.1.1's bad user name or password and not authorized; MQTT 5's the same, banned, and bad authentication method. */
const LOGIN_REFUSED = new Set<unknown>([4, 5, 0x86, 0x87, 0x8a, 0x8c]);

/** A connection's state, as /readyz reports it. */
class Link {
  ready = false;
  detail = 'connecting';

  constructor(
    readonly client: MqttClient,
    log: Logger,
    what: string,
  ) {
    client.on('connect', () => {
      if (!this.ready) log.info({ connection: what }, 'mqtt connected');
      this.ready = true;
      this.detail = 'connected';
    });
    client.on('error', (err) => {
      // A message whose acknowledgement the route sends itself (MqttSubscription) says nothing about the connection.
      if (err instanceof AcknowledgedByRoute) return;
      const detail = notConnectedDetail(err.message, LOGIN_REFUSED.has((err as { code?: unknown }).code) ? 'login' : isTlsFailure(err) ? 'tls' : undefined);
      // Once per reason, not once per attempt: a wrong password is retried every reconnectPeriodMs.
      if (!this.ready && detail !== this.detail) log.warn({ connection: what, err: err.message, retryInMs: client.options.reconnectPeriod }, 'mqtt connect failed; retrying');
      this.detail = detail;
    });
    // mqtt.js emits 'offline' from its own 'close' listener, before this one's: either may be the
    // first to see a lost connection. end() (SIGTERM, a route a reload removes) loses nothing.
    const lost = () => {
      if (this.ready && !client.disconnecting) log.warn({ connection: what }, 'mqtt connection lost; reconnecting');
      this.ready = false;
    };
    client.on('close', () => {
      lost();
      if (this.detail === 'connected') this.detail = 'unreachable: connection closed';
    });
    client.on('offline', lost);
  }
}

/**
 * A connection's options. `receiveMaximum` (a consume route's, MQTT 5): the QoS 1 and 2 messages
 * the server may have in flight to it, unacknowledged.
 */
function clientOptions(settings: MqttSettings, clientId: string, persistent: boolean, receiveMaximum?: number): IClientOptions {
  const properties = {
    // A persistent session outlives a disconnect (MQTT 5 ends it at once unless told otherwise).
    ...(persistent && { sessionExpiryInterval: settings.sessionExpirySeconds }),
    ...(receiveMaximum !== undefined && { receiveMaximum }),
  };
  return {
    clientId,
    username: settings.username,
    password: settings.password,
    protocolVersion: settings.protocolVersion,
    clean: !persistent,
    keepalive: settings.keepaliveSeconds,
    connectTimeout: settings.connectTimeoutMs,
    reconnectPeriod: settings.reconnectPeriodMs,
    // A refused CONNACK (bad credentials, not authorized, server unavailable or busy) is retried
    // like a lost connection: mqtt.js would otherwise stop for good, and the broker (and every
    // consume route) stayed down after the server's side was put right.
    reconnectOnConnackError: true,
    // A publish made while offline is refused at once (503) rather than queued for later.
    queueQoSZero: false,
    // The subscription's own 'connect' handler subscribes (see MqttSubscription).
    resubscribe: false,
    properties: settings.protocolVersion === 5 && Object.keys(properties).length > 0 ? properties : undefined,
    ...(settings.tls as IClientOptions | undefined),
  };
}

/**
 * Publish client ids this process has connected and not yet closed. A reload that replaces an
 * mqtt broker connects the new one while the old one still finishes the publishes in flight;
 * with the same id, the server would close one connection for the other, each time either
 * reconnected (MQTT's session takeover), and the publishes of both would fail.
 */
const publishIds = new Set<string>();

/** `<clientId>-pub`, or while that one is taken (see publishIds) `<clientId>-pub-2`, `-3`, ... */
function takePublishId(clientId: string): string {
  let id = `${clientId}-pub`;
  for (let n = 2; publishIds.has(id); n++) id = `${clientId}-pub-${n}`;
  publishIds.add(id);
  return id;
}

/**
 * An MQTT broker through the `mqtt` client (MQTT 3.1.1 or 5). One connection publishes; each
 * consume route has a connection of its own (its session, its order, its acknowledgements).
 * Routes of a shared group subscribe through `$share/<group>/` with a persistent session, so
 * instances share the work and a restart finds the messages queued meanwhile; routes that
 * forward to WebSocket clients subscribe per instance with a clean session.
 */
export class MqttBroker implements BrokerRuntime {
  readonly kind = 'mqtt';
  private readonly log: Logger;
  private readonly telemetry: BrokerTelemetry | undefined;
  private publisher: Link | undefined;
  private publishId: string | undefined;
  private out: MqttPublisher | undefined;
  private readonly subscriptions = new Set<MqttSubscription>();
  private stopped = false;
  /** The publish connection's first CONNACK (each route's own connection is its subscription's business). */
  private readonly firstConnection = new FirstConnection();

  /** What publishes answer, per topic. */
  readonly deliveries: TopicDeliveries;
  /** Publishes waiting for the server's acknowledgement, each until `ackTimeoutMs`. */
  private readonly deadlines: AckDeadlines;

  constructor(
    readonly name: string,
    readonly settings: MqttSettings,
    env: RuntimeEnv,
  ) {
    this.deadlines = new AckDeadlines(settings.ackTimeoutMs, name);
    this.deliveries = new TopicDeliveries(name);
    this.log = env.logger.child({ broker: name });
    this.telemetry = env.telemetry?.broker(name, 'mqtt');
  }

  /** Never fails: an unreachable server makes the broker not ready, and the client keeps trying. */
  async start(): Promise<void> {
    const mqttLib = await loadMqtt();
    const { connect, ErrorWithReasonCode, ReasonCodes } = mqttLib;
    // MqttPublisher writes the packets and reads their acknowledgements; mqtt.js's table of packets in flight holds them; nothing is stored to be sent again.
    const client = connect(this.settings.url, {
      ...clientOptions(this.settings, (this.publishId = takePublishId(this.settings.clientId)), false),
      outgoingStore: NO_STORE as unknown as IStore,
      // A PINGREQ every keepalive interval, whatever else comes and goes, rather than a timer re-armed per received packet (per acknowledgement here):
      // the connection is still declared lost when no PINGRESP came 1.5 intervals after the last one.
      reschedulePings: false,
    });
    this.publisher = new Link(client, this.log, 'publish');
    client.on('connect', () => {
      this.firstConnection.connected();
      if (!this.stopped) void endUnendedSessions(mqttLib, this.settings, this.log);
    });
    this.out = new MqttPublisher(client, this.settings.protocolVersion === 5, (rc) => new ErrorWithReasonCode(`Publish error: ${ReasonCodes[rc as keyof typeof ReasonCodes] ?? rc}`, rc));
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.allSettled([...this.subscriptions].map((s) => s.stop()));
    if (this.publisher) await disconnect(this.publisher.client, this.settings, this.log);
    if (this.publishId !== undefined) publishIds.delete(this.publishId);
  }

  reconfigure(): void {}

  /** A reload is done: sessions of consume routes it removed are ended (endLeftSessions). */
  reloaded(): void {
    if (this.stopped || !lib) return;
    void endLeftSessions(lib, this.settings, this.log);
  }

  connectedOnce(until: Promise<unknown>): true | Promise<void> {
    return this.firstConnection.when(until);
  }

  health(): Health {
    const links = [this.publisher, ...[...this.subscriptions].map((s) => s.link)].filter((l): l is Link => l !== undefined);
    const down = links.find((l) => !l.ready);
    return down ? { ready: false, detail: down.detail } : { ready: true };
  }

  topicProblem(topic: string): string | undefined {
    return publishTopicProblem(topic);
  }

  headerProblem(name: string, value: string): string | undefined {
    // MQTT 3.1.1 has no user properties: headers are not sent at all.
    if (this.settings.protocolVersion !== 5) return undefined;
    const bad = mqttStringProblem(name) ?? mqttStringProblem(value);
    return bad && `an MQTT 5 user property cannot hold ${bad}`;
  }

  publish(topic: string, msg: Message, options?: PublishOptions): Promise<Delivery> {
    const link = this.publisher;
    const out = this.out;
    if (this.stopped || !link || !out) return Promise.reject(new Error(`broker '${this.name}' is stopped`));
    if (!link.ready) {
      this.telemetry?.producerError();
      return Promise.reject(new NotConnected(this.name, link.detail));
    }
    const promise = newPromise<Delivery>();
    const p = new Publish(this, topic, captured.resolve, captured.reject);
    p.deadline = this.deadlines.track(p);
    try {
      const payload = valuePayload(msg);
      // MQTT 5's Content Type names the payload as written: a type a step made stale is corrected.
      // Less a content-encoding that no longer describes the payload (a step changed it).
      let headers = sentHeaders(msg);
      const own = headers['content-type'];
      if (own !== undefined && this.settings.protocolVersion === 5) {
        const type = payloadContentType(msg, payload, 'text/plain');
        if (type !== own) headers = { ...headers, 'content-type': type };
      }
      // QoS 0 has no acknowledgement: it settles once written to the socket (at most once). The route target's own QoS comes first.
      out.publish(topic, payload, options?.qos ?? qosFor(this.settings, topic), this.settings.retain, headers, p);
    } catch (err) {
      p.end(err as Error);
    }
    return promise;
  }

  /**
   * How long a consume route waits for the acknowledgement of a publish its deadline answered
   * (AckTimeout.late) before it counts it lost: past 1.5 × keepaliveSeconds without an answer to
   * its PINGREQ mqtt.js gives the connection up, which fails the publish anyway.
   */
  get lateAnswerMs(): number {
    return this.settings.ackTimeoutMs + 1500 * this.settings.keepaliveSeconds;
  }

  /** A publish failed (refused, timed out, connection lost), for the producer error counter. */
  failed(): void {
    this.telemetry?.producerError();
  }

  /**
   * Per consume route: messages received and not yet acknowledged. mqtt.js reads one message at a
   * time, so this is 0 or 1 (more only while a reconnect's redeliveries wait for the message in
   * hand); what the server queues for the session is not visible to an MQTT client.
   */
  consumerLag(): ConsumerLag[] {
    return [...this.subscriptions].map((s) => ({ route: s.spec.route, topic: s.spec.topic, partition: 0, lag: s.unacknowledged }));
  }

  subscribe(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Subscription {
    const sub = new MqttSubscription(lib!, this.settings, spec, handler, this.log.child({ route: spec.route, topic: spec.topic }), this.telemetry);
    this.subscriptions.add(sub);
    return leavesOnStop(this.subscriptions, sub);
  }
}

/**
 * Persistent sessions that consume routes of this process left on a server when they stopped, by
 * server URL and client id: the filter each was subscribed to, and whether a successor unsubscribed
 * it already. A session keeps its subscription when its route stops (so the server keeps what
 * arrives until the route is back), and a reload's successor must not inherit a subscription it
 * does not want (`MqttSubscription.dropReplacedFilter`, `adoptLeftSessions`): a session it
 * resumes under the same client id with another filter (the route's topic or group changed, or `sharedSubscriptions`)
 * would go on receiving the old filter's messages beside the new one's — each message twice when
 * only the `$share/` prefix changed; a session left under another client id (the broker's
 * `clientId` changed, or a route that names its `group` renamed) would go on taking its share of
 * the group's messages, which no route would ever take again.
 */
const leftSessions = new Map<string, Map<string, { filter: string; unsubscribed: boolean }>>();

/**
 * The persistent sessions consume routes of this process run now, by server URL: their client ids
 * and filters, counted (a rebuilt route's successor runs beside its predecessor for a moment).
 * A session left by a reload that neither names is one no route will resume or take over.
 */
const liveSessions = new Map<string, { ids: Map<string, number>; filters: Map<string, number> }>();

function countLive(url: string, id: string, filter: string, by: 1 | -1): void {
  let live = liveSessions.get(url);
  if (!live) liveSessions.set(url, (live = { ids: new Map(), filters: new Map() }));
  for (const [map, key] of [
    [live.ids, id],
    [live.filters, filter],
  ] as const) {
    const n = (map.get(key) ?? 0) + by;
    if (n > 0) map.set(key, n);
    else map.delete(key);
  }
}

/**
 * After a reload: the sessions that routes of this process left and that no running route resumes
 * or takes over (the route was removed, or renamed: its default group, so its filter, changed) are
 * ended on the server. Left alone, the server went on queueing every message of their filter for
 * them until `sessionExpirySeconds` (a day by default) or its queue limit (docs/spec-checklist.md,
 * point 156). Client ids are per instance, so such a session is this process's alone.
 */
async function endLeftSessions(lib: MqttLib, settings: MqttSettings, log: Logger): Promise<void> {
  const left = leftSessions.get(settings.url);
  if (!left) return;
  const live = liveSessions.get(settings.url);
  for (const [id, session] of [...left]) {
    if (live?.ids.has(id) || live?.filters.has(session.filter)) continue;
    left.delete(id);
    if (!(await endSession(lib, settings, id, session.filter, log))) unendedOf(settings.url).set(id, session.filter);
  }
}

/**
 * Sessions endLeftSessions could not end (the server not reached: a partition, the server away
 * during the reload), by server URL and client id, with their filter: ended at the next connect of
 * a publish connection to that server (endUnendedSessions). Before, they stayed subscribed and the
 * server queued their topic's messages for a day (fault audit, point 172). Kept apart from
 * leftSessions: those are decided at a reload's end only, when a rebuilt route's successor runs.
 */
const unendedSessions = new Map<string, Map<string, string>>();
/** Server URLs whose unended sessions are being ended now (connects can come faster than a try). */
const endingUnended = new Set<string>();

function unendedOf(url: string): Map<string, string> {
  let unended = unendedSessions.get(url);
  if (!unended) unendedSessions.set(url, (unended = new Map()));
  return unended;
}

/** A publish connection to the server connected: the sessions a reload could not end are ended now, unless a route runs one again (a later reload). */
async function endUnendedSessions(lib: MqttLib, settings: MqttSettings, log: Logger): Promise<void> {
  const unended = unendedSessions.get(settings.url);
  if (!unended || unended.size === 0 || endingUnended.has(settings.url)) return;
  endingUnended.add(settings.url);
  try {
    for (const [id, filter] of [...unended]) {
      unended.delete(id);
      const live = liveSessions.get(settings.url);
      if (live?.ids.has(id) || live?.filters.has(filter)) continue;
      if (!(await endSession(lib, settings, id, filter, log))) unended.set(id, filter);
    }
  } finally {
    endingUnended.delete(settings.url);
  }
}

/** Connects as `clientId` with a clean session (MQTT 5: no expiry), which discards the one the server held, and disconnects; false when the server was not reached. */
async function endSession(lib: MqttLib, settings: MqttSettings, clientId: string, filter: string, log: Logger): Promise<boolean> {
  const client = lib.connect(settings.url, { ...clientOptions(settings, clientId, false), reconnectPeriod: 0 });
  client.on('error', () => undefined);
  const connected = new Promise<boolean>((resolve) => {
    client.once('connect', () => resolve(true));
    client.once('close', () => resolve(false));
  });
  const ok = (await within(connected, settings.connectTimeoutMs)) === 'done' && (await connected);
  if (ok) {
    await disconnect(client, settings, log);
    log.info({ session: clientId, filter }, 'mqtt session of a consume route a reload removed ended on the server');
    return true;
  }
  client.end(true);
  log.warn({ session: clientId, filter }, 'mqtt session of a consume route a reload removed could not be ended (server not reached); ending it at the next connect');
  return false;
}

/**
 * One consume route's connection. A QoS 1 or 2 message is acknowledged — PUBACK, or PUBREC for
 * QoS 2 — only once the route accepted it, so a message in hand when the gateway stops, crashes or
 * loses the connection is sent again by the server to the route's persistent session. mqtt.js
 * hands each message over (`customHandleAcks`, QoS 0 through `handleMessage`) and is told at once
 * to send no acknowledgement and read on (up to MAX_IN_HAND messages in hand), so its keepalive
 * sees the PINGRESPs behind a message the route holds; the route handles messages in order, one at
 * a time, and writes each acknowledgement itself, in the order the messages came (MQTT 3.1.1
 * §4.6), on the connection each came on. A PUBREL (QoS 2) is answered PUBCOMP by mqtt.js.
 */
class MqttSubscription {
  readonly link: Link;
  private readonly settings: MqttSettings;
  private readonly clientId: string;
  private readonly persistent: boolean;
  private readonly filter: string;
  /** Connections emptying the sessions this route's predecessors left (see leftSessions). */
  private readonly adoptions: MqttSubscription[] = [];
  private stopping = false;
  /** Counted in liveSessions (a persistent session, until stop()). */
  private live: boolean;
  /** Every message waits for the one before it, across reconnects too (a new connection's redelivery waits for the old one's handler). */
  private chain: Promise<unknown> = Promise.resolve();
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
  /** Messages received and not yet acknowledged (or, at QoS 0, not yet handled): the route's lag. */
  unacknowledged = 0;
  /** Lets mqtt.js read the next packet: held while MAX_IN_HAND messages are in hand. */
  private readOn: (() => void) | undefined;
  /** The QoS this route subscribes with: its own `from.qos`, else the broker's for its filter. */
  private readonly qos: Qos;
  /**
   * Why the server refused the subscription in its last SUBACK (the reason code named), until a
   * SUBACK grants it: the route is not ready meanwhile (/readyz). It asks again on the same
   * connection by the reconnect policy (an ACL put right on the server needs no reconnect), and at
   * each reconnect; a reload that changes the route's subscription subscribes afresh (one that
   * takes it over, handOver, keeps asking here).
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
    const client = lib.connect(settings.url, clientOptions(settings, clientId, persistent, RECEIVE_MAXIMUM));
    this.link = new Link(client, log, adopted ? `route ${spec.route}, session ${adopted} left by a reload` : `route ${spec.route}`);
    const filter = settings.sharedSubscriptions && !perInstance ? `$share/${spec.group}/${spec.topic}` : spec.topic;
    this.filter = filter;
    this.live = persistent;
    if (persistent) countLive(settings.url, clientId, filter, 1);
    client.on('close', () => {
      this.generation++;
      // The next connect subscribes anyway.
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    });
    client.on('connect', (connack) => this.connected(connack.sessionPresent));
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
   * is harmless. A connection emptying a session left by a reload unsubscribes it instead.
   */
  private connected(sessionPresent: boolean): void {
    const client = this.link.client;
    const filter = this.filter;
    // A new session: the server will send nothing again, so nothing it sends is a repeat, nor will
    // it send again what earlier connections' messages still in hand carry.
    if (!sessionPresent) {
      this.settled.clear();
      this.sessionSince = this.generation;
    }
    const adopted = this.adopted;
    if (adopted) {
      // The server queues nothing more for the left session; what it holds still comes, and is taken like any message.
      client.unsubscribe(filter, (err) => {
        if (err) this.log.warn({ err: err.message, filter, session: adopted }, 'mqtt unsubscribe of a session left by a reload refused');
        else this.log.info({ filter, session: adopted }, 'mqtt session left by a reload unsubscribed; taking what the server still holds for it');
      });
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
    const detail = `the server refused the subscription to '${filter}' (SUBACK reason code 0x${code.toString(16)}, ${name}); asking again`;
    if (detail !== this.refused)
      this.log.error({ filter, reasonCode: code, reason: name }, `mqtt subscription refused by the server: 0x${code.toString(16)} ${name}; the route receives nothing until it is granted`);
    this.refused = detail;
    if (this.stopping || this.retryTimer) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.stopping && this.link.client.connected) this.subscribe();
    }, this.refusedBackoff.delay());
  }

  /** Not ready while the server refuses the subscription. */
  health(): Health {
    return this.refused === undefined ? { ready: true } : { ready: false, detail: this.refused };
  }

  /** A message from mqtt.js, and how to let mqtt.js read on: at once, unless MAX_IN_HAND messages are in hand. */
  private receive(packet: IPublishPacket, generation: number, readOn: () => void): void {
    const done = this.chain.then(() => this.take(packet, generation));
    this.chain = done.finally(() => {
      const held = this.readOn;
      if (--this.unacknowledged <= MAX_IN_HAND && held) {
        this.readOn = undefined;
        held();
      }
    });
    // Only once the message is on the chain: letting mqtt.js read on can hand over the next
    // message within this call (the socket's next chunk is parsed as the write of this one ends),
    // and it must queue behind this one.
    if (++this.unacknowledged <= MAX_IN_HAND) readOn();
    else this.readOn = readOn;
  }

  /** PUBACK (QoS 1) or PUBREC (QoS 2), written on the connection the message came on while it is open; else the server sends it again (DUP) on the next. */
  private acknowledge(packet: IPublishPacket): void {
    const stream = this.link.client.stream;
    if (packet.qos === 0 || packet.messageId === undefined || !stream?.writable) return;
    stream.write(acknowledgement(packet.qos === 1 ? PUBACK : PUBREC, packet.messageId));
  }

  private async take(packet: IPublishPacket, generation: number): Promise<void> {
    const id = packet.messageId;
    if (packet.qos > 0 && id !== undefined && packet.dup && this.settled.has(id)) {
      // Already accepted by the route: only the acknowledgement went missing. A copy that came on a
      // connection lost since cannot be acknowledged there: the server sends it once more on the
      // current one, which must still find it settled. A route held on one message over several
      // reconnects has a copy from each; when the first stale copy cleared the id, the copy on the
      // live connection was delivered again.
      if (generation !== this.generation) return;
      if (packet.qos === 1) this.settled.delete(id);
      this.acknowledge(packet);
      return;
    }
    const accepted = await handOver(toMessage(packet), this.relay, { route: this.spec.route, log: this.log, telemetry: this.telemetry, stopping: () => this.stopping });
    // Not accepted (stopping): no acknowledgement, so the server offers it again to the next session.
    if (!accepted || packet.qos === 0 || id === undefined) return;
    if (generation !== this.generation) {
      // The connection it came on is gone; the server sends it again on the new one (DUP), and that
      // copy is acknowledged. Unless the session it came in is gone too: nothing comes again, and a
      // later message given the same packet id must not be taken for a repeat.
      if (generation >= this.sessionSince) this.settled.add(id);
      return;
    }
    if (packet.qos === 2) this.settled.add(id);
    this.acknowledge(packet);
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
   * A reload's rebuilt route asks the same (Subscription.handOver): the connection, its session and
   * subscription go on (no reconnect, no session churn, no retained message sent again), and each
   * message after the one in hand is the new route's, acknowledged as always; the connections
   * emptying sessions left by earlier reloads hand over too.
   */
  async handOver(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Promise<void> {
    this.spec = spec;
    if (!this.adopted) this.log.info({ clientId: this.clientId }, 'subscription handed over to the rebuilt route');
    await Promise.all([this.relay.replace(handler), ...this.adoptions.map((a) => a.handOver(spec, handler))]);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.retryTimer);
    await Promise.allSettled(this.adoptions.map((a) => a.stop()));
    await this.chain;
    // Disconnect without unsubscribing: a persistent session keeps what arrives until the route is back.
    await disconnect(this.link.client, this.settings, this.log);
    // The session stays on the server: a successor under another client id takes it over.
    if (this.live) countLive(this.settings.url, this.clientId, this.filter, -1);
    this.live = false;
    if (this.persistent) {
      let left = leftSessions.get(this.settings.url);
      if (!left) leftSessions.set(this.settings.url, (left = new Map()));
      left.set(this.clientId, { filter: this.filter, unsubscribed: this.adopted !== undefined });
    }
  }
}

/** A received PUBLISH as a message: its user properties and Content Type (MQTT 5) as headers, as the CloudEvents MQTT binding reads them (fromMqttProperties). */
function toMessage(packet: IPublishPacket): Message {
  const props = packet.properties;
  const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
  const headers = props ? fromMqttProperties(props.userProperties ? singleValued(Object.entries(props.userProperties)) : {}, props.contentType) : {};
  return payloadMessage(payload, { headers, topic: packet.topic, partition: null, offset: null, timestamp: Date.now() });
}

/**
 * Ends a client's connection: a DISCONNECT, then mqtt.js waits for the server to close its side.
 * A server that stops answering (frozen, or gone without a FIN) never does, and the route's or
 * broker's stop, and the reload or shutdown behind it, waited for ever: after connectTimeoutMs the
 * socket is dropped instead. A persistent session is kept on the server either way.
 */
async function disconnect(client: MqttClient, settings: MqttSettings, log: Logger): Promise<void> {
  const ending = client.endAsync().catch(() => undefined);
  if ((await within(ending, settings.connectTimeoutMs)) === 'done') return;
  log.warn({ clientId: client.options.clientId, waitedMs: settings.connectTimeoutMs }, 'mqtt server did not close the connection after DISCONNECT within connectTimeoutMs; dropping it');
  client.stream?.destroy();
  await within(ending, settings.connectTimeoutMs);
}
