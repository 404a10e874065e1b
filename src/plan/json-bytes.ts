/**
 * A JSON Schema check that reads a value's UTF-8 bytes directly, for the schemas a Kafka proxy
 * route checks on every record: JSON.parse of each value (and the string it is parsed from) was
 * most of a validated record's cost. It only ever says "certainly valid": true when the value
 * the bytes decode to (decodeValueBytes: UTF-8, then JSON.parse) certainly passes the ajv check
 * compiled from the same schema, false when it does not pass or this reader cannot tell (escapes
 * in a constrained string, a number it would have to round, a duplicate key, deep nesting...), in
 * which case the caller decodes and runs ajv as before. It never answers for a value ajv rejects,
 * nor for one with a number beyond a double (the route refuses those: hugeNumberAt);
 * test/unit/json-bytes.test.ts compares the two over generated and mutated values.
 *
 * Only a subset of JSON Schema compiles (compileBytesCheck returns undefined for anything else):
 * `type`, `properties`, `required`, `additionalProperties` (boolean or a schema), `items` (one
 * schema), `minItems`/`maxItems`, `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`,
 * `minLength`/`maxLength`, `format: date-time`, `enum`/`const` of strings, numbers, booleans and
 * null, and annotations (title, description, examples, `x-` extensions...). The keyword semantics
 * are ajv 8's with the gateway's options (json-schema.ts): `integer` is `!(v % 1) && !isNaN(v)`,
 * lengths count code points, and `properties`/`required` read inherited members too (ajv tests
 * `data.constructor !== undefined`), so names that Object.prototype has do not compile.
 *
 * A schema compiles to a JavaScript function written for it (as ajv does for its own checks): its
 * property names become byte comparisons, its bounds constants, each subschema a function of its
 * own. Interpreting the schema per record cost about twice as much (docs/performance.md). Only
 * numbers and byte values from the schema reach the generated source, never its strings.
 */
import { isDateTimeBytes } from './date-time.js';
import { buildGenerated } from '../core/generated-code.js';

/** True when the value `buf[start, end)` decodes to certainly passes the schema; false otherwise or when unsure. */
export type BytesCheck = (buf: Buffer, start: number, end: number) => boolean;

// JSON types a node accepts (`type`), as bits.
const OBJECT = 1;
const ARRAY = 2;
const STRING = 4;
const NUMBER = 8;
const INTEGER = 16;
const BOOLEAN = 32;
const NULL = 64;
const ALL = 127;
const TYPES: Record<string, number> = { object: OBJECT, array: ARRAY, string: STRING, number: NUMBER, integer: INTEGER, boolean: BOOLEAN, null: NULL };

/** Keywords that do not constrain a value (ajv treats them as annotations or ignores them). */
const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', 'example', '$comment', 'deprecated', 'readOnly', 'writeOnly', '$schema', '$id', '$defs', 'definitions', 'externalDocs']);

/** Nesting beyond which a value is left to JSON.parse and ajv (keeps the reader's recursion shallow). */
const MAX_DEPTH = 64;

interface Property {
  bytes: Buffer;
  node: Node;
  required: boolean;
}

/** One (sub)schema, compiled. */
interface Node {
  /** No constraint at all (`true`, `{}`): any JSON value passes. */
  any: boolean;
  types: number;
  // numbers
  minimum: number;
  maximum: number;
  exclusiveMinimum: number;
  exclusiveMaximum: number;
  // strings
  minLength: number;
  maxLength: number;
  dateTime: boolean;
  // objects: the known names (undefined without object keywords: any name, any value), and what
  // other names may hold (null: none allowed)
  properties: Property[] | undefined;
  additional: Node | null;
  // arrays
  items: Node | undefined;
  minItems: number;
  maxItems: number;
  // enum / const (undefined: no such constraint)
  allowed: { strings: Buffer[]; numbers: number[]; true: boolean; false: boolean; null: boolean } | undefined;
}

