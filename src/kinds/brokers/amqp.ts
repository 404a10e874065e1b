import type { ConnectionOptions } from 'node:tls';
import type { BrokerCompileContext } from '../contracts.js';
import { defineBroker, kindOptions, mapOf, oneOf, oneOfStrings, Type, type Static } from '../define.js';
import type { AmqpBroker } from './amqp/broker.js';
import { compileTls, TLS_OPTIONS } from './tls.js';
import { checkServerUrl, hostEndsEarly } from './server-url.js';
import { urlParameterProblems } from './amqp/url-parameters.js';
import { whenUsed } from '../when-used.js';
import { onlyInPlaceChanged } from './in-place.js';
import { AMQP_WILDCARDS, foreignWildcardHint } from './foreign-wildcards.js';
import {
  type BindingArgument,
  bindingMatches,
  directPatternHint,
  type ExchangeType,
  exchangeTypeOf,
  isPattern,
  keyIgnoredBy,
  RABBITMQ_EXCHANGES,
  routesWithoutHeaders,
  serverOf,
  X_MATCH,
} from './amqp/bindings.js';
import { deadLetterRoutingKeyProblem, nonDurableProblem, queueArgumentProblem } from './amqp/queue-arguments.js';
import { closest } from '../../config/suggest.js';
import { fromAmqpHeaders } from '../../codecs/cloudevents.js';
import { DEFAULT_EXCHANGE_BINDING, overShortString, queueNameProblem, reservedNameProblem, routingKeyProblem } from './amqp/routing-keys.js';

const int = (def: number, min: number, description: string) => Type.Optional(Type.Integer({ minimum: min, default: def, description }));

const binding = oneOf(
  [
    Type.String({ description: "Routing key (a pattern for a topic exchange) on the broker's exchange." }),
    Type.Object(
      {
        exchange: Type.Optional(Type.String({ description: "Exchange to bind to (default: the broker's exchange)." })),
        routingKey: Type.Optional(Type.String({ description: 'Routing key or pattern (needed unless the binding has `arguments`; a headers exchange does not read it).' })),
        arguments: Type.Optional(
          Type.Object(
            {
              'x-match': Type.Optional(
                oneOfStrings(X_MATCH, {
                  default: 'all',
                  description: 'Whether a message needs every header named here (`all`) or one of them (`any`); `all-with-x` and `any-with-x` (RabbitMQ 3.10+) match `x-` headers too.',
                }),
              ),
            },
            {
              additionalProperties: Type.Union([Type.String(), Type.Number(), Type.Boolean()]),
              description:
                "Headers exchanges: the header values this binding routes by (`{x-match: any, region: eu, priority: 1}`), as RabbitMQ matches them: by type and value, so write a string for what the gateway publishes (its headers are strings) and a number or boolean for what a publisher sends typed. A message to the exchange reaches the queue when it has every one of these headers (`x-match: all`, the default) or any one (`any`). Only on a headers exchange (the broker's with `type: headers`, `amq.headers`, `amq.match`, or one the gateway does not declare); on an exchange of another type RabbitMQ ignores them, and the config says so at the line.",
            },
          ),
        ),
      },
      { additionalProperties: false },
    ),
  ],
  { description: "A routing key on the broker's exchange, or `{exchange, routingKey, arguments}`." },
);

