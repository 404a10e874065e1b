import type { ConsumerConfig, ConsumerInfo, JetStreamManager, JsMsg, Msg, MsgHdrs, NatsConnection, StreamConfig } from 'nats';
import type { Logger } from '../../../log.js';
import { offsetText, payloadMessage, sentHeaders, valuePayload, type Delivery, type Message } from '../../../core/message.js';
import {
  noReadBack,
  type BrokerRuntime,
  type BrokerTelemetry,
  type ConsumerLag,
  type Health,
  type PublishOptions,
  type Retained,
  type RuntimeEnv,
  type SubscribeSpec,
  type Subscription,
} from '../../contracts.js';
import { AckDeadlines, handOver, leavesOnStop, NotConnected, Refused, Relay, singleValued } from '../acknowledgement.js';
import { problem } from '../../../core/errors.js';
import type { NatsSettings, NatsStream } from '../nats.js';
import { JetStreamPublisher, socketOf } from './publisher.js';
import { coalesceWrites } from '../coalesce.js';
import { FirstConnection } from '../first-connection.js';
import { reconnectBackoff } from '../../../core/backoff.js';
import { RateLimitedWarning } from '../../../core/rate-limited-warning.js';
import { isTlsFailure, notConnectedDetail } from '../not-connected.js';
import { publishSubjectProblem, subjectCovers } from './subjects.js';
import { MSG_ID, msgIdChange, type MsgIdChange } from './msg-id.js';
import { MissingTopology, notFoundOn } from '../missing-topology.js';
import { readStream } from './replay.js';

/**
 * A message over the server's `max_payload` (1 MiB by default), which the client refuses before it
 * sends it, as what it is: a refusal (413), which no retry can change. Taken for an outage (503), a
 * consume route retried it for ever (a large message from another broker), and HTTP clients were
 * told to try again.
 */
function tooLargeFor(nc: NatsConnection, err: Error, bytes: number): Refused | undefined {
  if ((err as Error & { code?: string }).code !== 'MAX_PAYLOAD_EXCEEDED') return undefined;
  const max = nc.info?.max_payload;
  return new Refused(problem('EG_PAYLOAD_TOO_LARGE', `the message (${bytes} bytes, headers besides) is larger than the NATS server takes${max === undefined ? '' : ` (max_payload ${max} bytes)`}`));
}

/** The client library, loaded when the first nats broker starts (commands that start none, such as validate, never load it). */
type NatsLib = typeof import('nats');
let lib!: NatsLib;

/** What a core message waiting for its route costs beyond its payload (measured: ~300 bytes), counted against `corePendingBytes`. */
const HELD_MESSAGE_BYTES = 512;

/** The stream whose subjects hold every subject of `filter`, if any: messages there are JetStream's. */
function streamFor(settings: NatsSettings, filter: string): [string, NatsStream] | undefined {
  return Object.entries(settings.streams).find(([, s]) => s.subjects.some((p) => subjectCovers(p, filter)));
}

/** Whether nats.js reports the server turning the login down (`Authorization Violation`, an expired or revoked user): on a first connect an error, after a loss its code. */
function isLoginRefusal(err: unknown): boolean {
  const code = typeof err === 'string' ? err : (err as { code?: unknown })?.code;
  return code === lib.ErrorCode.AuthorizationViolation || code === lib.ErrorCode.AuthenticationExpired || /authorization violation/i.test(String((err as Error)?.message ?? ''));
}

/** A publish the server refused for the user's permissions (it dropped the message). */
function permissionRefusal(subject: string): Error {
  return new Error(`the NATS server refused it: Permissions Violation for Publish to "${subject}" (the broker's user may not publish to this subject)`);
}

/** JetStream consumer names: no `.`, `*`, `>`, whitespace or path separators. */
const consumerName = (group: string) => group.replace(/[^A-Za-z0-9_-]/g, '_');
/** A JetStream consumer's unacknowledged messages, in pulls (`prefetch`): room for windows lost with connections, and for other instances sharing it. */
const MAX_ACK_PENDING_WINDOWS = 10;

/** The message's headers as NATS headers; with `Nats-Msg-Id` changed as `msgId` says. */
function toHeaders(h: Readonly<Record<string, string>>, msgId?: MsgIdChange): MsgHdrs | undefined {
  const names = Object.keys(h);
  if (names.length === 0 && msgId?.id === undefined) return undefined;
  const out = lib.headers();
  for (const n of names) if (n !== msgId?.replaces) out.set(n, h[n]!);
  if (msgId?.id !== undefined) out.set(MSG_ID, msgId.id);
  return out;
}

/**
 * Header names the gateway reads by their lower-case spelling (core/message.ts, the CloudEvents
 * codec). Go's NATS client writes every header name as HTTP does (`Content-Type`), and its readers
 * match names regardless of case, so these are taken in any case and named in lower case.
 */
const CASE_FREE_NAMES = new Map(['content-type', 'content-encoding'].map((n) => [n, n]));
const CASE_FREE_LENGTHS = new Set([...CASE_FREE_NAMES.keys()].map((n) => n.length));

