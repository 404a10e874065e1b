import { httpMemoryConfig, LIGHT_BODY } from '../configs.js';
import { runHttpLoad, startHttpLoad } from '../load/http.js';
import { startGateway } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';
import { CONNECTIONS } from './http-memory.js';

const REWRITES = 20;

/**
 * http-memory load while gateway.yaml is rewritten 20 times, each rewrite changing the route's
 * transform so the route is rebuilt and swapped under load. Baseline: the same gateway process
 * under the same load with no reloads, just before.
 */
export const reload: Scenario = {
  name: 'reload',
  describe: `http-memory load while the config is rewritten ${REWRITES} times; errors must be 0`,
  async run({ duration }) {
    const gw = await startGateway(httpMemoryConfig());
    try {
      const load = { url: gw.url('api', '/light'), body: LIGHT_BODY, connections: CONNECTIONS };
      await runHttpLoad(load, warmupSeconds(duration));
      const steady = await runHttpLoad(load, duration);

      const running = startHttpLoad(load, 3600);
      const started = performance.now();
      const spacingMs = (duration * 1000) / REWRITES;
      for (let revision = 1; revision <= REWRITES; revision++) {
        const due = started + revision * spacingMs;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const line = await gw.reconfigure(httpMemoryConfig(revision));
        if (line.msg !== 'config reloaded') throw new Error(`reload ${revision} was not applied: ${JSON.stringify(line)}`);
      }
      const during = await running.stop();
      return judge({
        metric: 'requests/s',
        value: during.rps,
        baseline: { name: 'http-memory (same process, no reloads)', value: steady.rps, p50_ms: steady.p50_ms, p99_ms: steady.p99_ms, errors: steady.errors },
        ratio: during.rps / steady.rps,
        p50_ms: during.p50_ms,
        p99_ms: during.p99_ms,
        errors: during.errors,
        reloads: REWRITES,
        seconds: during.seconds,
        target: { field: 'errors', op: '<=', limit: 0 },
      });
    } finally {
      await gw.stop();
    }
  },
};
