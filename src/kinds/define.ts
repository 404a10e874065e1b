/**
 * How a kind is defined: once. A kind module writes its options as a TypeBox schema; from that one
 * definition come the TypeScript type of its options (`Static<typeof options>`), its fragment of
 * gateway.schema.json (and so editor hovers and the checks `eventgate validate` runs) and its rows
 * in docs/config.md (each option's `description` and `default`). The kind's summary and example
 * sit beside it in `doc`. See docs/architecture.md, "Adding a kind".
 */
import type * as TypeBox from '@sinclair/typebox';
import type { Static, TLiteral, TObject, TProperties, TSchema } from '@sinclair/typebox';
import { bundled } from '../core/bundled.js';
import type { Expression } from '../expr/expression.js';
import type { BrokerKind, KindDoc, ListenerKind, Qos, StepCompileContext, StepKind } from './contracts.js';

export const { Type } = bundled<typeof TypeBox>('@sinclair/typebox');
export type { Static, TSchema };

/** The options of a broker or listener kind: `kind: <name>` and its own keys, no others. */
export function kindOptions<K extends string, P extends TProperties>(kind: K, properties: P): TObject<{ kind: TLiteral<K> } & P> {
  return Type.Object({ kind: Type.Literal(kind), ...properties } as { kind: TLiteral<K> } & P, { additionalProperties: false });
}

/**
 * One of fixed strings, as a JSON Schema `enum` (TypeBox's literal unions become `anyOf` of
 * consts, whose errors read worse than "must be one of ...").
 */
export function oneOfStrings<const T extends readonly string[]>(values: T, options: Record<string, unknown> = {}) {
  return Type.Unsafe<T[number]>({ ...options, enum: [...values] });
}

/** An MQTT QoS (`0`, `1` or `2`): the mqtt broker's `qos` and `qosByTopic`, and every `qos` a route or step sets (routeQos). */
export function qosSchema(options: Record<string, unknown> = {}) {
  return Type.Unsafe<Qos>({ enum: [0, 1, 2], ...options });
}

/** A route's or validate step's own `qos` on a source or target, QoS `what` (BrokerKind.takesQos; other kinds refuse it at compile). */
export function routeQos(what: string) {
  return qosSchema({
    description: `MQTT brokers only: the QoS ${what} (\`0\` at most once, \`1\` at least once, \`2\` exactly once), instead of the broker's \`qosByTopic\` and \`qos\`; another kind of broker refuses the key.`,
  });
}

/** Exactly one of `schemas` (JSON Schema `oneOf`; the diagnostics describe it with `description`). */
export function oneOf<T extends TSchema[]>(schemas: [...T], options: Record<string, unknown> = {}) {
  return Type.Unsafe<Static<T[number]>>({ ...options, oneOf: schemas });
}

/** A map of any key → `value` (JSON Schema `additionalProperties`, as editors and diagnostics expect). */
export function mapOf<V extends TSchema>(value: V, options: Record<string, unknown> = {}) {
  return Type.Unsafe<Record<string, Static<V>>>({ ...options, type: 'object', additionalProperties: value });
}

/**
 * Exactly one of `keys` must be present: a shape rule stated in the schema (spread it into an
 * object schema's options), so the config check reports it (src/config/check-schema.ts knows
 * the shape: a `oneOf` of single `required` keys) and compile code can rely on it.
 */
export function exactlyOne(keys: readonly string[]): { oneOf: { required: string[] }[] } {
  return { oneOf: keys.map((k) => ({ required: [k] })) };
}

/** `keys` of an exactlyOne() rule when `schema` is one, else undefined. */
export function exactlyOneKeys(schema: unknown): string[] | undefined {
  const branches = (schema as { oneOf?: unknown } | undefined)?.oneOf;
  if (!Array.isArray(branches) || branches.length < 2) return undefined;
  const keys: string[] = [];
  for (const b of branches) {
    const names = Object.keys(b as object);
    const required = (b as { required?: unknown }).required;
    if (names.length !== 1 || !Array.isArray(required) || required.length !== 1) return undefined;
    keys.push(String(required[0]));
  }
  return keys;
}

