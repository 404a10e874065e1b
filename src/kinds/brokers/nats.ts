import { consumerName, NOT_A_FILTER, publishSubjectProblem, subjectCovers, subjectFilterProblem, subjectsOverlap } from './nats/subjects.js';
import type { BrokerCompileContext } from '../contracts.js';
import { foreignWildcardHint, NATS_WILDCARDS, withForeignWildcardHint } from './foreign-wildcards.js';
import { defineBroker, kindOptions, mapOf, oneOf, oneOfStrings, Type, type Static } from '../define.js';
import type { NatsBroker } from './nats/broker.js';
import { compileTls, TLS_OPTIONS } from './tls.js';
import { serverUrlProblem, shownServerUrl } from './server-url.js';
import { whenUsed } from '../when-used.js';
import { escapeControls } from '../../config/diagnostics.js';
import { onlyInPlaceChanged } from './in-place.js';
import { headersRead } from './nats/consumed.js';
import { isPublishInstruction } from './nats/expected-headers.js';
import { credsTimeProblem, parseCreds, USER_SEED, type NatsCreds } from './nats/creds.js';

const int = (def: number, min: number, description: string) => Type.Optional(Type.Integer({ minimum: min, default: def, description }));

/** The longest duration in ms whose nanoseconds fit the signed 64-bit integer nats-server reads. */
const MAX_NANOS_MS = 9223372036854;

const stream = Type.Object(
  {
    subjects: Type.Array(Type.String({ minLength: 1 }), {
      minItems: 1,
      description:
        "Subjects the stream stores (wildcards `*` and `>` allowed). No subject may overlap another of this stream or of another stream of the broker (`orders.>` and `orders.eu.*`, `a.*.x` and `a.b.*`): nats-server refuses to create such a stream, so it is a config error at its line. One written in another broker's wildcard syntax (`plant/+/temp`) stores only the subject of that name and is warned of at validate (EG_CONFIG_SUSPICIOUS_TOPIC), as a route's `from.topic` is.",
    }),
    declare: Type.Optional(
      Type.Boolean({
        default: true,
        description:
          "Create or update the stream at connect; false when it must exist already. A stream missing (or one the server refuses to create) stops only what uses it, tried again with backoff and logged once: the routes that read it are not ready (`route NAME: stream 'S' not found on broker 'B'` in /readyz) and start by themselves once it exists, consuming what it holds; publishes to its subjects answer 503 naming it. The broker stays ready: core subjects and other streams go on. A stream deleted on the server, or lost with a server's store, is found gone by the route that reads it, or, when `declare` is true, by the first publish to it (a 503: no stream stored it), then checked again the same way, and declared again when `declare` is true; a publish to a `declare: false` stream the server does not store the subject in (gone, or an operator's stream of other subjects) is a 503 naming the subject, each time, without the stream being taken for gone. An update sets what the config names and leaves the rest as the server has it, limits an operator set with `nats stream edit` included: a limit removed from the config (`maxMessages`, `maxAgeMs`, `duplicateWindowMs`, `replicas`) stays on the stream until it is changed there.",
      }),
    ),
    storage: Type.Optional(oneOfStrings(['file', 'memory'], { default: 'file', description: 'Where the server stores the stream.' })),
    // nats-server takes these as int64 nanoseconds and counts: past them it refused the stream (`invalid json`) for ever.
    maxAgeMs: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_NANOS_MS,
        description: 'Messages older than this are removed, read or not, as `maxMessages` says (at most 9223372036854, about 292 years: nanoseconds in a 64-bit integer).',
      }),
    ),
    maxMessages: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: Number.MAX_SAFE_INTEGER,
        description:
          "Most messages the stream keeps (at most 9007199254740991). Past it the server removes the oldest (JetStream's limits retention, `discard: old`) whether or not a route has read them, and the publish that passed it still answers 2xx: a consume route whose targets are down longer than the stream holds loses what was removed before it pulled it (it delivers the `prefetch` it had in hand, then goes on from the oldest message left). Size it, and `maxAgeMs`, for the longest outage of the routes' targets.",
      }),
    ),
    duplicateWindowMs: Type.Optional(
      Type.Integer({
        minimum: 1,
        maximum: MAX_NANOS_MS,
        description:
          "How long the stream remembers each message's `Nats-Msg-Id`, dropping a copy written again with it meanwhile (a consume route's message handled again, a publisher's request sent again: docs/scaling.md, \"Duplicates a JetStream target drops\"). Unset: the server's (2 minutes, or `maxAgeMs` when shorter). At most `maxAgeMs`.",
      }),
    ),
    replicas: Type.Optional(Type.Integer({ minimum: 1, maximum: 5, description: 'Copies in a clustered server.' })),
  },
  { additionalProperties: false },
);