function node(): Node {
  return {
    any: false,
    types: ALL,
    minimum: -Infinity,
    maximum: Infinity,
    exclusiveMinimum: Number.NaN,
    exclusiveMaximum: Number.NaN,
    minLength: 0,
    maxLength: Infinity,
    dateTime: false,
    properties: undefined,
    additional: null,
    items: undefined,
    minItems: 0,
    maxItems: Infinity,
    allowed: undefined,
  };
}

const ANY: Node = { ...node(), any: true };

/** The byte check for `schema`, or undefined when it uses anything outside the subset above. */
export function compileBytesCheck(schema: unknown): BytesCheck | undefined {
  const root = compileNode(schema, 0);
  if (!root) return undefined;
  return generate(root);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0;
}

function compileNode(schema: unknown, depth: number): Node | undefined {
  if (schema === true) return ANY;
  // Deeper than any value this reader reads (and a YAML alias can make a schema a cycle).
  if (depth > MAX_DEPTH) return undefined;
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) return undefined;
  const s = schema as Record<string, unknown>;
  const n = node();
  let constrained = false;
  let objectKeywords = false;
  for (const [k, v] of Object.entries(s)) {
    if (ANNOTATIONS.has(k) || k.startsWith('x-')) continue;
    constrained = true;
    switch (k) {
      case 'type': {
        const list = Array.isArray(v) ? v : [v];
        if (list.length === 0) return undefined;
        let types = 0;
        for (const t of list) {
          const bit = typeof t === 'string' ? TYPES[t] : undefined;
          if (bit === undefined) return undefined;
          types |= bit;
        }
        n.types = types;
        break;
      }
      case 'minimum':
      case 'maximum':
      case 'exclusiveMinimum':
      case 'exclusiveMaximum':
        if (typeof v !== 'number' || !Number.isFinite(v)) return undefined;
        n[k] = v;
        break;
      case 'minLength':
      case 'maxLength':
      case 'minItems':
      case 'maxItems':
        if (!isCount(v)) return undefined;
        n[k] = v;
        break;
      case 'format':
        if (v !== 'date-time') return undefined;
        n.dateTime = true;
        break;
      case 'enum':
      case 'const': {
        const values = k === 'const' ? [v] : v;
        if (!Array.isArray(values) || n.allowed) return undefined;
        const allowed = { strings: [] as Buffer[], numbers: [] as number[], true: false, false: false, null: false };
        for (const x of values) {
          if (typeof x === 'string') {
            const bytes = Buffer.from(x, 'utf8');
            // A string with a lone surrogate has no UTF-8 form that decodes back to it.
            if (bytes.toString('utf8') !== x) return undefined;
            allowed.strings.push(bytes);
          } else if (typeof x === 'number') allowed.numbers.push(x);
          else if (x === true) allowed.true = true;
          else if (x === false) allowed.false = true;
          else if (x === null) allowed.null = true;
          else return undefined;
        }
        n.allowed = allowed;
        break;
      }
      case 'properties':
      case 'required':
      case 'additionalProperties':
        objectKeywords = true;
        break;
      case 'items': {
        const items = compileNode(v, depth + 1);
        if (!items) return undefined;
        n.items = items;
        break;
      }
      default:
        return undefined;
    }
  }
  if (!constrained) return ANY;
  if (objectKeywords && !compileObject(s, n, depth)) return undefined;
  return n;
}

function compileObject(s: Record<string, unknown>, n: Node, depth: number): boolean {
  const props = new Map<string, Property>();
  if (s.properties !== undefined) {
    if (typeof s.properties !== 'object' || s.properties === null || Array.isArray(s.properties)) return false;
    for (const [name, sub] of Object.entries(s.properties as Record<string, unknown>)) {
      const compiled = compileNode(sub, depth + 1);
      if (!compiled || name in Object.prototype) return false;
      props.set(name, { bytes: Buffer.from(name, 'utf8'), node: compiled, required: false });
    }
  }
  if (s.required !== undefined) {
    if (!Array.isArray(s.required)) return false;
    for (const name of s.required) {
      if (typeof name !== 'string' || name in Object.prototype) return false;
      const p = props.get(name) ?? { bytes: Buffer.from(name, 'utf8'), node: ANY, required: false };
      p.required = true;
      props.set(name, p);
    }
  }
  if (s.additionalProperties === undefined || s.additionalProperties === true) n.additional = ANY;
  else if (s.additionalProperties === false) n.additional = null;
  else {
    const additional = compileNode(s.additionalProperties, depth + 1);
    if (!additional) return false;
    n.additional = additional;
  }
  n.properties = [...props.values()];
  return true;
}

