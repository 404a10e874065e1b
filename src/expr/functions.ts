import { closest } from '../config/suggest.js';

/**
 * JSONata's built-in functions and their signatures (jsonata 2.x binds these in its static and
 * per-evaluation frames; test/unit/expr-functions.test.ts checks both against the installed
 * library). A call to any other name that the expression does not bind itself fails only when a
 * message reaches it ("Attempted to invoke a non-function"), so the config check reports it
 * instead; so is a call with a number of arguments its signature never takes (argumentCounts).
 */
export const BUILTIN_SIGNATURES: Readonly<Record<string, string>> = {
  abs: '<n-:n>',
  append: '<xx:a>',
  assert: '<bs?:x>',
  average: '<a<n>:n>',
  base64decode: '<s-:s>',
  base64encode: '<s-:s>',
  boolean: '<x-:b>',
  ceil: '<n-:n>',
  clone: '<(oa)-:o>',
  contains: '<s-(sf):b>',
  count: '<a:n>',
  decodeUrl: '<s-:s>',
  decodeUrlComponent: '<s-:s>',
  distinct: '<x:x>',
  each: '<o-f:a>',
  encodeUrl: '<s-:s>',
  encodeUrlComponent: '<s-:s>',
  error: '<s?:x>',
  eval: '<sx?:x>',
  exists: '<x:b>',
  filter: '<af>',
  floor: '<n-:n>',
  formatBase: '<n-n?:s>',
  formatInteger: '<n-s:s>',
  formatNumber: '<n-so?:s>',
  fromMillis: '<n-s?s?:s>',
  join: '<a<s>s?:s>',
  keys: '<x-:a<s>>',
  length: '<s-:n>',
  lookup: '<x-s:x>',
  lowercase: '<s-:s>',
  map: '<af>',
  match: '<s-f<s:o>n?:a<o>>',
  max: '<a<n>:n>',
  merge: '<a<o>:o>',
  millis: '<:n>',
  min: '<a<n>:n>',
  not: '<x-:b>',
  now: '<s?s?:s>',
  number: '<(nsb)-:n>',
  pad: '<s-ns?:s>',
  parseInteger: '<s-s:n>',
  power: '<n-n:n>',
  random: '<:n>',
  reduce: '<afj?:j>',
  replace: '<s-(sf)(sf)n?:s>',
  reverse: '<a:a>',
  round: '<n-n?:n>',
  shuffle: '<a:a>',
  sift: '<o-f?:o>',
  single: '<af?>',
  sort: '<af?:a>',
  split: '<s-(sf)n?:a<s>>',
  spread: '<x-:a<o>>',
  sqrt: '<n-:n>',
  string: '<x-b?:s>',
  substring: '<s-nn?:s>',
  substringAfter: '<s-s:s>',
  substringBefore: '<s-s:s>',
  sum: '<a<n>:n>',
  toMillis: '<s-s?:n>',
  trim: '<s-:s>',
  type: '<x:s>',
  uppercase: '<s-:s>',
  zip: '<a+>',
};

export const BUILTIN_FUNCTIONS: ReadonlySet<string> = new Set(Object.keys(BUILTIN_SIGNATURES));

interface AstNode {
  type?: string;
  value?: unknown;
  position?: number;
  [k: string]: unknown;
}

export interface UnknownCall {
  name: string;
  /** 0-based index of the `$` of the call in the expression text. */
  index: number;
  message: string;
}

/** A `$name` in an expression's tree and where jsonata says it ends (just past the token). */
interface NameAt {
  name: string;
  position: number;
}

/**
 * The `$names` of an expression's tree: those bound (the gateway's variables, `$v := ...`, lambda
 * parameters, a path step's `@$v` focus and `#$i` index), those called (`$f(...)`, `~> $f`), and
 * those read as values. `$` (the context) and `$$` (the root) are neither.
 */
function scanNames(ast: unknown, gatewayVariables: Iterable<string>): { bound: Set<string>; calls: NameAt[]; reads: NameAt[] } {
  const bound = new Set<string>(gatewayVariables);
  const calls: NameAt[] = [];
  const reads: NameAt[] = [];
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (node === null || typeof node !== 'object') return;
    const n = node as AstNode;
    if (n.type === 'bind' && isVariable(n.lhs)) bound.add(n.lhs.value);
    if (n.type === 'lambda' && Array.isArray(n.arguments)) for (const a of n.arguments) if (isVariable(a)) bound.add(a.value);
    if (typeof n.focus === 'string') bound.add(n.focus);
    if (typeof n.index === 'string') bound.add(n.index);
    if ((n.type === 'function' || n.type === 'partial') && isVariable(n.procedure)) calls.push({ name: n.procedure.value, position: n.procedure.position ?? 0 });
    if (n.type === 'apply' && isVariable(n.rhs)) calls.push({ name: n.rhs.value, position: n.rhs.position ?? 0 });
    // `$` is the context and `$$` the root: their values are '' and '$'.
    if (isVariable(n) && n.value !== '' && n.value !== '$') reads.push({ name: n.value, position: n.position ?? 0 });
    for (const v of Object.values(n)) if (v !== null && typeof v === 'object') walk(v);
  };
  walk(ast);
  return { bound, calls, reads };
}