/**
 * `schema` with the message the config check gives when a value fails it (its `description`,
 * an annotation every validator accepts).
 */
export function withMessage<T extends Record<string, unknown>>(schema: T, message: string): T & { description: string } {
  return { ...schema, description: message };
}

/**
 * A string that must match `pattern`; `what` names such a value ("an http(s) URL"), and the config
 * check says "<where> must be <what>" rather than quoting the pattern. (`title` is the JSON Schema
 * annotation for it, so editors show it too.)
 */
export function stringMatching(pattern: string, what: string, options: Record<string, unknown> = {}) {
  return Type.String({ ...options, pattern, title: what });
}

/**
 * None of `keys` may be present: a shape rule for an object schema's `dependentSchemas` (with
 * key K present, these may not be). `message` is what the config check says; `{keys}` in it
 * becomes the offending keys as written ('a' and 'b'), and `{s}` an 's' when there is one (`belong{s}`).
 */
export function forbidKeys(keys: readonly string[], message: string): { not: { anyOf: { required: string[] }[] }; description: string } {
  return withMessage({ not: { anyOf: keys.map((k) => ({ required: [k] })) } }, message);
}

/** `keys` of a forbidKeys() rule when `schema` is one, else undefined. */
export function forbiddenKeys(schema: unknown): string[] | undefined {
  const anyOf = (schema as { not?: { anyOf?: unknown } } | undefined)?.not?.anyOf;
  if (!Array.isArray(anyOf)) return undefined;
  const keys = anyOf.map((b) => (b as { required?: unknown[] }).required?.[0]);
  return keys.every((k) => typeof k === 'string') ? (keys as string[]) : undefined;
}

function kindName(options: TObject): string {
  const kind = (options.properties.kind as { const?: unknown } | undefined)?.const;
  if (typeof kind !== 'string') throw new Error('kind options need `kind: Type.Literal(<name>)`; use kindOptions()');
  return kind;
}

type BrokerDefinition<S extends TObject, C> = Omit<BrokerKind<Static<S>, C>, 'kind' | 'schema'> & { options: S };
type ListenerDefinition<S extends TObject, C> = Omit<ListenerKind<Static<S>, C>, 'kind' | 'schema' | 'socketOptions'> & {
  options: S;
  /** Options whose change needs a new socket; others are applied in place by reconfigure(). */
  socketOptions: readonly (keyof Static<S> & string)[];
};
type StepDefinition<S extends TSchema> = Omit<StepKind<Static<S>>, 'schema'> & { options: S };

/** A broker kind from its options schema (made with kindOptions()), docs and factory. */
export function defineBroker<S extends TObject, C = Static<S>>(def: BrokerDefinition<S, C>): BrokerKind<Static<S>, C> {
  const { options, ...rest } = def;
  return { ...rest, kind: kindName(options), schema: options };
}

/** A listener kind from its options schema (made with kindOptions()), docs, routing rules and factory. */
export function defineListener<S extends TObject, C = Static<S>>(def: ListenerDefinition<S, C>): ListenerKind<Static<S>, C> {
  const { options, ...rest } = def;
  return { ...rest, kind: kindName(options), schema: options };
}

/** A step kind: its name (the key in a chain), options schema, docs and compile function. */
export function defineStep<S extends TSchema>(def: StepDefinition<S>): StepKind<Static<S>> {
  const { options, ...rest } = def;
  return { ...rest, schema: options };
}

export type { KindDoc };

/**
 * Compiles a map of name → JSONata expression (a step's `set:`), reporting each failure at its own
 * key; undefined when any entry failed, so the step is not built half-compiled.
 */
export function compileExpressionMap(ctx: StepCompileContext, key: string, map: Record<string, string> | undefined): [string, Expression][] | undefined {
  const compiled: [string, Expression][] = [];
  let ok = true;
  for (const [name, source] of Object.entries(map ?? {})) {
    const expr = ctx.compileExpression(source, [key, name]);
    if (expr) compiled.push([name, expr]);
    else ok = false;
  }
  return ok ? compiled : undefined;
}
