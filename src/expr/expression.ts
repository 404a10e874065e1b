import type jsonataModule from 'jsonata';
import { compileFastPath, FALLBACK } from './fast-path.js';
import { boundNames, SIFT_NEEDS_FUNCTION, siftWithoutFunction, unknownFunctionCalls, unknownVariables, type VariableRead, variableReads, wrongArgumentCounts } from './functions.js';
import { calledBuiltIns, literalArgumentTypeProblem, withArgumentRefusals } from './argument-types.js';
import { type AstNode, type BuiltIn, builtIn, CHECKED_SIGNATURES, checkedFunctions, isOwnValue, literalCallProblems, literalStart } from './checked-functions.js';
import { EVAL_SIGNATURE, evalOnce } from './eval-once.js';
import { type InputField, inputFields, type MissingFieldComparison, missingFieldComparisons } from './input-fields.js';
import { compileLinear, DEFAULT_MAX_REGEX_INPUT, linearRegexEngine, regexLiterals } from './regex.js';
import { type Problem, problem } from '../core/errors.js';
import type { Message, MessageContext } from '../core/message.js';
import { attributesOf, CE_SPECVERSION } from '../codecs/cloudevents.js';
import { approxValueBytes, sizeText } from '../core/heap-size.js';
import { boundedRange, boundRanges, namesEval, oversizedRange, RANGE_FUNCTION, rangeToCall } from './range.js';
import { concatOperandsToText, concatToText, TEXT_FUNCTION, timeBoxedText } from './bytes-text.js';
import { bundled } from '../core/bundled.js';

/** Bounds applied to every evaluation so one runaway expression fails only its own message. */
export interface ExpressionLimits {
  timeoutMs: number;
  maxDepth: number;
  /** Longest string one regex call searches (regex.ts); absent: DEFAULT_MAX_REGEX_INPUT. */
  maxRegexInput?: number;
  /** Largest result (estimated heap bytes, heap-size.ts) an evaluation may make; absent: DEFAULT_MAX_RESULT_BYTES. */
  maxResultBytes?: number;
}

/**
 * 16 MiB: twice an HTTP listener's default `maxParsedBytes`. One built-in call can make a value no
 * time box stops (`$pad("", 500000000)` takes 0.2 s), and sending one froze the gateway.
 */
export const DEFAULT_MAX_RESULT_BYTES = 16 * 1024 * 1024;

export const defaultExpressionLimits: ExpressionLimits = { timeoutMs: 1000, maxDepth: 500, maxRegexInput: DEFAULT_MAX_REGEX_INPUT, maxResultBytes: DEFAULT_MAX_RESULT_BYTES };

/**
 * jsonata (its source held in the heap with its compiled code for as long as the process runs)
 * is loaded when the first expression is compiled, so a config without expressions never holds it
 * (docs/performance.md, idle memory). It loads from its bundle with V8's code cache
 * (src/core/bundled.ts): ~120 KB of source and ~3.5 ms of CPU, where the package's file is ~300 KB
 * and took ~9 ms.
 */
let jsonataLoaded: typeof jsonataModule | undefined;
function jsonata(source: string, options: jsonataModule.JsonataOptions): jsonataModule.Expression {
  jsonataLoaded ??= bundled<typeof jsonataModule>('jsonata');
  return jsonataLoaded(source, options);
}

/** $fromMillis and $formatNumber with their inputs checked (checked-functions.ts), made once. */
let checkedNow: ReturnType<typeof checkedFunctions> | undefined;
let ownEval: ReturnType<typeof evalOnce> | undefined;

/** evaluateSync's answer when the expression needs JSONata's (asynchronous) evaluator for this input. */
export const NOT_SYNC: unique symbol = Symbol('needs the asynchronous evaluator');

/**
 * How long one evaluation may hold the event loop before it lets other work run. jsonata's own
 * guardrails (timeout, stack depth) throw eventually, but its evaluator only awaits values that
 * are already resolved, so a runaway expression runs in one unbroken chain of microtasks: no
 * socket is read and no timer fires until it ends. Yielding a macrotask every slice keeps the
 * rest of the gateway answering while the time box runs out.
 */
