import { sendJson } from '../kinds/listeners/http-reply.js';
import type { GatewayMetrics } from '../telemetry/metrics.js';
import type { AdminServer } from './server.js';

/** `GET /metrics` (Prometheus text format) and `GET /admin/stats` (the dashboard's JSON) on the admin server. */
export function mountMetrics(admin: AdminServer, metrics: GatewayMetrics): void {
  // Built now rather than at the first scrape, so Node's default metrics (GC, event-loop lag) count from here.
  metrics.prometheus();
  admin.onConnectionDropped(() => metrics.adminConnectionDropped());
  admin.route('GET /metrics', async (_req, res) => {
    const text = await metrics.text();
    res.writeHead(200, { 'content-type': metrics.contentType, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  });
  admin.route('GET /admin/stats', (_req, res) => sendJson(res, 200, metrics.snapshot()));
}
