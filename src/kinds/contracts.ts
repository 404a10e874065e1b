/**
 * What a kind module provides. Each broker, listener and step kind is one module exporting one of
 * these, made with defineBroker / defineListener / defineStep (./define.ts) from one TypeBox
 * definition of its options: the JSON Schema fragment (assembled into gateway.schema.json), the
 * options' TypeScript type and their rows in docs/config.md all come from it. Adding a kind means
 * adding one module and one registry line (src/kinds/index.ts).
 */
import type { ValidateFunction } from 'ajv';
import type { Logger } from 'pino';
import type { ErrorCode, Problem } from '../core/errors.js';
import type { Expression } from '../expr/expression.js';
import type { PathPart } from '../config/source.js';
import type { Delivery, Identity, Message, MessageContext, RequestMeta } from '../core/message.js';
import type { Outcome, StepStop } from '../core/outcome.js';

export type JsonSchema = Record<string, unknown>;

/** What docs/config.md says about a kind besides its options (which document themselves in the schema). */
export interface KindDoc {
  summary: string;
  /** YAML showing the kind in use, as it would appear in gateway.yaml. */
  example: string;
}

// ---- steps ---------------------------------------------------------------------------------

export interface StepCompileContext {
  /** Report a problem at `relPath` below this step's options. */
  report(relPath: readonly PathPart[], code: ErrorCode, message: string): void;
  compileExpression(source: string, relPath: readonly PathPart[]): Expression | undefined;
  /**
   * Compile a JSON Schema. `origin` is the file it came from, when it was read with
   * readDocument(): problems then point into that file; otherwise into the config at relPath.
   */
  compileJsonSchema(schema: unknown, relPath: readonly PathPart[], origin?: string): SchemaCheck | undefined;
  /** Read a file named relative to the config file; it is watched for hot reload. */
  readFile(file: string, relPath: readonly PathPart[]): string | undefined;
  /**
   * Read and parse a JSON or YAML file named relative to the config file (watched for hot
   * reload), keeping positions so later problems can point into it. Undefined when it cannot be
   * read or parsed (already reported, at the position of the syntax error in the file).
   * Optional so contexts built by hand (unit tests) need not provide it; the compiler always does.
   * `json`: parsed as JSON whatever the file's name (by default only a `.json` one is).
   */
  readDocument?(file: string, relPath: readonly PathPart[], options?: { json?: boolean }): { value: unknown } | undefined;
  /** Check that a broker name exists. */
  checkBroker(name: string, relPath: readonly PathPart[]): boolean;
  /** Check that broker `broker` (which exists) can publish to `topic` as it is (BrokerKind.topicProblem); reported at relPath when not. */
  checkTopic(broker: string, topic: string, relPath: readonly PathPart[]): boolean;
  /** Check that broker `broker` (which exists) takes a `qos` (BrokerKind.takesQos: mqtt); reported at relPath (the `qos` key) when not. */
  checkQos(broker: string, relPath: readonly PathPart[]): boolean;
  /**
   * The messages of the config's AsyncAPI documents that `ref` names, each with its payload
   * validator (compiled once per load); undefined, with the problem reported, when the name is unknown.
   * The documents become files of the step, so editing them rebuilds it. (Optional so contexts
   * built by hand in tests keep compiling; the compiler always provides it.)
   */
  asyncapiContracts?(ref: { message: string } | { channel: string }, relPath: readonly PathPart[]): MessageContract[] | undefined;
}

/**
 * A compiled JSON Schema: ajv's check of a decoded value, and for schemas simple enough, a check of
 * the value's UTF-8 bytes (plan/json-bytes.ts) that answers true only for values ajv accepts.
 */
export type SchemaCheck = ValidateFunction & {
  /** The JSON Schema draft it was compiled as (its `$schema`, else the draft its place implies). */
  draft?: '04' | '07' | '2019' | '2020';
  /** True when the value `buf[start, end)` decodes to (decodeValueBytes) certainly passes; false when it does not or it cannot tell. */
  acceptsBytes?: (buf: Buffer, start: number, end: number) => boolean;
  /**
   * The schema as written (`schema` is what ajv compiled, whose schemaPaths its errors name: with a
   * discriminated oneOf's `$ref` branches in place), with the files its `$ref`s reach put under
   * its `$defs` and those `$ref`s pointed there: one document that stands alone (what `export
   * asyncapi` writes). Absent when that is `schema` itself.
   */
  bundled?: object;
};

/** One message a validate step accepts: its payload check, and what `$message` / `$channel` become when it matches. */
export interface MessageContract {
  check: SchemaCheck;
  message: string | null;
  channel: string | null;
}

export type StepResult = Message | StepStop;

/** Whether a client may connect, and as whom. */
export type Admission =
  /** `until`: when the credential stops being valid (a JWT's `exp`, ms since the epoch); absent when it does not expire. */
  { ok: true; identity: Identity | undefined; until?: number } | { ok: false; problem: Problem };

/** Checks a client's request before it is accepted (a WebSocket handshake, an event-stream request). */
export interface Gate {
  admit(req: RequestMeta): Promise<Admission>;
}

/**
 * A client checked by several gates in turn (a route's auth steps, a forward path's auth): the
 * first refusal answers; admitted, it is as the last gate says, until the earliest `until`.
 */
export async function admitThrough(gates: readonly Gate[], req: RequestMeta): Promise<Admission> {
  let admission: Admission = { ok: true, identity: undefined };
  let until: number | undefined;
  for (const gate of gates) {
    admission = await gate.admit(req);
    if (!admission.ok) return admission;
    if (admission.until !== undefined) until = Math.min(until ?? Infinity, admission.until);
  }
  return until === undefined ? admission : { ...admission, until };
}

/**
 * `admitThrough` the gates `current()` returns, and again for as long as a reload replaced them
 * while the verdict was awaited (a handshake waiting on a key set while its path's auth was
 * changed): a client joins on the verdict of what guards its path when it joins, never of a
 * gate retired meanwhile, which the reload's recheck of the connected clients did not reach.
 */
export async function admitThroughCurrent(current: () => readonly Gate[], req: RequestMeta): Promise<Admission> {
  for (;;) {
    const gates = current();
    const admission = await admitThrough(gates, req);
    const now = current();
    if (now.length === gates.length && now.every((g, i) => g === gates[i])) return admission;
  }
}

/** What a running route hands a stateful step. */
export interface StepRouteContext {
  readonly route: string;
  /**
   * This step's state in this route, created on first use and kept across reloads for as long
   * as the route has a step with the same config (rate-limit buckets survive an unrelated edit).
   */
  state<T>(create: () => T): T;
  /** Logs a warning as the route's (`route` is added): what a step sees going wrong while messages still pass. */
  warn(fields: Record<string, unknown>, message: string): void;
}

