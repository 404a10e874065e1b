import type { Channel, ChannelModel } from 'amqplib';
import type { Logger } from '../../../log.js';
import type { AmqpQueue, AmqpSettings } from '../amqp.js';
import { reconnectBackoff, type Backoff } from '../../../core/backoff.js';
import { type Binding, bindingMatches, exchangeTypeOf } from './bindings.js';
import { declaredOtherwise } from './connection.js';

/** Declares a queue of `queues` (durable or not, with its arguments and dead-letter exchange) and binds it, as the broker does at connect. */
export async function declareQueue(ch: Channel, name: string, q: AmqpQueue, s: AmqpSettings, bind = true): Promise<void> {
  const args: Record<string, unknown> = { ...q.arguments };
  if (q.deadLetterExchange !== undefined) args['x-dead-letter-exchange'] = q.deadLetterExchange;
  await ch.assertQueue(name, { durable: q.durable, arguments: args });
  if (bind) await bindQueue(ch, name, q, s);
}

/** Binds a queue of `queues` as the config says (a binding it has already is left as it is). */
export async function bindQueue(ch: Channel, name: string, q: AmqpQueue, s: AmqpSettings): Promise<void> {
  for (const b of declaredBindings(q, s)) await ch.bindQueue(name, b.exchange, b.routingKey, b.arguments);
}

export function declaredBindings(q: AmqpQueue, s: AmqpSettings): Binding[] {
  return q.bindings.map((b) => ({ exchange: b.exchange ?? s.exchange.name, routingKey: b.routingKey, ...(b.arguments === undefined ? {} : { arguments: b.arguments }) }));
}

/** Per queue: the re-declare in flight, when the next may start after a refusal, and up to which publish the last one was too late. */
interface QueueState {
  inFlight: Promise<void> | undefined;
  backoff: Backoff;
  notBefore: number;
  /** The publishes numbered up to this one were sent before the queue was last declared again: their returns say nothing new. */
  coveredUpTo: number;
  /** The last re-declare failed, perhaps half-way (the queue declared, a binding refused): the queue may be there unbound. */
  unfinished: boolean;
  /** The server's words when its last declare was refused because the server has the queue otherwise (406): its routes wait. */
  otherwise: string | undefined;
}

/**
 * Declares a queue of `queues` (`declare: true`) again once it was deleted on the server while the
 * connection lives: the broker declares it only at connect. Who finds it missing: the route that
 * reads it (its passive declare gets 404, point 54) or, for a queue no route reads, a publish the
 * server returned unroutable (basic.return, `mandatory`) for a routing key one of its bindings on
 * the broker's exchange matches (point 70). One re-declare per queue at a time, whoever asks;
 * after a refusal, the next one a publish asks for waits with backoff (250 ms doubling to 5 s).
 */
export class DeclaredQueues {
  private readonly queues = new Map<string, QueueState>();

  constructor(
    private readonly settings: AmqpSettings,
    private readonly log: Logger,
    /** How many publishes the broker has sent so far (its message ids count them). */
    private readonly published: () => number,
  ) {}

  private stateOf(queue: string): QueueState {
    let s = this.queues.get(queue);
    if (!s) this.queues.set(queue, (s = { inFlight: undefined, backoff: reconnectBackoff(), notBefore: 0, coveredUpTo: 0, unfinished: false, otherwise: undefined }));
    return s;
  }

  /**
   * The broker declared and bound every queue at connect but those the server has otherwise
   * (`refused`: 406, by queue, in the server's words): no other re-declare is left unfinished, and
   * the routes that read a refused one declare it again (open()) rather than consume it as it is.
   */
  declaredAll(refused: ReadonlyMap<string, string>): void {
    for (const state of this.queues.values()) {
      state.unfinished = false;
      state.otherwise = undefined;
    }
    for (const [queue, words] of refused) {
      const state = this.stateOf(queue);
      state.unfinished = true;
      state.otherwise = words;
    }
  }

  /** The server's words when it last refused to declare `queue` because it has it otherwise (406), else undefined. */
  otherwise(queue: string): string | undefined {
    return this.queues.get(queue)?.otherwise;
  }

  /** Whether the last re-declare of `queue` failed: finding the queue there does not mean it is bound. */
  unfinished(queue: string): boolean {
    return this.queues.get(queue)?.unfinished === true;
  }

  /**
   * Declares `queue` again on a channel of its own on `conn`, with its arguments and bindings, and
   * logs it once; joins the re-declare in flight when there is one. Rejects with the server's words
   * when it refused.
   */
  again(conn: ChannelModel, queue: string): Promise<void> {
    const state = this.stateOf(queue);
    state.inFlight ??= this.declare(conn, queue, state).finally(() => (state.inFlight = undefined));
    return state.inFlight;
  }

  private async declare(conn: ChannelModel, queue: string, state: QueueState): Promise<void> {
    const q = this.settings.queues[queue]!;
    let ch: Channel | undefined;
    try {
      ch = await conn.createChannel();
      ch.on('error', () => undefined);
      await declareQueue(ch, queue, q, this.settings);
    } catch (err) {
      state.notBefore = Date.now() + state.backoff.delay();
      state.unfinished = true;
      state.otherwise = declaredOtherwise(err);
      throw err;
    } finally {
      await ch?.close().catch(() => undefined);
    }
    state.backoff.reset();
    state.notBefore = 0;
    state.unfinished = false;
    const otherwise = state.otherwise;
    state.otherwise = undefined;
    // Publishes sent from now on reach the queue; those sent before may still come back.
    state.coveredUpTo = this.published();
    if (otherwise !== undefined)
      this.log.warn({ queue, bindings: declaredBindings(q, this.settings), refusedBefore: otherwise }, `amqp queue '${queue}' declared with its arguments and bindings (the server had it otherwise)`);
    else this.log.warn({ queue, bindings: declaredBindings(q, this.settings) }, `amqp queue '${queue}' was deleted on the server; declared again with its arguments and bindings`);
  }

  /**
   * The server returned publish number `n` (routing key `key` and AMQP headers `headers` on
   * `exchange`; a headers exchange routes by those) as unroutable: the
   * declared queues with a binding that matches it on that exchange are gone (or lost that binding),
   * and are declared again, unless one is in flight, backing off after a refusal, or was declared
   * again after that publish was sent. The publish itself stays refused: it reached no queue.
   */
  unroutable(conn: ChannelModel, exchange: string, key: string, headers: Readonly<Record<string, unknown>>, n: number): void {
    const type = exchangeTypeOf(this.settings.exchange);
    for (const [queue, q] of Object.entries(this.settings.queues)) {
      if (!q.declare) continue;
      // The default exchange routes a key to the queue of that name, bound or not.
      const matched = exchange === '' ? queue === key : declaredBindings(q, this.settings).some((b) => b.exchange === exchange && bindingMatches(type, b, key, headers));
      if (!matched) continue;
      const state = this.stateOf(queue);
      if (state.inFlight || n <= state.coveredUpTo || Date.now() < state.notBefore) continue;
      this.again(conn, queue).catch((err: Error) =>
        this.log.warn(
          { queue, err: err.message, retryInMs: Math.max(0, state.notBefore - Date.now()) },
          `amqp queue '${queue}' took no publish for its bindings (deleted on the server?) and declaring it again was refused; tried again on a later unroutable publish`,
        ),
      );
    }
  }
}
