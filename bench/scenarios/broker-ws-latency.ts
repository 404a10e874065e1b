import { brokerPublisher, type BrokerKind } from '../load/broker-publishers.js';
import { closeSubscribers, fixedRate, latencyFigures, subscribeFrames } from '../load/kafka-ws.js';
import { cpuMs, startBaseline, startGateway } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';
import { percentile } from '../stats.js';
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
        const sentAt = new Map<number, number>();
        let measuring = false;
        const gateway = await subscribeFrames(gw.url('push', '/stream', 'ws'), CLIENTS, sentAt, () => measuring);
        const baseline = await subscribeFrames(`ws://127.0.0.1:${diy.port}/stream`, CLIENTS, sentAt, () => measuring);
        const producer = fixedRate(await brokerPublisher(b.kind, server.url, b.topic), sentAt);
        try {
          // Both subscriptions must be in place before the clock starts: probe until a message gets through each.
          measuring = true;
          await producer.probe([gateway.side, baseline.side], () => gateway.side.received > 0 && baseline.side.received > 0, 30000);
          measuring = false;
          await producer.run(RATE, warmupSeconds(duration));
          await new Promise((r) => setTimeout(r, 500));
          for (const s of [gateway.side, baseline.side]) {
            s.latencies = [];
            s.received = 0;
          }
          measuring = true;
          const cpu0 = { gateway: cpuMs(gw.process.pid!), baseline: cpuMs(diy.pid), load: process.cpuUsage() };
          const t0 = performance.now();
          const produced = await producer.run(RATE, duration);
          const elapsed = performance.now() - t0;
          const own = process.cpuUsage(cpu0.load);
          // Share of a core each process used while messages flowed: a saturated load generator would inflate both sides' latency.
          const cores = { gateway: (cpuMs(gw.process.pid!) - cpu0.gateway) / elapsed, baseline: (cpuMs(diy.pid) - cpu0.baseline) / elapsed, load_generator: (own.user + own.system) / 1000 / elapsed };
          // Let the last messages arrive (bounded: a lost message never does).
          const until = performance.now() + 5000;
          while ((gateway.side.received < produced || baseline.side.received < produced) && performance.now() < until) await new Promise((r) => setTimeout(r, 50));
          measuring = false;
          const g = latencyFigures(gateway.side, produced);
          const d = latencyFigures(baseline.side, produced);
          return judge({
            metric: 'p99 ms',
            value: g.p99_ms,
            baseline: { name: 'diy-broker-ws', value: d.p99_ms, ...d },
            ratio: g.p99_ms / d.p99_ms,
            ...g,
            errors: produced - g.received,
            rate_per_s: RATE,
            // How long the server took to acknowledge the publishes: the part of the latency neither side controls.
            publish_ack_p99_ms: percentile(
              [...producer.acks].sort((x, y) => x - y),
              0.99,
            ),
            cores,
            clients: CLIENTS,
            target: { field: 'ratio', op: '<=', limit: 1.2 },
          });
        } finally {
          await producer.stop();
          closeSubscribers(gateway);
          closeSubscribers(baseline);
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
