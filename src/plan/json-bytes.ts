/**
 * A JSON Schema check that reads a value's UTF-8 bytes directly, for the schemas a Kafka proxy
 * route checks on every record: JSON.parse of each value (and the string it is parsed from) was
 * most of a validated record's cost. It only ever says "certainly valid": true when the value
 * the bytes decode to (decodeValueBytes: UTF-8, then JSON.parse) certainly passes the ajv check
 * compiled from the same schema, false when it does not pass or this reader cannot tell (escapes
 * in a constrained string, a number it would have to round, a duplicate key, deep nesting...), in
 * which case the caller decodes and runs ajv as before. It never answers for a value ajv rejects;
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
 */
import { isDateTimeBytes } from './date-time.js';

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
  /** Its place in its object node's `seen`. */
  slot: number;
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
  // objects: known names by byte length, and what other names may hold (null: none allowed)
  /** Known names by hash (open addressing, slot + 1, 0 empty); undefined without object keywords. */
  table: Int32Array | undefined;
  mask: number;
  properties: Property[];
  requiredCount: number;
  additional: Node | null;
  /** Per known property, the visit in which it was last seen (duplicate keys, required). */
  seen: Float64Array;
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
    table: undefined,
    mask: 0,
    properties: [],
    requiredCount: 0,
    additional: null,
    seen: new Float64Array(0),
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
  const reader = new Reader();
  return (buf, start, end) => reader.check(root, buf, start, end);
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
      props.set(name, { bytes: Buffer.from(name, 'utf8'), node: compiled, required: false, slot: 0 });
    }
  }
  if (s.required !== undefined) {
    if (!Array.isArray(s.required)) return false;
    for (const name of s.required) {
      if (typeof name !== 'string' || name in Object.prototype) return false;
      const p = props.get(name) ?? { bytes: Buffer.from(name, 'utf8'), node: ANY, required: false, slot: 0 };
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
  let size = 8;
  while (size < n.properties.length * 2) size *= 2;
  n.table = new Int32Array(size);
  n.mask = size - 1;
  let slot = 0;
  for (const p of n.properties) {
    p.slot = slot++;
    let h = hashOf(p.bytes, 0, p.bytes.length) & n.mask;
    while (n.table[h] !== 0) h = (h + 1) & n.mask;
    n.table[h] = p.slot + 1;
    if (p.required) n.requiredCount++;
  }
  n.seen = new Float64Array(slot);
  return true;
}

/** Reads one value at a time; not reentrant (each compiled check has its own). */
class Reader {
  private buf: Buffer = Buffer.alloc(0);
  private at = 0;
  private end = 0;
  /** Counts object visits: a property was seen in this object when its `seen` slot holds the visit's number. */
  private visit = 0;
  private depth = 0;
  /** Set by string(): whether the last string had escapes or bytes beyond ASCII. */
  private escaped = false;
  private high = false;
  private strStart = 0;
  private strEnd = 0;

  check(root: Node, buf: Buffer, start: number, end: number): boolean {
    // decodeValueBytes parses a value starting with `{` or `[` as JSON; anything else is left to it.
    const first = buf[start];
    if (first !== 0x7b && first !== 0x5b) return false;
    this.buf = buf;
    this.at = start;
    this.end = end;
    this.depth = 0;
    if (!this.value(root)) return false;
    this.ws();
    return this.at === end;
  }

  /** Skips JSON whitespace (space, tab, LF, CR: JSON.parse accepts nothing else). */
  private ws(): void {
    const buf = this.buf;
    let at = this.at;
    while (at < this.end) {
      const b = buf[at]!;
      if (b !== 0x20 && b !== 0x0a && b !== 0x0d && b !== 0x09) break;
      at++;
    }
    this.at = at;
  }

  private value(n: Node): boolean {
    this.ws();
    if (this.at >= this.end) return false;
    const b = this.buf[this.at]!;
    if (b === 0x22) return this.stringValue(n);
    if (b === 0x7b) return (n.types & OBJECT) !== 0 && n.allowed === undefined && this.object(n);
    if (b === 0x5b) return (n.types & ARRAY) !== 0 && n.allowed === undefined && this.array(n);
    if (b === 0x2d || (b >= 0x30 && b <= 0x39)) return this.number(n);
    if (b === 0x74) return this.literal('true', n, BOOLEAN) && (n.allowed === undefined || n.allowed.true);
    if (b === 0x66) return this.literal('false', n, BOOLEAN) && (n.allowed === undefined || n.allowed.false);
    if (b === 0x6e) return this.literal('null', n, NULL) && (n.allowed === undefined || n.allowed.null);
    return false;
  }

  private literal(word: string, n: Node, type: number): boolean {
    if ((n.types & type) === 0 || this.at + word.length > this.end) return false;
    for (let i = 1; i < word.length; i++) if (this.buf[this.at + i] !== word.charCodeAt(i)) return false;
    this.at += word.length;
    return true;
  }

  /** Scans a string token at `at` (on its opening quote): sets strStart/strEnd (its content), escaped, high. */
  private string(): boolean {
    const buf = this.buf;
    const end = this.end;
    let at = this.at + 1;
    const from = at;
    let escaped = false;
    let high = false;
    for (;;) {
      if (at >= end) return false;
      const b = buf[at]!;
      if (b === 0x22) break;
      if (b < 0x20) return false;
      if (b === 0x5c) {
        escaped = true;
        const e = buf[at + 1];
        if (e === 0x75) {
          if (at + 6 > end || !hex(buf[at + 2]!) || !hex(buf[at + 3]!) || !hex(buf[at + 4]!) || !hex(buf[at + 5]!)) return false;
          at += 6;
          continue;
        }
        // " \ / b f n r t
        if (e !== 0x22 && e !== 0x5c && e !== 0x2f && e !== 0x62 && e !== 0x66 && e !== 0x6e && e !== 0x72 && e !== 0x74) return false;
        at += 2;
        continue;
      }
      if (b >= 0x80) high = true;
      at++;
    }
    this.strStart = from;
    this.strEnd = at;
    this.escaped = escaped;
    this.high = high;
    this.at = at + 1;
    return true;
  }

  private stringValue(n: Node): boolean {
    if ((n.types & STRING) === 0 || !this.string()) return false;
    if (n.any) return true;
    const len = this.strEnd - this.strStart;
    if (n.allowed !== undefined) {
      if (this.escaped || !this.oneOfStrings(n.allowed.strings)) return false;
    }
    if (n.minLength > 0 || n.maxLength !== Infinity) {
      // Code points: only counted here for ASCII without escapes (one byte each).
      if (this.escaped || this.high || len < n.minLength || len > n.maxLength) return false;
    }
    if (n.dateTime && (this.escaped || this.high || !isDateTimeBytes(this.buf, this.strStart, this.strEnd))) return false;
    return true;
  }

  private oneOfStrings(candidates: Buffer[]): boolean {
    const len = this.strEnd - this.strStart;
    for (const c of candidates) if (c.length === len && sameBytes(c, this.buf, this.strStart)) return true;
    return false;
  }

  private number(n: Node): boolean {
    const buf = this.buf;
    const end = this.end;
    const from = this.at;
    let at = from;
    const negative = buf[at] === 0x2d;
    if (negative) at++;
    let b = buf[at];
    if (b === undefined || at >= end) return false;
    let digits = 0;
    let v = 0;
    if (b === 0x30) {
      at++;
      digits = 1;
    } else if (b >= 0x31 && b <= 0x39) {
      while (at < end && (b = buf[at]!) >= 0x30 && b <= 0x39) {
        v = v * 10 + (b - 0x30);
        digits++;
        at++;
      }
    } else return false;
    let plain = digits <= 15;
    if (at < end && buf[at] === 0x2e) {
      plain = false;
      at++;
      const f = at;
      while (at < end && (b = buf[at]!) >= 0x30 && b <= 0x39) at++;
      if (at === f) return false;
    }
    if (at < end && (buf[at] === 0x65 || buf[at] === 0x45)) {
      plain = false;
      at++;
      if (at < end && (buf[at] === 0x2b || buf[at] === 0x2d)) at++;
      const e = at;
      while (at < end && (b = buf[at]!) >= 0x30 && b <= 0x39) at++;
      if (at === e) return false;
    }
    this.at = at;
    if (n.any) return true;
    // Up to 15 digits an integer is exact; otherwise the double JSON.parse gives (the same rounding).
    const value = plain ? (negative ? -v : v) : Number(buf.toString('latin1', from, at));
    const t = n.types;
    if ((t & NUMBER) === 0 && ((t & INTEGER) === 0 || value % 1 || Number.isNaN(value))) return false;
    if (value < n.minimum || value > n.maximum || value <= n.exclusiveMinimum || value >= n.exclusiveMaximum) return false;
    if (n.allowed !== undefined && !n.allowed.numbers.includes(value)) return false;
    return true;
  }

  private object(n: Node): boolean {
    if (++this.depth > MAX_DEPTH) return false;
    const buf = this.buf;
    this.at++; // {
    this.ws();
    const visit = ++this.visit;
    let required = 0;
    const table = n.table;
    if (buf[this.at] === 0x7d) {
      this.at++;
    } else {
      for (;;) {
        if (buf[this.at] !== 0x22) return false;
        let prop: Property | undefined;
        if (table !== undefined) {
          // Known names are matched byte for byte: an escaped or non-ASCII key might decode to one.
          const from = this.at + 1;
          let at = from;
          let h = 0;
          for (;;) {
            if (at >= this.end) return false;
            const c = buf[at]!;
            if (c === 0x22) break;
            if (c < 0x20 || c === 0x5c || c >= 0x80) return false;
            h = (Math.imul(h, 31) + c) | 0;
            at++;
          }
          this.at = at + 1;
          const len = at - from;
          let i = h & n.mask;
          for (let s = table[i]!; s !== 0; s = table[(i = (i + 1) & n.mask)]!) {
            const p = n.properties[s - 1]!;
            if (p.bytes.length === len && sameBytes(p.bytes, buf, from)) {
              prop = p;
              break;
            }
          }
        } else if (!this.string()) return false;
        this.ws();
        if (buf[this.at] !== 0x3a) return false;
        this.at++;
        if (prop !== undefined) {
          // JSON.parse keeps the last of repeated names: left to it and ajv.
          if (n.seen[prop.slot] === visit) return false;
          n.seen[prop.slot] = visit;
          if (prop.required) required++;
          if (!this.value(prop.node)) return false;
        } else {
          const other = table === undefined ? ANY : n.additional;
          if (other === null || !this.value(other)) return false;
        }
        this.ws();
        const c = buf[this.at];
        this.at++;
        if (c === 0x7d) break;
        if (c !== 0x2c) return false;
        this.ws();
      }
    }
    this.depth--;
    return required === n.requiredCount;
  }

  private array(n: Node): boolean {
    if (++this.depth > MAX_DEPTH) return false;
    const buf = this.buf;
    const items = n.items ?? ANY;
    this.at++; // [
    this.ws();
    let count = 0;
    if (buf[this.at] === 0x5d) {
      this.at++;
    } else {
      for (;;) {
        if (!this.value(items)) return false;
        count++;
        this.ws();
        const c = buf[this.at];
        this.at++;
        if (c === 0x5d) break;
        if (c !== 0x2c) return false;
      }
    }
    this.depth--;
    return count >= n.minItems && count <= n.maxItems;
  }
}

/** The hash the object reader computes over a key's bytes. */
function hashOf(bytes: Uint8Array, from: number, to: number): number {
  let h = 0;
  for (let i = from; i < to; i++) h = (Math.imul(h, 31) + bytes[i]!) | 0;
  return h;
}

/** Whether `buf` holds `bytes` at `at` (Buffer.compare is a native call: slower than this for short names). */
function sameBytes(bytes: Buffer, buf: Buffer, at: number): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] !== buf[at + i]) return false;
  return true;
}

function hex(b: number): boolean {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
}
