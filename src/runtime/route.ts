import { mayPassLater, problem, retriedByWebhook, type Problem } from '../core/errors.js';
import {
  admitThrough,
  chunksOf,
  holdsNothing,
  noReadBack,
  type Admission,
  type Gate,
  type BrokerRuntime,
  type PublishOptions,
  type BrokerTelemetry,
  type CheckedRecords,
  type RecordBytesCheck,
  type CompiledStep,
  type Health,
  type ListenerRuntime,
  type RecordsAnswer,
  type ReplaySource,
  type Retained,
  type RetainedChunk,
  type RouteEntry,
  sameSubscription,
  type StepResult,
  type StopOptions,
  type SubscribeSpec,
  type Subscription,
  type Target,
  type Undecodable,
} from '../kinds/contracts.js';
import { fromConsumedRecord } from '../codecs/cloudevents.js';
import { withoutClientTag } from '../kinds/steps/validate.js';
import { WebhookTarget } from '../kinds/targets/webhook.js';
import type { RequestSender } from '../kinds/targets/webhook-client.js';
import type { Logger } from '../log.js';
import type { KindRegistry } from '../kinds/registry.js';
import type { RoutePlan, TargetPlan } from '../plan/types.js';
import { askedSubscription, renamedForward } from '../plan/subscription.js';
import { RouteStats } from '../telemetry/metrics.js';
import { redact } from '../config/secrets.js';
import type { TapChannel } from '../telemetry/tap.js';
import { BODY_NOT_READ, headersWith, hugeNumberAt, hugeNumberText, newHeaders, shownValue, type Delivery, type Message, type MessageContext, type RequestMeta } from '../core/message.js';
import { isStop, type Outcome } from '../core/outcome.js';
import { Backoff, pause } from '../core/backoff.js';
import { deadletterMessage, type DeadletterCause } from '../core/deadletter.js';
import { publishedIdentity } from '../kinds/brokers/nats/msg-id.js';
import { AckTimeout, Refused } from '../kinds/brokers/acknowledgement.js';
import { FLOOD_LOG_INTERVAL_MS, RateLimitedWarning } from '../core/rate-limited-warning.js';
import type { StepStateStore } from './step-state.js';
import { brokerTarget, everyTarget, fanOutDetail, sendsInTurn, sent, targetFailed, unavailable, withoutConsumedInstructions } from './route-targets.js';
import {
  consumedAttributes,
  endedWithWrite,
  endMessageSpan,
  inSpan,
  sendTemplate,
  spanTemplate,
  requestAttributes,
  type HttpSpanSource,
  startMessageSpan,
  startSendSpan,
  traceIdOf,
  TRACEPARENT,
  UNTRACED,
  type MessageSpan,
  type SendTemplate,
  type SpanSource,
  type SpanTemplate,
} from './trace.js';

/** Header of a dead-lettered record batch that could not be decoded: `{topic, partition, offset, lastOffset}` it came from. */
const ROUTE_SOURCE_HEADER = '_eventgate_source';

/** Headers that carry credentials on any route; an auth step adds the ones it reads (e.g. its apiKey header). */
const CREDENTIAL_HEADERS: readonly string[] = ['authorization', 'cookie', 'proxy-authorization', 'x-api-key'];

export interface RouteDeps {
  brokers: ReadonlyMap<string, BrokerRuntime>;
  listeners: ReadonlyMap<string, ListenerRuntime>;
  logger: Logger;
  /** Suffix that makes per-instance consumer groups unique to this process. */
  instanceId: string;
  /** Per-route counters (src/telemetry/metrics.ts), resolved once per route, not per message. */
  metrics?: { route(name: string): RouteStats; broker?(name: string, kind: string): BrokerTelemetry };
  /** Live tap channels (src/telemetry/tap.ts). */
  tap?: { channel(name: string): TapChannel };
  /** Log options read when a message fails; one object updated in place on reload. */
  logOptions?: { payloads: boolean };
  /** Where stateful steps keep state across reloads; without it their state lives as long as this route. */
  stepState?: StepStateStore;
  /** The config's secret values (config/secrets.ts), redacted from what the log and the tap see; one object updated in place on reload. */
  redaction?: { secrets: ReadonlySet<string> };
  /** What the route's webhook targets send their requests through instead of HTTP: a config test's recorder (`eventgate test` calls no URL). */
  webhookSender?: RequestSender;
  /** A fan-out sends to its targets one after another (sendsInTurn), so a config test records its outputs in target order. */
  targetsInTurn?: boolean;
}

/** Where a route dead-letters: its `deadletter` target, or the topic a validate step names. */
interface DeadletterTopic {
  broker: BrokerRuntime;
  topic: string;
  /** The `qos` of the route's `deadletter` or of the validate step's own topic (mqtt). */
  options?: PublishOptions;
  /** Its writes' PRODUCER spans' template, made at the first write an SDK records. */
  sending?: SendTemplate;
}

/**
 * How long stopping a consume route waits for webhook endpoints to answer the tries in flight
 * before cutting them, from when its subscription takes no more messages (at once but for a
 * retiring MQTT route's leave, StopOptions.taking, where it is also how long the tries may go
 * without any message settling); never longer than half the drain timeout the stop is given
 * (webhookStopGraceMs).
 */
const WEBHOOK_STOP_GRACE_MS = 5000;

/**
 * The grace before a stopping route cuts its webhook tries: WEBHOOK_STOP_GRACE_MS, at most half of
 * `drainMs`. The other half is for what comes after the cut within the same budget: the Kafka
 * consumer's commit of the records answered before the cut one and its LeaveGroup, the MQTT
 * PUBACKs of the messages answered behind it. A grace of the whole drain (at 5 s or less) left
 * none, and the exit at the drain's end lost the commit (spec-checklist 4961, 5110).
 */
function webhookStopGraceMs(drainMs: number): number {
  return Math.min(WEBHOOK_STOP_GRACE_MS, drainMs / 2);
}

/** How often a consume route tries a message whose targets are unavailable before dead-lettering it. */
const CONSUME_ATTEMPTS = 5;
/** A target's refusals of the message for what it is (its headers, its size): the client's problem, logged at debug (logOutcome). */
const MESSAGES_OWN_FAULT: ReadonlySet<string> = new Set(['EG_INVALID_MESSAGE', 'EG_PAYLOAD_TOO_LARGE']);

/** A consumed message the route's stop gave back to its broker, uncommitted: whoever consumes next has it. */
const GIVEN_BACK = 'message given back uncommitted: the route stopped before its targets accepted it';
/** The same at a shutdown, from a memory topic: nothing has it next (docs/scaling.md, "The memory broker"). */
const LOST_WITH_PROCESS = 'message lost with the process: the gateway shut down before its targets accepted it, and its memory topic does not outlive the process';

/** A consumed message its route keeps retrying: it has no dead-letter target, or that target does not take it either (in /admin/status). */
export interface StalledMessage {
  topic: string | null;
  partition: number | null;
  offset: string | null;
  /** When the route gave up hoping a few retries would do (after CONSUME_ATTEMPTS). */
  since: string;
  attempts: number;
  code: string;
  detail: string;
  /** The failing target's place in the route's `to` (Problem.target), when a target failed. */
  target?: number;
}

/** A failure's `target` (its place in `to`) for a log line or a stall, when a target made it. */
function targetOf(p: Pick<Problem, 'target'> | undefined): { target?: number } {
  return p?.target === undefined ? {} : { target: p.target };
}

/** What a `records failed` line names of the last partition it counts. */
interface FailedRecords {
  topic: string;
  partition: number;
  code: string;
  detail: string;
  target?: number;
}

/**
 * One route, built from its plan: the chain's steps and the resolved targets. Immutable; a
 * reload builds a new one, and messages already inside finish here.
 */
export class RouteRuntime implements RouteEntry, ReplaySource {
  readonly name: string;
  readonly options: { ack: boolean; structured: boolean };
  readonly delivers: boolean;
  readonly validates: boolean;
  /**
   * The group this per-instance forward route consumes in instead of its own: that of a renamed
   * route's predecessor, whose subscription it took over (takeOver), or a new one when another
   * route holds its own (avoidGroups). Kept by the routes rebuilt from it.
   */
  private groupTakenOver: string | undefined;
  private readonly steps: readonly CompiledStep[];
  /** Steps that check a connecting client (auth), in chain order. */
  private readonly gates: readonly Gate[];
  /** The auth steps the chain begins with, which judge an HTTP request from its head (admitHead). */
  private readonly headGates: readonly Gate[];
  /**
   * An HTTP publish request judged from its head, before its body is read, by the auth steps the
   * chain begins with; absent when it begins with another step (its auth, if any, judges the
   * message in turn), so the listener builds nothing for it on such a route. Admitted, the steps
   * remember their verdict for `req` (their cache per request), so the chain run with
   * `ctx.request === req` verifies nothing again and binds `$principal` / `$claims` from it.
   * Refused, the refusal is recorded as the chain's would be (counted, logged, tapped: `head` is
   * the message without a value, its body never read) and returned for the answer.
   */
  readonly admitHead: ((req: RequestMeta, head: () => Message) => Promise<Problem | undefined>) | undefined;
  /** The chain's check of a value's bytes, when every step has one and the route has no targets (recordBytesCheck). */
  private readonly byteCheck: RecordBytesCheck | undefined;
  /** Identities of the step state this route holds (see StepStateStore). */
  readonly stateIds: readonly string[];
  /**
   * Each target's forward auth as its listener applies it (undefined for other targets): a
   * forward's `auth` runs as the route's steps do, its state (a jwksUrl's keys) kept across a
   * reload that rebuilds the route with the same auth, what goes wrong logged as the route's.
   */
  readonly forwardGates: readonly (Gate | undefined)[];
  private readonly targets: Target[];
  /** What the positions of the messages it consumes are positions in (ReplaySource.sourceKey), for event-stream ids. */
  readonly sourceKey: string | undefined;
  /** Webhook targets, whose kept-alive connections are closed when the route is retired. */
  private readonly webhooks: WebhookTarget[] = [];
  private readonly deadletter: DeadletterTopic | undefined;
  /** Validate steps' own dead-letter topics (deadletterInstead), by the step's `to`. */
  private readonly stepDeadletters = new WeakMap<object, DeadletterTopic>();
  /** Whether a consumed message's value is read, not only copied as its bytes (readsValues). */
  private readonly readsValues: boolean;
  /** Whether a kafka listener's record is read as its value (steps or targets), not only passed on as its bytes. */
  private readonly readsRecords: boolean;
  private readonly stats: RouteStats;
  private readonly tap: TapChannel | { active: false };
  private readonly span: SpanTemplate;
  /** Credential headers of this route (CREDENTIAL_HEADERS and what its auth steps read), lower case. */
  private readonly credentialHeaders: ReadonlySet<string>;
  private subscription: Subscription | undefined;
  /** The broker instance and spec the subscription was made with (takeOver compares them). */
  private subscribed: { broker: BrokerRuntime; spec: SubscribeSpec } | undefined;
  /** Where a consume route counts the attempts its targets refused (its source broker's consumer errors). */
  private consumerTelemetry: BrokerTelemetry | undefined;
  /** Set when the route stops consuming: a retry waiting for its next attempt gives the message back. */
  private stopping = false;
  /** Stopped by the gateway's shutdown while reading a memory topic: what it gives back dies with the process. */
  private lostWithProcess = false;
  private stop!: () => void;
  private readonly stopped = new Promise<void>((r) => (this.stop = r));
  private inFlight = 0;
  /** Messages that left the route so far (whenNothingSettles: whether a stopping route still makes progress). */
  private settledCount = 0;
  /** Resolved when the last message inside leaves (drain may be awaited by a reload and a shutdown at once). */
  private idleWaiters: (() => void)[] = [];
  /** Consumed messages tried CONSUME_ATTEMPTS times with no dead-letter target, still retried (their partitions wait). */
  private readonly stalls = new Set<StalledMessage>();
  /**
   * Set while a consume route waits for the first connection of brokers it sends to (start()):
   * the names still connecting, and the promise of all of them. No message is tried meanwhile.
   */
  private connecting: { brokers: Set<string>; done: Promise<void> } | undefined;
  /**
   * A consume route's source broker's identity of a consumed message, when it has one and a target
   * or a dead-letter topic takes message ids (a nats broker: JetStream's `Nats-Msg-Id` drops a
   * second copy of a message the route writes again, after a redelivery or a try whose outcome was
   * unknown).
   */
  private sourceIdentity: ((msg: Message) => string | undefined) | undefined;
  /**
   * The `records failed` warning (a cluster answered a partition of a kafka listener's produce
   * request with an error), rate-limited as refused produce requests are: a fleet of producers in
   * a leader election would otherwise write a line per partition of every request in flight.
   * `failedRecords`: the records failed since the last line, which a line sums up.
   */
  private recordsFailed: RateLimitedWarning<FailedRecords> | undefined;
  private failedRecords = 0;

