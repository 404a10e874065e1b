/**
 * Plain-function fast paths for the JSONata expressions gateways are mostly configured with:
 * field paths (`lumens`, `$headers."x-source"`), literals, comparisons, `and`/`or`, `&`,
 * `$string(...)` and object constructors of those (`{"lux": lumens, "bright": lumens >= 500}`).
 *
 * JSONata 2 evaluates asynchronously, awaiting at every node of the expression, so even `lumens > 0`
 * costs a few microseconds and a chain of microtasks. The function built here computes the same
 * result synchronously — but only where JSONata's semantics are plain: whenever a value is of a
 * kind whose JSONata semantics are richer (arrays, which paths map over and flatten; mixed-type
 * comparisons, which raise errors; non-integer numbers turned into strings; ...), it answers
 * FALLBACK and the caller evaluates with JSONata itself. So results and errors are JSONata's by
 * construction; test/unit/expr-fast-path.test.ts checks every shape against jsonata.
 */

import { buildGenerated } from '../core/generated-code.js';

/** The fast path cannot answer for this input: evaluate with JSONata. */
export const FALLBACK: unique symbol = Symbol('evaluate with JSONata');

export type FastPath = (input: unknown, bindings: Readonly<Record<string, unknown>>) => unknown;

/** A JSONata AST node, as `jsonata(src).ast()` returns it (only the fields read here). */
interface Node {
  type: string;
  value?: unknown;
  steps?: Node[];
  lhs?: Node | [Node, Node][];
  rhs?: Node;
  arguments?: Node[];
  procedure?: Node;
}

/**
 * Keys a node of each supported type may have. Anything else (predicates, stages, grouping,
 * focus and index bindings, keepArray, ...) changes the semantics, so the expression is left to JSONata.
 */
const PLAIN_KEYS: Record<string, readonly string[]> = {
  path: ['type', 'steps'],
  name: ['type', 'value', 'position'],
  variable: ['type', 'value', 'position'],
  string: ['type', 'value', 'position'],
  number: ['type', 'value', 'position'],
  value: ['type', 'value', 'position'],
  binary: ['type', 'value', 'position', 'lhs', 'rhs'],
  unary: ['type', 'value', 'position', 'lhs'],
  function: ['type', 'value', 'position', 'arguments', 'procedure'],
};

/**
 * Returns a fast path for the expression, or undefined when its shape is not one handled here.
 *
 * The fast path is JavaScript generated for this expression, one small function per node: each
 * reads its field names as constants (`v["lumens"]`), so V8 gives every read its own monomorphic
 * inline cache. One closure shared by all paths read every name through the same `v[name]` and
 * that load went megamorphic (a hash lookup per field), which was most of the fast path's cost.
 * Names and string literals reach the source as JSON string literals only (JSON.stringify is a
 * JavaScript string literal for every string), other values as `K[i]`; nothing else of the
 * expression becomes source.
 */
export function compileFastPath(ast: unknown): FastPath | undefined {
  const g = new Generator();
  const root = g.node(ast as Node);
  if (root === undefined) return undefined;
  const body = `"use strict";
${g.functions.join('\n')}
return function fastPath(input, bindings) {
  // JSONata wraps an array input in a sequence and maps paths over it.
  if (isArray(input)) return F;
  return ${root}(input, bindings);
};`;
  // Where code generation is disallowed, JSONata evaluates, as without a fast path.
  return buildGenerated<FastPath>(HELPERS, g.constants, body);
}

/** What generated code calls (plain functions V8 inlines where they are hot) and FALLBACK as `F`. */
const HELPERS = {
  F: FALLBACK,
  isArray: Array.isArray,
  hasOwn: Object.prototype.hasOwnProperty,
  setPrototypeOf: Object.setPrototypeOf,
  isScalar,
  boolize,
  toJsonataString,
};

function isPlain(n: Node): boolean {
  const allowed = PLAIN_KEYS[n.type];
  // Keys present with an undefined value (function nodes carry `name: undefined`) mean nothing.
  return allowed !== undefined && Object.keys(n).every((k) => allowed.includes(k) || (n as unknown as Record<string, unknown>)[k] === undefined);
}

