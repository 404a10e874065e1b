import { parse as parseYaml } from 'yaml';
import { kafkaWsConfig } from '../configs.js';
import { fixedRateProducer, latencyRig } from '../load/kafka-ws.js';
import { startBaseline, startGateway, startKafka } from '../processes.js';
import { judge, type Scenario } from '../scenario.js';

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
      const rig = await latencyRig({ gateway: gw.url('push', '/stream', 'ws'), baseline: `ws://127.0.0.1:${diy.port}/stream` }, CLIENTS);
      const producer = await fixedRateProducer(kafka.bootstrap, topic, PARTITIONS, rig.sentAt);
      try {
        // Both consumers must have joined their groups before the clock starts: measure() probes until a record gets through each.
        const m = await rig.measure(producer, { gateway: gw.process.pid!, baseline: diy.pid }, RATE, duration);
        const produced = m.produced;
        const g = m.gateway;
        const b = m.baseline;
        return judge({
          metric: 'p99 ms',
          value: g.p99_ms,
          baseline: { name: 'diy-kafka-ws', value: b.p99_ms, ...b },
          ratio: g.p99_ms / b.p99_ms,
          ...g,
          errors: produced - g.received,
          rate_per_s: RATE,
          produce_ack_p99_ms: m.ackP99,
          warmup_catch_up_ms: m.warmupCatchUpMs,
          cores: m.cores,
          max_wait_ms: MAX_WAIT_MS,
          clients: CLIENTS,
          partitions: PARTITIONS,
          target: { field: 'p99_ms', op: '<=', limit: 25 },
        });
      } finally {
        await producer.stop();
        rig.close();
        await Promise.all([gw.stop(), diy.stop()]);
      }
    } finally {
      await kafka.stop();
    }
  },
};