  constructor(
    readonly plan: RoutePlan,
    private readonly deps: RouteDeps,
  ) {
    this.name = plan.name;
    this.options = { ack: plan.ack, structured: plan.from.type === 'listener' && plan.from.structured === true };
    const stateIds: string[] = [];
    const forRoute = (step: CompiledStep, id: string): CompiledStep => {
      if (!step.forRoute) return step;
      stateIds.push(id);
      const store = deps.stepState;
      return step.forRoute({
        route: plan.name,
        state: (create) => (store ? store.claim(id, create) : create()),
        warn: (fields, message) => deps.logger.warn({ route: plan.name, ...fields }, message),
      });
    };
    this.steps = plan.steps.map((step, i) => forRoute(step, plan.stepIds?.[i] ?? `${plan.name}\0${i}`));
    this.forwardGates = plan.to.map((t) =>
      t.type === 'listener' && t.auth?.admit ? (forRoute(t.auth, `${plan.name}\0to\0${t.listener}\0${t.path}\0${t.authKey ?? ''}`) as CompiledStep & Gate) : undefined,
    );
    this.stateIds = stateIds;
    this.gates = this.steps.filter((s): s is CompiledStep & Gate => s.admit !== undefined);
    const leading = this.steps.findIndex((s) => s.admit === undefined);
    this.headGates = this.steps.slice(0, leading === -1 ? this.steps.length : leading) as (CompiledStep & Gate)[];
    this.admitHead = this.headGates.length === 0 ? undefined : (req, head) => this.judgeHead(req, head);
    // Only a chain of steps that all judge bytes can skip decoding: a step without acceptsBytes may
    // change the message or read what earlier ones left on the context (`$message`).
    const byteChecks = this.steps.map((s) => s.acceptsBytes?.bind(s));
    const checks = byteChecks.length > 0 && byteChecks.every((b) => b !== undefined) ? (byteChecks as ((buf: Buffer, start: number, end: number) => boolean)[]) : undefined;
    this.credentialHeaders = new Set([...CREDENTIAL_HEADERS, ...this.steps.flatMap((s) => s.credentialHeaders ?? [])]);
    this.stats = deps.metrics?.route(this.name) ?? new RouteStats();
    this.sourceKey = sourceKeyOf(plan, deps.brokers);
    this.targets = plan.to.map((t, i) => this.target(t, i));
    this.delivers = this.targets.length > 0;
    this.validates = this.steps.some((s) => s.kind === 'validate');
    this.readsValues = plan.from.type === 'broker' && readsValues(plan);
    this.readsRecords = this.steps.length > 0 || this.delivers;
    // Called per record of a produce request: one step's check as it is, without a loop or a method of the route's.
    const accepts = checks?.length === 1 ? checks[0]! : checks && ((buf: Buffer, start: number, end: number) => checks.every((c) => c(buf, start, end)));
    this.byteCheck =
      accepts && !this.delivers
        ? {
            accepts,
            passed: PASSED_UNCHANGED,
            received: (records) => {
              this.inFlight += records;
              this.stats.received += records;
            },
          }
        : undefined;
    this.tap = deps.tap?.channel(this.name) ?? { active: false };
    this.span = spanTemplate(this.name, plan.from.type === 'broker' ? this.spanSource(plan.from.broker, plan.from.topic) : undefined, this.httpSpanSource());
    const dl = plan.deadletter;
    if (dl) this.deadletter = { broker: deps.brokers.get(dl.broker)!, topic: dl.topic, options: dl.qos === undefined ? undefined : { qos: dl.qos } };
  }

  /** An http listener's publish route: its spans get the HTTP conventions' attributes. The listener is looked up per request, as a reload may rebind it. */
  private httpSpanSource(): HttpSpanSource | undefined {
    const from = this.plan.from;
    if (from.type !== 'listener' || this.deps.listeners.get(from.listener)?.kind !== 'http') return undefined;
    const listeners = this.deps.listeners;
    return { route: from.path, scheme: () => listeners.get(from.listener)?.urlScheme ?? 'http' };
  }

  /** What a consume route's spans say of its source; the consumer group where the kind has groups (kafka). */
  private spanSource(broker: string, topic: string): SpanSource {
    const runtime = this.deps.brokers.get(broker);
    const kind = runtime?.kind ?? 'unknown';
    const facts = runtime?.spanFacts;
    return kind === 'kafka' ? { kind, topic, group: askedSubscription(this.plan, this.deps.instanceId)?.group, facts } : { kind, topic, facts };
  }

  private target(t: TargetPlan, index: number): Target {
    if (t.type === 'listener') return this.deps.listeners.get(t.listener)!.forwardTarget!(t.path, { format: t.format, route: this.name, sourceKey: this.sourceKey });
    if (t.type === 'http') {
      const webhook = new WebhookTarget(t.webhook, this.stats.webhook(index), this.deps.logger, this.name, index, (text) => this.shown(text), this.deps.webhookSender);
      this.webhooks.push(webhook);
      return webhook;
    }
    const broker = this.deps.brokers.get(t.broker)!;
    return brokerTarget(broker, t, index, this.idTakingTargets() > 1);
  }

  /** How many of the route's broker targets take message ids (BrokerRuntime.takesMessageIds). */
  private idTakingTargets(): number {
    return this.plan.to.filter((t) => t.type === 'broker' && this.deps.brokers.get(t.broker)?.takesMessageIds === true).length;
  }

  /**
   * Runs the message through the chain and to every target. Never rejects. The message travels in
   * this route's span: its `traceparent` header (from the client, the handshake or the producer)
   * is replaced by one naming the same trace and this span, so targets and steps see the new one.
   * Written with explicit promises rather than async functions so a chain that answers
   * synchronously costs no microtask hops before the targets (the only truly asynchronous part).
   */
  handle(msg: Message, ctx: MessageContext): Promise<Outcome> {
    const outcome = this.check(msg, ctx);
    return outcome instanceof Promise ? outcome : Promise.resolve(outcome);
  }

  /** handle() without the promise when the chain and the targets answered synchronously (a memory topic). */
  handleNow(msg: Message, ctx: MessageContext): Outcome | Promise<Outcome> {
    return this.check(msg, ctx);
  }

  /**
   * One record of a Kafka produce request (kafka listener): the chain without a span of its own,
   * answering synchronously when every step did. Such a request holds thousands of records, and a
   * promise and a span for each would cost more than checking them; the record keeps its own
   * `traceparent` header, if it has one, as the client wrote it. Only `received` is counted here:
   * the outcome is recorded by settleRecords(), once the cluster answered (a record is delivered
   * when the cluster acknowledged it, not when the proxy passed it on). A kafka route without
   * targets lets a record go on in the client's own request; one with targets delivers the record
   * afterwards (deliverRecord), once no record of the request was refused.
   */
  checkRecord(msg: Message, ctx: MessageContext): Outcome | Promise<Outcome> {
    this.inFlight++;
    this.stats.received++;
    let r: StepResult | Promise<StepResult>;
    try {
      // As the HTTP listener refuses such a body: a step would compute with Infinity, a target write null.
      const unreadable = this.readsRecords ? hugeNumberProblem(msg.value, 'record') : undefined;
      if (unreadable) return { outcome: 'invalid', problem: unreadable };
      r = runChain(this.steps, msg, ctx);
    } catch (err) {
      return this.unexpected(err, UNTRACED);
    }
    if (r instanceof Promise)
      return r.then(
        (settled) => this.recordOutcome(msg, settled, ctx),
        (err) => this.unexpected(err, UNTRACED),
      );
    return this.recordOutcome(msg, r, ctx);
  }

  /**
   * The chain's check of records from their values' bytes (RecordBytesCheck), when every step of it
   * can be certain a value passes (validate steps with schemas json-bytes.ts reads). Never while the
   * tap is open (it shows every message), nor for a route with targets (it delivers messages: each
   * record is decoded anyway).
   */
  recordBytesCheck(): RecordBytesCheck | undefined {
    return this.tap.active ? undefined : this.byteCheck;
  }