const queue = Type.Object(
  {
    declare: Type.Optional(
      Type.Boolean({
        default: true,
        description:
          "Declare the queue (with its `arguments` and `bindings`) at every connect, and again when a route that reads it finds it deleted on the server (logged once: `amqp queue 'Q' was deleted on the server or lost its bindings; declared again with its arguments and bindings`; the route then consumes on, with no reconnect); false when it must exist already (checked by each route that reads it, at every connect and again with backoff while it is missing: only those routes wait, not ready with `route NAME: queue 'Q' not found on broker 'B'` in /readyz, logged once; they start by themselves once it exists and consume what it holds, while the broker, its publishes and its other routes go on).",
      }),
    ),
    durable: Type.Optional(Type.Boolean({ default: true, description: 'The queue survives a server restart.' })),
    bindings: Type.Optional(
      Type.Array(binding, {
        description:
          "Bindings of the queue: routing keys (patterns for a topic exchange) on the broker's exchange, or `{exchange, routingKey}`; on a headers exchange `{exchange, arguments: {x-match: all|any, <header>: <value>, ...}}`: a message reaches the queue when it has every header named (`x-match: all`, the default) or any one (`any`; `all-with-x`, `any-with-x` match `x-` headers too, RabbitMQ 3.10+), each of equal type and value as RabbitMQ compares them (the gateway publishes headers as strings, so write `region: eu`, `priority: \"1\"` for its publishes; a number or boolean matches a publisher's typed header). `arguments` on an exchange the config knows is no headers one (the broker's declared `topic`, `direct` or `fanout` exchange, `amq.topic`, ...) is a config error at its line: RabbitMQ ignores them there. A binding needs a `routingKey` or `arguments`. validate warns (EG_CONFIG_SUSPICIOUS_TOPIC) of arguments on a headers exchange naming no header to match (`{x-match: all}` alone matches every message, `any` none; `x-` names count only with `all-with-x` or `any-with-x`), of a binding key written in another broker's wildcard syntax (`orders/+` on a topic exchange: did you mean `orders.*`?), and of a pattern on a direct exchange, which takes `orders.*` as one literal key. `eventgate plan` lists the bindings a reload makes and drops (docs/scaling.md). A publish that comes back unroutable declares again the queues whose bindings its routing key, or on a headers exchange its headers, match (see `declare`), and binds again the queue of each routing-key route whose pattern matches it: an exchange deleted and made again by another client (a definitions import) takes the bindings to it along, so the gateway's queues are there, consumed and ready, and bound to nothing until a publish of the gateway's for them comes back (503) or the broker reconnects; other clients' publishes meanwhile are unroutable (docs/scaling.md).",
      }),
    ),
    deadLetterExchange: Type.Optional(
      Type.String({
        description:
          "RabbitMQ dead-letter exchange (`x-dead-letter-exchange`): gets what RabbitMQ itself dead-letters (TTL, length limit); the gateway dead-letters to the route's `deadletter` target.",
      }),
    ),
    arguments: Type.Optional(
      Type.Record(Type.String(), Type.Unknown(), {
        description:
          "Further queue arguments (`x-message-ttl`, `x-queue-type`, ...). A value RabbitMQ refuses whatever the queue (`x-max-length` not a whole number of 0 or more, `\"2\"` in quotes included; `x-expires` 0; `x-max-priority` over 255; `x-overflow` other than `drop-head`, `reject-publish`, `reject-publish-dlx`; `x-queue-type` other than `classic`, `quorum`, `stream`; `x-queue-mode` other than `default`, `lazy`; `x-single-active-consumer` not a boolean; `x-dead-letter-routing-key` on a queue with no dead-letter exchange), and a `quorum` or `stream` queue with `durable: false`, is a config error at its line (`x-delivery-limit` is not checked: RabbitMQ takes any value, and 4.x reads `-1` as no limit); which arguments a queue type takes (`x-delivery-limit` on quorum queues, `x-max-priority` on classic ones) is left to the server: the routes that read such a queue are not ready (`queue 'Q' on broker 'B' is refused as declared` in /readyz, the server's `406 PRECONDITION_FAILED - invalid arg ...` in /admin/status) and declare it again with backoff until a reload puts it right. RabbitMQ keeps a queue's arguments: other ones for a queue it has (a config, or a reload, that changes them) are refused, 406 PRECONDITION_FAILED: the routes that read the queue are not ready (`queue 'Q' on broker 'B' is not as declared`, the server's words in /admin/status) and declare it again with backoff until the queue is deleted on the server or the config aligned again; the broker's publishes (into the queue the server has) and its other routes go on. A queue at its `x-max-length` (or `x-max-length-bytes`) does as its `x-overflow` says: `drop-head` (RabbitMQ's default) takes the message, 200, and drops its oldest one (to the queue's `deadLetterExchange` when it has one); `reject-publish` refuses it, so the publish is 503 (basic.nack), never 2xx; `reject-publish-dlx` refuses it too (503), and RabbitMQ also puts it on the queue's `deadLetterExchange`: a client that sends it again may leave a second copy there.",
      }),
    ),
  },
  { additionalProperties: false },
);

const options = kindOptions('amqp', {
  url: Type.String({
    minLength: 1,
    description:
      'Server URL: `amqp://user:password@host:5672/vhost` (`amqps://` for TLS); query parameters `heartbeat`, `frameMax`, `channelMax`, `maxFrameSize` (whole numbers; `frameMax` and `maxFrameSize` 0 or at least 4096) and `locale` pass to amqplib (another is ignored, with a warning). Percent-encode `@ : / ? #` in the user and password (`%40 %3A %2F %3F %23`): an unencoded `/`, `?` or `#` ends the host early, and a URL with an `@` after its host and none before is a warning (EG_CONFIG_SERVER_URL).',
  }),
  tls: Type.Optional(TLS_OPTIONS),
  exchange: Type.Optional(
    oneOf(
      [
        Type.String(),
        Type.Object(
          {
            name: Type.String({
              description:
                'Exchange name (`""` is the default exchange: the routing key is a queue name; RabbitMQ binds each queue to it by its name and refuses other bindings, so with it a binding in `queues`, or a consume route whose `from.topic` is a routing-key pattern rather than a queue of `queues`, is a config error at its line).',
            }),
            type: Type.Optional(
              oneOfStrings(['topic', 'direct', 'fanout', 'headers'], {
                default: 'topic',
                description:
                  "Exchange type, when the gateway declares it (RabbitMQ's own exchanges, `amq.fanout`, `amq.headers`, ..., have theirs whatever it says). A `fanout` exchange routes every message to every queue bound to it, and a `headers` exchange by the header values of a binding's `arguments` (`queues.<name>.bindings: [{arguments: {x-match: all, region: eu}}]`; a binding without them matches every message): on either, binding keys and a route's routing-key pattern filter nothing, so a route reading a pattern there gets every message published there; validate warns of such a key (EG_CONFIG_SUSPICIOUS_TOPIC), and of a route's routing key or a binding key written as a pattern (`orders.*`, `#`) on a `direct` exchange, which compares whole keys and takes it as one literal key. Filter on `$topic`, bind a queue of `queues` with `arguments` on a headers exchange, or use a `topic` or `direct` exchange.",
              }),
            ),
            declare: Type.Optional(
              Type.Boolean({
                default: true,
                description:
                  "Declare the exchange (durable) at connect; false when it must exist already (checked at every connect: while it is missing the broker is not ready, `topology not ready` in /readyz, and publishes answer 503 naming it). The gateway declares it without arguments, so an existing exchange made with some (an `alternate-exchange` given at its declare rather than by a policy) refuses the declare, `406 PRECONDITION_FAILED - inequivalent arg 'alternate-exchange'`, and the broker never connects: write `declare: false` for it. Its alternate exchange then takes what no queue is bound for, and such a publish answers 2xx (`mandatory` refuses only what RabbitMQ returns).",
              }),
            ),
          },
          { additionalProperties: false },
        ),
      ],
      { description: 'Exchange that publishes go to (the topic is the routing key) and that routing-key routes bind their queue to: a name, or `{name, type, declare}`; default `amq.topic`.' },
    ),
  ),
  queues: Type.Optional(
    mapOf(queue, {
      description: 'Queues that consume routes name in `from.topic`: declared (with their bindings) at every connect and again by a route that finds one deleted, or existing ones (`declare: false`).',
    }),
  ),
  // AMQP's basic.qos count is 16 bits: amqplib threw on a larger one at every consumer start.
  prefetch: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 65535,
      default: 20,
      description:
        "Most unacknowledged messages a consume route holds (at most 65535, AMQP's limit). They are handled one at a time, in order, unless the route's targets are all webhooks: then up to min(prefetch, the webhooks' `concurrency`) at once, in order per `orderBy` value only, each acknowledged by itself once done.",
    }),
  ),
  persistent: Type.Optional(Type.Boolean({ default: true, description: 'Publish persistent messages (delivery mode 2): they survive a server restart in durable queues.' })),
  mandatory: Type.Optional(Type.Boolean({ default: true, description: 'A publish no queue is bound for fails (503) instead of being dropped by the server.' })),
  connectTimeoutMs: int(
    5000,
    1,
    'Time to open a connection, the AMQP handshake included. A server that accepts the connection but does not answer by then (not a RabbitMQ port, or one still starting) is logged as `no answer from HOST:PORT within connectTimeoutMs`, and tried again with backoff.',
  ),
  ackTimeoutMs: int(
    5000,
    1,
    'A publish not confirmed by then fails: HTTP 503, retry for consume routes, which first wait for the late confirm (taken: not published again; at most `ackTimeoutMs` + `connectTimeoutMs` more).',
  ),
  lagPollMs: int(5000, 100, 'How often each consume route asks the server how many messages wait in its queue (`eventgate_amqp_consumer_lag`).'),
  routeQueueExpiresMs: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: Number.MAX_SAFE_INTEGER,
      description:
        "The queues of routing-key routes (`eventgate-<route>`, or the route's `group`) are declared with RabbitMQ's `x-expires`: one no consumer has used for this long is deleted by the server, with the messages in it. It bounds what a route a reload renames or removes leaves collecting (docs/scaling.md); set it well above the longest time every instance may be down at once (a deploy, an outage), or what is published meanwhile goes with the queue. RabbitMQ keeps a queue's arguments: to change this on queues that exist, delete them (a declare with another value is refused, 406 PRECONDITION_FAILED, and the route waits). Not set: they never expire.",
    }),
  ),
});
type AmqpOptions = Static<typeof options>;

