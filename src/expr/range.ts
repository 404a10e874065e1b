import type jsonataModule from 'jsonata';
import { CONTAINER_BYTES, SCALAR_BYTES, sizeText } from '../core/heap-size.js';

/**
 * JSONata's range operator (`[1..n]`) builds its whole array in one evaluation step, which the
 * time box cannot interrupt: `[1..10000000]` took ~0.7 s and ~370 MB, and an end read from the
 * message made that a bomb any client could send. So every `..` is evaluated by boundedRange,
 * which refuses a range before making it when its array would pass expressions.maxResultBytes.
 */

/**
 * The name boundedRange is bound under: a variable no expression can write (`$..` does not
 * parse), so none can shadow it, and the token JSONata's own range errors name.
 */
export const RANGE_FUNCTION = '..';

interface AstNode {
  type?: string;
  value?: unknown;
  position?: number;
  lhs?: AstNode;
  rhs?: AstNode;
  [k: string]: unknown;
}

/**
 * Turns every `lhs..rhs` of a compiled AST into a call of RANGE_FUNCTION with the same two
 * operands. jsonata's `ast()` is the tree its evaluator walks (jsonata 2.x: `evaluate(ast, ...)`
 * on the object `ast()` returns), so the change applies to every later evaluation; the node is
 * changed in place, keeping its position and anything else attached to it. Both are evaluated
 * left then right, at the same depth, before the operator or function runs, as for the operator.
 * Whether there was one: an expression without `..` is left exactly as it was.
 */
export function boundRanges(ast: unknown): boolean {
  let found = false;
  const stack = [ast];
  while (stack.length > 0) {
    const n = stack.pop();
    if (n === null || typeof n !== 'object') continue;
    if (rangeToCall(n)) found = true;
    for (const v of Object.values(n)) if (v !== null && typeof v === 'object') stack.push(v);
  }
  return found;
}

/**
 * The same for one node, as `$eval` parses its text at run time: an expression that names `$eval`
 * runs this on entry to every evaluation step (expression.ts), before the node is evaluated.
 */
export function rangeToCall(node: object): boolean {
  const n = node as AstNode;
  if (n.type !== 'binary' || n.value !== '..') return false;
  const { lhs, rhs } = n;
  delete n.lhs;
  delete n.rhs;
  n.type = 'function';
  n.value = '(';
  n.procedure = { type: 'variable', value: RANGE_FUNCTION, position: n.position };
  n.arguments = [lhs, rhs];
  return true;
}

/** Whether an expression names `$eval` (a call, or the function passed or bound elsewhere). */
export function namesEval(ast: unknown): boolean {
  const stack = [ast];
  while (stack.length > 0) {
    const n = stack.pop();
    if (n === null || typeof n !== 'object') continue;
    if ((n as AstNode).type === 'variable' && (n as AstNode).value === 'eval') return true;
    for (const v of Object.values(n)) if (v !== null && typeof v === 'object') stack.push(v);
  }
  return false;
}

/** jsonata's frames (not in its types): `base` is the frame of the evaluate() call a frame belongs to. */
interface Frame {
  base: object;
}

/**
 * JSONata's range operator (jsonata 2.x, evaluateRangeExpression), with its checks in its order
 * and its error codes (T2003, T2004, D2014, given the `..` token; JSONata adds the words), except
 * that a range whose array would take the evaluation's ranges past `maxResultBytes` (estimated as
 * a result is: 16 bytes a number, 72 an array) fails before it is made. The bound is on all the
 * ranges one evaluation makes together, not on each alone: `[1..1000000].[1..1000000]` is a
 * million ranges each under the default bound, which the time box stopped only at ~930 MB.
 */
export function boundedRange(maxResultBytes: number): (this: jsonataModule.Focus, lhs: unknown, rhs: unknown) => number[] | undefined {
  // Bytes of ranges made so far, by evaluation (jsonata's `env.base` is one evaluate() call's frame).
  const made = new WeakMap<object, number>();
  return function (this: jsonataModule.Focus, lhs, rhs) {
    if (lhs !== undefined && !Number.isInteger(lhs)) throw { code: 'T2003', value: lhs, token: '..' };
    if (rhs !== undefined && !Number.isInteger(rhs)) throw { code: 'T2004', value: rhs, token: '..' };
    if (lhs === undefined || rhs === undefined) return undefined;
    const from = lhs as number;
    const to = rhs as number;
    if (from > to) return undefined;
    const size = to - from + 1;
    const bytes = size * SCALAR_BYTES + CONTAINER_BYTES;
    const base = (this.environment as unknown as Frame).base;
    const before = made.get(base) ?? 0;
    if (before + bytes > maxResultBytes) {
      const earlier = before === 0 ? '' : ` that, with the ranges this evaluation made before it (${sizeText(before)}), is`;
      throw {
        code: 'EG_RANGE',
        token: '..',
        message: `the range [${from}..${to}] would make an array of ${size} numbers (about ${sizeText(bytes)})${earlier} larger than expressions.maxResultBytes (${sizeText(maxResultBytes)})`,
      };
    }
    // JSONata's own bound, reached only when maxResultBytes is set past 10^7 numbers (~153 MiB).
    if (size > 1e7) throw { code: 'D2014', value: size, token: '..' };
    made.set(base, before + bytes);
    const result = new Array<number>(size) as number[] & { sequence?: boolean };
    for (let item = from, index = 0; item <= to; item++, index++) result[index] = item;
    result.sequence = true;
    return result;
  };
}

/**
 * The first range of two number literals (`[1..10000000]`) whose array alone is larger than
 * expressions.maxResultBytes, as the result's size is estimated: it would fail every message
 * (boundedRange), so it is a config error at its `..`, as is one past JSONata's own 10^7.
 */
export function oversizedRange(ast: unknown, maxResultBytes: number): { index: number; message: string } | undefined {
  const stack = [ast];
  while (stack.length > 0) {
    const n = stack.pop();
    if (n === null || typeof n !== 'object') continue;
    const node = n as AstNode;
    if (node.type === 'binary' && node.value === '..' && node.lhs?.type === 'number' && node.rhs?.type === 'number') {
      const from = node.lhs.value as number;
      const to = node.rhs.value as number;
      const count = Math.max(0, to - from + 1);
      const bytes = count * SCALAR_BYTES + CONTAINER_BYTES;
      const index = Math.max(0, (node.position ?? 2) - 2);
      // JSONata refuses a range of more than 10^7 numbers (D2014) when it meets one: every message would fail.
      if (count > 1e7) return { index, message: `the range [${from}..${to}] has more than 10000000 numbers, which JSONata refuses: every message would fail here` };
      if (bytes > maxResultBytes) {
        return {
          index,
          message: `the range [${from}..${to}] makes an array of ${count} numbers, about ${sizeText(bytes)} in memory, more than expressions.maxResultBytes (${sizeText(maxResultBytes)}): every message would fail here`,
        };
      }
    }
    for (const v of Object.values(node)) if (v !== null && typeof v === 'object') stack.push(v);
  }
  return undefined;
}
