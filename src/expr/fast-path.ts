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
 * construction; test/unit/fast-path.test.ts checks every shape against jsonata.
 */

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

/** Returns a fast path for the expression, or undefined when its shape is not one handled here. */
export function compileFastPath(ast: unknown): FastPath | undefined {
  const fn = node(ast as Node);
  if (!fn) return undefined;
  return (input, bindings) => {
    // JSONata wraps an array input in a sequence and maps paths over it.
    if (Array.isArray(input)) return FALLBACK;
    return fn(input, bindings);
  };
}

function isPlain(n: Node): boolean {
  const allowed = PLAIN_KEYS[n.type];
  // Keys present with an undefined value (function nodes carry `name: undefined`) mean nothing.
  return allowed !== undefined && Object.keys(n).every((k) => allowed.includes(k) || (n as unknown as Record<string, unknown>)[k] === undefined);
}

function node(n: Node): FastPath | undefined {
  if (!n || typeof n !== 'object' || !isPlain(n)) return undefined;
  switch (n.type) {
    case 'string':
    case 'number':
    case 'value': {
      const v = n.value;
      return () => v;
    }
    case 'variable':
      return variable(n);
    case 'path':
      return path(n.steps!);
    case 'binary':
      return binary(n);
    case 'unary':
      return n.value === '{' ? objectConstructor(n.lhs as [Node, Node][]) : undefined;
    case 'function':
      return stringFunction(n);
    default:
      return undefined;
  }
}

/** The variables the gateway binds (spec §3); `$` and `$$` (context, root) are left to JSONata. */
function variable(n: Node): FastPath | undefined {
  const name = n.value as string;
  if (name === '' || name === '$') return undefined;
  return (_input, bindings) => {
    const v = bindings[name];
    // Unbound (or undefined) names are looked up in JSONata's enclosing frames.
    if (v === undefined || Array.isArray(v) || typeof v === 'function') return FALLBACK;
    return v;
  };
}

/** `a.b.c` or `$var.a.b`: property lookups through plain objects. */
function path(steps: Node[]): FastPath | undefined {
  if (steps.length === 0 || !steps.every(isPlain)) return undefined;
  const [first, ...rest] = steps;
  let start: FastPath;
  let names: string[];
  if (first!.type === 'variable') {
    const v = variable(first!);
    if (!v) return undefined;
    start = v;
    names = rest.map((s) => s.value as string);
    if (!rest.every((s) => s.type === 'name')) return undefined;
  } else {
    if (!steps.every((s) => s.type === 'name')) return undefined;
    start = (input) => input;
    names = steps.map((s) => s.value as string);
  }
  return (input, bindings) => {
    let v = start(input, bindings);
    if (v === FALLBACK) return FALLBACK;
    for (const name of names) {
      if (v === null || typeof v !== 'object') return undefined;
      // JSONata reads own properties only; an array anywhere means mapping and flattening.
      if (!Object.prototype.hasOwnProperty.call(v, name)) return undefined;
      v = (v as Record<string, unknown>)[name];
      if (Array.isArray(v) || typeof v === 'function') return FALLBACK;
    }
    return v;
  };
}