/** A JavaScript string literal for `s`: JSON's string syntax is a subset of JavaScript's. */
const quote = (s: string): string => JSON.stringify(s);

class Generator {
  /** The generated functions, each `function fN(input, bindings)` answering a value or F. */
  readonly functions: string[] = [];
  /** Values the generated code reads as `K[i]` (literals that are not strings, booleans, null or plain numbers). */
  readonly constants: unknown[] = [];

  /** The name of the function computing `n`, or undefined when its shape is not handled here. */
  node(n: Node): string | undefined {
    if (!n || typeof n !== 'object' || !isPlain(n)) return undefined;
    switch (n.type) {
      case 'string':
      case 'number':
      case 'value':
        return this.fn(`return ${this.literal(n.value)};`);
      case 'variable':
        return this.variable(n);
      case 'path':
        return this.path(n.steps!);
      case 'binary':
        return this.binary(n);
      case 'unary':
        return n.value === '{' ? this.objectConstructor(n.lhs as [Node, Node][]) : undefined;
      case 'function':
        return this.stringFunction(n);
      default:
        return undefined;
    }
  }

  /** Adds a function with this body; returns its name. */
  private fn(body: string): string {
    const name = `f${this.functions.length}`;
    this.functions.push(`function ${name}(input, bindings) {\n${body}\n}`);
    return name;
  }

  private literal(v: unknown): string {
    if (typeof v === 'string') return quote(v);
    if (v === true || v === false || v === null) return String(v);
    // String(n) is a JavaScript literal for n when it is finite and not -0.
    if (typeof v === 'number' && Number.isFinite(v) && !Object.is(v, -0)) return String(v);
    this.constants.push(v);
    return `K[${this.constants.length - 1}]`;
  }

  /** The variables the gateway binds (spec §3); `$` and `$$` (context, root) are left to JSONata. */
  private variable(n: Node): string | undefined {
    const name = n.value as string;
    if (typeof name !== 'string' || name === '' || name === '$') return undefined;
    return this.fn(`const v = bindings[${quote(name)}];
// Unbound (or undefined) names are looked up in JSONata's enclosing frames.
if (v === undefined || isArray(v) || typeof v === 'function') return F;
return v;`);
  }

  /** `a.b.c` or `$var.a.b`: property lookups through plain objects. */
  private path(steps: Node[]): string | undefined {
    if (steps.length === 0 || !steps.every(isPlain)) return undefined;
    const [first, ...rest] = steps;
    let start: string;
    let names: Node[];
    if (first!.type === 'variable') {
      const v = this.variable(first!);
      if (!v) return undefined;
      start = `let v = ${v}(input, bindings);\nif (v === F) return F;`;
      names = rest;
    } else {
      start = 'let v = input;';
      names = steps;
    }
    if (!names.every((s) => s.type === 'name' && typeof s.value === 'string')) return undefined;
    const reads = names.map((s) => {
      const name = quote(s.value as string);
      // JSONata reads own properties only; an array anywhere means mapping and flattening.
      return `if (v === null || typeof v !== 'object' || !hasOwn.call(v, ${name})) return undefined;
v = v[${name}];
if (isArray(v) || typeof v === 'function') return F;`;
    });
    return this.fn(`${start}\n${reads.join('\n')}\nreturn v;`);
  }

