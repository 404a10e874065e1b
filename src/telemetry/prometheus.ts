import type * as PromClient from 'prom-client';
import type { LabelValues, MetricObjectWithValues, MetricValueWithName } from 'prom-client';
import { bundled } from '../core/bundled.js';
import { KAFKA_CLOSE_REASONS, WS_FRAME_FAILURE_CODES } from '../kinds/contracts.js';
import { LATENCY_BUCKETS, OUTCOME_LABELS, type BrokerStats, type ListenerStats, type MetricsSource, type RouteStats } from './metrics.js';

const { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } = bundled<typeof PromClient>('prom-client');

/** What the Prometheus families read when scraped: the gateway's counters (telemetry/metrics.ts). */
export interface Counters {
  readonly source: MetricsSource;
  readonly routes: ReadonlyMap<string, RouteStats>;
  readonly listenerStats: ReadonlyMap<string, ListenerStats>;
  readonly brokerStats: ReadonlyMap<string, BrokerStats>;
  readonly reloads: { readonly success: number; readonly failure: number; readonly rolledBack: number };
  readonly version: string | undefined;
  readonly lastReloadOk: boolean;
  readonly adminConnectionsDropped: number;
}

/**
 * The gateway's Prometheus metrics, in a Registry of its own (never prom-client's global one, so
 * two gateways in one process, as in tests, do not collide), with Node's default metrics. Built
 * when the admin server serves `/metrics` (GatewayMetrics.prometheus()).
 */
export class Prometheus {
  readonly registry = new Registry();

