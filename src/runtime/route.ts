import { problem, type Problem } from '../errors.js';
import { bindingsFor, evaluateThen, type ExpressionEvaluationError } from '../expr/expression.js';
import type { Admission, BrokerRuntime, CompiledStep, Health, ListenerRuntime, RouteEntry, StepResult, Subscription, Target, UndecodableBatch } from '../kinds/contracts.js';
import { VALIDATION_ERROR_HEADER } from '../kinds/steps/validate.js';
import type { Logger } from '../log.js';
import type { RoutePlan, TargetPlan } from '../plan/types.js';
import { RouteStats } from '../admin/metrics.js';
import { redact } from '../config/secrets.js';
import type { TapChannel } from '../admin/tap.js';
import type { Delivery, Message, MessageContext, RequestMeta } from './message.js';
import { isStop, type Outcome } from './outcome.js';
import type { StepStateStore } from './step-state.js';
import { endMessageSpan, inSpan, spanTemplate, startMessageSpan, traceIdOf, TRACEPARENT, type MessageSpan, type SpanTemplate } from './trace.js';

/** Header carried by messages a consume route sent to its dead-letter target after failing them. */
export const ROUTE_ERROR_HEADER = '_eventgate_error';
/** Header of a dead-lettered record batch that could not be decoded: `{topic, partition, offset, lastOffset}` it came from. */
export const ROUTE_SOURCE_HEADER = '_eventgate_source';

/** Headers that carry credentials on any route; an auth step adds the ones it reads (e.g. its apiKey header). */
export const CREDENTIAL_HEADERS: readonly string[] = ['authorization', 'cookie', 'proxy-authorization', 'x-api-key'];

export interface RouteDeps {
  brokers: ReadonlyMap<string, BrokerRuntime>;
  listeners: ReadonlyMap<string, ListenerRuntime>;
  logger: Logger;
  /** Suffix that makes per-instance consumer groups unique to this process. */
  instanceId: string;
  /**
   * Observer of every outcome (Gateway.observers); called after the outcome is known, with the
   * message as the route received it, credentials removed (built only when asked for).
   */
  observe?(route: string, outcome: Outcome, startedAt: number, msg: () => Message): void;
  /** Per-route counters (src/admin/metrics.ts), resolved once per route, not per message. */
  metrics?: { route(name: string): RouteStats };
  /** Live tap channels (src/admin/tap.ts). */
  tap?: { channel(name: string): TapChannel };
  /** Log options read when a message fails; one object updated in place on reload. */
  logOptions?: { payloads: boolean };
  /** Where stateful steps keep state across reloads; without it their state lives as long as this route. */
  stepState?: StepStateStore;
  /** The config's secret values (config/secrets.ts), redacted from what observers see; one object updated in place on reload. */
  redaction?: { secrets: ReadonlySet<string> };
}

interface BrokerTarget {
  plan: Extract<TargetPlan, { type: 'broker' }>;
  broker: BrokerRuntime;
}

/** How often a consume route retries a message whose targets failed before dead-lettering it. */
const CONSUME_ATTEMPTS = 5;
const MAX_BACKOFF_MS = 5000;

/**
 * One route, built from its plan: the chain's steps and the resolved targets. Immutable; a
 * reload builds a new one, and messages already inside finish here.
 */
export class RouteRuntime implements RouteEntry {
  readonly name: string;
  readonly options: { ack: boolean };
  private readonly steps: readonly CompiledStep[];
  /** Steps that check a connecting client (auth), in chain order. */
  private readonly gates: readonly CompiledStep[];
  /** Identities of the step state this route holds (see StepStateStore). */
  readonly stateIds: readonly string[];
  private readonly targets: Target[];
  private readonly deadletter: BrokerTarget | undefined;
  private readonly stats: RouteStats;
  private readonly tap: TapChannel | { active: false };
  private readonly span: SpanTemplate;
  /** Credential headers of this route (CREDENTIAL_HEADERS and what its auth steps read), lower case. */
  private readonly credentialHeaders: ReadonlySet<string>;
  private subscription: Subscription | undefined;
  private inFlight = 0;
  /** Resolved when the last message inside leaves (drain may be awaited by a reload and a shutdown at once). */
  private idleWaiters: (() => void)[] = [];

