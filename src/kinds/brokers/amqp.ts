import type { ConnectionOptions } from 'node:tls';
import type { BrokerCompileContext, BrokerKind } from '../contracts.js';
import { AmqpBroker } from './amqp/broker.js';
import { compileTls, TLS_SCHEMA, type TlsOptions } from './tls.js';

interface QueueOptions {
  declare?: boolean;
  durable?: boolean;
  bindings?: (string | { exchange?: string; routingKey: string })[];
  deadLetterExchange?: string;
  arguments?: Record<string, unknown>;
}

/** The options as written in gateway.yaml. */
interface AmqpOptions {
  kind: 'amqp';
  url: string;
  tls?: TlsOptions;
  exchange?: string | { name: string; type?: 'topic' | 'direct' | 'fanout' | 'headers'; declare?: boolean };
  queues?: Record<string, QueueOptions>;
  prefetch?: number;
  persistent?: boolean;
  mandatory?: boolean;
  connectTimeoutMs?: number;
  ackTimeoutMs?: number;
}

export interface AmqpQueue {
  declare: boolean;
  durable: boolean;
  bindings: { exchange?: string; routingKey: string }[];
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
}

function compileAmqp(o: AmqpOptions, ctx: BrokerCompileContext): AmqpSettings | undefined {
  let ok = true;
  if (!/^amqps?:\/\/[^\s/]+/.test(o.url)) {
    ctx.report(['url'], 'EG_CONFIG_SCHEMA', `'${o.url}' is not an AMQP URL: expected amqp://user:password@host:5672/vhost (or amqps://)`);
    ok = false;
  }
  const tls = compileTls(o.tls, ctx);
  if (tls === false) ok = false;
  const ex = typeof o.exchange === 'string' || o.exchange === undefined ? { name: o.exchange ?? 'amq.topic' } : o.exchange;
  const queues: Record<string, AmqpQueue> = {};
  for (const [name, q] of Object.entries(o.queues ?? {})) {
    const declare = q.declare ?? true;
    if (!declare && (q.bindings || q.deadLetterExchange !== undefined || q.arguments)) {
      ctx.report(['queues', name], 'EG_CONFIG_SCHEMA', `queue '${name}' has declare: false (it must exist already), so it cannot also set bindings, deadLetterExchange or arguments`);
      ok = false;
    }
    queues[name] = {
      declare,
      durable: q.durable ?? true,
      bindings: (q.bindings ?? []).map((b) => (typeof b === 'string' ? { routingKey: b } : b)),
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
  };
}

const int = (def: number, min: number, description: string) => ({ type: 'integer', minimum: min, default: def, description });

export const amqpBroker: BrokerKind<AmqpOptions, AmqpSettings> = {
  kind: 'amqp',
  schema: {
    type: 'object',
    additionalProperties: false,
    required: ['kind', 'url'],
    properties: {
      kind: { const: 'amqp' },
      url: { type: 'string', minLength: 1, description: 'Server URL: amqp://user:password@host:5672/vhost (amqps:// for TLS); query parameters such as heartbeat=30 pass to the client.' },
      tls: TLS_SCHEMA,
      exchange: {
        description: 'Exchange that routes publish to (the topic is the routing key) and that consume routes bind their queue to; default amq.topic.',
        oneOf: [
          { type: 'string' },
          {
            type: 'object',
            additionalProperties: false,
            required: ['name'],
            properties: {
              name: { type: 'string', description: 'Exchange name ("" is the default exchange: the routing key is a queue name).' },
              type: { enum: ['topic', 'direct', 'fanout', 'headers'], default: 'topic', description: 'Exchange type, when the gateway declares it.' },
              declare: { type: 'boolean', default: true, description: 'Declare the exchange (durable) at connect; false when it must exist already.' },
            },
          },
        ],
      },
      queues: {
        type: 'object',
        description: 'Queues that consume routes name in from.topic: declared (durable, with bindings) at every connect, or existing ones (declare: false).',
        additionalProperties: {
          type: 'object',
          additionalProperties: false,
          properties: {
            declare: { type: 'boolean', default: true, description: 'Declare the queue; false when it must exist already.' },
            durable: { type: 'boolean', default: true, description: 'The queue survives a server restart.' },
            bindings: {
              type: 'array',
              description: 'Routing keys (patterns for a topic exchange) binding the queue to the broker\'s exchange, or {exchange, routingKey}.',
              items: {
                oneOf: [
                  { type: 'string' },
                  {
                    type: 'object',
                    additionalProperties: false,
                    required: ['routingKey'],
                    properties: {
                      exchange: { type: 'string', description: 'Exchange to bind to (default: the broker\'s exchange).' },
                      routingKey: { type: 'string', description: 'Routing key or pattern.' },
                    },
                  },
                ],
              },
            },
            deadLetterExchange: { type: 'string', description: 'RabbitMQ dead-letter exchange (x-dead-letter-exchange) for messages the queue expires or that are rejected outside the gateway.' },
            arguments: { type: 'object', description: 'Further queue arguments (x-message-ttl, x-queue-type, ...).' },
          },
        },
      },
      prefetch: int(20, 1, 'Most unacknowledged messages a consume route holds (handled one at a time, in order).'),
      persistent: { type: 'boolean', default: true, description: 'Publish persistent messages (delivery mode 2): they survive a server restart in durable queues.' },
      mandatory: { type: 'boolean', default: true, description: 'A publish no queue is bound for fails (503) instead of being dropped by the server.' },
      connectTimeoutMs: int(5000, 1, 'Time to open a connection.'),
      ackTimeoutMs: int(5000, 1, 'A publish not confirmed by then fails: HTTP 503, retry for consume routes.'),
    },
  },
  doc: {
    summary:
      'A RabbitMQ (AMQP 0-9-1) server, through amqplib. Routes publish to the broker\'s `exchange` with the topic as routing key (`to: {broker, topic: orders.created}`), with publisher confirms: 2xx only after RabbitMQ confirmed the message, 503 when it did not within `ackTimeoutMs`, when the server is unreachable, or (`mandatory`, the default) when no queue is bound for the routing key. Consume routes read a queue: `from.topic` names a queue of `queues` (declared with its bindings, or existing), or else is a routing-key pattern (`orders.*`, `#`) on the exchange, and the route\'s group names a durable queue the gateway declares and binds (WebSocket forward routes get an exclusive queue per instance). A message is acknowledged only after every target accepted it; `prefetch` bounds those in hand. `$topic` is a message\'s routing key; AMQP headers are the message headers, both ways. A message that fails for good goes to the route\'s `deadletter` target (the gateway\'s dead-letter path, with its `_eventgate_error` header) and is then acknowledged; a queue\'s `deadLetterExchange` only receives what RabbitMQ itself dead-letters (TTL, length limits). The connection is re-opened with backoff after a loss; unacknowledged messages are redelivered by RabbitMQ. A changed amqp broker is replaced on reload; unchanged routes keep their channels.',
    example:
      'brokers:\n  rabbit:\n    kind: amqp\n    url: amqp://gateway:${RABBITMQ_PASSWORD}@rabbitmq:5672/\n    exchange: { name: events, type: topic }\n    queues:\n      billing:\n        bindings: [orders.*]\n        deadLetterExchange: billing.dlx\n    prefetch: 20\n    ackTimeoutMs: 5000\nroutes:\n  - name: invoices\n    from: { broker: rabbit, topic: billing }       # the queue declared above\n    to: { broker: kafka, topic: invoices }',
    options: {
      url: '`amqp://user:password@host:5672/vhost` or `amqps://…`; query parameters such as `heartbeat=30` pass to amqplib',
      tls: '`{ca, cert, key, passphrase, servername, rejectUnauthorized}`, PEM files relative to the config (use an `amqps://` url)',
      exchange: 'exchange for publishing and for the queues of routing-key routes: a name, or `{name, type: topic|direct|fanout|headers, declare}`; default `amq.topic`; `""` is the default exchange (the topic is then a queue name)',
      queues: 'queues consume routes name in `from.topic`: `{name: {declare (default true), durable (default true), bindings: [routingKey | {exchange, routingKey}], deadLetterExchange, arguments}}`',
      prefetch: 'most unacknowledged messages per consume route (default 20)',
      persistent: 'publish persistent messages (default true)',
      mandatory: 'a publish no queue is bound for fails with 503 (default true)',
      connectTimeoutMs: 'time to open a connection (default 5000)',
      ackTimeoutMs: 'a publish not confirmed by then fails with 503 (default 5000)',
    },
  },
  compile: compileAmqp,
  canReconfigure: () => false,
  create: (name, settings, env) => new AmqpBroker(name, settings, env),
};
