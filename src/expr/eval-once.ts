/**
 * JSONata's `$eval`, with the failure of nested `$eval`s said once. JSONata wraps a failure inside
 * the text it evaluates in its own (D3121 "Dynamic error evaluating the expression passed to
 * function eval: ...", D3120 for a syntax error), writing the inner message as JSON. A `$eval` of
 * text that calls `$eval` again (`$eval(code)` of a client's `code` holding `$$.code ~> $eval`)
 * wrapped each level's failure in the next, its backslashes doubling at each level: at the depth
 * limit the message was 2^100 characters and the gateway ran out of memory writing it. Here the
 * failure an inner `$eval` already wrapped goes on as it is, wrapped once whatever the depth.
 */

import { type BuiltIn, builtIn, type JsonataFactory } from './checked-functions.js';

/** JSONata's signature of `$eval`: the text, and the input to evaluate it against. */
export const EVAL_SIGNATURE = '<sx?:x>';

interface EvalFailure {
  code: 'D3120' | 'D3121';
  error?: unknown;
}

function isEvalFailure(err: unknown): err is EvalFailure {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'D3120' || code === 'D3121';
}

export function evalOnce(jsonata: JsonataFactory): BuiltIn['implementation'] {
  const own = builtIn(jsonata, 'eval').implementation;
  return function (this: unknown, text: unknown, focus: unknown) {
    return (own.call(this, text, focus) as Promise<unknown>).catch((err: unknown) => {
      throw isEvalFailure(err) && isEvalFailure(err.error) ? err.error : err;
    });
  };
}