/**
 * A consumed message's headers. The client decodes them when first asked and throws on a name
 * that is not printable ASCII (`Ü: 1`, `a b: 1`), which nats-server passes on from any
 * publisher: thrown in a subscription's callback, that closed the connection's reader, and every
 * route on the broker stalled until the connection was dropped as stale. Such a block is read
 * here instead, its names as they came (a target that cannot carry one refuses the message).
 */
function consumedHeaders(m: Msg | JsMsg): Record<string, string> {
  let h: MsgHdrs | undefined;
  try {
    h = m.headers;
  } catch {
    // The client's message (a JetStream message wraps one) keeps the bytes it read and where the header block ends.
    const inner = (m as { msg?: Msg }).msg ?? m;
    const raw = inner as unknown as { _rdata?: Uint8Array; _msg?: { hdr?: number } };
    const end = raw._msg?.hdr ?? -1;
    if (raw._rdata === undefined || end < 0) return {};
    return caseFree(singleValued(looseHeaders(Buffer.from(raw._rdata.subarray(0, end)).toString('utf8'))));
  }
  if (!h) return {};
  return caseFree(singleValued(h.keys().map((k) => [k, h.values(k)] as [string, string[]])));
}

/** A header block's `name: value` lines, as the client reads them but taking any name. */
function looseHeaders(block: string): [string, string[]][] {
  const out = new Map<string, string[]>();
  // The first line is `NATS/1.0` and a status, if any.
  for (const line of block.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (colon < 1) continue;
    const name = line.slice(0, colon);
    const values = out.get(name) ?? [];
    values.push(line.slice(colon + 1).trim());
    out.set(name, values);
  }
  return [...out];
}

function caseFree(out: Record<string, string>): Record<string, string> {
  for (const name of Object.keys(out)) {
    // Most names are neither: no lower-case copy made for them (this runs for every consumed message).
    if (!CASE_FREE_LENGTHS.has(name.length)) continue;
    const lower = CASE_FREE_NAMES.get(name.toLowerCase());
    if (lower === undefined || lower === name) continue;
    // A lower-case one the publisher also sent wins.
    if (!Object.hasOwn(out, lower)) out[lower] = out[name]!;
    delete out[name];
  }
  return out;
}

/**
 * A NATS server through the `nats` client. Subjects inside a stream this broker lists under
 * `streams` are JetStream's: a publish answers 2xx only once the stream stored it (its PubAck),
 * and consume routes read through a durable consumer, acknowledging each message after every
 * target accepted it (at least once). Other subjects are core NATS: a publish is confirmed as
 * received by the server (a flush round trip) but not stored, and consume routes get what is
 * published while they are subscribed (at most once). The client reconnects by itself.
 */
export class NatsBroker implements BrokerRuntime {
  readonly kind = 'nats';
  private readonly log: Logger;
  private readonly telemetry: BrokerTelemetry | undefined;
  private nc: NatsConnection | undefined;
  private js: JetStreamPublisher | undefined;
  /** One flush round trip for the core publishes of an event-loop turn: its PONG proves the server read all of them. */
  private turnFlush: Promise<ReadonlySet<string>> | undefined;
  /**
   * The subjects the server refused a publish to (`-ERR 'Permissions Violation for Publish to
   * "S"'`), per flush round trip still open: the server drops such a message and says so before
   * the round trip's PONG, so a core publish to a refused subject fails instead of answering 2xx.
   */
  private readonly openFlushes = new Set<Set<string>>();
  /** The stream that stores each subject published to (null: core NATS), remembered per subject. */
  private readonly streamSubjects = new Map<string, string | null>();
  private jsm: JetStreamManager | undefined;
  /**
   * Each stream of `streams`, missing (declare: false) or not declared (the server refused it)
   * until the server has it: publishes to its subjects answer 503 naming it, and the routes that
   * read it wait, while the broker, its core subjects and its other streams go on.
   */
  private readonly streams = new Map<string, MissingTopology>();
  private recheck: NodeJS.Timeout | undefined;
  /** A recheck of missing streams is scheduled or running. */
  private rechecking = false;
  private readonly recheckBackoff = reconnectBackoff();
  /** Set once the streams are declared: from then on a route subscribing attaches at once, connected or not. */
  private declared = false;
  private state: Health = { ready: false, detail: 'connecting' };
  private readonly firstConnection = new FirstConnection();
  private stopped = false;
  private readonly subscriptions = new Set<NatsSubscription>();

  /** Publishes waiting for the server's acknowledgement, each until `ackTimeoutMs`. */
  private readonly deadlines: AckDeadlines;
  /** Consume routes send a consumed message's id with their JetStream publishes (`messageIds`). */
  readonly takesMessageIds: boolean;
  /**
   * When each stream was created, as the server said when the broker declared or checked it: in a
   * consumed message's identity, since a stream deleted and made again numbers its messages from 1 again.
   */
  private readonly streamCreated = new Map<string, string>();

