import { alternate, pairedRatio, slicing } from '../compare.js';
import { httpKafkaConfig } from '../configs.js';
import { startBaseline, startGateway, startKafka } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';
import { httpFigures, httpTarget } from './http-memory.js';

const PARTITIONS = 3;
/**
 * Concurrent clients. Batching across requests pays off with concurrency, which is what a gateway
 * in front of many producers sees; at 50 the gateway's 5 ms linger, not its CPU, bounds it
 * (docs/performance.md gives both figures).
 */
const CONNECTIONS = 200;

/**
 * POST → Kafka (librdkafka's mock cluster, 3 brokers, acks all) through the gateway, which gathers
 * concurrent requests into one produce request per broker, against a hand-written server that
 * calls producer.send() once per request.
 */
export const httpKafka: Scenario = {
  name: 'http-kafka',
  describe: 'POST to a Kafka topic (mock cluster, acks all), requests/s vs diy-kafka (one producer.send per request)',
  async run({ duration }) {
    const kafka = await startKafka({ brokers: 3, requestLog: false });
    try {
      const topic = kafka.topic('bench-http');
      await kafka.createTopic(topic, PARTITIONS);
      const diy = await startBaseline('diy-kafka', { KAFKA_BROKERS: kafka.bootstrap, TOPIC: topic });
      const gw = await startGateway(httpKafkaConfig(kafka.bootstrap, topic));
      try {
        const gateway = httpTarget(gw.url('api', '/light'), gw.process.pid!, CONNECTIONS);
        const baseline = httpTarget(`http://127.0.0.1:${diy.port}/light`, diy.pid, CONNECTIONS);
        await baseline(warmupSeconds(duration));
        await gateway(warmupSeconds(duration));
        const s = await alternate(duration, gateway, baseline);
        return judge({
          metric: 'requests/s',
          baseline: { name: 'diy-kafka', ...httpFigures(s.baseline) },
          ...httpFigures(s.subject),
          ratio: pairedRatio(s, (r) => r.rps),
          rounds: slicing(duration).rounds,
          partitions: PARTITIONS,
          connections: CONNECTIONS,
          target: { field: 'ratio', op: '>=', limit: 2 },
        });
      } finally {
        await Promise.all([gw.stop(), diy.stop()]);
      }
    } finally {
      await kafka.stop();
    }
  },
};
