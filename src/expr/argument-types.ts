/**
 * Calls of a built-in function whose literal arguments its signature refuses: `$uppercase(1)`,
 * `$join([1, 2])`, `$sum("3")`, `"a" ~> $lookup(1)`. JSONata checks a call's arguments against
 * the signature before every call (T0410: not of a type it takes, T0412: not an array of the
 * type it takes), so such a call failed every message; it is a config error at the argument.
 *
 * JSONata's own check decides (the signature's `validate`), so nothing it would run is refused:
 * each argument that is not a literal (a path, a variable, a computation) may be of any type, and
 * the call is refused only when no type of theirs would pass. A `-` argument left to the context
 * is the context's to match (T0411), at run time.
 */

import { BUILTIN_SIGNATURES } from './functions.js';
import { type AstNode, type BuiltIn, builtIn, isOwnValue, type JsonataFactory, type LiteralProblem, literalStart } from './checked-functions.js';

/** An argument whose value the expression does not write out: one of each type JSONata tells apart (`m` for no value). */
const ANY_VALUE: readonly unknown[] = ['', 0, false, null, [], {}, () => undefined, undefined];

/** Calls with more unknown arguments than this are left to run time (8 to the power of them would be tried). */
const MAX_UNKNOWN = 3;

/** What a literal argument is: its value, or `unknown` when it is not written out (or only partly). */
const UNKNOWN = Symbol('unknown');

/** The value a literal argument evaluates to, or UNKNOWN (also for one filtered, grouped or bound). A function literal's is a stand-in with its type. */
function literalValue(node: AstNode): unknown {
  if (!isOwnValue(node)) return UNKNOWN; // ["info", "warn"][level] is a string
  switch (node.type) {
    case 'string':
    case 'number':
    case 'value':
      return node.value;
    case 'regex':
    case 'lambda':
      return ANY_VALUE[6];
    case 'unary':
      if (node.value === '{') return {};
      if (node.value === '[') {
        // An array written out: its items matter to a signature that names their type (`a<n>`).
        // Those computed are left out: JSONata wants every item of that type, so a literal one of
        // another type fails whatever they hold (`$join([s, 1])`), and one of the type decides nothing.
        const items = (node.expressions as AstNode[] | undefined) ?? [];
        return items.map(literalValue).filter((v) => v !== UNKNOWN);
      }
      return UNKNOWN;
    default:
      return UNKNOWN;
  }
}

/** Where a literal argument starts in `source`: JSONata's position is just past its first token. */
function argumentStart(source: string, node: AstNode): number | undefined {
  if (node.type === 'string' || node.type === 'number') return literalStart(source, node);
  const end = node.position ?? 0;
  if (node.type === 'value') return end - String(node.value).length;
  if (node.type === 'unary' && (node.value === '[' || node.value === '{')) return end - 1;
  return undefined;
}

/** "a number", "an array". */
function article(type: string): string {
  return `${/^[aeiou]/.test(type) ? 'an' : 'a'} ${type}`;
}

/** What a value is, in JSONata's words. */
function typeOf(value: unknown): string {
  if (typeof value === 'function') return 'function';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

interface Refusal {
  code: string;
  /** 1-based, among the arguments given (with `~>`, its left side first). */
  index: number;
  /** T0412: the type the array's items must be, plural ("strings"). */
  type?: string;
}

/** JSONata's verdict on `args`, or undefined when it would run the call (a T0411 is the context's, unknown here). */
function refusal(validate: (args: unknown[], context: unknown) => unknown, args: unknown[]): Refusal | undefined {
  try {
    validate(args, undefined);
    return undefined;
  } catch (err) {
    const e = err as { code?: string; index?: number; type?: string };
    if (e.code !== 'T0410' && e.code !== 'T0412') return undefined;
    return { code: e.code, index: e.index ?? 1, type: e.type };
  }
}

/**
 * The refusal of a call whose arguments are `given` (UNKNOWN where not written out) for every
 * value the unknown ones could have, or undefined when some would pass. Of the refusals, the one
 * furthest into the arguments: what the others' types could not put right.
 */
function alwaysRefused(validate: (args: unknown[], context: unknown) => unknown, given: unknown[]): Refusal | undefined {
  const unknown = given.flatMap((v, i) => (v === UNKNOWN ? [i] : []));
  if (unknown.length > MAX_UNKNOWN) return undefined;
  let furthest: Refusal | undefined;
  const args = [...given];
  for (let combination = 0; combination < ANY_VALUE.length ** unknown.length; combination++) {
    let rest = combination;
    for (const i of unknown) {
      args[i] = ANY_VALUE[rest % ANY_VALUE.length];
      rest = Math.floor(rest / ANY_VALUE.length);
    }
    const r = refusal(validate, args);
    if (r === undefined) return undefined;
    if (furthest === undefined || r.index > furthest.index) furthest = r;
  }
  return furthest;
}

/**
 * The first call of a built-in (not one the expression binds itself, `rebound`) that JSONata
 * would refuse for the types of its literal arguments, whatever its other arguments hold. Calls
 * with a number of arguments the signature never takes are wrongArgumentCounts' to report, and
 * partial applications (`$f(?, 1)`) JSONata's.
 */
export function literalArgumentTypeProblem(jsonata: JsonataFactory, source: string, ast: unknown, rebound: ReadonlySet<string>): LiteralProblem | undefined {
  const found: LiteralProblem[] = [];
  const check = (call: AstNode, before: AstNode | undefined): void => {
    const procedure = call.procedure;
    if (procedure?.type !== 'variable' || !Array.isArray(call.arguments)) return;
    const name = procedure.value as string;
    if (!Object.hasOwn(BUILTIN_SIGNATURES, name) || rebound.has(name)) return;
    const nodes = before === undefined ? call.arguments : [before, ...call.arguments];
    const given = nodes.map(literalValue);
    if (given.every((v) => v === UNKNOWN)) return;
    const signature = builtIn(jsonata, name).signature;
    if (!signature) return;
    const r = alwaysRefused((args, context) => signature.validate(args, context), given);
    if (!r) return;
    const node = nodes[r.index - 1];
    const value = node === undefined ? UNKNOWN : given[r.index - 1];
    const callStart = Math.max(0, (procedure.position ?? 0) - name.length - 1);
    const at = node === undefined || value === UNKNOWN ? callStart : (argumentStart(source, node) ?? callStart);
    const takenAs = value === UNKNOWN ? 'argument' : `${article(typeOf(value))} as argument`;
    const tilde = before === undefined ? '' : 'the value before ~> is argument 1; ';
    const why =
      r.code === 'T0412'
        ? `takes an array of ${r.type ?? 'one type'} as argument ${r.index}, not this ${value === UNKNOWN ? 'value' : typeOf(value)}${tilde ? ` (${tilde.slice(0, -2)})` : ''}`
        : node === undefined
          ? `needs an argument ${r.index}, of the type its signature ${BUILTIN_SIGNATURES[name]} takes there${tilde ? ` (${tilde.slice(0, -2)})` : ''}`
          : `does not take ${takenAs} ${r.index} (${tilde}its signature is ${BUILTIN_SIGNATURES[name]})`;
    found.push({ index: at, message: `$${name} ${why}: JSONata would refuse it for every message (${r.code})` });
  };
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (node === null || typeof node !== 'object') return;
    const n = node as AstNode;
    if (n.type === 'apply' && n.value === '~>' && (n.rhs as AstNode | undefined)?.type === 'function') {
      check(n.rhs as AstNode, n.lhs as AstNode);
      walk(n.lhs);
      walk((n.rhs as AstNode).arguments);
      return;
    }
    if (n.type === 'function') check(n, undefined);
    for (const v of Object.values(n)) if (v !== null && typeof v === 'object') walk(v);
  };
  walk(ast);
  return found.sort((a, b) => a.index - b.index)[0];
}

