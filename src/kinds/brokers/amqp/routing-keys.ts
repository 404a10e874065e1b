import { RABBITMQ_EXCHANGES } from './bindings.js';

/**
 * What an AMQP 0-9-1 routing key may be: a short string, at most 255 bytes, as are the queue names
 * and binding patterns a consume route's `from.topic` names, and the exchange and queue names of
 * the broker's own options. Checked where the config names one (validate) and where a route
 * computes one per message: amqplib refuses a longer one before it reaches the server, so a
 * publish to it failed as a 503 for ever and a consume route never started.
 */

const MAX_SHORT_STRING_BYTES = 255;

/** Whether `text` is longer than an AMQP short string may be. */
export function overShortString(text: string): boolean {
  return Buffer.byteLength(text) > MAX_SHORT_STRING_BYTES;
}

/** Why `key` cannot be an AMQP routing key, queue name or binding pattern, or undefined. */
export function routingKeyProblem(key: string, use: 'publish' | 'consume' = 'publish'): string | undefined {
  if (!overShortString(key)) return undefined;
  return use === 'publish' ? 'an AMQP routing key is at most 255 bytes' : 'an AMQP queue name or routing-key pattern is at most 255 bytes';
}

/** Why a routing-key route's consumer group, which names the durable queue the gateway declares for it, cannot be that queue's name, or undefined. */
export function queueNameProblem(group: string): string | undefined {
  if (group.startsWith('amq.'))
    return "it names the queue declared for the route (its from.topic is a routing-key pattern), and RabbitMQ reserves queue names starting with 'amq.' (403 ACCESS_REFUSED)";
  if (!overShortString(group)) return undefined;
  return 'it names the queue declared for the route (its from.topic is a routing-key pattern), and an AMQP queue name is at most 255 bytes';
}

/**
 * RabbitMQ's own exchanges. Other names starting with `amq.` are reserved: RabbitMQ refuses to
 * declare an exchange or queue by such a name (403 ACCESS_REFUSED), so a broker naming one never
 * became ready. Server-named queues (`amq.gen-...`) exist, but only the server makes them.
 */
const BUILT_IN_EXCHANGES = Object.keys(RABBITMQ_EXCHANGES);

/** Why an exchange, or a queue the gateway declares, cannot have `name` on RabbitMQ, or undefined. */
export function reservedNameProblem(name: string, what: 'exchange' | 'queue'): string | undefined {
  if (!name.startsWith('amq.')) return undefined;
  if (what === 'exchange') {
    if (BUILT_IN_EXCHANGES.includes(name)) return undefined;
    return `'${name}' is not one of RabbitMQ's own exchanges (${BUILT_IN_EXCHANGES.join(', ')}), and RabbitMQ reserves names starting with 'amq.': it refuses to declare one (403 ACCESS_REFUSED)`;
  }
  return `RabbitMQ reserves queue names starting with 'amq.' and refuses to declare one (403 ACCESS_REFUSED); name it otherwise, or set declare: false for a queue the server made`;
}

/**
 * Why a queue cannot be bound to the default exchange (`""`): RabbitMQ binds every queue to it by
 * the queue's own name, and refuses any other binding (403 ACCESS_REFUSED - operation not
 * permitted on the default exchange) at every connect, so the broker was never ready.
 */
export const DEFAULT_EXCHANGE_BINDING = "RabbitMQ binds every queue to the default exchange '' by the queue's own name and refuses any other binding to it (403 ACCESS_REFUSED)";