  constructor(
    readonly name: string,
    readonly settings: NatsSettings,
    env: RuntimeEnv,
  ) {
    this.deadlines = new AckDeadlines(settings.ackTimeoutMs, name);
    this.takesMessageIds = settings.messageIds;
    this.log = env.logger.child({ broker: name });
    this.telemetry = env.telemetry?.broker(name, 'nats');
    for (const stream of Object.keys(settings.streams)) this.streams.set(stream, new MissingTopology(this.log, `nats stream '${stream}'`));
  }

  /** Never fails: an unreachable server makes the broker not ready, and the client keeps trying. */
  async start(): Promise<void> {
    lib ??= await import('nats');
    void this.open();
  }

  private async open(): Promise<void> {
    const s = this.settings;
    const backoff = reconnectBackoff();
    let nc: NatsConnection;
    for (;;) {
      try {
        nc = await this.connect();
        break;
      } catch (err) {
        if (this.stopped) return;
        // nats.js gives up on a first connect the server refused (a wrong password): try again, as after a loss.
        const wait = backoff.delay();
        this.state = { ready: false, detail: notConnectedDetail((err as Error).message, isLoginRefusal(err) ? 'login' : isTlsFailure(err) ? 'tls' : undefined) };
        this.log.warn({ err: (err as Error).message, retryInMs: wait }, 'nats connect failed; retrying');
        await sleep(wait);
        if (this.stopped) return;
      }
    }
    if (this.stopped) {
      await nc.close();
      return;
    }
    this.nc = nc;
    void this.watch(nc);
    // A timed-out publish's PubAck is awaited for as long as a lost connection takes to show (maxPingOut 2).
    this.js = new JetStreamPublisher(nc, lib.createInbox, this.name, s.ackTimeoutMs, s.ackTimeoutMs + 3 * s.pingIntervalMs);
    const wait = this.recheckBackoff.delay();
    await this.declareStreams(nc, wait);
    if (this.stopped) return;
    this.state = { ready: true };
    this.declared = true;
    if (this.streamsDeclared()) this.firstConnection.connected();
    this.log.info('nats connected');
    for (const sub of this.subscriptions) sub.attach(nc);
    this.recheckLater(nc, wait);
  }

  private connect(): Promise<NatsConnection> {
    const s = this.settings;
    return lib.connect({
      servers: s.servers,
      name: `eventgate ${this.name}`,
      user: s.user,
      pass: s.password,
      token: s.token,
      tls: s.tls ?? undefined,
      timeout: s.connectTimeoutMs,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: s.reconnectTimeWaitMs,
      // nats.js pings every 2 minutes by default: a frozen server then kept /readyz at 200 for 4 to 6 minutes while every publish timed out.
      pingInterval: s.pingIntervalMs,
      maxPingOut: 2,
      // A first connect that fails is told and tried again by open(): nats.js would retry it in
      // silence, a wrong password included, with /readyz saying only "connecting".
      waitOnFirstConnect: false,
      // nats.js closes the connection for good after two refused logins in a row on reconnect:
      // the broker then stayed down after the server's credentials were put right.
      ignoreAuthErrorAbort: true,
    });
  }

  /**
   * Declares the streams not known to be there yet (or checks those that must exist), each on its
   * own: one missing or refused is that stream's problem (streamProblem()), not the broker's.
   */
  private async declareStreams(nc: NatsConnection, retryInMs: number): Promise<void> {
    const waiting = [...this.streams].filter(([, st]) => st.detail !== undefined || !this.declared);
    if (waiting.length === 0) return;
    try {
      this.jsm ??= await nc.jetstreamManager({ timeout: this.settings.ackTimeoutMs });
    } catch (err) {
      for (const [name, st] of waiting) st.missing(`stream '${name}' not ready on broker '${this.name}': JetStream did not answer: ${(err as Error).message}`, retryInMs);
      return;
    }
    for (const [name, st] of waiting) {
      if (this.stopped) return;
      try {
        this.streamCreated.set(name, await declareStream(this.jsm, name, this.settings.streams[name]!));
        st.found();
        for (const sub of this.subscriptions) sub.streamFound(name);
      } catch (err) {
        const why = (err as Error).message;
        st.missing(/stream not found/i.test(why) ? notFoundOn('stream', name, this.name, why) : `stream '${name}' not ready on broker '${this.name}': ${why}`, retryInMs);
      }
    }
  }

  /**
   * Whether every stream the broker declares is there. Routes sending to the broker wait for its
   * first connection (connectedOnce) until then: JetStream still starting, or a declare refused,
   * is not a stream that must exist and does not (whose publishes are 503 and dead-lettered).
   */
  private streamsDeclared(): boolean {
    for (const [name, st] of this.streams) if (st.detail !== undefined && this.settings.streams[name]!.declare) return false;
    return true;
  }

