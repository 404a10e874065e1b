import type { Channel, ChannelModel } from 'amqplib';
import type { Logger } from '../../../log.js';
import type { AmqpQueue, AmqpSettings } from '../amqp.js';
import { RECONNECT_POLICY } from '../../../core/backoff.js';
import { type Binding, bindingMatches, exchangeTypeOf } from './bindings.js';
import { declaredOtherwise } from './connection.js';
import { RepairPace } from './repair-pace.js';

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

/** Per queue: the re-declare in flight, and when a returned publish declares it again (and whether that helps). */
interface QueueState {
  inFlight: Promise<void> | undefined;
  repairs: RepairPace;
  /**
   * The routing key of the returned publish that asked for the re-declare in flight; undefined when a
   * route that found the queue missing asked. One asked by a return that did not help is not told again.
   */
  returnedKey: string | undefined;
  /** The futile line was logged since the repairs last started afresh. */
  toldFutile: boolean;
  /** The work in flight only looks the queue up (the first return after a re-declare, before the next may start): a route joining it declares after it. */
  lookupOnly: boolean;
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
    if (!s) this.queues.set(queue, (s = { inFlight: undefined, repairs: new RepairPace(), returnedKey: undefined, toldFutile: false, lookupOnly: false, unfinished: false, otherwise: undefined }));
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
  again(conn: ChannelModel, queue: string, returned?: { routingKey: string; redeclare: boolean }): Promise<void> {
    const state = this.stateOf(queue);
    if (state.inFlight) return state.lookupOnly && returned === undefined ? state.inFlight.then(() => this.again(conn, queue)) : state.inFlight;
    state.returnedKey = returned?.routingKey;
    state.lookupOnly = returned?.redeclare === false;
    state.inFlight = this.declare(conn, queue, state, returned?.redeclare ?? true).finally(() => (state.inFlight = undefined));
    return state.inFlight;
  }

  private async declare(conn: ChannelModel, queue: string, state: QueueState, redeclare: boolean): Promise<void> {
    const q = this.settings.queues[queue]!;
    if (!state.repairs.futile) state.toldFutile = false;
    // A publish sent after the last re-declare came back too: the queue was deleted once more (news:
    // declared again at once, and told), or is there and the exchange routes otherwise (futile).
    if (state.returnedKey !== undefined && state.repairs.futile) {
      const found = await queueFound(conn, queue);
      if (found === false) {
        state.repairs.afresh();
        redeclare = true;
      } else if (found && !state.toldFutile) {
        state.toldFutile = true;
        this.log.warn(
          { queue, routingKey: state.returnedKey },
          `amqp queue '${queue}' was declared again, and a publish for its bindings sent after that still came back unroutable: the exchange on the server does not route it there (another type than the config's '${exchangeTypeOf(this.settings.exchange)}'?); declared again at most every ${RECONNECT_POLICY.maxDelayMs} ms from now on`,
        );
      }
    }
    if (!redeclare) return;
    let ch: Channel | undefined;
    try {
      ch = await conn.createChannel();
      ch.on('error', () => undefined);
      await declareQueue(ch, queue, q, this.settings);
    } catch (err) {
      state.repairs.refused();
      state.unfinished = true;
      state.otherwise = declaredOtherwise(err);
      throw err;
    } finally {
      await ch?.close().catch(() => undefined);
    }
    state.unfinished = false;
    const otherwise = state.otherwise;
    state.otherwise = undefined;
    state.repairs.repaired(this.published());
    if (otherwise !== undefined)
      this.log.warn({ queue, bindings: declaredBindings(q, this.settings), refusedBefore: otherwise }, `amqp queue '${queue}' declared with its arguments and bindings (the server had it otherwise)`);
    // Once a re-declare for a returned publish did not help, those that follow are not told one by one (futile).
    // A returned publish cannot tell a queue deleted from one that lost its bindings (its exchange deleted and made again: checklist 5085, 5088).
    else if (state.returnedKey === undefined || !state.repairs.futile)
      this.log.warn({ queue, bindings: declaredBindings(q, this.settings) }, `amqp queue '${queue}' was deleted on the server or lost its bindings; declared again with its arguments and bindings`);
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
      // The first return after a re-declare: the queue is looked up (declare()) to tell a queue
      // deleted once more (declared again at once) from an exchange that routes otherwise (futile).
      const asked = state.repairs.returned(n, state.inFlight !== undefined);
      if (!asked.repair && !asked.futile) continue;
      this.again(conn, queue, { routingKey: key, redeclare: asked.repair }).catch((err: Error) =>
        this.log.warn(
          { queue, err: err.message, retryInMs: state.repairs.waitMs() },
          `amqp queue '${queue}' took no publish for its bindings (deleted on the server?) and declaring it again was refused; tried again on a later unroutable publish`,
        ),
      );
    }
  }
}

/** Whether `queue` is on the server (a passive declare on a channel of its own, which a 404 closes); undefined when that could not be told. */
async function queueFound(conn: ChannelModel, queue: string): Promise<boolean | undefined> {
  let ch: Channel | undefined;
  try {
    ch = await conn.createChannel();
    ch.on('error', () => undefined);
    await ch.checkQueue(queue);
    return true;
  } catch (err) {
    return /NOT.FOUND/.test((err as Error).message) ? false : undefined;
  } finally {
    await ch?.close().catch(() => undefined);
  }
}