const options = kindOptions('nats', {
  servers: oneOf([Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }), Type.String({ minLength: 1 })], {
    description:
      'Servers as `nats://host:4222` or `host:port` (`[::1]:4222` for an IPv6 address): a list, or one string; a comma-separated string is split, so `servers: ${NATS_URL}` takes a list from the environment. A `tls://host:4222` server makes the broker require TLS, as `tls` does (a server that offers none is `tls refused`, never used in the clear); `ws://` and `wss://` are refused: the client speaks the NATS protocol over TCP, on the client port of the server. Credentials go in `user` and `password` (or `token`): the NATS client does not send those of a URL (`nats://user:password@host`), so a server holding an `@` anywhere is a config error at its line.',
  }),
  user: Type.Optional(Type.String({ description: 'User name.' })),
  password: Type.Optional(Type.String({ description: 'Password (write it as ${VAR}).' })),
  token: Type.Optional(Type.String({ description: 'Authentication token (instead of user and password).' })),
  nkeyFile: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        "File holding the user's NKey seed (`SU...`, as `nk -gen user` or `nsc` write it), relative to this config (watched: a new seed reconnects the broker): the broker logs in by signing the server's challenge with it, for a server whose `authorization` lists the user by its public key (`{ nkey: U... }`). Instead of `user`/`password` and `token`; a file that holds no user seed is a config error. For a server in operator mode (JWT accounts), `credsFile` instead.",
    }),
  ),
  credsFile: Type.Optional(
    Type.String({
      minLength: 1,
      description:
        "NATS credentials file (`.creds`: the user's JWT and NKey seed, as `nsc generate creds` writes it), relative to this config (watched: a rotated file reconnects the broker with the new JWT, a reload a new file the server refuses is rejected and the running broker serves on): the broker sends the JWT and signs the server's challenge with the seed, for a server in operator mode (`operator`, `resolver`). Instead of `user`/`password`, `token` and `nkeyFile`; a file without a user JWT and a user seed, or whose seed is not the JWT's user's, is a config error, which quotes nothing of it. A JWT past its `exp`, or before its `nbf`, is refused by the server (one that expires while connected, the server closes the connection): /readyz says `login refused`, and /admin/status, the 503s and the `nats error` log line when it expired (or from when it is valid); `validate` and each start and reload warn of such a JWT at this key, by the machine's clock (`EG_CONFIG_CREDENTIALS_VALIDITY`: a warning, since CI's clock and day are not the gateway's). A JWT that expires is warned of in the log once, a week before its `exp`, or a fifth of its lifetime (`exp` − `iat`) before when that is shorter (`nats credsFile's user JWT expires soon`), and `eventgate_broker_credentials_expires_in_seconds` says the time left.",
    }),
  ),
  tls: Type.Optional(
    Type.Object(
      { ca: TLS_OPTIONS.properties.ca, cert: TLS_OPTIONS.properties.cert, key: TLS_OPTIONS.properties.key, passphrase: TLS_OPTIONS.properties.passphrase },
      {
        additionalProperties: false,
        description:
          "TLS: `{ca, cert, key, passphrase}`, PEM files relative to this config (watched: a new certificate reconnects the broker). A server's certificate is checked against the server's name, or its IP address for one given as an address (`tls://10.0.0.5:4222`).",
      },
    ),
  ),
  streams: Type.Optional(
    mapOf(stream, {
      description:
        "JetStream streams, by name: subjects inside one are published with a stored acknowledgement and consumed through durable consumers (at least once); other subjects are core NATS (at most once), even where a stream on the server stores them (an operator's stream the config does not list, or one a reload dropped from `streams`): the log says so once per subject and stream, naming it (`nats stream 'S' on the server stores 'audit.>', which route R reads as core NATS ...`; `nats stream 'EU' on the server stores part of 'orders.>' (its subjects: 'orders.eu.*') ...` for a wildcard subject it stores a part of; for a publish `... which the gateway publishes to as core NATS ...`; docs/scaling.md, \"Core NATS subjects a stream on the server stores\"); list such a stream with `declare: false` to read it through a durable consumer and have each publish acknowledged by it. A consume route's `from.topic` is JetStream's when one stream's subjects hold all of it (`orders.*` or `orders.eu` in a stream of `orders.*`); a filter that only reaches into a stream (`orders.>` beside a stream of `orders.*`) is read as core NATS, the stream's subjects too, and is a validate warning (EG_CONFIG_SUSPICIOUS_TOPIC).",
    }),
  ),
  prefetch: int(
    20,
    1,
    "Most unacknowledged messages a JetStream consume route holds, and how many it pulls at once. They are handled one at a time, in order, unless the route's targets are all webhooks: then up to min(prefetch, the webhooks' `concurrency`) at once, in order per `orderBy` value only, each acknowledged by itself once done. The route's consumer allows ten times as many unacknowledged (`max_ack_pending`): messages of a pull lost with a connection stay unacknowledged until `ackWaitMs`, and must not stop the route meanwhile.",
  ),
  corePendingBytes: int(
    33554432,
    1,
    'Core subjects (at most once): most bytes a consume route holds while its targets fall behind, each message counted as its payload plus 512 bytes (default 32 MiB). A message beyond it is dropped, as nats-server drops what a slow consumer cannot take: logged (`nats core messages dropped`, with the count) and counted in `eventgate_nats_consumer_errors_total`. JetStream routes are bounded by `prefetch` and lose nothing.',
  ),
  ackWaitMs: int(30000, 100, 'JetStream redelivers a message not acknowledged this long after delivery; the gateway extends it while a route still works on one.'),
  connectTimeoutMs: int(5000, 1, 'Time to open a connection.'),
  reconnectTimeWaitMs: int(500, 1, 'Wait between reconnect attempts to one server.'),
  pingIntervalMs: int(
    10000,
    100,
    'How often the client asks the server for a PONG. A connection with two PINGs unanswered is declared lost (`/readyz` 503, reconnecting): a server that stopped answering without closing the connection (frozen, or a network path silently gone) is seen within two to three intervals.',
  ),
  messageIds: Type.Optional(
    Type.Boolean({
      default: true,
      description:
        "A consume route that writes a message to a JetStream subject sends it with a `Nats-Msg-Id` made of where the message came from (the Kafka broker's name, topic, partition, offset and record timestamp; a JetStream stream, its creation time and the sequence; a memory topic's offset in that broker's life), the route, the target's place in it and the subject: the same on every try and every redelivery, so the stream's duplicate window (`duplicate_window`, 2 minutes by default) keeps one copy of a message the route writes twice (its source delivering it again after a restart or a rebalance, a try whose PubAck was lost with the connection). Messages from MQTT, AMQP, core NATS subjects and HTTP or WebSocket publishes have no such identity and get none. The id is `eventgate:<route>:<source>:<target>:<subject>` (docs/scaling.md, \"Duplicates a JetStream target drops\"). A message's dead-letter writes to a JetStream subject of this broker (a route's `deadletter`, a validate step's dead-letter topic) get one too, `eventgate:<route>:<source>:deadletter:<subject>` (an undecodable Kafka batch: its first record's source; an unreadable Kafka record: its own; a message with no source but a publisher's `Nats-Msg-Id` `<P>`: `published/<P>` in its place), so a message dead-lettered again is stored once; the stream keeps the first copy, with its `_eventgate_error`. A `Nats-Msg-Id` header the message already has, in any case (an HTTP client's arrives lower-cased), is sent instead, as `Nats-Msg-Id` (on a route with more than one JetStream target, as `eventgate:<route>:published/<P>:<target>:<subject>`, so that a stream holding two of the targets' subjects keeps each copy), except on a dead-letter write that has an id of its own, which replaces it (with it, a dead-letter subject in the stream the message came from dropped the copy as a duplicate); one beginning `eventgate:` named another write and is not sent again. `false`: no `Nats-Msg-Id` is added, each write is a new message in the stream.",
    }),
  ),
  ackTimeoutMs: int(
    5000,
    1,
    "A publish not acknowledged (JetStream PubAck; core subjects: the server's reply to a flush) by then fails: HTTP 503, retry for consume routes, which first wait for a JetStream publish's late PubAck or the connection's loss (taken: not published again). Also how long a JetStream consume route's stop waits for the server to confirm its acknowledgements (its consumer may be recreated from them).",
  ),
});
type NatsOptions = Static<typeof options>;

