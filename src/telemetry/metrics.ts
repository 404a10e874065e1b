import { createRequire } from 'node:module';
import { WEBHOOK_RESULTS, type WebhookCounters, type WebhookResult } from '../kinds/targets/webhook.js';
import {
  WS_FRAME_FAILURE_CODES,
  wsCloseCodeLabel,
  type BrokerRuntime,
  type BrokerTelemetry,
  type KafkaCloseReason,
  type ListenerRuntime,
  type ListenerTelemetry,
  type Telemetry,
  type WsFrameFailureCode,
} from '../kinds/contracts.js';
import type { Outcome } from '../core/outcome.js';
import type { Prometheus } from './prometheus.js';

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
  /**
   * Answers of this route's webhook targets, per target (its place in the route's `to`, the
   * `target` label: bounded by the config, unlike a computed URL) and result (every try counts).
   */
  readonly webhookAnswers = new Map<number, Map<WebhookResult, number>>();
  /**
   * The counters of the webhook target at `place` in the route's `to`, its series made at 0 as it is
   * built. They hold that place's counts, not the place: a target a reload retired (its tries go on
   * while it drains) whose place the new config has no webhook at counts into nothing, rather than
   * bringing back, after retain() removed them, series for a webhook the route no longer has.
   */
  webhook(place: number): WebhookCounters {
    const answers = this.answersOf(place);
    return { answered: (r) => void answers.set(r, (answers.get(r) ?? 0) + 1) };
  }
  /** The result counts at `place`, made with every result at 0. */
  private answersOf(place: number): Map<WebhookResult, number> {
    let answers = this.webhookAnswers.get(place);
    if (!answers) this.webhookAnswers.set(place, (answers = new Map(WEBHOOK_RESULTS.map((r) => [r, 0]))));
    return answers;
  }
  /**
   * The places of the route's webhook targets (GatewayMetrics.retain): each one's result series
   * exist from then on, at 0 (a series born at its first 5xx is no increase to rate()); a place a
   * reload left without a webhook loses its series (zeros left would say it has one).
   */
  sendsToWebhooks(places: readonly number[]): void {
    for (const place of this.webhookAnswers.keys()) if (!places.includes(place)) this.webhookAnswers.delete(place);
    for (const place of places) this.answersOf(place);
  }
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

export class ListenerStats implements ListenerTelemetry {
  /** Responses by status code, indexed by the code itself. */
  readonly responses = new Float64Array(600);
  httpResponse(status: number): void {
    if (status >= 100 && status < 600) this.responses[status]!++;
  }
  /** WebSocket error frames by status, indexed by the status itself. */
  readonly errorFrames = new Float64Array(600);
  errorFrame(status: number): void {
    if (status >= 100 && status < 600) this.errorFrames[status]!++;
  }
  /** Client connections a kafka listener closed, by reason. */
  readonly kafkaClosed: Record<KafkaCloseReason, number> = { bad_request: 0, upstream: 0 };
  kafkaConnectionClosed(reason: KafkaCloseReason): void {
    this.kafkaClosed[reason]++;
  }
  /** New connections closed at the listener's maxConnections (http, websocket, kafka). */
  connectionsDropped = 0;
  connectionDropped(): void {
    this.connectionsDropped++;
  }
  /** TLS handshakes a client ended refusing the listener's certificate (http, websocket). */
  tlsCertificateRefusals = 0;
  tlsCertificateRefused(): void {
    this.tlsCertificateRefusals++;
  }
  /** Websocket clients and event streams disconnected over their send bound. */
  slowClientsDisconnected = 0;
  slowClientDisconnected(): void {
    this.slowClientsDisconnected++;
  }
  /** Websocket handshakes accepted (connections opened, reconnects included). */
  connectionsAccepted = 0;
  clientConnected(): void {
    this.connectionsAccepted++;
  }
  /** Websocket clients cut off for not answering a ping (a device asleep, a link gone). */
  pingTimeouts = 0;
  pingTimedOut(): void {
    this.pingTimeouts++;
  }
  /** Websocket clients closed for a frame that fails the connection, by close code. */
  readonly frameFailures = noFrameFailures();
  frameFailure(code: WsFrameFailureCode): void {
    this.frameFailures[code]++;
  }
  /** Websocket connections closed, by the `code` label of the close code ws reports (wsCloseCodeLabel: a bounded set). */
  readonly closes = new Map<string, number>();
  clientClosed(code: number): void {
    const label = wsCloseCodeLabel(code);
    this.closes.set(label, (this.closes.get(label) ?? 0) + 1);
  }
}

