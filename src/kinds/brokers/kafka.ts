import type { ConnectionOptions } from 'node:tls';
import type { SASLOptions } from 'kafkajs';
import { CODECS, DEFAULT_MAX_DECOMPRESSED_BYTES } from '../../codecs/compression.js';
import type { BrokerCompileContext, StartFrom } from '../contracts.js';
import { defineBroker, kindOptions, oneOf, oneOfStrings, Type, type Static } from '../define.js';
import type { KafkaBroker } from './kafka/broker.js';
import { shownServerUrl } from './server-url.js';
import { clientTlsOptions, compileTls } from './tls.js';
import { whenUsed } from '../when-used.js';
import { kafkaTopicProblem } from './kafka/topics.js';
import { hostAndPort, zoneIdProblem } from './kafka/address.js';
import { onlyInPlaceChanged } from './in-place.js';

const ms = (def: number, min: number, description: string) => Type.Optional(Type.Integer({ minimum: min, default: def, description }));

const options = kindOptions('kafka', {
  brokers: oneOf([Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }), Type.String({ minLength: 1 })], {
    description:
      'Bootstrap servers as `host:port` (`[::1]:9092` for an IPv6 address, `[fe80::1%eth0]:9092` for a link-local one with the interface it is reached through: a zone id on another address is a config error, the kernel would ignore it; no scheme, no `user@`: credentials go in `sasl`): a list, or one string; a comma-separated string is split, so `brokers: ${KAFKA_BROKERS}` takes a list from the environment (write it unbracketed or quoted: in YAML `[${X}]` is a flow mapping inside a list).',
  }),
  clientId: Type.Optional(Type.String({ minLength: 1, default: 'eventgate', description: 'Client id the cluster sees.' })),
  ssl: Type.Optional(
    oneOf([Type.Boolean(), clientTlsOptions('the broker host')], {
      description:
        'TLS: `true` for the system CAs, or `{ca, cert, key, passphrase, servername, rejectUnauthorized}` with PEM files relative to this config (watched: a new certificate reconnects the broker).',
    }),
  ),
  sasl: Type.Optional(
    Type.Object(
      {
        mechanism: oneOfStrings(['plain', 'scram-sha-256', 'scram-sha-512'], { description: 'SASL mechanism.' }),
        username: Type.String({ minLength: 1, description: 'SASL user name.' }),
        password: Type.String({ description: 'SASL password (write it as ${VAR} to keep it out of the file).' }),
      },
      { additionalProperties: false, description: '`{mechanism: plain | scram-sha-256 | scram-sha-512, username, password}`.' },
    ),
  ),
  connectionTimeoutMs: ms(3000, 1, 'Time to open a connection to a broker.'),
  healthCheckIntervalMs: ms(
    2000,
    50,
    'How often the cluster is asked for its metadata to tell /readyz whether it is reachable (a cluster that answers is, even when one of its topics reports an error, such as a partition whose leader is offline; and one whose broker the request went to, or the probe reconnected through, is down is asked through all its brokers at once: docs/scaling.md, Readiness).',
  ),
  producer: Type.Optional(
    Type.Object(
      {
        acks: Type.Optional(
          oneOfStrings(['all', 'leader', 'none'], {
            default: 'all',
            description: "Acknowledgement a publish waits for: `all`, `leader` or `none` (then a delivery's offset is `-1`); Kafka's own `acks=-1`, `1` and `0`.",
            // Kafka clients' numbers, said as these names when written.
            'x-aliases': { '-1': 'all', '1': 'leader', '0': 'none' },
          }),
        ),
        lingerMs: ms(
          0,
          0,
          'How long a publish waits for others to share its produce request. 0: none added; a produce request leaves as soon as the one in flight is answered, carrying what arrived meanwhile, so batches grow with the load. A reload may change it in place (with `maxBatchRecords` and `maxBatchBytes`): a batch lingering then leaves by the new values, this long after its oldest record or at once when full.',
        ),
        maxBatchRecords: ms(1000, 1, 'Most records in one produce request.'),
        maxBatchBytes: ms(
          1000000,
          1024,
          "Most bytes of records in one produce request, counted as a record batch holds them before compression: keys, values, headers (a repeated name once per value) and each record's framing (their lengths, its attributes and offset and time deltas, up to about 20 bytes a record, which small records are mostly made of). A cluster refuses a partition's record batch over its `message.max.bytes` (1 MiB by default) with every record in it, so records gathered under load are sent in several requests rather than one the cluster refuses; a record larger than this goes alone. Raise it with the cluster's limit, lower it for topics with a smaller `max.message.bytes`.",
        ),
        compression: Type.Optional(
          oneOfStrings(CODECS, {
            default: 'none',
            description:
              'Codec of produced record batches: `none`, `gzip`, `snappy`, `lz4` or `zstd`; consume routes read records in any of them (and both snappy framings: raw, as librdkafka writes, and xerial, as Java clients write).',
          }),
        ),
        idempotent: Type.Optional(
          Type.Boolean({
            default: false,
            description:
              "Idempotent producer: exactly-once per partition on retries; needs `acks: all`. Without it, a record the leader wrote before it answered NOT_ENOUGH_REPLICAS_AFTER_APPEND (or REQUEST_TIMED_OUT) is written again by the retry, as with Kafka's own producer (docs/scaling.md).",
          }),
        ),
        ackTimeoutMs: ms(
          5000,
          1,
          'A publish not acknowledged by then fails: HTTP 503, WebSocket error frame, retry for consume routes, which first wait for the late answer (the Kafka client request timeout is twice this, at least 1 s more; taken: not written again). A produce request all of whose publishes failed so is not sent again (an idempotent producer sends it again; the cluster drops the copy); one with publishes still waiting is, the failed ones with it. A reload may change it in place: the next publish has the new deadline, and a produce request waits for the longer of the new request timeout and the one the client was made with, so none is given up and sent again before the deadlines of its records.',
        ),
      },
      {
        additionalProperties: false,
        description:
          "How messages are published. A record with a key goes to the partition its key's hash names (murmur2, as Kafka's Java client does); records without one go to one partition per produce request, the next one each request (sticky partitioning, Kafka's own default since 2.4).",
      },
    ),
  ),
  consumer: Type.Optional(
    Type.Object(
      {
        startFrom: Type.Optional(
          oneOfStrings(['earliest', 'latest'], {
            description:
              "Where partitions without a committed offset start, for every route reading from this broker (a route's `from.startFrom` wins). Unset: `earliest` for routes with a broker or webhook target (never skip a record), `latest` for routes whose targets are all forwards, websocket or event stream (docs/scaling.md).",
          }),
        ),
        fromBeginning: Type.Optional(Type.Boolean({ description: 'Older spelling of `startFrom`: true is `earliest`, false `latest`.' })),
        sessionTimeoutMs: ms(30000, 1, 'A member silent this long is dropped from its group.'),
        heartbeatIntervalMs: ms(3000, 1, 'Heartbeat period; below sessionTimeoutMs (a third is usual).'),
        rebalanceTimeoutMs: ms(60000, 1, 'How long a rebalance waits for members to rejoin.'),
        maxWaitMs: ms(1000, 0, 'Longest a fetch waits for new records; also bounds how long a stop waits for the fetch in flight.'),
        partitionsConsumedConcurrently: ms(1, 1, 'Partitions handled at the same time by one member (records of one partition are always in order).'),
        commitIntervalMs: ms(
          1000,
          0,
          'How often the offsets of handled records are committed while a fetched batch is worked through (also at its end and on a graceful stop); 0: after every record. After a crash, what was handled since the last commit is delivered again.',
        ),
        maxBatchBytes: Type.Optional(
          Type.Integer({
            minimum: 1024,
            default: DEFAULT_MAX_DECOMPRESSED_BYTES,
            description:
              "Most bytes one compressed record batch may decompress to (default 64 MiB). A batch claiming more (a decompression bomb: a few KB of zstd or gzip can stand for gigabytes) is not decompressed past it; it counts as undecodable: it goes to the route's `deadletter` as raw bytes with `EG_UNDECODABLE_BATCH`, or, without one, its partition stops. The batches of one fetch together are held to it too: once they reach it, the rest of that fetch is left for the next fetches (nothing skipped), so many small batches cannot add up either. A batch is at most the cluster's `message.max.bytes` (1 MiB by default) compressed; raise this only for records that shrink more than 64 times.",
          }),
        ),
        checkCrcs: Type.Optional(
          Type.Boolean({
            default: true,
            description:
              "Check each consumed record batch's CRC-32C, as Kafka's own consumer does (`check.crcs`). A batch whose bytes do not match it (damaged on disk or on the way) counts as undecodable: it goes to the route's `deadletter` as raw bytes with `EG_UNDECODABLE_BATCH` naming the checksum stored and the one computed, or, without one, its partition stops. `false` delivers such a batch's records as they read (the batch's other checks stay), as earlier releases did. The check reads each batch once more, at about 2 GB/s (some 100 ns for a record of 220 bytes, 5 to 8 % of what decoding it costs).",
          }),
        ),
      },
      { additionalProperties: false, description: 'Defaults for the consumer groups of routes reading from this broker.' },
    ),
  ),
});