// ---- code generation -----------------------------------------------------------------------------
//
// Every generated value function reads one value starting at `at` (its first byte, whitespace
// already skipped) and returns the position after it, or -1 when the value is not certainly
// valid. Positions only grow, so a function that looked at a byte past `end` (the record's next
// bytes) is caught by the final `=== end`.

/** What generated code calls: plain functions, which V8 inlines where they are hot. */
const HELPERS = { ws, skipValue, scanString, scanNumber, isDateTimeBytes, sameBytes, newName };

/** Names and enum strings longer than this are compared with sameBytes rather than inline. */
const INLINE_BYTES = 32;

function generate(root: Node): BytesCheck | undefined {
  const g = new Generator();
  const first = g.value(root, 0, 'start');
  const body = `"use strict";
${g.functions.join('\n')}
return function checkBytes(buf, start, end) {
  // decodeValueBytes parses a value starting with \`{\` or \`[\` as JSON; anything else is left to it.
  const first = buf[start];
  if (first !== 0x7b && first !== 0x5b) return false;
  const at = ${first};
  return at >= 0 && ws(buf, at, end) === end;
};`;
  // The source holds numbers and byte values from the schema only, never its strings (see Generator).
  // Where code generation is disallowed there is no byte check: ajv decides every record.
  return buildGenerated<BytesCheck>(HELPERS, g.constants, body);
}

class Generator {
  readonly functions: string[] = [];
  /** Values the generated code reads as `K[i]` (enum strings and numbers too long to inline). */
  readonly constants: unknown[] = [];

  /** An expression reading a value of `n` at `at`, `depth` containers deep. */
  value(n: Node, depth: number, at: string): string {
    if (n.any) return `skipValue(buf, ${at}, end, ${MAX_DEPTH - depth})`;
    return `${this.node(n, depth)}(buf, ${at}, end)`;
  }

  private constant(v: unknown): string {
    this.constants.push(v);
    return `K[${this.constants.length - 1}]`;
  }

  /** A condition: `buf` holds `bytes` at `at` (the caller knows at least that many bytes are there). */
  private same(bytes: Buffer, at: string): string {
    if (bytes.length === 0) return 'true';
    if (bytes.length > INLINE_BYTES) return `sameBytes(${this.constant(bytes)}, buf, ${at})`;
    return [...bytes].map((b, i) => `buf[${at} + ${i}] === ${b}`).join(' && ');
  }

  /** The function reading a value of `n` (not `any`), by name. */
  private node(n: Node, depth: number): string {
    const name = `v${this.functions.length}`;
    this.functions.push(''); // its place; filled in below, after the functions it calls
    const t = n.types;
    const a = n.allowed;
    const parts: string[] = [];
    if ((t & STRING) !== 0 && (a === undefined || a.strings.length > 0)) parts.push(`if (b === 0x22) {\n${this.string(n)}\n}`);
    if ((t & OBJECT) !== 0 && a === undefined) parts.push(`if (b === 0x7b) {\n${this.object(n, depth)}\n}`);
    if ((t & ARRAY) !== 0 && a === undefined) parts.push(`if (b === 0x5b) {\n${this.array(n, depth)}\n}`);
    if ((t & (NUMBER | INTEGER)) !== 0 && (a === undefined || a.numbers.length > 0)) parts.push(`if (b === 0x2d || (b >= 0x30 && b <= 0x39)) {\n${this.number(n)}\n}`);
    const literal = (word: string, first: number) => {
      const rest = Buffer.from(word.slice(1), 'latin1');
      return `if (b === ${first}) return at + ${word.length} <= end && ${this.same(rest, 'at + 1')} ? at + ${word.length} : -1;`;
    };
    if ((t & BOOLEAN) !== 0 && (a === undefined || a.true)) parts.push(literal('true', 0x74));
    if ((t & BOOLEAN) !== 0 && (a === undefined || a.false)) parts.push(literal('false', 0x66));
    if ((t & NULL) !== 0 && (a === undefined || a.null)) parts.push(literal('null', 0x6e));
    this.functions[Number(name.slice(1))] = `function ${name}(buf, at, end) {
if (at >= end) return -1;
const b = buf[at];
${parts.join('\n')}
return -1;
}`;
    return name;
  }