  constructor(readonly plan: RoutePlan, private readonly deps: RouteDeps) {
    this.name = plan.name;
    this.options = { ack: plan.ack };
    const stateIds: string[] = [];
    this.steps = plan.steps.map((step, i) => {
      if (!step.forRoute) return step;
      const id = plan.stepIds?.[i] ?? `${plan.name}\0${i}`;
      stateIds.push(id);
      const store = deps.stepState;
      return step.forRoute({ route: plan.name, state: (create) => (store ? store.claim(id, create) : create()) });
    });
    this.stateIds = stateIds;
    this.gates = this.steps.filter((s) => s.admit);
    this.credentialHeaders = new Set([...CREDENTIAL_HEADERS, ...this.steps.flatMap((s) => s.credentialHeaders ?? [])]);
    this.targets = plan.to.map((t) => this.target(t));
    this.stats = deps.metrics?.route(this.name) ?? new RouteStats();
    this.tap = deps.tap?.channel(this.name) ?? { active: false };
    this.span = spanTemplate(this.name, plan.from.type === 'broker');
    if (plan.deadletter) {
      this.deadletter = { plan: { type: 'broker', broker: plan.deadletter.broker, topic: plan.deadletter.topic, topicExpr: undefined, key: undefined }, broker: deps.brokers.get(plan.deadletter.broker)! };
    }
  }

  private target(t: TargetPlan): Target {
    if (t.type === 'listener') return this.deps.listeners.get(t.listener)!.forwardTarget!(t.path, { format: t.format });
    const broker = this.deps.brokers.get(t.broker)!;
    return brokerTarget(broker, t);
  }

  /**
   * Runs the message through the chain and to every target. Never rejects. The message travels in
   * this route's span: its `traceparent` header (from the client, the handshake or the producer)
   * is replaced by one naming the same trace and this span, so targets and steps see the new one.
   * Written with explicit promises rather than async functions so a chain that answers
   * synchronously costs no microtask hops before the targets (the only truly asynchronous part).
   */
  handle(msg: Message, ctx: MessageContext): Promise<Outcome> {
    this.inFlight++;
    this.stats.received++;
    const startedAt = performance.now();
    const span = startMessageSpan(this.span, msg.headers[TRACEPARENT]);
    const traced: Message = { ...msg, headers: { ...msg.headers, [TRACEPARENT]: span.traceparent } };
    let result: Outcome | Promise<Outcome>;
    try {
      result = inSpan(span, this.process, this, traced, ctx);
    } catch (err) {
      result = this.unexpected(err, span);
    }
    if (result instanceof Promise) {
      return result.then(
        (outcome) => this.settle(msg, outcome, startedAt, span),
        (err) => this.settle(msg, this.unexpected(err, span), startedAt, span),
      );
    }
    return Promise.resolve(this.settle(msg, result, startedAt, span));
  }

  /** Everything that follows an outcome, in one place for the synchronous and asynchronous paths. */
  private settle(msg: Message, outcome: Outcome, startedAt: number, span: MessageSpan): Outcome {
    if (--this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
    this.stats.record(outcome, startedAt);
    endMessageSpan(span, outcome);
    // Observers see the message as the route received it, but never its credentials: the auth
    // step strips them only from what travels on, and an observer may see a message it refused.
    let seen: Message | undefined;
    const observed = () => (seen ??= this.observable(msg));
    if (outcome.outcome !== 'delivered' && outcome.outcome !== 'filtered') this.logOutcome(observed, outcome, span.traceId);
    if (this.tap.active) {
      const shown = outcome.outcome === 'delivered' && outcome.message ? { ...outcome, message: this.observable(outcome.message) } : outcome;
      this.tap.publish(observed(), shown, performance.now() - startedAt, span.traceparent);
    }
    this.deps.observe?.(this.name, outcome, startedAt, observed);
    return outcome;
  }

  /** `m` without credential headers, and with the config's secret values redacted wherever they appear in it. */
  private observable(m: Message): Message {
    const clean = this.withoutCredentials(m);
    const secrets = this.deps.redaction?.secrets;
    return secrets && secrets.size > 0 ? redact(clean, secrets) : clean;
  }

  /** What a dead-letter topic receives: the message without credential headers (the auth step may not have run yet). */
  private withoutCredentials(m: Message): Message {
    if (!Object.keys(m.headers).some((k) => this.credentialHeaders.has(k.toLowerCase()))) return m;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(m.headers)) if (!this.credentialHeaders.has(k.toLowerCase())) headers[k] = v;
    return { ...m, headers };
  }

