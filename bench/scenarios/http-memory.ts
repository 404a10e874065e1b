import { httpMemoryConfig, LIGHT_BODY } from '../configs.js';
import { runHttpLoad, type HttpLoadResult } from '../load/http.js';
import { startBaseline, startGateway, withCpu } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';

export const CONNECTIONS = 50;

/** POST → validate + filter + transform → memory topic, against node:http doing JSON.parse alone. */
export const httpMemory: Scenario = {
  name: 'http-memory',
  describe: 'POST through validate + filter + transform to a memory topic, requests/s vs raw-http',
  async run({ duration }) {
    const baseline = await measureRawHttp(duration);
    const gw = await startGateway(httpMemoryConfig());
    try {
      const load = { url: gw.url('api', '/light'), body: LIGHT_BODY, connections: CONNECTIONS };
      await runHttpLoad(load, warmupSeconds(duration));
      const { result, cpuMs } = await withCpu(gw.process.pid!, () => runHttpLoad(load, duration));
      return judge({
        metric: 'requests/s',
        value: result.rps,
        baseline: { name: 'raw-http', value: baseline.rps, p50_ms: baseline.p50_ms, p99_ms: baseline.p99_ms, errors: baseline.errors, cpu_us_per_request: baseline.cpuUsPerRequest },
        ratio: result.rps / baseline.rps,
        p50_ms: result.p50_ms,
        p99_ms: result.p99_ms,
        errors: result.errors,
        cpu_us_per_request: (cpuMs * 1000) / result.requests,
        target: { field: 'ratio', op: '>=', limit: 0.6 },
      });
    } finally {
      await gw.stop();
    }
  },
};

export async function measureRawHttp(duration: number): Promise<HttpLoadResult & { cpuUsPerRequest: number }> {
  const raw = await startBaseline('raw-http');
  try {
    const load = { url: `http://127.0.0.1:${raw.port}/light`, body: LIGHT_BODY, connections: CONNECTIONS };
    await runHttpLoad(load, warmupSeconds(duration));
    const { result, cpuMs } = await withCpu(raw.pid, () => runHttpLoad(load, duration));
    return { ...result, cpuUsPerRequest: (cpuMs * 1000) / result.requests };
  } finally {
    await raw.stop();
  }
}
