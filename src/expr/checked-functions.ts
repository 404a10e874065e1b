import type jsonataModule from 'jsonata';
import { BUILTIN_FUNCTIONS } from './functions.js';

/**
 * JSONata's `$fromMillis` and `$formatNumber` held to the inputs they can format. JSONata's own
 * gave text rather than an error past them: `$fromMillis(1e20)` was
 * `"0NaN-NaN-NaNTNaN:NaN:NaN.NaNZ"`, a timezone that is not ±HHMM `"NaN"`s, and
 * `$formatNumber(1e300, "#,##0.00")` `"1e+,300.00"` (toFixed writes 1e21 and more with an
 * exponent), and that text went out in the message. Each is now an error of that message, as
 * every other expression failure is (the expression and its config line in the log), and a literal
 * argument that can never be formatted is a config error at the literal (literalCallProblems).
 */

/** JSONata's own functions, as the expression's frames hold them (not in its types). */
export interface BuiltIn {
  implementation: (this: unknown, ...args: unknown[]) => unknown;
  /** Its signature as JSONata checks a call's arguments against it (T0410, T0411, T0412), before the call. */
  signature?: { definition: string; validate(args: unknown[], context: unknown): unknown[] };
}

/** The signatures JSONata gives the two (jsonata 2.x, staticFrame): arguments are checked before the call. */
export const CHECKED_SIGNATURES = { fromMillis: '<n-s?s?:s>', formatNumber: '<n-so?:s>', now: '<s?s?:s>', replace: '<s-(sf)(sf)n?:s>' } as const;

/** The furthest a JavaScript Date reaches either side of 1970 (ECMA-262 §21.4.1.1). */
const MAX_DATE_MS = 8.64e15;

/** A timezone as JSONata reads it (`parseInt`, then hours and minutes of ±HHMM). */
const TIMEZONE = /^[+-]?(\d\d)(\d\d)$/;

/** Why `$fromMillis(millis, _, timezone)` cannot be formatted, or undefined. */
export function fromMillisProblem(millis: number, timezone: string | undefined, fn = '$fromMillis'): string | undefined {
  let offsetMs = 0;
  if (timezone !== undefined) {
    const m = TIMEZONE.exec(timezone);
    if (!m || Number(m[2]) > 59) return `${fn}: the timezone ${JSON.stringify(timezone)} is not ±HHMM (e.g. "+0530", "-0800")`;
    if (timezone.startsWith('-') && m[1] === '00' && m[2] !== '00') return `${fn}: the timezone ${JSON.stringify(timezone)} (less than an hour behind UTC) cannot be formatted by JSONata`;
    offsetMs = Number.parseInt(timezone, 10) >= 0 ? (Number(m[1]) * 60 + Number(m[2])) * 60000 : -(Number(m[1]) * 60 + Number(m[2])) * 60000;
  }
  if (!Number.isFinite(millis)) return `$fromMillis cannot format ${millis}: not a finite number of milliseconds`;
  if (Math.abs(millis + offsetMs) > MAX_DATE_MS) {
    return `$fromMillis cannot format ${millis} milliseconds${offsetMs === 0 ? '' : ` in timezone ${timezone}`}: a date lies within ${MAX_DATE_MS} ms (about 273,790 years) of 1970`;
  }
  return undefined;
}

/**
 * The timezone as JSONata reads it right. It takes `-0530` as -530, hours Math.floor(-5.3) = -6 and
 * minutes -30: an hour off (17:30 -06:30 for 18:30 -05:30) in every zone behind UTC by hours and
 * minutes (Newfoundland's -0330, the Marquesas' -0930). -430 gives -5 and -30, what was meant.
 * fromMillisProblem has refused what this cannot write (-00MM).
 */
function jsonataTimezone(timezone: string): string {
  const m = TIMEZONE.exec(timezone);
  if (!m || !timezone.startsWith('-') || m[2] === '00') return timezone;
  return `-${String((Number(m[1]) - 1) * 100 + Number(m[2])).padStart(4, '0')}`;
}

/** Why `$formatNumber(value, picture)` cannot be formatted before the call (a number JSON cannot hold), or undefined. */
function formatNumberValueProblem(value: number): string | undefined {
  return Number.isFinite(value) ? undefined : `$formatNumber cannot format ${value}: not a finite number`;
}