  /**
   * Failures at warn; invalid, rejected and dead-lettered messages (the client's problem, and
   * possibly frequent) at debug. Never the payload or headers unless `log.payloads: true`.
   */
  private logOutcome(observed: () => Message, outcome: Exclude<Outcome, { outcome: 'delivered' | 'filtered' }>, traceId: string): void {
    const logger = this.deps.logger;
    const level = outcome.outcome === 'failed' ? 'warn' : 'debug';
    if (!logger.isLevelEnabled(level)) return;
    const msg = observed();
    const line: Record<string, unknown> = { route: this.name, outcome: outcome.outcome, traceId };
    if (outcome.outcome === 'deadlettered') {
      line.errors = outcome.errors;
      line.deliveries = outcome.deliveries;
    } else {
      const p = outcome.problem;
      line.status = p.status;
      line.code = p.code;
      line.detail = p.detail;
      if (p.errors) line.errors = p.errors;
    }
    if (msg.topic !== null) Object.assign(line, { topic: msg.topic, partition: msg.partition, offset: msg.offset });
    if (this.deps.logOptions?.payloads) line.message = { key: msg.key, headers: msg.headers, value: msg.value };
    logger[level](line, `message ${outcome.outcome}`);
  }

  /** A WebSocket client connecting to this route's path: the chain's auth steps decide. */
  async admit(req: RequestMeta): Promise<Admission> {
    let admission: Admission = { ok: true, identity: undefined };
    let until: number | undefined;
    for (const gate of this.gates) {
      admission = await gate.admit!(req);
      if (!admission.ok) return admission;
      if (admission.until !== undefined) until = Math.min(until ?? Infinity, admission.until);
    }
    return until === undefined ? admission : { ...admission, until };
  }

  /** Messages inside the chain or waiting for their targets right now. */
  get pending(): number {
    return this.inFlight;
  }

  private unexpected(err: unknown, span: MessageSpan): Outcome {
    this.deps.logger.error({ route: this.name, traceId: span.traceId, err: (err as Error).message }, 'route failed unexpectedly');
    return { outcome: 'failed', problem: problem('EG_INTERNAL', 'the gateway failed to handle this message') };
  }

  private process(msg: Message, ctx: MessageContext): Outcome | Promise<Outcome> {
    const r = runChain(this.steps, msg, ctx);
    if (r instanceof Promise) return r.then((settled) => this.afterChain(msg, settled, ctx));
    return this.afterChain(msg, r, ctx);
  }

  private afterChain(msg: Message, r: StepResult, ctx: MessageContext): Outcome | Promise<Outcome> {
    if (!isStop(r)) return this.deliver(msg, r, ctx);
    switch (r.stop) {
      case 'filtered':
        return { outcome: 'filtered' };
      case 'invalid':
        return { outcome: 'invalid', problem: r.problem };
      case 'rejected':
        return { outcome: 'rejected', problem: r.problem };
      case 'failed':
        return { outcome: 'failed', problem: r.problem };
      case 'deadletter':
        return this.deadletterInstead(r);
    }
  }

  private async deadletterInstead(r: Extract<StepResult, { stop: 'deadletter' }>): Promise<Outcome> {
    const to = r.to ? { broker: this.deps.brokers.get(r.to.broker)!, topic: r.to.topic } : { broker: this.deadletter!.broker, topic: this.deadletter!.plan.topic };
    try {
      const delivery = await to.broker.publish(to.topic, this.withoutCredentials(r.message));
      return { outcome: 'deadlettered', deliveries: [delivery], errors: r.errors };
    } catch (err) {
      return { outcome: 'failed', problem: unavailable(to.broker.name, err) };
    }
  }

