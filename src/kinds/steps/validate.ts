import type { ErrorObject } from 'ajv';
import { parse as parseYaml } from '../../config/yaml.js';
import { problem } from '../../core/errors.js';
import { headerJson } from '../../core/header-json.js';
import { headersWith, newHeaders, ORIGINAL, withHeaders, type Message } from '../../core/message.js';
import { jsonShape } from '../listeners/client-json.js';
import { REPEATED_NAMES_WHY, repeatedNameError, repeatedNameOf, repeatedNameText, type RepeatedName } from '../listeners/repeated-names.js';
import type { StepStop } from '../../core/outcome.js';
import type { MessageContext } from '../../core/message.js';
import type { CompiledStep, MessageContract, PublishOptions } from '../contracts.js';
import { defineStep, exactlyOne, oneOf, oneOfStrings, routeQos, Type, type Static } from '../define.js';
import { narrowToTaggedBranch } from './discriminated-errors.js';

/** The header the AsyncAPI Event Gateway used for tagged messages; kept so its consumers work unchanged. */
export const VALIDATION_ERROR_HEADER = '_asyncapi_eg_validation_error';

/** Whether a header is named as the tag, in any case: a webhook target sends it as an HTTP header, whose names have no case. */
export function isValidationTagName(name: string): boolean {
  return name.length === VALIDATION_ERROR_HEADER.length && name.toLowerCase() === VALIDATION_ERROR_HEADER;
}

/**
 * `headers` without a tag its producer wrote: a route with a validate step drops it on the way in,
 * so the header its targets get is its own verdict, never a client's claim (a valid message goes on
 * without one). `tagged`: the route's chain wrote the tag itself after it saw the message as its
 * producer wrote it (a kafka listener's records), so the tag under its exact name is kept, and only
 * other spellings go. The same object when there is nothing to drop (the usual case: no copy).
 */
export function withoutClientTag(headers: Readonly<Record<string, string>>, tagged = false): Readonly<Record<string, string>> {
  const client = (name: string) => isValidationTagName(name) && !(tagged && name === VALIDATION_ERROR_HEADER);
  let found = false;
  for (const name in headers) found ||= client(name);
  if (!found) return headers;
  const out = newHeaders();
  for (const name in headers) if (!client(name)) out[name] = headers[name]!;
  return out;
}

const ON_INVALID = ['reject', 'tag', 'deadletter'] as const;
type OnInvalid = (typeof ON_INVALID)[number];

const options = Type.Object(
  {
    schema: Type.Optional(
      oneOf([Type.Unsafe<Record<string, unknown>>({ type: 'object' }), Type.String({ minLength: 1 })], {
        description:
          'An inline JSON Schema, or the path of a JSON/YAML schema file relative to gateway.yaml; the file is watched, and so are the files its `$ref`s name by a path relative to the file that holds the `$ref` (`$ref: parts/node.yaml#/$defs/node`), which may refer back to it (a recursive schema across files; a schema with an `$id` reads no file: its `$ref`s resolve against the id, as JSON Schema says); the `$ref`s of an inline schema name files relative to gateway.yaml, as a schema path does (`schema: {$ref: schemas/defs.yaml#/$defs/order}`), read and watched the same way. A schema with an `$id` resolves its `$ref`s against that id instead; a `$ref` names a file by a relative path only (one by an absolute path or a `file:` URL is not read), and remote `$ref`s are not fetched. Compiled as JSON Schema 2020-12 unless its `$schema` names draft-04 (`http://json-schema.org/draft-04/schema#`: boolean `exclusiveMaximum`, `id`), draft-06/07 or 2019-09.',
      }),
    ),
    message: Type.Optional(
      Type.String({
        minLength: 1,
        description: 'An AsyncAPI message of the `asyncapi:` documents, by id: its components key, its messageId (2.x) or key in a channel (3.x), or its name; the documents are watched.',
      }),
    ),
    channel: Type.Optional(
      Type.String({ minLength: 1, description: 'An AsyncAPI channel (its key, or its 3.x address): any of its messages passes; with several, each error names the message it is from.' }),
    ),
    onInvalid: Type.Optional(
      oneOfStrings(ON_INVALID, { default: 'reject', description: 'What an invalid message gets: `reject` (400 / error frame), `tag` (forwarded with the header) or `deadletter`.' }),
    ),
    deadletter: Type.Optional(
      Type.Object(
        {
          broker: Type.String({ description: 'Broker name (under `brokers:`).' }),
          topic: Type.String({
            description:
              "Topic for invalid messages: one the broker's server would refuse (a wildcard on mqtt or nats, an illegal Kafka topic name, an AMQP routing key over 255 bytes) is a config error at its line, as in a route.",
          }),
          qos: Type.Optional(routeQos("of the messages this step dead-letters, as a route's `deadletter.qos`")),
        },
        { additionalProperties: false, description: "`{broker, topic}` (and `qos` on an mqtt broker) for `onInvalid: deadletter`; defaults to the route's deadletter." },
      ),
    ),
  },
  {
    additionalProperties: false,
    description: 'Exactly one of `schema`, `message` or `channel` says what the value must match.',
    ...exactlyOne(['schema', 'message', 'channel']),
  },
);
export type ValidateOptions = Static<typeof options>;

