import type { JetStreamManager, MsgHdrs, NatsConnection, StreamConfig } from 'nats';
import type { Logger } from '../../../log.js';
import { offsetText, sentHeaders, valuePayload, type Delivery, type Message } from '../../../core/message.js';
import {
  BROKER_CONNECTING,
  chunksOf,
  holdsNothing,
  noReadBack,
  type BrokerRuntime,
  type BrokerSpanFacts,
  type BrokerTelemetry,
  type ConsumerLag,
  type Health,
  type PublishOptions,
  type Retained,
  type RuntimeEnv,
  type SubscribeSpec,
  type Subscription,
} from '../../contracts.js';
import { NATS_PORTS, serverAddressOf } from '../server-url.js';
import { AckDeadlines, leavesOnStop, NotConnected, Refused } from '../acknowledgement.js';
import { problem } from '../../../core/errors.js';
import type { NatsSettings, NatsStream } from '../nats.js';
import { JetStreamPublisher, NoStreamStores, socketOf } from './publisher.js';
import { coalesceWrites } from '../coalesce.js';
import { FirstConnection } from '../first-connection.js';
import { reconnectBackoff } from '../../../core/backoff.js';
import { notConnectedDetail } from '../not-connected.js';
import { brokerTlsWords, isTlsFailure } from '../../tls-failures.js';
import { publishSubjectProblem, streamFor } from './subjects.js';
import { expectationHeaderName, inertExpectationName, isPublishInstruction, rollupProblem } from './expected-headers.js';
import { MSG_ID, msgIdChange, type MsgIdChange } from './msg-id.js';
import { MissingTopology, notFoundOn } from '../missing-topology.js';
import { readStream } from './replay.js';
import { streamMessage } from './consumed.js';
import { lib, loadNats, resetWhenGivenUp } from './lib.js';
import { NatsSubscription, type StreamHost } from './subscription.js';
import { ServerStreamLookups } from './server-streams.js';
import { credsRefusalHint, expiryWarningAt } from './creds.js';
import { sleep, within } from '../../../core/within.js';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';

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

/** Whether nats.js reports the server turning the login down (`Authorization Violation`, an expired or revoked user): on a first connect an error, after a loss its code. */
function isLoginRefusal(err: unknown): boolean {
  const code = typeof err === 'string' ? err : (err as { code?: unknown })?.code;
  return code === lib.ErrorCode.AuthorizationViolation || code === lib.ErrorCode.AuthenticationExpired || /authorization violation/i.test(String((err as Error)?.message ?? ''));
}

/**
 * Checks a server's certificate against the address the connection went to when nats.js gives no
 * name: it sends none for a server named by its IP address (`tls://10.0.0.5:4222`), and node then
 * checked the certificate against `localhost`, refusing one made for the address (`Host: localhost.
 * is not in the cert's altnames: IP Address:10.0.0.5`) and taking any for `localhost`. Node calls
 * it on the options of its TLS connection, which hold nats.js' TCP socket.
 */
function checkServerAddress(this: { servername?: string; host?: string; socket?: { remoteAddress?: string } } | undefined, host: string, cert: PeerCertificate): Error | undefined {
  const address = this?.servername || this?.host ? undefined : this?.socket?.remoteAddress;
  return checkServerIdentity(address ?? host, cert);
}

/** nats.js refusing a server whose INFO offers no TLS while the connection asks for it (its error says only `tls`). */
function tlsNotOffered(err: unknown): boolean {
  return (err as { code?: unknown })?.code === lib.ErrorCode.ServerOptionNotAvailable && (err as Error).message === 'tls';
}

/** A publish the server refused for the user's permissions (it dropped the message). */
function permissionRefusal(subject: string): Error {
  return new Error(`the NATS server refused it: Permissions Violation for Publish to "${subject}" (the broker's user may not publish to this subject)`);
}

