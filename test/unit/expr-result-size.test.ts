import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import jsonata from 'jsonata';
import { compileExpression, defaultExpressionLimits, ExpressionEvaluationError } from '../../src/expr/expression.js';
import { boundedRange, boundRanges, RANGE_FUNCTION } from '../../src/expr/range.js';

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

describe('ranges held to expressions.maxResultBytes before they are made', () => {
  // 1 MiB: 65 531 numbers at 16 bytes and 72 for the array.
  const limits = { ...defaultExpressionLimits, maxResultBytes: 1 << 20 };
  const failure = (src: string, input: unknown) =>
    compileExpression(src, limits)
      .evaluate(input, {})
      .then(
        (v) => assert.fail(`${src} on ${JSON.stringify(input)} gave ${JSON.stringify(v)}`),
        (e: unknown) => {
          assert.ok(e instanceof ExpressionEvaluationError);
          return e.message;
        },
      );

  it('fails a range whose end the message sets past the bound, in $pad words, without making it (JSONata made [1..10000000] in one step of ~0.7 s)', async () => {
    // $count: the result stays small, so only the bound on the range itself can fail these.
    assert.equal(
      await failure('$count([1..n])', { n: 10_000_000 }),
      'the range [1..10000000] would make an array of 10000000 numbers (about 152.6 MiB) larger than expressions.maxResultBytes (1.0 MiB)',
    );
    assert.equal(
      await failure('$count([-5..$count(xs)])', { xs: Array(70_000).fill(0) }),
      'the range [-5..70000] would make an array of 70006 numbers (about 1.1 MiB) larger than expressions.maxResultBytes (1.0 MiB)',
    );
    assert.equal(
      await failure('$count([1..$number(s)])', { s: '65532' }),
      'the range [1..65532] would make an array of 65532 numbers (about 1.0 MiB) larger than expressions.maxResultBytes (1.0 MiB)',
    );
    assert.equal(await compileExpression('$count([1..$number(s)])', limits).evaluate({ s: '65531' }, {}), 65_531);
    // A range JSONata itself refuses (D2014) under a bound set past it is still refused in its words.
    assert.match(await failure('$count([1..n])', { n: 20_000_000 }), /larger than expressions\.maxResultBytes/);
    const wide = { ...defaultExpressionLimits, maxResultBytes: 1 << 30 };
    const d2014 = await compileExpression('$count([1..n])', wide)
      .evaluate({ n: 20_000_000 }, {})
      .then(
        () => assert.fail('past 10^7'),
        (e: ExpressionEvaluationError) => e,
      );
    assert.equal(d2014.code, 'D2014');
    // A range $eval reads from the message is held too.
    assert.equal(
      await failure('$count($eval("[1.." & n & "]"))', { n: 10_000_000 }),
      'the text given to $eval failed: the range [1..10000000] would make an array of 10000000 numbers (about 152.6 MiB) larger than expressions.maxResultBytes (1.0 MiB)',
    );
    assert.equal(await compileExpression('$count($eval("[1.." & n & "]"))', limits).evaluate({ n: 1000 }, {}), 1000);
  });

  it("stops a $string or & of a large value at timeoutMs: it is one call, which the time box between an evaluation's steps did not stop", async () => {
    // ~1 s of JSON.stringify on an idle machine (6 s on a busy one), held to 20 ms.
    const xs = Array.from({ length: 1_000_000 }, (_, i) => i + 0.5);
    const boxed = { ...defaultExpressionLimits, timeoutMs: 20 };
    for (const source of ['$string(xs)', '$string({"xs": xs})', 'xs & ""', '$eval("$string(xs)")']) {
      const err = await compileExpression(source, boxed)
        .evaluate({ xs }, {})
        .then(
          () => assert.fail(`${source} ran to its end`),
          (e: unknown) => e,
        );
      assert.ok(err instanceof ExpressionEvaluationError, source);
      assert.match(err.message, /expression ran longer than 20 ms and was stopped/, source);
    }
    // Unbounded (timeoutMs: 0), and within the box, it is JSONata's text.
    assert.equal((await compileExpression('$string(xs)', { ...boxed, timeoutMs: 0, maxResultBytes: 1 << 30 }).evaluate({ xs }, {})) as string, JSON.stringify(xs));
    assert.equal(await compileExpression('$string(xs)', boxed).evaluate({ xs: [1, 2.5] }, {}), '[1,2.5]');
  });

  it('bounds the ranges of one evaluation together, so ranges nested in a path cannot multiply past it, and evaluations apart', async () => {
    // 64 KiB: 4091 numbers. Each range here is under it; [1..1000000].[1..1000000] (each under the
    // default bound) reached ~930 MB before the time box stopped it.
    const small = { ...limits, maxResultBytes: 1 << 16 };
    const fails = (src: string, input: unknown) =>
      compileExpression(src, small)
        .evaluate(input, {})
        .then(
          (v) => assert.fail(`${src} gave ${JSON.stringify(v)}`),
          (e: ExpressionEvaluationError) => e.message,
        );
    assert.equal(
      await fails('$count([1..$$.n].[1..$$.n])', { n: 3000 }),
      'the range [1..3000] would make an array of 3000 numbers (about 46.9 KiB) that, with the ranges this evaluation made before it (46.9 KiB), is larger than expressions.maxResultBytes (64.0 KiB)',
    );
    assert.equal(
      await fails('$sum([1..70].$count([1..70]))', {}),
      'the range [1..70] would make an array of 70 numbers (about 1.2 KiB) that, with the ranges this evaluation made before it (62.9 KiB), is larger than expressions.maxResultBytes (64.0 KiB)',
    );
    assert.equal(await compileExpression('$sum([1..60].$count([1..60]))', small).evaluate({}, {}), 3600);
    // Two evaluations at once, and one after them, each have the whole bound.
    const expr = compileExpression('$count([1..n])', small);
    assert.deepEqual(await Promise.all([expr.evaluate({ n: 3000 }, {}), expr.evaluate({ n: 3000 }, {})]), [3000, 3000]);
    assert.equal(await expr.evaluate({ n: 4091 }, {}), 4091);
  });
});

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
    const ends: unknown[] = [1, 5, -3, 2.5, '2', undefined];
    // JSONata parses `..` only directly inside an array constructor.
    const sources = ['[a..b]', '$count([a..b])', '[0, a..b, b..a]', '[a..b][1]', '[a..b].($ * 2)', '[[a..b]]', '{"r": [a..b]}', '[1..$uppercase]', '[a..b].[1..$]'];
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
