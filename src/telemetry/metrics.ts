import type { WebhookCounters, WebhookResult } from '../kinds/targets/webhook.js';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type LabelValues, type MetricObjectWithValues, type MetricValueWithName } from 'prom-client';
import type { BrokerRuntime, BrokerTelemetry, ListenerRuntime, ListenerTelemetry, Telemetry } from '../kinds/contracts.js';
import type { Outcome } from '../core/outcome.js';

/** Upper bounds (seconds) of the route latency histogram: a gateway hop is usually well under 10 ms. */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/** The `outcome` label values of eventgate_route_messages_total. */
export const OUTCOME_LABELS = ['received', 'delivered', 'filtered', 'invalid', 'tagged', 'deadlettered', 'failed', 'rejected'] as const;
export type OutcomeLabel = (typeof OUTCOME_LABELS)[number];

/**
 * One route's counters, updated on the message path. Plain numbers: prom-client's label children
 * hash their label values into a string on every inc/observe, so the registry reads these only
 * when it is scraped. Every message is `received` once per attempt and ends in exactly one other
 * outcome (`tagged` messages, delivered with the validation-error header, are not also counted as
 * `delivered`); a consume route's message sent to the dead-letter topic after its attempts failed
 * is counted once more, as `deadlettered`.
 */
export class RouteStats {
  received = 0;
  delivered = 0;
  filtered = 0;
  invalid = 0;
  tagged = 0;
  deadlettered = 0;
  failed = 0;
  rejected = 0;
  /** Consumed messages retried past the route's attempts with no dead-letter target to take them (a gauge). */
  stalled = 0;
  /** Answers of this route's webhook targets, per result (every try counts). */
  readonly webhookAnswers = new Map<WebhookResult, number>();
  readonly webhook: WebhookCounters = { answered: (r) => void this.webhookAnswers.set(r, (this.webhookAnswers.get(r) ?? 0) + 1) };
  /** Count per latency bucket (not cumulative); the last slot is +Inf. */
  readonly latencyBuckets = new Float64Array(LATENCY_BUCKETS.length + 1);
  latencySum = 0;
  latencyCount = 0;

  /** Latency is observed for messages that reached targets that acknowledged them (delivered, tagged, dead-lettered). */
  record(outcome: Outcome, startedAt: number): void {
    this.count(outcome, (performance.now() - startedAt) / 1000);
  }

  /** record() with the latency known (records settled together share theirs). */
  count(outcome: Outcome, seconds: number): void {
    switch (outcome.outcome) {
      case 'delivered':
        if (outcome.tagged) this.tagged++;
        else this.delivered++;
        this.observe(seconds);
        return;
      case 'deadlettered':
        this.deadlettered++;
        this.observe(seconds);
        return;
      case 'filtered':
        this.filtered++;
        return;
      case 'invalid':
        this.invalid++;
        return;
      case 'rejected':
        this.rejected++;
        return;
      case 'failed':
        this.failed++;
        return;
    }
  }

  /** `n` messages delivered at once, with the same latency. */
  countDelivered(n: number, seconds: number): void {
    if (n === 0) return;
    this.delivered += n;
    this.observe(seconds, n);
  }

  private observe(seconds: number, n = 1): void {
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]!) i++;
    this.latencyBuckets[i]! += n;
    this.latencySum += seconds * n;
    this.latencyCount += n;
  }
}

class ListenerStats implements ListenerTelemetry {
  /** Responses by status code, indexed by the code itself. */
  readonly responses = new Float64Array(600);
  httpResponse(status: number): void {
    if (status >= 100 && status < 600) this.responses[status]!++;
  }
}

class BrokerStats implements BrokerTelemetry {
  producerErrors = 0;
  /** By route; '' when the broker could not tell which route. Error path only, so a Map is fine. */
  readonly consumerErrors = new Map<string, number>();
  constructor(readonly kind: string) {}
  producerError(): void {
    this.producerErrors++;
  }
  consumerError(route = ''): void {
    this.consumerErrors.set(route, (this.consumerErrors.get(route) ?? 0) + 1);
  }
  readonly consumerCrashes = new Map<string, number>();
  consumerCrash(route: string): void {
    this.consumerCrashes.set(route, (this.consumerCrashes.get(route) ?? 0) + 1);
  }
}

/** What the metrics read from the running gateway at scrape time. */
export interface MetricsSource {
  readonly listeners: ReadonlyMap<string, ListenerRuntime>;
  readonly brokers: ReadonlyMap<string, BrokerRuntime>;
  readiness(): { ready: boolean };
}