const SLICE_MS = 10;
/** Checking the clock on every evaluation step would cost more than the steps themselves. */
const CHECK_EVERY = 64;
/** jsonata calls (and awaits) a function bound under this symbol on entry to every evaluation step. */
const EVALUATE_ENTRY = Symbol.for('jsonata.__evaluate_entry');

/** A JSONata expression compiled once per config load. */
export interface Expression {
  readonly source: string;
  /** JSONata's result; rejects with ExpressionEvaluationError. */
  evaluate(input: unknown, bindings: Record<string, unknown>): Promise<unknown>;
  /**
   * The same result computed synchronously, when the expression is one of the trivial shapes that
   * have a fast path (see fast-path.ts) and the input fits it; otherwise NOT_SYNC, and the caller
   * uses evaluate(). Never throws.
   */
  evaluateSync(input: unknown, bindings: Record<string, unknown>): unknown;
  /**
   * Whether the expression names any variable (`$headers`, `$path`, a function such as `$string`):
   * one that does not computes the same result with no bindings at all (evaluateNow).
   */
  readonly readsVariables: boolean;
  /** The fields of its input it reads by name at the top (input-fields.ts), with where each is written. */
  readonly inputFields: readonly InputField[];
  /** Its `field != literal` comparisons that a message without the field makes false (input-fields.ts), for src/plan/field-reads.ts. */
  readonly missingFieldComparisons: readonly MissingFieldComparison[];
  /** Where it reads the variables only some places bind (PLACE_VARIABLES: `$principal`, `$path.room`), for src/plan/variable-reads.ts. */
  readonly placeReads: readonly VariableRead[];
  /** Where it reads a header by name (`$headers."x-tenant"`: `member` is the name), for src/plan/header-reads.ts. */
  readonly headerReads: readonly VariableRead[];
  /**
   * The expression and its config line (`expression "v" at gateway.yaml:12`), for the log of a
   * message failed for what the expression gave (no value, not a topic) rather than by an error in it.
   */
  readonly where: string;
}

export class ExpressionSyntaxError extends Error {
  constructor(
    message: string,
    readonly position: number,
  ) {
    super(message);
  }
}

/**
 * `message` says what went wrong with this message and is safe to answer a client with; `where`
 * names the expression and its config line, which belong in the log, not in a client's answer.
 */
export class ExpressionEvaluationError extends Error {
  constructor(
    readonly source: string,
    message: string,
    readonly code: string | undefined,
    readonly where = '',
  ) {
    super(message);
  }
}

interface JsonataError {
  code?: string;
  position?: number;
  message?: string;
  token?: string;
}

/** The variables bindingsFor() gives every expression: calling one is not a call to an unknown function. */
export const GATEWAY_VARIABLES = ['key', 'headers', 'topic', 'route', 'path', 'query', 'principal', 'claims', 'message', 'channel', 'ce'] as const;

/**
 * The variables only some places bind: `$principal` and `$claims` after an `auth` step,
 * `$message` and `$channel` after a validate step naming an AsyncAPI message or channel, `$path`
 * and `$query` on routes from a request path (an http or websocket listener), `$key` on routes
 * from anything but one; elsewhere they have no value.
 */
export const PLACE_VARIABLES = ['principal', 'claims', 'message', 'channel', 'path', 'query'] as const;
const HEADERS = ['headers'] as const;

/**
 * Where an expression is written: `gateway.yaml:33`, or a function that gives that with no
 * argument and, given an index of the source, the line and column of that character
 * (`gateway.yaml:35:9`), as a compile error is placed.
 */
export type ExpressionOrigin = string | ((index?: number) => string);

/**
 * `origin` says where the expression is written: a run-time failure names it and the expression,
 * so the log line leads to the config line; to the line inside the expression that failed when
 * JSONata says where (its errors' `position`) and `origin` can place an index.
 */