  private string(n: Node): string {
    const a = n.allowed;
    const lengths = n.minLength > 0 || n.maxLength !== Infinity;
    if (a === undefined && !lengths && !n.dateTime) return 'return scanString(buf, at, end);';
    // A constrained string is read here only without escapes; lengths count code points, so they
    // and date-time are read only for ASCII (one byte each). Enum strings compare UTF-8 bytes.
    const ascii = lengths || n.dateTime;
    const out = [
      'let j = at + 1;',
      'for (;;) {',
      'if (j >= end) return -1;',
      'const c = buf[j];',
      'if (c === 0x22) break;',
      `if (c < 0x20 || c === 0x5c${ascii ? ' || c >= 0x80' : ''}) return -1;`,
      'j++;',
      '}',
      'const len = j - at - 1;',
    ];
    if (n.minLength > 0) out.push(`if (len < ${n.minLength}) return -1;`);
    if (n.maxLength !== Infinity) out.push(`if (len > ${n.maxLength}) return -1;`);
    if (n.dateTime) out.push('if (!isDateTimeBytes(buf, at + 1, j)) return -1;');
    if (a !== undefined) out.push(`if (!(${a.strings.map((s) => `(len === ${s.length} && ${this.same(s, 'at + 1')})`).join(' || ')})) return -1;`);
    out.push('return j + 1;');
    return out.join('\n');
  }

  private number(n: Node): string {
    const a = n.allowed;
    const bounds: string[] = [];
    if (n.minimum !== -Infinity) bounds.push(`value < ${n.minimum}`);
    if (n.maximum !== Infinity) bounds.push(`value > ${n.maximum}`);
    if (!Number.isNaN(n.exclusiveMinimum)) bounds.push(`value <= ${n.exclusiveMinimum}`);
    if (!Number.isNaN(n.exclusiveMaximum)) bounds.push(`value >= ${n.exclusiveMaximum}`);
    const integer = (n.types & NUMBER) === 0;
    if (!integer && bounds.length === 0 && a === undefined) return 'return scanNumber(buf, at, end);';
    return [
      'let j = at;',
      'const negative = b === 0x2d;',
      'if (negative) j++;',
      'if (j >= end) return -1;',
      'let c = buf[j];',
      'let v = 0;',
      'let digits = 0;',
      'if (c === 0x30) {',
      'j++;',
      'digits = 1;',
      '} else if (c >= 0x31 && c <= 0x39) {',
      'do {',
      'v = v * 10 + (c - 0x30);',
      'digits++;',
      'j++;',
      '} while (j < end && (c = buf[j]) >= 0x30 && c <= 0x39);',
      '} else return -1;',
      'let plain = digits <= 15;',
      'if (j < end && buf[j] === 0x2e) {',
      'plain = false;',
      'const f = ++j;',
      'while (j < end && (c = buf[j]) >= 0x30 && c <= 0x39) j++;',
      'if (j === f) return -1;',
      '}',
      'if (j < end && (buf[j] === 0x65 || buf[j] === 0x45)) {',
      'plain = false;',
      'j++;',
      'if (j < end && (buf[j] === 0x2b || buf[j] === 0x2d)) j++;',
      'const e = j;',
      'while (j < end && (c = buf[j]) >= 0x30 && c <= 0x39) j++;',
      'if (j === e) return -1;',
      '}',
      // Up to 15 digits an integer is exact; otherwise the double JSON.parse gives (the same rounding),
      // and one beyond a double (Infinity) is left to the route, which refuses it (hugeNumberAt).
      'let value;',
      'if (plain) value = negative ? -v : v;',
      "else if ((value = Number(buf.toString('latin1', at, j))) - value !== 0) return -1;",
      // ajv's `integer`: `!(v % 1) && !isNaN(v)` (a plain value is an integer).
      ...(integer ? ['if (!plain && (value % 1 || Number.isNaN(value))) return -1;'] : []),
      ...bounds.map((b) => `if (${b}) return -1;`),
      ...(a !== undefined ? [`if (!${this.constant(a.numbers)}.includes(value)) return -1;`] : []),
      'return j;',
    ].join('\n');
  }

