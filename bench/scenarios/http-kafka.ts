import { alternate } from '../compare.js';
import { httpKafkaConfig } from '../configs.js';
import { cpuMs, startBaseline, startGateway, startKafka } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';
import { byConnections, CONNECTION_COUNTS, httpTarget } from './http-memory.js';

const PARTITIONS = 3;
/**
 * POST → Kafka (librdkafka's mock cluster, 3 brokers, acks all) through the gateway, which gathers
 * concurrent requests into one produce request per broker, against a hand-written server that
 * calls producer.send() once per request.
 */
export const httpKafka: Scenario = {
  name: 'http-kafka',
  describe: `POST to a Kafka topic (mock cluster, acks all), requests/s vs diy-kafka (one producer.send per request), at ${CONNECTION_COUNTS.join(' and ')} connections`,
  async run({ duration }) {
    const kafka = await startKafka({ brokers: 3, requestLog: false });
    try {
      const topic = kafka.topic('bench-http');
      await kafka.createTopic(topic, PARTITIONS);
      const diy = await startBaseline('diy-kafka', { KAFKA_BROKERS: kafka.bootstrap, TOPIC: topic });
      const gw = await startGateway(httpKafkaConfig(kafka.bootstrap, topic));
      try {
        const perCount = [];
        const brokerCpu = kafka.pid === undefined ? undefined : () => cpuMs(kafka.pid!);
        for (const connections of CONNECTION_COUNTS) {
          const gateway = httpTarget(gw.url('api', '/light'), gw.process.pid!, connections, brokerCpu);
          const baseline = httpTarget(`http://127.0.0.1:${diy.port}/light`, diy.pid, connections, brokerCpu);
          await baseline(warmupSeconds(duration));
          await gateway(warmupSeconds(duration));
          perCount.push({ connections, s: await alternate(duration, gateway, baseline) });
        }
        return judge({ ...byConnections('diy-kafka', perCount, { field: 'ratio', op: '>=', limit: 3 }), partitions: PARTITIONS });
      } finally {
        await Promise.all([gw.stop(), diy.stop()]);
      }
    } finally {
      await kafka.stop();
    }
  },
};