export function compileExpression(source: string, limits: ExpressionLimits = defaultExpressionLimits, origin?: ExpressionOrigin): Expression {
  try {
    return compileChecked(source, limits, origin);
  } catch (err) {
    // JSONata's parser and the checks here walk the tree recursively: an expression nested
    // thousands deep (`1+1+...`, `((((...))))`) runs JavaScript out of stack in one of them, which
    // said only "Maximum call stack size exceeded", with no place when the checks ran out. It
    // would fail every message past expressions.maxDepth.
    if (outOfStack(err)) throw new ExpressionSyntaxError(TOO_DEEP, 0);
    throw err;
  }
}

/**
 * The built-ins JSONata binds per expression, reading that expression's evaluation time:
 * builtIn's are a probe expression's, whose time stopped at the probe's one evaluation (`$millis()`
 * wrapped with them gave the same number for ever). `$now` is the gateway's own (checkedFunctions).
 */
const BOUND_PER_EXPRESSION: ReadonlySet<string> = new Set(['millis', 'now']);

function outOfStack(err: unknown): boolean {
  return err instanceof RangeError && err.message === 'Maximum call stack size exceeded';
}

const TOO_DEEP = 'the expression nests too deeply to be read (JavaScript ran out of stack): write it flatter, or bind parts to variables with :=';

/**
 * JavaScript's `==`, `&&`, `||` and `!` where JSONata's parser stopped: what a newcomer writes
 * first, and JSONata's words for them ("cannot be used as a unary operator") do not say so.
 */
function javascriptOperatorHint(source: string, position: number): string {
  const near = source.slice(Math.max(0, position - 2), position + 2);
  if (near.includes('==')) return ' (JSONata compares with one =: `lumens = 0`; != is not equal)';
  if (near.includes('&&')) return ' (JSONata\'s "and" is the word: `a > 0 and b > 0`; & joins strings)';
  if (near.includes('||')) return ' (JSONata\'s "or" is the word: `a > 0 or b > 0`)';
  if (/!(?!=)/.test(near)) return ' (JSONata negates with $not(...): `$not(bright)`; != is not equal)';
  return '';
}

