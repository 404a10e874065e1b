import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compileExpression, defaultExpressionLimits, ExpressionEvaluationError } from '../../src/expr/expression.js';

describe('the detail of a result over expressions.maxResultBytes', () => {
  it('gives sizes below one MiB in KiB, so a small limit does not read "about 0.0 MiB, more than (0.0 MiB)"', async () => {
    // One step, so a busy machine cannot make it run past timeoutMs instead.
    const expr = compileExpression('$uppercase($)', { ...defaultExpressionLimits, maxResultBytes: 2048 });
    const err = await expr.evaluate('x'.repeat(5000), {}).then(
      () => assert.fail('the result is over the limit'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ExpressionEvaluationError);
    assert.equal(err.message, 'the result is too large: about 9.8 KiB in memory, more than expressions.maxResultBytes (2.0 KiB)');
  });

  it('fails a $pad past the limit before making the string (a padding of two characters ran the heap out at a width of 10^8), and pads as JSONata does within it', async () => {
    const limits = { ...defaultExpressionLimits, maxResultBytes: 1 << 20 };
    for (const src of ['$pad($, 524289)', '$pad("", -600000, "-")', '$pad("", 100000000, "ab")']) {
      const err = await compileExpression(src, limits)
        .evaluate('x', {})
        .then(
          () => assert.fail(`${src} is over the limit`),
          (e: unknown) => e,
        );
      assert.ok(err instanceof ExpressionEvaluationError);
      assert.match(err.message, /^\$pad to a width of -?\d+ would make a string larger than expressions\.maxResultBytes \(1\.0 MiB\)$/, src);
    }
    // Widths and lengths in code points, as JSONata's own $pad (jsonata 2.x) counts them.
    const cases: [string, string | undefined][] = [
      ['$pad("x", 5, "ab")', 'xabab'],
      ['$pad("x", -4, "😀a")', '😀a😀x'],
      ['$pad("é😀", 4)', 'é😀  '],
      ['$pad("abc", 2)', 'abc'],
      ['$pad("x", 3.7, "")', 'x  '],
      ['$pad("x", -3.7, "-")', '--x'],
      ['$pad(nothing, 3)', undefined],
    ];
    for (const [src, expected] of cases) assert.equal(await compileExpression(src, limits).evaluate({}, {}), expected, src);
  });
});