  private binary(n: Node): string | undefined {
    const lhs = this.node(n.lhs as Node);
    const rhs = lhs && this.node(n.rhs!);
    if (!lhs || !rhs) return undefined;
    const both = `const a = ${lhs}(input, bindings);
if (a === F) return F;
const b = ${rhs}(input, bindings);
if (b === F) return F;`;
    const op = n.value as string;
    switch (op) {
      case '=':
      case '!=':
        return this.fn(`${both}
if (a === undefined || b === undefined) return false;
// Objects compare deeply in JSONata.
if (!isScalar(a) || !isScalar(b)) return F;
return a ${op === '=' ? '===' : '!=='} b;`);
      case '<':
      case '<=':
      case '>':
      case '>=':
        return this.fn(`${both}
const ta = typeof a;
const tb = typeof b;
// Other types, or a string against a number, are errors (T2010, T2009): JSONata raises them.
if ((ta !== 'number' && ta !== 'string' && ta !== 'undefined') || (tb !== 'number' && tb !== 'string' && tb !== 'undefined')) return F;
if (ta === 'undefined' || tb === 'undefined') return undefined;
if (ta !== tb) return F;
return a ${op} b;`);
      case 'and':
      case 'or':
        return this.fn(`const a = ${lhs}(input, bindings);
if (a === F) return F;
const ba = boolize(a);
if (ba === F) return F;
if (${op === 'and' ? '!ba) return false' : 'ba) return true'};
return boolize(${rhs}(input, bindings));`);
      case '&':
        return this.fn(`${both}
const sa = a === undefined ? '' : toJsonataString(a);
const sb = b === undefined ? '' : toJsonataString(b);
if (sa === F || sb === F) return F;
return sa + sb;`);
      default:
        return undefined;
    }
  }

  private stringFunction(n: Node): string | undefined {
    const proc = n.procedure;
    if (proc?.type !== 'variable' || proc.value !== 'string' || !isPlain(proc)) return undefined;
    if (n.arguments?.length !== 1) return undefined;
    const arg = this.node(n.arguments[0]!);
    if (!arg) return undefined;
    return this.fn(`// A binding named \`string\` would shadow the built-in.
if (bindings.string !== undefined) return F;
const v = ${arg}(input, bindings);
// $string of nothing involves JSONata's context-argument rules.
if (v === F || v === undefined) return F;
return toJsonataString(v);`);
  }

  /** `{"k": expr, ...}` with distinct literal keys; like JSONata, keys whose value is undefined are left out. */
  private objectConstructor(pairs: [Node, Node][]): string | undefined {
    const keys: string[] = [];
    const values: string[] = [];
    for (const [k, v] of pairs) {
      if (!isPlain(k) || k.type !== 'string' || typeof k.value !== 'string') return undefined;
      const key = k.value;
      // Repeated keys are an error (D1009) and these two are reserved (D1013): JSONata reports them.
      if (keys.includes(key) || key === '_jsonata_lambda' || key === '_jsonata_function') return undefined;
      const value = this.node(v);
      if (!value) return undefined;
      keys.push(key);
      values.push(value);
    }
    // JSONata builds objects without a prototype; so does the fast path, so results are indistinguishable.
    // setPrototypeOf on a fresh literal, not Object.create(null): V8 makes the latter a dictionary
    // (slow properties), and every later reader (heap estimate, JSON.stringify to each subscriber)
    // pays for it; this object has fast properties and the same null prototype. Its keys are set by
    // assignment, never in a literal, where `"__proto__": v` would set the prototype.
    const sets = keys.map(
      (key, i) => `const v${i} = ${values[i]}(input, bindings);
if (v${i} === F) return F;
if (v${i} !== undefined) out[${quote(key)}] = v${i};`,
    );
    return this.fn(`const out = setPrototypeOf({}, null);\n${sets.join('\n')}\nreturn out;`);
  }
}

function isScalar(v: unknown): boolean {
  return v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
}

/** JSONata's effective boolean value, for the values the fast path lets through (never arrays). */
function boolize(v: unknown): boolean | typeof FALLBACK {
  if (v === FALLBACK || Array.isArray(v) || typeof v === 'function') return FALLBACK;
  if (v === undefined || v === null) return false;
  if (typeof v === 'string') return v.length > 0;
  if (typeof v === 'number') return v !== 0 && !Number.isNaN(v);
  if (typeof v === 'boolean') return v;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return FALLBACK;
}

/**
 * `$string(x)` for the values whose string form is plain: strings, integers, booleans, null.
 * Other numbers go through toPrecision(15) and objects through JSONata's JSON form: left to JSONata.
 */
function toJsonataString(v: unknown): string | typeof FALLBACK {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : FALLBACK;
  if (typeof v === 'boolean') return String(v);
  if (v === null) return 'null';
  return FALLBACK;
}
