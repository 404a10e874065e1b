import { within } from '../core/within.js';
import { flushPendingWarnings } from '../core/rate-limited-warning.js';
import { resolve } from 'node:path';
import { formatDiagnostic, formatPath, type Diagnostic } from '../config/diagnostics.js';
import type { Env, PathPart } from '../config/source.js';
import type { BrokerRuntime, ListenerRuntime, RuntimeEnv } from '../kinds/contracts.js';
import type { KindRegistry } from '../kinds/registry.js';
import type { Logger } from '../log.js';
import { keepParserThread } from '../asyncapi/parser-thread.js';
import { loadPlan, type LoadResult } from '../plan/compile.js';
import { planFingerprint, redactFingerprint, type PlanFingerprint } from '../plan/fingerprint.js';
import { diffPlans } from '../plan/diff.js';
import type { AdminPlan, Plan } from '../plan/types.js';
import { GatewayMetrics } from '../telemetry/metrics.js';
import { TapHub } from '../telemetry/tap.js';
import { redact, redactDiagnostics, redactProblems, shownEndpoint } from '../config/secrets.js';
import { RouteRuntime } from './route.js';
import { applyTransition, restoreTransition, type AdminComponent, type Components, type TransitionEnv } from './transition.js';
import { StepStateStore } from './step-state.js';
import { ConfigWatcher } from './watcher.js';
import { instanceId } from '../config/instance-id.js';

export interface GatewayOptions {
  configFile: string;
  registry: KindRegistry;
  env: Env;
  logger: Logger;
  /** Watch the config and referenced files (default true). */
  watch?: boolean;
  /**
   * Reads the environment again for each load (`run --vars-file`: the files are read at every
   * reload, and watched), instead of `env`: the environment, and the files it read with their
   * hashes, or the file it could not read.
   */
  readEnv?: () => ({ env: Env } | { error: string; file: string; line: number; column: number; message: string }) & { files: Map<string, string> };
  /**
   * Builds the admin server when the config has an `admin:` section (src/admin/index.ts
   * createAdminServer); injected so the runtime does not depend on the admin layer above it.
   */
  admin?: (gateway: Gateway, plan: AdminPlan) => AdminServerComponent;
}

/** The admin server as the gateway runs it. */
export interface AdminServerComponent extends AdminComponent {
  address(): { host: string; port: number } | undefined;
}

export type ReloadResult =
  | { result: 'applied'; version: string }
  | { result: 'unchanged'; version: string }
  | { result: 'rejected'; reason: string; diagnostics: Diagnostic[] }
  /** The new config was valid but could not be put in place (a socket could not bind): the running one was restored. */
  | { result: 'rolled_back'; reason: string; version: string | null; diagnostics: Diagnostic[] };

