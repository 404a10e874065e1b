import { closest } from '../../../config/suggest.js';

/**
 * RabbitMQ's queue arguments whose values it checks at every declare, whatever the queue's type:
 * one it refuses (406 PRECONDITION_FAILED - invalid arg) left the queue undeclared and the routes
 * reading it waiting for ever, where the config can say so at its line. Seen on RabbitMQ 3.10:
 * `x-max-length: "2"` (`expected integer, got longstr`), `-1` (`value_negative`), `x-expires: 0`
 * (`value_zero`), `x-max-priority: 300` (`max_value_exceeded`), `x-overflow: reject`
 * (`invalid_overflow`), `x-single-active-consumer: "yes"`, a quorum queue with `durable: false`
 * (`invalid property 'non-durable'`). Which arguments a queue type takes (`x-delivery-limit` on a
 * quorum queue only, `x-max-priority` on a classic one) changes between RabbitMQ versions, so that
 * is left to the server. Only arguments whose values the server checks are here: `x-delivery-limit`
 * is not one (RabbitMQ 3.10 declares a quorum queue with `-1`, `"5"` or `1.5`, and 4.x documents
 * `-1` as the way to turn its default limit of 20 off).
 */

type Rule = { integer: { min: number; max?: number } } | { oneOf: readonly string[] } | { type: 'boolean' | 'string' };

const RULES: Record<string, Rule> = {
  'x-message-ttl': { integer: { min: 0 } },
  'x-expires': { integer: { min: 1 } },
  'x-max-length': { integer: { min: 0 } },
  'x-max-length-bytes': { integer: { min: 0 } },
  'x-max-priority': { integer: { min: 0, max: 255 } },
  'x-overflow': { oneOf: ['drop-head', 'reject-publish', 'reject-publish-dlx'] },
  'x-queue-type': { oneOf: ['classic', 'quorum', 'stream'] },
  'x-queue-mode': { oneOf: ['default', 'lazy'] },
  'x-single-active-consumer': { type: 'boolean' },
  'x-dead-letter-exchange': { type: 'string' },
  'x-dead-letter-routing-key': { type: 'string' },
};

/** How a value reads in a message: strings quoted, as the config would write them. */
const shown = (value: unknown) => (typeof value === 'string' ? JSON.stringify(value) : String(value));

/** Why RabbitMQ would refuse argument `name` with `value`, or undefined (an argument it does not check here is left to it). */
export function queueArgumentProblem(name: string, value: unknown): string | undefined {
  const rule = RULES[name];
  if (rule === undefined) return undefined;
  const refused = `RabbitMQ refuses to declare the queue (406 PRECONDITION_FAILED - invalid arg '${name}')`;
  if ('integer' in rule) {
    const { min, max } = rule.integer;
    const range = max === undefined ? (min === 0 ? 'a whole number, 0 or more' : `a whole number, ${min} or more`) : `a whole number from ${min} to ${max}`;
    if (typeof value === 'string' && /^-?\d+$/.test(value.trim())) return `${name} must be ${range}, not the string ${shown(value)}: ${refused}; write it without quotes`;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || (max !== undefined && value > max)) return `${name} must be ${range}, not ${shown(value)}: ${refused}`;
    return undefined;
  }
  if ('oneOf' in rule) {
    if (typeof value === 'string' && rule.oneOf.includes(value)) return undefined;
    const near = typeof value === 'string' ? closest(value, rule.oneOf) : undefined;
    return `${name} must be one of ${rule.oneOf.join(', ')}, not ${shown(value)}${near ? ` (did you mean '${near}'?)` : ''}: ${refused}`;
  }
  if (typeof value === rule.type) return undefined;
  return `${name} must be a ${rule.type}, not ${shown(value)}: ${refused}${rule.type === 'boolean' && (value === 'true' || value === 'false') ? '; write it without quotes' : ''}`;
}

/**
 * Why `x-dead-letter-routing-key` cannot be declared, or undefined: RabbitMQ refuses one on a queue
 * with no dead-letter exchange (`routing_key_but_no_dlx_defined`, classic and quorum queues alike).
 */
export function deadLetterRoutingKeyProblem(args: Record<string, unknown>, deadLetterExchange: string | undefined): string | undefined {
  if (!Object.hasOwn(args, 'x-dead-letter-routing-key') || deadLetterExchange !== undefined || Object.hasOwn(args, 'x-dead-letter-exchange')) return undefined;
  return "x-dead-letter-routing-key needs a dead-letter exchange to route by (the queue's deadLetterExchange, or x-dead-letter-exchange): RabbitMQ refuses to declare the queue without one (406 PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key')";
}

/** Why a queue of type `x-queue-type` cannot be `durable: false`, or undefined. */
export function nonDurableProblem(queueType: unknown, durable: boolean): string | undefined {
  if (durable || (queueType !== 'quorum' && queueType !== 'stream')) return undefined;
  return `a ${queueType} queue is always durable: RabbitMQ refuses to declare one with durable: false (406 PRECONDITION_FAILED - invalid property 'non-durable')`;
}