  /** While a stream is missing, tries again with backoff (the connection's own reconnects are the client's); one chain of tries at a time. */
  private recheckLater(nc: NatsConnection, wait: number): void {
    this.rechecking = !this.stopped && [...this.streams.values()].some((st) => st.detail !== undefined);
    if (!this.rechecking) {
      this.recheckBackoff.reset();
      return;
    }
    this.recheck = setTimeout(() => {
      const next = this.recheckBackoff.delay();
      void this.declareStreams(nc, next).then(() => {
        if (this.streamsDeclared()) this.firstConnection.connected();
        this.recheckLater(nc, next);
      });
    }, wait);
    this.recheck.unref();
  }

  /**
   * A route found stream `name` gone (deleted since the broker declared or checked it): the broker
   * checks it again with backoff too, declaring it anew when it is one it declares, and refuses
   * publishes to it meanwhile.
   */
  streamGone(name: string, detail: string): void {
    const st = this.streams.get(name);
    if (!st || st.detail !== undefined || !this.nc) return;
    const wait = this.recheckBackoff.delay();
    st.missing(detail, wait);
    if (!this.rechecking) this.recheckLater(this.nc, wait);
  }

  /** Stream `name` as a route found it when it started reading it: when it was created (sourceIdentity). */
  streamSeen(name: string, created: string): void {
    this.streamCreated.set(name, created);
  }

  /** The JetStream manager, once the server answered for it. */
  streamManager(): JetStreamManager | undefined {
    return this.jsm;
  }

  /** Why stream `name` cannot be used now (missing, or the server refused to declare it), or undefined. */
  streamProblem(name: string): string | undefined {
    return this.streams.get(name)?.detail;
  }

