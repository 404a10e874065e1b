import { bindingsFor, evaluateNow, evaluateThen, expressionProblem, expressionResultProblem, NOT_SYNC, type ExpressionEvaluationError } from '../../expr/expression.js';
import { bytesInsideAsBase64, withValue, type Message, type MessageContext } from '../../core/message.js';
import type { StepResult } from '../contracts.js';
import { defineStep, Type } from '../define.js';

export const transformStep = defineStep({
  kind: 'transform',
  options: Type.String({ minLength: 1, description: 'JSONata expression whose result replaces the message value.' }),
  doc: {
    summary:
      "Replaces the message value with the JSONata expression's result. An expression with no result fails the message (HTTP 500), since an empty message is almost always a mistake in the expression; so does a result JSON cannot hold (a function, or a number that is not finite, such as a division by zero's), which would otherwise go out as null.",
    example: 'transform: |\n  { "lux": lumens, "at": sentAt, "room": $path.room }',
  },
  compile(source, ctx) {
    const expr = ctx.compileExpression(source, []);
    if (!expr) return undefined;
    const failed = (err: ExpressionEvaluationError): StepResult => ({ stop: 'failed', problem: expressionProblem('transform', err) });
    const replace = (msg: Message, value: unknown): StepResult =>
      value === undefined
        ? { stop: 'failed', problem: expressionResultProblem(expr, 'transform produced no value for this message') }
        : // Only a value of bytes can put bytes in a result (JSONata makes none).
          withValue(msg, Buffer.isBuffer(msg.value) ? bytesInsideAsBase64(value) : value);
    const evaluated = (msg: Message, mctx: MessageContext) => evaluateThen(expr, msg.value, bindingsFor(msg, mctx), (value) => replace(msg, value), failed);
    return {
      kind: 'transform',
      run: (msg, mctx) => {
        // The fast path first, with no closure per message; JSONata when it cannot answer.
        const v = evaluateNow(expr, msg, mctx);
        return v !== NOT_SYNC ? replace(msg, v) : evaluated(msg, mctx);
      },
    };
  },
});
