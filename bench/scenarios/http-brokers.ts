import { alternate, pairedRatio, slicing } from '../compare.js';
import { groupCpuMs, startBaseline, startGateway } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';
import { startMosquitto, startNats, startRabbit, type MessageServer } from '../../test/helpers/servers.js';
import { pikaDeclareQueue, RawNats } from '../../test/helpers/peers.js';
import { httpFigures, httpTarget } from './http-memory.js';

/** Concurrent clients, as for http-kafka: acknowledgements overlap only with concurrency. */
const CONNECTIONS = 200;

interface BrokerBench {
  kind: 'mqtt' | 'amqp' | 'nats';
  server: () => Promise<MessageServer>;
  /** The broker's lines in the gateway config (indented under `brokers:`). */
  brokerYaml: (server: MessageServer) => string;
  topic: string;
  /** Whatever must exist before publishing (a bound queue, so confirms are for stored messages). */
  prepare?: (server: MessageServer) => Promise<void>;
}

/**
 * POST → broker through the gateway against a hand-written node:http server publishing each
 * request with the same client library, both answering once the server acknowledged.
 */
function httpBroker(b: BrokerBench): Scenario {
  return {
    name: `http-${b.kind}`,
    describe: `POST to ${b.kind} (acknowledged publishes), requests/s vs diy-broker (one ${b.kind} publish per request)`,
    async run({ duration }) {
      const server = await b.server();
      try {
        await b.prepare?.(server);
        const diy = await startBaseline('diy-broker', { KIND: b.kind, URL: server.url, TOPIC: b.topic });
        const gw = await startGateway(`version: 1
brokers:
  target:
${b.brokerYaml(server)}
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: publish
    from: { listener: api, path: /light }
    to: { broker: target, topic: ${b.topic} }
`);
        try {
          const brokerCpu = () => groupCpuMs(server.pid()!);
          const gateway = httpTarget(gw.url('api', '/light'), gw.process.pid!, CONNECTIONS, brokerCpu);
          const baseline = httpTarget(`http://127.0.0.1:${diy.port}/light`, diy.pid, CONNECTIONS, brokerCpu);
          await baseline(warmupSeconds(duration));
          await gateway(warmupSeconds(duration));
          const s = await alternate(duration, gateway, baseline);
          return judge({
            metric: 'requests/s',
            baseline: { name: `diy-${b.kind}`, ...httpFigures(s.baseline) },
            ...httpFigures(s.subject),
            ratio: pairedRatio(s, (r) => r.rps),
            rounds: slicing(duration).rounds,
            connections: CONNECTIONS,
            target: { field: 'ratio', op: '>=', limit: 1.5 },
          });
        } finally {
          await Promise.all([gw.stop(), diy.stop()]);
        }
      } finally {
        await server.stop();
      }
    },
  };
}

export const httpMqtt = httpBroker({
  kind: 'mqtt',
  server: startMosquitto,
  brokerYaml: (s) => `    kind: mqtt\n    url: ${s.url}\n    clientId: bench-${process.pid}\n    qos: 1`,
  topic: 'bench/light',
});

export const httpAmqp = httpBroker({
  kind: 'amqp',
  server: startRabbit,
  brokerYaml: (s) => `    kind: amqp\n    url: ${s.url}`,
  topic: 'bench.light',
  prepare: (s) => pikaDeclareQueue(s, 'bench-light', 'amq.topic', 'bench.light'),
});

export const httpNats = httpBroker({
  kind: 'nats',
  server: startNats,
  brokerYaml: (s) => `    kind: nats\n    servers: ${s.url}\n    streams:\n      BENCH: { subjects: [bench.light], storage: memory }`,
  topic: 'bench.light',
  // The baseline publishes before the gateway has declared the stream: create it first.
  async prepare(s) {
    const peer = await RawNats.connect(s);
    try {
      const inbox = `_INBOX.bench.${process.pid}`;
      const sid = await peer.subscribe(inbox);
      peer.publish('$JS.API.STREAM.CREATE.BENCH', JSON.stringify({ name: 'BENCH', subjects: ['bench.light'], storage: 'memory' }), {}, inbox);
      await peer.take(sid, 1);
    } finally {
      peer.close();
    }
  },
});