/** A JSONata function value, as `registerFunction` binds one. */
interface FunctionValue {
  _jsonata_function: true;
  implementation: BuiltIn['implementation'];
  signature: NonNullable<BuiltIn['signature']>;
}

/** "a number", "no value" (a path that matched nothing). */
function describedValue(value: unknown): string {
  return value === undefined ? 'no value' : article(typeOf(value));
}

/**
 * `name` with a signature check whose refusals name the argument the message got wrong. JSONata
 * counts from the wrong end when a `-` argument (left to the context) shifts the others:
 * `$substring(id, 0, 3)` of a number id failed with "Argument 3 of function substring does not
 * match function signature", `$fromMillis(ts)` of a string ts with "Context value is not a
 * compatible type with argument 1", `$pad(n, 5)` of a number "Argument 2". The argument is the
 * first one that, given a value of another type, makes the call pass; when none does alone, JSONata's
 * words stand. T0412 (an array's items) already names its argument.
 */
export function withArgumentRefusals(name: string, implementation: BuiltIn['implementation'], signature: NonNullable<BuiltIn['signature']>): FunctionValue {
  const passes = (args: unknown[], context: unknown): boolean => {
    try {
      signature.validate(args, context);
      return true;
    } catch {
      return false;
    }
  };
  const refusedArgument = (args: unknown[], context: unknown): number | undefined => {
    for (let i = 0; i < args.length; i++) {
      const tried = [...args];
      for (const v of ANY_VALUE) {
        if (typeOf(v) === typeOf(args[i])) continue;
        tried[i] = v;
        if (passes(tried, context)) return i;
      }
    }
    return undefined;
  };
  return {
    _jsonata_function: true,
    implementation,
    signature: {
      definition: signature.definition,
      validate(args, context) {
        try {
          return signature.validate(args, context);
        } catch (err) {
          const code = (err as { code?: string }).code;
          const i = code === 'T0410' || code === 'T0411' ? refusedArgument(args, context) : undefined;
          // JSONata writes its own text over the message of its codes: describeFailure says this one.
          if (i !== undefined)
            (err as { refusedArgument?: string }).refusedArgument = `$${name} does not take ${describedValue(args[i])} as argument ${i + 1} (its signature is ${signature.definition})`;
          throw err;
        }
      },
    },
  };
}

/** The built-in functions `ast` calls by name, but for those it binds itself (`rebound`). */
export function calledBuiltIns(ast: unknown, rebound: ReadonlySet<string>): Set<string> {
  const names = new Set<string>();
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (node === null || typeof node !== 'object') return;
    const n = node as AstNode;
    const procedure = n.type === 'function' ? n.procedure : undefined;
    if (procedure?.type === 'variable' && Object.hasOwn(BUILTIN_SIGNATURES, procedure.value as string) && !rebound.has(procedure.value as string)) names.add(procedure.value as string);
    for (const v of Object.values(n)) if (v !== null && typeof v === 'object') walk(v);
  };
  walk(ast);
  return names;
}
