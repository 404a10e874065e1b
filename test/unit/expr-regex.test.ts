import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import jsonata from 'jsonata';
import { compileExpression } from '../../src/expr/expression.js';

/**
 * An expression's regex literals run on RE2 (src/expr/regex.ts), and JSONata documents them as
 * JavaScript's: the answers are compared with jsonata's own evaluation, which uses JavaScript's
 * engine. RE2 alone read `.` as anything but `\n` and `\s` as ASCII space.
 */
describe('regular expressions in expressions', () => {
  it('read `.`, `\\s` and `\\S` as JavaScript does', async () => {
    const cases: [expression: string, inputs: string[]][] = [
      ['$contains(s, /a.b/)', ['a\rb', 'a\u2028b', 'a\u2029b', 'a\nb', 'axb']],
      ['$contains(s, /x\\s$/)', ['x\u00a0', 'x\u3000', 'x\ufeff', 'x ', 'x\u200b', 'xy']],
      ['$contains(s, /x\\S$/)', ['x\u00a0', 'xy', 'x\t']],
      ['$contains(s, /x[\\s\\d]$/)', ['x\u2003', 'x7', 'xy']],
      ['$contains(s, /A.B/i)', ['a\rb', 'a-b']],
      ['$match(s, /\\s+/).match', ['a\u00a0\u00a0b', 'a b']],
      ['$split(s, /\\s*,\\s*/)', ['a\u00a0, b ,\u3000c']],
      ['$replace(s, /.+/, "x")', ['ab\rcd', 'ab\ncd']],
      ['$contains(s, /[.]/)', ['\r', '.']],
    ];
    for (const [source, inputs] of cases) {
      const ours = compileExpression(source);
      const js = jsonata(source);
      for (const s of inputs) assert.deepEqual(await ours.evaluate({ s }, {}), await js.evaluate({ s }), `${source} on ${JSON.stringify(s)}`);
    }
  });

  it('refuses a named backreference as a config error, as a numbered one (RE2 has none)', () => {
    // re2js' translation made `\k<q>` the letters `k<q>`: the expression compiled and matched other strings than written.
    for (const source of ['$contains(s, /(?<q>a)\\k<q>/)', '$contains(s, /(a)\\1/)'])
      assert.throws(() => compileExpression(source), /cannot run in linear time .*backreferences and lookaround are not supported/, source);
    // Without a named group JavaScript reads `\k` as the letter k, as RE2 does.
    assert.doesNotThrow(() => compileExpression('$contains(s, /\\k<q>/)'));
  });
});
