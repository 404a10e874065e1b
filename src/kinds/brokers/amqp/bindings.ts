import { unescape as unescapeQuery } from 'node:querystring';
import type { Channel, ChannelModel } from 'amqplib';
import type { Logger } from '../../../log.js';

/** A header value a headers-exchange binding matches (`arguments`): a string, a number or a boolean, matched by type and value. */
export type BindingArgument = string | number | boolean;

/** How a headers-exchange binding matches (`x-match`): every header or any one; `-with-x` counts `x-` headers too (RabbitMQ 3.10+). */
export const X_MATCH = ['all', 'any', 'all-with-x', 'any-with-x'] as const;

/** A queue's binding: an exchange and a routing key (a pattern on a topic exchange), and the arguments a headers exchange routes by. */
export interface Binding {
  exchange: string;
  routingKey: string;
  arguments?: Readonly<Record<string, BindingArgument>>;
}

/** RabbitMQ tells bindings apart by their arguments too: unbinding one needs the same arguments. */
const sameBinding = (a: Binding, b: Binding) => a.exchange === b.exchange && a.routingKey === b.routingKey && sameArguments(a.arguments, b.arguments);

function sameArguments(a: Binding['arguments'], b: Binding['arguments']): boolean {
  const ak = Object.keys(a ?? {});
  return ak.length === Object.keys(b ?? {}).length && ak.every((k) => b !== undefined && Object.hasOwn(b, k) && b[k] === a![k]);
}

/**
 * The server and virtual host a URL names, as amqplib reads it (default port, `/` for no vhost),
 * without the credentials: a reload that changes only the password still names the same queues.
 */
export function serverOf(url: string): string {
  try {
    const u = new URL(url);
    const port = u.port || (u.protocol === 'amqps:' ? '5671' : '5672');
    return `${u.hostname.toLowerCase()}:${port} vhost ${vhostOf(url)}`;
  } catch {
    return url;
  }
}

/**
 * The virtual host a URL names, as amqplib reads it: `/` for none, else querystring's unescape,
 * which keeps a `%` that starts no escape (`/100%` opens `100%`; decodeURIComponent would throw).
 */
export function vhostOf(url: string): string {
  try {
    const path = new URL(url).pathname;
    return path.length > 1 ? unescapeQuery(path.slice(1)) : '/';
  } catch {
    return '/';
  }
}

/**
 * Bindings that what made them in this process no longer holds, by server (serverOf) and queue: a
 * stopped consume route's pattern on its group's queue, the bindings of a declared queue whose
 * broker a reload replaced or removed. RabbitMQ keeps every binding a durable queue was given and
 * AMQP 0-9-1 cannot list them, so the gateway remembers them here until whatever binds the queue
 * next has its own bindings in place, and then unbinds those nobody in the process still wants
 * (unbindLeft). A process knows nothing of what an earlier one bound.
 */
const leftBindings = new Map<string, Binding[]>();

const key = (server: string, queue: string) => `${server}\n${queue}`;

export function leaveBindings(server: string, queue: string, bindings: readonly Binding[]): void {
  const left = leftBindings.get(key(server, queue)) ?? [];
  for (const b of bindings) if (!left.some((l) => sameBinding(l, b))) left.push(b);
  leftBindings.set(key(server, queue), left);
}

/**
 * Unbinds from `queue` what was left on it (leaveBindings) and is not in `kept` (every binding of
 * the queue that something in this process still holds), once. Called once the caller's own
 * bindings are in place, so a message that matches both an old and a new binding is not lost in
 * between. Each unbind goes on a channel of its own: a refusal (the exchange or the queue deleted
 * meanwhile, 404) closes that channel, is logged, and stops nothing else.
 */
export async function unbindLeft(conn: ChannelModel, server: string, queue: string, kept: readonly Binding[], log: Logger): Promise<void> {
  // Taken synchronously: whoever comes next finds nothing to do.
  const left = leftBindings.get(key(server, queue));
  leftBindings.delete(key(server, queue));
  for (const b of left?.filter((l) => !kept.some((k) => sameBinding(k, l))) ?? []) {
    let ch: Channel | undefined;
    try {
      ch = await conn.createChannel();
      ch.on('error', () => undefined);
      await ch.unbindQueue(queue, b.exchange, b.routingKey, b.arguments);
      log.info({ queue, exchange: b.exchange, routingKey: b.routingKey, ...(b.arguments === undefined ? {} : { arguments: b.arguments }) }, 'amqp queue unbound from a binding a reload dropped');
    } catch (err) {
      log.warn(
        { queue, exchange: b.exchange, routingKey: b.routingKey, err: (err as Error).message },
        'amqp unbind of a binding a reload dropped refused; if the binding is still on the server, remove it there',
      );
    } finally {
      await ch?.close().catch(() => undefined);
    }
  }
}

export type ExchangeType = 'topic' | 'direct' | 'fanout' | 'headers';

/**
 * RabbitMQ's own exchanges, with the type each has whatever a config says (the gateway never
 * declares them). `amq.rabbitmq.trace` is the firehose's topic exchange (`publish.#`, `deliver.#`).
 */
export const RABBITMQ_EXCHANGES: Readonly<Record<string, ExchangeType>> = {
  'amq.direct': 'direct',
  'amq.fanout': 'fanout',
  'amq.headers': 'headers',
  'amq.match': 'headers',
  'amq.topic': 'topic',
  'amq.rabbitmq.trace': 'topic',
};

