/** The gateway configs the scenarios run, and the message they send. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The README's chain: a JSON Schema check, a filter and a reshaping transform. */
export const LIGHT_SCHEMA = {
  type: 'object',
  required: ['id', 'lumens', 'sentAt'],
  properties: {
    id: { type: 'integer', minimum: 0 },
    lumens: { type: 'number', minimum: 0 },
    sentAt: { type: 'string', format: 'date-time' },
  },
};

export const FILTER = 'lumens > 0';

/** `revision` makes each reload a real change of the route. */
export function transform(revision = 0): string {
  return `{ "streetlightId": id, "lumens": lumens, "sentAt": sentAt, "bright": lumens >= 500${revision ? `, "revision": ${revision}` : ''} }`;
}

export const LIGHT_BODY = JSON.stringify({ id: 7, lumens: 640, sentAt: '2026-11-23T10:00:00Z' });

export function httpMemoryConfig(revision = 0): string {
  return `version: 1
brokers:
  local: { kind: memory, retain: 1000 }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
chains:
  light:
    - validate:
        schema: ${JSON.stringify(LIGHT_SCHEMA)}
    - filter: ${JSON.stringify(FILTER)}
    - transform: ${JSON.stringify(transform(revision))}
routes:
  - name: light-in
    from: { listener: api, path: /light }
    through: light
    to: { broker: local, topic: light-measured }
`;
}

/** Frames published on /publish reach every client on /fanout through a memory topic. */
export const FANOUT_CONFIG = `version: 1
brokers:
  local: { kind: memory, retain: 1000 }
listeners:
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: publish
    from: { listener: push, path: /publish }
    to: { broker: local, topic: ticks }
  - name: fanout
    from: { broker: local, topic: ticks }
    to: { listener: push, path: /fanout }
`;

/** POST /light → a Kafka topic, acks all; no chain, so it does what the hand-written baseline does. */
export function httpKafkaConfig(bootstrap: string, topic: string): string {
  return `version: 1
brokers:
  kafka:
    kind: kafka
    brokers: ${JSON.stringify(bootstrap)}
    clientId: eventgate-bench
    producer: { acks: all }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
routes:
  - name: to-kafka
    from: { listener: api, path: /light }
    to: { broker: kafka, topic: ${topic} }
`;
}

/** Records on a Kafka topic → every websocket client on /stream. */
export function kafkaWsConfig(bootstrap: string, topic: string, consumerYaml: string): string {
  return `version: 1
brokers:
  kafka:
    kind: kafka
    brokers: ${JSON.stringify(bootstrap)}
    clientId: eventgate-bench
    consumer: ${consumerYaml}
listeners:
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: stream
    from: { broker: kafka, topic: ${topic} }
    to: { listener: push, path: /stream }
`;
}

/** POST /publish → memory topic → a Server-Sent Events stream on the same http listener. */
export const SSE_FANOUT_CONFIG = `version: 1
brokers:
  local: { kind: memory, retain: 1000 }
listeners:
  api:
    kind: http
    port: 0
    host: 127.0.0.1
    # No heartbeats during a run: the driver counts blank-line-terminated blocks as events.
    events: { heartbeatMs: 3600000 }
routes:
  - name: publish
    from: { listener: api, path: /publish }
    to: { broker: local, topic: ticks }
  - name: stream
    from: { broker: local, topic: ticks }
    to: { listener: api, path: /fanout }
`;

/** POST /in → memory topic → a webhook target posting to `sinkUrl` (one delivery at a time: a memory consumer group takes one message at a time). */
export function webhookConfig(sinkUrl: string, concurrency: number): string {
  return `version: 1
brokers:
  local: { kind: memory, retain: 1000 }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: local, topic: jobs }
  - name: deliver
    from: { broker: local, topic: jobs }
    to: { http: { url: ${JSON.stringify(sinkUrl)}, concurrency: ${concurrency} } }
`;
}

/** A kafka listener in front of the cluster at `bootstrap`; route light-in checks every record of `validated` against LIGHT_SCHEMA. */
export function kafkaProxyConfig(bootstrap: string, validated: string): string {
  return `version: 1
brokers:
  cluster: { kind: kafka, brokers: "${bootstrap}" }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0 }
routes:
  - name: light-in
    from: { listener: kafka-in, topic: ${validated} }
    through:
      - validate: { schema: ${JSON.stringify(LIGHT_SCHEMA)}, onInvalid: reject }
`;
}

/** A temp file of `count` LIGHT_SCHEMA messages, one JSON line each (kcat's input for the kafka-proxy scenarios). */
export function lightRecordsFile(count: number): string {
  const file = join(mkdtempSync(join(tmpdir(), 'eventgate-bench-records-')), 'records.jsonl');
  const lines: string[] = [];
  for (let i = 0; i < count; i++) lines.push(JSON.stringify({ id: i, lumens: 640, sentAt: '2026-11-23T10:00:00Z' }));
  writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}
