/**
 * What a route sends to, apart from the route itself (./route.ts): a broker target (its topic and
 * key expressions, the headers its broker cannot carry), a target's send and failure made into a
 * promise and a Problem, and a fan-out that waits for every target. Webhook targets
 * (kinds/targets/webhook.ts) and listener forwards are built by their own modules.
 */
import { problem, type Problem } from '../core/errors.js';
import { copyHeaders, headersWith, hugeNumberAt, hugeNumberText, resultText, SET_AS_CONSUMED, type Delivery, type Message, type MessageContext } from '../core/message.js';
import type { Outcome } from '../core/outcome.js';
import { bindingsFor, evaluateThen, expressionProblem, expressionResultProblem, type ExpressionEvaluationError } from '../expr/expression.js';
import { toStructuredMessage } from '../codecs/cloudevents.js';
import type { BrokerRuntime, PublishOptions, Target } from '../kinds/contracts.js';
import { WebhookError } from '../kinds/targets/webhook.js';
import { AckTimeout, Refused } from '../kinds/brokers/acknowledgement.js';
import { publishedIdentity } from '../kinds/brokers/nats/msg-id.js';
import type { TargetPlan } from '../plan/types.js';
import { endedWithWrite, endSendSpan, sendTemplate, startSendSpan, TRACEPARENT, type SendSpan } from './trace.js';

/** A target's failure as the route's outcome. */
export function targetFailed(err: unknown): Outcome {
  return { outcome: 'failed', problem: failureOf(err) };
}

function failureOf(err: unknown): Problem {
  return err instanceof TargetError || err instanceof WebhookError ? err.problem : unavailable('target', err);
}

/**
 * A value nested so deeply that writing it as JSON overflows the stack (a consumed payload of
 * thousands of `[`, which JSON.parse reads without recursing; listeners refuse such bodies by
 * `maxJsonDepth` before they parse them). Sending it again fails the same way: it is invalid, so a
 * consume route dead-letters or drops it at once instead of retrying it as an outage, for ever.
 */
function tooDeep(err: unknown): boolean {
  return err instanceof RangeError && err.message === 'Maximum call stack size exceeded';
}

/**
 * A fan-out's deliveries once every target answered. When one fails, the others are still waited
 * for, so the failure can name the targets that did take the message (Problem.took): a client that
 * retries knows it sends it to them again, and a consume route retries the others only, instead of
 * duplicating it silently.
 */
export function everyTarget(sends: (Delivery | Promise<Delivery>)[]): Promise<Delivery[]> {
  return Promise.allSettled(sends).then((results) => {
    const took: (Delivery | undefined)[] = [];
    // Each target's failure, made only once one failed: a fan-out every target took allocates nothing more.
    let failures: (Problem | undefined)[] | undefined;
    let late: NonNullable<Problem['late']>[number][] | undefined;
    let first: Problem | undefined;
    let firstAt = 0;
    let failedCount = 0;
    for (const [i, r] of results.entries()) {
      if (r.status === 'fulfilled') took.push(r.value);
      else {
        took.push(undefined);
        const failure = failureOf(r.reason);
        (failures ??= new Array<Problem | undefined>(results.length).fill(undefined))[i] = failure;
        if (first === undefined) {
          first = failure;
          firstAt = i;
        }
        failedCount++;
        if (failure.late?.[0]) (late ??= [])[i] = failure.late[0];
      }
    }
    if (first === undefined) return took as Delivery[];
    const failed: Problem = { ...first, detail: fanOutDetail(first.detail, took), took, target: firstAt };
    delete failed.late;
    if (late) failed.late = late;
    // Each target's own failure, for the log (one invalid, another down, is logged as each would be) and a late answer's wait.
    if (late || failedCount > 1) failed.targets = failures;
    throw new TargetError(failed);
  });
}

/**
 * A fan-out's sends made one after another, each once the one before settled (taken or failed),
 * instead of at once: a config test's recorders then keep the outputs in target order, whichever
 * target's expressions take longer (`RouteDeps.targetsInTurn`). `took`: targets that have the
 * message already (a retry), not sent it again.
 */
export function sendsInTurn(targets: readonly Target[], took: readonly (Delivery | undefined)[] | undefined, msg: Message, ctx: MessageContext): (Delivery | Promise<Delivery>)[] {
  let before: Promise<unknown> = Promise.resolve();
  return targets.map((t, i) => {
    const taken = took?.[i];
    if (taken !== undefined) return taken;
    const send = before.then(() => sent(t, msg, ctx));
    before = send.catch(() => undefined);
    return send;
  });
}

/** A fan-out failure's detail: the first failing target's, and how many of the targets took the message. */
export function fanOutDetail(targetDetail: string, took: readonly (Delivery | undefined)[]): string {
  let count = 0;
  for (const d of took) if (d !== undefined) count++;
  return count === 0
    ? `${targetDetail} (none of the ${took.length} targets took it)`
    : `${targetDetail}; ${count} of the ${took.length} targets took it (see deliveries): a retry sends it to them again`;
}