  /** Logs a loss, a reconnect and each new error once, not once per attempt (a refused login is tried every reconnectTimeWaitMs). */
  private async watch(nc: NatsConnection): Promise<void> {
    let lastError: string | undefined;
    for await (const s of nc.status()) {
      if (s.type === lib.Events.Disconnect) {
        if (this.state.ready) {
          this.state = { ready: false, detail: `unreachable: disconnected from ${s.data}` };
          this.log.warn({ server: s.data }, 'nats connection lost; reconnecting');
        }
        this.js?.failAll(this.state.detail!);
      } else if (s.type === lib.Events.Reconnect) {
        if (!this.state.ready) this.log.info({ server: s.data }, 'nats reconnected');
        this.state = { ready: true };
        lastError = undefined;
      } else if (s.type === lib.Events.Error) {
        const err = String(s.data);
        const denied = (s as { permissionContext?: { operation: string; subject: string } }).permissionContext;
        if (denied?.operation === 'publish') {
          for (const refused of this.openFlushes) refused.add(denied.subject);
          this.js?.refused(denied.subject, permissionRefusal(denied.subject));
        }
        if (!this.state.ready) this.state = { ready: false, detail: notConnectedDetail(err, isLoginRefusal(s.data) ? 'login' : undefined) };
        if (err !== lastError) this.log.warn({ err }, 'nats error');
        lastError = err;
      }
    }
    if (this.stopped) return;
    // Not expected (reconnects are unbounded), but never silent: nothing reconnects a closed connection.
    const err = await nc.closed();
    this.state = { ready: false, detail: `closed: ${err?.message ?? 'by the client'}` };
    this.js?.failAll(this.state.detail!);
    this.log.error({ err: err?.message }, 'nats connection closed for good; reload the broker or restart the gateway');
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.recheck);
    await Promise.allSettled([...this.subscriptions].map((s) => s.stop()));
    // drain() flushes what was published and lets subscriptions finish.
    await Promise.race([this.nc?.drain().catch(() => undefined), new Promise((r) => setTimeout(r, this.settings.ackTimeoutMs).unref())]);
  }

  reconfigure(): void {}

  /**
   * Ready while connected. A missing stream leaves the broker ready (its core subjects and other
   * streams work; the routes reading that stream say they are not): it is named in the detail, for
   * /admin/status.
   */
  health(): Health {
    if (!this.state.ready) return this.state;
    const missing = [...this.streams.values()].flatMap((st) => st.detail ?? []);
    return missing.length === 0 ? this.state : { ready: true, detail: missing.join('; ') };
  }

  /** The first time the server was connected and the streams declared (publishes to them can be stored). */
  connectedOnce(until: Promise<unknown>): true | Promise<void> {
    return this.firstConnection.when(until);
  }

  topicProblem(topic: string): string | undefined {
    return publishSubjectProblem(topic);
  }

  headerProblem(name: string, value: string): string | undefined {
    // The NATS header block is MIME-style text: names of printable ASCII without ':', values on one line.
    if (!/^[!-9;-~]+$/.test(name)) return 'a NATS header name is printable ASCII (no space, no colon), and not empty';
    if (/[\r\n]/.test(value)) return 'a NATS header value cannot hold CR or LF';
    return undefined;
  }

  publish(topic: string, msg: Message, options?: PublishOptions): Promise<Delivery> {
    const nc = this.nc;
    if (this.stopped) return Promise.reject(new Error(`broker '${this.name}' is stopped`));
    if (!nc || !this.state.ready || nc.isClosed()) {
      this.telemetry?.producerError();
      return Promise.reject(new NotConnected(this.name, this.state.detail ?? 'connecting'));
    }
    const stream = this.streamOf(topic);
    if (stream !== null) {
      const missing = this.streams.get(stream)!.detail;
      if (missing !== undefined) {
        this.telemetry?.producerError();
        return Promise.reject(new Error(missing));
      }
    }
    const data = Buffer.from(valuePayload(msg));
    // Less a content-encoding that no longer describes the payload (a step changed it).
    const sent = sentHeaders(msg);
    if (stream !== null) {
      // A consumed message's id (on a consume route), for the stream to drop a copy written again.
      const headers = toHeaders(sent, msgIdChange(sent, options?.messageId, topic, options?.replacesOwnId));
      return this.js!.publish(topic, data, headers).then(
        (seq): Delivery => ({ broker: this.name, topic, partition: 0, offset: offsetText(seq) }),
        (err: Error) => {
          this.telemetry?.producerError();
          throw tooLargeFor(nc, err, data.length) ?? err;
        },
      );
    }
    // Core NATS: a flush round trip proves the server read it; nothing stores it.
    coalesceWrites(socketOf(nc));
    try {
      nc.publish(topic, data, { headers: toHeaders(sent) });
    } catch (err) {
      this.telemetry?.producerError();
      return Promise.reject(tooLargeFor(nc, err as Error, data.length) ?? err);
    }
    const acked = this.flushAfter(nc).then((refused): Delivery => {
      if (refused.has(topic)) throw permissionRefusal(topic);
      return { broker: this.name, topic, partition: 0, offset: '-1' };
    });
    return this.deadlines.within(acked).catch((err: Error) => {
      this.telemetry?.producerError();
      throw err;
    });
  }

  /**
   * A JetStream message's identity: its stream, the stream's creation time and its sequence (a
   * core message has none: nothing delivers it again).
   */
  sourceIdentity(msg: Message): string | undefined {
    if (msg.offset === null || msg.topic === null) return undefined;
    const stream = this.streamOf(msg.topic);
    const created = stream === null ? undefined : this.streamCreated.get(stream);
    return created === undefined ? undefined : `nats/${stream}/${created}/${msg.offset}`;
  }

  /** The stream that stores `subject`, or null (core NATS), remembered per subject (up to a bound: subjects may be computed per message). */
  private streamOf(subject: string): string | null {
    let stream = this.streamSubjects.get(subject);
    if (stream === undefined) {
      stream = streamFor(this.settings, subject)?.[0] ?? null;
      if (this.streamSubjects.size < 10_000) this.streamSubjects.set(subject, stream);
    }
    return stream;
  }

  /** A flush sent after every publish of this turn (at its end), shared by them; resolves with the subjects the server refused meanwhile. */
  private flushAfter(nc: NatsConnection): Promise<ReadonlySet<string>> {
    if (!this.turnFlush) {
      const refused = new Set<string>();
      this.openFlushes.add(refused);
      this.turnFlush = new Promise<ReadonlySet<string>>((resolve, reject) =>
        setImmediate(() => {
          this.turnFlush = undefined;
          nc.flush().then(
            // The -ERR of a refused publish came before the PONG; watch() hears of it through
            // nats.js's status iterator, in the microtasks after it: settled by the next turn.
            () =>
              setImmediate(() => {
                this.openFlushes.delete(refused);
                resolve(refused);
              }),
            (err: unknown) => {
              this.openFlushes.delete(refused);
              reject(err);
            },
          );
        }),
      );
    }
    return this.turnFlush;
  }

  /**
   * What an event-stream client missed on a JetStream subject or filter: the stream read again
   * after the client's position (./replay.ts). A core subject keeps nothing to read back.
   */
  retained(topic: string, after: ReadonlyMap<number, bigint>): Promise<Retained> {
    const stream = this.streamOf(topic);
    if (stream === null) return Promise.resolve({ messages: [], gap: noReadBack(`core NATS subject '${topic}'`) });
    const why = this.streamProblem(stream) ?? (this.state.ready ? undefined : (this.state.detail ?? 'not connected'));
    if (why !== undefined || !this.nc || !this.jsm) return Promise.reject(new Error(why ?? `broker '${this.name}' is not connected`));
    return readStream(this.nc, this.jsm, stream, topic, after, streamMessage);
  }

  /** JetStream consume routes: messages their consumer has yet to deliver, as of the last one delivered. */
  consumerLag(): ConsumerLag[] {
    return [...this.subscriptions].flatMap((s) => (s.lag === undefined ? [] : [{ route: s.route, topic: s.topic, partition: 0, lag: s.lag }]));
  }

  subscribe(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Subscription {
    const sub = new NatsSubscription(this, this.settings, spec, handler, this.log.child({ route: spec.route, topic: spec.topic }), this.telemetry);
    this.subscriptions.add(sub);
    // Not `state.ready`: a route a reload adds or rebuilds while the server is away would then
    // never attach (only open() attaches, once). The client resubscribes core subjects when it is
    // back, and a JetStream consumer retries until it can be created.
    if (this.nc && this.declared) sub.attach(this.nc);
    return leavesOnStop(this.subscriptions, sub);
  }
}

