/**
 * The `kafka` listener kind: a Kafka-protocol proxy in front of a kafka broker of the config
 * (docs/kafka-proxy.md). Its routes name a topic; they govern what clients produce to it.
 */
import type { CompiledStep } from '../contracts.js';
import { defineListener, kindOptions, mapOf, Type, type Static } from '../define.js';
import type { batchCompression } from '../../codecs/record-batch.js';
import type { KafkaProxyListener, KafkaProxySettings } from './kafka/proxy.js';
import { whenUsed } from '../when-used.js';
import { kafkaTopicProblem } from '../brokers/kafka/topics.js';
import { zoneIdProblem } from '../brokers/kafka/address.js';
import { compileTls, tlsServerOption } from './transport.js';

/** Kafka's own default for `socket.request.max.bytes`. */
const DEFAULT_MAX_REQUEST_BYTES = 100 * 1024 * 1024;
/** Each client connection holds one to the cluster too: 1000 clients are 2000 file descriptors. */
const DEFAULT_MAX_CONNECTIONS = 1000;

/** Kafka's default `request.timeout.ms`, which bounds how long a broker takes to answer a request. */
const DEFAULT_ANSWERS_AFTER_CLIENT_LEFT_MS = 30_000;
/** Kafka's default `connections.max.idle.ms`: a broker closes a client connection idle this long. */
const DEFAULT_CONNECTIONS_MAX_IDLE_MS = 600_000;

const options = kindOptions('kafka', {
  upstream: Type.String({ minLength: 1, description: "The broker (of kind kafka) whose cluster the listener fronts; the proxy reaches it with that broker's `brokers` and `ssl`." }),
  host: Type.Optional(Type.String({ minLength: 1, default: '0.0.0.0', description: 'Bind address of the bootstrap port and of every broker port (not empty: leave the key out).' })),
  port: Type.Integer({
    minimum: 0,
    maximum: 65535,
    description:
      'The bootstrap port clients are given. Broker n (counting from 0, in the order the proxy learns of them, not by node id) gets port + 1 + n, or the next port free when that one is held (by another listener or process); with 0, every port is picked free (see /admin/status).',
  }),
  advertisedHost: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        "Host named to clients in metadata responses (default: host, or this machine's hostname when host is 0.0.0.0 or ::). An IPv6 address is written without brackets; a zone id (`fe80::1%eth0`) only on a link-local address or ::1, as in a kafka broker's `brokers`.",
    }),
  ),
  brokerPorts: Type.Optional(
    mapOf(Type.Integer({ minimum: 1, maximum: 65535 }), {
      propertyNames: { pattern: '^[0-9]+$', title: 'a broker node id (digits)' },
      description: 'Local port per upstream broker node id (`"1": 19101`), for ports that must not depend on discovery order.',
    }),
  ),
  tls: tlsServerOption(
    "Serve TLS to Kafka clients (they connect with security.protocol=ssl) on the bootstrap port and every broker port. Files are relative to gateway.yaml and watched: a renewed certificate is used for new connections without a restart. A client must finish its handshake within 10 s (node allows 120 s); one that fails or does not is closed. Independent of the upstream broker's `ssl`, which is for the proxy's own connections to the cluster.",
  ),
  maxRequestBytes: Type.Optional(
    Type.Integer({
      minimum: 1024,
      default: DEFAULT_MAX_REQUEST_BYTES,
      description:
        "Largest request frame a client may send (Kafka's socket.request.max.bytes); a larger one closes that client's connection. Also the most a produce request's compressed records may decompress to, all batches together: a larger one (a decompression bomb) is refused with INVALID_RECORD.",
    }),
  ),
  maxConnections: Type.Optional(
    Type.Integer({
      minimum: 1,
      default: DEFAULT_MAX_CONNECTIONS,
      description:
        'Client connections open at once, bootstrap and broker ports together; further ones are closed as they arrive (logged at most every 10 s, counted in `eventgate_listener_connections_dropped_total`). With `tls`, connections still in their handshake count too, on each port. Each also holds a connection to the cluster, so the process needs two file descriptors per client: keep it below half its limit.',
    }),
  ),
  connectionsMaxIdleMs: Type.Optional(
    Type.Integer({
      minimum: 1,
      default: DEFAULT_CONNECTIONS_MAX_IDLE_MS,
      description:
        "A client connection idle this long (nothing read from or written to it) is closed, with its connection to the cluster, as a Kafka broker closes it after its connections.max.idle.ms (this is its default): Kafka clients reconnect when they next need the broker. A connection with a request unanswered (a Fetch waiting for records, a produce request waiting for the cluster or the route's targets) is not idle. Without it, clients that left without closing would hold their slots of `maxConnections` for ever.",
    }),
  ),
  answersAfterClientLeftMs: Type.Optional(
    Type.Integer({
      minimum: 1,
      default: DEFAULT_ANSWERS_AFTER_CLIENT_LEFT_MS,
      description:
        "How long the proxy keeps a client's connection to the cluster open after that client left, for the cluster's answers to governed produce requests it had sent: their records count as that answer says (delivered, or the cluster's error). The records of a request still unanswered then count as failed (EG_BROKER_UNAVAILABLE: they may or may not have been written). Default: Kafka's default request.timeout.ms.",
    }),
  ),
});
export type KafkaListenerOptions = Static<typeof options>;