function compileChecked(source: string, limits: ExpressionLimits, origin: ExpressionOrigin | undefined): Expression {
  let compiled: jsonataModule.Expression;
  try {
    // Regexes run on RE2 (linear time), never on the backtracking RegExp (regex.ts).
    const RegexEngine = linearRegexEngine(limits.maxRegexInput ?? DEFAULT_MAX_REGEX_INPUT);
    // The time box is the entry hook's (yieldingEntry), not jsonata's `timeout`: that one is wall
    // time from the start, which counts the time the evaluation waits for its turn.
    compiled = jsonata(source, { stack: limits.maxDepth, RegexEngine } as jsonataModule.JsonataOptions);
  } catch (err) {
    if (outOfStack(err)) throw err; // said by compileExpression
    const e = err as JsonataError;
    const position = Math.max(0, (e.position ?? 1) - 1);
    throw new ExpressionSyntaxError(`${e.message ?? String(err)}${javascriptOperatorHint(source, position)}`, position);
  }
  const maxResultBytes = limits.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES;
  checkTree(source, compiled.ast(), GATEWAY_VARIABLES, maxResultBytes, limits);
  const fast = compileFastPath(compiled.ast());
  const readsVariables = hasVariable(compiled.ast());
  const fields = inputFields(source, compiled.ast() as AstNode);
  const comparisons = missingFieldComparisons(source, compiled.ast() as AstNode);
  // Ranges are held to maxResultBytes before they are made (range.ts), once the checks above have
  // read the AST as JSONata wrote it; an expression without `..` or `$eval` is left as it was.
  const ranges = boundRanges(compiled.ast());
  // `&` reads bytes as base64, as $string does (bytes-text.ts); after the fast path, which leaves bytes to JSONata.
  const bound = boundNames(compiled.ast(), []);
  const concats = concatOperandsToText(compiled.ast(), bound);
  const evals = namesEval(compiled.ast());
  if (ranges || evals) compiled.registerFunction(RANGE_FUNCTION, boundedRange(maxResultBytes));
  const text = timeBoxedText(limits.timeoutMs);
  if (concats || evals) compiled.registerFunction(TEXT_FUNCTION, text.text);
  const entry = yieldingEntry(limits.timeoutMs);
  // `$eval` parses its text when it runs: its ranges and `&`s are changed as each node is entered.
  compiled.assign(EVALUATE_ENTRY as unknown as string, evals ? (expr: object, input: unknown, env: { base: object }) => (rangeToCall(expr), concatToText(expr), entry(expr, input, env)) : entry);
  const pad = boundedPad(maxResultBytes) as BuiltIn['implementation'];
  compiled.registerFunction('pad', pad, '<s-ns?:s>');
  compiled.registerFunction('string', text.string, '<x-b?:s>');
  checkedNow ??= checkedFunctions(jsonata);
  compiled.registerFunction('fromMillis', checkedNow.fromMillis, CHECKED_SIGNATURES.fromMillis);
  compiled.registerFunction('formatNumber', checkedNow.formatNumber, CHECKED_SIGNATURES.formatNumber);
  compiled.registerFunction('now', checkedNow.now, CHECKED_SIGNATURES.now);
  // Bound for every expression, as the three above, so that the text a `$eval` runs calls it too.
  compiled.registerFunction('replace', checkedNow.replace, CHECKED_SIGNATURES.replace);
  if (evals) compiled.registerFunction('eval', (ownEval ??= evalOnce(jsonata)), EVAL_SIGNATURE);
  // The built-ins it calls name the argument a message got wrong (argument-types.ts). The gateway's
  // own above have JSONata's signatures, so theirs are JSONata's too.
  const own: Record<string, BuiltIn['implementation']> = { pad, string: text.string as BuiltIn['implementation'], ...checkedNow, ...(evals ? { eval: ownEval! } : {}) };
  for (const name of calledBuiltIns(compiled.ast(), bound)) {
    if (BOUND_PER_EXPRESSION.has(name) && !own[name]) continue;
    const { implementation, signature } = builtIn(jsonata, name);
    if (signature) compiled.assign(name, withArgumentRefusals(name, own[name] ?? implementation, signature));
  }
  const failedAt = failurePlaces(source, origin);
  const where = failedAt(undefined);
  return {
    source,
    readsVariables,
    inputFields: fields,
    missingFieldComparisons: comparisons,
    placeReads: variableReads(compiled.ast(), PLACE_VARIABLES),
    headerReads: variableReads(compiled.ast(), HEADERS).filter((r) => r.member !== undefined),
    where,
    evaluateSync: fast
      ? (input, bindings) => {
          const v = fast(input, bindings);
          return v === FALLBACK ? NOT_SYNC : v;
        }
      : () => NOT_SYNC,
    async evaluate(input, bindings) {
      if (fast) {
        const v = fast(input, bindings);
        if (v !== FALLBACK) return v;
      }
      let result: unknown;
      try {
        result = await compiled.evaluate(input, bindings);
      } catch (err) {
        const e = err as JsonataError;
        throw new ExpressionEvaluationError(source, atMost(describeFailure(e, limits), MAX_FAILURE_TEXT), e.code, failedAt(e.position));
      }
      // The fast path only passes on parts of its input, which is JSON; JSONata can make more.
      const notJson = nonJsonPart(result);
      if (notJson !== undefined) throw new ExpressionEvaluationError(source, `the result is not JSON: it holds ${notJson}`, undefined, where);
      // The fast path's results are parts of its input, bounded by the listener's limits; JSONata's can be any size.
      const bytes = approxValueBytes(result);
      if (bytes > maxResultBytes) {
        throw new ExpressionEvaluationError(
          source,
          `the result is too large: about ${sizeText(bytes)} in memory, more than expressions.maxResultBytes (${sizeText(maxResultBytes)})`,
          undefined,
          where,
        );
      }
      return result;
    },
  };
}

/**
 * What validate refuses in a parsed expression, at its index in `source`: a regex RE2 cannot run,
 * an unknown function or variable (`known`: the gateway's variables, and for the text of an
 * `$eval` also what the expression around it binds), a `$sift` without its function, a literal
 * range too large, a literal `$fromMillis`/`$formatNumber` argument that can never be formatted,
 * and the same inside the string literal an `$eval` is given (evalLiterals).
 */
