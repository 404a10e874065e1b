import { hostname } from 'node:os';
import { formatDiagnostic, type Diagnostic } from '../config/diagnostics.js';
import type { Env } from '../config/source.js';
import type { BrokerRuntime, Gate, ListenerBindings, ListenerRuntime, RuntimeEnv } from '../kinds/contracts.js';
import type { KindRegistry } from '../kinds/registry.js';
import type { Logger } from '../log.js';
import { loadPlan, type LoadResult } from '../plan/compile.js';
import { planFingerprint, type PlanFingerprint } from '../plan/fingerprint.js';
import { diffPlans } from '../plan/diff.js';
import type { Plan } from '../plan/types.js';
import { AdminServer } from '../admin/server.js';
import { mountDashboard } from '../admin/dashboard.js';
import { GatewayMetrics, mountMetrics } from '../admin/metrics.js';
import { mountTap, TapHub } from '../admin/tap.js';
import { redact } from '../config/secrets.js';
import type { Message } from './message.js';
import type { Outcome } from './outcome.js';
import { RouteRuntime } from './route.js';
import { StepStateStore } from './step-state.js';
import { ConfigWatcher } from './watcher.js';

export interface GatewayOptions {
  configFile: string;
  registry: KindRegistry;
  env: Env;
  logger: Logger;
  /** Watch the config and referenced files (default true). */
  watch?: boolean;
}

export type ReloadResult =
  | { result: 'applied'; version: string }
  | { result: 'unchanged'; version: string }
  | { result: 'rejected'; reason: string; diagnostics: Diagnostic[] };

export interface ReloadRecord {
  at: string;
  result: ReloadResult['result'];
  version: string | null;
  error: { message: string; diagnostics: Diagnostic[] } | null;
}

/**
 * The running gateway: applies plans as transactions (build and check every new piece, then swap),
 * watches files, and drains on shutdown. Reload and shutdown go through the same component stop().
 */
export class Gateway {
  plan: Plan | undefined;
  loadedAt: Date | undefined;
  lastReload: ReloadRecord | undefined;
  lastError: ReloadRecord['error'] = null;
  readonly brokers = new Map<string, BrokerRuntime>();
  readonly listeners = new Map<string, ListenerRuntime>();
  readonly routes = new Map<string, RouteRuntime>();
  readonly instanceId: string;
  /** Observers of every route outcome, with the message as the route received it (metrics and the tap have their own per-route hooks). */
  readonly observers = new Set<(route: string, outcome: Outcome, startedAt: number, msg: Message) => void>();
  /** Prometheus metrics in the gateway's own registry; also the components' Telemetry. */
  readonly metrics: GatewayMetrics;
  readonly tap = new TapHub();
  /** Read by routes when a message fails; updated in place on reload. */
  private readonly logOptions = { payloads: false };
  /** The running config's secret values, redacted from what observers of routes see (updated in place on reload). */
  private readonly redaction: { secrets: ReadonlySet<string> } = { secrets: new Set() };
  /** State of stateful steps (rate-limit buckets), kept across reloads for unchanged steps. */
  readonly stepState = new StepStateStore();
  private admin: AdminServer | undefined;
  private watcher: ConfigWatcher | undefined;
  private reloading: Promise<ReloadResult> | undefined;
  private reloadAgain = false;
  /** Old routes, listeners and brokers of earlier plans, still finishing their in-flight work. */
  private readonly retiring = new Set<Promise<void>>();
  private stopping = false;
  private readonly runtimeEnv: RuntimeEnv;

  constructor(private readonly options: GatewayOptions) {
    this.instanceId = options.env.EVENTGATE_INSTANCE_ID || `${hostname()}-${process.pid}`;
    this.metrics = new GatewayMetrics(this, options.registry.brokers.keys());
    this.runtimeEnv = { logger: options.logger, telemetry: this.metrics };
  }

  get logger(): Logger {
    return this.options.logger;
  }

  get shuttingDown(): boolean {
    return this.stopping;
  }