/**
 * Whether JSONata's result is toFixed's exponent form: it writes the number without an exponent
 * part in the picture by toFixed, which gives `1e+300` for 1e21 and more (after a percent or
 * per-mille scaling, so checked from 1e18). Only that can put `e+` there in a number so large.
 */
function formatNumberResultProblem(value: number, result: unknown): string | undefined {
  if (Math.abs(value) < 1e18 || typeof result !== 'string' || !result.includes('e+')) return undefined;
  return `$formatNumber cannot format ${value} with a picture without an exponent (it would write ${JSON.stringify(result)}): numbers of 1e21 or more need one, e.g. "0.00e0"`;
}

/**
 * Why `$replace(str, pattern, replacement)` cannot be done, or undefined. A function gives the
 * replacement of a regex's matches; with a string pattern JSONata appends the replacement to the
 * text as it is, so a function's JavaScript source (JSONata's wrapper of a lambda) went out in
 * the message.
 */
export function replaceProblem(pattern: unknown, replacement: unknown): string | undefined {
  if (typeof pattern !== 'string' || typeof replacement !== 'function') return undefined;
  return `$replace: a function replacement needs a regex pattern (/.../), not the string ${JSON.stringify(pattern)}; give a string replacement, or the pattern as a regex`;
}

/** A run-time failure: JSONata keeps the message of a code it has no text for, and the evaluation fails. */
function failure(message: string): { code: string; message: string } {
  return { code: 'EG_FORMAT', message };
}

/** The two functions to register on each expression, calling JSONata's own after the checks. */
export function checkedFunctions(jsonata: JsonataFactory): {
  fromMillis: BuiltIn['implementation'];
  formatNumber: BuiltIn['implementation'];
  now: BuiltIn['implementation'];
  replace: BuiltIn['implementation'];
} {
  const format = function (this: unknown, fn: string, millis: unknown, picture: unknown, timezone: unknown): unknown {
    if (millis === undefined) return undefined;
    const problem = fromMillisProblem(millis as number, timezone as string | undefined, fn);
    if (problem) throw failure(problem);
    return builtIn(jsonata, 'fromMillis').implementation.call(this, millis, picture, timezone === undefined ? undefined : jsonataTimezone(timezone as string));
  };
  return {
    fromMillis(this: unknown, millis, picture, timezone) {
      return format.call(this, '$fromMillis', millis, picture, timezone);
    },
    // JSONata's $now is $fromMillis of the evaluation's time, which every frame of it carries.
    now(this: unknown, picture, timezone) {
      const at = (this as { environment?: { timestamp?: Date } } | undefined)?.environment?.timestamp ?? new Date();
      return format.call(this, '$now', at.getTime(), picture, timezone);
    },
    formatNumber(this: unknown, value, picture, options) {
      if (value === undefined) return undefined;
      const before = formatNumberValueProblem(value as number);
      if (before) throw failure(before);
      const result = builtIn(jsonata, 'formatNumber').implementation.call(this, value, picture, options);
      const after = formatNumberResultProblem(value as number, result);
      if (after) throw failure(after);
      return result;
    },
    replace(this: unknown, str, pattern, replacement, limit) {
      const problem = str === undefined ? undefined : replaceProblem(pattern, replacement);
      if (problem) throw failure(problem);
      return builtIn(jsonata, 'replace').implementation.call(this, str, pattern, replacement, limit);
    },
  };
}

export type JsonataFactory = (source: string, options: jsonataModule.JsonataOptions) => jsonataModule.Expression;

const EVALUATE_ENTRY = Symbol.for('jsonata.__evaluate_entry');
let builtIns: Map<string, BuiltIn> | undefined;

/**
 * JSONata's own function `name`. Its static frame is not exported; the frame of an evaluation
 * reaches it, and the entry hook is given that frame synchronously, before evaluate() first awaits.
 * `$now` and `$millis` are bound per expression, not in that frame: these are the probe's, whose
 * time stopped at its evaluation.
 */
export function builtIn(jsonata: JsonataFactory, name: string): BuiltIn {
  if (!builtIns) {
    const probe = jsonata('0', {});
    const found = new Map<string, BuiltIn>();
    probe.assign(EVALUATE_ENTRY as unknown as string, (_expr: unknown, _input: unknown, env: { lookup(n: string): unknown }) => {
      for (const n of BUILTIN_FUNCTIONS) found.set(n, env.lookup(n) as BuiltIn);
    });
    void probe.evaluate(null).catch(() => undefined);
    if (found.size !== BUILTIN_FUNCTIONS.size || [...found.values()].some((f) => typeof f?.implementation !== 'function')) throw new Error('jsonata: its built-in functions could not be found');
    builtIns = found;
  }
  return builtIns.get(name)!;
}