/** The JSON form of the counters, for the dashboard (`GET /admin/stats`). */
export interface StatsSnapshot {
  at: number;
  routes: Record<string, Record<OutcomeLabel, number> & { latency: { count: number; sum: number; buckets: { le: number | '+Inf'; count: number }[] } }>;
  listeners: Record<string, { kind: string; clients?: number; responses?: Record<string, number> }>;
  consumerLag: { broker: string; kind: string; route: string; topic: string; partition: number; lag: number }[];
  brokerErrors: Record<string, { kind: string; producer: number; consumer: number }>;
  reloads: { success: number; failure: number; rolledBack: number };
}

/**
 * The gateway's Prometheus metrics, in a Registry of its own (never prom-client's global one, so
 * two gateways in one process, as in tests, do not collide). Everything is read from plain
 * counters and the running components when scraped; nothing here runs per message.
 */
export class GatewayMetrics implements Telemetry {
  readonly registry = new Registry();
  private readonly routes = new Map<string, RouteStats>();
  private readonly listenerStats = new Map<string, ListenerStats>();
  private readonly brokerStats = new Map<string, BrokerStats>();
  private readonly reloads = { success: 0, failure: 0, rolledBack: 0 };
  private version: string | undefined;
  private lastReloadOk = true;

  constructor(
    private readonly source: MetricsSource,
    brokerKinds: Iterable<string>,
  ) {
    const registers = [this.registry];
    const routes = this.routes;
    new Counter({
      name: 'eventgate_route_messages_total',
      help: 'Messages per route and outcome: received (every attempt), then exactly one of delivered, filtered, invalid, tagged, deadlettered, failed, rejected.',
      labelNames: ['route', 'outcome'],
      registers,
      collect() {
        this.reset();
        for (const [route, s] of routes) for (const outcome of OUTCOME_LABELS) this.inc({ route, outcome }, s[outcome]);
      },
    });
    new RouteLatencyHistogram(this.registry, routes);
    new Counter({
      name: 'eventgate_webhook_requests_total',
      help: 'Requests webhook targets sent (every try), per route and result: 2xx, 3xx, 4xx, 5xx, timeout or connection (refused, reset, unresolvable).',
      labelNames: ['route', 'result'],
      registers,
      collect() {
        this.reset();
        for (const [route, s] of routes) s.webhookAnswers.forEach((n, result) => this.inc({ route, result }, n));
      },
    });
    new Gauge({
      name: 'eventgate_route_stalled_messages',
      help: 'Consumed messages a route has tried 5 times and keeps retrying because it has no deadletter target; each holds up its partition. /admin/status says which and why.',
      labelNames: ['route'],
      registers,
      collect() {
        this.reset();
        for (const [route, s] of routes) this.set({ route }, s.stalled);
      },
    });
    new Gauge({
      name: 'eventgate_event_stream_clients',
      help: 'Server-Sent Events clients connected, per http listener.',
      labelNames: ['listener'],
      registers,
      collect() {
        this.reset();
        for (const [listener, l] of source.listeners) if (l.kind === 'http' && l.connections) this.set({ listener }, l.connections());
      },
    });
    new Gauge({
      name: 'eventgate_websocket_clients',
      help: 'WebSocket clients connected, per listener.',
      labelNames: ['listener'],
      registers,
      collect() {
        this.reset();
        for (const [listener, l] of source.listeners) if (l.kind === 'websocket' && l.connections) this.set({ listener }, l.connections());
      },
    });
    const listenerStats = this.listenerStats;
    new Counter({
      name: 'eventgate_http_requests_total',
      help: 'HTTP requests answered by the listeners, per listener and status code.',
      labelNames: ['listener', 'status'],
      registers,
      collect() {
        this.reset();
        for (const [listener, s] of listenerStats) {
          s.responses.forEach((n, status) => {
            if (n > 0) this.inc({ listener, status: String(status) }, n);
          });
        }
      },
    });
    const reloads = this.reloads;
    new Counter({
      name: 'eventgate_config_reloads_total',
      help: 'Config reloads (file change, SIGHUP, POST /admin/reload) by result: success (applied or unchanged), failure (the new config was refused; the old one kept serving) or rolled_back (the new config could not be put in place, e.g. a port was taken; the old one was restored).',
      labelNames: ['result'],
      registers,
      collect() {
        this.reset();
        this.inc({ result: 'success' }, reloads.success);
        this.inc({ result: 'failure' }, reloads.failure);
        this.inc({ result: 'rolled_back' }, reloads.rolledBack);
      },
    });
    const self = this;
    new Gauge({
      name: 'eventgate_config_info',
      help: 'The running config version (hash of the config and every file it references); always 1.',
      labelNames: ['version'],
      registers,
      collect() {
        this.reset();
        if (self.version) this.set({ version: self.version }, 1);
      },
    });
    new Gauge({
      name: 'eventgate_config_last_reload_successful',
      help: '1 when the last config reload was applied (or none was tried), 0 while the gateway runs an older config because the last reload failed.',
      registers,
      collect() {
        this.set(self.lastReloadOk ? 1 : 0);
      },
    });
    new Gauge({
      name: 'eventgate_ready',
      help: '1 when every listener is bound and every broker connected (as GET /readyz), else 0.',
      registers,
      collect() {
        this.set(source.readiness().ready ? 1 : 0);
      },
    });
    for (const kind of new Set(brokerKinds)) this.brokerFamilies(kind);
    collectDefaultMetrics({ register: this.registry });
  }

