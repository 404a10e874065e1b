import { hash, randomUUID } from 'node:crypto';
import { attributeErrors, attributesOf, eventData, structuredProblem, withAttributes } from '../../codecs/cloudevents.js';
import { bindingsFor, evaluateThen, expressionProblem } from '../../expr/expression.js';
import { isJsonMediaType, resultText, type Message, type MessageContext } from '../../core/message.js';
import type { Problem } from '../../core/errors.js';
import type { StepStop } from '../../core/outcome.js';
import type { StepResult } from '../contracts.js';
import { compileExpressionMap, defineStep, mapOf, Type, withMessage } from '../define.js';

/** Attributes a step may not remove: without them the message is no CloudEvent. */
const REQUIRED = new Set(['specversion', 'id', 'source', 'type']);

/**
 * Makes the message a CloudEvent, or rewrites the attributes of one. A plain message is wrapped:
 * its value becomes the data, `id` a UUID (eventId), `time` now, `specversion` 1.0, `source` and `type`
 * the step's; `set` and `remove` then apply to every message, wrapped or not.
 */
export const cloudeventStep = defineStep({
  kind: 'cloudevent',
  options: Type.Object(
    {
      require: Type.Optional(
        Type.Boolean({
          default: false,
          description:
            'Refuse a plain message instead of wrapping it: it is `invalid` (400 `EG_CLOUDEVENT_INVALID` naming the missing attributes to an HTTP client, an error frame to a WebSocket one, dead-lettered or dropped by a consume route). `source` and `type` then have nothing to wrap and are a config error.',
        }),
      ),
      source: Type.Optional(Type.String({ minLength: 1, description: 'The `source` attribute (a URI-reference) of plain messages this step wraps.' })),
      type: Type.Optional(Type.String({ minLength: 1, description: 'The `type` attribute of plain messages this step wraps.' })),
      set: Type.Optional(
        mapOf(Type.String({ minLength: 1, description: 'JSONata expression for the attribute value.' }), {
          propertyNames: { pattern: '^[a-z0-9]{1,20}$', title: 'an attribute name (1 to 20 lowercase letters or digits)' },
          description: 'Attribute or extension name → JSONata expression for its value (`$ce` holds the current attributes; no result: left as it was).',
        }),
      ),
      remove: Type.Optional(
        // Any name an event can have (longer than 20 too): `set` names are the ones this gateway gives, kept to the spec's advice.
        Type.Array(
          Type.Unsafe<string>({
            type: 'string',
            pattern: '^[a-z0-9]+$',
            // The config check says this rather than ajv's "must NOT be valid".
            allOf: [
              withMessage(
                { not: { enum: [...REQUIRED] } },
                `is a required CloudEvents attribute (${[...REQUIRED].join(', ')}), which no event goes without: list only optional attributes or extensions`,
              ),
            ],
          }),
          { description: 'Optional attributes or extensions to drop.' },
        ),
      ),
    },
    { additionalProperties: false, minProperties: 1 },
  ),
  doc: {
    summary:
      "Makes each message a [CloudEvent](https://cloudevents.io) or rewrites its attributes. A plain message is wrapped: its value becomes the event data, `id` is a UUID (the same on every try of one message, which a consume route's retries run the chain for again; for a message consumed from Kafka, a JetStream subject or a memory topic, made of its place there, so a redelivery and an event stream's replay carry it too: a receiver deduplicating by `source` and `id` tells them), `time` is now (the try's), `specversion` is `1.0`, `datacontenttype` the content type the message came with where that fits its value (else `application/json`, `text/plain` for a string, `application/octet-stream` for bytes; data of a type neither JSON nor `text/plain` is then its bytes, as a consumed binary-mode event's), and `source` and `type` are the step's; a message that already is a CloudEvent keeps its attributes. With `require: true` a plain message is refused instead, as `invalid` (400 `EG_CLOUDEVENT_INVALID` naming the missing attributes; an error frame to a WebSocket client; a consume route dead-letters or drops it), so a route takes CloudEvents only (as a Knative broker's ingress does). Then `set` (JSONata per attribute or extension, evaluated on the value with `$ce` bound to the attributes so far) rewrites attributes of every message, and `remove` drops optional attributes or extensions. A message left without a required attribute, or with a malformed one, is `invalid` (400 `EG_CLOUDEVENT_INVALID`). Attributes travel as the message's `ce_<name>` headers (the CloudEvents Kafka binding), so Kafka targets carry them in binary mode.",
    example:
      'chains:\n  as-cloudevent:\n    - cloudevent:\n        source: /shop/orders\n        type: com.example.order.placed\n        set:\n          subject: $string(orderId)\n          tenant: $headers."x-tenant"\n  events-only:\n    - cloudevent: { require: true }',
  },
  compile(options, ctx) {
    const set = compileExpressionMap(ctx, 'set', options.set);
    if (!set) return undefined;
    if (options.require === true) {
      const wraps = (['source', 'type'] as const).filter((k) => options[k] !== undefined);
      for (const k of wraps) ctx.report([k], 'EG_CONFIG_SCHEMA', `'${k}' is for plain messages this step wraps, and with 'require: true' it wraps none: remove it`);
      if (wraps.length > 0) return undefined;
    }
    const fixed: Record<string, string> = {};
    if (options.source !== undefined) fixed.source = options.source;
    if (options.type !== undefined) fixed.type = options.type;
    const remove = options.remove ?? [];
    return {
      kind: 'cloudevent',
      // The value is the event's data, as it came: the attributes are headers (a validate step after it still checks what the client sent).
      keepsValue: true,
      // A wrapped message's id is its source's name for it where there is one (eventId).
      namesMessages: options.require !== true,
      run(msg, mctx) {
        const given = attributesOf(msg.headers);
        if (given === undefined && options.require === true) return { stop: 'invalid', problem: notACloudEvent() };
        const attrs: Record<string, unknown> = given ?? { ...wrap(msg, mctx), ...fixed };
        for (const name of remove) delete attrs[name];
        const done = (): StepResult => {
          const errors = attributeErrors(attrs);
          if (errors.length > 0) return { stop: 'invalid', problem: structuredProblem(errors) };
          const event = { ...msg, headers: withAttributes(msg.headers, attrs) };
          // A wrapped message's data as a consumed binary-mode event's: bytes its content type says are not text are its bytes again.
          return given === undefined ? eventData(event) : event;
        };
        if (set.length === 0) return done();
        const bindings = { ...bindingsFor(msg, mctx), ce: attrs };
        const apply = (from: number): StepResult | Promise<StepResult> => {
          for (let i = from; i < set.length; i++) {
            const [name, expr] = set[i]!;
            const r = evaluateThen<StepStop | undefined>(
              expr,
              msg.value,
              bindings,
              (v) => {
                if (v !== undefined) attrs[name] = resultText(v, Buffer.isBuffer(msg.value));
                return undefined;
              },
              (err): StepStop => ({ stop: 'failed', problem: expressionProblem(`cloudevent.set.${name}`, err) }),
            );
            if (r instanceof Promise) return r.then((stop) => stop ?? apply(i + 1));
          }
          return done();
        };
        return apply(0);
      },
    };
  },
});

