import { bindingsFor, evaluateNow, evaluateThen, expressionProblem, NOT_SYNC, truthy, type ExpressionEvaluationError } from '../../expr/expression.js';
import type { Message, MessageContext } from '../../core/message.js';
import type { StepResult } from '../contracts.js';
import { defineStep, Type } from '../define.js';

const FILTERED = { stop: 'filtered' } as const;

export const filterStep = defineStep({
  kind: 'filter',
  options: Type.String({ minLength: 1, description: 'JSONata expression; the message continues only when it is truthy.' }),
  doc: {
    summary:
      'Drops the message unless the JSONata expression is truthy (JSONata $boolean rules: empty string, array, object, 0, null and no result are false). A comparison with a field or header the message does not have is false, `!=` as much as `=`: `source != "test"` drops every message without a `source`; `source != "test" or $not($exists(source))` (or `$not(source = "test")`) keeps them. After a validate step whose schema declares the field but does not require it, `validate` warns of such a `!=` (`EG_CONFIG_OPTIONAL_FIELD`).',
    example: 'filter: lumens > 0 and $not($headers."x-source" = "test")',
  },
  compile(source, ctx) {
    const expr = ctx.compileExpression(source, []);
    if (!expr) return undefined;
    const failed = (err: ExpressionEvaluationError): StepResult => ({ stop: 'failed', problem: expressionProblem('filter', err) });
    const evaluated = (msg: Message, mctx: MessageContext) => evaluateThen(expr, msg.value, bindingsFor(msg, mctx), (v) => (truthy(v) ? msg : FILTERED), failed);
    return {
      kind: 'filter',
      keepsValue: true,
      run: (msg, mctx) => {
        // The fast path first, with no closure per message; JSONata when it cannot answer.
        const v = evaluateNow(expr, msg, mctx);
        return v !== NOT_SYNC ? (truthy(v) ? msg : FILTERED) : evaluated(msg, mctx);
      },
    };
  },
});