  /** `eventgate_<kind>_consumer_lag`, `..._producer_errors_total`, `..._consumer_errors_total` for one broker kind. */
  private brokerFamilies(kind: string): void {
    const prefix = `eventgate_${kind.replace(/[^A-Za-z0-9_]/g, '_')}`;
    const registers = [this.registry];
    const { source, brokerStats } = this;
    new Gauge({
      name: `${prefix}_consumer_lag`,
      help: `Messages a route has yet to take from its source (${kind} brokers): for partitioned logs the distance from the end of each partition to the route's consumer position; docs/operations.md says what each kind counts.`,
      labelNames: ['route', 'topic', 'partition'],
      registers,
      collect() {
        this.reset();
        for (const b of source.brokers.values()) {
          if (b.kind !== kind || !b.consumerLag) continue;
          for (const l of b.consumerLag()) this.set({ route: l.route, topic: l.topic, partition: String(l.partition) }, l.lag);
        }
      },
    });
    new Counter({
      name: `${prefix}_producer_errors_total`,
      help: `Publishes a ${kind} broker could not complete.`,
      labelNames: ['broker'],
      registers,
      collect() {
        this.reset();
        for (const [broker, s] of brokerStats) if (s.kind === kind) this.inc({ broker }, s.producerErrors);
      },
    });
    new Counter({
      name: `${prefix}_consumer_errors_total`,
      help: `Consumer failures on ${kind} brokers: fetch, commit or group errors, and messages a route could not take (retried).`,
      labelNames: ['broker', 'route'],
      registers,
      collect() {
        this.reset();
        for (const [broker, s] of brokerStats) if (s.kind === kind) for (const [route, n] of s.consumerErrors) this.inc({ broker, route }, n);
      },
    });
    new Counter({
      name: `${prefix}_consumer_crashes_total`,
      help: `Consumers of a route that crashed (on ${kind} brokers) and were started again with backoff; /readyz says why while one is down.`,
      labelNames: ['broker', 'route'],
      registers,
      collect() {
        this.reset();
        for (const [broker, s] of brokerStats) if (s.kind === kind) for (const [route, n] of s.consumerCrashes) this.inc({ broker, route }, n);
      },
    });
  }

  /** The counters of a route; a route rebuilt by a reload keeps its name and so its counters. */
  route(name: string): RouteStats {
    let s = this.routes.get(name);
    if (!s) this.routes.set(name, (s = new RouteStats()));
    return s;
  }

  listener(name: string): ListenerTelemetry {
    let s = this.listenerStats.get(name);
    if (!s) this.listenerStats.set(name, (s = new ListenerStats()));
    return s;
  }

  broker(name: string, kind: string): BrokerTelemetry {
    let s = this.brokerStats.get(name);
    if (!s || s.kind !== kind) this.brokerStats.set(name, (s = new BrokerStats(kind)));
    if (this.registry.getSingleMetric(`eventgate_${kind.replace(/[^A-Za-z0-9_]/g, '_')}_consumer_lag`) === undefined) this.brokerFamilies(kind);
    return s;
  }

  /** The running config version (eventgate_config_info). */
  setVersion(version: string): void {
    this.version = version;
  }

  /** A reload found nothing to change, or was applied. */
  reloadSucceeded(): void {
    this.reloads.success++;
    this.lastReloadOk = true;
  }

  reloadFailed(): void {
    this.reloads.failure++;
    this.lastReloadOk = false;
  }

  /** A valid config could not be put in place; the running one was restored. */
  reloadRolledBack(): void {
    this.reloads.rolledBack++;
    this.lastReloadOk = false;
  }

