import { parse as parseYaml } from 'yaml';
import { kafkaWsConfig } from '../configs.js';
import { closeSubscribers, fixedRateProducer, latencyFigures, subscribeFrames } from '../load/kafka-ws.js';
import { cpuMs, startBaseline, startGateway, startKafka } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';
import { percentile } from '../stats.js';

const RATE = 2000;
const CLIENTS = 10;
const PARTITIONS = 3;
/**
 * Longest a fetch waits for records. A Kafka broker answers a fetch as soon as records arrive;
 * librdkafka's mock cluster answers only when this wait is over, so on the mock it bounds the
 * latency of both sides alike. 5 ms is what a latency-sensitive deployment would set anyway.
 */
const MAX_WAIT_MS = 5;

/**
 * Records produced to Kafka at a fixed 2,000/s reach websocket clients through a forward route,
 * and through a hand-written kafkajs consumer that broadcasts to its clients. Both consume the
 * same records at the same time (separate groups), so they are measured under the same conditions.
 */
export const kafkaWsLatency: Scenario = {
  name: 'kafka-ws-latency',
  describe: `records produced to Kafka at ${RATE}/s, end-to-end p99 to ${CLIENTS} websocket clients vs diy-kafka-ws`,
  async run({ duration }) {
    const kafka = await startKafka({ brokers: 3, requestLog: false });
    try {
      const topic = kafka.topic('bench-stream');
      await kafka.createTopic(topic, PARTITIONS);
      const consumer = { ...(parseYaml(kafka.consumerYaml) as { sessionTimeoutMs: number; heartbeatIntervalMs: number; rebalanceTimeoutMs: number }), maxWaitMs: MAX_WAIT_MS };
      const diy = await startBaseline('diy-kafka-ws', {
        KAFKA_BROKERS: kafka.bootstrap,
        TOPIC: topic,
        SESSION_TIMEOUT_MS: String(consumer.sessionTimeoutMs),
        HEARTBEAT_INTERVAL_MS: String(consumer.heartbeatIntervalMs),
        REBALANCE_TIMEOUT_MS: String(consumer.rebalanceTimeoutMs),
        MAX_WAIT_MS: String(consumer.maxWaitMs),
      });
      const gw = await startGateway(kafkaWsConfig(kafka.bootstrap, topic, JSON.stringify(consumer)));
      const sentAt = new Map<number, number>();
      let measuring = false;
      const gateway = await subscribeFrames(gw.url('push', '/stream', 'ws'), CLIENTS, sentAt, () => measuring);
      const baseline = await subscribeFrames(`ws://127.0.0.1:${diy.port}/stream`, CLIENTS, sentAt, () => measuring);
      const producer = await fixedRateProducer(kafka.bootstrap, topic, sentAt);
      try {
        // Both consumers must have joined their groups before the clock starts: probe until a record gets through each.
        measuring = true;
        await producer.probe([gateway.side, baseline.side], () => gateway.side.received > 0 && baseline.side.received > 0, 30000);
        measuring = false;
        await producer.run(RATE, warmupSeconds(duration));
        await new Promise((r) => setTimeout(r, 500));
        gateway.side.latencies = [];
        baseline.side.latencies = [];
        gateway.side.received = 0;
        baseline.side.received = 0;
        measuring = true;
        const cpu0 = { gateway: cpuMs(gw.process.pid!), baseline: cpuMs(diy.pid), load: process.cpuUsage() };
        const t0 = performance.now();
        const produced = await producer.run(RATE, duration);
        const elapsed = performance.now() - t0;
        const own = process.cpuUsage(cpu0.load);
        // Share of a core each process used while records flowed: a saturated load generator would inflate both sides' latency.
        const cores = { gateway: (cpuMs(gw.process.pid!) - cpu0.gateway) / elapsed, baseline: (cpuMs(diy.pid) - cpu0.baseline) / elapsed, load_generator: (own.user + own.system) / 1000 / elapsed };
        // Let the last records arrive (bounded: a lost record never does).
        const until = performance.now() + 5000;
        while ((gateway.side.received < produced || baseline.side.received < produced) && performance.now() < until) await new Promise((r) => setTimeout(r, 50));
        measuring = false;
        const g = latencyFigures(gateway.side, produced);
        const b = latencyFigures(baseline.side, produced);
        return judge({
          metric: 'p99 ms',
          value: g.p99_ms,
          baseline: { name: 'diy-kafka-ws', value: b.p99_ms, ...b },
          ratio: g.p99_ms / b.p99_ms,
          ...g,
          errors: produced - g.received,
          rate_per_s: RATE,
          // How long the cluster took to acknowledge the records: the part of the latency neither side controls.
          produce_ack_p99_ms: percentile(
            [...producer.acks].sort((a, b) => a - b),
            0.99,
          ),
          cores,
          max_wait_ms: MAX_WAIT_MS,
          clients: CLIENTS,
          partitions: PARTITIONS,
          target: { field: 'p99_ms', op: '<=', limit: 25 },
        });
      } finally {
        await producer.stop();
        closeSubscribers(gateway);
        closeSubscribers(baseline);
        await Promise.all([gw.stop(), diy.stop()]);
      }
    } finally {
      await kafka.stop();
    }
  },
};