export const validateStep = defineStep({
  kind: 'validate',
  options,
  doc: {
    summary:
      'Validates the message value against a JSON Schema (ajv, with formats such as date-time), given inline or as a file (`schema`), or taken from the config\'s AsyncAPI documents: the payload of one message (`message`) or of any message of a channel (`channel`); see docs/asyncapi.md. A `format` ajv does not know (`format: emial`) and a keyword JSON Schema does not have (`requird`) are config errors at their key, with a hint, since ajv would ignore them and check nothing (JSON Schema\'s `idn-email`, `idn-hostname`, `iri` and `iri-reference` formats are accepted and not checked); keys starting with `x-` (extensions) and the annotations AsyncAPI and OpenAPI schemas add (`example`, `externalDocs`, `discriminator`) are allowed and check nothing (a `discriminator` only cuts the errors listed for a `oneOf` or `anyOf` value to the branch its tag names; docs/asyncapi.md). `onInvalid: reject` (default) answers 400 / an error frame with the errors; `tag` forwards the message with header `_asyncapi_eg_validation_error` = compact JSON `{"ts":"<ISO-8601>","errors":["<instancePath>: <message>",...]}` (the root\'s instancePath is empty: `": must have required property \'id\'"`; a webhook target sends it only when one of its `headers` copies it, `$headers._asyncapi_eg_validation_error`, and validate warns of one that does not, `EG_CONFIG_TAG_NOT_SENT`); `deadletter` sends it, with that header, to `deadletter: {broker, topic}` (or the route\'s `deadletter`) instead of the route\'s targets; on an mqtt broker the step\'s `deadletter` takes a `qos` of its own, as the route\'s does. When several validate steps of a route tag the same message (or a later one dead-letters it), the header lists the errors of each, in step order. The header is the gateway\'s verdict: on a route with a validate step, one the message arrived with (a client\'s or producer\'s, in any case) is dropped before the chain runs, so a valid message goes on without it (on a kafka listener, from the batches it rebuilds: a batch whose records all pass goes on byte for byte). At most the first 100 errors are listed (and at most 16 KiB of them, each cut at 256 characters), wherever they appear; the detail of a 400 counts them all. A value whose JSON object gives a member name twice (`{"id":"x","id":1}`) is invalid whatever the schema, where the message goes on as the bytes it came as (a consumed payload, a kafka listener\'s record): the schema checked the last value, and readers that keep the first would see one it never did; the one error is `<pointer of the object>: must not give the name "id" twice (...)` (HTTP and WebSocket listeners refuse such JSON before any step). After a `message` or `channel` step, expressions see `$message` (the message id) and `$channel` (the channel key).',
    example: 'validate:\n  message: lightMeasured      # or: channel: lightingMeasured, or: schema: schemas/light-measured.json\n  onInvalid: tag',
  },
  compile(options, ctx) {
    // The schema guarantees exactly one of schema, message and channel.
    const onInvalid = options.onInvalid ?? 'reject';
    const dl = options.deadletter;
    // A bad dead-letter topic does not stop the schema's own check: every problem in one pass.
    const deadletterOk =
      !dl ||
      (ctx.checkBroker(dl.broker, ['deadletter', 'broker']) &&
        ctx.checkTopic(dl.broker, dl.topic, ['deadletter', 'topic']) &&
        (dl.qos === undefined || ctx.checkQos(dl.broker, ['deadletter', 'qos'])));
    // Built once here, as a route's targets build theirs, not per dead-lettered message.
    const deadletter: StepDeadletter | undefined = dl && { broker: dl.broker, topic: dl.topic, options: dl.qos === undefined ? undefined : { qos: dl.qos } };
    if (options.message !== undefined || options.channel !== undefined) {
      const ref = options.message !== undefined ? { message: options.message } : { channel: options.channel! };
      const rel = [options.message !== undefined ? 'message' : 'channel'];
      if (!ctx.asyncapiContracts) {
        ctx.report(rel, 'EG_CONFIG_ASYNCAPI_REF', 'AsyncAPI messages cannot be used here');
        return undefined;
      }
      const contracts = ctx.asyncapiContracts(ref, rel);
      if (!contracts || !deadletterOk) return undefined;
      // Bound by the step's form, not by what the document now says (a message in two channels has no `$channel`): an edit of the document does not make the config invalid.
      const step = { ...validator(contracts, onInvalid, deadletter), binds: ['message', 'channel'] };
      // The export names the message as the config did too, so the config reads it back.
      return options.message === undefined ? step : { ...step, accepts: step.accepts!.map((a) => ({ ...a, named: options.message })) };
    }
    let schema: unknown = options.schema;
    let origin: string | undefined;
    if (typeof schema === 'string') {
      origin = schema;
      if (ctx.readDocument) {
        const doc = ctx.readDocument(schema, ['schema']);
        if (doc === undefined) return undefined;
        schema = doc.value;
      } else {
        const text = ctx.readFile(schema, ['schema']);
        if (text === undefined) return undefined;
        try {
          schema = parseYaml(text);
        } catch (err) {
          ctx.report(['schema'], 'EG_CONFIG_JSON_SCHEMA', `schema file '${origin}' is not valid JSON or YAML: ${(err as Error).message.split('\n')[0]}`);
          return undefined;
        }
      }
    }
    const check = ctx.compileJsonSchema(schema, ['schema'], origin);
    if (!check || !deadletterOk) return undefined;
    return validator([{ check, message: null, channel: null }], onInvalid, deadletter);
  },
});