/**
 * Keys the producer reads per produce request, and the health probe's period
 * (KafkaBroker.reconfigure applies them): a reload that changes only these keeps the producer,
 * the consumer group members and every connection. The rest build the kafkajs clients (brokers,
 * TLS, SASL, connection timeout), decide the producer's kind (`idempotent`) or are the group
 * members' own (`consumer`).
 */
const IN_PLACE = ['producer.ackTimeoutMs', 'producer.acks', 'producer.lingerMs', 'producer.maxBatchRecords', 'producer.maxBatchBytes', 'producer.compression', 'healthCheckIntervalMs'];

/** The options as written in gateway.yaml (spec §2). */
type KafkaOptions = Static<typeof options>;

/** The options compiled: broker lists split, files read, defaults filled in. What the runtime gets. */
export interface KafkaSettings {
  brokers: string[];
  clientId: string;
  ssl: ConnectionOptions | boolean;
  sasl: SASLOptions | undefined;
  connectionTimeoutMs: number;
  healthCheckIntervalMs: number;
  producer: Required<NonNullable<KafkaOptions['producer']>>;
  /** startFrom undefined: each route's own default (earliest for durable routes, latest for forwards). */
  consumer: Required<Omit<NonNullable<KafkaOptions['consumer']>, 'startFrom' | 'fromBeginning'>> & { startFrom: StartFrom | undefined };
}

