import { bindingsFor, ExpressionEvaluationError } from '../../expr/expression.js';
import { problem } from '../../errors.js';
import { withValue } from '../../runtime/message.js';
import type { StepKind } from '../contracts.js';

export const transformStep: StepKind<string> = {
  kind: 'transform',
  schema: { type: 'string', minLength: 1, description: 'JSONata expression whose result replaces the message value.' },
  doc: {
    summary: "Replaces the message value with the JSONata expression's result. An expression with no result fails the message (HTTP 500), since an empty message is almost always a mistake in the expression.",
    example: 'transform: |\n  { "lux": lumens, "at": sentAt, "room": $path.room }',
  },
  compile(source, ctx) {
    const expr = ctx.compileExpression(source, []);
    if (!expr) return undefined;
    return {
      kind: 'transform',
      async run(msg, mctx) {
        let value: unknown;
        try {
          value = await expr.evaluate(msg.value, bindingsFor(msg, mctx));
        } catch (err) {
          return { stop: 'failed', problem: problem('EG_EXPRESSION_FAILED', `transform failed: ${(err as ExpressionEvaluationError).message}`) };
        }
        if (value === undefined) return { stop: 'failed', problem: problem('EG_EXPRESSION_FAILED', 'transform produced no value for this message') };
        return withValue(msg, value);
      },
    };
  },
};
