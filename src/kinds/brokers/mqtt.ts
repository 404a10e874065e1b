import { filterProblem, publishTopicProblem, sharable, shareNameProblem, subscribeTopicProblem, topicMatches } from './mqtt/topics.js';
import { hostname } from 'node:os';
import type { ConnectionOptions } from 'node:tls';
import type { BrokerCompileContext, Qos } from '../contracts.js';
import { foreignWildcardHint, MQTT_WILDCARDS, withForeignWildcardHint } from './foreign-wildcards.js';
import { defineBroker, kindOptions, mapOf, qosSchema, Type, type Static } from '../define.js';
import type { MqttBroker } from './mqtt/broker.js';
import { compileTls, TLS_OPTIONS } from './tls.js';
import { unescape as unescapeQuery } from 'node:querystring';
import { checkServerUrl } from './server-url.js';
import { whenUsed } from '../when-used.js';
import { onlyInPlaceChanged } from './in-place.js';
import { fromMqttProperties } from '../../codecs/cloudevents.js';

const int = (def: number, min: number, description: string) => Type.Optional(Type.Integer({ minimum: min, default: def, description }));

const options = kindOptions('mqtt', {
  url: Type.String({
    minLength: 1,
    description:
      'Server URL: `mqtt://host:1883`, `mqtts://host:8883`, `ws://…` or `wss://…`. Credentials in it (`mqtt://user:password@host`) need `@ : / ? #` percent-encoded: an unencoded `/`, `?` or `#` ends the host early, and a URL with an `@` after its host and none before is a warning (EG_CONFIG_SERVER_URL); `username` and `password` need no encoding.',
  }),
  clientId: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        'Prefix of the client ids (`<clientId>-pub` publishes, `<clientId>-<route>` per consume route); default `eventgate-<hostname>`; must differ between instances: two instances with one `clientId` take the connections from each other, the server closing the older one (mosquitto 2.0 without a reason: no DISCONNECT 0x8E Session taken over), each reconnecting every `reconnectPeriodMs`; after three connections in a row that the server closed within 5 s (or five `reconnectPeriodMs`) of accepting them, with no connect refused in between (a server restarting or crash-looping refuses some, and is told as an outage each time: `mqtt connection lost; reconnecting`), the gateway logs once, at warn, `the server keeps closing this mqtt connection right after accepting it: another client (another gateway instance?) may be connecting with the same client id` with the `clientId` (then no more `mqtt connection lost` lines for that fight), and `/readyz`, between connections, says the same; and the message a consume route has in hand may be delivered by both. While a reload replaces the broker, the new publish connection is `<clientId>-pub-2` (the old one finishes its publishes as `<clientId>-pub`), so an ACL by client id must allow both. A reload that changes it moves each consume route to a new session, which takes over the one it left (docs/scaling.md); changed between two runs, the old sessions stay on the server.',
    }),
  ),
  username: Type.Optional(Type.String({ description: 'User name for the server.' })),
  password: Type.Optional(Type.String({ description: 'Password for the server (write it as ${VAR}).' })),
  protocolVersion: Type.Optional(
    Type.Unsafe<4 | 5>({ enum: [4, 5], default: 5, description: '`5` (default) or `4` (MQTT 3.1.1: no user properties or Content Type, so no headers; CloudEvents only in structured mode).' }),
  ),
  tls: Type.Optional(TLS_OPTIONS),
  qos: Type.Optional(
    qosSchema({
      default: 1,
      description:
        "QoS of publishes and subscriptions: `0` at most once, `1` at least once (default), `2` exactly once. A route's own `qos` (on `from`, a target, its `deadletter` or a validate step's `deadletter`) and `qosByTopic` come first.",
    }),
  ),
  qosByTopic: Type.Optional(
    mapOf(qosSchema(), {
      description:
        "QoS per topic filter (`+` and `#` allowed), first match wins, e.g. `{\"telemetry/#\": 0}`; other topics use `qos`. A filter written in another broker's wildcard syntax (`plant.*.temp`) matches only the topic of that name and is warned of at validate, as a route's `from.topic` is (EG_CONFIG_SUSPICIOUS_TOPIC). A consume route's filter is matched as written (`sensors/+` against `sensors/#`); a route's own `qos` comes first.",
    }),
  ),
  retain: Type.Optional(
    Type.Boolean({
      default: false,
      description:
        "Publish with the retain flag. An empty payload (an empty `text/plain` body, an empty string) then removes the topic's retained message, as MQTT says: subscribers connected at the time get it, empty, and later ones nothing. A server that keeps no retained messages (MQTT 5 CONNACK Retain Available 0; mosquitto's `retain_available false`) would cut the connection for such a publish, and every publish on it: each is a 503 saying so instead, the connection kept.",
    }),
  ),
  persistentSessions: Type.Optional(
    Type.Boolean({
      default: true,
      description:
        "Consume routes keep their session (and the QoS ≥ 1 messages queued for it) across disconnects and restarts. The session keeps its turn of a shared group's messages while its instance is stopped: an instance removed for good, or one whose `clientId` changes at every start (pods of a Deployment), strands that turn until `sessionExpirySeconds` (docs/scaling.md, 'Instances that come and go on MQTT'). A topic's retained message comes to a route once, with its new subscription, not again when the route subscribes again on the same session (each connect, a reload that rebuilds it): MQTT 5 Retain Handling 1. In a shared group each instance's route gets it with its own new subscription (mosquitto sends a retained message to every new shared subscription), so a group of three instances started afresh delivers it three times, and so again whenever their subscriptions are new: a reload that changes the route's filter, a restart of mosquitto (which restores sessions without their shared subscriptions). A new session gets it again: `false` here (every connect), a changed `clientId`, a server restart that lost the session's subscriptions, and MQTT 3.1.1 (`protocolVersion: 4`, which has no Retain Handling) each time a route subscribes.",
    }),
  ),
  // MQTT 5 writes it as a four-byte integer: a larger value made the route's CONNECT fail to encode, silently (the route never connected, /readyz said `connecting`).
  sessionExpirySeconds: Type.Optional(
    Type.Integer({
      minimum: 0,
      maximum: 4294967295,
      default: 86400,
      description: 'MQTT 5: how long the server keeps the persistent session of a disconnected route (at most 4294967295, which MQTT 5 reads as never expiring).',
    }),
  ),
  sharedSubscriptions: Type.Optional(
    Type.Boolean({
      default: true,
      description:
        "Consume routes of one group share messages across instances through `$share/<group>/<filter>`. mosquitto 2.0 restores a session after its own restart without its shared subscriptions, and drops what is published before the route subscribes again; `false` (a plain subscription, restored with the session) avoids that where one instance reads a topic (docs/scaling.md). Shared subscriptions belong to MQTT 5: mosquitto shares over MQTT 3.1.1 (`protocolVersion: 4`) too, but a 3.1.1 server without them takes `$share/<group>/<filter>` for a plain filter that no publish matches, so the route is ready and receives nothing (the MQTT listener of nats-server 2.9): set `false` there, with one instance reading the topic (each instance would get every message). MQTT 3.1.1 gives a server no way to say it has none, so the gateway cannot tell; an MQTT 5 server can (its CONNACK's Shared Subscription Available 0, or a SUBACK 0x9E Shared Subscriptions not supported): a route that would subscribe through `$share/` is then not ready, `/readyz` naming `sharedSubscriptions: false`. After such a CONNACK it does not subscribe (it would read nothing), said once at warn, until a connect whose CONNACK does not say it; after such a SUBACK it asks again like any refused subscription (logged once at error).",
    }),
  ),
  // The CONNECT packet carries it in two bytes.
  keepaliveSeconds: Type.Optional(
    Type.Integer({
      minimum: 0,
      maximum: 65535,
      default: 30,
      description:
        "Keep-alive interval in seconds (at most 65535, the protocol's limit); a silent connection is declared lost after 1.5 times it without a PINGRESP (a consume route's connection bringing messages faster than the route takes them, its PINGRESP behind them, is not silent: docs/scaling.md).",
    }),
  ),
  connectTimeoutMs: int(5000, 1, 'Time to open a connection.'),
  reconnectPeriodMs: int(1000, 1, 'Wait between reconnect attempts.'),
  ackTimeoutMs: int(
    5000,
    1,
    "A publish not acknowledged (PUBACK / PUBCOMP) by then fails: HTTP 503, retry for consume routes, which first wait for the late acknowledgement or the connection's loss (taken: not published again). Also, for a consume route a reload removes, how long the server may send nothing while the route leaves its group: the route waits for each answer (its UNSUBACK, each PINGRESP) as long as the server sends something, each packet it reads starting the wait over (a busy server's answer comes behind the session's backlog), and stops as it is once nothing but keepalive PINGRESPs came for this long, so a server that stopped answering does not hold the reload. A reload that changes it applies it in place to both, the running routes' waits included.",
  ),
});
type MqttOptions = Static<typeof options>;