/** What a kafka broker's producer and consumer keys are when left out (exported for tests that build a broker's parts). */
export const PRODUCER_DEFAULTS: KafkaSettings['producer'] = { acks: 'all', lingerMs: 0, maxBatchRecords: 1000, maxBatchBytes: 1000000, compression: 'none', idempotent: false, ackTimeoutMs: 5000 };
export const CONSUMER_DEFAULTS: Omit<KafkaSettings['consumer'], 'startFrom'> = {
  sessionTimeoutMs: 30000,
  heartbeatIntervalMs: 3000,
  rebalanceTimeoutMs: 60000,
  maxWaitMs: 1000,
  partitionsConsumedConcurrently: 1,
  commitIntervalMs: 1000,
  maxBatchBytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
  checkCrcs: true,
};
/** host:port, an IPv6 address in brackets with its zone id if any (`[fe80::1%eth0]:9092`, checked by zoneIdProblem). */
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+(?:%[^\]\s]*)?\]|[^\s:/[\]%]+):(\d{1,5})$/;

function compileKafka(o: KafkaOptions, ctx: BrokerCompileContext): KafkaSettings | undefined {
  let ok = true;
  // `brokers: ${KAFKA_BROKERS}` with KAFKA_BROKERS=a:9092,b:9092 is one string holding a list: split it.
  const entries = typeof o.brokers === 'string' ? [o.brokers] : o.brokers;
  const brokers: string[] = [];
  entries.forEach((entry, i) => {
    const at = typeof o.brokers === 'string' ? ['brokers'] : ['brokers', i];
    const parts = entry
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    if (parts.length === 0) {
      ctx.report(at, 'EG_CONFIG_SCHEMA', `no broker address here: expected host:port, or a comma-separated list of them`);
      ok = false;
    }
    for (const p of parts) {
      const m = HOST_PORT.exec(p);
      // kafkajs would dial `user@host` as a host name; the error quotes the entry with its password masked.
      if (p.includes('@')) {
        ctx.report(
          at,
          'EG_CONFIG_SCHEMA',
          `'${shownServerUrl(p)}' is not a broker address: it holds credentials before an '@', which kafka does not read there: give them as the broker's \`sasl\` (username, password), and the address as host:port`,
        );
        ok = false;
      } else if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
        // Say which part is wrong: a URL's scheme and an out-of-range port are the usual slips.
        const why = /^[a-z][a-z0-9+.-]*:\/\//i.test(p)
          ? `expected host:port without a scheme ('${p.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '')}')`
          : m
            ? `port ${m[2]} is not between 1 and 65535`
            : /^[0-9A-Fa-f]*:[0-9A-Fa-f:.]*:\d{1,5}$/.test(p) && (p.includes('::') || p.split(':').length > 3)
              ? `an IPv6 address is written in brackets before its port ('[${p.slice(0, p.lastIndexOf(':'))}]${p.slice(p.lastIndexOf(':'))}')`
              : 'expected host:port';
        ctx.report(at, 'EG_CONFIG_SCHEMA', `'${p}' is not a broker address: ${why}`);
        ok = false;
      } else {
        const zone = zoneIdProblem(hostAndPort(p).host);
        if (zone) ctx.report(at, 'EG_CONFIG_SCHEMA', `'${p}' is not a broker address: ${zone}`);
        else brokers.push(p);
        ok &&= !zone;
      }
    }
  });
  let ssl: KafkaSettings['ssl'] = o.ssl ?? false;
  if (typeof o.ssl === 'object') {
    const tls = compileTls(o.ssl, ctx, 'ssl');
    if (tls === false) ok = false;
    else if (tls) ssl = tls;
  }
  const producer = { ...PRODUCER_DEFAULTS, ...o.producer };
  const { fromBeginning, startFrom, ...timings } = o.consumer ?? {};
  const consumer: KafkaSettings['consumer'] = { ...CONSUMER_DEFAULTS, ...timings, startFrom: startFrom ?? (fromBeginning === undefined ? undefined : fromBeginning ? 'earliest' : 'latest') };
  if (producer.idempotent && producer.acks !== 'all') {
    ctx.report(['producer', 'idempotent'], 'EG_CONFIG_SCHEMA', `an idempotent producer needs acks: all (acks is '${producer.acks}')`);
    ok = false;
  }
  if (consumer.heartbeatIntervalMs >= consumer.sessionTimeoutMs) {
    ctx.report(
      ['consumer', 'heartbeatIntervalMs'],
      'EG_CONFIG_SCHEMA',
      `heartbeatIntervalMs (${consumer.heartbeatIntervalMs}) must be lower than sessionTimeoutMs (${consumer.sessionTimeoutMs}); a third of it is usual`,
    );
    ok = false;
  }
  if (!ok) return undefined;
  return {
    brokers,
    clientId: o.clientId ?? 'eventgate',
    ssl,
    sasl: o.sasl as SASLOptions | undefined,
    connectionTimeoutMs: o.connectionTimeoutMs ?? 3000,
    healthCheckIntervalMs: o.healthCheckIntervalMs ?? 2000,
    producer,
    consumer,
  };
}