  private object(n: Node, depth: number): string {
    // Past MAX_DEPTH containers the value is left to JSON.parse and ajv.
    if (depth + 1 > MAX_DEPTH) return 'return -1;';
    const props = n.properties;
    if (props === undefined) return `return skipValue(buf, at, end, ${MAX_DEPTH - depth});`;
    const words = Math.ceil(props.length / 32);
    const seen = (slot: number) => `s${slot >> 5}`;
    const bit = (slot: number) => (1 << (slot & 31)) | 0;
    // A name the schema does not name, read the long way (its bytes are its text: no escapes):
    // one given twice is left to ajv, which fails it (repeated-names.ts), as a known one is.
    const other = n.additional === null ? 'return -1;' : `if ((u = newName(buf, u, k, j)) === null) return -1;\ni = ${this.value(n.additional, depth + 1, 'i')};`;
    // Known names by byte length; each matched byte for byte (a name with escapes or bytes beyond
    // ASCII might decode to a known one: left to ajv).
    // Each member's value read once, as a function of its own shared by both ways a name is matched (below).
    const reads = props.map((p) => this.value(p.node, depth + 1, 'i'));
    const byLength = new Map<number, number[]>();
    props.forEach((p, slot) => byLength.set(p.bytes.length, [...(byLength.get(p.bytes.length) ?? []), slot]));
    const cases: string[] = [];
    for (const [len, slots] of byLength) {
      const tries = slots.map((slot) => {
        const p = props[slot]!;
        const s = seen(slot);
        // JSON.parse keeps the last of repeated names: left to it and ajv.
        return `if (${this.same(p.bytes, 'k')}) {
if ((${s} & ${bit(slot)}) !== 0) return -1;
${s} |= ${bit(slot)};
next = ${slot + 1};
i = ${reads[slot]};
break;
}`;
      });
      cases.push(`case ${len}:\n${tries.join('\n')}\n${other}\nbreak;`);
    }
    const required: string[] = [];
    for (let w = 0; w < words; w++) {
      let mask = 0;
      props.forEach((p, slot) => {
        if (p.required && slot >> 5 === w) mask |= bit(slot);
      });
      if (mask !== 0) required.push(`if ((s${w} & ${mask}) !== ${mask}) return -1;`);
    }
    const declare = Array.from({ length: words }, (_, w) => `let s${w} = 0;`).join('\n');
    // Values mostly name their members in the schema's order, without whitespace: the member after
    // the last one read is tried first, as its quoted name and colon straight from the bytes, with
    // no scan for the closing quote. Only names that a JSON string holds as their own bytes can be
    // (no quote, backslash, control byte or byte beyond ASCII); any other member goes the long way.
    const predicted = props.map((p, slot) => {
      if (p.bytes.some((b) => b < 0x20 || b === 0x22 || b === 0x5c || b >= 0x80)) return '';
      const len = p.bytes.length;
      const s = seen(slot);
      return `case ${slot}:
if (i + ${len + 2} < end && ${this.same(p.bytes, 'i + 1')} && buf[i + ${len + 1}] === 0x22 && buf[i + ${len + 2}] === 0x3a) {
if ((${s} & ${bit(slot)}) !== 0) return -1;
${s} |= ${bit(slot)};
next = ${slot + 1};
i = ws(buf, i + ${len + 3}, end);
i = ${reads[slot]};
break member;
}
break;`;
    });
    return `let i = ws(buf, at + 1, end);
${declare}
let next = 0;
let u;
if (buf[i] === 0x7d) i++;
else {
for (;;) {
if (buf[i] !== 0x22) return -1;
member: {
switch (next) {
${predicted.join('\n')}
}
const k = i + 1;
let j = k;
for (;;) {
if (j >= end) return -1;
const c = buf[j];
if (c === 0x22) break;
if (c < 0x20 || c === 0x5c || c >= 0x80) return -1;
j++;
}
i = ws(buf, j + 1, end);
if (buf[i] !== 0x3a) return -1;
i = ws(buf, i + 1, end);
switch (j - k) {
${cases.join('\n')}
default:
${other}
}
}
if (i < 0) return -1;
i = ws(buf, i, end);
const c = buf[i++];
if (c === 0x7d) break;
if (c !== 0x2c) return -1;
i = ws(buf, i, end);
}
}
${required.join('\n')}
return i;`;
  }

