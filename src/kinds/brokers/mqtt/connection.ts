/**
 * A connection to an MQTT server, publishing or consuming: the client library, the options every
 * connection shares, the state /readyz reports, and a disconnect that does not hang.
 */

import type { IClientOptions, MqttClient } from 'mqtt';
import type { Logger } from '../../../log.js';
import { within } from '../../../core/within.js';
import type { MqttSettings } from '../mqtt.js';
import { notConnectedDetail } from '../not-connected.js';
import { brokerTlsWords, closedInHandshake, closedInHandshakeReason, followTlsHandshake, isTlsFailure } from '../../tls-failures.js';
import { resetGivenUp } from '../given-up.js';
import { BROKER_CONNECTING } from '../../contracts.js';

/** The client library, loaded when the first mqtt broker starts (commands that start none, such as validate, never load it). */
export type MqttLib = typeof import('mqtt');
/** Set by loadMqtt(), which every broker's start awaits. */
export let lib: MqttLib | undefined;
export const loadMqtt = async (): Promise<MqttLib> => (lib ??= await import('mqtt'));

/**
 * What a consume route's connection tells mqtt.js for every QoS 1 and 2 message: no PUBACK or
 * PUBREC from mqtt.js, read on. The route sends the acknowledgement itself once it accepted the
 * message (see MqttSubscription). mqtt.js emits it as an 'error' event, which Link ignores: one
 * instance for all, so no stack is captured per message.
 */
export class AcknowledgedByRoute extends Error {
  constructor() {
    super('acknowledged by the consume route once it accepted the message');
  }
}

export const ACKNOWLEDGED_BY_ROUTE = new AcknowledgedByRoute();

/** CONNACK codes that turn the login down: 3.1.1's bad user name or password and not authorized; MQTT 5's the same, banned, and bad authentication method. */
const LOGIN_REFUSED = new Set<unknown>([4, 5, 0x86, 0x87, 0x8a, 0x8c]);
/** CONNACK codes that turn the client id down: 3.1.1's identifier rejected, MQTT 5's client identifier not valid. */
const CLIENT_ID_REFUSED = new Set<unknown>([2, 0x85]);

/**
 * What a failed connect says of who refused it: the server turning down the login or the client
 * id in its CONNACK, or a TLS handshake that failed (a certificate either side refused, a port that
 * does not speak TLS: `plain`, closedInHandshake). Undefined for the rest, which may pass on their
 * own: no server there, a timeout, the connection closed, and the CONNACKs of a server that is
 * there but cannot take the client now (3.1.1's 3 server unavailable; MQTT 5's 0x88 server
 * unavailable, 0x89 busy, 0x97 quota exceeded, 0x9F connection rate exceeded).
 */
export function refusedBy(err: unknown, plain: boolean): 'login' | 'client id' | 'tls' | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (LOGIN_REFUSED.has(code)) return 'login';
  if (CLIENT_ID_REFUSED.has(code)) return 'client id';
  return isTlsFailure(err) || plain ? 'tls' : undefined;
}

/**
 * Connections the server closed this soon after accepting them, this many times in a row, look
 * like another client taking the client id over: the server closes the older connection, and
 * mosquitto 2.0 says nothing about why (no DISCONNECT 0x8E, Session taken over).
 */
const TAKEN_OVER_TIMES = 3;
const takenOverWithinMs = (reconnectPeriodMs: number) => Math.max(5000, 5 * reconnectPeriodMs);
/**
 * Connect failures that say no server took the connection at all. Another client taking our client
 * id lets every reconnect through; a server that is down, restarting or crash-looping refuses some,
 * so one of these between two short connections means an outage, not a take-over.
 */
const NOT_ACCEPTED = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN']);

/** A connection's state, as /readyz reports it. */
export class Link {
  ready = false;
  detail = BROKER_CONNECTING;
  private connectedAt = 0;
  /** Connections in a row that the server closed soon after accepting them (TAKEN_OVER_TIMES). */
  private shortLived = 0;
  /**
   * Why the server refused the last try, while it does (refusedBy: a login, a client id or a TLS
   * handshake turned down), in /readyz's words; undefined once a try connects or fails otherwise.
   */
  refused: string | undefined;
  /** An error came since the last close: a close without one (a server that closes the connection before its CONNACK) is a try that failed otherwise. */
  private erred = false;
  /**
   * The reasons told since the last connect. Not only the last one: a server of another protocol
   * fails each try twice (mqtt.js cannot parse its answer, then the server resets the socket), and
   * two reasons in turn were two warnings every reconnectPeriodMs for as long as it lasted.
   */
  private told = new Set<string>();