  private deliver(original: Message, m: Message, ctx: MessageContext): Promise<Outcome> {
    const tagged = m.headers[VALIDATION_ERROR_HEADER] !== undefined && original.headers[VALIDATION_ERROR_HEADER] === undefined;
    const delivered = (deliveries: Delivery[]): Outcome => ({ outcome: 'delivered', deliveries, tagged, message: m });
    const failed = (err: unknown): Outcome => ({ outcome: 'failed', problem: err instanceof TargetError ? err.problem : unavailable('target', err) });
    if (this.targets.length === 1) return sent(this.targets[0]!, m, ctx).then((d) => delivered([d]), failed);
    return Promise.all(this.targets.map((t) => sent(t, m, ctx))).then(delivered, failed);
  }

  /** Consume routes subscribe here; listener routes are bound by their listener instead. */
  start(): void {
    const from = this.plan.from;
    if (from.type !== 'broker') return;
    const perInstance = from.group === undefined && this.plan.to.every((t) => t.type === 'listener');
    const group = from.group ?? (perInstance ? `eventgate-${this.name}-${this.deps.instanceId}` : `eventgate-${this.name}`);
    const broker = this.deps.brokers.get(from.broker)!;
    // Websocket forwards show what happens now: replaying a topic's history to browsers would be
    // wrong. Durable routes (broker targets) take the broker's default, which never skips a record.
    const startFrom = from.startFrom ?? (this.plan.to.every((t) => t.type === 'listener') ? 'latest' : undefined);
    const undecodable = this.deadletter ? (raw: UndecodableBatch) => this.deadletterUndecodable(raw) : undefined;
    this.subscription = broker.subscribe({ topic: from.topic, group, route: this.name, startFrom, perInstance, undecodable }, (msg) => this.consume(msg));
  }

  /** Whether the route's consumer consumes; why not when it does not (for /readyz and /admin/status). */
  health(): Health {
    return this.subscription?.health?.() ?? { ready: true };
  }

  /**
   * A record batch the broker could not decode goes to the dead-letter topic as the raw bytes it
   * was, with the same error header as other dead-lettered messages and where it came from.
   */
  private async deadletterUndecodable(raw: UndecodableBatch): Promise<void> {
    const error = { ts: new Date().toISOString(), route: this.name, status: 422, code: 'EG_UNDECODABLE_BATCH', detail: `a record batch could not be decoded: ${raw.reason}`, errors: [] };
    const source = { topic: raw.topic, partition: raw.partition, offset: raw.offset, lastOffset: raw.lastOffset };
    await this.deadletter!.broker.publish(this.deadletter!.plan.topic, {
      value: raw.bytes,
      key: null,
      headers: { [ROUTE_ERROR_HEADER]: JSON.stringify(error), [ROUTE_SOURCE_HEADER]: JSON.stringify(source) },
      topic: raw.topic,
      partition: raw.partition,
      offset: raw.offset,
      timestamp: Date.now(),
    });
    this.stats.deadlettered++;
  }

  /**
   * At-least-once: resolves only once every target accepted the message (or it went to the
   * dead-letter target); rejecting makes the broker keep the message and offer it again.
   */
  private async consume(msg: Message): Promise<void> {
    let backoff = 100;
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.handle(msg, { route: this.name });
      if (outcome.outcome === 'delivered' || outcome.outcome === 'filtered' || outcome.outcome === 'deadlettered') return;
      const p = outcome.problem;
      const retryable = p.status === 503;
      if (retryable && attempt < CONSUME_ATTEMPTS) {
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
        continue;
      }
      if (this.deadletter) {
        const header = JSON.stringify({ ts: new Date().toISOString(), route: this.name, status: p.status, code: p.code, detail: p.detail, errors: p.errors ?? [] });
        await this.deadletter.broker.publish(this.deadletter.plan.topic, { ...msg, headers: { ...msg.headers, [ROUTE_ERROR_HEADER]: header } });
        this.stats.deadlettered++;
        this.deps.logger.warn({ route: this.name, topic: msg.topic, partition: msg.partition, offset: msg.offset, code: p.code, traceId: traceIdOf(msg.headers) }, 'message sent to the dead-letter topic');
        return;
      }
      if (!retryable) {
        // Nothing can make this message pass; without a dead-letter target, keeping it would stall the partition forever.
        this.deps.logger.error({ route: this.name, topic: msg.topic, partition: msg.partition, offset: msg.offset, code: p.code, detail: p.detail, traceId: traceIdOf(msg.headers) }, 'message dropped: it cannot pass this route and the route has no deadletter target');
        return;
      }
      throw new Error(p.detail);
    }
  }

  /** Stops consuming: resolves once the message in hand is finished and committed. */
  async stopConsuming(): Promise<void> {
    await this.subscription?.stop();
    this.subscription = undefined;
  }

  /** Waits, up to drainMs, until no message is inside the route. */
  async drain(drainMs: number): Promise<void> {
    if (this.inFlight > 0) {
      await Promise.race([new Promise<void>((r) => this.idleWaiters.push(r)), new Promise((r) => setTimeout(r, drainMs).unref())]);
    }
  }
}