export interface AmqpQueue {
  declare: boolean;
  durable: boolean;
  bindings: { exchange?: string; routingKey: string; arguments?: Record<string, BindingArgument> }[];
  deadLetterExchange: string | undefined;
  arguments: Record<string, unknown>;
}

/** The options compiled: defaults filled in, TLS files read. What the runtime gets. */
export interface AmqpSettings {
  url: string;
  tls: ConnectionOptions | undefined;
  exchange: { name: string; type: 'topic' | 'direct' | 'fanout' | 'headers'; declare: boolean };
  /** A plain record, not a Map: reloads compare compiled options by their canonical JSON. */
  queues: Record<string, AmqpQueue>;
  prefetch: number;
  persistent: boolean;
  mandatory: boolean;
  connectTimeoutMs: number;
  ackTimeoutMs: number;
  lagPollMs: number;
  routeQueueExpiresMs: number | undefined;
}

function compileAmqp(o: AmqpOptions, ctx: BrokerCompileContext): AmqpSettings | undefined {
  let ok = checkServerUrl(o.url, /^amqps?:\/\/[^\s/]+/, 'an AMQP URL: expected amqp://user:password@host:5672/vhost (or amqps://)', ctx);
  // Not when the host most likely ends early (checkServerUrl warned): what follows a `?` is then the
  // rest of a password (`amqp://gateway:12?s3cret@rabbitmq`), which a parameter's message would quote.
  if (ok && hostEndsEarly(o.url) === undefined) {
    const parameters = urlParameterProblems(o.url);
    for (const e of parameters.errors) ctx.report(['url'], 'EG_CONFIG_SCHEMA', e);
    for (const w of parameters.warnings) ctx.warn(['url'], 'EG_CONFIG_SERVER_URL', w);
    if (parameters.errors.length) ok = false;
  }
  const tls = compileTls(o.tls, ctx);
  if (tls === false) ok = false;
  /**
   * Exchange and queue names and binding keys are AMQP short strings: amqplib refuses a longer one
   * at every connect. A longer `deadLetterExchange` RabbitMQ takes, but no exchange can have that
   * name, and RabbitMQ drops what it dead-letters to a missing one.
   */
  const checkLength = (path: (string | number)[], what: string, text: string | undefined) => {
    if (text === undefined || !overShortString(text)) return;
    ctx.report(path, 'EG_CONFIG_SCHEMA', `${what} is ${Buffer.byteLength(text)} bytes; AMQP names and routing keys are at most 255 bytes`);
    ok = false;
  };
  const checkReserved = (path: (string | number)[], name: string | undefined, what: 'exchange' | 'queue') => {
    const why = name === undefined ? undefined : reservedNameProblem(name, what);
    if (why === undefined) return;
    ctx.report(path, 'EG_CONFIG_SCHEMA', why);
    ok = false;
  };
  const ex = typeof o.exchange === 'string' || o.exchange === undefined ? { name: o.exchange ?? 'amq.topic' } : o.exchange;
  const exchangePath = typeof o.exchange === 'object' ? ['exchange', 'name'] : ['exchange'];
  checkLength(exchangePath, 'the exchange name', ex.name);
  checkReserved(exchangePath, ex.name, 'exchange');
  const queues: Record<string, AmqpQueue> = {};
  for (const [name, q] of Object.entries(o.queues ?? {})) {
    const declare = q.declare ?? true;
    checkLength(['queues', name], 'the queue name', name);
    if (declare) checkReserved(['queues', name], name, 'queue');
    checkLength(['queues', name, 'deadLetterExchange'], 'the dead-letter exchange name', q.deadLetterExchange);
    checkReserved(['queues', name, 'deadLetterExchange'], q.deadLetterExchange, 'exchange');
    (q.bindings ?? []).forEach((b, i) => {
      const on = typeof b === 'string' || b.exchange === undefined ? ex.name : b.exchange;
      if (on === '') {
        ctx.report(
          ['queues', name, 'bindings', i],
          'EG_CONFIG_SCHEMA',
          `queue '${name}' cannot be bound to the default exchange: ${DEFAULT_EXCHANGE_BINDING}; a publish with the routing key '${name}' reaches it`,
        );
        ok = false;
      }
      if (typeof b === 'object' && !bindingArgumentsFit(b, on === ex.name ? { ...ex, declare: ex.declare ?? true } : { name: on }, ['queues', name, 'bindings', i], ctx)) ok = false;
      const routingKey = typeof b === 'string' ? b : (b.routingKey ?? '');
      const exchange = on === ex.name ? ex : { name: on };
      const keyAt = typeof b === 'string' ? ['queues', name, 'bindings', i] : ['queues', name, 'bindings', i, 'routingKey'];
      const ignored = keyIgnoredBy(exchange, routingKey);
      if (ignored) {
        const gets =
          typeof b === 'object' && b.arguments !== undefined
            ? `is bound to exchange '${on}' by its arguments alone: routing key '${routingKey}' chooses nothing`
            : `gets every message published to exchange '${on}', not only those with routing key '${routingKey}'`;
        ctx.warn(keyAt, 'EG_CONFIG_SUSPICIOUS_TOPIC', `queue '${name}' ${gets}: ${ignored}`);
      }
      // A binding key is a filter as a route's routing key is (readWarning): written in another kind's syntax, or as a pattern a direct exchange takes as one key.
      const type = exchangeTypeOf(exchange);
      const keyHint = type === 'topic' ? foreignWildcardHint(routingKey, AMQP_WILDCARDS, 'AMQP', 'routing key') : type === 'direct' ? directPatternHint(routingKey, on) : undefined;
      if (keyHint) ctx.warn(keyAt, 'EG_CONFIG_SUSPICIOUS_TOPIC', `queue '${name}': ${keyHint}`);
      // Arguments naming no header filter nothing (x-match all: every message) or shut the queue off (any: none).
      const routes = typeof b === 'object' && b.arguments !== undefined && type === 'headers' ? routesWithoutHeaders(b.arguments) : undefined;
      if (routes && typeof b === 'object') {
        const written = Object.entries(b.arguments ?? {})
          .map(([k, v]) => `${k}: ${v}`)
          .join(', ');
        ctx.warn(
          ['queues', name, 'bindings', i, 'arguments'],
          'EG_CONFIG_SUSPICIOUS_TOPIC',
          `queue '${name}' is bound to headers exchange '${on}' by arguments naming no header to match ({${written}}): it gets ${routes} message published there; name the headers and values it is for (region: eu)`,
        );
      }
      if (typeof b === 'string') return checkLength(['queues', name, 'bindings', i], 'the binding key', b);
      checkLength(['queues', name, 'bindings', i, 'routingKey'], 'the binding key', b.routingKey);
      checkLength(['queues', name, 'bindings', i, 'exchange'], 'the exchange name', b.exchange);
      checkReserved(['queues', name, 'bindings', i, 'exchange'], b.exchange, 'exchange');
    });
    if (declare) {
      for (const [arg, value] of Object.entries(q.arguments ?? {})) {
        const why = queueArgumentProblem(arg, value);
        if (why === undefined) continue;
        ctx.report(['queues', name, 'arguments', arg], 'EG_CONFIG_SCHEMA', `queue '${name}': ${why}`);
        ok = false;
      }
      const orphanKey = deadLetterRoutingKeyProblem(q.arguments ?? {}, q.deadLetterExchange);
      if (orphanKey) {
        ctx.report(['queues', name, 'arguments', 'x-dead-letter-routing-key'], 'EG_CONFIG_SCHEMA', `queue '${name}': ${orphanKey}`);
        ok = false;
      }
      const nonDurable = nonDurableProblem(q.arguments?.['x-queue-type'], q.durable ?? true);
      if (nonDurable) {
        ctx.report(['queues', name, 'durable'], 'EG_CONFIG_SCHEMA', `queue '${name}': ${nonDurable}`);
        ok = false;
      }
    }
    if (!declare && (q.bindings || q.deadLetterExchange !== undefined || q.arguments)) {
      ctx.report(['queues', name], 'EG_CONFIG_SCHEMA', `queue '${name}' has declare: false (it must exist already), so it cannot also set bindings, deadLetterExchange or arguments`);
      ok = false;
    }
    queues[name] = {
      declare,
      durable: q.durable ?? true,
      bindings: (q.bindings ?? []).map((b) => (typeof b === 'string' ? { routingKey: b } : { ...b, routingKey: b.routingKey ?? '' })),
      deadLetterExchange: q.deadLetterExchange,
      arguments: q.arguments ?? {},
    };
  }
  if (!ok) return undefined;
  return {
    url: o.url,
    tls: tls || undefined,
    exchange: { name: ex.name, type: ex.type ?? 'topic', declare: ex.declare ?? true },
    queues,
    prefetch: o.prefetch ?? 20,
    persistent: o.persistent ?? true,
    mandatory: o.mandatory ?? true,
    connectTimeoutMs: o.connectTimeoutMs ?? 5000,
    ackTimeoutMs: o.ackTimeoutMs ?? 5000,
    lagPollMs: o.lagPollMs ?? 5000,
    routeQueueExpiresMs: o.routeQueueExpiresMs,
  };
}

