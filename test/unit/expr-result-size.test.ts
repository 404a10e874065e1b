import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileExpression, defaultExpressionLimits, ExpressionEvaluationError } from '../../src/expr/expression.js';

describe('the detail of a result over expressions.maxResultBytes', () => {
  it('gives sizes below one MiB in KiB, so a small limit does not read "about 0.0 MiB, more than (0.0 MiB)"', async () => {
    const expr = compileExpression('$pad("", 5000, "x")', { ...defaultExpressionLimits, maxResultBytes: 2048 });
    const err = await expr.evaluate({}, {}).then(
      () => assert.fail('the result is over the limit'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ExpressionEvaluationError);
    assert.equal(err.message, 'the result is too large: about 9.8 KiB in memory, more than expressions.maxResultBytes (2.0 KiB)');
  });
});