/** The options compiled: defaults filled in, TLS files read. What the runtime gets. */
export interface MqttSettings {
  url: string;
  clientId: string;
  username: string | undefined;
  password: string | undefined;
  protocolVersion: 4 | 5;
  tls: ConnectionOptions | undefined;
  qos: Qos;
  /** In the order written: the first filter matching a topic gives its QoS. */
  qosByTopic: [string, Qos][];
  retain: boolean;
  persistentSessions: boolean;
  sessionExpirySeconds: number;
  sharedSubscriptions: boolean;
  keepaliveSeconds: number;
  connectTimeoutMs: number;
  reconnectPeriodMs: number;
  ackTimeoutMs: number;
}

/**
 * Keys read per publish (MqttBroker.reconfigure applies them): a reload that changes only these
 * keeps every connection and subscription. `qos` and `qosByTopic` are not among them: a consume
 * route subscribed at the QoS they gave.
 */
const IN_PLACE = ['ackTimeoutMs', 'retain'];

const URL_SCHEMES = /^(mqtt|mqtts|tcp|tls|ssl|ws|wss):\/\/[^\s/]+/;

/**
 * The credentials of a URL (`mqtt://user:password@host`), percent-decoded, and the URL without them.
 * mqtt.js decodes the URL's `user:password` whole and splits it at its last `:`, so a password
 * holding an encoded `:` (`pa%3Ass`, as the url key's description says to write it) logged in as
 * user `user:pa` with password `ss`, and a URL with a password and no user sent `:password` as the
 * user name. Given to mqtt.js apart, each goes as written. A URL's credentials win over the
 * `username` and `password` keys, as they did inside mqtt.js.
 */