  private array(n: Node, depth: number): string {
    if (depth + 1 > MAX_DEPTH) return 'return -1;';
    const counted = n.minItems > 0 || n.maxItems !== Infinity;
    if (n.items === undefined && !counted) return `return skipValue(buf, at, end, ${MAX_DEPTH - depth});`;
    const limits: string[] = [];
    if (n.minItems > 0) limits.push(`if (count < ${n.minItems}) return -1;`);
    if (n.maxItems !== Infinity) limits.push(`if (count > ${n.maxItems}) return -1;`);
    return `let i = ws(buf, at + 1, end);
let count = 0;
if (buf[i] === 0x5d) i++;
else {
for (;;) {
i = ${this.value(n.items ?? ANY, depth + 1, 'i')};
if (i < 0) return -1;
count++;
i = ws(buf, i, end);
const c = buf[i++];
if (c === 0x5d) break;
if (c !== 0x2c) return -1;
i = ws(buf, i, end);
}
}
${limits.join('\n')}
return i;`;
  }
}

// ---- helpers of the generated code ---------------------------------------------------------------

/** Skips JSON whitespace (space, tab, LF, CR: JSON.parse accepts nothing else) from `at`. */
function ws(buf: Buffer, at: number, end: number): number {
  while (at < end) {
    const b = buf[at]!;
    if (b !== 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09) return at;
    at++;
  }
  return at;
}

/** Any JSON value at `at` (no constraint), with at most `room` more containers nested; its end or -1. */
function skipValue(buf: Buffer, at: number, end: number, room: number): number {
  if (at >= end) return -1;
  const b = buf[at]!;
  if (b === 0x22) return scanString(buf, at, end);
  if (b === 0x2d || (b >= 0x30 && b <= 0x39)) return scanNumber(buf, at, end);
  if (b === 0x7b || b === 0x5b) {
    if (room <= 0) return -1;
    const close = b + 2; // } or ]
    let i = ws(buf, at + 1, end);
    if (buf[i] === close) return i + 1;
    let names: number[] | undefined | null;
    for (;;) {
      if (b === 0x7b) {
        if (buf[i] !== 0x22) return -1;
        const k = i + 1;
        i = scanString(buf, i, end);
        if (i < 0) return -1;
        if ((names = newName(buf, names, k, i - 1)) === null) return -1;
        i = ws(buf, i, end);
        if (buf[i] !== 0x3a) return -1;
        i = ws(buf, i + 1, end);
      }
      i = skipValue(buf, i, end, room - 1);
      if (i < 0) return -1;
      i = ws(buf, i, end);
      const c = buf[i++];
      if (c === close) return i;
      if (c !== 0x2c) return -1;
      i = ws(buf, i, end);
    }
  }
  const word = b === 0x74 ? TRUE : b === 0x66 ? FALSE : b === 0x6e ? NULL_BYTES : undefined;
  if (word === undefined || at + word.length > end || !sameBytes(word, buf, at)) return -1;
  return at + word.length;
}