/** Declares stream `name` (or checks it exists): when the server created it. */
async function declareStream(jsm: JetStreamManager, name: string, st: NatsStream): Promise<string> {
  if (!st.declare) return (await jsm.streams.info(name)).created;
  const config: Partial<StreamConfig> = { name, subjects: st.subjects, storage: st.storage as StreamConfig['storage'] };
  if (st.maxAgeMs) config.max_age = lib.nanos(st.maxAgeMs);
  if (st.maxMessages) config.max_msgs = st.maxMessages;
  if (st.duplicateWindowMs) config.duplicate_window = lib.nanos(st.duplicateWindowMs);
  if (st.replicas) config.num_replicas = st.replicas;
  try {
    await jsm.streams.info(name);
    return (await jsm.streams.update(name, config)).created;
  } catch (err) {
    if (!/stream not found/i.test((err as Error).message)) throw err;
    return (await jsm.streams.add(config)).created;
  }
}

/**
 * One consume route: a JetStream consumer (durable, named after the group; a per-instance group
 * gets one that the server removes once idle) when the subject is a stream's, else a core
 * subscription (a queue group unless per instance). Messages are handled one at a time, in order.
 */
class NatsSubscription {
  private stopping = false;
  private running: Promise<void> | undefined;
  private close: (() => void) | undefined;
  /** Messages the JetStream consumer has not delivered yet, plus the one in hand; unknown for core subscriptions. */
  lag: number | undefined;
  /** Stream sequences of the JetStream messages this route acknowledged lately, to know a redelivered copy. */
  private readonly handled = new RecentSet(10_000);
  /** Said once that an existing consumer keeps its own start (putConsumer). */
  private saidKept = false;
  /** The stream this route reads, while it is missing (or its broker could not declare it). */
  private readonly streamMissing: MissingTopology;
  /** Ends the wait for the stream early, when the broker finds it. */
  private wake: (() => void) | undefined;
  /** The route messages go to: a reload's rebuilt route takes its predecessor's place (handOver). */
  private readonly relay: Relay;

  constructor(
    private readonly broker: NatsBroker,
    private readonly settings: NatsSettings,
    private spec: SubscribeSpec,
    handler: (msg: Message) => Promise<void>,
    private readonly log: Logger,
    private readonly telemetry: BrokerTelemetry | undefined,
  ) {
    this.relay = new Relay(handler);
    this.streamMissing = new MissingTopology(log, `nats stream '${streamFor(settings, spec.topic)?.[0] ?? spec.topic}'`);
  }

  /** Not ready while the stream it reads is missing; the connection's state is the broker's. */
  health(): Health {
    return this.streamMissing.health();
  }

  /** The broker has stream `name` now: a route waiting for it tries at once. */
  streamFound(name: string): void {
    if (streamFor(this.settings, this.spec.topic)?.[0] === name) this.wake?.();
  }

  get route(): string {
    return this.spec.route;
  }

  get topic(): string {
    return this.spec.topic;
  }

  attach(nc: NatsConnection): void {
    if (this.running || this.stopping) return;
    const stream = streamFor(this.settings, this.spec.topic);
    this.running = stream ? this.consumeStream(nc, stream[0]) : this.consumeCore(nc);
  }

  /**
   * A core subscription. The client reads its socket as fast as the server sends and queues what
   * the route has not taken yet, without bound, while the server never sees a slow consumer: a
   * route whose targets stall held every message published meanwhile (200,000 messages of 1 KB
   * took 300 MB, growing). So messages wait here as the bytes that came, decoded only when their
   * turn comes, up to `corePendingBytes`; past that they are dropped, said and counted: core NATS
   * is at most once, and nats-server drops for a slow consumer too.
   */
  private consumeCore(nc: NatsConnection): Promise<void> {
    const queue: { data: Buffer; subject: string; headers: Record<string, string>; at: number }[] = [];
    let head = 0;
    let pending = 0;
    let pumping: Promise<void> | undefined;
    const limit = this.settings.corePendingBytes;
    // Said at once, then at most every 10 s with the count since.
    const drops = new RateLimitedWarning<number>(10_000, (pendingBytes, dropped) =>
      this.log.warn({ dropped, pendingBytes, corePendingBytes: limit }, 'nats core messages dropped: the route is corePendingBytes behind its subscription'),
    );
    const pump = async () => {
      while (head < queue.length && !this.stopping) {
        const m = queue[head]!;
        queue[head++] = undefined!;
        await handOver(coreMessage(m.data, m.subject, m.headers, m.at), this.relay, this.handOverOptions());
        pending -= m.data.length + HELD_MESSAGE_BYTES;
        // Drop the handled front now and then, so a queue that never empties does not grow.
        if (head > 1024 && head * 2 > queue.length) {
          queue.splice(0, head);
          head = 0;
        }
      }
      queue.length = head = 0;
      pumping = undefined;
    };
    const sub = nc.subscribe(this.spec.topic, {
      ...(this.spec.perInstance ? {} : { queue: this.spec.group }),
      callback: (err, m) => {
        if (err || this.stopping) return;
        const size = m.data.length + HELD_MESSAGE_BYTES;
        if (pending > 0 && pending + size > limit) {
          this.telemetry?.consumerError(this.spec.route);
          drops.occurred(pending);
          return;
        }
        pending += size;
        // Copied: the client's message data is a view of its read buffer.
        queue.push({ data: Buffer.from(m.data), subject: m.subject, headers: consumedHeaders(m), at: Date.now() });
        pumping ??= pump();
      },
    });
    this.close = () => {
      sub.unsubscribe();
      drops.flush();
    };
    // Said once nats-server answered a PING sent after the SUB, so it has the subscription: said
    // at once, a message published right after "consumer ready" could still find no subscriber
    // and be gone (seen under load). A connection lost meanwhile resubscribes when it is back.
    nc.flush().then(
      () => {
        if (!this.stopping) this.log.info({ subject: this.spec.topic, queue: this.spec.perInstance ? undefined : this.spec.group }, 'consumer ready');
      },
      () => undefined,
    );
    // Ends once unsubscribed and the message in hand is done (those queued behind it are not handed over once stopping).
    return sub.closed.then(() => pumping);
  }

