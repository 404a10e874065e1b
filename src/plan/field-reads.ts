/**
 * A field an expression reads that the schema of the route's validate step before it does not
 * declare: `$string(streetlightI)` after a step whose schema has `streetlightId`. JSONata reads a
 * missing field as no value, so such a typo filters out every message, or writes an empty key,
 * without a word; with the schema known the config check can say so (a warning: a schema that
 * allows other properties may mean the field). Said when the schema allows no other properties
 * (no valid message has the field), or when the name is close to a declared one (a typo).
 *
 * And a filter's `status != "test"` on a field the schema declares but does not require: JSONata's
 * comparison with no value is false, so the filter drops every message without the field, which
 * the schema says are valid. Said with the form that keeps them (`... or $not($exists(status))`).
 */

import { closest } from '../config/suggest.js';
import type { CompileContext } from './context.js';
import type { CompiledChainStep } from './steps.js';

/** The top-level fields every message a validate step lets through may have, or undefined when its schemas do not say plainly. */
interface DeclaredFields {
  names: Set<string>;
  /** The fields every message the schemas accept has (each schema's `required`, an `allOf`'s parts' too). */
  required: Set<string>;
  /** No other field is allowed (`additionalProperties: false` or `unevaluatedProperties: false` on every schema), and the step stops what they refuse. */
  closed: boolean;
  /** Where the validate step is written. */
  place: string;
}

/**
 * Keywords that let a schema's properties come from elsewhere: its fields are then not its
 * `properties`. Not `allOf`, whose schemas' fields a message has all of (fieldsOf).
 */
const OPEN_ENDED = ['patternProperties', 'anyOf', 'oneOf', 'if', 'then', 'else', 'dependentSchemas', 'dependencies', '$dynamicRef', '$recursiveRef', 'not'];

/** How deep `allOf`s within `allOf`s are followed (a document's composition is a level or two). */
const MAX_ALL_OF_DEPTH = 8;

/**
 * Warns of the fields a route's expressions read that its validate steps' schemas do not declare:
 * each step's, against the validate step before it, and its targets' (`key`, a computed `topic`),
 * which see what leaves the chain.
 */
export function warnUndeclaredFields(ctx: CompileContext, steps: readonly CompiledChainStep[], targets: CompiledChainStep['expressions']): void {
  let declared: DeclaredFields | undefined;
  const checkAll = (expressions: CompiledChainStep['expressions']) => {
    if (declared) for (const { expression, at } of expressions) for (const field of expression.inputFields) check(ctx, declared, field.name, at, field.index);
  };
  for (const s of steps) {
    checkAll(s.expressions);
    if (declared && s.step.kind === 'filter') for (const { expression, at } of s.expressions) warnOptionalComparisons(ctx, declared, expression, at);
    if (s.step.accepts) declared = declaredFields(s.step.accepts, s.step.stopsInvalid === true, ctx.placeOf(s.at));
    else if (!s.step.keepsValue) declared = undefined; // a transform: the value is another one now
  }
  checkAll(targets);
}

function check(ctx: CompileContext, declared: DeclaredFields, name: string, at: CompiledChainStep['at'], index: number): void {
  if (declared.names.has(name)) return;
  const like = closest(name, declared.names, typoDistance(name));
  if (!declared.closed && like === undefined) return;
  const hint = like === undefined ? '' : ` (did you mean '${like}'?)`;
  const why = declared.closed
    ? `no message the validate step at ${declared.place} lets through has it (its schema allows no other properties), so this reads no value`
    : `the schema of the validate step at ${declared.place} does not declare it, and JSONata reads a missing field as no value`;
  ctx.warnInValue(at, index, 'EG_CONFIG_UNDECLARED_FIELD', `'${name}' is not a field of the message: ${why}${hint}`);
}

/** A filter's `field != literal` on a field the schema declares and does not require: it drops the messages without it. */
function warnOptionalComparisons(ctx: CompileContext, declared: DeclaredFields, expression: CompiledChainStep['expressions'][number]['expression'], at: CompiledChainStep['at']): void {
  for (const c of expression.missingFieldComparisons) {
    if (!declared.names.has(c.name) || declared.required.has(c.name)) continue;
    const keeping = `${c.text} or $not($exists(${c.field}))`;
    const write = c.whole ? `write '${keeping}'` : `write '(${keeping})' in its place`;
    ctx.warnInValue(
      at,
      c.index,
      'EG_CONFIG_OPTIONAL_FIELD',
      `'${c.name}' is optional in the schema of the validate step at ${declared.place}, and a comparison with a missing field is false, \`!=\` as much as \`=\`: this filter drops every message without '${c.name}'; to keep them, ${write}`,
    );
  }
}