/** The most names of retired routes a broker's counters remember (BrokerStats.retired), the oldest forgotten first. */
const RETIRED_ROUTES_KEPT = 1000;

export class BrokerStats implements BrokerTelemetry {
  producerErrors = 0;
  /** By route; '' when the broker could not tell which route. Error path only, so a Map is fine. */
  readonly consumerErrors = new Map<string, number>();
  readonly consumerCrashes = new Map<string, number>();
  readonly consumerRejoins = new Map<string, number>();
  /** The routes reading this broker in the config applied last (readBy). */
  private readers = new Set<string>();
  /**
   * Routes that read this broker once and no longer do (removed, renamed, or reading elsewhere
   * now). Their series went when the reload that did so was applied, but their consumer may still
   * count while it stops (a Kafka member past its stop's bound, a JetStream read ending): a count
   * then would bring the series back, for good, with no route behind it. It goes nowhere instead.
   */
  private readonly retired = new Set<string>();
  constructor(readonly kind: string) {}
  producerError(): void {
    this.producerErrors++;
  }
  consumerError(route = '', count = 1): void {
    if (!this.retired.has(route)) this.consumerErrors.set(route, (this.consumerErrors.get(route) ?? 0) + count);
  }
  consumerCrash(route: string): void {
    if (!this.retired.has(route)) this.consumerCrashes.set(route, (this.consumerCrashes.get(route) ?? 0) + 1);
  }
  consumerRejoin(route: string): void {
    if (!this.retired.has(route)) this.consumerRejoins.set(route, (this.consumerRejoins.get(route) ?? 0) + 1);
  }
  /**
   * The routes that consume from this broker now (GatewayMetrics.retain). Their per-route series
   * exist from then on, at 0, so that the first error, crash or rejoin is an increase Prometheus
   * sees (a series born at 1 is not one to `rate()` or `increase()`), as the other counters'
   * series exist from the start. Those of any other route go, the broker's own ('') kept: a route
   * removed, or one that reads another broker now or a listener (its zeros here would be stale).
   * A route that read it and does not now is retired: what its consumer counts while it stops is
   * not counted (a route of that name reading it again counts from 0).
   */
  readBy(routes: ReadonlySet<string>): void {
    for (const route of this.readers) if (!routes.has(route)) this.retired.add(route);
    for (const route of routes) this.retired.delete(route);
    for (const route of this.retired) {
      if (this.retired.size <= RETIRED_ROUTES_KEPT) break;
      this.retired.delete(route);
    }
    this.readers = new Set(routes);
    const all = [this.consumerErrors, this.consumerCrashes, this.consumerRejoins];
    for (const counts of all) for (const route of counts.keys()) if (route !== '' && !routes.has(route)) counts.delete(route);
    const counted = this.kind === 'kafka' ? all : [this.consumerErrors, this.consumerCrashes];
    for (const route of routes) for (const c of counted) if (!c.has(route)) c.set(route, 0);
  }
}