/**
 * The routing keys (`$topic`) of the messages a route reading `from` gets: on a queue of `queues`,
 * keys its bindings to the broker's exchange let through (any key when it has none, a binding to
 * another exchange, or `declare: false`: bindings the config does not know route to it); on a
 * routing-key pattern, the keys the exchange routes by it.
 */
function amqpTopicsRead(from: string, o: AmqpSettings): { matches(key: string): boolean; literal: boolean; what: string; unknown?: boolean } {
  const type = exchangeTypeOf(o.exchange);
  const queue = Object.hasOwn(o.queues, from) ? o.queues[from]! : undefined;
  if (queue === undefined) {
    const literal = type === 'direct' || (type === 'topic' && !isPattern(from));
    return { matches: (key) => bindingMatches(type, { routingKey: from }, key), literal, what: `a routing key the ${type} exchange '${o.exchange.name}' routes by ${from}` };
  }
  const known = queue.declare && queue.bindings.length > 0 && queue.bindings.every((b) => b.exchange === undefined || b.exchange === o.exchange.name);
  if (!known) return { matches: () => true, literal: false, what: `the routing key of a message on queue '${from}'`, unknown: true };
  const keys = queue.bindings.map((b) => b.routingKey).join(', ');
  return { matches: (key) => queue.bindings.some((b) => bindingMatches(type, b, key)), literal: false, what: `a routing key queue '${from}' is bound for (${keys})` };
}

