import { alternate, medianOf, pairedRatio, sumOf, type Sliced } from '../compare.js';
import { httpMemoryConfig, LIGHT_BODY } from '../configs.js';
import { runHttpLoad, type HttpLoadResult } from '../load/http.js';
import { startBaseline, startGateway, withCpu } from '../processes.js';
import { judge, warmupSeconds, type Scenario, type Target } from '../scenario.js';
import { median } from '../stats.js';

/** The reload scenario's load. */
export const CONNECTIONS = 50;

export interface HttpSlice extends HttpLoadResult {
  cpuUsPerRequest: number;
  /** The harness process's CPU per request: autocannon, the load generator, runs in it. */
  loadCpuUsPerRequest: number;
  /** The message server's CPU per request, when the scenario names one (mosquitto, RabbitMQ, the mock cluster). */
  brokerCpuUsPerRequest?: number;
}

/** Connection counts every HTTP scenario is measured at (the target must hold at each). */
export const CONNECTION_COUNTS = [50, 200] as const;

/** POST → validate + filter + transform → memory topic, against node:http doing JSON.parse alone. */
export const httpMemory: Scenario = {
  name: 'http-memory',
  describe: `POST through validate + filter + transform to a memory topic, requests/s vs raw-http, at ${CONNECTION_COUNTS.join(' and ')} connections`,
  async run({ duration }) {
    const raw = await startBaseline('raw-http');
    const gw = await startGateway(httpMemoryConfig());
    try {
      const perCount = [];
      for (const connections of CONNECTION_COUNTS) {
        const gateway = httpTarget(gw.url('api', '/light'), gw.process.pid!, connections);
        const baseline = httpTarget(`http://127.0.0.1:${raw.port}/light`, raw.pid, connections);
        await baseline(warmupSeconds(duration));
        await gateway(warmupSeconds(duration));
        perCount.push({ connections, s: await alternate(duration, gateway, baseline) });
      }
      return judge(byConnections('raw-http', perCount, { field: 'ratio', op: '>=', limit: 0.8 }));
    } finally {
      await Promise.all([gw.stop(), raw.stop()]);
    }
  },
};

/**
 * One result for several connection counts: the row's value, baseline and ratio are those of the
 * worst count (the target must hold at each); every count's figures and the spread of its
 * slice ratios (min, median, max) are in `by_connections`.
 */
export function byConnections(baselineName: string, perCount: { connections: number; s: Sliced<HttpSlice> }[], target: Target) {
  const rows = perCount.map(({ connections, s }) => {
    const ratios = s.subject.map((r, i) => r.rps / s.baseline[i]!.rps).sort((a, b) => a - b);
    return {
      connections,
      ...httpFigures(s.subject),
      baseline: { name: baselineName, ...httpFigures(s.baseline) },
      ratio: pairedRatio(s, (r) => r.rps),
      ratio_spread: { min: ratios[0]!, median: median(ratios), max: ratios[ratios.length - 1]! },
    };
  });
  const worst = rows.reduce((a, b) => (b.ratio < a.ratio ? b : a));
  return {
    metric: 'requests/s',
    ...worst,
    rounds: perCount[0]?.s.subject.length ?? 0,
    by_connections: rows,
    target,
  };
}

/**
 * A function that loads one server for a slice and reports what it did and what it cost: the
 * server's CPU, the load generator's (this process) and, with `brokerCpuMs`, the message server's.
 * With every process on the same cores, the three together bound the rate a side can reach.
 */
export function httpTarget(url: string, pid: number, connections = CONNECTIONS, brokerCpuMs?: () => number): (seconds: number) => Promise<HttpSlice> {
  return async (seconds) => {
    const load = process.cpuUsage();
    const broker = brokerCpuMs?.() ?? 0;
    const { result, cpuMs } = await withCpu(pid, () => runHttpLoad({ url, body: LIGHT_BODY, connections }, seconds));
    const perRequest = (ms: number) => (ms * 1000) / Math.max(1, result.requests);
    const used = process.cpuUsage(load);
    return {
      ...result,
      cpuUsPerRequest: perRequest(cpuMs),
      loadCpuUsPerRequest: perRequest((used.user + used.system) / 1000),
      ...(brokerCpuMs ? { brokerCpuUsPerRequest: perRequest(brokerCpuMs() - broker) } : {}),
    };
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
    load_cpu_us_per_request: medianOf(slices, (r) => r.loadCpuUsPerRequest),
    ...(slices[0]?.brokerCpuUsPerRequest === undefined ? {} : { broker_cpu_us_per_request: medianOf(slices, (r) => r.brokerCpuUsPerRequest!) }),
  };
}