/** JSONata's texts of the picture errors the two raise (jsonata 2.x, errorCodes), which it does not export. */
const PICTURE_ERRORS: Record<string, string> = {
  D3080: 'The picture string must only contain a maximum of two sub-pictures',
  D3081: "The sub-picture must not contain more than one instance of the 'decimal-separator' character",
  D3082: "The sub-picture must not contain more than one instance of the 'percent' character",
  D3083: "The sub-picture must not contain more than one instance of the 'per-mille' character",
  D3084: "The sub-picture must not contain both a 'percent' and a 'per-mille' character",
  D3085: "The mantissa part of a sub-picture must contain at least one character that is either an 'optional digit character' or a member of the 'decimal digit family'",
  D3086: 'The sub-picture must not contain a passive character that is preceded by an active character and that is followed by another active character',
  D3087: "The sub-picture must not contain a 'grouping-separator' character that appears adjacent to a 'decimal-separator' character",
  D3088: "The sub-picture must not contain a 'grouping-separator' at the end of the integer part",
  D3089: "The sub-picture must not contain two adjacent instances of the 'grouping-separator' character",
  D3090: "The integer part of the sub-picture must not contain a member of the 'decimal digit family' that is followed by an instance of the 'optional digit character'",
  D3091: "The fractional part of the sub-picture must not contain an instance of the 'optional digit character' that is followed by a member of the 'decimal digit family'",
  D3092: "A sub-picture that contains a 'percent' or 'per-mille' character must not contain a character treated as an 'exponent-separator'",
  D3093: "The exponent part of the sub-picture must comprise only of one or more characters that are members of the 'decimal digit family'",
  D3130: 'Formatting or parsing an integer as a sequence starting with {{value}} is not supported by this implementation',
  D3131: 'In a decimal digit pattern, all digits must be from the same decimal group',
  D3132: 'Unknown component specifier {{value}} in date/time picture string',
  D3133: "The 'name' modifier can only be applied to months and days in the date/time picture string, not {{value}}",
  D3134: 'The timezone integer format specifier cannot have more than four digits',
  D3135: "No matching closing bracket ']' in date/time picture string",
};

export interface AstNode {
  type?: string;
  value?: unknown;
  position?: number;
  procedure?: AstNode;
  arguments?: AstNode[];
  [k: string]: unknown;
}

/**
 * The keys a literal written as an argument has when it evaluates to what it writes out. Any other
 * (a predicate `["a", "b"][i]`, `"x"[false]`, a grouping `{...}{...}`, a binding `[...]@$v`, `[]`)
 * makes its value another one, which only run time knows.
 */
const OWN_VALUE_KEYS = new Set(['type', 'value', 'position', 'expressions', 'lhs', 'arguments', 'body', 'signature', 'thunk']);

/** Whether the literal `node` evaluates to what it writes out (nothing after it filters, groups or binds it). */
export function isOwnValue(node: AstNode): boolean {
  return Object.keys(node).every((k) => OWN_VALUE_KEYS.has(k) || node[k] === undefined);
}

/** `node` when it is a literal of `type` whose value is its own (isOwnValue), else undefined. */
function literalOf(node: AstNode | undefined, type: 'string' | 'number'): AstNode | undefined {
  return node?.type === type && isOwnValue(node) ? node : undefined;
}

export interface LiteralProblem {
  /** 0-based index of the literal in the expression text. */
  index: number;
  message: string;
}

/**
 * A call of `$fromMillis` or `$formatNumber` whose literal arguments can never be formatted
 * (`$fromMillis(1e20)`, a picture JSONata refuses, a timezone that is not ±HHMM): every message
 * would fail there. Unless the expression binds a function of that name itself.
 */
export function literalCallProblems(jsonata: JsonataFactory, source: string, ast: unknown, rebound: ReadonlySet<string>): LiteralProblem | undefined {
  const stack = [ast];
  while (stack.length > 0) {
    const n = stack.pop() as AstNode | null | undefined;
    if (n === null || typeof n !== 'object') continue;
    if (n.type === 'function' && n.procedure?.type === 'variable' && Array.isArray(n.arguments)) {
      const name = n.procedure.value;
      const found =
        name === 'fromMillis' && !rebound.has(name)
          ? fromMillisLiterals(jsonata, source, n.arguments)
          : name === 'now' && !rebound.has(name)
            ? fromMillisLiterals(jsonata, source, [{ type: 'number', value: 0 }, ...n.arguments], '$now')
            : name === 'formatNumber' && !rebound.has(name)
              ? formatNumberLiterals(jsonata, source, n.arguments)
              : undefined;
      if (found) return found;
    }
    for (const v of Object.values(n)) if (v !== null && typeof v === 'object') stack.push(v);
  }
  return undefined;
}