/**
 * Runs the steps in order and stays synchronous for as long as every step answers synchronously;
 * only a step that returns a promise makes the rest of the chain asynchronous.
 */
export function runChain(steps: readonly CompiledStep[], msg: Message, ctx: MessageContext, from = 0): StepResult | Promise<StepResult> {
  let m = msg;
  for (let i = from; i < steps.length; i++) {
    const r = steps[i]!.run(m, ctx);
    if (r instanceof Promise) return r.then((settled) => (isStop(settled) || i + 1 === steps.length ? settled : runChain(steps, settled, ctx, i + 1)));
    if (isStop(r)) return r;
    m = r;
  }
  return m;
}

/** A target's send as a promise, even when it throws synchronously. */
function sent(target: Target, msg: Message, ctx: MessageContext): Promise<Delivery> {
  try {
    return target.send(msg, ctx);
  } catch (err) {
    return Promise.reject(err);
  }
}

class TargetError extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail);
  }
}

function unavailable(broker: string, err: unknown): Problem {
  return problem('EG_BROKER_UNAVAILABLE', `broker '${broker}' did not acknowledge the message: ${(err as Error).message ?? String(err)}`);
}

function brokerTarget(broker: BrokerRuntime, t: Extract<TargetPlan, { type: 'broker' }>): Target {
  const key = t.key;
  const topicExpr = t.topicExpr;
  const publish = (topic: string, out: Message): Promise<Delivery> => {
    let pending: Promise<Delivery>;
    try {
      pending = broker.publish(topic, out);
    } catch (err) {
      return Promise.reject(new TargetError(unavailable(broker.name, err)));
    }
    return pending.then(undefined, (err) => {
      throw err instanceof TargetError ? err : new TargetError(unavailable(broker.name, err));
    });
  };
  const keyed = (msg: Message, k: unknown): Message => ({ ...msg, key: k === undefined || k === null ? null : typeof k === 'string' ? k : JSON.stringify(k) });
  const keyFailed = (err: ExpressionEvaluationError): never => {
    throw new TargetError(problem('EG_EXPRESSION_FAILED', `key expression failed: ${err.message}`));
  };
  /** The message with its key, synchronously when the key expression has a fast path. */
  const withKey = (msg: Message, ctx: MessageContext): Message | Promise<Message> =>
    key ? evaluateThen(key, msg.value, bindingsFor(msg, ctx), (k) => keyed(msg, k), keyFailed) : msg;
  /** A topic chosen per message by an expression. */
  const dynamicTopic = async (msg: Message, ctx: MessageContext): Promise<Delivery> => {
    let name: unknown;
    try {
      name = await topicExpr!.evaluate(msg.value, bindingsFor(msg, ctx));
    } catch (err) {
      throw new TargetError(problem('EG_EXPRESSION_FAILED', `topic expression failed: ${(err as ExpressionEvaluationError).message}`));
    }
    const why = typeof name !== 'string' || name === '' ? 'not a non-empty string' : broker.topicProblem?.(name);
    if (why) throw new TargetError(problem('EG_EXPRESSION_FAILED', `topic expression gave ${JSON.stringify(name) ?? 'nothing'}, which is not a topic of broker '${broker.name}': ${why}`));
    return publish(name as string, await withKey(msg, ctx));
  };
  return {
    describe: () => `${broker.name}/${t.topic}`,
    send(msg, ctx) {
      if (topicExpr) return dynamicTopic(msg, ctx);
      // A literal topic (the common case) costs nothing, and a fast-path key no microtask.
      const out = withKey(msg, ctx);
      return out instanceof Promise ? out.then((m) => publish(t.topic, m)) : publish(t.topic, out);
    },
  };
}
