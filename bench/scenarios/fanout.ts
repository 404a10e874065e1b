import { alternate, medianOf, pairedRatio, slicing, sumOf } from '../compare.js';
import { FANOUT_CONFIG } from '../configs.js';
import { openFanout, type FanoutSlice } from '../load/ws.js';
import { startBaseline, startGateway } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';

const CLIENTS = 500;
const WINDOW = 16;

/** One publisher, 500 websocket clients on a forward route from a memory topic, vs a ws broadcast loop. */
export const fanout: Scenario = {
  name: 'fanout',
  describe: `${CLIENTS} websocket clients on a forward route from a memory topic, deliveries/s vs raw-ws`,
  async run({ duration }) {
    const raw = await startBaseline('raw-ws');
    const gw = await startGateway(FANOUT_CONFIG);
    const rawUrl = `ws://127.0.0.1:${raw.port}`;
    const baseline = await openFanout({ clients: CLIENTS, window: WINDOW, serverPid: raw.pid, publishUrl: `${rawUrl}/publish`, subscribeUrl: `${rawUrl}/fanout` });
    const gateway = await openFanout({ clients: CLIENTS, window: WINDOW, serverPid: gw.process.pid!, publishUrl: gw.url('push', '/publish', 'ws'), subscribeUrl: gw.url('push', '/fanout', 'ws') });
    try {
      await baseline.measure(warmupSeconds(duration));
      await gateway.measure(warmupSeconds(duration));
      const s = await alternate(duration, (t) => gateway.measure(t), (t) => baseline.measure(t));
      return judge({
        metric: 'deliveries/s',
        baseline: { name: 'raw-ws', ...fanoutFigures(s.baseline) },
        ...fanoutFigures(s.subject),
        ratio: pairedRatio(s, (r) => r.deliveriesPerSecond),
        clients: CLIENTS,
        rounds: slicing(duration).rounds,
        target: { field: 'ratio', op: '>=', limit: 0.7 },
      });
    } finally {
      baseline.close();
      gateway.close();
      await Promise.all([gw.stop(), raw.stop()]);
    }
  },
};

function fanoutFigures(slices: FanoutSlice[]) {
  return {
    value: medianOf(slices, (r) => r.deliveriesPerSecond),
    p50_ms: medianOf(slices, (r) => r.p50_ms),
    p99_ms: medianOf(slices, (r) => r.p99_ms),
    errors: sumOf(slices, (r) => r.errors),
    slices: slices.map((r) => r.deliveriesPerSecond),
    messages_per_s: medianOf(slices, (r) => r.messagesPerSecond),
    cpu_us_per_delivery: medianOf(slices, (r) => r.cpuUsPerDelivery),
  };
}