function checkTree(source: string, ast: unknown, known: readonly string[], maxResultBytes: number, limits: ExpressionLimits): void {
  for (const { re, position } of regexLiterals(ast)) {
    try {
      compileLinear(re);
    } catch (err) {
      throw new ExpressionSyntaxError(
        `regular expression /${re.source}/ cannot run in linear time (${(err as Error).message}); backreferences and lookaround are not supported`,
        regexStart(source, re, position),
      );
    }
  }
  const unknown = unknownFunctionCalls(ast, known);
  if (unknown.length > 0) throw new ExpressionSyntaxError(unknown[0]!.message, unknown[0]!.index);
  const unbound = unknownVariables(ast, known);
  if (unbound.length > 0) throw new ExpressionSyntaxError(unbound[0]!.message, unbound[0]!.index);
  const counts = wrongArgumentCounts(ast, known);
  if (counts.length > 0) throw new ExpressionSyntaxError(counts[0]!.message, counts[0]!.index);
  const sift = siftWithoutFunction(ast);
  if (sift) throw new ExpressionSyntaxError(sift.message, sift.index);
  const range = oversizedRange(ast, maxResultBytes);
  if (range) throw new ExpressionSyntaxError(range.message, range.index);
  const bound = boundNames(ast, known);
  const literal = literalCallProblems(jsonata, source, ast, bound);
  if (literal) throw new ExpressionSyntaxError(literal.message, literal.index);
  const typed = literalArgumentTypeProblem(jsonata, source, ast, bound);
  if (typed) throw new ExpressionSyntaxError(typed.message, typed.index);
  evalLiterals(source, ast, [...bound], maxResultBytes, limits);
}

/**
 * The text of each `$eval("...")` given a string literal, compiled and checked as the expression
 * is: JSONata parses it only when a message reaches the call, so `$eval("$fo(1)")` or a syntax
 * error in it failed every message instead of the config. Errors point into the literal when it
 * is written without escapes (an index of its text is then one of the source), else at its quote.
 * The text sees what the expression binds around it, so those names are known inside.
 */
function evalLiterals(source: string, ast: unknown, known: string[], maxResultBytes: number, limits: ExpressionLimits): void {
  if (known.includes('eval')) return;
  const stack = [ast];
  while (stack.length > 0) {
    const n = stack.pop() as { type?: string; procedure?: { type?: string; value?: unknown }; arguments?: { type?: string; value?: unknown; position?: number }[] } | null;
    if (n === null || typeof n !== 'object') continue;
    const text = n.arguments?.[0];
    if (n.type === 'function' && n.procedure?.type === 'variable' && n.procedure.value === 'eval' && text?.type === 'string' && typeof text.value === 'string' && isOwnValue(text)) {
      const start = literalStart(source, text);
      const exact = source.slice(start + 1, start + 1 + text.value.length) === text.value && source[start + 1 + text.value.length] === source[start];
      const at = (index: number) => (exact ? start + 1 + index : start);
      let inner: jsonataModule.Expression;
      try {
        inner = jsonata(text.value, { RegexEngine: linearRegexEngine(limits.maxRegexInput ?? DEFAULT_MAX_REGEX_INPUT) } as jsonataModule.JsonataOptions);
      } catch (err) {
        const e = err as JsonataError;
        throw new ExpressionSyntaxError(`in the text $eval is given: ${e.message ?? String(err)}`, at(Math.max(0, (e.position ?? 1) - 1)));
      }
      try {
        checkTree(text.value, inner.ast(), known, maxResultBytes, limits);
      } catch (err) {
        if (!(err instanceof ExpressionSyntaxError)) throw err;
        throw new ExpressionSyntaxError(`in the text $eval is given: ${err.message}`, at(err.position));
      }
    }
    for (const v of Object.values(n)) if (v !== null && typeof v === 'object') stack.push(v);
  }
}

/**
 * Where a regex literal starts in the expression: JSONata's position is the end of its token
 * (past its flags), and an error pointed there, at the literal's last character. JSONata adds the
 * `g` flag to each literal; `i` and `m` are the flags it can be written with.
 */