/** A step's own dead-letter topic, with what its publishes ask of the broker (`qos`). */
interface StepDeadletter {
  broker: string;
  topic: string;
  options: PublishOptions | undefined;
}

/**
 * The one validator behind every form of the step: the value passes when it matches any of the
 * contracts (a JSON Schema is one contract without AsyncAPI metadata; a channel has one per message).
 * `deadletter` undefined with onInvalid: deadletter means the route's own dead-letter target.
 */
export function validator(contracts: readonly MessageContract[], onInvalid: OnInvalid, deadletter?: StepDeadletter): CompiledStep {
  const only = contracts.length === 1 ? contracts[0]! : undefined;
  // A step that names AsyncAPI messages tells expressions which one the value is: `$message`, `$channel`.
  const tells = contracts.some((c) => c.message !== null || c.channel !== null);
  // Without a match (onInvalid: tag), `$message` is still the one message a `message` step names; a channel's contracts share its key.
  const matched = (ctx: MessageContext, c: MessageContract | undefined) => {
    if (tells) ctx.asyncapi = c ? { message: c.message, channel: c.channel } : { message: only?.message ?? null, channel: contracts[0]!.channel };
  };
  // Every contract must be readable from bytes for the step to be (any one accepting is a match).
  const byteChecks = contracts.map((c) => c.check.acceptsBytes);
  const bytesOnly = byteChecks.every((b) => b !== undefined) ? (byteChecks as ((buf: Buffer, start: number, end: number) => boolean)[]) : undefined;
  return {
    kind: 'validate',
    keepsValue: true,
    stopsInvalid: onInvalid !== 'tag',
    brokers: deadletter ? [deadletter.broker] : [],
    needsRouteDeadletter: onInvalid === 'deadletter' && !deadletter,
    accepts: contracts.map((c) => ({ schema: c.check.bundled ?? c.check.schema, message: c.message, draft: c.check.draft })),
    // A value that passes leaves the message as it came; `$message`/`$channel` are set only for later steps' expressions.
    acceptsBytes: bytesOnly && (bytesOnly.length === 1 ? bytesOnly[0] : (buf, start, end) => bytesOnly.some((b) => b(buf, start, end))),
    run(msg, ctx): Message | StepStop {
      let repeated: RepeatedName | undefined;
      for (const c of contracts) {
        if (c.check(msg.value)) {
          matched(ctx, c);
          // The value passed as JSON.parse read it: the last of a repeated name. Its bytes go on
          // as they came, to readers that may keep the first, so such a message is invalid.
          repeated = repeatedNameInBytes(msg, ctx);
          if (repeated === undefined) return msg;
          break;
        }
      }
      if (repeated === undefined) matched(ctx, undefined);
      const errorsOf = (c: MessageContract) => formatErrors(narrowToTaggedBranch(c.check.errors ?? [], c.check.schema, msg.value));
      const found = repeated ? [repeatedNameError(repeated)] : only ? errorsOf(only) : contracts.flatMap((c) => errorsOf(c).map((e) => `${e} (message ${c.message ?? 'without id'})`));
      const errors = listed(found);
      const repeatedDetail = repeated && `the message gives ${repeatedNameText(repeated)}: ${REPEATED_NAMES_WHY}`;
      if (onInvalid === 'reject') {
        if (repeatedDetail) return { stop: 'invalid', problem: problem('EG_INVALID_MESSAGE', repeatedDetail, { errors }) };
        const count = `${found.length} error${found.length === 1 ? '' : 's'}${errors.length < found.length ? `; the first ${errors.length} are listed` : ''}`;
        return { stop: 'invalid', problem: problem('EG_INVALID_MESSAGE', `the message does not match its schema (${count})`, { errors }) };
      }
      // After an earlier validate step of the route tagged the message, the header keeps its errors too.
      const all = ctx.tagged ? listed([...ctx.tagged, ...errors]) : errors;
      const tagged = withHeaders(msg, headersWith(msg.headers, VALIDATION_ERROR_HEADER, headerJson({ ts: new Date().toISOString(), errors: all })));
      if (onInvalid === 'tag') {
        ctx.tagged = all;
        return tagged;
      }
      return { stop: 'deadletter', message: tagged, errors: all, to: deadletter, ...(repeatedDetail && { detail: repeatedDetail }) };
    },
  };
}