/**
 * Which steps a route on a kafka listener can honour. Without `to`, a route's records go on
 * upstream in the client's own batches: a step may change a record (its batch is rebuilt with the
 * same record count, producer id, epoch and base sequence) or refuse the produce request's governed topics; it
 * cannot take a record out of a batch or send it elsewhere. With `to`, records leave the request
 * one by one for the route's targets, so a filter may drop one and a validate step may
 * dead-letter one (the client is still told NONE for them).
 */
function stepProblem(step: CompiledStep, route: { to: boolean }): string | undefined {
  switch (step.kind) {
    case 'validate':
      if (!route.to && (step.needsRouteDeadletter || (step.brokers?.length ?? 0) > 0))
        return "validate with onInvalid: deadletter would take records out of a produce request, which breaks the batch the client signed with its sequence numbers; use onInvalid: reject (the client is told INVALID_RECORD) or tag, or give the route a 'to' (its records then go to its targets one by one)";
      return undefined;
    case 'transform':
    case 'headers':
      return undefined;
    case 'filter':
      if (route.to) return undefined;
      return "a filter step would drop records out of a produce request, which breaks the batch the client signed with its sequence numbers; refuse unwanted records with a validate step (onInvalid: reject) instead, or give the route a 'to' (its records then go to its targets one by one)";
    case 'auth':
      return 'Kafka clients authenticate with SASL, which the proxy passes through to the cluster; an auth step has no HTTP request to check';
    default:
      return `${step.kind} steps are not supported on routes from a kafka listener (supported: validate with onInvalid reject or tag, transform, headers; with 'to' also filter and validate with onInvalid: deadletter)`;
  }
}