function regexStart(source: string, re: RegExp, end: number): number {
  const start = end - re.flags.replace('g', '').length - re.source.length - 2;
  return start >= 0 && source[start] === '/' ? start : Math.max(0, end - 1);
}

/**
 * JSONata's `$pad`, bounded: a width past expressions.maxResultBytes fails before the string is
 * made. JSONata's own made it whatever the width, and with a padding of more than one character
 * cut it to length through an array of one string per character: `$pad("", 100000000, "ab")`
 * ran a 4 GB heap out of memory and the process died, which the result's size check came too late
 * for. Otherwise as JSONata's (jsonata 2.x, functions.js pad): widths and lengths in code points.
 */
function boundedPad(maxResultBytes: number): (str: string | undefined, width: number, char?: string) => string | undefined {
  return (str, width, char) => {
    if (str === undefined) return undefined;
    const fill = char === undefined || char.length === 0 ? ' ' : char;
    const w = Math.trunc(width);
    const padLength = Math.abs(w) - codePoints(str);
    if (!(padLength > 0)) return str;
    // 2 bytes per character, as the result's size is estimated.
    if ((padLength + str.length) * 2 > maxResultBytes) {
      throw { code: 'EG_PAD', message: `$pad to a width of ${w} would make a string larger than expressions.maxResultBytes (${sizeText(maxResultBytes)})` };
    }
    const repeated = fill.repeat(Math.ceil(padLength / codePoints(fill)));
    const padding = !/[\uD800-\uDFFF]/.test(repeated) ? repeated.slice(0, padLength) : Array.from(repeated).slice(0, padLength).join('');
    return w > 0 ? str + padding : padding + str;
  };
}

function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/**
 * What in an expression's result JSON cannot hold, or undefined: a function (`$uppercase`
 * without its call, a regex, a lambda, whose closure would also make the value cyclic) or a
 * number that is not finite (`total / count` with a count of 0 is Infinity, which JSON would
 * silently write as null). Iterative, and never enters a function, so it ends on any result.
 */
export function nonJsonPart(result: unknown): string | undefined {
  if (result === null || (typeof result !== 'object' && typeof result !== 'function' && typeof result !== 'number')) return undefined;
  // Scalars are checked where they are found, only containers go on the stack; paths are made
  // only for a result that has something to report.
  const stack: [unknown, string][] = [[result, '']];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const [v, at] = next;
    const bad = notJsonScalar(v);
    if (bad !== undefined) return `${bad} at ${at || '/'}`;
    if (v === null || typeof v !== 'object' || Buffer.isBuffer(v)) continue;
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) {
        const x: unknown = v[i];
        if (x !== null && typeof x === 'object') stack.push([x, `${at}/${i}`]);
        else if (notJsonScalar(x) !== undefined) return `${notJsonScalar(x)} at ${at}/${i}`;
      }
    } else {
      const o = v as Record<string, unknown>;
      for (const k in o) {
        const x = o[k];
        if (x !== null && typeof x === 'object') stack.push([x, `${at}/${k}`]);
        else if (notJsonScalar(x) !== undefined) return `${notJsonScalar(x)} at ${at}/${k}`;
      }
    }
  }
  return undefined;
}

/** What a value is that JSON cannot hold (`a function`, `Infinity`), or undefined; containers other than function values pass. */
function notJsonScalar(v: unknown): string | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? undefined : String(v);
  if (typeof v === 'function') return 'a function';
  if (typeof v === 'object' && v !== null && ((v as JsonataFunction)._jsonata_function || (v as JsonataFunction)._jsonata_lambda)) return 'a function';
  return undefined;
}

/** How JSONata marks its function values (a native function's wrapper, a lambda with its closure). */
interface JsonataFunction {
  _jsonata_function?: boolean;
  _jsonata_lambda?: boolean;
}

/** The 500 answered for a failed expression: what failed for the client, where in the config for the log. */
export function expressionProblem(what: string, err: ExpressionEvaluationError): Problem {
  return problem('EG_EXPRESSION_FAILED', `${what} failed: ${err.message}`, err.where ? { logDetail: err.where } : {});
}

