import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import jsonata from 'jsonata';
import { boundedRange, boundRanges, RANGE_FUNCTION } from '../../src/expr/range.js';

/** Result or error of an evaluation, with what JSONata's errors carry (value aside: a function's is wrapped). */
async function outcome(expr: jsonata.Expression, input: unknown): Promise<unknown> {
  try {
    return { result: await expr.evaluate(input) };
  } catch (err) {
    const { code, message, position, token } = err as Record<string, unknown>;
    return { code, message, position, token };
  }
}

describe('ranges evaluated by the bounded range function', () => {
  it('give exactly what JSONata gives under the bound: arrays, sequences, empty and undefined ranges, errors', async () => {
    const ends: unknown[] = [1, 5, -3, 2.5, '2', null, [3], undefined];
    // JSONata parses `..` only directly inside an array constructor.
    const sources = [
      '[a..b]',
      '$count([a..b])',
      '[a..b, 7]',
      '[0, a..b, b..a]',
      '[a..b][1]',
      '[a..b].($ * 2)',
      '[[a..b]]',
      '{"r": [a..b]}',
      '$map([a..b], function($v){ $v + 1 })',
      '[1..$uppercase]',
      '[a..b].[1..$]',
    ];
    let compared = 0;
    for (const src of sources) {
      const bounded = jsonata(src);
      assert.equal(boundRanges(bounded.ast()), true, src);
      bounded.registerFunction(RANGE_FUNCTION, boundedRange(1 << 20));
      const plain = jsonata(src);
      for (const a of ends) {
        for (const b of ends) {
          const input = { a, b };
          assert.deepEqual(await outcome(bounded, input), await outcome(plain, input), `${src} on ${JSON.stringify(input)}`);
          compared++;
        }
      }
    }
    assert.equal(compared, sources.length * ends.length ** 2);
  });

  it('leave an expression without a range exactly as JSONata compiled it', () => {
    const expr = jsonata('{"total": $sum(items.(price * qty)), "name": $uppercase(name), "range": "1..3"}');
    const before = JSON.stringify(expr.ast());
    assert.equal(boundRanges(expr.ast()), false);
    assert.equal(JSON.stringify(expr.ast()), before);
  });
});