/** A target's send; a synchronous throw becomes a rejection. */
export function sent(target: Target, msg: Message, ctx: MessageContext): Delivery | Promise<Delivery> {
  try {
    return target.send(msg, ctx);
  } catch (err) {
    return Promise.reject(err);
  }
}

/** A target's failure that already says what the client is told (an expression that failed, a header the broker cannot carry, a refusal). */
class TargetError extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail);
  }
}

/** The 503 for a broker that did not acknowledge the message (not connected, timed out, failed); a 400 for a value too deep to write. */
export function unavailable(broker: string, err: unknown): Problem {
  if (tooDeep(err)) return problem('EG_INVALID_MESSAGE', 'the message is nested too deeply to be written as JSON (its arrays and objects overflow the stack)');
  return problem('EG_BROKER_UNAVAILABLE', `broker '${broker}' did not acknowledge the message: ${(err as Error).message ?? String(err)}`);
}

/**
 * `out` without the headers its broker takes as instructions for the publish (`instruction`:
 * BrokerRuntime.publishInstruction) that it still carries as the consume route consumed them
 * (`consumed`: MessageContext.consumed): they asked something of the source's stream when the
 * message was stored there, and a copy asking it of its own stream was refused (a stale sequence)
 * or rolled the copies up. One a step set or changed goes, also set to the consumed value
 * (SET_AS_CONSUMED). The same message when there are none.
 */
export function withoutConsumedInstructions(out: Message, consumed: Readonly<Record<string, string>> | undefined, instruction: ((name: string) => boolean) | undefined): Message {
  if (consumed === undefined || instruction === undefined) return out;
  let headers: Record<string, string> | undefined;
  for (const name in out.headers) {
    if (consumed[name] !== out.headers[name] || !instruction(name) || out[SET_AS_CONSUMED]?.has(name)) continue;
    headers ??= copyHeaders(out.headers);
    delete headers[name];
  }
  return headers === undefined ? out : { ...out, headers };
}

/** The 400 for a message with a header its broker cannot carry (BrokerRuntime.headerProblem), or undefined. */
function unpublishableHeader(broker: string, headerProblem: (name: string, value: string) => string | undefined, headers: Readonly<Record<string, string>>): Problem | undefined {
  for (const name in headers) {
    const why = headerProblem(name, headers[name]!);
    if (why === undefined) continue;
    const shown = JSON.stringify(name.length > 64 ? `${name.slice(0, 61)}...` : name);
    const error = `header ${shown}: ${why}`;
    return problem('EG_INVALID_MESSAGE', `broker '${broker}' cannot carry the message's headers: ${error}`, { errors: [error] });
  }
  return undefined;
}

/**
 * A broker topic as a route's target: the topic written in the config or computed per message, the
 * key expression, CloudEvents structured mode, and a message with a header the broker cannot carry
 * refused before it is sent. Publishes synchronously to brokers that can (publishNow: memory).
 *
 * `fanOutIds`: the route has more than one target that takes message ids. There a publisher's
 * `Nats-Msg-Id` (the same on every target) names each write with the target's place: sent as it
 * is, a stream holding two of the targets' subjects kept the first copy and dropped the others as
 * its duplicates, which the route counted delivered (spec-checklist 99).
 */
