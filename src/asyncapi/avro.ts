/**
 * Avro payload schemas as JSON Schema (draft-07), for the parser's Avro schema parser in place of
 * its own conversion (`@asyncapi/avro-schema-parser`, which still validates the Avro schema with
 * avsc). Its conversion left a reference to a named type (`type: Item`, `["null", "Item"]`,
 * `com.example.Item`) as `{}`, so the field took any value, and turned a union into a `oneOf`, which
 * refuses a value two branches take: `null` for `["null", "Item"]` (the `{}` took it too), `5` for
 * `["int", "double"]`. Here a named type that is referred to by name is one schema under
 * `definitions`, `$ref`d wherever it is used (also from inside itself: a recursive record), and a
 * union is an `anyOf`. What else the conversion did is kept: ints and longs bounded, bytes and
 * fixed as strings of code points up to U+00FF, fields without a default and not nullable
 * required, `doc` as description, the AsyncAPI Avro attributes (`minimum`, `maxLength`, `pattern`,
 * ...) as those keywords, `logicalType: uuid` on a string as `format: uuid`.
 */

type Json = Record<string, unknown>;

const BYTES_PATTERN = '^[\u0000-\u00ff]*$';
const PRIMITIVES: Record<string, Json> = {
  null: { type: 'null' },
  boolean: { type: 'boolean' },
  int: { type: 'integer', minimum: -(2 ** 31), maximum: 2 ** 31 - 1 },
  long: { type: 'integer', minimum: -(2 ** 63), maximum: 2 ** 63 - 1 },
  float: { type: 'number' },
  double: { type: 'number' },
  bytes: { type: 'string', pattern: BYTES_PATTERN },
  string: { type: 'string' },
};
/** The AsyncAPI Avro extension's validation attributes, by the JSON type they apply to. */
const EXTRA: Record<string, readonly string[]> = {
  integer: ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'],
  number: ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'],
  string: ['pattern', 'minLength', 'maxLength'],
  array: ['minItems', 'maxItems', 'uniqueItems'],
};
const NAMED = new Set(['record', 'error', 'enum', 'fixed']);

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A named type's full name: its `namespace` (or the enclosing one) and its name, unless the name has a dot. */
function fullName(name: string, namespace: string | undefined): string {
  return name.includes('.') || !namespace ? name : `${namespace}.${name}`;
}