function fromMillisLiterals(jsonata: JsonataFactory, source: string, args: AstNode[], fn = '$fromMillis'): LiteralProblem | undefined {
  const millis = literalOf(args[0], 'number');
  const picture = literalOf(args[1], 'string');
  const timezone = literalOf(args[2], 'string');
  const tz = timezone?.value as string | undefined;
  if (timezone) {
    const problem = fromMillisProblem(0, tz, fn);
    if (problem) return { index: literalStart(source, timezone), message: problem };
  }
  if (millis) {
    const problem = fromMillisProblem(millis.value as number, tz);
    if (problem) return { index: literalStart(source, millis), message: problem };
  }
  if (picture) {
    const problem = pictureProblem(() => builtIn(jsonata, 'fromMillis').implementation(0, picture.value, undefined), fn, picture.value as string);
    if (problem) return { index: literalStart(source, picture), message: problem };
  }
  return undefined;
}

function formatNumberLiterals(jsonata: JsonataFactory, source: string, args: AstNode[]): LiteralProblem | undefined {
  const optionsNode = args[2];
  const value = literalOf(args[0], 'number');
  const picture = literalOf(args[1], 'string');
  if (!picture) return undefined;
  // The separators an options object sets change what the picture means: checked with them when
  // it is written out (string keys and values), left to run time when computed.
  const options = optionsNode === undefined ? undefined : literalStringObject(optionsNode);
  if (options === null) return undefined;
  const format = builtIn(jsonata, 'formatNumber').implementation;
  const problem = pictureProblem(() => format(0, picture.value, options), '$formatNumber', picture.value as string, options ? ' with the options given' : '');
  if (problem) return { index: literalStart(source, picture), message: problem };
  if (value) {
    const after = formatNumberResultProblem(value.value as number, format(value.value, picture.value, options));
    if (after) return { index: literalStart(source, value), message: after };
  }
  return undefined;
}

/** An object constructor whose keys and values are all string literals (`{"decimal-separator": ","}`) as the object it builds; null otherwise. */
function literalStringObject(node: AstNode): Record<string, string> | null {
  if (node.type !== 'unary' || node.value !== '{' || !Array.isArray(node.lhs) || !isOwnValue(node)) return null;
  const object: Record<string, string> = {};
  for (const pair of node.lhs as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2) return null;
    const [k, v] = pair as AstNode[];
    if (!literalOf(k, 'string') || !literalOf(v, 'string')) return null;
    object[k.value as string] = v.value as string;
  }
  return object;
}

/** JSONata's own error for a picture it cannot use, in its words, or undefined. */
function pictureProblem(call: () => unknown, fn: string, picture: string, given = ''): string | undefined {
  try {
    call();
    return undefined;
  } catch (err) {
    const e = err as { code?: string; value?: unknown; message?: string };
    const text = (e.code && PICTURE_ERRORS[e.code]?.replace('{{value}}', JSON.stringify(e.value))) ?? e.message ?? String(err);
    return `${fn}'s picture ${JSON.stringify(picture)} cannot be used${given}: ${text}${e.code ? ` (${e.code})` : ''}`;
  }
}

/**
 * Where a string or number literal starts: JSONata's position is just past its token. A string is
 * found back to its opening quote (one not escaped), a number over the characters one is written with.
 */
export function literalStart(source: string, node: AstNode): number {
  const end = Math.min(source.length, node.position ?? 0);
  if (node.type === 'string') {
    const quote = source[end - 1];
    for (let i = end - 2; i >= 0; i--) {
      if (source[i] !== quote) continue;
      let slashes = 0;
      while (i - 1 - slashes >= 0 && source[i - 1 - slashes] === '\\') slashes++;
      if (slashes % 2 === 0) return i;
    }
    return Math.max(0, end - 1);
  }
  let i = end;
  while (i > 0 && /[0-9.eE+-]/.test(source[i - 1]!)) i--;
  return i;
}
