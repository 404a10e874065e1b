import { signatureKey, WEBHOOK_DEFAULTS, type WebhookOptions, type WebhookPlan } from '../kinds/targets/webhook.js';
import { readFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import type { ValidateFunction } from 'ajv';
import { parseAsyncApi, type AsyncApiDocument, type AsyncApiMessage } from '../asyncapi/document.js';
import { lookup, type AsyncApiRef } from '../asyncapi/lookup.js';
import type { RemoteRefOptions } from '../asyncapi/refs.js';
import { checkSchema } from '../config/check-schema.js';
import { formatPath, type Diagnostic } from '../config/diagnostics.js';
import { describeFsError, parseDataFile, readSource, type Env, type PathPart, type SourceDocument } from '../config/source.js';
import { didYouMean } from '../config/suggest.js';
import { isHidden, pruneInvalid, type Hidden, type Pruned } from '../config/prune.js';
import { mergedPath, resolveIncludes } from '../config/include.js';
import type { ErrorCode } from '../core/errors.js';
import { compileExpression, defaultExpressionLimits, ExpressionSyntaxError, type Expression, type ExpressionLimits } from '../expr/expression.js';
import type { BrokerCompileContext, CompiledStep, ListenerCompileContext, MessageContract, StartFrom, StepCompileContext } from '../kinds/contracts.js';
import { secretValues } from '../config/secrets.js';
import type { KindRegistry } from '../kinds/registry.js';
import { canonical, hash } from '../core/canonical.js';
import { findConflicts } from './conflicts.js';
import { JsonSchemaCompiler } from './json-schema.js';
import type { AdminPlan, AsyncApiPlan, ComponentPlan, ListenerPlan, Plan, RoutePlan, SourcePlan, TargetPlan } from './types.js';

export interface LoadOptions {
  registry: KindRegistry;
  env: Env;
  /**
   * Contents to use instead of what is on disk, by absolute path: the admin API loads the config
   * with an uploaded AsyncAPI document this way, to check it before writing it.
   */
  overrides?: ReadonlyMap<string, string>;
}

export interface LoadResult {
  plan: Plan | undefined;
  diagnostics: Diagnostic[];
  /** Every file the config referenced (even when loading failed), so a fix to any of them is noticed. */
  files: string[];
  /**
   * Content hash of each file as this load read it ('missing' when it could not be read). A
   * watcher compares against these, not against a later read, or an edit made while the load
   * ran would go unnoticed.
   */
  seen: Map<string, string>;
  /** Secret strings of the loaded file (see secretValues), also when it was rejected: its diagnostics are redacted with them. */
  secrets?: ReadonlySet<string>;
}

/**
 * parse → schema check → compile. Collects every problem it can rather than stopping at the first.
 * Asynchronous because AsyncAPI documents are parsed (and their `$ref`s resolved) asynchronously.
 */
export async function loadPlan(file: string, options: LoadOptions): Promise<LoadResult> {
  const configFile = resolve(file);
  const diagnostics: Diagnostic[] = [];
  const { source: root, bytes } = readSource(file, options.env, diagnostics);
  const configSeen = new Map([[configFile, bytes ? hash(bytes) : 'missing']]);
  if (!root) return { plan: undefined, diagnostics, files: [configFile], seen: configSeen };
  // Fragments named by `include:` are merged in; the watcher follows them (and each glob's directory).
  const included = resolveIncludes(root, file, options.env, diagnostics);
  for (const [f, h] of included?.files ?? []) configSeen.set(f, h);
  const src = included?.source ?? root;
  const secrets = secretValues(src.value, src.fromEnv, src.envValues);
  // A value whose variable is missing was left unsubstituted: its schema error would only repeat the problem.
  const missingEnv = new Set(diagnostics.filter((d) => d.code === 'EG_CONFIG_ENV').map((d) => `${d.file}\0${d.path}`));
  const schemaProblems = [
    ...checkSchema(root, options.registry),
    ...(included?.fragments ?? []).flatMap((f) => checkSchema(f.source, options.registry, { fragment: true }).map((d) => ({ ...d, path: mergedPath(d.path, f.routeOffset) }))),
  ];
  diagnostics.push(...schemaProblems.filter((d) => !missingEnv.has(`${d.file}\0${d.path}`)));
  // With problems so far, the parts that are still sound are compiled anyway, so one run reports everything.
  // (A name defined twice keeps its first definition: that is not a part to leave out.)
  const pruned = diagnostics.length > 0 ? pruneInvalid(src.value, diagnostics.filter((d) => d.code !== 'EG_CONFIG_CONFLICT')) : undefined;
  if (diagnostics.length > 0 && !pruned) return { plan: undefined, diagnostics: sortDiagnostics(diagnostics), files: [...configSeen.keys()], seen: configSeen, secrets };
  const compiler = new Compiler(src, configFile, configSeen.get(configFile)!, options.registry, options.overrides, pruned);
  for (const [f, h] of included?.files ?? []) compiler.files.set(f, h);
  await compiler.loadAsyncApi();
  const plan = compiler.compile(secrets);
  const files = [...compiler.files.keys()];
  const seen = new Map(compiler.files);
  diagnostics.push(...compiler.diagnostics);
  if (diagnostics.length > 0) return { plan: undefined, diagnostics: sortDiagnostics(diagnostics), files, seen, secrets };
  return { plan, diagnostics: [], files, seen, secrets };
}

function sortDiagnostics(d: Diagnostic[]): Diagnostic[] {
  return d.sort((a, b) => (a.file === b.file ? a.line - b.line || a.column - b.column : a.file < b.file ? -1 : 1));
}

/* The config as the schema guarantees it to be. */
interface RawConfig {
  version: 1;
  asyncapi?: string | string[];
  asyncapiRemoteRefs?: RemoteRefOptions;
  admin?: { port: number; host?: string; token?: string; drainTimeoutMs?: number; tap?: { maxPerSecond?: number }; allowedHosts?: string[] };
  log?: { level?: string; payloads?: boolean };
  expressions?: Partial<ExpressionLimits>;
  brokers?: Record<string, { kind: string } & Record<string, unknown>>;
  listeners?: Record<string, { kind: string } & Record<string, unknown>>;
  chains?: Record<string, RawStep[]>;
  /** A hole where pruneInvalid() left an invalid route out. */
  routes?: (RawRoute | undefined)[];
}
type RawStep = Record<string, unknown>;
/** A target as the schema guarantees it: one of three shapes, each with only its own keys. */
type RawTarget =
  | { http: WebhookOptions }
  /** `topic` is a name, or `{expression}`: JSONata computing it per message. */
  | { broker: string; topic: string | { expression: string }; key?: string; cloudevents?: 'binary' | 'structured' }
  | { listener: string; path: string; format?: 'value' | 'envelope' | 'cloudevent'; auth?: Record<string, unknown> };
interface RawRoute {
  name: string;
  /** The schema guarantees a listener, or a broker with a topic; the compiler checks a listener's path or topic by its kind. */
  from: { listener: string; path?: string; topic?: string } | { broker: string; topic: string; group?: string; startFrom?: StartFrom; fromBeginning?: boolean };
  through?: string | (string | RawStep)[];
  /** Required, except on routes from a listener that routes by topic (kafka), where records go on upstream. */
  to?: RawTarget | RawTarget[];
  deadletter?: { broker: string; topic: string };
  ack?: boolean;
}

interface CompiledChainStep {
  step: CompiledStep;
  /** Canonical config of the step, part of the route key. */
  key: string;
  /** Files the step read, for the route key. */
  files: string[];
}

class Compiler {
  readonly diagnostics: Diagnostic[] = [];
  readonly files = new Map<string, string>();
  private readonly config: RawConfig;
  private readonly dir: string;
  private readonly limits: ExpressionLimits;
  private readonly schemas = new JsonSchemaCompiler();
  /** Data files read with readDocument, by the name the config used. */
  private readonly documents = new Map<string, SourceDocument>();
  /** The config's AsyncAPI documents; undefined without `asyncapi:`. */
  private asyncapi: AsyncApiDocument[] | undefined;
  /** Some document did not load (its problems are reported in it): unknown names are then not news. */
  private asyncapiFailed = false;
  private readonly asyncapiPlans: AsyncApiPlan[] = [];
  /** Each message's payload is compiled once per load, however many steps name it. */
  private readonly payloadChecks = new Map<AsyncApiMessage, ValidateFunction | undefined>();
  /** Parts left out because they are invalid themselves (see pruneInvalid): references to them are not reported again. */
  private readonly hidden: Hidden;

  constructor(
    private readonly src: SourceDocument,
    configFile: string,
    configHash: string,
    private readonly registry: KindRegistry,
    private readonly overrides: ReadonlyMap<string, string> | undefined,
    pruned?: Pruned,
  ) {
    this.config = (pruned?.value ?? src.value) as RawConfig;
    this.hidden = pruned?.hidden ?? { brokers: new Set(), listeners: new Set(), chains: new Set(), asyncapi: false };
    if (this.hidden.asyncapi) this.asyncapiFailed = true;
    this.dir = dirname(configFile);
    this.files.set(configFile, configHash);
    this.limits = { ...defaultExpressionLimits, ...this.config.expressions };
  }

  /** The file a config path was written in (a fragment pulled in with `include:`, or the config). */
  private fileOf(path: readonly PathPart[]): string {
    return this.src.fileOf?.(path) ?? this.src.file;
  }

  report(path: readonly PathPart[], code: ErrorCode, message: string, which: 'key' | 'value' = 'value'): void {
    const { line, column } = this.src.locate(path, which);
    this.diagnostics.push({ file: this.fileOf(path), line, column, code, path: formatPath(path), message });
  }

  /** Parses the `asyncapi:` documents (before compile(), which is synchronous, looks messages up in them). */
  async loadAsyncApi(): Promise<void> {
    const raw = this.config.asyncapi;
    if (raw === undefined) return;
    this.asyncapi = [];
    const paths = typeof raw === 'string' ? [raw] : raw;
    const seen = new Map<string, number>();
    const loaded = await Promise.all(
      paths.map(async (asWritten, i) => {
        const at: PathPart[] = typeof raw === 'string' ? ['asyncapi'] : ['asyncapi', i];
        const file = resolve(this.dir, asWritten);
        if (seen.has(file)) {
          this.report(at, 'EG_CONFIG_CONFLICT', `AsyncAPI document '${asWritten}' is listed twice`);
          return undefined;
        }
        seen.set(file, i);
        const text = this.readFile(file, asWritten, at);
        if (text === undefined) return undefined;
        const files = [file];
        const parsed = await parseAsyncApi(
          file,
          text,
          (ref) => {
            if (!files.includes(ref)) files.push(ref);
            return this.readText(ref);
          },
          { root: resolve(this.dir), remote: this.config.asyncapiRemoteRefs },
        );
        for (const p of parsed.problems) {
          this.diagnostics.push({ file: this.display(p.file), line: p.line, column: p.column, code: 'EG_CONFIG_ASYNCAPI', path: formatPath(p.path), message: `AsyncAPI: ${p.message}` });
        }
        if (!parsed.document) return undefined;
        const d = parsed.document;
        const plan: AsyncApiPlan = {
          asWritten,
          file,
          text,
          files,
          version: d.version,
          title: d.title,
          messages: [...new Set(d.messages.flatMap((m) => m.ids))],
          channels: d.channels.map((ch) => ch.name),
        };
        return { document: d, plan };
      }),
    );
    for (const l of loaded) {
      if (!l) {
        this.asyncapiFailed = true;
        continue;
      }
      this.asyncapi.push(l.document);
      this.asyncapiPlans.push(l.plan);
    }
  }

  /** A path as the user would write it next to the config file's path (relative stays relative). */
  private display(file: string): string {
    return join(dirname(this.src.file), relative(this.dir, file));
  }

  compile(secrets: ReadonlySet<string>): Plan {
    const c = this.config;
    const brokers = new Map<string, ComponentPlan>();
    for (const [name, options] of Object.entries(c.brokers ?? {})) {
      const kind = this.registry.brokers.get(options.kind)!;
      const at: PathPart[] = ['brokers', name];
      const files: string[] = [];
      const ctx: BrokerCompileContext = {
        report: (rel, code, message) => this.report([...at, ...rel], code, message),
        readFile: (file, rel) => {
          const abs = resolve(this.dir, file);
          files.push(abs);
          return this.readFile(abs, file, [...at, ...rel]);
        },
      };
      const compiled = kind.compile ? kind.compile(options, ctx) : options;
      // A referenced file (a CA, a client certificate) that changed replaces the broker like an option would.
      const key = files.length === 0 ? canonical(options) : canonical({ options, files: files.map((f) => [f, this.files.get(f)]) });
      brokers.set(name, { name, kind: options.kind, options: (compiled ?? options) as Record<string, unknown>, key });
    }
    const listeners = new Map<string, ListenerPlan>();
    for (const [name, options] of Object.entries(c.listeners ?? {})) {
      const kind = this.registry.listeners.get(options.kind)!;
      // A listener that changes kind needs a new socket even on the same port: another kind's runtime cannot take its options.
      const socket = { kind: options.kind, ...Object.fromEntries(kind.socketOptions.map((k) => [k, options[k]])) };
      const at: PathPart[] = ['listeners', name];
      const files: string[] = [];
      const upstreams: string[] = [];
      const ctx: ListenerCompileContext = {
        report: (rel, code, message) => this.report([...at, ...rel], code, message),
        readFile: (file, rel) => {
          const abs = resolve(this.dir, file);
          files.push(abs);
          return this.readFile(abs, file, [...at, ...rel]);
        },
        broker: (brokerName, rel) => {
          const b = brokers.get(brokerName);
          if (b === undefined) {
            // A broker set aside for its own problem (one-pass validate) is not reported again here.
            if (isHidden(this.hidden.brokers, brokerName)) return undefined;
            this.report([...at, ...rel], 'EG_CONFIG_REF', `broker '${brokerName}' is not defined${didYouMean(brokerName, brokers.keys())}${brokers.size ? `; defined brokers: ${[...brokers.keys()].join(', ')}` : '; add it under brokers:'}`);
            return undefined;
          }
          upstreams.push(b.key);
          return { kind: b.kind, options: b.options };
        },
      };
      // On failure the problems are reported (the plan is rejected); the listener stays in the map
      // so routes on it are still checked.
      const compiled = (kind.compile ? kind.compile(options, ctx) : options) ?? options;
      // A changed referenced file (a rotated certificate) changes the key but not the socket key:
      // the listener takes it in place.
      // So does a change to a broker the listener reads its settings from (a kafka listener's upstream).
      const key = files.length === 0 && upstreams.length === 0 ? canonical(options) : canonical({ options, files: files.map((f) => [f, this.files.get(f)]), upstreams });
      listeners.set(name, { name, kind: options.kind, options: compiled as Record<string, unknown>, key, socketKey: canonical(socket) });
    }
    const chains = new Map<string, CompiledChainStep[] | undefined>();
    for (const [name, steps] of Object.entries(c.chains ?? {})) {
      chains.set(name, this.compileSteps(steps, ['chains', name]));
    }
    const routes = new Map<string, RoutePlan>();
    const names = new Map<string, number>();
    /** listener → the publish paths claimed on it so far, with the claiming route's index. */
    const claimed = new Map<string, { path: string; index: number }[]>();
    const forwardAuth = new Map<string, { auth: string; route: string }>();
    (c.routes ?? []).forEach((raw, i) => {
      if (raw === undefined) return; // left out: invalid itself
      const at: PathPart[] = ['routes', i];
      const first = names.get(raw.name);
      if (first !== undefined) {
        const { line } = this.src.locate(['routes', first, 'name'], 'value');
        const firstFile = this.fileOf(['routes', first]);
        const where = firstFile === this.fileOf(at) ? `line ${line}` : `${firstFile}:${line}`;
        this.report([...at, 'name'], 'EG_CONFIG_CONFLICT', `route name '${raw.name}' is already used by routes[${first}] (${where}); route names must be unique`);
        return;
      }
      names.set(raw.name, i);
      const route = this.compileRoute(raw, at, brokers, listeners, chains);
      if (!route) return;
      if (route.from.type === 'listener') {
        const { listener, path } = route.from;
        const kind = this.registry.listeners.get(listeners.get(listener)!.kind)!;
        const word = kind.routesBy === 'topic' ? 'topic' : 'path';
        const invalid = kind.checkPath?.(path);
        if (invalid !== undefined) {
          this.report([...at, 'from', word], 'EG_CONFIG_SCHEMA', `route '${raw.name}': ${word} '${path}' cannot be routed: ${invalid}`);
          return;
        }
        const same = kind.samePath ?? ((a: string, b: string) => a === b);
        const paths = claimed.get(listener) ?? [];
        const other = paths.find((p) => same(p.path, path));
        if (other !== undefined) {
          const also = other.path === path ? '' : ` ('${other.path}' matches the same requests)`;
          this.report([...at, 'from', word], 'EG_CONFIG_CONFLICT', `listener '${listener}' ${word} '${path}' is already the source of route '${c.routes![other.index]!.name}'${also}`);
          return;
        }
        claimed.set(listener, [...paths, { path, index: i }]);
      }
      // Subscribers of a path receive what every route forwarding there sends, so the routes
      // must agree on who may subscribe.
      const targets = raw.to === undefined ? [] : Array.isArray(raw.to) ? raw.to : [raw.to];
      for (const [j, t] of targets.entries()) {
        if (!('listener' in t)) continue;
        const claim = `${t.listener} ${t.path}`;
        const auth = canonical(t.auth ?? null);
        const other = forwardAuth.get(claim);
        if (other === undefined) forwardAuth.set(claim, { auth, route: raw.name });
        else if (other.auth !== auth) {
          this.report(Array.isArray(raw.to) ? [...at, 'to', j] : [...at, 'to'], 'EG_CONFIG_CONFLICT', `route '${other.route}' also forwards to listener '${t.listener}' path '${t.path}' with ${other.auth === 'null' ? 'no auth' : 'a different auth'}; every route forwarding to a path must declare the same auth`, 'key');
          return;
        }
      }
      routes.set(route.name, route);
    });

    let admin: AdminPlan | undefined;
    if (c.admin) {
      const a = { port: c.admin.port, host: c.admin.host ?? '127.0.0.1', token: c.admin.token, drainTimeoutMs: c.admin.drainTimeoutMs ?? 10000, tap: { maxPerSecond: c.admin.tap?.maxPerSecond ?? 100 }, allowedHosts: c.admin.allowedHosts ?? [] };
      admin = { ...a, key: canonical({ port: a.port, host: a.host }) };
    }
    const routeIndex = new Map((c.routes ?? []).flatMap((r, i) => (r ? [[r.name, i] as const] : [])));
    for (const conflict of findConflicts({ registry: this.registry, admin, brokers, listeners, routes: [...routes.values()].map((route) => ({ index: routeIndex.get(route.name)!, route })) })) {
      const otherFile = conflict.other && this.fileOf(conflict.other);
      const other = conflict.other ? ` (see ${otherFile === this.fileOf(conflict.path) ? 'line ' : `${otherFile}:`}${this.src.locate(conflict.other, 'value').line})` : '';
      this.report(conflict.path, 'EG_CONFIG_CONFLICT', conflict.message + other);
    }
    const version = hash([...this.files.entries()].sort().map(([f, h]) => `${f}\0${h}`).join('\n')).slice(0, 12);
    return {
      version,
      file: this.src.file,
      files: this.files,
      asyncapi: this.asyncapiPlans,
      admin,
      log: { level: c.log?.level ?? 'info', payloads: c.log?.payloads ?? false },
      expressions: this.limits,
      brokers,
      listeners,
      routes,
      secretValues: secrets,
    };
  }

  private compileRoute(
    raw: RawRoute,
    at: PathPart[],
    brokers: Map<string, ComponentPlan>,
    listeners: Map<string, ListenerPlan>,
    chains: Map<string, CompiledChainStep[] | undefined>,
  ): RoutePlan | undefined {
    const errorsBefore = this.diagnostics.length;
    const usesBrokers = new Set<string>();
    const usesListeners = new Set<string>();
    const checkBroker = (name: string, path: PathPart[]) => {
      if (brokers.has(name)) {
        usesBrokers.add(name);
        return true;
      }
      if (isHidden(this.hidden.brokers, name)) return false;
      this.report(path, 'EG_CONFIG_REF', `broker '${name}' is not defined${didYouMean(name, brokers.keys())}${brokers.size ? `; defined brokers: ${[...brokers.keys()].join(', ')}` : '; add it under brokers:'}`);
      return false;
    };
    const checkListener = (name: string, path: PathPart[]) => {
      if (listeners.has(name)) {
        usesListeners.add(name);
        return true;
      }
      if (isHidden(this.hidden.listeners, name)) return false;
      this.report(path, 'EG_CONFIG_REF', `listener '${name}' is not defined${didYouMean(name, listeners.keys())}${listeners.size ? `; defined listeners: ${[...listeners.keys()].join(', ')}` : '; add it under listeners:'}`);
      return false;
    };

    // from (the schema guarantees a listener with a path, or a broker with a topic)
    let from: SourcePlan | undefined;
    const f = raw.from;
    if ('listener' in f && this.routesByTopic(f.listener, listeners)) {
      // A kafka listener: the route governs what its clients produce to a topic.
      if (f.path !== undefined) this.report([...at, 'from', 'path'], 'EG_CONFIG_SCHEMA', `route '${raw.name}': listener '${f.listener}' takes Kafka clients, so the route names a 'topic', not a 'path'`, 'key');
      else if (f.topic === undefined) this.report([...at, 'from'], 'EG_CONFIG_SCHEMA', `route '${raw.name}': 'from.listener' '${f.listener}' is a kafka listener and needs a 'topic'`, 'key');
      else if (checkListener(f.listener, [...at, 'from', 'listener'])) from = { type: 'listener', listener: f.listener, path: f.topic };
    } else if ('listener' in f) {
      if (f.topic !== undefined) this.report([...at, 'from', 'topic'], 'EG_CONFIG_SCHEMA', `route '${raw.name}': 'topic' belongs with 'from.broker' (or a kafka listener), not with ${this.listenerKindOf(f.listener, listeners)} listener '${f.listener}'`, 'key');
      else if (f.path === undefined) this.report([...at, 'from'], 'EG_CONFIG_SCHEMA', `route '${raw.name}': 'from.listener' needs a 'path'`, 'key');
      else if (checkListener(f.listener, [...at, 'from', 'listener'])) {
        const kind = this.registry.listeners.get(listeners.get(f.listener)!.kind)!;
        if (!kind.acceptsPublish) this.report([...at, 'from', 'listener'], 'EG_CONFIG_REF', `listener '${f.listener}' (${kind.kind}) does not accept messages from clients`);
        else from = { type: 'listener', listener: f.listener, path: f.path };
      }
    } else if (checkBroker(f.broker, [...at, 'from', 'broker'])) {
      from = { type: 'broker', broker: f.broker, topic: f.topic, group: f.group, startFrom: f.startFrom ?? (f.fromBeginning === undefined ? undefined : f.fromBeginning ? 'earliest' : 'latest') };
    }

    // deadletter
    if (raw.deadletter) checkBroker(raw.deadletter.broker, [...at, 'deadletter', 'broker']);

    // through
    const steps: CompiledChainStep[] = [];
    const through = raw.through === undefined ? [] : typeof raw.through === 'string' ? [raw.through] : raw.through;
    const throughAt: PathPart[] = [...at, 'through'];
    /** The kind of the listener the route reads from, when it limits what its routes may do (kafka). */
    const sourceKind = from?.type === 'listener' ? this.registry.listeners.get(listeners.get(from.listener)!.kind) : undefined;
    through.forEach((item, j) => {
      const itemAt = typeof raw.through === 'string' ? throughAt : [...throughAt, j];
      const itemSteps = steps.length;
      if (typeof item === 'string') {
        if (!chains.has(item)) {
          if (isHidden(this.hidden.chains, item)) return;
          this.report(itemAt, 'EG_CONFIG_REF', `chain '${item}' is not defined${didYouMean(item, chains.keys())}${chains.size ? `; defined chains: ${[...chains.keys()].join(', ')}` : '; add it under chains:'}`);
          return;
        }
        steps.push(...(chains.get(item) ?? []));
      } else {
        steps.push(...(this.compileSteps([item], itemAt, true) ?? []));
      }
      const why = sourceKind?.stepProblem ? steps.slice(itemSteps).map((s) => sourceKind.stepProblem!(s.step)).find((w) => w !== undefined) : undefined;
      if (why !== undefined) this.report(itemAt, 'EG_CONFIG_REF', `route '${raw.name}' is on ${sourceKind!.kind} listener '${from!.type === 'listener' ? from!.listener : ''}': ${why}`, typeof item === 'string' ? 'value' : 'key');
    });
    for (const s of steps) for (const b of s.step.brokers ?? []) usesBrokers.add(b);
    if (from?.type === 'broker') {
      const clientSteps = [...new Set(steps.filter((s) => s.step.needsClient).map((s) => s.step.kind))];
      if (clientSteps.length > 0) this.report(throughAt, 'EG_CONFIG_REF', `route '${raw.name}' consumes from a broker, but ${clientSteps.join(' and ')} steps check the client that sent a message, and broker messages have none; use them on routes from a listener`, 'key');
    }
    if (!raw.deadletter && steps.some((s) => s.step.needsRouteDeadletter)) {
      this.report(throughAt, 'EG_CONFIG_REF', `route '${raw.name}' uses a validate step with onInvalid: deadletter but neither the step nor the route has a 'deadletter: {broker, topic}'`, 'key');
    }

    // to
    const targets: TargetPlan[] = [];
    const targetFiles: string[] = [];
    if ('listener' in f && this.routesByTopic(f.listener, listeners)) {
      if (raw.to !== undefined) this.report([...at, 'to'], 'EG_CONFIG_SCHEMA', `route '${raw.name}' is on kafka listener '${f.listener}': its records go on to topic '${f.topic ?? ''}' of the listener's upstream cluster, so it takes no 'to'`, 'key');
      if (raw.deadletter !== undefined) this.report([...at, 'deadletter'], 'EG_CONFIG_SCHEMA', `route '${raw.name}' is on kafka listener '${f.listener}': a record cannot leave a produce request without breaking the producer's sequence numbers, so there is no dead-letter target; use onInvalid: reject or tag`, 'key');
    } else if (raw.to === undefined) {
      this.report(at, 'EG_CONFIG_SCHEMA', `route '${raw.name}' needs a 'to' (a target, or a list of them)`, 'key');
    }
    const rawTargets = raw.to === undefined ? [] : Array.isArray(raw.to) ? raw.to : [raw.to];
    rawTargets.forEach((t, j) => {
      const tAt: PathPart[] = Array.isArray(raw.to) ? [...at, 'to', j] : [...at, 'to'];
      // The schema has checked the target's shape: exactly one of broker (with topic), listener (with path) or http, and only the keys of that kind.
      if ('http' in t) {
        const webhook = this.webhook(t.http, [...tAt, 'http']);
        if (webhook) targets.push({ type: 'http', webhook });
        return;
      }
      if ('broker' in t) {
        if (!checkBroker(t.broker, [...tAt, 'broker'])) return;
        const key = t.key === undefined ? undefined : this.expression(t.key, [...tAt, 'key']);
        const structured = t.cloudevents === 'structured';
        if (typeof t.topic === 'string') targets.push({ type: 'broker', broker: t.broker, topic: t.topic, topicExpr: undefined, key, structured });
        else {
          const topicExpr = this.expression(t.topic.expression, [...tAt, 'topic', 'expression']);
          targets.push({ type: 'broker', broker: t.broker, topic: t.topic.expression, topicExpr, key, structured });
        }
      } else {
        if (!checkListener(t.listener, [...tAt, 'listener'])) return;
        const kind = this.registry.listeners.get(listeners.get(t.listener)!.kind)!;
        if (!kind.acceptsForward) return this.report([...tAt, 'listener'], 'EG_CONFIG_REF', `listener '${t.listener}' is a ${kind.kind} listener; only websocket and http listeners can be targets (clients connect to them to receive messages)`);
        let auth: CompiledStep | undefined;
        if (t.auth !== undefined) {
          const authKind = this.registry.steps.get('auth');
          const files: string[] = [];
          auth = authKind?.compile(t.auth, this.stepContext([...tAt, 'auth'], files));
          targetFiles.push(...files);
          if (!auth) return;
        }
        targets.push({ type: 'listener', listener: t.listener, path: t.path, format: t.format ?? 'value', auth });
      }
    });

    if (this.diagnostics.length > errorsBefore || !from) return undefined;
    const fileHashes = [...steps.flatMap((s) => s.files), ...targetFiles].map((file) => [file, this.files.get(file)]);
    const seen = new Map<string, number>();
    const stepIds = steps.map((s) => {
      const n = seen.get(s.key) ?? 0;
      seen.set(s.key, n + 1);
      return `${raw.name}\0${s.key}\0${n}`;
    });
    return {
      name: raw.name,
      key: canonical({ raw, steps: steps.map((s) => s.key), files: fileHashes }),
      from,
      steps: steps.map((s) => s.step),
      stepIds,
      to: targets,
      deadletter: raw.deadletter,
      ack: raw.ack ?? false,
      brokers: [...usesBrokers],
      listeners: [...usesListeners],
    };
  }

  /** The kind of a listener, for messages ('an http', 'a websocket'). */
  private listenerKindOf(listener: string, listeners: Map<string, ListenerPlan>): string {
    const kind = listeners.get(listener)?.kind;
    return kind === undefined ? 'the' : /^[aeiou]/.test(kind) ? `an ${kind}` : `a ${kind}`;
  }

  /** Whether routes from `listener` name a topic rather than a path (kafka listeners). */
  private routesByTopic(listener: string, listeners: Map<string, ListenerPlan>): boolean {
    const l = listeners.get(listener);
    return l !== undefined && this.registry.listeners.get(l.kind)?.routesBy === 'topic';
  }

  /** A webhook target's options with its expressions compiled and defaults filled in. */
  private webhook(o: WebhookOptions, at: PathPart[]): WebhookPlan | undefined {
    const before = this.diagnostics.length;
    let url = typeof o.url === 'string' ? o.url : o.url.expression;
    let urlExpr: Expression | undefined;
    if (typeof o.url === 'string') url = normalUrl(o.url);
    else urlExpr = this.expression(o.url.expression, [...at, 'url', 'expression']);
    const headers: [string, Expression][] = [];
    for (const [name, source] of Object.entries(o.headers ?? {})) {
      const expr = this.expression(source, [...at, 'headers', name]);
      if (expr) headers.push([name, expr]);
    }
    const orderBy = o.orderBy === undefined ? undefined : this.expression(o.orderBy, [...at, 'orderBy']);
    if (this.diagnostics.length > before) return undefined;
    return {
      url,
      urlExpr,
      method: o.method ?? WEBHOOK_DEFAULTS.method,
      headers,
      timeoutMs: o.timeoutMs ?? WEBHOOK_DEFAULTS.timeoutMs,
      attempts: o.retry?.attempts ?? WEBHOOK_DEFAULTS.attempts,
      backoffMs: o.retry?.backoffMs ?? WEBHOOK_DEFAULTS.backoffMs,
      maxBackoffMs: o.retry?.maxBackoffMs ?? WEBHOOK_DEFAULTS.maxBackoffMs,
      concurrency: o.concurrency ?? WEBHOOK_DEFAULTS.concurrency,
      orderBy,
      cloudevents: o.cloudevents ?? WEBHOOK_DEFAULTS.cloudevents,
      secret: o.signature ? signatureKey(o.signature.secret) : undefined,
    };
  }

  /** Compiles steps; undefined when any fails (its problems are reported). */
  private compileSteps(steps: RawStep[], at: PathPart[], single = false): CompiledChainStep[] | undefined {
    const out: CompiledChainStep[] = [];
    let failed = false;
    steps.forEach((raw, i) => {
      const [kindName, options] = Object.entries(raw)[0]!;
      const kind = this.registry.steps.get(kindName)!;
      const stepAt: PathPart[] = single ? [...at, kindName] : [...at, i, kindName];
      const files: string[] = [];
      const errorsBefore = this.diagnostics.length;
      const step = kind.compile(options, this.stepContext(stepAt, files));
      if (!step || this.diagnostics.length > errorsBefore) failed = true;
      else out.push({ step, key: canonical(raw), files });
    });
    return failed ? undefined : out;
  }

  /** What a step kind's compile() gets; files it reads are appended to `files`. */
  private stepContext(stepAt: PathPart[], files: string[]): StepCompileContext {
    return {
      report: (rel, code, message) => this.report([...stepAt, ...rel], code, message),
      compileExpression: (source, rel) => this.expression(source, [...stepAt, ...rel]),
      compileJsonSchema: (schema, rel, origin) => this.jsonSchema(schema, [...stepAt, ...rel], origin),
      readFile: (file, rel) => {
        const abs = resolve(this.dir, file);
        files.push(abs);
        return this.readFile(abs, file, [...stepAt, ...rel]);
      },
      readDocument: (file, rel) => {
        const abs = resolve(this.dir, file);
        files.push(abs);
        return this.readDocument(abs, file, [...stepAt, ...rel]);
      },
      checkBroker: (name, rel) => {
        if (this.config.brokers?.[name]) return true;
        if (isHidden(this.hidden.brokers, name)) return false;
        this.report([...stepAt, ...rel], 'EG_CONFIG_REF', `broker '${name}' is not defined${didYouMean(name, Object.keys(this.config.brokers ?? {}))}`);
        return false;
      },
      asyncapiContracts: (ref, rel) => this.asyncapiContracts(ref, [...stepAt, ...rel], files),
    };
  }

  private readFile(abs: string, asWritten: string, at: PathPart[]): string | undefined {
    try {
      return this.readText(abs);
    } catch (err) {
      this.report(at, 'EG_CONFIG_FILE', `cannot read '${asWritten}' (${abs}): ${describeFsError(err)}`);
      return undefined;
    }
  }

  /** Reads a referenced file and records its hash (for the plan's version, route keys and the watcher), even when it is missing. */
  private readText(abs: string): string {
    try {
      const override = this.overrides?.get(abs);
      const bytes = override === undefined ? readFileSync(abs) : Buffer.from(override);
      this.files.set(abs, hash(bytes));
      return bytes.toString('utf8');
    } catch (err) {
      this.files.set(abs, 'missing');
      throw err;
    }
  }

  private readDocument(abs: string, asWritten: string, at: PathPart[]): { value: unknown } | undefined {
    const known = this.documents.get(asWritten);
    if (known) return { value: known.value };
    const text = this.readFile(abs, asWritten, at);
    if (text === undefined) return undefined;
    const doc = parseDataFile(this.display(abs), text, this.diagnostics);
    if (!doc) return undefined;
    this.documents.set(asWritten, doc);
    return { value: doc.value };
  }

  private asyncapiContracts(ref: AsyncApiRef, at: PathPart[], stepFiles: string[]): MessageContract[] | undefined {
    const what = 'message' in ref ? 'message' : 'channel';
    if (!this.asyncapi) {
      if (this.asyncapiFailed) return undefined;
      this.report(at, 'EG_CONFIG_ASYNCAPI_REF', `'${what}' names an AsyncAPI ${what}, but the config has no AsyncAPI document; add 'asyncapi: <file>' at the top level`);
      return undefined;
    }
    if (this.asyncapiFailed) return undefined;
    const found = lookup(this.asyncapi, ref);
    if (!found.ok) {
      this.report(at, 'EG_CONFIG_ASYNCAPI_REF', found.message);
      return undefined;
    }
    const contracts: MessageContract[] = [];
    for (const match of found.matches) {
      for (const f of this.asyncapiPlans.find((p) => p.file === match.message.document)!.files) if (!stepFiles.includes(f)) stepFiles.push(f);
      if (!this.payloadChecks.has(match.message)) {
        const origin = `AsyncAPI message '${match.id ?? '(anonymous)'}'`;
        this.payloadChecks.set(match.message, this.jsonSchema(match.message.payload, at, origin, '07'));
      }
      const check = this.payloadChecks.get(match.message);
      if (!check) return undefined;
      contracts.push({ check, message: match.id, channel: match.channel });
    }
    return contracts;
  }

  expression(source: string, at: PathPart[]): Expression | undefined {
    try {
      const { line } = this.src.locate(at, 'value');
      return compileExpression(source, this.limits, `${basename(this.fileOf(at))}:${line}`);
    } catch (err) {
      if (!(err instanceof ExpressionSyntaxError)) throw err;
      const { line, column } = this.src.locateInValue(at, err.position);
      this.diagnostics.push({ file: this.fileOf(at), line, column, code: 'EG_CONFIG_EXPRESSION', path: formatPath(at), message: `JSONata expression does not compile: ${err.message}` });
      return undefined;
    }
  }

  /**
   * Problems point into the file the schema came from when it was read with readDocument(), else
   * into the config at `at`. `defaultDraft` applies when the schema has no `$schema` (AsyncAPI
   * payloads are draft-07 supersets).
   */
  private jsonSchema(schema: unknown, at: PathPart[], origin?: string, defaultDraft: '07' | '2020' = '2020'): ValidateFunction | undefined {
    const { validate, problems } = this.schemas.compile(schema, defaultDraft);
    const doc = origin === undefined ? undefined : this.documents.get(origin);
    const where = origin ? (origin.startsWith('AsyncAPI') ? `the payload schema of ${origin}` : `JSON Schema in '${origin}'`) : 'JSON Schema';
    for (const p of problems) {
      const path = formatPath(p.path);
      if (doc) {
        const { line, column } = doc.locate(p.path, 'value');
        this.diagnostics.push({ file: doc.file, line, column, code: 'EG_CONFIG_JSON_SCHEMA', path, message: `invalid JSON Schema${path ? ` at ${path}` : ''}: ${p.message}` });
      } else if (origin?.startsWith('AsyncAPI')) {
        // The payload lives in the AsyncAPI document, not under `at`: point at the step that names it.
        this.report(at, 'EG_CONFIG_JSON_SCHEMA', `invalid ${where}${path ? ` at ${path}` : ''}: ${p.message}`);
      } else {
        this.report([...at, ...p.path], 'EG_CONFIG_JSON_SCHEMA', `invalid ${where}${path ? ` at ${path}` : ''}: ${p.message}`);
      }
    }
    return validate;
  }

}

/** The URL as `new URL()` writes it (the schema has checked it is an http(s) URL; one it still cannot read fails each delivery, with the reason). */
function normalUrl(url: string): string {
  try {
    return new URL(url).href;
  } catch {
    return url;
  }
}