/** A place a client presents a credential: a header or query parameter holding an API key or a JWT (a JWT's header is `authorization`, as `Bearer <token>`). */
export interface Credential {
  in: 'header' | 'query';
  name: string;
  token: 'apiKey' | 'JWT';
}

export interface CompiledStep {
  readonly kind: string;
  /** Brokers the step may send to (dead-letter targets): the route keeps a reference to them. */
  readonly brokers?: readonly string[];
  /** The step sends to the route's `deadletter`, which must therefore be set. */
  readonly needsRouteDeadletter?: boolean;
  /**
   * The message payloads the step accepts, as JSON Schemas (a validate step): `eventgate export
   * asyncapi` publishes them as the route's message contract. `message` is the AsyncAPI message id;
   * `named` the id the config's `validate: {message}` gave it (another of its ids, say its `name`).
   */
  readonly accepts?: readonly { schema: unknown; message: string | null; named?: string; draft?: '04' | '07' | '2019' | '2020' }[];
  /** What leaves the step is among `accepts`: it stops the others (`onInvalid: reject` or `deadletter`), where `tag` lets them on. */
  readonly stopsInvalid?: boolean;
  /**
   * The gateway variables the step gives a value for the steps after it and the route's targets
   * (`principal` after an auth step): read where no step of the route binds them, they are config
   * errors (src/plan/variable-reads.ts).
   */
  readonly binds?: readonly string[];
  /** The step never changes a message's value (it may drop, divert or tag it): validate steps after it still check what the client sent. */
  readonly keepsValue?: boolean;
  /**
   * The step gives the messages it makes an id (a cloudevent step's wrap): a consume route then
   * puts the consumed message's identity in its source on the context (MessageContext.source),
   * so every try, redelivery and replay of one message is named alike.
   */
  readonly namesMessages?: boolean;
  /**
   * Header names the step sets, spelled as the config does (a headers step's `set`): the steps
   * after it and the targets read them by that spelling (src/plan/header-reads.ts).
   */
  readonly setsHeaders?: readonly string[];
  run(msg: Message, ctx: MessageContext): StepResult | Promise<StepResult>;
  /**
   * True when a message whose value is decoded from `buf[start, end)` (decodeValueBytes), whatever
   * its key and headers, certainly passes run() unchanged; false when it may not or the step cannot
   * tell from the bytes. Lets a route judge a Kafka record without decoding it (validate steps).
   */
  acceptsBytes?(buf: Buffer, start: number, end: number): boolean;
  /**
   * Steps that check the client rather than the message (auth) check WebSocket handshakes here,
   * so a refused client never gets a connection.
   */
  admit?(req: RequestMeta): Promise<Admission>;
  /** The step needs the client request (`ctx.request`), so it only fits routes from a listener. */
  readonly needsClient?: boolean;
  /** Request headers the step reads credentials from (auth): never shown to anything observing the route (tap, logs, dead-letter copies). */
  readonly credentialHeaders?: readonly string[];
  /** Where a client may present the credential the step checks (auth), any one of them: `eventgate export asyncapi` writes them as the operation's security schemes. */
  readonly credentials?: readonly Credential[];
  /** Stateful steps: the step as one route runs it, holding state from `rt`. */
  forRoute?(rt: StepRouteContext): CompiledStep;
}

export interface StepKind<O = unknown> {
  kind: string;
  schema: JsonSchema;
  doc: KindDoc;
  compile(options: O, ctx: StepCompileContext): CompiledStep | undefined;
}

// ---- runtime environment -------------------------------------------------------------------

export interface RuntimeEnv {
  logger: Logger;
  /** Where components report what only they can see; absent in tests that build a component alone. */
  telemetry?: Telemetry;
}

/**
 * The counters a component reports into (src/telemetry/metrics.ts turns them into Prometheus series).
 * A component binds its handle once, when it is created (`env.telemetry?.broker(name, kind)`), and
 * every call on the handle is a plain increment: no label strings, no lookups on the message path.
 */
export interface Telemetry {
  listener(name: string): ListenerTelemetry;
  broker(name: string, kind: string): BrokerTelemetry;
}

export interface ListenerTelemetry {
  /** An HTTP response was sent with this status (`eventgate_http_requests_total{listener,status}`). */
  httpResponse(status: number): void;
  /** A WebSocket error frame was sent with this status (`eventgate_websocket_error_frames_total{listener,status}`). */
  errorFrame(status: number): void;
  /**
   * A kafka listener closed a client's connection (`eventgate_kafka_listener_closed_connections_total{listener,reason}`):
   * `bad_request` for a request it could not read, `upstream` for a broker it could not reach or read.
   */
  kafkaConnectionClosed(reason: KafkaCloseReason): void;
  /** A client ended a TLS handshake refusing the listener's certificate (`eventgate_listener_tls_certificate_refusals_total{listener}`). */
  tlsCertificateRefused(): void;
  /** A new connection was closed because the listener was at its `maxConnections` (`eventgate_listener_connections_dropped_total{listener}`). */
  connectionDropped(): void;
  /**
   * A client was disconnected for not reading: over its send bound, a websocket client (1013) or an
   * event stream (`eventgate_slow_clients_disconnected_total{listener}`).
   */
  slowClientDisconnected(): void;
  /**
   * A websocket handshake was accepted (`eventgate_websocket_connections_total{listener}`): beside
   * the clients gauge, its rate shows clients cut off and reconnecting, which the gauge hides.
   */
  clientConnected(): void;
  /** A websocket client that had not answered the last ping by the next was cut off (`eventgate_websocket_ping_timeouts_total{listener}`). */
  pingTimedOut(): void;
  /**
   * A websocket client sent a frame that fails the connection, closed with `code`
   * (`eventgate_websocket_frame_failures_total{listener,code}`): WS_FRAME_FAILURE_CODES.
   */
  frameFailure(code: WsFrameFailureCode): void;
  /**
   * A websocket connection closed, with the code ws reports (`eventgate_websocket_closes_total{listener,code}`):
   * the code of the client's close frame, 1005 for one without a code, 1006 for none.
   */
  clientClosed(code: number): void;
}

/**
 * The `code` label of a websocket close: RFC 6455's codes as themselves, the ones a client
 * chooses (3000-4999, a library's or an application's) as `3xxx` and `4xxx`, any other as
 * `other`, so a client cannot make a series per value it sends.
 */
export function wsCloseCodeLabel(code: number): string {
  if (code >= 1000 && code <= 1015 && code !== 1004) return String(code);
  if (code >= 3000 && code <= 3999) return '3xxx';
  if (code >= 4000 && code <= 4999) return '4xxx';
  return 'other';
}