  /** Creates (or updates) the consumer, then reads it; starts over after anything that ends the read. */
  private async consumeStream(nc: NatsConnection, stream: string): Promise<void> {
    const name = consumerName(this.spec.group);
    const backoff = reconnectBackoff();
    while (!this.stopping) {
      let failure: Error | undefined;
      // The stream missing (or not declared): only this route waits, said once per change.
      const missing = this.broker.streamProblem(stream);
      const jsm = this.broker.streamManager();
      if (missing !== undefined || jsm === undefined) {
        const wait = backoff.delay();
        this.streamMissing.missing(missing ?? `stream '${stream}' not ready on broker '${this.broker.name}'`, wait);
        await this.sleepUnlessWoken(wait);
        continue;
      }
      try {
        await this.putConsumer(jsm, stream, name);
        // The stream may have been made again since the broker declared it (its messages numbered from 1 again).
        this.broker.streamSeen(stream, (await jsm.streams.info(stream)).created);
        const consumer = await nc.jetstream().consumers.get(stream, name);
        const messages = await consumer.consume({ max_messages: this.settings.prefetch });
        this.close = () => void messages.close();
        if (this.stopping) {
          await messages.close();
          return;
        }
        this.streamMissing.found();
        this.log.info({ stream, consumer: name, subject: this.spec.topic }, 'consumer ready');
        backoff.reset();
        for await (const m of messages) {
          // A copy JetStream sent again while the first waited behind a message the targets held
          // past ackWaitMs: only the one in hand is kept alive (working()), the ones pulled behind it
          // are redelivered into the same buffer. The route took the first: acknowledge the copy.
          if (m.redelivered && this.handled.has(m.seq)) {
            m.ack();
            continue;
          }
          this.lag = m.info.pending + 1;
          const accepted = await handOver(streamMessage(m), this.relay, {
            ...this.handOverOptions(),
            // JetStream redelivers a message held past ack_wait: tell it we are still at it.
            keepAlive: { everyMs: Math.max(100, Math.floor(this.settings.ackWaitMs / 3)), beat: () => m.working() },
          });
          // Not accepted (stopping): no ack, so the consumer delivers it again after ack_wait.
          if (accepted) {
            m.ack();
            this.handled.add(m.seq);
            this.lag = m.info.pending;
          }
          if (this.stopping) break;
        }
      } catch (err) {
        if (this.stopping) return;
        this.telemetry?.consumerError(this.spec.route);
        failure = err as Error;
      }
      if (this.stopping) return;
      // After a failure, or a read that ended by itself.
      const wait = backoff.delay();
      // The stream deleted since the broker declared it: this route waits for it, as for one missing at the start.
      if (failure && /stream not found/i.test(failure.message)) {
        const detail = notFoundOn('stream', stream, this.broker.name, failure.message);
        this.streamMissing.missing(detail, wait);
        this.broker.streamGone(stream, detail);
      } else if (failure) this.log.warn({ err: failure.message, retryInMs: wait }, 'nats consumer stopped; starting it again');
      await sleep(wait);
    }
  }