export function brokerTarget(broker: BrokerRuntime, t: Extract<TargetPlan, { type: 'broker' }>, index: number, fanOutIds = false): Target {
  const key = t.key;
  const topicExpr = t.topicExpr;
  const now = broker.publishNow?.bind(broker);
  // The target's own QoS (mqtt), one object for every publish.
  const options: PublishOptions | undefined = t.qos === undefined ? undefined : { qos: t.qos };
  const takesMessageIds = broker.takesMessageIds === true;
  // A consumed message's id for this target: the route's source identity and the target's place in
  // the route (two targets of a route to one stream are two messages there, not one).
  const optionsFor = (ctx: MessageContext, out: Message): PublishOptions | undefined => {
    if (!takesMessageIds) return options;
    const published = fanOutIds ? publishedIdentity(ctx.route, out.headers) : undefined;
    if (published !== undefined) return { qos: t.qos, messageId: `${published}:${index}`, replacesOwnId: true };
    return ctx.source !== undefined ? { qos: t.qos, messageId: `${ctx.source}:${index}` } : options;
  };
  const headerProblem = broker.headerProblem?.bind(broker);
  const instruction = broker.publishInstruction?.bind(broker);
  // The PRODUCER spans' names and constant attributes, made once per target (used only with an SDK).
  const sending = sendTemplate(broker, topicExpr ? undefined : t.topic);
  const publish = (topic: string, sent: Message, ctx: MessageContext): Delivery | Promise<Delivery> => {
    // Before the header check: an instruction left out is not one to refuse (a consumed `Nats-Rollup: x`).
    const out = withoutConsumedInstructions(sent, ctx.consumed, instruction);
    if (headerProblem) {
      const refused = unpublishableHeader(broker.name, headerProblem, out.headers);
      if (refused) return Promise.reject(new TargetError(refused));
    }
    // ctx.span is set only while an SDK records the route's span: without one, one property read.
    if (ctx.span !== undefined) {
      const send = startSendSpan(ctx.span, sending, topic, out);
      if (send) return tracedSend(send, topic, { ...out, headers: headersWith(out.headers, TRACEPARENT, send.traceparent) }, ctx);
    }
    return untracedSend(topic, out, ctx);
  };
  /** A write with its PRODUCER span, which names it in the message's `traceparent` and ends with the broker's answer. */
  const tracedSend = (send: SendSpan, topic: string, out: Message, ctx: MessageContext): Delivery | Promise<Delivery> => {
    // untracedSend answers a write that throws with a rejection, so the span ends on the answer either way.
    const answer = untracedSend(topic, out, ctx);
    if (answer instanceof Promise) return endedWithWrite(send, answer, failureOf);
    endSendSpan(send, answer);
    return answer;
  };
  /** The write itself; never throws (a broker that throws is a rejection, as one that refuses). */
  const untracedSend = (topic: string, out: Message, ctx: MessageContext): Delivery | Promise<Delivery> => {
    if (now) {
      try {
        return now(topic, out);
      } catch (err) {
        return Promise.reject(new TargetError(unavailable(broker.name, err)));
      }
    }
    let pending: Promise<Delivery>;
    try {
      pending = broker.publish(topic, out, optionsFor(ctx, out));
    } catch (err) {
      return Promise.reject(new TargetError(unavailable(broker.name, err)));
    }
    return pending.then(undefined, (err) => {
      if (err instanceof TargetError) throw err;
      if (err instanceof Refused) throw new TargetError(err.problem);
      const failed = unavailable(broker.name, err);
      // A write still out after its deadline: a consume route waits for its outcome before writing again.
      if (err instanceof AckTimeout && err.late) failed.late = [err.late];
      throw new TargetError(failed);
    });
  };
  const keyed = (msg: Message, k: unknown): Message => {
    if (k === undefined || k === null || typeof k === 'string') return { ...msg, key: k ?? null };
    // JSON writes a number beyond a double (a copied value's `1e400`, read as Infinity) as null: every such message would have had the key "null".
    const at = hugeNumberAt(k);
    if (at !== undefined) throw new TargetError(expressionResultProblem(key!, `key expression failed: ${hugeNumberText('result', at)}`));
    return { ...msg, key: resultText(k, Buffer.isBuffer(msg.value)) };
  };
  const keyFailed = (err: ExpressionEvaluationError): never => {
    throw new TargetError(expressionProblem('key expression', err));
  };
  /** The message with its key, synchronously when the key expression has a fast path. */
  const withKey = (msg: Message, ctx: MessageContext): Message | Promise<Message> => (key ? evaluateThen(key, msg.value, bindingsFor(msg, ctx), (k) => keyed(msg, k), keyFailed) : msg);
  /** A topic chosen per message by an expression. */
  const dynamicTopic = async (msg: Message, ctx: MessageContext): Promise<Delivery> => {
    let name: unknown;
    try {
      name = await topicExpr!.evaluate(msg.value, bindingsFor(msg, ctx));
    } catch (err) {
      throw new TargetError(expressionProblem('topic expression', err as ExpressionEvaluationError));
    }
    const why = typeof name !== 'string' || name === '' ? 'not a non-empty string' : broker.topicProblem?.(name);
    if (why) {
      const detail = `topic expression gave ${shownTopic(name)}, which is not a topic of broker '${broker.name}': ${why}`;
      // Control characters come from the message (a client's `$query.t` of %07), not the expression: the message is invalid.
      throw new TargetError(
        typeof name === 'string' && CONTROL_CHAR.test(name) ? problem('EG_INVALID_MESSAGE', detail, { errors: [detail], logDetail: topicExpr!.where }) : expressionResultProblem(topicExpr!, detail),
      );
    }
    return publish(name as string, await withKey(msg, ctx), ctx);
  };
  return {
    send(original, ctx) {
      // Structured mode (CloudEvents Kafka binding §3.3): the event as one JSON value.
      const msg = t.structured ? toStructuredMessage(original) : original;
      if (topicExpr) return dynamicTopic(msg, ctx);
      // A literal topic (the common case) costs nothing, and a fast-path key no microtask.
      const out = withKey(msg, ctx);
      return out instanceof Promise ? out.then((m) => publish(t.topic, m, ctx)) : publish(t.topic, out, ctx);
    },
  };
}

/** C0 and C1 control characters and DEL: a computed topic its broker refuses while it holds one was made of the message's data. */
const CONTROL_CHAR = /[\u0000-\u001f\u007f-\u009f]/;

/** A computed topic as a problem's detail quotes it: a long one (thousands of characters, refused for its length) cut to its start. */
function shownTopic(name: unknown): string {
  if (typeof name !== 'string' || name.length <= 200) return JSON.stringify(name) ?? 'nothing';
  return `${JSON.stringify(name.slice(0, 200))}… (${Buffer.byteLength(name)} bytes)`;
}
