import { medianOf, rotate, roundRatio, slicing, sumOf } from '../compare.js';
import { FANOUT_CONFIG } from '../configs.js';
import { openFanout, type FanoutSlice } from '../load/ws.js';
import { isNchanPublishAnswer, startNchan } from '../nchan.js';
import { startBaseline, startGateway } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';

const CLIENTS = 500;
const WINDOW = 16;

/**
 * One publisher, 500 websocket clients on a forward route from a memory topic, against nginx +
 * Nchan with one worker (the target) and the ws README's broadcast loop, all three through the
 * same driver in the same run, in rotating slices.
 */
export const fanout: Scenario = {
  name: 'fanout',
  describe: `${CLIENTS} websocket clients on a forward route from a memory topic, deliveries/s vs nginx-nchan (1 worker) and raw-ws`,
  async run({ duration }) {
    const raw = await startBaseline('raw-ws');
    const nchan = await startNchan().catch(async (err) => {
      await raw.stop();
      throw err;
    });
    const gw = await startGateway(FANOUT_CONFIG);
    const rawUrl = `ws://127.0.0.1:${raw.port}`;
    const nchanUrl = `ws://127.0.0.1:${nchan.port}`;
    const sessions = [];
    try {
      const rawWs = await openFanout({ clients: CLIENTS, window: WINDOW, serverPid: raw.pid, publishUrl: `${rawUrl}/publish`, subscribeUrl: `${rawUrl}/fanout` });
      sessions.push(rawWs);
      const nginx = await openFanout({
        clients: CLIENTS,
        window: WINDOW,
        serverPid: nchan.pid,
        publishUrl: `${nchanUrl}/publish`,
        subscribeUrl: `${nchanUrl}/fanout`,
        isPublishAnswer: isNchanPublishAnswer,
      });
      sessions.push(nginx);
      const gateway = await openFanout({ clients: CLIENTS, window: WINDOW, serverPid: gw.process.pid!, publishUrl: gw.url('push', '/publish', 'ws'), subscribeUrl: gw.url('push', '/fanout', 'ws') });
      sessions.push(gateway);
      for (const s of sessions) await s.measure(warmupSeconds(duration));
      const s = await rotate(duration, { gateway: (t) => gateway.measure(t), nchan: (t) => nginx.measure(t), raw: (t) => rawWs.measure(t) });
      return judge({
        metric: 'deliveries/s',
        baseline: { name: 'nginx-nchan', ...fanoutFigures(s.nchan!) },
        ...fanoutFigures(s.gateway!),
        ratio: roundRatio(s.gateway!, s.nchan!, (r) => r.deliveriesPerSecond),
        raw_ws: { ...fanoutFigures(s.raw!), ratio: roundRatio(s.gateway!, s.raw!, (r) => r.deliveriesPerSecond) },
        clients: CLIENTS,
        rounds: slicing(duration).rounds,
        target: { field: 'ratio', op: '>=', limit: 1.0 },
      });
    } finally {
      for (const s of sessions) s.close();
      await Promise.all([gw.stop(), raw.stop(), nchan.stop()]);
    }
  },
};

/** The figures of a fan-out side over its slices (also used by sse-fanout). */
export function fanoutFigures(slices: FanoutSlice[]) {
  return {
    value: medianOf(slices, (r) => r.deliveriesPerSecond),
    p50_ms: medianOf(slices, (r) => r.p50_ms),
    p99_ms: medianOf(slices, (r) => r.p99_ms),
    errors: sumOf(slices, (r) => r.errors),
    lost: sumOf(slices, (r) => r.lost),
    slices: slices.map((r) => r.deliveriesPerSecond),
    messages_per_s: medianOf(slices, (r) => r.messagesPerSecond),
    cpu_us_per_delivery: medianOf(slices, (r) => r.cpuUsPerDelivery),
  };
}