/** The JSON Schema of Avro schema `avro` (already checked by avsc). */
export function avroToJsonSchema(avro: unknown): Json {
  // Every named type, by full name, with the namespace its own references resolve in.
  const named = new Map<string, { def: Json; namespace: string | undefined }>();
  const collect = (t: unknown, ns: string | undefined): void => {
    if (Array.isArray(t)) {
      for (const x of t) collect(x, ns);
      return;
    }
    if (!isObject(t)) return;
    if (NAMED.has(t.type as string) && typeof t.name === 'string') {
      const full = fullName(t.name, typeof t.namespace === 'string' ? t.namespace : ns);
      const own = full.includes('.') ? full.slice(0, full.lastIndexOf('.')) : undefined;
      if (!named.has(full)) named.set(full, { def: t, namespace: own });
      if (Array.isArray(t.fields)) for (const f of t.fields) if (isObject(f)) collect(f.type, own);
      return;
    }
    if (t.type === 'array') collect(t.items, ns);
    else if (t.type === 'map') collect(t.values, ns);
    else if (isObject(t.type) || Array.isArray(t.type)) collect(t.type, ns);
  };
  collect(avro, undefined);
  const resolve = (name: string, ns: string | undefined): string | undefined => {
    const candidates = [fullName(name, ns), name];
    return candidates.find((c) => named.has(c));
  };
  // Named types referred to by name (or a second time) go to `definitions`.
  const referred = new Set<string>();
  const definitions: Json = {};
  const convert = (t: unknown, ns: string | undefined): Json => {
    if (Array.isArray(t)) {
      // `null` last, as the parser's conversion had it: an error names the type that was meant first.
      const branches = [...t.filter((x) => x !== 'null'), ...t.filter((x) => x === 'null')].map((x) => convert(x, ns));
      return branches.length === 1 ? branches[0]! : { anyOf: branches };
    }
    if (typeof t === 'string') {
      if (PRIMITIVES[t]) return { ...PRIMITIVES[t] };
      const full = resolve(t, ns);
      if (full === undefined) return {};
      referred.add(full);
      return { $ref: `#/definitions/${full}` };
    }
    if (!isObject(t)) return {};
    const type = t.type;
    if (isObject(type) || Array.isArray(type)) return withExtras(convert(type, ns), t);
    if (typeof type !== 'string') return {};
    if (NAMED.has(type) && typeof t.name === 'string') {
      const full = fullName(t.name, typeof t.namespace === 'string' ? t.namespace : ns);
      const own = full.includes('.') ? full.slice(0, full.lastIndexOf('.')) : undefined;
      if (named.get(full)?.def !== t) {
        referred.add(full);
        return { $ref: `#/definitions/${full}` };
      }
      const schema = convertNamed(t, type, own);
      // Its definition stands where it is written unless something refers to it by name.
      definitions[full] = schema;
      return schema;
    }
    let schema: Json;
    if (type === 'array') schema = { type: 'array', items: convert(t.items, ns) };
    else if (type === 'map') schema = { type: 'object', additionalProperties: convert(t.values, ns) };
    else if (PRIMITIVES[type]) schema = { ...PRIMITIVES[type] };
    else {
      const full = resolve(type, ns);
      if (full === undefined) return {};
      referred.add(full);
      return { $ref: `#/definitions/${full}` };
    }
    if (type === 'string' && t.logicalType === 'uuid') schema.format = 'uuid';
    return withExtras(schema, t);
  };
  const convertNamed = (t: Json, type: string, ns: string | undefined): Json => {
    let schema: Json;
    if (type === 'enum') schema = { type: 'string', enum: Array.isArray(t.symbols) ? t.symbols : [] };
    else if (type === 'fixed') schema = { type: 'string', pattern: BYTES_PATTERN, minLength: t.size, maxLength: t.size };
    else {
      const properties: Json = {};
      const required: string[] = [];
      for (const f of Array.isArray(t.fields) ? t.fields : []) {
        if (!isObject(f) || typeof f.name !== 'string') continue;
        const nullable = Array.isArray(f.type) && f.type.includes('null');
        if (!nullable && f.default === undefined) required.push(f.name);
        const p = withExtras(convert(f.type, ns), f);
        // On a copy: `p` may be a named type's definition, which other fields refer to by name.
        properties[f.name] = typeof f.doc === 'string' && !('$ref' in p) ? { ...p, description: f.doc } : p;
      }
      schema = { type: 'object', ...(required.length > 0 ? { required } : {}), properties };
    }
    if (typeof t.doc === 'string') schema.description = t.doc;
    return schema;
  };
  let root = convert(avro, undefined);
  const defs = Object.fromEntries(Object.entries(definitions).filter(([name]) => referred.has(name)));
  if (Object.keys(defs).length === 0) return root;
  // A referred type's place of definition refers to it too, so the schema is written once.
  const replace = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(replace);
    if (!isObject(v)) return v;
    for (const [name, schema] of Object.entries(defs)) if (v === schema) return { $ref: `#/definitions/${name}` };
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, replace(x)]));
  };
  const inner = Object.fromEntries(Object.entries(defs).map(([name, schema]) => [name, Object.fromEntries(Object.entries(schema as Json).map(([k, x]) => [k, replace(x)]))]));
  root = replace(root) as Json;
  return { ...root, definitions: inner };
}

/** The AsyncAPI Avro attributes written on a type or a field, as the JSON Schema keywords of its JSON type. */
function withExtras(schema: Json, from: Json): Json {
  const keys = EXTRA[schema.type as string];
  if (!keys) return schema;
  // Written on a copy: `schema` may be a named type's definition (a field's `pattern` on an inline
  // `fixed` was every other use's too).
  let out = schema;
  for (const k of keys) {
    const v = from[k];
    if (v === undefined) continue;
    if ((k === 'minLength' || k === 'maxLength') && !(typeof v === 'number' && v > -1)) continue;
    if (k === 'multipleOf' && !(typeof v === 'number' && v > 0)) continue;
    if (out === schema) out = { ...schema };
    out[k] = v;
  }
  return out;
}