/**
 * The close codes of a frame that fails a websocket connection (ws's frame parser): a protocol
 * error, a text frame not UTF-8, a message in too many fragments, a frame over maxPayloadBytes.
 */
export const WS_FRAME_FAILURE_CODES = [1002, 1007, 1008, 1009] as const;
export type WsFrameFailureCode = (typeof WS_FRAME_FAILURE_CODES)[number];

/** Why a kafka listener closed a client's connection: the `reason` label, a fixed set (the log line names the detail). */
export const KAFKA_CLOSE_REASONS = ['bad_request', 'upstream'] as const;
export type KafkaCloseReason = (typeof KAFKA_CLOSE_REASONS)[number];

/**
 * What a broker reports besides its consumer lag (which is read with `consumerLag()` at scrape
 * time). Becomes `eventgate_<kind>_producer_errors_total{broker}` and
 * `eventgate_<kind>_consumer_errors_total{broker,route}`.
 */
export interface BrokerTelemetry {
  /** A publish the broker could not complete (not acknowledged, timed out, refused). */
  producerError(): void;
  /**
   * A consumer-side failure: a fetch, commit or group error, a message its route's handler rejected,
   * or `count` messages a slow route lost (core NATS, a memory topic's retention). `route` when known.
   */
  consumerError(route?: string, count?: number): void;
  /** A route's consumer crashed and is being started again (`eventgate_<kind>_consumer_crashes_total{broker,route}`). */
  consumerCrash(route: string): void;
  /** A route's member joined its group again without a restart: a rebalance (`eventgate_kafka_consumer_rejoins_total{broker,route}`). */
  consumerRejoin(route: string): void;
}

/** How far one consumer (a route's group) is behind the end of one partition, in messages. */
export interface ConsumerLag {
  route: string;
  topic: string;
  partition: number;
  lag: number;
}

export interface Health {
  ready: boolean;
  detail?: string;
}

/** A broker's health detail before its first try to connect is answered. */
export const BROKER_CONNECTING = 'connecting';

// ---- brokers -------------------------------------------------------------------------------

export interface SubscribeSpec {
  topic: string;
  group: string;
  route: string;
  /**
   * Where partitions without a committed offset start, as the route itself says (`from.startFrom`):
   * the oldest retained record, or records produced from now on. It outranks a broker-wide setting
   * (a kafka broker's `consumer.startFrom`), which outranks `defaultStartFrom` (docs/scaling.md,
   * "Start positions").
   */
  startFrom?: StartFrom;
  /**
   * The route's default when neither it nor its broker's settings say: `latest` for a route whose
   * targets are all forwards (browsers want what happens now). Undefined: the broker's default.
   */
  defaultStartFrom?: StartFrom;
  /**
   * The group is this process's alone (a route whose targets are WebSocket forwards): it wants
   * live messages only, and brokers with sessions or queues of their own make them temporary.
   */
  perInstance?: boolean;
  /**
   * With `perInstance`: this instance's id, which `group` holds. A broker that makes a name of the
   * group in fewer characters than the id may hold (a NATS consumer name) keeps ids it would make
   * alike apart by it.
   */
  instanceId?: string;
  /**
   * Where a record batch or record the broker cannot decode goes (the route's dead-letter target);
   * resolves once it is stored. Without it the broker stops consuming that partition and says so in health().
   */
  undecodable?(raw: Undecodable): Promise<void>;
  /**
   * How many messages of one partition the handler may have in hand at once (default 1: one
   * after the other). Offsets are committed only up to the first message not yet handled.
   */
  inFlight?: number;
  /** With `inFlight` above 1: messages that share a key are handled one after the other, in order. */
  orderKeys?(msg: Message): readonly string[] | Promise<readonly string[]>;
  /** The QoS the route asks for (`from.qos`): only on kinds with `takesQos` (the config refuses it elsewhere); undefined, the broker's own choice. */
  qos?: Qos;
}

/** An MQTT quality of service: 0 at most once, 1 at least once, 2 exactly once. */
export type Qos = 0 | 1 | 2;

/** What one route target asks of its publishes beyond the broker's settings; built once per target, never per message. */
export interface PublishOptions {
  /** The target's `qos` (kinds with `takesQos` only); undefined, the broker's own choice. */
  readonly qos?: Qos;
  /**
   * On a consume route, to brokers with `takesMessageIds`: the same text each time the route
   * writes this consumed message to this target (its source's identity, the route, the target),
   * for a server that drops a second copy (JetStream's `Nats-Msg-Id`).
   */
  readonly messageId?: string;
  /**
   * With `messageId`: it replaces an id the message carries (a publisher's `Nats-Msg-Id`), which
   * otherwise wins. A dead-letter write's: the publisher's id names the message as published, and
   * a stream holding that message or a target's copy of it would drop the dead-letter copy as a
   * duplicate of it.
   */
  readonly replacesOwnId?: boolean;
  /**
   * A dead-letter write, to brokers with `publishInstruction`: what the message asks of the stream
   * it was meant for (JetStream's `Nats-Expected-*`, `Nats-Rollup`) is carried, not asked of the
   * dead-letter topic's, which would refuse the copy for the very reason it is dead-lettered.
   */
  readonly deadletter?: boolean;
}

export type StartFrom = 'earliest' | 'latest';

/**
 * What the broker received and could not decode: a batch of records (corrupt, an unknown codec,
 * decompressing past its bound), or one record of a batch (an impossible header count).
 */
export interface Undecodable {
  unit: 'batch' | 'record';
  topic: string;
  partition: number;
  /** First and last offset the batch covers; a record's offset, both. */
  offset: string;
  lastOffset: string;
  /** The batch's first timestamp as its header says, or the record's: the same each time it is fetched (its identity, sourceIdentity). */
  timestamp: number;
  reason: string;
  /** The batch, or the record as its batch holds it (its length first). */
  bytes: Buffer;
}

/** How a subscription stops (Subscription.stop). */
export interface StopOptions {
  /**
   * A reload removed the route for good: no route of the new config consumes the same topic in the
   * same group from this broker, so nothing will resume or take over what the server keeps for the
   * subscription. A kind whose server goes on giving a stopped member its turn of a group's
   * messages (an MQTT persistent session) leaves the group first, so the other members get them.
   * Absent at a shutdown and when a successor follows: the subscription keeps its place.
   */
  retire?: boolean;
  /**
   * Told by a subscription that goes on taking messages after stop() was called (an MQTT route a
   * reload retires, leaving its group: mqtt/subscription.ts' leaveGroup): called within stop(),
   * before its first wait, with what settles once it takes no more. The route gives slow webhook
   * tries their grace from then on, not from the stop's call: a try cut while the leave still ran
   * gave its message back to a session about to be ended. Tries that settle nothing for a whole
   * grace meanwhile are cut then (an endpoint that hangs would hold the leave try after try).
   */
  taking?: (until: Promise<unknown>) => void;
}

