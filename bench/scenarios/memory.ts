import { FANOUT_CONFIG } from '../configs.js';
import { closeClients, connectClients } from '../load/ws.js';
import { rssBytes, startBaseline, startGateway } from '../processes.js';
import { judge, type Scenario } from '../scenario.js';

const CLIENTS = 1000;
const MB = 1024 * 1024;

/** Resident memory of the gateway holding 1,000 idle websocket clients, vs the ws broadcast server holding as many. */
export const memory: Scenario = {
  name: 'memory',
  describe: `RSS with ${CLIENTS} idle websocket clients, MB vs raw-ws`,
  async run({ duration }) {
    const raw = await startBaseline('raw-ws');
    let baseline: { idle: number; loaded: number };
    try {
      baseline = await measure(raw.pid, `ws://127.0.0.1:${raw.port}/fanout`, duration);
    } finally {
      await raw.stop();
    }
    const gw = await startGateway(FANOUT_CONFIG);
    try {
      const r = await measure(gw.process.pid!, gw.url('push', '/fanout', 'ws'), duration);
      return judge({
        metric: 'RSS MB',
        value: r.loaded / MB,
        baseline: { name: 'raw-ws', value: baseline.loaded / MB, idle_mb: baseline.idle / MB },
        ratio: r.loaded / baseline.loaded,
        p50_ms: null,
        p99_ms: null,
        clients: CLIENTS,
        idle_mb: r.idle / MB,
        kb_per_client: (r.loaded - r.idle) / 1024 / CLIENTS,
        target: { field: 'value', op: '<=', limit: 150 },
      });
    } finally {
      await gw.stop();
    }
  },
};

/** RSS before the clients connect and after they have sat idle for a while (up to 3 s). */
async function measure(pid: number, url: string, duration: number): Promise<{ idle: number; loaded: number }> {
  const idle = rssBytes(pid);
  const clients = await connectClients(url, CLIENTS);
  await new Promise((r) => setTimeout(r, Math.min(3, duration) * 1000));
  const loaded = rssBytes(pid);
  await closeClients(clients);
  return { idle, loaded };
}