  /**
   * Creates the route's consumer on `stream`, or updates it. A new one starts where the route's
   * startFrom says; an existing one goes on from where it is, or, when the route's subject changed,
   * is made again from after the last message it acknowledged.
   */
  private async putConsumer(jsm: JetStreamManager, stream: string, name: string): Promise<void> {
    // A new consumer starts at the stream's oldest message unless the route wants live ones only (as Kafka groups do).
    const startFrom = this.spec.startFrom ?? this.spec.defaultStartFrom ?? 'earliest';
    const wanted = startFrom === 'latest' ? lib.DeliverPolicy.New : lib.DeliverPolicy.All;
    const existing = await consumerInfo(jsm, stream, name);
    let start: Partial<ConsumerConfig> = { deliver_policy: wanted };
    if (existing && existing.config.filter_subject !== this.spec.topic) {
      // The route's subject changed. nats-server 2.9 accepts a new filter_subject in place but
      // then steps over the messages published after it (5 of 5 lost): recreate the consumer,
      // starting right after the last message it had acknowledged.
      await jsm.consumers.delete(stream, name);
      start = { deliver_policy: lib.DeliverPolicy.StartSequence, opt_start_seq: resumeSeq(existing) };
      this.log.info(
        { stream, consumer: name, was: existing.config.filter_subject, subject: this.spec.topic, fromSeq: start.opt_start_seq },
        'the route reads another subject: consumer recreated, going on after the last message it acknowledged',
      );
    } else if (existing && existing.config.deliver_policy !== wanted) {
      // An existing one keeps its own start: nats-server refuses to change it ("deliver policy can
      // not be updated", retried for ever), and its acknowledged position is what the route resumes
      // from, as a Kafka group's committed offsets outrank startFrom.
      const { deliver_policy, opt_start_seq, opt_start_time } = existing.config;
      start = { deliver_policy, opt_start_seq, opt_start_time };
      if (!this.saidKept) {
        this.saidKept = true;
        this.log.info({ stream, consumer: name, startFrom, deliverPolicy: deliver_policy }, 'startFrom applies to a new consumer only: the existing consumer goes on from where it is');
      }
    }
    await jsm.consumers.add(stream, {
      ...(this.spec.perInstance ? { name, inactive_threshold: lib.nanos(300_000) } : { durable_name: name }),
      filter_subject: this.spec.topic,
      ack_policy: lib.AckPolicy.Explicit,
      ...start,
      ack_wait: lib.nanos(this.settings.ackWaitMs),
      // What bounds the route's memory is the pull (consume's `max_messages`). The consumer's cap on
      // unacknowledged messages must leave room beyond it: messages of a pull lost with a
      // connection (a server restart, a network cut) stay unacknowledged until ack_wait, and at
      // `prefetch` they blocked the route's every later pull that long.
      max_ack_pending: this.settings.prefetch * MAX_ACK_PENDING_WINDOWS,
    });
  }

  private handOverOptions() {
    return { route: this.spec.route, log: this.log, telemetry: this.telemetry, stopping: () => this.stopping };
  }

  /** Waits `ms`, or less when the broker finds the stream (streamFound) or the route stops. */
  private sleepUnlessWoken(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        if (this.wake === done) this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      timer.unref();
      this.wake = done;
    });
  }

  /**
   * A reload's rebuilt route asks the same (Subscription.handOver): the core subscription or the
   * JetStream consumer's read goes on, and the next message is the new route's. A core subject
   * loses nothing between the two routes (an unsubscribe and a subscribe lost what came between).
   */
  handOver(spec: SubscribeSpec, handler: (msg: Message) => Promise<void>): Promise<void> {
    this.spec = spec;
    this.log.info('subscription handed over to the rebuilt route');
    return this.relay.replace(handler);
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.close?.();
    this.wake?.();
    await this.running;
  }
}

/**
 * The stream sequence a recreated consumer goes on from: after the last acknowledged message;
 * with none acknowledged, where it started (its delivered mark, or, once it delivered some, its
 * configured start, else the stream's first message: again rather than lost).
 */
function resumeSeq(c: ConsumerInfo): number {
  if (c.ack_floor.consumer_seq > 0) return c.ack_floor.stream_seq + 1;
  if (c.delivered.consumer_seq === 0) return c.delivered.stream_seq + 1;
  return c.config.opt_start_seq ?? 1;
}

/** The stream's consumer of that name, or undefined when there is none yet. */
async function consumerInfo(jsm: JetStreamManager, stream: string, name: string): Promise<ConsumerInfo | undefined> {
  try {
    return await jsm.consumers.info(stream, name);
  } catch (err) {
    if (/consumer not found/i.test((err as Error).message)) return undefined;
    throw err;
  }
}

/** Resolves after `ms`, without keeping the process alive. */
function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

function coreMessage(data: Buffer, subject: string, headers: Record<string, string>, at: number): Message {
  return payloadMessage(data, { headers, topic: subject, partition: null, offset: null, timestamp: at });
}

/** A set that forgets its oldest entries past `max`. */
class RecentSet {
  private readonly items = new Set<number>();

  constructor(private readonly max: number) {}

  has(n: number): boolean {
    return this.items.has(n);
  }

  add(n: number): void {
    this.items.add(n);
    if (this.items.size > this.max) this.items.delete(this.items.values().next().value!);
  }
}

function streamMessage(m: JsMsg): Message {
  return payloadMessage(Buffer.from(m.data), {
    headers: consumedHeaders(m),
    topic: m.subject,
    partition: 0,
    offset: offsetText(m.seq),
    // JetStream timestamps are nanoseconds.
    timestamp: Math.floor(m.info.timestampNanos / 1e6),
  });
}
