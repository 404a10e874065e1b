import { FANOUT_CONFIG } from '../configs.js';
import { openFileLimit } from '../limits.js';
import { closeClients, connectClients } from '../load/ws.js';
import { rssBytes, startBaseline, startGateway } from '../processes.js';
import { judge, type Scenario } from '../scenario.js';

const CLIENTS = 10_000;
/** Idle memory-only gateway, and what each idle websocket client may add. */
const IDLE_TARGET_MB = 60;
const PER_CLIENT_TARGET_KB = 8;
const MB = 1024 * 1024;

/**
 * Resident memory of the gateway idle and holding 10,000 idle websocket clients, vs the ws
 * broadcast server holding as many. The target is the KB each client adds; the idle RSS has a
 * target of its own, reported in the same row (`idle_mb`, `idle_target_mb`, `idle_pass`).
 */
export const memory: Scenario = {
  name: 'memory',
  describe: `KB of RSS per idle websocket client at ${CLIENTS} clients (and idle RSS), vs raw-ws`,
  async run({ duration }) {
    // This process and the server each hold one descriptor per client.
    const limit = openFileLimit();
    if (limit !== undefined && limit < CLIENTS + 1000)
      throw new Error(`the memory scenario needs ${CLIENTS + 1000} open files per process, ulimit -n is ${limit}: raise it (ulimit -n ${CLIENTS * 2}) and run again`);
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
      const perClient = (r.loaded - r.idle) / 1024 / CLIENTS;
      const baselinePerClient = (baseline.loaded - baseline.idle) / 1024 / CLIENTS;
      return judge({
        metric: 'KB/client',
        value: perClient,
        baseline: { name: 'raw-ws', value: baselinePerClient, idle_mb: baseline.idle / MB, loaded_mb: baseline.loaded / MB },
        ratio: perClient / baselinePerClient,
        p50_ms: null,
        p99_ms: null,
        clients: CLIENTS,
        idle_mb: r.idle / MB,
        loaded_mb: r.loaded / MB,
        idle_target_mb: IDLE_TARGET_MB,
        idle_pass: r.idle / MB <= IDLE_TARGET_MB,
        target: { field: 'value', op: '<=', limit: PER_CLIENT_TARGET_KB },
      });
    } finally {
      await gw.stop();
    }
  },
};

/** RSS idle (after a moment to settle) and after the clients have sat idle for a while (up to 3 s). */
async function measure(pid: number, url: string, duration: number): Promise<{ idle: number; loaded: number }> {
  await new Promise((r) => setTimeout(r, Math.min(2, duration) * 1000));
  const idle = rssBytes(pid);
  const clients = await connectClients(url, CLIENTS);
  await new Promise((r) => setTimeout(r, Math.min(3, duration) * 1000));
  const loaded = rssBytes(pid);
  await closeClients(clients);
  return { idle, loaded };
}
