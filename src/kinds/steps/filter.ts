import { bindingsFor, truthy, ExpressionEvaluationError, NOT_SYNC } from '../../expr/expression.js';
import { problem } from '../../errors.js';
import type { StepStop } from '../../runtime/outcome.js';
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
    const failed = (err: unknown): StepStop => ({ stop: 'failed', problem: problem('EG_EXPRESSION_FAILED', `filter failed: ${(err as ExpressionEvaluationError).message}`) });
    return {
      kind: 'filter',
      run(msg, mctx) {
        const bindings = bindingsFor(msg, mctx);
        const v = expr.evaluateSync(msg.value, bindings);
        if (v !== NOT_SYNC) return truthy(v) ? msg : FILTERED;
        return expr.evaluate(msg.value, bindings).then((r) => (truthy(r) ? msg : FILTERED), failed);
      },
    };
  },
};