/**
 * The first name an object of the message's value gives twice, read from the bytes the message
 * goes on as, while the value is still the one decoded from them: its ORIGINAL's (a consumed
 * payload, a kafka listener's record sent to targets), or a kafka listener's record forwarded in
 * its batch (MessageContext.valueBytes). A value without such bytes is written as JSON.stringify
 * writes it, with one member per name: nothing to find, and nothing scanned.
 */
function repeatedNameInBytes(msg: Message, ctx: MessageContext): RepeatedName | undefined {
  const v = msg.value;
  if (v === null || typeof v !== 'object' || Buffer.isBuffer(v)) return undefined;
  const o = msg[ORIGINAL];
  if (o !== undefined && o.value !== null && o.decoded.value === v) {
    // A client's body or frame: its listener refused it had it given a name twice.
    if (o.namesChecked) return undefined;
    const bytes = o.value;
    return repeatedNameOf(v, jsonShape(bytes, Number.POSITIVE_INFINITY).members, () => bytes.toString());
  }
  const b = ctx.valueBytes;
  if (b === undefined || b.value !== v) return undefined;
  return repeatedNameOf(v, jsonShape(b.buf, Number.POSITIVE_INFINITY, b.start, b.end).members, () => b.buf.toString(undefined, b.start, b.end));
}