function binary(n: Node): FastPath | undefined {
  const lhs = node(n.lhs as Node);
  const rhs = node(n.rhs!);
  if (!lhs || !rhs) return undefined;
  const op = n.value as string;
  switch (op) {
    case '=':
    case '!=': {
      const negate = op === '!=';
      return (input, bindings) => {
        const a = lhs(input, bindings);
        if (a === FALLBACK) return FALLBACK;
        const b = rhs(input, bindings);
        if (b === FALLBACK) return FALLBACK;
        if (a === undefined || b === undefined) return false;
        // Objects compare deeply in JSONata.
        if (!isScalar(a) || !isScalar(b)) return FALLBACK;
        return (a === b) !== negate;
      };
    }
    case '<':
    case '<=':
    case '>':
    case '>=': {
      const compare = COMPARE[op]!;
      return (input, bindings) => {
        const a = lhs(input, bindings);
        if (a === FALLBACK) return FALLBACK;
        const b = rhs(input, bindings);
        if (b === FALLBACK) return FALLBACK;
        const ta = typeof a;
        const tb = typeof b;
        // Other types, or a string against a number, are errors (T2010, T2009): JSONata raises them.
        if ((ta !== 'number' && ta !== 'string' && ta !== 'undefined') || (tb !== 'number' && tb !== 'string' && tb !== 'undefined')) return FALLBACK;
        if (ta === 'undefined' || tb === 'undefined') return undefined;
        if (ta !== tb) return FALLBACK;
        return compare(a as number, b as number);
      };
    }
    case 'and':
      return (input, bindings) => {
        const a = lhs(input, bindings);
        if (a === FALLBACK) return FALLBACK;
        const ba = boolize(a);
        if (ba === FALLBACK) return FALLBACK;
        if (!ba) return false;
        return boolize(rhs(input, bindings));
      };
    case 'or':
      return (input, bindings) => {
        const a = lhs(input, bindings);
        if (a === FALLBACK) return FALLBACK;
        const ba = boolize(a);
        if (ba === FALLBACK) return FALLBACK;
        if (ba) return true;
        return boolize(rhs(input, bindings));
      };
    case '&':
      return (input, bindings) => {
        const a = lhs(input, bindings);
        if (a === FALLBACK) return FALLBACK;
        const b = rhs(input, bindings);
        if (b === FALLBACK) return FALLBACK;
        const sa = a === undefined ? '' : toJsonataString(a);
        const sb = b === undefined ? '' : toJsonataString(b);
        if (sa === FALLBACK || sb === FALLBACK) return FALLBACK;
        return sa + sb;
      };
    default:
      return undefined;
  }
}

const COMPARE: Record<string, (a: number, b: number) => boolean> = {
  '<': (a, b) => a < b,
  '<=': (a, b) => a <= b,
  '>': (a, b) => a > b,
  '>=': (a, b) => a >= b,
};

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

function stringFunction(n: Node): FastPath | undefined {
  const proc = n.procedure;
  if (!proc || proc.type !== 'variable' || proc.value !== 'string' || !isPlain(proc)) return undefined;
  if (n.arguments?.length !== 1) return undefined;
  const arg = node(n.arguments[0]!);
  if (!arg) return undefined;
  return (input, bindings) => {
    // A binding named `string` would shadow the built-in.
    if (bindings.string !== undefined) return FALLBACK;
    const v = arg(input, bindings);
    // $string of nothing involves JSONata's context-argument rules.
    if (v === FALLBACK || v === undefined) return FALLBACK;
    return toJsonataString(v);
  };
}

/** `{"k": expr, ...}` with distinct literal keys; like JSONata, keys whose value is undefined are left out. */
function objectConstructor(pairs: [Node, Node][]): FastPath | undefined {
  const keys: string[] = [];
  const values: FastPath[] = [];
  for (const [k, v] of pairs) {
    if (!isPlain(k) || k.type !== 'string') return undefined;
    const key = k.value as string;
    // Repeated keys are an error (D1009) and these two are reserved (D1013): JSONata reports them.
    if (keys.includes(key) || key === '_jsonata_lambda' || key === '_jsonata_function') return undefined;
    const value = node(v);
    if (!value) return undefined;
    keys.push(key);
    values.push(value);
  }
  return (input, bindings) => {
    // JSONata builds objects without a prototype; so does the fast path, so results are indistinguishable.
    // setPrototypeOf on a fresh literal, not Object.create(null): V8 makes the latter a dictionary
    // (slow properties), and every later reader (heap estimate, JSON.stringify to each subscriber)
    // pays for it; this object has fast properties and the same null prototype.
    const out: Record<string, unknown> = Object.setPrototypeOf({}, null);
    for (let i = 0; i < keys.length; i++) {
      const v = values[i]!(input, bindings);
      if (v === FALLBACK) return FALLBACK;
      if (v !== undefined) out[keys[i]!] = v;
    }
    return out;
  };
}
