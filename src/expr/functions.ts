import { closest } from '../config/suggest.js';

/**
 * JSONata's built-in functions (jsonata 2.x binds these in its static and per-evaluation frames;
 * test/unit/expr-functions.test.ts checks the list against the installed library). A call to any
 * other name that the expression does not bind itself fails only when a message reaches it
 * ("Attempted to invoke a non-function"), so the config check reports it instead.
 */
export const BUILTIN_FUNCTIONS: ReadonlySet<string> = new Set([
  'abs',
  'append',
  'assert',
  'average',
  'base64decode',
  'base64encode',
  'boolean',
  'ceil',
  'clone',
  'contains',
  'count',
  'decodeUrl',
  'decodeUrlComponent',
  'distinct',
  'each',
  'encodeUrl',
  'encodeUrlComponent',
  'error',
  'eval',
  'exists',
  'filter',
  'floor',
  'formatBase',
  'formatInteger',
  'formatNumber',
  'fromMillis',
  'join',
  'keys',
  'length',
  'lookup',
  'lowercase',
  'map',
  'match',
  'max',
  'merge',
  'millis',
  'min',
  'not',
  'now',
  'number',
  'pad',
  'parseInteger',
  'power',
  'random',
  'reduce',
  'replace',
  'reverse',
  'round',
  'shuffle',
  'sift',
  'single',
  'sort',
  'split',
  'spread',
  'sqrt',
  'string',
  'substring',
  'substringAfter',
  'substringBefore',
  'sum',
  'toMillis',
  'trim',
  'type',
  'uppercase',
  'zip',
]);

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
    out.push(unknownName(r, known, (name, hint) => `unknown variable $${name}${hint}: nothing binds it, so it would have no value for any message`));
  }
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