  constructor(
    readonly client: MqttClient,
    log: Logger,
    what: string,
  ) {
    followHandshakes(client);
    client.on('connect', () => {
      if (!this.ready && this.shortLived < TAKEN_OVER_TIMES) log.info({ connection: what }, 'mqtt connected');
      this.ready = true;
      this.refused = undefined;
      this.told.clear();
      this.detail = 'connected';
      this.connectedAt = Date.now();
    });
    client.on('error', (err) => {
      // A message whose acknowledgement the route sends itself (MqttSubscription) says nothing about the connection.
      if (err instanceof AcknowledgedByRoute) return;
      if (!this.ready && NOT_ACCEPTED.has((err as { code?: string }).code ?? '')) this.shortLived = 0;
      const plain = closedInHandshake(client.stream, err);
      const why = plain ? closedInHandshakeReason(err) : brokerTlsWords(err);
      this.erred = true;
      const refused = refusedBy(err, plain);
      const detail = notConnectedDetail(why, refused, err);
      // Not a closed handshake: a proxy before a server that is down closes it too (may pass).
      this.refused = refused !== undefined && !plain ? detail : undefined;
      // Once per reason, not once per attempt: a wrong password is retried every reconnectPeriodMs.
      if (!this.ready && !this.told.has(detail)) {
        // Bounded, should reasons carry changing words (addresses of a name that resolves to many).
        if (this.told.size >= 16) this.told.clear();
        this.told.add(detail);
        log.warn({ connection: what, err: why, retryInMs: client.options.reconnectPeriod }, 'mqtt connect failed; retrying');
      }
      this.detail = detail;
    });
    // mqtt.js emits 'offline' from its own 'close' listener, before this one's: either may be the
    // first to see a lost connection. end() (SIGTERM, a route a reload removes) loses nothing.
    const lost = () => {
      if (this.ready && !client.disconnecting) {
        this.shortLived = Date.now() - this.connectedAt < takenOverWithinMs(client.options.reconnectPeriod ?? 1000) ? this.shortLived + 1 : 0;
        // Once a fight over the client id is told, its every round would be two more lines.
        if (this.shortLived < TAKEN_OVER_TIMES) log.warn({ connection: what }, 'mqtt connection lost; reconnecting');
        else if (this.shortLived === TAKEN_OVER_TIMES)
          log.warn(
            { connection: what, clientId: client.options.clientId, times: this.shortLived },
            'the server keeps closing this mqtt connection right after accepting it: another client (another gateway instance?) may be connecting with the same client id; give each instance its own clientId',
          );
      }
      this.ready = false;
    };
    client.on('close', () => {
      if (!this.erred) this.refused = undefined;
      this.erred = false;
      lost();
      if (this.detail === 'connected')
        this.detail =
          this.shortLived >= TAKEN_OVER_TIMES
            ? `unreachable: the server closed the connection right after accepting it, ${this.shortLived} times in a row (another client using client id '${client.options.clientId}'?)`
            : 'unreachable: connection closed';
    });
    client.on('offline', lost);
  }
}

/**
 * Follows the TLS handshake of each stream mqtt.js opens (the current one and those of its
 * reconnects), so a server that closes the connection in it is told as `tls refused`, not as
 * `unreachable` (closedInHandshake).
 */
function followHandshakes(client: MqttClient): void {
  const withBuilder = client as unknown as { streamBuilder?: (c: MqttClient) => unknown };
  const build = withBuilder.streamBuilder;
  // Another mqtt.js: a closed handshake is told in node's words.
  if (typeof build !== 'function') return;
  followTlsHandshake(client.stream);
  withBuilder.streamBuilder = (c) => followTlsHandshake(build.call(client, c));
}

/**
 * Makes mqtt.js reset the socket of a connection it gives up for keepalive (no PINGRESP 1.5
 * intervals after the last), which it destroys (a FIN): what it had written and not delivered then
 * never reaches the server (given-up.ts). For publishing connections: on a consume route's, what
 * it would drop are its acknowledgements, which the server may as well take late.
 */