function credentialsOutOfUrl(url: string): { url: string; username?: string; password?: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { url };
  }
  if (u.username === '' && u.password === '') return { url };
  const username = u.username === '' ? undefined : unescapeQuery(u.username);
  const password = u.password === '' ? undefined : unescapeQuery(u.password);
  u.username = '';
  u.password = '';
  return { url: u.href, username, password };
}

function compileMqtt(o: MqttOptions, ctx: BrokerCompileContext): MqttSettings | undefined {
  let ok = checkServerUrl(o.url, URL_SCHEMES, 'an MQTT server URL: expected mqtt://host:port (or mqtts, ws, wss)', ctx);

  const qosByTopic: [string, Qos][] = [];
  for (const [filter, qos] of Object.entries(o.qosByTopic ?? {})) {
    const why = filterProblem(filter);
    if (why) {
      ctx.report(['qosByTopic', filter], 'EG_CONFIG_SCHEMA', `'${filter}' is not an MQTT topic filter: ${why}`);
      ok = false;
    }
    // A filter as a route's topic is one (readWarning): in another kind's syntax it matches only the topic of its own name.
    const foreign = why ? undefined : foreignWildcardHint(filter, MQTT_WILDCARDS, 'MQTT', 'topic');
    if (foreign) ctx.warn(['qosByTopic', filter], 'EG_CONFIG_SUSPICIOUS_TOPIC', `qosByTopic: ${foreign}`);
    qosByTopic.push([filter, qos]);
  }
  const tls = compileTls(o.tls, ctx);
  if (tls === false) ok = false;
  if (!ok) return undefined;
  const server = credentialsOutOfUrl(o.url);
  return {
    url: server.url,
    clientId: o.clientId ?? `eventgate-${hostname()}`,
    username: server.username ?? o.username,
    password: server.password ?? o.password,
    protocolVersion: o.protocolVersion ?? 5,
    tls: tls || undefined,
    qos: o.qos ?? 1,
    qosByTopic,
    retain: o.retain ?? false,
    persistentSessions: o.persistentSessions ?? true,
    sessionExpirySeconds: o.sessionExpirySeconds ?? 86400,
    sharedSubscriptions: o.sharedSubscriptions ?? true,
    keepaliveSeconds: o.keepaliveSeconds ?? 30,
    connectTimeoutMs: o.connectTimeoutMs ?? 5000,
    reconnectPeriodMs: o.reconnectPeriodMs ?? 1000,
    ackTimeoutMs: o.ackTimeoutMs ?? 5000,
  };
}