export const kafkaBroker = defineBroker<typeof options, KafkaSettings>({
  options,
  doc: {
    summary:
      "A Kafka cluster, through kafkajs. Routes publish to its topics (`to: {broker, topic, key}`, the topic literal or `{expression}`) and consume them (`from: {broker, topic, group}`). Concurrent publishes share produce requests (`lingerMs`) and keep their order per key; a publish not acknowledged within `ackTimeoutMs` fails (HTTP 503), never a hang and never a 200 for a record Kafka did not take. Each produce request goes to one broker and answers only its records: one broker failing fails only the records it leads, and a publish to a topic that a cluster without auto-create does not have is answered 503 at once, saying so (docs/scaling.md, \"Which records share an outcome\"), and a consume route reading one is not ready (`topic missing, looking again in <n> ms` in /readyz, the topic named in /admin/status and the log) until it exists, then reads it (from where its `startFrom` says), looking again after 0.5 s, then 1, 2, 4 and every 5 s; a topic deleted under a running consume route is waited for the same way (its member leaves the group rather than rejoining at each fetch), and read again once it exists, from the group's committed offsets or `startFrom`. A record the cluster refuses for itself is answered as the client's problem, not retried: larger than the broker's `message.max.bytes` or the topic's `max.message.bytes` is a 413 `EG_PAYLOAD_TOO_LARGE`, invalid for the topic (a compacted topic's record without a key) a 400 `EG_INVALID_MESSAGE`, and a consume route dead-letters it; when the cluster refuses a produce request that gathered several records (of one partition or of several), each is sent again alone, so one record does not fail the others. Consume routes commit an offset only after every target accepted the record (at-least-once), in order per partition; a route with broker targets starts partitions that have no committed offset at the oldest record, so nothing produced before its first start or while it was down is skipped. A record whose chain fails, a record batch that cannot be decoded (its bytes not matching its CRC-32C unless `consumer.checkCrcs` is false, corrupt, decompressing past `consumer.maxBatchBytes`, or records not matching its header's record count or last offset delta), or a record that cannot be read (a header count below -1 or more than its bytes can hold: `EG_UNDECODABLE_RECORD`, the record alone) goes to the route's `deadletter` and the partition moves on. A Kafka → Kafka copy writes the record's own bytes (value, key, headers) wherever no step changed them: binary values and JSON as its producer spelled it stay byte for byte (docs/scaling.md); every copy, changed or not and through memory topics too, keeps the record's timestamp (its producer's CreateTime, 0 included; a `LogAppendTime` topic's record the time its cluster appended it; a record with none, -1, gets the time of the copy), while a message published over HTTP or WebSocket gets the time the gateway received it, and always has a value: a JSON `null` body or frame is written as the four bytes `null`, not as a tombstone (deleting a key of a compacted topic takes a Kafka producer, or a consume route copying a tombstone). A consumer that crashes is started again with backoff, and `/readyz` says why meanwhile. `/readyz` reports the broker while it is unreachable, and the gateway reconnects by itself. A topic the config names as it is (a route's `from.topic`, `to` or `deadletter`, a validate step's `deadletter`) must be a Kafka topic name, 1 to 249 characters among `A-Z a-z 0-9 . _ -` and not `.` or `..`: another (`orders created`, `orders/created`) is a config error at its line, since a cluster refuses it on every request (`INVALID_TOPIC_EXCEPTION`); a route reads one topic by its name, with no pattern subscriptions (`orders.*` or a kafkajs-style `/orders-.*/` is such an error, saying so: write a route per topic); a topic computed by an expression is checked per message (500 `EG_EXPRESSION_FAILED`, as any failed expression; 400 `EG_INVALID_MESSAGE` when it holds a control character, which came from the message). A changed kafka broker is replaced on reload, unless every key changed is one read per produce request (`producer.ackTimeoutMs`, `acks`, `lingerMs`, `maxBatchRecords`, `maxBatchBytes`, `compression`) or `healthCheckIntervalMs`: those apply in place from the next publish, the producer, its connections and every consume route's group member kept (no rebalance; docs/scaling.md, 'What else a reload or a stop does'). Routes that did not change keep their consumers and group membership, and so does a route a reload rebuilds that reads the same `from` (only its steps, targets, `deadletter`, webhook `concurrency` or `orderBy` changed): it takes the member over, no rebalance, and a partition halted at an undecodable batch or record is resumed and dead-letters it once the route has a `deadletter` (docs/scaling.md, 'Hot reload with several instances').",
    example:
      'brokers:\n  kafka:\n    kind: kafka\n    brokers: ${KAFKA_BROKERS}          # "a:9092,b:9092" is split at the commas\n    clientId: eventgate\n    ssl: { ca: certs/ca.pem }\n    sasl: { mechanism: scram-sha-512, username: gateway, password: "${KAFKA_PASSWORD}" }\n    producer: { acks: all, compression: gzip, ackTimeoutMs: 5000 }\n    consumer: { sessionTimeoutMs: 30000 }',
  },
  compile: compileKafka,
  topicProblem: kafkaTopicProblem,
  // As the subscription reads it: the route's, the broker's, the route's default (forwards: latest), earliest.
  newGroupStart: (_topic, asked, o) =>
    asked.startFrom ?? o.consumer?.startFrom ?? (o.consumer?.fromBeginning === undefined ? undefined : o.consumer.fromBeginning ? 'earliest' : 'latest') ?? asked.defaultStartFrom ?? 'earliest',
  // The consume loop reads the window (inFlight, orderKeys) per batch and at each hand-over, and
  // the dead-letter closure per undecodable batch; a handed-over deadletter resumes halted partitions.
  handOverTakes: ['inFlight', 'ordered', 'deadletter'],
  canReconfigure: (before, after) => onlyInPlaceChanged(before, after, IN_PLACE),
  inPlaceOptions: IN_PLACE,
  create: (name, settings, env) => new (kafkaRuntime().KafkaBroker)(name, settings, env),
});

/** The kafka runtime, and kafkajs with it. */
const kafkaRuntime = whenUsed<{ KafkaBroker: typeof KafkaBroker }>(import.meta.url, './kafka/broker.js');