/** The 500 for a message an expression gave an unusable result for (`detail` says what), naming the expression in the log. */
export function expressionResultProblem(expr: Expression, detail: string): Problem {
  return problem('EG_EXPRESSION_FAILED', detail, { logDetail: expr.where });
}

/**
 * The entry hook that makes evaluation cooperative, and the time box (`expressions.timeoutMs`).
 * `env.base` is the frame of one evaluation, so concurrent evaluations of the same expression keep
 * separate slices and counts. The box counts the evaluation's slices, from each resumption to its
 * yield, not the time it waits for its turn: jsonata's own timeout (wall time from the start)
 * failed evaluations of a few microseconds' work while the event loop was busy elsewhere (a
 * gateway starting on a loaded machine, with 16 messages in hand; spec-checklist 526).
 */
function yieldingEntry(timeoutMs: number): (expr: unknown, input: unknown, env: { base: object }) => Promise<void> | undefined {
  const slices = new WeakMap<object, { counted: number; since: number }>();
  let calls = 0;
  return (_expr, _input, env) => {
    if (++calls % CHECK_EVERY !== 0) return undefined;
    const now = performance.now();
    const slice = slices.get(env.base);
    if (slice === undefined) {
      slices.set(env.base, { counted: 0, since: now });
      return undefined;
    }
    const ran = now - slice.since;
    // jsonata's own code for it: describeFailure() words it, and populateMessage() fills its message.
    if (timeoutMs > 0 && slice.counted + ran > timeoutMs) throw { code: 'D1012', value: timeoutMs, stack: new Error().stack };
    if (ran < SLICE_MS) return undefined;
    slice.counted += ran;
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        slice.since = performance.now();
        resolve();
      }),
    );
  };
}

/**
 * The longest failure text kept: `$error("bad order: " & $string($))` wrote the whole body into the
 * 500's detail, the log line and a dead-letter's `_eventgate_error` (a header, which brokers bound:
 * MQTT at 64 KiB). A longer one is cut, saying how much was left out.
 */
const MAX_FAILURE_TEXT = 1024;

function atMost(text: string, max: number): string {
  if (text.length <= max) return text;
  // Not inside a surrogate pair: the text goes out as JSON and in headers.
  const end = /[\uD800-\uDBFF]/.test(text[max - 1]!) ? max - 1 : max;
  return `${text.slice(0, end)}... (${text.length - end} more characters)`;
}

function describeFailure(e: JsonataError, limits: ExpressionLimits): string {
  // A failure inside the text `$eval` was given, in the words the same failure gets outside it:
  // JSONata's wrapper writes the inner message as JSON, in its own words for the time box and depth.
  const inner = (e as { error?: JsonataError }).error;
  if (e.code === 'D3121' && inner) return `the text given to $eval failed: ${describeFailure(inner, limits)}`;
  if (e.code === 'D3120' && inner) return `the text given to $eval does not compile: ${outOfStack(inner) ? TOO_DEEP : (inner.message ?? String(inner))}`;
  const refusedArgument = (e as { refusedArgument?: string }).refusedArgument;
  if (refusedArgument !== undefined) return refusedArgument; // withArgumentRefusals
  if (e.code === 'D1012') return `expression ran longer than ${limits.timeoutMs} ms and was stopped`;
  if (e.code === 'D1011') return `expression recursed deeper than ${limits.maxDepth} levels and was stopped`;
  // JSONata writes the number into its message as JSON does, so Infinity read "Number out of range: null".
  if (e.code === 'D1001') return `Number out of range: ${String((e as { value?: unknown }).value)} (a division by zero?)`;
  if (e.code === 'U1001') return 'expression recursed too deeply and was stopped';
  // V8's own bound on a string (about 512 Mi characters), not the stack's.
  if (e instanceof RangeError && /Invalid string length/.test(e.message)) return 'expression made a string longer than JavaScript can hold and was stopped';
  if (e instanceof RangeError) return 'expression recursed too deeply and was stopped';
  // JSONata's $sift is the one built-in whose function is optional in its signature; given none at
  // run time (`$sift(obj)`, `obj ~> $sift`: the config check sees only the calls that can never
  // have one) it reads the missing function's arity: say what siftWithoutFunction says.
  if (e instanceof TypeError && e.message?.includes("(reading 'arity')")) return `${SIFT_NEEDS_FUNCTION} (it was given none)`;
  return e.message ?? String(e);
}