export function resetWhenGivenUp(client: MqttClient): void {
  const giveUp = client.onKeepaliveTimeout;
  // Another mqtt.js: the connection closes as the library does.
  if (typeof giveUp !== 'function') return;
  client.onKeepaliveTimeout = function (this: MqttClient) {
    resetGivenUp(this.stream);
    giveUp.call(this);
  };
}

/**
 * Keeps mqtt.js from giving a consume route's connection up for keepalive when its PINGRESP is
 * only behind packets not read yet: mqtt.js reads a packet once the one before was let go of, and
 * the route stops letting go past MAX_IN_HAND messages in hand (subscription.ts), so a PINGRESP
 * behind a backlog — a QoS 0 flood, or mosquitto 2.0 sending a route many times its window once a
 * held message is acknowledged — went unread, and mqtt.js reset a live connection: QoS 0 messages
 * in its socket lost, QoS 1 and 2 ones whose acknowledgement was still out sent and delivered
 * again. `reading()`: how many packets the route has read so far, and whether it holds the reading.
 * A packet read since the PINGREQ answers for the connection: the keepalive starts over (the next
 * PINGREQ a keepalive later). A connection that brings nothing while the route reads on is still
 * given up: at the first check (1.5 keepalives after the keepalive last started over) that finds
 * no packet read since its PINGREQ, under 2 keepalives after the last packet read. While the route
 * holds its reading the PINGRESP cannot be read, so the server is asked on a connection of its own
 * (`serverAnswers`): one that does not answer within connectTimeoutMs — frozen, or gone without a
 * FIN — has the connection given up as above, and one that answers keeps it (mqtt.js 5.16's
 * KeepaliveManager: a PINGREQ at 1 keepalive, onKeepaliveTimeout at 1.5, reschedule() starting
 * both over).
 */
export function keepWhileReading(client: MqttClient, reading: () => { read: number; held: boolean }, serverAnswers: () => Promise<boolean>, log: Logger): void {
  const giveUp = client.onKeepaliveTimeout;
  const ping = client.sendPing;
  // Another mqtt.js: its own keepalive as it is.
  if (typeof giveUp !== 'function' || typeof ping !== 'function' || typeof client.reschedulePing !== 'function') return;
  let readAtPing = reading().read;
  let asking = false;
  client.sendPing = function (this: MqttClient) {
    readAtPing = reading().read;
    ping.call(this);
  };
  client.onKeepaliveTimeout = function (this: MqttClient) {
    const now = reading();
    if (now.read !== readAtPing) return this.reschedulePing(true);
    if (!now.held) return giveUp.call(this);
    this.reschedulePing(true);
    if (asking) return;
    asking = true;
    const stream = this.stream;
    const readAtAsking = now.read;
    void serverAnswers().then((answered) => {
      asking = false;
      // Still the same connection, and nothing read on it meanwhile.
      if (answered || this.stream !== stream || !this.connected || this.disconnecting || reading().read !== readAtAsking) return;
      log.warn({ clientId: this.options.clientId }, 'mqtt server did not answer a connection of its own while the route held its reading; giving the connection up');
      giveUp.call(this);
    });
  };
}

/**
 * Waits for `answer`, the server's answer on `client` to something written there, for as long as
 * the server is heard from: 'done' once `answer` settled, 'silent' once `ms` passed with no packet
 * read on the connection. A busy server answers late but not silently: its answer comes behind the
 * messages it sends first (a persistent session's backlog, read at the route's pace), and a wait
 * that measured time gave up on it while those were still coming. Each packet read starts the wait
 * over, as keepWhileReading lets a packet read answer for the keepalive. Not a PINGRESP: mqtt.js's
 * keepalive has one every keepaliveSeconds, and a server that answered those and never `answer`
 * would otherwise hold the caller for ever. Nor is a silence the caller causes itself, holding
 * mqtt.js's reading (`held()`, a route past MAX_IN_HAND messages in hand): while it holds, the
 * packets are there unread, and keepWhileReading asks the server on a connection of its own.
 */