  /**
   * A record that checkRecord() judged, to this route's targets (a kafka route with `to`): `msg` as
   * it came, `checked` its outcome. Records the chain let through are sent to every target, in the
   * order this is called; the others keep their outcome. Never rejects. Recorded by settleRecords()
   * with `{written: 'targets'}`.
   */
  deliverRecord(msg: Message, checked: Outcome, ctx: MessageContext): Outcome | Promise<Outcome> {
    if (checked.outcome !== 'delivered') return checked;
    let o: Outcome | Promise<Outcome>;
    try {
      const m = checked.message ?? msg;
      // The chain saw the record as its producer wrote it; its targets get the route's own verdict only.
      const sent = this.validates ? this.withoutClientTag(m, checked.tagged) : m;
      o = outcomeOf(this.deliver(sent, { ...ctx, tagged: checked.tagged ? checked.tags : undefined }));
    } catch (err) {
      return this.unexpected(err, UNTRACED);
    }
    // As settle() does: a target's failure (a webhook URL, a broker address) reaches the client's error_message and the log.
    if (o instanceof Promise) return o.then((d) => this.shownOutcome(d));
    return this.shownOutcome(o);
  }

  /** `msg` without a validation tag its producer wrote (withoutClientTag); the same message when it has none. */
  private withoutClientTag(msg: Message, tagged = false): Message {
    const headers = withoutClientTag(msg.headers, tagged);
    return headers === msg.headers ? msg : { ...msg, headers };
  }

  private shownOutcome(o: Outcome): Outcome {
    return o.outcome === 'delivered' && this.webhooks.length === 0 ? o : this.redacted(o);
  }

  private recordOutcome(msg: Message, r: StepResult, ctx: MessageContext): Outcome | Promise<Outcome> {
    if (isStop(r)) return outcomeOf(this.afterChain(r, ctx));
    if (ctx.tagged) return { outcome: 'delivered', deliveries: NO_DELIVERIES, tagged: true, tags: ctx.tagged, message: r };
    // Most records pass a validate-only chain unchanged: one shared outcome, no object per record.
    return r === msg ? PASSED_UNCHANGED : { outcome: 'delivered', deliveries: NO_DELIVERIES, tagged: false, message: r };
  }

  /** Whether the tap watches this route: settleRecords() then needs every record's message. */
  observed(): boolean {
    return this.tap.active;
  }