export interface NatsStream {
  subjects: string[];
  declare: boolean;
  storage: 'file' | 'memory';
  maxAgeMs: number | undefined;
  maxMessages: number | undefined;
  duplicateWindowMs: number | undefined;
  replicas: number | undefined;
}

/** The options compiled: server lists split, defaults filled in, TLS files read. What the runtime gets. */
export interface NatsSettings {
  servers: string[];
  user: string | undefined;
  password: string | undefined;
  token: string | undefined;
  /** The user's NKey seed (`SU...`), read from `nkeyFile`. */
  nkeySeed: string | undefined;
  /** The user's JWT and seed, read from `credsFile`. */
  creds: NatsCreds | undefined;
  /** PEM text (nats.js takes `ca`, `cert`, `key` as text). */
  tls: { ca?: string; cert?: string; key?: string; passphrase?: string } | undefined;
  streams: Record<string, NatsStream>;
  prefetch: number;
  corePendingBytes: number;
  ackWaitMs: number;
  connectTimeoutMs: number;
  reconnectTimeWaitMs: number;
  pingIntervalMs: number;
  ackTimeoutMs: number;
  messageIds: boolean;
}

/**
 * Keys read per publish or per message (NatsBroker.reconfigure applies them): a reload that
 * changes only these keeps the connection, the core subscriptions and the JetStream consumers.
 * `prefetch` and `ackWaitMs` are not among them (a JetStream consumer's config on the server),
 * nor `messageIds` (a route reads it when it is built).
 */