export function whileHeard(client: MqttClient, answer: Promise<unknown>, ms: number, held: () => boolean = () => false): Promise<'done' | 'silent'> {
  return new Promise((resolve) => {
    const timer = setTimeout(function silent() {
      if (held()) timer.refresh();
      else settle('silent');
    }, ms);
    const heard = (packet: { cmd: string }) => {
      if (packet.cmd !== 'pingresp') timer.refresh();
    };
    const settle = (how: 'done' | 'silent') => {
      clearTimeout(timer);
      client.off('packetreceive', heard);
      resolve(how);
    };
    client.on('packetreceive', heard);
    answer.then(
      () => settle('done'),
      () => settle('done'),
    );
  });
}

/**
 * Whether the server of `settings` (its url, TLS and credentials) answers a connection of its own
 * within connectTimeoutMs: a CONNACK of any kind (a refused client id, credentials or connection
 * count is an answer too), or the server closing the connection, says it runs. No answer, or a connection the address refuses
 * or cannot reach, says it does not: a frozen server's kernel still accepts the TCP connection,
 * but no CONNACK comes. A clean session under an empty client id, which the server names itself
 * (MQTT 5 and 3.1.1 allow it with a clean session): any id of ours could be another client's (a
 * route named `<route>-alive` had `<route's id>-alive`), whose connection the server would close
 * and whose session a clean start would discard. A server that refuses an empty id answers too.
 * Over WebSocket (`ws://`, `wss://`), an HTTP answer to the upgrade other than 101 is not the
 * server's: a reverse proxy answers 502 once the server behind it is gone (1982).
 */
export function serverAnswers(lib: MqttLib, settings: MqttSettings): Promise<boolean> {
  const timeoutMs = settings.connectTimeoutMs;
  return new Promise((resolve) => {
    const probe = lib.connect(settings.url, { ...clientOptions(settings, '', false), reconnectPeriod: 0, connectTimeout: timeoutMs, keepalive: 0, properties: undefined });
    const timer = setTimeout(() => done(false), timeoutMs);
    let settled = false;
    const done = (answered: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      probe.removeAllListeners();
      // Errors of the probe's last moments say nothing more.
      probe.on('error', () => undefined);
      probe.end(true);
      resolve(answered);
    };
    probe.once('connect', () => done(true));
    probe.on('error', (err: Error & { code?: unknown; syscall?: string }) => {
      const unreachable = typeof err.code !== 'number' && (err.syscall === 'connect' || err.syscall === 'getaddrinfo' || err.message === 'connack timeout');
      done(!unreachable);
    });
    probe.once('close', () => done(true));
    // mqtt.js drops its WebSocket stream's errors that have no code, as `ws`'s refused upgrade
    // has, and then closes: read as the server closing the connection, that kept a held route's
    // connection through a proxy whose server was gone.
    probe.stream?.once('error', (err: Error) => {
      if (UPGRADE_REFUSED.test(err.message)) done(false);
    });
  });
}

/** What `ws` says when a WebSocket upgrade is answered with an HTTP status other than 101. */
const UPGRADE_REFUSED = /^Unexpected server response: \d+/;

/**
 * A connection's options. `receiveMaximum` (a consume route's, MQTT 5): the QoS 1 and 2 messages
 * the server may have in flight to it, unacknowledged.
 */
export function clientOptions(settings: MqttSettings, clientId: string, persistent: boolean, receiveMaximum?: number): IClientOptions {
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
 * Ends a client's connection: a DISCONNECT, then mqtt.js waits for the server to close its side.
 * A server that stops answering (frozen, or gone without a FIN) never does, and the route's or
 * broker's stop, and the reload or shutdown behind it, waited for ever: after connectTimeoutMs the
 * socket is dropped instead. A persistent session is kept on the server either way.
 */
export async function disconnect(client: MqttClient, settings: MqttSettings, log: Logger): Promise<void> {
  const ending = client.endAsync().catch(() => undefined);
  if ((await within(ending, settings.connectTimeoutMs)) === 'done') return;
  log.warn({ clientId: client.options.clientId, waitedMs: settings.connectTimeoutMs }, 'mqtt server did not close the connection after DISCONNECT within connectTimeoutMs; dropping it');
  client.stream?.destroy();
  await within(ending, settings.connectTimeoutMs);
}