/**
 * The most errors a 400, an error frame or the header lists, and the most bytes they take as JSON:
 * ajv reports every error (allErrors), and a long array of wrong items had tens of thousands, a
 * 400 body of megabytes and a header no broker carries (an MQTT 5 user property is at most 65535
 * bytes: the tagged or dead-lettered message failed as 503, and a consume route retried it).
 * One error is cut at ERROR_CHARS (a long property name in its pointer).
 */
export const LISTED_ERRORS = 100;
const LISTED_BYTES = 16 * 1024;
const ERROR_CHARS = 256;

export function listed(errors: readonly string[]): string[] {
  const out: string[] = [];
  let bytes = 2;
  for (const e of errors) {
    if (out.length === LISTED_ERRORS) break;
    let one = e;
    if (one.length > ERROR_CHARS) {
      // Not between the two halves of a surrogate pair.
      const cut = /[\ud800-\udbff]/.test(one[ERROR_CHARS - 1]!) ? ERROR_CHARS - 1 : ERROR_CHARS;
      one = `${one.slice(0, cut)}…`;
    }
    bytes += Buffer.byteLength(JSON.stringify(one)) + 1;
    if (bytes > LISTED_BYTES) break;
    out.push(one);
  }
  return out;
}

export function formatErrors(errors: ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).map((e) => {
    // The spec's "<instancePath>: <message>" with ajv's instancePath: the root is "" (": must be
    // object"), as in JSON Pointer, where "/" would be the key "" of the root object.
    // An unknown property is named by its own pointer, where ajv's points at the object holding it.
    const unknown = unknownProperty(e);
    const where = unknown === undefined ? e.instancePath : `${e.instancePath}/${pointerToken(unknown)}`;
    return `${where}: ${e.message ?? e.keyword}${expected(e)}`;
  });
}

/** The property an `additionalProperties: false` or `unevaluatedProperties: false` error is about. */
function unknownProperty(e: ErrorObject): string | undefined {
  if (e.keyword === 'additionalProperties') return (e.params as { additionalProperty: string }).additionalProperty;
  if (e.keyword === 'unevaluatedProperties') return (e.params as { unevaluatedProperty: string }).unevaluatedProperty;
  return undefined;
}

/** A property name as a JSON Pointer token: `~` and `/` escaped, as ajv's instancePath has them. */
function pointerToken(name: string): string {
  return name.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** How many of an `enum`'s values an error lists. */
const LISTED_VALUES = 10;

/**
 * What an `enum` or `const` asks for, after ajv's words: "must be equal to one of the allowed
 * values" alone did not tell a producer what to send (`/command: must be equal to one of the
 * allowed values: "on", "off"`, as the AsyncAPI parser says of a document's own enums).
 */
function expected(e: ErrorObject): string {
  const json = (v: unknown) => {
    const text = JSON.stringify(v) ?? String(v);
    return text.length > 64 ? `${text.slice(0, 63)}…` : text;
  };
  if (e.keyword === 'const') return ` ${json((e.params as { allowedValue: unknown }).allowedValue)}`;
  if (e.keyword !== 'enum') return '';
  const values = (e.params as { allowedValues?: unknown[] }).allowedValues;
  if (!Array.isArray(values)) return '';
  const shown = values.slice(0, LISTED_VALUES).map(json).join(', ');
  return `: ${shown}${values.length > LISTED_VALUES ? `, ... (${values.length - LISTED_VALUES} more)` : ''}`;
}