const TRUE = Buffer.from('true');
const FALSE = Buffer.from('false');
const NULL_BYTES = Buffer.from('null');

/** A string token at `at` (on its opening quote), escapes checked; its end or -1. */
function scanString(buf: Buffer, at: number, end: number): number {
  let j = at + 1;
  for (;;) {
    if (j >= end) return -1;
    const b = buf[j]!;
    if (b === 0x22) return j + 1;
    if (b < 0x20) return -1;
    if (b === 0x5c) {
      const e = buf[j + 1];
      if (e === 0x75) {
        if (j + 6 > end || !hex(buf[j + 2]!) || !hex(buf[j + 3]!) || !hex(buf[j + 4]!) || !hex(buf[j + 5]!)) return -1;
        j += 6;
        continue;
      }
      // " \ / b f n r t
      if (e !== 0x22 && e !== 0x5c && e !== 0x2f && e !== 0x62 && e !== 0x66 && e !== 0x6e && e !== 0x72 && e !== 0x74) return -1;
      j += 2;
      continue;
    }
    j++;
  }
}

/**
 * A number token at `at` (JSON's grammar); its end or -1, also for one beyond a double (JSON.parse
 * reads it as Infinity, which the route refuses: hugeNumberAt). Only an exponent or 309 digits
 * overflow, so only those are read as a number here.
 */
function scanNumber(buf: Buffer, at: number, end: number): number {
  let j = at;
  if (buf[j] === 0x2d) j++;
  if (j >= end) return -1;
  let c = buf[j]!;
  const first = j;
  if (c === 0x30) j++;
  else if (c >= 0x31 && c <= 0x39) while (j < end && (c = buf[j]!) >= 0x30 && c <= 0x39) j++;
  else return -1;
  let huge = j - first >= 309;
  if (j < end && buf[j] === 0x2e) {
    const f = ++j;
    while (j < end && (c = buf[j]!) >= 0x30 && c <= 0x39) j++;
    if (j === f) return -1;
  }
  if (j < end && (buf[j] === 0x65 || buf[j] === 0x45)) {
    j++;
    if (j < end && (buf[j] === 0x2b || buf[j] === 0x2d)) j++;
    const e = j;
    while (j < end && (c = buf[j]!) >= 0x30 && c <= 0x39) j++;
    if (j === e) return -1;
    huge = true;
  }
  if (huge && !Number.isFinite(Number(buf.toString('latin1', at, j)))) return -1;
  return j;
}

/** The most names of one object newName compares; an object with more is left to ajv. */
const COMPARED_NAMES = 64;

/**
 * `names` (the start and end of each earlier name of one object, allocated here on the first)
 * with the name `buf[k, j)`; null when an earlier name has the same bytes, or there are too many
 * to compare. JSON.parse keeps the last of a repeated name, and the value goes on as its bytes to
 * readers that may keep the first: such a value is never "certainly valid" (repeated-names.ts).
 * Different bytes are different names only without escapes (`\u0069d` is `id`) and bytes beyond
 * ASCII (two invalid UTF-8 sequences both decode to U+FFFD): a name with either is left to ajv too.
 */
function newName(buf: Buffer, names: number[] | undefined | null, k: number, j: number): number[] | null {
  for (let x = k; x < j; x++) {
    const c = buf[x]!;
    if (c === 0x5c || c >= 0x80) return null;
  }
  if (!names) return [k, j];
  if (names.length >= 2 * COMPARED_NAMES) return null;
  const len = j - k;
  for (let n = 0; n < names.length; n += 2) {
    const s = names[n]!;
    if (names[n + 1]! - s !== len) continue;
    let same = true;
    for (let x = 0; x < len; x++) {
      if (buf[s + x] !== buf[k + x]) {
        same = false;
        break;
      }
    }
    if (same) return null;
  }
  names.push(k, j);
  return names;
}

/** Whether `buf` holds `bytes` at `at` (Buffer.compare is a native call: slower than this for short names). */
function sameBytes(bytes: Buffer, buf: Buffer, at: number): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== buf[at + i]) return false;
  return true;
}

function hex(b: number): boolean {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
}