  constructor(private readonly counters: Counters) {
    const registers = [this.registry];
    const { routes, source } = counters;
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
      help: "Requests webhook targets sent (every try, and a request sent again after a kept-alive connection was lost), per route, target (its place in the route's to, from 0) and result: 2xx, 3xx, 4xx, 5xx, timeout or connection (refused, reset, unresolvable).",
      labelNames: ['route', 'target', 'result'],
      registers,
      collect() {
        this.reset();
        for (const [route, s] of routes)
          for (const [place, answers] of s.webhookAnswers) {
            const target = String(place);
            answers.forEach((n, result) => this.inc({ route, target, result }, n));
          }
      },
    });
    new Gauge({
      name: 'eventgate_route_stalled_messages',
      help: 'Consumed messages a route has tried 5 times and keeps retrying because it has no deadletter target, or its deadletter target does not take them either; each holds up its partition. /admin/status says which and why.',
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
    const listenerStats = counters.listenerStats;
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
    new Counter({
      name: 'eventgate_websocket_error_frames_total',
      help: 'Error frames the WebSocket listeners sent, per listener and status: frames refused before any route (not JSON, binary, on a forward-only path) and by a publish route (invalid, auth, rate limit, broker).',
      labelNames: ['listener', 'status'],
      registers,
      collect() {
        this.reset();
        for (const [listener, s] of listenerStats) {
          s.errorFrames.forEach((n, status) => {
            if (n > 0) this.inc({ listener, status: String(status) }, n);
          });
        }
      },
    });
    new Gauge({
      name: 'eventgate_kafka_listener_connections',
      help: 'Client connections open on a kafka listener, all its ports together.',
      labelNames: ['listener'],
      registers,
      collect() {
        this.reset();
        for (const [listener, l] of source.listeners) if (l.kind === 'kafka' && l.connections) this.set({ listener }, l.connections());
      },
    });
    new Counter({
      name: 'eventgate_kafka_listener_closed_connections_total',
      help: 'Client connections a kafka listener closed, per listener and reason: bad_request (a request it could not read) or upstream (the broker could not be reached, its connection failed, or its answer could not be read).',
      labelNames: ['listener', 'reason'],
      registers,
      collect() {
        this.reset();
        for (const [listener, l] of source.listeners) {
          if (l.kind !== 'kafka') continue;
          const closed = listenerStats.get(listener)?.kafkaClosed;
          for (const reason of KAFKA_CLOSE_REASONS) this.inc({ listener, reason }, closed?.[reason] ?? 0);
        }
      },
    });
    new Counter({
      name: 'eventgate_listener_connections_dropped_total',
      help: 'New client connections a listener (http, websocket or kafka) closed at once because it had maxConnections open.',
      labelNames: ['listener'],
      registers,
      collect() {
        this.reset();
        // Every listener kind has a maxConnections: each listener's series exists from the start, at 0.
        for (const listener of source.listeners.keys()) this.inc({ listener }, listenerStats.get(listener)?.connectionsDropped ?? 0);
      },
    });
    new Counter({
      name: 'eventgate_listener_tls_certificate_refusals_total',
      help: "TLS handshakes a client ended because it refused the listener's certificate (a TLS alert: unknown CA, certificate unknown, bad, expired or revoked), per http and websocket listener: browsers that do not trust it, whose pages see only a failed connection.",
      labelNames: ['listener'],
      registers,
      collect() {
        this.reset();
        // Every http and websocket listener's series exists from the start, at 0 (one without tls stays there).
        for (const [listener, l] of source.listeners) if (l.kind === 'websocket' || l.kind === 'http') this.inc({ listener }, listenerStats.get(listener)?.tlsCertificateRefusals ?? 0);
      },
    });
    new Counter({
      name: 'eventgate_slow_clients_disconnected_total',
      help: 'Clients disconnected for not reading, per listener: websocket clients over maxBufferedBytes (closed with 1013) and event streams over events.maxBufferedBytes.',
      labelNames: ['listener'],
      registers,
      collect() {
        this.reset();
        // Only websocket and http listeners push to clients; their series exist from the start, at 0.
        for (const [listener, l] of source.listeners) if (l.kind === 'websocket' || l.kind === 'http') this.inc({ listener }, listenerStats.get(listener)?.slowClientsDisconnected ?? 0);
      },
    });
    new Counter({
      name: 'eventgate_websocket_connections_total',
      help: 'WebSocket handshakes a listener accepted (connections opened, reconnects included). Beside eventgate_websocket_clients, its rate shows clients cut off and reconnecting (a proxy closing idle connections sooner than pingIntervalMs, a page in a reconnect loop), which the gauge does not.',
      labelNames: ['listener'],
      registers,
      collect() {
        this.reset();
        // Each websocket listener's series exists from the start, at 0.
        for (const [listener, l] of source.listeners) if (l.kind === 'websocket') this.inc({ listener }, listenerStats.get(listener)?.connectionsAccepted ?? 0);
      },
    });
    new Counter({
      name: 'eventgate_websocket_ping_timeouts_total',
      help: 'WebSocket clients cut off because they had not answered a ping by the next one (pingIntervalMs): a device asleep, a link gone without a close.',
      labelNames: ['listener'],
      registers,
      collect() {
        this.reset();
        // Each websocket listener's series exists from the start, at 0.
        for (const [listener, l] of source.listeners) if (l.kind === 'websocket') this.inc({ listener }, listenerStats.get(listener)?.pingTimeouts ?? 0);
      },
    });
    new Counter({
      name: 'eventgate_websocket_frame_failures_total',
      help: 'WebSocket clients closed for a frame that fails the connection, by close code: 1002 a protocol error, 1007 a text frame not UTF-8, 1008 a message in too many fragments, 1009 a frame over maxPayloadBytes.',
      labelNames: ['listener', 'code'],
      registers,
      collect() {
        this.reset();
        // Each websocket listener's series exist from the start, at 0, one per code.
        for (const [listener, l] of source.listeners) {
          if (l.kind !== 'websocket') continue;
          const counts = listenerStats.get(listener)?.frameFailures;
          for (const code of WS_FRAME_FAILURE_CODES) this.inc({ listener, code }, counts?.[code] ?? 0);
        }
      },
    });
    new Counter({
      name: 'eventgate_websocket_closes_total',
      help: "WebSocket connections closed, per listener and the close code ws reports: the client's close frame's (1000 a page closing, 1001 going away, or the code of the gateway's own close it answers), 1005 a close frame without a code, 1006 none (a proxy's or the network's cut, a client gone, the gateway's ping timeouts); codes a client chooses counted as 3xxx and 4xxx.",
      labelNames: ['listener', 'code'],
      registers,
      collect() {
        this.reset();
        // A series per code seen (a bounded set: wsCloseCodeLabel).
        for (const [listener, l] of source.listeners) {
          if (l.kind !== 'websocket') continue;
          listenerStats.get(listener)?.closes.forEach((n, code) => this.inc({ listener, code }, n));
        }
      },
    });
    new Counter({
      name: 'eventgate_admin_connections_dropped_total',
      help: 'New connections the admin server (/metrics, /readyz, the admin API) closed at once because it had admin.maxConnections (10000 unless set) open.',
      registers,
      collect() {
        this.reset();
        this.inc(counters.adminConnectionsDropped);
      },
    });
    const reloads = counters.reloads;
    new Counter({
      name: 'eventgate_config_reloads_total',
      help: 'Config reloads (file change, SIGHUP, POST /admin/reload) by result: success (applied or unchanged), failure (the new config was refused, or a new socket could not bind; the old one kept serving) or rolled_back (a component kept on its port could not take it over from its predecessor; the old one was restored).',
      labelNames: ['result'],
      registers,
      collect() {
        this.reset();
        this.inc({ result: 'success' }, reloads.success);
        this.inc({ result: 'failure' }, reloads.failure);
        this.inc({ result: 'rolled_back' }, reloads.rolledBack);
      },
    });
    new Gauge({
      name: 'eventgate_config_info',
      help: 'The running config version (hash of the config and every file it references); always 1.',
      labelNames: ['version'],
      registers,
      collect() {
        this.reset();
        if (counters.version) this.set({ version: counters.version }, 1);
      },
    });
    new Gauge({
      name: 'eventgate_config_last_reload_successful',
      help: '1 when the last config reload was applied (or none was tried), 0 while the gateway runs an older config because the last reload failed.',
      registers,
      collect() {
        this.set(counters.lastReloadOk ? 1 : 0);
      },
    });
    new Gauge({
      name: 'eventgate_broker_credentials_expires_in_seconds',
      help: "Seconds until the credentials a broker logs in with expire (a nats credsFile user JWT's exp), negative once they have; no series for credentials that do not expire. The server refuses the login after it, and closes a connection made before.",
      labelNames: ['broker'],
      registers,
      collect() {
        this.reset();
        const now = Date.now();
        for (const [broker, b] of source.brokers) {
          const at = b.credentialsExpireAt?.();
          if (at !== undefined) this.set({ broker }, (at - now) / 1000);
        }
      },
    });
    new Gauge({
      name: 'eventgate_ready',
      help: '1 when GET /readyz would answer 200 (every listener bound, every broker connected, no consume route down, no shutdown begun), else 0.',
      registers,
      collect() {
        this.set(source.readiness().ready ? 1 : 0);
      },
    });
    collectDefaultMetrics({ register: this.registry });
  }

  /** `eventgate_<kind>_consumer_lag`, `..._producer_errors_total`, `..._consumer_errors_total`, `..._consumer_crashes_total` for one broker kind (and Kafka's `..._consumer_rejoins_total`). */
  brokerFamilies(kind: string): void {
    const prefix = `eventgate_${kind.replace(/[^A-Za-z0-9_]/g, '_')}`;
    const registers = [this.registry];
    const { source, brokerStats } = this.counters;
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
      help: `Publishes of ${kind} brokers that could not be completed.`,
      labelNames: ['broker'],
      registers,
      collect() {
        this.reset();
        for (const [broker, s] of brokerStats) if (s.kind === kind) this.inc({ broker }, s.producerErrors);
      },
    });
    new Counter({
      name: `${prefix}_consumer_errors_total`,
      help: `Consumer failures on ${kind} brokers: fetch, commit or group errors, and messages a route could not take (retried)${CONSUMER_ERRORS_OF_KIND[kind] ?? ''}.`,
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
    // Only Kafka's consumers are members of groups the cluster rebalances.
    if (kind !== 'kafka') return;
    new Counter({
      name: 'eventgate_kafka_consumer_rejoins_total',
      help: "Times a route's member joined its consumer group again without a restart: a rebalance (a member came or went, a commit or heartbeat refused, the cluster dropped this member, a partition's leader moved).",
      labelNames: ['broker', 'route'],
      registers,
      collect() {
        this.reset();
        for (const [broker, s] of brokerStats) if (s.kind === kind) for (const [route, n] of s.consumerRejoins) this.inc({ broker, route }, n);
      },
    });
  }
}

/**
 * What `eventgate_<kind>_consumer_errors_total` counts beyond retried failures, per kind (as
 * docs/operations.md's table says): a HELP that said "(retried)" only sent an SRE looking for
 * retries of messages that were never read again.
 */
const CONSUMER_ERRORS_OF_KIND: Record<string, string> = {
  memory: "; also each message a route's group never read because the topic's retention dropped it first (the route fell behind its publishers; not retried)",
  nats: '; also each core-subject message dropped because its route was corePendingBytes behind (not retried)',
  mqtt: '; also each subscription the server refused in its SUBACK (asked again)',
  kafka: '; also each partition whose group offset the cluster answered out of range (read on from startFrom: the records between are not delivered)',
};

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
    registry: PromClient.Registry,
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
