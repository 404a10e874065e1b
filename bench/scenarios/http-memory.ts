import { alternate, medianOf, pairedRatio, slicing, sumOf } from '../compare.js';
import { httpMemoryConfig, LIGHT_BODY } from '../configs.js';
import { runHttpLoad, type HttpLoadResult } from '../load/http.js';
import { startBaseline, startGateway, withCpu } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';

export const CONNECTIONS = 50;

export interface HttpSlice extends HttpLoadResult {
  cpuUsPerRequest: number;
}

/** POST → validate + filter + transform → memory topic, against node:http doing JSON.parse alone. */
export const httpMemory: Scenario = {
  name: 'http-memory',
  describe: 'POST through validate + filter + transform to a memory topic, requests/s vs raw-http',
  async run({ duration }) {
    const raw = await startBaseline('raw-http');
    const gw = await startGateway(httpMemoryConfig());
    try {
      const gateway = httpTarget(gw.url('api', '/light'), gw.process.pid!);
      const baseline = httpTarget(`http://127.0.0.1:${raw.port}/light`, raw.pid);
      await baseline(warmupSeconds(duration));
      await gateway(warmupSeconds(duration));
      const s = await alternate(duration, gateway, baseline);
      return judge({
        metric: 'requests/s',
        baseline: { name: 'raw-http', ...httpFigures(s.baseline) },
        ...httpFigures(s.subject),
        ratio: pairedRatio(s, (r) => r.rps),
        rounds: slicing(duration).rounds,
        target: { field: 'ratio', op: '>=', limit: 0.6 },
      });
    } finally {
      await Promise.all([gw.stop(), raw.stop()]);
    }
  },
};

/** A function that loads one server for a slice and reports what it did and what it cost. */
export function httpTarget(url: string, pid: number, connections = CONNECTIONS): (seconds: number) => Promise<HttpSlice> {
  return async (seconds) => {
    const { result, cpuMs } = await withCpu(pid, () => runHttpLoad({ url, body: LIGHT_BODY, connections }, seconds));
    return { ...result, cpuUsPerRequest: (cpuMs * 1000) / Math.max(1, result.requests) };
  };
}

/** The figures of several slices of one side: medians, and errors summed. */
export function httpFigures(slices: HttpSlice[]) {
  return {
    value: medianOf(slices, (r) => r.rps),
    p50_ms: medianOf(slices, (r) => r.p50_ms),
    p99_ms: medianOf(slices, (r) => r.p99_ms),
    errors: sumOf(slices, (r) => r.errors),
    slices: slices.map((r) => r.rps),
    cpu_us_per_request: medianOf(slices, (r) => r.cpuUsPerRequest),
  };
}