/** The type an exchange routes by: RabbitMQ's own have theirs; others are as declared (`topic` unless said). */
export function exchangeTypeOf(exchange: { name: string; type?: ExchangeType }): ExchangeType {
  return Object.hasOwn(RABBITMQ_EXCHANGES, exchange.name) ? RABBITMQ_EXCHANGES[exchange.name]! : (exchange.type ?? 'topic');
}

/**
 * Why a binding key or routing-key pattern `key` on `exchange` is no filter, or undefined: a fanout
 * exchange routes every message to every queue bound to it, and a headers exchange routes by binding
 * arguments, which the config's bindings do not carry (one without them matches every message).
 * `#` and `''` say "everything" already.
 */
export function keyIgnoredBy(exchange: { name: string; type?: ExchangeType }, key: string): string | undefined {
  const type = exchangeTypeOf(exchange);
  if (key === '' || key === '#') return undefined;
  if (type === 'fanout') return `exchange '${exchange.name}' is a fanout exchange, which routes every message to every queue bound to it whatever the routing key`;
  if (type === 'headers')
    return `exchange '${exchange.name}' is a headers exchange, which routes by a binding's arguments (x-match and header values), never by the routing key, and a binding without arguments matches every message`;
  return undefined;
}

/**
 * Whether `binding` on an exchange of `type` routes a message with routing key `key` and AMQP
 * headers `headers`, as RabbitMQ decides it: a topic pattern's `*` is one word, `#` zero or more
 * (words are separated by `.`; an empty key has none); direct compares the keys; fanout routes
 * everything; headers does not look at the key but at the binding's arguments (headersMatch; one
 * without arguments matches every message). `headers` undefined: not known (the config's checks,
 * before any message), so a headers binding may route any message.
 */
export function bindingMatches(type: ExchangeType, binding: Pick<Binding, 'routingKey' | 'arguments'>, key: string, headers?: Readonly<Record<string, unknown>>): boolean {
  if (type === 'fanout') return true;
  if (type === 'headers') return headers === undefined || binding.arguments === undefined || headersMatch(binding.arguments, headers);
  if (type === 'direct') return binding.routingKey === key;
  return topicMatches(words(binding.routingKey), words(key));
}

/**
 * RabbitMQ's headers exchange: `x-match: all` (the default) routes a message that has every other
 * argument as a header of equal type and value, `any` one that has at least one; arguments named
 * `x-...` are not matched, unless `x-match` is `all-with-x` or `any-with-x`. amqplib reads a
 * header's string as a string, its integers and floats as numbers, its booleans as booleans (bytes,
 * a Buffer, never equal a string, as on the server).
 */
export function headersMatch(args: Readonly<Record<string, BindingArgument>>, headers: Readonly<Record<string, unknown>>): boolean {
  const { any, compared } = matchMode(args);
  let matched = 0;
  let asked = 0;
  for (const name of Object.keys(args)) {
    if (!compared(name)) continue;
    asked++;
    if (Object.hasOwn(headers, name) && headers[name] === args[name]) matched++;
  }
  return any ? matched > 0 : matched === asked;
}

/**
 * What a headers-exchange binding routes when its arguments name no header it compares (only
 * `x-match`, or `x-` names that `all` and `any` skip): `every` message (`all`: each of none is
 * there) or `no` message (`any`: none of none is). Undefined when it compares a header.
 */
export function routesWithoutHeaders(args: Readonly<Record<string, BindingArgument>>): 'every' | 'no' | undefined {
  const { any, compared } = matchMode(args);
  if (Object.keys(args).some(compared)) return undefined;
  return any ? 'no' : 'every';
}

/** A binding's `x-match` (`all` unless said): whether any header is enough, and which arguments are headers to compare. */
function matchMode(args: Readonly<Record<string, BindingArgument>>): { any: boolean; compared: (name: string) => boolean } {
  const mode = typeof args['x-match'] === 'string' ? args['x-match'] : 'all';
  const withX = mode.endsWith('-with-x');
  return { any: mode.startsWith('any'), compared: (name) => name !== 'x-match' && (withX || !name.startsWith('x-')) };
}

/** Whether a routing key is written as a pattern (a `*` or `#` word), which a direct exchange matches as the one key of that name. */
export function isPattern(key: string): boolean {
  return key.split('.').some((w) => w === '*' || w === '#');
}

/** The warning for a pattern on a direct exchange (isPattern), or undefined. */
export function directPatternHint(key: string, exchange: string): string | undefined {
  if (!isPattern(key)) return undefined;
  return `'${key}' is written as a pattern, but exchange '${exchange}' is a direct exchange, which compares whole routing keys: it matches only messages published with the routing key '${key}', its '*' and '#' as they are (use a topic exchange for patterns)`;
}

const words = (text: string): string[] => (text === '' ? [] : text.split('.'));

/**
 * Whether topic pattern words `pattern` match key words `key`: a table of which pattern prefixes
 * match which key prefixes (time pattern × key), where following each `#` through every tail of
 * the key would take exponential time for a pattern with several `#`s.
 */
function topicMatches(pattern: string[], key: string[]): boolean {
  // row[k]: pattern[0..p) matches key[0..k).
  let row = new Array<boolean>(key.length + 1).fill(false);
  row[0] = true;
  for (const w of pattern) {
    const next = new Array<boolean>(key.length + 1).fill(false);
    if (w === '#') {
      // Zero or more words: matches key[0..k) when the pattern before it matched any key[0..j), j <= k.
      let any = false;
      for (let k = 0; k <= key.length; k++) next[k] = any ||= row[k]!;
    } else {
      for (let k = 1; k <= key.length; k++) next[k] = row[k - 1]! && (w === '*' || w === key[k - 1]);
    }
    row = next;
  }
  return row[key.length]!;
}
