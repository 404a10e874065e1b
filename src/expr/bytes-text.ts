/**
 * Bytes (a binary CloudEvent's data, a Buffer to expressions) read as their base64 text wherever
 * an expression turns a value into a string: `$string` and the `&` operator, as a forward, an
 * envelope or a header writes them (spec-checklist 584, 640).
 */

/**
 * JSONata's `$string` (jsonata 2.x, functions.js string), except that bytes (a binary CloudEvent's
 * data: `$string($)`, `$string({"data": $})`) are their base64 text, as a forward, an envelope or a
 * header writes them, rather than Buffer's own JSON `{"type":"Buffer","data":[1,2,255]}`.
 */
export function stringWithBytes(arg: unknown, prettify = false, timeoutMs = 0): string | undefined {
  if (arg === undefined) return undefined;
  if (typeof arg === 'string') return arg;
  if (Buffer.isBuffer(arg)) return arg.toString('base64');
  if (isFunctionValue(arg)) return '';
  if (typeof arg === 'number' && !Number.isFinite(arg)) throw { code: 'D3001', value: arg };
  const value = Array.isArray(arg) && (arg as { outerWrapper?: boolean }).outerWrapper ? arg[0] : arg;
  const start = timeoutMs > 0 ? performance.now() : 0;
  let values = 0;
  return JSON.stringify(
    value,
    function (this: Record<string, unknown>, key: string, v: unknown) {
      // One call for the whole value, which the evaluation's time box (checked between its steps)
      // cannot stop: `$string([1..1000000])` held the event loop 1.5-6 s. JSONata's code for it.
      if (timeoutMs > 0 && ++values % TIME_CHECK_EVERY === 0 && performance.now() - start > timeoutMs) throw { code: 'D1012', value: timeoutMs };
      // `v` is after toJSON: the bytes are the value as it was.
      const raw = this[key];
      if (Buffer.isBuffer(raw)) return raw.toString('base64');
      if (typeof v === 'number') {
        // JSONata's isNumeric: NaN is not a number, a non-finite one is an error.
        if (Number.isNaN(v)) return v;
        if (!Number.isFinite(v)) throw { code: 'D1001', value: v };
        return Number.isInteger(v) ? v : Number(v.toPrecision(15));
      }
      return v && isFunctionValue(v) ? '' : v;
    },
    prettify ? 2 : 0,
  );
}

/** Values written between looks at the clock: a look costs ~50 ns, 4096 values ~1 ms. */
const TIME_CHECK_EVERY = 4096;

/** `$string` and the `&` operator's text, held to an expression's `timeoutMs` (0: unbounded). */
export function timeBoxedText(timeoutMs: number): { string: (arg: unknown, prettify?: boolean) => string | undefined; text: (value: unknown) => string | undefined } {
  return {
    string: (arg, prettify = false) => stringWithBytes(arg, prettify, timeoutMs),
    text: (value) => textOf(value, timeoutMs),
  };
}

export function isFunctionValue(v: unknown): boolean {
  return typeof v === 'function' || (typeof v === 'object' && v !== null && ((v as JsonataFunction)._jsonata_function === true || (v as JsonataFunction)._jsonata_lambda === true));
}

/** How JSONata marks its function values (a native function's wrapper, a lambda with its closure). */
interface JsonataFunction {
  _jsonata_function?: boolean;
  _jsonata_lambda?: boolean;
}

/**
 * The name textOf is bound under: a variable no expression can write (`$&` does not parse), so
 * none can shadow it, and the token JSONata's errors then name, as they do for the operator.
 */
export const TEXT_FUNCTION = '&';

/** The function `&`'s operands are passed through: JSONata's string of the value, bytes as base64. */
export function textOf(value: unknown, timeoutMs = 0): string | undefined {
  return value === undefined ? undefined : stringWithBytes(value, false, timeoutMs);
}

interface AstNode {
  type?: string;
  value?: unknown;
  position?: number;
  procedure?: AstNode;
  [k: string]: unknown;
}

/**
 * JSONata's `&` makes each operand a string with its internal `$string`, which no expression can
 * replace, so bytes joined as Buffer's own JSON (`x{"type":"Buffer","data":[222,173]}`). Each
 * operand of every `&` is therefore passed through textOf first: the operator then finds strings,
 * which it keeps as they are, and no value (undefined) stays no value, which it reads as "". The
 * node keeps its type, so `x ~> a & b` is still an application of a string (JSONata's T2006), not
 * a call. Changed in place, as boundRanges does; whether there was an `&`.
 */
export function concatOperandsToText(ast: unknown, bound: ReadonlySet<string>): boolean {
  let found = false;
  const stack = [ast];
  while (stack.length > 0) {
    const n = stack.pop();
    if (n === null || typeof n !== 'object') continue;
    if (concatToText(n, bound)) found = true;
    for (const v of Object.values(n)) if (v !== null && typeof v === 'object') stack.push(v);
  }
  return found;
}

/**
 * The same for one node, for the text `$eval` parses at run time (called on entry to each step).
 * `bound`: the names the expression binds itself, so that a call of one is never taken for the
 * built-in of that name (`$eval`'s text is not scanned: absent, every call is wrapped).
 */
export function concatToText(node: object, bound?: ReadonlySet<string>): boolean {
  const n = node as AstNode;
  if (n.type !== 'binary' || n.value !== '&') return false;
  n.lhs = asText(n.lhs as AstNode, bound);
  n.rhs = asText(n.rhs as AstNode, bound);
  return true;
}

/**
 * Built-in functions whose result is never bytes (a string, number or boolean, or no value): `&`
 * needs no textOf around a call of one, which costs a JSONata call (~1.5 µs) per operand.
 */
const NEVER_BYTES = new Set([
  'string',
  'substring',
  'substringBefore',
  'substringAfter',
  'uppercase',
  'lowercase',
  'trim',
  'pad',
  'join',
  'replace',
  'formatNumber',
  'formatBase',
  'formatInteger',
  'fromMillis',
  'now',
  'millis',
  'toMillis',
  'base64encode',
  'base64decode',
  'encodeUrl',
  'encodeUrlComponent',
  'decodeUrl',
  'decodeUrlComponent',
  'length',
  'number',
  'abs',
  'floor',
  'ceil',
  'round',
  'sqrt',
  'power',
  'random',
  'sum',
  'max',
  'min',
  'average',
  'count',
  'boolean',
  'not',
  'exists',
  'type',
  'contains',
]);

/** The keys of a node whose value is its own: any other (a predicate, grouping, a stage, a binding) may change it. */
const PLAIN_KEYS = new Set(['type', 'value', 'position', 'procedure', 'arguments', 'lhs', 'rhs']);

function asText(operand: AstNode, bound: ReadonlySet<string> | undefined): AstNode {
  const plain = Object.keys(operand).every((k) => PLAIN_KEYS.has(k) || operand[k] === undefined);
  // A literal is its text, another `&` gives a string; an operand already passed through textOf is not wrapped again.
  if (plain && (operand.type === 'string' || operand.type === 'number' || operand.type === 'value')) return operand;
  if (plain && operand.type === 'binary' && operand.value === '&') return operand;
  if (operand.type === 'function' && operand.procedure?.type === 'variable') {
    const name = operand.procedure.value as string;
    if (name === TEXT_FUNCTION) return operand;
    if (plain && bound !== undefined && NEVER_BYTES.has(name) && !bound.has(name)) return operand;
  }
  return { type: 'function', value: '(', position: operand.position, procedure: { type: 'variable', value: TEXT_FUNCTION, position: operand.position }, arguments: [operand] };
}
