import type { IStore } from 'mqtt';
import type { Logger } from '../../../log.js';
import { captured, newPromise } from '../../../core/captured-promise.js';
import { EXPIRES_AT, payloadContentType, sentHeaders, valuePayload, type Delivery, type Message } from '../../../core/message.js';
import type { BrokerRuntime, BrokerSpanFacts, BrokerTelemetry, ConsumerLag, Health, PublishOptions, Qos, RuntimeEnv, SubscribeSpec, Subscription } from '../../contracts.js';
import { MQTT_PORTS, serverAddressOf } from '../server-url.js';
import { AckDeadlines, LateWrite, type AckTimeout, type Deadline, type Expiring, leavesOnStop, NotConnected, TopicDeliveries } from '../acknowledgement.js';
import type { MqttSettings } from '../mqtt.js';
import { Flight, MqttPublisher, NO_STORE } from './publisher.js';
import { FirstConnection } from '../first-connection.js';
import { mqttStringProblem, publishTopicProblem, qosFor } from './topics.js';
import { clientOptions, disconnect, Link, lib, loadMqtt, resetWhenGivenUp } from './connection.js';
import { endLeftSessions, endUnendedSessions } from './sessions.js';
import { MqttSubscription } from './subscription.js';

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
  /** Whether takenQos said once that the server's Maximum QoS lowers publishes. */
  private loweredQos = false;
  private stopped = false;
  /** The publish connection's first CONNACK (each route's own connection is its subscription's business). */
  private readonly firstConnection = new FirstConnection();

  /** What publishes answer, per topic. */
  readonly deliveries: TopicDeliveries;
  /** Publishes waiting for the server's acknowledgement, each until `ackTimeoutMs`. */
  private deadlines: AckDeadlines;

  get spanFacts(): BrokerSpanFacts {
    return { server: serverAddressOf(this.settings.url, MQTT_PORTS) };
  }

  constructor(
    readonly name: string,
    public settings: MqttSettings,
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
    resetWhenGivenUp(client);
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

  /**
   * A reload changed only keys read per publish (`ackTimeoutMs`, `retain`: the kind's
   * canReconfigure): the next publish uses them. Publishes already out keep the deadline they
   * were given, in the old AckDeadlines, whose timer runs until they are answered. The consume
   * routes' waits on the server take the new `ackTimeoutMs` too (MqttSubscription.reconfigure).
   */
  reconfigure(options: unknown): void {
    const next = options as MqttSettings;
    if (next.ackTimeoutMs !== this.settings.ackTimeoutMs) this.deadlines = new AckDeadlines(next.ackTimeoutMs, this.name);
    this.settings = next;
    for (const s of this.subscriptions) s.reconfigure(next);
  }

  /** A reload is done: sessions of consume routes it removed are ended (endLeftSessions). */
  reloaded(): void {
    if (this.stopped || !lib) return;
    void endLeftSessions(lib, this.settings, this.log);
  }

  /** The server refused the publish connection's last try for good (its login, its client id, a TLS handshake): Link.refused. */
  refusal(): string | undefined {
    return this.publisher?.refused;
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
    if (bad) return `an MQTT 5 user property cannot hold ${bad}`;
    // An MQTT string's length is 2 bytes: the publisher would refuse it as an outage (503), retried for ever.
    return tooLongForMqtt(name) || tooLongForMqtt(value) ? "an MQTT 5 user property's name and value are at most 65535 bytes each" : undefined;
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
    p.expiresAt = msg[EXPIRES_AT];
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
      if (this.settings.retain && !out.retainAvailable)
        throw new Error(
          "the server keeps no retained messages (its CONNACK's Retain Available is 0), and the broker publishes with `retain: true`: set `retain: false` or enable them on the server (mosquitto's retain_available)",
        );
      // QoS 0 has no acknowledgement: it settles once written to the socket (at most once). The route target's own QoS comes first.
      out.publish(topic, payload, this.takenQos(options?.qos ?? qosFor(this.settings, topic), out.maxQos), this.settings.retain, headers, p);
    } catch (err) {
      p.end(err as Error);
    }
    return promise;
  }

  /**
   * The QoS a publish asked at `qos` goes at on a server whose Maximum QoS (its CONNACK) is `max`:
   * QoS 2 at 1 on a server of QoS 1 (still acknowledged, at least once; warned of once), where sent
   * at 2 the server cut the connection. Throws for QoS 1 or 2 on a server of QoS 0, which
   * acknowledges nothing: a 2xx would stand for no acknowledgement.
   */
  private takenQos(qos: Qos, max: Qos): Qos {
    if (qos <= max) return qos;
    if (max === 0)
      throw new Error(
        `the server takes QoS 0 only (its CONNACK's Maximum QoS), and a QoS ${qos} publish needs its acknowledgement: publish at qos 0 or raise the server's maximum (mosquitto's max_qos)`,
      );
    if (!this.loweredQos) {
      this.loweredQos = true;
      this.log.warn({ qos, maximumQos: max }, `mqtt server takes QoS ${max} at most (its CONNACK's Maximum QoS): QoS ${qos} publishes go at QoS ${max}, acknowledged at least once`);
    }
    return max;
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
   * Per consume route: messages received and not yet acknowledged, the one in hand and those read
   * on behind it (up to the server's in-flight window at QoS 1 and 2, 20 on mosquitto; subscription.ts
   * MAX_IN_HAND); what the server queues for the session beyond that is not visible to an MQTT client.
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

/** Whether `text` is longer than an MQTT string holds (65535 bytes), counted in bytes only when it may be. */
function tooLongForMqtt(text: string): boolean {
  return text.length > 21845 && Buffer.byteLength(text) > 65535;
}