  /** First load: the caller exits 1 on diagnostics. */
  async start(): Promise<LoadResult> {
    const loaded = await this.load();
    if (!loaded.plan) return loaded;
    const result = await this.apply(loaded.plan);
    if (result.result === 'rejected') {
      this.lastError = { message: result.reason, diagnostics: result.diagnostics };
      return { plan: undefined, diagnostics: result.diagnostics, files: loaded.files, seen: loaded.seen, secrets: loaded.secrets };
    }
    if (this.options.watch !== false) {
      this.watcher = new ConfigWatcher((files) => {
        this.logger.info({ files }, 'config change detected');
        void this.reload('file change');
      });
      this.watcher.setFiles(loaded.files, loaded.seen);
      await this.watcher.ready();
    }
    return loaded;
  }

  /**
   * Loads the config as a reload would; `overrides` replaces files' contents (by absolute path)
   * without touching the disk, so the admin API can check an upload before writing it.
   */
  load(overrides?: ReadonlyMap<string, string>): Promise<LoadResult> {
    return loadPlan(this.options.configFile, { registry: this.options.registry, env: this.options.env, overrides });
  }

  /** Reloads one at a time; a request during a reload runs once more afterwards. */
  reload(reason: string): Promise<ReloadResult> {
    if (this.reloading) {
      this.reloadAgain = true;
      return this.reloading;
    }
    this.reloading = (async () => {
      let result: ReloadResult;
      do {
        this.reloadAgain = false;
        result = await this.reloadOnce(reason);
      } while (this.reloadAgain && !this.stopping);
      return result;
    })().finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  private async reloadOnce(reason: string): Promise<ReloadResult> {
    if (this.stopping) return { result: 'rejected', reason: 'shutting down', diagnostics: [] };
    const loaded = await this.load();
    this.watcher?.setFiles(loaded.files, loaded.seen);
    let result: ReloadResult;
    if (!loaded.plan) {
      result = { result: 'rejected', reason: 'the new config is invalid', diagnostics: loaded.diagnostics };
    } else if (loaded.plan.version === this.plan?.version) {
      result = { result: 'unchanged', version: loaded.plan.version };
    } else {
      result = await this.apply(loaded.plan);
    }
    const at = new Date().toISOString();
    if (result.result === 'rejected') {
      this.metrics.reloadFailed();
      // A diagnostic may quote a value; neither the log nor /admin/status may show a secret.
      const secrets = new Set([...(this.plan?.secretValues ?? []), ...(loaded.secrets ?? [])]);
      result = redact(result, secrets);
      this.lastError = { message: result.reason, diagnostics: result.diagnostics };
      for (const d of result.diagnostics) this.logger.error({ reason, diagnostic: formatDiagnostic(d), code: d.code }, 'reload rejected; the running config keeps serving');
      if (result.diagnostics.length === 0) this.logger.error({ reason, error: result.reason }, 'reload rejected; the running config keeps serving');
      this.lastReload = { at, result: 'rejected', version: this.plan?.version ?? null, error: this.lastError };
    } else {
      this.metrics.reloadSucceeded();
      if (result.result === 'applied') this.logger.info({ reason, version: result.version }, 'config reloaded');
      else this.logger.info({ reason, version: result.version }, 'config unchanged');
      this.lastError = null;
      this.lastReload = { at, result: result.result, version: result.version, error: null };
    }
    return result;
  }

  /** Applies a plan as a transaction: nothing live is touched until every new piece is built and bound. */
  async apply(next: Plan): Promise<ReloadResult> {
    const prev = this.plan;
    const registry = this.options.registry;
    const reconfigurable = (name: string) => {
      const a = prev!.brokers.get(name)!;
      const b = next.brokers.get(name)!;
      return a.kind === b.kind && registry.brokers.get(a.kind)!.canReconfigure(a.options, b.options);
    };
    const diff = diffPlans(prev, next, reconfigurable);
    const replacedBrokers = diff.brokers.change.filter((n) => !reconfigurable(n));
    // Listeners whose new socket must take the old one's port are swapped during the commit.
    const lateRebind = diff.listeners.rebind.filter((n) => {
      const a = prev!.listeners.get(n)!.options as { port: number; host?: string };
      const b = next.listeners.get(n)!.options as { port: number; host?: string };
      return a.port !== 0 && a.port === b.port;
    });
    const earlyListeners = [...diff.listeners.add, ...diff.listeners.rebind.filter((n) => !lateRebind.includes(n))];

    // The admin server binds early too, unless it must take over its predecessor's port.
    const adminEarly = (diff.admin === 'start' || diff.admin === 'restart') && !(diff.admin === 'restart' && prev!.admin!.port !== 0 && prev!.admin!.port === next.admin!.port);

    // --- build: new brokers and listeners, started; any failure undoes only what was built here.
    const newBrokers = new Map<string, BrokerRuntime>();
    const newListeners = new Map<string, ListenerRuntime>();
    let newAdmin: AdminServer | undefined;
    try {
      for (const name of [...diff.brokers.add, ...replacedBrokers]) {
        const p = next.brokers.get(name)!;
        const b = registry.brokers.get(p.kind)!.create(name, p.options, this.runtimeEnv);
        newBrokers.set(name, b);
        await b.start();
      }
      for (const name of earlyListeners) {
        const p = next.listeners.get(name)!;
        const l = registry.listeners.get(p.kind)!.create(name, p.options, this.runtimeEnv);
        newListeners.set(name, l);
        await l.start().catch((err: Error) => {
          throw new Error(`listener '${name}': ${err.message}`);
        });
      }
      if (adminEarly) {
        newAdmin = this.createAdmin(next.admin!);
        await newAdmin.start().catch((err: Error) => {
          throw new Error(`admin server: ${err.message}`);
        });
      }
    } catch (err) {
      await newAdmin?.stop().catch(() => undefined);
      await Promise.allSettled([...newListeners.values()].map((l) => l.stop({ drainMs: 0 })));
      await Promise.allSettled([...newBrokers.values()].map((b) => b.stop()));
      const reason = `${prev ? 'could not start the new config' : `could not start ${this.options.configFile}`}: ${(err as Error).message}`;
      return { result: 'rejected', reason, diagnostics: [] };
    }
    for (const name of lateRebind) {
      const p = next.listeners.get(name)!;
      newListeners.set(name, registry.listeners.get(p.kind)!.create(name, p.options, this.runtimeEnv));
    }

    const brokersAfter = new Map(this.brokers);
    for (const name of diff.brokers.remove) brokersAfter.delete(name);
    for (const [name, b] of newBrokers) brokersAfter.set(name, b);
    const listenersAfter = new Map(this.listeners);
    for (const name of diff.listeners.remove) listenersAfter.delete(name);
    for (const [name, l] of newListeners) listenersAfter.set(name, l);

    const deps = {
      brokers: brokersAfter,
      listeners: listenersAfter,
      logger: this.logger,
      instanceId: this.instanceId,
      observe: (r: string, o: Outcome, t: number, m: () => Message) => this.observe(r, o, t, m),
      metrics: this.metrics,
      tap: this.tap,
      logOptions: this.logOptions,
      redaction: this.redaction,
      stepState: this.stepState,
    };
    const newRoutes = new Map<string, RouteRuntime>();
    for (const name of [...diff.routes.add, ...diff.routes.change]) newRoutes.set(name, new RouteRuntime(next.routes.get(name)!, deps));
    const routesAfter = new Map<string, RouteRuntime>();
    for (const name of next.routes.keys()) routesAfter.set(name, newRoutes.get(name) ?? this.routes.get(name)!);

    // --- commit
    const drainMs = next.admin?.drainTimeoutMs ?? 10000;
    const oldBrokers = [...diff.brokers.remove, ...replacedBrokers].map((n) => this.brokers.get(n)!);
    const oldListeners = [...diff.listeners.remove, ...diff.listeners.rebind].map((n) => this.listeners.get(n)!);
    const oldRoutes = [...diff.routes.remove, ...diff.routes.change].map((n) => this.routes.get(n)!);
    for (const name of diff.brokers.change) if (!replacedBrokers.includes(name)) this.brokers.get(name)!.reconfigure(next.brokers.get(name)!.options);
    for (const name of diff.listeners.change) if (!diff.listeners.rebind.includes(name)) this.listeners.get(name)!.reconfigure(next.listeners.get(name)!.options);
    for (const name of lateRebind) {
      await this.listeners.get(name)!.stop({ drainMs });
      try {
        await newListeners.get(name)!.start();
      } catch (err) {
        this.logger.error({ listener: name, err: (err as Error).message }, 'listener could not bind its new socket');
      }
    }
    this.brokers.clear();
    for (const [n, b] of brokersAfter) this.brokers.set(n, b);
    this.listeners.clear();
    for (const [n, l] of listenersAfter) this.listeners.set(n, l);
    this.routes.clear();
    for (const [n, r] of routesAfter) this.routes.set(n, r);
    for (const [name, listener] of this.listeners) listener.bind(bindingsFor(name, next, routesAfter));
    this.stepState.retain(new Set([...routesAfter.values()].flatMap((r) => r.stateIds)));
    // Old consumers stop (finishing and committing the message in hand) before their successors start.
    await Promise.all(oldRoutes.map((r) => r.stopConsuming()));
    for (const r of newRoutes.values()) r.start();

    if (diff.admin === 'stop' || diff.admin === 'restart') {
      await this.admin?.stop();
      this.admin = undefined;
    }
    if ((diff.admin === 'start' || diff.admin === 'restart') && !next.admin!.token && !isLoopback(next.admin!.host)) {
      this.logger.warn({ host: next.admin!.host }, 'the admin API is reachable beyond this host and has no token; set admin.token');
    }
    if (newAdmin) this.admin = newAdmin;
    else if (diff.admin === 'restart') {
      this.admin = this.createAdmin(next.admin!);
      try {
        await this.admin.start();
      } catch (err) {
        this.logger.error({ err: (err as Error).message, port: next.admin!.port }, 'admin server could not bind');
      }
    } else if (this.admin) {
      this.admin.configure(next.admin!);
    }
    this.plan = next;
    this.loadedAt = new Date();
    this.logger.level = next.log.level;
    this.logOptions.payloads = next.log.payloads;
    this.redaction.secrets = next.secretValues ?? new Set();
    this.metrics.setVersion(next.version);
    this.metrics.retain({ routes: next.routes.keys(), listeners: next.listeners.keys(), brokers: next.brokers.keys() });
    this.tap.retain(next.routes.keys());
    this.tap.configure(next.admin?.tap);
    this.logReady();

    // The new config is live. Requests still inside old routes finish there (bounded by the drain
    // timeout) without holding up the reload; only then do the components they use go away.
    const oldWork = oldRoutes.filter((r) => r.pending > 0);
    const retire = (async () => {
      await Promise.all(oldRoutes.map((r) => r.drain(drainMs)));
      await Promise.all(oldListeners.filter((l) => !lateRebind.includes(l.name)).map((l) => l.stop({ drainMs })));
      await Promise.allSettled(oldBrokers.map((b) => b.stop()));
    })();
    if (oldWork.length > 0) {
      this.retiring.add(retire);
      void retire.finally(() => this.retiring.delete(retire));
    } else {
      await retire;
    }
    return { result: 'applied', version: next.version };
  }

  private observe(route: string, outcome: Outcome, startedAt: number, msg: () => Message): void {
    for (const o of this.observers) o(route, outcome, startedAt, msg());
  }

  /** The admin API with the observability endpoints: /metrics, /admin/stats, /admin/tap and the dashboard. */
  private createAdmin(plan: NonNullable<Plan['admin']>): AdminServer {
    const admin = new AdminServer(this, plan);
    mountMetrics(admin, this.metrics);
    mountTap(admin, this.tap, (route) => this.routes.has(route));
    mountDashboard(admin);
    return admin;
  }

  private logReady(): void {
    const listeners: Record<string, number | undefined> = {};
    for (const [name, l] of this.listeners) listeners[name] = l.address()?.port;
    this.logger.info({ version: this.plan!.version, listeners, admin: this.admin?.address()?.port, routes: [...this.routes.keys()] }, 'gateway ready');
  }

  adminAddress() {
    return this.admin?.address();
  }

  readiness(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = [];
    if (this.stopping) reasons.push('shutting down');
    for (const [name, l] of this.listeners) {
      const h = l.health();
      if (!h.ready) reasons.push(`listener ${name}: ${h.detail ?? 'not ready'}`);
    }
    for (const [name, b] of this.brokers) {
      const h = b.health();
      if (!h.ready) reasons.push(`broker ${name}: ${h.detail ?? 'not connected'}`);
    }
    for (const [name, r] of this.routes) {
      const h = r.health();
      if (!h.ready) reasons.push(`route ${name}: ${h.detail ?? 'not consuming'}`);
    }
    return { ready: reasons.length === 0, reasons };
  }

  /** The running plan as `eventgate plan --admin` compares against it, with the clients each listener holds. */
  planFingerprint(): PlanFingerprint | null {
    if (!this.plan) return null;
    const clients: Record<string, number> = {};
    for (const [name, l] of this.listeners) if (l.connections) clients[name] = l.connections();
    return { ...planFingerprint(this.plan), clients };
  }

  /** For /admin/status: never shows a secret, whichever way a config value reached it. */
  status(): Record<string, unknown> {
    return redact(this.rawStatus(), this.plan?.secretValues ?? new Set());
  }

  private rawStatus(): Record<string, unknown> {
    const plan = this.plan;
    return {
      version: plan?.version ?? null,
      loadedAt: this.loadedAt?.toISOString() ?? null,
      lastReloadError: this.lastError,
      lastReload: this.lastReload ?? null,
      instanceId: this.instanceId,
      listeners: [...this.listeners].map(([name, l]) => ({ name, kind: l.kind, ...l.address(), ...l.health(), ...l.status() })),
      brokers: [...this.brokers].map(([name, b]) => ({ name, kind: b.kind, ...b.health() })),
      routes: [...this.routes.values()].map((r) => ({
        name: r.name,
        from: r.plan.from,
        steps: r.plan.steps.map((s) => s.kind),
        inFlight: r.pending,
        ...(r.plan.from.type === 'broker' ? { consumer: r.health() } : {}),
        to: r.plan.to.map((t) => (t.type === 'broker' ? { broker: t.broker, topic: t.topic } : { listener: t.listener, path: t.path, format: t.format })),
      })),
    };
  }

  /** SIGTERM: stop accepting, finish in-flight work (bounded), commit, flush, close clients with 1001. */
  async shutdown(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const drainMs = this.plan?.admin?.drainTimeoutMs ?? 10000;
    this.logger.info({ drainMs }, 'shutting down: draining');
    await this.watcher?.close();
    await this.reloading?.catch(() => undefined);
    await Promise.allSettled([...this.listeners.values()].map((l) => l.stop({ drainMs })));
    await Promise.allSettled([...this.routes.values()].map(async (r) => {
      await r.stopConsuming();
      await r.drain(drainMs);
    }));
    await Promise.allSettled([...this.retiring]);
    await Promise.allSettled([...this.brokers.values()].map((b) => b.stop()));
    await this.admin?.stop();
    this.logger.info('shutdown complete');
  }
}

function bindingsFor(listener: string, plan: Plan, routes: ReadonlyMap<string, RouteRuntime>): ListenerBindings {
  const bindings: ListenerBindings = { publish: new Map(), forward: new Set(), forwardAuth: new Map() };
  for (const name of plan.routes.keys()) {
    // The running route's plan, not the new one: a kept route keeps its compiled auth, so the
    // listener can tell that what guards a path did not change.
    const r = routes.get(name)!.plan;
    if (r.from.type === 'listener' && r.from.listener === listener) bindings.publish.set(r.from.path, routes.get(r.name)!);
    for (const t of r.to) {
      if (t.type !== 'listener' || t.listener !== listener) continue;
      bindings.forward.add(t.path);
      if (t.auth?.admit) bindings.forwardAuth!.set(t.path, t.auth as Gate);
    }
  }
  return bindings;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