  /** Forgets the series of components a reload removed (a component added again starts from zero). */
  retain(names: { routes: Iterable<string>; listeners: Iterable<string>; brokers: Iterable<string> }): void {
    prune(this.routes, names.routes);
    prune(this.listenerStats, names.listeners);
    prune(this.brokerStats, names.brokers);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  snapshot(): StatsSnapshot {
    const routes: StatsSnapshot['routes'] = {};
    for (const [name, s] of this.routes) {
      const counts = Object.fromEntries(OUTCOME_LABELS.map((o) => [o, s[o]])) as Record<OutcomeLabel, number>;
      let acc = 0;
      const buckets: { le: number | '+Inf'; count: number }[] = LATENCY_BUCKETS.map((le, i) => ({ le, count: (acc += s.latencyBuckets[i]!) }));
      buckets.push({ le: '+Inf', count: s.latencyCount });
      routes[name] = { ...counts, latency: { count: s.latencyCount, sum: s.latencySum, buckets } };
    }
    const listeners: StatsSnapshot['listeners'] = {};
    for (const [name, l] of this.source.listeners) {
      const entry: StatsSnapshot['listeners'][string] = { kind: l.kind };
      if (l.connections) entry.clients = l.connections();
      const stats = this.listenerStats.get(name);
      if (stats) {
        const responses: Record<string, number> = {};
        stats.responses.forEach((n, status) => {
          if (n > 0) responses[status] = n;
        });
        entry.responses = responses;
      }
      listeners[name] = entry;
    }
    const consumerLag: StatsSnapshot['consumerLag'] = [];
    for (const [broker, b] of this.source.brokers) for (const l of b.consumerLag?.() ?? []) consumerLag.push({ broker, kind: b.kind, ...l });
    const brokerErrors: StatsSnapshot['brokerErrors'] = {};
    for (const [broker, s] of this.brokerStats) {
      let consumer = 0;
      for (const n of s.consumerErrors.values()) consumer += n;
      brokerErrors[broker] = { kind: s.kind, producer: s.producerErrors, consumer };
    }
    return { at: Date.now(), routes, listeners, consumerLag, brokerErrors, reloads: { ...this.reloads } };
  }
}

function prune<T>(map: Map<string, T>, keep: Iterable<string>): void {
  const names = new Set(keep);
  for (const name of map.keys()) if (!names.has(name)) map.delete(name);
}

type LatencyValue = MetricValueWithName<'route' | 'le'>;

/**
 * eventgate_route_latency_seconds, rendered from RouteStats when scraped. prom-client's
 * Histogram.observe() builds a label-hash string per call, too much for the message path, and it
 * has no way to load bucket counts kept elsewhere; so this subclass answers get() (which the
 * Registry calls to render it) from the per-route arrays instead of its own storage.
 */
const LATENCY_NAME = 'eventgate_route_latency_seconds';
const LATENCY_HELP = 'Time from a message entering its route until every target acknowledged it (delivered, tagged and dead-lettered messages).';

class RouteLatencyHistogram extends Histogram<'route'> {
  constructor(
    registry: Registry,
    private readonly stats: ReadonlyMap<string, RouteStats>,
  ) {
    super({
      name: LATENCY_NAME,
      help: LATENCY_HELP,
      labelNames: ['route'],
      buckets: [...LATENCY_BUCKETS],
      registers: [registry],
    });
  }

  override async get(): Promise<MetricObjectWithValues<MetricValueWithName<'route'>>> {
    const values: LatencyValue[] = [];
    const bucket = `${LATENCY_NAME}_bucket`;
    for (const [route, s] of this.stats) {
      let acc = 0;
      LATENCY_BUCKETS.forEach((le, i) => {
        acc += s.latencyBuckets[i]!;
        values.push({ metricName: bucket, labels: { route, le }, value: acc });
      });
      values.push({ metricName: bucket, labels: { route, le: '+Inf' }, value: s.latencyCount });
      values.push({ metricName: `${LATENCY_NAME}_sum`, labels: { route } as LabelValues<'route' | 'le'>, value: s.latencySum });
      values.push({ metricName: `${LATENCY_NAME}_count`, labels: { route } as LabelValues<'route' | 'le'>, value: s.latencyCount });
    }
    return { name: LATENCY_NAME, help: LATENCY_HELP, type: 'histogram', aggregator: 'sum', values } as unknown as MetricObjectWithValues<MetricValueWithName<'route'>>;
  }

  /** The Registry prefers this to get() when rendering text; the values above already carry all their labels. */
  getForPromString(): Promise<MetricObjectWithValues<MetricValueWithName<'route'>>> {
    return this.get();
  }
}
