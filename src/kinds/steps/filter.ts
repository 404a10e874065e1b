import { bindingsFor, truthy, ExpressionEvaluationError } from '../../expr/expression.js';
import { problem } from '../../errors.js';
import type { StepKind } from '../contracts.js';

const FILTERED = { stop: 'filtered' } as const;

export const filterStep: StepKind<string> = {
  kind: 'filter',
  schema: { type: 'string', minLength: 1, description: 'JSONata expression; the message continues only when it is truthy.' },
  doc: {
    summary: 'Drops the message unless the JSONata expression is truthy (JSONata $boolean rules: empty string, array, object, 0, null and no result are false).',
    example: 'filter: lumens > 0 and $headers."x-source" != "test"',
  },
  compile(source, ctx) {
    const expr = ctx.compileExpression(source, []);
    if (!expr) return undefined;
    return {
      kind: 'filter',
      async run(msg, mctx) {
        try {
          return truthy(await expr.evaluate(msg.value, bindingsFor(msg, mctx))) ? msg : FILTERED;
        } catch (err) {
          return { stop: 'failed', problem: problem('EG_EXPRESSION_FAILED', `filter failed: ${(err as ExpressionEvaluationError).message}`) };
        }
      },
    };
  },
};