export const kafkaListener = defineListener({
  options,
  acceptsPublish: true,
  eventsTold: "a record is a CloudEvent by its own headers (`ce_` attributes, the Kafka binding's binary mode) and goes on as its producer wrote it",
  acceptsForward: false,
  routesBy: 'topic',
  // Broker ports follow `port` (port + 1 + n) and `brokerPorts`: changing either rebinds them all.
  // Turning `tls` on or off changes every socket too; a renewed certificate does not (reconfigure).
  socketOptions: ['port', 'host', 'brokerPorts', 'tls'],
  stepProblem,
  checkPath: (topic) => kafkaTopicProblem(topic, 'consume'),
  compile(o, ctx): KafkaProxySettings | undefined {
    const broker = ctx.broker?.(o.upstream, ['upstream']);
    if (!broker) return undefined;
    if (broker.kind !== 'kafka') {
      ctx.report(['upstream'], 'EG_CONFIG_REF', `broker '${o.upstream}' is a ${broker.kind} broker; a kafka listener fronts a broker of kind kafka`);
      return undefined;
    }
    const upstream = broker.options as { brokers?: unknown; ssl?: KafkaProxySettings['tls'] | boolean };
    // A kafka broker whose own options failed to compile has reported why; nothing to add here.
    if (!Array.isArray(upstream.brokers)) return undefined;
    const clash = Object.entries(o.brokerPorts ?? {}).find(([, p]) => p === o.port);
    if (clash && o.port !== 0) {
      ctx.report(['brokerPorts', clash[0]], 'EG_CONFIG_CONFLICT', `port ${clash[1]} is the listener's bootstrap port`);
      return undefined;
    }
    // A zone id as the kafka broker's `brokers` take one (node binds and connects through it; a client reads the advertised host as it is).
    let zoned = false;
    for (const key of ['host', 'advertisedHost'] as const) {
      const zone = o[key] === undefined ? undefined : zoneIdProblem(o[key]);
      if (zone) ctx.report([key], 'EG_CONFIG_SCHEMA', `'${o[key]}' is not an address the listener can ${key === 'host' ? 'bind' : 'name to clients'}: ${zone}`);
      zoned ||= zone !== undefined;
    }
    const serverTls = o.tls ? compileTls(o.tls, ctx) : undefined;
    if ((o.tls && !serverTls) || zoned) return undefined;
    return {
      upstream: o.upstream,
      serverTls,
      host: o.host ?? '0.0.0.0',
      port: o.port,
      advertisedHost: o.advertisedHost,
      brokerPorts: o.brokerPorts ?? {},
      maxRequestBytes: o.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES,
      maxConnections: o.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      connectionsMaxIdleMs: o.connectionsMaxIdleMs ?? DEFAULT_CONNECTIONS_MAX_IDLE_MS,
      answersAfterClientLeftMs: o.answersAfterClientLeftMs ?? DEFAULT_ANSWERS_AFTER_CLIENT_LEFT_MS,
      bootstrap: upstream.brokers as string[],
      tls: upstream.ssl === true ? {} : upstream.ssl ? upstream.ssl : false,
    };
  },
  doc: {
    summary:
      "A Kafka-protocol proxy: Kafka clients use it as their bootstrap server and reach the `upstream` cluster through it (docs/kafka-proxy.md). Every upstream broker gets a local port of its own, and metadata names those ports, so clients never learn the cluster's addresses. A route `from: {listener, topic}` governs produce requests for its topic: validate with `onInvalid: reject` refuses the request's governed topics with INVALID_RECORD (87), while topics no route names in it still go upstream (a client sends what it has for all the topics a broker leads in one request); `tag`, `transform` and `headers` rewrite records in their batch (same codec, record count and producer id/epoch/sequence). Other topics, consumers, groups, transactions and SASL pass through unchanged. Without `to`, its routes' records go on to the same topic upstream, so they take no `filter`, `deadletter` or `onInvalid: deadletter` (a record cannot leave a produce request). With `to`, the topic's records go to the route's targets instead of upstream (filter and dead-letter allowed; transactional producers refused); the client is answered NONE with offset -1 once every target acknowledged them. No `auth` step (SASL passes through).",
    example:
      'brokers:\n  cluster: { kind: kafka, brokers: ["${KAFKA_BROKERS}"] }\nlisteners:\n  kafka-in:\n    kind: kafka\n    upstream: cluster\n    host: 127.0.0.1\n    port: 19092\n    advertisedHost: 127.0.0.1\nroutes:\n  - name: orders-in\n    from: { listener: kafka-in, topic: orders }\n    through: [ { validate: { message: OrderPlaced, onInvalid: reject } } ]',
  },
  create: (name, settings, env) => new (proxy().KafkaProxyListener)(name, settings, env, codecs().batchCompression),
});

const proxy = whenUsed<{ KafkaProxyListener: typeof KafkaProxyListener }>(import.meta.url, './kafka/proxy.js');
const codecs = whenUsed<{ batchCompression: typeof batchCompression }>(import.meta.url, '../../codecs/record-batch.js');