/**
 * Evaluates and maps the result with `then` (or an evaluation error with `failed`): synchronously
 * when the expression has a fast path for this input, so a chain of trivial steps costs no
 * microtask; otherwise through jsonata's asynchronous evaluate().
 */
export function evaluateThen<R>(expr: Expression, input: unknown, bindings: Record<string, unknown>, then: (value: unknown) => R, failed: (err: ExpressionEvaluationError) => R): R | Promise<R> {
  const v = expr.evaluateSync(input, bindings);
  if (v !== NOT_SYNC) return then(v);
  return expr.evaluate(input, bindings).then(then, failed);
}

/** What evaluateNow passes an expression that reads no variable. */
const NO_BINDINGS: Record<string, unknown> = Object.freeze({});

/**
 * evaluateSync on a message, with the bindings built only when the expression reads one: the
 * common `lumens > 0` or `{"lux": lumens}` costs no bindings object (eleven properties) per message.
 * NOT_SYNC when JSONata has to evaluate it (with bindingsFor).
 */
export function evaluateNow(expr: Expression, msg: Message, ctx: MessageContext): unknown {
  return expr.evaluateSync(msg.value, expr.readsVariables ? bindingsFor(msg, ctx) : NO_BINDINGS);
}

/**
 * The `where` of a failure at a JSONata error's `position` (1-based, just past the token that
 * failed; undefined when JSONata does not say): the expression and the line and column in the
 * config of that token, else the line of its key. Placed when a failure needs it (placing every
 * node when compiled made a large expression take minutes to load), each place once.
 */
function failurePlaces(source: string, origin: ExpressionOrigin | undefined): (position: number | undefined) => string {
  const named = `expression ${JSON.stringify(source.length > 60 ? `${source.slice(0, 57)}...` : source)}`;
  const whole = origin === undefined ? named : `${named} at ${typeof origin === 'function' ? origin() : origin}`;
  if (typeof origin !== 'function') return () => whole;
  const placed = new Map<number, string>();
  return (position) => {
    if (position === undefined || !Number.isInteger(position) || position < 1 || position > source.length) return whole;
    let where = placed.get(position);
    if (where === undefined) placed.set(position, (where = `${named} at ${origin(position - 1)}`));
    return where;
  };
}

/** Whether a JSONata AST has a variable node anywhere (a function call's name is one too). */
function hasVariable(node: unknown): boolean {
  if (Array.isArray(node)) return node.some(hasVariable);
  if (node === null || typeof node !== 'object') return false;
  if ((node as { type?: unknown }).type === 'variable') return true;
  return Object.values(node).some(hasVariable);
}

/** The variables every expression sees (spec §3), and the identity an auth step established. */
export function bindingsFor(msg: Message, ctx: MessageContext): Record<string, unknown> {
  return {
    key: msg.key,
    headers: msg.headers,
    topic: msg.topic,
    route: ctx.route,
    path: ctx.path ?? {},
    query: ctx.query ?? {},
    principal: ctx.identity?.principal,
    claims: ctx.identity?.claims ?? {},
    message: ctx.asyncapi?.message ?? null,
    channel: ctx.asyncapi?.channel ?? null,
    // CloudEvent attributes; one property lookup for plain messages, which have none.
    ce: msg.headers[CE_SPECVERSION] === undefined ? undefined : attributesOf(msg.headers),
  };
}

/** JSONata's $boolean: empty strings, arrays and objects, zero, null and "no result" are false. */
export function truthy(v: unknown): boolean {
  if (v === undefined || v === null || v === false || v === 0 || v === '') return false;
  if (Array.isArray(v)) return v.some(truthy);
  if (typeof v === 'object') return Object.keys(v as object).length > 0;
  if (typeof v === 'function') return false;
  return true;
}
