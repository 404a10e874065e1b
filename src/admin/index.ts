import type { AdminPlan } from '../plan/types.js';
import type { GatewayMetrics } from '../telemetry/metrics.js';
import type { TapHub } from '../telemetry/tap.js';
import { mountDashboard } from './dashboard.js';
import { mountMetrics } from './metrics.js';
import { AdminServer, type AdminSource } from './server.js';
import { mountTap } from './tap.js';

/** What the full admin server reads: the gateway (AdminSource) and its telemetry. */
export interface ObservedSource extends AdminSource {
  readonly metrics: GatewayMetrics;
  readonly tap: TapHub;
  readonly routes: ReadonlyMap<string, unknown>;
}

/** The admin API with the observability endpoints: /metrics, /admin/stats, /admin/tap and the dashboard. */
export function createAdminServer(source: ObservedSource, plan: AdminPlan): AdminServer {
  const admin = new AdminServer(source, plan);
  mountMetrics(admin, source.metrics);
  mountTap(admin, source.tap, (route) => source.routes.has(route));
  mountDashboard(admin);
  return admin;
}