const IN_PLACE = ['ackTimeoutMs', 'corePendingBytes'];

// A host name, IPv4 or bracketed IPv6 address, with an optional port.
const SERVER = /^((nats|tls):\/\/)?(\[[0-9A-Fa-f:.]+\]|[^\s/:@[\]]+)(:\d{1,5})?$/;
// nats.js drops any scheme and speaks the NATS protocol over TCP: a ws:// port (nats-server's
// `websocket` block) answers it with nothing, and the connect times out for ever.
const WEBSOCKET = /^wss?:\/\//i;

function compileNats(o: NatsOptions, ctx: BrokerCompileContext): NatsSettings | undefined {
  let ok = true;
  // `servers: ${NATS_URL}` with a comma-separated list: split it, as kafka's brokers are.
  const entries = typeof o.servers === 'string' ? [o.servers] : o.servers;
  const servers: string[] = [];
  entries.forEach((entry, i) => {
    for (const s of entry
      .split(',')
      .map((x) => x.trim())
      .filter((x) => x !== '')) {
      const at = typeof o.servers === 'string' ? ['servers'] : ['servers', i];
      // The NATS client would connect without credentials and the server answer 'Authorization Violation'.
      // Any '@': `user:password@` or `token@` before the host (nats.js reads only the host and port), or
      // after it when a password's unencoded '/', '?' or '#' ended the host early (a NATS URL has no path).
      const why = s.includes('@')
        ? "holds credentials, which the NATS client does not send: give them as the broker's `user` and `password` (or `token`)"
        : WEBSOCKET.test(s)
          ? "is a WebSocket URL, but the gateway's NATS client speaks the NATS protocol over TCP: give the server's client port (nats://host:4222, or tls://host:4222 for TLS)"
          : SERVER.test(s)
            ? serverUrlProblem(s)
            : 'is not a NATS server: expected nats://host:4222 or host:port';
      if (why === undefined) servers.push(s);
      else {
        ctx.report(at, 'EG_CONFIG_SCHEMA', `'${shownServerUrl(s)}' ${why}`);
        ok = false;
      }
    }
  });
  const tls = compileTls(o.tls, ctx);
  if (tls === false) ok = false;
  // nats.js drops the scheme, so `tls://` alone would connect in the clear to a server that allows
  // it (credentials and messages with it): a tls:// server makes the broker require TLS, as `tls:` does.
  const tlsScheme = servers.some((s) => /^tls:\/\//i.test(s));
  const streams: Record<string, NatsStream> = {};
  for (const [name, st] of Object.entries(o.streams ?? {})) {
    if (!/^[A-Za-z0-9_-]+$/.test(name)) {
      ctx.report(['streams', name], 'EG_CONFIG_SCHEMA', `'${escapeControls(name)}' cannot name a JetStream stream: use letters, digits, _ and -`);
      ok = false;
    }
    st.subjects.forEach((subject, i) => {
      const problem = subjectFilterProblem(subject);
      if (problem) {
        const why = problem === NOT_A_FILTER ? "dot-separated tokens, '*' a whole token, '>' only the last" : problem;
        ctx.report(['streams', name, 'subjects', i], 'EG_CONFIG_SCHEMA', `'${escapeControls(subject)}' is not a NATS subject: ${why}`);
        ok = false;
        return;
      }
      // A stream's subject is a filter as a route's is (readWarning): in another kind's syntax it stores only the subject of its own name.
      const foreign = foreignWildcardHint(subject, NATS_WILDCARDS, 'NATS', 'subject');
      if (foreign) ctx.warn(['streams', name, 'subjects', i], 'EG_CONFIG_SUSPICIOUS_TOPIC', `stream '${name}': ${foreign}`);
    });
    // nats-server refuses such a stream ("duplicates window can not be larger then max age") at connect: said here, at its line.
    if (st.duplicateWindowMs !== undefined && st.maxAgeMs !== undefined && st.duplicateWindowMs > st.maxAgeMs) {
      ctx.report(
        ['streams', name, 'duplicateWindowMs'],
        'EG_CONFIG_SCHEMA',
        `duplicateWindowMs (${st.duplicateWindowMs}) is longer than the stream's maxAgeMs (${st.maxAgeMs}): a message id cannot be remembered longer than the message`,
      );
      ok = false;
    }
    // nats-server creates no stream whose subjects overlap each other's or another stream's: the
    // stream would never exist and what waits for it would wait for ever, so say it here, at its line.
    st.subjects.forEach((subject, i) => {
      const earlier = [...Object.entries(streams).flatMap(([other, s]) => s.subjects.map((p) => [other, p] as const)), ...st.subjects.slice(0, i).map((p) => [name, p] as const)];
      for (const [other, p] of earlier) {
        const both = subjectFilterProblem(p) || subjectFilterProblem(subject) ? undefined : subjectsOverlap(p, subject);
        if (both === undefined) continue;
        const whose = other === name ? 'another subject of this stream' : `a subject of stream '${other}'`;
        const what = p !== subject ? `'${subject}' overlaps '${p}', ${whose} (both hold ${both})` : other === name ? `'${subject}' is listed twice in this stream` : `'${subject}' is also ${whose}`;
        ctx.report(['streams', name, 'subjects', i], 'EG_CONFIG_SCHEMA', `${what}: nats-server refuses a stream whose subjects overlap (a subject is stored by one stream only)`);
        ok = false;
        break;
      }
    });
    streams[name] = {
      subjects: st.subjects,
      declare: st.declare ?? true,
      storage: st.storage ?? 'file',
      maxAgeMs: st.maxAgeMs,
      maxMessages: st.maxMessages,
      duplicateWindowMs: st.duplicateWindowMs,
      replicas: st.replicas,
    };
  }
  const nkeySeed = compileNkeyFile(o, ctx);
  if (nkeySeed === false) ok = false;
  const creds = compileCredsFile(o, ctx);
  if (creds === false) ok = false;
  if (!ok) return undefined;
  return {
    servers,
    user: o.user,
    password: o.password,
    token: o.token,
    nkeySeed: nkeySeed || undefined,
    creds: creds || undefined,
    tls: tls ? { ca: tls.ca as string | undefined, cert: tls.cert as string | undefined, key: tls.key as string | undefined, passphrase: tls.passphrase } : tlsScheme ? {} : undefined,
    streams,
    prefetch: o.prefetch ?? 20,
    corePendingBytes: o.corePendingBytes ?? 33554432,
    ackWaitMs: o.ackWaitMs ?? 30000,
    connectTimeoutMs: o.connectTimeoutMs ?? 5000,
    reconnectTimeWaitMs: o.reconnectTimeWaitMs ?? 500,
    pingIntervalMs: o.pingIntervalMs ?? 10000,
    ackTimeoutMs: o.ackTimeoutMs ?? 5000,
    messageIds: o.messageIds ?? true,
  };
}

export const natsBroker = defineBroker({
  options,
  doc: {
    summary:
      "A NATS server, through the `nats` client. Subjects inside a stream listed under `streams` are JetStream's: a publish answers 2xx only after the stream stored it (its sequence is the delivery's `offset`; a publish's `Nats-Expected-Stream`, `Nats-Expected-Last-Sequence`, `Nats-Expected-Last-Subject-Sequence` and `Nats-Expected-Last-Msg-Id` headers, an HTTP client's lower-case ones included, go as nats-server reads them, so the stream stores the message only where they hold, and one that does not is a 400 `EG_INVALID_MESSAGE` in the server's words, `wrong last sequence: 41`, not stored and dead-lettered by consume routes; so does `Nats-Rollup` (`sub`: the message replaces its subject's earlier ones), on a stream made with `allow_rollup_hdrs`, which the gateway does not declare: on any other it is a 400 too, `rollup not permitted`; a `Nats-Rollup` other than `sub` or `all` (in any case) is a 400 naming the header before it is sent, as nats-server answers no other value; a consume route dead-letters such a message, its copy carrying those headers in lower case, which the server does not read; a consume route's own writes to NATS (its targets and dead-letter copies) leave out the `Nats-Expected-*` and `Nats-Rollup` headers of the message it consumed, in any case, which were asked of its source's stream when it was stored there (a header a step of the route sets is sent, also set to the value it was consumed with; `Nats-Msg-Id` is kept; webhooks, WebSocket and event-stream clients and the tap see every header: docs/scaling.md, 'What a copy does not ask of its stream'); a full stream made with `discard: new`, which the gateway does not declare, refuses a publish as `maximum messages exceeded` or `maximum bytes exceeded` (or `maximum messages per subject exceeded`, with `discard_new_per_subject`), a 503 until it has room; a message over such a stream's `max_msg_size`, headers included, is a 413 `EG_PAYLOAD_TOO_LARGE`, dead-lettered or dropped by consume routes, never retried), and a consume route reads through a durable consumer named after its group, acknowledging each message only after every target accepted it (at least once; a message held past `ackWaitMs` is redelivered, so the gateway signals progress while a route works on one). That consumer is the gateway's: each time the route subscribes it sets `ack_wait` from `ackWaitMs`, no `max_deliver` and no `backoff`, replacing what an operator set on a consumer of that name (a `max_deliver` or `backoff` replaced is warned of once), since the route retries and dead-letters by itself (docs/scaling.md, 'JetStream redelivery against the gateway's retries'). Other subjects are core NATS, at most once: a publish is confirmed by the server's reply to a flush but not stored (one the server refuses for the user's permissions, `-ERR 'Permissions Violation for Publish to ...'`, is a 503 naming the subject, not a 2xx: the server dropped it; a refused JetStream publish gets no PubAck and is answered so at once, not at `ackTimeoutMs`), and consume routes (a queue group per route group) get only what is published while they are connected. Request-reply is not carried: a consumed message's reply subject is not among its headers and the gateway sends no reply to it, so a requester (`nats request`, `nc.request()`) to a subject a route reads waits out its timeout; carry what a responder needs in a header. Subject wildcards (`*`, `>`) work in `from.topic`, with the concrete subject as `$topic`; NATS headers are the message headers, both ways (CloudEvents as `ce_<name>` headers and `content-type`, as inside the gateway and on Kafka; a consumed message with the NATS CloudEvents binding's `ce-<name>` headers, in any case, is a binary-mode event too, its values unquoted and percent-decoded, `ce-datacontenttype` its content type; `cloudevents: structured` sends the JSON event with `content-type: application/cloudevents+json`; a consumed `Content-Type` or `Content-Encoding` in any case, as Go's NATS client writes them, is read as `content-type` or `content-encoding` and so named in `$headers` and on targets, as Go's readers match names regardless of case; other names keep their spelling), except that a value's leading and trailing spaces and tabs are not kept (NATS headers are MIME-style: the nats client trims them when it writes a message and when it reads one, as other NATS clients do, so `\"  a  \"` arrives as `\"a\"`; HTTP clients' header values are trimmed the same way by HTTP itself); a message with a header NATS cannot carry (a name that is not printable ASCII or has a colon, a value with CR or LF) is not sent: it fails as invalid (400 `EG_INVALID_MESSAGE`; consume routes dead-letter it); a consumed header whose name is not printable ASCII (`Über: 1`, which other publishers may send and nats-server passes on, though the nats client will not read it) is read as it came, so the message goes on to other kinds of targets, and a NATS target refuses it as above; a message larger than the server's `max_payload` (1 MiB by default) is not sent either: 413 `EG_PAYLOAD_TOO_LARGE`, dead-lettered or dropped by consume routes, never retried. A subject a route names as it is must be one the server takes: a wildcard in a `to` or `deadletter` subject (nats-server would store or deliver `a.>` as that very text, to no subscriber of a concrete subject), or a malformed `from.topic` (`a.>.b`, `a..b`), is a config error at its line; so is a subject holding a control character (`\"in\\0.x\"`: nats-server takes it, and no one subscribes to it), and one over 3840 bytes, which would make the protocol line that carries it longer than nats-server takes (`max_control_line`, 4 KiB by default: it closes the connection, failing every publish on it and dropping every subscription), and a computed one that long, or holding a control character, fails (500) before it is sent. The client reconnects by itself; `/readyz` reports the broker while it is disconnected and publishes answer 503 (a server entering lame duck mode, `nats-server --signal ldm`, is warned of when it says so, before it closes the connection). A changed nats broker is replaced on reload, unless every key changed is one read per publish or per message, `ackTimeoutMs` or `corePendingBytes`: those apply in place from the next one, the connection, subscriptions and consumers kept (docs/scaling.md, 'What else a reload or a stop does'). Unchanged routes keep their consumers, and a route a reload rebuilds that reads the same subject with the same group and start position (only its steps, targets, `deadletter`, webhook `concurrency` or `orderBy` changed) takes the live core subscription or JetStream read over: nothing published meanwhile on a core subject is missed (docs/scaling.md, 'Hot reload with several instances'). A route's `startFrom` places a new JetStream consumer only: an existing one goes on from where it is (nats-server cannot change where a consumer starts, and its acknowledged position is what loses nothing), as a Kafka group's committed offsets outrank `startFrom`; the gateway says so in its log. To start a group over, delete its consumer (`nats consumer rm <stream> <group>`). A consumer the server refuses to make leaves its route not ready, `/readyz` naming the consumer and /admin/status the server's words, tried again with backoff: a work-queue stream (`retention: workqueue`, an operator's, named with `declare: false`; nats-server removes each message once one consumer acknowledged it) takes one consumer per subject, so a second group reading a subject of it is refused (`filtered consumer not unique on workqueue stream`) while the first reads every message. A route given another subject (`from.topic`) in the same stream and group gets its consumer recreated, going on after the last message it acknowledged, or from where the stream ended when the new route started (on a reload, before the new config took requests) if that is earlier, as it is in a rolling update (nats-server 2.9 takes a changed filter in place but then steps over new messages); a group's consumer reads one subject, so two routes of one config reading different subjects of a stream with one group are a config error at the second's group, as are two reading one subject with groups that name one consumer (a consumer's name has no `.`: groups `a.b` and `a_b` both name consumer `a_b`, which the routes would split the messages of; so do routes `x.y` and `x_y` forwarding only to listeners, whose groups of their own on each instance are named after them), and an instance that finds its group's consumer made again for another subject by another instance (a rolling update that changes the subject) leaves it to that instance, not ready meanwhile, and takes it back once no instance has read it for 5 seconds (docs/scaling.md, 'Changing what a route reads in a rolling update'). A consumed payload goes on to a broker or webhook byte for byte wherever no step changed the value: binary payloads, and JSON as its publisher spelled it.",
    example:
      'brokers:\n  nats:\n    kind: nats\n    servers: ${NATS_URL}              # "nats://a:4222,nats://b:4222" is split at the commas\n    streams:\n      ORDERS: { subjects: ["orders.>"], maxAgeMs: 604800000 }\nroutes:\n  - name: order-events\n    from: { broker: nats, topic: "orders.*" }        # JetStream: stream ORDERS holds orders.>\n    to: { listener: ws, path: /orders }\n  - name: presence\n    from: { listener: api, path: /presence }\n    to: { broker: nats, topic: presence.online }     # core NATS: at most once',
  },
  compile: compileNats,
  topicProblem: (topic, use) => (use === 'publish' ? publishSubjectProblem(topic) : withForeignWildcardHint(subjectFilterProblem(topic), topic, NATS_WILDCARDS, 'NATS')),
  // A durable JetStream consumer reads the stream from its start position; a core subject has nothing kept.
  newGroupStart: (topic, asked, o) =>
    Object.values(o.streams ?? {}).some((s) => s.subjects.some((p) => subjectCovers(p, topic))) ? (asked.startFrom ?? asked.defaultStartFrom ?? 'earliest') : undefined,
  // A group is one durable consumer per stream, and a consumer reads one subject (nats-server 2.9).
  sharedConsumer: (group, topic, o) => {
    const stream = Object.entries(o.streams ?? {}).find(([, s]) => s.subjects.some((p) => subjectCovers(p, topic)))?.[0];
    return stream === undefined
      ? undefined
      : {
          name: `JetStream consumer '${consumerName(group)}' of stream '${stream}'`,
          clash: 'which reads one subject, so the two routes cannot both read through it',
        };
  },
  // A filter's messages come with their own subjects (`$topic`), the ones it covers.
  topicsRead: (filter) => ({ matches: (subject) => subjectCovers(filter, subject), literal: !filter.split('.').some((t) => t === '*' || t === '>'), what: `a subject matching ${filter}` }),
  readWarning: (from, o) => foreignWildcardHint(from, NATS_WILDCARDS, 'NATS', 'subject') ?? partlyInStream(from, o),
  consumedHeaders: headersRead,
  publishInstruction: isPublishInstruction,
  keyless: 'a `key` would be dropped (carry it in a header instead: `headers: {set: {key: ...}}`)',
  canReconfigure: (before, after) => onlyInPlaceChanged(before, after, IN_PLACE),
  inPlaceOptions: IN_PLACE,
  // Its subscriptions never read a route's dead-letter closure, window or order keys (one message
  // at a time): a route that only changed those is handed over, not subscribed again (no gap).
  handOverTakes: ['inFlight', 'ordered', 'deadletter'],
  create: (name, settings, env) => new (runtime().NatsBroker)(name, settings, env),
});

/**
 * The seed `nkeyFile` holds (a line of its own: nsc's `.nk` files may hold only it, or it among
 * comment lines), or false when the file cannot be read, holds none, or comes beside another login.
 */
function compileNkeyFile(o: NatsOptions, ctx: BrokerCompileContext): string | undefined | false {
  if (o.nkeyFile === undefined) return undefined;
  // Beside credsFile, said once, there.
  if (o.credsFile !== undefined) return false;
  const others = (['user', 'password', 'token'] as const).filter((k) => o[k] !== undefined);
  if (others.length > 0) {
    ctx.report(['nkeyFile'], 'EG_CONFIG_SCHEMA', `nkeyFile is a login of its own: leave out ${others.map((k) => `'${k}'`).join(' and ')}, which nats-server would not take beside it`);
    return false;
  }
  const text = ctx.readFile(o.nkeyFile, ['nkeyFile']);
  if (text === undefined) return false;
  const seed = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .find((l) => USER_SEED.test(l));
  if (seed === undefined) {
    ctx.report(['nkeyFile'], 'EG_CONFIG_FILE', `'${o.nkeyFile}' holds no user NKey seed (a line SU... of 58 characters, as \`nk -gen user\` writes it)`);
    return false;
  }
  return seed;
}

/**
 * The JWT and seed `credsFile` holds, or false when the file cannot be read, holds no user JWT and
 * seed, or comes beside another login (nats-server takes one way of logging in per connection).
 */
function compileCredsFile(o: NatsOptions, ctx: BrokerCompileContext): NatsCreds | undefined | false {
  if (o.credsFile === undefined) return undefined;
  const others = (['user', 'password', 'token', 'nkeyFile'] as const).filter((k) => o[k] !== undefined);
  if (others.length > 0) {
    ctx.report(['credsFile'], 'EG_CONFIG_SCHEMA', `credsFile is a login of its own: leave out ${others.map((k) => `'${k}'`).join(' and ')}, which nats-server would not take beside it`);
    return false;
  }
  const text = ctx.readFile(o.credsFile, ['credsFile']);
  if (text === undefined) return false;
  const creds = parseCreds(text);
  if ('problem' in creds) {
    ctx.report(['credsFile'], 'EG_CONFIG_FILE', `'${o.credsFile}' ${creds.problem}`);
    return false;
  }
  // A warning, not an error: validate may run on another clock and day than the gateway (CI), and
  // a reload of the rest of a config is not refused for it (the server refuses the login, said then).
  const when = credsTimeProblem(creds);
  if (when !== undefined) ctx.warn(['credsFile'], 'EG_CONFIG_CREDENTIALS_VALIDITY', `'${o.credsFile}' holds a user JWT that, by this machine's clock, ${when}`);
  return creds;
}

/**
 * A filter that reaches into a stream without being inside one (`orders.>` beside a stream of
 * `orders.*`): such a route is core NATS, at most once, for the stream's subjects too, where a
 * reader of the stream expects its stored messages and a durable consumer.
 */
function partlyInStream(from: string, o: NatsSettings): string | undefined {
  if (subjectFilterProblem(from) || Object.values(o.streams).some((s) => s.subjects.some((p) => subjectCovers(p, from)))) return undefined;
  for (const [name, stream] of Object.entries(o.streams))
    for (const p of stream.subjects) {
      if (!subjectFilterProblem(p) && subjectsOverlap(p, from) !== undefined)
        return `'${from}' reaches into stream '${name}' (its subject '${p}') without being inside it: the route reads it all as core NATS, at most once and only while connected, not through a durable consumer of the stream; read '${p}' in a route of its own, or make the stream hold all of '${from}'`;
    }
  return undefined;
}

const runtime = whenUsed<{ NatsBroker: typeof NatsBroker }>(import.meta.url, './nats/broker.js');
