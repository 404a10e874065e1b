/**
 * The kafka broker's options, defined once: their type, their schema fragment and their rows in
 * docs/config.md come from this definition (src/kinds/define.ts). The runtime is in kafka.ts.
 */
import type { KindDoc } from '../contracts.js';
import { kindOptions, oneOf, oneOfStrings, Type, type Static } from '../define.js';

const ms = (def: number, min: number, description: string) => Type.Optional(Type.Integer({ minimum: min, default: def, description }));

export const kafkaOptions = kindOptions('kafka', {
  brokers: oneOf([Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }), Type.String({ minLength: 1 })], {
    description:
      'Bootstrap servers as `host:port`: a list, or one string; a comma-separated string is split, so `brokers: ${KAFKA_BROKERS}` takes a list from the environment (write it unbracketed or quoted: in YAML `[${X}]` is a flow mapping inside a list).',
  }),
  clientId: Type.Optional(Type.String({ minLength: 1, default: 'eventgate', description: 'Client id the cluster sees.' })),
  ssl: Type.Optional(
    oneOf(
      [
        Type.Boolean(),
        Type.Object(
          {
            ca: Type.Optional(Type.String({ minLength: 1, description: 'PEM file of the CA(s) to trust.' })),
            cert: Type.Optional(Type.String({ minLength: 1, description: 'PEM file of the client certificate.' })),
            key: Type.Optional(Type.String({ minLength: 1, description: 'PEM file of the client key.' })),
            passphrase: Type.Optional(Type.String()),
            servername: Type.Optional(Type.String({ minLength: 1 })),
            rejectUnauthorized: Type.Optional(Type.Boolean({ default: true })),
          },
          { additionalProperties: false },
        ),
      ],
      {
        description:
          'TLS: `true` for the system CAs, or `{ca, cert, key, passphrase, servername, rejectUnauthorized}` with PEM files relative to this config (watched: a new certificate reconnects the broker).',
      },
    ),
  ),
  sasl: Type.Optional(
    Type.Object(
      {
        mechanism: oneOfStrings(['plain', 'scram-sha-256', 'scram-sha-512']),
        username: Type.String({ minLength: 1 }),
        password: Type.String(),
      },
      { additionalProperties: false, description: '`{mechanism: plain | scram-sha-256 | scram-sha-512, username, password}`.' },
    ),
  ),
  connectionTimeoutMs: ms(3000, 1, 'Time to open a connection to a broker.'),
  healthCheckIntervalMs: ms(2000, 50, 'How often the cluster is asked for its metadata to tell /readyz whether it is reachable.'),
  producer: Type.Optional(
    Type.Object(
      {
        acks: Type.Optional(oneOfStrings(['all', 'leader', 'none'], { default: 'all', description: "Acknowledgement a publish waits for: `all`, `leader` or `none` (then a delivery's offset is `-1`)." })),
        lingerMs: ms(5, 0, 'How long a publish waits for others to share its produce request.'),
        maxBatchRecords: ms(1000, 1, 'Most records in one produce request.'),
        compression: Type.Optional(oneOfStrings(['none', 'gzip', 'snappy'], { default: 'none', description: '`none`, `gzip` or `snappy`.' })),
        idempotent: Type.Optional(Type.Boolean({ default: false, description: 'Idempotent producer: exactly-once per partition on retries; needs `acks: all`.' })),
        ackTimeoutMs: ms(5000, 1, 'A publish not acknowledged by then fails: HTTP 503, WebSocket error frame, retry for consume routes.'),
      },
      { additionalProperties: false },
    ),
  ),
  consumer: Type.Optional(
    Type.Object(
      {
        fromBeginning: Type.Optional(Type.Boolean({ default: false, description: "Where a group with no committed offset starts (a route's `from.fromBeginning` wins); false: new records only." })),
        sessionTimeoutMs: ms(30000, 1, 'A member silent this long is dropped from its group.'),
        heartbeatIntervalMs: ms(3000, 1, 'Heartbeat period; below sessionTimeoutMs (a third is usual).'),
        rebalanceTimeoutMs: ms(60000, 1, 'How long a rebalance waits for members to rejoin.'),
        maxWaitMs: ms(1000, 0, 'Longest a fetch waits for new records; also bounds how long a stop waits for the fetch in flight.'),
        partitionsConsumedConcurrently: ms(1, 1, 'Partitions handled at the same time by one member (records of one partition are always in order).'),
      },
      { additionalProperties: false, description: 'Defaults for the consumer groups of routes reading from this broker.' },
    ),
  ),
});

/** The options as written in gateway.yaml (spec §2). */
export type KafkaOptions = Static<typeof kafkaOptions>;

export const kafkaDoc: KindDoc = {
  summary:
    'A Kafka cluster, through kafkajs. Routes publish to its topics (`to: {broker, topic, key}`, the topic literal or `{expression}`) and consume them (`from: {broker, topic, group}`). Concurrent publishes share produce requests (`lingerMs`) and keep their order per key; a publish not acknowledged within `ackTimeoutMs` fails (HTTP 503), never a hang and never a 200 for a record Kafka did not take. Consume routes commit an offset only after every target accepted the record (at-least-once), in order per partition; a record whose chain fails goes to the route\'s `deadletter` and the partition moves on. `/readyz` reports the broker while it is unreachable, and the gateway reconnects by itself. A changed kafka broker is replaced on reload; routes that did not change keep their consumers and group membership.',
  example:
    'brokers:\n  kafka:\n    kind: kafka\n    brokers: ${KAFKA_BROKERS}          # "a:9092,b:9092" is split at the commas\n    clientId: eventgate\n    ssl: { ca: certs/ca.pem }\n    sasl: { mechanism: scram-sha-512, username: gateway, password: "${KAFKA_PASSWORD}" }\n    producer: { acks: all, lingerMs: 5, compression: gzip, ackTimeoutMs: 5000 }\n    consumer: { fromBeginning: false, sessionTimeoutMs: 30000 }',
};