export interface Subscription {
  /** Stop taking new messages, wait for the one in hand, commit. */
  stop(options?: StopOptions): Promise<void>;
  /** Whether it consumes; when not, why (a consumer that crashed and restarts, a partition stopped). */
  health?(): Health;
  /**
   * A reload rebuilt the route and its successor asks the same of the same broker instance
   * (sameSubscription): the subscription goes on, with no unsubscribe, new session or gap, and
   * from now on hands its messages to `handler`, in order, and takes `spec`'s closures
   * (`undecodable`, `orderKeys`). Messages the old handler holds finish there (acknowledged as
   * always); one it gives back (it stopped with it in hand) goes to `handler` next, never back to
   * the server. Resolves once the old handler holds none. The subscription is then the successor's
   * (its stop() and health()). Kinds that cannot omit it: the route stops and subscribes again.
   */
  handOver?(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Promise<void>;
}

/**
 * Differences in what a route asks (named as AskedSubscription's fields, src/plan/subscription.ts)
 * that a kind's Subscription.handOver takes in place (BrokerKind.handOverTakes): `inFlight`
 * (webhook concurrency), `ordered` (`orderKeys` present), `deadletter` (`undecodable` present).
 */
export type HandOverChange = 'inFlight' | 'ordered' | 'deadletter';

/**
 * Whether a rebuilt route's subscription asks its broker what its predecessor's did, so it can take
 * that one over (Subscription.handOver): every field a broker reads, and the same closures present,
 * except the differences the kind's hand-over takes (`takes`, its BrokerKind.handOverTakes).
 */
export function sameSubscription(a: SubscribeSpec, b: SubscribeSpec, takes: readonly HandOverChange[] = []): boolean {
  return (
    a.topic === b.topic &&
    a.group === b.group &&
    a.route === b.route &&
    a.startFrom === b.startFrom &&
    a.defaultStartFrom === b.defaultStartFrom &&
    a.perInstance === b.perInstance &&
    (a.inFlight === b.inFlight || takes.includes('inFlight')) &&
    a.qos === b.qos &&
    ((a.undecodable === undefined) === (b.undecodable === undefined) || takes.includes('deadletter')) &&
    ((a.orderKeys === undefined) === (b.orderKeys === undefined) || takes.includes('ordered'))
  );
}

/**
 * A broker's part of the messaging spans' attributes, fixed for the broker's life (the keys they
 * come from are not reconfigured in place).
 */
export interface BrokerSpanFacts {
  /** `server.address` / `server.port`: the first server the config names (serverAddressOf). */
  server: { address: string; port: number | undefined } | undefined;
  /** RabbitMQ: the exchange every write goes through, its PRODUCER spans' `messaging.destination.name` (`""` for the default exchange). */
  sendDestination?: string;
  /** RabbitMQ: the exchange a consume route on `topic` reads through, when the config says one (undefined when its queue is bound on several). */
  consumeDestination?(topic: string): string | undefined;
}

export interface BrokerRuntime {
  readonly name: string;
  readonly kind: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** The gateway shuts down: subscriptions stopped from now on stop for good (no reload will take them over). */
  shuttingDown?(): void;
  /**
   * A reload was applied and what it replaced or removed has stopped: state the broker kept on
   * the server for routes no longer running may go (an MQTT route's persistent session). Never
   * called at shutdown, when every route stops and will come back.
   */
  reloaded?(): void;
  /**
   * For brokers whose messages live in the process (the memory broker): resolves once every
   * consumer group that has a member has handled what the broker holds for it. A shutdown waits
   * for it (within the drain timeout) before it stops those routes: what is left dies with the process.
   */
  settle?(): Promise<void>;
  /** Apply changed options in place; only called when the kind's canReconfigure() said yes. */
  reconfigure(options: unknown): void;
  /** Not ready with detail `connecting` (BROKER_CONNECTING) until its first try is answered: connected, refused or failed. */
  health(): Health;
  /**
   * Why this broker's options are refused for good, while they are, in words that say who refused
   * (`login refused: ...`): the server answered and refused, as RabbitMQ refuses a login with other
   * credentials (403) or an exchange declared with another type than it has (406), an MQTT server a
   * login or client id in its CONNACK, nats-server a login (`Authorization Violation`), or a TLS
   * handshake failed on a certificate either side refused. Not an outage, which the broker waits
   * out (no server, a timeout, a connection limit, a reset): a reload does not replace a connected
   * broker with one so refused (src/runtime/transition.ts).
   */
  refusal?(): string | undefined;
  /**
   * A reload builds this broker beside the running config (called before start()): until commit(),
   * it changes nothing on the server that would route what the running config publishes otherwise
   * (amqp: its queues are declared without their bindings; nats: a stream it updated is put back
   * when it stops uncommitted), so a reload rejected meanwhile leaves the running config's answers
   * as they were.
   */
  holdUntilCommit?(): void;
  /**
   * The reload that built this broker commits, before the routes move to it: what holdUntilCommit
   * held is done now. Never rejects: what fails is the broker's to retry, as at a connect.
   */
  commit?(): Promise<void>;
  /**
   * `true` once the broker has made its first connection (and can take publishes: for NATS, its
   * streams declared), else a promise that resolves when it does, pending for as long as it does
   * not. A consume route waits for it before it tries a message, so a broker still connecting at
   * startup (or replaced by a reload) is not an outage that dead-letters. The promise is dropped
   * (never settles, and the broker keeps no hold on the waiter) once `until` settles: the route's
   * stop, so a route a reload removes is not kept by a broker that never connects. Brokers that
   * are connected from the start (memory) omit it.
   */
  connectedOnce?(until: Promise<unknown>): true | Promise<void>;
  publish(topic: string, msg: Message, options?: PublishOptions): Promise<Delivery>;
  /** Whether publish() uses `PublishOptions.messageId` (a nats broker with `messageIds`): consume routes compute one only for such targets. */
  readonly takesMessageIds?: boolean;
  /** What the OpenTelemetry spans of this broker's writes and consume routes name (runtime/trace.ts); read once per route and target. */
  readonly spanFacts?: BrokerSpanFacts;
  /**
   * A consumed message's identity in this broker: the same each time the message is delivered
   * again (a redelivery, a replayed offset), never that of another message the broker held or will
   * hold (topics deleted and made again included); undefined when the broker has none for it (MQTT,
   * AMQP, core NATS). Asked by consume routes whose targets take message ids.
   */
  sourceIdentity?(msg: Message): string | undefined;
  /**
   * publish() for brokers whose append cannot wait (the memory broker): the delivery at once, or a
   * throw. Route targets use it when present, so a message to such a broker costs no promise.
   */
  publishNow?(topic: string, msg: Message): Delivery;
  /** The handler's promise settles when every target accepted the message; only then is it committed. */
  subscribe(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Subscription;
  /**
   * Consume route `route` is about to read `topic` (a new route, or one whose source a reload
   * changed): called before the listeners take the new config (runtime/transition.ts), for a broker
   * whose first read of a source depends on where the source ended then (nats: a JetStream
   * consumer made again for a new subject starts no later than that), so the instance's own
   * publishes after the swap come after it. Never rejects; a broker that cannot look now lets the
   * route look when it starts.
   */
  markSourceEnd?(route: string, topic: string): Promise<void>;
  /**
   * The messages the broker still retains on `topic` after the given offsets (per partition; a
   * partition not named is read from its oldest message), up to its current end. Brokers that
   * cannot read back omit it.
   */
  retained?(topic: string, after: ReadonlyMap<number, bigint>): Promise<Retained>;
  /**
   * What numbers the positions of the messages read from `topic`, besides the broker and the
   * topic: a JetStream subject's stream (an offset is its sequence; a subject moved to another
   * stream starts another count), a memory broker's life (its offsets begin again in each
   * process). Part of ReplaySource.sourceKey. Undefined: the topic keeps no positions (a core
   * NATS subject), and its route has no sourceKey.
   */
  positionScope?(topic: string): string | undefined;
  /** Why `topic` cannot be a topic of this broker, or undefined; asked of topics computed per message. */
  topicProblem?(topic: string): string | undefined;
  /**
   * Why this broker's protocol cannot carry the header `name: value`, or undefined; asked of every
   * header of a message before it is published. Such a message fails as invalid (400) instead of
   * being sent: the server would refuse it (or, MQTT, drop the connection), and no retry can help.
   */
  headerProblem?(name: string, value: string): string | undefined;
  /**
   * Whether header `name` is an instruction to this broker's server about the publish that carries
   * it rather than part of the message (JetStream's `Nats-Expected-*` and `Nats-Rollup`, in any
   * case). A consume route's writes here (its broker targets, its dead-letter copies) leave out
   * those it consumed, as they came: they asked something of the source's stream when the message
   * was stored there, not of a copy. One a step of the route set is sent. Brokers that have it read
   * `PublishOptions.deadletter`.
   */
  publishInstruction?(name: string): boolean;
  /**
   * The lag of every subscription this broker serves, as last known. Called on each /metrics
   * scrape, so it must answer from memory (no network round trip): a broker that learns lag
   * asynchronously keeps the latest value per partition and returns it here.
   */
  consumerLag?(): readonly ConsumerLag[];
  /**
   * When the credentials the broker logs in with stop being valid (ms since the epoch: a NATS
   * `credsFile` JWT's `exp`), or undefined when they do not expire. Read at each /metrics scrape.
   */
  credentialsExpireAt?(): number | undefined;
}

/** What a broker kind may use while its options are compiled: problems and files named in the config. */
export type BrokerCompileContext = Pick<StepCompileContext, 'report' | 'readFile'> & {
  /** A warning (valid, but most likely not meant): validate prints it and says ok, run and reload log it. */
  warn(relPath: readonly PathPart[], code: ErrorCode, message: string): void;
};

/** `O`: the options as written; `C`: as compiled (checked, files read), which is what the runtime gets. */
export interface BrokerKind<O = unknown, C = O> {
  kind: string;
  schema: JsonSchema;
  doc: KindDoc;
  /**
   * Checks what the schema cannot and reads the files the options name (they are watched, and a
   * change replaces the broker). Reports problems through ctx; without it the options pass as written.
   */
  compile?(options: O, ctx: BrokerCompileContext): C | undefined;
  /**
   * Topics live inside this gateway process (the memory broker): only its own routes can put
   * messages on them, so `validate` reports a route reading a topic no route writes to.
   */
  inProcess?: boolean;
  /**
   * Why `topic`, named as it is in the config, cannot be one this kind publishes to (`to`, a
   * route's or a validate step's `deadletter`) or consumes (`from.topic`), or undefined: validate
   * reports what the server would refuse at run time. Topics computed per message are asked of the
   * runtime's topicProblem(). `options`: the broker's options as written, when they are known.
   */
  topicProblem?(topic: string, use: 'publish' | 'consume', options?: O): string | undefined;
  /**
   * Why a consume route reading `topic` (as the config names it) cannot have `group` as its
   * consumer group, with these broker options, or undefined: a kind where the group names something
   * on the server (an amqp routing-key route's queue) says what the server would refuse.
   */
  groupProblem?(group: string, topic: string, options: O): string | undefined;
  /**
   * What a consumer group reading `topic` is on the server when it is one thing for a set of
   * topics (a JetStream stream's durable consumer, which reads one subject; an amqp routing-key
   * route's queue, bound for every pattern of its routes): its name, and what two routes of that
   * group reading different topics would do; the compiler refuses them. Undefined where each topic
   * gets a consumer of its own (kafka, mqtt, memory, core NATS).
   */
  sharedConsumer?(group: string, topic: string, options: O): { name: string; clash: string } | undefined;
  /**
   * Whether a route reading `topic` (as the config names it) reads it with no consumer group of
   * its own (an amqp queue of `queues`: the route consumes the queue itself): `eventgate plan`
   * then names no group for it.
   */
  readsWithoutGroup?(topic: string, options: O): boolean;
  /**
   * What a consumer group of this kind leaves on the server when a reload renames or removes its
   * route (an amqp routing-key route's queue, still bound): said on `eventgate plan`'s "consumer
   * group leaves" line. Undefined: nothing that needs an operator.
   */
  leftGroup?: string;
  /**
   * Where a new consumer group of a route reading `topic` starts, on a kind whose new group reads
   * what the server kept (a Kafka topic, a JetStream stream): `eventgate plan` says it of a renamed
   * route's new group, which does not go on from where the old one was. Undefined: a new group only
   * gets what is published from then on (mqtt, amqp, core nats), or the kind cannot tell.
   */
  newGroupStart?(topic: string, asked: { startFrom: StartFrom | undefined; defaultStartFrom: StartFrom | undefined }, options: O): StartFrom | undefined;
  /**
   * Differences between what a rebuilt route and its predecessor ask (sameSubscription) that this
   * kind's Subscription.handOver takes in place, the member kept (kafka reads its window and its
   * dead-letter closure per batch, memory resizes its window, amqp and nats JetStream start a window of the new size once the
   * old route's messages are done; mqtt and core nats read none of them). The runtime (RouteRuntime.takeOver) and `eventgate
   * plan` (subscriptionKey) both read it. Undefined: any difference means a new subscription.
   */
  handOverTakes?: readonly HandOverChange[];
  /**
   * Routes may choose a QoS of their own (`qos: 0|1|2` on `from`, a target, `deadletter`) for this
   * kind's topics (mqtt): it reaches the runtime as `SubscribeSpec.qos` and `PublishOptions.qos`.
   * On other kinds the key is a config error at its line.
   */
  takesQos?: boolean;
  /**
   * The topics (`$topic`) messages reach a route reading `from` (`from.topic` as the config names
   * it) with, for `eventgate test`, which refuses an input topic the route could never get. Without
   * it, or when it answers undefined, only `from` itself. `literal`: `from` is one of them (no
   * wildcard), so a test may leave its topic out. `what`: those topics in words (`a topic matching a/+`).
   * `unknown`: the config does not say which (an AMQP queue bound elsewhere), `matches` takes any,
   * so the feedback-loop warning does not follow it.
   */
  topicsRead?(from: string, options: C): { matches(topic: string): boolean; literal: boolean; what: string; unknown?: boolean } | undefined;
  /**
   * A consumed message's headers as this kind's consumer reads them off the wire, from the string
   * headers a test gives a consume route (`eventgate test`'s `input.headers`): a binary-mode
   * CloudEvent in the kind's binding names (AMQP `cloudEvents_*`, NATS `ce-*`, MQTT 5 user
   * properties named as attributes) becomes the `ce_*` headers the gateway carries. Without it,
   * the headers as given (Kafka's binding names are the gateway's own; a memory topic keeps what
   * was published).
   */
  consumedHeaders?(given: Readonly<Record<string, string>>, options: C): Record<string, string>;
  /**
   * Why messages this broker's consume routes read carry no headers at all (MQTT 3.1.1 has no
   * properties), or undefined: a test giving such a route `input.headers` tests what never
   * happens, a test-file error.
   */
  headerless?(options: C): string | undefined;
  /** BrokerRuntime.publishInstruction of this kind's brokers, for `eventgate test`'s recording of a consume route's writes. */
  publishInstruction?(name: string): boolean;
  /**
   * A warning, not an error, about a route reading `from` (`from.topic` as the config names it)
   * that the config allows but that most likely says something else than meant (an amqp routing key
   * one letter off a queue of `queues`), or undefined.
   */
  readWarning?(from: string, options: C): string | undefined;
  /**
   * A warning, not an error, about a route publishing to `topic` (a target's literal `topic`) that
   * the server takes but that most likely says something else than meant (an amqp routing key
   * written as a pattern, which RabbitMQ routes as the one key of that name), or undefined.
   */
  writeWarning?(topic: string, options: C): string | undefined;
  /**
   * Why this kind's messages carry no key, when they carry none (mqtt, amqp, nats): a target's
   * `key` would be computed and then dropped, so the config refuses it at its line instead.
   */
  keyless?: string;
  /**
   * The bindings this broker makes on its server for itself, apart from its routes' subscriptions
   * (amqp: the bindings of the queues it declares), each in words that tell one binding from
   * another as the server does (other arguments: another binding; the same in another order: the
   * same). `eventgate plan` lists those a reload makes, drops, and leaves on a server the broker
   * no longer uses (the running gateway serves them in its fingerprint, PlanFingerprint).
   */
  declaredBindings?(options: C): string[];
  /**
   * The server (and namespace: an AMQP vhost) those bindings are on, without credentials: a
   * broker moved to another server leaves its bindings on the old one, where nothing unbinds them.
   */
  bindingServer?(options: C): string;
  /** Whether a running broker can take `after` through reconfigure() instead of being replaced. */
  canReconfigure(before: C, after: C): boolean;
  /**
   * The options canReconfigure() lets change in place ('all': any; a dotted path names a nested
   * one, `producer.ackTimeoutMs`), for `eventgate plan --admin`,
   * which knows the running config by hashes only: it compares a hash of the other options.
   * Without it a changed broker counts as replaced there.
   */
  inPlaceOptions?: readonly string[] | 'all';
  create(name: string, options: C, env: RuntimeEnv): BrokerRuntime;
}

// ---- listeners -----------------------------------------------------------------------------

/** A route as a listener sees it: something that turns a message into an outcome. */
export interface RouteEntry {
  readonly name: string;
  /**
   * Route options a listener honours: `ack` on WebSocket publish routes; `structured`, each
   * message a client sends is a structured CloudEvent by agreement (`from.cloudevents: structured`).
   */
  readonly options: { ack: boolean; structured: boolean };
  /** The route has targets (`to`): a kafka listener sends its records there, with deliverRecord(), instead of upstream. */
  readonly delivers?: boolean;
  /**
   * The chain has a validate step: a producer's own `_asyncapi_eg_validation_error` header is
   * dropped on the way in (handle(), deliverRecord()), and by a kafka listener from the records of
   * a batch it rebuilds anyway.
   */
  readonly validates?: boolean;
  handle(msg: Message, ctx: MessageContext): Promise<Outcome>;
  /** handle(), answering synchronously when the chain and the targets did (e.g. a memory topic). */
  handleNow?(msg: Message, ctx: MessageContext): Outcome | Promise<Outcome>;
  /**
   * The chain for one record of many that arrived together (a Kafka produce request): no span of
   * its own, and synchronous when the chain is. The record counts as received; its outcome is
   * recorded (counters, tap, log) only by settleRecords(), once the listener knows what became of it.
   */
  checkRecord?(msg: Message, ctx: MessageContext): Outcome | Promise<Outcome>;
  /**
   * The chain's check of records from their values' bytes alone, for one batch of records; undefined
   * when the chain has none now (see RecordBytesCheck).
   */
  recordBytesCheck?(): RecordBytesCheck | undefined;
  /**
   * A record checkRecord() judged (`checked`), to the route's targets; the outcome says whether
   * every target took it. Called in record order, once no record of its request was refused.
   */
  deliverRecord?(msg: Message, checked: Outcome, ctx: MessageContext): Outcome | Promise<Outcome>;
  /** Whether anyone watches this route's records one by one (its tap): settleRecords() then needs every message. */
  observed?(): boolean;
  /** Records checkRecord() judged, with what became of the ones it let through. Called once per set. */
  settleRecords?(records: CheckedRecords, answer: RecordsAnswer): void;
  /** Runs the chain's client checks (auth steps) on a connecting client's handshake. */
  admit?(req: RequestMeta): Promise<Admission>;
  /**
   * An HTTP request judged from its head by the auth steps the chain begins with, before its body
   * is read: the refusal to answer, recorded as the route's (`head`: the message without its
   * value), or undefined once admitted; absent when the chain begins otherwise (a route without
   * it costs its requests nothing). Handle the message with `ctx.request === req` so the steps
   * verify nothing again.
   */
  readonly admitHead?: (req: RequestMeta, head: () => Message) => Promise<Problem | undefined>;
}

/**
 * What checkRecord() would answer for the records whose value `accepts` certainly passes the whole
 * chain unchanged (validate steps with schemas json-bytes.ts reads), judged from the value's bytes
 * `buf[start, end)` without decoding the record. A record it does not accept (it cannot be sure)
 * goes through checkRecord() as a message. The listener calls `accepts` per record and `received`
 * once per batch with how many it accepted (they count as received then, as checkRecord() counts
 * each of its records); their outcome is `passed`, recorded by settleRecords() as any other.
 */
export interface RecordBytesCheck {
  accepts(buf: Buffer, start: number, end: number): boolean;
  passed: Outcome;
  received(records: number): void;
}

/** Records of one partition of a produce request, as checkRecord() judged them, in order. */
export interface CheckedRecords {
  topic: string;
  partition: number;
  /**
   * Each record as the route received it, at its outcome's index; empty (or with holes) where every
   * record of a batch passed and nobody observed the route.
   */
  messages: readonly (Message | undefined)[];
  outcomes: readonly Outcome[];
  /** performance.now() when the first of them entered the route. */
  startedAt: number;
}

/** What became of the records a route let through ('delivered' outcomes); the others keep theirs. */
export type RecordsAnswer =
  /** The cluster acknowledged them: the first one's offset (undefined when acks=0 asked for no acknowledgement). */
  | { written: true; broker: string; baseOffset: bigint | undefined }
  /** Sent to the route's targets (deliverRecord): each outcome says what became of its record. */
  | { written: 'targets' }
  | { written: false; outcome: 'failed' | 'rejected'; problem: Problem };

/** The routes bound to a listener by the current plan; swapped whole on reload. */
export interface ListenerBindings {
  publish: Map<string, RouteEntry>;
  /** Per forward path, the routes feeding it that can read their source again from a position (event-stream resume), by name. */
  replay?: Map<string, Map<string, ReplaySource>>;
  /**
   * Forward paths that more than one route forwards to: positions of different sources cannot be
   * told apart by offsets alone, so their event ids name each route's positions.
   */
  sharedForward?: Set<string>;
  /** Paths that forward targets push to (WebSocket clients, an http listener's event streams). */
  forward: Set<string>;
  /** Forward paths whose targets declare `auth`: subscribers must pass it at the handshake. */
  forwardAuth?: Map<string, Gate>;
}

/**
 * Messages read back after a position, a read at a time. `gap` says why some after it are missing
 * as known before the first read: no longer retained (the messages then start at the oldest
 * retained), a position not of this source; the client is told, never left to assume it saw
 * everything.
 */
export interface Retained {
  /**
   * The messages in order, one read (a Kafka Fetch, a JetStream pull, a slice of a memory topic)
   * at a time: the next is read only when the consumer asks for it, so a replay holds one read's
   * messages, not every one it will send (a consumer that stops asking stops the reading; ending
   * the iteration early releases what the read holds).
   */
  chunks: AsyncIterable<RetainedChunk>;
  /**
   * Ends the read: what it holds on the broker (a JetStream replay's consumer, a Kafka replay's
   * place among those under way) is released, whether or not `chunks` was iterated: `return()` on
   * an async generator that never started does not run its `finally`, so a caller that stops
   * before the first chunk (its client gone) must call this. Once only in effect (the chunks'
   * own end, read to the last or left early, ends it too); never rejects.
   */
  close(): Promise<void>;
  gap?: string;
  /**
   * Partitions whose position in `after` is not one of this source's: past its end (the topic
   * began again) or a partition it does not have (an id of another topic). The stream forgets
   * the client's position there; kept, it held back every live event up to it, and stayed in
   * every id the client was sent.
   */
  forget?: readonly number[];
  /**
   * Per partition, the offset of the last message the read reaches (its end of the moment the read
   * began: a memory topic's end, a Kafka partition's last stable offset as read_committed lists it, the JetStream filter's last
   * sequence). A partition not named: unknown (or nothing there). Live events of the route at or
   * below it that arrive during the replay are the read's to send: the stream does not hold them
   * behind it (held, they counted against the client's send bound, and a client resuming while its
   * route caught up on a backlog was cut off).
   */
  ends?: ReadonlyMap<number, bigint>;
  /**
   * Every partition of the source as the read began (a memory topic's and a JetStream stream's:
   * 0); undefined: not known. Once the first live event of each was checked for a gap after a
   * resume, the stream stops checking that client's events (sse.ts gapCheck()).
   */
  partitions?: readonly number[];
}

/** One read of a Retained. `gap`: what this read found missing (records deleted meanwhile, a batch the gateway cannot decode), before its messages. */
export interface RetainedChunk {
  messages: readonly Message[];
  gap?: string;
}

/** Retained.close of a read that holds nothing on the broker (messages in hand, or none). */
export function holdsNothing(): Promise<void> {
  return Promise.resolve();
}

/** A Retained's chunks from messages already in hand (one chunk; none when there are none). */
export async function* chunksOf(messages: readonly Message[]): AsyncGenerator<RetainedChunk> {
  if (messages.length > 0) yield { messages };
}

/**
 * Whether a client's positions name none of the source's partitions: an id of another topic (a
 * reload changed the route's topic, or the client kept an id of another stream) or of this one
 * before it was made again with fewer partitions. Such a client is read from the oldest retained
 * message, as one without an id, and told so (FOREIGN_POSITIONS): silently, it got up to
 * MAX_REPLAY records it could not tell from a resume.
 */
export function namesNoPartitionOf(after: ReadonlyMap<number, bigint>, has: (partition: number) => boolean): boolean {
  if (after.size === 0) return false;
  for (const p of after.keys()) if (has(p)) return false;
  return true;
}

/** The resume notice (Retained.gap) for namesNoPartitionOf. */
export const FOREIGN_POSITIONS = 'Last-Event-ID names no partition of this topic (an id of another topic, or of this one before it was made again); resuming from the oldest retained event';

/** The resume notice (Retained.gap) of a source that keeps nothing a reconnecting event-stream client could be given again. */
export function noReadBack(source: string): string {
  return `${source} keeps no messages to read back: what it delivered while the client was away is not replayed`;
}

/**
 * A forward route's source read again after a position (per partition, the last offset the client
 * saw), through the route's chain: what a reconnecting event-stream client missed.
 */
export interface ReplaySource {
  /**
   * What the positions of its messages are positions in: the broker (kind and name), the topic,
   * and what else numbers them (BrokerRuntime.positionScope); undefined when they have none.
   * Event-stream ids carry a tag of it, so that an id of another source (a reload changed the
   * route's topic) is not read as positions of this one.
   */
  readonly sourceKey: string | undefined;
  replay(after: ReadonlyMap<number, bigint>): Promise<Retained>;
}

export interface Target {
  /** The delivery, synchronously when it is already done (an append to a memory topic). */
  send(msg: Message, ctx: MessageContext): Delivery | Promise<Delivery>;
}

/**
 * Why a listener stops, as its clients read it (close reasons, 503 details): a shutdown, or a
 * reload that replaces it (a new socket: port, host or TLS changed) or removes it. "gateway
 * shutting down" would tell the clients of a reloaded listener to expect nothing more.
 */
export const STOP_REASON = { shutdown: 'gateway shutting down', replace: 'listener replaced by a reload', remove: 'listener removed by a reload' } as const;

export interface ListenerRuntime {
  readonly name: string;
  readonly kind: string;
  /** Bind the socket. Rejects (e.g. EADDRINUSE) without side effects on other components. */
  start(): Promise<void>;
  /**
   * Stop accepting, let in-flight work finish up to drainMs, then close the clients; `reason`
   * is the close reason clients read (default: the gateway is shutting down).
   */
  stop(opts: { drainMs: number; reason?: string }): Promise<void>;
  /**
   * Shutdown's first phase, for listeners that keep clients connected (websocket clients, http
   * event streams): stop accepting and let in-flight work finish up to drainMs, but keep the
   * clients, so forwards still reach them until stop() closes them once consume routes have
   * committed and brokers flushed.
   */
  quiesce?(opts: { drainMs: number; reason?: string }): Promise<void>;
  /** Apply options that do not need a new socket. */
  reconfigure(options: unknown): void;
  bind(bindings: ListenerBindings): void;
  address(): { host: string; port: number } | undefined;
  health(): Health;
  status(): Record<string, unknown>;
  /** Clients currently connected, for listeners that keep connections open (`eventgate_websocket_clients`, `eventgate_event_stream_clients`). */
  connections?(): number;
  /** `http` or `https`: the scheme of the requests an http listener serves (a publish span's `url.scheme`). */
  readonly urlScheme?: string;
  /** Forward target for `to: {listener, path}`; only listeners that push to clients have one. */
  forwardTarget?(path: string, options: { format: 'value' | 'envelope' | 'cloudevent'; route: string; sourceKey: string | undefined }): Target;
}

export interface ListenerCompileContext {
  /** Report a problem at `relPath` below this listener's options. */
  report(relPath: readonly PathPart[], code: ErrorCode, message: string): void;
  /** Read a file named relative to the config file; it is watched, and a change reconfigures the listener. */
  readFile(file: string, relPath: readonly PathPart[]): string | undefined;
  /**
   * A broker of the config as compiled (kind and options), for a listener that takes settings from
   * it (a kafka listener's `upstream`); a change to it then reconfigures the listener. Reports an
   * unknown name at `relPath`. Optional so contexts built by hand need not provide it.
   */
  broker?(name: string, relPath: readonly PathPart[]): { kind: string; options: Record<string, unknown> } | undefined;
}

/** `O`: the options as written; `C`: as compiled (files read), which is what the runtime gets. */
export interface ListenerKind<O = unknown, C = O> {
  kind: string;
  schema: JsonSchema;
  doc: KindDoc;
  /**
   * Resolves at load what the options reference (TLS certificate files), reporting problems as
   * diagnostics; the result is what create() and reconfigure() receive. Without it they get the
   * options as written.
   */
  compile?(options: O, ctx: ListenerCompileContext): C | undefined;
  /** Whether `to: {listener: <this kind>, path}` targets are allowed. */
  acceptsForward: boolean;
  /** Whether `from: {listener: <this kind>, path}` routes are allowed. */
  acceptsPublish: boolean;
  /** Whether its routes may set `ack: true`: its clients get no answer per message without it (websocket). */
  acksFrames?: boolean;
  /**
   * Whether its routes may set `from.cloudevents: structured`: nothing in what its clients send
   * says it is a CloudEvent, so only an agreement can (websocket frames; an http request says so
   * by its content type).
   */
  eventsByAgreement?: boolean;
  /** How a message of a kind without eventsByAgreement says itself that it is a CloudEvent: the reason a route's `from.cloudevents` is refused. */
  eventsTold?: string;
  /**
   * Whether a client publishing on a route's path stays connected to it (a WebSocket), so a reload
   * that removes the path cuts it off; without it, publishing is a request that ends with its
   * answer (HTTP), and only forward targets' paths (event streams) hold clients.
   */
  publishersStay?: boolean;
  /** Options whose change needs a new socket; others are applied in place by reconfigure(). */
  socketOptions: readonly string[];
  /**
   * The route paths of one listener, to find two that would claim the same requests
   * (`/rooms/:room` and `/rooms/:id` do, for a router with parameters). Without it, paths
   * conflict when equal.
   */
  pathClaims?(): PathClaims;
  /**
   * `topic`: routes from this listener name a `topic` instead of a `path` (kafka: the route governs
   * what clients produce to that topic; with `to`, its records go to the route's targets instead of
   * upstream). Default `path`.
   */
  routesBy?: 'path' | 'topic';
  /** Why a step cannot run on routes from this kind of listener, or undefined (checked at load); `to`: the route has targets. */
  stepProblem?(step: CompiledStep, route: { to: boolean }): string | undefined;
  /** Why a route path cannot be used on this kind of listener (bad syntax), or undefined. */
  checkPath?(path: string): string | undefined;
  /** The names of a route path's parameters, in order (`/rooms/:room` → room), for kinds whose paths have them. */
  pathParameters?(path: string): readonly string[];
  /**
   * A forward path's parameters are filled from the message's own path parameters of the same
   * names (`$path`, of a route from an http or websocket path): `/rooms/:room` reaches the clients
   * of the message's room only. Validate warns of a name the route's path does not have.
   */
  forwardFillsParameters?: boolean;
  create(name: string, options: C, env: RuntimeEnv): ListenerRuntime;
}

/** The route paths of one listener, claimed in the order of the routes. */
export interface PathClaims {
  /** Claims `path`, or returns the path claimed earlier that matches the same requests (then `path` is not claimed). */
  claim(path: string): string | undefined;
}