/** A route of the config applied, as GatewayMetrics.retain keeps its series. */
export interface RetainedRoute {
  name: string;
  /** The broker a consume route reads; undefined for a route from a listener. */
  reads: string | undefined;
  /** The places of its webhook targets in its `to`, from 0 (none: it has no webhook). */
  webhooks: readonly number[];
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
  listeners: Record<
    string,
    {
      kind: string;
      clients?: number;
      responses?: Record<string, number>;
      errorFrames?: Record<string, number>;
      connectionsDropped: number;
      slowClientsDisconnected?: number;
      connectionsAccepted?: number;
      tlsCertificateRefusals?: number;
      pingTimeouts?: number;
      frameFailures?: Record<WsFrameFailureCode, number>;
      closes?: Record<string, number>;
      closed?: Record<KafkaCloseReason, number>;
    }
  >;
  consumerLag: { broker: string; kind: string; route: string; topic: string; partition: number; lag: number }[];
  /** Per broker; `rejoins` on kafka brokers only (the one kind with consumer groups it joins: eventgate_kafka_consumer_rejoins_total). */
  brokerErrors: Record<string, { kind: string; producer: number; consumer: number; crashes: number; rejoins?: number }>;
  reloads: { success: number; failure: number; rolledBack: number };
}

/**
 * The gateway's counters (the components' Telemetry) and, once the admin server serves
 * `/metrics`, their Prometheus form (telemetry/prometheus.ts, with prom-client: loaded only then,
 * so a gateway without an admin server does not carry it). Everything is read from plain counters
 * and the running components when scraped; nothing here runs per message.
 */
export class GatewayMetrics implements Telemetry {
  private readonly routes = new Map<string, RouteStats>();
  private readonly listenerStats = new Map<string, ListenerStats>();
  private readonly brokerStats = new Map<string, BrokerStats>();
  /**
   * A reload's broker of another kind than the running one of its name: it counts here until its
   * config is applied (retain), so that a reload rejected or rolled back leaves the running
   * broker's counters in place (they were replaced at the build, and the running broker, which
   * keeps its handle, then counted into nothing).
   */
  private readonly otherKind = new Map<string, BrokerStats>();
  private readonly reloads = { success: 0, failure: 0, rolledBack: 0 };
  /** New connections the admin server closed at its maxConnections (it is not a listener: a series of its own). */
  private adminDropped = 0;
  private version: string | undefined;
  private lastReloadOk = true;
  private readonly brokerKinds: Set<string>;
  private prom: Prometheus | undefined;

  constructor(
    private readonly source: MetricsSource,
    brokerKinds: Iterable<string>,
  ) {
    this.brokerKinds = new Set(brokerKinds);
  }

  /** The Prometheus registry, built (and prom-client loaded) on first use: the admin server asks for it when it starts. */
  prometheus(): Prometheus {
    if (!this.prom) {
      const { Prometheus: Registry } = createRequire(import.meta.url)('./prometheus.js') as { Prometheus: typeof Prometheus };
      const self = this;
      this.prom = new Registry({
        source: this.source,
        routes: this.routes,
        listenerStats: this.listenerStats,
        brokerStats: this.brokerStats,
        reloads: this.reloads,
        get version() {
          return self.version;
        },
        get lastReloadOk() {
          return self.lastReloadOk;
        },
        get adminConnectionsDropped() {
          return self.adminDropped;
        },
      });
      for (const kind of this.brokerKinds) this.prom.brokerFamilies(kind);
    }
    return this.prom;
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
    if (!s) this.brokerStats.set(name, (s = new BrokerStats(kind)));
    else if (s.kind !== kind) {
      const other = this.otherKind.get(name);
      if (other?.kind === kind) s = other;
      else this.otherKind.set(name, (s = new BrokerStats(kind)));
    }
    if (!this.brokerKinds.has(kind)) {
      this.brokerKinds.add(kind);
      this.prom?.brokerFamilies(kind);
    }
    return s;
  }

