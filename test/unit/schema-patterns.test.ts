import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { schemaPattern } from '../../src/expr/regex.js';
import { JsonSchemaCompiler } from '../../src/plan/json-schema.js';

/**
 * A validate step's `pattern` runs on client data: on JavaScript's backtracking engine alone,
 * `^(a+)+$` held the event loop 6 s for 26 characters (and for ever for 60), `\s+$` 3.5 s for a
 * 30 000-character string. Both tests below never return on that engine: the time limit ends them.
 */
describe('JSON Schema patterns (validate steps)', () => {
  it('answers at once for a pattern that backtracks exponentially and for a long string a polynomial one would take hours on', { timeout: 60_000 }, () => {
    const check = new JsonSchemaCompiler().compile({
      type: 'object',
      properties: { name: { type: 'string', pattern: '^(a+)+$' }, note: { type: 'string', pattern: '\\s+$' } },
      patternProperties: { '^(x+x+)+y$': { type: 'integer' } },
    }).validate!;
    assert.equal(check({ name: `${'a'.repeat(60)}!` }), false);
    assert.equal(check({ name: 'a'.repeat(60) }), true);
    assert.equal(check({ note: `${' '.repeat(1_000_000)}x` }), false);
    assert.equal(check({ [`${'x'.repeat(60)}`]: 'not an integer, but the name does not match' }), true);
  });

  it('answers at once for a pattern of more than three quantifiers side by side on a string of 256 characters', { timeout: 60_000 }, () => {
    // Nothing repeated holds a quantifier, but five `a*` backtrack in n^5: minutes on JavaScript's engine.
    const check = new JsonSchemaCompiler().compile({ type: 'string', pattern: '^a*a*a*a*a*$' }).validate!;
    assert.equal(check(`${'a'.repeat(255)}!`), false);
    assert.equal(check('a'.repeat(256)), true);
  });

  it('takes a long string that matches a pattern with a named backreference, as a short one', () => {
    // On RE2 (strings over 256 characters) the pattern was `^(?P<q>["'])\w*k<q>$`: a quoted name of 300 letters was invalid.
    const check = new JsonSchemaCompiler().compile({ type: 'string', pattern: '^(?<q>["\'])\\w*\\k<q>$' }).validate!;
    for (const n of [10, 300]) {
      assert.equal(check(`"${'a'.repeat(n)}"`), true, `${n} letters in quotes`);
      assert.equal(check(`"${'a'.repeat(n)}'`), false, `${n} letters, other quotes`);
    }
  });

  it('answers as JavaScript does, on short strings and on long ones (RE2 reads `.` and `\\s` as JavaScript does)', () => {
    const long = (s: string) => `${'-'.repeat(300)}${s}`;
    const cases: [pattern: string, inputs: string[]][] = [
      ['^.$', ['\r', '\n', '\u2028', 'a', '😀', 'ab']],
      ['a.b', [long('a\rb'), long('a\u2029b'), long('axb')]],
      ['x\\s+$', [long('x\u00a0'), long('x\ufeff'), long('x \t'), long('x\u200b'), long('xy')]],
      ['x\\S$', [long('x\u00a0'), long('xy'), long('x\u3000')]],
      ['x[\\s\\d]$', [long('x\u2003'), long('x7'), long('x٣'), long('xy')]],
      ['^-+\\d{3}\\p{Lu}$', [long('123É'), long('123é'), long('12É')]],
      ['^(?:[a-z0-9._%+-]+)@(?:[a-z0-9-]+\\.)+[a-z]{2,}$', ['someone@example.com', `${'a'.repeat(300)}@example.com`, 'no-at-sign', `${'a'.repeat(300)}@`]],
      ['^[a-z]*-?[a-z0-9]*\\.[a-z]+/\\d{1,}$', ['ab-c1.de/7', 'ab.c/1', 'ab-.c/', 'AB.c/1', long('a.b/1')]],
      ['[]', ['', long('x')]],
      ['^[^]+$', ['\n', long('\r')]],
      // RE2 has no lookaround: such a pattern stays on JavaScript's engine.
      ['^(?=.*\\d)[a-z\\d]+$', ['abc1', 'abc', long('1')]],
      // Nor backreferences: re2js made `\k<q>` the letters `k<q>`, so a long string that closes its quote did not match.
      ['^(?<q>["\'])\\w*\\k<q>$', ['"ab"', '"ab\'', `"${'a'.repeat(300)}"`, `'${'a'.repeat(300)}"`, `"${'a'.repeat(300)}k<q>`]],
      ['^(\\w)\\w*\\1$', ['abca', 'abc', `a${'b'.repeat(300)}a`]],
    ];
    for (const [pattern, inputs] of cases) {
      const ours = schemaPattern(pattern, 'u');
      const js = new RegExp(pattern, 'u');
      for (const s of inputs) assert.equal(ours.test(s), js.test(s), `/${pattern}/ on ${JSON.stringify(s.length > 40 ? `...${s.slice(-20)}` : s)}`);
    }
  });
});
