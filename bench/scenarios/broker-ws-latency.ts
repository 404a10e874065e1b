import { brokerPublisher, type BrokerKind } from '../load/broker-publishers.js';
import { fixedRate, latencyRig } from '../load/kafka-ws.js';
import { startBaseline, startGateway } from '../processes.js';
import { judge, type Scenario } from '../scenario.js';
import { startMosquitto, startNats, startRabbit, type MessageServer } from '../../test/helpers/servers.js';

const RATE = 2000;
const CLIENTS = 10;

interface BrokerWs {
  kind: BrokerKind;
  server: () => Promise<MessageServer>;
  /** The broker's lines in the gateway config (indented under `brokers:`). */
  brokerYaml: (server: MessageServer) => string;
  topic: string;
}

/**
 * Messages published at a fixed 2,000/s reach websocket clients through a forward route, and
 * through a hand-written subscriber (diy-broker-ws, same client library) that broadcasts to its
 * clients. Both subscribe to the same messages at the same time, so they are measured under the
 * same conditions, as in kafka-ws-latency; the target is the issue's: p99 within 1.2× the baseline's.
 */
function brokerWsLatency(b: BrokerWs): Scenario {
  return {
    name: `${b.kind}-ws-latency`,
    describe: `messages published to ${b.kind} at ${RATE}/s, end-to-end p99 to ${CLIENTS} websocket clients vs diy-broker-ws`,
    async run({ duration }) {
      const server = await b.server();
      try {
        const diy = await startBaseline('diy-broker-ws', { KIND: b.kind, URL: server.url, TOPIC: b.topic });
        const gw = await startGateway(`version: 1
brokers:
  source:
${b.brokerYaml(server)}
listeners:
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: stream
    from: { broker: source, topic: ${b.topic} }
    to: { listener: push, path: /stream }
`);
        const rig = await latencyRig({ gateway: gw.url('push', '/stream', 'ws'), baseline: `ws://127.0.0.1:${diy.port}/stream` }, CLIENTS);
        const producer = fixedRate(await brokerPublisher(b.kind, server.url, b.topic), rig.sentAt);
        try {
          const m = await rig.measure(producer, { gateway: gw.process.pid!, baseline: diy.pid }, RATE, duration);
          const produced = m.produced;
          const g = m.gateway;
          const d = m.baseline;
          return judge({
            metric: 'p99 ms',
            value: g.p99_ms,
            baseline: { name: 'diy-broker-ws', value: d.p99_ms, ...d },
            ratio: g.p99_ms / d.p99_ms,
            ...g,
            errors: produced - g.received,
            rate_per_s: RATE,
            publish_ack_p99_ms: m.ackP99,
            warmup_catch_up_ms: m.warmupCatchUpMs,
            cores: m.cores,
            clients: CLIENTS,
            target: { field: 'ratio', op: '<=', limit: 1.2 },
          });
        } finally {
          await producer.stop();
          rig.close();
          await Promise.all([gw.stop(), diy.stop()]);
        }
      } finally {
        await server.stop();
      }
    },
  };
}

export const mqttWsLatency = brokerWsLatency({
  kind: 'mqtt',
  server: startMosquitto,
  brokerYaml: (s) => `    kind: mqtt\n    url: ${s.url}\n    clientId: bench-${process.pid}\n    qos: 1`,
  topic: 'bench/stream',
});

export const amqpWsLatency = brokerWsLatency({
  kind: 'amqp',
  server: startRabbit,
  brokerYaml: (s) => `    kind: amqp\n    url: ${s.url}`,
  topic: 'bench.stream',
});

/** Core NATS subjects on both sides (no stream): the forward route subscribes per instance, as the baseline does. */
export const natsWsLatency = brokerWsLatency({
  kind: 'nats',
  server: startNats,
  brokerYaml: (s) => `    kind: nats\n    servers: ${s.url}`,
  topic: 'bench.stream',
});