  /** The admin server closed a new connection at its maxConnections (eventgate_admin_connections_dropped_total). */
  adminConnectionDropped(): void {
    this.adminDropped++;
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

  /**
   * Forgets the series of components a reload removed (a component added again starts from zero),
   * and makes each route's per-broker and webhook series those of the config applied. Called with
   * the running config again after a reload that failed: what its build added goes.
   */
  retain(names: { routes: Iterable<RetainedRoute>; listeners: Iterable<string>; brokers: Iterable<{ name: string; kind: string }> }): void {
    const routes = [...names.routes];
    prune(
      this.routes,
      routes.map((r) => r.name),
    );
    prune(this.listenerStats, names.listeners);
    const brokers = [...names.brokers];
    for (const { name, kind } of brokers) {
      const other = this.otherKind.get(name);
      if (other?.kind === kind) this.brokerStats.set(name, other);
    }
    this.otherKind.clear();
    prune(
      this.brokerStats,
      brokers.map((b) => b.name),
    );
    const readers = new Map<string, Set<string>>();
    for (const r of routes) {
      this.route(r.name).sendsToWebhooks(r.webhooks);
      if (r.reads === undefined) continue;
      const of = readers.get(r.reads);
      if (of) of.add(r.name);
      else readers.set(r.reads, new Set([r.name]));
    }
    for (const [broker, s] of this.brokerStats) s.readBy(readers.get(broker) ?? new Set());
  }

  get contentType(): string {
    return this.prometheus().registry.contentType;
  }

  text(): Promise<string> {
    return this.prometheus().registry.metrics();
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
      const stats = this.listenerStats.get(name);
      // The listener counters /metrics has, as its families list them (each from the start, at 0).
      const entry: StatsSnapshot['listeners'][string] = { kind: l.kind, connectionsDropped: stats?.connectionsDropped ?? 0 };
      if (l.connections) entry.clients = l.connections();
      if (l.kind === 'http' || l.kind === 'websocket') {
        entry.slowClientsDisconnected = stats?.slowClientsDisconnected ?? 0;
        entry.tlsCertificateRefusals = stats?.tlsCertificateRefusals ?? 0;
      }
      if (l.kind === 'websocket') {
        entry.connectionsAccepted = stats?.connectionsAccepted ?? 0;
        entry.pingTimeouts = stats?.pingTimeouts ?? 0;
        entry.frameFailures = { ...(stats?.frameFailures ?? noFrameFailures()) };
        entry.closes = Object.fromEntries(stats?.closes ?? []);
      }
      if (l.kind === 'kafka') entry.closed = { ...(stats?.kafkaClosed ?? { bad_request: 0, upstream: 0 }) };
      if (stats) {
        // HTTP answers by status (a websocket listener's: its refused handshakes), and a websocket listener's error frames.
        const byStatus = (counts: Float64Array) => {
          const out: Record<string, number> = {};
          counts.forEach((n, status) => {
            if (n > 0) out[status] = n;
          });
          return out;
        };
        entry.responses = byStatus(stats.responses);
        if (l.kind === 'websocket') entry.errorFrames = byStatus(stats.errorFrames);
      }
      listeners[name] = entry;
    }
    const consumerLag: StatsSnapshot['consumerLag'] = [];
    for (const [broker, b] of this.source.brokers) for (const l of b.consumerLag?.() ?? []) consumerLag.push({ broker, kind: b.kind, ...l });
    const brokerErrors: StatsSnapshot['brokerErrors'] = {};
    for (const [broker, s] of this.brokerStats) {
      const errors: StatsSnapshot['brokerErrors'][string] = { kind: s.kind, producer: s.producerErrors, consumer: total(s.consumerErrors), crashes: total(s.consumerCrashes) };
      if (s.kind === 'kafka') errors.rejoins = total(s.consumerRejoins);
      brokerErrors[broker] = errors;
    }
    return { at: Date.now(), routes, listeners, consumerLag, brokerErrors, reloads: { ...this.reloads } };
  }
}

/** The sum of a counter's per-route counts. */
function total(counts: ReadonlyMap<string, number>): number {
  let n = 0;
  for (const c of counts.values()) n += c;
  return n;
}

function prune<T>(map: Map<string, T>, keep: Iterable<string>): void {
  const names = new Set(keep);
  for (const name of map.keys()) if (!names.has(name)) map.delete(name);
}

/** Each frame-failure close code at 0 (the counters exist from the start). */
function noFrameFailures(): Record<WsFrameFailureCode, number> {
  return Object.fromEntries(WS_FRAME_FAILURE_CODES.map((code) => [code, 0])) as Record<WsFrameFailureCode, number>;
}