/** The names an expression binds itself (`$v := ...`, lambda parameters, `@$v`, `#$i`), besides `gatewayVariables`. */
export function boundNames(ast: unknown, gatewayVariables: Iterable<string>): Set<string> {
  return scanNames(ast, gatewayVariables).bound;
}

/** A problem at the `$` of `at` (jsonata's positions point just past the token), with the closest known name as a hint. */
function unknownName(at: NameAt, known: readonly string[], what: (name: string, hint: string) => string): UnknownCall {
  const hint = closest(at.name, known);
  return { name: at.name, index: Math.max(0, at.position - at.name.length - 1), message: what(at.name, hint === undefined ? '' : ` (did you mean $${hint}?)`) };
}

/**
 * Calls of `$name(...)` (or `~> $name`) where `name` is neither built in, nor bound by the
 * expression (`$f := ...`, a lambda parameter), nor one of the variables the gateway binds.
 */
export function unknownFunctionCalls(ast: unknown, gatewayVariables: Iterable<string>): UnknownCall[] {
  const { bound, calls } = scanNames(ast, gatewayVariables);
  const known = [...BUILTIN_FUNCTIONS, ...bound];
  return calls.filter((c) => c.name !== '' && !BUILTIN_FUNCTIONS.has(c.name) && !bound.has(c.name)).map((c) => unknownName(c, known, (name, hint) => `unknown function $${name}${hint}`));
}

/**
 * Variables read (`$header."x-source"`, `$pth.room`) that are neither bound by the expression
 * (`$v := ...`, a lambda parameter, `@$v`, `#$i`), nor the gateway's (`$headers`, `$path`, ...),
 * nor a built-in function passed as a value (`$map(xs, $string)`). JSONata gives an unbound
 * variable no value, without an error: a misspelt `$header` made a filter drop every message, or
 * a transform leave out its field, with nothing said. Calls are unknownFunctionCalls' to report.
 */
export function unknownVariables(ast: unknown, gatewayVariables: Iterable<string>): UnknownCall[] {
  const { bound, calls, reads } = scanNames(ast, gatewayVariables);
  const called = new Set(calls.map((c) => c.name));
  const known = [...bound, ...BUILTIN_FUNCTIONS];
  const seen = new Set<string>();
  const out: UnknownCall[] = [];
  for (const r of reads) {
    if (bound.has(r.name) || BUILTIN_FUNCTIONS.has(r.name) || called.has(r.name) || seen.has(r.name)) continue;
    seen.add(r.name);
    // With no near name, `$lumens` is most likely a field of the message written as variables are.
    const asField = (name: string) => ` (a field of the message is read without the $: ${name})`;
    out.push(unknownName(r, known, (name, hint) => `unknown variable $${name}${hint || asField(name)}: nothing binds it, so it would have no value for any message`));
  }
  return out.sort((a, b) => a.index - b.index);
}

/** A read of a gateway variable: `$path.room` (member `room`), or `$principal` as a whole. */
export interface VariableRead {
  name: string;
  /** The field read of it by name (`$path.room`, `$path.\`room\``), when it is read so. */
  member?: string;
  /** Where its `$` is in the expression. */
  index: number;
}

/**
 * Where the expression reads one of `names` as a value (`$principal`, `$claims.sub`,
 * `$path.room`), unless it binds that name itself.
 */
export function variableReads(ast: unknown, names: readonly string[]): VariableRead[] {
  const { bound } = scanNames(ast, []);
  const out: VariableRead[] = [];
  const seen = new Set<object>();
  const at = (v: { value: string; position?: number }) => Math.max(0, (v.position ?? 0) - v.value.length - 1);
  const walk = (node: unknown): void => {
    if (node === null || typeof node !== 'object' || seen.has(node)) return;
    seen.add(node);
    if (Array.isArray(node)) return node.forEach(walk);
    const n = node as AstNode;
    if (n.type === 'path' && Array.isArray(n.steps)) {
      const [first, second] = n.steps as AstNode[];
      if (isVariable(first) && names.includes(first.value) && !bound.has(first.value) && !(first as AstNode).stages && !(first as AstNode).predicate && second?.type === 'name') {
        out.push({ name: first.value, member: String(second.value), index: at(first) });
        seen.add(first);
      }
    }
    if (isVariable(n) && names.includes(n.value) && !bound.has(n.value)) out.push({ name: n.value, index: at(n) });
    for (const v of Object.values(n)) walk(v);
  };
  walk(ast);
  return out.sort((a, b) => a.index - b.index);
}

/** What a `$sift` without a function is told, at the config check or when a message reaches it. */
export const SIFT_NEEDS_FUNCTION = '$sift needs a function to keep each entry by, e.g. $sift($obj, function($v, $k) { $v > 0 })';

