import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import jsonata from 'jsonata';
import { compileExpression } from '../../src/expr/expression.js';
import { BUILTIN_FUNCTIONS, BUILTIN_SIGNATURES, unknownFunctionCalls, unknownVariables, wrongArgumentCounts } from '../../src/expr/functions.js';

describe('calls to JSONata functions that do not exist', () => {
  it('knows exactly the functions the installed jsonata binds', async () => {
    const source = readFileSync(createRequire(import.meta.url).resolve('jsonata'), 'utf8');
    const bound = new Set([...source.matchAll(/\.bind\('([A-Za-z0-9]+)'/g)].map((m) => m[1]!));
    assert.deepEqual([...BUILTIN_FUNCTIONS].sort(), [...bound].sort());
    for (const name of BUILTIN_FUNCTIONS) assert.notEqual(await jsonata(`$${name}`).evaluate({}), undefined, `$${name} is bound`);
    assert.equal(await jsonata('$uppercse').evaluate({}), undefined);
  });

  it('accepts functions the expression defines and lambda parameters; names the unknown ones with a hint', () => {
    const calls = (src: string) => unknownFunctionCalls(jsonata(src).ast(), ['key']).map((c) => [c.name, c.index, c.message]);
    assert.deepEqual(calls('($f := function($g){ $g(1) }; $f($string))'), []);
    assert.deepEqual(calls('$uppercse(a)'), [['uppercse', 0, 'unknown function $uppercse (did you mean $uppercase?)']]);
    assert.deepEqual(calls('a ~> $nope'), [['nope', 5, 'unknown function $nope (did you mean $not?)']]);
  });
});

describe('calls of a JSONata function with a number of arguments it never takes', () => {
  it("knows the installed jsonata's signatures", async () => {
    for (const name of BUILTIN_FUNCTIONS) {
      const fn = (await jsonata(`$${name}`).evaluate({})) as { signature?: { definition?: string } };
      assert.equal(BUILTIN_SIGNATURES[name], fn.signature?.definition, `$${name}`);
    }
  });

  it('names the calls JSONata refuses whatever their arguments hold, and only those', async () => {
    const wrong = (src: string) => wrongArgumentCounts(jsonata(src).ast(), ['key']).map((c) => [c.name, c.index, c.message]);
    // Each passed the config check and failed every message with T0410.
    const refused: [string, number, string][] = [
      ['$uppercase(a, b)', 0, '$uppercase takes at most 1 argument, not 2: JSONata would refuse it for every message'],
      ['{"n": $map(xs)}', 6, '$map takes 2 arguments, not 1: JSONata would refuse it for every message'],
      ['$millis(1)', 0, '$millis takes no arguments, not 1: JSONata would refuse it for every message'],
      ['$zip()', 0, '$zip takes at least 1 argument, not 0: JSONata would refuse it for every message'],
      ['s ~> $substring(1, 2, 3)', 5, '$substring takes 1 to 3 arguments, not 4 (with the value before ~>): JSONata would refuse it for every message'],
    ];
    for (const [src, index, message] of refused) {
      assert.deepEqual(wrong(src), [[src.slice(index + 1, src.indexOf('(', index)), index, message]], src);
      await assert.rejects(jsonata(src).evaluate({ a: 'x', b: 'y', xs: [1], s: 'abc' }), { code: 'T0410' }, src);
    }
    // The context stands in for a `-` argument, `~>` gives its left side, `?` ones may be left
    // out, `+` takes any number more; a partial application and a function the expression binds
    // under a built-in's name are not the built-in's calls.
    for (const src of [
      '$uppercase()',
      'a ~> $substring(1)',
      '$substring(5, 1)',
      '$zip(xs, xs, xs)',
      '$join(xs)',
      '$substring(?, 1)',
      '($uppercase := function($a, $b){ $a & $b }; $uppercase("a", "b"))',
      'a.$lowercase()',
    ])
      assert.deepEqual(wrong(src), [], src);
  });
});

describe('variables nothing binds', () => {
  it("accepts the gateway's variables and what the expression binds; names the others where they are read", () => {
    const unbound = (src: string) => unknownVariables(jsonata(src).ast(), ['headers', 'path', 'ce']).map((c) => [c.name, c.index, c.message]);
    for (const src of [
      '$headers."x-source" = "a" and $path.room and $ce.type',
      '($x := 1; $f := function($v, $w){ $v + $w }; $f($x, 2))',
      'a@$o.b#$i.($o.x & $i)',
      '$map(xs, $string) ~> $join(",")',
      '$reduce(xs, function($acc, $v){ $acc + $v })',
      '$.a & $$.b',
      'a ~> $nope',
    ])
      assert.deepEqual(unbound(src), [], src);
    // JSONata reads each as no value, without an error: a filter on it dropped every message.
    assert.deepEqual(unbound('$header."x-source" = "a"'), [['header', 0, 'unknown variable $header (did you mean $headers?): nothing binds it, so it would have no value for any message']]);
    assert.deepEqual(unbound('{"room": $pth.room, "again": $pth}'), [['pth', 9, 'unknown variable $pth (did you mean $path?): nothing binds it, so it would have no value for any message']]);
  });
});

describe('$sift given no function when a message reaches it (spec-checklist 198)', () => {
  it("says so in the config check's words, not JSONata's TypeError; $sift with a function still works", async () => {
    const sift = '$sift needs a function to keep each entry by, e.g. $sift($obj, function($v, $k) { $v > 0 }) (it was given none)';
    for (const src of ['$sift(obj)', 'obj ~> $sift']) {
      // Before: "Cannot read properties of undefined (reading 'arity')".
      await assert.rejects(compileExpression(src).evaluate({ obj: { a: 1 } }, {}), { message: sift }, src);
    }
    assert.deepEqual({ ...((await compileExpression('$sift(obj, function($v) { $v > 1 })').evaluate({ obj: { a: 1, b: 2 } }, {})) as object) }, { b: 2 });
  });
});