/**
 * Whether a `{exchange, routingKey, arguments}` binding is whole: a routing key or arguments (a
 * binding of neither would bind the key `""`, which only a headers or fanout exchange makes
 * anything of), and arguments only where the exchange routes by them. RabbitMQ takes arguments on a
 * binding to any exchange and ignores them on all but a headers one, so a topic exchange's queue
 * got every message its key matched, whatever the arguments said. The type is known for the
 * broker's own exchange and RabbitMQ's; another exchange is the server's to say.
 */
function bindingArgumentsFit(
  b: { exchange?: string; routingKey?: string; arguments?: Record<string, unknown> },
  exchange: { name: string; type?: ExchangeType; declare?: boolean },
  at: (string | number)[],
  ctx: BrokerCompileContext,
): boolean {
  if (b.routingKey === undefined && b.arguments === undefined) {
    ctx.report(at, 'EG_CONFIG_SCHEMA', "a binding needs a 'routingKey', or 'arguments' on a headers exchange");
    return false;
  }
  // The broker's exchange as the gateway declares it (`topic` unless said), or RabbitMQ's own; one that must exist has the server's type.
  const known = Object.hasOwn(RABBITMQ_EXCHANGES, exchange.name) || (exchange.declare !== undefined && (exchange.type !== undefined || exchange.declare));
  const type = exchangeTypeOf(exchange);
  if (b.arguments === undefined || !known || type === 'headers') return true;
  ctx.report(
    [...at, 'arguments'],
    'EG_CONFIG_SCHEMA',
    `exchange '${exchange.name}' is a ${type} exchange, which routes by the routing key and ignores binding arguments (RabbitMQ reads them on a headers exchange only): bind to a headers exchange, or filter with the routingKey`,
  );
  return false;
}

/**
 * The bindings of the queues a broker declares, in words: what RabbitMQ tells one binding from
 * another by (queue, exchange, routing key, arguments, in any order), so a changed argument is one
 * binding dropped and another made.
 */
function declaredBindings(o: AmqpSettings): string[] {
  const out = new Set<string>();
  for (const [queue, q] of Object.entries(o.queues)) {
    if (!q.declare) continue;
    for (const b of q.bindings) {
      const args = Object.entries(b.arguments ?? {}).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
      const by = [
        ...(b.routingKey !== '' || args.length === 0 ? [`routing key '${b.routingKey}'`] : []),
        ...(args.length > 0 ? [`arguments {${args.map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join(', ')}}`] : []),
      ];
      out.add(`queue '${queue}' on exchange '${b.exchange ?? o.exchange.name}', ${by.join(', ')}`);
    }
  }
  return [...out];
}

/**
 * A consume route on a broker whose exchange is the default one (`""`) reads a queue of `queues`:
 * a routing-key pattern would bind a queue of the route's own to that exchange, which RabbitMQ
 * refuses, so the route never started.
 */
function defaultExchangeReadProblem(from: string, o: AmqpOptions): string | undefined {
  const exchange = typeof o.exchange === 'object' ? o.exchange.name : o.exchange;
  if (exchange !== '' || Object.hasOwn(o.queues ?? {}, from)) return undefined;
  return "with the default exchange ('') a consume route reads a queue of queues (declare: false for one that exists): as a routing-key pattern it would bind a queue of its own to that exchange, which RabbitMQ refuses (403 ACCESS_REFUSED)";
}

/**
 * Keys read per publish (AmqpBroker.reconfigure applies them): a reload that changes only these
 * keeps the connection, the channels and the consumers. `prefetch` is a channel's basic.qos,
 * `lagPollMs` a route's timer: not among them.
 */
const IN_PLACE = ['ackTimeoutMs', 'persistent', 'mandatory'];