/**
 * How many edits a read name may be from a declared field to be taken for its typo. Fewer than a
 * config key's hint allows: data fields are short and differ by design (`ts`, `on`, `v` are all
 * two edits from `id`), and on a schema that allows other properties the hint is the only reason
 * to warn. A name of one or two letters is a typo only in its case (`Id`), one of up to five
 * letters by one edit (`idd`, `lumen`), longer ones by one per three letters (`streetlightI`).
 */
function typoDistance(name: string): number {
  return name.length <= 2 ? 0 : Math.max(1, Math.floor(name.length / 3));
}

/**
 * `stops`: the step stops what its schemas refuse; one that tags it (`onInvalid: tag`) lets any
 * message on, so its schemas only tell the typos of their fields, never that no message has one.
 */
function declaredFields(accepts: NonNullable<CompiledChainStep['step']['accepts']>, stops: boolean, place: string): DeclaredFields | undefined {
  const names = new Set<string>();
  let required: Set<string> | undefined;
  let closed = stops;
  for (const { schema } of accepts) {
    const fields = fieldsOf(schema, schema, 0);
    if (!fields) return undefined;
    for (const k of fields.names) names.add(k);
    // Required only where every message the step accepts has it.
    required = required ? new Set([...required].filter((k) => fields.required.has(k))) : fields.required;
    closed &&= fields.closed;
  }
  return names.size === 0 ? undefined : { names, required: required ?? new Set(), closed, place };
}

/**
 * The fields a schema (`node`, within the document `doc`) declares, and whether it allows no
 * others; undefined when its fields come from where they cannot be told plainly. An `allOf`'s
 * schemas (an AsyncAPI payload composed of a base and its own fields) add theirs; such a
 * composition is never taken as closed: an `additionalProperties: false` in one of its schemas
 * refuses the others' fields too, which ajv judges, not this.
 */
function fieldsOf(node: unknown, doc: unknown, depth: number): { names: Set<string>; required: Set<string>; closed: boolean } | undefined {
  const root = resolveRef(node, doc);
  if (!root || OPEN_ENDED.some((k) => k in root)) return undefined;
  const composed = root.allOf !== undefined;
  if (!composed && (typeof root.properties !== 'object' || root.properties === null)) return undefined;
  // A schema for the other properties (`additionalProperties: {type: number}`, a map of readings) says they are meant.
  if (isSchemaObject(root.additionalProperties) || isSchemaObject(root.unevaluatedProperties)) return undefined;
  const names = new Set<string>(isSchemaObject(root.properties) ? Object.keys(root.properties!) : []);
  // A required field every message has, even when `properties` does not describe it.
  const required = new Set<string>(Array.isArray(root.required) ? root.required.filter((k): k is string => typeof k === 'string') : []);
  for (const k of required) names.add(k);
  if (composed) {
    if (!Array.isArray(root.allOf) || depth >= MAX_ALL_OF_DEPTH) return undefined;
    for (const part of root.allOf) {
      const fields = fieldsOf(part, doc, depth + 1);
      if (!fields) return undefined;
      for (const k of fields.names) names.add(k);
      for (const k of fields.required) required.add(k);
    }
  }
  return { names, required, closed: !composed && (root.additionalProperties === false || root.unevaluatedProperties === false) };
}

type SchemaObject = Record<string, unknown> & { properties?: Record<string, unknown> };

function isSchemaObject(v: unknown): boolean {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The schema a `$ref` into the same document (`#/$defs/order`, as a bundled file schema has) stands for, or `node` itself without one. */
function resolveRef(start: unknown, schema: unknown): SchemaObject | undefined {
  let node = start;
  for (let hops = 0; hops < 8; hops++) {
    if (typeof node !== 'object' || node === null || Array.isArray(node)) return undefined;
    const ref = (node as SchemaObject).$ref;
    if (ref === undefined) return node as SchemaObject;
    if (typeof ref !== 'string' || !ref.startsWith('#/') || Object.keys(node).some((k) => k !== '$ref' && k !== '$defs' && k !== 'definitions' && k !== '$schema' && k !== '$id')) return undefined;
    node = pointer(schema, ref.slice(2));
  }
  return undefined;
}

function pointer(doc: unknown, path: string): unknown {
  let node = doc;
  for (const raw of path.split('/')) {
    const key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<string, unknown>)[key];
  }
  return node;
}