/**
 * A call of `$sift` that can never be given its function: `$sift()`, or `$sift({...})` (an object
 * written where the function goes), unless the expression binds its own `$sift`. JSONata's
 * signature for it takes the function as optional and then fails inside with its own TypeError
 * ("Cannot read properties of undefined (reading 'arity')") for every message.
 */
export function siftWithoutFunction(ast: unknown): UnknownCall | undefined {
  let found: UnknownCall | undefined;
  let rebound = false;
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (node === null || typeof node !== 'object') return;
    const n = node as AstNode;
    if (n.type === 'bind' && isVariable(n.lhs) && n.lhs.value === 'sift') rebound = true;
    if (n.type === 'lambda' && Array.isArray(n.arguments) && n.arguments.some((a) => isVariable(a) && a.value === 'sift')) rebound = true;
    if (!found && n.type === 'function' && isVariable(n.procedure) && n.procedure.value === 'sift' && Array.isArray(n.arguments)) {
      const [only, ...more] = n.arguments as AstNode[];
      if (only === undefined || (more.length === 0 && only.type === 'unary' && only.value === '{')) {
        const position = n.procedure.position ?? 0;
        found = { name: 'sift', index: Math.max(0, position - 'sift'.length - 1), message: SIFT_NEEDS_FUNCTION };
      }
    }
    for (const v of Object.values(n)) if (v !== null && typeof v === 'object') walk(v);
  };
  walk(ast);
  return rebound ? undefined : found;
}

function isVariable(n: unknown): n is { type: 'variable'; value: string; position?: number } {
  return n !== null && typeof n === 'object' && (n as AstNode).type === 'variable' && typeof (n as AstNode).value === 'string';
}

/**
 * How many arguments a JSONata signature takes: `min` written out (a `-` parameter may be left to
 * the context, so one fewer; `?` ones may be left out) to `max` (none with `+`). A call outside
 * these fails JSONata's check for every message, whatever its arguments hold (T0410).
 */
export function argumentCounts(signature: string): { min: number; max: number } {
  let min = 0;
  let max = 0;
  let context = false;
  for (let i = 1; i < signature.length; i++) {
    const c = signature[i]!;
    if (c === ':' || c === '>') break;
    if (c === '<' || c === '(') {
      // A parameter's subtype (`a<s>`, `f<s:o>`) or a choice of types (`(sf)`) is part of it.
      const close = c === '<' ? '>' : ')';
      for (let depth = 1; depth > 0 && ++i < signature.length; ) depth += signature[i] === c ? 1 : signature[i] === close ? -1 : 0;
      if (c === '(') {
        min++;
        max++;
      }
    } else if (c === '-') context = true;
    else if (c === '?') min--;
    else if (c === '+') max = Infinity;
    else {
      min++;
      max++;
    }
  }
  return { min: context ? min - 1 : min, max };
}

/**
 * Calls of a built-in function (not one the expression binds itself) with fewer or more arguments
 * than its signature takes: `$uppercase(a, b)`, `$substring(s)`, `$map(xs)`. A `~>` gives the
 * call on its right one more (its left side, first). Partial applications (`$f(?, 1)`) are left
 * to JSONata.
 */
export function wrongArgumentCounts(ast: unknown, gatewayVariables: Iterable<string>): UnknownCall[] {
  const { bound } = scanNames(ast, gatewayVariables);
  const out: UnknownCall[] = [];
  const check = (call: AstNode, extra: number): void => {
    if (!isVariable(call.procedure) || !Array.isArray(call.arguments)) return;
    const name = call.procedure.value;
    const signature = BUILTIN_SIGNATURES[name];
    if (signature === undefined || !Object.hasOwn(BUILTIN_SIGNATURES, name) || bound.has(name)) return;
    const given = call.arguments.length + extra;
    const { min, max } = argumentCounts(signature);
    if (given >= min && given <= max) return;
    const count = (n: number) => (n === 0 ? 'no arguments' : `${n} argument${n === 1 ? '' : 's'}`);
    const takes = min === max ? count(min) : max === Infinity ? `at least ${count(min)}` : min === 0 ? `at most ${count(max)}` : `${min} to ${max} arguments`;
    out.push({
      name,
      index: Math.max(0, (call.procedure.position ?? 0) - name.length - 1),
      message: `$${name} takes ${takes}, not ${given}${extra > 0 ? ' (with the value before ~>)' : ''}: JSONata would refuse it for every message`,
    });
  };
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (node === null || typeof node !== 'object') return;
    const n = node as AstNode;
    if (n.type === 'apply' && n.value === '~>' && (n.rhs as AstNode | undefined)?.type === 'function') {
      check(n.rhs as AstNode, 1);
      walk(n.lhs);
      walk((n.rhs as AstNode).arguments);
      return;
    }
    if (n.type === 'function') check(n, 0);
    for (const v of Object.values(n)) if (v !== null && typeof v === 'object') walk(v);
  };
  walk(ast);
  return out.sort((a, b) => a.index - b.index);
}