/**
 * What a `require: true` step answers a plain message: the attributes a CloudEvent needs, each
 * named, and how a client sends them (Knative's broker ingress refuses such a request the same way).
 */
function notACloudEvent(): Problem {
  // A new object each time: a route's failure paths add to the problem they are given.
  return structuredProblem(
    [...REQUIRED].map((name) => `'${name}' is missing (a required CloudEvents attribute)`),
    'this route takes CloudEvents only, and the message is none: send its attributes as headers in binary mode (ce-* over HTTP, ce_* on Kafka, as the protocol binding names them) or the event as application/cloudevents+json (structured mode)',
  );
}

/** The attributes a plain message gets when it becomes a CloudEvent. */
function wrap(msg: Message, ctx: MessageContext): Record<string, unknown> {
  return {
    specversion: '1.0',
    id: eventId(ctx),
    time: new Date().toISOString(),
    datacontenttype: dataContentType(msg),
  };
}

/**
 * A wrapped message's `id`, the same for every try of one message: a consume route runs its chain
 * again for each retry, and a new UUID each time made one message several events to a receiver
 * deduplicating by `source` and `id` (and a signed webhook's `webhook-id`, which is the event's id).
 * A consumed message its source names (MessageContext.source: a Kafka record, a JetStream message,
 * a memory topic's) has a UUID made of that name, also the same on a redelivery and an event
 * stream's replay; any other a UUID drawn once (MessageContext.deliveryId), kept for the retries.
 */
function eventId(ctx: MessageContext): string {
  if (ctx.source === undefined) return (ctx.deliveryId ??= randomUUID());
  // RFC 9562 version 8 (its bits the application's): the first 128 bits of a SHA-256 of the name,
  // one-shot (a third cheaper than a Hash object per consumed message).
  const b = hash('sha256', `${ctx.source}:cloudevent`, 'buffer');
  b[6] = (b[6]! & 0x0f) | 0x80;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex', 0, 16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * What a wrapped message's data is: the content type it came with where that fits its value (a
 * record's `application/xml` text, `application/octet-stream` bytes, `application/vnd.x+json`),
 * else what its value is. Taking only the value's kind made XML `text/plain`, and bytes
 * `text/plain` or `application/json`, so a consumer read them as what they were not.
 */
function dataContentType(msg: Message): string {
  const given = msg.headers['content-type'];
  const json = isJsonMediaType(given);
  const text = typeof msg.value === 'string' || Buffer.isBuffer(msg.value);
  if (given !== undefined && (json ? !Buffer.isBuffer(msg.value) : text)) return given;
  return Buffer.isBuffer(msg.value) ? 'application/octet-stream' : typeof msg.value === 'string' ? 'text/plain' : 'application/json';
}