export const amqpBroker = defineBroker({
  options,
  doc: {
    summary:
      "A RabbitMQ (AMQP 0-9-1) server, through amqplib. Routes publish to the broker's `exchange` with the topic as routing key (`to: {broker, topic: orders.created}`; a routing key is no pattern: one written as one, `orders.*` or `#`, is routed as that one key of that name, and validate warns of it, EG_CONFIG_SUSPICIOUS_TOPIC), with publisher confirms: 2xx only after RabbitMQ confirmed the message, 503 when it did not within `ackTimeoutMs`, when the server is unreachable, or (`mandatory`, the default) when no queue is bound for the routing key; also when RabbitMQ nacks it because one queue it was routed to refused it (`x-overflow: reject-publish` at its `x-max-length`): the other queues bound for it keep their copies, so sending it again puts a second copy there, as the 503's detail says. A publish the server refuses by closing the publish channel is a 503 in the server's words (`the server closed the publish channel (403 ACCESS_REFUSED - access to exchange 'events' in vhost '/' refused for user 'gateway')`), as are the publishes in flight beside it: after a 403 (the user may not write to the exchange) the gateway opens a new publish channel on the same connection, the consume routes keeping theirs; after another (the exchange deleted while the gateway runs: 404 NOT_FOUND) it connects again (`reconnecting` in /readyz meanwhile, the server's words in /admin/status and the log), declaring the exchange, queues and bindings again (one that must exist, `declare: false`, is then `topology not ready` until it does). Consume routes read a queue (a stream queue, `x-queue-type: stream`, is read from its end each time the route subscribes: RabbitMQ keeps no position for an AMQP 0-9-1 consumer of a stream, so what is published while the route is not subscribed never reaches it, and validate warns of such a route; read a quorum or classic queue): `from.topic` names a queue of `queues` (declared with its bindings, at every connect and again when it was deleted on the server: by the route that finds it missing, or, for one no route reads, after a publish for its bindings came back unroutable, `mandatory`; or existing), or else is a routing-key pattern (`orders.*`, `#`) on the exchange, and the route's group names a durable queue the gateway declares and binds (WebSocket forward routes get an exclusive queue per instance; two routes of one group reading different patterns would share that queue and each get the other's messages: a config error at the second's group). A message is acknowledged only after every target accepted it; `prefetch` bounds those in hand. `$topic` is a message's routing key; AMQP headers are the message headers, both ways (a header name over 255 bytes cannot be sent, nor a `content-type` or `content-encoding` over 255 bytes, which go as properties: the message fails as invalid, 400 `EG_INVALID_MESSAGE`; a consumed header that is not a string is its text: a number, boolean or 64-bit integer (signed or not, exact past 2^53) its digits, a decimal `3.14`, a timestamp its seconds, a byte array its bytes as UTF-8, an array or nested table its JSON text, a void field left out; docs/scaling.md), except `content-type`, which is the `content_type` property: a published message's own `content-type` (a CloudEvent's `datacontenttype`; a plain message's while its value is still of that kind), else `application/json`, `text/plain` or `application/octet-stream` as the value is (consumed bytes that are not UTF-8, sent on as they came, `application/octet-stream`, as to webhooks); a consumed message's `content_type` is its `content-type` unless a `content-type` header (as earlier versions sent it) says otherwise; and `content-encoding`, which is the `content_encoding` property both ways (a consumed `gzip` body goes on as its bytes, with `content-encoding` as a header to MQTT 5, NATS and Kafka and `Content-Encoding` to webhooks, while no step changed the body; a step's new body goes without it). CloudEvents are published with the `ce_<name>` headers they have inside the gateway, as Kafka's binding names them (the CloudEvents AMQP binding is written for AMQP 1.0), `datacontenttype` being `content_type`; a consumed message whose `content_type` is `application/cloudevents+json` is a structured event, and one with the AMQP binding's binary-mode headers (`cloudEvents_<name>`, or `cloudEvents:<name>` as before the binding's 1.0.2; AMQP 1.0 publishers to RabbitMQ and the CloudEvents SDK's Spring AMQP converter send them) is a binary one, its attributes read as `ce_<name>` (a `cloudEvents_datacontenttype` header is its content type when it has no `content_type`; a `time` sent as an AMQP timestamp, the binding's type for it, its RFC 3339 text; an extension sent as AMQP binary, the binding's type for a Binary attribute, its base64 text, the CloudEvents canonical string). A message over the server's `max_message_size` (128 MiB by default in RabbitMQ 3.x) is 413 `EG_PAYLOAD_TOO_LARGE`, dead-lettered or dropped by consume routes, never retried: RabbitMQ tells the limit only by closing the publish channel for the first such message (failing, 503, the publishes in flight beside it), so the gateway then opens a new publish channel on the same connection (consume routes keep theirs) and refuses larger messages before sending them from then on, until it reloads or restarts. A message that fails for good goes to the route's `deadletter` target (the gateway's dead-letter path, with its `_eventgate_error` header) and is then acknowledged; a queue's `deadLetterExchange` only receives what RabbitMQ itself dead-letters (TTL, length limits, and a quorum queue's `x-delivery-limit`: every time a message goes back to the queue unacknowledged, a stop, a crash or a lost connection of the gateway with it in hand, counts as a delivery, so a message whose targets stay down across more restarts than the limit is dead-lettered there by RabbitMQ, or dropped without a dead-letter exchange, and never reaches the route's `deadletter`). Each broker opens two connections, named `eventgate <broker>` (the topology and the consume routes' channels) and `eventgate <broker> publish` (the publish channel), as RabbitMQ advises: during a memory or disk alarm the server blocks a connection that publishes and reads nothing more of it, acks included, so with one connection the consume routes that drain its queues stopped too (count two per broker against a user's `max-connections` limit). The connection is re-opened with backoff after a loss, and the publish connection with it; the publish connection lost alone (an operator's `rabbitmqctl close_connection`) is opened again by itself, the consume routes' channels kept, only the publishes in flight beside it failing (503); unacknowledged messages are redelivered by RabbitMQ. A connection the server closed itself and said why (530 NOT_ALLOWED over a channel limit, 320 CONNECTION_FORCED from an operator, a virtual host it refuses to open) is `closed by the server` in /readyz, with the server's code and words in /admin/status and the 503s, rather than `unreachable`. A routing key, queue name or routing-key pattern is at most 255 bytes (an AMQP short string): a longer `to`, `deadletter` or `from.topic` the config names is a config error at its line (amqplib refuses it, so a publish to it would fail every time and a consume route would never start), as is a routing-key route's longer `group` (it names the route's queue; the default `eventgate-<route name>` is reported at the route's name), as is a longer `exchange`, queue name or binding key in the broker's options (and `deadLetterExchange`: RabbitMQ drops what it dead-letters to an exchange that cannot exist); one computed by an expression is checked per message. Names starting with `amq.` are RabbitMQ's: an `exchange`, binding exchange or `deadLetterExchange` so named other than its own (`amq.direct`, `amq.fanout`, `amq.headers`, `amq.match`, `amq.topic`, `amq.rabbitmq.trace`), a queue of `queues` it would declare, or a routing-key route's `group`, is a config error at its line (RabbitMQ refuses to declare one, 403 ACCESS_REFUSED); a `declare: false` queue may be one the server named (`amq.gen-...`). A changed amqp broker is replaced on reload, unless every key changed is one read per publish, `ackTimeoutMs`, `persistent` or `mandatory`: those apply in place from the next publish, the connection, channels and consumers kept (docs/scaling.md, 'What else a reload or a stop does'). Unchanged routes keep their channels, and so does a route a reload rebuilds that reads the same queue or pattern with the same group (only its steps, targets, `deadletter`, webhook `concurrency` or `orderBy` changed): it takes the channel and consumer over, nothing requeued and delivered again. A binding a reload drops (of a declared queue, or a route's routing-key pattern) is unbound once the new bindings are in place; bindings made before the gateway last started are not known to it and stay (see docs/scaling.md). A consumed payload goes on to a broker or webhook byte for byte wherever no step changed the value: binary payloads, and JSON as its publisher spelled it. A published message carries the message's time as its `timestamp` property, in whole seconds: a copied message keeps the time it had (a Kafka record's CreateTime or an AMQP message's `timestamp`, 0 included), one received over HTTP or WebSocket the time the gateway received it; a consumed message without a `timestamp`, or with one past any date (AMQP allows 2^64 - 1 seconds), gets the time the gateway received it. A published message's `message_id` is the gateway's own, `<broker>-<16 hex digits>-<n>`: the hex digits are new for each broker a start or a reload makes, so no two publishes share one, across restarts and instances included (a consumer that drops a `message_id` it saw before drops no message of another publish); its `delivery_mode` is 2 (`persistent`, the default) or 1. A consumed message's `correlation_id`, `reply_to`, `type`, `app_id` and `message_id` properties are its headers `amqp_correlationId`, `amqp_replyTo`, `amqp_type`, `amqp_appId` and `amqp_messageId` (the names Spring AMQP's header mapper gives them, so bridges built on Spring Cloud Stream or Spring Integration read and write the same; a header of that name the publisher set wins), in `$headers` and sent on to every target (Kafka and NATS headers, MQTT user properties, webhook headers); a publish sends the first four back as those properties (a value over 255 bytes, AMQP's short string, stays a header), so a message copied from AMQP to AMQP keeps them and a request-reply peer finds its `reply_to`. `amqp_messageId` stays a header on publish: the `message_id` property is always the gateway's own (above), which is what correlates a basic.return. A consumed message's `priority` and `expiration` are its headers `priority` (the digits) and `amqp_expiration` (Spring's names too), and a publish sends them back as those properties (a `priority` that is not 0 to 255, or an `amqp_expiration` that is not a whole number of milliseconds, stays a header: RabbitMQ would refuse it by closing the channel), so a copy keeps its priority and its time to live starts again at each queue; an HTTP client's `Priority` header is not one (it is among the browser headers a listener drops): set `priority` with a `headers` step (`headers: {set: {priority: '$headers.\"x-priority\"'}}`) for a priority queue (`x-max-priority`) to order what clients publish. A consumed `user_id` is the header `amqp_receivedUserId`, not published again as `user_id` (as in Spring AMQP: RabbitMQ takes a publish's `user_id` only when it is the user the connection logged in as, or that user has the `impersonator` tag, so a copy made under another login would be refused); a publish sets `user_id` from an `amqp_userId` header (set one with a `headers` step: an HTTP client's header names arrive in lower case). One the server refuses is a 400 `EG_INVALID_MESSAGE` in the server's words (`406 PRECONDITION_FAILED - user_id property set to 'alice' but authenticated user was 'gateway'`; consume routes dead-letter it): the gateway opens a new publish channel on the same connection (the publishes in flight beside it fail, 503, as after a 403), the consume routes keeping theirs, and refuses messages with another `user_id` before sending them from then on, until it reloads or restarts. `cluster_id` is not carried. Header values are published as AMQP long strings, except a header a consumed AMQP message had as another field type (above) while no step changed its text: it goes on as it came, type and value (an AMQP → AMQP copy keeps `x-count` an integer and `x-delay` a number for RabbitMQ's delayed-message exchange); a header a step set or changed is a long string, so a typed field cannot be made by a step.",
    example:
      'brokers:\n  rabbit:\n    kind: amqp\n    url: amqp://gateway:${RABBITMQ_PASSWORD}@rabbitmq:5672/\n    exchange: { name: events, type: topic }\n    queues:\n      billing:\n        bindings: [orders.*]\n        deadLetterExchange: billing.dlx\n    prefetch: 20\n    ackTimeoutMs: 5000\nroutes:\n  - name: invoices\n    from: { broker: rabbit, topic: billing }       # the queue declared above\n    to: { broker: kafka, topic: invoices }',
  },
  compile: compileAmqp,
  topicProblem: (topic, use, o) => routingKeyProblem(topic, use) ?? (use === 'consume' && o !== undefined ? defaultExchangeReadProblem(topic, o) : undefined),
  keyless: "a `key` would be dropped (the target's `topic` is the routing key; carry a key in a header instead: `headers: {set: {key: ...}}`)",
  // A routing-key route's group names the queue declared for it; a route on a queue of `queues` uses no group.
  groupProblem: (group, topic, o) => (Object.hasOwn(o.queues ?? {}, topic) ? undefined : queueNameProblem(group)),
  readsWithoutGroup: (topic, o) => Object.hasOwn(o.queues ?? {}, topic),
  // A routing-key route's group is its queue, bound for the route's pattern: routes sharing it share every message bound there.
  sharedConsumer: (group, topic, o) =>
    Object.hasOwn(o.queues ?? {}, topic) ? undefined : { name: `queue '${group}'`, clash: 'bound for both patterns, so each route would get messages of the other' },
  leftGroup:
    'its queue stays bound and collects every matching message until it is deleted (`rabbitmqctl delete_queue`) or expires (`routeQueueExpiresMs`), once no instance runs the old config (docs/scaling.md)',
  topicsRead: amqpTopicsRead,
  // A name one typo off a queue of `queues` is a routing key to the config, and reads nothing of that queue.
  readWarning: (from, o) => {
    if (Object.hasOwn(o.queues, from)) return o.queues[from]!.arguments['x-queue-type'] === 'stream' ? streamQueueRead(from) : undefined;
    // Only a topic exchange has wildcards: a direct one takes every pattern as one key, a fanout or headers one ignores it (below).
    const type = exchangeTypeOf(o.exchange);
    const foreign = type === 'topic' ? foreignWildcardHint(from, AMQP_WILDCARDS, 'AMQP', 'routing key') : type === 'direct' ? directPatternHint(from, o.exchange.name) : undefined;
    if (foreign !== undefined) return foreign;
    const queue = /[*#]/.test(from) ? undefined : closest(from, Object.keys(o.queues));
    if (queue !== undefined)
      return `'${from}' is not a queue of this broker's queues (did you mean '${queue}'?): the route reads it as a routing key, through a queue of its own bound to exchange '${o.exchange.name}', and gets nothing of queue '${queue}'`;
    // A pattern a fanout or headers exchange does not route by: the route gets everything published there.
    const ignored = keyIgnoredBy(o.exchange, from);
    const instead =
      exchangeTypeOf(o.exchange) === 'headers'
        ? "read a queue of queues bound with 'arguments', filter on $topic, or use a topic or direct exchange"
        : 'filter on $topic, or use a topic or direct exchange';
    return ignored && `gets every message published to exchange '${o.exchange.name}', not only those with routing key '${from}': ${ignored} (${instead})`;
  },
  // MQTT and NATS refuse a wildcard in a topic published to (a config error); RabbitMQ takes `*` and `#` in a routing key as characters.
  writeWarning: (topic, o) => {
    if (!/(^|\.)[*#](\.|$)/.test(topic)) return undefined;
    const type = exchangeTypeOf(o.exchange);
    if (type === 'fanout' || type === 'headers') return undefined;
    return `routing key '${topic}' is written as a pattern, but a publish's routing key is no pattern: RabbitMQ routes it as the one key of that name, its '*' and '#' as they are, to the queues bound with a pattern matching that text (such as '#'), not to those bound for the keys the pattern would match; publish to a key of its own (orders.created), computed per message if need be (topic: {expression: ...})`;
  },
  // As amqp/consumed.ts reads a delivery's (a test's `content-type` stands for the content_type property, or a header so named).
  consumedHeaders: (given) => fromAmqpHeaders({ ...given }),
  declaredBindings,
  // What the broker's bindings are remembered and unbound by (AmqpBroker.server): a changed password is the same server.
  bindingServer: (o) => serverOf(o.url),
  canReconfigure: (before, after) => onlyInPlaceChanged(before, after, IN_PLACE),
  inPlaceOptions: IN_PLACE,
  // Its subscriptions never read a route's dead-letter closure, window or order keys (one message
  // at a time): a route that only changed those is handed over, not subscribed again (no gap).
  handOverTakes: ['inFlight', 'ordered', 'deadletter'],
  create: (name, settings, env) => new (runtime().AmqpBroker)(name, settings, env),
});

/**
 * A route on a stream queue: RabbitMQ keeps no position for an AMQP 0-9-1 consumer of a stream (its
 * stream protocol does), and one that names no `x-stream-offset` starts at the stream's end, so
 * what is published while the route is not subscribed is never delivered to it (seen on 3.10).
 */
function streamQueueRead(queue: string): string {
  return `queue '${queue}' is a stream (x-queue-type: stream), for which RabbitMQ keeps no position of an AMQP 0-9-1 consumer: the route reads from the stream's end each time it subscribes (a start, a reconnect), and what was published while it was not subscribed never reaches it; read a quorum or classic queue bound for the same keys`;
}

const runtime = whenUsed<{ AmqpBroker: typeof AmqpBroker }>(import.meta.url, './amqp/broker.js');