  /**
   * Records the outcomes of records checkRecord() judged, now that the listener knows what became
   * of the ones it let through: acknowledged by the cluster (delivered or tagged, with their
   * offsets on the tap), delivered to the route's targets (`written: 'targets'`: the outcomes say
   * what each record became), or not written (failed: the cluster answered with an error or never
   * answered; rejected: another record of their request was refused). One log line per set for
   * records not written, not one per record.
   */
  settleRecords(records: CheckedRecords, answer: RecordsAnswer): void {
    const { messages, outcomes } = records;
    const n = outcomes.length;
    const latencyMs = performance.now() - records.startedAt;
    const tap = this.tap.active;
    const notWritten: Outcome | undefined = answer.written ? undefined : { outcome: answer.outcome, problem: answer.problem };
    let lost = 0;
    let acknowledged = 0;
    // Records a failing target failed alike (`to`): one log line for the set, the first one's, not one per record.
    let firstFailed: { m: Message; o: Extract<Outcome, { outcome: 'failed' }> } | undefined;
    let failedAlso = 0;
    for (let i = 0; i < n; i++) {
      let o = outcomes[i]!;
      // The common case, counted in one go below: an acknowledged record that nobody watches.
      if (o.outcome === 'delivered' && !o.tagged && !notWritten && !tap) {
        acknowledged++;
        continue;
      }
      if (o.outcome === 'delivered') {
        if (notWritten) {
          o = notWritten;
          lost++;
        } else if (tap && answer.written === true) {
          const offset = answer.baseOffset === undefined ? '-1' : String(answer.baseOffset + BigInt(i));
          o = { ...o, deliveries: [{ broker: answer.broker, topic: records.topic, partition: records.partition, offset }] };
        }
      } else if (o.outcome !== 'filtered' && messages[i]) {
        const m = messages[i]!;
        if (o.outcome !== 'failed' || answer.written !== 'targets') this.logOutcome(() => this.observable(m), o, traceIdOf(m.headers) ?? '');
        else if (firstFailed) failedAlso++;
        else firstFailed = { m, o };
      }
      this.stats.count(o, latencyMs / 1000);
      const m = messages[i];
      if (tap && m) {
        const shown = o.outcome === 'delivered' && o.message ? { ...o, message: this.observable(o.message) } : o;
        this.tap.publish(this.observable(m), shown, latencyMs, m.headers[TRACEPARENT] ?? '');
      }
    }
    this.stats.countDelivered(acknowledged, latencyMs / 1000);
    if (firstFailed) {
      const { m, o } = firstFailed;
      this.logOutcome(() => this.observable(m), o, traceIdOf(m.headers) ?? '', failedAlso + 1);
    }
    if (lost > 0 && answer.written === false) {
      const details = { topic: records.topic, partition: records.partition, code: answer.problem.code, detail: answer.problem.detail, ...targetOf(answer.problem) };
      if (answer.outcome === 'failed') {
        this.failedRecords += lost;
        this.recordsFailed ??= new RateLimitedWarning(FLOOD_LOG_INTERVAL_MS, (last, partitions) => {
          this.deps.logger.warn({ route: this.name, outcome: 'failed', ...last, records: this.failedRecords, partitions, intervalMs: FLOOD_LOG_INTERVAL_MS }, 'records failed');
          this.failedRecords = 0;
        });
        this.recordsFailed.occurred(details);
      } else if (this.deps.logger.isLevelEnabled('debug')) {
        this.deps.logger.debug({ route: this.name, outcome: answer.outcome, ...details, records: lost }, `records ${answer.outcome}`);
      }
    }
    this.inFlight -= n;
    this.settledCount += n;
    if (this.inFlight === 0 && this.idleWaiters.length > 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  /**
   * The chain, the targets and settle(). With `consuming` (consume()), what follows a consumed
   * message's first outcome runs in the same promise callback as settle(): the promise then
   * resolves once the message is done with (see consume()) rather than with the outcome. A
   * consumed message's try (`first` or `retry`) whose writes are still out at their ack deadline
   * is settled once their late answers came (settledLate()).
   */
  private check(msg: Message, ctx: MessageContext, consuming?: 'retry'): Outcome | Promise<Outcome>;
  private check(msg: Message, ctx: MessageContext, consuming: 'first'): Outcome | Promise<unknown>;
  private check(msg: Message, ctx: MessageContext, consuming?: Consuming): Outcome | Promise<unknown> {
    this.inFlight++;
    this.stats.received++;
    const startedAt = performance.now();
    const span = startMessageSpan(this.span, msg.headers[TRACEPARENT]);
    // A producer's own validation tag is no verdict of this route's validate steps (withoutClientTag).
    const input: Message = { ...msg, headers: headersWith(this.validates ? withoutClientTag(msg.headers) : msg.headers, TRACEPARENT, span.traceparent) };
    let result: Outcome | Promise<Outcome> | Later;
    try {
      const unreadable = consuming !== undefined && this.readsValues ? hugeNumberProblem(msg.value) : undefined;
      // Without an SDK there is no context to enter: a plain call (inSpan's rest arguments are an array per message).
      if (unreadable) result = { outcome: 'invalid', problem: unreadable };
      else if (span.context) result = inSpan(span, this.process, this, input, this.traced(span, msg, ctx));
      else result = this.process(input, ctx);
    } catch (err) {
      result = this.unexpected(err, span);
    }
    // Targets still at work: one promise callback from their answer to the settled outcome (deliver()).
    if (result instanceof Later) {
      const later = result;
      return later.pending.then<unknown, unknown>(
        (d) => this.settled(msg, ctx, later.outcome(d), startedAt, span, consuming),
        (err) => this.settled(msg, ctx, later.failed(err), startedAt, span, consuming),
      );
    }
    if (result instanceof Promise) {
      return result.then<unknown, unknown>(
        (outcome) => this.settled(msg, ctx, outcome, startedAt, span, consuming),
        (err) => this.settled(msg, ctx, this.unexpected(err, span), startedAt, span, consuming),
      );
    }
    return this.settle(msg, result, startedAt, span);
  }

  /**
   * With an SDK: a recording span gets the consumed message's own attributes, and the context
   * names it for the targets' PRODUCER spans (a try of a consumed message again replaces the last
   * try's). Never called without an SDK.
   */
  private traced(span: MessageSpan, msg: Message, ctx: MessageContext): MessageContext {
    const recording = span.span.isRecording();
    if (recording && this.span.source) consumedAttributes(span, this.span.source, msg);
    else if (recording && this.span.http) requestAttributes(span, this.span.http, ctx.path);
    ctx.span = recording ? span : undefined;
    return ctx;
  }

  /** settle() after the targets answered; for a consumed message, what follows its first outcome (consume()). */
  private settled(msg: Message, ctx: MessageContext, outcome: Outcome, startedAt: number, span: MessageSpan, consuming: Consuming | undefined): Outcome | Promise<unknown> | undefined {
    if (consuming === undefined) return this.settle(msg, outcome, startedAt, span);
    if (outcome.outcome === 'failed' && outcome.problem.late) return this.settledLate(msg, ctx, outcome, startedAt, span, consuming);
    const settled = this.settle(msg, outcome, startedAt, span);
    return consuming === 'first' ? this.afterFirst(msg, ctx, settled) : settled;
  }

  /**
   * A consumed message's try that reached the ack deadline of a target whose write is still out
   * (AckTimeout.late): the writes' real outcomes decide the try's, so what the stats, the log and
   * the tap say is what became of the message. Every target took it, the late ones included: it is
   * delivered (and not written again). Otherwise the try failed, with what each target took so
   * far for the next try to send the message to the others only, and a fan-out's count of them
   * made again. The wait is bounded by each broker's own backstop (docs/scaling.md, "Stalls and
   * late answers").
   */
  private async settledLate(msg: Message, ctx: MessageContext, failed: Extract<Outcome, { outcome: 'failed' }>, startedAt: number, span: MessageSpan, consuming: Consuming): Promise<unknown> {
    const p = failed.problem;
    this.deps.logger.warn(
      { route: this.name, topic: msg.topic, partition: msg.partition, offset: msg.offset, code: p.code, detail: this.shown(p.detail), traceId: span.traceId },
      'a write is still out past its ack deadline: the route waits for its answer before it tries the message again',
    );
    const took = await this.lateAnswers(msg, p.took, p.late!);
    const { late, targets, ...rest } = p;
    let outcome: Outcome;
    if (took.every((d) => d !== undefined)) {
      const deliveries = took as Delivery[];
      const tags = ctx.tagged;
      if (failed.sent) outcome = deliveredOutcome(deliveries, failed.sent, tags);
      else outcome = tags ? { outcome: 'delivered', deliveries, tagged: true, tags } : { outcome: 'delivered', deliveries, tagged: false };
    } else {
      // The failure that stands: the first target still without the message (a fan-out's targets
      // that failed at once, or whose late answer did not take it), with a fan-out's count made again.
      const i = took.indexOf(undefined);
      const standing: Problem = targets?.[i] ?? rest;
      const { late: _own, targets: _none, ...own } = standing;
      const detail = late![i] === undefined ? own.detail : `${own.detail}; no late answer said it was taken`;
      // Its place: not the deadline's first failure's (rest.target) when that one's late answer took it.
      outcome = { outcome: 'failed', problem: { ...own, detail: targets ? fanOutDetail(detail, took) : detail, took, target: i } };
    }
    const settled = this.settle(msg, outcome, startedAt, span);
    return consuming === 'first' ? this.afterFirst(msg, ctx, settled) : settled;
  }

  /** Everything that follows an outcome, in one place for the synchronous and asynchronous paths. */
  private settle(msg: Message, settled: Outcome, startedAt: number, span: MessageSpan): Outcome {
    // splice(0) makes an array even when empty: on every message of an idle route it was one allocation more.
    this.settledCount++;
    if (--this.inFlight === 0 && this.idleWaiters.length > 0) for (const w of this.idleWaiters.splice(0)) w();
    // Before anyone sees it: the client's answer, the log, the tap, a dead-letter header. Deliveries
    // to brokers and listeners name the topic or path (spec §4) and cost nothing here.
    const outcome = settled.outcome === 'filtered' || (settled.outcome === 'delivered' && this.webhooks.length === 0) ? settled : this.redacted(settled);
    this.stats.record(outcome, startedAt);
    endMessageSpan(span, outcome, this.span.http);
    // Observers see the message as the route received it, but never its credentials: the auth
    // step strips them only from what travels on, and an observer may see a message it refused.
    // The common case (delivered or filtered, no tap) needs none of it.
    if (!this.tap.active && (outcome.outcome === 'delivered' || outcome.outcome === 'filtered')) return outcome;
    let seen: Message | undefined;
    const observed = () => (seen ??= this.observable(msg));
    // Observers never change a message's fate: an exception here, thrown as the route settles a
    // delivered message, would make a consume route give it back to its server, which delivers it again.
    try {
      if (outcome.outcome !== 'delivered' && outcome.outcome !== 'filtered') this.logOutcome(observed, outcome, span.traceId);
      if (this.tap.active) {
        const shown = outcome.outcome === 'delivered' && outcome.message ? { ...outcome, message: this.observable(outcome.message) } : outcome;
        this.tap.publish(observed(), shown, performance.now() - startedAt, span.traceparent);
      }
    } catch (err) {
      this.deps.logger.error({ route: this.name, outcome: outcome.outcome, err: (err as Error).message }, 'the log or the tap failed on a message; its outcome stands');
    }
    return outcome;
  }

  /** `text` with the config's secret values redacted (they are known once the config is in force). */
  private shown(text: string): string {
    const secrets = this.deps.redaction?.secrets;
    return secrets && secrets.size > 0 ? redact(text, secrets) : text;
  }

  /**
   * `outcome` with the config's secret values redacted where the gateway wrote it from the config:
   * a problem's text (a webhook URL whose path is a token, a broker address from `${VAR}` in a
   * DNS error) and webhook endpoints. These reach clients that hold no credential at all.
   */
  private redacted(outcome: Outcome): Outcome {
    const secrets = this.deps.redaction?.secrets;
    if (!secrets || secrets.size === 0) return outcome;
    if (outcome.outcome === 'delivered' || outcome.outcome === 'deadlettered') return { ...outcome, deliveries: redact(outcome.deliveries, secrets) };
    if (outcome.outcome === 'filtered') return outcome;
    const p = outcome.problem;
    const clean: Problem = { ...p, detail: redact(p.detail, secrets) };
    if (p.errors) clean.errors = redact(p.errors, secrets);
    if (p.logDetail !== undefined) clean.logDetail = redact(p.logDetail, secrets);
    if (p.took) clean.took = redact(p.took, secrets);
    // Their texts only: a target's failure may hold a late write's handle (Problem.late), which a copy would lose.
    if (p.targets) clean.targets = p.targets.map((t) => t && { ...t, detail: redact(t.detail, secrets), ...(t.logDetail === undefined ? {} : { logDetail: redact(t.logDetail, secrets) }) });
    return { ...outcome, problem: clean };
  }

  /** `m` without credential headers, and with the config's secret values redacted wherever they appear in it. */
  private observable(m: Message): Message {
    const clean = this.withoutCredentials(m);
    const secrets = this.deps.redaction?.secrets;
    const shown = secrets && secrets.size > 0 ? redact(clean, secrets) : clean;
    // redact copies the entries only: the mark of a message made from a request's head is carried by hand.
    return m[BODY_NOT_READ] && !shown[BODY_NOT_READ] ? { ...shown, [BODY_NOT_READ]: true } : shown;
  }

  /** What a dead-letter topic receives: the message without credential headers (the auth step may not have run yet). */
  private withoutCredentials(m: Message): Message {
    if (!Object.keys(m.headers).some((k) => this.credentialHeaders.has(k.toLowerCase()))) return m;
    const headers = newHeaders();
    for (const [k, v] of Object.entries(m.headers)) if (!this.credentialHeaders.has(k.toLowerCase())) headers[k] = v;
    return { ...m, headers };
  }

  /**
   * Failures at warn; invalid, rejected and dead-lettered messages (the client's problem, and
   * possibly frequent) at debug, and so a failure that is the message's own (400
   * `EG_INVALID_MESSAGE` from a target: a header or topic it cannot carry, made of the client's
   * data; 413 `EG_PAYLOAD_TOO_LARGE`: larger than the target's server takes), which a client
   * sending it in a loop would otherwise turn into a warning per request. Never the payload or
   * headers unless `log.payloads: true`.
   */
  private logOutcome(observed: () => Message, outcome: Exclude<Outcome, { outcome: 'delivered' | 'filtered' }>, traceId: string, records = 1): void {
    const logger = this.deps.logger;
    // A consumed message whose targets were cut short by the route's stop is given back, not lost
    // (consumeUntilSettled): a warning would send the operator looking for a failure that is not one.
    const givenBack = this.stopping && outcome.outcome === 'failed' && mayPassLater(outcome.problem) && this.plan.from.type === 'broker';
    // At shutdown a memory topic dies with the process: what is given back to it is lost, not delivered again.
    const lost = givenBack && this.lostWithProcess;
    const level = outcome.outcome === 'failed' && (!givenBack || lost) && !MESSAGES_OWN_FAULT.has(outcome.problem.code) ? 'warn' : givenBack ? 'info' : 'debug';
    // A fan-out whose first failing target refused the message as invalid (debug) while another
    // failed for itself (a broker down: warn): each target's failure is logged at its own level.
    const targets = outcome.outcome === 'failed' && !givenBack ? outcome.problem.targets : undefined;
    if (targets) this.logTargetFailures(observed, targets, traceId);
    if (!logger.isLevelEnabled(level)) return;
    const msg = observed();
    const line: Record<string, unknown> = { route: this.name, outcome: outcome.outcome, traceId };
    // The failing target's place in `to`, as the dead-letter copy's `target` and the metric label say it (a dead letter's: its cause's).
    const target = targets ? targets.findIndex((t) => t !== undefined) : outcome.outcome === 'deadlettered' ? outcome.cause?.target : outcome.problem.target;
    if (target !== undefined) line.target = target;
    // Several records of one produce request that failed alike: this line (the first one's) stands for all of them.
    if (records > 1) line.records = records;
    if (outcome.outcome === 'deadlettered') {
      line.errors = outcome.errors;
      line.deliveries = outcome.deliveries;
    } else {
      const p = outcome.problem;
      line.status = p.status;
      line.code = p.code;
      line.detail = p.detail;
      if (p.logDetail) line.where = p.logDetail;
      if (p.errors) line.errors = p.errors;
    }
    if (msg.topic !== null) Object.assign(line, { topic: msg.topic, partition: msg.partition, offset: msg.offset });
    if (this.deps.logOptions?.payloads) line.message = { key: msg.key, headers: msg.headers, ...shownValue(msg) };
    logger[level](line, lost ? LOST_WITH_PROCESS : givenBack ? GIVEN_BACK : `message ${outcome.outcome}`);
  }

  /**
   * The failures of a fan-out's targets after the first (which the route's line names), each at the
   * level it would have alone: `warn` for a target's own failure, `debug` for one that is the
   * message's (MESSAGES_OWN_FAULT). `target`: its place in `to`.
   */
  private logTargetFailures(observed: () => Message, targets: readonly (Problem | undefined)[], traceId: string): void {
    const logger = this.deps.logger;
    let first = true;
    for (const [i, p] of targets.entries()) {
      if (p === undefined) continue;
      if (first) {
        first = false;
        continue;
      }
      const level = MESSAGES_OWN_FAULT.has(p.code) ? 'debug' : 'warn';
      if (!logger.isLevelEnabled(level)) continue;
      const msg = observed();
      const line: Record<string, unknown> = { route: this.name, outcome: 'failed', target: i, traceId, status: p.status, code: p.code, detail: p.detail };
      if (p.logDetail) line.where = p.logDetail;
      if (p.errors) line.errors = p.errors;
      if (msg.topic !== null) Object.assign(line, { topic: msg.topic, partition: msg.partition, offset: msg.offset });
      logger[level](line, 'message failed at a target of its fan-out');
    }
  }

  /** A WebSocket client connecting to this route's path: the chain's auth steps decide. */
  admit(req: RequestMeta): Promise<Admission> {
    return admitThrough(this.gates, req);
  }

  private judgeHead(req: RequestMeta, head: () => Message): Promise<Problem | undefined> {
    const startedAt = performance.now();
    return admitThrough(this.headGates, req).then((admission) => {
      if (admission.ok) return undefined;
      const msg = head();
      this.inFlight++;
      this.stats.received++;
      const span = startMessageSpan(this.span, msg.headers[TRACEPARENT]);
      // An identity provider out of reach (503) is the gateway's failure, as the step's stop says.
      const outcome: Outcome = admission.problem.status >= 500 ? { outcome: 'failed', problem: admission.problem } : { outcome: 'rejected', problem: admission.problem };
      // Answered as settle() shows it to anyone (the config's secrets redacted).
      return (this.settle(msg, outcome, startedAt, span) as Extract<Outcome, { outcome: 'rejected' | 'failed' }>).problem;
    });
  }

  /** Messages inside the chain or waiting for their targets right now. */
  get pending(): number {
    return this.inFlight;
  }

  private unexpected(err: unknown, span: MessageSpan): Outcome {
    this.deps.logger.error({ route: this.name, traceId: span.traceId, err: (err as Error).message }, 'route failed unexpectedly');
    return { outcome: 'failed', problem: problem('EG_INTERNAL', 'the gateway failed to handle this message') };
  }

  private process(msg: Message, ctx: MessageContext): Outcome | Promise<Outcome> | Later {
    const r = runChain(this.steps, msg, ctx);
    if (r instanceof Promise) return r.then((settled) => outcomeOf(this.afterChain(settled, ctx)));
    return this.afterChain(r, ctx);
  }

  private afterChain(r: StepResult, ctx: MessageContext): Outcome | Promise<Outcome> | Later {
    if (!isStop(r)) return this.deliver(r, ctx);
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
        return this.deadletterInstead(r, ctx);
    }
  }

  private async deadletterInstead(r: Extract<StepResult, { stop: 'deadletter' }>, ctx: MessageContext): Promise<Outcome> {
    const to = r.to ? this.stepDeadletter(r.to) : this.deadletter!;
    try {
      const delivery = await this.sendToDeadletter(to, r.message, { status: 400, code: 'EG_INVALID_MESSAGE', detail: r.detail ?? 'the message does not match its schema', errors: r.errors }, ctx);
      return { outcome: 'deadlettered', deliveries: [delivery], errors: r.errors };
    } catch (err) {
      // Refused for good (too large for its server): a 503 would have consume routes retry it for ever.
      return { outcome: 'failed', problem: err instanceof Refused ? err.problem : unavailable(to.broker.name, err) };
    }
  }

  /**
   * The one dead-letter path of a route: the same headers (core/deadletter.ts), never credentials.
   * `source` (MessageContext.source: a consumed message's route and identity) gives the write a
   * message id of its own when the dead-letter broker takes ids, so a message dead-lettered again
   * (a try whose PubAck was lost, a redelivery) is one message to the stream, not two. A consumed
   * message's write (`consuming`) waits for a late answer before it fails (takenLate).
   */
  private sendToDeadletter(
    to: DeadletterTopic,
    msg: Message,
    cause: DeadletterCause,
    ctx: Pick<MessageContext, 'source' | 'span' | 'consumed'>,
    consuming = ctx.consumed !== undefined,
  ): Promise<Delivery> {
    // A consumed message's instructions to its source's stream are not the copy's (withoutConsumedInstructions).
    const kept = withoutConsumedInstructions(this.withoutCredentials(msg), ctx.consumed, to.broker.publishInstruction?.bind(to.broker));
    const out = deadletterMessage(kept, this.name, cause, to.broker.headerProblem?.bind(to.broker));
    // ctx.span is set only while an SDK records the route's span: the write is then a PRODUCER span as a target's is.
    const send = ctx.span === undefined ? undefined : startSendSpan(ctx.span, (to.sending ??= sendTemplate(to.broker, to.topic, true)), to.topic, out);
    if (send === undefined) {
      // A write the sampler did not record names the route's recorded span, as a target's does
      // (startSendSpan): a consumed message's own traceparent names its producer, not the try.
      const named = ctx.span === undefined ? out : { ...out, headers: headersWith(out.headers, TRACEPARENT, ctx.span.traceparent) };
      const written = this.publishDeadletter(to, msg, named, ctx.source);
      return consuming ? this.takenLate(written, msg) : written;
    }
    let written: Promise<Delivery>;
    try {
      written = this.publishDeadletter(to, msg, { ...out, headers: headersWith(out.headers, TRACEPARENT, send.traceparent) }, ctx.source);
    } catch (err) {
      written = Promise.reject(err);
    }
    return endedWithWrite(send, consuming ? this.takenLate(written, msg) : written, (err) => unavailable(to.broker.name, err));
  }

  /**
   * A consumed message's dead-letter write that failed at its ack deadline while its request was
   * still out (AckTimeout.late): its real outcome decides, as a target's does (settledLate). Taken
   * late, it counts as written; the retry that followed the deadline at once wrote a second copy
   * (a Kafka produce request answered after `ackTimeoutMs`: an event loop held up past it by a
   * batch's decompression, an overloaded machine). Not taken (or no answer by the broker's
   * backstop), the deadline's error stands and the caller tries again. HTTP publishes are answered
   * at the deadline as before (a client's 503 does not wait).
   */
  private async takenLate(written: Promise<Delivery>, msg: Message): Promise<Delivery> {
    try {
      return await written;
    } catch (err) {
      const late = err instanceof AckTimeout ? err.late : undefined;
      if (late === undefined) throw err;
      const where = { route: this.name, topic: msg.topic, partition: msg.partition, offset: msg.offset };
      this.deps.logger.warn({ ...where, err: (err as Error).message }, 'a dead-letter write is still out past its ack deadline: the route waits for its answer before it tries again');
      const took = await late.wait();
      if (took === undefined) throw err;
      this.deps.logger.info(where, 'a dead-letter write answered after its ack deadline was taken: it is not written again');
      return took;
    }
  }

  /** A validate step's own dead-letter topic, made once per step. */
  private stepDeadletter(to: NonNullable<Extract<StepResult, { stop: 'deadletter' }>['to']>): DeadletterTopic {
    let topic = this.stepDeadletters.get(to);
    if (topic === undefined) this.stepDeadletters.set(to, (topic = { broker: this.deps.brokers.get(to.broker)!, topic: to.topic, options: to.options }));
    return topic;
  }

  private publishDeadletter(to: DeadletterTopic, msg: Message, out: Message, source: string | undefined): Promise<Delivery> {
    if (to.broker.takesMessageIds !== true) {
      // A broker that reads instructions in headers is told it is a dead-letter write with or without ids (a nats broker with `messageIds: false`).
      return to.broker.publish(to.topic, out, to.broker.publishInstruction ? { qos: to.options?.qos, deadletter: true } : to.options);
    }
    // A message with no identity in its source (MQTT, AMQP, a core subject) but a publisher's id is
    // named by that id: sent as it is, a stream that holds the message already (a target of the
    // same fan-out stored it) dropped the dead-letter copy as a duplicate (spec-checklist 121).
    const id = source ?? publishedIdentity(this.name, msg.headers);
    return to.broker.publish(to.topic, out, id === undefined ? { qos: to.options?.qos, deadletter: true } : deadletterIdOptions(to.options, id));
  }

  private deliver(m: Message, ctx: MessageContext): Outcome | Later {
    const tags = ctx.tagged;
    // Routes from a kafka listener without `to` have no targets: their records go on in the client's own request.
    if (this.targets.length === 0) return deliveredOutcome([], m, tags);
    // A synchronous delivery (a memory topic) answers with no closure or promise; the closures are
    // in deliveredLater, since V8 allocates a function's closure context on every call that has one.
    if (this.targets.length === 1) {
      const d = sent(this.targets[0]!, m, ctx);
      return d instanceof Promise ? new Later(d, m, tags) : deliveredOutcome([d], m, tags);
    }
    const took = ctx.took;
    if (this.deps.targetsInTurn) return new Later(everyTarget(sendsInTurn(this.targets, took, m, ctx)), m, tags);
    return new Later(everyTarget(this.targets.map((t, i) => took?.[i] ?? sent(t, m, ctx))), m, tags);
  }

  /** Consume routes subscribe here; listener routes are bound by their listener instead. */
  start(): void {
    const consuming = this.consuming();
    if (!consuming) return;
    this.prepareConsuming(consuming.broker);
    this.subscription = consuming.broker.subscribe(consuming.spec, this.consumer);
    this.subscribed = consuming;
  }

  /**
   * start() for a route a reload rebuilt, taking over `before`'s live subscription when it reads
   * the same broker instance and asks it the same (sameSubscription, less what the kind's
   * handOverTakes allows to differ) and the kind can hand it over
   * (Subscription.handOver): no unsubscribe and subscribe again, so nothing published between is
   * lost (core NATS, MQTT QoS 0) and no session or connection is made again (MQTT). `before` stops
   * consuming as stopConsuming() says, except that what it gives back goes to this route. Resolves
   * once `before` holds no message; undefined when it cannot be taken over (then stop `before` and
   * start() this one, as before).
   */
  takeOver(before: RouteRuntime, drainMs: number, registry: KindRegistry, renamed = false): Promise<void> | undefined {
    const theirs = before.subscribed;
    const sub = before.subscription;
    if (!theirs || !sub?.handOver || before.stopping) return undefined;
    // The differences the kind's hand-over takes, as `eventgate plan` reads them (handOverTakes).
    const takes = registry.brokers.get(theirs.broker.kind)?.handOverTakes;
    if (renamed && !renamedForward(before.plan, this.plan, takes ?? [])) return undefined;
    // A renamed forward route consumes in its predecessor's group, and so do the routes rebuilt from it.
    this.groupTakenOver = renamed ? theirs.spec.group : before.takenOverGroup();
    const consuming = this.consuming();
    const asked = consuming && (renamed ? { ...consuming.spec, route: theirs.spec.route } : consuming.spec);
    if (!consuming || !asked || consuming.broker !== theirs.broker || !sameSubscription(asked, theirs.spec, takes)) {
      // A route rebuilt under its own name that cannot take the subscription over (its broker
      // replaced) still starts in the group it consumed in, as any rebuilt route does: a new
      // per-instance group would start at the latest message, past what came between.
      this.groupTakenOver = renamed ? undefined : before.takenOverGroup();
      return undefined;
    }
    this.prepareConsuming(consuming.broker);
    this.subscription = sub;
    this.subscribed = consuming;
    // The subscription's own lines go on naming the route that made it, until the next start.
    if (renamed) this.deps.logger.info({ route: this.name, renamedFrom: before.name, group: consuming.spec.group }, 'renamed route took over the subscription of the route it replaces');
    return before.stopConsumingWith(drainMs, () => sub.handOver!(consuming.spec, this.consumer));
  }

  /** What a consume route subscribes to, and where; undefined for a route from a listener. */
  private consuming(): { broker: BrokerRuntime; spec: SubscribeSpec } | undefined {
    // Websocket forwards show what happens now (defaultStartFrom `latest`): replaying a topic's
    // history to browsers would be wrong. Durable routes (broker targets) take the broker's
    // default, which never skips a record. Only a default: the route's own startFrom, then a
    // broker-wide one (kafka's consumer.startFrom), come first. A route that only calls webhooks
    // may have several messages of a partition in hand at once (inFlight), each committed once it
    // and every one before it are done; orderBy keeps order per value.
    const asked = askedSubscription(this.plan, this.deps.instanceId);
    if (!asked) return undefined;
    const { broker: name, topic, startFrom, defaultStartFrom, perInstance, inFlight, qos } = asked;
    const group = perInstance && this.groupTakenOver !== undefined ? this.groupTakenOver : asked.group;
    const undecodable = asked.deadletter ? (raw: Undecodable) => (this.connecting ? this.onceConnected(() => this.deadletterUndecodable(raw)) : this.deadletterUndecodable(raw)) : undefined;
    const ordered = this.webhooks.filter((w) => w.ordered);
    const orderKeys = asked.ordered ? (msg: Message) => this.orderKeys(this.asConsumed(msg), ordered) : undefined;
    return {
      broker: this.deps.brokers.get(name)!,
      spec: { topic, group, route: this.name, startFrom, defaultStartFrom, perInstance, instanceId: perInstance ? this.deps.instanceId : undefined, undecodable, inFlight, orderKeys, qos },
    };
  }

  /** What a consume route sets up before its first message: its counters, the connections it waits for, message ids. */
  private prepareConsuming(broker: BrokerRuntime): void {
    this.consumerTelemetry = this.deps.metrics?.broker?.(broker.name, broker.kind);
    this.connecting = this.firstConnections();
    this.sourceIdentity = this.namesBySource() ? broker.sourceIdentity?.bind(broker) : undefined;
  }

  /** The handler the route's subscription calls with each message. */
  private readonly consumer = (msg: Message): Promise<void> => this.consume(this.asConsumed(msg));

  /**
   * A consumed message as the CloudEvent it is, by its headers or by the route's agreement
   * (`from.cloudevents: structured`). Public for `eventgate test`, which reads a consume route's input so.
   */
  asConsumed(msg: Message): Message {
    return fromConsumedRecord(msg, this.plan.from.type === 'broker' && this.plan.from.structured === true);
  }

  /**
   * Whether the route names what it writes after a consumed message's identity in its source: a
   * broker it writes to takes message ids (BrokerRuntime.takesMessageIds: a broker target, the
   * route's `deadletter`, a validate step's dead-letter topic), a signed webhook's `webhook-id`, a
   * step's (CompiledStep.namesMessages: a CloudEvent's `id`). Only then does that identity cost
   * anything (a string per message, consume()).
   */
  private namesBySource(): boolean {
    const takesIds = (name: string) => this.deps.brokers.get(name)?.takesMessageIds === true;
    if (this.idTakingTargets() > 0 || this.webhooks.some((w) => w.signs)) return true;
    if (this.plan.deadletter && takesIds(this.plan.deadletter.broker)) return true;
    return this.steps.some((s) => s.namesMessages === true || s.brokers?.some(takesIds));
  }

  /**
   * The first connections a consume route waits for: those of the brokers it sends to (its broker
   * targets, its `deadletter`, a validate step's dead-letter topic) that have not connected yet,
   * at startup or when a reload replaced them. Until then a message would fail as if they were
   * down, and after five tries go to the dead-letter topic: an outage that is only a start. The
   * route subscribes at once all the same, so its place in the source is taken as before (a new
   * memory group starts at the topic's end, core NATS delivers only to subscribers): the messages
   * it is handed wait in hand, unacknowledged, and the rest stay in the source. Later outages of a
   * broker that was connected are the retry policy's (consumeUntilSettled).
   */
  private firstConnections(): { brokers: Set<string>; done: Promise<void> } | undefined {
    const sendsTo = new Set<string>(this.plan.to.flatMap((t) => (t.type === 'broker' ? [t.broker] : [])));
    if (this.plan.deadletter) sendsTo.add(this.plan.deadletter.broker);
    for (const s of this.steps) for (const b of s.brokers ?? []) sendsTo.add(b);
    const brokers = new Set<string>();
    const waits: Promise<void>[] = [];
    for (const name of sendsTo) {
      const first = this.deps.brokers.get(name)?.connectedOnce?.(this.stopped);
      if (first === undefined || first === true) continue;
      brokers.add(name);
      waits.push(first.then(() => void brokers.delete(name)));
    }
    if (waits.length === 0) return undefined;
    this.deps.logger.debug({ route: this.name, brokers: [...brokers] }, 'consume route waits for the first connection of the brokers it sends to');
    const done = Promise.all(waits).then(() => {
      this.connecting = undefined;
    });
    return { brokers, done };
  }

  /** `then` once the brokers the route sends to have connected; rejects (a give-back) if the route stops first. */
  private async onceConnected<T>(then: () => Promise<T>): Promise<T> {
    await Promise.race([this.connecting?.done, this.stopped]);
    if (this.stopping) throw new Error(`route '${this.name}' stopped before the brokers it sends to first connected`);
    return then();
  }

  /**
   * The order keys of a consumed message: each ordered webhook's `orderBy` value, computed on the
   * message as consumed (before the route's steps, which may run only once per delivery). A value
   * the expression cannot give keeps no order; the target reports that failure when it delivers.
   */
  private async orderKeys(msg: Message, ordered: readonly WebhookTarget[]): Promise<string[]> {
    const ctx = { route: this.name };
    const lanes = await Promise.all(ordered.map((w) => w.laneOf(msg, ctx).catch(() => undefined)));
    return lanes.flatMap((lane, i) => (lane === undefined ? [] : [`${i}\0${lane}`]));
  }

  /**
   * What a reconnecting event-stream client missed: the source topic as the broker still retains
   * it after `after`, through this route's chain (messages the chain stops are left out), a read
   * at a time as the caller asks (Retained.chunks). Nothing is sent to the targets; the caller
   * delivers the result to that one client.
   */
  async replay(after: ReadonlyMap<number, bigint>): Promise<Retained> {
    const from = this.plan.from;
    const broker = from.type === 'broker' ? this.deps.brokers.get(from.broker) : undefined;
    if (from.type !== 'broker' || !broker) return { chunks: chunksOf([]), close: holdsNothing };
    // MQTT, AMQP: the server keeps no position to read from; the client is told, never left to assume it missed nothing.
    if (!broker.retained) return { chunks: chunksOf([]), close: holdsNothing, gap: noReadBack(`broker '${from.broker}' (${broker.kind})`), forget: [...after.keys()] };
    const { chunks, close, gap, forget, ends, partitions } = await broker.retained(from.topic, after);
    // Left early, throughChain's loop ends the broker's chunks (its finally); never begun, close() does.
    return { chunks: this.throughChain(chunks), close, gap, forget, ends, partitions };
  }

  /** A replay's chunks through the route's chain, each when asked for. */
  private async *throughChain(chunks: AsyncIterable<RetainedChunk>): AsyncGenerator<RetainedChunk> {
    for await (const { messages, gap } of chunks) {
      const out: Message[] = [];
      for (const m of messages) {
        const consumed = this.asConsumed(m);
        // Left out as the live stream leaves it out (check()): its clients would get null for the number.
        if (this.readsValues && hugeNumberProblem(consumed.value)) continue;
        // Named by its identity in its source as the live stream named it (a wrapped CloudEvent's id).
        const r = await runChain(this.steps, this.validates ? this.withoutClientTag(consumed) : consumed, { route: this.name, source: this.sourceOf(consumed) });
        if (!isStop(r)) out.push(r);
      }
      yield { messages: out, gap };
    }
  }

  /** Whether the route's consumer consumes; why not when it does not (for /readyz and /admin/status). */
  health(): Health {
    const waiting = this.connecting?.brokers;
    if (waiting && waiting.size > 0) {
      const names = [...waiting].map((b) => `'${b}'`).join(', ');
      return { ready: false, detail: `waiting for the first connection of ${waiting.size === 1 ? 'broker' : 'brokers'} ${names} before consuming` };
    }
    return this.subscription?.health?.() ?? { ready: true };
  }

  /**
   * A record batch or record the broker could not decode goes to the dead-letter topic as the raw
   * bytes it was, with the same error header as other dead-lettered messages and where it came from.
   */
  private async deadletterUndecodable(raw: Undecodable): Promise<void> {
    const source = { topic: raw.topic, partition: raw.partition, offset: raw.offset, lastOffset: raw.lastOffset };
    const undecoded: Message = {
      value: raw.bytes,
      key: null,
      headers: { [ROUTE_SOURCE_HEADER]: JSON.stringify(source) },
      topic: raw.topic,
      partition: raw.partition,
      offset: raw.offset,
      timestamp: Date.now(),
    };
    const to = this.deadletter!;
    // A batch's identity is its first record's (the batch's first offset and timestamp), as stable as any record's.
    const identity = this.sourceOf({ ...undecoded, timestamp: raw.timestamp });
    const error =
      raw.unit === 'batch'
        ? { code: 'EG_UNDECODABLE_BATCH', detail: `a record batch could not be decoded: ${raw.reason}` }
        : { code: 'EG_UNDECODABLE_RECORD', detail: `a record could not be decoded: ${raw.reason}` };
    // No route span: bytes no route read have no trace to join (no PRODUCER span either).
    await this.sendToDeadletter(to, undecoded, { status: 422, ...error, errors: [] }, { source: identity }, true);
    this.stats.deadlettered++;
  }

  /**
   * At-least-once, and the one owner of retries for consumed messages: resolves once every
   * target accepted the message, it went to the dead-letter target, or it was dropped because
   * nothing could make it pass. Targets that are unavailable are tried again with backoff; after
   * CONSUME_ATTEMPTS the message is dead-lettered when the route has a target for that, else
   * tried for as long as the route runs. Rejects only when the route stops with the message in
   * hand: the broker then leaves it uncommitted for whoever consumes next.
   */
  private consume(msg: Message): Promise<void> {
    if (this.connecting) return this.onceConnected(() => this.consume(msg));
    // Most messages pass at the first try: that costs one promise callback (check()'s), no retry state.
    const ctx: MessageContext = { route: this.name, source: this.sourceOf(msg), consumed: msg.headers };
    const first = this.check(msg, ctx, 'first');
    if (first instanceof Promise) return first as Promise<void>;
    const after = this.afterFirst(msg, ctx, first);
    return after ?? CONSUMED;
  }

  /** MessageContext.source of a consumed message: the route and its identity in its source, when a broker the route writes to takes ids. */
  private sourceOf(msg: Message): string | undefined {
    const source = this.sourceIdentity?.(msg);
    return source === undefined ? undefined : `${this.name}:${source}`;
  }

  /** Nothing when a consumed message's first outcome settled it; else consumeAgain(). */
  private afterFirst(msg: Message, ctx: MessageContext, first: Outcome): Promise<void> | undefined {
    return consumed(first) ? undefined : this.consumeAgain(msg, ctx, first);
  }

  /** consume() after a first try that did not settle the message: retries, stall reporting, dead-lettering. */
  private async consumeAgain(msg: Message, ctx: MessageContext, first: Outcome): Promise<void> {
    const startedAt = performance.now();
    let stall: StalledMessage | undefined;
    try {
      await this.consumeUntilSettled(msg, ctx, first, startedAt, (attempt, p) => {
        if (!stall) {
          stall = { topic: msg.topic, partition: msg.partition, offset: msg.offset, since: new Date().toISOString(), attempts: attempt, code: p.code, detail: p.detail, ...targetOf(p) };
          this.stalls.add(stall);
          this.stats.stalled++;
        } else Object.assign(stall, { attempts: attempt, code: p.code, detail: p.detail, target: p.target });
      });
    } finally {
      if (stall) {
        this.stalls.delete(stall);
        this.stats.stalled--;
      }
    }
  }

  /**
   * A consumed message's first outcome as consume() settles it when nothing could make it pass
   * (an expression that failed, a refused message) or a webhook target's own tries failed
   * (deadletteredAtOnce): with a `deadletter`, written there (outcome
   * `deadlettered`, the failure its `cause`); else as it is (the message is dropped). For
   * `eventgate test`, which tries a consume route once and has no retries to wait for.
   */
  async settleFirst(msg: Message, first: Outcome, ctx: MessageContext): Promise<Outcome> {
    if (consumed(first) || !this.deadletter || !deadletteredAtOnce(first.problem)) return first;
    const p = first.problem;
    const delivery = await this.sendToDeadletter(this.deadletter, msg, triedCause(p, 1), ctx);
    return { outcome: 'deadlettered', deliveries: [delivery], errors: p.errors ?? [], cause: p };
  }

  /** What /admin/status shows of messages this route keeps retrying: without a dead-letter target, or with one that does not take them either. */
  stalledMessages(): readonly StalledMessage[] {
    return [...this.stalls];
  }

  /** consume()'s retries, from a first outcome that did not settle the message: each failure goes on, dead-letters, drops or stalls. */
  private async consumeUntilSettled(
    msg: Message,
    ctx: MessageContext,
    first: Outcome,
    startedAt: number,
    stalled: (attempt: number, why: Pick<Problem, 'code' | 'detail' | 'target'>) => void,
  ): Promise<void> {
    const backoff = new Backoff();
    /** The context of the try just made: the first's, then each retry's own (nextTry). */
    let tried = ctx;
    let took: Problem['took'];
    for (let attempt = 1; ; attempt++) {
      if (attempt > 1) tried = nextTry(tried, took);
      // Each try settles once its writes still out past their ack deadline answered (settledLate()), so none is written twice.
      const outcome = attempt === 1 ? first : await this.check(msg, tried, 'retry');
      if (consumed(outcome)) return;
      const p = outcome.problem;
      // Targets of a fan-out that took the message are not sent it again (everyTarget).
      if (p.took) took = p.took;
      // A webhook target retried on its own: what failed on its last try may pass later, but not by
      // retrying here at once (deadletteredAtOnce).
      const retryable = mayPassLater(p);
      // A failure that may pass later, met while the route stops (stopConsuming cuts the webhook
      // tries still in flight after a grace period): the message is given back, uncommitted, for
      // whoever consumes next, never dead-lettered for the route's own stop.
      if (retryable && this.stopping) throw new Error(`route '${this.name}' stopped before its targets accepted the message`);
      if (this.deadletter && (deadletteredAtOnce(p) || attempt >= CONSUME_ATTEMPTS)) {
        // The last try's span (tried.span) is the dead-letter write's parent.
        const refused = await this.deadletterConsumed(this.deadletter, msg, p, tried, startedAt, attempt);
        if (refused === undefined) return;
        // Neither its targets nor its dead-letter target take it: it holds up its partition as a
        // message of a route without one does, and is shown so.
        if (attempt >= CONSUME_ATTEMPTS) stalled(attempt, { code: p.code, detail: `${p.detail}; the dead-letter target did not take it either: ${this.shown(refused)}`, target: p.target });
      } else if (!retryable) {
        this.dropped(msg, p);
        return;
      }
      if (attempt >= CONSUME_ATTEMPTS && !this.deadletter) stalled(attempt, p);
      if (attempt === CONSUME_ATTEMPTS && !this.deadletter)
        this.deps.logger.error(
          { route: this.name, topic: msg.topic, partition: msg.partition, offset: msg.offset, code: p.code, detail: p.detail, ...targetOf(p) },
          'message not consumed; retrying it until its targets accept it (the route has no deadletter target)',
        );
      // eventgate_<kind>_consumer_errors_total{broker,route}: a consumed message its route could not deliver yet.
      this.consumerTelemetry?.consumerError(this.name);
      await pause(backoff.delay(), this.stopped);
      if (this.stopping) {
        this.stoppedBetweenTries(msg, p);
        throw new Error(`route '${this.name}' stopped before its targets accepted the message`);
      }
    }
  }

  /**
   * A consumed message whose route stopped while it waited for its next try: no try is cut short
   * to say so (logOutcome's given-back and lost lines), so it is said here, with the last try's
   * failure. Without it a memory topic's message in backoff at a shutdown went without its line.
   */
  private stoppedBetweenTries(msg: Message, p: Problem): void {
    const lost = this.lostWithProcess;
    const line: Record<string, unknown> = {
      route: this.name,
      outcome: 'failed',
      traceId: traceIdOf(msg.headers),
      code: p.code,
      detail: p.detail,
      ...targetOf(p),
      topic: msg.topic,
      partition: msg.partition,
      offset: msg.offset,
    };
    // As logOutcome's lines have it: with log.payloads, a message lost with the process is still in the log.
    if (this.deps.logOptions?.payloads) {
      const shown = this.observable(msg);
      line.message = { key: shown.key, headers: shown.headers, ...shownValue(shown) };
    }
    this.deps.logger[lost ? 'warn' : 'info'](line, lost ? LOST_WITH_PROCESS : GIVEN_BACK);
  }

  /**
   * Waits for the writes that were still out when their ack deadline passed (AckTimeout.late;
   * bounded by each broker's backstop). Returns what each target took, the late answers included.
   */
  private async lateAnswers(msg: Message, took: readonly (Delivery | undefined)[] | undefined, late: NonNullable<Problem['late']>): Promise<(Delivery | undefined)[]> {
    const answers = await Promise.all(Array.from(late, (l) => l?.wait()));
    const now: (Delivery | undefined)[] = [];
    let takenLate = 0;
    for (let i = 0; i < this.targets.length; i++) {
      now.push(took?.[i] ?? answers[i]);
      if (took?.[i] === undefined && answers[i] !== undefined) takenLate++;
    }
    if (takenLate > 0)
      this.deps.logger.info(
        { route: this.name, topic: msg.topic, partition: msg.partition, offset: msg.offset, targets: takenLate },
        'a write answered after its ack deadline was taken: the message is not sent to that target again',
      );
    return now;
  }

  /**
   * A consumed message its route gives up on, to the dead-letter target; undefined once it is
   * settled (the target took it, or refused it for good and it was dropped), else why the target
   * did not take it (logged). The tap shows it as `deadlettered` after the try it saw fail.
   * `attempts`: the route's tries of it so far.
   */
  private async deadletterConsumed(to: DeadletterTopic, msg: Message, p: Problem, ctx: MessageContext, startedAt: number, attempts: number): Promise<string | undefined> {
    try {
      const cause = triedCause(p, attempts);
      const delivery = await this.sendToDeadletter(to, msg, cause, ctx);
      this.stats.deadlettered++;
      if (this.tap.active) {
        // `p` comes from the failed try's settled outcome, already redacted (settle()); the tries as the copy counts them.
        const outcome = this.redacted({ outcome: 'deadlettered', deliveries: [delivery], errors: p.errors ?? [], cause: { ...p, attempts: cause.attempts } });
        this.tap.publish(this.observable(msg), outcome, performance.now() - startedAt, msg.headers[TRACEPARENT] ?? '');
      }
      this.deps.logger.warn(
        { route: this.name, topic: msg.topic, partition: msg.partition, offset: msg.offset, code: p.code, ...targetOf(p), traceId: traceIdOf(msg.headers) },
        'message sent to the dead-letter topic',
      );
      return undefined;
    } catch (err) {
      // Refused for good (the copy, with its `_eventgate_error` header, over what the server takes):
      // every try would be, and the message held up its partition for ever. Dropped, said in full.
      if (err instanceof Refused) {
        this.dropped(msg, p, err.problem.detail);
        return undefined;
      }
      this.deps.logger.error({ route: this.name, topic: msg.topic, partition: msg.partition, offset: msg.offset, err: (err as Error).message }, 'dead-letter target did not acknowledge; retrying');
      return (err as Error).message;
    }
  }

  /**
   * Nothing can make this consumed message pass, and the route has no dead-letter target or that
   * target refused it for good too (`deadletterRefusal`): keeping it would stall the partition for
   * ever, so it goes. The log line is all that is left of it: it says why in full (the validation
   * errors, the failed expression's place).
   */
  private dropped(msg: Message, p: Problem, deadletterRefusal?: string): void {
    this.deps.logger.error(
      {
        route: this.name,
        topic: msg.topic,
        partition: msg.partition,
        offset: msg.offset,
        code: p.code,
        detail: p.detail,
        ...targetOf(p),
        ...(p.logDetail ? { where: p.logDetail } : {}),
        ...(p.errors ? { errors: p.errors } : {}),
        ...(deadletterRefusal !== undefined ? { deadletter: deadletterRefusal } : {}),
        traceId: traceIdOf(msg.headers),
      },
      deadletterRefusal === undefined ? 'message dropped: it cannot pass this route and the route has no deadletter target' : 'message dropped: its dead-letter target refused it too',
    );
  }

  /**
   * Stops consuming: resolves once the message in hand is finished and committed (or given back).
   * `shutdown`: the gateway is exiting (a memory topic's messages in hand are then lost, not given back).
   */
  stopConsuming(drainMs: number, shutdown = false, retire = false): Promise<void> {
    if (shutdown && this.plan.from.type === 'broker' && this.deps.brokers.get(this.plan.from.broker)?.settle) this.lostWithProcess = true;
    return this.stopConsumingWith(drainMs, (taking) => this.subscription?.stop(retire ? { retire, taking } : { taking }));
  }

  /**
   * What the route consumes — its broker, topic and group — as one key; undefined for a route
   * from a listener. A route a reload removes retires its subscription (StopOptions.retire) when
   * no route of the new config has its key.
   */
  consumes(): string | undefined {
    const c = this.subscribed ?? this.consuming();
    return c && `${c.broker.name}\0${c.spec.topic}\0${c.spec.group}`;
  }

  /**
   * A per-instance forward route about to start whose own group another route consumes in (a
   * renamed route took it over, and this one came back under the old name) starts in a new group:
   * sharing one would split the messages between the two routes' clients.
   */
  avoidGroups(held: ReadonlySet<string>): void {
    const asked = askedSubscription(this.plan, this.deps.instanceId);
    if (this.groupTakenOver !== undefined || !asked?.perInstance || !held.has(asked.group)) return;
    let n = 2;
    while (held.has(`${asked.group}-${n}`)) n++;
    this.groupTakenOver = `${asked.group}-${n}`;
  }

  /** The group this per-instance forward route consumes in instead of its own (groupTakenOver); undefined when it uses its own. */
  takenOverGroup(): string | undefined {
    return this.groupTakenOver !== undefined && askedSubscription(this.plan, this.deps.instanceId)?.perInstance ? this.groupTakenOver : undefined;
  }

  /**
   * stopConsuming() where `release` stops the subscription, or hands it over to a successor
   * (takeOver); `release` passes `taking` on to a subscription that goes on taking messages as it
   * stops (StopOptions.taking).
   */
  private async stopConsumingWith(drainMs: number, release: (taking: NonNullable<StopOptions['taking']>) => Promise<void> | undefined): Promise<void> {
    this.stopping = true;
    this.stop();
    // Set by `release` (a closure's assignment, which the compiler's narrowing does not see).
    let taking = undefined as Promise<unknown> | undefined;
    const stopped = release((until) => (taking = until));
    // An endpoint slow to answer must not keep the consumer from committing what is done: after a
    // grace period (within half the drain timeout) the webhook tries in flight are cut, and their
    // messages given back (uncommitted, so delivered again by whoever consumes next). Counted from
    // when the subscription takes no more: a retiring MQTT route's leave takes its session's
    // backlog first, and what it gave back then went with the session the reload ends.
    const graceMs = webhookStopGraceMs(drainMs);
    let cut: NodeJS.Timeout | undefined;
    let ended = false;
    // The cut waits one turn of the event loop after the grace (setImmediate): answers that came
    // while the process got no CPU (a loaded machine, a stopped container) are read first, and
    // their tries settle, rather than cut and their messages delivered again by the successor.
    const grace = () => {
      if (!ended && this.webhooks.length > 0) cut = setTimeout(() => setImmediate(() => ended || this.close()), graceMs);
    };
    // While it still takes, an endpoint that answers nothing for the grace (one that hangs) is cut
    // then: each try would wait out its timeout and retries, one message after another, with the
    // reload waiting for them all, and what a stopping route gives back goes with the session anyway.
    const hung = taking && this.webhooks.length > 0 ? this.whenNothingSettles(graceMs) : undefined;
    if (taking) void taking.then(grace, grace).finally(() => clearInterval(hung));
    else grace();
    await stopped;
    ended = true;
    clearTimeout(cut);
    clearInterval(hung);
    this.subscription = undefined;
  }

  /** Cuts the webhook tries in flight (close()) once a whole `ms` passed with messages inside the route and none of them settling. */
  private whenNothingSettles(ms: number): NodeJS.Timeout {
    let seen = this.settledCount;
    const watch = setInterval(() => {
      if (this.inFlight > 0 && this.settledCount === seen) {
        clearInterval(watch);
        this.deps.logger.warn(
          { route: this.name, inFlight: this.inFlight, graceMs: ms },
          'webhook tries of a route leaving its group got no answer within the grace; cut, their messages given back to its session',
        );
        this.close(true);
      }
      seen = this.settledCount;
    }, ms);
    return watch;
  }

  /** Releases what the route holds open beyond its messages (webhook connections); after drain(). `refuseLater`: WebhookTarget.close's. */
  close(refuseLater = false): void {
    for (const w of this.webhooks) w.close(refuseLater);
    // What the warning counted and did not log yet is logged now, not lost with the route.
    this.recordsFailed?.close();
  }

  /** Waits, up to drainMs, until no message is inside the route. */
  async drain(drainMs: number): Promise<void> {
    if (this.inFlight > 0) {
      await Promise.race([new Promise<void>((r) => this.idleWaiters.push(r)), new Promise((r) => setTimeout(r, drainMs).unref())]);
    }
  }
}

/**
 * ReplaySource.sourceKey of a route: its source broker's kind and name, the topic, and what else
 * numbers the positions (a JetStream subject's stream, a memory broker's life). Undefined for a route from a listener or
 * from a broker or topic that keeps no positions (MQTT, AMQP, a core NATS subject).
 */
function sourceKeyOf(plan: RoutePlan, brokers: ReadonlyMap<string, BrokerRuntime>): string | undefined {
  if (plan.from.type !== 'broker') return undefined;
  const broker = brokers.get(plan.from.broker);
  if (!broker?.retained) return undefined;
  const scope = broker.positionScope ? broker.positionScope(plan.from.topic) : null;
  if (scope === undefined) return undefined;
  return JSON.stringify([broker.kind, broker.name, plan.from.topic, scope]);
}

/**
 * Whether a route reads the values of the messages it consumes, rather than copying their bytes to
 * broker targets and webhooks: a step, or a target that writes the value as JSON of its own (a
 * listener's clients, a CloudEvent written structured). A target's expressions (topic, key, URL,
 * headers) make a string of what they read and leave the body as it came.
 */
function readsValues(plan: RoutePlan): boolean {
  if (plan.steps.length > 0) return true;
  return plan.to.some((t) => (t.type === 'listener' ? true : t.type === 'broker' ? t.structured === true : t.webhook.cloudevents === 'structured'));
}

/**
 * A consumed value, or a kafka listener's record, with a number beyond a double (JSON.parse read
 * `1e400` as Infinity): refused as invalid, as an HTTP body with one is, before a step computes
 * with Infinity or JSON writes it on as null (a transform's result then blamed the transform, a
 * plain `{"v": v}` wrote null).
 */
function hugeNumberProblem(value: unknown, what: 'message' | 'record' = 'message'): Problem | undefined {
  const at = hugeNumberAt(value);
  return at === undefined ? undefined : problem('EG_INVALID_MESSAGE', hugeNumberText(what, at));
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

/**
 * The options of a dead-letter write of the consumed message `source` names (MessageContext.source)
 * to a broker that takes ids: the dead-letter topic's own, and `<source>:deadletter` as its id, the
 * same on every try and redelivery, never a broker target's (those end in their place in `to`). It
 * replaces a publisher's id: with that one, a dead-letter topic in the stream the message came
 * from (or a target wrote it to) dropped the dead-letter copy as a duplicate, and the message was lost.
 */
function deadletterIdOptions(options: PublishOptions | undefined, source: string): PublishOptions {
  return { qos: options?.qos, messageId: `${source}:deadletter`, replacesOwnId: true, deadletter: true };
}

function deliveredOutcome(deliveries: Delivery[], m: Message, tags: readonly string[] | undefined): Outcome {
  return tags ? { outcome: 'delivered', deliveries, tagged: true, tags, message: m } : { outcome: 'delivered', deliveries, tagged: false, message: m };
}

/**
 * Targets still at work on message `m`: what check() waits for, with one promise callback from
 * their answer to the settled outcome (a promise of the outcome first was one layer more).
 */
class Later {
  constructor(
    readonly pending: Promise<Delivery | Delivery[]>,
    private readonly m: Message,
    private readonly tags: readonly string[] | undefined,
  ) {}

  /** The outcome once the targets answered `d`. */
  outcome(d: Delivery | Delivery[]): Outcome {
    return deliveredOutcome(Array.isArray(d) ? d : [d], this.m, this.tags);
  }

  /** The outcome once a target failed with `err`; with writes still out (Problem.late), it keeps what they were sent. */
  failed(err: unknown): Outcome {
    const failed = targetFailed(err);
    if (failed.outcome !== 'failed') return failed;
    // A fan-out's failure names its target (everyTarget); one without is the single target's, place 0.
    if (failed.problem.target === undefined) failed.problem = { ...failed.problem, target: 0 };
    if (failed.problem.late) failed.sent = this.m;
    return failed;
  }

  /** The outcome as a promise, for callers other than check(). */
  promise(): Promise<Outcome> {
    return this.pending.then(
      (d) => this.outcome(d),
      (err) => this.failed(err),
    );
  }
}

function outcomeOf(o: Outcome | Promise<Outcome> | Later): Outcome | Promise<Outcome> {
  return o instanceof Later ? o.promise() : o;
}

const CONSUMED: Promise<void> = Promise.resolve();

/**
 * The context of a consumed message's next try: what stays the message's own across its tries
 * (its route, its identity in its source, an id drawn for it, what its targets took so far), and
 * none of what the last try's steps and span wrote on it: a validate step's tag errors there were
 * listed again by the next try's (once more on every retry), and `$message` is the next try's to say.
 */
function nextTry(last: MessageContext, took: Problem['took']): MessageContext {
  const { tagged: _tagged, asyncapi: _asyncapi, span: _span, took: _took, ...kept } = last;
  return took === undefined ? kept : { ...kept, took };
}

/** Which try of a consumed message check() runs: its first (consume()) or a retry (consumeUntilSettled()). */
type Consuming = 'first' | 'retry';

/** Whether a consumed message is done with: its targets took it, the chain filtered it, or it went to a dead-letter topic. */
function consumed(o: Outcome): o is Extract<Outcome, { outcome: 'delivered' | 'filtered' | 'deadlettered' }> {
  return o.outcome === 'delivered' || o.outcome === 'filtered' || o.outcome === 'deadlettered';
}

const NO_DELIVERIES: Delivery[] = Object.freeze([]) as unknown as Delivery[];
/** A record a chain let through as it came (checkRecord): shared, since nothing in it is per record. */
const PASSED_UNCHANGED: Outcome = Object.freeze({ outcome: 'delivered', deliveries: NO_DELIVERIES, tagged: false });

/**
 * A consumed message's failure as its dead-letter copy tells it: `attempts` are a webhook target's
 * own tries when it failed (the route tried it once), else the route's `routeTries`.
 */
function triedCause(p: Problem, routeTries: number): DeadletterCause {
  const cause: DeadletterCause = { status: p.status, code: p.code, detail: p.detail, errors: p.errors ?? [], attempts: p.attempts ?? routeTries };
  if (p.endpointStatus !== undefined) cause.endpointStatus = p.endpointStatus;
  if (p.target !== undefined) cause.target = p.target;
  return cause;
}

/** A failure a consume route with a `deadletter` sends there at its first try: it cannot pass, or a webhook target's own tries are spent. */
function deadletteredAtOnce(p: Problem): boolean {
  return !mayPassLater(p) || retriedByWebhook(p);
}
