import { once } from 'node:events';
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { alternate, medianOf, pairedRatio, slicing, sumOf } from '../compare.js';
import { webhookConfig } from '../configs.js';
import { cpuMs, startBaseline, startGateway } from '../processes.js';
import { judge, warmupSeconds, type Scenario } from '../scenario.js';
import { percentile } from '../stats.js';

const WINDOW = 16;
/** Requests in flight to the endpoint on both sides: the webhook's `concurrency`, the baseline's posters. */
const CONCURRENCY = 8;

interface Slice {
  deliveriesPerSecond: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
  cpuUsPerDelivery: number;
  /** The harness's CPU per delivery: the publisher and the endpoint run in this process. */
  loadCpuUsPerDelivery: number;
  /** Share of one core the side's server was busy, and the harness: whichever is near 1 bounds the rate. */
  busy: number;
  loadBusy: number;
  /** Connections the endpoint saw opened during the slice (keep-alive reuse: 1 or so). */
  connections: number;
}

/**
 * Messages published to a memory topic and delivered by a webhook target to an HTTP endpoint
 * (in this process), against a hand-written queue + consumer posting over kept-alive connections
 * with the same concurrency (CONCURRENCY requests in flight: the webhook's `concurrency`, which a
 * consume route whose targets are all webhooks also takes as messages in hand). The publisher keeps
 * at most WINDOW messages between publish and delivery, so neither side builds a backlog.
 */
export const webhook: Scenario = {
  name: 'webhook',
  describe: 'memory topic → webhook target (keep-alive), deliveries/s vs a hand-written queue + poster with the same concurrency',
  async run({ duration }) {
    const sink = createServer();
    let sinkConnections = 0;
    let onDelivery: (body: string) => void = () => undefined;
    sink.on('connection', () => sinkConnections++);
    sink.on('request', (req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        res.writeHead(200, { 'content-length': 0 });
        res.end();
        onDelivery(body);
      });
    });
    sink.keepAliveTimeout = 60_000;
    sink.listen(0, '127.0.0.1');
    await once(sink, 'listening');
    const sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}/hook`;
    const diy = await startBaseline('diy-webhook', { SINK_URL: sinkUrl, CONCURRENCY: String(CONCURRENCY) });
    const gw = await startGateway(webhookConfig(sinkUrl, CONCURRENCY));
    const agent = new Agent({ keepAlive: true, maxSockets: WINDOW });
    // Deliveries are routed to whichever side is being measured (they never overlap: the window drains between slices).
    const sides = {
      gateway: { url: gw.url('api', '/in'), pid: gw.process.pid! },
      baseline: { url: `http://127.0.0.1:${diy.port}/in`, pid: diy.pid },
    };
    const measure = (side: keyof typeof sides) => (seconds: number) => drive(sides[side].url, sides[side].pid, seconds);

    async function drive(url: string, pid: number, seconds: number): Promise<Slice> {
      const u = new URL(url);
      let published = 0;
      let delivered = 0;
      let errors = 0;
      let publishing = true;
      const sentAt = new Map<number, number>();
      const latencies: number[] = [];
      let drained: (() => void) | undefined;
      const publish = () => {
        while (publishing && published - delivered < WINDOW) {
          const seq = published++;
          sentAt.set(seq, performance.now());
          const body = `{"seq":${seq},"padding":"${'x'.repeat(64)}"}`;
          const req = request(
            { host: u.hostname, port: Number(u.port), path: u.pathname, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
            (res) => {
              if (res.statusCode !== 200) errors++;
              res.resume();
            },
          );
          req.on('error', () => errors++);
          req.end(body);
        }
      };
      onDelivery = (body) => {
        const seq = (JSON.parse(body) as { seq: number }).seq;
        const t = sentAt.get(seq);
        if (t !== undefined) latencies.push(performance.now() - t);
        sentAt.delete(seq);
        delivered++;
        if (publishing) publish();
        else if (delivered >= published) drained?.();
      };
      const connections0 = sinkConnections;
      const cpu0 = cpuMs(pid);
      const load0 = process.cpuUsage();
      const t0 = performance.now();
      publish();
      await new Promise((r) => setTimeout(r, seconds * 1000));
      publishing = false;
      const t1 = performance.now();
      const cpu = cpuMs(pid) - cpu0;
      const used = process.cpuUsage(load0);
      const loadMs = (used.user + used.system) / 1000;
      const count = delivered;
      if (delivered < published) await Promise.race([new Promise<void>((r) => (drained = r)), new Promise((r) => setTimeout(r, 5000))]);
      const sorted = latencies.sort((a, b) => a - b);
      return {
        deliveriesPerSecond: count / ((t1 - t0) / 1000),
        p50_ms: percentile(sorted, 0.5),
        p99_ms: percentile(sorted, 0.99),
        errors: errors + (published - delivered),
        cpuUsPerDelivery: (cpu * 1000) / Math.max(1, count),
        loadCpuUsPerDelivery: (loadMs * 1000) / Math.max(1, count),
        busy: cpu / (t1 - t0),
        loadBusy: loadMs / (t1 - t0),
        connections: sinkConnections - connections0,
      };
    }

    try {
      await measure('baseline')(warmupSeconds(duration));
      await measure('gateway')(warmupSeconds(duration));
      const s = await alternate(duration, measure('gateway'), measure('baseline'));
      return judge({
        metric: 'deliveries/s',
        baseline: { name: 'diy-queue-poster', ...figures(s.baseline) },
        ...figures(s.subject),
        ratio: pairedRatio(s, (r) => r.deliveriesPerSecond),
        concurrency: CONCURRENCY,
        rounds: slicing(duration).rounds,
        target: { field: 'ratio', op: '>=', limit: 1.0 },
      });
    } finally {
      agent.destroy();
      await Promise.all([gw.stop(), diy.stop()]);
      sink.closeAllConnections();
      sink.close();
    }
  },
};

function figures(slices: Slice[]) {
  return {
    value: medianOf(slices, (r) => r.deliveriesPerSecond),
    p50_ms: medianOf(slices, (r) => r.p50_ms),
    p99_ms: medianOf(slices, (r) => r.p99_ms),
    errors: sumOf(slices, (r) => r.errors),
    slices: slices.map((r) => r.deliveriesPerSecond),
    cpu_us_per_delivery: medianOf(slices, (r) => r.cpuUsPerDelivery),
    load_cpu_us_per_delivery: medianOf(slices, (r) => r.loadCpuUsPerDelivery),
    busy: medianOf(slices, (r) => r.busy),
    load_busy: medianOf(slices, (r) => r.loadBusy),
    sink_connections_opened: sumOf(slices, (r) => r.connections),
  };
}
