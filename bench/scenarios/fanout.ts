import { FANOUT_CONFIG } from '../configs.js';
import { runFanout } from '../load/ws.js';
import { startBaseline, startGateway } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';

const CLIENTS = 500;
const WINDOW = 16;

/** One publisher, 500 websocket clients on a forward route from a memory topic, vs a ws broadcast loop. */
export const fanout: Scenario = {
  name: 'fanout',
  describe: `${CLIENTS} websocket clients on a forward route from a memory topic, deliveries/s vs raw-ws`,
  async run({ duration }) {
    const shape = { clients: CLIENTS, window: WINDOW, warmupSeconds: warmupSeconds(duration), seconds: duration };
    const raw = await startBaseline('raw-ws');
    let baseline: Awaited<ReturnType<typeof runFanout>>;
    try {
      const url = `ws://127.0.0.1:${raw.port}`;
      baseline = await runFanout({ ...shape, serverPid: raw.pid, publishUrl: `${url}/publish`, subscribeUrl: `${url}/fanout` });
    } finally {
      await raw.stop();
    }
    const gw = await startGateway(FANOUT_CONFIG);
    try {
      const result = await runFanout({ ...shape, serverPid: gw.process.pid!, publishUrl: gw.url('push', '/publish', 'ws'), subscribeUrl: gw.url('push', '/fanout', 'ws') });
      return judge({
        metric: 'deliveries/s',
        value: result.deliveriesPerSecond,
        baseline: { name: 'raw-ws', value: baseline.deliveriesPerSecond, p50_ms: baseline.p50_ms, p99_ms: baseline.p99_ms, errors: baseline.errors, cpu_us_per_delivery: baseline.cpuUsPerDelivery },
        ratio: result.deliveriesPerSecond / baseline.deliveriesPerSecond,
        p50_ms: result.p50_ms,
        p99_ms: result.p99_ms,
        errors: result.errors,
        clients: CLIENTS,
        messages_per_s: result.messagesPerSecond,
        cpu_us_per_delivery: result.cpuUsPerDelivery,
        target: { field: 'ratio', op: '>=', limit: 0.7 },
      });
    } finally {
      await gw.stop();
    }
  },
};