/** The reason of a reload refused because the gateway is draining (the admin API answers it 503). */
export const RELOAD_WHILE_STOPPING = 'shutting down';

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
  /** Prometheus metrics in the gateway's own registry; also the components' Telemetry. */
  readonly metrics: GatewayMetrics;
  readonly tap = new TapHub();
  /** Read by routes when a message fails; updated in place on reload. */
  private readonly logOptions = { payloads: false };
  /** The running config's secret values, redacted from what routes log and tap (updated in place on reload). */
  private readonly redaction: { secrets: ReadonlySet<string> } = { secrets: new Set() };
  /** State of stateful steps (rate-limit buckets), kept across reloads for unchanged steps. */
  readonly stepState = new StepStateStore();
  /** The running components, as transitions change them. */
  private readonly live: Components = { brokers: this.brokers, listeners: this.listeners, routes: this.routes, admin: undefined };
  private readonly transitionEnv: TransitionEnv;
  private watcher: ConfigWatcher | undefined;
  private starting: Promise<LoadResult> | undefined;
  private reloading: Promise<ReloadResult> | undefined;
  private reloadAgain = false;
  /** Old routes, listeners and brokers of earlier plans, still finishing their in-flight work. */
  private readonly retiring = new Set<Promise<void>>();
  /** Old consume routes a reload is stopping or handing over, until they have (TransitionEnv.consumersLeaving). */
  private readonly leaving = new Map<RouteRuntime, Promise<unknown>>();
  private stopping = false;
  /** A config was ever put in place (or tried): until then a shutdown has nothing to drain, and says nothing of draining. */
  private applied = false;
  private readonly runtimeEnv: RuntimeEnv;

  constructor(private readonly options: GatewayOptions) {
    this.instanceId = instanceId(options.env);
    this.metrics = new GatewayMetrics(this, options.registry.brokers.keys());
    this.runtimeEnv = { logger: options.logger, telemetry: this.metrics };
    this.transitionEnv = {
      registry: options.registry,
      runtime: this.runtimeEnv,
      logger: options.logger,
      stopping: () => this.stopping,
      superseded: () => this.reloadAgain,
      consumersLeaving: (routes, stopped) => {
        const settled = stopped.catch(() => undefined);
        for (const r of routes) this.leaving.set(r, settled);
        void settled.then(() => {
          for (const r of routes) if (this.leaving.get(r) === settled) this.leaving.delete(r);
        });
      },
      createAdmin: (plan) => {
        if (!options.admin) throw new Error('this gateway was built without an admin server');
        return options.admin(this, plan);
      },
      createRoute: (plan, brokers, listeners) =>
        new RouteRuntime(plan, {
          brokers,
          listeners,
          logger: this.logger,
          instanceId: this.instanceId,
          metrics: this.metrics,
          tap: this.tap,
          logOptions: this.logOptions,
          stepState: this.stepState,
          redaction: this.redaction,
        }),
    };
  }

  private get admin(): AdminServerComponent | undefined {
    return this.live.admin as AdminServerComponent | undefined;
  }

  get logger(): Logger {
    return this.options.logger;
  }

  get shuttingDown(): boolean {
    return this.stopping;
  }

  /**
   * First load: the caller exits 1 on diagnostics. A shutdown that begins meanwhile (a SIGTERM
   * while the config loads) waits for it, and nothing is started after all.
   */
  start(): Promise<LoadResult> {
    this.starting ??= this.startOnce();
    return this.starting;
  }

  private async startOnce(): Promise<LoadResult> {
    const loaded = await this.load();
    if (!loaded.plan || this.stopping) return loaded;
    this.logWarnings(loaded);
    const result = await this.apply(loaded.plan, loaded.locate);
    if (result.result === 'rejected') {
      // The config is valid: its diagnostics say where the component that could not start is declared.
      this.lastError = { message: result.reason, diagnostics: result.diagnostics };
      return { plan: undefined, diagnostics: [], files: loaded.files, seen: loaded.seen, secrets: loaded.secrets };
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
  async load(overrides?: ReadonlyMap<string, string>): Promise<LoadResult> {
    const vars = this.options.readEnv?.();
    if (vars && 'error' in vars) {
      // The config cannot load without its variables; the running one keeps serving, and a fix of the file is watched for.
      const configFile = resolve(this.options.configFile);
      return {
        plan: undefined,
        diagnostics: [{ file: vars.file, line: vars.line, column: vars.column, code: 'EG_CONFIG_FILE', path: '', message: vars.message }],
        files: [configFile, ...vars.files.keys()],
        seen: vars.files,
      };
    }
    return loadPlan(this.options.configFile, { registry: this.options.registry, env: vars?.env ?? this.options.env, overrides, extraFiles: vars?.files, reload: this.plan !== undefined });
  }

  /** What is valid but probably not meant (a route feeding the topic it reads), once per config that takes effect. */
  private logWarnings(loaded: LoadResult): void {
    // Redacted as validate prints them: a warning may quote a value (a topic from ${TOPIC}).
    for (const w of redactDiagnostics(loaded.warnings ?? [], loaded.secrets ?? new Set())) this.logger.warn({ diagnostic: formatDiagnostic(w), code: w.code }, 'config warning');
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
    if (this.stopping) {
      // Said as for a reload the shutdown overtook (below): a SIGHUP during the drain was answered by nothing at all.
      this.logger.info({ reason }, 'reload not applied: the gateway is shutting down');
      return { result: 'rejected', reason: RELOAD_WHILE_STOPPING, diagnostics: [] };
    }
    // The watcher counts the max-wait of edits it hears of meanwhile from here (src/runtime/watcher.ts, Debounce).
    const ended = this.watcher?.reloading();
    let result: ReloadResult | undefined;
    try {
      result = await this.loadAndApply(reason);
      return result;
    } finally {
      ended?.(result?.result === 'rejected');
    }
  }

  private async loadAndApply(reason: string): Promise<ReloadResult> {
    const loaded = await this.load();
    this.watcher?.setFiles(loaded.files, loaded.seen);
    let result: ReloadResult;
    if (this.stopping) {
      // A shutdown began while this reload loaded or built: the running config stays for the drain.
      this.logger.info({ reason }, 'reload not applied: the gateway is shutting down');
      return { result: 'rejected', reason: RELOAD_WHILE_STOPPING, diagnostics: [] };
    } else if (!loaded.plan) {
      result = { result: 'rejected', reason: 'the new config is invalid', diagnostics: loaded.diagnostics };
    } else if (loaded.plan.version === this.plan?.version) {
      result = { result: 'unchanged', version: loaded.plan.version };
    } else {
      this.logWarnings(loaded);
      result = await this.apply(loaded.plan, loaded.locate);
      if (result.result === 'rejected' && result.reason === RELOAD_WHILE_STOPPING) {
        this.logger.info({ reason }, 'reload not applied: the gateway is shutting down');
        return result;
      }
    }
    const at = new Date().toISOString();
    // A diagnostic may quote a value; neither the log, the reload's answer nor /admin/status may
    // show a secret, the new config's included (a listener's `host: ${BIND_HOST}` it could not bind).
    const secrets = new Set([...(this.plan?.secretValues ?? []), ...(loaded.secrets ?? [])]);
    if (result.result === 'rolled_back') {
      this.metrics.reloadRolledBack();
      result = redactProblems(result, secrets);
      this.lastError = { message: result.reason, diagnostics: result.diagnostics };
      const where = result.diagnostics[0];
      this.logger.error({ reason, error: result.reason, ...(where && { diagnostic: formatDiagnostic(where), code: where.code }) }, 'reload rolled back; the running config keeps serving');
      this.lastReload = { at, result: 'rolled_back', version: this.plan?.version ?? null, error: this.lastError };
    } else if (result.result === 'rejected') {
      this.metrics.reloadFailed();
      result = redactProblems(result, secrets);
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

  /** The series of the config `plan`: those of components and routes it does not have go. */
  private retainMetrics(plan: Plan): void {
    this.metrics.retain({
      routes: [...plan.routes.values()].map((r) => ({
        name: r.name,
        reads: r.from.type === 'broker' ? r.from.broker : undefined,
        webhooks: r.to.flatMap((t, place) => (t.type === 'http' ? [place] : [])),
      })),
      listeners: plan.listeners.keys(),
      brokers: plan.brokers.values(),
    });
  }

  /**
   * Applies a plan as a transaction (src/runtime/transition.ts): nothing live is touched until
   * every new piece is built and bound; a commit that fails is rolled back, and what it had
   * stopped is brought back by the same code.
   */
  async apply(next: Plan, locate?: LoadResult['locate']): Promise<ReloadResult> {
    this.applied = true;
    const prev = this.plan;
    const registry = this.options.registry;
    const drainMs = next.admin?.drainTimeoutMs ?? 10000;
    const outcome = await applyTransition(this.live, diffPlans(prev, next, registry), this.transitionEnv, drainMs);
    // What the failed build made counted apart (a new broker's zeros, one of another kind): the running config's series stay.
    if (outcome.result !== 'applied' && prev) this.retainMetrics(prev);
    // A socket that cannot bind is no fault of the file's syntax, but the file says where that listener is.
    const startDiagnostics = (o: { reason: string; at?: readonly PathPart[] }): Diagnostic[] =>
      o.at && locate ? [{ ...locate(o.at), code: 'EG_START_FAILED', path: formatPath(o.at), message: `could not start ${o.reason}` }] : [];
    if (outcome.result === 'rejected' && outcome.shuttingDown) return { result: 'rejected', reason: RELOAD_WHILE_STOPPING, diagnostics: [] };
    if (outcome.result === 'rejected')
      return {
        result: 'rejected',
        reason: `${prev ? 'could not start the new config' : `could not start ${this.options.configFile}`}: ${outcome.reason}`,
        diagnostics: startDiagnostics(outcome),
      };
    if (outcome.result === 'rolled_back') {
      let reason = `could not apply the new config: ${outcome.reason}`;
      const restore = prev
        ? await applyTransition(
            this.live,
            restoreTransition(prev, outcome.lost, (a, b) => diffPlans(a, b, registry)),
            this.transitionEnv,
            drainMs,
          )
        : undefined;
      if (restore?.result === 'rejected' && restore.shuttingDown) {
        // A shutdown began: what the failed reload stopped would only be stopped again (spec-checklist 1984).
        reason += '; the gateway is shutting down, so the running config is not restored';
        this.logger.info({ lost: outcome.lost }, "stopping: the failed reload's components are not restored");
      } else if (restore && restore.result !== 'applied') {
        reason += `; restoring the running config failed too: ${restore.reason}`;
        this.logger.error({ err: restore.reason, lost: outcome.lost }, 'could not restore the components the failed reload had stopped');
      }
      return { result: 'rolled_back', reason, version: prev?.version ?? null, diagnostics: startDiagnostics(outcome) };
    }
    this.stepState.retain(new Set([...this.routes.values()].flatMap((r) => r.stateIds)));
    const admin = next.admin;
    if (admin && prev?.admin?.key !== admin.key && !admin.token && !isLoopback(admin.host)) {
      this.logger.warn({ host: admin.host }, 'the admin API is reachable beyond this host and has no token; set admin.token');
    }
    this.plan = next;
    // The next edit of a document must be live within 500 ms (spec §6): a warm thread parses it in
    // tens of milliseconds, a new one in about a second.
    keepParserThread((next.asyncapi?.length ?? 0) > 0);
    this.loadedAt = new Date();
    this.logger.level = next.log.level;
    this.logOptions.payloads = next.log.payloads;
    this.redaction.secrets = next.secretValues ?? new Set();
    this.metrics.setVersion(next.version);
    this.retainMetrics(next);
    this.tap.retain(next.routes.keys());
    this.tap.configure(next.admin?.tap);
    // Applied as a shutdown began (past the point where it could be dropped): not ready, draining.
    if (!this.stopping) this.logReady();
    // Once what the reload replaced or removed has stopped, brokers may drop what they kept on the
    // server for routes no longer running (not after the first load, not once a shutdown began).
    const reloaded = () => {
      if (prev && !this.stopping) for (const b of this.brokers.values()) b.reloaded?.();
    };
    if (outcome.retiring) {
      this.retiring.add(outcome.retired);
      void outcome.retired.finally(() => {
        this.retiring.delete(outcome.retired);
        reloaded();
      });
    } else {
      await outcome.retired;
      reloaded();
    }
    return { result: 'applied', version: next.version };
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
    const fp = planFingerprint(this.plan, this.options.registry);
    // A renamed forward route consumes in its predecessor's group (RouteRuntime.takeOver): plan names that one.
    const instance = `-${this.instanceId}`;
    for (const r of fp.routes) {
      const taken = this.routes.get(r.name)?.takenOverGroup();
      if (taken !== undefined) r.group = taken.replace(instance, '-<instance>');
    }
    // Never a secret in an admin answer: the names are served redacted, as /admin/status has them.
    return { ...redactFingerprint(fp, this.plan.secretValues ?? new Set()), clients };
  }

  /** For /admin/status: never shows a secret, whichever way a config value reached it. */
  status(): Record<string, unknown> {
    const secrets = this.plan?.secretValues ?? new Set<string>();
    const shown = redact(this.rawStatus(), secrets);
    // The last reload's problems name their files as they are (redactDiagnostics): a directory
    // named like a variable's value was served as `[redacted]/gateway.yaml`.
    const error = this.lastError && redactProblems(this.lastError, secrets);
    const reloadError = this.lastReload?.error && redactProblems(this.lastReload.error, secrets);
    return { ...shown, lastReloadError: error, lastReload: this.lastReload ? { ...(shown.lastReload as ReloadRecord), error: reloadError ?? null } : null };
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
        ...(r.plan.from.type === 'broker' ? { consumer: r.health(), stalled: r.stalledMessages() } : {}),
        to: r.plan.to.map((t) =>
          t.type === 'broker' ? { broker: t.broker, topic: t.topic } : t.type === 'http' ? { http: shownEndpoint(t.webhook.url) } : { listener: t.listener, path: t.path, format: t.format },
        ),
      })),
    };
  }

  /** SIGTERM: stop accepting, finish in-flight work (bounded), commit, flush, close clients with 1001. */
  async shutdown(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    // A first load in progress ends first (it starts nothing now): its config sets the drain timeout.
    await this.starting?.catch(() => undefined);
    // Not ready at once (`stopping`), still serving for shutdownDelayMs: a load balancer or
    // Kubernetes, which learn of the shutdown from /readyz (or an endpoint removal) some seconds
    // late, stop sending before the listeners refuse, so clients get no 503 for a rolling update.
    const delayMs = this.applied ? (this.plan?.admin?.shutdownDelayMs ?? 0) : 0;
    if (delayMs > 0) {
      this.logger.info({ shutdownDelayMs: delayMs }, 'shutting down: not ready, still serving for shutdownDelayMs');
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
    const drainMs = this.plan?.admin?.drainTimeoutMs ?? 10000;
    // A first load that failed started nothing: its log ends with why, not with a drain of 10 s.
    if (this.applied) this.logger.info({ drainMs }, 'shutting down: draining');
    // One budget for the whole drain: a consumer that cannot commit (its cluster down) must not hold
    // the exit past drainTimeoutMs; its message in hand stays uncommitted and is delivered again.
    const deadline = performance.now() + drainMs;
    const left = () => Math.max(0, deadline - performance.now());
    // A reload under way may wait seconds (a route handing its subscription over finishes its
    // message in hand first): the listeners stop accepting now, not once it ends. Those it puts in
    // place are quiesced below with the rest.
    const reloadUnderWay = this.reloading !== undefined;
    if (reloadUnderWay) for (const l of this.listeners.values()) void l.quiesce?.({ drainMs }).catch(() => undefined);
    await this.watcher?.close();
    // The reload is waited for within the budget, not to its end: a route handing its subscription
    // over may wait 5 s for its webhook, a Kafka consumer's stop 15 s (spec-checklist 1667). One not
    // ended by then is taken apart with the rest: its new routes are stopped below (it starts none
    // now), and the old consumers it is stopping have their webhook tries cut at the deadline, so
    // their messages in hand are given back, not acknowledged.
    const reload = this.reloading?.catch(() => undefined);
    if (reload && (await within(reload, left())) === 'late') this.logger.warn({ drainMs }, 'the reload under way did not end within drainTimeoutMs; its old consumers are stopped with the rest');
    const cutLeaving = setTimeout(() => {
      for (const r of this.leaving.keys()) r.close();
    }, left());
    // Stop accepting and finish in-flight requests and frames. Websocket clients stay connected
    // (quiesce) until the end, so messages in flight still reach them (spec §7: they are closed
    // with 1001 after in-flight messages finished, producers flushed and offsets committed).
    // After a reload under way, what is left of the budget (the first quiesce named the whole in the
    // drain's texts): the reload used some of it (review-s42's 1715).
    const listenersMs = reloadUnderWay ? left() : drainMs;
    await Promise.allSettled([...this.listeners.values()].map((l) => (l.quiesce ? l.quiesce({ drainMs: listenersMs }) : l.stop({ drainMs: listenersMs }))));
    for (const b of this.brokers.values()) b.shuttingDown?.();
    // Memory topics die with the process, and nothing would deliver what they hold again: the
    // routes reading them go on until they have handled it (within the drain timeout), after the
    // routes reading other brokers stopped (what those have in hand may still go to a memory topic).
    const readsInProcess = (r: RouteRuntime) => r.plan.from.type === 'broker' && this.brokers.get(r.plan.from.broker)?.settle !== undefined;
    const stopConsuming = async (r: RouteRuntime) => {
      if ((await within(r.stopConsuming(left(), true), left())) !== 'late') return;
      // With no message in hand the consumer was still starting (a Kafka member waiting for its
      // group's rebalance) or committing: the log must not speak of a message in hand.
      if (r.pending > 0 && readsInProcess(r))
        // A memory topic dies with the process: nothing delivers its messages again (the warning before this one counted them).
        this.logger.warn({ route: r.name, drainMs, inFlight: r.pending }, 'consumer did not stop within drainTimeoutMs; the memory topic messages in hand are lost with the process');
      else if (r.pending > 0)
        this.logger.warn({ route: r.name, drainMs, inFlight: r.pending }, 'consumer did not stop within drainTimeoutMs; its message in hand stays uncommitted and will be delivered again');
      else
        this.logger.warn(
          { route: r.name, drainMs },
          'consumer did not stop within drainTimeoutMs (no message in hand: still joining its group, connecting or committing); what it had not committed will be delivered again',
        );
    };
    const routes = [...this.routes.values()];
    await Promise.allSettled(routes.filter((r) => !readsInProcess(r)).map(stopConsuming));
    await this.settleInProcessBrokers(left(), drainMs);
    await Promise.allSettled(routes.filter(readsInProcess).map(stopConsuming));
    await Promise.allSettled(
      routes.map(async (r) => {
        await r.drain(left());
        r.close();
      }),
    );
    await within(Promise.allSettled([...this.retiring, ...this.leaving.values()]), left());
    clearTimeout(cutLeaving);
    await Promise.allSettled([...this.brokers.values()].map((b) => b.stop()));
    await Promise.allSettled([...this.listeners.values()].filter((l) => l.quiesce).map((l) => l.stop({ drainMs: left() })));
    await this.admin?.stop();
    // Warnings whose owners were not closed here (a route a reload retired) write what they counted.
    flushPendingWarnings();
    this.logger.info('shutdown complete');
  }

  /**
   * Waits, up to `ms`, for the brokers whose messages live in the process to hand what they hold to
   * their routes; what is still undelivered then is lost with the process, and the log says how
   * much, per route and topic.
   */
  private async settleInProcessBrokers(ms: number, drainMs: number): Promise<void> {
    const brokers = [...this.brokers.values()].filter((b) => b.settle);
    if ((await within(Promise.allSettled(brokers.map((b) => b.settle!())), ms)) !== 'late') return;
    for (const b of brokers)
      for (const { route, topic, lag } of b.consumerLag?.() ?? [])
        if (lag > 0)
          this.logger.warn({ broker: b.name, route, topic, messages: lag, drainMs }, 'memory topic messages not delivered to their route within drainTimeoutMs; they are lost with the process');
  }
}

/** 'late' when `work` has not settled after `ms` (it goes on; only the wait ends). */
function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
