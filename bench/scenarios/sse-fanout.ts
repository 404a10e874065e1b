import { alternate, pairedRatio, slicing } from '../compare.js';
import { SSE_FANOUT_CONFIG } from '../configs.js';
import { openSseFanout } from '../load/sse.js';
import { startBaseline, startGateway } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';
import { fanoutFigures } from './fanout.js';

const CLIENTS = 500;
const WINDOW = 16;

/**
 * One publisher (HTTP POST, kept-alive), 500 EventSource-style clients on an event stream fed by a
 * memory topic, against a hand-written node:http SSE broadcaster, through the same driver in
 * alternating slices of the same run.
 */
export const sseFanout: Scenario = {
  name: 'sse-fanout',
  describe: `${CLIENTS} Server-Sent Events clients on a stream from a memory topic, deliveries/s vs a node:http SSE broadcaster`,
  async run({ duration }) {
    const raw = await startBaseline('raw-sse');
    const gw = await startGateway(SSE_FANOUT_CONFIG);
    const sessions = [];
    try {
      const baseline = await openSseFanout({
        clients: CLIENTS,
        window: WINDOW,
        serverPid: raw.pid,
        publishUrl: `http://127.0.0.1:${raw.port}/publish`,
        streamUrl: `http://127.0.0.1:${raw.port}/fanout`,
      });
      sessions.push(baseline);
      const gateway = await openSseFanout({ clients: CLIENTS, window: WINDOW, serverPid: gw.process.pid!, publishUrl: gw.url('api', '/publish'), streamUrl: gw.url('api', '/fanout') });
      sessions.push(gateway);
      for (const s of sessions) await s.measure(warmupSeconds(duration));
      const s = await alternate(
        duration,
        (t) => gateway.measure(t),
        (t) => baseline.measure(t),
      );
      return judge({
        metric: 'deliveries/s',
        baseline: { name: 'node-http-sse', ...fanoutFigures(s.baseline) },
        ...fanoutFigures(s.subject),
        ratio: pairedRatio(s, (r) => r.deliveriesPerSecond),
        clients: CLIENTS,
        rounds: slicing(duration).rounds,
        target: { field: 'ratio', op: '>=', limit: 0.8 },
      });
    } finally {
      for (const s of sessions) s.close();
      await Promise.all([gw.stop(), raw.stop()]);
    }
  },
};