/**
 * The message's headers as NATS headers; with `Nats-Msg-Id` changed as `msgId` says, and JetStream's
 * expectation headers spelled as nats-server reads them, or, on a dead-letter write, as it ignores them.
 */
function toHeaders(h: Readonly<Record<string, string>>, msgId?: MsgIdChange, deadletter = false): MsgHdrs | undefined {
  const names = Object.keys(h);
  if (names.length === 0 && msgId?.id === undefined) return undefined;
  const out = lib.headers();
  for (const n of names) if (n !== msgId?.replaces) out.set((deadletter ? inertExpectationName(n) : expectationHeaderName(n)) ?? n, h[n]!);
  if (msgId?.id !== undefined) out.set(MSG_ID, msgId.id);
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
export class NatsBroker implements BrokerRuntime, StreamHost {
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
  /** The server's streams that store a core subject this broker reads or publishes, looked up to warn of them. */
  private readonly serverStreams: ServerStreamLookups;
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
  private state: Health = { ready: false, detail: BROKER_CONNECTING };
  private readonly firstConnection = new FirstConnection();
  private stopped = false;
  private readonly subscriptions = new Set<NatsSubscription>();

  /** Publishes waiting for the server's acknowledgement, each until `ackTimeoutMs`. */
  private deadlines: AckDeadlines;
  /** Consume routes send a consumed message's id with their JetStream publishes (`messageIds`). */
  readonly takesMessageIds: boolean;
  /**
   * When each stream was created, as the server said when the broker declared or checked it: in a
   * consumed message's identity, since a stream deleted and made again numbers its messages from 1 again.
   */
  private readonly streamCreated = new Map<string, string>();
  /** Per consume route, the end of the stream of the topic it is about to read, looked at before a reload's swap (markSourceEnd). */
  private readonly sourceEnds = new Map<string, { topic: string; created: string; lastSeq: number }>();

  /** The first of `servers`: nats.js tries them in random order unless told not to, so the first is the config's, not the one connected to. */
  get spanFacts(): BrokerSpanFacts {
    return { server: serverAddressOf(this.settings.servers[0]!, NATS_PORTS) };
  }

  constructor(
    readonly name: string,
    public settings: NatsSettings,
    env: RuntimeEnv,
  ) {
    this.deadlines = new AckDeadlines(settings.ackTimeoutMs, name);
    this.takesMessageIds = settings.messageIds;
    this.log = env.logger.child({ broker: name });
    this.telemetry = env.telemetry?.broker(name, 'nats');
    for (const stream of Object.keys(settings.streams)) this.streams.set(stream, new MissingTopology(this.log, `nats stream '${stream}'`));
    this.serverStreams = new ServerStreamLookups(this.log, {
      timeoutMs: () => this.settings.ackTimeoutMs,
      stopped: () => this.stopped,
      listed: (stream) => this.settings.streams[stream] !== undefined,
    });
  }

  /** Never fails: an unreachable server makes the broker not ready, and the client keeps trying. */
  async start(): Promise<void> {
    await loadNats();
    this.warnAheadOfExpiry();
    void this.open();
  }

  credentialsExpireAt(): number | undefined {
    return this.settings.creds?.expiresAt;
  }

  /** Until the credsFile JWT's expiry is warned of (expiryWarningAt), or undefined. */
  private expiryTimer: NodeJS.Timeout | undefined;

  /**
   * Logs once, when the credsFile JWT has less than expiryWarningAt's time left, that it is about to
   * expire (nats-server then closes the connection and refuses the login): at start when it already
   * has, else from a timer (its wait in steps a timer can take: node's longest is 24.8 days). A JWT
   * already expired is not warned of here: the config warning and the refused login say it.
   */
  private warnAheadOfExpiry(): void {
    const creds = this.settings.creds;
    const at = expiryWarningAt(creds);
    if (at === undefined || creds?.expiresAt === undefined || this.stopped) return;
    const now = Date.now();
    if (at > now) {
      this.expiryTimer = setTimeout(() => this.warnAheadOfExpiry(), Math.min(at - now, 2 ** 31 - 1)).unref();
      return;
    }
    if (creds.expiresAt <= now) return;
    this.log.warn(
      { expiresAt: new Date(creds.expiresAt).toISOString(), secondsLeft: Math.round((creds.expiresAt - now) / 1000) },
      "nats credsFile's user JWT expires soon: the server will close the connection then and refuse the login; give the broker a new file (nsc generate creds), which it reconnects with",
    );
  }

  private async open(): Promise<void> {
    const backoff = reconnectBackoff();
    // Once per reason, not once per try: a server down or a login refused for an hour is one warning.
    let logged: string | undefined;
    let nc: NatsConnection;
    for (;;) {
      try {
        nc = await this.connect();
        break;
      } catch (err) {
        if (this.stopped) return;
        // nats.js gives up on a first connect the server refused (a wrong password): try again, as after a loss.
        const wait = backoff.delay();
        // nats-server resets a TLS connection whose client certificate it refuses (or did not get):
        // when the reset reaches the client before the alert, node says only ECONNRESET (or EPIPE).
        const code = (err as { code?: unknown }).code;
        const resetInTlsConnect = this.settings.tls !== undefined && (code === 'ECONNRESET' || code === 'EPIPE');
        const why = tlsNotOffered(err)
          ? 'the server does not offer TLS, which the broker requires (its `tls`, or a tls:// server)'
          : resetInTlsConnect
            ? `the server reset the connection in the TLS connect (${(err as Error).message}), as nats-server does for a client certificate it does not trust or did not get (mutual TLS): check the broker's tls.cert and tls.key`
            : `${brokerTlsWords(err as Error)}${isLoginRefusal(err) ? credsRefusalHint(this.settings.creds) : ''}`;
        const detail = notConnectedDetail(why, isLoginRefusal(err) ? 'login' : isTlsFailure(err) || tlsNotOffered(err) || resetInTlsConnect ? 'tls' : undefined, err);
        this.state = { ready: false, detail };
        // A reset before our part of the handshake was done is not read as a refusal for good: a
        // proxy whose server is down resets too. After it, the server refused our certificate.
        this.refused = isLoginRefusal(err) || isTlsFailure(err) || tlsNotOffered(err) || (resetInTlsConnect && this.tlsAccepted) ? detail : undefined;
        if (why !== logged) this.log.warn({ err: why, retryInMs: wait }, 'nats connect failed; retrying');
        logged = why;
        await sleep(wait);
        if (this.stopped) return;
      }
    }
    if (this.stopped) {
      await nc.close();
      return;
    }
    this.nc = nc;
    this.refused = undefined;
    // Before any ping is due: what it had written on a connection given up must not reach the server after its 503.
    if (!resetWhenGivenUp(nc))
      this.log.warn('this nats.js has no protocol handler to hook: a connection given up for liveness is closed, not reset (docs/scaling.md, "A connection the gateway gives up is reset")');
    void this.watch(nc);
    // The settings as they are now: a reload may have reconfigured the broker while it connected.
    this.js = new JetStreamPublisher(nc, lib.createInbox, this.name, this.settings.ackTimeoutMs, this.lateAnswerMs);
    const wait = this.recheckBackoff.delay();
    await this.declareStreams(nc, wait);
    if (this.stopped) return;
    this.state = { ready: true };
    this.declared = true;
    if (this.streamsDeclared()) this.firstConnection.connected();
    this.log.info('nats connected');
    for (const sub of this.subscriptions) this.attach(sub, nc);
    this.recheckLater(nc, wait);
  }

  /** Why the server refused the first connect's last try for good (the login, a TLS handshake), while it does. */
  private refused: string | undefined;
  /** Streams of `streams` whose declare the server refused as declared at the last try (refusesStream), with its words. */
  private readonly streamRefusals = new Map<string, string>();

  refusal(): string | undefined {
    return this.refused ?? this.streamRefusals.values().next().value;
  }

  /**
   * The gateway took the server's certificate in the last first-connect try's TLS handshake, so
   * its part of the handshake was done: a reset after that is the server refusing our side (its
   * `verify` checks the client certificate after a TLS 1.3 client has finished), not a proxy
   * before a server that is down (which resets before any handshake).
   */
  private tlsAccepted = false;

  private connect(): Promise<NatsConnection> {
    const s = this.settings;
    this.tlsAccepted = false;
    const accepted = () => {
      this.tlsAccepted = true;
    };
    // Node calls it on the options of the TLS connection (checkServerAddress reads them), once the chain is trusted.
    const checkServer = function (this: unknown, host: string, cert: PeerCertificate): Error | undefined {
      const refused = checkServerAddress.call(this as ThisParameterType<typeof checkServerAddress>, host, cert);
      if (refused === undefined) accepted();
      return refused;
    };
    return lib.connect({
      servers: s.servers,
      name: `eventgate ${this.name}`,
      user: s.user,
      pass: s.password,
      token: s.token,
      // Signs the server's nonce (its INFO) at each connect and reconnect.
      authenticator: s.creds
        ? lib.jwtAuthenticator(s.creds.jwt, new TextEncoder().encode(s.creds.seed))
        : s.nkeySeed === undefined
          ? undefined
          : lib.nkeyAuthenticator(new TextEncoder().encode(s.nkeySeed)),
      // A node TLS option nats.js passes on (its type lists only its own).
      tls: s.tls ? ({ ...s.tls, checkServerIdentity: checkServer } as typeof s.tls) : undefined,
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
    const run = this.declareStreamsNow(nc, retryInMs);
    this.declaring = run;
    try {
      await run;
    } finally {
      if (this.declaring === run) this.declaring = undefined;
    }
  }

  /** The declares under way: a stop waits for them, so an update it did not see is not left behind (restoreHeldStreams). */
  private declaring: Promise<void> | undefined;

  /** declareStreams' work, one run at a time. */
  private async declareStreamsNow(nc: NatsConnection, retryInMs: number): Promise<void> {
    const waiting = [...this.streams].filter(([, st]) => st.detail !== undefined || !this.declared);
    if (waiting.length === 0) return;
    try {
      this.jsm ??= await nc.jetstreamManager({ timeout: this.settings.ackTimeoutMs });
    } catch (err) {
      // No responders (503) to the JetStream API: nothing on the server serves it, not a slow answer.
      const why =
        (err as { code?: string }).code === '503'
          ? 'JetStream is not enabled on the server (nothing answers its API: nats-server -js, or a jetstream block in its config)'
          : `JetStream did not answer: ${(err as Error).message}`;
      for (const [name, st] of waiting) st.missing(`stream '${name}' not ready on broker '${this.name}': ${why}`, retryInMs, 'not ready');
      return;
    }
    for (const [name, st] of waiting) {
      if (this.stopped) return;
      try {
        this.streamCreated.set(name, await declareStream(this.jsm, name, this.settings.streams[name]!, (before) => this.updatedWhileHeld(name, before)));
        this.streamRefusals.delete(name);
        st.found();
        for (const sub of this.subscriptions) sub.streamFound(name);
      } catch (err) {
        const why = (err as Error).message;
        if (this.settings.streams[name]!.declare && refusesStream(err)) this.streamRefusals.set(name, `the server refused stream '${name}' as declared: ${why}`);
        else this.streamRefusals.delete(name);
        // A stream the server refuses to create or update as declared is there, or may be: not "not found".
        if (/stream not found/i.test(why)) st.missing(notFoundOn('stream', name, this.name, why), retryInMs);
        else st.missing(`stream '${name}' not ready on broker '${this.name}': ${why}`, retryInMs, 'not ready');
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
   * A route, or a publish the server answered with no stream, found stream `name` gone (deleted
   * since the broker declared or checked it, or lost with the server's store): the broker checks it
   * again with backoff too, declaring it anew when it is one it declares, and refuses publishes to
   * it meanwhile.
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

  /**
   * The stream's end as a reload's look found it before its listeners took the new config
   * (markSourceEnd), for the route's first read of `topic`: taken once, and only for the stream as
   * it was then (`created`).
   */
  takeSourceEnd(route: string, topic: string, created: string): number | undefined {
    const mark = this.sourceEnds.get(route);
    if (mark === undefined || mark.topic !== topic) return undefined;
    this.sourceEnds.delete(route);
    return mark.created === created ? mark.lastSeq : undefined;
  }

  async markSourceEnd(route: string, topic: string): Promise<void> {
    const stream = this.streamOf(topic);
    const jsm = this.jsm;
    this.sourceEnds.delete(route);
    // Core NATS delivers only what comes after a subscription; a broker not connected (or its stream not declared) leaves the look to the route.
    if (stream === null || jsm === undefined || !this.state.ready || this.streamProblem(stream) !== undefined) return;
    try {
      // Bounded by the JetStream manager's timeout (ackTimeoutMs).
      const { created, state } = await jsm.streams.info(stream);
      this.sourceEnds.set(route, { topic, created, lastSeq: state.last_seq });
    } catch (err) {
      this.log.debug({ route, stream, err: (err as Error).message }, "could not look at the stream's end before the swap; the route looks when it starts");
    }
  }

  /** Connected to a server now (not reconnecting, not closed). */
  connected(): boolean {
    return this.state.ready;
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
      } else if (s.type === lib.Events.LDM) {
        // nats-server's lame duck mode (`--signal ldm`, a rolling restart): it takes no new clients and
        // closes this connection after its grace period. Said before it happens, not only as a loss.
        this.log.warn(
          { server: s.data },
          'nats server entering lame duck mode: it will close this connection (after its lame_duck_grace_period, 10 s by default); the client then reconnects, to another of `servers` when there is one',
        );
      } else if (s.type === lib.Events.Reconnect) {
        if (!this.state.ready) this.log.info({ server: s.data }, 'nats reconnected');
        this.state = { ready: true };
        lastError = undefined;
        this.serverStreams.reconnected(nc);
      } else if (s.type === lib.Events.Error) {
        const denied = (s as { permissionContext?: { operation: string; subject: string } }).permissionContext;
        // nats.js gives a refusal's code only: which subject the user may not publish or subscribe to is said too.
        const err = denied ? `${String(s.data)} (${denied.operation} to "${denied.subject}")` : String(s.data);
        // A user the JetStream stream list is denied to: the stream lookups stop and say so, and their refusal
        // is no error of the gateway's to log. Matched by the lookups' own subject: a refusal of the
        // broker's other JetStream work meanwhile (a consumer create) is logged (spec-checklist 5150).
        if (denied?.operation === 'publish' && this.serverStreams.refusedOwn(denied.subject)) continue;
        if (denied?.operation === 'publish') {
          for (const refused of this.openFlushes) refused.add(denied.subject);
          this.js?.refused(denied.subject, permissionRefusal(denied.subject));
        }
        // A refused login after the JWT's exp (or before its nbf) says so, here and in the log alike.
        const hint = isLoginRefusal(s.data) ? credsRefusalHint(this.settings.creds) : '';
        if (!this.state.ready)
          this.state = {
            ready: false,
            detail: isLoginRefusal(s.data) ? notConnectedDetail(`${err}${hint}`, 'login') : notConnectedDetail(err, undefined),
          };
        if (err !== lastError) this.log.warn({ err: `${err}${hint}` }, 'nats error');
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

  /** Set by holdUntilCommit() until commit(): a stream this broker updates is put back as it was when it stops uncommitted. */
  private held = false;
  /** While held, each stream this broker updated, with the config it had before (the running config's). */
  private readonly heldBefore = new Map<string, StreamConfig>();

  holdUntilCommit(): void {
    this.held = true;
  }

  /** The reload that built this broker commits: the streams it updated stay as it declared them. */
  async commit(): Promise<void> {
    this.held = false;
    this.heldBefore.clear();
  }

  private updatedWhileHeld(name: string, before: StreamConfig): void {
    // The first update's: a retry's "before" is this broker's own.
    if (this.held && !this.heldBefore.has(name)) this.heldBefore.set(name, before);
  }

  /**
   * A reload that built this broker was rejected (or rolled back): the streams it updated go back
   * to what they were, so the running config's publishes find them as it declared them. Without
   * this, a stream the rejected config narrowed (`subjects: [orders.eu]` for `orders.>`) answered
   * the running config's other subjects 503 (no stream stores them) until its broker reconnected.
   */
  private async restoreHeldStreams(): Promise<void> {
    const jsm = this.jsm;
    if (!this.held || this.heldBefore.size === 0 || jsm === undefined) return;
    for (const [name, before] of this.heldBefore) {
      const restored = jsm.streams.update(name, before).then(
        () => this.log.info({ stream: name }, 'nats stream put back as the running config declares it (the reload that changed it was not applied)'),
        (err: Error) =>
          this.log.warn({ stream: name, err: err.message }, 'nats stream changed by a reload that was not applied could not be put back; the running broker declares it again at its next connect'),
      );
      if ((await within(restored, this.settings.ackTimeoutMs)) === 'late')
        this.log.warn({ stream: name, waitedMs: this.settings.ackTimeoutMs }, 'nats stream changed by a reload that was not applied: putting it back was not answered in time');
    }
    this.heldBefore.clear();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.recheck);
    clearTimeout(this.expiryTimer);
    if (this.declaring) await within(this.declaring, this.settings.ackTimeoutMs);
    await this.restoreHeldStreams();
    await Promise.allSettled([...this.subscriptions].map((s) => s.stop()));
    // drain() flushes what was published and lets subscriptions finish.
    await Promise.race([this.nc?.drain().catch(() => undefined), new Promise((r) => setTimeout(r, this.settings.ackTimeoutMs).unref())]);
  }

  /**
   * A reload changed only keys read per publish or per message (`ackTimeoutMs`,
   * `corePendingBytes`: the kind's canReconfigure): the next publish and the next core message use
   * them. Publishes already out keep the deadline they were given.
   */
  reconfigure(options: unknown): void {
    const next = options as NatsSettings;
    const { ackTimeoutMs } = next;
    const changed = ackTimeoutMs !== this.settings.ackTimeoutMs;
    this.settings = next;
    for (const sub of this.subscriptions) sub.reconfigure(next);
    if (!changed) return;
    this.deadlines = new AckDeadlines(ackTimeoutMs, this.name);
    this.js?.reconfigure(ackTimeoutMs, this.lateAnswerMs);
    // JetStream requests (stream and consumer checks) take their timeout from the manager made at connect.
    const nc = this.nc;
    if (nc && this.jsm)
      nc.jetstreamManager({ timeout: ackTimeoutMs }).then(
        (jsm) => {
          if (this.nc === nc && this.settings.ackTimeoutMs === ackTimeoutMs) this.jsm = jsm;
        },
        () => undefined,
      );
  }

  /** How long a timed-out JetStream publish's PubAck is still awaited: as long as a lost connection takes to show (maxPingOut 2). */
  private get lateAnswerMs(): number {
    return this.settings.ackTimeoutMs + 3 * this.settings.pingIntervalMs;
  }

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
    return rollupProblem(name, value);
  }

  publishInstruction(name: string): boolean {
    return isPublishInstruction(name);
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
      const headers = toHeaders(sent, msgIdChange(sent, options?.messageId, topic, options?.replacesOwnId), options?.deadletter);
      return this.js!.publish(topic, data, headers).then(
        (seq): Delivery => ({ broker: this.name, topic, partition: 0, offset: offsetText(seq) }),
        (err: Error) => {
          this.telemetry?.producerError();
          // Gone from the server (deleted, or with its store): declared again, as a route reading it
          // does. Read by no route, it stayed gone for good, every publish 503, after a server
          // restarted with its store wiped. Not a stream that must exist (`declare: false`): nothing
          // is made again, and an operator's stream there storing other subjects than the config
          // says was found again at once, then taken for gone by the next publish, and so on.
          if (err instanceof NoStreamStores && this.settings.streams[stream]?.declare) this.streamGone(stream, notFoundOn('stream', stream, this.name, err.message));
          throw tooLargeFor(nc, err, data.length) ?? err;
        },
      );
    }
    // Core NATS: a flush round trip proves the server read it; nothing stores it.
    this.serverStreams.ask(nc, topic);
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
    if (stream === null) return Promise.resolve({ chunks: chunksOf([]), close: holdsNothing, gap: noReadBack(`core NATS subject '${topic}'`), forget: [...after.keys()] });
    const why = this.streamProblem(stream) ?? (this.state.ready ? undefined : (this.state.detail ?? 'not connected'));
    if (why !== undefined || !this.nc || !this.jsm) return Promise.reject(new Error(why ?? `broker '${this.name}' is not connected`));
    return readStream(this.nc, this.jsm, stream, topic, after, streamMessage);
  }

  /** A JetStream subject's messages are numbered by its stream (their offset is the stream sequence). */
  positionScope(topic: string): string | undefined {
    return this.streamOf(topic) ?? undefined;
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
    if (this.nc && this.declared) this.attach(sub, this.nc);
    return leavesOnStop(this.subscriptions, sub);
  }

  private attach(sub: NatsSubscription, nc: NatsConnection): void {
    sub.attach(nc);
    if (streamFor(this.settings, sub.topic) === undefined) this.serverStreams.ask(nc, sub.topic, { route: sub.route });
  }
}

/**
 * JetStream API errors for limits that may free up (nats-server's errors.json): insufficient
 * resources (10023), the account's streams limit (10027), memory or storage exhausted (10028, 10047).
 */
const STREAM_LIMITS = new Set([10023, 10027, 10028, 10047]);

/**
 * Whether a stream's declare failed because the server refuses the stream as declared (an answer
 * of its JetStream API: a storage type it cannot change, subjects another stream has, replicas a
 * single server cannot keep), not for what may pass (no answer, a limit reached, a stream not
 * there yet).
 */
function refusesStream(err: unknown): boolean {
  const api = (err as { api_error?: { code?: number; err_code?: number } }).api_error;
  return api !== undefined && (api.code === 400 || api.code === 500) && !STREAM_LIMITS.has(api.err_code ?? 0);
}

/** Declares stream `name` (or checks it exists): when the server created it. `updated` is told the config an existing stream had before the server took an update that changed it. */
async function declareStream(jsm: JetStreamManager, name: string, st: NatsStream, updated: (before: StreamConfig) => void): Promise<string> {
  if (!st.declare) return (await jsm.streams.info(name)).created;
  const config: Partial<StreamConfig> = { name, subjects: st.subjects, storage: st.storage as StreamConfig['storage'] };
  if (st.maxAgeMs) config.max_age = lib.nanos(st.maxAgeMs);
  if (st.maxMessages) config.max_msgs = st.maxMessages;
  if (st.duplicateWindowMs) config.duplicate_window = lib.nanos(st.duplicateWindowMs);
  if (st.replicas) config.num_replicas = st.replicas;
  try {
    const before = (await jsm.streams.info(name)).config;
    const after = await jsm.streams.update(name, config);
    // The same config again (a broker rebuilt for another key) changed nothing to put back.
    if (JSON.stringify(after.config) !== JSON.stringify(before)) updated(before);
    return after.created;
  } catch (err) {
    if (!/stream not found/i.test((err as Error).message)) throw err;
    return (await jsm.streams.add(config)).created;
  }
}