export const mqttBroker = defineBroker({
  options,
  doc: {
    summary:
      "An MQTT server (MQTT 5 or 3.1.1), through the `mqtt` client. Routes publish to its topics (`to: {broker, topic}`) and consume topic filters (`from: {broker, topic: \"sensors/+/temp\"}`, `+` and `#` allowed; `$topic` is the concrete topic of each message). At QoS 1 and 2 a publish answers 2xx only after the server acknowledged it (PUBACK / PUBCOMP), and 503 when it did not within `ackTimeoutMs` or the server is unreachable; QoS 0 is at most once (2xx once written to the connection). A route chooses its own QoS with `qos` on its mqtt `from`, on each mqtt target and on an mqtt `deadletter`, the route's or a validate step's own (`to: {broker: devices, topic: alerts, qos: 2}`); a route's `qos` comes first, then the first `qosByTopic` filter matching the topic (for `from`, the route's filter as written), then the broker's `qos`, so routes on one topic may differ: each consume route has its own connection and subscription, a message reaches it at the lower of its publisher's QoS and the route's, and at QoS 0 the server keeps nothing for the route while it is away. A server may take less than asked (mosquitto's `max_qos`): a subscription granted a lower QoS in the SUBACK is warned of once (`mqtt server granted the subscription at QoS 1, below the 2 asked for`), the route stays ready and reads at the granted QoS (QoS 1: a crash may have the server send a message again); publishes keep to the server's Maximum QoS (its MQTT 5 CONNACK), where a publish above it would have the server cut the connection and every publish on it: QoS 2 goes at QoS 1, still acknowledged, warned of once, and a QoS 1 or 2 publish to a server of QoS 0 is a 503 saying so, since nothing would be acknowledged. A reload that changes a route's QoS subscribes its session again at the new QoS (what the server queued for it meanwhile still comes). A subscription the server refuses in its SUBACK (MQTT 3.1.1: 0x80; MQTT 5: 0x80 and up, e.g. 0x87 Not authorized) makes the route not ready, `/readyz` naming the reason code, logged once per reason; the route asks again on its connection (250 ms doubling to 5 s), so an ACL put right on the server is picked up without a reconnect, and at every reconnect and every reload that changes the route's subscription (a reload that changes only its steps, targets, `deadletter`, webhook `concurrency` or `orderBy` hands the live subscription over and keeps asking there). A consume route has its own connection and acknowledges a message (PUBACK at QoS 1, PUBREC at QoS 2) only after every target accepted it, in the order the messages came (MQTT §4.6); it takes one message at a time, unless its targets are all webhooks: then up to min(the webhooks' `concurrency`, 20) at once (20: the Receive Maximum the route's MQTT 5 connection asks for, and mosquitto's default window over 3.1.1), those with one `orderBy` value one after the other, in order, and a message done early is acknowledged only once every earlier one is, so a crash has the server send it again with them (never one acknowledged behind one in hand); with persistent sessions (the default) the server sends again what was in flight when the gateway stopped or crashed, and keeps what arrives while it is down or reloading, so nothing is lost (docs/scaling.md has the repeats a crash can cause). A crash of the server itself loses what it had not saved yet, 2xx answers included: mosquitto saves every `autosave_interval` (30 min by default) and at shutdown (docs/scaling.md, measured per kind). Routes of a group share messages across instances through shared subscriptions (`$share/<group>/<filter>`; a `group` holding `/`, `+` or `#`, which a share name cannot, is a config error at its line: after a `/` the server would read the rest as the filter), except a filter of the server's own topics (starting with `$`, as `$SYS/#`), subscribed plainly on every instance, since mosquitto delivers none of those to a shared subscription; a `from.topic` written as a shared subscription (`$share/g/x`, as mosquitto_sub takes it) is a config error at its line: write `topic: x, group: g`; WebSocket forward routes subscribe per instance with a clean session. MQTT 5 user properties are the message headers, both ways, except `content-type`, which is the Content Type property (the type of the payload as written: one a step made stale, a JSON body turned into a string, goes as `text/plain`, as on AMQP and webhooks; read back as `content-type`; a `content-type` user property, as earlier versions sent it, is still read when there is no property). CloudEvents travel as the CloudEvents MQTT binding spells them: in binary mode (the default) `datacontenttype` is the Content Type and every other attribute a user property of its own name (`specversion`, `id`, `source`, `type`, extensions; no `ce_` prefix), other headers (`traceparent`, `x-tenant`, ...) user properties beside them; `cloudevents: structured` on the target sends the JSON event with Content Type `application/cloudevents+json`. A consumed message with that Content Type, or with a `specversion` user property (user properties named as attributes, lower-case letters and digits, are then its attributes; `traceparent` and `tracestate` stay headers), is a CloudEvent, as is one with the `ce_` user properties earlier versions wrote. MQTT 3.1.1 (`protocolVersion: 4`) has no properties: no headers are sent, so binary mode cannot work there; use `cloudevents: structured` to carry events over it (a 3.1.1 receiver takes the payload as the JSON event, as the binding says: by agreement; a consume route gets it as a plain JSON message unless its `from` says `cloudevents: structured`, that agreement, when it reads the event, `$ce` and all). A message with a header (or a computed topic) holding a control character or a Unicode non-character, which MQTT servers refuse by dropping the connection, or a header whose name or value is over 65535 bytes (an MQTT string's bound), is not sent: it fails as invalid (400 `EG_INVALID_MESSAGE`; consume routes dead-letter it). A message larger than the server takes is 413 `EG_PAYLOAD_TOO_LARGE`, dead-lettered or dropped by consume routes, never retried: over MQTT 5 the server's Maximum Packet Size (its CONNACK; mosquitto's `max_packet_size`) is checked before sending (sent, mosquitto would cut the connection and every publish in flight on it), and a PUBACK or PUBREC with reason code 0x95 (Packet too large: mosquitto's `message_size_limit`) is that answer. MQTT 3.1.1 tells neither: mosquitto cuts the connection for a packet over `max_packet_size` (503, sent again by a consume route, as an outage), and acknowledges a message over `message_size_limit` as taken while dropping it (a 2xx for a lost message); on 3.1.1 keep the server's limits above the messages routed to it (docs/scaling.md). A publish the server's ACL refuses (mosquitto's `acl_file`) is, over MQTT 5, a 503 in the server's words (`Not authorized`, reason code 0x87) on a connection that stays up, the other publishes and the consume routes going on; over MQTT 3.1.1 mosquitto acknowledges it as taken and drops it (a 2xx for a lost message), as it does any QoS 0 publish it refuses. A topic a route names as it is must be one the server takes: `+` or `#` in a `to` or `deadletter` topic, one starting with `$share` (MQTT 5 keeps it for shared subscriptions; mosquitto answers such a publish 0x87 Not authorized, a 503 a consume route would retry for ever; a computed one fails as a wildcard does), one starting with `$SYS` (the server's own topics: mosquitto refuses a publish to any of them, 0x87 over MQTT 5, and over 3.1.1 acknowledges it and drops it), or a malformed filter in `from.topic` (`a/#/b`, `a+/b`), is a config error at its line, where mosquitto would close the publish connection (failing every publish in flight on it) or refuse the subscription. A changed mqtt broker is replaced on reload, unless every key changed is one read per publish, `ackTimeoutMs` or `retain`: those apply in place from the next publish, every connection, session and route kept (docs/scaling.md, 'What else a reload or a stop does'). Unchanged routes keep their connections and sessions, and so does a route a reload rebuilds that asks the same of the same broker (same topic, group and QoS: only its steps, targets, `deadletter`, webhook `concurrency` or `orderBy` changed): it takes the connection and subscription over, with no reconnect, nothing missed at QoS 0 and no retained message sent again (docs/scaling.md, 'Hot reload with several instances'); the session of a route a reload removes (or renames, when it names no `group`) is ended on the server, and a route removed for good (no route of the new config reads its topic and group) first unsubscribes and delivers what its session already held, so in a shared group nothing published meanwhile is lost (docs/scaling.md). A consumed payload goes on to a broker or webhook byte for byte wherever no step changed the value: binary payloads, and JSON as its publisher spelled it. A consumed message's Message Expiry Interval goes on to MQTT targets as what is left of it as the copy is sent (MQTT 5 §3.3.2.3.3, as a server passing a message on does; at least 1 s, even for one whose interval ran out while a target retried), so the copy expires when the original would have, in the target server's queues too (docs/scaling.md, 'MQTT message expiry, sessions and what a server takes'); not as a header, not to other kinds of targets, and not on a dead-letter copy, which is kept to be looked at. The other MQTT 5 PUBLISH properties are not carried, either way: a consumed message's Correlation Data, Response Topic and Payload Format Indicator are not among its headers (`$headers`) nor sent on to any target, and a publish of another source (HTTP, WebSocket, Kafka, ...) sets none of them, nor an expiry; carry such values as user properties. Repeated user properties of one name are one header, the last value (docs/scaling.md).",
    example:
      'brokers:\n  devices:\n    kind: mqtt\n    url: mqtt://mosquitto:1883\n    clientId: eventgate-${HOSTNAME:-local}   # one per instance; containers set HOSTNAME, shells do not export it\n    username: gateway\n    password: "${MQTT_PASSWORD}"\n    qos: 1\n    qosByTopic: { "telemetry/#": 0 }\n    ackTimeoutMs: 5000\nroutes:\n  - name: temperatures\n    from: { broker: devices, topic: "sensors/+/temperature" }\n    through:\n      - transform: \'{"sensor": $split($topic, "/")[1], "celsius": value}\'\n    to: { broker: kafka, topic: temperatures }',
  },
  compile: compileMqtt,
  topicProblem: (topic, use) => (use === 'publish' ? publishTopicProblem(topic) : withForeignWildcardHint(subscribeTopicProblem(topic), topic, MQTT_WILDCARDS, 'MQTT')),
  // A group is the share name of a shared subscription, unless the broker subscribes plainly.
  groupProblem: (group, topic, o) => (o.sharedSubscriptions === false || !sharable(topic) ? undefined : shareNameProblem(group)),
  takesQos: true,
  // A filter's messages come with their own topics (`$topic`), the ones it matches.
  topicsRead: (filter) => ({ matches: (topic) => topicMatches(filter, topic), literal: !/[+#]/.test(filter), what: `a topic matching ${filter}` }),
  readWarning: (from) => foreignWildcardHint(from, MQTT_WILDCARDS, 'MQTT', 'topic'),
  keyless: 'a `key` would be dropped (carry it in a header instead: `headers: {set: {key: ...}}`, an MQTT 5 user property)',
  // As mqtt/subscription.ts reads a PUBLISH: user properties, and a test's `content-type` as the Content Type property.
  consumedHeaders: (given) => fromMqttProperties({ ...given }, given['content-type']),
  headerless: (o) => (o.protocolVersion === 4 ? 'MQTT 3.1.1 (protocolVersion: 4) has no properties: no user properties, no Content Type' : undefined),
  canReconfigure: (before, after) => onlyInPlaceChanged(before, after, IN_PLACE),
  inPlaceOptions: IN_PLACE,
  // Its subscriptions never read a route's dead-letter closure, window or order keys (one message
  // at a time): a route that only changed those is handed over, not subscribed again (no gap).
  handOverTakes: ['inFlight', 'ordered', 'deadletter'],
  create: (name, settings, env) => new (runtime().MqttBroker)(name, settings, env),
});

const runtime = whenUsed<{ MqttBroker: typeof MqttBroker }>(import.meta.url, './mqtt/broker.js');
